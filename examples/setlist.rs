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

#[path = "support/setlist_sim.rs"]
mod setlist_sim;

use std::time::Duration;

use setlist_sim::{SONGS, process_setlist, speed};
use tracing_progress::{HistoryQuery, Store};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

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

    process_setlist("My Setlist", &SONGS);
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
