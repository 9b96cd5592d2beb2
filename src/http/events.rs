//! The live event stream: one shared poller per router, read by every SSE client.
//!
//! A single producer task waits for the store's change signal while at least one client is
//! connected (nobody connected: no task, no cost for the instrumented program), takes what
//! changed from a [`Subscription`], and then waits `poll_interval` before it looks again, so
//! changes in between are coalesced into one push.
//!
//! Each change gets the next sequence number and is serialized **once**, as a finished SSE
//! frame in a [`Bytes`]: the latest snapshot of each active operation (superseded ones are
//! dropped at once) and a bounded replay buffer of final states. Clients share those frames:
//! a client's queue and hyper's write buffer hold references, not copies. A `watch` channel
//! carries only the newest sequence number; each client, when woken, takes everything above
//! the last number it took (at most `max_client_queue_bytes` at a time, the rest on its next
//! turn). A slow client therefore skips intermediate snapshots but never a final state (unless
//! it fell more than the whole replay buffer behind, which it is told with a `missed` event).
//!
//! A client that stops reading stops taking: once it has been behind the newest event for
//! `stuck_client_timeout`, it is dropped: its connection is closed when the server is ours
//! ([`ConnControl`]), and its stream ends in any case. Drops are counted
//! ([`ServerStats::event_clients_dropped`](super::ServerStats::event_clients_dropped)).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::conn::ConnControl;
use super::limits::{Counters, GaugeGuard};
use crate::model::OperationId;
use crate::store::{Store, Subscription};

/// A comment line that keeps proxies and browsers from timing the stream out.
const KEEP_ALIVE: Bytes = Bytes::from_static(b":\n\n");
/// How often a quiet stream sends [`KEEP_ALIVE`].
const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// Tells `EventSource` to reconnect after one second.
const RETRY: Bytes = Bytes::from_static(b"retry: 1000\n\n");

/// Bounds of the hub (from the server's limits).
#[derive(Clone, Debug)]
pub(crate) struct HubLimits {
    pub(crate) poll_interval: Duration,
    pub(crate) replay_capacity: usize,
    pub(crate) stuck_client_timeout: Duration,
    pub(crate) max_client_queue_bytes: usize,
}

pub(crate) struct Hub {
    store: Store,
    state: Mutex<HubState>,
    /// The newest sequence number; receivers are the connected clients.
    notify: watch::Sender<u64>,
    /// Whether the producer task runs; guarded so that exactly one runs while clients exist.
    producer_running: Mutex<bool>,
    limits: HubLimits,
    shutdown: watch::Sender<bool>,
    clients: Mutex<HashMap<u64, Arc<ClientSlot>>>,
    next_client: AtomicU64,
    counters: Arc<Counters>,
}

struct HubState {
    sub: Subscription,
    seq: u64,
    /// Latest snapshot frame of each active operation.
    snapshots: HashMap<OperationId, Frame>,
    /// Recent final states (and store-level `missed` notices), oldest first.
    finals: VecDeque<Frame>,
    /// Ids of the operations whose final state is in `finals`.
    final_ids: VecDeque<Option<OperationId>>,
    /// Sequence number of the newest entry dropped from `finals` (0: none).
    evicted_upto: u64,
    /// When each recent push happened: (first sequence number of the push, time).
    pushes: VecDeque<(u64, Instant)>,
}

/// One serialized event, shared by every client that sends it.
#[derive(Clone)]
struct Frame {
    seq: u64,
    bytes: Bytes,
}

/// What the hub knows of one connected client.
struct ClientSlot {
    /// The last sequence number the client took.
    hwm: AtomicU64,
    dropped: AtomicBool,
    control: Option<ConnControl>,
}

