//! The HTTP server under load: does it slow the instrumented program, and does its memory stay
//! flat? (targets: ≤ 10% slowdown, flat RSS)
//!
//! Loopback only, bounded in time (about 75 s) and count. Two processes: this one runs the
//! instrumented workload and the server; a child (this same binary, `HTTP_LOAD_CLIENTS=addr`)
//! runs the clients, so that the RSS measured here is the program's and the server's alone.
//!
//! The workload has the setlist example's shape (setlist → 3 songs → 4 actions → 6 blocks of
//! 20 steps, each step some fixed CPU work, `inc(5)` and, for onset blocks, a metadata update;
//! an `ffmpeg` subprocess node under each export: 31 nodes), one operation after another, each
//! timed. Phases:
//!
//! 1. `baseline`: the workload alone, the server started but nobody connected (its event
//!    producer does not poll then).
//! 2. The child connects 200 clients to `/api/events` (each reads every event) and 4 clients
//!    that together send 1,000 requests/s of snapshot queries, alternating `/api/operations`
//!    and `/api/operations/{id}` of the running operation. A burst of quick operations then
//!    fills the stream's replay buffer (256 final states) and a few seconds let it settle, so
//!    that bounded buffers are full before memory is watched.
//! 3. `loaded`: the workload timed under that load; RSS (`/proc/self/status`) sampled every
//!    second; the server thread's CPU time.
//! 4. `baseline again`, once every client has gone, to see that the machine did not drift.
//!
//! The slowdown is the loaded phase's median operation time over the baselines' median, in
//! wall time and in the workload thread's time on a CPU (`/proc/thread-self/schedstat`, which
//! also gives the time it waited for a CPU). The clients run on the same 2 cores, so their CPU
//! counts against the workload's wall time too: for a program whose clients are on other
//! machines, it is an upper bound. On a shared machine, other processes add waiting time to
//! any phase; the on-CPU figure and the load averages printed help to tell. The history is capped at 100
//! operations and filled during the warm-up (the store's growth up to its limit is not the
//! server's).
//!
//! Run: `cargo bench --features http --bench http_load`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tracing::info_span;
use tracing_progress::ProgressSpanExt;
use tracing_subscriber::prelude::*;

const SSE_CLIENTS: usize = 200;
const QUERY_THREADS: usize = 4;
const QUERIES_PER_SECOND: u64 = 1_000;
const BASELINE: Duration = Duration::from_secs(12);
const SETTLE: Duration = Duration::from_secs(4);
const LOADED: Duration = Duration::from_secs(35);
/// CPU work per step: about 0.4 ms here, so an operation takes about 160 ms.
const SPIN_PER_STEP: u64 = 300_000;
/// For the warm-up and the burst that fills the replay buffer.
const QUICK_SPIN_PER_STEP: u64 = SPIN_PER_STEP / 50;
/// More than the stream's replay buffer (256 final states).
const REPLAY_FILL: u64 = 280;
const CLIENTS_ENV: &str = "HTTP_LOAD_CLIENTS";

// ---- the instrumented workload -------------------------------------------------------------

