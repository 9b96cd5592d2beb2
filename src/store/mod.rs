//! The store: live operations, bounded history, queries and change subscriptions.
//!
//! The layer (the write side) reaches its nodes through [`NodeHandle`]s kept in its per-span
//! side table and only ever locks the one operation a node belongs to. The global map of
//! active operations is written twice per operation (start and finish), never per span or
//! update. Readers ([`Store`] handles, clones of one `Arc`) take read-only snapshots under the
//! operation's lock and build plain [`ProgressState`] values that they own.
//!
//! * [`node`]: the handle the layer holds, and what a new node starts with;
//! * [`counters`]: a node's lock-free counters;
//! * [`operation`]: one live operation (tree, cancel flag, change version);
//! * [`tree`]: the arena of one operation, its folding and its snapshots;
//! * [`history`]: finished operations; [`filter`]: metadata filters of queries;
//! * [`subscribe`]: change notifications;
//! * [`ticker`]: the background tick that advances estimates, so readers never write.

mod clock;
mod counters;
mod filter;
pub(crate) mod graft;
mod handle;
mod history;
pub(crate) mod node;
mod operation;
mod subscribe;
mod ticker;
mod tree;
mod update;

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};

use crate::estimate::Priors;
use crate::model::{OperationId, OperationRef, ProgressState, RunId, SCHEMA_VERSION, Status};

pub(crate) use clock::{Clock, TimeFn};
pub use filter::MetaFilter;
pub use handle::ProgressHandle;
use history::History;
pub use history::HistoryQuery;
pub(crate) use node::{Callsite, CloseInfo, NewNode, NodeAt, NodeHandle, NodeKey};
use operation::OperationCell;
pub use subscribe::{Changes, Subscription};
pub(crate) use ticker::spawn_ticker;
pub(crate) use tree::PlanUpdate;
use tree::Tree;
pub(crate) use tree::recent::{RecentRecord, Slot, TextBuf};
pub(crate) use update::NodeUpdate;

/// Bounds that keep memory flat; set through the [`Builder`](crate::Builder).
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) history_limit: usize,
    pub(crate) history_max_age: Duration,
    /// Bound on the summed [`history::estimated_bytes`] of the finished operations kept.
    pub(crate) history_max_bytes: usize,
    pub(crate) max_finished_children: usize,
    pub(crate) max_finished_nodes: usize,
    pub(crate) max_depth: u16,
    pub(crate) max_text_len: usize,
    pub(crate) max_metadata_entries: usize,
    /// `k` of stall detection: a node is stalled after `k ×` its usual update interval.
    pub(crate) stall_factor: f64,
    /// Recent events kept per tracked node (0: none), their byte cap, and the least severe
    /// level kept.
    pub(crate) recent_events: usize,
    pub(crate) recent_event_bytes: usize,
    pub(crate) recent_event_level: tracing_core::Level,
    /// Planned children kept as pending nodes per parent (more are counted only).
    pub(crate) max_planned_children: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            history_limit: 1_000,
            history_max_age: Duration::from_secs(24 * 3600),
            history_max_bytes: DEFAULT_HISTORY_MAX_BYTES,
            max_finished_children: 1_000,
            max_finished_nodes: 10_000,
            max_depth: 32,
            max_text_len: 64 * 1024,
            max_metadata_entries: 64,
            stall_factor: crate::estimate::DEFAULT_STALL_FACTOR,
            recent_events: DEFAULT_RECENT_EVENTS,
            recent_event_bytes: DEFAULT_RECENT_EVENT_BYTES,
            recent_event_level: tracing_core::Level::INFO,
            max_planned_children: DEFAULT_MAX_PLANNED_CHILDREN,
        }
    }
}

/// Planned children kept as nodes per parent by default: a plan's nodes cost about as much
/// as live spans, and a thousand pending rows is more than any view shows.
pub(crate) const DEFAULT_MAX_PLANNED_CHILDREN: usize = 1_000;

/// Recent events kept per node by default, and their byte cap (see `benches/recent_events.rs`).
pub(crate) const DEFAULT_RECENT_EVENTS: usize = 16;
pub(crate) const DEFAULT_RECENT_EVENT_BYTES: usize = 8 * 1024;

