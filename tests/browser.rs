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
use support::examples::{example_binary, target_dir};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "browser-test-token";

/// What the browser test needs from outside Cargo, or why it can't run.
fn prerequisites(browser_dir: &Path) -> Result<PathBuf, String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("no `node` on PATH".into()),
    }
    if !browser_dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            browser_dir.display()
        ));
    }
    Ok(chromium)
}

/// Kills the child on drop, so a failing assertion leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a pipe to the end on a thread, appending to a shared buffer and passing whole lines on.
fn drain(
    pipe: impl Read + Send + 'static,
    buf: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            {
                let mut b = buf.lock().unwrap();
                b.push_str(&line);
                b.push('\n');
            }
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    });
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn live_page_in_chromium_shows_progress_errors_and_cancels() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = manifest.join("tests/browser");
    let chromium = match prerequisites(&browser_dir) {
        Ok(path) => path,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("browser test cannot run on CI: {why}")
        }
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
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

    let mut node = Command::new("node")
        .arg(browser_dir.join("page.test.mjs"))
        .arg(&url)
        .arg(TOKEN)
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .current_dir(&browser_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let node_out = Arc::new(Mutex::new(String::new()));
    drain(node.stdout.take().unwrap(), node_out.clone(), None);
    drain(node.stderr.take().unwrap(), node_out.clone(), None);
    let mut node = KillOnDrop(node);
    // The script bounds itself at 120 s; this is the backstop.
    let deadline = Instant::now() + Duration::from_secs(150);
    let status = loop {
        if let Some(status) = node.0.try_wait().expect("wait for node") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let the readers catch the last lines.
    std::thread::sleep(Duration::from_millis(200));
    let report = node_out.lock().unwrap().clone();
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
