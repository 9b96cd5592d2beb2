//! The `tracing-progress` CLI against a live server: a real layer feeds a store, the HTTP API
//! serves it on 127.0.0.1:0, and the built binary is run for each subcommand, as a user would.
#![cfg(all(feature = "cli", feature = "http"))]

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing_progress::http::Server;
use tracing_progress::{Builder, HistoryQuery, OperationId, ProgressState, Status, Store};

use support::{Held, TIMEOUT, Traced, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_tracing-progress");
const TOKEN: &str = "cli-test-token";

// ---------------------------------------------------------------------------------------------
// Fixture: a store fed by a real layer, a server over it, and three operations: one that
// failed in a step, one that completed, and one held open on a helper thread.

struct Fixture {
    traced: Traced,
    server: Server,
    failed: OperationId,
    completed: OperationId,
    held: Option<Held>,
}

impl Fixture {
    fn new() -> Self {
        let traced = Traced::new(Builder::new());
        let server = Server::builder(traced.store.clone())
            .bind(([127, 0, 0, 1], 0))
            .token(TOKEN)
            .poll_interval(Duration::from_millis(50))
            .spawn()
            .expect("server starts");
        let failed = traced.run("import", "nightly import", true);
        let completed = traced.run("report", "daily report", false);
        let held = traced.hold("sync", "held");
        held.inc(3);
        Fixture {
            traced,
            server,
            failed,
            completed,
            held: Some(held),
        }
    }

    fn store(&self) -> &Store {
        &self.traced.store
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn held_id(&self) -> OperationId {
        self.held.as_ref().expect("held").id
    }

    /// Runs the CLI against this server with no token.
    fn cli(&self, args: &[&str]) -> Run {
        run(&self.with_addr(args))
    }

    /// Runs the CLI with the right token.
    fn cli_token(&self, args: &[&str]) -> Run {
        let mut all = vec!["--token", TOKEN];
        all.extend_from_slice(args);
        run(&self.with_addr(&all))
    }

    fn with_addr(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["--addr".to_owned(), format!("http://{}", self.addr())];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    fn spawn_cli(&self, args: &[&str]) -> Child {
        command(&self.with_addr(args))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the CLI starts")
    }

    fn state(&self, id: OperationId) -> ProgressState {
        (*self.store().get(id).expect("known operation")).clone()
    }
}

/// Passes a child's output on line by line as it comes, from a thread.
fn lines_of(
    out: impl std::io::Read + Send + 'static,
) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let (line_tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    (lines, reader)
}

// ---------------------------------------------------------------------------------------------
// Running the binary.

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    #[track_caller]
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        &self.stdout
    }

    /// Asserts the exit code and a one-line error on stderr; returns it.
    #[track_caller]
    fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self:#?}");
        let err = self.stderr.trim_end();
        assert!(err.starts_with("error: "), "{self:#?}");
        err
    }

    #[track_caller]
    fn json(&self) -> Value {
        let out = self.ok();
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }
}

fn command(args: &[String]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TRACING_PROGRESS_ADDR")
        .env_remove("TRACING_PROGRESS_TOKEN")
        .stdin(Stdio::null());
    cmd
}

fn run(args: &[String]) -> Run {
    let out = command(args).output().expect("the CLI runs");
    to_run(out)
}

fn to_run(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}

/// Waits for a spawned CLI to exit, killing it after `TIMEOUT`.
fn wait_child(mut child: Child) -> Run {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("the CLI did not exit: {:#?}", to_run(out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut stdout).expect("stdout");
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut stderr).expect("stderr");
    }
    Run {
        code: child.wait().expect("status").code(),
        stdout,
        stderr,
    }
}

