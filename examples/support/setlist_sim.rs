//! The setlist workload shared by the examples: `#[instrument]`ed functions for
//! setlist → song → action → block → subprocess, with progress fields saying what each level
//! is. One block (onset detection in the second song) fails. With [`FLAKY_BLOCK`] set, one more
//! block (stem separation in the first song) fails on its first attempt and is retried. Include it with
//! `#[path = "support/setlist_sim.rs"] mod setlist_sim;`.

#![allow(dead_code)] // each example uses a different part

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, instrument};
use tracing_progress::ProgressSpanExt;

/// Speed-up factor from `SETLIST_SPEED` (default 1; `0.25` runs four times slower).
pub fn speed() -> f64 {
    std::env::var("SETLIST_SPEED")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(1.0)
}

/// `ms` milliseconds of demo time, scaled by [`speed`].
pub fn scaled(ms: u64) -> Duration {
    Duration::from_secs_f64(ms as f64 / 1_000.0 / speed())
}

/// Simulated work: `ms` milliseconds divided by the speed-up.
pub fn work(ms: u64) {
    // A third computing (so CPU figures mean something), the rest waiting on "I/O".
    let total = scaled(ms);
    let spin_until = std::time::Instant::now() + total / 3;
    let mut x = 0u64;
    while std::time::Instant::now() < spin_until {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    std::thread::sleep(total - total / 3);
}

/// One song of the setlist.
pub struct Song {
    pub id: &'static str,
    pub file: &'static str,
    pub seconds: f64,
}

/// The demo setlist.
pub const SONGS: [Song; 3] = [
    Song {
        id: "song-001",
        file: "audio1.wav",
        seconds: 180.5,
    },
    Song {
        id: "song-002",
        file: "audio2.wav",
        seconds: 212.0,
    },
    Song {
        id: "song-003",
        file: "audio3.wav",
        seconds: 157.3,
    },
];

/// Runs the subprocess level of one song somewhere else (another process).
pub type SubprocessRunner = fn(&Song) -> Result<(), String>;

/// Set once before running to move the subprocess level out of this process.
pub static SUBPROCESS: OnceLock<SubprocessRunner> = OnceLock::new();

/// Set before running: `SeparateStems1` of the first song fails on its first attempt (out of
/// GPU memory) and succeeds when the action retries it.
pub static FLAKY_BLOCK: AtomicBool = AtomicBool::new(false);

/// Attempts per block; only transient errors are retried.
const MAX_ATTEMPTS: u32 = 3;

/// Whether an error is worth another attempt (a deterministic one is not).
fn is_transient(e: &str) -> bool {
    e.contains("out of memory")
}

const ACTIONS: [(&str, &str, u64); 4] = [
    ("LoadAudio", "set_file_path", 1),
    ("DetectOnsets", "detect_onsets", 2),
    ("SeparateStems", "separate", 2),
    ("ExportStems", "export", 1),
];

/// The actions' display names (`{action} → {method}`), planned by each song up front.
const ACTION_NAMES: [&str; 4] = [
    "LoadAudio → set_file_path",
    "DetectOnsets → detect_onsets",
    "SeparateStems → separate",
    "ExportStems → export",
];

#[instrument(skip_all, fields(
    progress.operation = "setlist_processing",
    progress.level = "setlist",
    progress.name = name,
    setlist_id = "abc123",
))]
pub fn process_setlist(name: &str, songs: &[Song]) {
    // Every song shows pending from the start, in order; each song span takes its slot by
    // key (`progress.key = song.id`). The plan is the setlist's total.
    tracing::Span::current().plan_keyed(Some("song"), songs.iter().map(|s| (s.id, s.file)));
    for (i, song) in songs.iter().enumerate() {
        if let Err(e) = process_song(i + 1, songs.len(), song) {
            // The song failed; the setlist carries on with the next one.
            tracing::warn!(song = song.file, error = %e, "song failed, continuing");
        }
        if tracing_progress::is_cancelled() {
            info!("setlist cancelled");
            break;
        }
    }
}

