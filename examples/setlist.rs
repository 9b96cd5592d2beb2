//! A setlist processing run, as in the proposal: setlist → song → action → block → subprocess.
//!
//! Plain `#[instrument]`ed functions; the progress fields say what each level is. One block
//! (onset detection in the second song) fails. Another (stem separation in the first song)
//! runs out of GPU memory on its first attempt and its action retries it: it shows as one
//! block on its second attempt, with the failed attempt's error and recent events, and its
//! song completes without failures. While it runs, the running operation's tree is printed
//! now and then; at the end, the final state and the history.
//!
//! With `sqlite` (in `full`), finished operations go to a history file under the target
//! directory (`target/setlist-history.db`; `SETLIST_HISTORY=PATH` for another, `off` for none):
//! the second run lists the first in its history and has an ETA from it before its first
//! song finishes.
//!
//! With feature `process` the subprocess level runs in a real child process (this example
//! re-invoked with `--encode-child FILE`) whose progress shows live under the block that
//! spawned it: the child's `encode` operation, grafted under a `subprocess` node with its pid
//! and exit status.
//!
//! ```text
//! cargo run --example setlist                 # about 4 seconds
//! SETLIST_SPEED=20 cargo run --example setlist  # 20x faster
//! cargo run --features terminal --example setlist -- --ndjson | jq .  # JSON lines when piped
//! cargo run --example setlist --features process,http -- --serve   # child processes, live page
//! ```

#[path = "support/setlist_sim.rs"]
mod setlist_sim;

use setlist_sim::{SONGS, process_setlist, scaled};
use tracing_progress::HistoryQuery;
#[cfg(all(feature = "process", unix))]
use tracing_progress::ProgressSpanExt;
use tracing_progress::view::{Detail, Verbose};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

/// Without the `terminal` feature: a thread prints the running tree now and then, as a UI
/// polling the store would.
#[cfg(not(feature = "terminal"))]
fn start_reporter(store: tracing_progress::Store) -> impl FnOnce() {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let reporter = std::thread::spawn(move || {
        let mut sub = store.subscribe();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(scaled(1_000));
            if !sub.poll().changed.is_empty() {
                for op in store.active() {
                    println!("--- running: {} ---", op.name);
                    print!("{op}");
                }
            }
        }
    });
    move || {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = reporter.join();
    }
}

/// With `http`: serve the API and live page while the setlist runs, when asked with
/// `--serve [ADDR]` or `SETLIST_SERVE=ADDR` (`1` for the default 127.0.0.1:7878). A token for
/// the cancel button comes from `SETLIST_TOKEN`.
#[cfg(feature = "http")]
fn serve(store: &tracing_progress::Store) -> Option<tracing_progress::http::Server> {
    let args: Vec<String> = std::env::args().collect();
    let from_args = args.iter().position(|a| a == "--serve").map(|i| {
        args.get(i + 1)
            .filter(|a| !a.starts_with("--"))
            .cloned()
            .unwrap_or_default()
    });
    let wanted = from_args.or_else(|| std::env::var("SETLIST_SERVE").ok())?;
    let addr: std::net::SocketAddr = match wanted.trim() {
        "" | "1" => ([127, 0, 0, 1], 7878).into(),
        other => match other.parse() {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("--serve {other:?}: not an address like 127.0.0.1:7878 ({e})");
                std::process::exit(2);
            }
        },
    };
    let mut server = tracing_progress::http::Server::builder(store.clone()).bind(addr);
    if let Ok(token) = std::env::var("SETLIST_TOKEN") {
        server = server.token(token);
    }
    match server.spawn() {
        Ok(handle) => {
            println!("serving progress at {}", handle.url());
            Some(handle)
        }
        Err(e) => {
            eprintln!("cannot serve progress: {e}");
            std::process::exit(2);
        }
    }
}

/// The history file: `SETLIST_HISTORY`, or `setlist-history.db` in the target directory this
/// example was built in (`target/debug/examples/setlist` → `target/`); `off` or empty: none.
#[cfg(feature = "sqlite")]
fn history_path() -> Option<std::path::PathBuf> {
    match std::env::var("SETLIST_HISTORY") {
        Ok(v) if v.is_empty() || v == "off" => None,
        Ok(v) => Some(v.into()),
        Err(_) => {
            let exe = std::env::current_exe().ok()?;
            let target = exe.parent()?.parent()?.parent()?;
            Some(target.join("setlist-history.db"))
        }
    }
}

