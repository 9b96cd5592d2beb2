//! Child processes reporting to their parent (feature `process`): two figures.
//!
//! 1. **Update delay**: a child sets a counter and the wall-clock time it did so, every 30 ms,
//!    200 times; the parent waits on a store subscription and reads the grafted node. Delay =
//!    when the parent's subscription saw the value − when the child set it (p50, p99, max).
//!    It is the child's report interval (at most 20 ms) plus the trip.
//! 2. **Reporting overhead**: the setlist workload (`examples/support/setlist_sim.rs`, sped up)
//!    run in a child process with a parent listening and without one, interleaved, best of
//!    rounds. CPU from `CLOCK_THREAD_CPUTIME_ID` (the instrumented thread) and
//!    `CLOCK_PROCESS_CPUTIME_ID` (all threads, the reporter included).
//!
//! ```text
//! cargo bench --features process --bench subprocess
//! ```

#[path = "../examples/support/setlist_sim.rs"]
mod setlist_sim;

use std::process::{Command, Stdio};
use std::time::Duration;

use tracing_progress::process::{CommandExt, ENV_GRAFT, ENV_PARENT};
use tracing_progress::{FieldValue, ProgressSpanExt};
use tracing_subscriber::prelude::*;

const CHILD: &str = "TP_BENCH_CHILD";
const UPDATES: u64 = 200;
const ROUNDS: usize = 5;

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn child(mode: &str) {
    let (layer, _store) = tracing_progress::layer();
    tracing_subscriber::registry().with(layer).init();
    match mode {
        "delay" => {
            let span = tracing::info_span!("ticks", progress.level = "ticks");
            let _g = span.enter();
            span.set_total(UPDATES);
            for i in 1..=UPDATES {
                std::thread::sleep(Duration::from_millis(30));
                span.set_metadata("sent_at_us", FieldValue::U64(now_us()));
                span.set_current(i);
            }
        }
        _ => {
            let (t0, p0) = (
                cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID),
                cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
            );
            setlist_sim::process_setlist("bench", &setlist_sim::SONGS);
            let (t1, p1) = (
                cpu_ns(libc::CLOCK_THREAD_CPUTIME_ID),
                cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
            );
            println!("CPU {} {} {}", t1 - t0, p1 - p0, reporter_ns());
        }
    }
}

/// CPU time of the child's reporting threads (`/proc/self/task/*/schedstat`, ns).
fn reporter_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| matches!(c.trim(), "progress-report" | "progress-parent"))
        })
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            s.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

fn child_command(mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("bench binary"));
    cmd.env(CHILD, mode)
        .env("SETLIST_SPEED", "4")
        .env("RUST_LOG", "off")
        .stderr(Stdio::null());
    cmd
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn delay() {
    let (layer, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    let mut delays = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let mut sub = store.subscribe();
        let mut child = child_command("delay").spawn_tracked().expect("spawn");
        let mut last = 0;
        while child.try_wait().expect("try_wait").is_none() {
            let changes = sub.wait(Duration::from_millis(200));
            let seen_at = now_us();
            for state in changes.changed {
                let Some(ticks) = state
                    .root
                    .walk()
                    .find(|l| &*l.level_type == "ticks" && l.current > last)
                else {
                    continue;
                };
                last = ticks.current;
                if let Some(sent) = ticks.metadata.get("sent_at_us").and_then(|v| v.as_u64()) {
                    delays.push(seen_at.saturating_sub(sent));
                }
            }
        }
    });
    delays.sort_unstable();
    println!(
        "update delay child -> parent over {} updates: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delays.len(),
        pct(&delays, 0.5) as f64 / 1e3,
        pct(&delays, 0.99) as f64 / 1e3,
        delays.last().copied().unwrap_or(0) as f64 / 1e3
    );
}

fn run_work(with_parent: bool) -> (u64, u64, u64) {
    let mut cmd = child_command("work");
    cmd.stdout(Stdio::piped());
    let out = if with_parent {
        let child = cmd.spawn_tracked().expect("spawn");
        let mut out = String::new();
        let mut child = child;
        use std::io::Read;
        if let Some(mut so) = child.child_mut().stdout.take() {
            let _ = so.read_to_string(&mut out);
        }
        assert!(child.wait().expect("wait").success());
        out
    } else {
        let o = cmd
            .env_remove(ENV_PARENT)
            .env_remove(ENV_GRAFT)
            .output()
            .expect("run");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let line = out
        .lines()
        .find(|l| l.starts_with("CPU "))
        .expect("CPU line");
    let mut f = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse::<u64>().unwrap());
    (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
}

fn overhead() {
    let (layer, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    let (mut alone, mut reported) = ((u64::MAX, u64::MAX), (u64::MAX, u64::MAX));
    let mut reporter = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        for _ in 0..ROUNDS {
            let a = run_work(false);
            let r = run_work(true);
            alone = (alone.0.min(a.0), alone.1.min(a.1));
            reported = (reported.0.min(r.0), reported.1.min(r.1));
            reporter.push(r.2);
        }
    });
    reporter.sort_unstable();
    let sp = store
        .history(&Default::default())
        .first()
        .map(|op| op.root.children.len())
        .unwrap_or(0);
    let ms = |ns: u64| ns as f64 / 1e6;
    let rel = |a: u64, b: u64| (b as f64 - a as f64) / a as f64 * 100.0;
    println!(
        "setlist workload in a child, best of {ROUNDS}: instrumented thread CPU {:.2} ms alone, \
         {:.2} ms reporting to a parent ({:+.1}%); whole process CPU {:.2} ms alone, {:.2} ms \
         reporting ({:+.1}%); the reporting threads themselves: median {:.2} ms CPU per run \
         ({:.1}% of the process); {sp} children grafted",
        ms(alone.0),
        ms(reported.0),
        rel(alone.0, reported.0),
        ms(alone.1),
        ms(reported.1),
        rel(alone.1, reported.1),
        ms(reporter[reporter.len() / 2]),
        reporter[reporter.len() / 2] as f64 / reported.1 as f64 * 100.0,
    );
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        child(&mode);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this once as a smoke test.
    delay();
    overhead();
}
