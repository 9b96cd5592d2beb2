//! One live operation: its tree behind its own lock, and the small [`OpSignal`] (cancel flag,
//! change version) that progress handles share without keeping the tree alive.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, MutexGuard};

use crate::model::{OperationId, ProgressState};
use crate::store::Clock;
use crate::store::StoreInner;
use crate::store::tree::{Tree, TreeRead};

/// An operation's cancel flag and change signal: what a progress handle needs besides the
/// node's counters. Separate from the tree so a handle that outlives the operation keeps only
/// this (a few words) alive.
pub(crate) struct OpSignal {
    cancel: AtomicBool,
    /// Set by the first change after a subscriber looked; while it is set, writers only read it
    /// (a shared cache line, no contention between threads updating one operation).
    dirty: AtomicBool,
    /// Bumped when something changes after a subscriber looked, so subscribers can tell what
    /// changed without locking.
    version: AtomicU64,
    /// Weak: a handle kept after its store is gone keeps none of it alive.
    store: Weak<StoreInner>,
}

impl OpSignal {
    /// Tells subscribers that something changed. Costs one load unless a subscriber has
    /// looked since the last change.
    #[inline]
    pub(crate) fn mark_changed(&self) {
        if !self.dirty.load(Ordering::SeqCst) {
            self.changed_slow();
        }
    }

