//! Error, panic and cancel paths: final status, context, and what the ancestors show.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tracing::info_span;
use tracing_progress::{Builder, CancelError, ErrorOrigin, FailOn, ProgressSpanExt, Status};

use crate::support::{node, only_finished, with_layer};

#[tracing::instrument(err, fields(progress.level = "block", block_id = "block-007"))]
fn run_block(fail: bool) -> Result<(), String> {
    if fail {
        Err("decoder exploded".into())
    } else {
        Ok(())
    }
}

#[test]
fn instrument_err_fails_the_block_and_ancestors_show_the_path() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let setlist = info_span!("setlist", progress.level = "setlist", progress.name = "S");
        let _s = setlist.enter();
        let song = info_span!("song", progress.level = "song", progress.name = "song-2");
        let _g = song.enter();
        let _ = run_block(false);
        let _ = run_block(true);
    });
    let op = only_finished(&store);
    let failed: Vec<_> = op
        .root
        .walk()
        .filter(|l| l.status == Status::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "only the block failed:\n{op}");
    let err = failed[0].error().unwrap();
    assert_eq!(&*err.message, "decoder exploded");
    assert_eq!(err.origin, ErrorOrigin::Event);
    assert_eq!(
        err.path.iter().map(|p| &**p).collect::<Vec<_>>(),
        ["S", "song-2", "run_block"]
    );
    assert!(err.location.as_deref().unwrap().contains("failures.rs"));
    // ancestors stay completed but show the failure and where it is
    let song = node(&op, "song-2");
    assert_eq!(song.status, Status::Completed);
    assert_eq!(song.failures_below().unwrap().count, 1);
    assert_eq!(op.root.failures_below().unwrap().last.node_id, failed[0].id);
    assert_eq!(op.error.as_ref().unwrap().message, err.message);
    assert_eq!(op.metrics.nodes_failed, 1);
}

#[test]
fn error_event_keeps_its_fields_as_context() {
    let run = |builder: Builder| {
        let (store, ()) = with_layer(builder, |_| {
            let span = info_span!("job", progress.level = "job");
            let _g = span.enter();
            tracing::error!(file = "a.wav", code = 3, "cannot open input");
        });
        only_finished(&store)
    };
    let check = |err: &tracing_progress::ErrorInfo| {
        assert_eq!(&*err.message, "cannot open input");
        assert_eq!(
            err.fields.get("file").and_then(|v| v.as_str()),
            Some("a.wav")
        );
        assert_eq!(err.fields.get("code").and_then(|v| v.as_u64()), Some(3));
    };
    // By default a logged error is context: the function may have recovered.
    let op = run(Builder::new());
    assert_eq!(op.status, Status::Completed);
    assert!(op.root.error().is_none());
    let handled = op.root.handled_errors().expect("kept as context");
    assert_eq!(handled.count, 1);
    check(&handled.last);
    // Every ERROR event fails the node under `FailOn::ErrorEvents`.
    let op = run(Builder::new().fail_on(FailOn::ErrorEvents));
    assert_eq!(op.status, Status::Failed);
    check(op.root.error().unwrap());
}

#[test]
fn panic_inside_a_span_fails_it_with_the_panic_message() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("root", progress.level = "root");
        let _r = root.enter();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let span = info_span!("worker", progress.level = "worker");
            let _g = span.enter();
            panic!("index out of range: 7");
        }));
        assert!(result.is_err());
    });
    let op = only_finished(&store);
    let worker = node(&op, "worker");
    assert_eq!(worker.status, Status::Failed);
    let err = worker.error().unwrap();
    assert_eq!(err.origin, ErrorOrigin::Panic);
    assert_eq!(&*err.message, "index out of range: 7");
    assert!(err.location.as_deref().unwrap().contains("failures.rs"));
    assert_eq!(
        op.root.status,
        Status::Completed,
        "the panic was caught below the root"
    );
    assert_eq!(op.root.failures_below().unwrap().count, 1);
}

