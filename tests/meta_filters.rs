//! Metadata filters (`block_id=block-002`, `size>=100`) through the store's query API: history
//! in memory, running operations, and a history file read back by a second store.

mod support;

use tracing::info_span;
use tracing_progress::{Builder, HistoryQuery, MetaFilter, ProgressState, Status};

use support::Traced;

fn q(filters: &[&str]) -> HistoryQuery {
    filters.iter().fold(HistoryQuery::new(), |q, f| {
        q.meta(f.parse::<MetaFilter>().expect("valid filter"))
    })
}

fn names(states: &[std::sync::Arc<ProgressState>]) -> Vec<String> {
    states.iter().map(|s| s.name.to_string()).collect()
}

/// One job whose blocks carry `block_id` (text) and `size` (a number); the job itself has a
/// `venue`.
fn job(name: &str, venue: &str, blocks: &[(&str, u64)]) {
    let root = info_span!(
        "job",
        progress.level = "job",
        progress.name = name,
        venue = venue
    );
    let _g = root.enter();
    for (id, size) in blocks {
        info_span!(
            "block",
            progress.level = "block",
            block_id = *id,
            size = *size
        )
        .in_scope(|| {});
    }
}

#[test]
fn history_in_memory_filters_on_any_node() {
    let t = Traced::new(Builder::new());
    tracing::dispatcher::with_default(&t.dispatch, || {
        job("a", "Paris", &[("block-001", 50), ("block-002", 120)]);
        job("b", "Lyon", &[("block-003", 80)]);
        job("c", "Paris", &[("block-002", 7)]);
    });
    let h = |f: &[&str]| names(&t.store.history(&q(f)));
    assert_eq!(h(&[]), ["c", "b", "a"]);
    assert_eq!(h(&["meta.block_id=block-002"]), ["c", "a"]);
    assert_eq!(h(&["venue=Paris"]), ["c", "a"]);
    // Numbers compare as numbers, not as text ("120" < "80" as text).
    assert_eq!(h(&["size>=100"]), ["a"]);
    assert_eq!(h(&["size>80"]), ["a"]);
    assert_eq!(h(&["size>=80"]), ["b", "a"]);
    assert_eq!(h(&["size<10"]), ["c"]);
    assert_eq!(h(&["size=120.0"]), ["a"]);
    // Conditions add up; each may hold on a different node.
    assert_eq!(h(&["venue=Paris", "size>100"]), ["a"]);
    assert_eq!(h(&["venue=Paris", "size<=50"]), ["c", "a"]);
    assert_eq!(
        h(&["venue=Lyon", "block_id=block-002"]),
        Vec::<String>::new()
    );
    // A field nobody has, and an ordered comparison on text that is not a number.
    assert!(h(&["nope=1"]).is_empty());
    assert!(h(&["venue>1"]).is_empty());
    // With the other filters and the limit.
    let one = t.store.history(&q(&["venue=Paris"]).limit(1));
    assert_eq!(names(&one), ["c"]);
    let failed = t.store.history(&q(&["venue=Paris"]).status(Status::Failed));
    assert!(failed.is_empty());
}

#[test]
fn running_operations_filter_too() {
    let t = Traced::new(Builder::new());
    let held = t.hold("sync", "held");
    held.inc(2);
    // The held operation's part has `progress.*` fields only: no metadata to match.
    assert!(t.store.active_matching(&q(&["block_id=1"])).is_empty());
    assert_eq!(t.store.active_matching(&HistoryQuery::new()).len(), 1);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = std::sync::mpsc::channel::<()>();
    let dispatch = t.dispatch.clone();
    let worker = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let root = info_span!("job", progress.level = "job", progress.name = "live");
            let _g = root.enter();
            let block = info_span!("block", progress.level = "block", block_id = "block-002");
            let _b = block.enter();
            started_tx.send(()).unwrap();
            let _ = rx.recv();
        })
    });
    started.recv_timeout(support::TIMEOUT).unwrap();
    let found = t.store.active_matching(&q(&["block_id=block-002"]));
    assert_eq!(names(&found), ["live"]);
    assert_eq!(t.store.active_matching(&HistoryQuery::new()).len(), 2);
    assert_eq!(
        t.store.active_matching(&HistoryQuery::new().limit(1)).len(),
        1
    );
    assert!(
        t.store
            .active_matching(&q(&["block_id=block-002"]).operation_type("sync"))
            .is_empty()
    );
    drop(tx);
    worker.join().unwrap();
    held.finish();
    assert!(t.store.active_matching(&HistoryQuery::new()).is_empty());
    assert_eq!(
        names(&t.store.history(&q(&["block_id=block-002"]))),
        ["live"]
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn history_file_filters_after_reading_and_limits_after_filtering() {
    use tracing_progress::sqlite::HistoryFile;
    use tracing_subscriber::prelude::*;

    let dir = std::env::temp_dir().join(format!("tp-meta-filters-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.db");
    let build = || {
        let (layer, store) = Builder::new()
            .history_file(&path)
            .estimate_interval(None)
            .build()
            .unwrap();
        (tracing_subscriber::registry().with(layer), store)
    };
    let (sub, first) = build();
    tracing::subscriber::with_default(sub, || {
        job("a", "Paris", &[("block-002", 120)]);
        info_span!(
            "odd",
            progress.level = "odd",
            ratio = f64::NAN,
            tag = "x\"y"
        )
        .in_scope(|| {});
        // Newer operations that do not match: a limit applied before the filter would hide "a".
        for i in 0..5 {
            job(&format!("other-{i}"), "Lyon", &[("block-009", 1)]);
        }
    });
    assert!(first.flush_history(std::time::Duration::from_secs(10)));
    drop(first);

    // A second store on the file: "a" comes from the file only.
    let (_sub, second) = build();
    let found = second.history(&q(&["block_id=block-002"]).limit(1));
    assert_eq!(names(&found), ["a"]);
    assert_eq!(second.history(&q(&["size>=100"])).len(), 1);
    assert_eq!(second.history(&q(&["venue=Lyon"]).limit(3)).len(), 3);
    // The read-only reader filters the same way.
    let file = HistoryFile::open(&path).unwrap();
    let rows = file.query(&q(&["size>=100"]).limit(1)).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(&*rows[0].state.name, "a");
    assert!(file.query(&q(&["size>1000"])).unwrap().is_empty());
    // Values whose JSON is not their text: NaN, and text with a quote.
    assert_eq!(second.history(&q(&["ratio=NaN"])).len(), 1);
    assert_eq!(second.history(&q(&["tag=x\"y"])).len(), 1);
    assert!(second.history(&q(&["tag=x"])).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
