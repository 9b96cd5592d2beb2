//! The accept loop: a bounded number of connections, each served by hyper's HTTP/1 with a
//! header-read timeout and closed after an idle timeout.
//!
//! Admission happens at `accept`: while fewer than `max_connections` are open the connection is
//! served. At the bound the connection idle the longest (no request in flight: a client that
//! never finished its headers, or a keep-alive connection between requests) is closed to make
//! room, so a flood of idle or slow clients cannot lock out a real request. When every open
//! connection is busy (requests in flight, event streams), the newly accepted one waits, holding
//! its one descriptor, until a slot frees or the request timeout passes; meanwhile nothing
//! more is accepted, and further clients wait in the kernel's listen backlog without a
//! descriptor of this process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use super::limits::{Counters, HttpLimits};

/// How long the loop pauses after a failed accept (out of descriptors: what is queued stays in
/// the backlog until then).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How often a full server looks again for a free or idle slot.
const FULL_RECHECK: Duration = Duration::from_millis(20);

/// Time after a request's deadline at which its connection is closed if the request still
/// runs (a body its client does not read never gets to check its own deadline).
const REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Lets a handler close the connection it was called on (a request extension set by the
/// server; absent when the routes are served by someone else's server).
#[derive(Clone, Debug)]
pub(crate) struct ConnControl {
    close: Arc<Notify>,
    streaming: Arc<AtomicBool>,
}

impl ConnControl {
    /// Closes the connection at once (the event hub's answer to a client that stopped reading).
    pub(crate) fn close(&self) {
        self.close.notify_one();
    }

    /// Exempts the connection from the request time limit: it carries an event stream (which
    /// has bounds of its own).
    pub(crate) fn mark_streaming(&self) {
        self.streaming.store(true, Ordering::Release);
    }

    /// The event stream ended: later requests on the connection have the time limit again.
    pub(crate) fn end_streaming(&self) {
        self.streaming.store(false, Ordering::Release);
    }
}

/// Requests in flight on one connection and when it last became idle.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since the registry's start at which the last request ended (or the
    /// connection was accepted).
    idle_since_ms: AtomicU64,
    /// Milliseconds since the registry's start at which the last request began.
    busy_since_ms: AtomicU64,
}

/// Ends a request's part of [`Activity`] when the response body is done or dropped.
struct InFlight {
    activity: Arc<Activity>,
    start: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.activity
            .idle_since_ms
            .store(millis_since(self.start), Ordering::Release);
        self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Conn {
    activity: Arc<Activity>,
    control: ConnControl,
    /// Chosen for eviction; no longer counts against the bound.
    closing: bool,
}

/// The open connections.
struct Registry {
    start: Instant,
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    /// Woken whenever a connection ends.
    ended: Notify,
}

enum Admission {
    Admit,
    /// An idle connection was told to close.
    Evicted,
    /// Every open connection is busy.
    Full,
}

impl Registry {
    fn new() -> Self {
        Registry {
            start: Instant::now(),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            ended: Notify::new(),
        }
    }

    fn admit(&self, max: usize) -> Admission {
        let mut conns = self.conns.lock();
        let live = conns.values().filter(|c| !c.closing).count();
        if live < max {
            return Admission::Admit;
        }
        let victim = conns
            .values_mut()
            .filter(|c| !c.closing && c.activity.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.activity.idle_since_ms.load(Ordering::Acquire));
        match victim {
            Some(v) => {
                v.closing = true;
                v.control.close();
                Admission::Evicted
            }
            None => Admission::Full,
        }
    }

    fn insert(&self) -> (u64, Arc<Activity>, ConnControl) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(millis_since(self.start)),
            busy_since_ms: AtomicU64::new(millis_since(self.start)),
        });
        let control = ConnControl {
            close: Arc::new(Notify::new()),
            streaming: Arc::new(AtomicBool::new(false)),
        };
        self.conns.lock().insert(
            id,
            Conn {
                activity: activity.clone(),
                control: control.clone(),
                closing: false,
            },
        );
        (id, activity, control)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().remove(&id);
        self.ended.notify_waiters();
    }

    fn is_empty(&self) -> bool {
        self.conns.lock().is_empty()
    }
}

