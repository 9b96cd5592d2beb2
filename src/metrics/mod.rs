//! Fleet metrics (feature `metrics`): progress as OpenTelemetry metrics pushed over OTLP, and
//! the same figures in the Prometheus text format on the HTTP server's `/metrics`.
//!
//! Set up with [`Builder::metrics`](crate::Builder::metrics). Past one process, operators look
//! at Prometheus (or Grafana) and a trace backend: this exporter gives them job progress
//! there, through an OpenTelemetry Collector ([`docs/fleet.md`] shows the topology and the
//! commands). Without an OTLP endpoint ([`MetricsExport::otlp_http`]) nothing is pushed and
//! the figures are only on `/metrics` (feature `http`), for a Prometheus that scrapes the
//! process directly.
//!
//! ```no_run
//! # fn docs() -> Result<(), Box<dyn std::error::Error>> {
//! use tracing_progress::metrics::MetricsExport;
//! use tracing_subscriber::prelude::*;
//!
//! let metrics = MetricsExport::new()
//!     .otlp_http("http://127.0.0.1:4318") // an OpenTelemetry Collector's OTLP/HTTP receiver
//!     .service_name("renderer");
//! let (layer, store) = tracing_progress::Builder::new()
//!     .metrics(metrics.clone())
//!     .build()?;
//! tracing_subscriber::registry().with(layer).init();
//! // ... the program runs ...
//! metrics.shutdown(std::time::Duration::from_secs(2))?; // last push, bounded
//! # drop(store); Ok(()) }
//! ```
//!
//! # The metrics
//!
//! | OpenTelemetry instrument (unit) | kind | attributes | Prometheus series |
//! |---|---|---|---|
//! | `tracing_progress.operations.active` (`{operation}`) | gauge | `operation.type` | `tracing_progress_operations_active` |
//! | `tracing_progress.operations.finished` (`{operation}`) | counter | `operation.type`, `outcome` | `tracing_progress_operations_finished_total` |
//! | `tracing_progress.node.duration` (`s`) | histogram | `level.type` | `tracing_progress_node_duration_seconds_{bucket,sum,count}` |
//! | `tracing_progress.node.failures` (`{failure}`) | counter | `level.type` | `tracing_progress_node_failures_total` |
//! | `tracing_progress.operation.progress` (`1`) | gauge | `operation.type`, `operation.id`, `operation.name` | `tracing_progress_operation_progress_ratio` |
//! | `tracing_progress.operation.eta` (`s`) | gauge | `operation.type`, `operation.id`, `operation.name` | `tracing_progress_operation_eta_seconds` |
//! | `tracing_progress.operations.omitted` (`{operation}`) | gauge | none | `tracing_progress_operations_omitted` |
//!
//! The Prometheus names are the ones the Collector's Prometheus exporter gives the OTLP
//! instruments (dots become underscores, the unit and `_total` are appended), and `/metrics`
//! uses the same names and labels, so one dashboard reads either path.
//!
//! * `outcome` is `completed`, `completed_with_failures`, `failed` or `cancelled`.
//! * A **failure** is a node that failed on its own account: a node whose error only carries a
//!   child's failure up (`#[instrument(err)]` at every level) is not counted again, so one
//!   root cause counts once, at its own level type.
//! * A node's **duration** is from its first enter to its close, observed when it closes.
//! * **Progress** is the root's share done (0 to 1), reported only while it is known; the
//!   **ETA** is the root's remaining-time estimate, reported only once there is one.
//! * **Omitted** counts running operations left out of the per-operation gauges by the cap.
//!
//! # Bounded cardinality
//!
//! No label carries a node id, a node name, a span field or an error message. The rules:
//!
//! * `operation.type` and `level.type` take at most [`MetricsExport::max_types`] distinct
//!   values each (default [`DEFAULT_MAX_TYPES`]); every later new value is reported as
//!   [`OTHER`] (`_other`). So the counters and the histogram have at most
//!   `(max_types + 1) × 4` (finished) and `max_types + 1` (failures, duration) series.
//! * `operation.id` and `operation.name` appear only on the two per-operation gauges, only for
//!   operations **still running**, and only for the oldest [`MetricsExport::max_running`]
//!   (default [`DEFAULT_MAX_RUNNING`]); a series disappears when its operation ends (the
//!   OpenTelemetry gauge stops reporting it; a Collector's Prometheus exporter drops it after
//!   its `metric_expiration`).
//! * Label values are cut to [`MAX_LABEL_LEN`] bytes.
//!
//! # Resource
//!
//! Pushed metrics carry the resource attributes `service.name` ([`MetricsExport::service_name`],
//! default: the executable's file name) and `service.instance.id`
//! ([`MetricsExport::service_instance_id`], default `host:pid:start`, unique per process and
//! stable for its life), which the Collector's Prometheus exporter turns into the `job` and
//! `instance` labels (and, with `resource_to_telemetry_conversion`, into `service_name` and
//! `service_instance_id`), so a fleet of processes stays apart in one Prometheus.
//!
//! # Cost and faults
//!
//! Instrumented code pays at each node close: a lookup of the level type in a read-locked map,
//! a few atomic adds, and with OTLP one record into the SDK's histogram. Everything else —
//! reading the running operations, encoding, pushing — happens on the SDK's reader thread
//! (every [`MetricsExport::interval`], default 10 s) or in the scrape. The push uses
//! OTLP/HTTP protobuf with a blocking client on that thread and a
//! [`timeout`](MetricsExport::timeout) (default 5 s), so a collector that is down or never
//! answers delays only that thread; [`MetricsExport::shutdown`] waits at most its timeout.
//! A scrape snapshots at most `max_running` operations, each bounded by the store's limits
//! (`max_finished_nodes`), and reuses one read for 250 ms.
//!
//! This module is a leaf: it implements the crate's exporter seam (`crate::export`) and reads
//! only the [`Store`] handle and the model.
//!
//! [`docs/fleet.md`]: https://github.com/tracing-progress/tracing-progress/blob/main/docs/fleet.md

