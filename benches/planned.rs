//! Cost of planned children (issue 16, item 3), per child span, in ONE process, configurations
//! interleaved, best of rounds, thread CPU clock.
//!
//! Each batch is one parent with `CHILDREN` tracked children (created, entered, closed):
//! * `no plan`: the parent plans nothing (what a child cost before plans existed, plus the
//!   one check for a plan);
//! * `plan, in order`: the parent planned every child's name first; children start in plan
//!   order, so each takes the first waiting slot;
//! * `plan, reverse`: children start in reverse order: each finds its slot through the
//!   plan's name index (was a scan of the waiting slots, O(waiting) per child, until 2026-12-02);
//! * `plan, by key`: keyed plan, children carry `progress.key`, in order.
//!
//! The parent's `plan` call itself is timed apart (`plan call`, per planned name).
//! Run: `cargo bench --bench planned` (`PLANNED_QUICK=1` for fewer rounds).

#[path = "../tests/support/cpu.rs"]
mod cpu;
use cpu::thread_cpu_ns;
use std::hint::black_box;

use tracing::{Dispatch, dispatcher, info_span};
use tracing_progress::{Builder, ProgressSpanExt, Store};
use tracing_subscriber::layer::SubscriberExt;

/// Children per parent: the default cap, so every child has a slot.
const CHILDREN: usize = 1_000;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    NoPlan,
    InOrder,
    Reverse,
    ByKey,
}

/// (ns per child, ns per planned name for the plan call).
fn batch(d: &Dispatch, names: &[String], mode: Mode) -> (f64, f64) {
    dispatcher::with_default(d, || {
        let parent = info_span!("setlist", progress.level = "setlist");
        let _g = parent.enter();
        let t = thread_cpu_ns();
        match mode {
            Mode::NoPlan => {}
            Mode::ByKey => parent.plan_keyed(Some("song"), names.iter().map(|n| (n, n))),
            _ => parent.plan(Some("song"), names),
        }
        let plan_ns = (thread_cpu_ns() - t) as f64 / names.len() as f64;
        let order: Box<dyn Iterator<Item = &String>> = if mode == Mode::Reverse {
            Box::new(names.iter().rev())
        } else {
            Box::new(names.iter())
        };
        let t = thread_cpu_ns();
        for n in order {
            let child = if mode == Mode::ByKey {
                info_span!(
                    "song",
                    progress.level = "song",
                    progress.name = n.as_str(),
                    progress.key = n.as_str()
                )
            } else {
                info_span!("song", progress.level = "song", progress.name = n.as_str())
            };
            child.in_scope(|| black_box(()));
        }
        let child_ns = (thread_cpu_ns() - t) as f64 / names.len() as f64;
        (child_ns, if mode == Mode::NoPlan { 0.0 } else { plan_ns })
    })
}

fn ours() -> (Dispatch, Store) {
    let (layer, store) = Builder::new()
        .estimate_interval(None)
        .history_limit(1)
        .build()
        .unwrap();
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        store,
    )
}

fn main() {
    let rounds = if std::env::var_os("PLANNED_QUICK").is_some() {
        5
    } else {
        30
    };
    let names: Vec<String> = (0..CHILDREN).map(|i| format!("audio{i:04}.wav")).collect();
    let (d, _store) = ours();
    let modes = [
        ("no plan", Mode::NoPlan),
        ("plan, in order", Mode::InOrder),
        ("plan, reverse", Mode::Reverse),
        ("plan, by key", Mode::ByKey),
    ];
    let mut best = vec![(f64::MAX, f64::MAX); modes.len()];
    for _ in 0..rounds {
        for (b, (_, mode)) in best.iter_mut().zip(modes) {
            let (c, p) = batch(&d, &names, mode);
            b.0 = b.0.min(c);
            b.1 = b.1.min(p);
        }
    }
    for ((name, mode), (c, p)) in modes.iter().zip(&best) {
        if *mode == Mode::NoPlan {
            println!("{name:>15}: {c:8.1} ns/child");
        } else {
            println!("{name:>15}: {c:8.1} ns/child, plan call {p:6.1} ns/name");
        }
    }
}
