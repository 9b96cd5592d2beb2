//! Store queries: history filters and bounds, subscriptions, export.

use std::time::{Duration, SystemTime};

use tracing::info_span;
use tracing_progress::{Builder, HistoryQuery, ProgressSpanExt, ProgressState, Status};

use crate::support::{ManualClock, with_layer};

fn run_ops() -> tracing_progress::Store {
    let (store, ()) = with_layer(Builder::new().history_limit(5), |_| {
        for i in 0..8 {
            let kind = if i % 2 == 0 { "import" } else { "export" };
            let span = info_span!(
                "op",
                progress.level = "op",
                progress.operation = kind,
                progress.name = format!("run-{i}")
            );
            let _g = span.enter();
            if i == 6 {
                // What `#[instrument(err)]` emits when the function returns `Err`.
                tracing::error!(error = "disk full");
            }
        }
    });
    store
}

#[test]
fn history_is_bounded_newest_first_and_filterable() {
    let store = run_ops();
    let all = store.history(&HistoryQuery::new());
    let names: Vec<_> = all.iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["run-7", "run-6", "run-5", "run-4", "run-3"]);
    assert_eq!(store.stats().history_evicted, 3);
    let imports = store.history(&HistoryQuery::new().operation_type("import"));
    assert_eq!(imports.len(), 2);
    let failed = store.history(&HistoryQuery::new().status(Status::Failed));
    assert_eq!(failed.len(), 1);
    assert_eq!(&*failed[0].name, "run-6");
    assert_eq!(
        store
            .history(&HistoryQuery::new().name_contains("RUN-4"))
            .len(),
        1
    );
    assert_eq!(store.history(&HistoryQuery::new().limit(2)).len(), 2);
    let future = SystemTime::now() + Duration::from_secs(60);
    assert!(store.history(&HistoryQuery::new().since(future)).is_empty());
    assert_eq!(store.history(&HistoryQuery::new().until(future)).len(), 5);
    assert!(store.get(all[0].id).is_some());
}

#[test]
fn history_expires_by_age() {
    let clock = ManualClock::new();
    let (store, ()) = with_layer(
        Builder::new()
            .history_max_age(Duration::from_millis(50))
            .clock(clock.reader()),
        |_| {
            info_span!("old", progress.level = "op").in_scope(|| {});
        },
    );
    assert_eq!(store.history(&HistoryQuery::new()).len(), 1);
    clock.advance_ms(40);
    assert_eq!(
        store.history(&HistoryQuery::new()).len(),
        1,
        "younger than the limit: kept"
    );
    clock.advance_ms(40);
    assert!(
        store.history(&HistoryQuery::new()).is_empty(),
        "expired entries are not returned"
    );
}

#[test]
fn export_json_and_jsonl_round_trip() {
    let store = run_ops();
    let id = store.history(&HistoryQuery::new())[0].id;
    let one: ProgressState = serde_json::from_str(&store.get(id).unwrap().to_json()).unwrap();
    assert_eq!(one.id, id);
    assert_eq!(one.schema_version, tracing_progress::SCHEMA_VERSION);
    let all: serde_json::Value = serde_json::from_str(&store.export_all_json()).unwrap();
    assert_eq!(all["history"].as_array().unwrap().len(), 5);
    assert_eq!(all["schema_version"], 1);
    let mut out = Vec::new();
    let n = store
        .write_history_jsonl(&HistoryQuery::new(), &mut out)
        .unwrap();
    let lines: Vec<ProgressState> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!((n, lines.len()), (5, 5));
    assert_eq!(&*lines[0].name, "run-3", "oldest first");
    assert!(
        store
            .get(tracing_progress::NodeId::from_u64(u64::MAX))
            .is_none()
    );
}

#[test]
fn json_shape_is_documented_and_stable() {
    let store = run_ops();
    let failed = &store.history(&HistoryQuery::new().status(Status::Failed))[0];
    let v: serde_json::Value = serde_json::from_str(&failed.to_json()).unwrap();
    for key in [
        "schema_version",
        "id",
        "operation_type",
        "name",
        "status",
        "metrics",
        "root",
        "error",
    ] {
        assert!(v.get(key).is_some(), "missing {key}: {v}");
    }
    assert_eq!(v["status"], "failed");
    for key in [
        "id",
        "level_type",
        "name",
        "status",
        "current",
        "timing",
        "error",
    ] {
        assert!(v["root"].get(key).is_some(), "root missing {key}");
    }
    assert_eq!(v["root"]["error"]["origin"], "event");
}

#[test]
fn subscription_coalesces_and_always_delivers_latest_and_final_states() {
    // No estimate ticks: a tick that changes an estimate is a change of its own.
    let (layer, store) = Builder::new().estimate_interval(None).build().unwrap();
    use tracing_subscriber::prelude::*;
    let subscriber = tracing_subscriber::registry().with(layer);
    let mut sub = store.subscribe();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        tracing::subscriber::with_default(subscriber, || {
            let span = info_span!("job", progress.level = "job", progress.total = 1000);
            let _g = span.enter();
            for _ in 0..1000 {
                span.inc(1);
            }
            rx.recv().unwrap(); // hold the operation open until the test looked
        })
    });
    // a slow subscriber: many updates happened, it sees one coalesced change with the latest state
    let mut latest = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let u = sub.wait(Duration::from_millis(200));
        if let Some(s) = u.changed.last() {
            latest = Some(s.root.current);
            if s.root.current == 1000 {
                break;
            }
        }
    }
    assert_eq!(latest, Some(1000));
    // An update that lands between a look's version read and its counter read is in that
    // look already but counts as a change once more: at most one more delivery, of the
    // same state (seen once in a CI run). Never a missed one.
    let again = sub.poll();
    assert!(
        again.changed.iter().all(|s| s.root.current == 1000),
        "nothing new: {:?}",
        again
            .changed
            .iter()
            .map(|s| s.root.current)
            .collect::<Vec<_>>()
    );
    assert!(sub.poll().is_empty(), "nothing new until something changes");
    tx.send(()).unwrap();
    worker.join().unwrap();
    let u = sub.wait(Duration::from_secs(5));
    assert_eq!(u.finished.len(), 1);
    assert_eq!(u.finished[0].status, Status::Completed);
    assert_eq!(u.finished[0].root.current, 1000);
}

#[test]
fn wait_wakes_promptly_on_change() {
    let (layer, store) = Builder::new().build().unwrap();
    use tracing_subscriber::prelude::*;
    let subscriber = tracing_subscriber::registry().with(layer);
    let mut sub = store.subscribe();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        tracing::subscriber::with_default(subscriber, || {
            info_span!("job", progress.level = "job").in_scope(|| {});
        });
    });
    let started = std::time::Instant::now();
    let mut finished = Vec::new();
    while finished.is_empty() && started.elapsed() < Duration::from_secs(30) {
        finished = sub.wait(Duration::from_secs(30)).finished;
    }
    assert_eq!(finished.len(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken by the change, not the timeout"
    );
    t.join().unwrap();
}
