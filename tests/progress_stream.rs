//! The machine-readable progress stream (`view::ProgressStream`): one JSON object per line per
//! change of a node, throttled per node, from snapshots of a real layer's store.

mod support;

use std::time::Duration;

use serde_json::Value;
use tracing::info_span;
use tracing_progress::view::{ProgressStream, STREAM_VERSION, StreamRecord};
use tracing_progress::{Builder, ProgressSpanExt, Status, Store};
use tracing_subscriber::prelude::*;

use support::ManualClock;

fn store_with_clock() -> (tracing::Dispatch, Store, ManualClock) {
    let clock = ManualClock::new();
    let (layer, store) = Builder::new()
        .clock(clock.reader())
        .build::<tracing_subscriber::Registry>()
        .expect("valid builder");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    (dispatch, store, clock)
}

fn names(records: &[StreamRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| format!("{} {} {}", r.name, r.status, r.current))
        .collect()
}

#[test]
fn changes_are_written_once_and_throttled_per_node() {
    let (dispatch, store, clock) = store_with_clock();
    let mut stream = ProgressStream::new().min_interval(Duration::from_secs(1));
    let now = || store.now_us();
    tracing::dispatcher::with_default(&dispatch, || {
        let job = info_span!(
            "job",
            progress.level = "setlist",
            progress.name = "My Setlist"
        );
        let id = job.operation_id().expect("tracked");
        let _j = job.enter();
        job.set_total(2);
        let song = info_span!(
            "song",
            progress.level = "song",
            progress.name = "audio1.wav"
        );
        let _s = song.enter();
        song.set_total(10);
        song.set_message("loading");

        // First sight: every node, parents first, with its path.
        let first = stream.records(&store.get(id).unwrap(), now());
        assert_eq!(
            names(&first),
            ["My Setlist running 0", "audio1.wav running 0"]
        );
        let song_line = &first[1];
        assert_eq!(song_line.v, STREAM_VERSION);
        assert_eq!(song_line.operation_id, id);
        assert_eq!(song_line.depth, 1);
        assert_eq!(
            song_line.path.iter().map(|p| &**p).collect::<Vec<_>>(),
            ["My Setlist", "audio1.wav"]
        );
        assert_eq!(song_line.level.as_ref(), "song");
        assert_eq!(song_line.total, Some(10));
        assert_eq!(song_line.message.as_deref(), Some("loading"));
        assert_eq!(song_line.outcome, "running");

        // Nothing changed: nothing written.
        assert!(stream.records(&store.get(id).unwrap(), now()).is_empty());

        // A change within the interval is held back ...
        clock.advance_ms(200);
        song.inc(3);
        assert!(stream.records(&store.get(id).unwrap(), now()).is_empty());
        // ... and written once the interval has passed, with the latest values, even from the
        // same snapshot (nothing new arrived in between).
        let snapshot = store.get(id).unwrap();
        clock.advance_ms(900);
        let later = stream.records(&snapshot, now());
        let song_later = later
            .iter()
            .find(|r| &*r.name == "audio1.wav")
            .expect("song");
        assert_eq!(song_later.current, 3);
        assert_eq!(song_later.percentage, Some(30.0));
        assert!(stream.records(&snapshot, now()).is_empty());

        // A status change is never held back: a new child and a finished one.
        clock.advance_ms(10);
        let step = info_span!("step", progress.level = "step", progress.name = "decode");
        step.in_scope(|| {});
        drop(step);
        let lines = stream.records(&store.get(id).unwrap(), now());
        assert!(
            lines
                .iter()
                .any(|r| &*r.name == "decode" && r.status == Status::Completed),
            "{lines:?}"
        );
        id
    });
}

