//! A subscriber never gets a `changed` snapshot of an operation at or after its `finished`
//! one, neither in the same [`Changes`](tracing_progress::Changes) nor in a later one, while
//! writers on several threads start, update and finish operations as fast as they can and the
//! subscriber polls in a tight loop (issue 10, defect 6: history was written before the
//! operation left the active map, so a poll could see it in both).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::info_span;
use tracing_progress::{Builder, ProgressSpanExt};

use support::Traced;

#[test]
fn changed_never_follows_finished_under_contention() {
    let traced = Arc::new(Traced::new(Builder::new().history_limit(100_000)));
    let mut sub = traced.store.subscribe();
    let done = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let traced = traced.clone();
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&traced.dispatch, || {
                    for i in 0..2_000u64 {
                        let op = info_span!("op", progress.level = "op", w, i);
                        let _g = op.enter();
                        for _ in 0..5 {
                            op.inc(1);
                        }
                    }
                });
            })
        })
        .collect();
    let poller = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut finished = HashSet::new();
            let mut violations = Vec::new();
            let (mut polls, mut changed_seen) = (0u64, 0u64);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let last_round = done.load(Ordering::Acquire);
                let changes = sub.poll();
                polls += 1;
                changed_seen += changes.changed.len() as u64;
                let now_finished: HashSet<_> = changes.finished.iter().map(|s| s.id).collect();
                for c in &changes.changed {
                    if finished.contains(&c.id) {
                        violations.push(format!("{} changed in a poll after its finished", c.id));
                    }
                    if now_finished.contains(&c.id) {
                        violations.push(format!("{} changed and finished in one poll", c.id));
                    }
                }
                finished.extend(now_finished);
                if last_round || Instant::now() > deadline {
                    return (finished.len(), polls, changed_seen, violations);
                }
            }
        })
    };
    for w in writers {
        w.join().expect("writer");
    }
    done.store(true, Ordering::Release);
    let (finished, polls, changed, violations) = poller.join().expect("poller");
    println!("{finished} finished, {changed} changed snapshots in {polls} polls");
    assert!(
        violations.is_empty(),
        "{} violations: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    assert_eq!(finished, 6_000, "every final state arrives");
    assert!(changed > 0, "the poller saw operations while they ran");
}
