//! The history file's costs (feature `sqlite`). Run: `cargo bench --features sqlite --bench
//! sqlite` (`-- --quick` for smaller sizes). It prints figures; no criterion: the comparison
//! must be interleaved in one process, timed with the thread CPU clock, best of rounds.
//!
//! 1. **Setlist with persistence on vs off**: the examples' setlist shape (setlist → 3 songs →
//!    4 actions each → 15 blocks in all: 31 nodes, an event and an `inc` per block, one failing
//!    block) with no simulated work, so what is timed is the instrumentation (the worst case:
//!    any real work dilutes it). Three layers built the same way but for `history_file`:
//!    "off", an identical "off (control)" whose ratio to "off" is the run's noise band, and
//!    "on"; every round runs each once, in a rotating order. Per round: the instrumented
//!    thread's CPU (`CLOCK_THREAD_CPUTIME_ID`) and the wall time of the instrumented work —
//!    what the target is about, the user's program slowing down — and the whole process's
//!    CPU (`getrusage`) until the round's records are written, the background writer included
//!    (reported apart), and the writer thread's own CPU over the whole run (Linux:
//!    `/proc/self/task/*/schedstat`; it counts what the writer does after a round's flush,
//!    which lands in a later round's process CPU). Best and median of the rounds, and the
//!    median of the rounds' paired
//!    ratios to "off". Target: "on" ≤ 2% slower in thread CPU and wall time. Run twice: with
//!    no simulated work (the worst case, all instrumentation) and with CPU work in each block
//!    ([`BLOCK_WORK`], about 30 µs; the examples' blocks take milliseconds).
//!    `TP_BENCH_LOCK=1` holds the file's write lock during the rounds, so the writer thread
//!    sits idle (its records are dropped): what is left is the cost of the exporter seam and
//!    the queue alone. `TP_BENCH_BUSY=1` keeps one core busy with a spinning thread, so the
//!    writer competes with the instrumented thread for the other (a loaded 2-core machine).
//! 2. **Write throughput**: finished operations per second, end to end (produced and
//!    committed), with 10 and 1,000 nodes per operation; file bytes per operation.
//! 3. **Query over 1,000,000 stored operations**: a file filled through SQL with copies of a
//!    real 3-node operation's row (varied type, status, name, time and run columns; the JSON
//!    is the same for all), then filtered history
//!    queries (type + status + since, limit 50) through `HistoryFile::query`: p50 / p99 of
//!    wall time. Target p99 ≤ 10 ms. A name-substring search that matches little reads every
//!    row (no index can serve it): reported apart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::Dispatch;
use tracing_progress::sqlite::HistoryFile;
use tracing_progress::{Builder, HistoryQuery, ProgressSpanExt, Status, Store};
use tracing_subscriber::prelude::*;

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
}

const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

