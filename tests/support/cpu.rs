//! This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): what the calling thread itself spent,
//! not what other threads or other load took from the machine. Shared by the tests and the
//! benches (`#[path]`-included there).

use std::time::Duration;

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec owned by this frame.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// [`thread_cpu`] in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    thread_cpu().as_nanos() as u64
}
