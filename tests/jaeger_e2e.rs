//! End to end against a real Jaeger v2: runs `examples/jaeger.rs` (gRPC and HTTP), then asks
//! Jaeger's query API what arrived: the tree, the final progress attributes, status and
//! `error.type` of every span (semantic conventions), the exception and progress events; and,
//! in a slow run, that the running operation is found (by its default heartbeat) before it
//! ends, then cancelled (`error.type = "cancelled"`).
//!
//! `.ci/run` builds Jaeger from the Go module proxy, starts it on loopback
//! (`ci/jaeger/run.sh start`) and sets `JAEGER_QUERY_URL` / `JAEGER_OTLP_GRPC` /
//! `JAEGER_OTLP_HTTP`. Without them the test says it is skipped, and fails under CI
//! (`CI` set), so a missing Jaeger can never pass silently.
#![cfg(feature = "otel")]

mod support;
use support::example_binary;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Jaeger {
    query: String,
    grpc: String,
    http: String,
}

fn jaeger() -> Option<Jaeger> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("JAEGER_QUERY_URL"),
        get("JAEGER_OTLP_GRPC"),
        get("JAEGER_OTLP_HTTP"),
    ) {
        (Some(query), Some(grpc), Some(http)) => Some(Jaeger { query, grpc, http }),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the Jaeger end-to-end test: JAEGER_QUERY_URL, JAEGER_OTLP_GRPC and \
                 JAEGER_OTLP_HTTP are not set (.ci/run starts Jaeger and sets them)"
            );
            eprintln!(
                "skipped: no Jaeger (run `bash .ci/run`, or ci/jaeger/run.sh start and set JAEGER_* vars)"
            );
            None
        }
    }
}

/// GET over plain HTTP/1.0 (loopback only), returning the JSON body.
fn get_json(base: &str, path: &str) -> Value {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream =
        TcpStream::connect(hostport).unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {hostport}\r\nAccept: application/json\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200"),
        "GET {path}: {head}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: bad JSON ({e}): {body:.300}"))
}

/// A span of the legacy `/api/traces` shape, with helpers for its tags and logs.
struct JSpan<'a>(&'a Value);

impl JSpan<'_> {
    fn name(&self) -> &str {
        self.0["operationName"].as_str().unwrap_or("")
    }
    fn id(&self) -> &str {
        self.0["spanID"].as_str().unwrap_or("")
    }
    fn parent(&self) -> Option<&str> {
        self.0["references"]
            .as_array()?
            .iter()
            .find(|r| r["refType"] == "CHILD_OF")
            .and_then(|r| r["spanID"].as_str())
    }
    fn tag(&self, key: &str) -> Option<&Value> {
        self.0["tags"]
            .as_array()?
            .iter()
            .find(|t| t["key"] == key)
            .map(|t| &t["value"])
    }
    fn tag_count(&self, key: &str) -> usize {
        self.0["tags"]
            .as_array()
            .map_or(0, |tags| tags.iter().filter(|t| t["key"] == key).count())
    }
    /// Fields of the logs (span events) whose `event` field is `name`.
    fn events(&self, name: &str) -> Vec<&Vec<Value>> {
        self.0["logs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["fields"].as_array())
            .filter(|fields| {
                fields
                    .iter()
                    .any(|f| f["key"] == "event" && f["value"] == name)
            })
            .collect()
    }
}

fn field<'a>(fields: &'a [Value], key: &str) -> Option<&'a Value> {
    fields.iter().find(|f| f["key"] == key).map(|f| &f["value"])
}

