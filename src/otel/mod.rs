//! OpenTelemetry export (feature `otel`): progress onto the spans `tracing-opentelemetry` exports.
//!
//! The user keeps their own `tracing_opentelemetry::layer()`; this module writes into the
//! OpenTelemetry span that layer keeps for each tracked `tracing` span:
//!
//! * **at close, once**: the node's final progress as attributes in the `tracing_progress.*`
//!   namespace ([`attributes`] lists them). Written once, so repeated updates cannot pile up
//!   duplicate attributes or push the final values past the SDK's attribute limit;
//! * **progress events** named `progress`, at most one per [`OtelExport::event_interval`] per
//!   span and at most [`OtelExport::max_events_per_span`] per span, so a span with a million
//!   updates exports a bounded number of events (tokio-rs/tracing#2500);
//! * **the outcome**, following the OpenTelemetry conventions for errors (below): status,
//!   `error.type` and an `exception` event for a failed node, status and `error.type` for a
//!   cancelled one, nothing for a completed one;
//! * **heartbeats**, on by default for long operations (below), so a running operation can be
//!   found in Jaeger long before it ends;
//! * **log records** (opt-in, [`OtelExport::log_records`]): each `progress` event also as an
//!   OpenTelemetry log record carrying the span's trace and span ids, which a log pipeline
//!   receives at once, not when the span ends (below).
//!
//! # Errors and semantic conventions
//!
//! What a span gets at close follows the node's **final** status, so the rules of the store
//! decide what failed ("Status, roll-up and timing" in the README); an error that a child
//! reported and its parent handled fails the child, not the parent:
//!
//! | node status | span status | `error.type` | `exception` event |
//! |---|---|---|---|
//! | completed | left `Unset` | none | none |
//! | failed | `Error`, description = the error message | see below | yes |
//! | cancelled | `Error`, description `cancelled` | `cancelled` | none |
//!
//! `error.type` of a failed node is the error's own type or category when the failing event
//! names one in an `error.type` (or `exception.type`) field, as in
//! `tracing::error!(error.type = "timeout", "gave up")`; otherwise it is the crate's stable
//! category of where the failure came from: `tracing_progress::event` (an ERROR event,
//! including `#[instrument(err)]`), `tracing_progress::panic` (the span closed while its thread
//! panicked), `tracing_progress::explicit` (`span.fail(..)`), or `_OTHER` when the node failed
//! with no recorded error. The `exception` event's `exception.type` carries the same value,
//! with `exception.message` and `tracing_progress.path` (the names from the root).
//!
//! Checked against the specification and the semantic conventions:
//!
//! * *Set Status* (OpenTelemetry specification, `specification/trace/api.md`): the status
//!   "SHOULD remain unset" except on error; instrumentation libraries "SHOULD NOT set the status
//!   code to `Ok`"; the description "MUST only be used with the `Error` StatusCode". So success
//!   stays `Unset`, and only `Error` carries a description.
//! * *Recording errors* (semantic conventions, `docs/general/recording-errors.md`): when the
//!   operation failed, instrumentation "SHOULD set the span status code to `Error`", "SHOULD
//!   set the `error.type` attribute" and SHOULD set the description (e.g. an exception
//!   message); the status "MUST be left unset if the instrumented operation has ended without
//!   any errors"; "Errors that were retried or handled (allowing an operation to complete
//!   gracefully) SHOULD NOT be recorded on spans" describing that operation. A cancelled node
//!   did not complete its work: it is recorded as failed with the category `cancelled`.
//! * *`error.type`* (semantic conventions registry, `docs/registry/attributes/error.md`,
//!   stable): "SHOULD be predictable, and SHOULD have low cardinality"; "If the operation has
//!   completed successfully, instrumentations SHOULD NOT set `error.type`"; `_OTHER` is the
//!   fallback "when the instrumentation doesn't define a custom value"; "Instrumentations
//!   SHOULD document the list of errors they report" (the list above).
//! * *Exceptions on spans* (semantic conventions, `docs/exceptions/exceptions-spans.md`,
//!   stable): "The event name MUST be `exception`", with `exception.type` and
//!   `exception.message`. The newer *Recording errors* text marks recording errors as span
//!   events "NOT RECOMMENDED" (in favour of status + `error.type`, and logs); Jaeger shows span
//!   events as a span's logs, where people look for the error, so the event stays on by
//!   default: [`OtelExport::exception_events(false)`](OtelExport::exception_events) leaves it
//!   out.
//!
//! `tracing-opentelemetry` has rules of its own that this module does not undo: an ERROR event
//! inside a span sets that span's status to `Error` (and `#[instrument(err)]` adds its own
//! `exception` event with `exception.message`). The SDK orders `Ok > Error > Unset` and ignores
//! lower statuses, so a status cannot be set back to `Unset`; today every ERROR event also
//! fails the node, so the two agree.
//!
//! # Running operations: heartbeats
//!
//! OpenTelemetry exports a span when it ends, so without help a long operation stays
//! invisible in Jaeger until its root closes. Heartbeats (on by default) fix that for long
//! operations: once an operation has been running for [`OtelExport::heartbeat_after`]
//! (default 5 s), a background thread exports a short [`HEARTBEAT_SPAN`] span under the
//! operation's root, and again every [`OtelExport::heartbeat_interval`] (default 10 s) until it
//! ends. Each carries the operation's current progress and its active path
//! ([`attributes::ACTIVE_PATH`], e.g. `setlist "My Setlist" 2/3 › song 3/4 audio2.wav (40%)`),
//! so the trace shows up in Jaeger's search while it runs, with the spans that have already
//! ended (its root arrives at the end).
//!
//! Cost: nothing for an operation shorter than `heartbeat_after`; for a longer one, one span
//! of about ten attributes per interval (360 an hour at the default) and one snapshot of the
//! operation's tree per beat, taken on the heartbeat thread. One thread per layer, started at
//! the first operation and parked while no operation is due. While the run goes on, Jaeger
//! shows the trace without its root (its name is taken from the earliest span whose parent has
//! not arrived).
//!
//! By default heartbeats go through the **global** tracer provider
//! (`opentelemetry::global::set_tracer_provider`), looked up at each beat under the scope
//! `tracing-progress`; with no global provider they are no-ops. Give a tracer of your own with
//! [`OtelExport::heartbeat`], or turn them off with [`OtelExport::without_heartbeat`].
//!
//! # Progress as log records
//!
//! [`OtelExport::log_records`] gives a `Logger` (from an OpenTelemetry `LoggerProvider`, e.g.
//! the SDK's): every `progress` span event is then also emitted as a log record, at the same
//! moments (same [`event_interval`](OtelExport::event_interval) and
//! [`max_events_per_span`](OtelExport::max_events_per_span)). Each record has the event name
//! [`PROGRESS_LOG_EVENT`], severity `INFO`, a body like `progress 60/100 (60%)`, the
//! attributes `tracing_progress.current` / `total` / `percentage`, and the **trace id, span id
//! and trace flags of the span** it reports on, so a backend correlates it with the trace. Off by
//! default: it doubles the progress data, and most users look at spans.
//!
//! # Layer order
//!
//! Layer order matters: the progress layer must be added **before** the OpenTelemetry layer
//! (`registry().with(progress).with(otel)`), because a layer's `on_close` runs before those
//! added after it, and the OpenTelemetry layer ends and exports the span in its `on_close`. In
//! the wrong order our attributes would be silently lost, so the layer detects it at the first
//! tracked span and says so once on stderr (it never emits `tracing` events of its own), and
//! [`StoreStats::warnings`](crate::StoreStats::warnings) carries [`LAYER_ORDER_WARNING`].
//!
//! This module is a leaf: it implements the crate's exporter seam (`crate::export`) and reads
//! only the [`Store`] handle and the model.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger, Severity};
use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanKind, Status as OtelStatus, TraceContextExt, Tracer,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use parking_lot::{Condvar, Mutex, MutexGuard};
use tracing_core::Dispatch;
use tracing_core::dispatcher::WeakDispatch;
use tracing_core::span::Id;

