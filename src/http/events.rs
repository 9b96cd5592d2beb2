//! The live event stream: one shared poller per router, read by every SSE client.
//!
//! A single producer task waits for the store's change signal while at least one client is
//! connected (nobody connected: no task, no cost for the instrumented program), takes what
//! changed from a [`Subscription`], and then waits `poll_interval` before it looks again, so
//! changes in between are coalesced into one push.
//! Each change gets the next sequence number and lands in the hub: the latest snapshot of each
//! active operation (superseded ones are dropped at once) and a bounded replay buffer of final
//! states. A `watch` channel carries only the newest sequence number; each client, when woken,
//! takes everything above the last number it sent. A slow client therefore skips intermediate
//! snapshots but never a final state (unless it fell more than the whole replay buffer behind,
//! which it is told with a `missed` event), and memory does not depend on the number of clients.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::Stream;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::model::{OperationId, ProgressState};
use crate::store::{Store, Subscription};

pub(crate) struct Hub {
    store: Store,
    state: Mutex<HubState>,
    /// The newest sequence number; receivers are the connected clients.
    notify: watch::Sender<u64>,
    /// Whether the producer task runs; guarded so that exactly one runs while clients exist.
    producer_running: Mutex<bool>,
    poll_interval: Duration,
    shutdown: watch::Sender<bool>,
}

struct HubState {
    sub: Subscription,
    seq: u64,
    /// Latest snapshot of each active operation.
    snapshots: HashMap<OperationId, Snapshot>,
    /// Recent final states (and store-level `missed` notices), oldest first.
    finals: VecDeque<Arc<FinalEntry>>,
    capacity: usize,
    /// Sequence number of the newest entry dropped from `finals` (0: none).
    evicted_upto: u64,
}

struct Snapshot {
    seq: u64,
    json: Arc<str>,
}

struct FinalEntry {
    seq: u64,
    payload: FinalPayload,
}

enum FinalPayload {
    Finished {
        state: Arc<ProgressState>,
        json: OnceLock<Arc<str>>,
    },
    /// The store's history dropped this many finished operations before we saw them.
    Missed { count: u64 },
}

enum Item {
    Snapshot {
        seq: u64,
        json: Arc<str>,
    },
    Final(Arc<FinalEntry>),
    /// Final states after `after` fell out of the replay buffer.
    Gap {
        seq: u64,
        after: u64,
    },
}

impl Item {
    fn seq(&self) -> u64 {
        match self {
            Item::Snapshot { seq, .. } | Item::Gap { seq, .. } => *seq,
            Item::Final(f) => f.seq,
        }
    }

