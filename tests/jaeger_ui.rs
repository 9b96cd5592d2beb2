//! The real Jaeger UI in a real browser: runs `examples/jaeger.rs` slowly against the Jaeger
//! that `.ci/run` starts (serving the Jaeger UI 2.14.1 build from `ci/jaeger/ui.sh`), and
//! drives Debian's Chromium through `tests/browser/jaeger.test.mjs` as a person would: search
//! the service while the run is going (the heartbeats make it findable), then once it ended
//! open the trace and check the setlist → song → action → block tree, the failed block in
//! red with its exception log, the `tracing_progress.*` and `error.type` tags, the progress
//! logs and the child process's spans in the same trace. Screenshots land in
//! `target/jaeger-ui/`.
//!
//! Needs what `tests/jaeger_e2e.rs` needs (`JAEGER_QUERY_URL`, `JAEGER_OTLP_GRPC`, with the
//! UI served, not the placeholder page) and what `tests/browser.rs` needs (`node`, Chromium,
//! `npm ci` in `tests/browser`). Without them the test fails when `CI` is set and is skipped
//! otherwise.
#![cfg(feature = "otel")]

mod support;
use support::browser::{KillOnDrop, chromium, drain, required, run_driver};
use support::examples::{example_binary, target_dir};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// GET over plain HTTP/1.0 (loopback only): status line and body.
fn get(base: &str, path: &str) -> Result<(String, String), String> {
    let hostport = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream =
        TcpStream::connect(hostport).map_err(|e| format!("connect {hostport}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

struct Setup {
    query: String,
    grpc: String,
    chromium: PathBuf,
}

/// What the test needs from outside Cargo, or why it can't run.
fn prerequisites() -> Result<Setup, String> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (Some(query), Some(grpc)) = (env("JAEGER_QUERY_URL"), env("JAEGER_OTLP_GRPC")) else {
        return Err(
            "no Jaeger: JAEGER_QUERY_URL and JAEGER_OTLP_GRPC are not set (.ci/run starts \
                    Jaeger with the UI and sets them)"
                .into(),
        );
    };
    let (status, body) = get(&query, "/")?;
    if !status.contains(" 200") {
        return Err(format!("Jaeger UI at {query}/ answered {status}"));
    }
    if !body.contains("getJaegerUiConfig") {
        return Err(format!(
            "Jaeger at {query} serves the placeholder page, not the UI: start it with \
             JAEGER_UI_ASSETS_PATH=$(bash ci/jaeger/ui.sh | tail -n 1) (ci/jaeger/run.sh does)"
        ));
    }
    let chromium = chromium()?;
    Ok(Setup {
        query,
        grpc,
        chromium,
    })
}

#[test]
fn a_run_in_the_real_jaeger_ui_while_running_and_after() {
    let Some(setup) = required(prerequisites(), "the Jaeger UI test") else {
        return;
    };
    let shots = target_dir().join("jaeger-ui");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // Short (the UI's name column is narrow) and new for each run (Jaeger keeps old ones).
    let service = format!("tp-ui-{}", stamp % 1_000_000);

    // About 20 s at this speed; the first heartbeat goes out after 5 s.
    let example_err = Arc::new(Mutex::new(String::new()));
    let mut example = Command::new(example_binary("jaeger"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &setup.grpc)
        .env("OTEL_SERVICE_NAME", &service)
        .env("OTEL_BSP_SCHEDULE_DELAY", "500")
        .env("SETLIST_SPEED", "0.12")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the jaeger example");
    drain(example.stderr.take().unwrap(), example_err.clone(), None);
    let mut example = KillOnDrop(example);

    // The script bounds itself at 150 s; this is the backstop.
    let (status, report) = run_driver(
        &setup.chromium,
        "jaeger.test.mjs",
        &[&setup.query, &service, &shots],
        Duration::from_secs(180),
    );
    println!("{report}");
    let example_status = example.0.try_wait().ok().flatten();
    assert!(
        status.is_some_and(|s| s.success()),
        "Jaeger UI checks failed ({status:?}); screenshots in {}\n{report}\nexample ({example_status:?}) stderr:\n{}",
        shots.display(),
        example_err.lock().unwrap()
    );
    assert!(
        example_status.is_some_and(|s| s.success()),
        "the example: {example_status:?}\n{}",
        example_err.lock().unwrap()
    );
    for name in ["running", "search", "trace", "failed-span"] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}.png"
        );
    }
}