use crate::Store;
use crate::export::{ClosedNode, CounterEvents, Exporter, NodeRef};
use crate::model::{ErrorInfo, OperationId, ProgressState, Status};

/// [`SetupWarning::code`](crate::SetupWarning::code) of an OpenTelemetry layer added before
/// the progress layer (progress attributes would be lost).
pub const LAYER_ORDER_WARNING: &str = "otel.layer_order";

/// Names of the attributes written at close (all in the `tracing_progress.` namespace).
pub mod attributes {
    /// `completed`, `failed` or `cancelled`.
    pub const STATUS: &str = "tracing_progress.status";
    /// Units done (int).
    pub const CURRENT: &str = "tracing_progress.current";
    /// Units expected (int), when known.
    pub const TOTAL: &str = "tracing_progress.total";
    /// Percent complete (double, rounded to two decimals), when known.
    pub const PERCENTAGE: &str = "tracing_progress.percentage";
    /// Level type (`song`, `block`, ...).
    pub const LEVEL: &str = "tracing_progress.level";
    /// Display name of the node.
    pub const NAME: &str = "tracing_progress.name";
    /// Store id of the node (int).
    pub const NODE_ID: &str = "tracing_progress.node_id";
    /// Store id of the operation (int).
    pub const OPERATION_ID: &str = "tracing_progress.operation_id";
    /// Duration from first enter to close, ms (double).
    pub const DURATION_MS: &str = "tracing_progress.duration_ms";
    /// Time entered, ms (double).
    pub const BUSY_MS: &str = "tracing_progress.busy_ms";
    /// Time alive but not entered, ms (double).
    pub const IDLE_MS: &str = "tracing_progress.idle_ms";
    /// Linear estimate of the time that was still needed when a node ended unfinished, s (double).
    pub const ETA_AT_CLOSE_S: &str = "tracing_progress.eta_at_close_s";
    /// Number of distinct failures below the node (int), when any.
    pub const FAILURES_BELOW: &str = "tracing_progress.failures_below";
    /// `true` on a node that completed with failures below it (its status stays Unset).
    pub const WITH_FAILURES: &str = "tracing_progress.with_failures";
    /// Whether the operation was asked to cancel (bool).
    pub const CANCEL_REQUESTED: &str = "tracing_progress.cancel_requested";
    /// Unit of current/total.
    pub const UNIT: &str = "tracing_progress.unit";
    /// Path of names from the root (on `exception` events).
    pub const PATH: &str = "tracing_progress.path";
    /// The operation's active path (on heartbeats), as [`view::active_path`](crate::view::active_path)
    /// writes it.
    pub const ACTIVE_PATH: &str = "tracing_progress.active_path";
    /// Time since the operation started, ms (double; on heartbeats).
    pub const ELAPSED_MS: &str = "tracing_progress.elapsed_ms";
    /// Number of this heartbeat within its operation, from 1 (int; on heartbeats).
    pub const HEARTBEAT_SEQ: &str = "tracing_progress.heartbeat_seq";
    /// Which attempt of its unit the span was (int), on a retried node or one declared an
    /// attempt (`progress.attempt`); each attempt is its own span, the earlier ones ended
    /// with their own status.
    pub const ATTEMPT: &str = "tracing_progress.attempt";
    /// Earlier attempts of the unit that failed (int), on a retried node.
    pub const ATTEMPTS_FAILED_BEFORE: &str = "tracing_progress.attempts_failed_before";
    /// The OpenTelemetry semantic-conventions attribute `error.type`, on failed and cancelled
    /// spans (values: see [the module docs](crate::otel#errors-and-semantic-conventions)).
    pub const ERROR_TYPE: &str = "error.type";
}