fn spin(iterations: u64) {
    let mut x = 0u64;
    for _ in 0..iterations {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    std::hint::black_box(x);
}

/// One setlist-shaped operation.
fn operation(n: u64, spin_per_step: u64) {
    let setlist = info_span!(
        "process_setlist",
        progress.operation = "setlist_processing",
        progress.level = "setlist",
        progress.name = %format!("load run {n}"),
        progress.total = 3,
        setlist_id = "abc123",
    );
    let _setlist = setlist.enter();
    for song in 1..=3u64 {
        let song_span = info_span!(
            "process_song",
            progress.level = "song",
            progress.name = %format!("audio{song}.wav"),
            progress.total = 4,
            song_id = %format!("song-{song:03}"),
        );
        let _song = song_span.enter();
        song_span.set_message(&format!("Processing song {song}/3"));
        for (action, blocks) in [
            ("LoadAudio", 1u64),
            ("DetectOnsets", 2),
            ("SeparateStems", 2),
            ("ExportStems", 1),
        ] {
            let action_span = info_span!(
                "execute_action",
                progress.level = "action",
                progress.name = action,
                progress.total = blocks,
            );
            let _action = action_span.enter();
            for b in 1..=blocks {
                let block = info_span!(
                    "run_block",
                    progress.level = "block",
                    progress.name = %format!("{action}{b}"),
                    progress.total = 100,
                    progress.unit = "events",
                    block_id = %format!("block-{b:03}"),
                );
                let _block = block.enter();
                for step in 1..=20u64 {
                    spin(spin_per_step);
                    block.inc(5);
                    if action == "DetectOnsets" {
                        block.set_metadata("events_found", (step * 5 + 7).into());
                    }
                }
                if action == "ExportStems" {
                    let sub = info_span!(
                        "encode",
                        progress.level = "subprocess",
                        progress.name = "ffmpeg",
                        progress.total = 4,
                    );
                    let _sub = sub.enter();
                    for _ in 0..4 {
                        spin(spin_per_step);
                        sub.inc(1);
                    }
                }
            }
        }
    }
}

/// This thread's time on a CPU and waiting for one (runnable, another task running), from
/// `/proc/thread-self/schedstat`, in nanoseconds.
fn sched_ns() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|v| v.parse().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// One operation's wall time, time on a CPU and time waiting for a CPU.
#[derive(Clone, Copy)]
struct OpTime {
    wall: Duration,
    on_cpu: Duration,
    waiting: Duration,
}

/// Runs operations for `length`; returns each one's times.
fn run_phase(length: Duration, next: &mut u64) -> Vec<OpTime> {
    let mut times = Vec::new();
    let end = Instant::now() + length;
    while Instant::now() < end {
        let (run0, wait0) = sched_ns();
        let t = Instant::now();
        operation(*next, SPIN_PER_STEP);
        let wall = t.elapsed();
        let (run1, wait1) = sched_ns();
        times.push(OpTime {
            wall,
            on_cpu: Duration::from_nanos(run1.saturating_sub(run0)),
            waiting: Duration::from_nanos(wait1.saturating_sub(wait0)),
        });
        *next += 1;
    }
    times
}

// ---- measurements ---------------------------------------------------------------------------

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime, in ticks (1/100 s), from a `/proc/.../stat` file.
fn stat_ticks(path: &std::path::Path) -> u64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // After the parenthesised name: state is field 3, so utime (14) and stime (15) are at 11, 12.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let parse = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    parse(11) + parse(12)
}

