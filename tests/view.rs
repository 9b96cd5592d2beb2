//! The text views (`tracing_progress::view`) against fixed snapshots built from JSON.
//!
//! Whole renderings are compared with files in `tests/golden/`; after an intended change of
//! format, regenerate them with `UPDATE_GOLDEN=1 cargo test --test view` and review the diff.

use std::path::PathBuf;

use serde_json::{Value, json};
use tracing_progress::ProgressState;
use tracing_progress::view::{
    Detail, Verbose, active_path, format_duration, format_percent, format_timestamp,
};

// === fixture builders ===

/// 2024-01-15 10:30:00 UTC in µs since the Unix epoch.
const BASE_US: u64 = 1_705_314_600_000_000;
/// Snapshot time of the running fixtures: 10:32:20.
const NOW_MS: u64 = 140_000;
const MIB: u64 = 1 << 20;

/// `ms` milliseconds after [`BASE_US`], in µs.
fn at(ms: u64) -> u64 {
    BASE_US + ms * 1_000
}

/// Deep-merges `patch` into `base` (objects merge, everything else replaces).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p,
    }
}

/// A level created at `start_ms`, started then and finished at `end_ms` (or still open at
/// [`NOW_MS`]); `extra` is merged in last.
fn level(
    id: u64,
    level_type: &str,
    name: &str,
    status: &str,
    start_ms: u64,
    end_ms: Option<u64>,
    extra: Value,
) -> Value {
    let elapsed_us = (end_ms.unwrap_or(NOW_MS) - start_ms) * 1_000;
    let mut v = json!({
        "id": id, "level_type": level_type, "name": name, "span_name": level_type,
        "target": "app", "status": status, "current": 0,
        "timing": {
            "created_at_us": at(start_ms), "started_at_us": at(start_ms),
            "elapsed_us": elapsed_us, "busy_us": elapsed_us, "idle_us": 0
        }
    });
    if let Some(end) = end_ms {
        v["timing"]["completed_at_us"] = json!(at(end));
        v["percentage"] = json!(100.0);
    }
    merge(&mut v, extra);
    v
}

/// An operation around `root`.
fn state(root: Value, extra: Value) -> ProgressState {
    let mut v = json!({
        "schema_version": 1, "id": root["id"], "operation_type": root["level_type"],
        "name": root["name"], "status": root["status"], "cancel_requested": false,
        "started_at_us": root["timing"]["started_at_us"],
        "metrics": {"nodes_seen": 0, "nodes_retained": 0, "nodes_folded": 0, "nodes_failed": 0,
                    "updates": 0, "input_errors": 0},
        "snapshot_at_us": at(NOW_MS),
        "root": root
    });
    if let Some(done) = v["root"]["timing"].get("completed_at_us").cloned() {
        v["completed_at_us"] = done;
    }
    merge(&mut v, extra);
    serde_json::from_value(v).expect("fixture is a valid snapshot")
}

fn error(node_id: u64, message: &str, path: &[&str], at_ms: u64, extra: Value) -> Value {
    let mut v = json!({
        "message": message, "origin": "event", "node_id": node_id, "path": path,
        "target": "app::blocks", "at_us": at(at_ms)
    });
    merge(&mut v, extra);
    v
}

/// A setlist at song 4 of 10 (songs 1-3 folded), its second action detecting onsets.
fn running_setlist() -> ProgressState {
    let load = level(
        18,
        "action",
        "LoadAudio",
        "completed",
        5_000,
        Some(8_200),
        json!({
            "timing": {"busy_us": 3_000_000, "idle_us": 200_000},
            "metadata": {"block": "LoadAudio1", "block_id": "block-001",
                         "output": "audio_data (44100 Hz, 2 channels, 180.5s)"}
        }),
    );
    let detect = level(
        19,
        "action",
        "DetectOnsets",
        "running",
        35_000,
        None,
        json!({
            "current": 127, "total": 150, "unit": "events", "percentage": 84.67,
            "message": "detecting onsets",
            "metadata": {"block": "DetectOnsets1", "block_id": "block-002", "events_found": 127},
            "estimate": {"remaining_us": 18_000_000, "low_us": 10_000_000, "high_us": 25_000_000,
                         "rate_per_s": 1.2, "basis": "rate"},
            "resources": {"samples": 105, "cpu_percent_mean": 45.0, "cpu_percent_peak": 45.0,
                          "rss_bytes_mean": 128 * MIB, "rss_bytes_peak": 140 * MIB}
        }),
    );
    let normalize = json!({
        "id": 20, "level_type": "action", "name": "Normalize", "span_name": "action",
        "target": "app", "status": "pending", "current": 0,
        "timing": {"created_at_us": at(5_000), "elapsed_us": 135_000_000, "busy_us": 0,
                   "idle_us": 135_000_000}
    });
    let song = level(
        17,
        "song",
        "audio4.wav",
        "running",
        5_000,
        None,
        json!({
            "current": 1, "total": 5, "percentage": 36.93,
            "metadata": {"format": "wav"},
            "estimate": {"remaining_us": 930_000_000, "low_us": 720_000_000,
                         "high_us": 1_200_000_000, "basis": "children"},
            "children": [load, detect, normalize]
        }),
    );
    let root = level(
        42,
        "setlist",
        "My Setlist",
        "running",
        0,
        None,
        json!({
            "current": 3, "total": 10, "percentage": 33.69,
            "metadata": {"venue": "Main Hall"},
            "estimate": {"remaining_us": 1_200_000_000, "low_us": 900_000_000,
                         "high_us": 1_800_000_000, "basis": "children"},
            "resources": {"samples": 140, "cpu_percent_mean": 38.2, "cpu_percent_peak": 96.0,
                          "rss_bytes_mean": 120 * MIB, "rss_bytes_peak": 150 * MIB},
            "folded": [{"level_type": "song", "count": 3, "completed": 3, "failed": 0,
                        "cancelled": 0, "min_us": 110_000_000, "mean_us": 130_000_000,
                        "max_us": 160_000_000}],
            "children": [song, planned(21, "audio5.wav"), planned(22, "audio6.wav")]
        }),
    );
    state(root, json!({}))
}

