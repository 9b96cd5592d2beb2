//! Load and fault tests: what a local client or a big operation does must not starve the host.
//!
//! Each test starts the host program (`examples/hardening_host.rs`: layer, default store,
//! server on 127.0.0.1:0, optional workload) as a child process, attacks it over loopback
//! only, asks the host itself what it sees (RSS, its own file opens, its workload's rate), and
//! prints the figures (`cargo test --all-features --test hardening -- --nocapture`). Every
//! loop is bounded in count and time and every child is killed at the end; the tests run one
//! at a time (RSS and throughput figures would mix otherwise). About a minute in all.
#![cfg(feature = "http")]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::example_binary;

/// One test at a time: figures are per process, but CPU is shared.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The host process.

struct Host {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Host {
    /// Starts the host with `args`; with `fd_limit`, under `ulimit -n fd_limit`.
    fn start(args: &[&str], fd_limit: Option<u32>) -> Host {
        let bin = example_binary("hardening_host");
        let mut cmd = match fd_limit {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the host starts");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("the host prints its address");
        let addr = line
            .trim()
            .strip_prefix("addr=")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        Host {
            child,
            stdin,
            stdout,
            addr,
        }
    }

    /// Sends one command and returns its answer line.
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("host alive");
        self.stdin.flush().expect("host alive");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("host answers");
        line.trim().to_owned()
    }

    /// A number from the answer to `command` (`name=N`).
    fn figure(&mut self, command: &str, name: &str) -> u64 {
        let answer = self.ask(command);
        field(&answer, name).unwrap_or_else(|| panic!("no {name} in {answer:?}"))
    }

    fn rss_kib(&mut self) -> u64 {
        self.figure("rss", "rss_kib")
    }

    fn ops(&mut self) -> u64 {
        self.figure("ops", "ops")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn field(answer: &str, name: &str) -> Option<u64> {
    answer
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// A plain HTTP/1.1 client: one request per connection, the answer read to its end.

/// `GET path`; returns the status and the body's length. Fails on a timeout or a broken answer.
fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, u64)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut sink = [0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut sink)? {
            0 => break,
            n => total += n as u64,
        }
    }
    Ok((status, total))
}

/// How many descriptors this test process may open (to size the floods).
fn own_fd_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

// ---------------------------------------------------------------------------------------------

/// 1,000 idle connections and 300 slowloris clients (headers a byte a second, reconnecting
/// when closed) against a host limited to 256 descriptors: the host's own file opens keep
/// working and `/api/health` keeps answering, within the default limits.
#[test]
fn idle_and_slowloris_connections_do_not_starve_the_host() {
    let _serial = serial();
    let mut host = Host::start(&[], Some(256));
    let addr = host.addr;
    let rss_before = host.rss_kib();
    // What this process can hold, with room for the rest of the test.
    let budget = own_fd_limit().saturating_sub(100).min(1_300);
    let slowloris = (budget * 3 / 13) as usize;
    let idle = budget as usize - slowloris;

    let stop = Arc::new(AtomicBool::new(false));
    let slow_reconnects = Arc::new(AtomicU64::new(0));
    let flood_until = Instant::now() + Duration::from_secs(20);
    // Slowloris: 10 threads, each keeping its share of connections dribbling headers.
    let slow_threads: Vec<_> = (0..10)
        .map(|_| {
            let (stop, reconnects) = (stop.clone(), slow_reconnects.clone());
            let share = slowloris / 10;
            thread::spawn(move || {
                let mut conns: Vec<Option<TcpStream>> = (0..share).map(|_| None).collect();
                while !stop.load(Ordering::Relaxed) && Instant::now() < flood_until {
                    for slot in conns.iter_mut() {
                        let alive = match slot {
                            Some(s) => s.write_all(b"X").is_ok(),
                            None => false,
                        };
                        if !alive {
                            *slot = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                                .ok()
                                .and_then(|mut s| {
                                    s.set_write_timeout(Some(Duration::from_millis(200))).ok()?;
                                    s.write_all(
                                        b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
                                    )
                                    .ok()?;
                                    Some(s)
                                });
                            reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    thread::sleep(Duration::from_millis(1000));
                }
            })
        })
        .collect();
    // Idle: connect and hold, never send a byte.
    let idle_conns: Vec<TcpStream> = {
        let per = idle / 4;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(8);
                    let mut held = Vec::new();
                    while held.len() < per && Instant::now() < deadline {
                        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300))
                        {
                            held.push(s);
                        }
                    }
                    held
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("connector"))
            .collect()
    };

