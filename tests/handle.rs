//! The progress handle (`span.progress()`): sums across threads, no-op without the layer and
//! after close, cancellation, and what a handle that outlives its operation keeps alive
//! (measured with a counting allocator, so this is its own test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use tracing::info_span;
use tracing_progress::{Builder, ProgressHandle, ProgressSpanExt, Status};
use tracing_subscriber::prelude::*;

/// Bytes allocated and not yet freed, process-wide.
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Tests of this binary run one at a time: the allocation count is process-wide.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn updates_from_several_threads_sum_exactly() {
    let _serial = serial();
    let (layer, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let span = info_span!("scan", progress.level = "scan");
        let progress = span.progress();
        assert!(progress.is_open());
        progress.set_total(8 * 100_000);
        std::thread::scope(|s| {
            for _ in 0..8 {
                let p = progress.clone();
                s.spawn(move || {
                    for _ in 0..100_000 {
                        p.inc(1);
                    }
                });
            }
        });
        let op = store.get(span.operation_id().unwrap()).unwrap();
        assert_eq!(op.root.current, 800_000);
        assert_eq!(op.root.total, Some(800_000));
        assert_eq!(op.root.percentage, Some(100.0));
        progress.set_current(5);
        progress.set_message("almost");
        let op = store.get(span.operation_id().unwrap()).unwrap();
        assert_eq!(op.root.current, 5);
        assert_eq!(op.root.message.as_deref(), Some("almost"));
    });
}

#[test]
fn handle_of_untracked_span_reaches_the_tracked_parent() {
    let _serial = serial();
    let (layer, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let op = info_span!("op", progress.level = "op");
        let helper = op.in_scope(|| info_span!("helper"));
        let p = helper.progress();
        p.inc(3);
        assert_eq!(p.node_id(), op.progress_id());
        assert_eq!(
            store.get(op.operation_id().unwrap()).unwrap().root.current,
            3
        );
    });
}

#[test]
fn without_the_layer_every_method_is_a_no_op() {
    let _serial = serial();
    // No subscriber at all, a subscriber without our layer, and the default handle.
    let handles = [
        info_span!("scan", progress.level = "scan").progress(),
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {
            info_span!("scan", progress.level = "scan").progress()
        }),
        ProgressHandle::default(),
    ];
    for p in handles {
        p.inc(1);
        p.set_total(3);
        p.set_current(2);
        p.set_message("nothing");
        assert!(!p.is_cancelled());
        assert!(!p.is_open());
        assert_eq!(p.node_id(), None);
        assert_eq!(p.operation_id(), None);
    }
}

#[test]
fn after_close_updates_are_ignored() {
    let _serial = serial();
    let (layer, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    let (id, child_handle, root_handle) = tracing::subscriber::with_default(subscriber, || {
        let root = info_span!("root", progress.level = "root");
        let _g = root.enter();
        let child = info_span!("child", progress.level = "child");
        let child_handle = child.progress();
        child.in_scope(|| child_handle.inc(2));
        drop(child);
        assert!(!child_handle.is_open());
        child_handle.inc(40);
        child_handle.set_current(41);
        child_handle.set_message("late");
        let snap = store.get(root.operation_id().unwrap()).unwrap();
        let c = &snap.root.children[0];
        assert_eq!((c.current, c.status), (2, Status::Completed));
        assert_eq!(c.message, None);
        (root.operation_id().unwrap(), child_handle, root.progress())
    });
    // The whole operation is over: still no effect, no panic, from any thread.
    std::thread::spawn(move || {
        root_handle.inc(1);
        root_handle.set_total(1);
        child_handle.set_message("later");
        assert!(!root_handle.is_cancelled());
    })
    .join()
    .unwrap();
    let done = store.get(id).unwrap();
    // One finished child, not 1 + the late `inc(1)`.
    assert_eq!(done.root.current, 1);
    assert_eq!(done.root.total, None);
    assert_eq!(done.root.children[0].current, 2);
}

#[test]
fn is_cancelled_through_the_handle_marks_the_node() {
    let _serial = serial();
    let (layer, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let root = info_span!("root", progress.level = "root");
        let _g = root.enter();
        let worker = info_span!("worker", progress.level = "worker", progress.total = 10);
        let p = worker.progress();
        let id = root.operation_id().unwrap();
        let stopped_at = std::thread::scope(|s| {
            let p = p.clone();
            let store = store.clone();
            s.spawn(move || {
                for i in 0..10 {
                    if i == 3 {
                        store.cancel(id).unwrap();
                    }
                    if p.is_cancelled() {
                        return i;
                    }
                    p.inc(1);
                }
                10
            })
            .join()
            .unwrap()
        });
        assert_eq!(stopped_at, 3);
        drop(worker);
        let snap = store.get(id).unwrap();
        let w = &snap.root.children[0];
        assert_eq!(w.status, Status::Cancelled);
        assert_eq!(w.current, 3);
    });
}

