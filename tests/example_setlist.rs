//! Runs the `setlist` example (built by `cargo test` alongside the tests) and checks what a
//! person would see: the live view's plain fallback while it runs (stdout is not a terminal
//! here), the proposal's verbose fields, the failing block with its context, the history.

mod support;
use support::example_binary;

use std::process::Command;

/// A history file of its own for each run of the test binary.
fn fresh_history(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("tp-setlist-{name}-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn run_setlist() -> (String, String) {
    run_setlist_with(&fresh_history("run"), "2")
}

fn run_setlist_with(history: &std::path::Path, speed: &str) -> (String, String) {
    let out = Command::new(example_binary("setlist"))
        .env("SETLIST_SPEED", speed)
        .env("SETLIST_HISTORY", history)
        .env_remove("RUST_LOG")
        .output()
        .expect("run the example");
    assert!(
        out.status.success(),
        "example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_has(text: &str, needles: &[&str]) {
    for needle in needles {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn setlist_example_shows_progress_failure_and_history() {
    let (stdout, stderr) = run_setlist();
    let (running, fin) = stdout
        .split_once("=== final state ===")
        .expect("a final state section");
    assert_has(
        fin,
        &[
            "Setlist: \"My Setlist\" (ID: ",
            "Status: Completed with failures (2/3 songs, 1 failed, 67%)",
            "Song 2/3: audio2.wav",
            "Block 2/2: DetectOnsets2",
            "Error: onset detector diverged at frame 6144",
            "Block ID: block-002",
            "Recent Events:",
            " WARN onset energy unstable, widening the window frame=5632",
            "ERROR onset detector diverged at frame 6144",
            "Output: audio_data (44100 Hz, 2 channels, 180.5s)",
            "Progress: 100% (4/4 actions)",
            "Subprocess 1: ffmpeg",
            // Song 2 planned four actions; the two after the failure never ran.
            "Action 3/4: SeparateStems → separate (ID: ",
            "Status: Skipped",
            "=== history ===",
            // The retried block: one node, its failed attempt's error and events kept; the
            // failed attempt is a node seen but not a failure of the run.
            "Block 1/2: SeparateStems1",
            "Attempt: 2 (after 1 failed)",
            "- Attempt 1: Failed in ",
            "error: GPU out of memory (needed 2.1 GiB)",
            " WARN GPU allocation failed bytes=2254857830",
            "setlist_processing \"My Setlist\" completed (32 nodes, 3 failed, 1 retried)",
        ],
    );
    // The song with the retried block completed, not "with failures".
    let song1 = fin
        .split("Song 1/3: audio1.wav")
        .nth(1)
        .and_then(|rest| rest.lines().nth(1))
        .unwrap_or_default();
    assert_eq!(song1.trim(), "Status: Completed", "{fin}");
    assert!(!running.is_empty(), "the run printed progress while it ran");
    assert!(
        stderr.contains("song failed, continuing"),
        "fmt logs still work: {stderr}"
    );
}

/// With all features the running output carries the proposal's "very verbose" fields.
#[test]
#[cfg(all(feature = "terminal", feature = "resources"))]
fn running_output_carries_the_verbose_fields() {
    let (stdout, _) = run_setlist();
    let running = stdout.split("=== final state ===").next().unwrap_or("");
    assert_has(
        running,
        &[
            "Setlist: \"My Setlist\" (ID: ",
            "Status: Running (",
            "Started: ",
            "Elapsed: ",
            "Estimated Remaining: ",
            "Duration: ",
            "Block ID: block-0",
            "Output: audio_data (44100 Hz, 2 channels, ",
            " events)",
            "% (",
            "- CPU: ",
            "- Memory: ",
            "/sec)",
        ],
    );
}

/// With the history file (feature `sqlite`), the second run lists the first and has an ETA
/// from it before its first song finishes.
#[test]
#[cfg(feature = "sqlite")]
fn second_run_shows_the_first_and_an_eta_from_it() {
    let history = fresh_history("second");
    let (first, _) = run_setlist_with(&history, "2");
    assert_has(
        &first,
        &[&format!("history file: {} (new", history.display())],
    );
    // With nothing earlier, the first ETA is this run's own (it once said "from earlier
    // runs" on a new file, whenever it came before the first song finished).
    let eta = first
        .lines()
        .find(|l| l.starts_with("first ETA after "))
        .unwrap_or_else(|| panic!("no ETA line in:\n{first}"));
    assert!(eta.contains("(from this run's rate)"), "{eta}");
    // Full speed: the first song takes over a second, room for a loaded machine.
    let (second, _) = run_setlist_with(&history, "1");
    assert_has(
        &second,
        &[
            "1 earlier operation, newest first:",
            "\"My Setlist\" completed in ",
        ],
    );
    let eta = second
        .lines()
        .find(|l| l.starts_with("first ETA after "))
        .unwrap_or_else(|| panic!("no ETA line in:\n{second}"));
    assert!(
        eta.contains("(from earlier runs), 0/3 songs done"),
        "an ETA from the first run before the first song finished: {eta}"
    );
    // The history lists both runs, the earlier one named with its run.
    let (_, history_section) = second.split_once("=== history ===").unwrap();
    let setlists: Vec<&str> = history_section
        .lines()
        .filter(|l| l.contains("setlist_processing \"My Setlist\" completed"))
        .collect();
    assert_eq!(setlists.len(), 2, "{history_section}");
    assert!(setlists[1].contains('@'), "{history_section}");
}

/// `--ndjson`: the non-TTY fallback writes the JSON-lines stream, ending with the final states.
#[test]
#[cfg(feature = "terminal")]
fn ndjson_fallback_is_one_json_object_per_line() {
    let out = Command::new(example_binary("setlist"))
        .arg("--ndjson")
        .env("SETLIST_SPEED", "4")
        .env("SETLIST_HISTORY", "off")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 10, "{stdout}");
    assert!(
        lines
            .iter()
            .all(|l| l["v"] == 1 && l["operation_type"] == "setlist_processing")
    );
    // The block that failed for good (the retried one also has a failed line, attempt 1).
    let block = lines
        .iter()
        .find(|l| l["status"] == "failed" && l["level"] == "block" && l["path"][1] == "audio2.wav")
        .expect("the failed block");
    assert_eq!(block["error"], "onset detector diverged at frame 6144");
    assert_eq!(block["path"][1], "audio2.wav");
    let retried: Vec<_> = lines
        .iter()
        .filter(|l| l["name"] == "SeparateStems1" && l["path"][1] == "audio1.wav")
        .collect();
    // The failed first attempt (a few ms here) may end between two snapshots and never get
    // a line of its own; the retry's `attempt` says there was one.
    let last = retried.last().expect("the retried block");
    assert_eq!(
        (&last["attempt"], &last["status"]),
        (&2.into(), &"completed".into())
    );
    let root = lines.iter().rev().find(|l| l["depth"] == 0).expect("root");
    assert_eq!(root["outcome"], "completed with failures");
    // The setlist plans its songs: the later ones are written pending, with their position,
    // before they start, and the song span that starts keeps the planned node's id.
    for (i, file) in [(2, "audio2.wav"), (3, "audio3.wav")] {
        let song = |l: &&serde_json::Value| l["depth"] == 1 && l["name"] == file;
        let first = lines.iter().find(song).expect("a line for the song");
        assert_eq!(
            (
                &first["status"],
                &first["planned"],
                &first["position"],
                &first["of"]
            ),
            (&"pending".into(), &true.into(), &i.into(), &3.into()),
            "{first}"
        );
        let ran = lines
            .iter()
            .filter(song)
            .find(|l| l["status"] != "pending")
            .expect("the song ran");
        assert_eq!(ran["node_id"], first["node_id"], "{ran}");
        assert_eq!(ran["planned"], false);
    }
    // Some progress was seen while running, not only the end.
    assert!(
        lines
            .iter()
            .any(|l| l["depth"] == 0 && l["status"] == "running")
    );
}