/// CPU ticks of this process's threads whose name starts with `prefix`.
fn thread_cpu_ticks(prefix: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .map(|t| stat_ticks(&t.path().join("stat")))
        .sum()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Summary {
    count: usize,
    median: Duration,
    mean: Duration,
    p90: Duration,
    cpu_median: Duration,
    wait_mean: Duration,
}

fn summarize(times: &[OpTime]) -> Summary {
    let sorted = |f: fn(&OpTime) -> Duration| {
        let mut v: Vec<Duration> = times.iter().map(f).collect();
        v.sort();
        v
    };
    let (wall, cpu, wait) = (
        sorted(|t| t.wall),
        sorted(|t| t.on_cpu),
        sorted(|t| t.waiting),
    );
    let n = times.len().max(1) as u32;
    Summary {
        count: times.len(),
        median: percentile(&wall, 0.5),
        mean: wall.iter().sum::<Duration>() / n,
        p90: percentile(&wall, 0.9),
        cpu_median: percentile(&cpu, 0.5),
        wait_mean: wait.iter().sum::<Duration>() / n,
    }
}

fn print_summary(name: &str, s: &Summary) {
    println!(
        "  {name:<15} {:>4} ops  wall: median {:>6.1} ms, mean {:>6.1} ms, p90 {:>6.1} ms  \
         on CPU: median {:>6.1} ms  waiting for a CPU: mean {:>5.1} ms",
        s.count,
        ms(s.median),
        ms(s.mean),
        ms(s.p90),
        ms(s.cpu_median),
        ms(s.wait_mean),
    );
}

// ---- the client process ---------------------------------------------------------------------

#[derive(Default)]
struct SseStats {
    connected: AtomicU64,
    ready: AtomicU64,
    bytes: AtomicU64,
    snapshots: AtomicU64,
    finished: AtomicU64,
    missed: AtomicU64,
    errors: AtomicU64,
}

/// One SSE client: an HTTP/1.0 request (so the stream is not chunked), then every line read
/// until `stop`. Counts events by their `event:` line; `finished` also per client.
fn sse_client(addr: SocketAddr, stop: &AtomicBool, stats: &SseStats, finished: &AtomicU64) {
    let run = || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        write!(
            stream,
            "GET /api/events HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )?;
        stats.connected.fetch_add(1, Ordering::Relaxed);
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let mut line = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) if line.ends_with(b"\n") => {
                    stats.bytes.fetch_add(line.len() as u64, Ordering::Relaxed);
                    let event = line
                        .strip_prefix(b"event:")
                        .map(|e| e.trim_ascii())
                        .unwrap_or_default();
                    let counter = match event {
                        b"snapshot" => Some(&stats.snapshots),
                        b"finished" => {
                            finished.fetch_add(1, Ordering::Relaxed);
                            Some(&stats.finished)
                        }
                        b"missed" => Some(&stats.missed),
                        b"ready" => Some(&stats.ready),
                        _ => None,
                    };
                    if let Some(c) = counter {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    line.clear();
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    if run().is_err() {
        stats.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// A keep-alive HTTP/1.1 GET; returns the status and the body.
fn get(
    reader: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    path: &str,
) -> std::io::Result<(u16, Vec<u8>)> {
    write!(
        reader.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse::<usize>().ok();
        } else if header.starts_with("transfer-encoding:") && header.contains("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let at = body.len();
            body.resize(at + size + 2, 0);
            reader.read_exact(&mut body[at..])?;
            body.truncate(at + size);
            if size == 0 {
                break;
            }
        }
    } else {
        let length = length.ok_or_else(|| std::io::Error::other("no content-length"))?;
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    Ok((status, body))
}

/// The first `"id":N` in a JSON body: the first listed operation's id.
fn first_id(body: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(body).ok()?;
    let rest = &text[text.find("\"id\":")? + 5..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[derive(Default)]
struct QueryStats {
    ok: AtomicU64,
    not_found: AtomicU64,
    other_status: AtomicU64,
    errors: AtomicU64,
    late_skips: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

/// Paced snapshot queries over one keep-alive connection, alternating the list and the
/// operation it listed first, `rate` per second until `stop`.
fn query_client(addr: SocketAddr, rate: u64, stop: &AtomicBool, stats: &QueryStats) {
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let connect = || -> std::io::Result<BufReader<TcpStream>> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(BufReader::with_capacity(256 * 1024, s))
    };
    let mut conn = None;
    let mut op_id = 1;
    let mut next = Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_millis(100) {
            // Far behind (the server stalled): don't burst to catch up.
            let missed = ((now - next).as_nanos() / interval.as_nanos()) as u64;
            stats.late_skips.fetch_add(missed, Ordering::Relaxed);
            next = now;
        }
        next += interval;
        let list = i.is_multiple_of(2);
        i += 1;
        let path = if list {
            "/api/operations".to_string()
        } else {
            format!("/api/operations/{op_id}")
        };
        if conn.is_none() {
            match connect() {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
        }
        let t = Instant::now();
        match get(conn.as_mut().unwrap(), addr, &path) {
            Ok((status, body)) => {
                stats.latencies.lock().unwrap().push(t.elapsed());
                let counter = match status {
                    200 => &stats.ok,
                    404 => &stats.not_found,
                    _ => &stats.other_status,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                if list && let Some(id) = first_id(&body) {
                    op_id = id;
                }
            }
            Err(_) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

/// The child process: connects the clients, says `ready`, then on `mark` (stdin) starts
/// counting afresh and on `stop` (or end of input) reports the counts since `mark` as
/// `key=value` pairs on one line.
fn client_process(addr: SocketAddr) {
    let stop = Arc::new(AtomicBool::new(false));
    let sse = Arc::new(SseStats::default());
    let per_client: Arc<Vec<AtomicU64>> =
        Arc::new((0..SSE_CLIENTS).map(|_| AtomicU64::new(0)).collect());
    let queries = Arc::new(QueryStats::default());
    let mut threads = Vec::new();
    for i in 0..SSE_CLIENTS {
        let (stop, sse, per_client) = (stop.clone(), sse.clone(), per_client.clone());
        threads.push(
            std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || sse_client(addr, &stop, &sse, &per_client[i]))
                .expect("spawn an SSE client"),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sse.ready.load(Ordering::Relaxed) < SSE_CLIENTS as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..QUERY_THREADS {
        let (stop, queries) = (stop.clone(), queries.clone());
        threads.push(std::thread::spawn(move || {
            query_client(
                addr,
                QUERIES_PER_SECOND / QUERY_THREADS as u64,
                &stop,
                &queries,
            )
        }));
    }
    println!("ready {}", sse.ready.load(Ordering::Relaxed));

    let counters = |s: &SseStats, q: &QueryStats| {
        [
            s.bytes.load(Ordering::Relaxed),
            s.snapshots.load(Ordering::Relaxed),
            s.finished.load(Ordering::Relaxed),
            s.missed.load(Ordering::Relaxed),
            q.ok.load(Ordering::Relaxed),
            q.not_found.load(Ordering::Relaxed),
            q.other_status.load(Ordering::Relaxed),
            q.errors.load(Ordering::Relaxed),
            q.late_skips.load(Ordering::Relaxed),
        ]
    };
    let mut base = counters(&sse, &queries);
    let mut base_per_client: Vec<u64> = per_client
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let mut base_cpu = stat_ticks("/proc/self/stat".as_ref());
    let mut marked = Instant::now();
    for line in std::io::stdin().lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("mark") => {
                base = counters(&sse, &queries);
                base_per_client = per_client
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect();
                base_cpu = stat_ticks("/proc/self/stat".as_ref());
                queries.latencies.lock().unwrap().clear();
                marked = Instant::now();
            }
            Ok("stop") | Err(_) => break,
            Ok(_) => {}
        }
    }
    let secs = marked.elapsed().as_secs_f64();
    let now = counters(&sse, &queries);
    let d: Vec<u64> = now.iter().zip(base).map(|(a, b)| a - b).collect();
    let cpu = stat_ticks("/proc/self/stat".as_ref()) - base_cpu;
    let fin: Vec<u64> = per_client
        .iter()
        .zip(&base_per_client)
        .map(|(c, b)| c.load(Ordering::Relaxed) - b)
        .collect();
    let mut lat = queries.latencies.lock().unwrap().clone();
    lat.sort_unstable();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    println!(
        "stats secs={secs:.3} connected={} sse_errors={} bytes={} snapshots={} finished={} \
         missed={} q_ok={} q_404={} q_other={} q_errors={} q_late={} fin_min={} fin_max={} \
         lat_p50_us={} lat_p99_us={} lat_max_us={} cpu_ticks={cpu} rss_kib={}",
        sse.connected.load(Ordering::Relaxed),
        sse.errors.load(Ordering::Relaxed),
        d[0],
        d[1],
        d[2],
        d[3],
        d[4],
        d[5],
        d[6],
        d[7],
        d[8],
        fin.iter().min().copied().unwrap_or(0),
        fin.iter().max().copied().unwrap_or(0),
        percentile(&lat, 0.5).as_micros(),
        percentile(&lat, 0.99).as_micros(),
        lat.last().copied().unwrap_or_default().as_micros(),
        rss_kib(),
    );
}

// ---- the run --------------------------------------------------------------------------------

fn main() {
    if let Ok(addr) = std::env::var(CLIENTS_ENV) {
        client_process(addr.parse().expect("client address"));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list`: nothing to list for a plain main.
        return;
    }
    let run_started = Instant::now();
    let (progress, store) = tracing_progress::Builder::new()
        .history_limit(100)
        .build()
        .expect("valid settings");
    tracing_subscriber::registry().with(progress).init();
    let server = tracing_progress::http::Server::builder(store.clone())
        .bind(([127, 0, 0, 1], 0))
        .spawn()
        .expect("start the server");
    let addr = server.local_addr();
    let mut next_op = 0u64;
    println!(
        "http_load: server at {addr}; {} CPUs; {SSE_CLIENTS} SSE clients and {QUERIES_PER_SECOND} \
         queries/s over {QUERY_THREADS} connections from a child process",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Warm up, filling the history to its limit so the store stops growing.
    for _ in 0..110 {
        operation(next_op, QUICK_SPIN_PER_STEP);
        next_op += 1;
    }
    let rss_warm = rss_kib();
    let load_base1 = loadavg();
    let base1 = run_phase(BASELINE, &mut next_op);

    // ---- the clients connect; bounded buffers fill; the load settles ----------------------
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .env(CLIENTS_ENV, addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the client process");
    let mut to_child = child.stdin.take().unwrap();
    let (tx, from_child) = mpsc::channel::<String>();
    let child_out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(child_out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(40);
    let ready = loop {
        // The program keeps going while the clients connect, as a real one would.
        operation(next_op, SPIN_PER_STEP);
        next_op += 1;
        if let Ok(line) = from_child.try_recv()
            && let Some(n) = line.strip_prefix("ready ")
        {
            break n.to_string();
        }
        assert!(Instant::now() < deadline, "the clients never got ready");
    };
    println!("  {ready} of {SSE_CLIENTS} SSE clients ready; queries started");
    let rss_connected = rss_kib();
    for _ in 0..REPLAY_FILL {
        operation(next_op, QUICK_SPIN_PER_STEP);
        next_op += 1;
    }
    let _ = run_phase(SETTLE, &mut next_op);

    // ---- the loaded phase, RSS sampled every second ---------------------------------------
    let sampling = Arc::new(AtomicBool::new(true));
    let rss_samples = Arc::new(Mutex::new(Vec::<(Duration, u64)>::new()));
    let sampler = {
        let (sampling, rss_samples) = (sampling.clone(), rss_samples.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while sampling.load(Ordering::Relaxed) {
                rss_samples.lock().unwrap().push((t0.elapsed(), rss_kib()));
                std::thread::sleep(Duration::from_secs(1));
            }
            rss_samples.lock().unwrap().push((t0.elapsed(), rss_kib()));
        })
    };
    writeln!(to_child, "mark").expect("tell the clients");
    let load_loaded = loadavg();
    let server_cpu0 = thread_cpu_ticks("tracing-progres");
    let first_loaded_op = next_op;
    let loaded_started = Instant::now();
    let loaded = run_phase(LOADED, &mut next_op);
    let secs = loaded_started.elapsed().as_secs_f64();
    let server_cpu = thread_cpu_ticks("tracing-progres") - server_cpu0;
    writeln!(to_child, "stop").expect("tell the clients");
    sampling.store(false, Ordering::Relaxed);
    sampler.join().unwrap();
    let loaded_ops = next_op - first_loaded_op;
    let stats_line = loop {
        match from_child.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("stats ") => break line,
            Ok(_) => {}
            Err(e) => panic!("no stats from the client process: {e}"),
        }
    };
    let _ = child.wait();
    let stat = |key: &str| -> f64 {
        stats_line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };

    // ---- the baseline again ---------------------------------------------------------------
    std::thread::sleep(Duration::from_millis(500));
    let load_base2 = loadavg();
    let base2 = run_phase(BASELINE, &mut next_op);
    let rss_after = rss_kib();
    server.shutdown();

    // ---- report -----------------------------------------------------------------------------
    let mut baseline = base1.clone();
    baseline.extend_from_slice(&base2);
    let (b1, b2, b, l) = (
        summarize(&base1),
        summarize(&base2),
        summarize(&baseline),
        summarize(&loaded),
    );
    println!("\nworkload (one setlist-shaped operation: 31 nodes, 372 steps of CPU work):");
    print_summary("baseline", &b1);
    print_summary("loaded", &l);
    print_summary("baseline again", &b2);
    let pct = |loaded: Duration, base: Duration| (ms(loaded) / ms(base) - 1.0) * 100.0;
    println!(
        "  slowdown under load (target ≤ 10%): wall {:+.1}% (median), {:+.1}% (mean); \
         on-CPU time {:+.1}% (median)",
        pct(l.median, b.median),
        pct(l.mean, b.mean),
        pct(l.cpu_median, b.cpu_median),
    );
    println!(
        "  (wall time includes waiting for a CPU, which other processes on this machine cause \
         too; on-CPU time is the work itself, including any cost the server adds to it)"
    );
    println!(
        "  load average (1/5/15 min) at the start of: baseline {load_base1}; loaded {load_loaded}; baseline again {load_base2}"
    );

    println!("\nload during the loaded phase ({secs:.1} s):");
    println!(
        "  SSE: {} clients connected, {} errors; {:.1} MB/s read in total; {:.0} snapshot and \
         {:.0} finished events/s in total, {} missed notices",
        stat("connected"),
        stat("sse_errors"),
        stat("bytes") / stat("secs") / 1e6,
        stat("snapshots") / stat("secs"),
        stat("finished") / stat("secs"),
        stat("missed"),
    );
    println!(
        "  SSE: {loaded_ops} operations finished while loaded; `finished` events per client: \
         min {} max {}",
        stat("fin_min"),
        stat("fin_max"),
    );
    println!(
        "  queries: {:.0}/s served ({} ok, {} not found, {} other status, {} errors, {} skipped \
         while late); latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        (stat("q_ok") + stat("q_404")) / stat("secs"),
        stat("q_ok"),
        stat("q_404"),
        stat("q_other"),
        stat("q_errors"),
        stat("q_late"),
        stat("lat_p50_us") / 1e3,
        stat("lat_p99_us") / 1e3,
        stat("lat_max_us") / 1e3,
    );
    println!(
        "  CPU: server thread {:.0}% of one core; client process {:.0}% of one core",
        server_cpu as f64 / secs,
        stat("cpu_ticks") / stat("secs"),
    );

    let samples = rss_samples.lock().unwrap().clone();
    let rss_at = |frac: f64| {
        let i = (samples.len().saturating_sub(1) as f64 * frac).round() as usize;
        samples.get(i).copied().unwrap_or_default()
    };
    let (start, middle, end) = (rss_at(0.0), rss_at(0.5), rss_at(1.0));
    let (min, max) = (
        samples.iter().map(|s| s.1).min().unwrap_or(0),
        samples.iter().map(|s| s.1).max().unwrap_or(0),
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("\nmemory (RSS of the program with its server; the clients are another process):");
    println!(
        "  {:.1} MiB after warm-up; {:.1} MiB once the clients connected",
        mib(rss_warm),
        mib(rss_connected)
    );
    println!(
        "  loaded: start {:.1} MiB, middle {:.1} MiB (t={:.0}s), end {:.1} MiB (t={:.0}s); \
         min {:.1}, max {:.1} MiB over {} samples; end - start {:+.1} MiB",
        mib(start.1),
        mib(middle.1),
        middle.0.as_secs_f64(),
        mib(end.1),
        end.0.as_secs_f64(),
        mib(min),
        mib(max),
        samples.len(),
        mib(end.1) - mib(start.1),
    );
    println!(
        "  after the clients left and the last baseline: {:.1} MiB; client process: {:.1} MiB",
        mib(rss_after),
        stat("rss_kib") / 1024.0
    );
    println!(
        "\nhttp_load done in {:.0} s",
        run_started.elapsed().as_secs_f64()
    );
}
