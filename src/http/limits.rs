//! What the server bounds, and the counters that say when a bound was hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

/// The server's bounds; set through [`ServerBuilder`](super::ServerBuilder), defaults below.
#[derive(Clone, Debug)]
pub(crate) struct HttpLimits {
    /// Open connections at most; over it the longest-idle connection is closed, or, when every
    /// connection is busy, the new one is.
    pub(crate) max_connections: usize,
    /// Time a client has to send a request's whole head (also the keep-alive wait for the next).
    pub(crate) header_read_timeout: Duration,
    /// Time a connection may sit with no request in flight.
    pub(crate) idle_timeout: Duration,
    /// Time a request (not an event stream) may take, its streamed body included.
    pub(crate) request_timeout: Duration,
    /// Event streams open at most.
    pub(crate) max_event_streams: usize,
    /// List requests (`/api/operations`, `/api/history`, `.jsonl`) served at once; more wait.
    pub(crate) max_heavy_requests: usize,
    /// An event stream behind the newest event for this long without taking it is dropped.
    pub(crate) stuck_client_timeout: Duration,
    /// Bytes an event stream queues at most beyond what hyper is writing.
    pub(crate) max_client_queue_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_event_streams: 32,
            max_heavy_requests: 2,
            stuck_client_timeout: Duration::from_secs(30),
            max_client_queue_bytes: 256 * 1024,
        }
    }
}

/// Counters shared by the accept loop, the handlers and the event hub.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_open: AtomicUsize,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_evicted: AtomicU64,
    pub(crate) connections_idle_closed: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) requests_timed_out: AtomicU64,
    pub(crate) heavy_in_flight: AtomicUsize,
    pub(crate) event_streams_open: AtomicUsize,
    pub(crate) event_streams_refused: AtomicU64,
    pub(crate) event_clients_dropped: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ServerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerStats {
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_accepted: get(&self.connections_accepted),
            connections_refused: get(&self.connections_refused),
            connections_evicted: get(&self.connections_evicted),
            connections_idle_closed: get(&self.connections_idle_closed),
            accept_errors: get(&self.accept_errors),
            requests_timed_out: get(&self.requests_timed_out),
            heavy_requests_in_flight: self.heavy_in_flight.load(Ordering::Relaxed),
            event_streams_open: self.event_streams_open.load(Ordering::Relaxed),
            event_streams_refused: get(&self.event_streams_refused),
            event_clients_dropped: get(&self.event_clients_dropped),
        }
    }
}

/// Decrements a gauge when dropped.
#[derive(Debug)]
pub(crate) struct GaugeGuard {
    counters: Arc<Counters>,
    which: fn(&Counters) -> &AtomicUsize,
}

impl GaugeGuard {
    /// Increments the gauge `which` unless it is at `max`; the guard decrements it again.
    pub(crate) fn try_acquire(
        counters: &Arc<Counters>,
        which: fn(&Counters) -> &AtomicUsize,
        max: usize,
    ) -> Option<GaugeGuard> {
        which(counters)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(GaugeGuard {
            counters: counters.clone(),
            which,
        })
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.which)(&self.counters).fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the server's bounds did so far: [`Server::stats`](super::Server::stats), and the
/// `server` object of `GET /api/health`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections open now.
    pub connections_open: usize,
    /// Connections accepted since the start.
    pub connections_accepted: u64,
    /// Connections closed at once because every open one was busy
    /// ([`ServerBuilder::max_connections`](super::ServerBuilder::max_connections)).
    pub connections_refused: u64,
    /// Idle connections closed to make room for a new one.
    pub connections_evicted: u64,
    /// Connections closed by the idle or header-read timeout.
    pub connections_idle_closed: u64,
    /// Failed accepts (for example out of file descriptors); the server waits and goes on.
    pub accept_errors: u64,
    /// Requests that hit [`ServerBuilder::request_timeout`](super::ServerBuilder::request_timeout).
    pub requests_timed_out: u64,
    /// List requests being served now.
    pub heavy_requests_in_flight: usize,
    /// Event streams open now.
    pub event_streams_open: usize,
    /// Event streams refused (503) at [`ServerBuilder::max_event_streams`](super::ServerBuilder::max_event_streams).
    pub event_streams_refused: u64,
    /// Event streams dropped because their client stopped reading
    /// ([`ServerBuilder::stuck_client_timeout`](super::ServerBuilder::stuck_client_timeout)).
    pub event_clients_dropped: u64,
}