/// A song the setlist planned (`span.plan`) that no span has taken yet.
fn planned(id: u64, name: &str) -> Value {
    json!({
        "id": id, "level_type": "song", "name": name, "span_name": "",
        "target": "app", "status": "pending", "current": 0, "planned": true,
        "timing": {"created_at_us": at(0), "elapsed_us": 140_000_000, "busy_us": 0,
                   "idle_us": 140_000_000}
    })
}

/// A run where block-37 failed to decode; its action failed and the operation failed.
fn failed_block() -> ProgressState {
    let path = ["Night Run", "audio4.wav", "Decode", "block-37"];
    let block_err = error(
        107,
        "Decoder failed: invalid header\nexpected RIFF, found ID3",
        &path,
        47_500,
        json!({"location": "src/blocks/decode.rs:88",
               "fields": {"frame": 1024, "codec": "pcm_s16le"}}),
    );
    let action_err = error(
        104,
        "1 of 3 blocks failed",
        &path[..3],
        48_000,
        json!({"origin": "explicit", "target": "app::actions"}),
    );
    let root_err = error(
        100,
        "1 song failed",
        &path[..1],
        50_000,
        json!({"origin": "explicit", "target": "app"}),
    );
    let blocks = vec![
        level(
            105,
            "block",
            "block-36",
            "completed",
            44_000,
            Some(45_100),
            json!({}),
        ),
        level(
            107,
            "block",
            "block-37",
            "failed",
            45_100,
            Some(47_500),
            json!({"error": block_err, "percentage": null, "recent_events": [
                {"at_us": at(45_200), "level": "info", "target": "app::blocks",
                 "message": "opening block", "fields": {"offset": 37_748_736}},
                {"at_us": at(46_350), "level": "warn", "target": "app::blocks",
                 "message": "header checksum mismatch, retrying", "fields": {"attempt": 2}},
                {"at_us": at(47_500), "level": "error", "target": "app::blocks",
                 "message": "Decoder failed: invalid header\nexpected RIFF, found ID3"}
            ]}),
        ),
        level(
            108,
            "block",
            "block-38",
            "completed",
            45_100,
            Some(46_000),
            json!({}),
        ),
    ];
    let action = level(
        104,
        "action",
        "Decode",
        "failed",
        44_000,
        Some(48_000),
        json!({
            "current": 3, "total": 3, "percentage": null, "children": blocks,
            "error": action_err,
            "failures_below": {"count": 1, "first": block_err, "last": block_err}
        }),
    );
    let songs = vec![
        level(
            101,
            "song",
            "audio3.wav",
            "completed",
            2_000,
            Some(42_000),
            json!({}),
        ),
        level(
            102,
            "song",
            "audio4.wav",
            "completed",
            42_000,
            Some(49_000),
            json!({
                "current": 1, "total": 1, "children": [action],
                "failures_below": {"count": 2, "first": block_err, "last": action_err}
            }),
        ),
        // Planned, never started: skipped when the setlist ended.
        json!({
            "id": 109, "level_type": "song", "name": "audio5.wav", "span_name": "",
            "target": "app", "status": "cancelled", "cancel_reason": "skipped", "current": 0,
            "timing": {"created_at_us": at(0), "completed_at_us": at(50_000),
                       "elapsed_us": 50_000_000, "busy_us": 0, "idle_us": 50_000_000}
        }),
    ];
    let root = level(
        100,
        "setlist",
        "Night Run",
        "failed",
        0,
        Some(50_000),
        json!({
            "current": 2, "total": 3, "skipped": 1, "percentage": null, "children": songs,
            "error": root_err,
            "failures_below": {"count": 2, "first": block_err, "last": action_err}
        }),
    );
    state(root, json!({"error": root_err}))
}