mod model;
mod otlp;
mod prometheus;

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use tracing_core::span::Id;

use crate::Store;
use crate::export::{ClosedNode, Exporter};
use crate::model::{ProgressState, Status};

pub use model::{DURATION_BUCKETS_S, MAX_LABEL_LEN, OTHER};
pub use prometheus::CONTENT_TYPE;

/// Default of [`MetricsExport::max_types`].
pub const DEFAULT_MAX_TYPES: usize = 50;
/// Default of [`MetricsExport::max_running`].
pub const DEFAULT_MAX_RUNNING: usize = 100;
/// Default of [`MetricsExport::interval`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default of [`MetricsExport::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Instrument, series and label names (see [the module docs](crate::metrics#the-metrics)).
pub mod names {
    /// Running operations by type (gauge).
    pub const ACTIVE: &str = "tracing_progress.operations.active";
    /// Finished operations by type and outcome (counter).
    pub const FINISHED: &str = "tracing_progress.operations.finished";
    /// Failures by level type (counter).
    pub const FAILURES: &str = "tracing_progress.node.failures";
    /// Durations of closed nodes by level type (histogram, seconds).
    pub const DURATION: &str = "tracing_progress.node.duration";
    /// Share done of each running operation (gauge, 0 to 1).
    pub const RATIO: &str = "tracing_progress.operation.progress";
    /// Remaining-time estimate of each running operation (gauge, seconds).
    pub const ETA: &str = "tracing_progress.operation.eta";
    /// Running operations left out of the per-operation gauges (gauge).
    pub const OMITTED: &str = "tracing_progress.operations.omitted";

    /// OpenTelemetry attribute keys.
    pub mod attribute {
        /// Operation type.
        pub const OPERATION_TYPE: &str = "operation.type";
        /// Outcome of a finished operation.
        pub const OUTCOME: &str = "outcome";
        /// Level type of a node.
        pub const LEVEL_TYPE: &str = "level.type";
        /// Store id of a running operation.
        pub const OPERATION_ID: &str = "operation.id";
        /// Name of a running operation.
        pub const OPERATION_NAME: &str = "operation.name";
    }

    /// Prometheus label names (the attribute keys with `_` for `.`).
    pub mod label {
        /// Operation type.
        pub const OPERATION_TYPE: &str = "operation_type";
        /// Outcome of a finished operation.
        pub const OUTCOME: &str = "outcome";
        /// Level type of a node.
        pub const LEVEL_TYPE: &str = "level_type";
        /// Store id of a running operation.
        pub const OPERATION_ID: &str = "operation_id";
        /// Name of a running operation.
        pub const OPERATION_NAME: &str = "operation_name";
    }