/// Default bound on the estimated bytes of history: 64 MiB. With the other defaults a store
/// stays under ~100 MB of RSS whatever the operations look like (measured in
/// `tests/hardening.rs`); a running operation is bounded separately by `max_finished_nodes`.
pub(crate) const DEFAULT_HISTORY_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The state behind every [`Store`] handle and the layer.
pub(crate) struct StoreInner {
    pub(crate) limits: Limits,
    pub(crate) clock: Clock,
    /// Durations of completed nodes per kind: the priors of estimates.
    priors: Arc<Priors>,
    active: RwLock<HashMap<OperationId, Arc<OperationCell>>>,
    history: RwLock<History>,
    notifier: subscribe::Notifier,
    /// Problems with how the layer was set up, found at run time (each reported once).
    warnings: Mutex<Vec<SetupWarning>>,
    /// Finished operations kept outside memory (a history file), installed once at build.
    history_source: OnceLock<Arc<dyn HistorySource>>,
    /// Figures in Prometheus text format (the metrics exporter), installed once at build.
    metrics_text: OnceLock<Arc<dyn MetricsText>>,
}

/// Renders the store's figures in the Prometheus text format (e.g. the metrics exporter, for
/// the HTTP server's `/metrics`). The store knows only this trait.
pub(crate) trait MetricsText: Send + Sync + 'static {
    /// The whole exposition, ready to serve.
    fn render(&self) -> String;
}

/// Finished operations kept outside the store (e.g. a history file written by an exporter),
/// merged into [`Store::history`]. The store knows only this trait. States of this store's
/// own run have `run: None`; others carry their run.
pub(crate) trait HistorySource: Send + Sync + 'static {
    /// Operations matching `query` (its limit included), newest first by completion time.
    fn query(&self, query: &HistoryQuery) -> Vec<Arc<ProgressState>>;
    /// Up to `n` operations matching `query` (its limit ignored), newest or oldest first,
    /// strictly after `after` in that order: one page of a bounded read of everything. Also
    /// where the next page starts; `None` at the end.
    fn page(
        &self,
        query: &HistoryQuery,
        newest_first: bool,
        after: Option<PageKey>,
        n: usize,
    ) -> Page<Arc<ProgressState>>;
    /// One operation (`run: None`: this store's run).
    fn get(&self, r: OperationRef) -> Option<Arc<ProgressState>>;
    /// This store's run.
    fn run(&self) -> RunId;
    /// Counters for [`StoreStats`].
    fn stats(&self) -> SourceStats;
    /// Waits until everything handed to the source so far is stored or failed; false on timeout.
    fn flush(&self, timeout: Duration) -> bool;
}

/// Position in the order of a history source's pages: (finished at µs, run, id).
pub(crate) type PageKey = (u64, u64, u64);

/// One page of a history source: its rows with their keys, and where the next page starts
/// (`None`: this was the last).
pub(crate) type Page<T> = (Vec<(PageKey, T)>, Option<PageKey>);

/// Operations a page of a bounded history read holds.
const PAGE: usize = 256;

/// Counters of a [`HistorySource`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SourceStats {
    pub(crate) written: u64,
    pub(crate) dropped: u64,
    pub(crate) errors: u64,
}