/// An export cancelled while its second file was being written; the third never started.
fn cancelled_export() -> ProgressState {
    let files = vec![
        level(
            201,
            "file",
            "a.flac",
            "completed",
            1_000,
            Some(9_000),
            json!({"current": 40 * MIB, "total": 40 * MIB, "unit": "bytes"}),
        ),
        level(
            202,
            "file",
            "b.flac",
            "cancelled",
            9_000,
            Some(15_000),
            json!({"current": 16 * MIB, "total": 40 * MIB, "unit": "bytes",
                   "percentage": 40.0, "message": "stopped at 40%"}),
        ),
        json!({
            "id": 203, "level_type": "file", "name": "c.flac", "span_name": "file",
            "target": "app", "status": "cancelled", "current": 0,
            "timing": {"created_at_us": at(9_000), "completed_at_us": at(15_000),
                       "elapsed_us": 6_000_000, "busy_us": 0, "idle_us": 6_000_000}
        }),
    ];
    let root = level(
        200,
        "export",
        "Batch Export",
        "cancelled",
        0,
        Some(15_000),
        json!({"current": 3, "total": 5, "percentage": 48.0, "children": files}),
    );
    state(root, json!({"cancel_requested": true}))
}

/// The status of block `i` (1-based) of the huge run: the last 15 running, every 300th failed.
fn huge_status(i: u64) -> &'static str {
    if i > 9_985 {
        "running"
    } else if i.is_multiple_of(300) {
        "failed"
    } else {
        "completed"
    }
}

/// One action with 10,000 blocks, generated.
fn huge_run() -> ProgressState {
    let blocks: Vec<Value> = (1..=10_000u64)
        .map(|i| {
            let start = i * 10;
            let status = huge_status(i);
            let end = (status != "running").then_some(start + 7);
            let mut extra = json!({});
            if status == "failed" {
                extra = json!({"error": error(1_000 + i, "checksum mismatch",
                    &["Big Run", "Render", &format!("block-{i}")], start + 7, json!({}))});
            }
            level(
                1_000 + i,
                "block",
                &format!("block-{i}"),
                status,
                start,
                end,
                extra,
            )
        })
        .collect();
    let first_err = error(
        1_300,
        "checksum mismatch",
        &["Big Run", "Render", "block-300"],
        3_007,
        json!({}),
    );
    let last_err = error(
        10_900,
        "checksum mismatch",
        &["Big Run", "Render", "block-9900"],
        99_007,
        json!({}),
    );
    let below = json!({"count": 33, "first": first_err, "last": last_err});
    let render = level(
        2,
        "action",
        "Render",
        "running",
        0,
        None,
        json!({"current": 9_985, "total": 10_000, "percentage": 99.86, "children": blocks,
               "failures_below": below,
               "estimate": {"remaining_us": 2_500_000, "low_us": 2_500_000,
                            "high_us": 2_500_000, "rate_per_s": 71.3, "basis": "rate"}}),
    );
    let root = level(
        1,
        "render",
        "Big Run",
        "running",
        0,
        None,
        json!({"current": 0, "total": 1, "percentage": 99.86, "children": [render],
               "failures_below": below}),
    );
    state(root, json!({"error": first_err}))
}

/// A song whose second block failed once and succeeded on its second attempt.
fn retried_block() -> ProgressState {
    let path = ["Night Run", "audio5.wav", "SeparateStems1"];
    let first_err = error(
        203,
        "GPU out of memory (needed 2.1 GiB)",
        &path,
        12_400,
        json!({"recent_events": [
            {"at_us": at(12_100), "level": "info", "target": "app::blocks",
             "message": "loading model", "fields": {"model": "htdemucs"}},
            {"at_us": at(12_400), "level": "warn", "target": "app::blocks",
             "message": "allocation failed", "fields": {"bytes": 2_254_857_830u64}}
        ]}),
    );
    let blocks = vec![
        level(
            202,
            "block",
            "DetectOnsets1",
            "completed",
            10_000,
            Some(12_000),
            json!({}),
        ),
        level(
            204,
            "block",
            "SeparateStems1",
            "completed",
            12_500,
            Some(14_500),
            json!({
                "current": 100, "total": 100, "unit": "events",
                "recent_events": [{"at_us": at(12_600), "level": "info",
                                   "target": "app::blocks", "message": "loading model"}],
                "attempts": {"number": 2, "earlier": [{
                    "number": 1, "status": "failed", "started_at_us": at(12_000),
                    "duration_us": 400_000, "current": 30, "total": 100, "error": first_err
                }]}
            }),
        ),
    ];
    let song = level(
        201,
        "song",
        "audio5.wav",
        "completed",
        10_000,
        Some(14_500),
        json!({"current": 2, "total": 2, "children": blocks}),
    );
    let root = level(
        200,
        "setlist",
        "Night Run",
        "completed",
        10_000,
        Some(15_000),
        json!({"current": 1, "total": 1, "children": [song]}),
    );
    state(root, json!({"metrics": {"retried": 1}}))
}

// === golden files ===

/// Compares `actual` with `tests/golden/<name>`, or rewrites the file under `UPDATE_GOLDEN`.
#[track_caller]
fn golden(name: &str, actual: &str) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "golden", name]
        .iter()
        .collect();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if actual != expected {
        let first_diff = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or(actual.lines().count().min(expected.lines().count()));
        panic!(
            "{name} differs from line {}:\n--- actual ---\n{actual}--- expected ---\n{expected}",
            first_diff + 1
        );
    }
}

