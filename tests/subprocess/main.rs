//! Child processes grafted into the parent's tree, with real child processes: this test
//! binary run again in a child mode (a Rust child), a Python script speaking the documented
//! protocol, and plain programs that never report.

use std::os::unix::net::{SocketAddr, UnixListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing_progress::process::{self, CommandExt};
use tracing_progress::{
    FieldValue, HistoryQuery, ProgressLevel, ProgressSpanExt, ProgressState, Status, Store,
};
use tracing_subscriber::prelude::*;

const MODE: &str = "TP_TEST_CHILD_MODE";

/// The child side: runs only when this binary is started as a child.
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let (layer, store) = tracing_progress::layer();
    tracing_subscriber::registry().with(layer).init();
    let code = run_child(&mode, &store);
    std::process::exit(code);
}

#[tracing::instrument(fields(progress.level = "encode", progress.total = total, progress.unit = "frames"))]
fn encode(total: u64, pause_ms: u64, stop_on_cancel: bool) {
    let span = tracing::Span::current();
    for _ in 0..total {
        if stop_on_cancel && tracing_progress::is_cancelled() {
            return;
        }
        std::thread::sleep(Duration::from_millis(pause_ms));
        span.inc(1);
    }
}

fn run_child(mode: &str, store: &Store) -> i32 {
    match mode {
        "count" => {
            tracing::info_span!("job", progress.level = "job", codec = "flac").in_scope(|| {
                encode(30, 50, false);
            });
            0
        }
        "fail" => {
            let span = tracing::info_span!("job", progress.level = "job");
            let _g = span.enter();
            span.set_total(10);
            span.inc(2);
            std::thread::sleep(Duration::from_millis(300));
            // Exits with the operation still open: the parent ends it failed.
            std::process::exit(3);
        }
        "hang" => {
            let span = tracing::info_span!("job", progress.level = "job");
            let _g = span.enter();
            span.set_total(10);
            span.inc(1);
            std::thread::sleep(Duration::from_secs(60));
            0
        }
        "cancel" => {
            encode(10_000, 10, true);
            0
        }
        "orphan" => {
            encode(40, 25, false);
            // What the child's own store says, for the test to read.
            let done = store.history(&HistoryQuery::new());
            let s = process::stats();
            println!(
                "RESULT current={} status={} parent_lost={} sent={}",
                done[0].root.current, done[0].status, s.parent_lost, s.sent
            );
            0
        }
        other => {
            eprintln!("unknown mode {other}");
            2
        }
    }
}

fn rust_child(mode: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["child_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .stdout(Stdio::null());
    cmd
}

fn python_child(frames: u32, mode: &str) -> Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/subprocess/encoder.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).arg(frames.to_string()).arg(mode);
    cmd
}

/// A parent subscriber with its own store, for the closure's thread.
fn parent<R>(f: impl FnOnce(&Store) -> R) -> (R, Store) {
    let (layer, store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry().with(layer);
    let out = tracing::subscriber::with_default(subscriber, || f(&store));
    (out, store)
}

fn subprocess(level: &ProgressLevel) -> Option<&ProgressLevel> {
    level.walk().find(|l| &*l.level_type == "subprocess")
}

fn live_subprocess(store: &Store) -> Option<ProgressLevel> {
    store
        .active()
        .iter()
        .find_map(|s| subprocess(&s.root).cloned())
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last(store: &Store) -> Arc<ProgressState> {
    store
        .history(&HistoryQuery::new())
        .first()
        .cloned()
        .expect("the parent operation in history")
}

fn meta<'a>(l: &'a ProgressLevel, k: &str) -> Option<&'a FieldValue> {
    l.metadata.get(k)
}

