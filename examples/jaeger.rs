//! The setlist run exported to an OpenTelemetry collector such as Jaeger, over OTLP.
//!
//! ```text
//! cargo run --features otel --example jaeger
//! ```
//!
//! Standard OpenTelemetry environment variables are honoured:
//!
//! | variable | default |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | `http://127.0.0.1:4317` (gRPC) or `http://127.0.0.1:4318` (HTTP) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` | `grpc`; or `http/protobuf` |
//! | `OTEL_SERVICE_NAME` | `tracing-progress-demo` |
//! | `TRACING_PROGRESS_SHUTDOWN_MS` | `2000`: the most the exit waits for the export |
//!
//! The subprocess level runs in a real child process (this example re-invoked with
//! `--child`), which continues the same trace through the W3C `traceparent` passed in its
//! environment, so Jaeger shows its spans under the parent's `encode` span.
//!
//! The progress layer is added *before* the OpenTelemetry layer (required: see
//! `tracing_progress::otel`). The provider is also made the global one, which is where the
//! default heartbeats go: a run longer than 5 s (`SETLIST_SPEED=0.1` makes it about 30 s) is
//! visible in Jaeger while it runs, as `progress.heartbeat` spans every 10 s with its progress.
//! Type `cancel` and Enter to cancel the run (its spans then end as cancelled). Before exiting,
//! root spans are closed, then the provider is shut down (which exports what is queued) within
//! `TRACING_PROGRESS_SHUTDOWN_MS` in total, 2 s by default; a collector that accepts but never
//! answers costs that much and no more, and the spans still queued then are dropped (the example
//! says so). With no collector listening the example says so and exits at once.

#[path = "support/setlist_sim.rs"]
mod setlist_sim;

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, ExitCode};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use setlist_sim::{SONGS, Song, process_setlist};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_progress::{HistoryQuery, OtelExport, ProgressSpanExt, Store};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// Where and how to export, from the standard environment variables.
struct Target {
    http: bool,
    endpoint: String,
    service: String,
}

impl Target {
    fn from_env() -> Self {
        let http = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
            .is_ok_and(|p| p.trim().starts_with("http"));
        let default = if http {
            "http://127.0.0.1:4318"
        } else {
            "http://127.0.0.1:4317"
        };
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| default.to_string());
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "tracing-progress-demo".to_string());
        Target {
            http,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            service,
        }
    }

    /// `host:port` of the endpoint, for a reachability probe.
    fn host_port(&self) -> String {
        let rest = self.endpoint.split("://").nth(1).unwrap_or(&self.endpoint);
        rest.split('/').next().unwrap_or(rest).to_string()
    }

    /// Whether something accepts connections at the endpoint (1 s at most).
    fn reachable(&self) -> bool {
        let Ok(addrs) = self.host_port().to_socket_addrs() else {
            return false;
        };
        addrs
            .into_iter()
            .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
    }

    fn provider(&self) -> Result<SdkTracerProvider, String> {
        let exporter = if self.http {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{}/v1/traces", self.endpoint))
                .with_timeout(shutdown_budget())
                .build()
        } else {
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(self.endpoint.clone())
                .with_timeout(shutdown_budget())
                .build()
        }
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(self.service.clone())
                    .build(),
            )
            .build())
    }
}

/// The most the exit waits for the export: `TRACING_PROGRESS_SHUTDOWN_MS`, default 2 s.
fn shutdown_budget() -> Duration {
    std::env::var("TRACING_PROGRESS_SHUTDOWN_MS")
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis)
}

/// Shuts the provider down (exporting what is queued) from a thread outside the runtime
/// (shutdown blocks while the exporter needs a runtime worker), waiting at most the budget in
/// total: a collector that accepts and never answers must not hold the exit. The SDK's own
/// flush and shutdown each wait 5 s; here one shutdown gets the whole budget, and on time-out
/// the spans still queued are dropped.
fn shutdown(provider: SdkTracerProvider) {
    let budget = shutdown_budget();
    let (tx, rx) = std::sync::mpsc::channel();
    let _ = std::thread::spawn(move || {
        let _ = tx.send(provider.shutdown_with_timeout(budget));
    });
    match rx.recv_timeout(budget + Duration::from_millis(100)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("export incomplete, queued spans dropped: {e}"),
        Err(_) => eprintln!(
            "export incomplete: the collector did not answer within {budget:?}; queued spans dropped"
        ),
    }
}

