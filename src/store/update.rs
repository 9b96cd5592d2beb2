//! One change to a node, as the layer reads it from span fields, events and the extension trait.

use std::sync::Arc;

use crate::model::FieldValue;

/// One progress update of a node. Counter-only updates are applied lock-free; the rest under
/// the operation's lock.
#[derive(Default)]
pub(crate) struct NodeUpdate {
    pub(crate) total: Option<u64>,
    pub(crate) current: Option<u64>,
    pub(crate) inc: u64,
    pub(crate) message: Option<Arc<str>>,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) unit: Option<Arc<str>>,
    pub(crate) metadata: Vec<(Arc<str>, FieldValue)>,
    pub(crate) input_errors: Vec<Arc<str>>,
    /// Children declared before they start (see `tree::planned`).
    pub(crate) planned: Option<Box<crate::store::tree::PlanUpdate>>,
    /// An explicit attempt number (`progress.attempt`, `set_attempt`).
    pub(crate) attempt: Option<u32>,
}

impl NodeUpdate {
    pub(crate) fn is_empty(&self) -> bool {
        !self.has_counters() && self.is_counters_only()
    }

    /// Whether it changes total, current or inc.
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
            && self.planned.is_none()
            && self.attempt.is_none()
    }
}
