//! How the layer reaches its nodes: a [`NodeHandle`] per tracked span, and the data a new
//! node starts with.
//!
//! The layer holds one handle per tracked span and never sees the arena behind it: a handle is
//! the operation, an opaque [`NodeKey`] and the node's lock-free counters. Counter updates go
//! straight to the counters; everything else takes the operation's lock for one call.

use std::sync::Arc;

use crate::model::{ErrorInfo, NodeId, OperationId, ProgressLevel, ProgressState};
use crate::store::ProgressHandle;
use crate::store::RecentRecord;
use crate::store::counters::LiveCounters;
use crate::store::operation::OperationCell;
use crate::store::update::NodeUpdate;
use crate::store::{Limits, StoreInner};

/// Names shared by every node of one callsite at one level (one pointer per node instead of
/// three): a callsite whose spans name another `progress.level` than its first has one of
/// these per level (see `SpanClass::callsite_at`).
pub(crate) struct Callsite {
    pub(crate) span_name: Arc<str>,
    pub(crate) target: Arc<str>,
    pub(crate) level_type: Arc<str>,
}

impl Callsite {
    pub(crate) fn new(span_name: &str, target: &str, level_type: Arc<str>) -> Self {
        Callsite {
            span_name: Arc::from(span_name),
            target: Arc::from(target),
            level_type,
        }
    }

    /// The same names at another level.
    pub(crate) fn at_level(&self, level_type: Arc<str>) -> Self {
        Callsite {
            span_name: self.span_name.clone(),
            target: self.target.clone(),
            level_type,
        }
    }
}

/// The data a new node starts with.
pub(crate) struct NewNode {
    pub(crate) id: NodeId,
    /// `None`: the span's name (the callsite's, shared).
    pub(crate) name: Option<Arc<str>>,
    /// Span name, target and level.
    pub(crate) callsite: Arc<Callsite>,
    pub(crate) created_us: u64,
    pub(crate) flattened: bool,
    /// `progress.key`: matches a planned slot by key (see `tree::planned`).
    pub(crate) key: Option<Arc<str>>,
    /// Its name came from a field (`progress.name`, a rule's name field), not the span name:
    /// the key the automatic attempt rule matches on.
    pub(crate) keyed: bool,
}

/// Where a node lives in its operation's tree. Opaque outside the store: a stale key (its
/// slot reused by another node) is detected by the id and the call does nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeKey {
    pub(crate) slot: u32,
    pub(crate) id: NodeId,
}

/// A node's operation and key (see [`NodeHandle::at`]).
pub(crate) struct NodeAt {
    op: Arc<OperationCell>,
    key: NodeKey,
}

impl NodeAt {
    /// Adds a child of the node at `under` (this node, or past the depth limit an ancestor) in
    /// this node's operation and applies its first update. `None` if `under` is gone.
    pub(crate) fn add_child(
        self,
        under: NodeKey,
        beside: bool,
        new: NewNode,
        update: NodeUpdate,
    ) -> Option<NodeHandle> {
        // Most spans bring no update: then the closure does not carry its 150 bytes.
        let (key, live) = if update.is_empty() {
            self.op.with_tree(|t| {
                let key = t.add_child(t.attach_point(under, beside)?, new)?;
                Some((key, t.live(key)?))
            })
        } else {
            self.op.with_tree(|t| {
                let key = t.add_child(t.attach_point(under, beside)?, new)?;
                t.apply(key, update);
                Some((key, t.live(key)?))
            })
        }?;
        Some(NodeHandle::new(self.op, key, live))
    }

    /// Keeps an ordinary event in the node's recent events.
    #[inline]
    pub(crate) fn record(&self, record: &RecentRecord) {
        self.op.with_tree(|t| t.record(self.key, record));
    }
}

/// What the layer knows when a node closes; the tree decides the status from it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CloseInfo {
    pub(crate) at_us: u64,
    pub(crate) busy_ns: u64,
    /// The operation was asked to cancel.
    pub(crate) cancel_requested: bool,
    /// The span was never entered (a future never polled, if nothing else happened to it).
    pub(crate) never_entered: bool,
    /// Its callsite reports returns and this span closed without one (see
    /// `CancelReason::Dropped`).
    pub(crate) missing_return: bool,
}

/// What closing a node produced.
pub(crate) struct Closed {
    /// The node as it ended (without children), when asked for; boxed so that closing
    /// without exporters moves a word, not a whole level.
    pub(crate) level: Option<Box<ProgressLevel>>,
    /// The operation's final state, when this closed its root.
    pub(crate) finished: Option<Arc<ProgressState>>,
}

