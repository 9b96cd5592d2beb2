//! One operation's tree: a slot arena of nodes behind the operation's own lock.
//!
//! Every structural change and progress update of an operation goes through its [`Tree`],
//! so two threads working on *different* operations never touch the same lock. Finished
//! nodes are folded into per-parent summaries past the configured limits, so an operation with
//! a million blocks keeps a bounded number of nodes.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::estimate::{self, NodeEstimator};
use crate::model::{
    ErrorInfo, FailureSummary, FieldValue, FoldedChildren, Metadata, NodeId, OperationMetrics,
    ProgressLevel, ProgressState, ResourceUsage, SCHEMA_VERSION, Status, Timing,
};
use crate::store::Limits;
use crate::store::history::{FinishedNode, PriorDurations, Priors};

/// At most this many input errors are kept per node (older ones are dropped first).
const MAX_INPUT_ERRORS: usize = 8;

/// Slot of the root node: the first node pushed into a new tree.
pub(crate) const ROOT_SLOT: u32 = 0;

/// A node's counters, shared by the tree and the span so progress updates need no lock.
///
/// SeqCst on purpose: subscribers clear an operation's `dirty` flag and then snapshot; an
/// update that saw `dirty` still set must be visible to that snapshot (see
/// `OperationCell::mark_changed`).
#[derive(Default)]
pub(crate) struct LiveCounters {
    current: AtomicU64,
    /// `NO_TOTAL` until set.
    total: AtomicU64,
    explicit: AtomicBool,
    updates: AtomicU64,
    /// Time entered so far (ns), for snapshots of running spans; the span adds to it on exit.
    pub(crate) busy_ns: AtomicU64,
    /// When the span was last entered (µs since the Unix epoch), 0 while not entered.
    pub(crate) entered_at_us: AtomicU64,
}

const NO_TOTAL: u64 = u64::MAX;

impl LiveCounters {
    fn new() -> Self {
        LiveCounters {
            total: AtomicU64::new(NO_TOTAL),
            ..Default::default()
        }
    }

    /// Applies the counter part of an update; true if anything changed.
    #[inline]
    pub(crate) fn apply(&self, total: Option<u64>, current: Option<u64>, inc: u64) -> bool {
        let mut changed = false;
        if let Some(t) = total {
            // u64::MAX itself is kept as "unknown": nobody counts that far.
            self.total.swap(t, Ordering::SeqCst);
            changed = true;
        }
        if let Some(c) = current {
            self.current.swap(c, Ordering::SeqCst);
            changed = true;
        }
        if inc > 0 {
            let _ = self
                .current
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                    Some(c.saturating_add(inc))
                });
            changed = true;
        }
        if changed {
            if !self.explicit.load(Ordering::Relaxed) && (current.is_some() || inc > 0) {
                self.explicit.store(true, Ordering::SeqCst);
            }
            self.updates.fetch_add(1, Ordering::Relaxed);
        }
        changed
    }

    pub(crate) fn current(&self) -> Option<u64> {
        self.explicit
            .load(Ordering::SeqCst)
            .then(|| self.current.load(Ordering::SeqCst))
    }

    pub(crate) fn total(&self) -> Option<u64> {
        let t = self.total.load(Ordering::SeqCst);
        (t != NO_TOTAL).then_some(t)
    }
}

/// Names shared by every node of one callsite (one pointer per node instead of two).
pub(crate) struct Callsite {
    pub(crate) span_name: &'static str,
    pub(crate) target: &'static str,
}

/// The data a new node starts with.
pub(crate) struct NewNode {
    pub(crate) id: NodeId,
    pub(crate) level_type: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) callsite: Arc<Callsite>,
    pub(crate) created_us: u64,
    pub(crate) flattened: bool,
}

/// Fields that rarely change, boxed to keep a live node small.
#[derive(Default)]
struct Cold {
    unit: Option<Arc<str>>,
    error: Option<ErrorInfo>,
    failures_below: Option<FailureSummary>,
    folded: Vec<FoldedChildren>,
    input_errors: Vec<Arc<str>>,
    flattened: bool,
    /// Process CPU/memory samples taken while the node ran (feature `resources`).
    #[cfg_attr(not(feature = "resources"), allow(dead_code))]
    resources: Option<ResourceAcc>,
}