#[instrument(err, skip_all, fields(
    progress.level = "song",
    progress.name = song.file,
    progress.key = song.id,
    // The same from a field: the four actions pending before the first starts.
    progress.planned = ?ACTION_NAMES,
    progress.planned_level = "action",
    song_id = song.id,
    length = %format!("{:.1}s", song.seconds),
))]
fn process_song(index: usize, of: usize, song: &Song) -> Result<(), String> {
    info!(progress.message = %format!("Processing song {index}/{of}: {}", song.file));
    for (action, method, blocks) in ACTIONS {
        if tracing_progress::is_cancelled() {
            break;
        }
        execute_action(action, method, blocks, song)?;
    }
    Ok(())
}

#[instrument(err, skip_all, fields(
    progress.level = "action",
    progress.name = %format!("{action} → {method}"),
    progress.total = blocks,
))]
fn execute_action(action: &str, method: &str, blocks: u64, song: &Song) -> Result<(), String> {
    for n in 1..=blocks {
        let (name, id) = (format!("{action}{n}"), format!("block-{n:03}"));
        for attempt in 1..=MAX_ATTEMPTS {
            match run_block(&name, &id, song, attempt) {
                Ok(()) => break,
                Err(e) if is_transient(&e) && attempt < MAX_ATTEMPTS => {
                    tracing::warn!(block = %name, attempt, error = %e, "block failed, retrying");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[instrument(err, skip_all, fields(
    progress.level = "block",
    progress.name = name,
    progress.total = tracing::field::Empty,
    progress.unit = "events",
    block_id = id,
))]
fn run_block(name: &str, id: &str, song: &Song, attempt: u32) -> Result<(), String> {
    let span = tracing::Span::current();
    let steps = 20u64;
    span.set_total(steps * 5);
    let flaky = FLAKY_BLOCK.load(Ordering::Relaxed)
        && attempt == 1
        && name == "SeparateStems1"
        && song.id == "song-001";
    if flaky {
        // Before the first unit, as a real allocation failure would: the retry redoes no
        // counted work, so the song's progress never goes back.
        tracing::info!(model = "htdemucs", "loading separation model");
        work(16);
        tracing::warn!(bytes = 2_254_857_830u64, "GPU allocation failed");
        return Err("GPU out of memory (needed 2.1 GiB)".to_string());
    }
    for step in 1..=steps {
        if tracing_progress::is_cancelled() {
            // Stop promptly: this block and everything above it end as cancelled.
            return Ok(());
        }
        work(8);
        span.inc(5);
        if name.starts_with("DetectOnsets") {
            span.set_metadata("events_found", (step * 5 + 7).into());
        }
        if name.starts_with("Detect") && step % 5 == 0 {
            tracing::info!(step, frame = step * 512, "onset pass");
        }
        if name == "DetectOnsets2" && song.id == "song-002" && step == 11 {
            tracing::warn!(
                frame = step * 512,
                "onset energy unstable, widening the window"
            );
        }
        if name == "DetectOnsets2" && song.id == "song-002" && step == 12 {
            return Err(format!("onset detector diverged at frame {}", step * 512));
        }
    }
    if name.starts_with("Load") {
        span.set_metadata(
            "output",
            format!("audio_data (44100 Hz, 2 channels, {:.1}s)", song.seconds).into(),
        );
    }
    if name.starts_with("Export") {
        encode(song)?;
    }
    Ok(())
}

#[instrument(err, skip_all, fields(
    progress.level = "subprocess",
    progress.name = "ffmpeg",
    command = %format!("ffmpeg -i {} -c:a flac stems.flac", song.file),
    progress.total = 4,
))]
fn encode(song: &Song) -> Result<(), String> {
    if let Some(run) = SUBPROCESS.get() {
        return run(song);
    }
    encode_work()
}

/// The subprocess's own work: four steps, counted on the current span.
pub fn encode_work() -> Result<(), String> {
    for _ in 0..4 {
        work(15);
        tracing::Span::current().inc(1);
    }
    Ok(())
}
