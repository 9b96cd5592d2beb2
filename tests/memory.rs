//! Memory stays flat: a million operations through a store with history 1,000, and one
//! operation with a million blocks under the folding bound. Peak RSS figures are printed
//! (`cargo test --test memory -- --nocapture`).
//!
//! One test function on purpose: RSS is per process, so the phases must not run in parallel.

use tracing::info_span;
use tracing_progress::{Builder, ProgressSpanExt};
use tracing_subscriber::prelude::*;

/// (current RSS, peak RSS) in KiB from /proc/self/status; (0, 0) where there is no procfs.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn memory_stays_flat() {
    let (layer, store) = Builder::new()
        .history_limit(1_000)
        .max_finished_children(1_000)
        .max_finished_nodes(10_000)
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        // Phase 1: 1,000,000 operations, each with one child.
        let run = |n: usize| {
            for i in 0..n {
                let op = info_span!("op", progress.level = "op", i);
                let _g = op.enter();
                info_span!("step", progress.level = "step").in_scope(|| {});
            }
        };
        run(100_000);
        let (after_warmup, _) = rss_kib();
        run(900_000);
        let (after_million, peak1) = rss_kib();
        let stats = store.stats();
        assert_eq!(stats.history, 1_000);
        assert_eq!(stats.history_evicted, 999_000);
        println!(
            "1,000,000 operations, history 1,000: RSS after 100k {after_warmup} KiB, after 1M {after_million} KiB, peak {peak1} KiB"
        );
        assert!(
            after_million < after_warmup + 8 * 1024,
            "RSS grew from {after_warmup} to {after_million} KiB"
        );

        // Phase 2: one operation with 1,000,000 blocks under 1,000 actions.
        let (before_blocks, _) = rss_kib();
        let op = info_span!("setlist", progress.level = "setlist");
        let op_id = op.operation_id().unwrap();
        op.in_scope(|| {
            for a in 0..1_000 {
                let action = info_span!("action", progress.level = "action", a);
                let _g = action.enter();
                for _ in 0..1_000 {
                    let block = info_span!("block", progress.level = "block");
                    block.in_scope(|| block.inc(1));
                }
            }
        });
        let live = store.get(op_id).unwrap();
        let retained = live.metrics.nodes_retained;
        assert_eq!(live.metrics.nodes_seen, 1 + 1_000 + 1_000_000);
        assert!(retained <= 10_000 + 1 + 1, "retained {retained} nodes");
        assert_eq!(
            live.metrics.nodes_folded + retained,
            live.metrics.nodes_seen,
            "every node is retained or folded"
        );
        let actions = live
            .root
            .folded
            .iter()
            .find(|f| &*f.level_type == "action")
            .unwrap();
        assert_eq!(actions.count + live.root.children.len() as u64, 1_000);
        assert_eq!(
            live.root.current, 1_000,
            "folded children still count as done"
        );
        let (after_blocks, peak2) = rss_kib();
        println!(
            "1 operation with 1,000,000 blocks: {retained} nodes retained, RSS before {before_blocks} KiB, after {after_blocks} KiB, peak {peak2} KiB"
        );
        assert!(
            after_blocks < before_blocks + 64 * 1024,
            "RSS grew from {before_blocks} to {after_blocks} KiB"
        );
    });
}
