//! The server's bounds, one at a time, over real sockets on 127.0.0.1 with small limits:
//! exactly one Host header, the connection cap and its eviction of idle connections, the
//! header-read and idle timeouts, the cap on event streams, the request time limit (a JSON 503,
//! and a streamed body cut off), and the streamed lists' shape and default limit.
#![cfg(feature = "http")]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tracing::info_span;
use tracing_progress::Builder;
use tracing_progress::http::{Server, ServerBuilder};

use support::Traced;

fn server(traced: &Traced, configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Server {
    configure(Server::builder(traced.store.clone()).bind(([127, 0, 0, 1], 0)))
        .spawn()
        .expect("server starts")
}

/// Sends `raw` on a new connection and reads the answer to its end (the request should ask
/// `Connection: close`); returns the status and the whole answer.
fn exchange(addr: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(raw.as_bytes()).expect("send");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
    )
}

/// Whether the server closed `s` within `within` (a read returns end of file or an error).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).ok();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn exactly_one_host_header() {
    let traced = Traced::new(Builder::new());
    let server = server(&traced, |b| b);
    let addr = server.local_addr();
    let (status, body) = exchange(
        addr,
        "GET /api/health HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    // hyper refuses an HTTP/1.1 request without Host itself, or we do: never a 200.
    assert!(status == 400, "{body}");
    let (status, body) = exchange(
        addr,
        "GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("more than one Host header"), "{body}");
    let (status, body) = exchange(addr, "GET /api/health HTTP/1.0\r\n\r\n");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("missing Host header"), "{body}");
    assert_eq!(get(addr, "/api/health").0, 200);
}

/// At the cap, the connection idle the longest is closed for the new one; a request always
/// gets through.
#[test]
fn the_connection_cap_evicts_the_longest_idle() {
    let traced = Traced::new(Builder::new());
    let server = server(&traced, |b| b.max_connections(4));
    let addr = server.local_addr();
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        assert_eq!(get(addr, "/api/health").0, 200);
    }
    // One eviction makes room; each answered request then closes and frees its slot.
    let stats = server.stats();
    assert!(stats.connections_evicted >= 1, "{stats:?}");
    assert!(stats.connections_open <= 4, "{stats:?}");
    // One of the idle ones made room.
    let mut closed = 0;
    for s in &mut idle {
        if closed_within(s, Duration::from_millis(300)) {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed");
}

/// A client that never finishes its headers is closed after the header-read timeout; a
/// keep-alive connection with nothing in flight after the idle timeout.
#[test]
fn header_read_and_idle_timeouts_close_connections() {
    let traced = Traced::new(Builder::new());
    let server = server(&traced, |b| {
        b.header_read_timeout(Duration::from_millis(300))
            .idle_timeout(Duration::from_millis(600))
    });
    let addr = server.local_addr();
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .expect("send");
    let started = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(3)));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "closed after {took:?}");

    let mut kept = TcpStream::connect(addr).expect("connect");
    kept.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let started = Instant::now();
    assert!(closed_within(&mut kept, Duration::from_secs(3)));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        server.stats().connections_idle_closed >= 2,
        "{:?}",
        server.stats()
    );

    // hyper's header timer also runs while a keep-alive connection waits for its next request.
    let server = self::server(&traced, |b| {
        b.header_read_timeout(Duration::from_millis(300))
            .idle_timeout(Duration::from_secs(30))
    });
    let mut kept = TcpStream::connect(server.local_addr()).expect("connect");
    kept.write_all(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let started = Instant::now();
    assert!(closed_within(&mut kept, Duration::from_secs(5)));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn event_streams_are_capped() {
    let traced = Traced::new(Builder::new());
    let server = server(&traced, |b| b.max_event_streams(2));
    let addr = server.local_addr();
    let open = |n| -> Vec<TcpStream> {
        (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(addr).expect("connect");
                s.write_all(b"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    .expect("send");
                s
            })
            .collect()
    };
    let streams = open(2);
    support::wait_until("two streams open", || {
        server.stats().event_streams_open == 2
    });
    let (status, body) = get(addr, "/api/events");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("Retry-After") || body.contains("retry-after"),
        "{body}"
    );
    assert!(body.contains("too many event streams"), "{body}");
    assert_eq!(server.stats().event_streams_refused, 1);
    drop(streams);
    support::wait_until("streams closed", || server.stats().event_streams_open == 0);
}

