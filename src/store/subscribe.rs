//! Coalesced change notifications.
//!
//! Writers never queue anything for subscribers: each operation carries a version counter,
//! and a writer only wakes sleeping subscribers (one atomic load when nobody sleeps). A
//! subscriber compares versions and takes fresh snapshots itself, so a slow subscriber skips
//! intermediate states but always sees the latest one, and finished operations arrive from
//! history in order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::StoreInner;
use crate::model::{OperationId, ProgressState};

#[derive(Default)]
pub(crate) struct Notifier {
    waiters: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Notifier {
    /// Called by writers after every change. Cheap when nobody waits.
    #[inline]
    pub(crate) fn changed(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.wake();
        }
    }

    #[cold]
    fn wake(&self) {
        let _guard = self.lock.lock();
        self.cv.notify_all();
    }
}

/// What changed since the previous call of a [`Subscription`].
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Update {
    /// Latest snapshots of active operations that started or changed.
    pub changed: Vec<Arc<ProgressState>>,
    /// Final states of operations that finished, oldest first.
    pub finished: Vec<Arc<ProgressState>>,
    /// Finished operations that left history before this subscriber looked (history bound).
    pub missed: u64,
}

impl Update {
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
    pub fn poll(&mut self) -> Update {
        let mut update = Update::default();
        let cells: Vec<_> = self.inner.active.read().values().cloned().collect();
        self.seen.retain(|id, _| cells.iter().any(|c| c.id == *id));
        for cell in cells {
            let version = cell.version.load(Ordering::SeqCst);
            if self.seen.get(&cell.id) != Some(&version) {
                let (version, state) = cell.versioned_snapshot();
                self.seen.insert(cell.id, version);
                update.changed.push(Arc::new(state));
            }
        }
        update.changed.sort_by_key(|s| s.id);
        let (finished, missed, last) = self.inner.history.read().since_seq(self.history_seq);
        self.history_seq = last;
        update.finished = finished;
        update.missed = missed;
        update
    }

    /// Waits up to `timeout` for a change and returns it; an empty update means none came.
    pub fn wait(&mut self, timeout: Duration) -> Update {
        let deadline = Instant::now() + timeout;
        loop {
            let update = self.poll();
            if !update.is_empty() {
                return update;
            }
            let notifier = &self.inner.notifier;
            let mut guard = notifier.lock.lock();
            notifier.waiters.fetch_add(1, Ordering::SeqCst);
            // Re-check after announcing ourselves: a writer that changed something before
            // seeing the waiter count would not wake us.
            let dirty = self.has_changes();
            let timed_out = !dirty && notifier.cv.wait_until(&mut guard, deadline).timed_out();
            notifier.waiters.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            if timed_out {
                return self.poll();
            }
        }
    }

    fn has_changes(&self) -> bool {
        let active = self.inner.active.read();
        active.len() != self.seen.len()
            || active
                .values()
                .any(|c| self.seen.get(&c.id) != Some(&c.version.load(Ordering::SeqCst)))
            || self.inner.history.read().last_seq() != self.history_seq
    }
}
