//! A host program for the load and fault tests (`tests/hardening.rs`): the progress layer, a
//! store and the HTTP server on `127.0.0.1:0`, an optional workload, and a line protocol on
//! stdin so the test can ask it, from the outside, what only the host can see (its RSS, whether
//! its own file opens still work, how fast its workload runs).
//!
//! ```text
//! cargo run --features http --example hardening_host -- [--max-connections N]
//!     [--max-event-streams N] [--header-read-timeout-ms MS] [--idle-timeout-ms MS]
//!     [--stuck-client-timeout-ms MS] [--workload CHILDREN] [--workload-pause-ms MS]
//!     [--history-max-bytes N]
//! ```
//!
//! It prints `addr=127.0.0.1:PORT`, then answers one line per command:
//!
//! | command | answer |
//! |---|---|
//! | `rss` | `rss_kib=N` (VmRSS of this process) |
//! | `ops` | `ops=N`: operations the workload finished so far |
//! | `open N` | `opened=K failed=F`: opens N files at once (as the program would), then closes them |
//! | `fill OPS NODES META_BYTES` | `done`: runs OPS operations of NODES nodes, each node with 4 metadata fields of META_BYTES bytes of text |
//! | `stats` | `history=N history_bytes=B evicted=E` and the server's counters |
//!
//! It exits when stdin closes (so it never outlives the test) or on `quit`.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tracing::info_span;
use tracing_progress::http::Server;
use tracing_subscriber::prelude::*;

struct Args {
    max_connections: Option<usize>,
    max_event_streams: Option<usize>,
    header_read_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    stuck_client_timeout: Option<Duration>,
    workload_children: Option<u64>,
    workload_pause: Duration,
    history_max_bytes: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        max_connections: None,
        max_event_streams: None,
        header_read_timeout: None,
        idle_timeout: None,
        stuck_client_timeout: None,
        workload_children: None,
        workload_pause: Duration::ZERO,
        history_max_bytes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        let ms = Duration::from_millis(n);
        match flag.as_str() {
            "--max-connections" => args.max_connections = Some(n as usize),
            "--max-event-streams" => args.max_event_streams = Some(n as usize),
            "--header-read-timeout-ms" => args.header_read_timeout = Some(ms),
            "--idle-timeout-ms" => args.idle_timeout = Some(ms),
            "--stuck-client-timeout-ms" => args.stuck_client_timeout = Some(ms),
            "--workload" => args.workload_children = Some(n),
            "--workload-pause-ms" => args.workload_pause = ms,
            "--history-max-bytes" => args.history_max_bytes = Some(n as usize),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One operation of about `nodes` nodes, all kept: a root, groups of at most 1,000 items
/// (the default `max_finished_children`), each item with 4 metadata fields of `meta` bytes of
/// text and a float.
fn operation(nodes: u64, meta: &str) {
    let root = info_span!("job", progress.level = "job", progress.total = nodes);
    let _g = root.enter();
    let items = nodes.saturating_sub(1);
    let groups = items.div_ceil(1_000).max(1);
    let mut left = items.saturating_sub(groups - 1);
    for g in 0..groups {
        let group = info_span!("group", progress.level = "group", g);
        let _g = group.enter();
        let n = left.min(1_000);
        left -= n;
        for i in 0..n {
            info_span!(
                "item",
                progress.level = "item",
                i,
                a = meta,
                b = meta,
                c = meta,
                d = meta,
                ratio = 0.5f64
            )
            .in_scope(|| {});
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hardening_host: {e}");
            std::process::exit(2);
        }
    };
    // The defaults unless told: the tests check what a default-configured store costs.
    let mut layer_builder = tracing_progress::Builder::new();
    if let Some(n) = args.history_max_bytes {
        layer_builder = layer_builder.history_max_bytes(n);
    }
    let (layer, store) = match layer_builder.build() {
        Ok(built) => built,
        Err(e) => {
            eprintln!("hardening_host: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::registry().with(layer).init();
    let mut builder = Server::builder(store.clone()).bind(([127, 0, 0, 1], 0));
    if let Some(n) = args.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(n) = args.max_event_streams {
        builder = builder.max_event_streams(n);
    }
    if let Some(t) = args.header_read_timeout {
        builder = builder.header_read_timeout(t);
    }
    if let Some(t) = args.idle_timeout {
        builder = builder.idle_timeout(t);
    }
    if let Some(t) = args.stuck_client_timeout {
        builder = builder.stuck_client_timeout(t);
    }
    let server = match builder.spawn() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hardening_host: {e}");
            std::process::exit(1);
        }
    };

    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workload = args.workload_children.map(|children| {
        let (ops, stop) = (ops.clone(), stop.clone());
        let pause = args.workload_pause;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                operation(children + 1, "x");
                ops.fetch_add(1, Ordering::Relaxed);
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        })
    });

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "addr={}", server.local_addr());
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| {
            words
                .get(i)
                .and_then(|w| w.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let answer = match words.first().copied() {
            Some("rss") => format!("rss_kib={}", rss_kib()),
            Some("ops") => format!("ops={}", ops.load(Ordering::Relaxed)),
            Some("open") => {
                let mut files = Vec::new();
                let mut failed = 0;
                for _ in 0..num(1) {
                    match std::fs::File::open("/proc/self/status") {
                        Ok(f) => files.push(f),
                        Err(_) => failed += 1,
                    }
                }
                format!("opened={} failed={failed}", files.len())
            }
            Some("fill") => {
                let meta = "m".repeat(num(3) as usize);
                for _ in 0..num(1) {
                    operation(num(2).max(1), &meta);
                }
                "done".to_owned()
            }
            Some("stats") => {
                let s = store.stats();
                let h = server.stats();
                format!(
                    "history={} history_bytes={} evicted={} connections_open={} \
                     connections_evicted={} connections_refused={} connections_idle_closed={} \
                     event_streams_open={} event_clients_dropped={} requests_timed_out={}",
                    s.history,
                    s.history_bytes,
                    s.history_evicted,
                    h.connections_open,
                    h.connections_evicted,
                    h.connections_refused,
                    h.connections_idle_closed,
                    h.event_streams_open,
                    h.event_clients_dropped,
                    h.requests_timed_out,
                )
            }
            Some("quit") => break,
            _ => format!("unknown command {line:?}"),
        };
        let _ = writeln!(out, "{answer}");
        let _ = out.flush();
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = workload {
        let _ = w.join();
    }
    server.shutdown();
}