fn ids(v: &Value) -> Vec<u64> {
    v["operations"]
        .as_array()
        .expect("operations array")
        .iter()
        .map(|o| o["id"].as_u64().expect("id"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn help_and_usage_errors() {
    let help = run(&["--help".to_owned()]);
    let text = help.ok();
    for word in [
        "ls", "show", "watch", "history", "export", "cancel", "--addr", "--token", "--json",
    ] {
        assert!(text.contains(word), "{word} missing from --help:\n{text}");
    }
    assert!(text.contains("TRACING_PROGRESS_ADDR") && text.contains("TRACING_PROGRESS_TOKEN"));
    assert!(text.contains("Exit codes"), "{text}");

    let bad = run(&["ls".to_owned(), "--bogus".to_owned()]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert!(bad.stderr.contains("--bogus"), "{bad:#?}");
    let bad_id = run(&["show".to_owned(), "seven".to_owned()]);
    assert_eq!(bad_id.code, Some(2), "{bad_id:#?}");
    let https = run(&["--addr".into(), "https://127.0.0.1:1".into(), "ls".into()]);
    assert!(https.fails(2).contains("https is not supported"));
}

#[test]
fn ls_human_and_json() {
    let f = Fixture::new();
    let held = f.held_id();

    let out = f.cli(&["ls"]);
    let text = out.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{text}"
    );
    assert_eq!(
        lines.len(),
        2,
        "header and the held operation only:\n{text}"
    );
    let row = lines[1];
    assert!(row.starts_with(&held.to_string()), "{text}");
    for word in ["running", "sync", "0/1", "held"] {
        assert!(row.contains(word), "{word} missing: {text}");
    }

    let all = f.cli(&["ls", "--all"]);
    let text = all.ok();
    assert!(
        text.contains("nightly import") && text.contains("daily report"),
        "{text}"
    );
    let failed_row = text
        .lines()
        .find(|l| l.contains("nightly import"))
        .expect("failed row");
    assert!(failed_row.starts_with(&f.failed.to_string()), "{text}");
    assert!(failed_row.contains("failed"), "{text}");
    assert_eq!(f.state(f.failed).status, Status::Failed);
    assert!(
        text.contains(&format!(
            "{failed_row}\n    error in nightly import: import failed\n    first failure in \
             nightly import › step-1: disk full\n"
        )),
        "the errors below the row, the failed block's with its path:\n{text}"
    );

    // JSON: what the store holds.
    let v = f.cli(&["ls", "--json"]).json();
    assert_eq!(v["truncated"], false);
    let active: Vec<u64> = f.store().active().iter().map(|s| s.id.as_u64()).collect();
    assert_eq!(ids(&v), active);
    let first: ProgressState =
        serde_json::from_value(v["operations"][0].clone()).expect("a ProgressState");
    assert_eq!(first.name.as_ref(), "held");
    assert_eq!(first.status, Status::Running);
    assert_eq!(first.root.children[0].current, 3);

    let v = f.cli(&["ls", "--all", "--json"]).json();
    assert_eq!(
        ids(&v),
        [held.as_u64(), f.completed.as_u64(), f.failed.as_u64()],
        "running first, then finished newest first"
    );

    // Filters.
    let v = f
        .cli(&["ls", "--all", "--status", "failed", "--json"])
        .json();
    assert_eq!(ids(&v), [f.failed.as_u64()]);
    assert_eq!(v["operations"][0]["error"]["message"], "import failed");
    assert_eq!(
        v["operations"][0]["root"]["failures_below"]["first"]["message"],
        "disk full"
    );
    let v = f.cli(&["ls", "--all", "--type", "report", "--json"]).json();
    assert_eq!(ids(&v), [f.completed.as_u64()]);
    let v = f
        .cli(&["ls", "--all", "--name", "NIGHTLY", "--json"])
        .json();
    assert_eq!(ids(&v), [f.failed.as_u64()]);
    let v = f.cli(&["ls", "--all", "--limit", "1", "--json"]).json();
    assert_eq!(ids(&v), [held.as_u64()]);
    assert_eq!(v["truncated"], true);
    let text = f.cli(&["ls", "--all", "--limit", "1"]).ok().to_owned();
    assert!(text.contains("(more match: showing the first 1"), "{text}");
    let none = f.cli(&["ls", "--status", "failed"]);
    assert_eq!(none.ok().trim(), "no running operations match");
}

#[test]
fn rejected_parameters_show_the_api_error() {
    let f = Fixture::new();
    let err = f.cli(&["ls", "--status", "done"]).fails(2).to_owned();
    assert!(
        err.contains(r#"parameter status: invalid status "done""#),
        "the API's text: {err}"
    );
    let err = f
        .cli(&["history", "--since", "yesterday"])
        .fails(2)
        .to_owned();
    assert!(err.contains("parameter since"), "{err}");
    let err = f.cli(&["export", "--limit", "20000"]).fails(2).to_owned();
    assert!(err.contains("parameter limit"), "{err}");
    assert!(err.lines().count() == 1, "{err}");
}

#[test]
fn show_human_and_json() {
    let f = Fixture::new();
    let id = f.failed.to_string();

    let text = f.cli(&["show", &id]).ok().to_owned();
    assert!(
        text.contains(&format!("Import: \"nightly import\" (ID: {id})")),
        "{text}"
    );
    assert!(text.contains("disk full"), "{text}");
    assert!(text.contains("step-1") && text.contains("step-2"), "{text}");
    assert!(
        text.contains("/data/in.wav"),
        "verbose shows the error's fields:\n{text}"
    );
    assert!(
        text.contains("Recent Events:") && text.contains("WARN disk almost full free_mb=3"),
        "verbose shows the failed step's recent events:\n{text}"
    );

    let summary = f.cli(&["show", &id, "--detail", "summary"]).ok().to_owned();
    assert!(summary.lines().count() < text.lines().count(), "{summary}");
    assert!(!summary.contains("/data/in.wav"), "{summary}");
    assert!(summary.contains("disk full"), "{summary}");
    let shallow = f.cli(&["show", &id, "--max-depth", "0"]).ok().to_owned();
    assert!(!shallow.contains("step-2"), "{shallow}");

    // Exactly the verbose view of the store's snapshot (what `/text` renders too).
    let normal = f.cli(&["show", &id, "--detail", "normal"]).ok().to_owned();
    let expected = tracing_progress::view::Verbose::new(tracing_progress::view::Detail::Normal)
        .render(&f.state(f.failed));
    assert_eq!(normal.trim_end(), expected.trim_end());

    let v = f.cli(&["show", &id, "--json"]).json();
    let state: ProgressState = serde_json::from_value(v).expect("a ProgressState");
    assert_eq!(state, f.state(f.failed), "the JSON is the store's snapshot");

    let running = f.cli(&["show", &f.held_id().to_string()]).ok().to_owned();
    assert!(
        running.contains("\"held\"") && running.contains("part-1"),
        "{running}"
    );

    let err = f.cli(&["show", "987654321"]).fails(4).to_owned();
    assert!(err.contains("no operation with id 987654321"), "{err}");
    assert_eq!(f.cli(&["show", "987654321", "--json"]).code, Some(4));
}

#[test]
fn show_and_watch_planned_children() {
    let f = Fixture::new();
    let span = f.traced.planned("tour");
    let id = tracing_progress::ProgressSpanExt::operation_id(&span)
        .expect("tracked")
        .to_string();
    let text = f.cli(&["show", &id]).ok().to_owned();
    assert!(
        text.contains("Song 2/3: b.wav (ID: ") && text.contains("Status: Pending (planned)"),
        "{text}"
    );
    let summary = f.cli(&["show", &id, "--detail", "summary"]).ok().to_owned();
    assert!(summary.contains("Song 3/3: c.wav (ID: "), "{summary}");
    assert!(summary.contains(" - Pending (planned)"), "{summary}");
    let v = f.cli(&["show", &id, "--json"]).json();
    assert_eq!(v["root"]["children"][1]["planned"], true);
    // The ndjson stream writes the planned songs with their position, then their end.
    let mut child = f.spawn_cli(&["watch", &id, "--ndjson", "--timeout", "20s"]);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut read = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut lines: Vec<Value> = Vec::new();
    // Until the planned songs were written; then the setlist ends.
    while lines.iter().filter(|l| l["planned"] == true).count() < 2 {
        let line = read.next().expect("a line").expect("readable");
        lines.push(serde_json::from_str(&line).expect("JSON line"));
    }
    drop(span);
    for line in read {
        lines.push(serde_json::from_str(&line.expect("readable")).expect("JSON line"));
    }
    assert_eq!(child.wait().expect("exit").code(), Some(0));
    let b: Vec<&Value> = lines.iter().filter(|l| l["name"] == "b.wav").collect();
    assert_eq!(
        (
            &b[0]["status"],
            &b[0]["planned"],
            &b[0]["position"],
            &b[0]["of"]
        ),
        (&"pending".into(), &true.into(), &2.into(), &3.into()),
        "{lines:?}"
    );
    let last = b.last().expect("b.wav");
    assert_eq!(
        (&last["status"], &last["outcome"]),
        (&"cancelled".into(), &"skipped".into())
    );
    let after = f.cli(&["show", &id]).ok().to_owned();
    assert!(after.contains("Status: Skipped"), "{after}");
}

#[test]
fn show_a_retried_step_with_its_attempts() {
    let f = Fixture::new();
    let id = f.traced.run_retried("nightly sync").to_string();
    let text = f.cli(&["show", &id]).ok().to_owned();
    assert!(text.contains("Status: Completed (1/1 upload"), "{text}");
    assert!(!text.contains("with failures"), "{text}");
    assert!(text.contains("Attempt: 2 (after 1 failed)"), "{text}");
    assert!(
        text.contains("- Attempt 1: Failed in ") && text.contains("error: connection reset"),
        "{text}"
    );
    assert!(
        text.contains("WARN slow link rtt_ms=900"),
        "the failed attempt's events:\n{text}"
    );
    let summary = f.cli(&["show", &id, "--detail", "summary"]).ok().to_owned();
    let line = summary
        .lines()
        .find(|l| l.contains("a.bin"))
        .expect("the step");
    assert!(line.ends_with(", attempt 2 (after 1 failed)"), "{summary}");
    let v = f.cli(&["show", &id, "--json"]).json();
    assert_eq!(v["root"]["children"][0]["attempts"]["number"], 2, "{v}");
    let state: ProgressState = serde_json::from_value(v).expect("a ProgressState");
    assert_eq!(state.root.children[0].attempt(), 2);
}

/// NaN and infinite metadata used to be written as `null`, which no longer parsed, and one such
/// operation failed the whole `history`. They round-trip now, and the list shows them.
#[test]
fn history_lists_an_operation_with_nan_metadata() {
    let f = Fixture::new();
    tracing::dispatcher::with_default(&f.traced.dispatch, || {
        let span = tracing::info_span!(
            "measure",
            progress.level = "measure",
            progress.name = "odd floats",
            ratio = f64::NAN,
            peak = f64::INFINITY,
            low = f64::NEG_INFINITY
        );
        span.in_scope(|| {});
    });
    let text = f.cli(&["history"]).ok().to_owned();
    assert!(
        text.contains("odd floats") && text.contains("daily report"),
        "{text}"
    );
    let v = f.cli(&["history", "--json"]).json();
    let parsed: Vec<ProgressState> =
        serde_json::from_value(v["operations"].clone()).expect("ProgressStates");
    let odd = parsed
        .iter()
        .find(|s| &*s.name == "odd floats")
        .expect("listed");
    let ratio = odd.root.metadata.get("ratio").expect("kept");
    assert_eq!(ratio, &tracing_progress::FieldValue::F64(f64::NAN));
    assert_eq!(
        odd.root.metadata.get("low"),
        Some(&tracing_progress::FieldValue::F64(f64::NEG_INFINITY))
    );
    let show = f
        .cli(&["show", &odd.id.as_u64().to_string()])
        .ok()
        .to_owned();
    assert!(show.contains("NaN"), "{show}");
}

/// An operation this client cannot read (a newer server's schema) is counted and skipped; the
/// others are listed. The answer comes from a canned server on 127.0.0.1 (one connection).
#[test]
fn history_skips_what_it_cannot_read() {
    let f = Fixture::new();
    let good = f.state(f.completed);
    let body = format!(
        r#"{{"operations":[{{"id":99,"from":"the future"}},{}],"truncated":false}}"#,
        serde_json::to_string(&good).expect("JSON")
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let canned = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = listener.accept().expect("the CLI connects");
        let mut head = [0u8; 4096];
        let _ = s.read(&mut head);
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    });
    let out = run(&[
        "--addr".to_owned(),
        format!("http://{addr}"),
        "history".to_owned(),
    ]);
    canned.join().expect("canned server");
    let text = out.ok();
    assert!(text.contains("daily report"), "{text}");
    assert!(text.contains("1 operation not shown"), "{text}");
    assert!(text.contains("id 99"), "{text}");
}

#[test]
fn history_human_json_and_filters() {
    let f = Fixture::new();
    let text = f.cli(&["history"]).ok().to_owned();
    assert!(
        text.contains("nightly import") && text.contains("daily report"),
        "{text}"
    );
    assert!(!text.contains("held"), "{text}");
    assert!(text.contains("disk full"), "{text}");

    let v = f.cli(&["history", "--json"]).json();
    let history: Vec<u64> = f
        .store()
        .history(&HistoryQuery::new())
        .iter()
        .map(|s| s.id.as_u64())
        .collect();
    assert_eq!(ids(&v), history);
    assert_eq!(ids(&v), [f.completed.as_u64(), f.failed.as_u64()]);
    let parsed: Vec<ProgressState> =
        serde_json::from_value(v["operations"].clone()).expect("ProgressStates");
    assert_eq!(parsed[1], f.state(f.failed));

    let v = f
        .cli(&["history", "--status", "completed", "--json"])
        .json();
    assert_eq!(ids(&v), [f.completed.as_u64()]);
    let v = f
        .cli(&[
            "history",
            "--since",
            "2000-01-01",
            "--until",
            "2999-01-01T00:00:00Z",
            "--json",
        ])
        .json();
    assert_eq!(ids(&v).len(), 2);
    let out = f.cli(&["history", "--until", "2000-01-01"]);
    assert_eq!(out.ok().trim(), "no operations match");
}

#[test]
fn export_json_and_jsonl() {
    let f = Fixture::new();
    let dir = std::env::temp_dir().join(format!("tracing-progress-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let history = f.store().history(&HistoryQuery::new());
    let oldest_first: Vec<u64> = history.iter().rev().map(|s| s.id.as_u64()).collect();

    let jsonl = dir.join("history.jsonl");
    let out = f.cli(&[
        "export",
        "--format",
        "jsonl",
        "-o",
        jsonl.to_str().expect("path"),
    ]);
    assert_eq!(out.ok(), "");
    assert!(out.stderr.contains("exported 2 operations"), "{out:#?}");
    let text = std::fs::read_to_string(&jsonl).expect("file written");
    let states: Vec<ProgressState> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one operation per line"))
        .collect();
    assert_eq!(
        states.iter().map(|s| s.id.as_u64()).collect::<Vec<_>>(),
        oldest_first
    );
    assert_eq!(states[0], f.state(f.failed));

    let json = dir.join("history.json");
    let v = f
        .cli(&[
            "export",
            "--format",
            "json",
            "-o",
            json.to_str().expect("path"),
            "--json",
        ])
        .json();
    assert_eq!(v["operations"], 2);
    assert_eq!(v["format"], "json");
    let states: Vec<ProgressState> =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("file")).expect("an array");
    assert_eq!(
        states.iter().map(|s| s.id.as_u64()).collect::<Vec<_>>(),
        oldest_first
    );

    // Stdout, filtered; an empty export is an empty array.
    let text = f.cli(&["export", "--status", "failed"]).ok().to_owned();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("disk full"));
    let empty = f
        .cli(&["export", "--format", "json", "--name", "nothing"])
        .json();
    assert_eq!(empty, serde_json::json!([]));

    // A rejected parameter leaves no file.
    let bad = dir.join("bad.jsonl");
    f.cli(&["export", "--status", "x", "-o", bad.to_str().expect("path")])
        .fails(2);
    assert!(!bad.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watch_plain_lines_until_the_operation_finishes() {
    let mut f = Fixture::new();
    let id = f.held_id();
    let mut child = f.spawn_cli(&["watch", &id.to_string(), "--timeout", "20s"]);
    // Read lines as they come; finish the operation once the first one is out.
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, reader) = lines_of(stdout);
    let first = lines
        .recv_timeout(TIMEOUT)
        .expect("a first line while it runs");
    assert!(
        first.starts_with(r#"sync "held" 0/1 › part 1/1 part-1"#),
        "a plain active-path line first: {first}"
    );
    std::thread::sleep(Duration::from_millis(300));
    f.held.take().expect("held").finish();
    let out = wait_child(child);
    reader.join().expect("reader");
    let rest: Vec<String> = lines.try_iter().collect();
    let text = rest.join("\n");
    assert_eq!(out.code, Some(0), "{out:#?}\n{text}");
    assert!(
        text.contains(r#"sync "held" completed"#),
        "the final line:\n{text}"
    );
    assert!(
        text.contains("Status: Completed"),
        "the final state:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}') && !first.contains('\u{1b}'),
        "no terminal escapes when not a TTY:\n{text}"
    );

    // A finished operation: printed at once.
    let done = f.cli(&["watch", &f.completed.to_string()]);
    assert!(
        done.ok().contains(r#"report "daily report" completed"#),
        "{done:#?}"
    );
    let v = f.cli(&["watch", &f.failed.to_string(), "--json"]).json();
    assert_eq!(v["event"], "finished");
    assert_eq!(v["data"]["id"], f.failed.as_u64());
}

#[test]
fn watch_everything_json_timeout_and_unknown() {
    let f = Fixture::new();
    let id = f.held_id();

    let all = f.cli(&["watch", "--timeout", "2s"]);
    let text = all.ok();
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("#{id} sync \"held\""))),
        "{text}"
    );

    let json = f.cli(&["watch", &id.to_string(), "--json", "--timeout", "500ms"]);
    assert_eq!(json.code, Some(6), "{json:#?}");
    let first: Value =
        serde_json::from_str(json.stdout.lines().next().expect("a line")).expect("JSON lines");
    assert_eq!(first["event"], "snapshot");
    assert_eq!(first["data"]["id"], id.as_u64());
    assert!(json.stderr.contains("still running"), "{json:#?}");

    let err = f.cli(&["watch", "987654321"]).fails(4).to_owned();
    assert!(err.contains("no operation with id 987654321"), "{err}");
}

#[test]
fn cancel_with_right_and_wrong_tokens() {
    let f = Fixture::new();
    let id = f.held_id().to_string();

    let wrong = run(&f.with_addr(&["--token", "nope", "cancel", &id]));
    let err = wrong.fails(5);
    assert!(
        err.contains("wrong token") && err.contains("--token"),
        "{err}"
    );
    let missing = f.cli(&["cancel", &id]);
    assert!(missing.fails(5).contains("missing token"), "{missing:#?}");
    let unknown = f.cli_token(&["cancel", "987654321"]);
    assert!(unknown.fails(4).contains("987654321"), "{unknown:#?}");
    assert_eq!(
        f.state(f.held_id()).status,
        Status::Running,
        "still running"
    );

    let out = f.cli_token(&["cancel", &id, "--wait", "--timeout", "10s"]);
    let text = out.ok();
    assert!(
        text.contains(&format!("cancel requested for operation {id}")),
        "{text}"
    );
    assert!(text.contains(r#"sync "held" cancelled"#), "{text}");
    wait_until("the store has it cancelled", || {
        f.store()
            .get(f.held_id())
            .is_some_and(|s| s.status == Status::Cancelled)
    });
    assert!(f.state(f.held_id()).cancel_requested);

    // It has ended: a second cancel is refused as not running.
    let again = f.cli_token(&["cancel", &id, "--json"]);
    assert!(again.fails(4).contains("not running"), "{again:#?}");
}

#[test]
fn cancel_json_with_token_from_the_environment() {
    let f = Fixture::new();
    let id = f.held_id();
    let out = command(&f.with_addr(&["cancel", &id.to_string(), "--json"]))
        .env("TRACING_PROGRESS_TOKEN", TOKEN)
        .output()
        .expect("runs");
    let v: Value = serde_json::from_str(to_run(out).ok()).expect("JSON");
    assert_eq!(
        v,
        serde_json::json!({"id": id.as_u64(), "cancel_requested": true})
    );
    wait_until("cancelled", || {
        f.store()
            .get(id)
            .is_some_and(|s| s.status == Status::Cancelled)
    });
}

#[test]
fn unreachable_server_fails_fast() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let addr = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["ls"],
        vec!["show", "1"],
        vec!["history", "--json"],
        vec!["watch", "1"],
        vec!["watch", "--timeout", "5s"],
        vec!["export"],
        vec!["cancel", "1"],
    ] {
        let started = Instant::now();
        let mut all = vec!["--addr".to_owned(), addr.clone()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let out = run(&all);
        let err = out.fails(3);
        assert!(
            err.contains("cannot reach") && err.contains(&addr),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty(), "{out:#?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    // The address from the environment.
    let out = Command::new(BIN)
        .arg("ls")
        .env("TRACING_PROGRESS_ADDR", &addr)
        .env_remove("TRACING_PROGRESS_TOKEN")
        .output()
        .expect("runs");
    let out = to_run(out);
    assert!(out.fails(3).contains(&addr), "{out:#?}");
}

#[test]
fn metadata_filters_in_ls_history_and_export() {
    let f = Fixture::new();
    let sized = tracing::dispatcher::with_default(&f.traced.dispatch, || {
        use tracing_progress::ProgressSpanExt;
        let root = tracing::info_span!("job", progress.level = "job", progress.name = "sized");
        let id = root.operation_id().expect("tracked");
        root.in_scope(|| {
            tracing::info_span!("block", progress.level = "block", size = 120u64).in_scope(|| {});
        });
        id
    });
    // Both fixture operations have a step with block_id = 7.
    let v = f.cli(&["history", "--meta", "block_id=7", "--json"]).json();
    assert_eq!(ids(&v), [f.completed.as_u64(), f.failed.as_u64()]);
    let v = f
        .cli(&[
            "history",
            "--meta",
            "meta.block_id=7",
            "--status",
            "failed",
            "--json",
        ])
        .json();
    assert_eq!(ids(&v), [f.failed.as_u64()]);
    // `>=` and `<` travel %-encoded; numbers compare as numbers.
    let v = f.cli(&["history", "--meta", "size>=100", "--json"]).json();
    assert_eq!(ids(&v), [sized.as_u64()]);
    let v = f
        .cli(&[
            "history",
            "--meta",
            "size<200",
            "--meta",
            "block_id=7",
            "--json",
        ])
        .json();
    assert_eq!(ids(&v), Vec::<u64>::new());
    let text = f.cli(&["history", "--meta", "size>120"]).ok().to_owned();
    assert_eq!(text.trim(), "no operations match");
    let v = f
        .cli(&["ls", "--all", "--meta", "block_id=7", "--json"])
        .json();
    assert_eq!(ids(&v), [f.completed.as_u64(), f.failed.as_u64()]);
    let v = f.cli(&["ls", "--meta", "block_id=7", "--json"]).json();
    assert_eq!(ids(&v), Vec::<u64>::new());
    let out = f.cli(&["export", "--meta", "size>=100"]).ok().to_owned();
    assert_eq!(out.lines().count(), 1, "{out}");
    // A bad filter is a usage error before any request.
    let e = f
        .cli(&["history", "--meta", "size>=lots"])
        .fails(2)
        .to_owned();
    assert!(e.contains("a number after"), "{e}");
}

#[test]
fn wait_exit_codes_say_how_the_operation_ended() {
    let mut f = Fixture::new();
    // Already finished: at once, with the summary.
    let out = f.cli(&["wait", &f.completed.as_u64().to_string()]);
    let text = out.ok();
    assert!(
        text.contains(r#"report "daily report" completed"#),
        "{text}"
    );
    let failed = f.cli(&["wait", &f.failed.as_u64().to_string()]);
    assert!(failed.fails(7).contains("failed: "), "{failed:#?}");
    assert!(failed.stdout.contains("nightly import"), "{failed:#?}");
    let v = f
        .cli(&["wait", &f.completed.as_u64().to_string(), "--json"])
        .json();
    assert_eq!(v["id"], f.completed.as_u64());

    // Completed with a failed child.
    let partial = tracing::dispatcher::with_default(&f.traced.dispatch, || {
        use tracing_progress::ProgressSpanExt;
        let root = tracing::info_span!("job", progress.level = "job", progress.name = "partial");
        let id = root.operation_id().expect("tracked");
        root.in_scope(|| {
            tracing::info_span!("step", progress.level = "step")
                .in_scope(|| tracing::error!("one block broke"));
        });
        id
    });
    let out = f.cli(&["wait", &partial.as_u64().to_string()]);
    assert!(out.fails(9).contains("completed with failures"), "{out:#?}");

    // Running: a timeout, then the real end.
    let held = f.held_id().as_u64().to_string();
    let out = f.cli(&["wait", &held, "--timeout", "300ms"]);
    assert!(out.fails(6).contains("still running"), "{out:#?}");
    let child = f.spawn_cli(&["wait", &held, "--timeout", "20s"]);
    std::thread::sleep(Duration::from_millis(300));
    f.held.take().expect("held").finish();
    let out = wait_child(child);
    assert!(out.ok().contains(r#"sync "held" completed"#), "{out:#?}");

    // Cancelled.
    let second = f.traced.hold("sync", "second");
    let child = f.spawn_cli(&["wait", &second.id.as_u64().to_string()]);
    std::thread::sleep(Duration::from_millis(300));
    f.store().cancel(second.id).expect("running");
    let out = wait_child(child);
    assert!(out.fails(8).contains("cancelled"), "{out:#?}");
    drop(second);

    // Unknown id, and no target at all.
    assert!(f.cli(&["wait", "987654321"]).fails(4).contains("987654321"));
    f.cli(&["wait"]).fails(2);
    f.cli(&["wait", "1", "--type", "x"]).fails(2);
}

#[test]
fn wait_for_the_next_matching_operation() {
    let f = Fixture::new();
    // A "report" finished before the wait began: it does not count.
    let out = f.cli(&["wait", "--type", "report", "--timeout", "500ms"]);
    assert!(
        out.fails(6).contains("no matching operation finished"),
        "{out:#?}"
    );
    // One that starts after the wait began, and is short enough to fall between two polls.
    let child = f.spawn_cli(&["wait", "--type", "later", "--timeout", "20s"]);
    std::thread::sleep(Duration::from_millis(300));
    f.traced.run("other", "not this one", false);
    let later = f.traced.run("later", "the one", true);
    let out = wait_child(child);
    assert!(out.fails(7).contains(&later.to_string()), "{out:#?}");
    assert!(out.stdout.contains("the one"), "{out:#?}");
    // By name and metadata; the held "sync" operation is running when the wait begins.
    let child = f.spawn_cli(&["wait", "--name", "HELD", "--timeout", "20s", "--json"]);
    std::thread::sleep(Duration::from_millis(300));
    let held_id = f.held_id();
    let mut f = f;
    f.held.take().expect("held").finish();
    let out = wait_child(child);
    let v: Value = serde_json::from_str(out.ok()).expect("JSON");
    assert_eq!(v["id"], held_id.as_u64());
    let out = f.cli(&["wait", "--meta", "block_id=7", "--timeout", "300ms"]);
    out.fails(6);
}

#[test]
fn watch_ndjson_streams_node_changes_until_the_end() {
    let mut f = Fixture::new();
    let id = f.held_id();
    let mut child = f.spawn_cli(&["watch", &id.to_string(), "--ndjson", "--timeout", "20s"]);
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, reader) = lines_of(stdout);
    let parse = |l: &str| -> Value {
        serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"))
    };
    // First sight: the root and the part, parents first.
    let root = parse(&lines.recv_timeout(TIMEOUT).expect("a first line"));
    let part = parse(&lines.recv_timeout(TIMEOUT).expect("a second line"));
    assert_eq!(
        (root["depth"].as_u64(), part["depth"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(root["operation_id"], id.as_u64());
    assert_eq!(part["path"], serde_json::json!(["held", "part-1"]));
    assert_eq!(part["current"], 3);
    assert_eq!(part["total"], 10);
    assert_eq!(part["unit"], "blocks");
    // A change comes through, throttled to one line a second for the node.
    f.held.as_ref().expect("held").inc(2);
    let deadline = Instant::now() + TIMEOUT;
    let moved = loop {
        let line = parse(&lines.recv_timeout(TIMEOUT).expect("a progress line"));
        if line["depth"] == 1 && line["current"] == 5 {
            break line;
        }
        assert!(Instant::now() < deadline, "no line with 5/10");
    };
    assert_eq!(moved["percentage"], 50.0);
    f.held.take().expect("held").finish();
    let out = wait_child(child);
    reader.join().expect("reader");
    assert_eq!(out.code, Some(0), "{out:#?}");
    let rest: Vec<Value> = lines.try_iter().map(|l| parse(&l)).collect();
    let last_root = rest
        .iter()
        .rev()
        .find(|l| l["depth"] == 0)
        .expect("final root");
    assert_eq!(last_root["status"], "completed");
    assert!(
        rest.iter()
            .any(|l| l["depth"] == 1 && l["status"] == "completed")
    );
    assert!(rest.iter().all(|l| l["v"] == 1));

    // Watching everything: other operations' lines too, for as long as asked.
    let all = f.cli(&["watch", "--ndjson", "--timeout", "1s"]);
    assert_eq!(all.code, Some(0), "{all:#?}");
    assert!(all.stdout.is_empty(), "nothing runs: {all:#?}");
}