fn as_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Serves `router` on `listener` until `shutdown` turns true, then lets open connections
/// finish (the caller bounds how long).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(Registry::new());
    let max = limits.max_connections.max(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|down| *down) => break,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(_) => {
                Counters::bump(&counters.accept_errors);
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        if !wait_for_room(&registry, max, &limits, &counters, &mut shutdown).await {
            Counters::bump(&counters.connections_refused);
            drop(tcp);
            continue;
        }
        let (id, activity, control) = registry.insert();
        Counters::bump(&counters.connections_accepted);
        counters.connections_open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(serve_connection(
            tcp,
            router.clone(),
            registry.clone(),
            Slot {
                id,
                activity,
                control,
            },
            limits.clone(),
            counters.clone(),
            shutdown.clone(),
        ));
    }
    // Graceful: each connection finishes its request; event streams end through the hub.
    loop {
        let ended = registry.ended.notified();
        if registry.is_empty() {
            break;
        }
        ended.await;
    }
}

/// Makes room for one more connection: at once, by evicting an idle one, or by waiting for a
/// busy one to end (up to the request timeout). False when there is none.
async fn wait_for_room(
    registry: &Registry,
    max: usize,
    limits: &HttpLimits,
    counters: &Counters,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    loop {
        match registry.admit(max) {
            Admission::Admit => return true,
            Admission::Evicted => {
                Counters::bump(&counters.connections_evicted);
                return true;
            }
            Admission::Full => {}
        }
        if tokio::time::Instant::now() >= deadline || *shutdown.borrow() {
            return false;
        }
        let ended = registry.ended.notified();
        tokio::select! {
            _ = ended => {}
            _ = tokio::time::sleep(FULL_RECHECK) => {}
        }
    }
}

/// One admitted connection's entry.
struct Slot {
    id: u64,
    activity: Arc<Activity>,
    control: ConnControl,
}

async fn serve_connection(
    tcp: TcpStream,
    router: Router,
    registry: Arc<Registry>,
    slot: Slot,
    limits: HttpLimits,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Slot {
        id,
        activity,
        control,
    } = slot;
    let start = registry.start;
    let service = {
        let activity = activity.clone();
        let control = control.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            activity
                .busy_since_ms
                .store(millis_since(start), Ordering::Release);
            activity.in_flight.fetch_add(1, Ordering::AcqRel);
            let in_flight = InFlight {
                activity: activity.clone(),
                start,
            };
            req.extensions_mut().insert(control.clone());
            let router = router.clone();
            async move {
                let response = router.oneshot(req).await?;
                // The request stays in flight until its body is written or dropped.
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _in_flight = &in_flight;
                        frame
                    }))
                }))
            }
        })
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = http.serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let idle_timeout = limits.idle_timeout.max(Duration::from_millis(10));
    // A request whose body is not polled (its client stopped reading) cannot notice its own
    // deadline: the connection is closed a grace period after it.
    let request_limit = limits.request_timeout + REQUEST_GRACE;
    let mut check = tokio::time::interval(
        (idle_timeout / 4)
            .min(limits.request_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if result.as_ref().is_err_and(hyper::Error::is_timeout) {
                    Counters::bump(&counters.connections_idle_closed);
                }
                break;
            }
            _ = control.close.notified() => break,
            _ = shutdown.wait_for(|down| *down), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick() => {
                let now = millis_since(start);
                let busy = activity.in_flight.load(Ordering::Acquire) > 0;
                let idle = !busy
                    && now.saturating_sub(activity.idle_since_ms.load(Ordering::Acquire))
                        >= as_millis(idle_timeout);
                if idle {
                    Counters::bump(&counters.connections_idle_closed);
                    break;
                }
                let overdue = busy
                    && !control.streaming.load(Ordering::Acquire)
                    && now.saturating_sub(activity.busy_since_ms.load(Ordering::Acquire))
                        >= as_millis(request_limit);
                if overdue {
                    Counters::bump(&counters.requests_timed_out);
                    break;
                }
            }
        }
    }
    counters.connections_open.fetch_sub(1, Ordering::AcqRel);
    registry.remove(id);
}