/// Name of the throttled progress events.
pub const PROGRESS_EVENT: &str = "progress";
/// Name of the heartbeat spans.
pub const HEARTBEAT_SPAN: &str = "progress.heartbeat";
/// Event name of the progress log records ([`OtelExport::log_records`]).
pub const PROGRESS_LOG_EVENT: &str = "tracing_progress.progress";
/// `error.type` of a cancelled span.
pub const CANCELLED_ERROR_TYPE: &str = "cancelled";
/// `error.type` of a span that failed with no recorded error (the conventions' fallback).
pub const OTHER_ERROR_TYPE: &str = "_OTHER";
/// Instrumentation scope of heartbeats made through the global tracer provider.
pub const HEARTBEAT_SCOPE: &str = "tracing-progress";

/// Default of [`OtelExport::heartbeat_after`].
const HEARTBEAT_AFTER: Duration = Duration::from_secs(5);
/// Default of [`OtelExport::heartbeat_interval`].
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Where heartbeat spans are made.
#[derive(Clone)]
enum HeartbeatTracer {
    /// The global tracer provider, looked up at each beat.
    Global,
    /// A tracer given to [`OtelExport::heartbeat`].
    Given(Arc<BoxedTracer>),
}

#[derive(Clone)]
struct Heartbeat {
    tracer: HeartbeatTracer,
    after: Duration,
    interval: Duration,
}