#[test]
fn cancel_is_seen_by_code_and_ends_nodes_as_cancelled() {
    let (store, ()) = with_layer(Builder::new(), |store| {
        let root = info_span!("batch", progress.level = "batch", progress.total = 100);
        let _g = root.enter();
        let id = root.operation_id().unwrap();
        let done = info_span!("item", progress.level = "item", progress.name = "done");
        done.in_scope(|| {});
        drop(done);
        for i in 0..100 {
            let item = info_span!("item", progress.level = "item", progress.name = i);
            let _i = item.enter();
            if i == 3 {
                store.cancel(id).unwrap();
            }
            if item.is_cancelled() && tracing_progress::is_cancelled() {
                break;
            }
        }
        assert!(store.get(id).unwrap().cancel_requested);
    });
    let op = only_finished(&store);
    assert_eq!(op.status, Status::Cancelled);
    assert!(op.cancel_requested);
    assert_eq!(
        node(&op, "done").status,
        Status::Completed,
        "finished before the request"
    );
    assert_eq!(node(&op, "3").status, Status::Cancelled);
    assert_eq!(op.root.children.len(), 5);
    assert_eq!(
        op.root.current, 4,
        "the cancelled item did no work and is not counted"
    );
    assert_eq!(op.root.percentage, Some(4.0));
    assert_eq!(store.cancel(op.id), Err(CancelError::NotActive(op.id)));
}

#[test]
fn explicit_fail_through_the_extension_trait() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let span = info_span!("job", progress.level = "job");
        span.fail("validation failed: 3 bad rows");
    });
    let op = only_finished(&store);
    assert_eq!(op.status, Status::Failed);
    assert_eq!(op.root.error().unwrap().origin, ErrorOrigin::Explicit);
}

#[test]
fn failed_stays_failed_even_after_cancel() {
    let (store, ()) = with_layer(Builder::new(), |store| {
        let span = info_span!("job", progress.level = "job");
        let _g = span.enter();
        span.fail("boom");
        store.cancel(span.operation_id().unwrap()).unwrap();
    });
    assert_eq!(only_finished(&store).status, Status::Failed);
}

#[tracing::instrument(fields(progress.level = "upload", progress.name = name))]
fn upload_with_retries(name: &str) -> Result<(), String> {
    tracing::error!(attempt = 1, "upload failed, retrying");
    tracing::error!(attempt = 2, "upload failed, retrying");
    Ok(())
}

#[test]
fn a_node_that_recovers_from_logged_errors_is_not_failed() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let _ = upload_with_retries("a.wav");
    });
    let op = only_finished(&store);
    assert_eq!(op.status, Status::Completed);
    assert!(!op.with_failures);
    let handled = op
        .root
        .handled_errors()
        .expect("the errors seen are context");
    assert_eq!(handled.count, 2);
    assert_eq!(&*handled.last.message, "upload failed, retrying");
    assert_eq!(
        handled.last.fields.get("attempt").and_then(|v| v.as_u64()),
        Some(2)
    );
    // `Explicit`: even returned errors are context; `ErrorEvents`: the old rule.
    let (store, ()) = with_layer(Builder::new().fail_on(FailOn::Explicit), |_| {
        let _ = run_block(true);
    });
    assert_eq!(only_finished(&store).status, Status::Completed);
    let (store, ()) = with_layer(Builder::new().fail_on(FailOn::ErrorEvents), |_| {
        let _ = upload_with_retries("a.wav");
    });
    assert_eq!(only_finished(&store).status, Status::Failed);
}

#[tracing::instrument(err, fields(progress.level = "action", progress.name = name, progress.total = 2))]
fn action(name: &str, fail_block: bool) -> Result<(), String> {
    run_block(false)?;
    run_block(fail_block)
}

#[tracing::instrument(err, fields(progress.level = "song", progress.name = name, progress.total = 2))]
fn song(name: &str, fail: bool) -> Result<(), String> {
    action("mix", false)?;
    action("master", fail)
}