/// Only ASCII plus `›` and `…`, and no trailing spaces.
#[track_caller]
fn assert_clean(text: &str) {
    for (n, line) in text.lines().enumerate() {
        assert!(
            line.chars().all(|c| c.is_ascii() || c == '›' || c == '…'),
            "line {} has other characters: {line:?}",
            n + 1
        );
        assert!(!line.ends_with(' '), "line {} ends with a space", n + 1);
    }
    assert!(text.ends_with('\n'));
}

// === verbose view ===

#[test]
fn running_setlist_verbose() {
    let text = Verbose::new(Detail::Verbose).render(&running_setlist());
    assert_clean(&text);
    golden("running_verbose.txt", &text);
}

#[test]
fn running_setlist_normal() {
    let text = Verbose::new(Detail::Normal).render(&running_setlist());
    assert_clean(&text);
    golden("running_normal.txt", &text);
}

#[test]
fn running_setlist_summary() {
    let text = Verbose::new(Detail::Summary).render(&running_setlist());
    assert_eq!(
        text,
        "\
Setlist: \"My Setlist\" (ID: 42)
Started: 2024-01-15 10:30:00
Status: Running (3/10 songs completed, 34%)
Elapsed: 0:02:20, ETA 0:20:00

… 3 songs folded: 3 completed; took 0:01:50 to 0:02:40, mean 0:02:10
Song 4/10: audio4.wav (ID: 17) - Running 37% (1/5 actions), ETA 0:15:30
  Action 1/5: LoadAudio (ID: 18) - Completed in 3.2s
  Action 2/5: DetectOnsets (ID: 19) - Running 85% (127/150 events), ETA 0:00:18
  Action 3/5: Normalize (ID: 20) - Pending
Song 5/10: audio5.wav (ID: 21) - Pending (planned)
Song 6/10: audio6.wav (ID: 22) - Pending (planned)
"
    );
}

#[test]
fn detail_levels_add_lines_in_order() {
    let s = running_setlist();
    let summary = Verbose::new(Detail::Summary).render(&s);
    let normal = Verbose::new(Detail::Normal).render(&s);
    let verbose = Verbose::new(Detail::Verbose).render(&s);
    assert!(summary.lines().count() < normal.lines().count());
    assert!(normal.lines().count() < verbose.lines().count());
    // Summary: one line per level, so no per-level labels; the header has time and ETA.
    assert!(!summary.contains("Progress:") && !summary.contains("Estimated Remaining:"));
    assert!(
        summary.contains("\nElapsed: 0:02:20, ETA 0:20:00\n"),
        "{summary}"
    );
    // Normal: status, timing, estimate and progress, but no metadata or metrics.
    for label in [
        "Elapsed: 0:01:45",
        "Estimated Remaining: 0:00:18 (0:10-0:25)",
    ] {
        assert!(normal.contains(label), "{label} missing:\n{normal}");
    }
    for label in ["Block:", "Metrics:", "Busy:", "Venue:"] {
        assert!(!normal.contains(label), "{label} in Normal:\n{normal}");
    }
    // Verbose: everything of Normal (in the same order), plus metadata and metrics.
    let mut rest = verbose.as_str();
    for line in normal.lines().filter(|l| !l.is_empty()) {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("Normal line {line:?} missing or out of order"));
        rest = &rest[at + line.len()..];
    }
    for label in [
        "Block: DetectOnsets1",
        "- CPU: 45%",
        "- Events Found: 127 (1.2/sec)",
    ] {
        assert!(verbose.contains(label), "{label} missing:\n{verbose}");
    }
}

/// A span created long before it was entered (a queued task): its idle time, counted from
/// creation, is longer than its duration, counted from its start; the line says why.
#[test]
fn idle_before_the_start_is_named() {
    let mut root = level(1, "crawl", "crawl", "completed", 0, Some(2_000), json!({}));
    let queued = level(
        2,
        "queued",
        "queued",
        "completed",
        1_450,
        Some(1_502),
        json!({"timing": {"created_at_us": at(0), "busy_us": 2_000, "idle_us": 1_500_000}}),
    );
    root["children"] = json!([queued]);
    let verbose = Verbose::new(Detail::Verbose).render(&state(root, json!({})));
    assert!(verbose.contains("Duration: 52ms"), "{verbose}");
    assert!(
        verbose.contains("Busy: 2ms, Idle: 1.5s (1.4s before it started)"),
        "{verbose}"
    );
}

/// A parent whose children are of several types (a stranger's importer: a checksum, images,
/// directories) counts something of its own: its units are not named after whichever child
/// came first, and its children are not numbered out of its total.
#[test]
fn children_of_several_types_are_not_counted_in_the_parents_units() {
    let mut root = level(
        1,
        "import",
        "import",
        "completed",
        0,
        Some(40),
        json!({"current": 20, "total": 20}),
    );
    root["children"] = json!([
        level(
            2,
            "checksum",
            "checksum",
            "completed",
            1,
            Some(10),
            json!({})
        ),
        level(3, "image", "fetch", "completed", 1, Some(34), json!({})),
        level(4, "dir", "dir", "completed", 2, Some(6), json!({})),
    ]);
    let text = Verbose::new(Detail::Normal).render(&state(root.clone(), json!({})));
    assert!(text.contains("Status: Completed (20/20, 100%)"), "{text}");
    assert!(text.contains("Image 2: fetch (ID: 3)"), "{text}");
    assert!(!text.contains("/20:"), "{text}");
    // Children of one type still are.
    root["children"] = json!([
        level(2, "image", "a", "completed", 1, Some(10), json!({})),
        level(3, "image", "b", "completed", 1, Some(34), json!({})),
    ]);
    let text = Verbose::new(Detail::Normal).render(&state(root, json!({})));
    assert!(text.contains("20/20 images"), "{text}");
    assert!(text.contains("Image 2/20: b (ID: 3)"), "{text}");
}

