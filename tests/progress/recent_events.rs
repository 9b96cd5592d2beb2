//! Recent events per node: what is kept, where, how bounded, and what a failure carries.

use tracing::{debug, info, info_span, warn};
use tracing_progress::{Builder, EventLevel, FieldValue, Status};

use crate::support::{node, only_finished, with_layer};

#[tracing::instrument(err, fields(progress.level = "block"))]
fn decode(block: u32) -> Result<(), String> {
    info!(block, "reading header");
    warn!(retries = 2, "checksum mismatch, retrying");
    helper();
    if block == 7 {
        return Err("decoder exploded".into());
    }
    Ok(())
}

/// An untracked span below the block: its events belong to the block.
#[tracing::instrument]
fn helper() {
    info!(bytes = 4096_u64, "read");
}

#[test]
fn a_node_keeps_its_events_in_order_with_level_message_and_fields() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        info!("starting");
        let _ = decode(1);
    });
    let op = only_finished(&store);
    let block = node(&op, "decode");
    let lines: Vec<String> = block.recent_events.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        lines,
        [
            " INFO reading header block=1",
            " WARN checksum mismatch, retrying retries=2",
            " INFO read bytes=4096",
        ],
        "{op}"
    );
    let e = &block.recent_events[1];
    assert_eq!(e.level, EventLevel::Warn);
    assert_eq!(e.fields.get("retries"), Some(&FieldValue::I64(2)));
    assert!(e.target.contains("recent_events"));
    assert!(e.at_us > 0 && e.at_us >= block.recent_events[0].at_us);
    // The root keeps its own, not its child's.
    let root: Vec<_> = op
        .root
        .recent_events
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(root, [" INFO starting"]);
}

#[test]
fn a_failure_carries_the_lines_that_led_to_it() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        let _ = decode(7);
    });
    let op = only_finished(&store);
    let block = node(&op, "decode");
    assert_eq!(block.status, Status::Failed);
    let err = block.error().unwrap();
    let msgs: Vec<_> = err
        .recent_events
        .iter()
        .map(|e| e.message.as_deref().unwrap())
        .collect();
    assert_eq!(
        msgs,
        ["reading header", "checksum mismatch, retrying", "read"]
    );
    // The node's own ring ends with the error line itself.
    let last = block.recent_events.last().unwrap();
    assert_eq!(last.level, EventLevel::Error);
    assert_eq!(last.message.as_deref(), Some("decoder exploded"));
    // The operation's error (the root cause) carries them too.
    assert_eq!(op.error.as_ref().unwrap().recent_events.len(), 3);
}

#[test]
fn level_threshold_count_and_off() {
    let run = |builder: Builder| {
        let (store, ()) = with_layer(builder, |_| {
            let job = info_span!("job", progress.level = "job");
            let _g = job.enter();
            for i in 0..10 {
                debug!(i, "debug line");
                info!(i, "info line");
            }
        });
        only_finished(&store).root.recent_events.clone()
    };
    // Default: INFO and up, last 16.
    let kept = run(Builder::new());
    assert_eq!(kept.len(), 10);
    assert!(kept.iter().all(|e| e.level == EventLevel::Info));
    // DEBUG kept, ring of 4: the last four events.
    let kept = run(Builder::new()
        .recent_events(4, 1 << 20)
        .recent_events_level(tracing::Level::DEBUG));
    let is: Vec<_> = kept.iter().map(|e| e.fields.get("i").cloned()).collect();
    assert_eq!(is, [8, 8, 9, 9].map(|i| Some(FieldValue::I64(i))));
    assert_eq!(kept[3].level, EventLevel::Info);
    // Off.
    assert!(run(Builder::new().recent_events(0, 0)).is_empty());
}

#[test]
fn byte_cap_bounds_the_ring_and_long_text_is_cut() {
    let (store, ()) = with_layer(
        Builder::new().recent_events(1000, 4096).max_text_len(100),
        |_| {
            let job = info_span!("job", progress.level = "job");
            let _g = job.enter();
            for _ in 0..100 {
                info!(blob = "x".repeat(10_000).as_str(), "big");
            }
        },
    );
    let kept = only_finished(&store).root.recent_events.clone();
    assert!(!kept.is_empty() && kept.len() < 100, "kept {}", kept.len());
    let FieldValue::Str(blob) = kept[0].fields.get("blob").unwrap() else {
        panic!("blob is text")
    };
    assert!(blob.len() < 200 && blob.contains("truncated"), "{blob}");
}

/// With the default text limit (64 KiB, far above the ring's 8 KiB), one event carrying a big
/// value is cut to a quarter of the ring's bytes instead of pushing out every event before it.
#[test]
fn one_huge_value_does_not_empty_the_ring() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        for chunk in 0..20 {
            info!(chunk, "read a chunk");
        }
        info!(body = %"x".repeat(50_000), "response");
        info!("after the response");
    });
    let kept = only_finished(&store).root.recent_events.clone();
    let msgs: Vec<_> = kept
        .iter()
        .map(|e| e.message.as_deref().unwrap_or("-"))
        .collect();
    assert!(kept.len() >= 8, "kept {msgs:?}");
    assert_eq!(msgs.last(), Some(&"after the response"));
    let big = kept
        .iter()
        .find(|e| e.message.as_deref() == Some("response"))
        .unwrap();
    let FieldValue::Str(body) = big.fields.get("body").unwrap() else {
        panic!("body is text")
    };
    assert!(body.len() <= 8 * 1024 / 4 + 64, "{} bytes", body.len());
    assert!(
        body.contains("truncated, 50000 bytes"),
        "{}",
        &body[body.len() - 40..]
    );
}

