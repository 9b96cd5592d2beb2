//! Trees built from worker threads and from async tasks.

use std::sync::Arc;
use std::sync::Barrier;

use tracing::{Instrument, info_span};
use tracing_progress::{Builder, ProgressSpanExt, Status, TrackRule};
use tracing_subscriber::prelude::*;

use crate::support::{only_finished, shape, with_layer};

#[test]
fn children_on_worker_threads_attach_to_the_parent() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("batch", progress.level = "batch", progress.total = 4);
        let _g = root.enter();
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        std::thread::scope(|s| {
            for i in 0..4 {
                let parent = root.clone();
                let dispatch = dispatch.clone();
                s.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let span = info_span!(parent: &parent, "worker", progress.level = "worker", progress.name = i);
                        let _w = span.enter();
                        span.set_total(10);
                        for _ in 0..10 {
                            span.inc(1);
                        }
                    })
                });
            }
        });
    });
    let op = only_finished(&store);
    assert_eq!(op.root.children.len(), 4);
    assert!(
        op.root
            .children
            .iter()
            .all(|c| c.current == 10 && c.status == Status::Completed)
    );
    assert_eq!(op.root.current, 4);
    assert_eq!(op.root.percentage, Some(100.0));
}

#[test]
fn span_closed_on_another_thread_than_it_opened() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("root", progress.level = "root");
        let child = info_span!(parent: &root, "child", progress.level = "child");
        child.in_scope(|| {});
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        std::thread::spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                drop(child);
                drop(root);
            })
        })
        .join()
        .unwrap();
    });
    let op = only_finished(&store);
    assert_eq!(shape(&op.root), "root[completed](child[completed])");
}

#[test]
fn two_threads_on_different_operations_keep_separate_trees() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let dispatch = dispatch.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let op = info_span!("op", progress.level = "op", progress.name = t);
                        let _g = op.enter();
                        barrier.wait();
                        for _ in 0..10_000 {
                            op.inc(1);
                        }
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let h = store.history(&Default::default());
    assert_eq!(h.len(), 2);
    assert!(
        h.iter()
            .all(|s| s.root.current == 10_000 && s.root.children.is_empty())
    );
}

#[tracing::instrument(fields(progress.level = "item"))]
async fn work_item(i: u32) {
    for _ in 0..5 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

#[test]
fn async_tasks_entered_many_times_across_threads() {
    let (layer, store) = Builder::new()
        .track(TrackRule::span("pipeline").level("pipeline"))
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _d = tracing::subscriber::set_default(subscriber);
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    rt.block_on(
        async {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let fut = work_item(i);
                    let dispatch = dispatch.clone();
                    // Carry the current span into the task, as `.in_current_span()` does.
                    tokio::spawn(tracing::instrument::WithSubscriber::with_subscriber(
                        fut.in_current_span(),
                        dispatch,
                    ))
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        }
        .instrument(info_span!("pipeline")),
    );
    drop(rt);
    let op = only_finished(&store);
    assert_eq!(&*op.root.level_type, "pipeline");
    assert_eq!(op.root.children.len(), 8, "{}", op);
    for c in &op.root.children {
        assert_eq!(c.status, Status::Completed);
        assert!(
            c.timing.idle_us > 0,
            "awaiting sleeps counts as idle: {:?}",
            c.timing
        );
        assert!(c.timing.busy_us < c.timing.elapsed_us + 1, "{:?}", c.timing);
    }
}

/// An untracked child closed on another thread does not keep its tracked parent live, as long
/// as that thread has the subscriber as its default (the registry closes parents through the
/// closing thread's default dispatcher; with a global subscriber that is always the case).
#[test]
fn untracked_child_closed_on_another_thread() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("root", progress.level = "root");
        {
            let _g = root.enter();
            let helper = info_span!("helper", x = 1);
            helper.in_scope(|| {});
            let dispatch = tracing::dispatcher::get_default(|d| d.clone());
            std::thread::spawn(move || {
                tracing::dispatcher::with_default(&dispatch, || drop(helper))
            })
            .join()
            .unwrap();
        }
        drop(root);
    });
    assert!(store.active().is_empty(), "{:?}", store.active_ids());
    assert_eq!(store.history(&Default::default()).len(), 1);
}

/// One span entered by four threads at once, thousands of times: the count of threads inside
/// stays exact, so the busy time ends with the last exit. A lost exit would leave a stretch
/// open through the idle 60 ms after the threads are done, a lost enter would end it early.
#[test]
fn a_span_entered_by_several_threads_at_once_keeps_an_exact_count() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let job = info_span!("job", progress.level = "job");
        let barrier = Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (job, barrier, dispatch) = (&job, &barrier, dispatch.clone());
                s.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        barrier.wait();
                        for _ in 0..5_000 {
                            let _g = job.enter();
                            std::hint::black_box(0);
                        }
                    })
                });
            }
        });
        // Idle: nobody has the span entered.
        std::thread::sleep(std::time::Duration::from_millis(60));
        drop(job);
    });
    let op = only_finished(&store);
    let t = &op.root.timing;
    assert_eq!(op.root.status, Status::Completed);
    assert!(t.elapsed_us >= 60_000, "{t:?}");
    assert!(
        t.busy_us + 50_000 < t.elapsed_us,
        "the 60 ms after the last exit are idle: {t:?}"
    );
    assert!(t.busy_us > 0, "{t:?}");
}