/// Running totals of resource samples; turned into a [`ResourceUsage`] by snapshots.
#[derive(Clone, Copy, Default)]
pub(crate) struct ResourceAcc {
    samples: u32,
    cpu_sum: f64,
    cpu_peak: f64,
    rss_sum: u128,
    rss_peak: u64,
}

impl ResourceAcc {
    #[cfg_attr(not(feature = "resources"), allow(dead_code))]
    fn add(&mut self, cpu_percent: f64, rss_bytes: u64) {
        self.samples = self.samples.saturating_add(1);
        self.cpu_sum += cpu_percent;
        self.cpu_peak = self.cpu_peak.max(cpu_percent);
        self.rss_sum += u128::from(rss_bytes);
        self.rss_peak = self.rss_peak.max(rss_bytes);
    }

    fn usage(&self) -> ResourceUsage {
        let n = f64::from(self.samples.max(1));
        ResourceUsage {
            samples: self.samples,
            cpu_percent_mean: self.cpu_sum / n,
            cpu_percent_peak: self.cpu_peak,
            rss_bytes_mean: (self.rss_sum / u128::from(self.samples.max(1))) as u64,
            rss_bytes_peak: self.rss_peak,
        }
    }
}

pub(crate) struct Node {
    id: NodeId,
    parent: Option<u32>,
    status: Status,
    level_type: Arc<str>,
    name: Arc<str>,
    callsite: Arc<Callsite>,
    live: Arc<LiveCounters>,
    message: Option<Arc<str>>,
    created_us: u64,
    /// 0 until first entered (timestamps are µs since 1970, never 0 in practice).
    started_us: u64,
    /// 0 until closed.
    completed_us: u64,
    busy_ns: u64,
    /// Slots of retained children, in creation order. A deque: folding takes the oldest.
    children: VecDeque<u32>,
    /// Tracked children done (completed or failed; not cancelled), folded ones included.
    finished_children: u64,
    /// Finished children still retained in `children`.
    retained_finished_children: u32,
    metadata: Metadata,
    cold: Option<Box<Cold>>,
    /// Estimator state while running (see `crate::estimate`); updated by snapshots, which
    /// hold the operation's lock but only a shared borrow of the tree. Dropped at close.
    est: Cell<Option<Box<NodeEstimator>>>,
}

impl Node {
    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Default::default)
    }

    fn started(&self) -> Option<u64> {
        (self.started_us != 0).then_some(self.started_us)
    }

    fn completed(&self) -> Option<u64> {
        (self.completed_us != 0).then_some(self.completed_us)
    }

    fn duration_us(&self) -> u64 {
        let start = self.started().unwrap_or(self.created_us);
        self.completed().unwrap_or(start).saturating_sub(start)
    }
}

/// How a node ended, decided by the layer at close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseOutcome {
    Completed,
    Cancelled,
}

/// One progress update, applied under the operation's lock.
#[derive(Default)]
pub(crate) struct Update {
    pub(crate) total: Option<u64>,
    pub(crate) current: Option<u64>,
    pub(crate) inc: u64,
    pub(crate) message: Option<Arc<str>>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) unit: Option<Arc<str>>,
    pub(crate) metadata: Vec<(Arc<str>, FieldValue)>,
    pub(crate) input_errors: Vec<Arc<str>>,
}

impl Update {
    pub(crate) fn is_empty(&self) -> bool {
        self.total.is_none() && self.current.is_none() && self.inc == 0 && self.is_counters_only()
    }

    /// Whether it changes total, current or inc.
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    pub(crate) fn has_counters(&self) -> bool {
        self.total.is_some() || self.current.is_some() || self.inc > 0
    }

    /// Nothing but total/current/inc (possibly nothing at all).
    pub(crate) fn is_counters_only(&self) -> bool {
        self.message.is_none()
            && self.name.is_none()
            && self.unit.is_none()
            && self.metadata.is_empty()
            && self.input_errors.is_empty()
    }
}

pub(crate) struct Tree {
    nodes: Vec<Option<Node>>,
    free: Vec<u32>,
    /// Finished nodes in completion order, for operation-wide folding. May hold stale entries
    /// (already folded); it is compacted when it grows past twice the limit.
    finished: VecDeque<(u32, NodeId)>,
    finished_retained: usize,
    metrics: OperationMetrics,
    limits: Limits,
    pub(crate) operation_type: Arc<str>,
    /// The store's durations of completed nodes (estimate priors), and this tree's completed
    /// nodes not yet added to them: the next snapshot adds them (it is the only reader of
    /// priors) or the end of the operation, so closing a span never takes the shared lock.
    priors: Arc<Priors>,
    pending: VecDeque<FinishedNode>,
}

