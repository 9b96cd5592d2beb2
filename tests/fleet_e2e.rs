//! The fleet through real engines: `examples/fleet.rs` processes push metrics and traces over
//! OTLP/HTTP to an OpenTelemetry Collector, which exposes the metrics to a real Prometheus (it
//! scrapes every second) and forwards the traces to a real Jaeger. The tests ask Prometheus's
//! HTTP API with PromQL and Jaeger's query API what arrived.
//!
//! `.ci/run` starts the three (ci/jaeger, ci/collector, ci/prometheus) and sets
//! `COLLECTOR_OTLP_HTTP`, `PROMETHEUS_URL` and `JAEGER_QUERY_URL`. Without them the tests say
//! they are skipped, and fail under CI (`CI` set), so missing engines never pass silently.
#![cfg(all(
    feature = "metrics",
    feature = "otel",
    feature = "http",
    feature = "process"
))]

mod support;
use support::example_binary;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

struct Engines {
    collector: String,
    prometheus: String,
    jaeger: String,
}

fn engines() -> Option<Engines> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("COLLECTOR_OTLP_HTTP"),
        get("PROMETHEUS_URL"),
        get("JAEGER_QUERY_URL"),
    ) {
        (Some(collector), Some(prometheus), Some(jaeger)) => Some(Engines {
            collector,
            prometheus,
            jaeger,
        }),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the fleet end-to-end tests: COLLECTOR_OTLP_HTTP, PROMETHEUS_URL and \
                 JAEGER_QUERY_URL are not set (.ci/run starts the engines and sets them)"
            );
            eprintln!(
                "skipped: no collector/Prometheus/Jaeger (run `bash .ci/run`, or the ci/*/run.sh \
                 start scripts and set the env vars; see docs/fleet.md)"
            );
            None
        }
    }
}

/// A service name no earlier run used (the engines outlive the tests).
fn unique(prefix: &str) -> String {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), ns % 1_000_000_000)
}

fn get_json(url: &str, query: &[(&str, &str)]) -> Value {
    let mut req = ureq::get(url);
    for (k, v) in query {
        req = req.query(*k, *v);
    }
    let mut resp = req
        .config()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let body = resp.body_mut().read_to_string().expect("read the body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: bad JSON ({e}): {body:.300}"))
}