/// The layer's handle to one node.
#[derive(Clone)]
pub(crate) struct NodeHandle {
    op: Arc<OperationCell>,
    key: NodeKey,
    live: Arc<LiveCounters>,
}

impl NodeHandle {
    pub(crate) fn new(op: Arc<OperationCell>, key: NodeKey, live: Arc<LiveCounters>) -> Self {
        NodeHandle { op, key, live }
    }

    /// A [`ProgressHandle`] to this node.
    pub(crate) fn progress(&self) -> ProgressHandle {
        ProgressHandle::new(&self.op, self.key, self.live.clone())
    }

    pub(crate) fn key(&self) -> NodeKey {
        self.key
    }

    pub(crate) fn id(&self) -> NodeId {
        self.key.id
    }

    pub(crate) fn operation_id(&self) -> OperationId {
        self.op.id
    }

    /// Whether this is its operation's root.
    pub(crate) fn is_root(&self) -> bool {
        self.key.id == self.op.id
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.op.is_cancelled()
    }

    pub(crate) fn store(&self) -> &Arc<StoreInner> {
        self.op.store()
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.op.store().limits
    }

    /// The node's counters (entered time, busy time).
    pub(crate) fn live(&self) -> &LiveCounters {
        &self.live
    }

    /// Units done (explicit only) and total, as the counters hold them now.
    pub(crate) fn counters(&self) -> (u64, Option<u64>) {
        (self.live.current().unwrap_or(0), self.live.total())
    }

    /// Counter-only update (the hot path): atomics, no lock. True if anything changed.
    #[inline]
    pub(crate) fn count(&self, total: Option<u64>, current: Option<u64>, inc: u64) -> bool {
        let changed = self.live.apply(total, current, inc);
        if changed {
            self.op.mark_changed();
        }
        changed
    }

    /// Applies an update: counter-only updates lock-free, others under the operation's lock.
    pub(crate) fn apply(&self, update: NodeUpdate) {
        if update.is_counters_only() {
            self.count(update.total, update.current, update.inc);
        } else if !update.is_empty() {
            self.op.with_tree(|t| t.apply(self.key, update));
        }
    }

    /// Marks the node failed; the store fills in the path.
    pub(crate) fn fail(&self, error: ErrorInfo) {
        self.op.with_tree(|t| t.fail(self.key, error));
    }

    /// Adds an event to the node's recent events.
    pub(crate) fn record_event(&self, event: crate::model::RecentEvent) {
        self.op.with_tree(|t| t.record_event(self.key, event));
    }

    /// Records an ERROR event the node did not fail from.
    pub(crate) fn handled_error(&self, error: ErrorInfo) {
        self.op.with_tree(|t| t.handled_error(self.key, error));
    }

    /// Whether the operation was asked to cancel; a `true` answer is remembered on the node
    /// (it stopped because of the request, if it then stops short).
    pub(crate) fn observe_cancel(&self) -> bool {
        let cancelled = self.op.is_cancelled();
        if cancelled {
            self.live.saw_cancel_now();
        }
        cancelled
    }

    /// First enter: pending becomes running; true for the call that started it. Lock-free:
    /// the start time goes to the node's counters, which the tree reads (a pending node with
    /// a start is running).
    #[inline]
    pub(crate) fn start(&self, at_us: u64) -> bool {
        if self.live.is_started() || !self.live.start(at_us) {
            return false;
        }
        self.op.mark_changed();
        true
    }

    /// The node's operation and key, without its counters: what the layer copies out of its
    /// table to add a child or keep an event once the table's lock is released.
    #[inline]
    pub(crate) fn at(&self) -> NodeAt {
        NodeAt {
            op: self.op.clone(),
            key: self.key,
        }
    }

    /// Hangs a subtree kept elsewhere under this node (see `store::graft`); `None` if the
    /// node is gone.
    #[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
    pub(crate) fn graft(
        &self,
        graft: Arc<dyn crate::store::graft::Graft>,
    ) -> Option<crate::store::graft::GraftLink> {
        let path = self.op.with_tree(|t| t.graft(self.key, graft))?;
        Some(crate::store::graft::GraftLink::new(&self.op, path))
    }

    /// Closes the node. `want_level`: also build the node as it ended (for exporters).
    pub(crate) fn close(&self, info: CloseInfo, want_level: bool) -> Closed {
        let (root_closed, level) = self.op.with_tree(|t| t.close(self.key, info, want_level));
        let finished = root_closed.then(|| self.op.store().finish_operation(&self.op));
        Closed { level, finished }
    }
}
