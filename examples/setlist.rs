//! A setlist processing run, as in the proposal: setlist → song → action → block → subprocess.
//!
//! Plain `#[instrument]`ed functions; the progress fields say what each level is. One block
//! (onset detection in the second song) fails. While it runs, the running operation's tree is
//! printed now and then; at the end, the final state and the history.
//!
//! With feature `process` the subprocess level runs in a real child process (this example
//! re-invoked with `--encode-child FILE`) whose progress shows live under the block that
//! spawned it: the child's `encode` operation, grafted under a `subprocess` node with its pid
//! and exit status.
//!
//! ```text
//! cargo run --example setlist                 # about 4 seconds
//! SETLIST_SPEED=20 cargo run --example setlist  # 20x faster
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

/// The subprocess level in a child process: this example again, with `--encode-child FILE`.
#[cfg(all(feature = "process", unix))]
fn run_encoder_child(song: &setlist_sim::Song) -> Result<(), String> {
    use tracing_progress::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| format!("no path to this example: {e}"))?;
    let status = std::process::Command::new(exe)
        .args(["--encode-child", song.file])
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
    let builder = tracing_progress::Builder::new();
    // With `resources`: CPU and memory sampled off the hot path, shown per level.
    #[cfg(feature = "resources")]
    let builder = builder.sample_resources(std::time::Duration::from_millis(100));
    let (progress, store) = builder.build().expect("valid settings");

    // With `terminal`: the running tree redrawn in place on a TTY (logs print above it), or
    // plain periodic text when stdout is not a terminal.
    #[cfg(feature = "terminal")]
    let live = tracing_progress::terminal::LiveView::new(store.clone())
        .plain_interval(scaled(1_000))
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

    #[cfg(not(feature = "terminal"))]
    let stop_reporter = start_reporter(store.clone());
    #[cfg(feature = "http")]
    let server = serve(&store);

    process_setlist("My Setlist", &SONGS);

    #[cfg(feature = "terminal")]
    live.finish();
    #[cfg(not(feature = "terminal"))]
    stop_reporter();

    println!("=== final state ===");
    for op in store.history(&HistoryQuery::new()) {
        println!(
            "{}",
            Verbose::new(Detail::Verbose).max_children(8).render(&op)
        );
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
