//! Resource sampling attributes CPU and memory to the nodes that were running.
#![cfg(feature = "resources")]

use std::time::{Duration, Instant};

use tracing::info_span;
use tracing_progress::{Builder, ProgressSpanExt};
use tracing_subscriber::prelude::*;

fn spin(d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < end {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    x
}

#[test]
fn samples_reach_running_nodes_and_their_operation() {
    let (layer, store) = Builder::new()
        .sample_resources(Duration::from_millis(20))
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let op = info_span!("job", progress.level = "job");
        let _g = op.enter();
        let busy = info_span!("busy", progress.level = "step");
        busy.in_scope(|| std::hint::black_box(spin(Duration::from_millis(400))));
        drop(busy);
        let live = store.get(op.operation_id().unwrap()).unwrap();
        let step = &live.root.children[0];
        let usage = step.resources().expect("the busy step was sampled");
        assert!(usage.samples >= 3, "{usage:?}");
        assert!(
            usage.cpu_percent_peak > 10.0,
            "spinning shows as CPU: {usage:?}"
        );
        assert!(usage.rss_bytes_peak > 1_000_000, "{usage:?}");
        assert!(usage.rss_bytes_mean <= usage.rss_bytes_peak);
        assert!(usage.cpu_percent_mean <= usage.cpu_percent_peak);
        let op_usage = live.root.resources().expect("the operation too");
        assert!(op_usage.samples >= usage.samples);
    });
    // A node that never ran while a sample was taken has none.
    let (layer, store) = Builder::new()
        .sample_resources(Duration::from_secs(3600))
        .build()
        .unwrap();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        info_span!("quick", progress.level = "q").in_scope(|| {});
    });
    assert!(
        store.history(&Default::default())[0]
            .root
            .resources()
            .is_none()
    );
}

#[test]
fn too_short_interval_is_refused() {
    let err = Builder::new()
        .sample_resources(Duration::from_millis(1))
        .build::<tracing_subscriber::Registry>()
        .unwrap_err();
    assert!(err.to_string().contains("10 ms"), "{err}");
}