#[test]
fn events_outside_tracked_spans_and_progress_events_are_not_kept() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        info!("before any span");
        let job = info_span!("job", progress.level = "job", progress.total = 2_u64);
        {
            let _g = job.enter();
            tracing::info!(progress.inc = 1_u64);
        }
        // Explicit parent: kept although the span is not entered.
        info!(parent: &job, "explicit parent");
        let other = info_span!("plain");
        other.in_scope(|| info!("in an untracked span with no tracked parent"));
    });
    let op = only_finished(&store);
    let msgs: Vec<_> = op
        .root
        .recent_events
        .iter()
        .map(|e| e.message.as_deref().unwrap_or("-"))
        .collect();
    assert_eq!(msgs, ["explicit parent"]);
}

#[test]
fn old_json_without_recent_events_still_reads_and_new_json_round_trips() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let job = info_span!("job", progress.level = "job");
        let _g = job.enter();
        info!(k = true, "hello");
    });
    let op = only_finished(&store);
    let json = serde_json::to_string(&*op).unwrap();
    assert!(json.contains(r#""recent_events":[{"at_us":"#), "{json}");
    assert!(json.contains(r#""level":"info","target":"#), "{json}");
    let back: tracing_progress::ProgressState = serde_json::from_str(&json).unwrap();
    assert_eq!(back.root.recent_events, op.root.recent_events);
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["root"].as_object_mut().unwrap().remove("recent_events");
    let old: tracing_progress::ProgressState = serde_json::from_value(v).unwrap();
    assert!(old.root.recent_events.is_empty());
}

#[derive(Debug)]
struct Outer(std::io::Error);
impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upload failed")
    }
}
impl std::error::Error for Outer {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Each kind of field value a recorded event can carry reads back as it was: `log` records
/// with their own target and no `log.*` fields, control characters escaped, an error with its
/// source chain, Debug values cut at the limit, and no more fields than the metadata cap.
#[test]
fn every_kind_of_field_reads_back_as_recorded() {
    let (store, ()) = with_layer(
        Builder::new().max_text_len(40).max_metadata_entries(3),
        |_| {
            let job = info_span!("job", progress.level = "job");
            let _g = job.enter();
            let record = log::Record::builder()
                .level(log::Level::Info)
                .target("legacy::sync")
                .module_path(Some("legacy::sync"))
                .file(Some("src/sync.rs"))
                .line(Some(7))
                .args(format_args!("synced 12 rows"))
                .build();
            tracing_log::format_trace(&record).unwrap();
            let err = Outer(std::io::Error::other("connection reset"));
            warn!(
                error = &err as &dyn std::error::Error,
                path = "a\u{7}b",
                shown = %"c\u{7}d",
                "giving up"
            );
            info!(frames = ?vec![0u8; 100], ratio = 0.25, ok = true, n = -3i64, "decoded");
        },
    );
    let events = only_finished(&store).root.recent_events.clone();
    assert_eq!(events.len(), 3, "{events:?}");

    let log = &events[0];
    assert_eq!(&*log.target, "legacy::sync");
    assert_eq!(log.message.as_deref(), Some("synced 12 rows"));
    assert!(
        log.fields.iter().all(|(k, _)| !k.starts_with("log.")),
        "{log:?}"
    );

    let warn = &events[1];
    assert_eq!(warn.level, EventLevel::Warn);
    assert_eq!(
        warn.fields.get("error").and_then(|v| v.as_str()),
        Some("upload failed: connection reset")
    );
    assert_eq!(
        warn.fields.get("path").and_then(|v| v.as_str()),
        Some("a\\u{7}b")
    );
    // Formatted text (Display through `%`) is escaped as well.
    assert_eq!(
        warn.fields.get("shown").and_then(|v| v.as_str()),
        Some("c\\u{7}d")
    );

    let info = &events[2];
    assert_eq!(info.message.as_deref(), Some("decoded"));
    let frames = info.fields.get("frames").and_then(|v| v.as_str()).unwrap();
    assert!(
        frames.starts_with("[0, 0") && frames.contains("…[truncated, 300 bytes]"),
        "{frames}"
    );
    // Three fields at most: the fourth (`n`) is not kept.
    assert_eq!(info.fields.len(), 3, "{info:?}");
    assert_eq!(info.fields.get("ratio"), Some(&FieldValue::F64(0.25)));
    assert_eq!(info.fields.get("ok"), Some(&FieldValue::Bool(true)));
    assert_eq!(info.fields.get("n"), None);
}
