//! Process CPU and memory, sampled off the hot path (feature `resources`).
//!
//! A background thread (`tracing-progress-resources`, running with no `tracing` subscriber)
//! reads this process's CPU use and resident memory through `sysinfo` every interval and
//! attributes the sample to every node running at that moment, so each level and each
//! operation (its root) gets a mean and a peak ([`ResourceUsage`](crate::ResourceUsage)).
//! The instrumented code pays nothing: the only cost is one short lock of each running
//! operation per interval. The thread ends when the store is dropped.
//!
//! Per-level CPU *time* (reading the thread CPU clock on every enter and exit) is not offered:
//! that clock is a system call on Linux, several times the cost of the whole span.

use std::sync::Weak;
use std::time::{Duration, Instant};

use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System};

use crate::store::StoreInner;

/// Starts the sampler; without a thread there are no samples and nothing else changes.
pub(crate) fn spawn_sampler(store: Weak<StoreInner>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tracing-progress-resources".into())
        .spawn(move || {
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            let Ok(pid) = sysinfo::get_current_pid() else {
                return;
            };
            let Ok(mut system) = System::new() else {
                return;
            };
            let kind = ProcessRefreshKind::nothing().with_cpu().with_memory();
            // CPU use = process CPU time over wall time between two samples, in percent of one
            // core (sysinfo's own percentage needs system-wide refreshes we do not pay for).
            let mut last: Option<(Instant, u64)> = None;
            loop {
                let Some(store) = store.upgrade() else { return };
                system.refresh_processes_specifics(ProcessesToUpdate::Some(&[pid]), false, kind);
                if let Some(process) = system.process(pid) {
                    let now = (Instant::now(), process.accumulated_cpu_time());
                    if let Some((t0, cpu0)) = last {
                        let wall_ms = now.0.duration_since(t0).as_secs_f64() * 1e3;
                        let cpu_ms = now.1.saturating_sub(cpu0) as f64;
                        if wall_ms > 0.0 {
                            store.record_resources(cpu_ms / wall_ms * 100.0, process.memory());
                        }
                    }
                    last = Some(now);
                }
                drop(store);
                std::thread::sleep(interval);
            }
        });
    drop(spawned);
}