/// The subprocess level, run in a child process that continues the trace.
fn run_child_process(song: &Song) -> Result<(), String> {
    let mut carrier = HashMap::new();
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let traceparent = carrier
        .get("traceparent")
        .ok_or("no trace context to pass to the child")?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own binary: {e}"))?;
    let status = Command::new(exe)
        .args(["--child", song.file])
        .env("TRACEPARENT", traceparent)
        .status()
        .map_err(|e| format!("cannot start the child process: {e}"))?;
    // The parent's span counts the child's steps as done once it succeeded.
    tracing::Span::current().set_current(4);
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("child process failed: {status}"))
}

/// `--child FILE`: the encoder process. Its spans join the parent's trace.
fn child_main(file: &str, target: &Target, rt: &tokio::runtime::Runtime) -> ExitCode {
    let _enter = rt.enter();
    let provider = match target.provider() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("child: {e}");
            return ExitCode::FAILURE;
        }
    };
    opentelemetry::global::set_tracer_provider(provider.clone());
    let (progress, _store) = tracing_progress::Builder::new()
        .otel(OtelExport::new())
        .build()
        .expect("valid settings");
    let otel =
        tracing_opentelemetry::layer().with_tracer(provider.tracer("tracing-progress-child"));
    let subscriber = tracing_subscriber::registry().with(progress).with(otel);
    let ok = tracing::subscriber::with_default(subscriber, || {
        let mut carrier = HashMap::new();
        if let Ok(tp) = std::env::var("TRACEPARENT") {
            carrier.insert("traceparent".to_string(), tp);
        }
        let parent = TraceContextPropagator::new().extract(&carrier);
        let span = tracing::info_span!(
            "encode_stems",
            progress.level = "process",
            progress.name = file,
            progress.total = 4,
            pid = std::process::id(),
        );
        let _ = span.set_parent(parent);
        span.in_scope(setlist_sim::encode_work).is_ok()
    });
    shutdown(provider);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Cancels the running operations when a line `cancel` arrives on stdin.
fn cancel_on_stdin(store: Store) {
    let spawned = std::thread::Builder::new()
        .name("cancel-on-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { return };
                if line.trim() == "cancel" {
                    for op in store.active() {
                        if store.cancel(op.id).is_ok() {
                            println!("cancel requested for operation #{}", op.id);
                        }
                    }
                }
            }
        });
    drop(spawned);
}

fn print_summary(store: &Store) {
    for op in store.history(&HistoryQuery::new()) {
        print!("{op}");
        println!(
            "operation #{} {} {} ({} nodes, {} failed)",
            op.id, op.operation_type, op.status, op.metrics.nodes_seen, op.metrics.nodes_failed
        );
    }
}

fn main() -> ExitCode {
    let target = Target::from_env();
    if !target.reachable() {
        eprintln!(
            "no OTLP collector is listening at {} ({}). Start Jaeger (see the README, \"View it in \
             Jaeger\") or set OTEL_EXPORTER_OTLP_ENDPOINT.",
            target.endpoint,
            if target.http { "http/protobuf" } else { "grpc" }
        );
        return ExitCode::from(2);
    }
    // tonic needs a runtime for its channel; the workload itself is plain threads.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, file] = args.as_slice()
        && flag == "--child"
    {
        return child_main(file, &target, &rt);
    }

    let provider = {
        let _enter = rt.enter();
        match target.provider() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    };
    // Heartbeats (on by default) go through the global provider.
    opentelemetry::global::set_tracer_provider(provider.clone());
    let export = OtelExport::new().event_interval(Duration::from_millis(25));
    let (progress, store) = tracing_progress::Builder::new()
        .otel(export)
        .build()
        .expect("valid settings");
    cancel_on_stdin(store.clone());
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tracing-progress-demo"))
        .with_location(false)
        .with_threads(false);
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let subscriber = tracing_subscriber::registry()
        .with(progress) // before the OpenTelemetry layer
        .with(otel)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(log_filter),
        );
    let _ = setlist_sim::SUBPROCESS.set(run_child_process);

    println!(
        "exporting to {} as service {:?} ({})",
        target.endpoint,
        target.service,
        if target.http { "http/protobuf" } else { "grpc" }
    );
    // A scoped default: when it ends every span is closed, so everything can be flushed.
    tracing::subscriber::with_default(subscriber, || process_setlist("My Setlist", &SONGS));
    shutdown(provider);
    print_summary(&store);
    drop(rt);
    ExitCode::SUCCESS
}
