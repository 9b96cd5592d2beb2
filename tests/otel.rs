#![cfg(feature = "otel")]
//! OpenTelemetry export (feature `otel`): what reaches the spans that the user's own
//! `tracing_opentelemetry::layer()` exports.
//!
//! Most tests export to an in-memory exporter through a simple span processor, so every span is
//! in `exporter.get_finished_spans()` as soon as it ends. The last one sends the spans over real
//! gRPC to an OTLP receiver running in the test.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanId, Status as OtelStatus, TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::info_span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_progress::otel::{HEARTBEAT_SPAN, PROGRESS_EVENT, attributes as attr};
use tracing_progress::{Builder, OtelExport, ProgressSpanExt, Store};
use tracing_subscriber::prelude::*;

use support::ManualClock;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// An SDK provider exporting to memory, one span as soon as it ends.
struct Otel {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
}

impl Otel {
    fn new() -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        Otel { exporter, provider }
    }

    /// Runs `f` under `registry().with(progress).with(otel_layer)` (the documented order),
    /// then flushes. The store is handed back so that heartbeat threads live as long as it.
    fn run<R>(&self, export: OtelExport, f: impl FnOnce(&Store) -> R) -> (Store, R) {
        self.run_with(Builder::new(), export, f)
    }

    /// [`run`](Self::run) with our layer built from `builder` (a manual clock, say).
    fn run_with<R>(
        &self,
        builder: Builder,
        export: OtelExport,
        f: impl FnOnce(&Store) -> R,
    ) -> (Store, R) {
        let (progress, store) = builder.otel(export).build().expect("valid builder");
        let subscriber = tracing_subscriber::registry()
            .with(progress)
            .with(tracing_opentelemetry::layer().with_tracer(self.provider.tracer("test")));
        let out = tracing::subscriber::with_default(subscriber, || f(&store));
        self.provider.force_flush().expect("force_flush");
        (store, out)
    }

    fn spans(&self) -> Vec<SpanData> {
        self.exporter.get_finished_spans().expect("finished spans")
    }
}

/// All values of `key` on a span, in the order they were added.
fn attr_values<'a>(span: &'a SpanData, key: &str) -> Vec<&'a Value> {
    span.attributes
        .iter()
        .filter(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
        .collect()
}

/// The one value of `key` on a span; fails if it is missing or repeated.
#[track_caller]
fn attr<'a>(span: &'a SpanData, key: &str) -> &'a Value {
    match attr_values(span, key).as_slice() {
        [v] => v,
        [] => panic!(
            "span {:?} has no attribute {key:?}; it has {:?}",
            span.name,
            keys(&span.attributes)
        ),
        many => panic!(
            "span {:?} has attribute {key:?} {} times: {many:?}",
            span.name,
            many.len()
        ),
    }
}

#[track_caller]
fn assert_no_attr(span: &SpanData, key: &str) {
    let found = attr_values(span, key);
    assert!(
        found.is_empty(),
        "span {:?} should not have {key:?}, has {found:?}",
        span.name
    );
}

#[track_caller]
fn int_attr(span: &SpanData, key: &str) -> i64 {
    match attr(span, key) {
        Value::I64(v) => *v,
        other => panic!("{key:?} on {:?} should be an int, is {other:?}", span.name),
    }
}

#[track_caller]
fn f64_attr(span: &SpanData, key: &str) -> f64 {
    match attr(span, key) {
        Value::F64(v) => *v,
        other => panic!(
            "{key:?} on {:?} should be a double, is {other:?}",
            span.name
        ),
    }
}

#[track_caller]
fn str_attr(span: &SpanData, key: &str) -> String {
    match attr(span, key) {
        Value::String(v) => v.as_str().to_string(),
        other => panic!(
            "{key:?} on {:?} should be a string, is {other:?}",
            span.name
        ),
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<&str> {
    kvs.iter().map(|kv| kv.key.as_str()).collect()
}

fn event_attr<'a>(event: &'a opentelemetry::trace::Event, key: &str) -> Option<&'a Value> {
    event
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn events_named<'a>(span: &'a SpanData, name: &str) -> Vec<&'a opentelemetry::trace::Event> {
    span.events.iter().filter(|e| e.name == name).collect()
}