impl StoreInner {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        Self::with_clock(limits, Clock::new())
    }

    /// A store whose time comes from `clock` (see [`Builder::clock`](crate::Builder::clock)).
    pub(crate) fn with_clock(limits: Limits, clock: Clock) -> Arc<Self> {
        Arc::new(StoreInner {
            history: RwLock::new(History::new(
                limits.history_limit,
                limits.history_max_age,
                limits.history_max_bytes,
            )),
            limits,
            clock,
            priors: Arc::default(),
            active: RwLock::new(HashMap::new()),
            notifier: subscribe::Notifier::default(),
            warnings: Mutex::new(Vec::new()),
            history_source: OnceLock::new(),
            metrics_text: OnceLock::new(),
        })
    }

    /// Records a setup problem and prints it on stderr, once per `code`. Never a `tracing`
    /// event: the layer must not feed itself.
    pub(crate) fn warn_once(&self, code: &'static str, message: &str) {
        let mut warnings = self.warnings.lock();
        if warnings.iter().any(|w| w.code == code) {
            return;
        }
        eprintln!("tracing-progress: {message}");
        warnings.push(SetupWarning {
            code,
            message: Arc::from(message),
        });
    }

    /// One estimate tick of every running operation.
    pub(crate) fn tick_estimates(&self) {
        let cells: Vec<_> = self.active.read().values().cloned().collect();
        for cell in cells {
            cell.tick_estimates();
        }
    }

    /// Registers a new operation whose root is `root`, with its first update applied.
    pub(crate) fn start_operation(
        self: &Arc<Self>,
        root: NewNode,
        operation_type: Arc<str>,
        update: NodeUpdate,
    ) -> Option<NodeHandle> {
        let id = root.id;
        let mut tree =
            Tree::new(root, operation_type, self.limits.clone()).with_priors(self.priors.clone());
        let key = tree.root_key(id);
        tree.apply(key, update);
        let live = tree.live(key)?;
        let cell = Arc::new(OperationCell::new(id, tree, self.clone()));
        self.active.write().insert(id, cell.clone());
        self.notifier.changed();
        Some(NodeHandle::new(cell, key, live))
    }

    /// Attributes a process resource sample to every running node of every operation.
    #[cfg(feature = "resources")]
    pub(crate) fn record_resources(&self, cpu_percent: f64, rss_bytes: u64) {
        let cells: Vec<_> = self.active.read().values().cloned().collect();
        for cell in cells {
            cell.record_resources(cpu_percent, rss_bytes);
        }
    }

    /// Moves a closed operation from the active map to history; returns its final state.
    ///
    /// Both maps are locked together (always `active`, then `history`: every reader that holds
    /// both takes them in that order), so a reader finds the operation in exactly one of them
    /// and a [`Subscription`] never sees it active after it saw it finished.
    pub(crate) fn finish_operation(&self, cell: &OperationCell) -> Arc<ProgressState> {
        let state = cell.final_snapshot();
        let now = state.snapshot_at_us;
        // The tree walk happens before the locks: other operations start and finish meanwhile.
        let bytes = history::estimated_bytes(&state);
        {
            let mut active = self.active.write();
            let mut history = self.history.write();
            active.remove(&cell.id);
            history.push(state.clone(), bytes, now);
        }
        self.notifier.changed();
        state
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
    /// Finished operations dropped from history by the count, age or bytes bound.
    pub history_evicted: u64,
    /// Estimated heap bytes of the finished operations in history (bounded by
    /// [`Builder::history_max_bytes`](crate::Builder::history_max_bytes)).
    pub history_bytes: usize,
    /// Problems with how the layer was set up, found while it ran (e.g. an OpenTelemetry
    /// layer added before the progress layer); each is also printed once on stderr.
    pub warnings: Vec<SetupWarning>,
    /// Operations (finished ones and running roots) written to the history file
    /// ([`Builder::history_file`](crate::Builder::history_file)); 0 without one. Counted
    /// only once their transaction committed, so it is an acknowledgement: a record counted
    /// here survives the process being killed (with `synchronous=NORMAL`, not a power loss).
    pub history_file_written: u64,
    /// Records dropped because the history file's queue was full (the host never waits).
    pub history_file_dropped: u64,
    /// Records that could not be written to the history file (the first error is also a
    /// warning; the in-memory history keeps working).
    pub history_file_errors: u64,
}

impl StoreStats {
    /// Whether a warning with this [`code`](SetupWarning::code) was reported.
    pub fn has_warning(&self, code: &str) -> bool {
        self.warnings.iter().any(|w| w.code == code)
    }
}

/// A problem with how the layer is set up, found at run time; see [`StoreStats::warnings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupWarning {
    code: &'static str,
    message: Arc<str>,
}

impl SetupWarning {
    /// Code of a subscriber whose global level filter (e.g. `EnvFilter` with `RUST_LOG` unset)
    /// stops INFO spans before the progress layer sees them. Fix: put the filter on the output
    /// layer (`fmt::layer().with_filter(..)`) or allow INFO for the spans to track.
    pub const LEVEL_FILTERED: &'static str = "filter.level";

    /// Stable identifier, e.g. [`otel::LAYER_ORDER_WARNING`](crate::otel::LAYER_ORDER_WARNING).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// What is wrong and how to fix it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl Store {
    pub(crate) fn from_inner(inner: Arc<StoreInner>) -> Self {
        Store { inner }
    }