/// An operation read back after its process was killed: cancelled (interrupted), and its
/// duration is a lower bound (the time to its last record), not how long it ran.
#[test]
fn an_interrupted_operation_says_its_duration_is_a_lower_bound() {
    let root = level(
        1,
        "backup",
        "photos",
        "cancelled",
        0,
        None,
        json!({"cancel_reason": "interrupted", "current": 37, "total": 60,
               "timing": {"elapsed_us": 1_500_000}}),
    );
    let text = Verbose::new(Detail::Normal).render(&state(root, json!({})));
    assert!(
        text.contains("Status: Cancelled (interrupted), 37/60\n"),
        "{text}"
    );
    assert!(
        text.contains("Duration: at least 1.5s (to its last record)"),
        "{text}"
    );
    assert!(!text.contains("Ended:"), "{text}");
}

#[test]
fn failed_block_shows_error_context_verbose() {
    let text = Verbose::new(Detail::Verbose).render(&failed_block());
    assert_clean(&text);
    golden("failed_verbose.txt", &text);
}

#[test]
fn failed_block_summary_names_the_error() {
    let text = Verbose::new(Detail::Summary).render(&failed_block());
    assert_eq!(
        text,
        "\
Setlist: \"Night Run\" (ID: 100)
Started: 2024-01-15 10:30:00
Status: Failed (2/3 songs, 1 skipped)
Error: 1 song failed (at Night Run)
Failures Below: 2, first: Decoder failed: invalid header … (at Night Run › audio4.wav › Decode › block-37)

Song 1/3: audio3.wav (ID: 101) - Completed in 40.0s
Song 2/3: audio4.wav (ID: 102) - Completed in 7.0s, 2 failed below
  Action 1/1: Decode (ID: 104) - Failed in 4.0s, error: 1 of 3 blocks failed, 1 failed below
    Block 1/3: block-36 (ID: 105) - Completed in 1.1s
    Block 2/3: block-37 (ID: 107) - Failed in 2.4s, error: Decoder failed: invalid header …
    Block 3/3: block-38 (ID: 108) - Completed in 900ms
Song 3/3: audio5.wav (ID: 109) - Skipped
"
    );
}

#[test]
fn retried_block_verbose() {
    let text = Verbose::new(Detail::Verbose).render(&retried_block());
    assert_clean(&text);
    golden("retried_verbose.txt", &text);
}

#[test]
fn retried_block_summary_line_names_the_attempt() {
    let text = Verbose::new(Detail::Summary).render(&retried_block());
    let line = text.lines().find(|l| l.contains("SeparateStems1")).unwrap();
    assert_eq!(
        line,
        "  Block 2/2: SeparateStems1 (ID: 204) - Completed in 2.0s, attempt 2 (after 1 failed)"
    );
    // The song it belongs to reads completed, not "with failures".
    assert!(
        text.contains("Song 1/1: audio5.wav (ID: 201) - Completed in 4.5s\n"),
        "{text}"
    );
    let normal = Verbose::new(Detail::Normal).render(&retried_block());
    assert!(
        normal.contains(
            "    Attempt: 2 (after 1 failed)\n    Earlier Attempts:\n      - Attempt 1: \
             Failed in 400ms, started 2024-01-15 10:30:12, error: GPU out of memory (needed 2.1 GiB)\n"
        ),
        "{normal}"
    );
    assert!(
        !normal.contains("allocation failed"),
        "events are Verbose only"
    );
}

#[test]
fn cancelled_operation_verbose() {
    let text = Verbose::new(Detail::Verbose).render(&cancelled_export());
    assert_clean(&text);
    golden("cancelled_verbose.txt", &text);
}

#[test]
fn huge_run_collapses_the_middle_children() {
    let s = huge_run();
    let text = Verbose::new(Detail::Verbose).max_children(6).render(&s);
    assert_clean(&text);
    assert!(
        text.lines().count() < 60,
        "{} lines:\n{text}",
        text.lines().count()
    );
    // 10,000 blocks: 3 first + 3 last shown, the 9,994 between counted by status.
    assert!(
        text.contains("\n\n  … 9,994 more blocks: 9,949 completed, 33 failed, 12 running\n\n"),
        "{text}"
    );
    golden("huge_verbose.txt", &text);

    // The same with 10 shown, one line per level.
    let text = Verbose::new(Detail::Summary).max_children(10).render(&s);
    assert!(text.lines().count() < 20, "{text}");
    assert!(
        text.contains("\n  … 9,990 more blocks: 9,947 completed, 33 failed, 10 running\n"),
        "{text}"
    );

    // With no children shown, each parent's children are one line (no "more").
    let text = Verbose::new(Detail::Summary).max_children(0).render(&s);
    assert_eq!(
        text,
        "\
Render: \"Big Run\" (ID: 1)
Started: 2024-01-15 10:30:00
Status: Running (0/1 action completed, 99%)
Elapsed: 0:02:20
Failures Below: 33, first: checksum mismatch (at Big Run › Render › block-300)

… 1 action: 1 running
"
    );
}