fn cpu(clock: i32) -> Duration {
    let mut t = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live, properly laid out timespec.
    unsafe { clock_gettime(clock, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// This run's scratch directory (removed at the end of `main`: its files reach 100 MB each).
fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("tp-bench-sqlite-{}", std::process::id()))
}

fn temp_file(name: &str) -> PathBuf {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

fn file_bytes(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len())
        .sum()
}

fn layered(builder: Builder) -> (Dispatch, Store) {
    let (layer, store) = builder.build().expect("valid settings");
    (
        Dispatch::new(tracing_subscriber::registry().with(layer)),
        store,
    )
}

/// Iterations of [`spin`] per block in the "with work" variant (about 30 µs here).
const BLOCK_WORK: u64 = 20_000;

/// CPU work that the optimizer cannot remove: `n` dependent multiply-adds.
fn spin(n: u64) {
    let mut x = 1u64;
    for _ in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// One setlist of 31 nodes, as the examples' simulation has it; each block computes `work`
/// iterations of [`spin`] (0: no simulated work, only the instrumentation).
fn setlist(work: u64) {
    let setlist = tracing::info_span!(
        "process_setlist",
        progress.operation = "setlist_processing",
        progress.level = "setlist",
        progress.name = "My Setlist",
        progress.total = 3
    );
    let _s = setlist.enter();
    for song in 0..3 {
        let span = tracing::info_span!(
            "process_song",
            progress.level = "song",
            progress.name = song,
            progress.total = 4
        );
        let _g = span.enter();
        for (action, blocks) in [("decode", 1), ("analyze", 1), ("detect", 2), ("encode", 1)] {
            let a = tracing::info_span!(
                "execute_action",
                progress.level = "action",
                progress.name = action,
                progress.total = blocks
            );
            let _a = a.enter();
            for n in 0..blocks {
                let b =
                    tracing::info_span!("run_block", progress.level = "block", progress.name = n);
                let _b = b.enter();
                tracing::info!(progress.message = "working", frames = 4096);
                spin(work);
                if song == 1 && action == "detect" && n == 1 {
                    b.fail("onset detector diverged");
                }
                a.inc(1);
            }
        }
        setlist.inc(1);
    }
}

/// What one round cost: the instrumented thread's CPU, the wall time of the instrumented work,
/// and the whole process's CPU (`getrusage`) from its start until the history written
/// (background threads included).
#[derive(Clone, Copy, Default)]
struct RoundCost {
    thread: Duration,
    wall: Duration,
    process: Duration,
    /// The instrumented thread's context switches during the work: it blocked, it was
    /// preempted.
    switches: (i64, i64),
}

fn thread_switches() -> (i64, i64) {
    // SAFETY: as in `rusage_cpu`.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD with a pointer to a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
    (u.ru_nvcsw, u.ru_nivcsw)
}

fn rusage_cpu() -> Duration {
    // SAFETY: a zeroed rusage is a valid value and `getrusage` only writes into it.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a pointer to a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A thread that keeps one core busy (`TP_BENCH_BUSY=1`): on a 2-core machine the writer then
/// competes with the instrumented thread for the other one, as it does on a loaded machine.
fn busy_core() -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut x = 1u64;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    });
    (stop, handle)
}

/// The history writer threads of this process with their CPU time so far, from
/// `/proc/self/task/TID/schedstat` (ns on CPU); empty where there is no `/proc`. `comm` is cut
/// to 15 bytes, so the crate's threads all read "tracing-progres": the writer is the one
/// running at a raised nice value (field 19 of `stat`).
fn writer_threads() -> Vec<(u64, Duration)> {
    let nice = |stat: &str| -> Option<i64> {
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(16)?.parse().ok()
    };
    let own = std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| nice(&s))
        .unwrap_or(0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| {
            let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            if comm.trim() != "tracing-progres" || nice(&stat)? <= own {
                return None;
            }
            let tid = t.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns = stat.split_whitespace().next()?.parse().ok()?;
            Some((tid, Duration::from_nanos(ns)))
        })
        .collect()
}

