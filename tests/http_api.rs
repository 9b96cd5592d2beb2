//! The HTTP API in-process: a real layer feeds the store; requests go to the configured router
//! in-process (`tower::ServiceExt::oneshot`), and over a real socket (`ureq` against the
//! server on 127.0.0.1:0) where the socket is the point: event streams, the Host check,
//! binding and shutdown.
#![cfg(feature = "http")]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use serde_json::Value;
use tower::ServiceExt;
use tracing::{Dispatch, info_span};
use tracing_progress::http::{ServeError, Server, ServerBuilder};
use tracing_progress::{Builder, OperationId, Store};
use tracing_subscriber::Registry;
use tracing_subscriber::prelude::*;

use support::{Held, TIMEOUT, Traced};

const TOKEN: &str = "t0ken-for-tests";

// ---------------------------------------------------------------------------------------------
// Fixture: a store fed by a real layer, the API's router over it, and a server with the same
// configuration.

struct Fixture {
    traced: Traced,
    /// The configured routes, called in-process on `runtime`.
    app: Router,
    runtime: tokio::runtime::Runtime,
    /// The same configuration listening on a socket.
    server: Server,
}

impl Fixture {
    fn new() -> Self {
        Fixture::with(Builder::new(), |b| b)
    }

    fn configured(configure: impl Fn(ServerBuilder) -> ServerBuilder) -> Self {
        Fixture::with(Builder::new(), configure)
    }

    fn with(layer: Builder, configure: impl Fn(ServerBuilder) -> ServerBuilder) -> Self {
        let traced = Traced::new(layer);
        let builder = || {
            let b = Server::builder(traced.store.clone())
                .bind(([127, 0, 0, 1], 0))
                .poll_interval(Duration::from_millis(50));
            configure(b)
        };
        let app = builder().into_router().expect("valid configuration");
        let server = builder().spawn().expect("server starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        Fixture {
            traced,
            app,
            runtime,
            server,
        }
    }

    fn store(&self) -> &Store {
        &self.traced.store
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Runs an operation to its end (see [`Traced::run`]).
    fn run(&self, kind: &str, name: &str, fail: bool) -> OperationId {
        self.traced.run(kind, name, fail)
    }

    /// Starts an operation held open until finished or cancelled (see [`Traced::hold`]).
    fn start(&self, kind: &str, name: &str) -> Held {
        self.traced.hold(kind, name)
    }

    /// One request to the router, in-process.
    fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req
            .body(axum::body::Body::empty())
            .expect("a valid request");
        let (parts, body) = self.runtime.block_on(async {
            let resp = self.app.clone().oneshot(req).await.expect("infallible");
            let (parts, body) = resp.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
            (parts, body)
        });
        Resp::new(parts.status.as_u16(), &parts.headers, body.to_vec())
    }

    fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[])
    }

    fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path);
        assert_eq!(resp.status, 200, "GET {path}: {}", resp.body);
        resp.json()
    }

    /// The operation ids a history listing at `path` returns, in its order.
    fn history_ids(&self, path: &str) -> Vec<u64> {
        self.get_json(path)["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_u64().unwrap())
            .collect()
    }

    /// The event stream at `path` of the server.
    fn sse(&self, path: &str, headers: &[(&str, &str)]) -> SseClient {
        SseClient::connect(self.addr(), path, headers)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// Responses, in-process or over a socket.

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn new(status: u16, headers: &axum::http::HeaderMap, body: Vec<u8>) -> Self {
        Resp {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().expect("text header").to_owned()))
                .collect(),
            body: String::from_utf8(body).expect("UTF-8 body"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        assert!(
            self.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "not JSON: {self:?}"
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("bad JSON {e}: {}", self.body))
    }

    /// The `error` text of a JSON error answer with this status.
    #[track_caller]
    fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{self:?}");
        let v = self.json();
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error text: {v}"))
            .to_owned()
    }
}

/// A plain HTTP/1.1 client: any status is an answer, no connection is kept for later.
static AGENT: LazyLock<ureq::Agent> = LazyLock::new(|| {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .timeout_per_read(Some(TIMEOUT))
        .build()
        .into()
});

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> ureq::http::Response<ureq::Body> {
    let mut req = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    AGENT
        .run(req.body(()).expect("a valid request"))
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// One request over a socket.
fn over_socket(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut resp = send(addr, method, path, headers);
    let body = resp.body_mut().read_to_vec().expect("read the body");
    Resp::new(resp.status().as_u16(), resp.headers(), body)
}

// ---------------------------------------------------------------------------------------------
// A minimal Server-Sent Events client.

#[derive(Clone, Debug)]
struct SseEvent {
    id: Option<u64>,
    event: String,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("bad JSON {e}: {}", self.data))
    }

    /// The operation id of a `snapshot` or `finished` event.
    fn op(&self) -> u64 {
        self.json()["id"].as_u64().unwrap()
    }
}

struct SseClient {
    reader: BufReader<ureq::BodyReader<'static>>,
    seen: Vec<SseEvent>,
}