/// The one exported span whose `tracing_progress.name` is `name`.
#[track_caller]
fn by_progress_name<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| {
            attr_values(s, attr::NAME)
                .iter()
                .any(|v| v.as_str() == name)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one span with {} = {name:?}, got {}; exported: {:?}",
        attr::NAME,
        found.len(),
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

/// The one exported span with this OpenTelemetry name.
#[track_caller]
fn by_name<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one span named {name:?}, exported: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

#[track_caller]
fn assert_error_status(span: &SpanData, needle: &str) {
    match &span.status {
        OtelStatus::Error { description } => assert!(
            description.contains(needle),
            "status description of {:?} should contain {needle:?}: {description:?}",
            span.name
        ),
        other => panic!(
            "span {:?} should have status Error({needle:?}), has {other:?}",
            span.name
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Names and parent links
// ---------------------------------------------------------------------------------------------

#[test]
fn exported_spans_keep_names_and_parent_links() {
    let otel = Otel::new();
    otel.run(OtelExport::new(), |_| {
        let setlist = info_span!("setlist", progress.level = "setlist", progress.total = 2);
        let _s = setlist.enter();
        for song in 1..=2 {
            let title = format!("song{song}");
            let s = info_span!(
                "song",
                progress.level = "song",
                progress.name = title.as_str(),
                progress.total = 2
            );
            let _g = s.enter();
            for block in 1..=2 {
                let name = format!("song{song}.block{block}");
                let b = info_span!(
                    "block",
                    progress.level = "block",
                    progress.name = name.as_str(),
                    progress.total = 1
                );
                let _b = b.enter();
                b.inc(1);
            }
        }
    });
    let spans = otel.spans();

    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "block", "block", "block", "block", "setlist", "song", "song"
        ]
    );

    let setlist = by_name(&spans, "setlist");
    assert_eq!(setlist.parent_span_id, SpanId::INVALID, "setlist is a root");
    let trace_id = setlist.span_context.trace_id();
    for s in &spans {
        assert_eq!(
            s.span_context.trace_id(),
            trace_id,
            "{} is in another trace",
            s.name
        );
    }
    let mut ids: Vec<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    ids.sort_unstable_by_key(|id| id.to_bytes());
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");

    for song in 1..=2 {
        let s = by_progress_name(&spans, &format!("song{song}"));
        assert_eq!(s.name, "song");
        assert_eq!(
            s.parent_span_id,
            setlist.span_context.span_id(),
            "song{song}'s parent is the setlist"
        );
        for block in 1..=2 {
            let b = by_progress_name(&spans, &format!("song{song}.block{block}"));
            assert_eq!(b.name, "block");
            assert_eq!(
                b.parent_span_id,
                s.span_context.span_id(),
                "song{song}.block{block}'s parent is song{song}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Final attributes
// ---------------------------------------------------------------------------------------------

#[test]
fn final_attributes_carry_final_values_once_with_their_types() {
    let otel = Otel::new();
    let clock = ManualClock::new();
    let layer = Builder::new().clock(clock.reader());
    let (_store, (song_id, block_id, op_id)) = otel.run_with(layer, OtelExport::new(), |_| {
        let song = info_span!("song", progress.level = "song", progress.total = 1);
        let _g = song.enter();
        let block = info_span!("block", progress.level = "block", progress.total = 150);
        let _b = block.enter();
        block.set_current(127);
        clock.advance_ms(20);
        block.set_current(150);
        (
            song.progress_id().expect("song is tracked"),
            block.progress_id().expect("block is tracked"),
            block.operation_id().expect("block has an operation"),
        )
    });
    assert_eq!(op_id, song_id, "the song is the operation's root");
    let spans = otel.spans();
    let block = by_name(&spans, "block");

    assert_eq!(int_attr(block, attr::CURRENT), 150);
    assert_eq!(int_attr(block, attr::TOTAL), 150);
    assert_eq!(f64_attr(block, attr::PERCENTAGE), 100.0);
    assert_eq!(str_attr(block, attr::STATUS), "completed");
    assert_eq!(str_attr(block, attr::LEVEL), "block");
    assert_eq!(str_attr(block, attr::NAME), "block");
    assert_eq!(int_attr(block, attr::OPERATION_ID) as u64, op_id.as_u64());
    assert_eq!(int_attr(block, attr::NODE_ID) as u64, block_id.as_u64());
    // The block was open, and entered, for the 20 ms the clock moved.
    assert_eq!(f64_attr(block, attr::DURATION_MS), 20.0);
    assert_eq!(f64_attr(block, attr::BUSY_MS), 20.0);
    assert_eq!(f64_attr(block, attr::IDLE_MS), 0.0);
    // A completed, uncancelled, failure-free node has none of the optional attributes.
    for key in [
        attr::CANCEL_REQUESTED,
        attr::FAILURES_BELOW,
        attr::ETA_AT_CLOSE_S,
        attr::UNIT,
    ] {
        assert_no_attr(block, key);
    }
    assert_eq!(block.status, OtelStatus::Unset);
    assert!(events_named(block, "exception").is_empty());

    // Every key of our namespace appears exactly once on every span.
    for span in &spans {
        let mut ours: Vec<&str> = keys(&span.attributes)
            .into_iter()
            .filter(|k| k.starts_with("tracing_progress."))
            .collect();
        let n = ours.len();
        ours.sort_unstable();
        ours.dedup();
        assert_eq!(
            ours.len(),
            n,
            "duplicate tracing_progress.* attributes on {:?}: {:?}",
            span.name,
            keys(&span.attributes)
        );
    }

    let song = by_name(&spans, "song");
    assert_eq!(int_attr(song, attr::NODE_ID) as u64, song_id.as_u64());
    assert_eq!(int_attr(song, attr::OPERATION_ID) as u64, song_id.as_u64());
    assert_eq!(str_attr(song, attr::STATUS), "completed");
    assert_eq!(str_attr(song, attr::LEVEL), "song");
    assert_eq!(int_attr(song, attr::TOTAL), 1);
}

// ---------------------------------------------------------------------------------------------
// 3. Progress events: throttled and capped
// ---------------------------------------------------------------------------------------------

const INCS: u64 = 100_000;

/// Runs `INCS` increments on one span and returns it as exported.
fn hammer(export: OtelExport) -> SpanData {
    let otel = Otel::new();
    otel.run(export, |_| {
        let span = info_span!("bulk", progress.level = "bulk", progress.total = INCS);
        let _g = span.enter();
        for _ in 0..INCS {
            span.inc(1);
        }
    });
    let spans = otel.spans();
    let bulk = by_name(&spans, "bulk").clone();
    assert_eq!(int_attr(&bulk, attr::CURRENT), INCS as i64, "final current");
    assert_eq!(str_attr(&bulk, attr::STATUS), "completed");
    bulk
}

/// `tracing_progress.current` of each progress event.
#[track_caller]
fn event_currents(span: &SpanData) -> Vec<i64> {
    events_named(span, PROGRESS_EVENT)
        .iter()
        .map(|e| match event_attr(e, attr::CURRENT) {
            Some(Value::I64(v)) => *v,
            other => panic!("progress event without an int current: {other:?}"),
        })
        .collect()
}

#[test]
fn progress_events_are_capped_per_span() {
    let bulk = hammer(
        OtelExport::new()
            .event_interval(Duration::ZERO)
            .max_events_per_span(8),
    );
    let currents = event_currents(&bulk);
    assert_eq!(
        currents.len(),
        8,
        "cap of 8 progress events, got {currents:?}"
    );
    assert!(
        currents.windows(2).all(|w| w[0] < w[1]),
        "currents increase: {currents:?}"
    );
    for e in events_named(&bulk, PROGRESS_EVENT) {
        assert_eq!(
            event_attr(e, attr::TOTAL),
            Some(&Value::I64(INCS as i64)),
            "progress events carry the total"
        );
    }
    assert_eq!(
        bulk.events.dropped_count, 0,
        "no events were dropped by the SDK"
    );
}

#[test]
fn progress_events_are_throttled_per_interval() {
    let bulk = hammer(
        OtelExport::new()
            .event_interval(Duration::from_secs(3600))
            .max_events_per_span(8),
    );
    // Whether the first hour starts at the span's creation (no event for a span shorter than
    // the interval) or at its first update (one event, at current 1), it is at most one.
    let currents = event_currents(&bulk);
    assert!(
        currents.is_empty() || currents == [1],
        "at most one progress event per hour, got {currents:?}"
    );
}

#[test]
fn progress_events_reopen_after_each_interval() {
    let interval = Duration::from_millis(200);
    let otel = Otel::new();
    let clock = ManualClock::new();
    otel.run_with(
        Builder::new().clock(clock.reader()),
        OtelExport::new()
            .event_interval(interval)
            .max_events_per_span(32),
        |store| {
            let span = info_span!("paced", progress.level = "paced", progress.total = 200);
            let _g = span.enter();
            for _round in 0..2 {
                // More than an interval since the span's creation and since the last event.
                clock.advance(interval + Duration::from_millis(50));
                let burst = store.now_us();
                for _ in 0..100 {
                    span.inc(1);
                }
                assert_eq!(
                    store.now_us(),
                    burst,
                    "the 100 increments happen at one instant, within one interval"
                );
            }
        },
    );
    let spans = otel.spans();
    let paced = by_name(&spans, "paced");
    assert_eq!(
        event_currents(paced),
        [1, 101],
        "one event at the first update of each interval"
    );
    let first = events_named(paced, PROGRESS_EVENT)[0];
    assert_eq!(event_attr(first, attr::TOTAL), Some(&Value::I64(200)));
    assert_eq!(event_attr(first, attr::PERCENTAGE), Some(&Value::F64(0.5)));
}

#[test]
fn progress_log_records_mirror_the_events_with_the_spans_trace_context() {
    use opentelemetry::logs::{AnyValue, LoggerProvider as _, Severity};
    use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
    use tracing_progress::otel::PROGRESS_LOG_EVENT;

    let logs = InMemoryLogExporter::default();
    let logger_provider = SdkLoggerProvider::builder()
        .with_simple_exporter(logs.clone())
        .build();
    let otel = Otel::new();
    let export = OtelExport::new()
        .event_interval(Duration::ZERO)
        .max_events_per_span(3)
        .log_records(logger_provider.logger("tracing-progress"));
    otel.run(export, |_| {
        let span = info_span!("scan", progress.level = "scan", progress.total = 10);
        let _g = span.enter();
        for _ in 0..5 {
            span.inc(2);
        }
    });
    let spans = otel.spans();
    let scan = by_name(&spans, "scan");
    let events = events_named(scan, PROGRESS_EVENT);
    let emitted = logs.get_emitted_logs().expect("emitted logs");
    assert_eq!(events.len(), 3, "capped like the events");
    assert_eq!(
        emitted.len(),
        events.len(),
        "one log record per progress event"
    );
    let attr_of = |r: &opentelemetry_sdk::logs::SdkLogRecord, key: &str| {
        r.attributes_iter()
            .find(|(k, _)| k.as_str() == key)
            .map(|(_, v)| v.clone())
    };
    for (log, event) in emitted.iter().zip(&events) {
        let r = &log.record;
        assert_eq!(log.instrumentation.name(), "tracing-progress");
        assert_eq!(r.event_name(), Some(PROGRESS_LOG_EVENT));
        assert_eq!(r.severity_number(), Some(Severity::Info));
        let tc = r.trace_context().expect("the span's trace context");
        assert_eq!(tc.trace_id, scan.span_context.trace_id());
        assert_eq!(tc.span_id, scan.span_context.span_id());
        assert_eq!(tc.trace_flags, Some(scan.span_context.trace_flags()));
        let current = match event_attr(event, attr::CURRENT) {
            Some(Value::I64(c)) => *c,
            other => panic!("event current {other:?}"),
        };
        assert_eq!(attr_of(r, attr::CURRENT), Some(AnyValue::Int(current)));
        assert_eq!(attr_of(r, attr::TOTAL), Some(AnyValue::Int(10)));
        let pct = (current * 10) as f64;
        assert_eq!(attr_of(r, attr::PERCENTAGE), Some(AnyValue::Double(pct)));
        assert_eq!(
            r.body(),
            Some(&AnyValue::from(format!("progress {current}/10 ({pct}%)")))
        );
    }
    let currents: Vec<_> = emitted
        .iter()
        .map(|l| attr_of(&l.record, attr::CURRENT))
        .collect();
    assert_eq!(
        currents,
        [2, 4, 6].map(|c| Some(AnyValue::Int(c))),
        "in order, as they happened"
    );
    assert!(
        format!("{:?}", OtelExport::new()).contains("log_records: false"),
        "off by default"
    );
}

#[test]
fn progress_events_can_be_turned_off() {
    let otel = Otel::new();
    otel.run(OtelExport::new().max_events_per_span(0), |_| {
        let span = info_span!("quiet", progress.level = "quiet", progress.total = 10);
        let _g = span.enter();
        for _ in 0..10 {
            span.inc(1);
        }
    });
    let spans = otel.spans();
    let quiet = by_name(&spans, "quiet");
    assert!(event_currents(quiet).is_empty());
    assert_eq!(int_attr(quiet, attr::CURRENT), 10);
}

#[test]
fn progress_events_come_from_records_and_progress_events_too() {
    let otel = Otel::new();
    otel.run(OtelExport::new().event_interval(Duration::ZERO), |_| {
        let span = info_span!(
            "copy",
            progress.level = "copy",
            progress.total = 4,
            progress.current = tracing::field::Empty
        );
        let _g = span.enter();
        span.record("progress.current", 1);
        tracing::info!(progress.current = 2, "halfway");
        span.inc(1);
    });
    let spans = otel.spans();
    let copy = by_name(&spans, "copy");
    assert_eq!(
        event_currents(copy),
        [1, 2, 3],
        "span.record, a progress event and the extension trait each add a progress event"
    );
    let last = *events_named(copy, PROGRESS_EVENT).last().unwrap();
    assert_eq!(event_attr(last, attr::PERCENTAGE), Some(&Value::F64(75.0)));
    assert_eq!(int_attr(copy, attr::CURRENT), 3);
    // Completed at 3 of 4: the percentage says what got done (README, "Bad input").
    assert_eq!(f64_attr(copy, attr::PERCENTAGE), 75.0);
}

#[test]
fn concurrent_increments_respect_the_cap_and_the_interval() {
    for (interval, most) in [(Duration::ZERO, 8), (Duration::from_secs(3600), 1)] {
        let otel = Otel::new();
        otel.run(
            OtelExport::new()
                .event_interval(interval)
                .max_events_per_span(8),
            |_| {
                let span = info_span!("shared", progress.level = "shared", progress.total = INCS);
                let _g = span.enter();
                std::thread::scope(|scope| {
                    for _ in 0..4 {
                        // The span carries its dispatcher: no subscriber needed on these threads.
                        let span = span.clone();
                        scope.spawn(move || {
                            for _ in 0..INCS / 4 {
                                span.inc(1);
                            }
                        });
                    }
                });
            },
        );
        let spans = otel.spans();
        let shared = by_name(&spans, "shared");
        let currents = event_currents(shared);
        if interval.is_zero() {
            assert_eq!(currents.len(), most, "exactly the cap: {currents:?}");
        } else {
            assert!(currents.len() <= most, "one per hour at most: {currents:?}");
        }
        assert_eq!(int_attr(shared, attr::CURRENT), INCS as i64);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Failures: error status and exception event
// ---------------------------------------------------------------------------------------------

#[tracing::instrument(err, fields(progress.level = "block"))]
fn load_block() -> Result<(), String> {
    Err("boom".to_string())
}

#[test]
fn instrument_err_sets_error_status_and_exception_event() {
    let otel = Otel::new();
    let (_store, result) = otel.run(OtelExport::new(), |_| load_block());
    assert_eq!(result, Err("boom".to_string()));
    let spans = otel.spans();
    let span = by_name(&spans, "load_block");

    assert_error_status(span, "boom");
    assert_eq!(str_attr(span, attr::STATUS), "failed");
    let ours: Vec<_> = events_named(span, "exception")
        .into_iter()
        .filter(|e| event_attr(e, "exception.type").is_some())
        .collect();
    assert!(
        !ours.is_empty(),
        "an exception event with exception.type; events: {:?}",
        span.events.events
    );
    for e in ours {
        assert_eq!(
            event_attr(e, "exception.message")
                .map(Value::as_str)
                .as_deref(),
            Some("boom"),
            "exception.message of {e:?}"
        );
        let kind = event_attr(e, "exception.type").unwrap().as_str();
        assert!(
            kind.starts_with("tracing_progress::"),
            "exception.type {kind:?}"
        );
    }
}

#[test]
fn explicit_failure_keeps_the_message_and_counts_below() {
    let otel = Otel::new();
    otel.run(OtelExport::new(), |_| {
        let root = info_span!("import", progress.level = "import", progress.total = 2);
        let _g = root.enter();
        let file = info_span!("file", progress.level = "file", progress.total = 4);
        let _f = file.enter();
        file.inc(1);
        file.fail("disk full");
    });
    let spans = otel.spans();
    let file = by_name(&spans, "file");
    assert_error_status(file, "disk full");
    assert_eq!(str_attr(file, attr::STATUS), "failed");
    assert_eq!(int_attr(file, attr::CURRENT), 1);
    let eta = f64_attr(file, attr::ETA_AT_CLOSE_S);
    assert!(eta >= 0.0, "eta_at_close_s {eta}");
    let exc = events_named(file, "exception");
    assert_eq!(exc.len(), 1, "one exception event: {exc:?}");
    assert_eq!(
        event_attr(exc[0], "exception.type")
            .map(Value::as_str)
            .as_deref(),
        Some("tracing_progress::explicit")
    );
    assert_eq!(
        event_attr(exc[0], "exception.message")
            .map(Value::as_str)
            .as_deref(),
        Some("disk full")
    );
    assert_eq!(
        event_attr(exc[0], attr::PATH).map(Value::as_str).as_deref(),
        Some("import > file"),
        "path from the root"
    );

    let root = by_name(&spans, "import");
    assert_eq!(int_attr(root, attr::FAILURES_BELOW), 1);
}

#[test]
fn panic_in_tracked_span_sets_error_status_with_the_message() {
    let otel = Otel::new();
    let (_store, caught) = otel.run(OtelExport::new(), |_| {
        std::panic::catch_unwind(|| {
            let span = info_span!("risky", progress.level = "block", progress.total = 3);
            let _g = span.enter();
            span.inc(1);
            panic!("kaboom at step 2");
        })
    });
    assert!(caught.is_err(), "the closure panicked");
    let spans = otel.spans();
    let span = by_name(&spans, "risky");
    assert_error_status(span, "kaboom at step 2");
    assert_eq!(str_attr(span, attr::STATUS), "failed");
    let exc = events_named(span, "exception");
    assert!(
        exc.iter().any(|e| {
            event_attr(e, "exception.type")
                .map(Value::as_str)
                .as_deref()
                == Some("tracing_progress::panic")
                && event_attr(e, "exception.message")
                    .map(Value::as_str)
                    .as_deref()
                    == Some("kaboom at step 2")
        }),
        "a panic exception event: {exc:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4b. Semantic conventions: status and `error.type` follow the node's final status
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_error_type(span: &SpanData, want: &str) {
    assert_eq!(
        str_attr(span, attr::ERROR_TYPE),
        want,
        "error.type of {:?}",
        span.name
    );
}

/// `exception.type` of the exception events this crate adds (the ones with a path).
fn our_exception_types(span: &SpanData) -> Vec<String> {
    events_named(span, "exception")
        .into_iter()
        .filter(|e| event_attr(e, attr::PATH).is_some())
        .filter_map(|e| event_attr(e, "exception.type").map(|v| v.as_str().to_string()))
        .collect()
}

#[test]
fn failed_spans_carry_error_type_of_their_origin() {
    let otel = Otel::new();
    let (_store, ()) = otel.run(OtelExport::new(), |_| {
        let root = info_span!("import", progress.level = "import", progress.total = 3);
        let _g = root.enter();
        let _ = load_block(); // #[instrument(err)]: an ERROR event
        {
            let file = info_span!("explicit", progress.level = "file");
            let _f = file.enter();
            file.fail("disk full");
        }
        let _ = std::panic::catch_unwind(|| {
            let span = info_span!("risky", progress.level = "file");
            let _s = span.enter();
            panic!("kaboom");
        });
    });
    let spans = otel.spans();
    for (name, kind) in [
        ("load_block", "tracing_progress::event"),
        ("explicit", "tracing_progress::explicit"),
        ("risky", "tracing_progress::panic"),
    ] {
        let span = by_name(&spans, name);
        assert!(
            matches!(span.status, OtelStatus::Error { .. }),
            "{name}: {:?}",
            span.status
        );
        assert_error_type(span, kind);
        assert_eq!(
            our_exception_types(span),
            vec![kind.to_string()],
            "{name}: exception.type is the same value as error.type"
        );
    }
    // Children failed, the root carried on: the root's operation completed.
    let root = by_name(&spans, "import");
    assert_eq!(root.status, OtelStatus::Unset, "success stays Unset");
    assert_no_attr(root, attr::ERROR_TYPE);
    assert_eq!(int_attr(root, attr::FAILURES_BELOW), 3);
}

#[test]
fn error_type_comes_from_the_events_own_type_field() {
    let otel = Otel::new();
    // A logged error fails the node only under `FailOn::ErrorEvents` (the default keeps it as
    // a handled error).
    otel.run_with(
        Builder::new().fail_on(tracing_progress::FailOn::ErrorEvents),
        OtelExport::new(),
        |_| {
            let span = info_span!("fetch", progress.level = "fetch");
            let _g = span.enter();
            tracing::error!(error.type = "timeout", "gave up after 3 tries");
        },
    );
    let spans = otel.spans();
    let span = by_name(&spans, "fetch");
    assert_error_status(span, "gave up after 3 tries");
    assert_error_type(span, "timeout");
    assert_eq!(our_exception_types(span), vec!["timeout".to_string()]);
}

#[tracing::instrument(err, fields(progress.level = "attempt"))]
fn flaky(attempt: u32) -> Result<(), String> {
    if attempt == 1 {
        Err("transient".to_string())
    } else {
        Ok(())
    }
}

#[test]
fn a_handled_error_marks_only_the_child_that_failed() {
    let otel = Otel::new();
    otel.run(OtelExport::new(), |_| {
        let root = info_span!("job", progress.level = "job");
        let _g = root.enter();
        for attempt in 1..=2 {
            if flaky(attempt).is_ok() {
                break;
            }
        }
    });
    let spans = otel.spans();
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "flaky").collect();
    assert_eq!(attempts.len(), 2);
    let (failed, ok): (Vec<_>, Vec<_>) = attempts
        .iter()
        .partition(|s| str_attr(s, attr::STATUS) == "failed");
    assert_eq!((failed.len(), ok.len()), (1, 1));
    assert_error_status(failed[0], "transient");
    assert_error_type(failed[0], "tracing_progress::event");
    assert_eq!(ok[0].status, OtelStatus::Unset);
    assert_no_attr(ok[0], attr::ERROR_TYPE);

    let root = by_name(&spans, "job");
    assert_eq!(str_attr(root, attr::STATUS), "completed");
    assert_eq!(
        root.status,
        OtelStatus::Unset,
        "the retried error does not mark the parent"
    );
    assert_no_attr(root, attr::ERROR_TYPE);
    assert!(events_named(root, "exception").is_empty());
    assert_eq!(int_attr(root, attr::FAILURES_BELOW), 1);
}

#[tracing::instrument(err, fields(progress.level = "upload", progress.name = file))]
fn upload(file: &str, attempt: u32) -> Result<(), String> {
    if attempt == 1 {
        Err("connection reset".to_string())
    } else {
        Ok(())
    }
}

#[test]
fn a_retried_unit_exports_one_span_per_attempt_and_the_last_carries_its_number() {
    let otel = Otel::new();
    otel.run(OtelExport::new(), |_| {
        let root = info_span!("job", progress.level = "job");
        let _g = root.enter();
        for attempt in 1..=3 {
            if upload("a.bin", attempt).is_ok() {
                break;
            }
        }
    });
    let spans = otel.spans();
    let tries: Vec<_> = spans.iter().filter(|s| s.name == "upload").collect();
    assert_eq!(tries.len(), 2, "each attempt is its own span");
    let (failed, ok): (Vec<_>, Vec<_>) = tries
        .iter()
        .partition(|s| str_attr(s, attr::STATUS) == "failed");
    assert_eq!((failed.len(), ok.len()), (1, 1));
    assert_error_status(failed[0], "connection reset");
    assert_no_attr(failed[0], attr::ATTEMPT);
    assert_eq!(int_attr(ok[0], attr::ATTEMPT), 2);
    assert_eq!(int_attr(ok[0], attr::ATTEMPTS_FAILED_BEFORE), 1);
    assert_eq!(ok[0].status, OtelStatus::Unset);
    // The unit recovered: the parent has no failure below it any more.
    let root = by_name(&spans, "job");
    assert_eq!(str_attr(root, attr::STATUS), "completed");
    assert_no_attr(root, attr::FAILURES_BELOW);
    assert_no_attr(root, attr::WITH_FAILURES);
}

#[test]
fn exception_events_can_be_left_out() {
    let otel = Otel::new();
    otel.run(OtelExport::new().exception_events(false), |_| {
        let span = info_span!("file", progress.level = "file");
        let _g = span.enter();
        span.fail("disk full");
    });
    let spans = otel.spans();
    let span = by_name(&spans, "file");
    assert_error_status(span, "disk full");
    assert_error_type(span, "tracing_progress::explicit");
    assert!(
        events_named(span, "exception").is_empty(),
        "no exception event: {:?}",
        span.events.events
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Cancellation
// ---------------------------------------------------------------------------------------------

#[test]
fn cancelled_operation_exports_cancelled_status() {
    let otel = Otel::new();
    otel.run(OtelExport::new(), |store| {
        let root = info_span!("import", progress.level = "import", progress.total = 3);
        let _g = root.enter();
        {
            let done = info_span!("done", progress.level = "file", progress.total = 1);
            let _d = done.enter();
            done.inc(1);
        }
        let file = info_span!("file", progress.level = "file", progress.total = 10);
        let _f = file.enter();
        file.inc(3);
        store
            .cancel(root.operation_id().expect("tracked"))
            .expect("running operation");
        assert!(file.is_cancelled());
    });
    let spans = otel.spans();

    for name in ["import", "file"] {
        let span = by_name(&spans, name);
        assert_eq!(
            span.status,
            OtelStatus::error("cancelled"),
            "status of {name}"
        );
        assert_eq!(str_attr(span, attr::STATUS), "cancelled", "{name}");
        assert_eq!(str_attr(span, attr::ERROR_TYPE), "cancelled", "{name}");
        assert_eq!(
            attr(span, attr::CANCEL_REQUESTED),
            &Value::Bool(true),
            "{name}"
        );
        assert!(
            events_named(span, "exception").is_empty(),
            "cancellation is not an exception: {name}"
        );
    }
    let file = by_name(&spans, "file");
    assert_eq!(int_attr(file, attr::CURRENT), 3);
    assert_eq!(f64_attr(file, attr::PERCENTAGE), 30.0);
    assert!(f64_attr(file, attr::ETA_AT_CLOSE_S) >= 0.0);

    // Closed before the cancel: completed, no cancel flag.
    let done = by_name(&spans, "done");
    assert_eq!(done.status, OtelStatus::Unset);
    assert_eq!(str_attr(done, attr::STATUS), "completed");
    assert_no_attr(done, attr::CANCEL_REQUESTED);
    assert_no_attr(done, attr::ERROR_TYPE);
}

// ---------------------------------------------------------------------------------------------
// 6. Layer order detection
// ---------------------------------------------------------------------------------------------

#[test]
fn wrong_layer_order_is_detected() {
    let otel = Otel::new();
    let (progress, store) = Builder::new()
        .otel(OtelExport::new())
        .build()
        .expect("valid builder");
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(otel.provider.tracer("test")))
        .with(progress);
    tracing::subscriber::with_default(subscriber, || {
        assert!(
            !store
                .stats()
                .has_warning(tracing_progress::otel::LAYER_ORDER_WARNING),
            "nothing seen yet"
        );
        drop(info_span!("untracked"));
        assert!(
            !store
                .stats()
                .has_warning(tracing_progress::otel::LAYER_ORDER_WARNING),
            "untracked spans do not check the order"
        );
        let span = info_span!("job", progress.level = "job");
        assert!(
            store
                .stats()
                .has_warning(tracing_progress::otel::LAYER_ORDER_WARNING),
            "the first tracked span finds the OpenTelemetry layer ahead of ours"
        );
        drop(span);
        assert!(
            store
                .stats()
                .has_warning(tracing_progress::otel::LAYER_ORDER_WARNING),
            "stays set"
        );
    });
}

#[test]
fn right_layer_order_is_not_flagged() {
    let otel = Otel::new();
    let (store, ()) = otel.run(OtelExport::new(), |store| {
        let span = info_span!("job", progress.level = "job");
        let _g = span.enter();
        let child = info_span!("step", progress.level = "step");
        drop(child);
        assert!(
            !store
                .stats()
                .has_warning(tracing_progress::otel::LAYER_ORDER_WARNING)
        );
    });
    assert!(
        !store
            .stats()
            .has_warning(tracing_progress::otel::LAYER_ORDER_WARNING)
    );
    // And in this order the final attributes do arrive.
    let spans = otel.spans();
    assert_eq!(str_attr(by_name(&spans, "job"), attr::STATUS), "completed");
}

// ---------------------------------------------------------------------------------------------
// 7. Heartbeats
// ---------------------------------------------------------------------------------------------

fn heartbeats(spans: &[SpanData]) -> Vec<&SpanData> {
    spans.iter().filter(|s| s.name == HEARTBEAT_SPAN).collect()
}

#[test]
fn heartbeats_are_exported_while_the_root_is_open() {
    let otel = Otel::new();
    let export = OtelExport::new()
        .heartbeat(otel.provider.tracer("hb"), Duration::from_millis(50))
        .heartbeat_after(Duration::from_millis(50));
    let (_store, (root_cx, op_id)) = otel.run(export, |_| {
        let root = info_span!("job", progress.level = "job", progress.total = 10);
        let _g = root.enter();
        root.set_current(7);
        let sc = root.context().span().span_context().clone();
        assert!(sc.is_valid());
        let op_id = root.operation_id().expect("tracked");

        // Hold the operation open at least 300 ms, longer (up to 1.5 s) if the machine is slow.
        let start = Instant::now();
        let seen = loop {
            std::thread::sleep(Duration::from_millis(25));
            let spans = otel.spans();
            let n = heartbeats(&spans).len();
            let elapsed = start.elapsed();
            if (n >= 2 && elapsed >= Duration::from_millis(300))
                || elapsed >= Duration::from_millis(1500)
            {
                break spans;
            }
        };
        assert!(
            !seen.iter().any(|s| s.name == "job"),
            "the root is not exported while it is open"
        );
        let beats = heartbeats(&seen);
        assert!(
            beats.len() >= 2,
            "at least 2 heartbeats in {:?}, got {}",
            start.elapsed(),
            beats.len()
        );
        for hb in &beats {
            assert_eq!(hb.parent_span_id, sc.span_id(), "heartbeat under the root");
            assert_eq!(hb.span_context.trace_id(), sc.trace_id(), "same trace");
            assert_eq!(int_attr(hb, attr::CURRENT), 7);
            assert_eq!(int_attr(hb, attr::TOTAL), 10);
            assert_eq!(f64_attr(hb, attr::PERCENTAGE), 70.0);
            assert_eq!(int_attr(hb, attr::OPERATION_ID) as u64, op_id.as_u64());
            assert_eq!(str_attr(hb, attr::STATUS), "running");
            assert_eq!(str_attr(hb, attr::NAME), "job");
            assert_eq!(str_attr(hb, attr::LEVEL), "job");
            assert!(
                str_attr(hb, attr::ACTIVE_PATH).starts_with("job \"job\" 7/10"),
                "active path {:?}",
                str_attr(hb, attr::ACTIVE_PATH)
            );
            assert!(f64_attr(hb, attr::ELAPSED_MS) >= 50.0);
            assert_eq!(hb.instrumentation_scope.name(), "hb");
            assert_eq!(hb.status, OtelStatus::Unset);
        }
        let seqs: Vec<i64> = beats
            .iter()
            .map(|hb| int_attr(hb, attr::HEARTBEAT_SEQ))
            .collect();
        assert_eq!(
            seqs,
            (1..=beats.len() as i64).collect::<Vec<_>>(),
            "heartbeats of one operation are numbered from 1"
        );
        (sc, op_id)
    });

    let spans = otel.spans();
    let root = by_name(&spans, "job");
    assert_eq!(root.span_context.span_id(), root_cx.span_id());
    assert_eq!(root.span_context.trace_id(), root_cx.trace_id());
    assert_eq!(int_attr(root, attr::OPERATION_ID) as u64, op_id.as_u64());
    assert_eq!(int_attr(root, attr::CURRENT), 7);

    // The operation is finished: no more heartbeats for it (the store, and its thread, live on).
    let before = heartbeats(&spans).len();
    std::thread::sleep(Duration::from_millis(150));
    otel.provider.force_flush().expect("force_flush");
    assert_eq!(
        heartbeats(&otel.spans()).len(),
        before,
        "no heartbeats after the root closed"
    );
}

#[test]
fn heartbeat_needs_a_non_zero_interval() {
    let provider = SdkTracerProvider::builder().build();
    let err = Builder::new()
        .otel(OtelExport::new().heartbeat(provider.tracer("hb"), Duration::ZERO))
        .build::<tracing_subscriber::Registry>()
        .expect_err("zero interval is rejected");
    assert!(err.to_string().contains("heartbeat"), "{err}");
}

#[test]
fn short_operations_get_no_heartbeats() {
    let otel = Otel::new();
    let export = OtelExport::new()
        .heartbeat(otel.provider.tracer("hb"), Duration::from_millis(50))
        .heartbeat_after(Duration::from_millis(300));
    let (_store, ()) = otel.run(export, |_| {
        for _ in 0..3 {
            let root = info_span!("quick", progress.level = "job");
            let _g = root.enter();
            std::thread::sleep(Duration::from_millis(30));
        }
        // Longer than heartbeat_after since the first one started.
        std::thread::sleep(Duration::from_millis(400));
    });
    assert_eq!(otel.spans().iter().filter(|s| s.name == "quick").count(), 3);
    assert!(
        heartbeats(&otel.spans()).is_empty(),
        "operations shorter than heartbeat_after cost no spans"
    );
}

#[test]
fn each_long_operation_gets_its_heartbeats_one_after_another() {
    let otel = Otel::new();
    let export = OtelExport::new()
        .heartbeat(otel.provider.tracer("hb"), Duration::from_millis(40))
        .heartbeat_after(Duration::from_millis(80));
    let (_store, ids) = otel.run(export, |_| {
        let mut ids = Vec::new();
        for name in ["first", "second"] {
            let root = info_span!("job", progress.level = "job", progress.name = name);
            let _g = root.enter();
            ids.push(root.context().span().span_context().span_id());
            // The second starts while the thread waits for an operation.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1500) {
                std::thread::sleep(Duration::from_millis(20));
                let n = heartbeats(&otel.spans())
                    .iter()
                    .filter(|h| h.parent_span_id == *ids.last().unwrap())
                    .count();
                if n >= 2 {
                    break;
                }
            }
        }
        ids
    });
    let spans = otel.spans();
    for (i, id) in ids.iter().enumerate() {
        let beats: Vec<_> = heartbeats(&spans)
            .into_iter()
            .filter(|h| h.parent_span_id == *id)
            .collect();
        assert!(
            beats.len() >= 2,
            "operation {i}: {} heartbeats",
            beats.len()
        );
        assert_eq!(int_attr(beats[0], attr::HEARTBEAT_SEQ), 1);
    }
}

#[test]
fn without_heartbeat_exports_none() {
    let otel = Otel::new();
    let export = OtelExport::new()
        .heartbeat(otel.provider.tracer("hb"), Duration::from_millis(20))
        .heartbeat_after(Duration::ZERO)
        .without_heartbeat();
    otel.run(export, |_| {
        let root = info_span!("job", progress.level = "job");
        let _g = root.enter();
        std::thread::sleep(Duration::from_millis(200));
    });
    assert!(heartbeats(&otel.spans()).is_empty());
}

#[test]
fn huge_heartbeat_durations_mean_never_not_a_panic() {
    let otel = Otel::new();
    for export in [
        OtelExport::new()
            .heartbeat(otel.provider.tracer("hb"), Duration::from_millis(10))
            .heartbeat_after(Duration::MAX),
        OtelExport::new()
            .heartbeat(otel.provider.tracer("hb"), Duration::MAX)
            .heartbeat_after(Duration::ZERO),
    ] {
        otel.run(export, |_| {
            let root = info_span!("job", progress.level = "job");
            let _g = root.enter();
            std::thread::sleep(Duration::from_millis(150));
        });
    }
    // The first never beats; the second beats once, at once, and never again.
    assert_eq!(heartbeats(&otel.spans()).len(), 1);
}

#[test]
fn heartbeats_are_on_by_default_through_the_global_tracer_provider() {
    let debug = format!("{:?}", OtelExport::new());
    assert!(
        debug.contains("(\"global\", 5s, 10s)"),
        "defaults: after 5 s, every 10 s, global provider: {debug}"
    );

    // The global provider is set once for this test binary; other tests' operations end long
    // before the default 5 s, and this one looks only at its own trace.
    let global = InMemorySpanExporter::default();
    opentelemetry::global::set_tracer_provider(
        SdkTracerProvider::builder()
            .with_simple_exporter(global.clone())
            .build(),
    );
    let otel = Otel::new();
    let export = OtelExport::new()
        .heartbeat_after(Duration::from_millis(100))
        .heartbeat_interval(Duration::from_millis(100));
    let (_store, trace_id) = otel.run(export, |_| {
        let root = info_span!("job", progress.level = "job", progress.total = 4);
        let _g = root.enter();
        root.set_current(1);
        let trace_id = root.context().span().span_context().trace_id();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(20));
            let mine = global
                .get_finished_spans()
                .expect("spans")
                .into_iter()
                .filter(|s| s.span_context.trace_id() == trace_id)
                .count();
            if mine >= 2 {
                break;
            }
        }
        trace_id
    });
    let beats: Vec<_> = global
        .get_finished_spans()
        .expect("spans")
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect();
    assert!(
        beats.len() >= 2,
        "{} heartbeats through the global provider",
        beats.len()
    );
    for hb in &beats {
        assert_eq!(hb.name, HEARTBEAT_SPAN);
        assert_eq!(
            hb.instrumentation_scope.name(),
            tracing_progress::otel::HEARTBEAT_SCOPE
        );
        assert_eq!(
            hb.instrumentation_scope.version(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(int_attr(hb, attr::CURRENT), 1);
        assert_eq!(f64_attr(hb, attr::PERCENTAGE), 25.0);
    }
    // None went through the layer's own provider.
    assert!(heartbeats(&otel.spans()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 8. Over the wire: OTLP/gRPC to an in-test receiver
// ---------------------------------------------------------------------------------------------

mod wire {
    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
        TraceService, TraceServiceServer,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::Span;

    /// Stores every request it gets.
    pub struct Receiver(pub Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

    #[tonic::async_trait]
    impl TraceService for Receiver {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            self.0.lock().unwrap().push(request.into_inner());
            Ok(tonic::Response::new(ExportTraceServiceResponse {
                partial_success: None,
            }))
        }
    }

    pub fn server(
        store: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    ) -> TraceServiceServer<Receiver> {
        TraceServiceServer::new(Receiver(store))
    }

    pub fn value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v: &AnyValue| v.value.as_ref())
    }

    #[track_caller]
    pub fn by_progress_name<'a>(spans: &'a [Span], name: &str) -> &'a Span {
        let want = any_value::Value::StringValue(name.to_string());
        let found: Vec<_> = spans
            .iter()
            .filter(|s| {
                value(&s.attributes, tracing_progress::otel::attributes::NAME) == Some(&want)
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one received span named {name:?}; received {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        found[0]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_receiver_gets_progress_attributes_links_and_errors() {
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

    let received = Arc::new(Mutex::new(Vec::new()));
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .expect("bind a loopback port");
    let addr = incoming.local_addr().expect("local addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(wire::server(received.clone()))
            .serve_with_incoming(incoming),
    );

    // Built inside the runtime: tonic's lazy channel spawns onto it.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{addr}"))
        .build()
        .expect("tonic exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("tracing-progress-otel-test")
                .build(),
        )
        .build();

    // The workload and the (blocking) shutdown run on a plain thread, off the runtime.
    let workload = std::thread::spawn(move || {
        let (progress, _store) = Builder::new()
            .otel(OtelExport::new())
            .build()
            .expect("valid builder");
        let subscriber = tracing_subscriber::registry()
            .with(progress)
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("wire")));
        tracing::subscriber::with_default(subscriber, || {
            let root = info_span!("setlist", progress.level = "setlist", progress.total = 2);
            let _g = root.enter();
            {
                let song = info_span!(
                    "song",
                    progress.level = "song",
                    progress.name = "ok song",
                    progress.total = 5
                );
                let _s = song.enter();
                song.inc(2);
                song.inc(3);
            }
            {
                let song = info_span!(
                    "song",
                    progress.level = "song",
                    progress.name = "bad song",
                    progress.total = 5
                );
                let _s = song.enter();
                song.inc(2);
                song.fail("disk full");
            }
        });
        provider.shutdown()
    });
    let shutdown = tokio::task::spawn_blocking(move || workload.join())
        .await
        .expect("join task")
        .expect("workload thread");
    shutdown.expect("provider shutdown delivers the batch");
    server.abort();

    let requests = received.lock().unwrap().clone();
    assert!(
        !requests.is_empty(),
        "the receiver got at least one request"
    );
    let mut spans = Vec::new();
    for req in &requests {
        for rs in &req.resource_spans {
            let resource = rs.resource.as_ref().expect("a resource");
            assert_eq!(
                wire::value(&resource.attributes, "service.name"),
                Some(&Any::StringValue("tracing-progress-otel-test".into())),
                "service.name on the resource"
            );
            for ss in &rs.scope_spans {
                spans.extend(ss.spans.iter().cloned());
            }
        }
    }
    assert_eq!(spans.len(), 3, "setlist + 2 songs");

    let root = wire::by_progress_name(&spans, "setlist");
    assert_eq!(root.name, "setlist");
    assert!(root.parent_span_id.is_empty(), "the setlist is a root");
    assert_eq!(
        wire::value(&root.attributes, attr::FAILURES_BELOW),
        Some(&Any::IntValue(1))
    );
    let ok = wire::by_progress_name(&spans, "ok song");
    let bad = wire::by_progress_name(&spans, "bad song");
    for song in [ok, bad] {
        assert_eq!(song.name, "song");
        assert_eq!(song.parent_span_id, root.span_id, "parent link");
        assert_eq!(song.trace_id, root.trace_id, "one trace");
    }

    assert_eq!(
        wire::value(&ok.attributes, attr::CURRENT),
        Some(&Any::IntValue(5)),
        "final current as an int"
    );
    assert_eq!(
        wire::value(&ok.attributes, attr::STATUS),
        Some(&Any::StringValue("completed".into()))
    );
    let ok_status = ok.status.clone().unwrap_or_default();
    assert_eq!(ok_status.code, StatusCode::Unset as i32);

    let bad_status = bad.status.clone().expect("a status on the failed song");
    assert_eq!(bad_status.code, StatusCode::Error as i32, "status code 2");
    assert_eq!(bad_status.message, "disk full");
    assert_eq!(
        wire::value(&bad.attributes, attr::CURRENT),
        Some(&Any::IntValue(2))
    );
    assert_eq!(
        wire::value(&bad.attributes, attr::STATUS),
        Some(&Any::StringValue("failed".into()))
    );
    assert!(
        bad.events.iter().any(|e| e.name == "exception"
            && wire::value(&e.attributes, "exception.message")
                == Some(&Any::StringValue("disk full".into()))),
        "exception event over the wire: {:?}",
        bad.events
    );
}