#[test]
fn a_finished_operation_flushes_every_node_then_is_forgotten() {
    let (dispatch, store, clock) = store_with_clock();
    let mut stream = ProgressStream::new().min_interval(Duration::from_secs(60));
    let mut out = Vec::new();
    let id = tracing::dispatcher::with_default(&dispatch, || {
        let job = info_span!("job", progress.level = "job", progress.name = "export");
        let id = job.operation_id().expect("tracked");
        job.in_scope(|| {
            let part = info_span!("part", progress.level = "part", progress.total = 4u64);
            part.in_scope(|| {
                stream
                    .write(&store.get(id).unwrap(), store.now_us(), &mut out)
                    .unwrap();
                clock.advance_ms(10);
                part.inc(4);
                // Throttled: the 4/4 waits.
                let n = stream.write(&store.get(id).unwrap(), store.now_us(), &mut out);
                assert_eq!(n.unwrap(), 0);
                let block = info_span!("block", progress.level = "block");
                block.in_scope(|| block.fail("bad block"));
            });
        });
        id
    });
    let done = store
        .history(&tracing_progress::HistoryQuery::new())
        .into_iter()
        .find(|s| s.id == id)
        .expect("in history");
    assert_eq!(stream.write(&done, store.now_us(), &mut out).unwrap(), 3);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    // 2 at first sight, then the final job, part (4/4) and block (failed).
    assert_eq!(lines.len(), 5, "{text}");
    let last_part = lines.iter().rev().find(|l| l["level"] == "part").unwrap();
    assert_eq!(last_part["current"], 4);
    assert_eq!(last_part["status"], "completed");
    let block = lines.iter().find(|l| l["level"] == "block").unwrap();
    assert_eq!(block["status"], "failed");
    assert_eq!(block["error"], "bad block");
    assert_eq!(
        block["path"],
        serde_json::json!(["export", "part", "block"])
    );
    // Every key is always there, null when unknown.
    for key in [
        "v",
        "at_us",
        "operation_id",
        "operation_type",
        "node_id",
        "depth",
        "path",
        "level",
        "name",
        "status",
        "outcome",
        "current",
        "total",
        "unit",
        "percentage",
        "eta_us",
        "message",
        "error",
        "attempt",
    ] {
        assert!(
            lines.iter().all(|l| l.get(key).is_some()),
            "{key} missing: {text}"
        );
    }
    // The root: completed with failures below.
    let root = lines.iter().rev().find(|l| l["depth"] == 0).unwrap();
    assert_eq!(root["outcome"], "completed with failures");
    // Forgotten: the same final state again is written in full (as a new operation).
    assert_eq!(stream.records(&done, store.now_us()).len(), 3);
    let parsed: StreamRecord = serde_json::from_value(lines[0].clone()).expect("round trip");
    assert_eq!(parsed.operation_id, id);
}

#[test]
fn max_depth_and_retain() {
    let (dispatch, store, _clock) = store_with_clock();
    let mut stream = ProgressStream::new().max_depth(0);
    tracing::dispatcher::with_default(&dispatch, || {
        let job = info_span!("job", progress.level = "job");
        let id = job.operation_id().expect("tracked");
        let _j = job.enter();
        let _s = info_span!("step", progress.level = "step").entered();
        let lines = stream.records(&store.get(id).unwrap(), store.now_us());
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].depth, 0);
        assert!(
            stream
                .records(&store.get(id).unwrap(), store.now_us())
                .is_empty()
        );
        stream.retain(|_| false);
        assert_eq!(
            stream
                .records(&store.get(id).unwrap(), store.now_us())
                .len(),
            1
        );
        assert!(format!("{stream:?}").contains("operations: 1"));
    });
}

#[test]
fn a_retried_node_is_a_new_line_with_its_attempt_number_on_the_same_path() {
    let (dispatch, store, _clock) = store_with_clock();
    let mut stream = ProgressStream::new();
    tracing::dispatcher::with_default(&dispatch, || {
        let job = info_span!("job", progress.level = "job", progress.name = "sync");
        let id = job.operation_id().expect("tracked");
        let _j = job.enter();
        let first = info_span!("upload", progress.level = "upload", progress.name = "a.bin");
        first.in_scope(|| first.fail("connection reset"));
        drop(first);
        let lines = stream.records(&store.get(id).unwrap(), store.now_us());
        let failed = lines.iter().find(|r| &*r.name == "a.bin").unwrap();
        assert_eq!((failed.status, failed.attempt), (Status::Failed, 1));
        let second = info_span!("upload", progress.level = "upload", progress.name = "a.bin");
        let _s = second.enter();
        let lines = stream.records(&store.get(id).unwrap(), store.now_us());
        let retry = lines
            .iter()
            .find(|r| &*r.name == "a.bin")
            .expect("{lines:?}");
        assert_eq!((retry.status, retry.attempt), (Status::Running, 2));
        assert_eq!(retry.path, failed.path);
        assert_ne!(retry.node_id, failed.node_id);
        let json = serde_json::to_value(retry).unwrap();
        assert_eq!(json["attempt"], 2);
    });
}