impl SseClient {
    fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let resp = send(addr, "GET", path, headers);
        assert_eq!(resp.status(), 200, "SSE status: {resp:?}");
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
        assert_eq!(
            header("content-type"),
            Some("text/event-stream"),
            "{resp:?}"
        );
        assert_eq!(header("transfer-encoding"), Some("chunked"), "{resp:?}");
        SseClient {
            reader: BufReader::new(resp.into_body().into_reader()),
            seen: Vec::new(),
        }
    }

    /// The next event with data (retry-only blocks and keep-alive comments are skipped).
    fn next(&mut self) -> SseEvent {
        let blank = || SseEvent {
            id: None,
            event: "message".into(),
            data: String::new(),
        };
        let (mut event, mut has_data) = (blank(), false);
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read the stream");
            assert!(n > 0, "the stream ended; events so far: {:?}", self.seen);
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if has_data {
                    self.seen.push(event.clone());
                    return event;
                }
                (event, has_data) = (blank(), false);
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => event.id = Some(value.parse().expect("numeric id")),
                "event" => event.event = value.into(),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
    }

    /// Reads events until one matches; returns it and the ones before it.
    fn until(&mut self, what: &str, pred: impl Fn(&SseEvent) -> bool) -> (SseEvent, Vec<SseEvent>) {
        let deadline = Instant::now() + TIMEOUT;
        let mut before = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; seen {:?}",
                self.seen
            );
            let e = self.next();
            if pred(&e) {
                return (e, before);
            }
            before.push(e);
        }
    }

    /// Reads up to the `ready` event; returns it and the initial batch.
    fn ready(&mut self) -> (SseEvent, Vec<SseEvent>) {
        self.until("ready", |e| e.event == "ready")
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn page_and_health() {
    let fx = Fixture::new();
    let page = fx.get("/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.header("content-security-policy").is_some());
    assert!(
        page.body.contains("data-testid"),
        "the page is the embedded one"
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no CDN"
    );

    let health = fx.get_json("/api/health");
    assert_eq!(health["ok"], true);
    assert_eq!(health["active"], 0);
    assert_eq!(health["history"], 0);
    assert_eq!(health["cancel_enabled"], false);
    assert_eq!(health["token_required_for_reads"], false);

    fx.run("import", "first", false);
    let _running = fx.start("import", "second");
    let health = fx.get_json("/api/health");
    assert_eq!(
        (health["active"].as_u64(), health["history"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn operations_lists_active_by_default() {
    let fx = Fixture::new();
    let done = fx.run("import", "old import", false);
    let a = fx.start("import", "Import Alpha");
    let b = fx.start("export", "Export Beta");

    let list = fx.get_json("/api/operations");
    assert_eq!(list["truncated"], false);
    let ops = list["operations"].as_array().unwrap();
    let ids: Vec<u64> = ops.iter().map(|o| o["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        [a.id.as_u64(), b.id.as_u64()],
        "running only, oldest first"
    );
    assert_eq!(ops[0]["status"], "running");
    assert_eq!(
        ops[0]["root"]["children"][0]["name"], "part-1",
        "whole trees"
    );

    let names = |path: &str| -> Vec<String> {
        fx.get_json(path)["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names("/api/operations?type=export"), ["Export Beta"]);
    assert_eq!(names("/api/operations?name=alpha"), ["Import Alpha"]);
    assert_eq!(names("/api/operations?name=IMPORT"), ["Import Alpha"]);
    assert_eq!(
        names("/api/operations?status=running&type=import"),
        ["Import Alpha"]
    );
    assert!(names("/api/operations?status=completed").is_empty());
    assert_eq!(
        names("/api/operations?include=active&type="),
        ["Import Alpha", "Export Beta"]
    );
    assert_eq!(names("/api/operations?include=history"), ["old import"]);
    assert_eq!(
        names("/api/operations?include=all"),
        ["Import Alpha", "Export Beta", "old import"],
        "running first, then finished"
    );
    assert_eq!(
        names("/api/operations?include=all&name=import"),
        ["Import Alpha", "old import"]
    );
    assert_eq!(
        names("/api/operations?include=all&status=completed"),
        ["old import"]
    );

    // limit and truncated
    let one = fx.get_json("/api/operations?limit=1");
    assert_eq!(one["operations"].as_array().unwrap().len(), 1);
    assert_eq!(one["truncated"], true);
    let two = fx.get_json("/api/operations?limit=2");
    assert_eq!(
        (
            two["operations"].as_array().unwrap().len(),
            &two["truncated"]
        ),
        (2, &Value::Bool(false))
    );
    let all2 = fx.get_json("/api/operations?include=all&limit=2");
    assert_eq!(all2["truncated"], true, "history had one more");
    let all3 = fx.get_json("/api/operations?include=all&limit=3");
    assert_eq!(all3["truncated"], false);
    let zero = fx.get_json("/api/operations?limit=0");
    assert_eq!(
        (
            zero["operations"].as_array().unwrap().len(),
            &zero["truncated"]
        ),
        (0, &Value::Bool(true))
    );

    // time: a running operation counts as finishing now
    let hour = 3_600_000;
    let past = now_ms() - hour;
    let future = now_ms() + hour;
    assert_eq!(names(&format!("/api/operations?since={past}")).len(), 2);
    assert!(names(&format!("/api/operations?until={past}")).is_empty());
    assert!(names(&format!("/api/operations?since={future}")).is_empty());
    assert_eq!(
        names("/api/operations?since=2000-01-01T00:00:00Z&until=2999-01-01").len(),
        2
    );
    assert_eq!(
        names(&format!("/api/operations?include=history&until={future}")),
        ["old import"]
    );
    assert!(names("/api/operations?include=history&until=2000-01-01T00:00:00%2B01:00").is_empty());

    drop((a, b));
    let _ = done;
}

#[test]
fn history_filters_and_jsonl() {
    let fx = Fixture::new();
    let first = fx.run("import", "import one", false);
    let failed = fx.run("import", "import two", true);
    let export = fx.run("export", "export one", false);
    let running = fx.start("import", "still running");
    running.inc(1);

    let h = fx.get_json("/api/history");
    let ids: Vec<u64> = h["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        [export.as_u64(), failed.as_u64(), first.as_u64()],
        "newest first, finished only"
    );
    assert_eq!(h["truncated"], false);

    let ids_of = |path: &str| fx.history_ids(path);
    assert_eq!(ids_of("/api/history?status=failed"), [failed.as_u64()]);
    assert_eq!(ids_of("/api/history?status=FAILED"), [failed.as_u64()]);
    assert_eq!(ids_of("/api/history?type=export"), [export.as_u64()]);
    assert_eq!(ids_of("/api/history?name=Two"), [failed.as_u64()]);
    assert_eq!(ids_of("/api/history?name=import%20one"), [first.as_u64()]);
    assert_eq!(ids_of("/api/history?name=import+one"), [first.as_u64()]);
    assert_eq!(
        ids_of("/api/history?type=import&status=completed"),
        [first.as_u64()]
    );
    assert_eq!(
        ids_of("/api/history?limit=2"),
        [export.as_u64(), failed.as_u64()]
    );
    assert_eq!(fx.get_json("/api/history?limit=2")["truncated"], true);
    assert_eq!(fx.get_json("/api/history?limit=3")["truncated"], false);
    let hour = 3_600_000;
    assert_eq!(
        ids_of(&format!("/api/history?since={}", now_ms() - hour)).len(),
        3
    );
    assert!(ids_of(&format!("/api/history?since={}", now_ms() + hour)).is_empty());
    assert!(ids_of("/api/history?until=2001-02-03T04:05:06.789Z").is_empty());
    assert_eq!(ids_of("/api/history?until=2999-12-31").len(), 3);

    let failed_state = &fx.get_json("/api/history?status=failed")["operations"][0];
    assert_eq!(failed_state["error"]["message"], "import failed");
    let step = &failed_state["root"]["children"][0];
    assert_eq!(step["error"]["message"], "disk full");
    assert_eq!(step["error"]["fields"]["path"], "/data/in.wav");

    let jsonl = fx.get("/api/history.jsonl");
    assert_eq!(jsonl.status, 200);
    assert!(
        jsonl
            .header("content-type")
            .unwrap()
            .starts_with("application/x-ndjson")
    );
    let lines: Vec<Value> = jsonl
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<u64> = lines.iter().map(|l| l["id"].as_u64().unwrap()).collect();
    assert_eq!(
        ids,
        [first.as_u64(), failed.as_u64(), export.as_u64()],
        "oldest first"
    );
    assert!(jsonl.body.ends_with('\n'));
    let filtered = fx.get("/api/history.jsonl?type=import&status=completed");
    assert_eq!(filtered.body.lines().count(), 1);
    let limited = fx.get("/api/history.jsonl?limit=1");
    let only: Value = serde_json::from_str(limited.body.trim()).unwrap();
    assert_eq!(
        only["id"].as_u64(),
        Some(export.as_u64()),
        "the newest, when limited"
    );
    assert_eq!(fx.get("/api/history.jsonl?since=2999-01-01").body, "");
    drop(running);
}

#[test]
fn planned_children_in_the_json_and_the_text() {
    let fx = Fixture::new();
    let span = fx.traced.planned("tour");
    let id = tracing_progress::ProgressSpanExt::operation_id(&span).expect("tracked");
    let live = fx.get_json(&format!("/api/operations/{id}"));
    let songs = live["root"]["children"].as_array().expect("children");
    let row = |s: &Value| format!("{} {} {}", s["name"], s["status"], s["planned"]);
    assert_eq!(
        songs.iter().map(row).collect::<Vec<_>>(),
        [
            "\"a.wav\" \"completed\" null",
            "\"b.wav\" \"pending\" true",
            "\"c.wav\" \"pending\" true"
        ]
    );
    assert_eq!(live["root"]["total"], 3);
    assert_eq!(live["root"]["current"], 1);
    let text = fx.get(&format!("/api/operations/{id}/text")).body;
    assert!(
        text.contains("Song 2/3: b.wav (ID: ") && text.contains("Status: Pending (planned)"),
        "{text}"
    );
    // The setlist ends with two songs never run: skipped, not failed.
    drop(span);
    let done = fx.get_json(&format!("/api/operations/{id}"));
    assert_eq!(done["status"], "completed");
    assert_eq!(done["root"]["skipped"], 2);
    assert!(done["root"].get("with_failures").is_none(), "{done}");
    assert_eq!(done["root"]["children"][2]["cancel_reason"], "skipped");
    let text = fx.get(&format!("/api/operations/{id}/text")).body;
    assert!(text.contains("Song 3/3: c.wav (ID: "), "{text}");
    assert!(text.contains("Status: Skipped"), "{text}");
    assert!(text.contains("(1/3 songs, 2 skipped"), "{text}");
}

#[test]
fn one_operation_as_json_and_text() {
    let fx = Fixture::new();
    let failed = fx.run("import", "broken import", true);
    let running = fx.start("import", "live import");
    running.inc(4);
    // `inc` returns once the store has the units.
    assert_eq!(
        fx.store().get(running.id).unwrap().root.children[0].current,
        4
    );

    let live = fx.get_json(&format!("/api/operations/{}", running.id));
    assert_eq!(live["id"].as_u64(), Some(running.id.as_u64()));
    assert_eq!(live["schema_version"], 1);
    assert_eq!(live["status"], "running");
    assert_eq!(live["root"]["children"][0]["current"], 4);
    assert_eq!(live["root"]["children"][0]["unit"], "blocks");

    let done = fx.get_json(&format!("/api/operations/{failed}"));
    assert_eq!(done["status"], "failed");
    let step = &done["root"]["children"][0];
    assert_eq!(step["metadata"]["block_id"], 7);
    assert_eq!(
        step["error"]["path"],
        serde_json::json!(["broken import", "step-1"])
    );
    // Recent events: the step's lines, and the error carries those before it.
    let recent = step["recent_events"].as_array().expect("recent_events");
    assert_eq!(recent.len(), 2, "{step}");
    assert_eq!(recent[0]["level"], "warn");
    assert_eq!(recent[0]["message"], "disk almost full");
    assert_eq!(recent[0]["fields"]["free_mb"], 3);
    assert!(recent[0]["at_us"].as_u64().unwrap() > 0);
    assert_eq!(recent[1]["level"], "error");
    assert_eq!(recent[1]["fields"]["path"], "/data/in.wav");
    assert_eq!(
        step["error"]["recent_events"][0]["message"],
        "disk almost full"
    );
    assert_eq!(step["error"]["recent_events"].as_array().unwrap().len(), 1);

    let text = fx.get(&format!("/api/operations/{failed}/text"));
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(text.body.contains("broken import"), "{}", text.body);
    assert!(text.body.contains("disk full"), "{}", text.body);
    assert!(text.body.contains("step-1"), "{}", text.body);
    let summary = fx.get(&format!("/api/operations/{failed}/text?detail=summary"));
    assert_eq!(summary.status, 200);
    assert!(summary.body.lines().count() <= text.body.lines().count());
    let live_text = fx.get(&format!(
        "/api/operations/{}/text?detail=normal",
        running.id
    ));
    assert!(live_text.body.contains("live import"), "{}", live_text.body);

    // unknown and malformed ids
    for path in [
        "/api/operations/999999999",
        "/api/operations/999999999/text",
    ] {
        let e = fx.get(path).error(404);
        assert!(e.contains("999999999"), "{e}");
    }
    for path in [
        "/api/operations/abc",
        "/api/operations/-1",
        "/api/operations/1.5",
        "/api/operations/99999999999999999999999",
        "/api/operations/abc/text",
        "/api/operations/%FF%FE",
    ] {
        let e = fx.get(path).error(400);
        assert!(e.contains("operation id"), "{path}: {e}");
    }
}

#[test]
fn a_retried_step_shows_its_attempts_in_json_and_text() {
    let fx = Fixture::new();
    let id = fx.traced.run_retried("nightly sync");
    let done = fx.get_json(&format!("/api/operations/{id}"));
    assert_eq!(done["status"], "completed");
    assert!(done.get("with_failures").is_none(), "{done}");
    assert!(done["root"].get("failures_below").is_none(), "{done}");
    assert_eq!(done["root"]["current"], 1);
    assert_eq!(done["metrics"]["retried"], 1);
    assert_eq!(done["metrics"]["nodes_failed"], 0);
    let steps = done["root"]["children"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "one node for the retried step: {done}");
    let a = &steps[0]["attempts"];
    assert_eq!(a["number"], 2, "{done}");
    let first = &a["earlier"][0];
    assert_eq!(
        (&first["number"], &first["status"]),
        (&1.into(), &"failed".into())
    );
    assert_eq!(first["error"]["message"], "connection reset");
    assert_eq!(first["error"]["recent_events"][0]["message"], "slow link");
    assert!(first["duration_us"].as_u64().is_some());
    // The history answer is the same snapshot.
    let listed = fx.get_json("/api/history?name=nightly%20sync");
    assert!(listed.to_string().contains("\"attempts\""), "{listed}");

    let text = fx.get(&format!("/api/operations/{id}/text"));
    assert!(
        text.body.contains("Attempt: 2 (after 1 failed)"),
        "{}",
        text.body
    );
    assert!(
        text.body.contains("- Attempt 1: Failed in "),
        "{}",
        text.body
    );
    assert!(
        text.body.contains("WARN slow link rtt_ms=900"),
        "{}",
        text.body
    );
}

#[test]
fn bad_parameters_are_400_naming_the_parameter() {
    let fx = Fixture::new();
    let cases = [
        ("/api/operations?status=done", "status"),
        ("/api/operations?limit=ten", "limit"),
        ("/api/operations?limit=-1", "limit"),
        ("/api/operations?limit=10001", "limit"),
        ("/api/operations?limit=99999999999999999999999", "limit"),
        ("/api/operations?since=yesterday", "since"),
        ("/api/operations?until=2026-13-01T00:00:00Z", "until"),
        ("/api/operations?since=2026-01-01T00:00:00", "since"),
        ("/api/operations?since=1969-12-31T23:59:59Z", "since"),
        ("/api/operations?since=999999999999999999", "since"),
        ("/api/operations?since=2026-02-01&until=2026-01-01", "since"),
        ("/api/operations?include=everything", "include"),
        ("/api/operations?stauts=failed", "stauts"),
        ("/api/operations?limit=1&limit=2", "limit"),
        ("/api/operations?name=%ZZ", "name"),
        ("/api/operations?name=%C3%28", "name"),
        ("/api/history?include=all", "include"),
        ("/api/history?status=nope", "status"),
        ("/api/history.jsonl?until=noon", "until"),
        ("/api/history.jsonl?limit=x", "limit"),
        ("/api/operations/1/text?detail=everything", "detail"),
        ("/api/operations/1?verbose=1", "verbose"),
        ("/api/health?x=1", "x"),
        ("/api/events?last_event_id=abc", "last_event_id"),
    ];
    for (path, param) in cases {
        let e = fx.get(path).error(400);
        assert!(e.contains(param), "{path}: {e:?} should name {param}");
    }
    // The messages say why, too.
    let e = fx.get("/api/operations?status=done").error(400);
    assert!(
        e.contains("pending, running, completed, completed_with_failures, failed, cancelled"),
        "{e}"
    );
    let e = fx.get("/api/operations?since=yesterday").error(400);
    assert!(e.contains("RFC 3339") && e.contains("milliseconds"), "{e}");

    let e = fx
        .request("GET", "/api/events", &[("Last-Event-ID", "x")])
        .error(400);
    assert!(e.contains("Last-Event-ID"), "{e}");

    // Unknown paths and methods are JSON too.
    let e = fx.get("/api/nope").error(404);
    assert!(e.contains("/api/nope"), "{e}");
    let e = fx.request("POST", "/api/health", &[]).error(405);
    assert!(e.contains("POST"), "{e}");
    let e = fx.request("DELETE", "/api/operations/1", &[]).error(405);
    assert!(e.contains("DELETE"), "{e}");
}

#[test]
fn hostile_input_never_panics_or_500s() {
    let fx = Fixture::configured(|b| b.token(TOKEN));
    let long = "a".repeat(8000);
    let paths = [
        format!("/api/operations?name={long}"),
        format!("/api/operations?{long}={long}"),
        "/api/operations?=&&&=x&%00=%00".to_owned(),
        "/api/operations?since=%F0%9F%92%A9".to_owned(),
        "/api/operations?since=2026-01-01T00:00:00.%2B01:00".to_owned(),
        "/api/operations?since=0000-01-01".to_owned(),
        "/api/operations?since=9999-12-31T23:59:60.999999999Z".to_owned(),
        "/api/operations?limit=%2B5".to_owned(),
        "/api/operations/18446744073709551615".to_owned(),
        "/api/operations/18446744073709551616/text".to_owned(),
        "/api/operations/%00".to_owned(),
        "/api/operations//text".to_owned(),
        "/api/history.jsonl?status=%0A".to_owned(),
        "/api/events?last_event_id=18446744073709551616".to_owned(),
        "/api/operations/0/cancel".to_owned(),
    ];
    for path in &paths {
        for method in ["GET", "POST"] {
            let resp = fx.request(
                method,
                path,
                &[("Authorization", &format!("Bearer {TOKEN}"))],
            );
            assert!(
                (200..500).contains(&resp.status),
                "{method} {}: {}",
                &path[..path.len().min(80)],
                resp.status
            );
            if resp.status >= 400 {
                resp.error(resp.status);
            }
        }
    }
    // still serving
    assert_eq!(fx.get_json("/api/health")["ok"], true);
}

#[test]
fn cancel_needs_the_token() {
    let fx = Fixture::configured(|b| b.token(TOKEN));
    let health = fx.get_json("/api/health");
    assert_eq!(health["cancel_enabled"], true);
    let op = fx.start("import", "to cancel");
    let path = format!("/api/operations/{}/cancel", op.id);

    let missing = fx.request("POST", &path, &[]);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    assert!(missing.error(401).contains("Authorization: Bearer"));
    let wrong = fx.request("POST", &path, &[("Authorization", "Bearer nope")]);
    assert_eq!(wrong.error(401), "wrong token");
    let malformed = fx.request("POST", &path, &[("Authorization", TOKEN)]);
    assert!(malformed.error(401).contains("malformed"));
    let basic = fx.request("POST", &path, &[("Authorization", "Basic dXNlcjpwdw==")]);
    basic.error(401);
    let in_url = fx.request("POST", &format!("{path}?token={TOKEN}"), &[]);
    in_url.error(401);
    assert!(
        !fx.store().get(op.id).unwrap().cancel_requested,
        "nothing cancelled yet"
    );

    let auth = format!("Bearer {TOKEN}");
    let ok = fx.request("POST", &path, &[("Authorization", &auth)]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(
        ok.json(),
        serde_json::json!({"id": op.id.as_u64(), "cancel_requested": true})
    );
    let lower = fx.request(
        "POST",
        &path,
        &[("authorization", &format!("bearer {TOKEN}"))],
    );
    assert_eq!(lower.status, 200, "scheme is case-insensitive");

    let id = op.id;
    op.finish();
    let state = fx.get_json(&format!("/api/operations/{id}"));
    assert_eq!(state["status"], "cancelled");
    assert_eq!(state["cancel_requested"], true);

    let again = fx
        .request("POST", &path, &[("Authorization", &auth)])
        .error(404);
    assert!(again.contains("already finished (cancelled)"), "{again}");
    let unknown = fx.request(
        "POST",
        "/api/operations/987654321/cancel",
        &[("Authorization", &auth)],
    );
    assert!(unknown.error(404).contains("987654321"));
    let bad = fx.request(
        "POST",
        "/api/operations/x/cancel",
        &[("Authorization", &auth)],
    );
    assert!(bad.error(400).contains("operation id"));
    // The token is checked before anything else: no probing ids without it.
    fx.request("POST", "/api/operations/x/cancel", &[])
        .error(401);
    // GET on the cancel path is not a cancel.
    fx.request("GET", &path, &[("Authorization", &auth)])
        .error(405);
}

#[test]
fn without_a_token_cancel_is_disabled() {
    let fx = Fixture::new();
    let op = fx.start("import", "not cancellable");
    let path = format!("/api/operations/{}/cancel", op.id);
    let e = fx.request("POST", &path, &[]).error(403);
    assert!(e.contains("no token"), "{e}");
    let e = fx
        .request("POST", &path, &[("Authorization", "Bearer guess")])
        .error(403);
    assert!(e.contains("no token"), "{e}");
    assert!(!fx.store().get(op.id).unwrap().cancel_requested);
}

#[test]
fn reads_can_require_the_token() {
    let fx = Fixture::configured(|b| b.token(TOKEN).require_token_for_reads(true));
    let id = fx.run("import", "secret", false);
    for path in [
        "/api/operations".to_owned(),
        format!("/api/operations/{id}"),
        format!("/api/operations/{id}/text"),
        "/api/history".to_owned(),
        "/api/history.jsonl".to_owned(),
        "/api/events".to_owned(),
    ] {
        let e = fx.get(&path).error(401);
        assert!(e.contains("missing token"), "{path}: {e}");
        fx.request("GET", &path, &[("Authorization", "Bearer wrong")])
            .error(401);
        fx.get(&format!("{path}?token=wrong")).error(401);
        if path != "/api/events" {
            let ok = fx.request(
                "GET",
                &path,
                &[("Authorization", &format!("Bearer {TOKEN}"))],
            );
            assert_eq!(ok.status, 200, "{path}: {ok:?}");
            let ok = fx.get(&format!("{path}?token={TOKEN}"));
            assert_eq!(ok.status, 200, "{path} with ?token=: {ok:?}");
        }
    }
    let mut sse = fx.sse(&format!("/api/events?token={TOKEN}"), &[]);
    sse.ready();
    // Health and the page stay open (the page asks for the token itself).
    let health = fx.get_json("/api/health");
    assert_eq!(health["token_required_for_reads"], true);
    assert_eq!(fx.get("/").status, 200);
}

#[test]
fn non_loopback_bind_needs_a_token() {
    let (_layer, store) = tracing_progress::layer::<Registry>();
    let err = Server::builder(store.clone())
        .bind(([0, 0, 0, 0], 0))
        .spawn()
        .unwrap_err();
    assert!(matches!(err, ServeError::TokenRequired { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("0.0.0.0") && msg.contains("token") && msg.contains("loopback"),
        "{msg}"
    );
    let err = Server::builder(store.clone())
        .bind("[::]:0".parse::<SocketAddr>().unwrap())
        .spawn()
        .unwrap_err();
    assert!(matches!(err, ServeError::TokenRequired { .. }), "{err:?}");

    for bad in ["", "has space", "tab\there", "ünïcode"] {
        let err = Server::builder(store.clone())
            .bind(([127, 0, 0, 1], 0))
            .token(bad)
            .spawn()
            .unwrap_err();
        assert!(matches!(err, ServeError::InvalidToken), "{bad:?}: {err:?}");
    }
    let err = Server::builder(store.clone())
        .bind(([127, 0, 0, 1], 0))
        .require_token_for_reads(true)
        .spawn()
        .unwrap_err();
    assert!(matches!(err, ServeError::TokenRequired { .. }), "{err:?}");

    // With a token it starts, and reads need the token there.
    let server = Server::builder(store.clone())
        .bind(([0, 0, 0, 0], 0))
        .token(TOKEN)
        .spawn()
        .expect("starts with a token");
    let local = SocketAddr::from(([127, 0, 0, 1], server.local_addr().port()));
    over_socket(local, "GET", "/api/operations", &[]).error(401);
    let ok = over_socket(
        local,
        "GET",
        "/api/operations",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(ok.status, 200);
    server.shutdown();

    // A busy port is a clear error too.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = Server::builder(store)
        .bind(taken.local_addr().unwrap())
        .spawn()
        .unwrap_err();
    assert!(matches!(err, ServeError::Bind { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("cannot listen on 127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn loopback_server_refuses_foreign_host_headers() {
    // The Host check belongs to the server (a router served elsewhere leaves it to that
    // server), so these requests go over the socket.
    let fx = Fixture::new();
    for host in ["evil.example", "evil.example:7878", "10.1.2.3"] {
        let e = over_socket(fx.addr(), "GET", "/api/operations", &[("Host", host)]).error(403);
        assert!(e.contains("loopback"), "{e}");
        assert_eq!(
            over_socket(fx.addr(), "GET", "/", &[("Host", host)]).status,
            403
        );
    }
    let port = fx.addr().port();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let ok = over_socket(fx.addr(), "GET", "/api/operations", &[("Host", &host)]);
        assert_eq!(ok.status, 200, "{host}");
    }
    let open = Fixture::configured(|b| b.allow_any_host());
    let ok = over_socket(
        open.addr(),
        "GET",
        "/api/operations",
        &[("Host", "proxy.example")],
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn events_stream_snapshots_and_the_final_state() {
    let fx = Fixture::new();
    let before = fx.start("import", "already running");
    let mut sse = fx.sse("/api/events", &[]);
    let (ready, initial) = sse.ready();
    assert_eq!(initial.len(), 1, "{initial:?}");
    assert_eq!(initial[0].event, "snapshot");
    assert_eq!(initial[0].op(), before.id.as_u64());
    assert_eq!(ready.json()["active"], 1);
    assert!(ready.id.unwrap() >= initial[0].id.unwrap());

    let op = fx.start("import", "streamed");
    // Pushed on the store's change signal: the first snapshot may catch the root created but
    // not yet entered (pending); it must come to running.
    let (first, _) = sse.until("running snapshot of the new operation", |e| {
        e.event == "snapshot" && e.op() == op.id.as_u64() && e.json()["status"] != "pending"
    });
    assert_eq!(first.json()["status"], "running");
    op.inc(3);
    let (progress, _) = sse.until("progress 3", |e| {
        e.event == "snapshot"
            && e.op() == op.id.as_u64()
            && e.json()["root"]["children"][0]["current"] == 3
    });
    let id = op.id.as_u64();
    op.finish();
    let (fin, between) = sse.until("finished", |e| e.event == "finished");
    assert_eq!(fin.op(), id);
    assert_eq!(fin.json()["status"], "completed");
    assert!(fin.json()["completed_at_us"].as_u64().is_some());
    for e in &between {
        assert!(e.event == "snapshot", "{e:?}");
    }
    // ids grow strictly
    let ids: Vec<u64> = sse
        .seen
        .iter()
        .filter(|e| e.event != "ready") // ready repeats the newest id
        .filter_map(|e| e.id)
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(fin.id > progress.id);

    // a failure arrives with its context
    fx.run("import", "fails", true);
    let (failed, _) = sse.until("failed final", |e| e.event == "finished");
    let state = failed.json();
    assert_eq!(state["status"], "failed");
    assert_eq!(state["error"]["message"], "import failed");
    assert_eq!(
        state["root"]["children"][0]["error"]["message"],
        "disk full"
    );
    drop(before);
}

#[test]
fn a_reconnecting_client_gets_the_final_states_it_missed() {
    let fx = Fixture::new();
    let op = fx.start("import", "finishes while away");
    let op_id = op.id.as_u64();
    let mut sse = fx.sse("/api/events", &[]);
    let (ready, initial) = sse.ready();
    assert_eq!(initial[0].op(), op_id);
    let last = ready.id.unwrap().to_string();
    drop(sse); // disconnected

    op.finish();
    let other = fx.run("export", "also while away", false).as_u64();

    // Resume with the header, as EventSource does.
    let mut back = fx.sse("/api/events", &[("Last-Event-ID", &last)]);
    let (ready2, replay) = back.ready();
    let finals: Vec<(u64, String)> = replay
        .iter()
        .filter(|e| e.event == "finished")
        .map(|e| (e.op(), e.json()["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        finals,
        [
            (op_id, "completed".to_owned()),
            (other, "completed".to_owned())
        ],
        "{replay:?}"
    );
    assert!(
        replay.iter().all(|e| e.event != "snapshot"),
        "nothing is running: {replay:?}"
    );
    assert!(ready2.id.unwrap() > ready.id.unwrap());

    // The same with ?last_event_id= (a client that reconnects by itself).
    let mut by_query = fx.sse(&format!("/api/events?last_event_id={last}"), &[]);
    let (_, replay) = by_query.ready();
    assert_eq!(replay.iter().filter(|e| e.event == "finished").count(), 2);

    // Resuming from the newest id replays nothing; a fresh client gets no old finals.
    let newest = ready2.id.unwrap().to_string();
    let mut current = fx.sse("/api/events", &[("Last-Event-ID", &newest)]);
    assert!(current.ready().1.is_empty());
    let mut fresh = fx.sse("/api/events", &[]);
    assert!(fresh.ready().1.is_empty());
    // An id this server never gave (a restarted server) starts afresh.
    let mut future = fx.sse("/api/events", &[("Last-Event-ID", "999999999")]);
    assert!(future.ready().1.is_empty());

    // The resumed stream keeps going live.
    let later = fx.run("import", "after reconnect", false).as_u64();
    let (fin, _) = back.until("live final", |e| e.event == "finished");
    assert_eq!(fin.op(), later);
}

#[test]
fn replay_buffer_overflow_is_reported() {
    let fx = Fixture::configured(|b| b.replay_capacity(2));
    let ids: Vec<u64> = (0..5)
        .map(|i| fx.run("batch", &format!("job {i}"), false).as_u64())
        .collect();
    let mut sse = fx.sse("/api/events", &[("Last-Event-ID", "0")]);
    let (_, replay) = sse.ready();
    assert_eq!(replay[0].event, "missed", "{replay:?}");
    assert_eq!(
        replay[0].json(),
        serde_json::json!({"reason": "replay_buffer", "after_id": 0})
    );
    let finals: Vec<u64> = replay[1..].iter().map(SseEvent::op).collect();
    assert_eq!(finals, ids[3..], "the newest two are kept");
}

#[test]
fn history_eviction_is_reported() {
    let fx = Fixture::with(Builder::new().history_limit(2), |b| b);
    let ids: Vec<u64> = (0..5)
        .map(|i| fx.run("batch", &format!("job {i}"), false).as_u64())
        .collect();
    let mut sse = fx.sse("/api/events", &[("Last-Event-ID", "0")]);
    let (_, replay) = sse.ready();
    assert_eq!(replay[0].event, "missed", "{replay:?}");
    assert_eq!(
        replay[0].json(),
        serde_json::json!({"reason": "history", "count": 3})
    );
    let finals: Vec<u64> = replay[1..].iter().map(SseEvent::op).collect();
    assert_eq!(finals, ids[3..]);
}

#[test]
fn many_clients_share_one_stream() {
    let fx = Fixture::new();
    let mut clients: Vec<SseClient> = (0..20).map(|_| fx.sse("/api/events", &[])).collect();
    for c in &mut clients {
        c.ready();
    }
    let op = fx.start("import", "watched by many");
    op.inc(5);
    let id = op.id.as_u64();
    op.finish();
    for c in &mut clients {
        let (fin, _) = c.until("finished", |e| e.event == "finished");
        assert_eq!(fin.op(), id);
        assert_eq!(fin.json()["status"], "completed");
    }
}

#[test]
fn shutdown_ends_streams_and_frees_the_port() {
    let fx = Fixture::new();
    let addr = fx.addr();
    let mut sse = SseClient::connect(addr, "/api/events", &[]);
    sse.ready();
    let started = Instant::now();
    fx.server.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The stream ended: reading gets the last chunk or EOF, not a hang.
    let mut rest = Vec::new();
    let _ = sse.reader.read_to_end(&mut rest);
    // A bare connect, on purpose: the point is that the port refuses connections.
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );

    // Dropping the handle stops a server too.
    let (_layer, store) = tracing_progress::layer::<Registry>();
    let server = Server::builder(store)
        .bind(([127, 0, 0, 1], 0))
        .spawn()
        .unwrap();
    let addr = server.local_addr();
    assert_eq!(over_socket(addr, "GET", "/api/health", &[]).status, 200);
    drop(server);
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn server_url_and_thread() {
    let fx = Fixture::new();
    assert_eq!(fx.server.url(), format!("http://{}/", fx.addr()));
    assert_ne!(fx.addr().port(), 0);
    // The server's own work happens on its named thread, never under the program's subscriber:
    // serving requests creates no operations.
    for _ in 0..5 {
        over_socket(fx.addr(), "GET", "/api/operations", &[]);
    }
    assert_eq!(fx.store().stats().active + fx.store().stats().history, 0);
}

#[test]
fn router_serves_from_your_own_runtime() {
    let (layer, store) = tracing_progress::layer::<Registry>();
    let dispatch = Dispatch::new(tracing_subscriber::registry().with(layer));
    tracing::dispatcher::with_default(&dispatch, || {
        info_span!("embedded", progress.level = "job").in_scope(|| {});
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = tracing_progress::http::router(store.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });
    let resp = over_socket(addr, "GET", "/api/history", &[]);
    assert_eq!(resp.json()["operations"][0]["name"], "embedded");
    // into_router carries the token.
    let with_token = Server::builder(store).token(TOKEN).into_router().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(async move { axum::serve(listener, with_token).await });
    over_socket(addr, "POST", "/api/operations/1/cancel", &[]).error(401);
    runtime.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn metadata_filters_on_active_and_history() {
    let fx = Fixture::new();
    // `Traced::run` gives step-1 of each operation `block_id = 7`.
    let plain = fx.run("import", "import one", false);
    let sized = tracing::dispatcher::with_default(&fx.traced.dispatch, || {
        use tracing_progress::ProgressSpanExt;
        let root = info_span!("job", progress.level = "job", progress.name = "sized");
        let id = root.operation_id().expect("tracked");
        root.in_scope(|| {
            info_span!(
                "block",
                progress.level = "block",
                block_id = "block-002",
                size = 120u64
            )
            .in_scope(|| {});
        });
        id
    });
    let running = fx.start("sync", "still running");
    running.inc(1);

    let ids_of = |path: &str| fx.history_ids(path);
    assert_eq!(
        ids_of("/api/history?meta=block_id=block-002"),
        [sized.as_u64()]
    );
    assert_eq!(
        ids_of("/api/history?meta=meta.block_id%3Dblock-002"),
        [sized.as_u64()]
    );
    assert_eq!(ids_of("/api/history?meta=block_id=7"), [plain.as_u64()]);
    assert_eq!(ids_of("/api/history?meta=size%3E%3D100"), [sized.as_u64()]);
    assert_eq!(ids_of("/api/history?meta=size%3E%3D121"), Vec::<u64>::new());
    assert_eq!(
        ids_of("/api/history?meta=size%3E%3D100&meta=block_id=7"),
        Vec::<u64>::new()
    );
    assert_eq!(ids_of("/api/history?meta=&type=import"), [plain.as_u64()]);
    // Running operations: the held one has no metadata.
    assert_eq!(ids_of("/api/operations"), [running.id.as_u64()]);
    assert_eq!(ids_of("/api/operations?meta=block_id=7"), Vec::<u64>::new());
    assert_eq!(
        ids_of("/api/operations?include=all&meta=block_id=7"),
        [plain.as_u64()]
    );
    let lines = fx.get("/api/history.jsonl?meta=size%3C1000");
    assert_eq!(lines.status, 200);
    assert_eq!(lines.body.lines().count(), 1, "{}", lines.body);

    for (path, why) in [
        ("/api/history?meta=size%3E=lots", "a number after"),
        ("/api/history?meta=size", "KEY=VALUE"),
        ("/api/operations?meta=a!=b", "there is no !="),
        ("/api/history.jsonl?meta==x", "a field name"),
    ] {
        let e = fx.get(path).error(400);
        assert!(
            e.starts_with("parameter meta: invalid metadata filter") && e.contains(why),
            "{path}: {e}"
        );
    }
    running.finish();
}
