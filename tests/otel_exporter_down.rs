//! With no collector listening, the instrumented program goes on and the store loses nothing.
//! (The throughput figure is in `benches/otel.rs`, group `exporter_down`.)
#![cfg(feature = "otel")]

use std::net::TcpListener;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::info_span;
use tracing_progress::{HistoryQuery, OtelExport, ProgressSpanExt, Status};
use tracing_subscriber::prelude::*;

#[test]
fn dead_collector_loses_nothing_in_the_store_and_blocks_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // A loopback port that was free a moment ago: connections are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let provider = {
        let _enter = rt.enter();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .build()
    };
    let (progress, store) = tracing_progress::Builder::new()
        .otel(OtelExport::new().event_interval(Duration::ZERO))
        .build()
        .unwrap();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("down"));
    let subscriber = tracing_subscriber::registry().with(progress).with(otel);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..300 {
            let op = info_span!("op", progress.level = "op", progress.total = 5, i);
            let _g = op.enter();
            for _ in 0..5 {
                let block = info_span!("block", progress.level = "block", progress.total = 20);
                block.in_scope(|| (0..20).for_each(|_| block.inc(1)));
            }
        }
    });
    let history = store.history(&HistoryQuery::new());
    assert_eq!(history.len(), 300);
    for op in &history {
        assert_eq!(op.status, Status::Completed);
        assert_eq!(op.metrics.nodes_seen, 6);
        assert_eq!(op.root.current, 5);
        assert!(op.root.children.iter().all(|b| b.current == 20));
    }
    // Flushing and shutting down return (with or without an error) instead of hanging.
    std::thread::spawn(move || {
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    })
    .join()
    .unwrap();
    drop(rt);
}