    // Under the flood: health answers and the host opens its files.
    let mut worst = Duration::ZERO;
    let mut answered = 0;
    for _ in 0..10 {
        let t = Instant::now();
        let (status, _) = get(addr, "/api/health", Duration::from_secs(5))
            .expect("health answers under the flood");
        assert_eq!(status, 200);
        worst = worst.max(t.elapsed());
        answered += 1;
        let opened = host.ask("open 100");
        assert_eq!(
            opened, "opened=100 failed=0",
            "the host's own file opens fail"
        );
        thread::sleep(Duration::from_millis(500));
    }
    let stats = host.ask("stats");
    let rss_during = host.rss_kib();
    stop.store(true, Ordering::Relaxed);
    for t in slow_threads {
        let _ = t.join();
    }
    let held = idle_conns.len();
    drop(idle_conns);
    println!(
        "idle+slowloris: {held} idle connections held, {slowloris} slowloris ({} (re)connects), \
         host fd limit 256: health answered {answered}/10 (worst {worst:?}), host opened 100 files \
         each time; host RSS {rss_before} -> {rss_during} KiB; {stats}",
        slow_reconnects.load(Ordering::Relaxed)
    );
    assert!(worst < Duration::from_secs(3), "health took {worst:?}");
    assert!(
        field(&stats, "connections_open").unwrap_or(u64::MAX) <= 64,
        "{stats}"
    );
    assert!(
        field(&stats, "connections_evicted").unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(
        rss_during < rss_before + 16 * 1024,
        "RSS {rss_before} -> {rss_during} KiB"
    );
}

/// 8 clients asking for the biggest lists for 10 s (operations of 2,000 children in history):
/// the host's RSS rise and its workload's slowdown are bounded.
#[test]
fn biggest_lists_bound_memory_and_throughput() {
    let _serial = serial();
    let mut host = Host::start(&["--workload", "200"], None);
    let addr = host.addr;
    // A full history of big operations (bounded by bytes: 2,000 children each).
    host.ask("fill 80 2001 16");
    thread::sleep(Duration::from_secs(1));
    let rss_before = host.rss_kib();
    let ops0 = host.ops();
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs(4));
    let baseline = (host.ops() - ops0) as f64 / t0.elapsed().as_secs_f64();

    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let answers = Arc::new(AtomicU64::new(0));
    let paths = [
        "/api/history?limit=10000",
        "/api/operations?include=all&limit=10000",
        "/api/history.jsonl",
    ];
    let until = Instant::now() + Duration::from_secs(10);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (stop, bytes, answers) = (stop.clone(), bytes.clone(), answers.clone());
            let path = paths[i % paths.len()];
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    if let Ok((200, n)) = get(addr, path, Duration::from_secs(30)) {
                        bytes.fetch_add(n, Ordering::Relaxed);
                        answers.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let ops1 = host.ops();
    let t1 = Instant::now();
    let mut rss_peak = 0;
    while Instant::now() < until {
        rss_peak = rss_peak.max(host.rss_kib());
        thread::sleep(Duration::from_millis(250));
    }
    let loaded = (host.ops() - ops1) as f64 / t1.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    let stats = host.ask("stats");
    let drop_pct = 100.0 * (1.0 - loaded / baseline);
    println!(
        "8 clients x biggest lists for 10 s: {} answers, {} MB sent; host RSS {rss_before} -> \
         peak {rss_peak} KiB (+{} KiB); workload {baseline:.0} -> {loaded:.0} ops/s \
         ({drop_pct:.0}% slower); {stats}",
        answers.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) / 1_000_000,
        rss_peak.saturating_sub(rss_before)
    );
    assert!(answers.load(Ordering::Relaxed) > 0);
    assert!(
        rss_peak < rss_before + 32 * 1024,
        "RSS rose from {rss_before} to {rss_peak} KiB"
    );
    assert!(drop_pct < 50.0, "the workload slowed down {drop_pct:.0}%");
}

