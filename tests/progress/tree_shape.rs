//! Tree shapes from nested code, roll-up, metadata, events and timing.

use tracing::{info, info_span};
use tracing_progress::{Builder, FieldValue, ProgressSpanExt, Status};

use crate::support::{ManualClock, node, only_finished, shape, with_layer};

#[test]
fn nested_sync_spans_build_the_expected_tree() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let setlist = info_span!(
            "setlist",
            progress.operation = "setlist_processing",
            progress.level = "setlist",
            progress.name = "My Setlist",
            progress.total = 2
        );
        let _s = setlist.enter();
        for song in ["a.wav", "b.wav"] {
            let span = info_span!("song", progress.level = "song", progress.name = song);
            let _g = span.enter();
            // an untracked span in between is transparent
            let helper = info_span!("helper");
            let _h = helper.enter();
            for action in ["Load", "Detect"] {
                info_span!("action", progress.level = "action", progress.name = action)
                    .in_scope(|| {});
            }
        }
    });
    let op = only_finished(&store);
    assert_eq!(&*op.operation_type, "setlist_processing");
    assert_eq!(&*op.name, "My Setlist");
    assert_eq!(
        shape(&op.root),
        "My Setlist[completed](a.wav[completed](Load[completed],Detect[completed]),\
         b.wav[completed](Load[completed],Detect[completed]))"
    );
    assert_eq!(
        op.root.current, 2,
        "parent without explicit current counts finished children"
    );
    assert_eq!(op.root.percentage, Some(100.0));
    assert_eq!(&*node(&op, "a.wav").level_type, "song");
    assert_eq!(op.metrics.nodes_seen, 7);
}

#[test]
fn percentage_rolls_up_from_running_children() {
    let (_store, pct) = with_layer(Builder::new(), |store| {
        let setlist = info_span!("setlist", progress.level = "setlist", progress.total = 10);
        let _s = setlist.enter();
        for i in 0..3 {
            info_span!("song", progress.level = "song", i).in_scope(|| {});
        }
        let fourth = info_span!("song", progress.level = "song", progress.total = 4);
        let _f = fourth.enter();
        fourth.set_current(2);
        let op = store.get(setlist.operation_id().unwrap()).unwrap();
        assert_eq!(op.root.current, 3);
        assert_eq!(op.root.children[3].percentage, Some(50.0));
        assert_eq!(op.root.status, Status::Running);
        op.root.percentage
    });
    assert_eq!(pct, Some(35.0), "3 of 10 done and the 4th at 50% reads 35%");
}

#[test]
fn fields_and_events_become_metadata_message_and_progress() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let block = info_span!(
            "run_block",
            progress.level = "block",
            progress.name = "LoadAudio1",
            block_id = "block-001",
            sample_rate = 44100u64,
            progress.total = tracing::field::Empty
        );
        let _g = block.enter();
        block.record("progress.total", 150u64);
        info!(
            progress.current = 127u64,
            progress.unit = "events",
            output = "audio_data",
            "detected {} events",
            127
        );
        block.set_metadata("channels", FieldValue::from(2u64));
        // a plain event (not ERROR, no progress fields) does not touch the node
        info!(unrelated = 1, "just a log line");
    });
    let op = only_finished(&store);
    let b = &op.root;
    assert_eq!((b.current, b.total), (127, Some(150)));
    assert_eq!(b.unit.as_deref(), Some("events"));
    assert_eq!(b.message.as_deref(), Some("detected 127 events"));
    assert_eq!(
        b.metadata.get("block_id").and_then(FieldValue::as_str),
        Some("block-001")
    );
    assert_eq!(b.metadata.get("sample_rate"), Some(&FieldValue::U64(44100)));
    assert_eq!(
        b.metadata.get("output").and_then(FieldValue::as_str),
        Some("audio_data")
    );
    assert_eq!(b.metadata.get("channels"), Some(&FieldValue::U64(2)));
    assert!(b.metadata.get("unrelated").is_none());
    assert_eq!(
        op.metrics.updates, 4,
        "creation, record, event, set_metadata"
    );
}

#[test]
fn timing_separates_busy_from_idle() {
    let clock = ManualClock::new();
    let (store, ()) = with_layer(Builder::new().clock(clock.reader()), |_| {
        let span = info_span!("job", progress.level = "job");
        span.in_scope(|| clock.advance_ms(30));
        clock.advance_ms(30);
        span.in_scope(|| clock.advance_ms(30));
    });
    let t = only_finished(&store).root.timing.clone();
    assert_eq!(t.busy_us, 60_000, "busy {t:?}");
    assert_eq!(t.idle_us, 30_000, "idle {t:?}");
    assert_eq!(
        t.completed_at_us.unwrap() - t.started_at_us.unwrap(),
        90_000,
        "{t:?}"
    );
    assert_eq!(t.elapsed_us, 90_000, "{t:?}");
}

#[test]
fn node_ids_never_repeat_across_span_slot_reuse() {
    // Each span is dropped before the next: the registry reuses its slot every time.
    let (store, ()) = with_layer(Builder::new(), |_| {
        for _ in 0..50 {
            drop(info_span!("op", progress.level = "op"));
        }
    });
    let mut ids: Vec<_> = store
        .history(&Default::default())
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids.len(), 50);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50, "store ids are unique");
}

#[test]
fn pending_until_entered_then_running() {
    let clock = ManualClock::new();
    with_layer(Builder::new().clock(clock.reader()), |store| {
        let span = info_span!("job", progress.level = "job");
        let id = span.operation_id().unwrap();
        assert_eq!(store.get(id).unwrap().status, Status::Pending);
        let _g = span.enter();
        clock.advance_ms(20);
        let op = store.get(id).unwrap();
        assert_eq!(op.status, Status::Running);
        assert!(op.started_at_us.is_some());
        assert_eq!(
            op.root.timing.busy_us, 20_000,
            "busy counts the current stretch: {:?}",
            op.root.timing
        );
    });
}

/// One callsite whose spans name their level at run time (`progress.level = kind`): each node
/// has its own span's level, whatever the callsite's first one was and however they alternate.
#[test]
fn levels_named_at_run_time_stay_per_span() {
    fn fetch(kind: &str, name: &str) {
        info_span!("fetch", progress.level = kind, progress.name = name).in_scope(|| {});
    }
    let (store, ()) = with_layer(Builder::new(), |_| {
        let root = info_span!("import", progress.level = "import");
        let _r = root.enter();
        for (i, kind) in ["image", "document", "document", "image", "video", "image"]
            .into_iter()
            .enumerate()
        {
            fetch(kind, &format!("{kind}{i}"));
        }
        // The span name as the level, then the first level again.
        fetch("fetch", "as named");
        fetch("image", "image again");
        fetch("bad\u{7}level", "sanitized");
    });
    let op = only_finished(&store);
    for (name, level) in [
        ("image0", "image"),
        ("document1", "document"),
        ("document2", "document"),
        ("image3", "image"),
        ("video4", "video"),
        ("image5", "image"),
        ("as named", "fetch"),
        ("image again", "image"),
    ] {
        assert_eq!(&*node(&op, name).level_type, level, "{name}");
    }
    let sanitized = node(&op, "sanitized");
    assert_eq!(&*sanitized.level_type, "bad\\u{7}level");
    assert_eq!(&*op.root.level_type, "import");
}