#[test]
fn rust_child_counters_live_then_history_with_pid_and_exit() {
    let (pid, store) = parent(|store| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let mut child = rust_child("count").spawn_tracked().expect("spawn");
        let mut seen = Vec::new();
        let started = Instant::now();
        while child.try_wait().expect("try_wait").is_none() {
            if let Some(sp) = live_subprocess(store) {
                assert_eq!(sp.status, Status::Running);
                assert_eq!(
                    meta(&sp, "pid").and_then(|v| v.as_u64()),
                    Some(u64::from(child.id()))
                );
                if let Some(job) = sp.children.first() {
                    let enc = job.child("encode").expect("the child's nested node");
                    if enc.status == Status::Running {
                        seen.push(enc.current);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            assert!(started.elapsed() < Duration::from_secs(30));
        }
        seen.dedup();
        assert!(
            seen.len() >= 4 && seen.windows(2).all(|w| w[0] < w[1]) && seen[0] < 30,
            "live counters of the child several times during its run: {seen:?}"
        );
        child.id()
    });
    let op = last(&store);
    let sp = subprocess(&op.root).expect("subprocess node in history");
    assert_eq!(sp.status, Status::Completed, "{sp:?}");
    assert_eq!(
        meta(sp, "pid").and_then(|v| v.as_u64()),
        Some(u64::from(pid))
    );
    assert_eq!(meta(sp, "exit_code"), Some(&FieldValue::I64(0)));
    let job = &sp.children[0];
    assert_eq!((&*job.name, job.status), ("job", Status::Completed));
    assert_eq!(
        job.metadata.get("codec").and_then(|v| v.as_str()),
        Some("flac")
    );
    let enc = job.child("encode").unwrap();
    assert_eq!(
        (enc.current, enc.total, enc.status),
        (30, Some(30), Status::Completed)
    );
    assert_eq!(enc.unit.as_deref(), Some("frames"));
    assert!(op.to_json().contains("\"subprocess\""));
}

#[test]
fn non_zero_exit_fails_the_subtree_with_the_status() {
    let (_, store) = parent(|store| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let mut child = rust_child("fail").spawn_tracked().expect("spawn");
        wait_for("a report", || {
            live_subprocess(store).is_some_and(|s| !s.children.is_empty())
        });
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(3));
    });
    let op = last(&store);
    let sp = subprocess(&op.root).unwrap();
    assert_eq!(sp.status, Status::Failed);
    assert_eq!(meta(sp, "exit_code"), Some(&FieldValue::I64(3)));
    let err = sp.error().expect("the exit as the node's error");
    assert!(
        err.message.contains("exited with status 3"),
        "{}",
        err.message
    );
    assert_eq!(err.path.first().map(|p| &**p), Some("block"));
    let job = &sp.children[0];
    assert_eq!(
        (job.status, job.current),
        (Status::Failed, 2),
        "open nodes end failed"
    );
}

#[test]
fn sigkill_fails_the_subtree_with_the_signal() {
    let (_, store) = parent(|store| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let mut child = rust_child("hang").spawn_tracked().expect("spawn");
        wait_for("a report", || {
            live_subprocess(store).is_some_and(|s| !s.children.is_empty())
        });
        child.kill().unwrap();
        child.wait().unwrap();
    });
    let sp_op = last(&store);
    let sp = subprocess(&sp_op.root).unwrap();
    assert_eq!(sp.status, Status::Failed);
    assert_eq!(meta(sp, "signal"), Some(&FieldValue::I64(9)));
    assert!(sp.error().unwrap().message.contains("SIGKILL"));
    assert_eq!(sp.children[0].status, Status::Failed);
}

#[test]
fn children_that_never_report_are_plain_subprocess_nodes() {
    let (_, store) = parent(|_| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        Command::new("true")
            .spawn_tracked()
            .unwrap()
            .wait()
            .unwrap();
        Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn_tracked()
            .unwrap()
            .wait()
            .unwrap();
        assert!(Command::new("/nonexistent/tool").spawn_tracked().is_err());
    });
    let op = last(&store);
    let subs: Vec<_> = op.root.children.iter().collect();
    assert_eq!(subs.len(), 3, "{:#?}", op.root);
    assert_eq!(
        (&*subs[0].name, subs[0].status),
        ("true", Status::Completed)
    );
    assert!(subs[0].children.is_empty());
    assert_eq!(meta(subs[0], "reports"), Some(&FieldValue::U64(0)));
    assert_eq!((&*subs[1].name, subs[1].status), ("sh", Status::Failed));
    assert_eq!(meta(subs[1], "exit_code"), Some(&FieldValue::I64(7)));
    assert_eq!(subs[2].status, Status::Failed);
    assert!(subs[2].error().unwrap().message.contains("could not start"));
}

#[test]
fn cancel_in_the_parent_reaches_the_child() {
    let (_, store) = parent(|store| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let mut child = rust_child("cancel").spawn_tracked().expect("spawn");
        wait_for("a report", || {
            live_subprocess(store)
                .is_some_and(|s| s.children.first().is_some_and(|c| c.current > 3))
        });
        store.cancel(span.operation_id().unwrap()).unwrap();
        let t = Instant::now();
        let status = child.wait().unwrap();
        assert!(status.success());
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the child stopped on the request"
        );
    });
    let op = last(&store);
    let sp = subprocess(&op.root).unwrap();
    let enc = &sp.children[0];
    assert_eq!(enc.status, Status::Cancelled, "{enc:?}");
    assert!(enc.current < 10_000);
    assert_eq!(sp.status, Status::Cancelled);
}