/// How progress is exported to OpenTelemetry; give it to
/// [`Builder::otel`](crate::Builder::otel).
///
/// | setting | default |
/// |---|---|
/// | [`event_interval`](OtelExport::event_interval) | 1 s |
/// | [`max_events_per_span`](OtelExport::max_events_per_span) | 32 |
/// | [`heartbeat_after`](OtelExport::heartbeat_after) | 5 s |
/// | [`heartbeat_interval`](OtelExport::heartbeat_interval) | 10 s |
/// | heartbeat tracer ([`heartbeat`](OtelExport::heartbeat)) | the global tracer provider's |
/// | [`exception_events`](OtelExport::exception_events) | on |
/// | [`log_records`](OtelExport::log_records) | off |
///
/// ```
/// use std::time::Duration;
/// use tracing_progress::OtelExport;
/// let export = OtelExport::new()
///     .event_interval(Duration::from_millis(250))
///     .max_events_per_span(16)
///     .heartbeat_after(Duration::from_secs(2));
/// let (layer, store) = tracing_progress::Builder::new()
///     .otel(export)
///     .build::<tracing_subscriber::Registry>()
///     .unwrap();
/// ```
#[derive(Clone)]
pub struct OtelExport {
    event_interval: Duration,
    max_events: u32,
    heartbeat: Option<Heartbeat>,
    exception_events: bool,
    logs: Option<LogSink>,
}

/// One progress report, as the log-record sink gets it.
struct ProgressLog<'a> {
    span: &'a SpanContext,
    current: u64,
    total: Option<u64>,
    percentage: Option<f64>,
}

/// Emits progress log records through the logger given to [`OtelExport::log_records`].
type LogSink = Arc<dyn Fn(&ProgressLog<'_>) + Send + Sync>;

impl fmt::Debug for OtelExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let heartbeat = self.heartbeat.as_ref().map(|h| {
            let tracer = match h.tracer {
                HeartbeatTracer::Global => "global",
                HeartbeatTracer::Given(_) => "given",
            };
            (tracer, h.after, h.interval)
        });
        f.debug_struct("OtelExport")
            .field("event_interval", &self.event_interval)
            .field("max_events_per_span", &self.max_events)
            .field("heartbeat", &heartbeat)
            .field("exception_events", &self.exception_events)
            .field("log_records", &self.logs.is_some())
            .finish()
    }
}

impl Default for OtelExport {
    fn default() -> Self {
        Self::new()
    }
}

impl OtelExport {
    /// Defaults as in the table above.
    pub fn new() -> Self {
        OtelExport {
            event_interval: Duration::from_secs(1),
            max_events: 32,
            heartbeat: Some(Heartbeat {
                tracer: HeartbeatTracer::Global,
                after: HEARTBEAT_AFTER,
                interval: HEARTBEAT_INTERVAL,
            }),
            exception_events: true,
            logs: None,
        }
    }

    /// At most one `progress` event per span per interval.
    pub fn event_interval(mut self, interval: Duration) -> Self {
        self.event_interval = interval;
        self
    }

    /// At most this many `progress` events per span (0 turns them off).
    pub fn max_events_per_span(mut self, n: u32) -> Self {
        self.max_events = n;
        self
    }

    fn heartbeat_mut(&mut self) -> &mut Heartbeat {
        self.heartbeat.get_or_insert(Heartbeat {
            tracer: HeartbeatTracer::Global,
            after: HEARTBEAT_AFTER,
            interval: HEARTBEAT_INTERVAL,
        })
    }

