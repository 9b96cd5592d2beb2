//! A real browser against the live page: starts the `setlist` example serving the API and page
//! (built by `cargo test --all-features`), then runs `tests/browser/page.test.mjs`, which drives
//! Debian's Chromium through playwright-core: an operation appears, its progress advances live,
//! a node expands to show its details, the example's encoder child process shows live under
//! its block (feature `process`), the failing block's error is shown, and the cancel button
//! (with the token) ends the operation as cancelled. Screenshots land in `target/browser/`.
//!
//! It also pauses the live view and checks a page opened when nothing runs shows the last
//! finished operation.
//!
//! Needs `node`, Chromium (`/usr/bin/chromium`, or `CHROMIUM`) and `npm ci` run in
//! `tests/browser`. Without them the test fails when `CI` is set and is skipped otherwise.

#![cfg(all(feature = "http", feature = "process"))]

mod support;
use support::browser::{KillOnDrop, chromium, drain, required, run_driver, tail};
use support::examples::{example_binary, target_dir};

use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "browser-test-token";

#[test]
fn live_page_in_chromium_shows_progress_errors_and_cancels() {
    let Some(chromium) = required(chromium(), "the browser test") else {
        return;
    };
    let shots = target_dir().join("browser");

    // About 26 s at this speed; the failing block is reached after about 14 s.
    let mut example = Command::new(example_binary("setlist"))
        // Earlier runs' operations (ids 1, 2 … of other runs) would share the history table.
        .env("SETLIST_HISTORY", "off")
        .env("SETLIST_SERVE", "127.0.0.1:0")
        .env("SETLIST_TOKEN", TOKEN)
        .env("SETLIST_SPEED", "0.1")
        .env("SETLIST_LINGER", "30")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the setlist example");
    let out = Arc::new(Mutex::new(String::new()));
    let err = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    drain(example.stdout.take().unwrap(), out.clone(), Some(tx));
    drain(example.stderr.take().unwrap(), err.clone(), None);
    let example = KillOnDrop(example);

    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("serving progress at ") {
                    break url.trim().to_string();
                }
            }
            Err(_) => panic!(
                "the example printed no URL (built without `http`?)\nstdout:\n{}\nstderr:\n{}",
                tail(&out.lock().unwrap(), 20),
                tail(&err.lock().unwrap(), 20)
            ),
        }
    };
    println!("page at {url}");

    // The script bounds itself at 120 s; this is the backstop.
    let (status, report) = run_driver(
        &chromium,
        "page.test.mjs",
        &[&url, &TOKEN, &shots],
        Duration::from_secs(150),
    );
    println!("{report}");
    assert!(
        status.is_some_and(|s| s.success()),
        "browser checks failed ({status:?}); screenshots in {}\n{report}\nexample stderr:\n{}",
        shots.display(),
        tail(&err.lock().unwrap(), 20)
    );

    // The program saw the cancel too: its history says so once the run has wound down.
    let deadline = Instant::now() + Duration::from_secs(20);
    let wanted = "setlist_processing \"My Setlist\" cancelled";
    while !out.lock().unwrap().contains(wanted) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let printed = out.lock().unwrap().clone();
    assert!(
        printed.contains(wanted),
        "the example's history does not list the run as cancelled:\n{}",
        tail(&printed, 20)
    );
    for name in [
        "running",
        "subprocess",
        "expanded-error",
        "cancelled",
        "history",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}.png"
        );
    }
    drop(example);
}