    fn into_event(self) -> Event {
        match self {
            Item::Snapshot { seq, json } => Event::default()
                .event("snapshot")
                .id(seq.to_string())
                .data(&*json),
            Item::Final(f) => match &f.payload {
                FinalPayload::Finished { state, json } => {
                    let json = json.get_or_init(|| Arc::from(state.to_json()));
                    Event::default()
                        .event("finished")
                        .id(f.seq.to_string())
                        .data(&**json)
                }
                FinalPayload::Missed { count } => Event::default()
                    .event("missed")
                    .id(f.seq.to_string())
                    .data(format!(r#"{{"reason":"history","count":{count}}}"#)),
            },
            Item::Gap { seq, after } => {
                Event::default()
                    .event("missed")
                    .id(seq.to_string())
                    .data(format!(
                        r#"{{"reason":"replay_buffer","after_id":{after}}}"#
                    ))
            }
        }
    }
}

impl Hub {
    pub(crate) fn new(store: Store, poll_interval: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Hub {
            state: Mutex::new(HubState {
                sub: store.subscribe(),
                seq: 0,
                snapshots: HashMap::new(),
                finals: VecDeque::new(),
                capacity: capacity.max(1),
                evicted_upto: 0,
            }),
            store,
            notify: watch::Sender::new(0),
            producer_running: Mutex::new(false),
            poll_interval: poll_interval.max(Duration::from_millis(10)),
            shutdown: watch::Sender::new(false),
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
        let recently_finished = |st: &HubState, id: OperationId| {
            update.finished.iter().any(|s| s.id == id)
                || st.finals.iter().any(|f| match &f.payload {
                    FinalPayload::Finished { state, .. } => state.id == id,
                    FinalPayload::Missed { .. } => false,
                })
        };
        for state in &update.changed {
            if recently_finished(st, state.id) {
                continue;
            }
            st.seq += 1;
            let snapshot = Snapshot {
                seq: st.seq,
                json: Arc::from(state.to_json()),
            };
            st.snapshots.insert(state.id, snapshot);
        }
        if update.missed > 0 {
            st.seq += 1;
            let entry = FinalEntry {
                seq: st.seq,
                payload: FinalPayload::Missed {
                    count: update.missed,
                },
            };
            st.push_final(entry);
            // Operations that finished unseen left no final state to remove their snapshot.
            let active = self.store.active_ids();
            st.snapshots.retain(|id, _| active.contains(id));
        }
        for state in update.finished {
            st.seq += 1;
            st.snapshots.remove(&state.id);
            let entry = FinalEntry {
                seq: st.seq,
                payload: FinalPayload::Finished {
                    state,
                    json: OnceLock::new(),
                },
            };
            st.push_final(entry);
        }
        self.notify.send_replace(st.seq);
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
    /// final states after it. Returns the items in sequence order and the sequence number the
    /// client is now up to date with.
    fn collect_initial(&self, last: Option<u64>) -> (Vec<Item>, u64, usize) {
        let st = self.state.lock();
        let mut items: Vec<Item> = st
            .snapshots
            .values()
            .map(|s| Item::Snapshot {
                seq: s.seq,
                json: s.json.clone(),
            })
            .collect();
        // An id from the future comes from another server instance: start afresh.
        if let Some(after) = last.filter(|l| *l <= st.seq) {
            st.finals_after(after, &mut items);
        }
        items.sort_by_key(Item::seq);
        (items, st.seq, st.snapshots.len())
    }

    /// Everything with a sequence number above `after`.
    fn collect_since(&self, after: u64) -> (Vec<Item>, u64) {
        let st = self.state.lock();
        let mut items: Vec<Item> = st
            .snapshots
            .values()
            .filter(|s| s.seq > after)
            .map(|s| Item::Snapshot {
                seq: s.seq,
                json: s.json.clone(),
            })
            .collect();
        st.finals_after(after, &mut items);
        items.sort_by_key(Item::seq);
        (items, st.seq.max(after))
    }
}

impl HubState {
    fn push_final(&mut self, entry: FinalEntry) {
        self.finals.push_back(Arc::new(entry));
        while self.finals.len() > self.capacity {
            if let Some(old) = self.finals.pop_front() {
                self.evicted_upto = old.seq;
            }
        }
    }

    fn finals_after(&self, after: u64, items: &mut Vec<Item>) {
        if after < self.evicted_upto {
            items.push(Item::Gap {
                seq: self.evicted_upto,
                after,
            });
        }
        let start = self.finals.partition_point(|f| f.seq <= after);
        items.extend(self.finals.range(start..).cloned().map(Item::Final));
    }
}

async fn producer(hub: Arc<Hub>) {
    let mut shutdown = hub.shutdown.subscribe();
    loop {
        // Listen first, then check: a change in between wakes the listener.
        let listener = hub.store.listen();
        let pending = hub.state.lock().sub.has_changes();
        if !pending {
            tokio::select! {
                _ = listener => {}
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
        // Coalesce: what changes during the interval goes out in the next push.
        tokio::select! {
            _ = tokio::time::sleep(hub.poll_interval) => {}
            _ = shutdown.wait_for(|down| *down) => break,
        }
    }
    *hub.producer_running.lock() = false;
}

/// The SSE stream of one client; `last` is its `Last-Event-ID`, if it resumes.
pub(crate) fn client_stream(
    hub: Arc<Hub>,
    last: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let rx = hub.notify.subscribe();
    let shutdown = hub.shutdown.subscribe();
    hub.ensure_producer();
    // Bring the hub up to date, so the initial batch holds every final state so far.
    hub.poll();
    let (items, hwm, active) = hub.collect_initial(last);
    let mut pending = VecDeque::with_capacity(items.len() + 2);
    pending.push_back(Event::default().retry(Duration::from_secs(1)));
    pending.extend(items.into_iter().map(Item::into_event));
    pending.push_back(
        Event::default()
            .event("ready")
            .id(hwm.to_string())
            .data(format!(r#"{{"id":{hwm},"active":{active}}}"#)),
    );
    let client = Client {
        hub,
        rx,
        shutdown,
        hwm,
        pending,
    };
    futures_util::stream::unfold(client, |mut c| async move {
        loop {
            if let Some(event) = c.pending.pop_front() {
                return Some((Ok(event), c));
            }
            if *c.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                changed = c.rx.changed() => if changed.is_err() { return None },
                _ = c.shutdown.wait_for(|down| *down) => return None,
            }
            let (items, hwm) = c.hub.collect_since(c.hwm);
            c.hwm = hwm;
            c.pending.extend(items.into_iter().map(Item::into_event));
        }
    })
}

struct Client {
    hub: Arc<Hub>,
    rx: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    hwm: u64,
    pending: VecDeque<Event>,
}
