//! One process of a fleet: progress metrics and traces pushed over OTLP/HTTP to an
//! OpenTelemetry Collector, which forwards traces to Jaeger and exposes the metrics to
//! Prometheus (see docs/fleet.md).
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14318 FLEET_INSTANCE=worker-1 \
//!     cargo run --features metrics,otel,http --example fleet
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
//!
//! It prints `ready` once the jobs are done (and the held job is at 3/10), then waits for
//! stdin to close when holding, finishes, pushes the last figures and exits.

use std::io::{BufRead, Write};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{info_span, instrument};
use tracing_progress::metrics::MetricsExport;
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

#[instrument(err, skip_all, fields(
    progress.operation = "batch",
    progress.level = "job",
    progress.name = %format!("job {n}"),
    progress.total = items,
))]
fn job(n: usize, items: usize, fail_job: Option<usize>) -> Result<(), String> {
    for i in 1..=items {
        item(n, i, fail_job)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = env("OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap_or_else(|| "http://127.0.0.1:14318".into())
        .trim_end_matches('/')
        .to_string();
    let service = env("OTEL_SERVICE_NAME").unwrap_or_else(|| "fleet-demo".into());
    let jobs: usize = env("FLEET_JOBS").and_then(|v| v.parse().ok()).unwrap_or(3);
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

    let mut resource = Resource::builder().with_service_name(service.clone());
    if let Some(id) = env("FLEET_INSTANCE") {
        resource = resource.with_attribute(opentelemetry::KeyValue::new("service.instance.id", id));
    }
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .with_timeout(Duration::from_secs(2))
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.build())
        .build();
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
        if let Err(e) = job(n, 4, Some(2)) {
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
    }

    // Last push of both signals, each bounded.
    let t = std::thread::spawn(move || provider.shutdown());
    if let Err(e) = metrics.shutdown(Duration::from_secs(3)) {
        eprintln!("{e}");
    }
    let _ = t.join();
    Ok(())
}