    #[cold]
    fn changed_slow(&self) {
        self.dirty.store(true, Ordering::SeqCst);
        self.version.fetch_add(1, Ordering::SeqCst);
        if let Some(store) = self.store.upgrade() {
            store.notifier.changed();
        }
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Estimate ticks without a snapshot after which an operation lets go of its last snapshot.
const KEEP_SNAPSHOT_TICKS: u32 = 8;

/// One live operation, shared by the layer (through node handles) and the store.
pub(crate) struct OperationCell {
    pub(crate) id: OperationId,
    tree: Mutex<Tree>,
    signal: Arc<OpSignal>,
    store: Arc<StoreInner>,
    /// The last snapshot handed out: once every reader has dropped it, the next snapshot
    /// refreshes it in place instead of building (and the reader dropping) a new tree. Its
    /// own lock, never held while waiting for the tree's.
    last: Mutex<Kept>,
    /// Estimate ticks since the last snapshot; past [`KEEP_SNAPSHOT_TICKS`] `last` is
    /// dropped, so an operation nobody watches does not keep a copy of its tree.
    idle_ticks: AtomicU32,
}

impl OperationCell {
    pub(crate) fn new(id: OperationId, tree: Tree, store: Arc<StoreInner>) -> Self {
        OperationCell {
            id,
            tree: Mutex::new(tree),
            signal: Arc::new(OpSignal {
                cancel: AtomicBool::new(false),
                dirty: AtomicBool::new(false),
                version: AtomicU64::new(0),
                store: Arc::downgrade(&store),
            }),
            store,
            last: Mutex::new(Kept::default()),
            idle_ticks: AtomicU32::new(0),
        }
    }

    /// Runs `f` on the tree under the operation's lock, then tells subscribers.
    #[inline]
    pub(crate) fn with_tree<R>(&self, f: impl FnOnce(&mut Tree) -> R) -> R {
        let mut tree = self.tree.lock();
        let out = f(&mut tree);
        tree.writes = tree.writes.wrapping_add(1);
        drop(tree);
        self.mark_changed();
        out
    }

    /// See [`OpSignal::mark_changed`].
    #[inline]
    pub(crate) fn mark_changed(&self) {
        self.signal.mark_changed();
    }

    pub(crate) fn signal(&self) -> &Arc<OpSignal> {
        &self.signal
    }

    /// The operation's type (under the tree's lock, briefly).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn operation_type(&self) -> Arc<str> {
        self.tree.lock().operation_type.clone()
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Asks the operation to cancel.
    pub(crate) fn request_cancel(&self) {
        self.with_tree(|_| self.signal.cancel.store(true, Ordering::Relaxed));
    }

    pub(crate) fn store(&self) -> &Arc<StoreInner> {
        &self.store
    }

    pub(crate) fn version(&self) -> u64 {
        self.signal.version.load(Ordering::SeqCst)
    }

    /// A snapshot. Read-only: looking never changes what the next look sees. Refreshes the
    /// last one in place when no reader holds it any more (see `tree::snapshot`).
    pub(crate) fn snapshot(&self) -> Arc<ProgressState> {
        let state = self.take_snapshot();
        let replaced = self.last.lock().keep(state.clone());
        // (A kept snapshot nobody else holds is dropped here, outside every lock.)
        drop(replaced);
        state
    }

    /// The snapshot of a closed operation, for history: nothing kept for a next one.
    pub(crate) fn final_snapshot(&self) -> Arc<ProgressState> {
        let state = self.take_snapshot();
        let kept = std::mem::take(&mut *self.last.lock());
        drop(kept);
        state
    }

    fn take_snapshot(&self) -> Arc<ProgressState> {
        self.idle_ticks.store(0, Ordering::Relaxed);
        let mut last = self.last.lock().take_unshared();
        let clock = &self.store().clock;
        let mut read = Locked {
            tree: self.tree.lock(),
            clock,
        };
        let now = clock.now_us();
        let cancelled = self.is_cancelled();
        let refreshed = match last.as_mut().and_then(Arc::get_mut) {
            Some(state) => {
                Tree::refresh_from(&mut read, state, self.id, cancelled, now);
                true
            }
            None => false,
        };
        let state = match last {
            Some(last) if refreshed => last,
            _ => Arc::new(Tree::snapshot_from(&mut read, self.id, cancelled, now)),
        };
        // Handed to a waiting writer: a reader looping snapshots would otherwise take the
        // lock straight back, again and again, and starve the writers.
        MutexGuard::unlock_fair(read.tree);
        state
    }

    /// A snapshot and the version it reflects at least. Clears `dirty` first, so any change
    /// that does not make it into this snapshot bumps the version again.
    pub(crate) fn versioned_snapshot(&self) -> (u64, Arc<ProgressState>) {
        self.signal.dirty.store(false, Ordering::SeqCst);
        let version = self.version();
        (version, self.snapshot())
    }

    /// One estimate tick of every running node (see `store::ticker`).
    pub(crate) fn tick_estimates(&self) {
        if self.idle_ticks.fetch_add(1, Ordering::Relaxed) >= KEEP_SNAPSHOT_TICKS {
            // Dropped outside the tree's lock: writers never wait for it.
            let kept = std::mem::take(&mut *self.last.lock());
            drop(kept);
        }
        let now = self.store().clock.now_us();
        let changed = self.tree.lock().tick_estimates(now);
        if changed {
            self.mark_changed();
        }
    }

    /// Attributes a process resource sample to every running node (feature `resources`).
    #[cfg(feature = "resources")]
    pub(crate) fn record_resources(&self, cpu_percent: f64, rss_bytes: u64) {
        self.with_tree(|t| t.record_resources(cpu_percent, rss_bytes));
    }
}

/// The last snapshots an operation handed out, to refresh in place the next time (see
/// `tree::snapshot`). Two: a reader that holds one snapshot while it takes the next (a
/// dashboard calling `Store::active` and then `Store::get`, or two watchers, say the HTTP
/// stream and a terminal view) still finds one nobody holds. With one, every other
/// snapshot of such a reader was built anew: ~3× the work under the operation's lock.
#[derive(Default)]
struct Kept([Option<Arc<ProgressState>>; 2]);

impl Kept {
    /// A kept snapshot no reader holds any more, taken out to be refreshed.
    fn take_unshared(&mut self) -> Option<Arc<ProgressState>> {
        let at = self
            .0
            .iter_mut()
            .position(|s| s.as_mut().is_some_and(|a| Arc::get_mut(a).is_some()))?;
        self.0[at].take()
    }

    /// Keeps `state` in place of an empty slot, else of one a reader still holds (ours is
    /// only a reference then), else of the older one; returns what it replaced.
    fn keep(&mut self, state: Arc<ProgressState>) -> Option<Arc<ProgressState>> {
        let at = self
            .0
            .iter()
            .position(Option::is_none)
            .or_else(|| {
                self.0
                    .iter()
                    .position(|s| s.as_ref().is_some_and(|a| Arc::strong_count(a) > 1))
            })
            .unwrap_or_else(|| {
                let [a, b] = &self.0;
                let at =
                    |s: &Option<Arc<ProgressState>>| s.as_ref().map_or(0, |s| s.snapshot_at_us);
                usize::from(at(b) < at(a))
            });
        self.0[at].replace(state)
    }
}

/// A snapshot's view of the tree through the operation's lock: every `CHUNK` nodes it lets
/// waiting writers in (`MutexGuard::bump`, which hands the lock over fairly and costs little
/// when nobody waits).
struct Locked<'a> {
    tree: MutexGuard<'a, Tree>,
    clock: &'a Clock,
}

impl TreeRead for Locked<'_> {
    fn tree(&self) -> &Tree {
        &self.tree
    }

    fn pause(&mut self) -> Option<u64> {
        let writes = self.tree.writes;
        MutexGuard::bump(&mut self.tree);
        (self.tree.writes != writes).then(|| self.clock.now_us())
    }

    fn now_us(&self) -> Option<u64> {
        Some(self.clock.now_us())
    }
}

impl fmt::Debug for OperationCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationCell")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
