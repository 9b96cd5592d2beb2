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
//! * **failures** as span status `Error` with the message as description, plus an `exception`
//!   event with `exception.type` and `exception.message` (OTel semantic conventions);
//!   **cancellation** as status `Error` with description `cancelled` and
//!   `tracing_progress.status = "cancelled"`;
//! * **heartbeats** (opt-in, [`OtelExport::heartbeat`]): `tracing-opentelemetry` exports a
//!   span only when it closes, so a long operation is invisible in Jaeger until it ends. A
//!   background thread exports a short `progress.heartbeat` span under the operation's root
//!   every interval, carrying the operation's current progress. The trace shows up (with its
//!   root still missing) while the work runs. Trade-off: one extra span per operation per
//!   interval, and the trace looks incomplete until the root closes.
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
use std::time::Duration;

use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    SpanBuilder, SpanContext, Status as OtelStatus, TraceContextExt, Tracer,
};
use opentelemetry::{Context, KeyValue};
use parking_lot::Mutex;
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
    /// Percent complete (double), when known.
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
    /// Number of failed descendants (int), when any.
    pub const FAILURES_BELOW: &str = "tracing_progress.failures_below";
    /// Whether the operation was asked to cancel (bool).
    pub const CANCEL_REQUESTED: &str = "tracing_progress.cancel_requested";
    /// Unit of current/total.
    pub const UNIT: &str = "tracing_progress.unit";
    /// Path of names from the root (on `exception` events).
    pub const PATH: &str = "tracing_progress.path";
}

/// Name of the throttled progress events.
pub const PROGRESS_EVENT: &str = "progress";
/// Name of the heartbeat spans.
pub const HEARTBEAT_SPAN: &str = "progress.heartbeat";

/// How progress is exported to OpenTelemetry; give it to
/// [`Builder::otel`](crate::Builder::otel).
///
/// | setting | default |
/// |---|---|
/// | [`event_interval`](OtelExport::event_interval) | 1 s |
/// | [`max_events_per_span`](OtelExport::max_events_per_span) | 32 |
/// | [`heartbeat`](OtelExport::heartbeat) | off |
///
/// ```
/// use std::time::Duration;
/// use tracing_progress::OtelExport;
/// let export = OtelExport::new()
///     .event_interval(Duration::from_millis(250))
///     .max_events_per_span(16);
/// let (layer, store) = tracing_progress::Builder::new()
///     .otel(export)
///     .build::<tracing_subscriber::Registry>()
///     .unwrap();
/// ```
#[derive(Clone)]
pub struct OtelExport {
    event_interval: Duration,
    max_events: u32,
    heartbeat: Option<(Arc<BoxedTracer>, Duration)>,
}