    /// Makes heartbeats through `tracer` (usually `provider.tracer("tracing-progress")`)
    /// instead of the global tracer provider, every `interval` (after
    /// [`heartbeat_after`](Self::heartbeat_after)); turns them on if they were off.
    pub fn heartbeat<T>(mut self, tracer: T, interval: Duration) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        let h = self.heartbeat_mut();
        h.tracer = HeartbeatTracer::Given(Arc::new(BoxedTracer::new(Box::new(tracer))));
        h.interval = interval;
        self
    }

    /// How long an operation runs before its first heartbeat (0: at once). Short operations
    /// get none. Turns heartbeats on if they were off.
    pub fn heartbeat_after(mut self, after: Duration) -> Self {
        self.heartbeat_mut().after = after;
        self
    }

    /// Time between an operation's heartbeats (must not be 0). Turns heartbeats on if they
    /// were off.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_mut().interval = interval;
        self
    }

    /// No heartbeats: a running operation appears in Jaeger only as its spans end.
    pub fn without_heartbeat(mut self) -> Self {
        self.heartbeat = None;
        self
    }

    /// Whether a failed span also gets an `exception` event (default on; see
    /// [errors and semantic conventions](crate::otel#errors-and-semantic-conventions)).
    /// Status and `error.type` are set either way.
    pub fn exception_events(mut self, on: bool) -> Self {
        self.exception_events = on;
        self
    }

    /// Also emits each `progress` event as an OpenTelemetry log record through `logger`
    /// (e.g. `logger_provider.logger("tracing-progress")`), with the span's trace context;
    /// see [progress as log records](crate::otel#progress-as-log-records). Off by default.
    pub fn log_records<L>(mut self, logger: L) -> Self
    where
        L: Logger + Send + Sync + 'static,
    {
        self.logs = Some(Arc::new(move |p: &ProgressLog<'_>| {
            let mut record = logger.create_log_record();
            record.set_event_name(PROGRESS_LOG_EVENT);
            record.set_timestamp(std::time::SystemTime::now());
            record.set_severity_number(Severity::Info);
            record.set_severity_text("INFO");
            let body = match (p.total, p.percentage) {
                (Some(t), Some(pct)) => format!("progress {}/{t} ({pct}%)", p.current),
                (Some(t), None) => format!("progress {}/{t}", p.current),
                _ => format!("progress {}", p.current),
            };
            record.set_body(AnyValue::from(body));
            record.add_attribute(attributes::CURRENT, int(p.current));
            if let Some(t) = p.total {
                record.add_attribute(attributes::TOTAL, int(t));
            }
            if let Some(pct) = p.percentage {
                record.add_attribute(attributes::PERCENTAGE, pct);
            }
            record.set_trace_context(
                p.span.trace_id(),
                p.span.span_id(),
                Some(p.span.trace_flags()),
            );
            logger.emit(record);
        }));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self
            .heartbeat
            .as_ref()
            .is_some_and(|h| h.interval.is_zero())
        {
            return Err("OtelExport::heartbeat needs a non-zero interval".into());
        }
        Ok(())
    }
}

/// The OpenTelemetry exporter behind [`Builder::otel`](crate::Builder::otel).
struct OtelExporter {
    config: OtelExport,
    dispatch: OnceLock<WeakDispatch>,
    order_checked: AtomicBool,
    store: Store,
    /// Running operations' roots, for heartbeats (only with heartbeats on).
    beats: Option<Arc<Beats>>,
}

/// What the heartbeat thread shares with the exporter.
struct Beats {
    state: Mutex<BeatState>,
    wake: Condvar,
    spawned: AtomicBool,
}

#[derive(Default)]
struct BeatState {
    roots: HashMap<OperationId, Beat>,
    /// What the thread is waiting for, so that starting an operation wakes it only when that
    /// operation is due before the thread would wake anyway.
    parked: Parked,
    /// The exporter is gone: the thread ends.
    closed: bool,
}

#[derive(Clone, Copy, Default)]
enum Parked {
    /// Not waiting (not started, or exporting): it looks at the schedule before it waits.
    #[default]
    No,
    /// Waiting until the next beat is due.
    Until(Instant),
    /// Waiting for an operation to start.
    Forever,
}

/// One running operation's heartbeat schedule.
struct Beat {
    root: SpanContext,
    next: Instant,
    seq: i64,
}

