//! The metrics exporter in-process: `/metrics` values from a real layer, the cardinality caps,
//! settings errors, and a collector that is down or never answers (the host does not slow
//! down, shutdown is bounded). The path through a real collector and Prometheus is
//! `tests/fleet_e2e.rs`.
#![cfg(all(feature = "metrics", feature = "http"))]

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use tower::ServiceExt;
use tracing_progress::Builder;
use tracing_progress::http::Server;
use tracing_progress::metrics::{MetricsExport, OTHER};

use support::Traced;
use support::cpu::thread_cpu;
use support::otlp_sink::otlp_sink;

/// GET `path` on the store's routes, in-process: (status, content type, body).
fn get(store: &tracing_progress::Store, path: &str) -> (u16, String, String) {
    let app = Server::builder(store.clone())
        .into_router()
        .expect("valid configuration");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let req = axum::http::Request::get(path)
            .header("host", "127.0.0.1")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 24)
            .await
            .unwrap();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    })
}

/// The exposition as `series{labels}` → value (labels as written, in order).
fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("name and value");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}

fn scrape(traced: &Traced) -> BTreeMap<String, f64> {
    // One read of the running operations is reused for 250 ms: wait it out.
    std::thread::sleep(Duration::from_millis(260));
    let (status, ct, body) = get(&traced.store, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    series(&body)
}

#[test]
fn metrics_endpoint_shows_finished_failures_durations_and_running_operations() {
    let t = Traced::new(Builder::new().metrics(MetricsExport::new()));
    t.run("import", "a", false);
    t.run("import", "b", false);
    t.run("import", "c", true);
    let held = t.hold("render", "r");
    held.inc(5);

    let m = scrape(&t);
    let v = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in {m:#?}"))
    };
    for (series, want) in [
        (
            r#"tracing_progress_operations_finished_total{operation_type="import",outcome="completed"}"#,
            2.0,
        ),
        (
            r#"tracing_progress_operations_finished_total{operation_type="import",outcome="failed"}"#,
            1.0,
        ),
        // "disk full" failed step-1; the operation's own error came after it: one root cause.
        (
            r#"tracing_progress_node_failures_total{level_type="step"}"#,
            1.0,
        ),
        (
            r#"tracing_progress_node_failures_total{level_type="import"}"#,
            0.0,
        ),
        (
            r#"tracing_progress_node_duration_seconds_count{level_type="step"}"#,
            6.0,
        ),
        (
            r#"tracing_progress_node_duration_seconds_bucket{level_type="step",le="+Inf"}"#,
            6.0,
        ),
        (
            r#"tracing_progress_operations_active{operation_type="render"}"#,
            1.0,
        ),
        (
            r#"tracing_progress_operations_active{operation_type="import"}"#,
            0.0,
        ),
    ] {
        assert_eq!(v(series), want, "{series}");
    }
    let ratio = format!(
        r#"tracing_progress_operation_progress_ratio{{operation_type="render",operation_id="{}",operation_name="r"}}"#,
        held.id
    );
    assert_eq!(v(&ratio), 0.5);
    assert_eq!(v("tracing_progress_operations_omitted"), 0.0);

    // Once it ends, its per-operation series are gone and it is counted as finished.
    held.finish();
    let m = scrape(&t);
    assert!(!m.contains_key(&ratio), "{m:#?}");
    assert!(!m.keys().any(|k| k.contains("operation_id=")), "{m:#?}");
    assert_eq!(
        m[r#"tracing_progress_operations_active{operation_type="render"}"#],
        0.0
    );
    assert_eq!(
        m[r#"tracing_progress_operations_finished_total{operation_type="render",outcome="completed"}"#],
        1.0
    );
}

#[test]
fn label_values_are_capped() {
    let t = Traced::new(Builder::new().metrics(MetricsExport::new().max_types(2).max_running(3)));
    for k in ["k1", "k2", "k3", "k4", "k5"] {
        t.run(k, "x", false);
    }
    let held: Vec<_> = (0..5).map(|i| t.hold("k1", &format!("h{i}"))).collect();
    let m = scrape(&t);
    let labels = |key: &str| -> std::collections::BTreeSet<String> {
        m.keys()
            .filter_map(|k| {
                let rest = k.split(&format!("{key}=\"")).nth(1)?;
                Some(rest.split('"').next()?.to_string())
            })
            .collect()
    };
    // Two real values each, then `_other`.
    assert_eq!(
        labels("operation_type"),
        ["k1", "k2", OTHER].iter().map(|s| s.to_string()).collect()
    );
    assert_eq!(labels("level_type").len(), 3, "{m:#?}");
    assert!(labels("level_type").contains(OTHER));
    assert_eq!(
        m[r#"tracing_progress_operations_finished_total{operation_type="_other",outcome="completed"}"#],
        3.0
    );
    // Per-operation gauges for the oldest three running, the rest counted as omitted.
    let ratios = m
        .keys()
        .filter(|k| k.starts_with("tracing_progress_operation_progress_ratio{"))
        .count();
    assert_eq!(ratios, 3);
    assert_eq!(m["tracing_progress_operations_omitted"], 2.0);
    assert_eq!(
        m[r#"tracing_progress_operations_active{operation_type="k1"}"#],
        5.0
    );
    drop(held);
}

#[test]
fn no_metrics_without_builder_metrics() {
    let t = Traced::new(Builder::new());
    let (status, _, body) = get(&t.store, "/metrics");
    assert_eq!(status, 404);
    assert!(body.contains("Builder::metrics"), "{body}");
}

#[test]
fn bad_settings_are_build_errors() {
    let err = |e: MetricsExport| {
        Builder::new()
            .metrics(e)
            .build::<tracing_subscriber::Registry>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(err(MetricsExport::new().otlp_http("127.0.0.1:4318")).contains("http://"));
    assert!(err(MetricsExport::new().interval(Duration::from_millis(1))).contains("interval"));
    assert!(err(MetricsExport::new().max_types(0)).contains("max_types"));
    assert!(err(MetricsExport::new().timeout(Duration::ZERO)).contains("timeout"));
}

/// A port where nothing listens.
fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A listener that accepts connections and never answers (a black-holed collector).
fn black_hole() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut c in l.incoming().flatten() {
            // Read the request so the client is left waiting for an answer, keep the socket.
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_millis(50)));
            let _ = c.read(&mut buf);
            held.push(c);
        }
    });
    port
}

/// Wall and thread-CPU time of 1,000 operations.
fn workload(t: &Traced) -> (Duration, Duration) {
    let (start, cpu) = (Instant::now(), thread_cpu());
    for i in 0..1000 {
        t.run("job", "w", i % 50 == 0);
    }
    (start.elapsed(), thread_cpu() - cpu)
}

#[test]
fn a_collector_down_or_black_holed_does_not_slow_the_host_and_shutdown_is_bounded() {
    let push = |port: u16| {
        MetricsExport::new()
            .otlp_http(format!("http://127.0.0.1:{port}"))
            .interval(Duration::from_millis(100))
            .timeout(Duration::from_millis(300))
    };
    let down = push(dead_port());
    let hole = push(black_hole());
    // The baseline pushes too, to a collector that answers: pushing itself records into the
    // SDK's instruments on the host thread, and that cost is not what this test is about.
    let (healthy, _posts) = otlp_sink();
    let configs = [
        ("healthy collector", push(healthy)),
        ("collector down", down.clone()),
        ("black hole", hole.clone()),
    ];
    let traced: Vec<_> = configs
        .iter()
        .map(|(name, e)| (*name, Traced::new(Builder::new().metrics(e.clone()))))
        .collect();
    // Interleaved, best of 7 after a warm-up round: the machine is shared and noisy.
    for (_, t) in &traced {
        workload(t);
    }
    let mut wall = [Duration::MAX; 3];
    let mut cpu = [Duration::MAX; 3];
    for _ in 0..7 {
        for (i, (_, t)) in traced.iter().enumerate() {
            let (w, c) = workload(t);
            wall[i] = wall[i].min(w);
            cpu[i] = cpu[i].min(c);
        }
    }
    for (i, (name, _)) in traced.iter().enumerate().skip(1) {
        let ratio = cpu[i].as_secs_f64() / cpu[0].as_secs_f64();
        eprintln!(
            "{name}: thread CPU {:?} vs a healthy collector {:?} ({ratio:.3}x); wall {:?} vs {:?}",
            cpu[i], cpu[0], wall[i], wall[0]
        );
        // The 5% target is measured in benches/metrics.rs; here a wide margin catches extra
        // work on the host's thread. Thread CPU time, because the exporter's own retrying
        // threads compete for the same cores (a loaded 2-core CI machine read 1.31x in wall
        // time with the host thread doing no more work).
        assert!(
            ratio < 1.25,
            "{name}: the host thread did {ratio:.3}x the work it does with a healthy collector"
        );
        // Waiting on the network would show in wall time: one wait on the 300 ms timeout
        // adds at least that to the best round.
        assert!(
            wall[i] < wall[0] + Duration::from_millis(250),
            "{name}: the host waited ({:?} vs {:?} with a healthy collector)",
            wall[i],
            wall[0]
        );
    }

    for (name, e) in [("collector down", &down), ("black hole", &hole)] {
        let start = Instant::now();
        let r = e.shutdown(Duration::from_millis(500));
        let took = start.elapsed();
        eprintln!("{name}: shutdown {took:?}: {r:?}");
        assert!(
            took < Duration::from_millis(900),
            "{name}: shutdown took {took:?}"
        );
        assert!(r.is_err(), "{name}: the last push cannot have succeeded");
    }
}

#[test]
fn the_push_runs_without_a_kept_handle_and_stops_with_the_layer() {
    use std::sync::atomic::Ordering;
    let (port, posts) = otlp_sink();
    // Built inline, as a stranger would: no clone of the export is kept.
    let t = Traced::new(
        Builder::new().metrics(
            MetricsExport::new()
                .otlp_http(format!("http://127.0.0.1:{port}"))
                .interval(Duration::from_millis(100)),
        ),
    );
    t.run("job", "a", false);
    support::wait_until("two pushes", || posts.load(Ordering::SeqCst) >= 2);
    // Dropping the layer ends the push (after one last one).
    drop(t);
    std::thread::sleep(Duration::from_millis(200));
    let after = posts.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        posts.load(Ordering::SeqCst),
        after,
        "pushes went on after the layer was dropped"
    );
}
