//! Bad input never panics and loses nothing else; each case has the outcome the docs promise.

use tracing::{info, info_span};
use tracing_progress::{Builder, FieldValue, ProgressSpanExt, Status};

use crate::support::{only_finished, with_layer};

#[test]
fn invalid_totals_are_ignored_and_reported() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let span = info_span!(
            "job",
            progress.level = "job",
            progress.total = "abc",
            keep = 1
        );
        let _g = span.enter();
        info!(progress.total = -5i64, "negative");
        info!(progress.total = f64::NAN, "nan");
        info!(progress.current = 2.6f64, "float is rounded");
        info!(progress.total = "12", "numeric text is accepted");
    });
    let op = only_finished(&store);
    let r = &op.root;
    assert_eq!((r.current, r.total), (3, Some(12)));
    assert_eq!(r.input_errors.len(), 3, "{:?}", r.input_errors);
    assert!(r.input_errors[0].contains("progress.total") && r.input_errors[0].contains("abc"));
    assert!(r.input_errors[1].contains("-5"));
    assert_eq!(
        r.metadata.get("keep"),
        Some(&FieldValue::I64(1)),
        "other fields kept"
    );
    assert_eq!(op.metrics.input_errors, 3);
}

#[test]
fn current_above_total_and_zero_total() {
    let (store, (over, zero)) = with_layer(Builder::new(), |store| {
        let a = info_span!(
            "a",
            progress.level = "a",
            progress.total = 10,
            progress.current = 15
        );
        let b = info_span!("b", progress.level = "b", progress.total = 0);
        let a_state = store.get(a.operation_id().unwrap()).unwrap();
        let b_state = store.get(b.operation_id().unwrap()).unwrap();
        (a_state.root.percentage, b_state.root.percentage)
    });
    assert_eq!(
        over,
        Some(100.0),
        "clamped to 100% while current keeps its value"
    );
    assert_eq!(zero, None, "total 0 is indeterminate while running");
    let h = store.history(&Default::default());
    assert!(
        h.iter().all(|s| s.root.percentage == Some(100.0)),
        "completed is 100%"
    );
    assert!(h.iter().any(|s| s.root.current == 15));
}

#[test]
fn wrong_types_and_unknown_progress_fields() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let span = info_span!(
            "job",
            progress.level = 42,
            progress.totl = 3,
            progress.track = true
        );
        let _g = span.enter();
        info!(progress.inc = true, "a bool is not a count");
        info!(progress.message = 7, "numbers become text");
    });
    let op = only_finished(&store);
    let r = &op.root;
    assert_eq!(&*r.level_type, "42", "a number used as level is its text");
    assert_eq!(r.metadata.get("progress.totl"), Some(&FieldValue::I64(3)));
    assert!(r.input_errors.iter().any(|e| e.contains("progress.totl")));
    assert!(r.input_errors.iter().any(|e| e.contains("progress.inc")));
    assert_eq!(r.message.as_deref(), Some("7"));
    assert_eq!(r.current, 0);
}

#[test]
fn huge_message_is_truncated_with_a_marker() {
    let big = "x".repeat(1024 * 1024);
    let (store, ()) = with_layer(Builder::new().max_text_len(1024), |_| {
        let span = info_span!("job", progress.level = "job");
        span.set_message(&big);
        let _g = span.enter();
        info!(progress.inc = 1u64, huge = big.as_str(), "{}", big);
    });
    let r = only_finished(&store).root.clone();
    let m = r.message.as_deref().unwrap();
    assert!(m.len() < 1100, "{}", m.len());
    assert!(
        m.ends_with("…[truncated, 1048576 bytes]"),
        "{}",
        &m[m.len() - 40..]
    );
    let huge = r.metadata.get("huge").and_then(|v| v.as_str()).unwrap();
    assert!(huge.len() < 1100 && huge.contains("truncated"));
}

#[test]
fn control_characters_are_escaped_not_dropped() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let span = info_span!(
            "job",
            progress.level = "job",
            progress.name = "evil\u{1b}[2Jname\u{7}"
        );
        span.set_message("line1\nline2\r");
    });
    let r = only_finished(&store).root.clone();
    assert_eq!(&*r.name, "evil\\u{1b}[2Jname\\u{7}");
    assert_eq!(r.message.as_deref(), Some("line1\nline2\\u{d}"));
}

