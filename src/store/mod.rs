//! The store: live operations, bounded history, queries and change subscriptions.
//!
//! The layer (the write side) reaches an operation through an `Arc<OperationCell>` kept in the
//! span's extensions and only ever locks that one operation's tree. The global map of active
//! operations is written twice per operation (start and finish), never per span or update.
//! Readers ([`Store`] handles, clones of one `Arc`) take snapshots under the operation's lock
//! and build plain [`ProgressState`] values that they own.

mod clock;
mod history;
mod subscribe;
pub(crate) mod tree;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::model::{OperationId, ProgressState, SCHEMA_VERSION, Status};

pub(crate) use clock::{Clock, TimeFn};
use history::History;
pub use history::HistoryQuery;
pub(crate) use history::Priors;
pub use subscribe::{Subscription, Update};
pub(crate) use tree::{CloseOutcome, NewNode, Tree};

/// Bounds that keep memory flat; set through the [`Builder`](crate::Builder).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) history_limit: usize,
    pub(crate) history_max_age: Duration,
    pub(crate) max_finished_children: usize,
    pub(crate) max_finished_nodes: usize,
    pub(crate) max_depth: u16,
    pub(crate) max_text_len: usize,
    pub(crate) max_metadata_entries: usize,
    /// `k` of stall detection: a node is stalled after `k ×` its usual update interval.
    pub(crate) stall_factor: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            history_limit: 1_000,
            history_max_age: Duration::from_secs(24 * 3600),
            max_finished_children: 1_000,
            max_finished_nodes: 10_000,
            max_depth: 32,
            max_text_len: 64 * 1024,
            max_metadata_entries: 64,
            stall_factor: crate::estimate::DEFAULT_STALL_FACTOR,
        }
    }
}

/// One live operation, shared by the layer (through span extensions) and the store.
pub(crate) struct OperationCell {
    pub(crate) id: OperationId,
    tree: Mutex<Tree>,
    cancel: AtomicBool,
    /// Bumped when something changes after a subscriber looked, so subscribers can tell what
    /// changed without locking.
    version: AtomicU64,
    /// Set by the first change after a subscriber looked; while it is set, writers only read it
    /// (a shared cache line, no contention between threads updating one operation).
    dirty: AtomicBool,
    store: Arc<StoreInner>,
    /// The root's OpenTelemetry span context, kept for heartbeats.
    #[cfg(feature = "otel")]
    pub(crate) otel_root: std::sync::OnceLock<opentelemetry::trace::SpanContext>,
}

impl OperationCell {
    /// Runs `f` on the tree under the operation's lock, then tells subscribers.
    #[inline]
    pub(crate) fn with_tree<R>(&self, f: impl FnOnce(&mut Tree) -> R) -> R {
        let out = f(&mut self.tree.lock());
        self.mark_changed();
        out
    }

    /// Tells subscribers that something changed. Costs one load unless a subscriber has
    /// looked since the last change.
    #[inline]
    pub(crate) fn mark_changed(&self) {
        if !self.dirty.load(Ordering::SeqCst) {
            self.dirty.store(true, Ordering::SeqCst);
            self.version.fetch_add(1, Ordering::SeqCst);
            self.store.notifier.changed();
        }
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub(crate) fn store(&self) -> &Arc<StoreInner> {
        &self.store
    }

    /// A snapshot; also one observation for the estimates of the running nodes.
    fn snapshot(&self) -> ProgressState {
        let mut tree = self.tree.lock();
        let now = self.store.clock.now_us();
        tree.snapshot(self.id, self.is_cancelled(), now)
    }

    /// A snapshot and the version it reflects at least. Clears `dirty` first, so any change
    /// that does not make it into this snapshot bumps the version again.
    fn versioned_snapshot(&self) -> (u64, ProgressState) {
        self.dirty.store(false, Ordering::SeqCst);
        let version = self.version.load(Ordering::SeqCst);
        (version, self.snapshot())
    }
}

impl fmt::Debug for OperationCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperationCell")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct StoreInner {
    pub(crate) limits: Limits,
    pub(crate) clock: Clock,
    /// Durations of completed nodes per kind: the priors of estimates.
    priors: Arc<Priors>,
    active: RwLock<HashMap<OperationId, Arc<OperationCell>>>,
    history: RwLock<History>,
    notifier: subscribe::Notifier,
    /// Set when the OpenTelemetry layer was found to run before ours (feature `otel`).
    pub(crate) otel_misordered: AtomicBool,
}