#[test]
fn python_child_reports_through_the_documented_protocol() {
    let (_, store) = parent(|store| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let mut child = python_child(40, "ok").spawn_tracked().expect("python3");
        let mut seen = Vec::new();
        while child.try_wait().unwrap().is_none() {
            if let Some(enc) = live_subprocess(store).and_then(|s| s.children.first().cloned())
                && enc.status == Status::Running
            {
                assert_eq!(enc.total, Some(40));
                assert_eq!(&*enc.level_type, "encode");
                seen.push(enc.current);
                if enc.current > 0 && enc.current < 40 {
                    assert!(enc.estimate().is_some(), "the child's ETA is shown");
                }
            }
            std::thread::sleep(Duration::from_millis(60));
        }
        seen.dedup();
        assert!(seen.len() >= 3, "live frames: {seen:?}");
    });
    let op = last(&store);
    let sp = subprocess(&op.root).unwrap();
    assert_eq!((&*sp.name, sp.status), ("python3", Status::Completed));
    let enc = &sp.children[0];
    assert_eq!((enc.current, enc.status), (40, Status::Completed));
    assert_eq!(enc.unit.as_deref(), Some("frames"));
    assert_eq!(
        enc.metadata.get("codec").and_then(|v| v.as_str()),
        Some("flac")
    );
    assert_eq!(
        enc.metadata.get("pid").and_then(|v| v.as_u64()),
        meta(sp, "pid").and_then(|v| v.as_u64())
    );
}

#[test]
fn python_child_stops_on_cancel() {
    let (_, store) = parent(|store| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let mut child = python_child(100_000, "cancel")
            .spawn_tracked()
            .expect("python3");
        wait_for("a report", || {
            live_subprocess(store).is_some_and(|s| !s.children.is_empty())
        });
        store.cancel(span.operation_id().unwrap()).unwrap();
        assert!(child.wait().unwrap().success());
    });
    let sp = subprocess(&last(&store).root).cloned().unwrap();
    assert_eq!(sp.children[0].status, Status::Cancelled);
    assert_eq!(sp.status, Status::Cancelled);
}

#[test]
fn garbage_and_unsupported_versions_are_ignored_with_counters() {
    let before = process::stats();
    let (_, store) = parent(|_| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let status = python_child(5, "garbage")
            .spawn_tracked()
            .unwrap()
            .wait()
            .unwrap();
        assert!(status.success());
    });
    let after = process::stats();
    assert!(
        after.garbage >= before.garbage + 3,
        "{before:?} -> {after:?}"
    );
    assert!(after.unsupported_version > before.unsupported_version);
    assert!(after.ignored > before.ignored);
    // The v99 report claimed "failed"; only the version-1 reports count.
    let sp = subprocess(&last(&store).root).cloned().unwrap();
    assert_eq!(sp.status, Status::Completed);
    assert_eq!(
        (sp.children[0].current, sp.children[0].status),
        (5, Status::Completed)
    );
}

#[test]
fn a_hello_of_another_version_or_a_bad_token_is_refused() {
    use std::io::{BufRead, BufReader, Write};
    let ((), _store) = parent(|_| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        // Where the parent listens, as a child would get it.
        let mut probe = Command::new("true");
        let _link = probe.progress_link();
        let env: std::collections::HashMap<_, _> = probe
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        let addr = &env[process::ENV_PARENT];
        let before = process::stats();
        for (hello, counter) in [
            (
                format!(
                    r#"{{"v":2,"type":"hello","graft":"{}"}}"#,
                    env[process::ENV_GRAFT]
                ),
                "version",
            ),
            (
                r#"{"v":1,"type":"hello","graft":"1-00"}"#.to_string(),
                "token",
            ),
        ] {
            let name = addr.strip_prefix('@').unwrap();
            let a = <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)
                .unwrap();
            let mut s = std::os::unix::net::UnixStream::connect_addr(&a).unwrap();
            writeln!(s, "{hello}").unwrap();
            let mut reply = String::new();
            BufReader::new(&s).read_line(&mut reply).unwrap();
            assert!(reply.contains(r#""type":"error""#), "{counter}: {reply}");
        }
        let after = process::stats();
        assert!(after.unsupported_version > before.unsupported_version);
        assert!(after.rejected > before.rejected);
    });
}

