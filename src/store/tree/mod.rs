//! One operation's tree: a slot arena of nodes behind the operation's own lock.
//!
//! Every structural change and progress update of an operation goes through its [`Tree`],
//! so two threads working on *different* operations never touch the same lock. Finished
//! nodes are folded into per-parent summaries past the configured limits ([`fold`]), so an
//! operation with a million blocks keeps a bounded number of nodes. [`snapshot`] builds the
//! model from it (read-only); [`estimates`] advances the running nodes' estimators on the
//! store's tick; [`attempts`] keeps a retried unit as one node, its earlier attempts listed;
//! [`planned`] keeps the children a node declared before they start: pending slots that the
//! real spans take, skipped when the node ends first.

mod attempts;
mod estimates;
mod fold;
mod pending;
mod planned;
pub(crate) mod recent;
mod snapshot;
#[cfg(test)]
mod tests;

pub(crate) use planned::PlanUpdate;
pub(crate) use snapshot::TreeRead;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::estimate::{NodeEstimator, Priors};
use crate::model::{
    CancelReason, ErrorInfo, FailureSummary, FoldedChildren, HandledErrors, Metadata, NodeId,
    OperationMetrics, ProgressLevel, RecentEvent, ResourceUsage, Status,
};
use crate::store::Limits;
use crate::store::counters::LiveCounters;
use crate::store::graft::{Graft, MAX_GRAFTS_PER_NODE};
use crate::store::node::{Callsite, CloseInfo, NewNode, NodeKey};
use crate::store::update::NodeUpdate;
use recent::RecentRecord;

/// At most this many input errors are kept per node (older ones are dropped first).
const MAX_INPUT_ERRORS: usize = 8;

/// Slot of the root node: the first node pushed into a new tree.
const ROOT_SLOT: u32 = 0;

/// Fields that rarely change, boxed to keep a live node small.
#[derive(Default)]
struct Cold {
    unit: Option<Arc<str>>,
    error: Option<ErrorInfo>,
    failures_below: Option<FailureSummary>,
    folded: Vec<FoldedChildren>,
    input_errors: Vec<Arc<str>>,
    flattened: bool,
    /// Tracked children that failed / were cancelled (folded ones included).
    failed_children: u64,
    cancelled_children: u64,
    /// ERROR events that did not fail the node.
    handled: Option<HandledErrors>,
    cancel_reason: Option<CancelReason>,
    /// Process CPU/memory samples taken while the node ran (feature `resources`).
    #[cfg_attr(not(feature = "resources"), allow(dead_code))]
    resources: Option<ResourceAcc>,
    /// Subtrees kept elsewhere (a child process's report), spliced in by snapshots.
    grafts: Vec<Arc<dyn Graft>>,
    /// The last events logged inside the node (empty when recent events are off).
    recent: recent::Ring,
    /// The children this node declared before they started (see [`planned`]).
    plan: Option<Box<planned::Plan>>,
    /// A planned slot no span has taken yet.
    planned: bool,
    /// `progress.key` of the span, or the key of its plan entry.
    key: Option<Arc<str>>,
    /// Earlier attempts of a retried node and its own number (see `attempts`).
    attempts: Option<Box<crate::model::Attempts>>,
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
    /// A recorded name and the message; `None` while it has neither (its name is the span's,
    /// shared through the callsite).
    texts: Option<Box<Texts>>,
    /// Span name, target and level type.
    callsite: Arc<Callsite>,
    live: Arc<LiveCounters>,
    created_us: u64,
    /// 0 until closed.
    completed_us: u64,
    /// Retained children in creation order: a list through the children's `prev`/`next`, so
    /// folding one out of the middle is O(1) and a parent needs no heap block for them.
    children: Children,
    /// This node's neighbours in its parent's `children`.
    prev: u32,
    next: u32,
    /// Finished children not folded yet, in completion order: completed and cancelled ones,
    /// and failed ones (spared while others can go). Folding always takes a queue's head.
    fold_ok: Fifo,
    fold_failed: Fifo,
    /// The next node in the parent's `fold_ok` / `fold_failed` queue.
    fold_next: u32,
    /// Tracked children that completed, folded ones included (failed and cancelled ones are
    /// counted in `Cold`).
    finished_children: u64,
    /// Finished children still retained in `children`.
    retained_finished_children: u32,
    /// Boxed: most nodes have none, and a node without stays two words smaller.
    metadata: Option<Box<Metadata>>,
    cold: Option<Box<Cold>>,
    /// Estimator state while running (see `crate::estimate`); advanced by the store's tick,
    /// read by snapshots. Dropped at close.
    est: Option<Box<NodeEstimator>>,
}