/// The exporter for `config`, reporting setup problems to `store`.
pub(crate) fn exporter(config: OtelExport, store: Store) -> Arc<dyn Exporter> {
    let beats = config.heartbeat.is_some().then(|| {
        Arc::new(Beats {
            state: Mutex::new(BeatState::default()),
            wake: Condvar::new(),
            spawned: AtomicBool::new(false),
        })
    });
    Arc::new(OtelExporter {
        config,
        dispatch: OnceLock::new(),
        order_checked: AtomicBool::new(false),
        store,
        beats,
    })
}

impl Drop for OtelExporter {
    fn drop(&mut self) {
        if let Some(beats) = &self.beats {
            beats.state.lock().closed = true;
            beats.wake.notify_all();
        }
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A percentage to two decimals, so that Jaeger shows `55`, not `55.00000000000001`.
fn pct(p: f64) -> f64 {
    (p * 100.0).round() / 100.0
}

impl OtelExporter {
    fn context(&self, id: &Id) -> Option<Context> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        tracing_opentelemetry::get_otel_context(id, &dispatch)
    }

    /// The root's span context, kept for heartbeats.
    fn span_context(&self, id: &Id) -> Option<SpanContext> {
        let cx = self.context(id)?;
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    /// Schedules heartbeats for an operation whose root just started; starts the thread the
    /// first time.
    fn watch(&self, beats: &Arc<Beats>, heartbeat: &Heartbeat, id: OperationId, root: SpanContext) {
        // A delay too long to represent means never.
        let Some(next) = Instant::now().checked_add(heartbeat.after) else {
            return;
        };
        let wake = {
            let mut state = beats.state.lock();
            state.roots.insert(id, Beat { root, next, seq: 0 });
            match state.parked {
                Parked::No => false,
                Parked::Until(at) => next < at,
                Parked::Forever => true,
            }
        };
        if !beats.spawned.swap(true, Ordering::AcqRel) {
            spawn_heartbeat(
                Arc::downgrade(beats),
                self.store.clone(),
                heartbeat.tracer.clone(),
                heartbeat.interval,
            );
        } else if wake {
            beats.wake.notify_all();
        }
    }
}

/// `error.type` (and `exception.type`) of a failed node.
fn error_type(error: Option<&ErrorInfo>) -> String {
    let Some(e) = error else {
        return OTHER_ERROR_TYPE.to_string();
    };
    ["error.type", "exception.type"]
        .iter()
        .find_map(|k| e.fields.get(k).and_then(|v| v.as_str()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map_or_else(
            || format!("tracing_progress::{}", e.origin.as_str()),
            str::to_string,
        )
}

impl Exporter for OtelExporter {
    fn counter_events(&self) -> Option<CounterEvents> {
        (self.config.max_events > 0).then_some(CounterEvents {
            interval: self.config.event_interval,
            max_per_span: self.config.max_events,
        })
    }

    fn wants_closed_nodes(&self) -> bool {
        true
    }

    fn register_dispatch(&self, dispatch: &Dispatch) {
        let _ = self.dispatch.set(dispatch.downgrade());
    }

    /// At the first tracked span: if the OpenTelemetry layer already has data for a span we
    /// are just creating, it runs before us and would end spans before we write to them.
    fn node_created(&self, span: &Id, _node: NodeRef) {
        if self.order_checked.swap(true, Ordering::Relaxed) {
            return;
        }
        if self.context(span).is_some() {
            self.store.warn_once(
                LAYER_ORDER_WARNING,
                "the OpenTelemetry layer is added before the progress layer, so progress \
                 attributes would be lost when spans close. Add the progress layer first: \
                 registry().with(progress).with(otel_layer)",
            );
        }
    }

    fn node_started(&self, span: &Id, node: NodeRef) {
        if node.is_root
            && let (Some(beats), Some(heartbeat)) = (&self.beats, &self.config.heartbeat)
            && let Some(sc) = self.span_context(span)
        {
            self.watch(beats, heartbeat, node.operation_id, sc);
        }
    }

    /// Adds a `progress` event to the span's OpenTelemetry span (and a log record, if on).
    fn counters_changed(&self, span: &Id, current: u64, total: Option<u64>) {
        let Some(cx) = self.context(span) else { return };
        let percentage = total
            .filter(|t| *t > 0)
            .map(|t| pct((current as f64 / t as f64).min(1.0) * 100.0));
        let mut attrs = vec![KeyValue::new(attributes::CURRENT, int(current))];
        if let Some(total) = total {
            attrs.push(KeyValue::new(attributes::TOTAL, int(total)));
        }
        if let Some(p) = percentage {
            attrs.push(KeyValue::new(attributes::PERCENTAGE, p));
        }
        let otel_span = cx.span();
        otel_span.add_event(PROGRESS_EVENT, attrs);
        if let Some(logs) = &self.config.logs {
            logs(&ProgressLog {
                span: otel_span.span_context(),
                current,
                total,
                percentage,
            });
        }
    }

    /// Writes the final values, status, `error.type` and exception onto the span before it is
    /// exported.
    fn node_closed(&self, span: &Id, closed: ClosedNode<'_>) {
        let Some(cx) = self.context(span) else { return };
        let r = closed.level;
        let span = cx.span();
        let mut attrs = vec![
            KeyValue::new(attributes::STATUS, r.status.as_str()),
            KeyValue::new(attributes::CURRENT, int(r.current)),
            KeyValue::new(attributes::LEVEL, r.level_type.clone()),
            KeyValue::new(attributes::NAME, r.name.clone()),
            KeyValue::new(attributes::NODE_ID, int(r.id.as_u64())),
            KeyValue::new(attributes::OPERATION_ID, int(closed.operation_id.as_u64())),
            KeyValue::new(attributes::DURATION_MS, r.timing.elapsed_us as f64 / 1e3),
            KeyValue::new(attributes::BUSY_MS, r.timing.busy_us as f64 / 1e3),
            KeyValue::new(attributes::IDLE_MS, r.timing.idle_us as f64 / 1e3),
        ];
        if let Some(t) = r.total {
            attrs.push(KeyValue::new(attributes::TOTAL, int(t)));
        }
        if let Some(p) = r.percentage {
            attrs.push(KeyValue::new(attributes::PERCENTAGE, pct(p)));
            // A node that ended before finishing: how long the rest would have taken.
            if r.status != Status::Completed && p > 0.0 && p < 100.0 {
                let eta_s = r.timing.elapsed_us as f64 / 1e6 * (100.0 - p) / p;
                attrs.push(KeyValue::new(attributes::ETA_AT_CLOSE_S, eta_s));
            }
        }
        if let Some(unit) = &r.unit {
            attrs.push(KeyValue::new(attributes::UNIT, unit.clone()));
        }
        let failures_below = r.failures_below().map_or(0, |f| f.count);
        if failures_below > 0 {
            attrs.push(KeyValue::new(
                attributes::FAILURES_BELOW,
                int(failures_below),
            ));
        }
        if r.with_failures {
            attrs.push(KeyValue::new(attributes::WITH_FAILURES, true));
        }
        if let Some(a) = r.attempts() {
            attrs.push(KeyValue::new(attributes::ATTEMPT, i64::from(a.number)));
            let failed = a.failed_before();
            if failed > 0 {
                attrs.push(KeyValue::new(
                    attributes::ATTEMPTS_FAILED_BEFORE,
                    i64::from(failed),
                ));
            }
        }
        if closed.cancel_requested {
            attrs.push(KeyValue::new(attributes::CANCEL_REQUESTED, true));
        }
        // The outcome follows the node's final status (see the module docs).
        let outcome = match r.status {
            Status::Failed => {
                let error = r.error.as_deref();
                let kind = error_type(error);
                let message = error.map_or_else(|| "failed".to_string(), |e| e.message.to_string());
                attrs.push(KeyValue::new(attributes::ERROR_TYPE, kind.clone()));
                if self.config.exception_events {
                    let path = error.map(|e| e.path.join(" > ")).unwrap_or_default();
                    span.add_event(
                        "exception",
                        vec![
                            KeyValue::new("exception.type", kind),
                            KeyValue::new("exception.message", message.clone()),
                            KeyValue::new(attributes::PATH, path),
                        ],
                    );
                }
                Some(OtelStatus::error(message))
            }
            Status::Cancelled => {
                attrs.push(KeyValue::new(attributes::ERROR_TYPE, CANCELLED_ERROR_TYPE));
                Some(OtelStatus::error(CANCELLED_ERROR_TYPE))
            }
            _ => None,
        };
        span.set_attributes(attrs);
        if let Some(status) = outcome {
            span.set_status(status);
        }
    }

    fn operation_finished(&self, state: &Arc<ProgressState>) {
        if let Some(beats) = &self.beats {
            beats.state.lock().roots.remove(&state.id);
        }
    }
}

/// The heartbeats' instrumentation scope, for the global tracer provider.
fn heartbeat_scope() -> InstrumentationScope {
    InstrumentationScope::builder(HEARTBEAT_SCOPE)
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// Exports heartbeats until the exporter is dropped; parked while no operation is due. Runs
/// with no `tracing` subscriber, so nothing it does (or the SDK does for it) can feed back
/// into the layer.
fn spawn_heartbeat(beats: Weak<Beats>, store: Store, tracer: HeartbeatTracer, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tracing-progress-heartbeat".into())
        .spawn(move || {
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            let Some(beats) = beats.upgrade() else { return };
            let mut state = beats.state.lock();
            loop {
                if state.closed {
                    return;
                }
                let now = Instant::now();
                // A slow round skips beats rather than bursting to catch up; an interval too
                // long to represent means one beat only.
                let next = now.checked_add(interval);
                let mut due = Vec::new();
                state.roots.retain(|id, b| {
                    if b.next > now {
                        return true;
                    }
                    b.seq += 1;
                    due.push((*id, b.root.clone(), b.seq));
                    next.map(|n| b.next = n).is_some()
                });
                if due.is_empty() {
                    match state.roots.values().map(|b| b.next).min() {
                        Some(at) => {
                            state.parked = Parked::Until(at);
                            beats.wake.wait_until(&mut state, at);
                        }
                        None => {
                            state.parked = Parked::Forever;
                            beats.wake.wait(&mut state);
                        }
                    }
                    state.parked = Parked::No;
                    continue;
                }
                MutexGuard::unlocked(&mut state, || {
                    for (id, root, seq) in due {
                        beat(&store, &tracer, id, root, seq);
                    }
                });
            }
        });
    // Without a thread there are no heartbeats; everything else keeps working.
    drop(spawned);
}

/// Exports one heartbeat of a running operation under its root.
fn beat(store: &Store, tracer: &HeartbeatTracer, id: OperationId, root: SpanContext, seq: i64) {
    let Some(state) = store.get(id) else { return };
    if state.status != Status::Running {
        return;
    }
    let mut attrs = vec![
        KeyValue::new(attributes::OPERATION_ID, int(state.id.as_u64())),
        KeyValue::new(attributes::STATUS, state.status.as_str()),
        KeyValue::new(attributes::LEVEL, state.root.level_type.clone()),
        KeyValue::new(attributes::NAME, state.name.clone()),
        KeyValue::new(attributes::CURRENT, int(state.root.current)),
        KeyValue::new(
            attributes::ELAPSED_MS,
            state.root.timing.elapsed_us as f64 / 1e3,
        ),
        KeyValue::new(attributes::ACTIVE_PATH, crate::view::active_path(&state)),
        KeyValue::new(attributes::HEARTBEAT_SEQ, seq),
    ];
    if let Some(t) = state.root.total {
        attrs.push(KeyValue::new(attributes::TOTAL, int(t)));
    }
    if let Some(p) = state.root.percentage {
        attrs.push(KeyValue::new(attributes::PERCENTAGE, pct(p)));
    }
    let parent = Context::new().with_remote_span_context(root);
    let builder = SpanBuilder::from_name(HEARTBEAT_SPAN)
        .with_kind(SpanKind::Internal)
        .with_attributes(attrs);
    let mut span = match tracer {
        HeartbeatTracer::Given(t) => t.build_with_context(builder, &parent),
        HeartbeatTracer::Global => {
            global::tracer_with_scope(heartbeat_scope()).build_with_context(builder, &parent)
        }
    };
    opentelemetry::trace::Span::end(&mut span);
}
