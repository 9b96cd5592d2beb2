//! An OTLP/HTTP sink on loopback: answers every request with an empty 200 and counts the
//! `/v1/metrics` posts. Shared by tests/metrics.rs and benches/metrics.rs (`#[path]`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Starts the sink; its port and the count of metric posts so far.
pub fn otlp_sink() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = posts.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut have = Vec::new();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    have.extend_from_slice(&buf[..n]);
                    // Whole requests: headers, then content-length bytes.
                    while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&have[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if have.len() < end + 4 + len {
                            break;
                        }
                        if head.starts_with("post /v1/metrics") {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                        have.drain(..end + 4 + len);
                        let _ = c.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    (port, posts)
}
