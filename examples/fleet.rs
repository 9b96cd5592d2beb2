//! One process of a fleet: progress metrics and traces pushed over OTLP/HTTP to an
//! OpenTelemetry Collector, which forwards traces to Jaeger and exposes the metrics to
//! Prometheus (see docs/fleet.md).
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14318 FLEET_INSTANCE=worker-1 \
//!     cargo run --features metrics,otel,http,process --example fleet
//! ```
//!
//! | variable | default | what |
//! |---|---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http://127.0.0.1:14318` | the collector's OTLP/HTTP receiver |
//! | `OTEL_SERVICE_NAME` | `fleet-demo` | `service.name` of metrics and traces |
//! | `FLEET_INSTANCE` | `host:pid:start` | `service.instance.id` |
//! | `FLEET_JOBS` | `3` | jobs run to the end; the second one fails at its third item |
//! | `FLEET_HOLD` | unset | if set, one more job stops at 3 of 10 items until stdin closes |
//! | `FLEET_HTTP_PORT` | unset | if set, the live tree and `/metrics` on that port |
//! | `FLEET_INTERVAL_MS` | `1000` | metrics push interval |
//! | `FLEET_CHILD` | unset | if set, job 1 ends with a `spawn` step that runs this program again as a child process (`spawn_tracked`): its progress is grafted under the step, its spans continue the trace |
//! | `FLEET_WAIT` | unset | if set, after `ready` the process keeps its tree (and HTTP server) until stdin closes |
//!
//! It prints `ready` once the jobs are done (and the held job is at 3/10), then waits for
//! stdin to close when holding (or with `FLEET_WAIT`), finishes, pushes the last figures and
//! exits.
//!
//! The child (`FLEET_ROLE=child`, set by the parent) exports traces but **no metrics**: its
//! progress reaches Prometheus only through its parent's operation, so a fleet keeps one
//! `service.instance.id` per process you started, however many children they spawn
//! (docs/fleet.md, "A grafted child").

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{info_span, instrument};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_progress::metrics::MetricsExport;
use tracing_progress::process::CommandExt as _;
use tracing_subscriber::prelude::*;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

#[instrument(err, skip_all, fields(progress.level = "item", progress.name = %format!("item {i}")))]
fn item(job: usize, i: usize, fail_job: Option<usize>) -> Result<(), String> {
    std::thread::sleep(Duration::from_millis(20));
    if Some(job) == fail_job && i == 3 {
        return Err(format!("item {i} of job {job}: bad input"));
    }
    Ok(())
}

/// Runs this program again as a child process whose progress is grafted under this step.
#[instrument(err, skip_all, fields(progress.level = "spawn", progress.name = "spawn child"))]
fn spawn_child() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let instance = env("FLEET_INSTANCE").unwrap_or_else(|| "fleet".into());
    let status = Command::new(exe)
        .env("FLEET_ROLE", "child")
        .env("FLEET_INSTANCE", format!("{instance}-child"))
        .stdin(Stdio::null())
        // The parent's stdout is the driver's `ready` line.
        .stdout(Stdio::null())
        .spawn_tracked()
        .map_err(|e| format!("cannot start the child: {e}"))?
        .wait()
        .map_err(|e| format!("cannot wait for the child: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("child {status}"))
}

#[instrument(err, skip_all, fields(
    progress.operation = "batch",
    progress.level = "job",
    progress.name = %format!("job {n}"),
    progress.total = items + usize::from(spawn),
))]
fn job(n: usize, items: usize, fail_job: Option<usize>, spawn: bool) -> Result<(), String> {
    for i in 1..=items {
        item(n, i, fail_job)?;
    }
    if spawn {
        spawn_child()?;
    }
    Ok(())
}

/// The tracer provider of this process: OTLP/HTTP traces with `service.name` and
/// `service.instance.id`.
fn tracer_provider(
    endpoint: &str,
    service: &str,
) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let mut resource = Resource::builder().with_service_name(service.to_string());
    if let Some(id) = env("FLEET_INSTANCE") {
        resource = resource.with_attribute(opentelemetry::KeyValue::new("service.instance.id", id));
    }
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_timeout(Duration::from_secs(2))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.build())
        .build())
}