impl StoreInner {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Self::with_clock(limits, Clock::new())
    }

    /// A store whose time comes from `clock` (see [`Builder::clock`](crate::Builder::clock)).
    pub(crate) fn with_clock(limits: Limits, clock: Clock) -> Arc<Self> {
        Arc::new(StoreInner {
            history: RwLock::new(History::new(limits.history_limit, limits.history_max_age)),
            limits,
            clock,
            priors: Arc::default(),
            active: RwLock::new(HashMap::new()),
            notifier: subscribe::Notifier::default(),
            otel_misordered: AtomicBool::new(false),
        })
    }

    /// Running operations whose root has an OpenTelemetry span, with a fresh snapshot each.
    #[cfg(feature = "otel")]
    pub(crate) fn heartbeat_targets(
        &self,
    ) -> Vec<(opentelemetry::trace::SpanContext, ProgressState)> {
        let cells: Vec<_> = self.active.read().values().cloned().collect();
        cells
            .iter()
            .filter_map(|c| Some((c.otel_root.get()?.clone(), c.snapshot())))
            .collect()
    }

    /// Registers a new operation whose root is `root`.
    pub(crate) fn start_operation(
        self: &Arc<Self>,
        root: NewNode,
        operation_type: Arc<str>,
    ) -> Arc<OperationCell> {
        let id = root.id;
        let cell = Arc::new(OperationCell {
            id,
            tree: Mutex::new(
                Tree::new(root, operation_type, self.limits.clone())
                    .with_priors(self.priors.clone()),
            ),
            cancel: AtomicBool::new(false),
            version: AtomicU64::new(0),
            dirty: AtomicBool::new(false),
            store: self.clone(),
            #[cfg(feature = "otel")]
            otel_root: std::sync::OnceLock::new(),
        });
        self.active.write().insert(id, cell.clone());
        self.notifier.changed();
        cell
    }

    /// Attributes a process resource sample to every running node of every operation.
    #[cfg(feature = "resources")]
    pub(crate) fn record_resources(&self, cpu_percent: f64, rss_bytes: u64) {
        let cells: Vec<_> = self.active.read().values().cloned().collect();
        for cell in cells {
            cell.with_tree(|t| t.record_resources(cpu_percent, rss_bytes));
        }
    }

    /// Moves a closed operation from the active map to history.
    pub(crate) fn finish_operation(&self, cell: &OperationCell) {
        let state = Arc::new(cell.snapshot());
        let now = state.snapshot_at_us;
        self.history.write().push(state, now);
        self.active.write().remove(&cell.id);
        self.notifier.changed();
    }
}

/// A cheap, cloneable, `Send + Sync` handle to the progress store.
///
/// Returned by [`Builder::build`](crate::Builder::build) together with the layer. Every query
/// returns owned or shared snapshots; none of them holds a lock after it returns.
///
/// ```
/// use tracing_subscriber::prelude::*;
/// let (layer, store) = tracing_progress::layer();
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     let span = tracing::info_span!("import", progress.level = "import", progress.total = 2);
///     let _guard = span.enter();
///     assert_eq!(store.active().len(), 1);
/// });
/// assert_eq!(store.history(&Default::default()).len(), 1);
/// ```
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("active", &self.inner.active.read().len())
            .field("history", &self.inner.history.read().len())
            .finish()
    }
}

/// Why [`Store::cancel`] did nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelError {
    /// No operation with this id is running (it may have finished already).
    NotActive(OperationId),
}

impl fmt::Display for CancelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CancelError::NotActive(id) => {
                write!(
                    f,
                    "operation {id} is not active (unknown or already finished)"
                )
            }
        }
    }
}

impl std::error::Error for CancelError {}

/// Sizes of the store, for health checks and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Operations running now.
    pub active: usize,
    /// Finished operations kept in history.
    pub history: usize,
    /// Finished operations dropped from history by the count or age bound.
    pub history_evicted: u64,
    /// Whether the OpenTelemetry layer was found to run before the progress layer, so that
    /// progress attributes cannot reach exported spans (feature `otel`; see the README).
    pub otel_misordered: bool,
}