    /// Prometheus metric family names, as encoded (`_total` and `_bucket`/`_sum`/`_count`
    /// are added by the encoder).
    pub(crate) mod prom {
        pub(crate) const ACTIVE: &str = "tracing_progress_operations_active";
        pub(crate) const FINISHED: &str = "tracing_progress_operations_finished";
        pub(crate) const FAILURES: &str = "tracing_progress_node_failures";
        pub(crate) const DURATION: &str = "tracing_progress_node_duration_seconds";
        pub(crate) const RATIO: &str = "tracing_progress_operation_progress_ratio";
        pub(crate) const ETA: &str = "tracing_progress_operation_eta_seconds";
        pub(crate) const OMITTED: &str = "tracing_progress_operations_omitted";
    }

    /// Descriptions, shared by both outputs.
    pub(crate) mod help {
        pub(crate) const ACTIVE: &str = "Running operations by type.";
        pub(crate) const FINISHED: &str = "Finished operations by type and outcome.";
        pub(crate) const FAILURES: &str =
            "Nodes that failed on their own account (root causes), by level type.";
        pub(crate) const DURATION: &str =
            "Duration of closed nodes from first enter to close, by level type.";
        pub(crate) const RATIO: &str = "Share done of each running operation (0 to 1).";
        pub(crate) const ETA: &str = "Estimated seconds left of each running operation.";
        pub(crate) const OMITTED: &str =
            "Running operations left out of the per-operation gauges by max_running.";
    }
}

/// Settings of the metrics exporter, and the handle to flush and shut it down (clones share
/// the installed exporter). See [the module docs](crate::metrics).
#[derive(Clone)]
pub struct MetricsExport {
    endpoint: Option<String>,
    service_name: Option<String>,
    service_instance_id: Option<String>,
    interval: Duration,
    timeout: Duration,
    max_types: usize,
    max_running: usize,
    installed: Arc<OnceLock<Arc<otlp::Pipeline>>>,
}

impl fmt::Debug for MetricsExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsExport")
            .field("endpoint", &self.endpoint)
            .field("service_name", &self.service_name)
            .field("service_instance_id", &self.service_instance_id)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("max_types", &self.max_types)
            .field("max_running", &self.max_running)
            .field("installed", &self.installed.get().is_some())
            .finish()
    }
}

impl Default for MetricsExport {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a flush or shutdown of the OTLP push did not succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsError(String);

impl fmt::Display for MetricsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MetricsError {}

impl MetricsExport {
    /// Defaults: no OTLP push (only `/metrics`), 10 s interval, 5 s timeout, caps
    /// [`DEFAULT_MAX_TYPES`] and [`DEFAULT_MAX_RUNNING`].
    pub fn new() -> Self {
        MetricsExport {
            endpoint: None,
            service_name: None,
            service_instance_id: None,
            interval: DEFAULT_INTERVAL,
            timeout: DEFAULT_TIMEOUT,
            max_types: DEFAULT_MAX_TYPES,
            max_running: DEFAULT_MAX_RUNNING,
            installed: Arc::default(),
        }
    }