/// A note for the person running the demo: on stdout, or on stderr when stdout carries
/// JSON lines only (`--ndjson`).
macro_rules! say {
    ($to_stderr:expr, $($arg:tt)*) => {
        if $to_stderr { eprintln!($($arg)*) } else { println!($($arg)*) }
    };
}

/// With a history file: what earlier runs left in it; whether they left anything.
#[cfg(feature = "sqlite")]
fn show_earlier_runs(
    store: &tracing_progress::Store,
    path: &std::path::Path,
    to_stderr: bool,
) -> bool {
    let earlier = store.history(&HistoryQuery::new().limit(5));
    say!(
        to_stderr,
        "history file: {} ({})",
        path.display(),
        if earlier.is_empty() {
            "new: run again to see this run in the history and an ETA from it".to_string()
        } else {
            let n = earlier.len();
            format!(
                "{n} earlier operation{}, newest first:",
                if n == 1 { "" } else { "s" }
            )
        }
    );
    for op in &earlier {
        say!(
            to_stderr,
            "  {} {:?} {} in {}",
            op.reference(),
            &*op.name,
            op.status,
            tracing_progress::view::format_duration(op.root.timing.elapsed_us)
        );
    }
    !earlier.is_empty()
}

/// Prints the setlist's first estimate, with how many songs were done by then and where it
/// came from: with an earlier run in the history file (`had_earlier`) it comes from that
/// run, before the first song finishes; else from this run's rate.
fn watch_first_eta(
    store: tracing_progress::Store,
    had_earlier: bool,
    to_stderr: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = std::time::Instant::now();
        while started.elapsed() < scaled(4_000) {
            let op = store
                .active()
                .into_iter()
                .find(|op| &*op.operation_type == "setlist_processing");
            if let Some(op) = op
                && let Some(estimate) = op.root.estimate()
            {
                // Durations of earlier runs' nodes (priors from the history file) show as
                // basis `History` somewhere in the tree. A parent costs the children that have
                // not started from those durations too: an ETA for the setlist before any song
                // finished can only come from them, when there are any (without, the rate of
                // the running songs' units gives one too).
                let mut stack = vec![&op.root];
                let mut from_history = had_earlier && op.root.current == 0;
                while let Some(node) = stack.pop() {
                    from_history |= had_earlier
                        && node
                            .estimate()
                            .is_some_and(|e| e.basis == tracing_progress::EstimateBasis::History);
                    stack.extend(node.children.iter());
                }
                say!(
                    to_stderr,
                    "first ETA after {} ms: {} remaining ({}), {}/{} songs done",
                    started.elapsed().as_millis(),
                    tracing_progress::view::format_duration(estimate.remaining_us),
                    if from_history {
                        "from earlier runs"
                    } else {
                        "from this run's rate"
                    },
                    op.root.current,
                    op.root.total.unwrap_or(0),
                );
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    })
}

/// The subprocess level in a child process: this example again, with `--encode-child FILE`.
#[cfg(all(feature = "process", unix))]
fn run_encoder_child(song: &setlist_sim::Song) -> Result<(), String> {
    use tracing_progress::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("no path to this example: {e}"))?;
    let status = std::process::Command::new(exe)
        .args(["--encode-child", song.file])
        // Its progress reaches us through the tree; its own output would land inside the
        // parent's live terminal view and break the redraw in place.
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn_tracked()
        .map_err(|e| format!("cannot start the encoder: {e}"))?
        .wait()
        .map_err(|e| format!("lost the encoder: {e}"))?;
    // The child's steps are its own; the parent's span counts them done once it succeeded.
    tracing::Span::current().set_current(4);
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("encoder failed: {status}"))
}

/// `--encode-child FILE`: the encoder process. Its progress goes to the parent's tree.
#[cfg(all(feature = "process", unix))]
fn encoder_child_main(file: &str) {
    let (progress, _store) = tracing_progress::layer();
    tracing_subscriber::registry().with(progress).init();
    tracing::info_span!(
        "encode_stems",
        progress.level = "encode",
        progress.name = %format!("encode {file} → stems.flac"),
        progress.total = 8,
        progress.unit = "steps",
    )
    .in_scope(|| {
        // Long enough to watch live under its block.
        for _ in 0..8 {
            setlist_sim::work(60);
            tracing::Span::current().inc(1);
        }
    });
}