/// `FLEET_ROLE=child`: one small operation, reported to the parent's tree (the layer notices
/// `TRACING_PROGRESS_PARENT`), its spans in the parent's trace (`TRACEPARENT`). No metrics.
fn child_main(endpoint: &str, service: &str) -> Result<(), Box<dyn std::error::Error>> {
    let (layer, _store) = tracing_progress::Builder::new()
        .otel(tracing_progress::OtelExport::new().without_heartbeat())
        .build()?;
    let provider = tracer_provider(endpoint, service)?;
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("fleet-child")))
        .init();
    let mut carrier = HashMap::new();
    if let Some(tp) = env("TRACEPARENT") {
        carrier.insert("traceparent".to_string(), tp);
    }
    let span = info_span!(
        "child job",
        progress.operation = "encode",
        progress.level = "child job",
        progress.name = "child job",
        progress.total = 3,
    );
    // Without a TRACEPARENT (run by hand) the child starts its own trace.
    let _ = span.set_parent(TraceContextPropagator::new().extract(&carrier));
    span.in_scope(|| {
        for i in 1..=3 {
            let _ = item(0, i, None);
        }
    });
    drop(span);
    let _ = provider.shutdown();
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap_or_else(|| "http://127.0.0.1:14318".into())
        .trim_end_matches('/')
        .to_string();
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "fleet-demo".into());
    let jobs: usize = env("FLEET_JOBS").and_then(|v| v.parse().ok()).unwrap_or(3);
    if env("FLEET_ROLE").as_deref() == Some("child") {
        return child_main(&endpoint, &service);
    }
    let spawn = env("FLEET_CHILD").is_some();
    let interval = env("FLEET_INTERVAL_MS")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);

    let mut metrics = MetricsExport::new()
        .otlp_http(&endpoint)
        .service_name(&service)
        .interval(interval)
        .timeout(Duration::from_secs(2));
    if let Some(id) = env("FLEET_INSTANCE") {
        metrics = metrics.service_instance_id(id);
    }
    let (layer, store) = tracing_progress::Builder::new()
        .metrics(metrics.clone())
        .otel(tracing_progress::OtelExport::new().without_heartbeat())
        .build()?;

    let provider = tracer_provider(&endpoint, &service)?;
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("fleet")))
        .init();

    let _server = match env("FLEET_HTTP_PORT") {
        Some(port) => {
            let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
            let server = tracing_progress::http::Server::builder(store.clone())
                .bind(addr)
                .spawn()?;
            eprintln!("live tree and /metrics at {}", server.url());
            Some(server)
        }
        None => None,
    };

    for n in 1..=jobs {
        if let Err(e) = job(n, 4, Some(2), spawn && n == 1) {
            eprintln!("job {n} failed: {e}");
        }
    }
    if env("FLEET_HOLD").is_some() {
        let span = info_span!(
            "job",
            progress.operation = "batch",
            progress.level = "job",
            progress.name = "held job",
            progress.total = 10,
        );
        {
            let _g = span.enter();
            for i in 1..=3 {
                let _ = item(0, i, None);
            }
        }
        println!("ready");
        std::io::stdout().flush()?;
        // Holds the job at 3/10 until the driver closes stdin.
        for _ in std::io::stdin().lock().lines() {}
        span.in_scope(|| {
            for i in 4..=10 {
                let _ = item(0, i, None);
            }
        });
        drop(span);
    } else {
        println!("ready");
        std::io::stdout().flush()?;
        if env("FLEET_WAIT").is_some() {
            for _ in std::io::stdin().lock().lines() {}
        }
    }

    // Last push of both signals, each bounded.
    let t = std::thread::spawn(move || provider.shutdown());
    if let Err(e) = metrics.shutdown(Duration::from_secs(3)) {
        eprintln!("{e}");
    }
    let _ = t.join();
    Ok(())
}
