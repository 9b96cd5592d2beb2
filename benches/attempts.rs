//! Cost of attempts (issue 16, item 2), per child span (create, enter, exit, close), in ONE
//! process, configurations interleaved, best of rounds, thread CPU clock.
//!
//! * `unkeyed`: `info_span!("step", progress.level = "step")`: the automatic rule never runs.
//! * `keyed, none failed`: the same with `progress.name = key`: the rule's check is one
//!   comparison (nothing failed lately).
//! * `keyed, 16 failed`: 16 siblings with other keys failed before the batch: every new keyed
//!   span looks at the operation's last 16 failures (the most it ever looks at).
//! * `retry pair`: a keyed span that fails and its retry (same key), per pair: the retry takes
//!   the failed node's place. Compare with 2 x `keyed, none failed` plus a failure's cost
//!   (`fail pair`: a failed span and a completed one with another key).
//!
//! Run: `cargo bench --bench attempts` (`ATTEMPTS_QUICK=1` for fewer rounds).

#[path = "../tests/support/cpu.rs"]
mod cpu;
use cpu::thread_cpu_ns;
use std::hint::black_box;

use tracing::{Dispatch, dispatcher, info_span};
use tracing_progress::{Builder, ProgressSpanExt, Store};
use tracing_subscriber::layer::SubscriberExt;

const SPANS: usize = 4_000;

#[derive(Clone, Copy)]
enum Shape {
    Unkeyed,
    Keyed { failed_before: usize },
    RetryPair,
    FailPair,
}

/// ns per child span (per pair for the pair shapes), one operation per batch.
fn batch(d: &Dispatch, names: &[String], shape: Shape) -> f64 {
    dispatcher::with_default(d, || {
        let root = info_span!("job", progress.level = "job");
        let _r = root.enter();
        if let Shape::Keyed { failed_before } = shape {
            for i in 0..failed_before {
                let s = info_span!(
                    "step",
                    progress.level = "step",
                    progress.name = format!("other{i:04}.wav").as_str()
                );
                s.fail("boom");
            }
        }
        let t = thread_cpu_ns();
        match shape {
            Shape::Unkeyed => {
                for _ in 0..SPANS {
                    let s = info_span!("step", progress.level = "step");
                    let _g = black_box(s.enter());
                }
            }
            Shape::Keyed { .. } => {
                for name in &names[..SPANS] {
                    let s = info_span!(
                        "step",
                        progress.level = "step",
                        progress.name = name.as_str()
                    );
                    let _g = black_box(s.enter());
                }
            }
            Shape::RetryPair | Shape::FailPair => {
                for pair in names[..SPANS].chunks(2) {
                    let first = info_span!(
                        "step",
                        progress.level = "step",
                        progress.name = pair[0].as_str()
                    );
                    first.in_scope(|| first.fail("transient"));
                    drop(first);
                    let again = if matches!(shape, Shape::RetryPair) {
                        &pair[0]
                    } else {
                        &pair[1]
                    };
                    let s = info_span!(
                        "step",
                        progress.level = "step",
                        progress.name = again.as_str()
                    );
                    let _g = black_box(s.enter());
                }
            }
        }
        let n = match shape {
            Shape::RetryPair | Shape::FailPair => SPANS / 2,
            _ => SPANS,
        };
        (thread_cpu_ns() - t) as f64 / n as f64
    })
}

fn ours() -> (Dispatch, Store) {
    let (layer, store) = Builder::new().estimate_interval(None).build().unwrap();
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        store,
    )
}

fn main() {
    let rounds = if std::env::var_os("ATTEMPTS_QUICK").is_some() {
        5
    } else {
        30
    };
    let names: Vec<String> = (0..SPANS).map(|i| format!("file-{i:05}.wav")).collect();
    let (d, _store) = ours();
    let cases = [
        ("unkeyed", Shape::Unkeyed),
        ("keyed, none failed", Shape::Keyed { failed_before: 0 }),
        ("keyed, 16 failed", Shape::Keyed { failed_before: 16 }),
        ("retry pair", Shape::RetryPair),
        ("fail pair", Shape::FailPair),
    ];
    let mut best = vec![f64::MAX; cases.len()];
    for _ in 0..rounds {
        for (b, (_, shape)) in best.iter_mut().zip(cases.iter()) {
            *b = b.min(batch(&d, &names, *shape));
        }
    }
    for ((name, shape), b) in cases.iter().zip(&best) {
        let per = if matches!(shape, Shape::RetryPair | Shape::FailPair) {
            "pair"
        } else {
            "span"
        };
        println!("{name:>20}: {b:8.1} ns/{per}");
    }
    println!(
        "the rule's look at 16 failures: {:+.1} ns per keyed span; a retry vs a failure and a new unit: {:+.1} ns",
        best[2] - best[1],
        best[3] - best[4]
    );
}
