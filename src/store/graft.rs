//! Subtrees kept outside the arena and spliced into snapshots under a node: a child
//! process's reported progress (`crate::process`). The store knows only the [`Graft`] trait.

// Only the `process` feature hangs grafts today.
#![cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]

use std::sync::{Arc, Weak};

use crate::model::ProgressLevel;
use crate::store::operation::OperationCell;

/// At most this many grafts are kept per node; the oldest goes first.
pub(crate) const MAX_GRAFTS_PER_NODE: usize = 256;

/// A subtree that snapshots place after a node's own children.
pub(crate) trait Graft: Send + Sync + 'static {
    /// The subtree as of `now_us`. Called under the operation's lock: it must not touch the
    /// store, only its own state.
    fn level(&self, now_us: u64) -> ProgressLevel;
}

/// What the owner of a graft keeps of the operation it hangs in, without keeping it alive.
#[derive(Clone, Debug)]
pub(crate) struct GraftLink {
    op: Weak<OperationCell>,
    /// Names from the operation's root down to the node that holds the graft.
    pub(crate) path: Vec<Arc<str>>,
}

impl GraftLink {
    pub(crate) fn new(op: &Arc<OperationCell>, path: Vec<Arc<str>>) -> Self {
        GraftLink {
            op: Arc::downgrade(op),
            path,
        }
    }

    /// Tells subscribers that the graft changed (a no-op once the operation is gone).
    pub(crate) fn changed(&self) {
        if let Some(op) = self.op.upgrade() {
            op.mark_changed();
        }
    }

    /// Whether the operation was asked to cancel (false once it is gone).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.op.upgrade().is_some_and(|op| op.is_cancelled())
    }

    /// Whether the operation is still running.
    pub(crate) fn is_live(&self) -> bool {
        self.op.strong_count() > 0
    }
}
