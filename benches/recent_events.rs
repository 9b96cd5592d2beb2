//! Cost of recent events (issue 16, item 1): one `info!` with a message and two fields,
//! per event, in ONE process, configurations interleaved, best of rounds, thread CPU clock.
//!
//! * `off, in tracked`: registry + our layer with recent events off, event inside a tracked
//!   span: what an ordinary event cost before recent events (the layer returned at once).
//! * `copy floor`: registry + a layer that only copies the event's fields (message and two
//!   values into owned data): "the copy of its fields".
//! * `on, in tracked`: our layer with the defaults (16 events, 8 KiB, INFO), event inside a
//!   tracked span: visitor, timestamp, the operation's lock, the ring push.
//! * `on, untracked` / `off, untracked`: the same event with no tracked span entered.
//! * `on, ring N`: the tracked case with other ring sizes (to choose the default).
//!
//! Target: `on, in tracked` ≤ 2 × `off, in tracked` + `copy floor`; untracked unchanged.
//! Run: `cargo bench --bench recent_events` (`RECENT_QUICK=1` for fewer rounds;
//! `RECENT_ONLY=on` runs only the cases whose name contains `on`, to profile one with `perf`).

#[path = "../tests/support/cpu.rs"]
mod cpu;
use cpu::thread_cpu_ns;

use std::hint::black_box;
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber, dispatcher, info, info_span};
use tracing_progress::{Builder, Store};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Copies an event's fields into owned values, as any recording of them must.
#[derive(Default)]
struct Copy(Vec<(&'static str, String)>, Option<Arc<str>>);
impl Visit for Copy {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" {
            self.1 = Some(Arc::from(v));
        } else {
            self.0.push((f.name(), v.to_owned()));
        }
    }
    fn record_i64(&mut self, f: &Field, v: i64) {
        self.0.push((f.name(), v.to_string()));
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        let s = format!("{v:?}");
        if f.name() == "message" {
            self.1 = Some(Arc::from(s));
        } else {
            self.0.push((f.name(), s));
        }
    }
}

struct CopyLayer;
impl<S: Subscriber> Layer<S> for CopyLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut c = Copy::default();
        event.record(&mut c);
        black_box(c);
    }
}

const EVENTS: u64 = 20_000;

/// One configuration: runs a batch, returns ns per event.
type Case<'a> = Box<dyn FnMut() -> f64 + 'a>;

fn ours(builder: Builder) -> (Dispatch, Store) {
    let (layer, store) = builder.estimate_interval(None).build().unwrap();
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        store,
    )
}

/// ns per event, inside a tracked span (`tracked`) or an untracked one.
fn per_event(d: &Dispatch, tracked: bool) -> f64 {
    dispatcher::with_default(d, || {
        let span = if tracked {
            info_span!("block", progress.level = "block")
        } else {
            info_span!("plain")
        };
        let _g = span.enter();
        let t = thread_cpu_ns();
        for i in 0..EVENTS {
            info!(i, path = "/data/audio.wav", "decoded a frame");
        }
        (thread_cpu_ns() - t) as f64 / EVENTS as f64
    })
}

fn main() {
    let rounds = if std::env::var_os("RECENT_QUICK").is_some() {
        5
    } else {
        30
    };
    let (off, _s1) = ours(Builder::new().recent_events(0, 0));
    let (on, _s2) = ours(Builder::new());
    let (ring4, _s3) = ours(Builder::new().recent_events(4, 8 * 1024));
    let (ring64, _s4) = ours(Builder::new().recent_events(64, 64 * 1024));
    let copy = Dispatch::new(tracing_subscriber::registry().with(CopyLayer));
    let mut cases: Vec<(&str, Case)> = vec![
        ("off, in tracked", Box::new(|| per_event(&off, true))),
        ("copy floor", Box::new(|| per_event(&copy, true))),
        ("on, in tracked", Box::new(|| per_event(&on, true))),
        ("off, untracked", Box::new(|| per_event(&off, false))),
        ("on, untracked", Box::new(|| per_event(&on, false))),
        ("on, ring 4", Box::new(|| per_event(&ring4, true))),
        ("on, ring 64", Box::new(|| per_event(&ring64, true))),
    ];
    if let Ok(only) = std::env::var("RECENT_ONLY") {
        cases.retain(|(name, _)| name.starts_with(only.as_str()));
        for _ in 0..rounds {
            for (_, case) in cases.iter_mut() {
                black_box(case());
            }
        }
        return;
    }
    let mut best = vec![f64::MAX; cases.len()];
    for _ in 0..rounds {
        for (b, (_, case)) in best.iter_mut().zip(cases.iter_mut()) {
            *b = b.min(case());
        }
    }
    for ((name, _), b) in cases.iter().zip(&best) {
        println!("{name:>18}: {b:7.1} ns/event");
    }
    let budget = 2.0 * best[0] + best[1];
    println!(
        "target: on, in tracked {:.1} ns <= 2 x off {:.1} + copy {:.1} = {budget:.1} ns: {}",
        best[2],
        best[0],
        best[1],
        if best[2] <= budget { "met" } else { "NOT met" }
    );
}
