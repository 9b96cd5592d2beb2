//! History is bounded by the estimated bytes of what it keeps, not only by count and age.

mod support;

use tracing::info_span;
use tracing_progress::Builder;

use support::Traced;

fn run(traced: &Traced, children: usize, text: &str) {
    tracing::dispatcher::with_default(&traced.dispatch, || {
        let op = info_span!("op", progress.level = "op");
        let _g = op.enter();
        for i in 0..children {
            info_span!("c", progress.level = "c", i, note = text).in_scope(|| {});
        }
    });
}

#[test]
fn history_keeps_its_estimated_bytes_under_the_bound() {
    let traced = Traced::new(Builder::new().history_max_bytes(2_000_000));
    let text = "t".repeat(1_000);
    run(&traced, 100, &text);
    let one = traced.store.stats().history_bytes;
    // A node with a 1,000-byte field costs at least that much.
    assert!(one > 100 * 1_000, "estimate {one} for 100 nodes of 1 kB");
    for _ in 0..60 {
        run(&traced, 100, &text);
    }
    let stats = traced.store.stats();
    assert!(stats.history_bytes <= 2_000_000, "{stats:?}");
    assert!(stats.history_evicted > 0, "{stats:?}");
    assert_eq!(stats.history as u64 + stats.history_evicted, 61);
    // Eviction takes the oldest: the newest operation is the one kept last.
    let newest = traced.store.history(&Default::default())[0].id;
    run(&traced, 100, &text);
    assert!(traced.store.get(newest).is_some());

    // One operation bigger than the whole bound is still kept, alone.
    run(&traced, 1_000, &"b".repeat(5_000));
    let stats = traced.store.stats();
    assert_eq!(stats.history, 1, "{stats:?}");
    assert!(stats.history_bytes > 2_000_000, "{stats:?}");
    run(&traced, 1, "");
    let stats = traced.store.stats();
    assert_eq!(
        stats.history, 1,
        "the big one is evicted by the next: {stats:?}"
    );
    assert!(stats.history_bytes < 100_000, "{stats:?}");
}