#[test]
fn huge_run_default_limit_shows_twenty_children() {
    let text = Verbose::new(Detail::Summary).render(&huge_run());
    let blocks = text.lines().filter(|l| l.contains("Block ")).count();
    assert_eq!(blocks, 20, "{text}");
    assert!(text.contains("  … 9,980 more blocks: "), "{text}");
}

#[test]
fn max_depth_hides_and_counts_descendants() {
    let s = running_setlist();
    let text = Verbose::new(Detail::Summary).max_depth(1).render(&s);
    assert_eq!(
        text,
        "\
Setlist: \"My Setlist\" (ID: 42)
Started: 2024-01-15 10:30:00
Status: Running (3/10 songs completed, 34%)
Elapsed: 0:02:20, ETA 0:20:00

… 3 songs folded: 3 completed; took 0:01:50 to 0:02:40, mean 0:02:10
Song 4/10: audio4.wav (ID: 17) - Running 37% (1/5 actions), ETA 0:15:30
  … 3 levels hidden below (max depth 1): 3 actions
Song 5/10: audio5.wav (ID: 21) - Pending (planned)
Song 6/10: audio6.wav (ID: 22) - Pending (planned)
"
    );
    // Depth 0: the header, then everything below counted, folded songs included.
    let text = Verbose::new(Detail::Normal).max_depth(0).render(&s);
    assert!(
        text.ends_with("\n\n… 9 levels hidden below (max depth 0): 6 songs, 3 actions\n"),
        "{text}"
    );
    assert!(!text.contains("Song 4/10"));
    // A limit deeper than the tree changes nothing.
    assert_eq!(
        Verbose::new(Detail::Verbose).max_depth(3).render(&s),
        Verbose::new(Detail::Verbose).render(&s)
    );
}

#[test]
fn stalled_level_is_marked_at_every_detail() {
    let mut v = serde_json::to_value(running_setlist()).unwrap();
    v["root"]["children"][0]["children"][1]["stalled"] = json!(true);
    let s: ProgressState = serde_json::from_value(v).unwrap();
    let summary = Verbose::new(Detail::Summary).render(&s);
    assert!(summary.contains("(ID: 19) - Running 85% (127/150 events), ETA 0:00:18, STALLED\n"));
    let normal = Verbose::new(Detail::Normal).render(&s);
    assert!(normal.contains("  Action 2/5: DetectOnsets (ID: 19)\n    Status: Running, STALLED\n"));
    assert_eq!(normal.matches("STALLED").count(), 1);
}

#[test]
fn control_characters_in_names_stay_on_one_line() {
    let mut v = serde_json::to_value(running_setlist()).unwrap();
    v["root"]["children"][0]["name"] = json!("bad\nname\u{1b}[31m");
    let s: ProgressState = serde_json::from_value(v).unwrap();
    let text = Verbose::new(Detail::Summary).render(&s);
    assert!(
        text.contains("Song 4/10: bad\\nname\\u{1b}[31m (ID: 17)"),
        "{text}"
    );
    assert!(active_path(&s).contains("song 4/10 bad\\nname\\u{1b}[31m"));
}