#[test]
fn updates_after_close_or_without_layer_are_silent_no_ops() {
    // no subscriber at all
    let span = info_span!("job", progress.level = "job");
    span.inc(1);
    span.set_message("nobody listens");
    assert!(!span.is_cancelled());
    assert_eq!(span.progress_id(), None);
    // a disabled span under the layer
    let (store, ()) = with_layer(Builder::new(), |_| {
        tracing::Span::none().inc(5);
        let span = info_span!("job", progress.level = "job");
        let kept = span.clone();
        span.in_scope(|| {});
        drop(span);
        kept.inc(1); // still open: counts
        drop(kept);
    });
    let op = only_finished(&store);
    assert_eq!(op.root.current, 1);
    assert_eq!(op.status, Status::Completed);
}

#[test]
fn thousand_deep_nesting_is_kept_flattened_at_the_depth_limit() {
    fn nest(depth: usize) {
        if depth == 0 {
            return;
        }
        let span = info_span!("level", progress.level = "level", d = depth);
        let _g = span.enter();
        nest(depth - 1);
    }
    let (store, ()) = with_layer(Builder::new().max_depth(16), |_| {
        // run on a thread with a big stack: 1,000 nested span guards are deep recursion here
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        std::thread::Builder::new()
            .stack_size(64 * 1024 * 1024)
            .spawn(move || tracing::dispatcher::with_default(&dispatch, || nest(1_000)))
            .unwrap()
            .join()
            .unwrap();
    });
    let op = only_finished(&store);
    assert_eq!(op.metrics.nodes_seen, 1_000, "nothing lost");
    let depth = |target: &tracing_progress::ProgressLevel| {
        let mut stack = vec![(&op.root, 0usize)];
        let mut found = None;
        while let Some((l, d)) = stack.pop() {
            if std::ptr::eq(l, target) {
                found = Some(d);
            }
            stack.extend(l.children.iter().map(|c| (c, d + 1)));
        }
        found.unwrap()
    };
    let deepest = op.root.walk().map(depth).max().unwrap();
    assert_eq!(deepest, 16);
    assert_eq!(op.root.walk().count(), 1_000);
    assert!(op.root.walk().filter(|l| l.flattened).count() >= 1_000 - 17);
    // and the JSON reads back with serde_json's default recursion limit
    let back: tracing_progress::ProgressState = serde_json::from_str(&op.to_json()).unwrap();
    assert_eq!(back, *op);
}

/// A field whose `Debug` opens tracked spans and logs: the user's code, run while the layer
/// reads the fields of a new span (and of a recorded one).
struct Chatty(&'static str);

impl std::fmt::Debug for Chatty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Callsites seen for the first time here: their classes are built from inside the
        // lookup of the outer span's class.
        let probe = info_span!("probe", progress.level = "probe", progress.name = self.0);
        probe.in_scope(|| {
            info!(progress.inc = 1u64, "formatting");
            info_span!("detail", progress.level = "detail").in_scope(|| {});
        });
        write!(f, "{}", self.0)
    }
}

#[test]
fn field_debug_code_that_opens_spans_and_logs_is_tracked_too() {
    let (store, ()) = with_layer(Builder::new(), |_| {
        let job = info_span!(
            "job",
            progress.level = "job",
            made = ?Chatty("at-new"),
            later = tracing::field::Empty
        );
        let _g = job.enter();
        job.record("later", tracing::field::debug(Chatty("at-record")));
        info_span!("step", progress.level = "step").in_scope(|| {});
    });
    // `tracing` itself hands calls made inside a dispatch of the same thread (the new span's
    // fields) to no subscriber, so the probe made while `job` was created is seen by nobody;
    // `record` goes straight to the span's subscriber, so the one made while a field was
    // recorded is a child of the entered `job`, made while the layer reads that field.
    let op = only_finished(&store);
    let job = &op.root;
    assert_eq!(
        job.metadata.get("made").and_then(FieldValue::as_str),
        Some("at-new")
    );
    assert_eq!(
        job.metadata.get("later").and_then(FieldValue::as_str),
        Some("at-record")
    );
    let children: Vec<&str> = job.children.iter().map(|c| &*c.name).collect();
    assert_eq!(children, ["at-record", "step"], "{children:?}");
    assert_eq!(job.children[0].current, 1);
    assert_eq!(job.children[0].children.len(), 1);
}
