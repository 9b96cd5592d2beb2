//! The OTLP push: an SDK meter provider whose periodic reader (its own thread) reads the
//! model through observable instruments and sends OTLP/HTTP protobuf with a blocking client.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::{Histogram, Meter, MeterProvider as _};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::model::{DURATION_BUCKETS_S, Model};
use super::names::{self, attribute as attr};
use super::{MetricsError, MetricsExport};

/// The installed push.
pub(crate) struct Pipeline {
    provider: SdkMeterProvider,
    pub(crate) histogram: Histogram<f64>,
}

impl Pipeline {
    pub(crate) fn start(
        export: &MetricsExport,
        endpoint: &str,
        model: Arc<Model>,
    ) -> Result<Self, String> {
        let url = if endpoint.trim_end_matches('/').ends_with("/v1/metrics") {
            endpoint.to_string()
        } else {
            format!("{}/v1/metrics", endpoint.trim_end_matches('/'))
        };
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(export.timeout)
            .build()
            .map_err(|e| format!("metrics OTLP exporter: {e}"))?;
        let reader = PeriodicReader::builder(exporter)
            .with_interval(export.interval)
            .build();
        let provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource(export))
            .build();
        let meter = provider.meter_with_scope(
            InstrumentationScope::builder("tracing-progress")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        register_observables(&meter, model);
        let histogram = meter
            .f64_histogram(names::DURATION)
            .with_unit("s")
            .with_description(names::help::DURATION)
            .with_boundaries(DURATION_BUCKETS_S.to_vec())
            .build();
        Ok(Pipeline {
            provider,
            histogram,
        })
    }

    pub(crate) fn force_flush(&self, timeout: Duration) -> Result<(), MetricsError> {
        let p = self.provider.clone();
        bounded(timeout, "flush", move || p.force_flush())
    }

    pub(crate) fn shutdown(&self, timeout: Duration) -> Result<(), MetricsError> {
        let p = self.provider.clone();
        bounded(timeout, "shutdown", move || p.shutdown())
    }
}

/// Runs `f` on a thread of its own and waits at most `timeout` (the SDK's own shutdown has no
/// time limit of its own; the push's HTTP timeout bounds the thread, not the caller).
fn bounded(
    timeout: Duration,
    what: &str,
    f: impl FnOnce() -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
) -> Result<(), MetricsError> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("tracing-progress-metrics-stop".into())
        .spawn(move || {
            // The SDK and the HTTP client must not feed `tracing` events back into the layer.
            let r = tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::new(), f);
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(MetricsError(format!("metrics {what}: no thread: {e}")));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(MetricsError(format!("metrics {what}: {e}"))),
        Err(_) => Err(MetricsError(format!(
            "metrics {what}: no answer within {timeout:?}"
        ))),
    }
}

fn resource(export: &MetricsExport) -> Resource {
    let mut b = Resource::builder();
    match &export.service_name {
        Some(name) => b = b.with_service_name(name.clone()),
        // OTEL_SERVICE_NAME is read by the SDK's detector; else the executable's name.
        None if std::env::var_os("OTEL_SERVICE_NAME").is_some() => {}
        None => b = b.with_service_name(exe_name()),
    }
    let instance = export
        .service_instance_id
        .clone()
        .unwrap_or_else(default_instance_id);
    b.with_attribute(KeyValue::new("service.instance.id", instance))
        .build()
}

fn exe_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service".into())
}

/// `host:pid:start` (start in ms since the epoch): unique per process, also when a pid is
/// reused.
fn default_instance_id() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}:{}:{start}", std::process::id())
}

/// The instruments read from the model at each collection, on the reader's thread.
fn register_observables(meter: &Meter, model: Arc<Model>) {
    let m = model.clone();
    meter
        .u64_observable_gauge(names::ACTIVE)
        .with_unit("{operation}")
        .with_description(names::help::ACTIVE)
        .with_callback(move |o| {
            for (t, n) in &m.running().active_by_type {
                o.observe(*n, &[KeyValue::new(attr::OPERATION_TYPE, t.clone())]);
            }
        })
        .build();
    let m = model.clone();
    meter
        .u64_observable_counter(names::FINISHED)
        .with_unit("{operation}")
        .with_description(names::help::FINISHED)
        .with_callback(move |o| {
            for t in m.op_types() {
                for (outcome, n) in t.finished() {
                    o.observe(
                        n,
                        &[
                            KeyValue::new(attr::OPERATION_TYPE, t.label.clone()),
                            KeyValue::new(attr::OUTCOME, outcome),
                        ],
                    );
                }
            }
        })
        .build();
    let m = model.clone();
    meter
        .u64_observable_counter(names::FAILURES)
        .with_unit("{failure}")
        .with_description(names::help::FAILURES)
        .with_callback(move |o| {
            for l in m.levels() {
                o.observe(
                    l.failures(),
                    &[KeyValue::new(attr::LEVEL_TYPE, l.label.clone())],
                );
            }
        })
        .build();
    let m = model.clone();
    meter
        .f64_observable_gauge(names::RATIO)
        .with_unit("1")
        .with_description(names::help::RATIO)
        .with_callback(move |o| {
            for op in &m.running().ops {
                if let Some(r) = op.ratio {
                    o.observe(r, &op_attrs(op));
                }
            }
        })
        .build();
    let m = model.clone();
    meter
        .f64_observable_gauge(names::ETA)
        .with_unit("s")
        .with_description(names::help::ETA)
        .with_callback(move |o| {
            for op in &m.running().ops {
                if let Some(s) = op.eta_s {
                    o.observe(s, &op_attrs(op));
                }
            }
        })
        .build();
    meter
        .u64_observable_gauge(names::OMITTED)
        .with_unit("{operation}")
        .with_description(names::help::OMITTED)
        .with_callback(move |o| o.observe(model.running().omitted, &[]))
        .build();
}

fn op_attrs(op: &super::model::RunningOp) -> [KeyValue; 3] {
    [
        KeyValue::new(attr::OPERATION_TYPE, op.operation_type.clone()),
        KeyValue::new(attr::OPERATION_ID, op.id.as_u64() as i64),
        KeyValue::new(attr::OPERATION_NAME, op.name.clone()),
    ]
}