/// Completed nodes buffered between snapshots; past this many the oldest are dropped (the
/// priors keep the last 64 per kind anyway, and the buffer stays bounded).
const PRIOR_PENDING_MAX: usize = 256;

impl Tree {
    pub(crate) fn new(root: NewNode, operation_type: Arc<str>, limits: Limits) -> Self {
        let mut tree = Tree {
            nodes: Vec::with_capacity(4),
            free: Vec::new(),
            finished: VecDeque::new(),
            finished_retained: 0,
            metrics: OperationMetrics::default(),
            limits,
            operation_type,
            priors: Arc::default(),
            pending: VecDeque::new(),
        };
        tree.insert(root, None);
        tree
    }

    /// Uses the store's shared priors instead of a private set.
    pub(crate) fn with_priors(mut self, priors: Arc<Priors>) -> Self {
        self.priors = priors;
        self
    }

    fn insert(&mut self, new: NewNode, parent: Option<u32>) -> u32 {
        let node = Node {
            id: new.id,
            parent,
            status: Status::Pending,
            level_type: new.level_type,
            name: new.name,
            callsite: new.callsite,
            live: Arc::new(LiveCounters::new()),
            message: None,
            created_us: new.created_us,
            started_us: 0,
            completed_us: 0,
            busy_ns: 0,
            children: VecDeque::new(),
            finished_children: 0,
            retained_finished_children: 0,
            metadata: Metadata::default(),
            cold: new.flattened.then(|| {
                Box::new(Cold {
                    flattened: true,
                    ..Cold::default()
                })
            }),
            est: Cell::new(None),
        };
        self.metrics.nodes_seen += 1;
        self.metrics.nodes_retained += 1;
        match self.free.pop() {
            Some(slot) => {
                self.nodes[slot as usize] = Some(node);
                slot
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as u32
            }
        }
    }

    fn node(&self, slot: u32, id: NodeId) -> Option<&Node> {
        self.nodes
            .get(slot as usize)?
            .as_ref()
            .filter(|n| n.id == id)
    }

    fn node_mut(&mut self, slot: u32, id: NodeId) -> Option<&mut Node> {
        self.nodes
            .get_mut(slot as usize)?
            .as_mut()
            .filter(|n| n.id == id)
    }