fn setlist_on_off(rounds: usize, per_round: usize, work: u64) {
    let path = temp_file(&format!("setlist-{work}.db"));
    let writers_before: Vec<u64> = writer_threads().into_iter().map(|(t, _)| t).collect();
    // Three layers built the same way but for the file: "off", an identical control (its
    // ratio to "off" is the noise band of this run) and "on".
    let configs: Vec<(&str, Dispatch, Store)> = vec![
        ("off", Builder::new()),
        ("off (control)", Builder::new()),
        ("on", Builder::new().history_file(&path)),
    ]
    .into_iter()
    .map(|(name, b)| {
        let (d, s) = layered(b);
        (name, d, s)
    })
    .collect();
    // The writer thread of "on": its CPU over the whole run, whenever it spent it (a round's
    // process CPU misses what it defers past the round's flush).
    // (It lowers its priority when it starts: looked for until then.)
    let looking = Instant::now();
    let writer = loop {
        let found = writer_threads()
            .into_iter()
            .find(|(t, _)| !writers_before.contains(t))
            .map(|(t, _)| t);
        if found.is_some() || looking.elapsed() > Duration::from_secs(1) {
            break found;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let writer_cpu = || {
        writer_threads()
            .into_iter()
            .find(|(t, _)| Some(*t) == writer)
            .map(|(_, cpu)| cpu)
    };
    let writer_start = writer_cpu();
    let locked = std::env::var("TP_BENCH_LOCK").is_ok();
    let run = |d: &Dispatch, store: &Store| {
        let process = rusage_cpu();
        let wall = Instant::now();
        let switches = thread_switches();
        let thread = cpu(CLOCK_THREAD_CPUTIME_ID);
        tracing::dispatcher::with_default(d, || {
            for _ in 0..per_round {
                setlist(work);
            }
        });
        let thread = cpu(CLOCK_THREAD_CPUTIME_ID) - thread;
        let wall = wall.elapsed();
        let after = thread_switches();
        let switches = (after.0 - switches.0, after.1 - switches.1);
        // The writer's catch-up belongs to the round's process CPU, not to its wall time.
        store.flush_history(Duration::from_secs(if locked { 0 } else { 60 }));
        RoundCost {
            thread,
            wall,
            process: rusage_cpu() - process,
            switches,
        }
    };
    // Warm up all.
    for (_, d, s) in &configs {
        run(d, s);
    }
    let locker = locked.then(|| {
        let c = rusqlite::Connection::open(&path).expect("open");
        c.execute_batch("BEGIN IMMEDIATE;").expect("lock");
        c
    });
    let busy = std::env::var("TP_BENCH_BUSY").is_ok().then(busy_core);
    let one_core_busy = busy.is_some();
    let mut costs: Vec<Vec<RoundCost>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        // Each round in another order, so no configuration always follows the same one.
        for k in 0..configs.len() {
            let i = (round + k) % configs.len();
            let (_, d, s) = &configs[i];
            costs[i].push(run(d, s));
        }
    }
    if let Some((stop, handle)) = busy {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = handle.join();
    }
    drop(locker);
    let per = |d: Duration| d.as_secs_f64() * 1e6 / per_round as f64;
    let nodes = configs[0].2.history(&HistoryQuery::new().limit(1))[0]
        .metrics
        .nodes_seen;
    println!(
        "setlist ({nodes} nodes, {}), {rounds} interleaved rounds of {per_round}{}{}: \
         µs per setlist, best / median; ratio to \"off\": median of the rounds' paired ratios \
         (best-of ratio)",
        if work == 0 {
            "no simulated work".to_string()
        } else {
            format!("{work} iterations of CPU work per block")
        },
        if locked {
            ", file write-locked (records dropped)"
        } else {
            ""
        },
        if one_core_busy {
            ", one core kept busy"
        } else {
            ""
        },
    );
    type Metric = fn(&RoundCost) -> Duration;
    let metrics: [(&str, Metric); 3] = [
        ("instrumented thread CPU", |c| c.thread),
        ("wall time of the work", |c| c.wall),
        ("process CPU (getrusage)", |c| c.process),
    ];
    for (label, get) in metrics {
        println!("  {label}:");
        let best = |i: usize| costs[i].iter().map(get).min().unwrap_or_default();
        for (i, (name, _, _)) in configs.iter().enumerate() {
            let med = median(costs[i].iter().map(|c| per(get(c))).collect());
            let line = format!("    {name:<14} {:>7.1} / {med:>7.1}", per(best(i)));
            if i == 0 {
                println!("{line}");
                continue;
            }
            let ratios: Vec<f64> = costs[i]
                .iter()
                .zip(&costs[0])
                .map(|(c, o)| get(c).as_secs_f64() / get(o).as_secs_f64() - 1.0)
                .collect();
            println!(
                "{line}   {:+6.2}% ({:+.2}%)",
                median(ratios) * 100.0,
                (best(i).as_secs_f64() / best(0).as_secs_f64() - 1.0) * 100.0,
            );
        }
    }
    print!("  the instrumented thread's context switches per round (median), blocked / preempted:");
    for (i, (name, _, _)) in configs.iter().enumerate() {
        let m = |f: fn(&RoundCost) -> i64| median(costs[i].iter().map(|c| f(c) as f64).collect());
        print!(" {name} {} / {}", m(|c| c.switches.0), m(|c| c.switches.1));
    }
    println!();
    let on = &configs[2].2;
    let stats = on.stats();
    let background: Vec<f64> = costs[2]
        .iter()
        .map(|c| per(c.process.saturating_sub(c.thread)))
        .collect();
    // Every setlist "on" ran, the warm-up's included; what the writer has left is flushed.
    on.flush_history(Duration::from_secs(60));
    let writer_total = writer_cpu()
        .zip(writer_start)
        .map(|(end, start)| end.saturating_sub(start).as_secs_f64() * 1e6);
    println!(
        "  on: other threads (mostly the writer) {:.1} µs CPU/setlist (median of rounds); the \
         writer thread over the run {}; written {}, dropped {}, errors {}; file {:.0} \
         bytes/setlist",
        median(background),
        writer_total.map_or("unknown (no /proc)".to_string(), |us| format!(
            "{:.1} µs CPU/setlist",
            us / ((rounds + 1) * per_round) as f64
        )),
        stats.history_file_written,
        stats.history_file_dropped,
        stats.history_file_errors,
        file_bytes(&path) as f64 / ((rounds + 1) * per_round) as f64,
    );
}

/// One operation of `nodes` nodes (the root and `nodes - 1` children).
fn operation(i: usize, nodes: usize) {
    let root = tracing::info_span!("job", progress.level = "job", progress.name = i);
    let _g = root.enter();
    root.set_total(nodes as u64 - 1);
    for c in 0..nodes - 1 {
        let child = tracing::info_span!("step", progress.level = "step", progress.name = c);
        child.in_scope(|| root.inc(1));
    }
}

fn throughput(quick: bool) {
    for (nodes, ops) in [(10usize, 20_000usize), (1_000, 400)] {
        let ops = if quick { ops / 10 } else { ops };
        let path = temp_file(&format!("throughput-{nodes}.db"));
        // Memory history small: the file is what is measured. The queue drops when full
        // (the host never waits), so the producer paces itself to what was written.
        let (d, store) = layered(
            Builder::new()
                .history_file(&path)
                .history_limit(100)
                .max_finished_nodes(nodes + 10),
        );
        let start = Instant::now();
        tracing::dispatcher::with_default(&d, || {
            for i in 0..ops {
                operation(i, nodes);
                if i % 1_000 == 999 {
                    store.flush_history(Duration::from_secs(60));
                }
            }
        });
        store.flush_history(Duration::from_secs(120));
        let wall = start.elapsed();
        let stats = store.stats();
        let rows = HistoryFile::open(&path)
            .and_then(|f| f.query(&HistoryQuery::new().limit(usize::MAX)))
            .map(|r| r.len())
            .unwrap_or(0);
        println!(
            "write throughput, {nodes} nodes/operation: {ops} operations in {wall:.2?} = {:.0} \
             operations/s end to end; {} rows in the file ({} written incl. starts, {} dropped, \
             {} errors); {:.0} file bytes/operation",
            ops as f64 / wall.as_secs_f64(),
            rows,
            stats.history_file_written,
            stats.history_file_dropped,
            stats.history_file_errors,
            file_bytes(&path) as f64 / rows.max(1) as f64,
        );
    }
}

/// A file of `n` operations: one real row (a 3-node operation) copied with varied columns.
fn fill(path: &Path, n: u64) {
    let (d, store) = layered(Builder::new().history_file(path));
    tracing::dispatcher::with_default(&d, || operation(0, 3));
    store.flush_history(Duration::from_secs(10));
    drop(d);
    drop(store);
    let conn = rusqlite::Connection::open(path).expect("open");
    let (template, host, pid): (String, String, i64) = conn
        .query_row(
            "SELECT state_json, host, pid FROM operations LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the template row");
    conn.execute_batch("PRAGMA synchronous = OFF; BEGIN;")
        .expect("begin");
    {
        let mut insert = conn
            .prepare(
                "INSERT INTO operations (run_id, op_id, operation_type, name, status, \
                 with_failures, started_us, completed_us, finished_us, duration_us, failures, \
                 host, pid, interrupted, state_json) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?7, \
                 ?8, ?9, ?10, ?11, 0, ?12)",
            )
            .expect("prepare");
        let base: i64 = 1_700_000_000_000_000;
        for i in 0..n as i64 {
            let kind =
                ["import", "export", "setlist_processing", "backup", "report"][(i % 5) as usize];
            let failed = i % 10 == 3;
            let status = if failed { "failed" } else { "completed" };
            let name = format!("{kind}-{i}");
            let finished = base + i * 1_000;
            insert
                .execute(rusqlite::params![
                    1 + i % 100,
                    i + 1,
                    kind,
                    name,
                    status,
                    finished - 500,
                    finished,
                    500,
                    i64::from(failed),
                    host,
                    pid,
                    template,
                ])
                .expect("insert");
        }
    }
    conn.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);")
        .expect("commit");
}