/// Runs the example against Jaeger and returns the one trace of `service` once complete.
fn run_and_fetch(j: &Jaeger, protocol: &str, endpoint: &str, service: &str) -> Value {
    let out = Command::new(example_binary("jaeger"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_SERVICE_NAME", service)
        .env("SETLIST_SPEED", "3")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the jaeger example");
    assert!(
        out.status.success(),
        "example failed ({protocol}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Jaeger ingests asynchronously: poll until the child's span and the root are both in.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = get_json(&j.query, &format!("/api/traces?service={service}&limit=20"));
        let traces = body["data"].as_array().cloned().unwrap_or_default();
        let complete = traces.len() == 1
            && ["process_setlist", "encode_stems"].iter().all(|n| {
                traces[0]["spans"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s["operationName"] == *n))
            });
        if complete || Instant::now() > deadline {
            assert_eq!(
                traces.len(),
                1,
                "expected exactly one trace for {service}: {body:.500}"
            );
            return traces[0].clone();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[track_caller]
fn check_trace(trace: &Value, service: &str) {
    let spans: Vec<JSpan<'_>> = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(JSpan)
        .collect();
    let named = |n: &'static str| spans.iter().filter(move |s| s.name() == n);
    let by_id = |id: &str| spans.iter().find(|s| s.id() == id);
    let parent_name = |s: &JSpan<'_>| s.parent().and_then(by_id).map(|p| p.name().to_string());

    // Structure: setlist > 3 songs > actions > blocks > encode > child process.
    let root = named("process_setlist").next().expect("the setlist span");
    assert_eq!(root.parent(), None, "the setlist is the root");
    assert_eq!(named("process_song").count(), 3);
    assert!(named("process_song").all(|s| parent_name(s).as_deref() == Some("process_setlist")));
    assert!(named("execute_action").all(|s| parent_name(s).as_deref() == Some("process_song")));
    assert!(named("run_block").all(|s| parent_name(s).as_deref() == Some("execute_action")));
    assert_eq!(
        named("encode").count(),
        2,
        "two songs reach the export step"
    );
    let child: Vec<_> = named("encode_stems").collect();
    assert_eq!(child.len(), 2, "one child process per encode");
    assert!(
        child
            .iter()
            .all(|c| parent_name(c).as_deref() == Some("encode")),
        "the child process continues the trace under encode"
    );
    // A run shorter than heartbeat_after (5 s) costs no heartbeat spans (a very slow machine
    // may take longer: then heartbeats are right).
    let root_us = root.0["duration"].as_u64().unwrap_or(u64::MAX);
    if root_us < 4_500_000 {
        assert_eq!(
            named("progress.heartbeat").count(),
            0,
            "a run of {root_us} µs got heartbeats"
        );
    }

    // Final progress values, each written once: two songs done, one failed, so the setlist
    // completed with failures at 2/3, not 100%.
    assert_eq!(root.tag("tracing_progress.current"), Some(&Value::from(2)));
    assert_eq!(root.tag("tracing_progress.total"), Some(&Value::from(3)));
    let pct = root
        .tag("tracing_progress.percentage")
        .and_then(Value::as_f64)
        .unwrap_or_default();
    assert!((pct - 66.67).abs() < 0.01, "{pct}");
    assert_eq!(
        root.tag("tracing_progress.with_failures"),
        Some(&Value::from(true))
    );
    assert_eq!(
        root.tag("tracing_progress.status"),
        Some(&Value::from("completed"))
    );
    assert_eq!(
        root.tag("tracing_progress.level"),
        Some(&Value::from("setlist"))
    );
    assert_eq!(root.tag_count("tracing_progress.current"), 1);
    let child_node = child[0];
    assert_eq!(
        child_node.tag("tracing_progress.current"),
        Some(&Value::from(4))
    );

    // The failing block: error status with its description and the exception event.
    let failed: Vec<_> = named("run_block")
        .filter(|s| s.tag("tracing_progress.status") == Some(&Value::from("failed")))
        .collect();
    assert_eq!(failed.len(), 1, "exactly one block failed");
    let block = failed[0];
    assert_eq!(block.tag("otel.status_code"), Some(&Value::from("ERROR")));
    assert_eq!(block.tag("error"), Some(&Value::from(true)));
    assert_eq!(
        block.tag("error.type"),
        Some(&Value::from("tracing_progress::event")),
        "error.type of the failed block"
    );
    let description = block
        .tag("otel.status_description")
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(
        description.contains("onset detector diverged"),
        "status description: {description:?}"
    );
    let exceptions = block.events("exception");
    assert!(
        !exceptions.is_empty(),
        "an exception event on the failed block"
    );
    assert!(exceptions.iter().any(|f| {
        field(f, "exception.message")
            .and_then(Value::as_str)
            .is_some_and(|m| m.contains("onset detector diverged"))
            && field(f, "exception.type").is_some()
    }));
    assert!(
        !block.events("progress").is_empty(),
        "throttled progress events arrived"
    );

    // Semantic conventions: the error went up through the levels that returned it (song 2
    // and its action failed too), and stopped at the setlist, which handled it.
    for s in &spans {
        let status = s.tag("tracing_progress.status").and_then(Value::as_str);
        match status {
            Some("failed") => {
                assert_eq!(
                    s.tag("otel.status_code"),
                    Some(&Value::from("ERROR")),
                    "{}",
                    s.name()
                );
                assert_eq!(
                    s.tag("error.type"),
                    Some(&Value::from("tracing_progress::event")),
                    "{}",
                    s.name()
                );
            }
            Some("completed") => {
                assert_eq!(
                    s.tag("otel.status_code"),
                    None,
                    "success stays Unset: {}",
                    s.name()
                );
                assert_eq!(s.tag("error"), None, "{}", s.name());
                assert_eq!(s.tag("error.type"), None, "{}", s.name());
            }
            other => panic!("span {} ended {other:?}", s.name()),
        }
    }
    let failed_names: Vec<_> = spans
        .iter()
        .filter(|s| s.tag("error.type").is_some())
        .map(|s| s.name().to_string())
        .collect();
    let mut sorted = failed_names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["execute_action", "process_song", "run_block"],
        "only the failing block and the levels that returned its error failed"
    );
    // One failure returned up through three levels: counted once, under its root cause.
    assert_eq!(
        root.tag("tracing_progress.failures_below"),
        Some(&Value::from(1))
    );

    // The service name.
    let processes = trace["processes"].as_object().expect("processes");
    assert!(
        processes.values().all(|p| p["serviceName"] == service),
        "service names: {processes:?}"
    );
}

#[test]
fn setlist_run_shows_up_in_jaeger_over_grpc_and_http() {
    let Some(j) = jaeger() else { return };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for (protocol, endpoint) in [("grpc", j.grpc.clone()), ("http/protobuf", j.http.clone())] {
        let service = format!("tp-e2e-{}-{stamp}", protocol.replace('/', "-"));
        let trace = run_and_fetch(&j, protocol, &endpoint, &service);
        check_trace(&trace, &service);
    }
}

/// Microseconds since the Unix epoch, as Jaeger's times are.
fn now_us() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_micros()).unwrap()
}

/// Kills the example on drop, so a failing assertion leaves nothing running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_running_setlist_is_found_in_jaeger_before_it_ends_then_cancelled() {
    let Some(j) = jaeger() else { return };
    let service = format!("tp-e2e-running-{}", now_us());
    // About 20 s at this speed: the default heartbeat (after 5 s) is the only way to see it
    // before the end, as nothing else ends that early except the first song's finished spans.
    let mut example = KillOnDrop(
        Command::new(example_binary("jaeger"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &j.grpc)
            .env("OTEL_SERVICE_NAME", &service)
            .env("OTEL_BSP_SCHEDULE_DELAY", "500")
            .env("SETLIST_SPEED", "0.12")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run the jaeger example"),
    );
    let started = Instant::now();

    // While it runs: search the service until a heartbeat arrives.
    let (found_at_us, found_after, running) = loop {
        assert!(
            example.0.try_wait().expect("poll the example").is_none(),
            "the run ended before Jaeger had anything of it"
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "nothing of the running operation in Jaeger after 15 s"
        );
        let body = get_json(&j.query, &format!("/api/traces?service={service}&limit=20"));
        let traces = body["data"].as_array().cloned().unwrap_or_default();
        if let Some(trace) = traces.iter().find(|t| {
            t["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["operationName"] == "progress.heartbeat"))
        }) {
            break (now_us(), started.elapsed(), trace.clone());
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    println!("found the running operation after {found_after:?}");
    let spans: Vec<JSpan<'_>> = running["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(JSpan)
        .collect();
    assert!(
        !spans.iter().any(|s| s.name() == "process_setlist"),
        "the root has not arrived yet: it is still running"
    );
    let beats: Vec<_> = spans
        .iter()
        .filter(|s| s.name() == "progress.heartbeat")
        .collect();
    let hb = beats[0];
    assert_eq!(
        hb.tag("tracing_progress.status"),
        Some(&Value::from("running"))
    );
    assert_eq!(
        hb.tag("tracing_progress.name"),
        Some(&Value::from("My Setlist"))
    );
    assert_eq!(hb.tag("tracing_progress.total"), Some(&Value::from(3)));
    let path = hb
        .tag("tracing_progress.active_path")
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(
        path.starts_with("setlist \"My Setlist\""),
        "active path {path:?}"
    );
    assert_eq!(
        hb.tag("otel.scope.name"),
        Some(&Value::from("tracing-progress"))
    );
    // Well before it ends: less than half of the work was done when Jaeger had it.
    let done = hb
        .tag("tracing_progress.percentage")
        .and_then(Value::as_f64)
        .expect("the heartbeat's percentage");
    assert!(done < 50.0, "found only at {done}%");
    println!("found at {done}% done");
    let root_id = hb
        .parent()
        .expect("a heartbeat has the root as parent")
        .to_string();
    let trace_id = running["traceID"].as_str().unwrap().to_string();

    // Cancel it (the rest of the run would prove nothing more); the root then arrives,
    // cancelled, as the heartbeats' parent.
    writeln!(example.0.stdin.as_mut().unwrap(), "cancel").expect("write to the example");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = example.0.try_wait().expect("poll the example") {
            break status;
        }
        assert!(Instant::now() < deadline, "the cancelled run did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "example exit: {status}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let trace = loop {
        let body = get_json(&j.query, &format!("/api/traces/{trace_id}"));
        let trace = body["data"][0].clone();
        let has_root = trace["spans"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["operationName"] == "process_setlist"));
        if has_root || Instant::now() > deadline {
            break trace;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let spans: Vec<JSpan<'_>> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(JSpan)
        .collect();
    let root = spans
        .iter()
        .find(|s| s.name() == "process_setlist")
        .expect("the root arrived after the cancel");
    assert_eq!(root.id(), root_id, "the heartbeats hang under the root");
    let root_end = root.0["startTime"].as_u64().unwrap() + root.0["duration"].as_u64().unwrap();
    assert!(
        found_at_us < root_end,
        "found at {found_at_us} µs, before the root ended at {root_end} µs"
    );
    println!(
        "found {:.1} s after the start; cancelled, the root ended {:.1} s later",
        found_after.as_secs_f64(),
        (root_end - found_at_us) as f64 / 1e6
    );
    // Cancelled: status Error "cancelled" and error.type "cancelled" (semantic conventions).
    assert_eq!(
        root.tag("tracing_progress.status"),
        Some(&Value::from("cancelled"))
    );
    assert_eq!(root.tag("otel.status_code"), Some(&Value::from("ERROR")));
    assert_eq!(
        root.tag("otel.status_description"),
        Some(&Value::from("cancelled"))
    );
    assert_eq!(root.tag("error.type"), Some(&Value::from("cancelled")));
    assert_eq!(
        root.tag("tracing_progress.cancel_requested"),
        Some(&Value::from(true))
    );
    assert!(
        root.events("exception").is_empty(),
        "a cancel is not an exception"
    );
}