/// A node's own name and message, boxed together: most nodes have neither (a unit of work
/// is named by its span), and a node without them stays three words smaller. A message set
/// again reuses the box.
#[derive(Default)]
struct Texts {
    name: Option<Arc<str>>,
    message: Option<Arc<str>>,
}

impl Node {
    fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Default::default)
    }

    fn texts(&mut self) -> &mut Texts {
        self.texts.get_or_insert_with(Default::default)
    }

    /// A recorded name (`None`: the span's).
    fn own_name(&self) -> Option<&Arc<str>> {
        self.texts.as_ref()?.name.as_ref()
    }

    /// Records a name; `None` goes back to the span's.
    fn set_name(&mut self, name: Option<Arc<str>>) {
        match name {
            Some(name) => self.texts().name = Some(name),
            None => {
                if let Some(t) = self.texts.as_deref_mut() {
                    t.name = None;
                }
            }
        }
    }

    fn message(&self) -> Option<&Arc<str>> {
        self.texts.as_ref()?.message.as_ref()
    }

    /// The level type (the callsite's at this level).
    pub(super) fn level_type(&self) -> &Arc<str> {
        &self.callsite.level_type
    }

    /// The display name: a recorded one, else the span's.
    pub(super) fn name(&self) -> &Arc<str> {
        self.own_name().unwrap_or(&self.callsite.span_name)
    }

    /// When first entered; kept in the counters, so a span starts without the lock.
    fn started(&self) -> Option<u64> {
        self.live.started_us()
    }

    /// The status, with a pending node that was entered read as running.
    pub(super) fn status(&self) -> Status {
        if self.status == Status::Pending && self.live.started_us().is_some() {
            Status::Running
        } else {
            self.status
        }
    }

    fn completed(&self) -> Option<u64> {
        (self.completed_us != 0).then_some(self.completed_us)
    }

    fn duration_us(&self) -> u64 {
        let start = self.started().unwrap_or(self.created_us);
        self.completed().unwrap_or(start).saturating_sub(start)
    }

    /// Time from start (or creation) to close, or to `now_us` while open.
    fn elapsed_us(&self, now_us: u64) -> u64 {
        let start = self.started().unwrap_or(self.created_us);
        self.completed()
            .unwrap_or(now_us)
            .max(start)
            .saturating_sub(start)
    }

    fn failed_children(&self) -> u64 {
        self.cold.as_deref().map_or(0, |c| c.failed_children)
    }

    fn failures_below(&self) -> bool {
        self.cold
            .as_deref()
            .is_some_and(|c| c.failures_below.is_some())
    }

    /// Whether the node has a total it has not reached (units done plus failed children).
    fn short_of_total(&self) -> bool {
        let current = self.live.current().unwrap_or(self.finished_children);
        let accounted = current.saturating_add(self.failed_children());
        self.total().is_some_and(|t| accounted < t)
    }

    /// The total it set, else the one its plan implies.
    fn total(&self) -> Option<u64> {
        self.live
            .total()
            .or_else(|| self.cold.as_deref().and_then(|c| c.plan_total()))
    }

    /// Why this node ends cancelled, if it does (failed nodes stay failed; see
    /// [`CancelReason`]).
    fn cancel_reason(&self, info: &CloseInfo) -> Option<CancelReason> {
        if !(info.missing_return || info.never_entered || info.cancel_requested) {
            return None;
        }
        let cold = self.cold.as_deref();
        let short = self.short_of_total();
        let child_cancelled = cold.is_some_and(|c| c.cancelled_children > 0);
        // Never entered and nothing happened to it: a future dropped before its first poll.
        // (A span used as a progress handle without being entered has updates or children.)
        let untouched = info.never_entered
            && self.live.updates() == 0
            && self.children.len as usize == cold.map_or(0, |c| c.waiting())
            && self.finished_children == 0
            && cold.is_none_or(|c| c.failed_children == 0 && c.cancelled_children == 0);
        if info.missing_return || untouched {
            Some(CancelReason::Dropped)
        } else if info.cancel_requested && (self.live.saw_cancel() || short || child_cancelled) {
            Some(CancelReason::Requested)
        } else {
            None
        }
    }

    /// Units done and expected, and the percentage with `partial` units of running children.
    /// A node that completed with failures below, or short of its total, shows what got done,
    /// not 100 %.
    fn progress(&self, partial: f64) -> Progress {
        let current = self.live.current().unwrap_or(self.finished_children);
        let total = self.total();
        let percentage = match (self.status, total) {
            (Status::Completed, _) if !self.failures_below() && !self.short_of_total() => {
                Some(100.0)
            }
            (_, Some(t)) if t > 0 => {
                Some(((current as f64 + partial) / t as f64).clamp(0.0, 1.0) * 100.0)
            }
            _ => None,
        };
        Progress {
            current,
            total,
            percentage,
        }
    }
}