fn query_1m(quick: bool) {
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    let path = temp_file("query.db");
    let started = Instant::now();
    fill(&path, n);
    let filled = started.elapsed();
    let file = HistoryFile::open(&path).expect("open");
    let total = file
        .query(&HistoryQuery::new().limit(1))
        .expect("query")
        .len();
    assert_eq!(total, 1);
    let base = std::time::SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000);
    let kinds = ["import", "export", "setlist_processing", "backup", "report"];
    let mut times = Vec::new();
    let mut found = 0;
    let mut cold = Duration::ZERO;
    // The first 100 queries warm the page cache (the first one's time is reported apart).
    for i in 0..1_100u64 {
        // Since a point somewhere in the file's time range, newest 50 of a type and status.
        let since = base + Duration::from_millis((i * 7_919) % n);
        let q = HistoryQuery::new()
            .operation_type(kinds[(i % 5) as usize])
            .status(if i % 2 == 0 {
                Status::Completed
            } else {
                Status::Failed
            })
            .since(since)
            .limit(50);
        let t = Instant::now();
        let rows = file.query(&q).expect("query").len();
        match i {
            0 => cold = t.elapsed(),
            1..100 => {}
            _ => {
                times.push(t.elapsed());
                found += rows;
            }
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    println!(
        "history query over {n} operations (type + status + since, limit 50; {} queries after \
         100 to warm up, {} rows returned): p50 {:.2?}, p99 {:.2?}, max {:.2?}; the very first \
         {cold:.2?}; file {:.0} bytes/operation (filled in {filled:.1?})",
        times.len(),
        found,
        pct(0.5),
        pct(0.99),
        times.last().unwrap(),
        file_bytes(&path) as f64 / n as f64,
    );
    let t = Instant::now();
    let rare = file
        .query(&HistoryQuery::new().name_contains("-123457").limit(50))
        .expect("query");
    println!(
        "  name contains a text only {} operations have: {:.1?} (reads every row)",
        rare.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let one = file
        .get(tracing_progress::OperationId::from_u64(n / 2))
        .expect("get");
    println!(
        "  one operation by id (index of schema 2): {:.2?} ({} found)",
        t.elapsed(),
        one.len()
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only setlist|throughput|query` runs one part.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let wanted = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let (rounds, per_round) = if quick { (5, 50) } else { (40, 200) };
    if wanted("setlist") {
        setlist_on_off(rounds, per_round, 0);
        // The same with work in the blocks: instrumentation is then a part of the program's time, as in
        // a real setlist (the examples' blocks take milliseconds).
        setlist_on_off(rounds, per_round / 4, BLOCK_WORK);
    }
    if wanted("throughput") {
        throughput(quick);
    }
    if wanted("query") {
        query_1m(quick);
    }
    let _ = std::fs::remove_dir_all(temp_dir());
}
