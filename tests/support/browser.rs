//! Driving Debian's Chromium from the tests: the prerequisites, the node driver scripts in
//! `tests/browser/*.mjs` (playwright-core), and the child-process plumbing around them.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `tests/browser`: the driver scripts and their `node_modules`.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Chromium (`/usr/bin/chromium`, or `CHROMIUM`), `node` and playwright-core, or why not.
pub fn chromium() -> Result<PathBuf, String> {
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
    let dir = browser_dir();
    if !dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Err(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            dir.display()
        ));
    }
    Ok(chromium)
}

/// `Some` when the test can run; otherwise it fails on CI (`CI` set) and is skipped here.
pub fn required<T>(ready: Result<T, String>, test: &str) -> Option<T> {
    match ready {
        Ok(t) => Some(t),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test} cannot run on CI: {why}")
        }
        Err(why) => {
            println!("skipped: {why}");
            None
        }
    }
}

/// Kills the child on drop, so a failing assertion leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a pipe to the end on a thread, appending to a shared buffer and passing whole lines
/// on to `lines` if given.
pub fn drain(
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

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `tests/browser/<script>` with `args` against `chromium`, killed after `backstop` (the
/// scripts bound themselves; this is the last resort). Its exit status (`None`: killed) and
/// everything it printed, stdout and stderr interleaved.
pub fn run_driver(
    chromium: &Path,
    script: &str,
    args: &[&dyn AsRef<std::ffi::OsStr>],
    backstop: Duration,
) -> (Option<ExitStatus>, String) {
    let dir = browser_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script));
    for a in args {
        cmd.arg(a);
    }
    let mut node = cmd
        .env("CHROMIUM", chromium)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let report = Arc::new(Mutex::new(String::new()));
    drain(node.stdout.take().unwrap(), report.clone(), None);
    drain(node.stderr.take().unwrap(), report.clone(), None);
    let mut node = KillOnDrop(node);
    let deadline = Instant::now() + backstop;
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
    let report = report.lock().unwrap().clone();
    (status, report)
}