/// The result vector of an instant PromQL query.
fn promql(e: &Engines, q: &str) -> Vec<Value> {
    let v = get_json(&format!("{}/api/v1/query", e.prometheus), &[("query", q)]);
    assert_eq!(v["status"], "success", "query {q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The single value of a PromQL query, if it has exactly one series.
fn promql_value(e: &Engines, q: &str) -> Option<f64> {
    let r = promql(e, q);
    match r.as_slice() {
        [one] => one["value"][1].as_str().and_then(|s| s.parse().ok()),
        _ => None,
    }
}

/// Polls `check` until it holds or 40 s pass; the failure message shows the last value.
fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut read: impl FnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let v = read();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: still {v:?} after 40 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn spawn_fleet(e: &Engines, service: &str, instance: &str, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(example_binary("fleet"));
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &e.collector)
        .env("OTEL_SERVICE_NAME", service)
        .env("FLEET_INSTANCE", instance)
        .env("FLEET_INTERVAL_MS", "300")
        .env_remove("FLEET_HOLD")
        .env_remove("FLEET_HTTP_PORT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the fleet example")
}

/// Waits for the example's `ready` line.
fn wait_ready(child: &mut Child) {
    let out = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("read stdout");
    assert_eq!(line.trim(), "ready", "the fleet example did not get ready");
}

fn wait_exit(mut child: Child) {
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "fleet example exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fleet example did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Traces of `service` in Jaeger (legacy `/api/traces`).
fn jaeger_traces(e: &Engines, service: &str) -> Vec<Value> {
    let v = get_json(
        &format!("{}/api/traces", e.jaeger),
        &[("service", service), ("limit", "100"), ("lookback", "1h")],
    );
    v["data"].as_array().cloned().unwrap_or_default()
}

/// Values of a process tag over all processes of the traces.
fn process_tags(traces: &[Value], key: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for t in traces {
        for p in t["processes"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            for tag in p["tags"].as_array().into_iter().flatten() {
                if tag["key"] == key {
                    out.insert(tag["value"].as_str().unwrap_or("").to_string());
                }
            }
        }
    }
    out
}

#[test]
fn one_process_through_the_collector_to_prometheus_and_jaeger() {
    let Some(e) = engines() else { return };
    let svc = unique("fleet-one");
    let inst = format!("{svc}-a");
    // Its own /metrics too, to compare with what came through the collector.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
        .to_string();
    let mut child = spawn_fleet(
        &e,
        &svc,
        &inst,
        &[("FLEET_HOLD", "1"), ("FLEET_HTTP_PORT", port.as_str())],
    );
    wait_ready(&mut child);
    let sel = format!("service_name=\"{svc}\",service_instance_id=\"{inst}\"");

    // While the held job runs: finished by outcome, failures by level type, the ratio.
    let q = |m: &str, extra: &str| format!("{m}{{{sel}{extra}}}");
    let completed = q(
        "tracing_progress_operations_finished_total",
        ",operation_type=\"batch\",outcome=\"completed\"",
    );
    let failed = q(
        "tracing_progress_operations_finished_total",
        ",operation_type=\"batch\",outcome=\"failed\"",
    );
    eventually(
        "completed",
        || promql_value(&e, &completed),
        |v| *v == Some(2.0),
    );
    eventually("failed", || promql_value(&e, &failed), |v| *v == Some(1.0));
    let fail_item = q(
        "tracing_progress_node_failures_total",
        ",level_type=\"item\"",
    );
    let fail_job = q(
        "tracing_progress_node_failures_total",
        ",level_type=\"job\"",
    );
    eventually(
        "item failures",
        || promql_value(&e, &fail_item),
        |v| *v == Some(1.0),
    );
    // The job failed only because its item did: one root cause, counted once.
    assert_eq!(promql_value(&e, &fail_job), Some(0.0));
    let ratio = q(
        "tracing_progress_operation_progress_ratio",
        ",operation_name=\"held job\",operation_type=\"batch\"",
    );
    eventually(
        "held ratio",
        || promql_value(&e, &ratio),
        |v| *v == Some(0.3),
    );
    let active = q(
        "tracing_progress_operations_active",
        ",operation_type=\"batch\"",
    );
    eventually("active", || promql_value(&e, &active), |v| *v == Some(1.0));
    // 4 + 3 (job 2 stops at its failed third item) + 4 + 3 held items closed so far.
    let items = q(
        "tracing_progress_node_duration_seconds_count",
        ",level_type=\"item\"",
    );
    eventually(
        "item durations",
        || promql_value(&e, &items),
        |v| *v == Some(14.0),
    );
    let le = q(
        "tracing_progress_node_duration_seconds_bucket",
        ",level_type=\"item\",le=\"0.005\"",
    );
    // Each item sleeps 20 ms: none is in the 5 ms bucket.
    assert_eq!(promql_value(&e, &le), Some(0.0));

    // The process's own /metrics says the same, under the same names and labels.
    let mut resp = ureq::get(format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .expect("GET /metrics of the process");
    let text = resp.body_mut().read_to_string().unwrap();
    for line in [
        r#"tracing_progress_operations_finished_total{operation_type="batch",outcome="completed"} 2"#,
        r#"tracing_progress_operations_finished_total{operation_type="batch",outcome="failed"} 1"#,
        r#"tracing_progress_node_failures_total{level_type="item"} 1"#,
        r#"tracing_progress_node_duration_seconds_count{level_type="item"} 14"#,
        r#"tracing_progress_operations_active{operation_type="batch"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no {line:?} in /metrics:\n{text}"
        );
    }
    assert!(
        text.lines().any(
            |l| l.starts_with("tracing_progress_operation_progress_ratio{")
                && l.contains(r#"operation_name="held job""#)
                && l.ends_with(" 0.3")
        ),
        "no held ratio in /metrics:\n{text}"
    );

    // The held job finishes: a third completed operation, no running one left.
    wait_exit(child);
    eventually(
        "completed after",
        || promql_value(&e, &completed),
        |v| *v == Some(3.0),
    );
    eventually(
        "active after",
        || promql_value(&e, &active),
        |v| *v == Some(0.0),
    );

    // The collector forwarded the traces: four operations, four traces, the failed item red.
    let traces = eventually(
        "jaeger traces",
        || jaeger_traces(&e, &svc),
        |t| t.len() == 4,
    );
    assert_eq!(
        process_tags(&traces, "service.instance.id"),
        BTreeSet::from([inst.clone()])
    );
    let failed_items = traces
        .iter()
        .flat_map(|t| t["spans"].as_array().cloned().unwrap_or_default())
        .filter(|s| {
            s["operationName"] == "item"
                && s["tags"].as_array().is_some_and(|tags| {
                    tags.iter()
                        .any(|t| t["key"] == "error" && t["value"] == true)
                })
        })
        .count();
    assert_eq!(failed_items, 1, "one failed item span in Jaeger");
}

/// A free loopback port for a process's HTTP server.
fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
        .to_string()
}

/// The first node of the tree (depth first) whose `level_type` is `level`.
fn find_level<'a>(node: &'a Value, level: &str) -> Option<&'a Value> {
    if node["level_type"] == level {
        return Some(node);
    }
    node["children"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| find_level(c, level))
}