/// No slot: the end of a list.
pub(super) const NIL: u32 = u32::MAX;

/// A node's children: ends of the list through their `prev`/`next`, and how many.
#[derive(Clone, Copy)]
pub(super) struct Children {
    pub(super) first: u32,
    last: u32,
    pub(super) len: u32,
}

impl Children {
    const EMPTY: Children = Children {
        first: NIL,
        last: NIL,
        len: 0,
    };
}

/// A queue of slots through the nodes' `fold_next`.
#[derive(Clone, Copy)]
pub(super) struct Fifo {
    pub(super) head: u32,
    tail: u32,
}

impl Fifo {
    const EMPTY: Fifo = Fifo {
        head: NIL,
        tail: NIL,
    };
}

/// A node's units as snapshots and estimates count them.
struct Progress {
    current: u64,
    total: Option<u64>,
    percentage: Option<f64>,
}

pub(crate) struct Tree {
    nodes: Vec<Option<Node>>,
    free: Vec<u32>,
    /// Finished nodes in completion order, for operation-wide folding. May hold stale entries
    /// (already folded); it is compacted when it grows past twice the limit.
    finished: VecDeque<NodeKey>,
    finished_retained: usize,
    metrics: OperationMetrics,
    limits: Limits,
    pub(crate) operation_type: Arc<str>,
    /// The store's durations of completed nodes (estimate priors), and this tree's completed
    /// nodes not yet added to them: the next estimate tick adds them, or the end of the
    /// operation, so closing a span never takes the shared lock.
    priors: Arc<Priors>,
    pending: pending::PendingPriors,
    /// Planned slots no span took yet, all parents together (bounded by the limits).
    planned_waiting: usize,
    /// The last nodes that closed failed: where the automatic attempt rule looks.
    recent_failures: attempts::RecentFailures,
    /// Bumped by every writer (`OperationCell::with_tree`): a snapshot that let writers in
    /// tells from it whether one came.
    pub(crate) writes: u64,
}

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
            pending: pending::PendingPriors::default(),
            planned_waiting: 0,
            recent_failures: Default::default(),
            writes: 0,
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
            texts: new.name.map(|name| {
                Box::new(Texts {
                    name: Some(name),
                    message: None,
                })
            }),
            callsite: new.callsite,
            live: Arc::new(LiveCounters::new()),
            created_us: new.created_us,
            completed_us: 0,
            children: Children::EMPTY,
            prev: NIL,
            next: NIL,
            fold_ok: Fifo::EMPTY,
            fold_failed: Fifo::EMPTY,
            fold_next: NIL,
            finished_children: 0,
            retained_finished_children: 0,
            metadata: None,
            cold: new.flattened.then(|| {
                Box::new(Cold {
                    flattened: true,
                    ..Cold::default()
                })
            }),
            est: None,
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

    /// The key of the root node, whose id is `id`.
    pub(crate) fn root_key(&self, id: NodeId) -> NodeKey {
        NodeKey {
            slot: ROOT_SLOT,
            id,
        }
    }

    fn node(&self, key: NodeKey) -> Option<&Node> {
        self.nodes
            .get(key.slot as usize)?
            .as_ref()
            .filter(|n| n.id == key.id)
    }

    fn node_mut(&mut self, key: NodeKey) -> Option<&mut Node> {
        self.nodes
            .get_mut(key.slot as usize)?
            .as_mut()
            .filter(|n| n.id == key.id)
    }

    fn slot(&self, slot: u32) -> Option<&Node> {
        self.nodes.get(slot as usize)?.as_ref()
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Node> {
        self.nodes.get_mut(slot as usize)?.as_mut()
    }

    /// The counters of a node, for the span that owns it.
    pub(crate) fn live(&self, key: NodeKey) -> Option<Arc<LiveCounters>> {
        self.node(key).map(|n| n.live.clone())
    }

    /// The node at `key`, or with `beside` its parent; `None` if gone (or `key` a root).
    #[inline]
    pub(crate) fn attach_point(&self, key: NodeKey, beside: bool) -> Option<NodeKey> {
        if !beside {
            return Some(key);
        }
        let slot = self.node(key)?.parent?;
        Some(NodeKey {
            slot,
            id: self.slot(slot)?.id,
        })
    }

    /// Adds a child under `parent`; `None` if the parent is gone.
    pub(crate) fn add_child(&mut self, parent: NodeKey, new: NewNode) -> Option<NodeKey> {
        self.node(parent)?;
        // Only a parent with planned children can have a slot for it (and the node is not
        // moved in and out of `claim` otherwise).
        let new = if self.has_plan(parent.slot) {
            match self.claim(parent.slot, new) {
                Ok(key) => return Some(key),
                Err(new) => new,
            }
        } else {
            new
        };
        let id = new.id;
        let key = new.key.clone();
        let keyed = new.keyed;
        let slot = self.insert(new, Some(parent.slot));
        if key.is_some()
            && let Some(n) = self.slot_mut(slot)
        {
            n.cold().key = key;
        }
        self.link_child(parent.slot, slot);
        let key = NodeKey { slot, id };
        if keyed {
            self.auto_attempt(parent.slot, key);
        }
        Some(key)
    }

    /// Appends `child` to `parent`'s children.
    fn link_child(&mut self, parent: u32, child: u32) {
        let Some(p) = self.slot_mut(parent) else {
            return;
        };
        let last = p.children.last;
        p.children.last = child;
        p.children.len += 1;
        if last == NIL {
            p.children.first = child;
        }
        if let Some(l) = self.slot_mut(last) {
            l.next = child;
        }
        if let Some(c) = self.slot_mut(child) {
            c.prev = last;
            c.next = NIL;
        }
    }

    /// Takes `child` out of `parent`'s children (O(1)).
    fn unlink_child(&mut self, parent: u32, child: u32) {
        let Some((prev, next)) = self.slot(child).map(|c| (c.prev, c.next)) else {
            return;
        };
        match self.slot_mut(prev) {
            Some(p) => p.next = next,
            None => {
                if let Some(p) = self.slot_mut(parent) {
                    p.children.first = next;
                }
            }
        }
        match self.slot_mut(next) {
            Some(n) => n.prev = prev,
            None => {
                if let Some(p) = self.slot_mut(parent) {
                    p.children.last = prev;
                }
            }
        }
        if let Some(p) = self.slot_mut(parent) {
            p.children.len = p.children.len.saturating_sub(1);
        }
    }

    /// The slots of a node's children, in creation order.
    pub(super) fn children_of(&self, n: &Node) -> impl Iterator<Item = u32> + '_ {
        std::iter::successors(Some(n.children.first), |&s| self.slot(s).map(|c| c.next))
            .take_while(|&s| s != NIL)
    }

    /// Queues a finished child of `parent` for folding.
    fn queue_for_fold(&mut self, parent: u32, child: u32, failed: bool) {
        let Some(p) = self.slot_mut(parent) else {
            return;
        };
        let q = if failed {
            &mut p.fold_failed
        } else {
            &mut p.fold_ok
        };
        let tail = q.tail;
        q.tail = child;
        if tail == NIL {
            q.head = child;
        }
        if let Some(t) = self.slot_mut(tail) {
            t.fold_next = child;
        }
        if let Some(c) = self.slot_mut(child) {
            c.fold_next = NIL;
        }
    }

    /// Takes `child` out of `parent`'s fold queues. Folding goes oldest-first in each queue,
    /// so the child is a queue's head (O(1)); anything else is searched for, never left.
    fn unqueue_for_fold(&mut self, parent: u32, child: u32) {
        let next = self.slot(child).map_or(NIL, |c| c.fold_next);
        let Some(p) = self.slot_mut(parent) else {
            return;
        };
        for failed in [false, true] {
            let q = if failed {
                &mut p.fold_failed
            } else {
                &mut p.fold_ok
            };
            if q.head == child {
                q.head = next;
                if next == NIL {
                    q.tail = NIL;
                }
                return;
            }
        }
        // Not at a head (cannot happen while folding goes in completion order): unlink it.
        let heads = [p.fold_ok.head, p.fold_failed.head];
        for (i, head) in heads.into_iter().enumerate() {
            let mut cur = head;
            while cur != NIL {
                let after = self.slot(cur).map_or(NIL, |c| c.fold_next);
                if after == child {
                    if let Some(c) = self.slot_mut(cur) {
                        c.fold_next = next;
                    }
                    if next == NIL
                        && let Some(p) = self.slot_mut(parent)
                    {
                        let q = if i == 0 {
                            &mut p.fold_ok
                        } else {
                            &mut p.fold_failed
                        };
                        q.tail = cur;
                    }
                    return;
                }
                cur = after;
            }
        }
    }

    /// First enter: pending becomes running (the layer starts nodes through their counters,
    /// without the lock; tests drive the tree directly).
    #[cfg(test)]
    pub(crate) fn start(&mut self, key: NodeKey, now_us: u64) {
        if let Some(n) = self.node_mut(key) {
            if n.status == Status::Pending {
                n.status = Status::Running;
            }
            n.live.start(now_us);
        }
    }

    /// Applies an update; returns false if the node is gone or closed (the update is dropped).
    pub(crate) fn apply(&mut self, key: NodeKey, update: NodeUpdate) -> bool {
        if update.is_empty() {
            return true;
        }
        if let Some(number) = update.attempt {
            self.set_attempt(key, number);
        }
        let max_meta = self.limits.max_metadata_entries;
        let Some(n) = self.node_mut(key) else {
            return false;
        };
        if n.status.is_finished() {
            return false;
        }
        let counted = n.live.apply(update.total, update.current, update.inc);
        let plan = update.planned;
        if let Some(message) = update.message {
            n.texts().message = Some(message);
        }
        if let Some(name) = update.name {
            n.set_name(Some(name));
        }
        if update.unit.is_some() {
            n.cold().unit = update.unit;
        }
        let mut errors = update.input_errors.len() as u64;
        if !update.metadata.is_empty() && n.metadata.is_none() {
            // Sized to the first fields (a growing Vec would start at four entries).
            n.metadata = Some(Box::new(Metadata::with_capacity(
                update.metadata.len().min(max_meta),
            )));
        }
        for (k, v) in update.metadata {
            let meta = n.metadata.get_or_insert_with(Default::default);
            if meta.len() < max_meta || meta.get(&k).is_some() {
                meta.insert(k, v);
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
        if let Some(plan) = plan {
            self.plan(key, *plan);
        }
        true
    }

    /// Marks a node failed and tells every ancestor. The node keeps its first error.
    pub(crate) fn fail(&mut self, key: NodeKey, error: ErrorInfo) {
        let Some(mut error) = self.placed(key, error) else {
            return;
        };
        let Some(n) = self.node_mut(key) else {
            return;
        };
        let first = n.status != Status::Failed;
        n.status = Status::Failed;
        let mut parent = n.parent;
        let cold = n.cold();
        // A node that fails after something below it failed is most likely passing that
        // failure up: ancestors already count it under its root cause.
        error.propagated = cold.failures_below.is_some();
        error.recent_events = cold.recent.to_vec();
        let root_cause = !error.propagated && cold.error.is_none();
        if cold.error.is_none() {
            cold.error = Some(error.clone());
        }
        if first {
            self.metrics.nodes_failed += 1;
        }
        if !root_cause {
            return;
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

    /// Keeps an event already in model form (an error event's copy) in the node's recent events.
    pub(crate) fn record_event(&mut self, key: NodeKey, event: RecentEvent) {
        let (n, bytes) = (self.limits.recent_events, self.limits.recent_event_bytes);
        if let Some(node) = self.node_mut(key) {
            node.cold().recent.push_event(event, n, bytes);
        }
    }

    /// Keeps an ordinary event in the node's recent events.
    #[inline]
    pub(crate) fn record(&mut self, key: NodeKey, record: &RecentRecord) {
        let (n, bytes) = (self.limits.recent_events, self.limits.recent_event_bytes);
        if let Some(node) = self.node_mut(key) {
            node.cold().recent.push(record, n, bytes);
        }
    }

    /// Records an ERROR event the node did not fail from (kept as context).
    pub(crate) fn handled_error(&mut self, key: NodeKey, error: ErrorInfo) {
        let Some(error) = self.placed(key, error) else {
            return;
        };
        let Some(n) = self.node_mut(key) else {
            return;
        };
        match &mut n.cold().handled {
            Some(h) => {
                h.count += 1;
                h.last = error;
            }
            slot @ None => {
                *slot = Some(HandledErrors {
                    count: 1,
                    last: error,
                })
            }
        }
    }

    /// The error with the node's id and path filled in; `None` if the node is gone.
    fn placed(&self, key: NodeKey, mut error: ErrorInfo) -> Option<ErrorInfo> {
        error.path = self.path(key)?;
        error.node_id = key.id;
        Some(error)
    }

    /// Hangs `graft` under the node (after its own children in snapshots); returns the
    /// node's path, or `None` if the node is gone.
    #[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
    pub(crate) fn graft(&mut self, key: NodeKey, graft: Arc<dyn Graft>) -> Option<Vec<Arc<str>>> {
        let path = self.path(key)?;
        let grafts = &mut self.node_mut(key)?.cold().grafts;
        if grafts.len() >= MAX_GRAFTS_PER_NODE {
            grafts.remove(0);
        }
        grafts.push(graft);
        Some(path)
    }

    /// Names from the root down to this node.
    fn path(&self, key: NodeKey) -> Option<Vec<Arc<str>>> {
        let mut path = Vec::new();
        let mut cur = Some(self.node(key)?);
        while let Some(n) = cur {
            path.push(n.name().clone());
            cur = n.parent.and_then(|p| self.slot(p));
        }
        path.reverse();
        Some(path)
    }

    /// Closes a node; a failed node stays failed. Returns whether the root closed and, with
    /// `want_level`, the node as it ended (built before folding can take it away).
    pub(crate) fn close(
        &mut self,
        key: NodeKey,
        info: CloseInfo,
        want_level: bool,
    ) -> (bool, Option<Box<ProgressLevel>>) {
        let Some(n) = self.node_mut(key) else {
            return (false, None);
        };
        if n.status.is_finished() && n.completed_us != 0 {
            return (false, None);
        }
        let reason = n.cancel_reason(&info);
        n.status = match reason {
            _ if n.status == Status::Failed => Status::Failed,
            Some(reason) => {
                n.cold().cancel_reason = Some(reason);
                Status::Cancelled
            }
            None => Status::Completed,
        };
        n.completed_us = info.at_us.max(1);
        // Kept in the counters (the node itself stays a word smaller).
        n.live.set_busy_ns(info.busy_ns);
        // Progress handles that outlive the span stop changing it.
        n.live.close();
        drop(n.est.take());
        let completed = n.status == Status::Completed;
        let parent = n.parent;
        let status = n.status;
        self.end_plan(key.slot, status, reason, info.at_us);
        // All children are finished at close, so no running fraction is left to add.
        let level = want_level
            .then(|| {
                self.node(key)
                    .map(|n| Box::new(self.lone_level(n, n.completed_us)))
            })
            .flatten();
        // (Fields borrowed apart: the node is read while the buffer is written.)
        if completed && let Some(n) = self.nodes.get(key.slot as usize).and_then(Option::as_ref) {
            self.pending.push(n.level_type(), n.name(), n.duration_us());
        }
        let Some(parent) = parent else {
            self.pending.record_into(&self.priors);
            return (true, level);
        };
        if status == Status::Failed {
            self.recent_failures.push(key);
        }
        // Only completed children are done work; failed and cancelled ones are counted
        // apart, so progress text can tell them from it.
        self.retain_finished(parent, key, status == Status::Failed, |p| match status {
            Status::Completed => p.finished_children += 1,
            Status::Failed => p.cold().failed_children += 1,
            _ => p.cold().cancelled_children += 1,
        });
        self.enforce_operation_limit();
        (false, level)
    }

    /// Attributes one process resource sample to every running node (feature `resources`).
    #[cfg(feature = "resources")]
    pub(crate) fn record_resources(&mut self, cpu_percent: f64, rss_bytes: u64) {
        for node in self.nodes.iter_mut().flatten() {
            if node.status() == Status::Running {
                node.cold()
                    .resources
                    .get_or_insert_with(ResourceAcc::default)
                    .add(cpu_percent, rss_bytes);
            }
        }
    }
}

fn push_input_error(cold: &mut Cold, e: Arc<str>) {
    if cold.input_errors.len() >= MAX_INPUT_ERRORS {
        cold.input_errors.remove(0);
    }
    cold.input_errors.push(e);
}
