//! Runs the `setlist` example (built by `cargo test` alongside the tests) and checks what a
//! person would see: periodic tree dumps, the failing block with its context, the history.

use std::path::PathBuf;
use std::process::Command;

fn example_binary(name: &str) -> PathBuf {
    // target/debug/deps/<test binary> -> target/debug/examples/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (which builds the examples) or `cargo build --examples`",
        path.display()
    );
    path
}

#[test]
fn setlist_example_shows_progress_failure_and_history() {
    let out = Command::new(example_binary("setlist"))
        .env("SETLIST_SPEED", "4")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the example");
    assert!(
        out.status.success(),
        "example failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let running = stdout.split("=== final state ===").next().unwrap();
    assert!(
        running.contains("--- running: My Setlist ---"),
        "no live dump:\n{stdout}"
    );
    assert!(
        running.contains("[running]"),
        "the live dump shows running nodes:\n{running}"
    );
    let fin = stdout.split("=== final state ===").nth(1).unwrap();
    for needle in [
        "setlist \"My Setlist\" [completed] 3/3 100.0%",
        "song \"audio2.wav\" [failed]",
        "block \"DetectOnsets2\" [failed] 60/100 events 60.0%",
        "error: onset detector diverged at frame 6144",
        "block_id: block-002",
        "output: audio_data (44100 Hz, 2 channels, 180.5s)",
        "subprocess \"ffmpeg\" [completed] 4/4",
        "failed below: 3 (first: My Setlist > audio2.wav > DetectOnsets → detect_onsets > DetectOnsets2",
        "=== history ===",
        "setlist_processing \"My Setlist\" completed (31 nodes, 3 failed)",
    ] {
        assert!(fin.contains(needle), "missing {needle:?} in:\n{fin}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("song failed, continuing"),
        "fmt logs still work: {stderr}"
    );
}