#[test]
fn verbose_shows_panics_input_errors_and_flattening() {
    let worker = level(
        301,
        "worker",
        "w-1",
        "failed",
        0,
        Some(2_000),
        json!({
            "percentage": null, "flattened": true,
            "input_errors": ["progress.total: not a number (\"lots\")"],
            "metadata": {"note": "first line\nsecond line", "retries": -1, "ratio": 0.5,
                         "dry_run": false},
            "error": error(301, "index out of bounds", &["Job", "w-1"], 2_000,
                           json!({"origin": "panic", "location": "src/worker.rs:9"}))
        }),
    );
    let root = level(
        300,
        "job",
        "Job",
        "completed",
        0,
        Some(3_000),
        json!({"children": [worker]}),
    );
    let s = state(root, json!({}));
    let text = Verbose::new(Detail::Verbose).render(&s);
    assert_clean(&text);
    // (`json!` sorts object keys, so the metadata reads alphabetically here.)
    assert!(
        text.ends_with(
            "\
Worker 1: w-1 (ID: 301)
  Status: Failed
  Started: 2024-01-15 10:30:00
  Ended: 2024-01-15 10:30:02
  Duration: 2.0s
  Dry Run: false
  Note: first line
    second line
  Ratio: 0.5
  Retries: -1
  Error (panic): index out of bounds
  At: Job › w-1
  Location: src/worker.rs:9
  Input Errors:
    - progress.total: not a number (\"lots\")
  Flattened: deeper levels were attached here (store depth limit)
"
        ),
        "{text}"
    );
    // Normal keeps the error but not its origin, nor the verbose-only lines.
    let normal = Verbose::new(Detail::Normal).render(&s);
    assert!(
        normal.contains("\n  Error: index out of bounds\n"),
        "{normal}"
    );
    for label in ["Note:", "Input Errors:", "Flattened:", "(panic)"] {
        assert!(!normal.contains(label), "{label} in Normal:\n{normal}");
    }
}

// === active path ===

#[test]
fn active_path_follows_the_running_levels() {
    assert_eq!(
        active_path(&running_setlist()),
        "setlist \"My Setlist\" 3/10 › song 4/10 audio4.wav › action 2/5 DetectOnsets (85%, ETA 0:18)"
    );
}

#[test]
fn active_path_takes_the_latest_started_running_child() {
    let mut v = serde_json::to_value(running_setlist()).unwrap();
    // Start the pending action after DetectOnsets: it is now the one followed.
    let normalize = &mut v["root"]["children"][0]["children"][2];
    normalize["status"] = json!("running");
    normalize["timing"]["started_at_us"] = json!(at(60_000));
    normalize["stalled"] = json!(true);
    v["cancel_requested"] = json!(true);
    let s: ProgressState = serde_json::from_value(v).unwrap();
    assert_eq!(
        active_path(&s),
        "setlist \"My Setlist\" 3/10 › song 4/10 audio4.wav › action 3/5 Normalize (stalled) \
         [cancel requested]"
    );
}

#[test]
fn active_path_of_finished_operations() {
    assert_eq!(
        active_path(&failed_block()),
        "setlist \"Night Run\" failed: 1 song failed"
    );
    assert_eq!(
        active_path(&cancelled_export()),
        "export \"Batch Export\" cancelled"
    );
    let mut v = serde_json::to_value(cancelled_export()).unwrap();
    v["status"] = json!("completed");
    let s: ProgressState = serde_json::from_value(v).unwrap();
    assert_eq!(active_path(&s), "export \"Batch Export\" completed");
}

#[test]
fn active_path_of_the_huge_run_counts_positions() {
    assert_eq!(
        active_path(&huge_run()),
        "render \"Big Run\" 0/1 › action 1/1 Render › block 10,000/10,000 block-10000"
    );
}

// === formatting ===

#[test]
fn timestamps_are_utc_with_leap_years() {
    let s = |secs: u64| format_timestamp(secs * 1_000_000);
    assert_eq!(s(0), "1970-01-01 00:00:00");
    assert_eq!(format_timestamp(BASE_US), "2024-01-15 10:30:00");
    assert_eq!(s(1_709_251_199), "2024-02-29 23:59:59"); // leap day, divisible by 4
    assert_eq!(s(1_709_251_200), "2024-03-01 00:00:00");
    assert_eq!(s(951_825_600), "2000-02-29 12:00:00"); // leap: divisible by 400
    assert_eq!(s(4_107_456_000), "2100-02-28 00:00:00"); // not leap: divisible by 100
    assert_eq!(s(4_107_542_400), "2100-03-01 00:00:00");
    assert_eq!(s(1_735_689_599), "2024-12-31 23:59:59"); // day 366
    assert_eq!(s(1_735_689_600), "2025-01-01 00:00:00");
    assert_eq!(s(253_402_300_799), "9999-12-31 23:59:59");
    // Sub-second digits are cut.
    assert_eq!(format_timestamp(999_999), "1970-01-01 00:00:00");
}

#[test]
fn durations_by_magnitude() {
    assert_eq!(format_duration(0), "0ms");
    assert_eq!(format_duration(999_999), "999ms");
    assert_eq!(format_duration(1_000_000), "1.0s");
    assert_eq!(format_duration(3_299_999), "3.2s");
    assert_eq!(format_duration(59_999_999), "59.9s");
    assert_eq!(format_duration(60_000_000), "0:01:00");
    assert_eq!(format_duration(135_000_000), "0:02:15");
    assert_eq!(format_duration(930_000_000), "0:15:30");
    assert_eq!(format_duration(3_723_999_999), "1:02:03");
    assert_eq!(format_duration(100 * 3_600_000_000), "100:00:00");
}

#[test]
fn percentages_round_but_never_claim_done() {
    assert_eq!(format_percent(0.0), "0%");
    assert_eq!(format_percent(0.04), "0.0%");
    assert_eq!(format_percent(7.56), "7.6%");
    assert_eq!(format_percent(9.94), "9.9%");
    assert_eq!(format_percent(9.96), "10%");
    assert_eq!(format_percent(30.000_000_000_000_004), "30%");
    assert_eq!(format_percent(84.67), "85%");
    assert_eq!(format_percent(99.86), "99%");
    assert_eq!(format_percent(100.0), "100%");
    assert_eq!(format_percent(145.2), "145%");
    assert_eq!(format_percent(-3.0), "0%");
    assert_eq!(format_percent(f64::NAN), "?%");
}

/// A finished run with one failed song: "completed with failures" and "1 failed" everywhere
/// the text says what happened; handled errors and a slow rate read naturally.
#[test]
fn completed_with_failures_failed_counts_handled_errors_and_slow_rates() {
    let failure = error(62, "checksum mismatch", &["Run", "s-2"], 50_000, json!({}));
    let ok = level(61, "song", "s-1", "completed", 0, Some(40_000), json!({}));
    let bad = level(
        62,
        "song",
        "s-2",
        "failed",
        40_000,
        Some(50_000),
        json!({"error": failure.clone()}),
    );
    let ok2 = level(
        63,
        "song",
        "s-3",
        "completed",
        50_000,
        Some(90_000),
        json!({"handled_errors": {"count": 2, "last": error(63, "upload failed, retrying", &["Run", "s-3"], 60_000, json!({}))}}),
    );
    let root = level(
        60,
        "setlist",
        "Run",
        "completed",
        0,
        Some(90_000),
        json!({"current": 2, "failed": 1, "total": 3, "percentage": 66.7, "with_failures": true,
               "failures_below": {"count": 1, "first": failure.clone(), "last": failure},
               "children": [ok, bad, ok2]}),
    );
    let s = state(root, json!({"with_failures": true}));
    let text = Verbose::new(Detail::Normal).render(&s);
    assert!(
        text.contains("Status: Completed with failures (2/3 songs, 1 failed, 67%)"),
        "{text}"
    );
    assert!(
        text.contains("Errors Handled: 2, last: upload failed, retrying (at Run › s-3)"),
        "{text}"
    );
    let summary = Verbose::new(Detail::Summary).render(&s);
    assert!(
        summary.contains("Status: Completed with failures"),
        "{summary}"
    );
    assert_eq!(active_path(&s), "setlist \"Run\" completed with failures");
}

#[test]
fn positions_without_a_known_total_are_not_read_as_the_last_one() {
    let files: Vec<Value> = (0..3)
        .map(|i| {
            let status = if i == 2 { "running" } else { "completed" };
            level(
                70 + i,
                "file",
                &format!("f{i}"),
                status,
                i * 1_000,
                (i < 2).then_some(i * 1_000 + 900),
                json!({}),
            )
        })
        .collect();
    let root = level(
        69,
        "import",
        "Import",
        "running",
        0,
        None,
        json!({"children": files}),
    );
    let s = state(root, json!({}));
    let path = active_path(&s);
    assert!(path.contains("› file 3 f2"), "not 3/3: {path}");
    let text = Verbose::new(Detail::Summary).render(&s);
    assert!(text.contains("File 3: f2 (ID: 72)"), "{text}");
}

#[test]
fn slow_levels_show_their_rate_per_minute_or_hour() {
    let song = level(
        81,
        "song",
        "s",
        "running",
        0,
        None,
        json!({"current": 1, "total": 10,
               "estimate": {"remaining_us": 540_000_000, "low_us": 500_000_000, "high_us": 600_000_000,
                            "rate_per_s": 0.0167, "basis": "rate"}}),
    );
    let root = level(
        80,
        "setlist",
        "Slow",
        "running",
        0,
        None,
        json!({"current": 1, "total": 10, "children": [song]}),
    );
    let text = Verbose::new(Detail::Verbose).render(&state(root, json!({})));
    assert!(!text.contains("0.0"), "{text}");
    assert!(
        text.contains("Rate: 1.0 songs/min") || text.contains("Rate: 1.0/min"),
        "{text}"
    );
}

/// A terminal shorter than the tree: the running path stays, finished lines go first, and a
/// marker says how much was left out.
#[test]
fn fitted_to_a_short_terminal_the_running_path_stays_visible() {
    let mut s = running_setlist();
    s.root.children.retain(|c| !c.planned);
    let full = Verbose::new(Detail::Summary).render(&s);
    assert_eq!(full.lines().count(), 10, "{full}");
    // Too short for a marker in place of each gap: the running path, one marker at the end.
    let fitted = Verbose::new(Detail::Summary).max_lines(9).render(&s);
    assert_eq!(fitted.lines().count(), 9, "{fitted}");
    assert!(fitted.contains("Song 4/10: audio4.wav"), "{fitted}");
    assert!(
        fitted.contains("DetectOnsets (ID: 19) - Running"),
        "{fitted}"
    );
    assert!(fitted.contains("Elapsed: 0:02:20, ETA 0:20:00"), "{fitted}");
    assert!(
        !fitted.contains("LoadAudio"),
        "a finished action goes first: {fitted}"
    );
    assert!(
        fitted.ends_with("… 2 more lines (a taller terminal shows them)\n"),
        "{fitted}"
    );
    // Room for everything: unchanged.
    assert_eq!(
        Verbose::new(Detail::Summary).max_lines(100).render(&s),
        full
    );
    // Many finished siblings before the running one: one marker where they were.
    let mut children: Vec<Value> = (0..6)
        .map(|i| {
            level(
                90 + i,
                "file",
                &format!("f{i}"),
                "completed",
                0,
                Some(10),
                json!({}),
            )
        })
        .collect();
    children.push(level(99, "file", "now", "running", 20, None, json!({})));
    let root = level(
        89,
        "import",
        "Import",
        "running",
        0,
        None,
        json!({"children": children}),
    );
    let text = Verbose::new(Detail::Summary)
        .max_lines(8)
        .render(&state(root, json!({})));
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(text.contains("File 1: f0"), "{text}");
    assert!(
        text.contains("… 5 more lines\nFile 7: now (ID: 99) - Running"),
        "{text}"
    );
}
