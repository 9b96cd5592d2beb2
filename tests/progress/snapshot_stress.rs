//! Snapshots taken while writers create, update, fail and close nodes of the same operation
//! are consistent cuts: counts never go backwards, every node hangs under its own parent, and
//! a parent's finished count matches its finished and folded children. A watchdog fails the
//! test instead of letting it hang.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tracing::info_span;
use tracing_progress::{Builder, NodeId, ProgressLevel, ProgressSpanExt, Status};
use tracing_subscriber::Registry;
use tracing_subscriber::prelude::*;

const WRITERS: usize = 2;
const ITEMS: usize = 3_000;
const WATCHDOG: Duration = Duration::from_secs(120);

/// Checks one snapshot against itself and against the last values seen per node; with
/// `nodes_retained`, also that it holds every node the tree retains (true of a snapshot taken
/// in one hold; one that let writers in on the way reads that count at its end).
fn check(
    root: &ProgressLevel,
    seen: &mut HashMap<NodeId, u64>,
    nodes_retained: Option<u64>,
) -> usize {
    let mut count = 0;
    let mut stack = vec![root];
    while let Some(l) = stack.pop() {
        count += 1;
        let last = seen.entry(l.id).or_insert(0);
        assert!(
            l.current >= *last,
            "{} went back from {last} to {}",
            l.name,
            l.current
        );
        *last = l.current;
        if &*l.level_type == "batch" {
            // No explicit units: it counts completed children, retained plus folded, exactly.
            let retained = l.children.iter().filter(|c| c.status == Status::Completed);
            let folded: u64 = l.folded.iter().map(|f| f.completed).sum();
            assert_eq!(
                l.current,
                retained.count() as u64 + folded,
                "batch vs its children"
            );
        }
        for c in &l.children {
            // Every child hangs under its own parent: names carry the parent's name.
            if &*c.level_type == "part" {
                assert!(
                    c.name.starts_with(&*l.name),
                    "{} under {} (not its parent)",
                    c.name,
                    l.name
                );
            }
            stack.push(c);
        }
    }
    if let Some(retained) = nodes_retained {
        assert_eq!(count as u64, retained, "retained nodes vs the tree");
    }
    count
}

#[test]
fn snapshots_concurrent_with_writers_are_consistent() {
    let (layer, store) = Builder::new()
        .max_finished_children(50)
        .max_finished_nodes(2_000)
        .build::<Registry>()
        .unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let (done_tx, done_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                let root = info_span!("batch", progress.level = "batch");
                let id = root.operation_id().unwrap();
                let writers: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let root = root.clone();
                        let dispatch = dispatch.clone();
                        std::thread::spawn(move || {
                            tracing::dispatcher::with_default(&dispatch, || {
                                for i in 0..ITEMS {
                                    let name = format!("w{w}-{i}");
                                    let item = info_span!(parent: &root, "item", progress.level = "item", progress.name = name.as_str());
                                    let _g = item.enter();
                                    let p = item.progress();
                                    for part in 0..3 {
                                        let pn = format!("{name}/p{part}");
                                        info_span!("part", progress.level = "part", progress.name = pn.as_str())
                                            .in_scope(|| p.inc(1));
                                    }
                                    if i % 97 == 0 {
                                        item.fail("bad item");
                                    }
                                }
                            })
                        })
                    })
                    .collect();
                (id, root, writers)
            })
        })
    };
    let (id, root, writers) = worker.join().unwrap();
    let reader = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = HashMap::new();
            let mut snapshots = 0u64;
            let mut last_root = 0;
            while !stop.load(Ordering::Relaxed) {
                let Some(snap) = store.get(id) else { break };
                assert!(snap.root.current >= last_root);
                last_root = snap.root.current;
                check(&snap.root, &mut seen, Some(snap.metrics.nodes_retained));
                snapshots += 1;
            }
            snapshots
        })
    };
    std::thread::spawn(move || {
        for w in writers {
            w.join().unwrap();
        }
        let _ = done_tx.send(());
    });
    let finished = done_rx.recv_timeout(WATCHDOG);
    stop.store(true, Ordering::Relaxed);
    assert!(
        finished.is_ok(),
        "writers did not finish within {WATCHDOG:?}"
    );
    let snapshots = reader.join().expect("a snapshot was inconsistent");
    assert!(snapshots > 0);
    drop(root);
    let done = store.get(id).unwrap();
    let mut seen = HashMap::new();
    check(&done.root, &mut seen, Some(done.metrics.nodes_retained));
    let failed = (WRITERS * ITEMS.div_ceil(97)) as u64;
    assert_eq!(done.root.current, (WRITERS * ITEMS) as u64 - failed);
    assert_eq!(done.root.failed, failed);
    println!("{snapshots} snapshots while writing");
}

/// The same checks on a tree wide enough that each snapshot lets the writers in many times
/// on the way (every 1,024 nodes): thousands of items stay open while others come and go.
#[test]
fn snapshots_letting_writers_in_stay_consistent() {
    const ITEMS: usize = 6_000;
    let (layer, store) = Builder::new()
        .max_finished_children(2_000)
        .max_finished_nodes(4_000)
        .build::<Registry>()
        .unwrap();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let root = tracing::dispatcher::with_default(&dispatch, || {
        info_span!("batch", progress.level = "batch")
    });
    let id = root.operation_id().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = HashMap::new();
            let (mut snapshots, mut widest) = (0u64, 0usize);
            while !stop.load(Ordering::Relaxed) {
                let Some(snap) = store.get(id) else { break };
                widest = widest.max(check(&snap.root, &mut seen, None));
                snapshots += 1;
            }
            (snapshots, widest)
        })
    };
    let (done_tx, done_rx) = mpsc::channel();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (root, dispatch, done_tx) = (root.clone(), dispatch.clone(), done_tx.clone());
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    let mut open = Vec::new();
                    for i in 0..ITEMS {
                        let name = format!("w{w}-{i}");
                        let item = info_span!(parent: &root, "item", progress.level = "item", progress.name = name.as_str());
                        item.in_scope(|| {
                            for part in 0..2 {
                                let pn = format!("{name}/p{part}");
                                info_span!("part", progress.level = "part", progress.name = pn.as_str())
                                    .in_scope(|| ());
                            }
                        });
                        if i % 97 == 0 {
                            item.fail("bad item");
                        }
                        // Every third item stays open until the end: the tree grows wide.
                        if i % 3 == 0 {
                            open.push(item);
                        }
                    }
                    drop(open);
                });
                let _ = done_tx.send(());
            })
        })
        .collect();
    for _ in 0..WRITERS {
        let finished = done_rx.recv_timeout(WATCHDOG);
        if finished.is_err() {
            stop.store(true, Ordering::Relaxed);
            panic!("writers did not finish within {WATCHDOG:?}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let (snapshots, widest) = reader.join().expect("a snapshot was inconsistent");
    assert!(
        widest > 3_000,
        "snapshots held at most {widest} nodes: too few to let writers in on the way"
    );
    drop(root);
    let done = store.get(id).unwrap();
    check(
        &done.root,
        &mut HashMap::new(),
        Some(done.metrics.nodes_retained),
    );
    let failed = (WRITERS * ITEMS.div_ceil(97)) as u64;
    assert_eq!(done.root.current, (WRITERS * ITEMS) as u64 - failed);
    assert_eq!(done.root.failed, failed);
    println!("{snapshots} snapshots while writing, up to {widest} nodes each");
}