    fn slot(&self, slot: u32) -> Option<&Node> {
        self.nodes.get(slot as usize)?.as_ref()
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Node> {
        self.nodes.get_mut(slot as usize)?.as_mut()
    }

    /// The counters of a node, for the span that owns it.
    pub(crate) fn live(&self, slot: u32, id: NodeId) -> Option<Arc<LiveCounters>> {
        self.node(slot, id).map(|n| n.live.clone())
    }

    /// Adds a child under `(parent_slot, parent_id)`; `None` if the parent is gone.
    pub(crate) fn add_child(
        &mut self,
        parent_slot: u32,
        parent_id: NodeId,
        new: NewNode,
    ) -> Option<u32> {
        self.node(parent_slot, parent_id)?;
        let slot = self.insert(new, Some(parent_slot));
        if let Some(parent) = self.slot_mut(parent_slot) {
            parent.children.push_back(slot);
        }
        Some(slot)
    }

    /// First enter: pending becomes running.
    pub(crate) fn start(&mut self, slot: u32, id: NodeId, now_us: u64) {
        if let Some(n) = self.node_mut(slot, id) {
            if n.status == Status::Pending {
                n.status = Status::Running;
            }
            if n.started_us == 0 {
                n.started_us = now_us.max(1);
            }
        }
    }

    /// Applies an update; returns false if the node is gone or closed (the update is dropped).
    pub(crate) fn apply(&mut self, slot: u32, id: NodeId, update: Update) -> bool {
        if update.is_empty() {
            return true;
        }
        let max_meta = self.limits.max_metadata_entries;
        let Some(n) = self.node_mut(slot, id) else {
            return false;
        };
        if n.status.is_finished() {
            return false;
        }
        let counted = n.live.apply(update.total, update.current, update.inc);
        if update.message.is_some() {
            n.message = update.message;
        }
        if let Some(name) = update.name {
            n.name = name;
        }
        if update.unit.is_some() {
            n.cold().unit = update.unit;
        }
        let mut errors = update.input_errors.len() as u64;
        for (k, v) in update.metadata {
            if n.metadata.len() < max_meta || n.metadata.get(&k).is_some() {
                n.metadata.insert(k, v);
            } else {
                errors += 1;
                push_input_error(
                    n.cold(),
                    Arc::from(format!(
                        "metadata field {k:?} dropped: node already has {max_meta} fields"
                    )),
                );
            }
        }
        if !update.input_errors.is_empty() {
            let cold = n.cold();
            for e in update.input_errors {
                push_input_error(cold, e);
            }
        }
        self.metrics.input_errors += errors;
        if !counted {
            // Counter updates are counted by the node's own counters.
            self.metrics.updates += 1;
        }
        true
    }

    /// Marks a node failed and tells every ancestor. The node keeps its first error.
    pub(crate) fn fail(&mut self, slot: u32, id: NodeId, mut error: ErrorInfo) {
        let Some(path) = self.path(slot, id) else {
            return;
        };
        error.path = path;
        let Some(n) = self.node_mut(slot, id) else {
            return;
        };
        let first = n.status != Status::Failed;
        n.status = Status::Failed;
        let mut parent = n.parent;
        let cold = n.cold();
        if cold.error.is_none() {
            cold.error = Some(error.clone());
        }
        if first {
            self.metrics.nodes_failed += 1;
        }
        while let Some(p) = parent {
            let Some(pn) = self.slot_mut(p) else { break };
            parent = pn.parent;
            let cold = pn.cold();
            match &mut cold.failures_below {
                Some(s) => {
                    s.count += 1;
                    s.last = error.clone();
                }
                None => {
                    cold.failures_below = Some(FailureSummary {
                        count: 1,
                        first: error.clone(),
                        last: error.clone(),
                    })
                }
            }
        }
    }

    /// Names from the root down to this node.
    fn path(&self, slot: u32, id: NodeId) -> Option<Vec<Arc<str>>> {
        let mut path = Vec::new();
        let mut cur = Some(self.node(slot, id)?);
        while let Some(n) = cur {
            path.push(n.name.clone());
            cur = n.parent.and_then(|p| self.slot(p));
        }
        path.reverse();
        Some(path)
    }

    /// Closes a node; a failed node stays failed. Returns true when the root closed.
    /// `closed` sees the tree right after the node closed, before any folding.
    pub(crate) fn close(
        &mut self,
        slot: u32,
        id: NodeId,
        now_us: u64,
        busy_ns: u64,
        outcome: CloseOutcome,
        closed: impl FnOnce(&Self),
    ) -> bool {
        let Some(n) = self.node_mut(slot, id) else {
            return false;
        };
        if n.status.is_finished() && n.completed_us != 0 {
            return false;
        }
        n.status = match (n.status, outcome) {
            (Status::Failed, _) => Status::Failed,
            (_, CloseOutcome::Cancelled) => Status::Cancelled,
            (_, CloseOutcome::Completed) => Status::Completed,
        };
        n.completed_us = now_us.max(1);
        n.busy_ns = busy_ns;
        drop(n.est.take());
        let completed = (n.status == Status::Completed).then(|| FinishedNode {
            level_type: n.level_type.clone(),
            name: n.name.clone(),
            duration_us: n.duration_us(),
        });
        let parent = n.parent;
        // A cancelled child did not do its work: it does not count towards the parent's units.
        let counts_as_done = n.status != Status::Cancelled;
        closed(self);
        if let Some(f) = completed {
            if self.pending.len() >= PRIOR_PENDING_MAX {
                self.pending.pop_front();
            }
            self.pending.push_back(f);
        }
        let Some(parent) = parent else {
            self.priors.record(&mut self.pending);
            return true;
        };
        self.finished_retained += 1;
        self.finished.push_back((slot, id));
        let per_parent = self.limits.max_finished_children;
        let over = match self.slot_mut(parent) {
            Some(p) => {
                p.finished_children += u64::from(counts_as_done);
                p.retained_finished_children += 1;
                p.retained_finished_children as usize > per_parent
            }
            None => false,
        };
        if over {
            self.fold_oldest_child(parent);
        }
        self.enforce_operation_limit();
        false
    }

    /// Per-parent limit: fold the oldest finished child, sparing failed ones while possible.
    fn fold_oldest_child(&mut self, parent: u32) {
        let Some(p) = self.slot(parent) else { return };
        let finished = |s: &&u32| self.slot(**s).is_some_and(|c| c.status.is_finished());
        let victim = p
            .children
            .iter()
            .filter(finished)
            .find(|s| self.slot(**s).is_some_and(|c| c.status != Status::Failed))
            .or_else(|| p.children.iter().find(finished))
            .copied();
        if let Some(v) = victim {
            self.fold(v);
        }
    }

    /// Operation-wide limit on retained finished nodes: fold in completion order.
    fn enforce_operation_limit(&mut self) {
        let max = self.limits.max_finished_nodes;
        while self.finished_retained > max {
            let Some((slot, id)) = self.finished.pop_front() else {
                break;
            };
            if self.node(slot, id).is_some() {
                self.fold(slot);
            }
        }
        if self.finished.len() > 2 * max + 64 {
            let nodes = &self.nodes;
            self.finished.retain(|(slot, id)| {
                nodes
                    .get(*slot as usize)
                    .and_then(|n| n.as_ref())
                    .is_some_and(|n| n.id == *id)
            });
        }
    }

    /// Removes a finished node and its subtree, adding it to its parent's folded summary.
    fn fold(&mut self, slot: u32) {
        let Some(n) = self.slot(slot) else { return };
        let Some(parent) = n.parent else { return };
        if !n.status.is_finished() {
            return;
        }
        let (level_type, status, duration) = (n.level_type.clone(), n.status, n.duration_us());
        // Remove the subtree; only finished nodes can be in it (a span outlives its children).
        let mut stack = vec![slot];
        let mut removed = 0u64;
        while let Some(s) = stack.pop() {
            if let Some(node) = self.nodes.get_mut(s as usize).and_then(Option::take) {
                self.metrics.updates += node.live.updates.load(Ordering::Relaxed);
                if node.status.is_finished() && node.parent.is_some() {
                    self.finished_retained = self.finished_retained.saturating_sub(1);
                }
                stack.extend(node.children.iter().copied());
                self.free.push(s);
                removed += 1;
            }
        }
        self.metrics.nodes_folded += removed;
        self.metrics.nodes_retained = self.metrics.nodes_retained.saturating_sub(removed);
        let Some(p) = self.slot_mut(parent) else {
            return;
        };
        if let Some(pos) = p.children.iter().position(|c| *c == slot) {
            p.children.remove(pos);
        }
        p.retained_finished_children = p.retained_finished_children.saturating_sub(1);
        let folded = &mut p.cold().folded;
        let entry = match folded.iter().position(|f| f.level_type == level_type) {
            Some(i) => &mut folded[i],
            None => {
                folded.push(FoldedChildren {
                    level_type,
                    count: 0,
                    completed: 0,
                    failed: 0,
                    cancelled: 0,
                    min_us: u64::MAX,
                    mean_us: 0,
                    max_us: 0,
                });
                let last = folded.len() - 1;
                &mut folded[last]
            }
        };
        // Running mean in integers: exact enough for µs and never overflows.
        entry.count += 1;
        let delta = duration as i128 - entry.mean_us as i128;
        entry.mean_us = (entry.mean_us as i128 + delta / entry.count as i128).max(0) as u64;
        entry.min_us = entry.min_us.min(duration);
        entry.max_us = entry.max_us.max(duration);
        match status {
            Status::Failed => entry.failed += 1,
            Status::Cancelled => entry.cancelled += 1,
            _ => entry.completed += 1,
        }
    }

    /// What the OpenTelemetry export writes onto a span at close (call after `close`).
    #[cfg(feature = "otel")]
    pub(crate) fn final_report(
        &self,
        slot: u32,
        id: NodeId,
        operation_id: NodeId,
        cancel_requested: bool,
    ) -> Option<crate::otel::FinalReport> {
        let n = self.node(slot, id)?;
        // All children are finished at close, so no running fraction is left to add.
        let level = self.build_level(n, Vec::new(), 0.0, n.completed_us);
        Some(crate::otel::FinalReport {
            node_id: id,
            operation_id,
            status: n.status,
            level_type: n.level_type.clone(),
            name: n.name.clone(),
            current: level.current,
            total: level.total,
            percentage: level.percentage,
            unit: level.unit,
            duration_us: level.timing.elapsed_us,
            busy_us: level.timing.busy_us,
            idle_us: level.timing.idle_us,
            failures_below: level.failures_below.map_or(0, |f| f.count),
            cancel_requested,
            error: level.error.map(|e| *e),
        })
    }

    /// Attributes one process resource sample to every running node (feature `resources`).
    #[cfg(feature = "resources")]
    pub(crate) fn record_resources(&mut self, cpu_percent: f64, rss_bytes: u64) {
        for node in self.nodes.iter_mut().flatten() {
            if node.status == Status::Running {
                node.cold()
                    .resources
                    .get_or_insert_with(ResourceAcc::default)
                    .add(cpu_percent, rss_bytes);
            }
        }
    }

    /// Builds the model tree; each snapshot is also one observation for the estimates of the
    /// running nodes (see `crate::estimate`).
    pub(crate) fn snapshot(
        &mut self,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) -> ProgressState {
        self.priors.record(&mut self.pending);
        let priors = self.priors.clone();
        self.build_snapshot(id, cancel_requested, now_us, &priors.read())
    }

    /// Builds the model tree. Iterative, so deep trees cannot overflow the stack.
    fn build_snapshot<'a>(
        &'a self,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
        priors: &PriorDurations,
    ) -> ProgressState {
        // Depth-first with an explicit stack of frames: each finished level moves once, into
        // its parent's preallocated children, and deep trees cannot overflow the call stack.
        struct Frame<'a> {
            node: &'a Node,
            next_child: usize,
            children: Vec<ProgressLevel>,
            partial: f64,
        }
        let frame = |node: &'a Node| Frame {
            node,
            next_child: 0,
            children: Vec::with_capacity(node.children.len()),
            partial: 0.0,
        };
        let mut live_updates = 0;
        let mut root = None;
        let mut stack: Vec<Frame<'_>> = self.slot(ROOT_SLOT).map(frame).into_iter().collect();
        while let Some(top) = stack.last_mut() {
            if let Some(&child) = top.node.children.get(top.next_child) {
                top.next_child += 1;
                if let Some(c) = self.slot(child) {
                    stack.push(frame(c));
                }
                continue;
            }
            let Some(done) = stack.pop() else { break };
            live_updates += done.node.live.updates.load(Ordering::Relaxed);
            let mut level = self.build_level(done.node, done.children, done.partial, now_us);
            self.estimate(done.node, &mut level, done.partial, now_us, priors);
            match stack.last_mut() {
                Some(parent) => {
                    if !level.status.is_finished() {
                        parent.partial += level.percentage.map_or(0.0, |p| p / 100.0);
                    }
                    parent.children.push(level);
                }
                None => root = Some(level),
            }
        }
        let root = root.unwrap_or_else(|| self.placeholder_root(id, now_us));
        let error = root
            .error
            .as_deref()
            .cloned()
            .or_else(|| root.failures_below.as_ref().map(|f| f.first.clone()));
        ProgressState {
            schema_version: SCHEMA_VERSION,
            id,
            operation_type: self.operation_type.clone(),
            name: root.name.clone(),
            status: root.status,
            cancel_requested,
            started_at_us: root.timing.started_at_us,
            completed_at_us: root.timing.completed_at_us,
            error,
            metrics: OperationMetrics {
                updates: self.metrics.updates + live_updates,
                ..self.metrics.clone()
            },
            snapshot_at_us: now_us,
            root,
        }
    }

    fn build_level(
        &self,
        n: &Node,
        children: Vec<ProgressLevel>,
        partial: f64,
        now_us: u64,
    ) -> ProgressLevel {
        let current = n.live.current().unwrap_or(n.finished_children);
        let total = n.live.total();
        let percentage = match (n.status, total) {
            (Status::Completed, _) => Some(100.0),
            (_, Some(t)) if t > 0 => {
                Some(((current as f64 + partial) / t as f64).clamp(0.0, 1.0) * 100.0)
            }
            _ => None,
        };
        let start = n.started().unwrap_or(n.created_us);
        let end = n.completed().unwrap_or(now_us).max(start);
        let alive = end.saturating_sub(n.created_us);
        let busy_us = if n.completed_us != 0 {
            n.busy_ns / 1_000
        } else {
            // Still open: what it has been entered so far, plus the current stretch.
            let entered_at = n.live.entered_at_us.load(Ordering::Relaxed);
            let current = if entered_at == 0 {
                0
            } else {
                now_us.saturating_sub(entered_at)
            };
            n.live.busy_ns.load(Ordering::Relaxed) / 1_000 + current
        };
        let cold = n.cold.as_deref();
        ProgressLevel {
            id: n.id,
            level_type: n.level_type.clone(),
            name: n.name.clone(),
            span_name: Cow::Borrowed(n.callsite.span_name),
            target: Cow::Borrowed(n.callsite.target),
            status: n.status,
            current,
            total,
            percentage,
            unit: cold.and_then(|c| c.unit.clone()),
            message: n.message.clone(),
            timing: Timing {
                created_at_us: n.created_us,
                started_at_us: n.started(),
                completed_at_us: n.completed(),
                elapsed_us: end - start,
                busy_us,
                idle_us: alive.saturating_sub(busy_us),
            },
            error: cold.and_then(|c| c.error.clone()).map(Box::new),
            failures_below: cold.and_then(|c| c.failures_below.clone()).map(Box::new),
            metadata: n.metadata.clone(),
            input_errors: cold.map(|c| c.input_errors.clone()).unwrap_or_default(),
            flattened: cold.is_some_and(|c| c.flattened),
            children,
            folded: cold.map(|c| c.folded.clone()).unwrap_or_default(),
            estimate: None,
            stalled: false,
            resources: cold
                .and_then(|c| c.resources.as_ref())
                .map(|r| Box::new(r.usage())),
        }
    }

    /// Fills in `estimate` and `stalled` of a running node: one observation of its progress
    /// (units done plus its running children's fractions, as the percentage counts them), then
    /// its own rate, else its children (when its progress counts them), else the history of its
    /// kind. `level` is the node as just built, its children already estimated.
    fn estimate(
        &self,
        n: &Node,
        level: &mut ProgressLevel,
        partial: f64,
        now_us: u64,
        priors: &PriorDurations,
    ) {
        if level.status != Status::Running {
            // Failed while still open: nothing to estimate any more.
            drop(n.est.take());
            return;
        }
        let explicit = n.live.current().is_some();
        let counts_children = !explicit && (!n.children.is_empty() || n.finished_children > 0);
        let signal = explicit || level.total.is_some() || counts_children;
        let history = priors.lookup(&n.level_type, &n.name);
        let Some(mut state) = n
            .est
            .take()
            .or_else(|| (signal || history.is_some()).then(Box::default))
        else {
            return;
        };
        if signal {
            let events = n.live.updates.load(Ordering::Relaxed) + n.finished_children;
            state.observe(now_us, level.current as f64 + partial, level.total, events);
        }
        let elapsed = level.timing.elapsed_us;
        let fallback = if state.has_rate() {
            None
        } else {
            counts_children
                .then(|| {
                    let unit_prior = level
                        .children
                        .first()
                        .and_then(|c| priors.for_type(&c.level_type));
                    estimate::from_children(level, unit_prior)
                })
                .flatten()
                .or_else(|| history.and_then(|h| estimate::from_history(h, elapsed)))
        };
        level.estimate = state.estimate(now_us, fallback).map(Box::new);
        level.stalled = state.stalled(now_us, self.limits.stall_factor, history, elapsed);
        n.est.set(Some(state));
    }

    /// Nodes holding estimator state, and completions waiting for the priors (tests).
    #[cfg(test)]
    pub(crate) fn estimator_state(&self) -> (usize, usize) {
        let held = self.nodes.iter().flatten().filter(|n| {
            let state = n.est.take();
            let held = state.is_some();
            n.est.set(state);
            held
        });
        (held.count(), self.pending.len())
    }

    /// Only reachable if the root slot were lost; keeps snapshots total instead of panicking.
    fn placeholder_root(&self, id: NodeId, now_us: u64) -> ProgressLevel {
        let empty: Arc<str> = Arc::from("");
        ProgressLevel {
            id,
            level_type: self.operation_type.clone(),
            name: empty,
            span_name: Cow::Borrowed(""),
            target: Cow::Borrowed(""),
            status: Status::Completed,
            current: 0,
            total: None,
            percentage: None,
            unit: None,
            message: None,
            timing: Timing {
                created_at_us: now_us,
                ..Timing::default()
            },
            error: None,
            failures_below: None,
            metadata: Metadata::default(),
            input_errors: Vec::new(),
            flattened: false,
            children: Vec::new(),
            folded: Vec::new(),
            estimate: None,
            stalled: false,
            resources: None,
        }
    }
}