    /// Pushes over OTLP/HTTP (protobuf) to `endpoint`, e.g. `http://127.0.0.1:4318` (a
    /// Collector's OTLP/HTTP receiver); `/v1/metrics` is appended unless the URL already ends
    /// with it.
    pub fn otlp_http(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The `service.name` resource attribute (default: the executable's file name).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// The `service.instance.id` resource attribute (default `host:pid:start-time`).
    pub fn service_instance_id(mut self, id: impl Into<String>) -> Self {
        self.service_instance_id = Some(id.into());
        self
    }

    /// How often the figures are pushed (at least 100 ms; default 10 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Time limit of one push, and of [`shutdown`](Self::shutdown) (at least 10 ms; default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Distinct values of `operation.type` and of `level.type` before new ones become
    /// [`OTHER`] (at least 1).
    pub fn max_types(mut self, n: usize) -> Self {
        self.max_types = n;
        self
    }

    /// Running operations that get per-operation gauges, oldest first (at least 1).
    pub fn max_running(mut self, n: usize) -> Self {
        self.max_running = n;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(100) {
            return Err("metrics interval must be at least 100 ms".into());
        }
        if self.timeout < Duration::from_millis(10) {
            return Err("metrics timeout must be at least 10 ms".into());
        }
        if self.max_types == 0 || self.max_running == 0 {
            return Err("metrics max_types and max_running must be at least 1".into());
        }
        if let Some(e) = &self.endpoint {
            // The OTLP crate parses the rest when the layer is built.
            let ok = (e.starts_with("http://") || e.starts_with("https://"))
                && !e.contains(char::is_whitespace);
            if !ok {
                return Err(format!(
                    "metrics OTLP endpoint {e:?} is not an http:// or https:// URL"
                ));
            }
        }
        Ok(())
    }

    /// Pushes the current figures now and waits for the answer (at most the timeout).
    /// Without OTLP (or before the layer is built) there is nothing to push: `Ok`.
    pub fn force_flush(&self) -> Result<(), MetricsError> {
        match self.installed.get() {
            Some(p) => p.force_flush(self.timeout),
            None => Ok(()),
        }
    }

    /// Pushes the last figures and stops the push thread, waiting at most `timeout` (a
    /// collector that never answers cannot hold the program's exit longer). Without it, the
    /// push stops when the layer and every clone of this value are dropped (that last push
    /// is bounded by [`timeout`](Self::timeout)); a global subscriber is never dropped, so
    /// call this before the program exits.
    pub fn shutdown(&self, timeout: Duration) -> Result<(), MetricsError> {
        match self.installed.get() {
            Some(p) => p.shutdown(timeout),
            None => Ok(()),
        }
    }
}

/// The store's figures in the Prometheus text format (0.0.4, content type [`CONTENT_TYPE`]),
/// as the HTTP server's `/metrics` serves them, for a server of your own; `None` when the
/// layer was built without [`Builder::metrics`](crate::Builder::metrics).
pub fn prometheus_text(store: &Store) -> Option<String> {
    store.metrics_text()
}

/// The exporter behind the seam.
struct MetricsExporter {
    model: Arc<model::Model>,
    histogram: Option<Histogram<f64>>,
    /// Keeps the push alive as long as the layer, also when no `MetricsExport` clone is kept
    /// (the SDK shuts its provider down when the last handle goes).
    _pipeline: Option<Arc<otlp::Pipeline>>,
}

impl Exporter for MetricsExporter {
    fn wants_closed_nodes(&self) -> bool {
        true
    }

    fn node_closed(&self, _span: &Id, closed: ClosedNode<'_>) {
        let level = closed.level;
        let stats = self.model.level(&level.level_type);
        let us = level.timing.elapsed_us;
        stats.observe(us);
        if level.status == Status::Failed && !level.error().is_some_and(|e| e.propagated) {
            stats.fail();
        }
        if let Some(h) = &self.histogram {
            h.record(
                us as f64 / 1e6,
                &[KeyValue::new(
                    names::attribute::LEVEL_TYPE,
                    stats.label.clone(),
                )],
            );
        }
    }

    fn operation_finished(&self, state: &Arc<ProgressState>) {
        self.model.operation_finished(state);
    }
}

/// Builds the exporter for `store`: the model, `/metrics`, and with an endpoint the OTLP push.
pub(crate) fn install(export: &MetricsExport, store: &Store) -> Result<Arc<dyn Exporter>, String> {
    export.validate()?;
    let model = Arc::new(model::Model::new(
        store.clone(),
        export.max_types,
        export.max_running,
    ));
    store.set_metrics_text(Arc::new(prometheus::Exposition::new(model.clone())));
    let mut histogram = None;
    let mut kept = None;
    if let Some(endpoint) = &export.endpoint {
        if export.installed.get().is_some() {
            return Err("this MetricsExport is already installed in another layer; \
                        give each layer its own MetricsExport::new()"
                .into());
        }
        let pipeline = Arc::new(otlp::Pipeline::start(export, endpoint, model.clone())?);
        histogram = Some(pipeline.histogram.clone());
        kept = Some(pipeline.clone());
        if export.installed.set(pipeline).is_err() {
            return Err("this MetricsExport is already installed in another layer; \
                        give each layer its own MetricsExport::new()"
                .into());
        }
    }
    Ok(Arc::new(MetricsExporter {
        model,
        histogram,
        _pipeline: kept,
    }))
}