#[test]
fn parent_gone_child_keeps_working() {
    // A parent that listens, reads the hello and two reports, then goes away.
    let name = format!("tp-test-gone-{}", std::process::id());
    let addr =
        <SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(&name).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    let child = rust_child("orphan")
        .env(process::ENV_PARENT, format!("@{name}"))
        .env(process::ENV_GRAFT, "1-00")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (conn, _) = listener.accept().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(conn));
    let hello = lines.next().unwrap().unwrap();
    assert!(hello.contains(r#""type":"hello""#), "{hello}");
    for _ in 0..2 {
        assert!(
            lines
                .next()
                .unwrap()
                .unwrap()
                .contains(r#""type":"report""#)
        );
    }
    drop(lines);
    drop(listener);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("RESULT current=40 status=completed parent_lost=true"),
        "the child finished its work and knew the parent was gone: {stdout}"
    );
    // A parent that was never there: the child works as if alone.
    let out = rust_child("orphan")
        .env(process::ENV_PARENT, "@tp-test-nobody-listens")
        .env(process::ENV_GRAFT, "1-00")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("current=40 status=completed"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot report progress to the parent"));
}

#[test]
fn verbose_view_shows_pid_and_exit_code_as_fields_not_counters() {
    use tracing_progress::view::{Detail, Verbose};
    let (_, store) = parent(|_| {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        Command::new("sh")
            .args(["-c", "exit 0"])
            .spawn_tracked()
            .unwrap()
            .wait()
            .unwrap();
    });
    // Read back through JSON, as the CLI does: numbers come back as unsigned.
    let op: ProgressState = serde_json::from_str(&last(&store).to_json()).unwrap();
    let text = Verbose::new(Detail::Verbose).render(&op);
    let line = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().trim_start_matches("- ").starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in\n{text}"))
            .to_string()
    };
    assert!(
        !line("Pid: ").contains("/sec"),
        "a pid is no counter:\n{text}"
    );
    assert!(
        !line("Exit Code: 0").contains("/sec"),
        "nor an exit code:\n{text}"
    );
}

/// The history file (feature `sqlite`) keeps the grafted subtree with pid and exit status.
#[cfg(feature = "sqlite")]
#[test]
fn history_file_keeps_the_grafted_subtree() {
    let dir = std::env::temp_dir().join(format!("tp-subprocess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("history.sqlite");
    let _ = std::fs::remove_file(&path);
    let (layer, store) = tracing_progress::Builder::new()
        .history_file(&path)
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    let pid = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let mut child = rust_child("count").spawn_tracked().unwrap();
        child.wait().unwrap();
        child.id()
    });
    assert!(store.flush_history(Duration::from_secs(10)));
    let file = tracing_progress::sqlite::HistoryFile::open(&path).unwrap();
    let stored = file.query(&HistoryQuery::new()).unwrap();
    let state = &stored[0].state;
    let sp = subprocess(&state.root).expect("subprocess node in the file");
    assert_eq!(
        meta(sp, "pid").and_then(|v| v.as_u64()),
        Some(u64::from(pid))
    );
    assert_eq!(meta(sp, "exit_code").and_then(|v| v.as_u64()), Some(0));
    let enc = sp.children[0].child("encode").unwrap();
    assert_eq!((enc.current, enc.status), (30, Status::Completed));
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `otel`, the child gets the spawning span's W3C trace context.
#[cfg(feature = "otel")]
#[test]
fn the_child_gets_the_spawning_spans_traceparent() {
    use opentelemetry::trace::TracerProvider as _;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let (layer, _store) = tracing_progress::layer();
    let subscriber = tracing_subscriber::registry()
        .with(layer)
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let (out, trace_id) = tracing::subscriber::with_default(subscriber, || {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let span = tracing::info_span!("block", progress.level = "block");
        let _g = span.enter();
        let trace_id = {
            use opentelemetry::trace::TraceContextExt;
            span.context().span().span_context().trace_id().to_string()
        };
        let out = Command::new("sh")
            .args(["-c", "printf %s \"$TRACEPARENT\""])
            .stdout(Stdio::piped())
            .spawn_tracked()
            .unwrap()
            .wait_with_output()
            .unwrap();
        (String::from_utf8(out.stdout).unwrap(), trace_id)
    });
    let parts: Vec<&str> = out.split('-').collect();
    assert_eq!(parts.len(), 4, "{out:?}");
    assert_eq!((parts[0], parts[1]), ("00", trace_id.as_str()), "{out}");
    assert_eq!(parts[2].len(), 16);
}
