//! Futures dropped before they finish (timeout, `select!`, abort, `JoinSet` shut down): what
//! the layer can tell, and what it cannot (README, "What the layer can and cannot know").

use std::time::Duration;

use tracing::instrument;
use tracing_progress::{Builder, CancelReason, ProgressLevel, Status};

use crate::support::{node, only_finished, with_layer};

/// A fetch that reports its return (`ret`): a drop before the return is detectable.
#[instrument(ret(level = "trace"), fields(progress.level = "fetch", progress.name = name))]
async fn fetch(name: &'static str, ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// The same without `ret`: the layer sees no difference between finishing and being dropped.
#[instrument(fields(progress.level = "fetch", progress.name = name))]
async fn plain_fetch(name: &'static str, ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn dropped(level: &ProgressLevel) -> bool {
    level.status == Status::Cancelled && level.cancel_reason == Some(CancelReason::Dropped)
}

#[test]
fn timeout_select_and_abort_drop_futures_that_report_returns() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let batch = tracing::info_span!("batch", progress.level = "batch", progress.total = 5);
        let _b = batch.enter();
        run(async {
            // Finishes: teaches the callsite that its spans report their return.
            assert_eq!(fetch("ok", 1).await, 1);
            // A timeout drops the future while it waits.
            let late = tokio::time::timeout(Duration::from_millis(5), fetch("late", 10_000)).await;
            assert!(late.is_err());
            // The losing branch of select! is dropped.
            tokio::select! {
                v = fetch("fast", 1) => assert_eq!(v, 1),
                _ = fetch("slow", 10_000) => unreachable!(),
            }
        });
    });
    let op = only_finished(&store);
    assert_eq!(node(&op, "ok").status, Status::Completed);
    assert_eq!(node(&op, "fast").status, Status::Completed);
    assert!(dropped(node(&op, "late")), "{op}");
    assert!(dropped(node(&op, "slow")), "{op}");
    // Dropped work is not done work: two of five.
    assert_eq!(op.root.current, 2, "{op}");
}

#[test]
fn aborted_task_and_joinset_shut_down_early() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let batch = tracing::info_span!("batch", progress.level = "batch", progress.total = 6);
        let _b = batch.enter();
        run(async {
            let span = tracing::Span::current();
            assert_eq!(fetch("warm-up", 1).await, 1);
            let task = tokio::spawn(tracing::Instrument::instrument(
                fetch("aborted", 10_000),
                span.clone(),
            ));
            tokio::time::sleep(Duration::from_millis(5)).await;
            task.abort();
            assert!(task.await.unwrap_err().is_cancelled());
            let mut set = tokio::task::JoinSet::new();
            for (name, ms) in [("quick", 1), ("long-1", 10_000), ("long-2", 10_000)] {
                set.spawn(tracing::Instrument::instrument(
                    fetch(name, ms),
                    span.clone(),
                ));
            }
            // The first result in, then the rest shut down.
            assert_eq!(set.join_next().await.unwrap().unwrap(), 1);
            set.shutdown().await;
        });
    });
    let op = only_finished(&store);
    for name in ["aborted", "long-1", "long-2"] {
        assert!(dropped(node(&op, name)), "{name}:\n{op}");
    }
    assert_eq!(node(&op, "quick").status, Status::Completed);
    assert_eq!(op.root.current, 2, "warm-up and quick:\n{op}");
}

#[test]
fn a_span_never_entered_and_untouched_is_dropped_not_completed() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let batch = tracing::info_span!("batch", progress.level = "batch", progress.total = 3);
        let _b = batch.enter();
        // A unit whose span was made and then skipped: never entered, nothing recorded.
        drop(tracing::info_span!(
            "file",
            progress.level = "file",
            progress.name = "skipped"
        ));
        // A span used as a progress handle without entering it did work: not dropped.
        let handle = tracing::info_span!("file", progress.level = "file", progress.name = "handle");
        tracing_progress::ProgressSpanExt::inc(&handle, 1);
        drop(handle);
        run(plain_fetch("ran", 1));
    });
    let op = only_finished(&store);
    assert!(dropped(node(&op, "skipped")), "{op}");
    assert_eq!(
        node(&op, "skipped").percentage,
        None,
        "no 100% for work not done"
    );
    assert_eq!(node(&op, "handle").status, Status::Completed);
    assert_eq!(node(&op, "ran").status, Status::Completed);
    assert_eq!(op.root.current, 2);
}

/// The documented limit: a plain `#[instrument]` future dropped while it waits looks exactly
/// like one that finished (both are entered, exited and closed the same way).
#[test]
fn a_plain_instrumented_future_dropped_while_waiting_cannot_be_told_apart() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        run(async {
            let late =
                tokio::time::timeout(Duration::from_millis(5), plain_fetch("late", 10_000)).await;
            assert!(late.is_err());
        });
    });
    let op = only_finished(&store);
    assert_eq!(op.root.status, Status::Completed, "README says so: {op}");
}