/// An SSE frame: `event:`, `id:`, one `data:` line per line of `data`, a blank line.
fn frame(event: &str, id: u64, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event.len() + 32);
    let _ = write!(out, "event: {event}\nid: {id}\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

fn gap_frame(seq: u64, after: u64) -> Bytes {
    frame(
        "missed",
        seq,
        &format!(r#"{{"reason":"replay_buffer","after_id":{after}}}"#),
    )
}

impl Hub {
    pub(crate) fn new(store: Store, limits: HubLimits, counters: Arc<Counters>) -> Arc<Self> {
        let limits = HubLimits {
            poll_interval: limits.poll_interval.max(Duration::from_millis(10)),
            replay_capacity: limits.replay_capacity.max(1),
            stuck_client_timeout: limits.stuck_client_timeout.max(Duration::from_millis(10)),
            max_client_queue_bytes: limits.max_client_queue_bytes.max(1),
        };
        Arc::new(Hub {
            state: Mutex::new(HubState {
                sub: store.subscribe(),
                seq: 0,
                snapshots: HashMap::new(),
                finals: VecDeque::new(),
                final_ids: VecDeque::new(),
                evicted_upto: 0,
                pushes: VecDeque::new(),
            }),
            store,
            notify: watch::Sender::new(0),
            producer_running: Mutex::new(false),
            limits,
            shutdown: watch::Sender::new(false),
            clients: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
            counters,
        })
    }

    /// Ends every stream and the producer (used by the server's graceful shutdown).
    pub(crate) fn shut_down(&self) {
        self.shutdown.send_replace(true);
        self.notify.send_modify(|_| {});
    }

    /// Resolves once [`shut_down`](Self::shut_down) was called.
    pub(crate) async fn wait_shut_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }

    /// Takes what changed from the store into the hub and wakes the clients.
    fn poll(&self) {
        let mut st = self.state.lock();
        let st = &mut *st;
        let update = st.sub.poll();
        if update.is_empty() {
            return;
        }
        let first = st.seq + 1;
        for state in &update.changed {
            let recently_finished = st.final_ids.iter().any(|f| *f == Some(state.id));
            if recently_finished {
                continue;
            }
            st.seq += 1;
            let bytes = frame("snapshot", st.seq, &state.to_json());
            st.snapshots.insert(state.id, Frame { seq: st.seq, bytes });
        }
        if update.missed > 0 {
            st.seq += 1;
            let data = format!(r#"{{"reason":"history","count":{}}}"#, update.missed);
            let bytes = frame("missed", st.seq, &data);
            self.push_final(st, Frame { seq: st.seq, bytes }, None);
            // Operations that finished unseen left no final state to remove their snapshot.
            let active = self.store.active_ids();
            st.snapshots.retain(|id, _| active.contains(id));
        }
        for state in update.finished {
            st.seq += 1;
            st.snapshots.remove(&state.id);
            let bytes = frame("finished", st.seq, &state.to_json());
            self.push_final(st, Frame { seq: st.seq, bytes }, Some(state.id));
        }
        if st.seq >= first {
            let now = Instant::now();
            st.pushes.push_back((first, now));
            let horizon = self.limits.stuck_client_timeout;
            while st
                .pushes
                .front()
                .is_some_and(|(_, t)| now.duration_since(*t) > horizon)
                || st.pushes.len() > 4096
            {
                st.pushes.pop_front();
            }
        }
        self.notify.send_replace(st.seq);
    }

    fn push_final(&self, st: &mut HubState, frame: Frame, id: Option<OperationId>) {
        st.finals.push_back(frame);
        st.final_ids.push_back(id);
        while st.finals.len() > self.limits.replay_capacity {
            st.final_ids.pop_front();
            if let Some(old) = st.finals.pop_front() {
                st.evicted_upto = old.seq;
            }
        }
    }

    /// Drops the clients that have been behind the newest event for the stuck timeout.
    fn drop_stuck_clients(&self) {
        let now = Instant::now();
        let timeout = self.limits.stuck_client_timeout;
        let st = self.state.lock();
        let clients = self.clients.lock();
        for slot in clients.values() {
            let hwm = slot.hwm.load(Ordering::Acquire);
            if hwm >= st.seq || slot.dropped.load(Ordering::Acquire) {
                continue;
            }
            // The push that held `hwm + 1`; gone from `pushes` means older than the timeout.
            let behind_since = st
                .pushes
                .iter()
                .rev()
                .find(|(first, _)| *first <= hwm + 1)
                .map(|(_, t)| *t);
            let stuck = behind_since.is_none_or(|t| now.duration_since(t) >= timeout);
            if stuck && !slot.dropped.swap(true, Ordering::AcqRel) {
                Counters::bump(&self.counters.event_clients_dropped);
                if let Some(control) = &slot.control {
                    control.close();
                }
            }
        }
        drop(clients);
        drop(st);
        // A dropped client whose stream is still polled ends at its next turn.
        self.notify.send_modify(|_| {});
    }

    fn has_stuck_candidates(&self) -> bool {
        let seq = self.state.lock().seq;
        self.clients
            .lock()
            .values()
            .any(|s| !s.dropped.load(Ordering::Acquire) && s.hwm.load(Ordering::Acquire) < seq)
    }

    /// Starts the producer task unless it runs. Call after subscribing to `notify`.
    fn ensure_producer(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut running = self.producer_running.lock();
        if !*running {
            *running = true;
            runtime.spawn(producer(self.clone()));
        }
    }

    /// What a new client gets: every current snapshot and, when it resumes after `last`, the
    /// final states after it. Returns the frames in sequence order, the sequence number the
    /// client is now up to date with, and the number of active operations.
    fn collect_initial(&self, last: Option<u64>) -> (Vec<Bytes>, u64, usize) {
        let st = self.state.lock();
        let mut items: Vec<Frame> = st.snapshots.values().cloned().collect();
        // An id from the future comes from another server instance: start afresh.
        if let Some(after) = last.filter(|l| *l <= st.seq) {
            st.finals_after(after, &mut items);
        }
        items.sort_by_key(|f| f.seq);
        let frames = items.into_iter().map(|f| f.bytes).collect();
        (frames, st.seq, st.snapshots.len())
    }

    /// Frames with a sequence number above `after`, in order, up to about `max_bytes` (at
    /// least one); returns them and the sequence number taken up to.
    fn collect_since(&self, after: u64) -> (Vec<Bytes>, u64) {
        let st = self.state.lock();
        let mut items: Vec<Frame> = st
            .snapshots
            .values()
            .filter(|s| s.seq > after)
            .cloned()
            .collect();
        st.finals_after(after, &mut items);
        items.sort_by_key(|f| f.seq);
        let mut taken = Vec::with_capacity(items.len());
        let mut bytes = 0;
        let mut upto = st.seq.max(after);
        for item in items {
            if !taken.is_empty() && bytes + item.bytes.len() > self.limits.max_client_queue_bytes {
                // The rest stays shared in the hub until the client's next turn.
                upto = item.seq - 1;
                break;
            }
            bytes += item.bytes.len();
            taken.push(item.bytes);
        }
        (taken, upto)
    }

    fn register(&self, control: Option<ConnControl>, hwm: u64) -> (u64, Arc<ClientSlot>) {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(ClientSlot {
            hwm: AtomicU64::new(hwm),
            dropped: AtomicBool::new(false),
            control,
        });
        self.clients.lock().insert(id, slot.clone());
        (id, slot)
    }
}

impl HubState {
    fn finals_after(&self, after: u64, items: &mut Vec<Frame>) {
        if after < self.evicted_upto {
            items.push(Frame {
                seq: self.evicted_upto,
                bytes: gap_frame(self.evicted_upto, after),
            });
        }
        let start = self.finals.partition_point(|f| f.seq <= after);
        items.extend(self.finals.range(start..).cloned());
    }
}

async fn producer(hub: Arc<Hub>) {
    let mut shutdown = hub.shutdown.subscribe();
    let check_every = (hub.limits.stuck_client_timeout / 2).max(Duration::from_millis(10));
    loop {
        // Listen first, then check: a change in between wakes the listener.
        let listener = hub.store.listen();
        let pending = hub.state.lock().sub.has_changes();
        if !pending {
            tokio::select! {
                _ = listener => {}
                // Wake now and then to drop stuck clients even when nothing changes.
                _ = tokio::time::sleep(check_every), if hub.has_stuck_candidates() => {}
                _ = shutdown.wait_for(|down| *down) => break,
            }
        }
        {
            let mut running = hub.producer_running.lock();
            if hub.notify.receiver_count() == 0 {
                *running = false;
                return;
            }
        }
        hub.poll();
        hub.drop_stuck_clients();
        // Coalesce: what changes during the interval goes out in the next push.
        tokio::select! {
            _ = tokio::time::sleep(hub.limits.poll_interval) => {}
            _ = shutdown.wait_for(|down| *down) => break,
        }
    }
    *hub.producer_running.lock() = false;
}

/// Removes a client from the hub when its stream is dropped.
struct Registration {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let slot = self.hub.clients.lock().remove(&self.id);
        if let Some(control) = slot.as_ref().and_then(|s| s.control.as_ref()) {
            control.end_streaming();
        }
    }
}

struct Client {
    hub: Arc<Hub>,
    rx: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    slot: Arc<ClientSlot>,
    hwm: u64,
    pending: VecDeque<Bytes>,
    _registration: Registration,
    _stream_slot: GaugeGuard,
}

/// The SSE body of one client; `last` is its `Last-Event-ID`, if it resumes. `stream_slot`
/// counts it against the server's cap on event streams; `control` closes its connection if it
/// gets stuck.
pub(crate) fn client_stream(
    hub: Arc<Hub>,
    last: Option<u64>,
    control: Option<ConnControl>,
    stream_slot: GaugeGuard,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let rx = hub.notify.subscribe();
    let shutdown = hub.shutdown.subscribe();
    hub.ensure_producer();
    // Bring the hub up to date, so the initial batch holds every final state so far.
    hub.poll();
    let (frames, hwm, active) = hub.collect_initial(last);
    let (id, slot) = hub.register(control, hwm);
    let mut pending = VecDeque::with_capacity(frames.len() + 2);
    pending.push_back(RETRY);
    pending.extend(frames);
    pending.push_back(frame(
        "ready",
        hwm,
        &format!(r#"{{"id":{hwm},"active":{active}}}"#),
    ));
    let client = Client {
        _registration: Registration {
            hub: hub.clone(),
            id,
        },
        hub,
        rx,
        shutdown,
        slot,
        hwm,
        pending,
        _stream_slot: stream_slot,
    };
    futures_util::stream::unfold(client, |mut c| async move {
        loop {
            if c.slot.dropped.load(Ordering::Acquire) || *c.shutdown.borrow() {
                return None;
            }
            if let Some(frame) = c.pending.pop_front() {
                return Some((Ok(frame), c));
            }
            tokio::select! {
                changed = c.rx.changed() => if changed.is_err() { return None },
                _ = c.shutdown.wait_for(|down| *down) => return None,
                _ = tokio::time::sleep(KEEP_ALIVE_EVERY) => {
                    c.pending.push_back(KEEP_ALIVE);
                    continue;
                }
            }
            let (frames, hwm) = c.hub.collect_since(c.hwm);
            c.hwm = hwm;
            c.slot.hwm.store(hwm, Ordering::Release);
            c.pending.extend(frames);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    /// A client takes at most `max_client_queue_bytes` per turn (at least one frame) and the
    /// rest on its next turns, in order, nothing skipped.
    #[test]
    fn a_client_takes_a_bounded_batch_per_turn() {
        let (layer, store) = crate::Builder::new()
            .build::<tracing_subscriber::Registry>()
            .expect("valid");
        let limits = HubLimits {
            poll_interval: Duration::from_millis(10),
            replay_capacity: 16,
            stuck_client_timeout: Duration::from_secs(30),
            max_client_queue_bytes: 1,
        };
        let hub = Hub::new(store.clone(), limits, Arc::default());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                tracing::info_span!("job", progress.level = "job").in_scope(|| {});
            }
        });
        hub.poll();
        let mut after = 0;
        let mut seen = Vec::new();
        for _ in 0..5 {
            let (frames, upto) = hub.collect_since(after);
            assert!(frames.len() <= 1, "one frame per turn at this bound");
            seen.extend(frames);
            after = upto;
        }
        assert_eq!(after, 3);
        assert_eq!(seen.len(), 3, "every final state, in order");
        for (i, f) in seen.iter().enumerate() {
            let text = String::from_utf8_lossy(f);
            assert!(
                text.starts_with(&format!("event: finished\nid: {}\n", i + 1)),
                "{text}"
            );
        }
    }

    #[test]
    fn frames_are_sse() {
        assert_eq!(
            &frame("snapshot", 7, r#"{"a":1}"#)[..],
            b"event: snapshot\nid: 7\ndata: {\"a\":1}\n\n"
        );
        // A line break in the data (never in our JSON) cannot end the event early.
        assert_eq!(
            &frame("x", 1, "a\nb\r\nc")[..],
            b"event: x\nid: 1\ndata: a\ndata: b\ndata: c\n\n"
        );
    }
}