fn children(node: &Value) -> Vec<Value> {
    node["children"].as_array().cloned().unwrap_or_default()
}

/// Spans of a Jaeger trace named `name`.
fn spans_named<'a>(trace: &'a Value, name: &str) -> Vec<&'a Value> {
    trace["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["operationName"] == name)
        .collect()
}

/// The `service.instance.id` of a span's process in its trace.
fn span_instance(trace: &Value, span: &Value) -> String {
    let pid = span["processID"].as_str().unwrap_or("");
    trace["processes"][pid]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["key"] == "service.instance.id")
        .and_then(|t| t["value"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Three instances; the first one's job ends with a step that spawns a child process
/// (`spawn_tracked`), grafted into its tree and continuing its trace, exporting no metrics.
#[test]
fn three_processes_feed_one_collector() {
    let Some(e) = engines() else { return };
    let svc = unique("fleet-three");
    let instances: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|i| format!("{svc}-{i}"))
        .collect();
    let child_instance = format!("{}-child", instances[0]);
    let port = free_port();
    let mut children_procs: Vec<Child> = instances
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let mut extra = vec![("FLEET_JOBS", "1")];
            if n == 0 {
                extra.extend([
                    ("FLEET_CHILD", "1"),
                    ("FLEET_WAIT", "1"),
                    ("FLEET_HTTP_PORT", port.as_str()),
                ]);
            }
            spawn_fleet(&e, &svc, i, &extra)
        })
        .collect();

    // (a) The spawning instance's own HTTP API: the child's operation under the subprocess
    // node, under the step that spawned it, all completed, with the child's pid and exit code.
    wait_ready(&mut children_procs[0]);
    let history = get_json(&format!("http://127.0.0.1:{port}/api/history"), &[]);
    let ops = history["operations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ops.len(), 1, "one finished operation: {history:.2000}");
    let root = &ops[0]["root"];
    assert_eq!(root["name"], "job 1");
    assert_eq!(root["status"], "completed");
    assert_eq!(
        (root["current"].as_u64(), root["total"].as_u64()),
        (Some(5), Some(5))
    );
    let step = find_level(root, "spawn").expect("the spawn step in the tree");
    assert_eq!(step["name"], "spawn child");
    let sp = match children(step).as_slice() {
        [one] => one.clone(),
        other => panic!("the spawn step has one child, the subprocess node: {other:?}"),
    };
    assert_eq!(sp["level_type"], "subprocess", "{sp}");
    assert_eq!(sp["status"], "completed", "{sp}");
    assert!(
        sp["metadata"]["pid"].as_u64().is_some_and(|p| p > 0),
        "{sp}"
    );
    assert_eq!(sp["metadata"]["exit_code"], 0, "{sp}");
    let job = match children(&sp).as_slice() {
        [one] => one.clone(),
        other => panic!("the child reported one operation: {other:?}"),
    };
    assert_eq!(job["name"], "child job");
    assert_eq!(job["level_type"], "child job");
    assert_eq!(job["status"], "completed");
    assert_eq!(
        (job["current"].as_u64(), job["total"].as_u64()),
        (Some(3), Some(3))
    );
    let items: Vec<(String, String)> = children(&job)
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_string(),
                c["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        items,
        (1..=3)
            .map(|i| (format!("item {i}"), "completed".to_string()))
            .collect::<Vec<_>>()
    );
    for c in children_procs {
        wait_exit(c);
    }

    // (c) Prometheus: exactly the three instances; the child pushed no metrics of its own.
    let by_instance = format!(
        "count by (service_instance_id) (tracing_progress_operations_finished_total{{service_name=\"{svc}\",outcome=\"completed\"}})"
    );
    let found = eventually(
        "instances in Prometheus",
        || {
            promql(&e, &by_instance)
                .iter()
                .map(|r| {
                    r["metric"]["service_instance_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
                .collect::<BTreeSet<_>>()
        },
        |s| s.len() == 3,
    );
    assert_eq!(found, instances.iter().cloned().collect::<BTreeSet<_>>());
    let total =
        format!("sum(tracing_progress_operations_finished_total{{service_name=\"{svc}\"}})");
    eventually(
        "finished in total",
        || promql_value(&e, &total),
        |v| *v == Some(3.0),
    );
    // Prometheus's own `instance` label is the service.instance.id (honor_labels), and no
    // series of any metric names the child or a fourth instance.
    let by_label = format!(
        "count(count by (instance) (tracing_progress_operations_finished_total{{job=\"{svc}\"}}))"
    );
    assert_eq!(promql_value(&e, &by_label), Some(3.0));
    let any_metric =
        format!("count by (instance) ({{__name__=~\"tracing_progress_.+\",job=\"{svc}\"}})");
    let all_instances: BTreeSet<String> = promql(&e, &any_metric)
        .iter()
        .map(|r| r["metric"]["instance"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        all_instances,
        instances.iter().cloned().collect::<BTreeSet<_>>()
    );
    // The spawning step's duration is in the parent's figures; the child's items are not
    // counted again (three instances × 4 items).
    let spawn_count = format!(
        "sum(tracing_progress_node_duration_seconds_count{{job=\"{svc}\",level_type=\"spawn\"}})"
    );
    assert_eq!(promql_value(&e, &spawn_count), Some(1.0));
    let item_count = format!(
        "sum(tracing_progress_node_duration_seconds_count{{job=\"{svc}\",level_type=\"item\"}})"
    );
    assert_eq!(promql_value(&e, &item_count), Some(12.0));

    // (b) Jaeger: still three traces; the child's spans are in the first instance's trace,
    // its root a child of the spawning step's span.
    // Polled on a summary (span names per trace) so a failure message stays readable.
    let summary = |t: &[Value]| -> Vec<Vec<String>> {
        t.iter()
            .map(|tr| {
                let mut names: Vec<String> = tr["spans"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| s["operationName"].as_str().unwrap_or("").to_string())
                    .collect();
                names.sort();
                names
            })
            .collect()
    };
    eventually(
        "jaeger traces (span names) with the child's spans",
        || summary(&jaeger_traces(&e, &svc)),
        |t| {
            t.len() == 3
                && t.iter().any(|names| {
                    names.iter().any(|n| n == "child job")
                        && names.iter().filter(|n| *n == "item").count() == 7
                })
        },
    );
    let traces = jaeger_traces(&e, &svc);
    let mut want: BTreeSet<String> = instances.iter().cloned().collect();
    want.insert(child_instance.clone());
    assert_eq!(process_tags(&traces, "service.instance.id"), want);
    let trace = traces
        .iter()
        .find(|t| !spans_named(t, "child job").is_empty())
        .unwrap();
    let spawn = match spans_named(trace, "spawn_child").as_slice() {
        [one] => *one,
        other => panic!("one spawn span in the trace: {other:?}"),
    };
    assert_eq!(span_instance(trace, spawn), instances[0]);
    let child_root = spans_named(trace, "child job")[0];
    assert_eq!(span_instance(trace, child_root), child_instance);
    assert_eq!(child_root["traceID"], spawn["traceID"]);
    let refs = child_root["references"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        refs.iter()
            .any(|r| r["refType"] == "CHILD_OF" && r["spanID"] == spawn["spanID"]),
        "the child's root continues the spawning span: {refs:?}"
    );
    let child_items = spans_named(trace, "item")
        .into_iter()
        .filter(|s| span_instance(trace, s) == child_instance)
        .count();
    assert_eq!(
        child_items, 3,
        "the child's three items in the parent's trace"
    );
    // The other two instances' traces have no child.
    for t in traces.iter().filter(|t| t["traceID"] != trace["traceID"]) {
        assert!(spans_named(t, "child job").is_empty());
    }
}
