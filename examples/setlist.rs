//! A setlist processing run, as in the proposal: setlist → song → action → block → subprocess.
//!
//! Plain `#[instrument]`ed functions; the progress fields say what each level is. One block
//! (onset detection in the second song) fails. While it runs, the running operation's tree is
//! printed now and then; at the end, the final state and the history.
//!
//! ```text
//! cargo run --example setlist                 # about 4 seconds
//! SETLIST_SPEED=20 cargo run --example setlist  # 20x faster
//! ```

use std::time::Duration;

use tracing::{info, instrument};
use tracing_progress::{HistoryQuery, ProgressSpanExt, Store};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// Speed-up factor from `SETLIST_SPEED` (default 1).
fn speed() -> u64 {
    std::env::var("SETLIST_SPEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(1)
}

fn work(ms: u64) {
    std::thread::sleep(Duration::from_micros(ms * 1_000 / speed()));
}

struct Song {
    id: &'static str,
    file: &'static str,
    seconds: f64,
}

const ACTIONS: [(&str, &str, u64); 4] = [
    ("LoadAudio", "set_file_path", 1),
    ("DetectOnsets", "detect_onsets", 2),
    ("SeparateStems", "separate", 2),
    ("ExportStems", "export", 1),
];

#[instrument(skip_all, fields(
    progress.operation = "setlist_processing",
    progress.level = "setlist",
    progress.name = name,
    progress.total = songs.len(),
    setlist_id = "abc123",
))]
fn process_setlist(name: &str, songs: &[Song]) {
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
    progress.total = ACTIONS.len(),
    song_id = song.id,
    duration_s = song.seconds,
))]
fn process_song(index: usize, of: usize, song: &Song) -> Result<(), String> {
    info!(progress.message = %format!("Processing song {index}/{of}: {}", song.file));
    for (action, method, blocks) in ACTIONS {
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
        run_block(&format!("{action}{n}"), &format!("block-{:03}", n), song)?;
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
fn run_block(name: &str, id: &str, song: &Song) -> Result<(), String> {
    let span = tracing::Span::current();
    let steps = 20u64;
    span.set_total(steps * 5);
    for step in 1..=steps {
        work(8);
        span.inc(5);
        if name.starts_with("DetectOnsets") {
            span.set_metadata("events_found", (step * 5 + 7).into());
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
    for _ in 0..4 {
        work(15);
        tracing::Span::current().inc(1);
    }
    Ok(())
}

fn print_running(store: &Store) {
    for op in store.active() {
        println!("--- running: {} ---", op.name);
        print!("{}", op.render_tree());
    }
}

fn main() {
    let (progress, store) = tracing_progress::layer();
    // The log filter sits on the fmt layer only (a per-layer filter): a global `warn` filter
    // would disable the INFO spans for every layer, ours included.
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::registry()
        .with(progress)
        .with(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(log_filter),
        )
        .init();

    let songs = [
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

    // A reporter thread prints the running tree now and then, like a UI would poll.
    let reporter_store = store.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reporter_done = done.clone();
    let reporter = std::thread::spawn(move || {
        let mut sub = reporter_store.subscribe();
        while !reporter_done.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(1_000 / speed()));
            if !sub.poll().changed.is_empty() {
                print_running(&reporter_store);
            }
        }
    });

    process_setlist("My Setlist", &songs);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = reporter.join();

    println!("=== final state ===");
    for op in store.history(&HistoryQuery::new()) {
        print!("{}", op.render_tree());
        if let Some(e) = &op.error {
            println!("error: {} (at {})", e.message, e.path.join(" > "));
        }
    }
    println!("=== history ===");
    for op in store.history(&HistoryQuery::new()) {
        println!(
            "#{} {} {:?} {} ({} nodes, {} failed)",
            op.id,
            op.operation_type,
            &*op.name,
            op.status,
            op.metrics.nodes_seen,
            op.metrics.nodes_failed
        );
    }
}