fn push_input_error(cold: &mut Cold, e: Arc<str>) {
    if cold.input_errors.len() >= MAX_INPUT_ERRORS {
        cold.input_errors.remove(0);
    }
    cold.input_errors.push(e);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_node(name: &str) -> NewNode {
        let s: Arc<str> = Arc::from(name);
        NewNode {
            id: NodeId::next(),
            level_type: Arc::from("block"),
            name: s.clone(),
            callsite: Arc::new(Callsite {
                span_name: "test",
                target: "test",
            }),
            created_us: 0,
            flattened: false,
        }
    }

    fn limits(per_parent: usize, per_op: usize) -> Limits {
        Limits {
            max_finished_children: per_parent,
            max_finished_nodes: per_op,
            ..Limits::default()
        }
    }

    #[test]
    fn folding_keeps_per_parent_bound_and_summary() {
        let root = new_node("root");
        let root_id = root.id;
        let mut tree = Tree::new(root, Arc::from("op"), limits(3, 1_000));
        for i in 0..10u64 {
            let child = new_node("b");
            let id = child.id;
            let slot = tree.add_child(ROOT_SLOT, root_id, child).unwrap();
            tree.start(slot, id, 100 + i * 10);
            tree.close(
                slot,
                id,
                105 + i * 10,
                5_000,
                CloseOutcome::Completed,
                |_| {},
            );
        }
        let snap = tree.snapshot(root_id, false, 1_000);
        assert_eq!(snap.root.children.len(), 3);
        assert_eq!(
            snap.root.current, 10,
            "folded children still count as finished"
        );
        let folded = &snap.root.folded[0];
        assert_eq!(
            (folded.count, folded.completed, folded.min_us, folded.max_us),
            (7, 7, 5, 5)
        );
        assert_eq!(snap.metrics.nodes_folded, 7);
        assert_eq!(snap.metrics.nodes_retained, 4);
    }

    #[test]
    fn failed_children_are_spared_while_others_can_go() {
        let root = new_node("root");
        let root_id = root.id;
        let mut tree = Tree::new(root, Arc::from("op"), limits(2, 1_000));
        let bad = new_node("bad");
        let bad_id = bad.id;
        let bad_slot = tree.add_child(ROOT_SLOT, root_id, bad).unwrap();
        let err = ErrorInfo {
            message: Arc::from("boom"),
            origin: crate::model::ErrorOrigin::Event,
            node_id: bad_id,
            path: vec![],
            target: Arc::from("t"),
            location: None,
            fields: Metadata::default(),
            at_us: 1,
        };
        tree.fail(bad_slot, bad_id, err);
        tree.close(bad_slot, bad_id, 2, 0, CloseOutcome::Completed, |_| {});
        for _ in 0..5 {
            let c = new_node("ok");
            let id = c.id;
            let s = tree.add_child(ROOT_SLOT, root_id, c).unwrap();
            tree.close(s, id, 3, 0, CloseOutcome::Completed, |_| {});
        }
        let snap = tree.snapshot(root_id, false, 10);
        assert!(snap.root.child("bad").is_some(), "failed child kept");
        assert_eq!(snap.root.children.len(), 2);
        assert_eq!(snap.root.failures_below.as_ref().unwrap().count, 1);
        assert_eq!(
            snap.root.failures_below.as_ref().unwrap().last.path.len(),
            2
        );
    }

    #[test]
    fn operation_limit_folds_in_completion_order_and_queue_stays_bounded() {
        let root = new_node("root");
        let root_id = root.id;
        let mut tree = Tree::new(root, Arc::from("op"), limits(usize::MAX, 5));
        for _ in 0..1_000 {
            let c = new_node("c");
            let id = c.id;
            let s = tree.add_child(ROOT_SLOT, root_id, c).unwrap();
            tree.close(s, id, 1, 0, CloseOutcome::Completed, |_| {});
        }
        assert!(tree.finished.len() <= 2 * 5 + 64);
        assert!(
            tree.nodes.len() <= 7,
            "slots are reused: {}",
            tree.nodes.len()
        );
        let snap = tree.snapshot(root_id, false, 10);
        assert_eq!(snap.root.children.len(), 5);
        assert_eq!(snap.root.current, 1_000);
    }
}