/// Fills history with operations big enough that a list of them outlasts a short request
/// limit when nobody reads it.
fn big_history(traced: &Traced, ops: usize) {
    // 500 items of 12 kB: one operation is a single chunk of about 6 MB, more than loopback's
    // socket buffers hold, so a client that never reads stops the body at its first chunk.
    let text = "x".repeat(12_000);
    tracing::dispatcher::with_default(&traced.dispatch, || {
        for _ in 0..ops {
            let root = info_span!("job", progress.level = "job");
            let _g = root.enter();
            for i in 0..500 {
                info_span!("item", progress.level = "item", i, note = text.as_str())
                    .in_scope(|| {});
            }
        }
    });
}

/// A list request that waits longer than the limit for its turn answers a JSON 503; a body
/// nobody reads is cut off at the limit, which frees its turn.
#[test]
fn the_request_time_limit_answers_503_and_cuts_bodies() {
    let traced = Traced::new(Builder::new());
    // The hog must still hold its turn when the next request's wait runs out: with small
    // operations its body kept being polled, reached its own deadline first and freed the
    // turn early (the next request then got a 200).
    big_history(&traced, 4);
    let server = server(&traced, |b| {
        b.max_heavy_requests(1)
            .request_timeout(Duration::from_millis(800))
    });
    let addr = server.local_addr();
    // Takes the only turn and never reads: the answer (tens of MB) fills the socket.
    let mut hog = TcpStream::connect(addr).expect("connect");
    hog.write_all(b"GET /api/history.jsonl HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    // The hog holds the only turn before the next request comes (a fixed sleep raced on a
    // loaded machine).
    support::wait_until("the hog's turn", || {
        server.stats().heavy_requests_in_flight >= 1
    });
    let (status, body) = get(addr, "/api/history?limit=1");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    // The hog's body, never polled, is cut off (its connection closed) a second after its
    // deadline, and its turn is free again.
    support::wait_until("the cut-off", || server.stats().requests_timed_out >= 2);
    let (status, _) = get(addr, "/api/history?limit=1");
    assert_eq!(status, 200);
    let mut rest = Vec::new();
    hog.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let _ = hog.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.ends_with("0\r\n\r\n"), "the body was not cut off");
}

/// Streamed lists have the same shape as before; `.jsonl` has a default limit (10,000) and
/// says in `x-truncated` whether more matched.
#[test]
fn streamed_lists_and_the_jsonl_limit() {
    let traced = Traced::new(Builder::new());
    for i in 0..5 {
        traced.run("job", &format!("job {i}"), false);
    }
    let held = traced.hold("sync", "held");
    let server = server(&traced, |b| b);
    let addr = server.local_addr();
    let body_of = |answer: &str| answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    let (status, answer) = get(addr, "/api/operations?include=all&limit=3");
    assert_eq!(status, 200);
    // Chunked: take the JSON between the chunk sizes.
    let json: String = dechunk(&body_of(&answer));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["operations"].as_array().map(Vec::len), Some(3));
    assert_eq!(v["truncated"], true);
    assert_eq!(v["operations"][0]["name"], "held");
    let (_, answer) = get(addr, "/api/history.jsonl?limit=2");
    assert!(
        answer.to_ascii_lowercase().contains("x-truncated: true"),
        "{answer}"
    );
    let lines = dechunk(&body_of(&answer));
    assert_eq!(lines.lines().count(), 2);
    let (_, answer) = get(addr, "/api/history.jsonl");
    assert!(
        answer.to_ascii_lowercase().contains("x-truncated: false"),
        "{answer}"
    );
    assert_eq!(dechunk(&body_of(&answer)).lines().count(), 5);
    held.finish();
}

/// The data of a chunked body.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
    }
    out
}
