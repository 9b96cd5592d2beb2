//! What the progress layer adds to an OpenTelemetry pipeline, and what a dead collector costs.
//!
//! * `otel_stack/*`: one tracked `block` span (create, enter, `inc(1)`, exit, close) under a
//!   long-lived parent, with `tracing-opentelemetry` exporting through a batch processor to an
//!   exporter that accepts everything instantly:
//!   - `otel_only`: registry + `tracing-opentelemetry`;
//!   - `progress_plus_otel`: registry + our layer (with `OtelExport`) + `tracing-opentelemetry`.
//!
//!   `progress_plus_otel / otel_only` is what our layer adds to an existing OTel setup.
//! * `exporter_down/*`: a small operation (setlist with 10 blocks, 10 `inc`s each) through
//!   our layer + `tracing-opentelemetry` + a batch processor, exporting to an instant exporter
//!   (`collector_up`) or over OTLP/gRPC to a port where nothing listens (`collector_down`).
//!   `collector_down / collector_up` is the slowdown of the instrumented code when the collector
//!   is gone (the batch processor drops spans when its queue is full; nothing blocks).
//!
//! Run: `cargo bench --features otel --bench otel` (add `-- --warm-up-time 1
//! --measurement-time 2` for a quicker, noisier run).

#[path = "common/mod.rs"]
mod common;
use common::small_operation;

use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use criterion::Criterion;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::{Dispatch, dispatcher, info_span};
use tracing_progress::{OtelExport, ProgressSpanExt};
use tracing_subscriber::layer::SubscriberExt;

/// Accepts every batch at once: the cost of the pipeline without any I/O.
#[derive(Debug)]
struct InstantExporter;

impl SpanExporter for InstantExporter {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        drop(batch);
        std::future::ready(Ok(()))
    }
}

fn instant_provider() -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(InstantExporter)
        .build()
}

/// A provider exporting over OTLP/gRPC to a loopback port nobody listens on.
fn dead_collector_provider(rt: &tokio::runtime::Runtime) -> SdkTracerProvider {
    // Bind and drop: the port is free and closed, so connections are refused at once.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(9);
    let _enter = rt.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_timeout(Duration::from_millis(500))
        .build()
        .expect("exporter");
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build()
}

fn otel_only(provider: &SdkTracerProvider) -> Dispatch {
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
    Dispatch::new(tracing_subscriber::registry().with(otel))
}

fn progress_plus_otel(provider: &SdkTracerProvider) -> (Dispatch, tracing_progress::Store) {
    let (progress, store) = tracing_progress::Builder::new()
        .otel(OtelExport::new())
        .build()
        .expect("valid settings");
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(progress).with(otel));
    (dispatch, store)
}

fn one_block() {
    let span = info_span!("block", progress.level = "block", progress.total = 1);
    span.in_scope(|| span.inc(1));
}

fn otel_stack(c: &mut Criterion) {
    let mut group = c.benchmark_group("otel_stack");
    let provider = instant_provider();
    for (name, dispatch) in [
        ("otel_only", otel_only(&provider)),
        ("progress_plus_otel", progress_plus_otel(&provider).0),
    ] {
        dispatcher::with_default(&dispatch, || {
            let parent = info_span!("op", progress.level = "op");
            let _entered = parent.enter();
            group.bench_function(name, |b| b.iter(one_block));
        });
    }
    group.finish();
    let _ = provider.shutdown();
}

fn exporter_down(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("exporter_down");
    let up = instant_provider();
    let down = dead_collector_provider(&rt);
    for (name, provider) in [("collector_up", &up), ("collector_down", &down)] {
        let (dispatch, store) = progress_plus_otel(provider);
        dispatcher::with_default(&dispatch, || {
            group.bench_function(name, |b| b.iter(small_operation));
        });
        // The store saw every operation whatever happened to the export.
        let done = store.history(&Default::default());
        assert!(
            done.iter()
                .all(|s| s.metrics.nodes_seen == 11 && s.root.current == 10)
        );
    }
    group.finish();
    let _ = up.shutdown();
    std::thread::spawn(move || {
        let _ = down.shutdown();
    })
    .join()
    .ok();
    drop(rt);
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    otel_stack(&mut c);
    exporter_down(&mut c);
    c.final_summary();
}
