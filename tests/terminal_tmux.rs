//! The live terminal view in a real terminal: the setlist example runs inside tmux, and the
//! screen is read back while it runs and after it exits.
//!
//! Checks that the view is redrawn in place (its header never appears twice, even in the
//! scrollback), that log lines appear above it and stay, and that nothing of the view is left
//! once the program exits. Needs `tmux` (`.ci/run` installs it); without it the test fails
//! under CI and is skipped elsewhere.
#![cfg(all(feature = "terminal", unix))]

mod support;
use support::example_binary;

use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("run tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whole pane, scrollback included.
fn screen(session: &str) -> String {
    tmux(&["capture-pane", "-p", "-t", session, "-S", "-3000"])
}

/// Lines that start a drawing of the running setlist.
fn view_headers(screen: &str) -> usize {
    screen
        .lines()
        .filter(|l| l.starts_with("Setlist: \"My Setlist\""))
        .count()
}

#[test]
fn live_view_redraws_in_place_with_logs_above_and_leaves_no_garbage() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install tmux for this test"
        );
        eprintln!("skipped: tmux is not installed");
        return;
    }
    let session = format!("tp-live-{}", std::process::id());
    let command = format!(
        "SETLIST_SPEED=2 SETLIST_HISTORY=off RUST_LOG=warn {} ; echo EXITED; sleep 60",
        example_binary("setlist").display()
    );
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            "50",
            &command,
        ])
        .status()
        .expect("start tmux");
    assert!(started.success());
    let cleanup = scopeguard(session.clone());

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut saw_running_view = false;
    let mut saw_log_above_view = false;
    let mut final_screen = String::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(150));
        let s = screen(&session);
        if s.contains("EXITED") {
            final_screen = s;
            break;
        }
        let headers = view_headers(&s);
        assert!(
            headers <= 1,
            "the view was drawn {headers} times instead of in place:\n{s}"
        );
        if headers == 1 {
            saw_running_view = true;
            let header_at = s
                .lines()
                .position(|l| l.starts_with("Setlist: \"My Setlist\""));
            let log_at = s
                .lines()
                .position(|l| l.contains("song failed, continuing"));
            if let (Some(h), Some(l)) = (header_at, log_at) {
                assert!(l < h, "the log line is printed above the view:\n{s}");
                saw_log_above_view = true;
            }
        }
    }
    assert!(
        !final_screen.is_empty(),
        "the example did not finish in time"
    );
    assert!(saw_running_view, "the live view was never on screen");
    assert!(
        saw_log_above_view,
        "no log line was seen above the live view"
    );
    // After exit: the logs stay, the live view is gone (only the final report remains; its
    // recent events may quote the line again).
    let before_final = final_screen
        .split("=== final state ===")
        .next()
        .unwrap_or("");
    assert_eq!(
        before_final.matches("song failed, continuing").count(),
        1,
        "the log line is printed once and kept:\n{final_screen}"
    );
    assert_eq!(
        view_headers(before_final),
        0,
        "the live view was left on screen:\n{final_screen}"
    );
    assert!(
        !before_final.contains("Running"),
        "running lines left behind:\n{final_screen}"
    );
    drop(cleanup);
}

/// Kills the tmux session when the test ends, pass or fail.
fn scopeguard(session: String) -> impl Drop {
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .status();
        }
    }
    Kill(session)
}