    /// One of this store's operations: running, in history, or (with a
    /// [history file](crate::Builder::history_file)) in the file after memory let it go.
    /// Ids are unique within a store; an operation of another run needs [`Store::get_ref`].
    pub fn get(&self, id: OperationId) -> Option<Arc<ProgressState>> {
        self.get_in_memory(id)
            .or_else(|| self.inner.history_source.get()?.get(id.into()))
    }

    /// One operation of this store or, with a history file, of any run recorded in it
    /// ([`OperationRef`] `ID@RUN`, as [`ProgressState::reference`] gives). A reference to this
    /// store's own run is the same as its bare id.
    ///
    /// ```
    /// # fn docs(store: tracing_progress::Store) {
    /// let r: tracing_progress::OperationRef = "42@1f3a9c0e5d7b2a41".parse().unwrap();
    /// if let Some(op) = store.get_ref(r) {
    ///     println!("{} {}", op.name, op.status);
    /// }
    /// # }
    /// ```
    pub fn get_ref(&self, r: OperationRef) -> Option<Arc<ProgressState>> {
        let source = self.inner.history_source.get();
        match r.run {
            Some(run) if source.is_none_or(|s| s.run() != run) => source?.get(r),
            _ => self.get(r.id),
        }
    }

    /// The run this store records in its history file; `None` without one.
    pub fn run_id(&self) -> Option<RunId> {
        self.inner.history_source.get().map(|s| s.run())
    }

    /// Active or in the in-memory history only (never reads a file).
    pub(crate) fn get_in_memory(&self, id: OperationId) -> Option<Arc<ProgressState>> {
        let cell = self.inner.active.read().get(&id).cloned();
        match cell {
            Some(cell) => Some(cell.snapshot()),
            None => self.inner.history.read().get(id),
        }
    }

    /// All running operations, oldest first.
    pub fn active(&self) -> Vec<Arc<ProgressState>> {
        let mut cells: Vec<_> = self.inner.active.read().values().cloned().collect();
        cells.sort_by_key(|c| c.id);
        cells.into_iter().map(|c| c.snapshot()).collect()
    }

    /// Running operations that pass `query`'s filters (type, status, name, metadata; times
    /// compare with now), oldest first, at most its limit. Each operation is snapshotted to
    /// be checked.
    ///
    /// ```
    /// # fn docs(store: tracing_progress::Store) {
    /// use tracing_progress::HistoryQuery;
    /// let q = HistoryQuery::new().meta("block_id=block-002".parse().unwrap());
    /// for op in store.active_matching(&q) {
    ///     println!("{} is working on block-002", op.name);
    /// }
    /// # }
    /// ```
    pub fn active_matching(&self, query: &HistoryQuery) -> Vec<Arc<ProgressState>> {
        let mut cells: Vec<_> = self.inner.active.read().values().cloned().collect();
        cells.sort_by_key(|c| c.id);
        cells
            .into_iter()
            .map(|c| c.snapshot())
            .filter(|s| query.matches(s))
            .take(query.limit.unwrap_or(usize::MAX))
            .collect()
    }

    /// Ids of the running operations, oldest first (no snapshot taken).
    pub fn active_ids(&self) -> Vec<OperationId> {
        let mut ids: Vec<_> = self.inner.active.read().keys().copied().collect();
        ids.sort();
        ids
    }

    /// Finished operations matching `query`, newest first (by completion time).
    ///
    /// With a [history file](crate::Builder::history_file) this also reads the file: other
    /// runs' operations (and this run's that memory no longer holds), filtered and limited in
    /// SQL, merged without duplicates; an operation interrupted by the end of its process
    /// appears cancelled, reason [`Interrupted`](crate::CancelReason::Interrupted), as do its
    /// levels that were running (see [`sqlite`](crate::sqlite)).
    ///
    /// ```
    /// # fn docs(store: tracing_progress::Store) {
    /// use tracing_progress::{HistoryQuery, Status};
    /// let failed = store.history(&HistoryQuery::new().status(Status::Failed).limit(10));
    /// # }
    /// ```
    pub fn history(&self, query: &HistoryQuery) -> Vec<Arc<ProgressState>> {
        let now = self.inner.clock.now_us();
        let memory = self.inner.history.read().query(query, now);
        let Some(source) = self.inner.history_source.get() else {
            return memory;
        };
        let mut merged = memory;
        let known: std::collections::HashSet<OperationId> = merged.iter().map(|s| s.id).collect();
        merged.extend(
            source
                .query(query)
                .into_iter()
                .filter(|s| !(s.run.is_none() && known.contains(&s.id))),
        );
        // Stable: equal times keep memory first.
        merged.sort_by_key(|s| std::cmp::Reverse(s.completed_at_us.unwrap_or(s.snapshot_at_us)));
        merged.truncate(query.limit.unwrap_or(usize::MAX));
        merged
    }