fn main() {
    #[cfg(all(feature = "process", unix))]
    {
        let args: Vec<String> = std::env::args().collect();
        if let [_, flag, file, ..] = args.as_slice()
            && flag == "--encode-child"
        {
            encoder_child_main(file);
            return;
        }
        let _ = setlist_sim::SUBPROCESS.set(run_encoder_child);
    }
    setlist_sim::FLAKY_BLOCK.store(true, std::sync::atomic::Ordering::Relaxed);
    let builder = tracing_progress::Builder::new();
    #[cfg(feature = "sqlite")]
    let history = history_path();
    #[cfg(feature = "sqlite")]
    let builder = match &history {
        Some(path) => builder.history_file(path),
        None => builder,
    };
    // With `resources`: CPU and memory sampled off the hot path, shown per level.
    #[cfg(feature = "resources")]
    let builder = builder.sample_resources(std::time::Duration::from_millis(100));
    let (progress, store) = builder.build().expect("valid settings");

    // With `terminal`: the running tree redrawn in place on a TTY (logs print above it), or
    // plain periodic text when stdout is not a terminal; with `--ndjson` (or SETLIST_NDJSON=1)
    // that fallback is one JSON object per line per change, for CI logs and scripts.
    let ndjson = std::env::args().any(|a| a == "--ndjson")
        || std::env::var("SETLIST_NDJSON").is_ok_and(|v| v == "1");
    #[cfg(feature = "terminal")]
    let live = tracing_progress::terminal::LiveView::new(store.clone())
        .plain_interval(scaled(1_000))
        .ndjson(ndjson)
        .start();
    #[cfg(feature = "terminal")]
    let log_writer = live.log_writer();
    #[cfg(not(feature = "terminal"))]
    let log_writer = std::io::stderr;

    // The log filter sits on the fmt layer only (a per-layer filter): a global `warn` filter
    // would disable the INFO spans for every layer, ours included.
    let log_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::registry()
        .with(progress)
        .with(fmt::layer().with_writer(log_writer).with_filter(log_filter))
        .init();

    #[cfg(feature = "sqlite")]
    let had_earlier = history
        .as_ref()
        .is_some_and(|path| show_earlier_runs(&store, path, ndjson));
    #[cfg(not(feature = "sqlite"))]
    let had_earlier = false;
    #[cfg(not(feature = "terminal"))]
    let stop_reporter = start_reporter(store.clone());
    #[cfg(feature = "http")]
    let server = serve(&store);

    // On a terminal the live view shows the ETA itself, and a line printed under it would
    // break its redraw in place; the note is for piped runs.
    #[cfg(feature = "terminal")]
    let note_eta = !live.in_place();
    #[cfg(not(feature = "terminal"))]
    let note_eta = true;
    let first_eta = note_eta.then(|| watch_first_eta(store.clone(), had_earlier, ndjson));
    process_setlist("My Setlist", &SONGS);
    if let Some(t) = first_eta {
        let _ = t.join();
    }

    #[cfg(feature = "terminal")]
    let streamed = ndjson && !live.in_place();
    #[cfg(feature = "terminal")]
    live.finish();
    #[cfg(not(feature = "terminal"))]
    stop_reporter();
    // The stream already ended with the final states; keep its stdout JSON lines only.
    #[cfg(feature = "terminal")]
    if streamed {
        return;
    }

    println!("=== final state ===");
    // This run's operations (earlier runs' come from the history file and carry their run).
    for op in store
        .history(&HistoryQuery::new())
        .into_iter()
        .filter(|op| op.run.is_none())
    {
        println!(
            "{}",
            Verbose::new(Detail::Verbose).max_children(8).render(&op)
        );
        if let Some(e) = &op.error {
            println!("error: {} (at {})", e.message, e.path.join(" > "));
        }
    }
    println!("=== history ===");
    for op in store.history(&HistoryQuery::new().limit(10)) {
        println!(
            "#{} {} {:?} {} ({} nodes, {} failed, {} retried)",
            op.reference(),
            op.operation_type,
            &*op.name,
            op.status,
            op.metrics.nodes_seen,
            op.metrics.nodes_failed,
            op.metrics.retried
        );
    }

    // The writer thread does not outlive the process: let it finish.
    store.flush_history(std::time::Duration::from_secs(5));

    // Keep serving for a while so the history can be browsed (`SETLIST_LINGER` seconds).
    #[cfg(feature = "http")]
    if let Some(server) = server {
        let linger = std::env::var("SETLIST_LINGER")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(60);
        println!("done; still serving {} for {linger} s", server.url());
        std::thread::sleep(std::time::Duration::from_secs(linger));
        server.shutdown();
    }
}