#[test]
fn one_failure_returned_up_is_counted_once_and_failed_work_is_not_done_work() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let setlist = info_span!("setlist", progress.level = "setlist", progress.total = 3);
        let _s = setlist.enter();
        let _ = song("one", false);
        let _ = song("two", true);
        let _ = song("three", false);
    });
    let op = only_finished(&store);
    // The block, its action and its song failed: one root cause, recorded at each level.
    let failed: Vec<_> = op
        .root
        .walk()
        .filter(|l| l.status == Status::Failed)
        .collect();
    assert_eq!(failed.len(), 3, "{op}");
    assert_eq!(op.root.failures_below().unwrap().count, 1, "{op}");
    let two = node(&op, "two");
    assert_eq!(two.failures_below().unwrap().count, 1);
    assert!(two.error().unwrap().propagated);
    let block = two
        .walk()
        .find(|l| l.level_type.as_ref() == "block" && l.status == Status::Failed)
        .unwrap();
    assert!(!block.error().unwrap().propagated, "the root cause");
    // Done and failed are told apart: the failed action did one of two blocks.
    let master = two.child("master").unwrap();
    assert_eq!(
        (master.current, master.failed, master.total),
        (1, 1, Some(2))
    );
    assert_eq!(master.percentage, Some(50.0));
    // The setlist: two songs done, one failed; completed with failures, not 100%.
    assert_eq!((op.root.current, op.root.failed), (2, 1));
    assert_eq!(op.root.status, Status::Completed);
    assert!(op.root.with_failures && op.with_failures);
    assert_eq!(op.root.outcome(), "completed with failures");
    assert!(op.root.percentage.unwrap() < 100.0);
    let json = op.to_json();
    assert!(json.contains(r#""with_failures":true"#), "{json}");
    assert!(json.contains(r#""propagated":true"#), "{json}");
}

#[test]
fn a_node_that_ignores_a_cancel_and_finishes_its_work_is_completed() {
    let (store, ()) = with_layer(Builder::new(), |store| {
        let job = info_span!("job", progress.level = "job", progress.total = 3);
        let _j = job.enter();
        store.cancel(job.operation_id().unwrap()).unwrap();
        // Never asks; does all three units anyway.
        for _ in 0..3 {
            info_span!("unit", progress.level = "unit").in_scope(|| {});
        }
    });
    let op = only_finished(&store);
    assert!(op.cancel_requested);
    assert_eq!(op.status, Status::Completed, "{op}");
    assert!(
        op.root
            .children
            .iter()
            .all(|c| c.status == Status::Completed)
    );
    assert_eq!(op.root.current, 3);
}

#[test]
fn a_node_that_stops_because_of_a_cancel_is_cancelled() {
    let (store, ()) = with_layer(Builder::new(), |store| {
        let job = info_span!("job", progress.level = "job", progress.total = 10);
        let _j = job.enter();
        for i in 0..10 {
            if i == 4 {
                store.cancel(job.operation_id().unwrap()).unwrap();
            }
            let unit = info_span!("unit", progress.level = "unit", progress.total = 100);
            let _u = unit.enter();
            if unit.is_cancelled() {
                break; // stops here, having seen the request
            }
            unit.inc(100);
        }
    });
    let op = only_finished(&store);
    assert_eq!(op.status, Status::Cancelled, "{op}");
    assert_eq!(
        op.root.cancel_reason,
        Some(tracing_progress::CancelReason::Requested)
    );
    assert_eq!(op.root.current, 4, "the four done before the request");
    let last = op.root.children.last().unwrap();
    assert_eq!(last.status, Status::Cancelled);
    assert_eq!(last.current, 0);
}

/// A `log::error!` bridged by `tracing-log` (as `LogTracer` does) reads as the record it is:
/// its own target and file:line, not target `log` with no location; the `log.*` fields that
/// carry them are not repeated as context.
#[test]
fn log_records_through_tracing_log_keep_their_own_target_and_location() {
    let (store, ()) = with_layer(Builder::new().fail_on(FailOn::ErrorEvents), |_| {
        let span = info_span!("upload", progress.level = "upload");
        let _g = span.enter();
        let record = log::Record::builder()
            .level(log::Level::Error)
            .target("legacy::uploader")
            .module_path(Some("legacy::uploader"))
            .file(Some("src/uploader.rs"))
            .line(Some(42))
            .args(format_args!("connection reset by peer"))
            .build();
        tracing_log::format_trace(&record).unwrap();
    });
    let op = only_finished(&store);
    assert_eq!(op.status, Status::Failed);
    let err = op.root.error().expect("the logged error");
    assert_eq!(&*err.message, "connection reset by peer");
    assert_eq!(&*err.target, "legacy::uploader");
    assert_eq!(err.location.as_deref(), Some("src/uploader.rs:42"));
    assert!(
        err.fields.iter().all(|(k, _)| !k.starts_with("log.")),
        "{:?}",
        err.fields
    );
}
