//! Memory stays flat: a million operations through a store with history 1,000, and one
//! operation with a million blocks under the folding bound, and one node receiving a million
//! events (its recent events stay a bounded ring). Peak RSS figures are printed
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

        // Phase 3: one node receiving 1,000,000 events keeps its last 16 (recent events).
        let block = info_span!("block", progress.level = "block");
        let block_op = block.operation_id().unwrap();
        let burst = |from: u64, to: u64| {
            block.in_scope(|| {
                for i in from..to {
                    tracing::info!(i, path = "/data/audio.wav", "decoded a frame");
                }
            })
        };
        burst(0, 100_000);
        let (events_warm, _) = rss_kib();
        burst(100_000, 1_000_000);
        let (events_after, _) = rss_kib();
        let live = store.get(block_op).unwrap();
        let kept = &live.root.recent_events;
        assert_eq!(kept.len(), 16);
        assert_eq!(
            kept.last().unwrap().fields.get("i"),
            Some(&tracing_progress::FieldValue::I64(999_999))
        );
        println!(
            "1 node with 1,000,000 events: 16 kept, RSS after 100k {events_warm} KiB, after 1M {events_after} KiB"
        );
        assert!(
            events_after < events_warm + 4 * 1024,
            "RSS grew from {events_warm} to {events_after} KiB"
        );

        // Phase 4: plans of 1,000,000 names keep 1,000 pending slots each (the default cap);
        // parents that end skip theirs, which then fold like any finished child.
        let names = || std::iter::repeat_n("planned-song.wav", 1_000_000);
        let tour = info_span!("tour", progress.level = "tour");
        let tour_op = tour.operation_id().unwrap();
        let (plan_before, _) = rss_kib();
        let setlists = |n: usize| {
            tour.in_scope(|| {
                for _ in 0..n {
                    let s = info_span!("setlist", progress.level = "setlist");
                    s.plan(Some("song"), names());
                    s.in_scope(|| {});
                }
            })
        };
        let one = tour.in_scope(|| info_span!("setlist", progress.level = "setlist"));
        one.plan(Some("song"), names());
        let (one_plan, _) = rss_kib();
        let live = store.get(tour_op).unwrap();
        let planned = &live.root.children[0];
        assert_eq!(planned.children.len(), 1_000);
        assert_eq!(planned.total, Some(1_000_000));
        assert_eq!(planned.planned_hidden, 999_000);
        drop(one);
        setlists(10);
        let (plans_warm, _) = rss_kib();
        setlists(90);
        let (plans_after, _) = rss_kib();
        let live = store.get(tour_op).unwrap();
        assert_eq!(live.metrics.planned_dropped, 101 * 999_000);
        assert!(live.metrics.nodes_retained <= 10_000 + 101 + 1);
        println!(
            "a plan of 1,000,000 names: 1,000 slots kept, RSS +{} KiB; 100 more plans: RSS after 10 {plans_warm} KiB, after 100 {plans_after} KiB",
            one_plan.saturating_sub(plan_before)
        );
        assert!(
            one_plan < plan_before + 4 * 1024,
            "one plan grew RSS from {plan_before} to {one_plan} KiB"
        );
        assert!(
            plans_after < plans_warm + 8 * 1024,
            "RSS grew from {plans_warm} to {plans_after} KiB"
        );
    });
}

/// Live nodes measured for the RSS-per-node figures.
const LIVE_NODES: usize = 100_000;

/// One configuration's RSS per live span, measured in a fresh process (see
/// [`rss_per_live_span_child`]) so no other test's allocations or freed pages count.
fn rss_per_live_span(config: &str) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "rss_per_live_span_child",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env("NODE_RSS_CONFIG", config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{config}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("RSS_PER_SPAN=").map(|(_, v)| v))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{config}: no figure in {stdout}"))
}

/// What a live tracked node costs in RSS, next to a registry without layers and the minimal
/// per-span-state layer (two `u64`s in the extensions), each in its own process. The bounds
/// are generous (about 1.5× the figures measured last: 284 B over the bare registry, 364 B
/// with one `u64` field; 362 B and 443 B before the node, its counters and its table entry
/// were made smaller, 512 B and 591 B while the layer kept its state in the registry's
/// extensions), so only a real regression fails; the target (issue 11) is 300 B. The minimal
/// layer pays about 190 B for the registry's extensions map and box, which this layer no
/// longer uses (its state is in its own table, keyed by span id).
#[test]
fn rss_per_live_node_is_bounded() {
    let plain = rss_per_live_span("plain");
    let minimal = rss_per_live_span("minimal");
    let ours = rss_per_live_span("progress");
    let ours_field = rss_per_live_span("progress_field");
    println!(
        "RSS per live span, {LIVE_NODES} live: registry alone {plain:.0} B, minimal layer \
         {minimal:.0} B (+{:.0}), tracing-progress {ours:.0} B (+{:.0} over the registry, \
         +{:.0} over minimal), with one u64 field {ours_field:.0} B (+{:.0})",
        minimal - plain,
        ours - plain,
        ours - minimal,
        ours_field - plain,
    );
    assert!(
        ours - plain < 450.0,
        "a live node costs {:.0} B of RSS",
        ours - plain
    );
    assert!(
        ours_field - plain < 570.0,
        "a live node with one field costs {:.0} B of RSS",
        ours_field - plain
    );
}

/// Two `u64`s per span: the cheapest layer that keeps per-span state.
struct Minimal;

impl<S> tracing_subscriber::Layer<S> for Minimal
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert([0u64; 2]);
        }
    }
}

/// Run by [`rss_per_live_node_is_bounded`] in a child process, one configuration each.
#[test]
#[ignore = "run by rss_per_live_node_is_bounded in a child process"]
fn rss_per_live_span_child() {
    let config = std::env::var("NODE_RSS_CONFIG").unwrap_or_else(|_| "progress".into());
    let measure = |make: &dyn Fn(usize) -> tracing::Span| {
        let root = info_span!("root", progress.level = "root");
        let _g = root.enter();
        // Warm up allocator and registry with the same shape, then measure fresh spans.
        drop((0..1_000).map(make).collect::<Vec<_>>());
        let (before, _) = rss_kib();
        let live: Vec<_> = (0..LIVE_NODES).map(make).collect();
        let (after, _) = rss_kib();
        std::hint::black_box(&live);
        (after.saturating_sub(before) * 1024) as f64 / LIVE_NODES as f64
    };
    let plain_span = |_: usize| info_span!("block");
    let tracked = |_: usize| info_span!("block", progress.level = "block");
    let tracked_field = |i: usize| info_span!("block", progress.level = "block", i = i as u64);
    let per_span = match config.as_str() {
        "plain" => tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            measure(&plain_span)
        }),
        "minimal" => {
            tracing::subscriber::with_default(tracing_subscriber::registry().with(Minimal), || {
                measure(&plain_span)
            })
        }
        _ => {
            let (layer, _store) = Builder::new().build().unwrap();
            let with_field = config == "progress_field";
            tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
                if with_field {
                    measure(&tracked_field)
                } else {
                    measure(&tracked)
                }
            })
        }
    };
    println!("RSS_PER_SPAN={per_span}");
}
