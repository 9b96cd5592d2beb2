//! What the metrics exporter costs, and what a `/metrics` scrape costs (figures printed as a
//! table; no criterion: the comparisons must run interleaved in one process).
//!
//! 1. **Export overhead on the setlist workload** (`examples/support/setlist_sim.rs`, the
//!    examples' setlist → song → action → block → subprocess run, one failing block), as
//!    thread CPU time of the instrumented thread (`/proc/thread-self/schedstat`, the clock
//!    behind `CLOCK_THREAD_CPUTIME_ID`), best of the rounds, configurations interleaved:
//!    - `layer`: the progress layer alone;
//!    - `layer+metrics`: with `Builder::metrics` and no push (the `/metrics` model);
//!    - `layer+metrics+otlp`: pushing OTLP/HTTP every 100 ms to an in-process sink that
//!      answers 200 at once (ten times the default rate: the push thread's work is not on the
//!      instrumented thread, but it competes for the 2 cores);
//!    - `layer (control)`: the first configuration again, built last, so the table shows how
//!      far two identical configurations differ in one run (noise and memory placement).
//!
//!    At `SETLIST_SPEED=100` (the sim's work scaled to 1/100: 80 µs steps) and with no work
//!    at all (`pure`: instrumentation only, the worst case); then the intrinsic cost, one
//!    tracked span's lifecycle under a parent (what the seam's closed level, the model and
//!    the SDK's histogram record add per node).
//! 2. **`/metrics` render time** with 1,000 running operations (each a root with one open
//!    child at 3/10), with the default `max_running` (100 get per-operation gauges) and with
//!    `max_running(1000)`; median and best of 50 renders, and the text's size.
//! 3. **A scrape during a huge operation**: one operation with 200,000 closed children (kept
//!    to the store's `max_finished_nodes`, the rest folded) and 2,000 open ones; 20 scrapes:
//!    time per scrape and the process's peak RSS growth over them (`VmHWM` reset through
//!    `/proc/self/clear_refs`).
//!
//! Run: `cargo bench --features metrics --bench metrics` (about a minute). A longer run of the
//! overhead alone: `TP_BENCH_ROUNDS=201 TP_BENCH_ONLY=overhead cargo bench --features metrics
//! --bench metrics`. Each configuration's line shows the best of the rounds and, steadier on a
//! shared machine, the median and quartiles of its per-round ratio to `layer` (the two ran
//! back to back in that round); the control's line is the noise band of the figure.

#[path = "../tests/support/otlp_sink.rs"]
mod otlp_sink;
#[path = "../examples/support/setlist_sim.rs"]
mod setlist_sim;
use otlp_sink::otlp_sink;

use std::time::{Duration, Instant};

use tracing::{Dispatch, dispatcher, info_span};
use tracing_progress::metrics::{MetricsExport, prometheus_text};
use tracing_progress::{Builder, ProgressSpanExt, Store};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::SubscriberExt;

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn dispatch(b: Builder) -> (Dispatch, Store) {
    let (layer, store) = b.build::<Registry>().expect("valid builder");
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        store,
    )
}

fn export_overhead() {
    let (port, _posts) = otlp_sink();
    let push = MetricsExport::new()
        .otlp_http(format!("http://127.0.0.1:{port}"))
        .interval(Duration::from_millis(100));
    let configs = [
        ("layer", dispatch(Builder::new())),
        (
            "layer+metrics",
            dispatch(Builder::new().metrics(MetricsExport::new())),
        ),
        (
            "layer+metrics+otlp",
            dispatch(Builder::new().metrics(push.clone())),
        ),
        // The same as the first, built last: how much the noise and placement alone differ.
        ("layer (control)", dispatch(Builder::new())),
    ];
    // TP_BENCH_ROUNDS: more rounds for a longer, steadier run (default 21).
    let rounds: usize = std::env::var("TP_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(21)
        .max(1);
    for (workload, speed, runs) in [("setlist x100", "100", 5), ("pure", "", 300)] {
        let pure = speed.is_empty();
        let mut best = [u64::MAX; 4];
        // Per round, each configuration's time over the first's in the same round: the
        // rounds' shared noise (another engineer's build) cancels in the ratio.
        let mut paired: [Vec<f64>; 4] = Default::default();
        for round in 0..=rounds {
            let mut times = [0u64; 4];
            // Each round starts with another configuration, so order effects even out.
            for k in 0..configs.len() {
                let i = (k + round) % configs.len();
                let d = &configs[i].1.0;
                let t0 = thread_cpu_ns();
                dispatcher::with_default(d, || {
                    for _ in 0..runs {
                        if pure {
                            pure_setlist();
                        } else {
                            setlist_sim::process_setlist("bench", &setlist_sim::SONGS);
                        }
                    }
                });
                times[i] = thread_cpu_ns() - t0;
            }
            // Round 0 warms up.
            if round > 0 {
                for i in 0..configs.len() {
                    best[i] = best[i].min(times[i]);
                    paired[i].push(times[i] as f64 / times[0] as f64);
                }
            }
        }
        println!(
            "\nexport overhead, {workload} ({runs} runs per sample, {rounds} rounds, thread CPU): \
             best of the rounds, and the median [quartiles] of the per-round ratio to `layer`"
        );
        for (i, (name, _)) in configs.iter().enumerate() {
            let ratio = best[i] as f64 / best[0] as f64;
            let q = quartiles(&mut paired[i]);
            println!(
                "  {name:<20} {:>9.3} ms  best {:+.2}%  paired {:+.2}% [{:+.2}%, {:+.2}%]",
                best[i] as f64 / 1e6,
                (ratio - 1.0) * 100.0,
                (q[1] - 1.0) * 100.0,
                (q[0] - 1.0) * 100.0,
                (q[2] - 1.0) * 100.0,
            );
        }
    }
    // The intrinsic cost: one tracked span's lifecycle under a long-lived parent.
    let mut best = [u64::MAX; 4];
    const SPANS: u64 = 20_000;
    for round in 0..=21 {
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let d = &configs[i].1.0;
            let t = dispatcher::with_default(d, || {
                let op = info_span!("op", progress.operation = "bench", progress.level = "op");
                op.in_scope(|| {
                    let t0 = thread_cpu_ns();
                    for _ in 0..SPANS {
                        info_span!("block", progress.level = "block").in_scope(|| {});
                    }
                    thread_cpu_ns() - t0
                })
            });
            if round > 0 {
                best[i] = best[i].min(t);
            }
        }
    }
    println!("\none tracked span (create, enter, exit, close) under a parent, best of 21:");
    for (i, (name, _)) in configs.iter().enumerate() {
        println!(
            "  {name:<20} {:>7.0} ns  {:+.0} ns",
            best[i] as f64 / SPANS as f64,
            (best[i] as f64 - best[0] as f64) / SPANS as f64
        );
    }
    let _ = push.shutdown(Duration::from_secs(2));
}

