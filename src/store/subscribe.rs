//! Coalesced change notifications.
//!
//! Writers never queue anything for subscribers: each operation carries a version counter,
//! and a writer only wakes waiting subscribers through one [`event_listener::Event`] (an
//! atomic load when nobody waits) that blocking subscribers and async tasks (the HTTP
//! server's event stream) both wait on. A
//! subscriber compares versions and takes fresh snapshots itself, so a slow subscriber skips
//! intermediate states but always sees the latest one, and finished operations arrive from
//! history in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::{Event, EventListener, Listener};

use super::StoreInner;
use crate::model::{OperationId, ProgressState};

/// The store's one change signal.
#[derive(Default)]
pub(crate) struct Notifier {
    event: Event,
}

impl Notifier {
    /// Called by writers after a change. Cheap when nobody waits.
    #[inline]
    pub(crate) fn changed(&self) {
        self.event.notify(usize::MAX);
    }

    /// A listener woken by the next change; create it *before* checking for changes.
    pub(crate) fn listen(&self) -> EventListener {
        self.event.listen()
    }
}

/// What changed since the previous call of a [`Subscription`].
///
/// An operation is never in `changed` once it was in `finished`, neither in the same value nor
/// in a later one.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Changes {
    /// Latest snapshots of active operations that started or changed.
    pub changed: Vec<Arc<ProgressState>>,
    /// Final states of operations that finished, oldest first.
    pub finished: Vec<Arc<ProgressState>>,
    /// Finished operations that left history before this subscriber looked (history bound).
    pub missed: u64,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.finished.is_empty() && self.missed == 0
    }
}

/// A subscriber's view of the store; created by [`Store::subscribe`](crate::Store::subscribe).
///
/// ```
/// use std::time::Duration;
/// use tracing_subscriber::prelude::*;
/// let (layer, store) = tracing_progress::layer();
/// let mut sub = store.subscribe();
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     tracing::info_span!("job", progress.level = "job").in_scope(|| {});
/// });
/// let update = sub.wait(Duration::from_secs(1));
/// assert_eq!(update.finished.len(), 1);
/// ```
pub struct Subscription {
    inner: Arc<StoreInner>,
    seen: HashMap<OperationId, u64>,
    history_seq: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("seen", &self.seen.len())
            .field("history_seq", &self.history_seq)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(inner: Arc<StoreInner>) -> Self {
        let history_seq = inner.history.read().last_seq();
        Subscription {
            inner,
            seen: HashMap::new(),
            history_seq,
        }
    }

    /// Returns what changed since the last call, without waiting (possibly nothing).
    pub fn poll(&mut self) -> Changes {
        let mut update = Changes::default();
        let cells: Vec<_> = self.inner.active.read().values().cloned().collect();
        self.seen.retain(|id, _| cells.iter().any(|c| c.id == *id));
        for cell in cells {
            let version = cell.version();
            if self.seen.get(&cell.id) != Some(&version) {
                let (version, state) = cell.versioned_snapshot();
                self.seen.insert(cell.id, version);
                update.changed.push(state);
            }
        }
        update.changed.sort_by_key(|s| s.id);
        let (finished, missed, last) = self.inner.history.read().since_seq(self.history_seq);
        // The store moves an operation from active to history under both locks, so a later
        // poll never finds it active again; within this poll its final state wins.
        if !finished.is_empty() {
            update
                .changed
                .retain(|c| !finished.iter().any(|f| f.id == c.id));
        }
        self.history_seq = last;
        update.finished = finished;
        update.missed = missed;
        update
    }

    /// Waits up to `timeout` for a change and returns it; an empty value means none came.
    pub fn wait(&mut self, timeout: Duration) -> Changes {
        let deadline = Instant::now() + timeout;
        loop {
            let update = self.poll();
            if !update.is_empty() {
                return update;
            }
            // Listen first, then re-check: a change between the two wakes the listener.
            let listener = self.inner.notifier.listen();
            if self.has_changes() {
                continue;
            }
            if listener.wait_deadline(deadline).is_none() {
                return self.poll();
            }
        }
    }

    /// Whether something changed since the last [`poll`](Self::poll).
    pub(crate) fn has_changes(&self) -> bool {
        let active = self.inner.active.read();
        active.len() != self.seen.len()
            || active
                .values()
                .any(|c| self.seen.get(&c.id) != Some(&c.version()))
            || self.inner.history.read().last_seq() != self.history_seq
    }
}