impl fmt::Debug for OtelExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelExport")
            .field("event_interval", &self.event_interval)
            .field("max_events_per_span", &self.max_events)
            .field("heartbeat", &self.heartbeat.as_ref().map(|(_, d)| d))
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
            heartbeat: None,
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

    /// Exports a `progress.heartbeat` span under each running operation's root every
    /// `interval`, through `tracer` (usually `provider.tracer("tracing-progress")`).
    pub fn heartbeat<T>(mut self, tracer: T, interval: Duration) -> Self
    where
        T: Tracer + Send + Sync + 'static,
        T::Span: Send + Sync + 'static,
    {
        self.heartbeat = Some((Arc::new(BoxedTracer::new(Box::new(tracer))), interval));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.heartbeat.as_ref().is_some_and(|(_, d)| d.is_zero()) {
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
    /// Span contexts of running operations' roots, for heartbeats (only with heartbeats on).
    roots: Mutex<HashMap<OperationId, SpanContext>>,
}

/// The exporter for `config`, reporting setup problems to `store`.
pub(crate) fn exporter(config: OtelExport, store: Store) -> Arc<dyn Exporter> {
    let exporter = Arc::new(OtelExporter {
        config,
        dispatch: OnceLock::new(),
        order_checked: AtomicBool::new(false),
        store,
        roots: Mutex::new(HashMap::new()),
    });
    if let Some((tracer, interval)) = exporter.config.heartbeat.clone() {
        spawn_heartbeat(Arc::downgrade(&exporter), tracer, interval);
    }
    exporter
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
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
            && self.config.heartbeat.is_some()
            && let Some(sc) = self.span_context(span)
        {
            self.roots.lock().insert(node.operation_id, sc);
        }
    }

    /// Adds a `progress` event to the span's OpenTelemetry span.
    fn counters_changed(&self, span: &Id, current: u64, total: Option<u64>) {
        let Some(cx) = self.context(span) else { return };
        let mut attrs = vec![KeyValue::new(attributes::CURRENT, int(current))];
        if let Some(total) = total {
            attrs.push(KeyValue::new(attributes::TOTAL, int(total)));
            if total > 0 {
                let pct = (current as f64 / total as f64).min(1.0) * 100.0;
                attrs.push(KeyValue::new(attributes::PERCENTAGE, pct));
            }
        }
        cx.span().add_event(PROGRESS_EVENT, attrs);
    }

    /// Writes the final values, status and exception onto the span before it is exported.
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
            attrs.push(KeyValue::new(attributes::PERCENTAGE, p));
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
        if closed.cancel_requested {
            attrs.push(KeyValue::new(attributes::CANCEL_REQUESTED, true));
        }
        span.set_attributes(attrs);
        match r.status {
            Status::Failed => {
                let (message, kind, path) = match r.error.as_deref() {
                    Some(e) => (
                        e.message.to_string(),
                        format!("tracing_progress::{}", origin_name(e)),
                        e.path.join(" > "),
                    ),
                    None => (
                        "failed".to_string(),
                        "tracing_progress::event".to_string(),
                        String::new(),
                    ),
                };
                span.add_event(
                    "exception",
                    vec![
                        KeyValue::new("exception.type", kind),
                        KeyValue::new("exception.message", message.clone()),
                        KeyValue::new(attributes::PATH, path),
                    ],
                );
                span.set_status(OtelStatus::error(message));
            }
            Status::Cancelled => span.set_status(OtelStatus::error("cancelled")),
            _ => {}
        }
    }

    fn operation_finished(&self, state: &Arc<ProgressState>) {
        if self.config.heartbeat.is_some() {
            self.roots.lock().remove(&state.id);
        }
    }
}

fn origin_name(e: &ErrorInfo) -> &'static str {
    e.origin.as_str()
}

/// Exports heartbeats until the exporter is dropped. Runs with no `tracing` subscriber, so
/// nothing it does (or the SDK does for it) can feed back into the layer.
fn spawn_heartbeat(exporter: Weak<OtelExporter>, tracer: Arc<BoxedTracer>, interval: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tracing-progress-heartbeat".into())
        .spawn(move || {
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            let mut seq: i64 = 0;
            loop {
                std::thread::sleep(interval);
                let Some(exporter) = exporter.upgrade() else {
                    return;
                };
                let roots: Vec<_> = exporter
                    .roots
                    .lock()
                    .iter()
                    .map(|(id, sc)| (*id, sc.clone()))
                    .collect();
                for (id, root) in roots {
                    let Some(state) = exporter.store.get(id) else {
                        continue;
                    };
                    seq += 1;
                    let mut attrs = vec![
                        KeyValue::new(attributes::OPERATION_ID, int(state.id.as_u64())),
                        KeyValue::new(attributes::STATUS, state.status.as_str()),
                        KeyValue::new(attributes::CURRENT, int(state.root.current)),
                        KeyValue::new("tracing_progress.heartbeat_seq", seq),
                    ];
                    if let Some(t) = state.root.total {
                        attrs.push(KeyValue::new(attributes::TOTAL, int(t)));
                    }
                    if let Some(p) = state.root.percentage {
                        attrs.push(KeyValue::new(attributes::PERCENTAGE, p));
                    }
                    let parent = Context::new().with_remote_span_context(root);
                    let builder = SpanBuilder::from_name(HEARTBEAT_SPAN).with_attributes(attrs);
                    let mut span = tracer.build_with_context(builder, &parent);
                    opentelemetry::trace::Span::end(&mut span);
                }
            }
        });
    // Without a thread there are no heartbeats; everything else keeps working.
    drop(spawned);
}