#[test]
fn a_handle_outliving_its_operation_keeps_only_itself_alive() {
    let _serial = serial();
    let (layer, store) = Builder::new().history_limit(1).build().unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    let message = "x".repeat(1_000);
    // Warm up the store and registry so their first allocations are not counted.
    tracing::subscriber::with_default(subscriber, || {
        let run = |keep: bool| -> Option<ProgressHandle> {
            let root = info_span!("root", progress.level = "root");
            let _g = root.enter();
            // 2,000 live children with a 1 kB message each: ~2 MB of tree while open.
            let children: Vec<_> = (0..2_000)
                .map(|_| {
                    let c = info_span!("child", progress.level = "child");
                    c.set_message(&message);
                    c
                })
                .collect();
            let handle = keep.then(|| children[1_999].progress());
            drop(children);
            handle
        };
        // One run so history holds one operation of the same shape either way.
        drop(run(false));
        let before = live_bytes();
        let handle = run(true).unwrap();
        let with_handle = live_bytes();
        drop(handle);
        let without = live_bytes();
        let kept = with_handle - without;
        println!(
            "handle keeps {kept} B alive (store before {before} B, after {with_handle} B, \
             {without} B once dropped)"
        );
        assert_eq!(store.stats().history, 1);
        assert!(kept < 1_024, "a handle kept {kept} B alive");
    });
}

#[test]
fn span_inc_reaches_the_right_node_when_span_ids_are_reused() {
    let _serial = serial();
    // `span.inc` goes through a per-thread cached handle: ids reused by new spans, and the
    // same ids in two subscribers, must still reach each span's own node.
    let (layer_a, store_a) = tracing_progress::layer();
    let (layer_b, store_b) = tracing_progress::layer();
    let a = tracing::Dispatch::new(tracing_subscriber::registry().with(layer_a));
    let b = tracing::Dispatch::new(tracing_subscriber::registry().with(layer_b));
    let span_in = |d: &tracing::Dispatch| {
        tracing::dispatcher::with_default(d, || info_span!("op", progress.level = "op"))
    };
    let inc_in = |d: &tracing::Dispatch, s: &tracing::Span, by: u64| {
        tracing::dispatcher::with_default(d, || s.inc(by))
    };
    for i in 1..=50u64 {
        // Both open at once, most likely with the same id in their registries.
        let (sa, sb) = (span_in(&a), span_in(&b));
        for _ in 0..2 {
            inc_in(&a, &sa, i);
            inc_in(&b, &sb, 100 * i);
        }
        let (ida, idb) = (sa.operation_id().unwrap(), sb.operation_id().unwrap());
        drop((sa, sb));
        assert_eq!(store_a.get(ida).unwrap().root.current, 2 * i);
        assert_eq!(store_b.get(idb).unwrap().root.current, 200 * i);
    }
}

#[test]
fn the_counting_thread_and_others_sum_and_subscribers_see_the_last_update() {
    let _serial = serial();
    // Updates from the span's thread and from a worker sum; a subscriber that looked in
    // between is told of the last update, with nothing changing after it.
    let (layer, store) = tracing_progress::layer();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let mut sub = store.subscribe();
    let (span, progress) = tracing::dispatcher::with_default(&dispatch, || {
        let span = info_span!("copy", progress.level = "copy");
        let p = span.progress();
        (span, p)
    });
    let id = span.operation_id().unwrap();
    let current = |sub: &mut tracing_progress::Subscription, want: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut last = None;
        while std::time::Instant::now() < deadline {
            let changes = sub.wait(std::time::Duration::from_millis(200));
            if let Some(s) = changes.changed.iter().find(|s| s.id == id) {
                last = Some(s.root.current);
                if last == Some(want) {
                    return last;
                }
            }
        }
        last
    };
    for round in 1..=20u64 {
        for _ in 0..1_000 {
            progress.inc(1);
        }
        let p = progress.clone();
        std::thread::spawn(move || (0..500).for_each(|_| p.inc(1)))
            .join()
            .unwrap();
        let want = round * 1_500;
        assert_eq!(current(&mut sub, want), Some(want), "round {round}");
    }
    // A set from another thread; this one counts on from there.
    let p = progress.clone();
    std::thread::spawn(move || p.set_current(7)).join().unwrap();
    progress.inc(3);
    assert_eq!(current(&mut sub, 10), Some(10));
    drop(span);
}
