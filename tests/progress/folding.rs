//! Folding stays O(1) per close: 100k live siblings closed in any order, and nesting past
//! `max_depth` (flattened into siblings) closed innermost-first. The old code scanned the
//! child list from the front on every close and took tens of seconds here.

use std::time::Duration;

use tracing::{Span, info_span};
use tracing_progress::{Builder, ProgressSpanExt, Status};

use crate::support::cpu::thread_cpu;
use crate::support::with_layer;

const N: usize = 100_000;
const PER_PARENT: usize = 100;

/// A fixed pseudo-random permutation of `0..n` (no dependency, same every run).
fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// A watchdog, not a timing: a debug build does each test in about 4 s of CPU; the old code
/// (a scan past every live sibling per close) took many minutes.
const BUDGET: Duration = Duration::from_secs(40);

#[test]
fn a_hundred_thousand_live_siblings_close_in_any_order_with_counts_right() {
    let builder = Builder::new()
        .max_finished_children(PER_PARENT)
        .max_finished_nodes(1_000_000);
    let t0 = thread_cpu();
    let (store, id) = with_layer(builder, |store| {
        let root = info_span!("root", progress.level = "root");
        let _g = root.enter();
        let mut children: Vec<Option<Span>> = (0..N)
            .map(|i| {
                let c = info_span!("child", progress.level = "child", i);
                c.inc(1);
                Some(c)
            })
            .collect();
        // Newest first for a quarter, then oldest first, then the rest in random order; one
        // in 1,000 fails (spared by per-parent folding while others can go).
        let mut order: Vec<usize> = (3 * N / 4..N).rev().collect();
        order.extend(0..N / 4);
        order.extend(shuffled(N / 2).into_iter().map(|i| i + N / 4));
        for (k, i) in order.into_iter().enumerate() {
            let c = children[i].take().unwrap();
            if i % 1_000 == 0 {
                c.fail("bad block");
            }
            drop(c);
            if k == N / 2 {
                // Halfway: the live ones are all there, the finished ones bounded.
                let snap = store.get(root.operation_id().unwrap()).unwrap();
                let finished = snap.root.children.iter().filter(|c| c.status.is_finished());
                assert!(finished.count() <= PER_PARENT);
                assert_eq!(
                    snap.root
                        .children
                        .iter()
                        .filter(|c| !c.status.is_finished())
                        .count(),
                    N / 2 - 1
                );
                // Every node in the snapshot hangs under its parent.
                assert!(snap.root.walk().count() > N / 2);
            }
        }
        root.operation_id().unwrap()
    });
    let elapsed = thread_cpu() - t0;
    let op = store.get(id).unwrap();
    let failed = (N / 1_000) as u64;
    assert_eq!(op.root.status, Status::Completed);
    assert_eq!(op.root.current, N as u64 - failed, "completed children");
    assert_eq!(op.root.failed, failed);
    assert_eq!(op.metrics.nodes_seen, N as u64 + 1);
    assert_eq!(
        op.metrics.nodes_folded + op.metrics.nodes_retained,
        op.metrics.nodes_seen
    );
    assert_eq!(op.root.children.len(), PER_PARENT);
    // Failed children are the ones kept while completed ones could go.
    let kept_failed = op
        .root
        .children
        .iter()
        .filter(|c| c.status == Status::Failed);
    assert_eq!(kept_failed.count(), failed as usize);
    let folded: u64 = op.root.folded.iter().map(|f| f.count).sum();
    assert_eq!(folded, (N - PER_PARENT) as u64);
    assert!(elapsed < BUDGET, "took {elapsed:?}");
}

#[test]
fn nesting_flattened_past_max_depth_closes_innermost_first_in_linear_time() {
    const DEPTH: usize = 100_000;
    let builder = Builder::new()
        .max_depth(8)
        .max_finished_children(PER_PARENT)
        .max_finished_nodes(1_000);
    let t0 = thread_cpu();
    let (store, id) = with_layer(builder, |_| {
        let mut chain: Vec<Span> = Vec::with_capacity(DEPTH);
        chain.push(info_span!("level", progress.level = "level"));
        for _ in 1..DEPTH {
            let s = info_span!(parent: chain.last().unwrap(), "level", progress.level = "level");
            s.inc(1);
            chain.push(s);
        }
        let id = chain[0].operation_id().unwrap();
        // Innermost first: the newest of the flattened siblings each time.
        while chain.len() > 1 {
            drop(chain.pop());
        }
        id
    });
    let elapsed = thread_cpu() - t0;
    let op = store.get(id).unwrap();
    assert_eq!(op.status, Status::Completed);
    assert_eq!(op.metrics.nodes_seen, DEPTH as u64);
    assert_eq!(
        op.metrics.nodes_folded + op.metrics.nodes_retained,
        op.metrics.nodes_seen
    );
    assert!(op.metrics.nodes_retained <= 1_000 + 8);
    // Levels 0..=7 nest; everything deeper hangs beside level 8, under level 7.
    let mut l = &op.root;
    for _ in 0..7 {
        assert_eq!(l.children.len(), 1);
        l = &l.children[0];
    }
    let flat_parent_finished =
        l.children.len() as u64 + l.folded.iter().map(|f| f.count).sum::<u64>();
    assert_eq!(flat_parent_finished, (DEPTH - 8) as u64);
    assert!(l.children.iter().skip(1).all(|c| c.flattened));
    assert!(elapsed < BUDGET, "took {elapsed:?}");
}