/// Arguments of the hosts of the event-stream test.
const STREAM_HOST: &[&str] = &[
    "--max-connections",
    "700",
    "--max-event-streams",
    "700",
    "--stuck-client-timeout-ms",
    "6000",
    "--workload",
    "100",
    "--workload-pause-ms",
    "20",
    // History in its steady state from the start: the figures are the clients' alone.
    "--history-max-bytes",
    "2000000",
];

/// Opens `n` connections to `addr` that each send `request` and then never read.
fn open_and_forget(addr: SocketAddr, n: usize, request: &str) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            Some(s)
        })
        .collect()
}

/// Waits until the host's counter `name` reaches `at_least` (10 s at most); returns its value.
fn wait_for_counter(host: &mut Host, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = field(&host.ask("stats"), name).unwrap_or(0);
        if v >= at_least || Instant::now() > deadline {
            return v;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// 500 event-stream clients that connect and never read, while operations finish: each costs
/// the host what any open connection costs (measured next to 500 plain keep-alive connections
/// on a host of its own) and nothing for the events it does not read (they are shared), and all
/// are dropped once stuck for the timeout.
#[test]
fn stuck_event_clients_share_frames_and_are_dropped() {
    let _serial = serial();
    let clients = (own_fd_limit().saturating_sub(100)).min(500) as usize;

    // What a plain open connection costs (it read one answer and stays open, keep-alive).
    let plain_per_conn = {
        let mut host = Host::start(STREAM_HOST, None);
        thread::sleep(Duration::from_secs(2));
        let before = host.rss_kib();
        let conns = open_and_forget(
            host.addr,
            clients,
            "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        );
        let open = wait_for_counter(&mut host, "connections_open", conns.len() as u64);
        thread::sleep(Duration::from_secs(2));
        let after = host.rss_kib();
        assert!(open >= conns.len() as u64);
        after.saturating_sub(before) as f64 * 1024.0 / conns.len() as f64
    };

    let mut host = Host::start(STREAM_HOST, None);
    let addr = host.addr;
    thread::sleep(Duration::from_secs(2));
    let rss_before = host.rss_kib();
    let stuck = open_and_forget(
        addr,
        clients,
        "GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    // Every stream is open, then stuck for part of the timeout while operations finish.
    let open = wait_for_counter(&mut host, "event_streams_open", stuck.len() as u64);
    thread::sleep(Duration::from_secs(2));
    let rss_stuck = host.rss_kib();
    // Then all are dropped.
    let deadline = Instant::now() + Duration::from_secs(20);
    let dropped = loop {
        let dropped = field(&host.ask("stats"), "event_clients_dropped").unwrap_or(0);
        if dropped >= stuck.len() as u64 || Instant::now() > deadline {
            break dropped;
        }
        thread::sleep(Duration::from_millis(250));
    };
    thread::sleep(Duration::from_millis(500));
    let rss_after = host.rss_kib();
    let stats_after = host.ask("stats");
    let per_client = rss_stuck.saturating_sub(rss_before) as f64 * 1024.0 / stuck.len() as f64;
    println!(
        "{} stuck event clients ({open} streams open) while 40 operations/s finish: host RSS \
         {rss_before} -> {rss_stuck} KiB while stuck: {per_client:.0} bytes per client, against \
         {plain_per_conn:.0} bytes per plain open connection ({:.0} beyond it); {rss_after} KiB \
         after {dropped} were dropped; {stats_after}",
        stuck.len(),
        per_client - plain_per_conn
    );
    drop(stuck);
    assert!(open as usize >= clients, "{open} streams open");
    assert!(
        dropped >= clients as u64,
        "only {dropped} of {clients} stuck clients were dropped"
    );
    assert!(
        per_client < plain_per_conn + 32.0 * 1024.0,
        "{per_client:.0} bytes per stuck client, {plain_per_conn:.0} per plain connection"
    );
    assert!(
        field(&stats_after, "event_streams_open").unwrap_or(u64::MAX) == 0,
        "{stats_after}"
    );
}

/// A default-configured store fed operations of 10,000 kept nodes, then operations with big
/// metadata: RSS stays under the documented ~100 MB, and the history's byte estimate errs high.
#[test]
fn default_store_with_huge_operations_stays_under_the_bound() {
    let _serial = serial();
    let mut host = Host::start(&[], None);
    let rss_empty = host.rss_kib();
    // 10,001 nodes with small metadata each (the 5 MB operations), 20 of them.
    let started = Instant::now();
    for _ in 0..2 {
        host.ask("fill 10 10001 8");
    }
    let rss_nodes = host.rss_kib();
    let stats_nodes = host.ask("stats");
    // Few nodes, big metadata: 2,000 nodes x 4 x 1 KiB, 20 of them.
    host.ask("fill 20 2000 1024");
    let rss_meta = host.rss_kib();
    let stats_meta = host.ask("stats");
    println!(
        "default store: RSS empty {rss_empty} KiB; after 20 ops x 10,001 nodes {rss_nodes} KiB \
         ({stats_nodes}); after 20 ops x 2,000 nodes x 4 KiB metadata {rss_meta} KiB \
         ({stats_meta}); {:?}",
        started.elapsed()
    );
    let bound_kib = 100 * 1024;
    assert!(rss_nodes < bound_kib, "RSS {rss_nodes} KiB");
    assert!(rss_meta < bound_kib, "RSS {rss_meta} KiB");
    let evicted = field(&stats_nodes, "evicted").unwrap_or(0);
    assert!(
        evicted > 0,
        "the bytes bound evicted nothing: {stats_nodes}"
    );
    // The estimate errs high: the history it reports is at least what RSS grew by with it.
    let estimated_kib = field(&stats_nodes, "history_bytes").unwrap_or(0) / 1024;
    let kept = field(&stats_nodes, "history").unwrap_or(1).max(1);
    println!(
        "estimate: {estimated_kib} KiB for {kept} kept operations ({} KiB each)",
        estimated_kib / kept
    );
    assert!(estimated_kib <= 64 * 1024, "{stats_nodes}");
}

/// The jaeger example against a collector that accepts connections and never answers: the
/// exit waits the configured budget at most, not the SDK's 5 s twice.
#[cfg(feature = "otel")]
#[test]
fn exit_is_bounded_when_the_collector_never_answers() {
    let _serial = serial();
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", hole.local_addr().expect("addr"));
    // Accept and hold every connection, never answering.
    let done = Arc::new(AtomicBool::new(false));
    let hold_done = done.clone();
    let hold = thread::spawn(move || {
        hole.set_nonblocking(true).ok();
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until && held.len() < 64 && !hold_done.load(Ordering::Relaxed) {
            match hole.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    let started = Instant::now();
    let out = Command::new(example_binary("jaeger"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("TRACING_PROGRESS_SHUTDOWN_MS", "500")
        .env("SETLIST_SPEED", "20")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("the example runs");
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = hold.join();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("jaeger example with a silent collector: exit after {took:?}");
    // Parent and three child processes, each bounded by 0.5 s (was 2 x 5 s each).
    assert!(took < Duration::from_secs(12), "took {took:?}: {stderr}");
    assert!(stderr.contains("queued spans dropped"), "{stderr}");
}