impl Store {
    pub(crate) fn from_inner(inner: Arc<StoreInner>) -> Self {
        Store { inner }
    }

    /// One operation, active or in history.
    pub fn get(&self, id: OperationId) -> Option<Arc<ProgressState>> {
        let cell = self.inner.active.read().get(&id).cloned();
        match cell {
            Some(cell) => Some(Arc::new(cell.snapshot())),
            None => self.inner.history.read().get(id),
        }
    }

    /// All running operations, oldest first.
    pub fn active(&self) -> Vec<Arc<ProgressState>> {
        let mut cells: Vec<_> = self.inner.active.read().values().cloned().collect();
        cells.sort_by_key(|c| c.id);
        cells.into_iter().map(|c| Arc::new(c.snapshot())).collect()
    }

    /// Ids of the running operations, oldest first (no snapshot taken).
    pub fn active_ids(&self) -> Vec<OperationId> {
        let mut ids: Vec<_> = self.inner.active.read().keys().copied().collect();
        ids.sort();
        ids
    }

    /// Finished operations matching `query`, newest first.
    ///
    /// ```
    /// # fn docs(store: tracing_progress::Store) {
    /// use tracing_progress::{HistoryQuery, Status};
    /// let failed = store.history(&HistoryQuery::new().status(Status::Failed).limit(10));
    /// # }
    /// ```
    pub fn history(&self, query: &HistoryQuery) -> Vec<Arc<ProgressState>> {
        let now = self.inner.clock.now_us();
        self.inner.history.read().query(query, now)
    }

    /// Asks an operation to cancel. Instrumented code sees it through
    /// [`ProgressSpanExt::is_cancelled`](crate::ProgressSpanExt::is_cancelled); nodes that
    /// close afterwards end as [`Status::Cancelled`] (failed ones stay failed).
    pub fn cancel(&self, id: OperationId) -> Result<(), CancelError> {
        let cell = self.inner.active.read().get(&id).cloned();
        match cell {
            Some(cell) => {
                cell.with_tree(|_| cell.cancel.store(true, Ordering::Relaxed));
                Ok(())
            }
            None => Err(CancelError::NotActive(id)),
        }
    }

    /// Subscribes to coalesced change notifications; see [`Subscription`].
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(self.inner.clone())
    }

    /// Sizes of the store.
    pub fn stats(&self) -> StoreStats {
        let history = self.inner.history.read();
        StoreStats {
            active: self.inner.active.read().len(),
            history: history.len(),
            history_evicted: history.evicted(),
            otel_misordered: self.inner.otel_misordered.load(Ordering::Relaxed),
        }
    }

    /// One operation as JSON, or `None` if unknown.
    pub fn export_json(&self, id: OperationId) -> Option<String> {
        self.get(id).map(|s| s.to_json())
    }

    /// Every active operation and the whole history as one JSON document:
    /// `{"schema_version":1,"active":[...],"history":[...]}` (history newest first).
    pub fn export_all_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct All {
            schema_version: u32,
            active: Vec<Arc<ProgressState>>,
            history: Vec<Arc<ProgressState>>,
        }
        let all = All {
            schema_version: SCHEMA_VERSION,
            active: self.active(),
            history: self.history(&HistoryQuery::new()),
        };
        serde_json::to_string(&all).unwrap_or_default()
    }

    /// Writes the history matching `query` as JSON lines, oldest first; returns the line count.
    pub fn write_history_jsonl(
        &self,
        query: &HistoryQuery,
        mut out: impl Write,
    ) -> io::Result<usize> {
        let mut states = self.history(query);
        states.reverse();
        for state in &states {
            serde_json::to_writer(&mut out, &**state)?;
            out.write_all(b"\n")?;
        }
        Ok(states.len())
    }

    /// Current wall-clock time as the store sees it (µs since the Unix epoch).
    pub fn now_us(&self) -> u64 {
        self.inner.clock.now_us()
    }
}

pub(crate) fn system_time_to_us(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Status check used by the history filter and the layer.
pub(crate) fn status_matches(filter: Option<Status>, status: Status) -> bool {
    filter.is_none_or(|f| f == status)
}
