//! [`ProgressHandle`]: a node's counters for code that updates in a tight loop.
//!
//! A handle holds the node's counters and its operation's [`OpSignal`] (both small, shared
//! with the tree), and only a weak reference to the operation's tree: an update is one atomic
//! add plus relaxed reads, and a handle that outlives its operation keeps those two small
//! blocks alive, not the tree.

use std::fmt;
use std::sync::{Arc, Weak};

use crate::model::{NodeId, OperationId};
use crate::store::counters::LiveCounters;
use crate::store::node::NodeKey;
use crate::store::operation::{OpSignal, OperationCell};
use crate::store::update::NodeUpdate;

/// A cheap handle to one progress node, for updates in a tight loop and across threads.
///
/// Get it once with [`ProgressSpanExt::progress`](crate::ProgressSpanExt::progress), clone it
/// into worker threads, and call [`inc`](Self::inc) per unit: one atomic add, no registry
/// lookup, no lock. It is also the cheap cancellation check for workers
/// ([`is_cancelled`](Self::is_cancelled)).
///
/// Without the layer (or for a span no progress layer tracks) the handle is empty and every
/// method does nothing; after its node closed, updates are ignored. A handle never keeps a
/// finished operation's tree alive.
///
/// Exporters see changes made through a handle when the node closes (and with the next
/// update through the span), not as they happen.
///
/// ```
/// use tracing_progress::ProgressSpanExt;
/// use tracing_subscriber::prelude::*;
/// let (layer, store) = tracing_progress::layer();
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     let span = tracing::info_span!("scan", progress.level = "scan", progress.total = 8);
///     let progress = span.progress();
///     std::thread::scope(|s| {
///         for _ in 0..2 {
///             let p = progress.clone();
///             s.spawn(move || (0..4).for_each(|_| p.inc(1)));
///         }
///     });
///     let op = store.get(span.operation_id().unwrap()).unwrap();
///     assert_eq!(op.root.current, 8);
/// });
/// ```
#[derive(Clone, Default)]
pub struct ProgressHandle {
    inner: Option<Inner>,
}

#[derive(Clone)]
struct Inner {
    live: Arc<LiveCounters>,
    signal: Arc<OpSignal>,
    /// For updates that need the tree (the message); does not keep it alive.
    op: Weak<OperationCell>,
    key: NodeKey,
    operation_id: OperationId,
}

impl ProgressHandle {
    pub(crate) fn new(op: &Arc<OperationCell>, key: NodeKey, live: Arc<LiveCounters>) -> Self {
        ProgressHandle {
            inner: Some(Inner {
                live,
                signal: op.signal().clone(),
                op: Arc::downgrade(op),
                key,
                operation_id: op.id,
            }),
        }
    }

    /// The node's counters, while it is open.
    #[inline]
    fn open(&self) -> Option<&Inner> {
        self.inner.as_ref().filter(|i| !i.live.is_closed())
    }

    /// Adds to the number of units done.
    #[inline]
    pub fn inc(&self, delta: u64) {
        if delta == 0 {
            return;
        }
        if let Some(i) = self.open() {
            i.live.inc(delta);
            i.signal.mark_changed();
        }
    }

    /// Sets the number of units done.
    pub fn set_current(&self, current: u64) {
        if let Some(i) = self.open() {
            i.live.apply(None, Some(current), 0);
            i.signal.mark_changed();
        }
    }

    /// Sets the number of units expected.
    pub fn set_total(&self, total: u64) {
        if let Some(i) = self.open() {
            i.live.apply(Some(total), None, 0);
            i.signal.mark_changed();
        }
    }

    /// Sets the message (takes the operation's lock once).
    pub fn set_message(&self, message: &str) {
        let Some(i) = self.open() else { return };
        let Some(op) = i.op.upgrade() else { return };
        let max = op.store().limits.max_text_len;
        let update = NodeUpdate {
            message: Some(Arc::from(crate::layer::sanitize(message, max))),
            ..NodeUpdate::default()
        };
        op.with_tree(|t| t.apply(i.key, update));
    }

    /// Whether the node's operation was asked to cancel (one relaxed read). A `true` answer is
    /// remembered on the node: it stopped because of the request, if it then stops short.
    #[inline]
    pub fn is_cancelled(&self) -> bool {
        let Some(i) = &self.inner else { return false };
        let cancelled = i.signal.is_cancelled();
        if cancelled {
            i.live.saw_cancel_now();
        }
        cancelled
    }

    /// Whether the handle refers to a node that is still open (false without the layer).
    pub fn is_open(&self) -> bool {
        self.open().is_some()
    }

    /// Id of the node, if the handle refers to one.
    pub fn node_id(&self) -> Option<NodeId> {
        self.inner.as_ref().map(|i| i.key.id)
    }

    /// Id of the node's operation, if the handle refers to one.
    pub fn operation_id(&self) -> Option<OperationId> {
        self.inner.as_ref().map(|i| i.operation_id)
    }
}

impl fmt::Debug for ProgressHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressHandle")
            .field("node_id", &self.node_id())
            .field("open", &self.is_open())
            .finish()
    }
}