    /// Waits until every record queued for the history file
    /// ([`Builder::history_file`](crate::Builder::history_file)) is written (or failed), at
    /// most `timeout`; true when nothing is left. Without a history file: true at once. Call
    /// it before a program exits: the writer thread does not outlive the process.
    pub fn flush_history(&self, timeout: Duration) -> bool {
        self.inner
            .history_source
            .get()
            .is_none_or(|s| s.flush(timeout))
    }

    /// Installs the outside history source (once; later calls are ignored).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn set_history_source(&self, source: Arc<dyn HistorySource>) {
        let _ = self.inner.history_source.set(source);
    }

    /// Installs the renderer of `/metrics` (once; later calls are ignored).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn set_metrics_text(&self, source: Arc<dyn MetricsText>) {
        let _ = self.inner.metrics_text.set(source);
    }

    /// The store's figures in Prometheus text format, when the metrics exporter is installed.
    #[cfg_attr(not(any(feature = "http", feature = "metrics")), allow(dead_code))]
    pub(crate) fn metrics_text(&self) -> Option<String> {
        self.inner.metrics_text.get().map(|m| m.render())
    }

    /// Operation types of the running operations, oldest first (each tree locked briefly; no
    /// snapshot taken).
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn active_types(&self) -> Vec<(OperationId, Arc<str>)> {
        let mut cells: Vec<_> = self.inner.active.read().values().cloned().collect();
        cells.sort_by_key(|c| c.id);
        cells.iter().map(|c| (c.id, c.operation_type())).collect()
    }

    /// Adds durations of completed nodes to the priors of estimates (e.g. from a history
    /// file at start, so the first operations of a run already have an ETA).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn seed_priors(
        &self,
        batch: &mut std::collections::VecDeque<crate::estimate::FinishedNode>,
    ) {
        self.inner.priors.record(batch);
    }

    /// A handle that does not keep the store alive (for background threads).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn downgrade(&self) -> Weak<StoreInner> {
        Arc::downgrade(&self.inner)
    }

    /// Asks an operation to cancel. Instrumented code sees it through
    /// [`ProgressSpanExt::is_cancelled`](crate::ProgressSpanExt::is_cancelled); nodes that
    /// close afterwards end as [`Status::Cancelled`] (failed ones stay failed).
    pub fn cancel(&self, id: OperationId) -> Result<(), CancelError> {
        let cell = self.inner.active.read().get(&id).cloned();
        match cell {
            Some(cell) => {
                cell.request_cancel();
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
        let file = self
            .inner
            .history_source
            .get()
            .map(|s| s.stats())
            .unwrap_or_default();
        // One lock at a time: `finish_operation` holds `active` while it waits for `history`.
        let active = self.inner.active.read().len();
        let (history, history_evicted, history_bytes) = {
            let h = self.inner.history.read();
            (h.len(), h.evicted(), h.bytes())
        };
        StoreStats {
            active,
            history,
            history_evicted,
            history_bytes,
            warnings: self.inner.warnings.lock().clone(),
            history_file_written: file.written,
            history_file_dropped: file.dropped,
            history_file_errors: file.errors,
        }
    }

    /// Every active operation and the whole history as one JSON document:
    /// `{"schema_version":1,"active":[...],"history":[...]}` (history newest first).
    ///
    /// With a history file, "the whole history" is everything in the file too, read a page at
    /// a time: what is held is the answer (one string) and one page of decoded operations.
    /// For a big file, [`Store::write_history_jsonl`] writes with bounded memory.
    pub fn export_all_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Head {
            schema_version: u32,
            active: Vec<Arc<ProgressState>>,
        }
        let head = Head {
            schema_version: SCHEMA_VERSION,
            active: self.active(),
        };
        let mut out = serde_json::to_vec(&head).unwrap_or_default();
        // `{"schema_version":1,"active":[...]}` becomes `{..., "history":[...]}`.
        out.pop();
        out.extend_from_slice(br#","history":["#);
        let mut first = true;
        let _ = self.for_each_in_order(&HistoryQuery::new(), true, |state| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, state).map_err(io::Error::other)
        });
        out.extend_from_slice(b"]}");
        String::from_utf8(out).unwrap_or_default()
    }

    /// Writes the history matching `query` as JSON lines, oldest first; returns the line count.
    ///
    /// With a history file and no limit in `query`, the file is read a page at a time, so a
    /// file of any size is written with bounded memory; with a limit, the newest `limit`
    /// operations are read at once.
    pub fn write_history_jsonl(
        &self,
        query: &HistoryQuery,
        mut out: impl Write,
    ) -> io::Result<usize> {
        if query.limit.is_some() {
            let mut states = self.history(query);
            states.reverse();
            for state in &states {
                serde_json::to_writer(&mut out, &**state)?;
                out.write_all(b"\n")?;
            }
            return Ok(states.len());
        }
        self.for_each_in_order(query, false, |state| {
            serde_json::to_writer(&mut out, state)?;
            out.write_all(b"\n")
        })
    }

    /// Calls `f` for every finished operation matching `query` (its limit ignored), newest or
    /// oldest first: memory and history file merged, the file read a page at a time.
    fn for_each_in_order(
        &self,
        query: &HistoryQuery,
        newest_first: bool,
        mut f: impl FnMut(&ProgressState) -> io::Result<()>,
    ) -> io::Result<usize> {
        let mut all = query.clone();
        all.limit = None;
        let now = self.inner.clock.now_us();
        let mut memory = self.inner.history.read().query(&all, now);
        if !newest_first {
            memory.reverse();
        }
        let Some(source) = self.inner.history_source.get() else {
            for state in &memory {
                f(state)?;
            }
            return Ok(memory.len());
        };
        let run = source.run().as_u64();
        let key = |s: &ProgressState| {
            (
                s.completed_at_us.unwrap_or(s.snapshot_at_us),
                run,
                s.id.as_u64(),
            )
        };
        // Memory goes first of equal keys, in either order.
        let before = |m: PageKey, k: PageKey| if newest_first { m >= k } else { m <= k };
        let known: std::collections::HashSet<OperationId> = memory.iter().map(|s| s.id).collect();
        let mut memory = memory.into_iter().peekable();
        let mut count = 0;
        let mut after = None;
        loop {
            let (page, next) = source.page(&all, newest_first, after, PAGE);
            for (k, state) in page {
                if state.run.is_none() && known.contains(&state.id) {
                    continue;
                }
                while let Some(m) = memory.next_if(|m| before(key(m), k)) {
                    f(&m)?;
                    count += 1;
                }
                f(&state)?;
                count += 1;
            }
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        for m in memory {
            f(&m)?;
            count += 1;
        }
        Ok(count)
    }

    /// Advances the estimates and stall detection of every running node by one observation
    /// at the store's current time.
    ///
    /// The store does this itself every [`Builder::estimate_interval`](crate::Builder::estimate_interval)
    /// on a background thread; call it yourself when that is off (the default with a
    /// [custom clock](crate::Builder::clock), so tests decide when time is observed). Reading
    /// the store never advances estimates: what a snapshot shows does not depend on how often
    /// something looks.
    pub fn tick_estimates(&self) {
        self.inner.tick_estimates();
    }

    /// A listener woken by the next change anywhere in the store (an async future, or
    /// blocking through [`event_listener::Listener`]). Create it before checking for changes.
    #[cfg(feature = "http")]
    pub(crate) fn listen(&self) -> event_listener::EventListener {
        self.inner.notifier.listen()
    }

    /// Records a setup problem (printed once on stderr); for exporters.
    #[cfg_attr(not(any(feature = "otel", feature = "sqlite")), allow(dead_code))]
    pub(crate) fn warn_once(&self, code: &'static str, message: &str) {
        self.inner.warn_once(code, message);
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