/// First quartile, median and third quartile (nearest rank).
fn quartiles(v: &mut [f64]) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    [at(0.25), at(0.5), at(0.75)]
}

/// The setlist's shape with no work: 3 songs × 4 actions × 1–2 blocks × 20 incs of 5.
fn pure_setlist() {
    let op = info_span!(
        "setlist",
        progress.operation = "setlist_processing",
        progress.level = "setlist",
        progress.total = 3
    );
    op.in_scope(|| {
        for _ in 0..3 {
            let song = info_span!("song", progress.level = "song", progress.total = 4);
            song.in_scope(|| {
                for blocks in [1, 2, 2, 1] {
                    let action =
                        info_span!("action", progress.level = "action", progress.total = blocks);
                    action.in_scope(|| {
                        for _ in 0..blocks {
                            let block =
                                info_span!("block", progress.level = "block", progress.total = 100);
                            block.in_scope(|| {
                                for _ in 0..20 {
                                    block.inc(5);
                                }
                            });
                        }
                    });
                }
            });
        }
    });
}

fn render_time() {
    println!(
        "\n/metrics render with 1,000 running operations (each a root + an open child at 3/10):"
    );
    for (label, max_running) in [
        ("max_running 100 (default)", 100),
        ("max_running 1000", 1000),
    ] {
        let (d, store) =
            dispatch(Builder::new().metrics(MetricsExport::new().max_running(max_running)));
        let held: Vec<_> = dispatcher::with_default(&d, || {
            (0..1000)
                .map(|i| {
                    let root = info_span!(
                        "job",
                        progress.operation = "batch",
                        progress.level = "job",
                        progress.name = i,
                        progress.total = 1
                    );
                    let child = root.in_scope(|| {
                        info_span!("part", progress.level = "part", progress.total = 10)
                    });
                    child.in_scope(|| child.inc(3));
                    (root, child)
                })
                .collect()
        });
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..50 {
            // Past the 250 ms reuse of one read: every render reads the store.
            store.tick_estimates();
            std::thread::sleep(Duration::from_millis(260));
            let t0 = Instant::now();
            let text = prometheus_text(&store).unwrap_or_default();
            times.push(t0.elapsed());
            bytes = text.len();
        }
        times.sort();
        println!(
            "  {label:<26} median {:>7.2} ms, best {:>7.2} ms, {} KiB of text",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            bytes / 1024
        );
        drop(held);
    }
}

fn huge_operation_scrape() {
    let (d, store) = dispatch(Builder::new().metrics(MetricsExport::new()));
    let (root, open) = dispatcher::with_default(&d, || {
        let root = info_span!(
            "import",
            progress.operation = "import",
            progress.level = "import",
            progress.total = 202_000
        );
        let open: Vec<_> = root.in_scope(|| {
            for _ in 0..200_000 {
                info_span!("row", progress.level = "row").in_scope(|| {});
            }
            (0..2_000)
                .map(|_| {
                    let s = info_span!("row", progress.level = "row", progress.total = 10);
                    s.in_scope(|| s.inc(1));
                    s
                })
                .collect()
        });
        (root, open)
    });
    let rss0 = kib("VmRSS:");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let hwm0 = kib("VmHWM:");
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(260));
        let t0 = Instant::now();
        bytes = prometheus_text(&store).map_or(0, |t| t.len());
        times.push(t0.elapsed());
    }
    times.sort();
    println!(
        "\nscrape during a huge operation (200,000 closed + 2,000 open children):\n  \
         median {:.2} ms, worst {:.2} ms, {} bytes of text; RSS {} KiB before, peak RSS growth \
         over 20 scrapes {} KiB, RSS after {} KiB",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[times.len() - 1].as_secs_f64() * 1e3,
        bytes,
        rss0,
        kib("VmHWM:").saturating_sub(hwm0),
        kib("VmRSS:")
    );
    drop(open);
    drop(root);
}

fn main() {
    // The sim's work at 1/100 (80 µs steps): set before anything reads it.
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("SETLIST_SPEED", "100") };
    export_overhead();
    // TP_BENCH_ONLY=overhead: the export overhead alone (for long runs).
    if std::env::var("TP_BENCH_ONLY").is_ok_and(|v| v == "overhead") {
        return;
    }
    render_time();
    huge_operation_scrape();
}
