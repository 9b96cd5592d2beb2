//! Costs of issue 16's query and stream parts, each configuration side by side in this one
//! process, interleaved, best of several rounds, timed on this thread's CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`):
//!
//! * metadata filters on the in-memory history: 1,000 finished operations of 31 nodes, each
//!   block with `block_id` (text) and `size` (a number): no filter vs `block_id=block-0500`
//!   vs `size>=990`, newest 20 and all;
//! * the same on a history file (feature `sqlite`): filters and limit in SQL vs metadata
//!   filters, which decode every candidate row (a text equality first narrows the candidates
//!   with a text search in SQL; a numeric one cannot);
//! * `view::ProgressStream` on a running operation of 1,001 nodes: a snapshot with nothing
//!   new (the diff alone) vs one where every node is new (records and JSON written to a sink).
//!
//! Run: `cargo bench --features sqlite --bench query_stream`.

#[path = "../tests/support/cpu.rs"]
mod cpu;
use cpu::thread_cpu_ns;

use tracing::info_span;
use tracing_progress::view::ProgressStream;
use tracing_progress::{Builder, HistoryQuery, MetaFilter, ProgressSpanExt, Store};
use tracing_subscriber::prelude::*;

const OPERATIONS: usize = 1_000;
const BLOCKS: usize = 30;
const ROUNDS: usize = 7;

/// Best per-call time (µs) of each configuration over `ROUNDS`, the configurations taking
/// turns within each round.
fn compare(title: &str, calls: usize, configs: &mut [(&str, &mut dyn FnMut() -> usize)]) {
    let mut best = vec![u64::MAX; configs.len()];
    let mut results = vec![0usize; configs.len()];
    for _ in 0..ROUNDS {
        for (i, (_, f)) in configs.iter_mut().enumerate() {
            let t0 = thread_cpu_ns();
            let mut n = 0;
            for _ in 0..calls {
                n = std::hint::black_box(f());
            }
            best[i] = best[i].min((thread_cpu_ns() - t0) / calls as u64);
            results[i] = n;
        }
    }
    println!("{title}");
    for (i, (name, _)) in configs.iter().enumerate() {
        println!(
            "  {name:<44} {:>10.1} µs/call  ({} results)",
            best[i] as f64 / 1000.0,
            results[i]
        );
    }
}

fn operation(i: usize) {
    let root = info_span!(
        "job",
        progress.level = "job",
        progress.name = i,
        batch = i as u64
    );
    let _g = root.enter();
    for b in 0..BLOCKS {
        let id = format!("block-{:04}", (i + b) % OPERATIONS);
        info_span!(
            "block",
            progress.level = "block",
            block_id = id.as_str(),
            size = i as u64
        )
        .in_scope(|| {});
    }
}

fn filled(builder: Builder) -> Store {
    let (layer, store) = builder
        .history_limit(OPERATIONS)
        .estimate_interval(None)
        .build::<tracing_subscriber::Registry>()
        .expect("valid builder");
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..OPERATIONS {
            operation(i);
        }
    });
    store
}

fn meta(f: &str) -> MetaFilter {
    f.parse().expect("valid filter")
}

fn main() {
    // ---- in memory ----
    let store = filled(Builder::new());
    let all = HistoryQuery::new();
    let by_id = HistoryQuery::new().meta(meta("block_id=block-0500"));
    let by_size = HistoryQuery::new().meta(meta("size>=990"));
    compare(
        &format!(
            "history in memory, {OPERATIONS} operations x {} nodes",
            BLOCKS + 1
        ),
        20,
        &mut [
            ("no filter, limit 20", &mut || {
                store.history(&all.clone().limit(20)).len()
            }),
            ("no filter, all", &mut || store.history(&all).len()),
            ("meta block_id=block-0500 (text), all", &mut || {
                store.history(&by_id).len()
            }),
            ("meta size>=990 (number), all", &mut || {
                store.history(&by_size).len()
            }),
            ("meta size>=990, limit 20", &mut || {
                store.history(&by_size.clone().limit(20)).len()
            }),
        ],
    );

    // ---- a history file ----
    #[cfg(feature = "sqlite")]
    {
        let dir = std::env::temp_dir().join(format!("tp-bench-query-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("history.db");
        let writer = filled(Builder::new().history_file(&path));
        assert!(writer.flush_history(std::time::Duration::from_secs(60)));
        drop(writer);
        let file = tracing_progress::sqlite::HistoryFile::open(&path).expect("open");
        let size = by_size.clone();
        compare(
            &format!(
                "history file, {OPERATIONS} operations x {} nodes",
                BLOCKS + 1
            ),
            3,
            &mut [
                ("SQL filters, limit 20", &mut || {
                    file.query(&all.clone().limit(20)).map_or(0, |r| r.len())
                }),
                ("SQL filter name contains \"99\", all", &mut || {
                    file.query(&all.clone().name_contains("99"))
                        .map_or(0, |r| r.len())
                }),
                (
                    "meta block_id=block-0500 (text pre-check in SQL)",
                    &mut || file.query(&by_id).map_or(0, |r| r.len()),
                ),
                ("meta size>=990, limit 20 (decodes every row)", &mut || {
                    file.query(&size.clone().limit(20)).map_or(0, |r| r.len())
                }),
            ],
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    // ---- the progress stream ----
    let (layer, live) = Builder::new()
        .estimate_interval(None)
        .build::<tracing_subscriber::Registry>()
        .expect("valid builder");
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let root = info_span!("job", progress.level = "job", progress.total = 1000u64);
            let _g = root.enter();
            let spans: Vec<_> = (0..1000u64)
                .map(|i| {
                    let s = info_span!("block", progress.level = "block", progress.total = 10u64);
                    s.set_current(i % 10);
                    s
                })
                .collect();
            ready_tx
                .send(root.operation_id().expect("tracked"))
                .unwrap();
            let _ = rx.recv();
            drop(spans);
        })
    });
    let id = ready.recv().expect("running");
    let snapshot = live.get(id).expect("running");
    let nodes = snapshot.root.walk().count();
    let mut warm = ProgressStream::new();
    let now = live.now_us();
    warm.records(&snapshot, now);
    let mut sink = std::io::sink();
    compare(
        &format!("ProgressStream, one running operation of {nodes} nodes"),
        20,
        &mut [
            ("nothing new (diff only)", &mut || {
                warm.records(&snapshot, now).len()
            }),
            ("every node new, JSON to a sink", &mut || {
                ProgressStream::new()
                    .write(&snapshot, now, &mut sink)
                    .unwrap_or(0)
            }),
            ("snapshot itself (Store::get), for scale", &mut || {
                live.get(id)
                    .map_or(0, |s| s.metrics.nodes_retained as usize)
            }),
        ],
    );
    drop(tx);
    holder.join().expect("holder");
}
