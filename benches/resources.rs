//! Does sampling process resources slow the instrumented code? (target: ≤ 2%)
//!
//! `resource_sampling/*` runs a small operation (setlist with 10 blocks, 10 `inc`s each) under
//! our layer without sampling (`off`), with the sampler waking every 100 ms (`on_100ms`, what
//! the example uses) and every 10 ms (`on_10ms`, ten times more). `on_* / off` is the slowdown.
//!
//! Run: `cargo bench --features resources --bench resources`.

#[path = "common/mod.rs"]
mod common;
use common::small_operation;

use std::time::Duration;

use criterion::Criterion;
use tracing::{Dispatch, dispatcher};
use tracing_progress::Builder;
use tracing_subscriber::layer::SubscriberExt;

fn main() {
    let mut c = Criterion::default()
        .sample_size(40)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let mut group = c.benchmark_group("resource_sampling");
    for (name, builder) in [
        ("off", Builder::new()),
        (
            "on_100ms",
            Builder::new().sample_resources(Duration::from_millis(100)),
        ),
        (
            "on_10ms",
            Builder::new().sample_resources(Duration::from_millis(10)),
        ),
    ] {
        let (layer, _store) = builder.build().expect("valid settings");
        let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
        dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter(small_operation));
        });
    }
    group.finish();
    c.final_summary();
}
