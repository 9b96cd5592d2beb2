//! What the layer keeps per tracked span: a [`SpanEntry`] in its side table (`spans`): the
//! span's [`Tracked`] node (handle, class, exporter throttle), where its children attach and
//! how many threads have it entered (the entered time is in the node's counters); and the
//! counter reports it hands to exporters.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use tracing_core::Metadata as CallsiteMetadata;
use tracing_core::span::Id;

use crate::export::{Exporters, NodeRef, Throttle};
use crate::model::{ErrorInfo, ErrorOrigin, Metadata};
use crate::store::{NodeHandle, NodeKey, NodeUpdate};

/// A tracked span's node, what updates need: cheap to clone (two `Arc`s) for work that
/// must happen outside the table's lock.
#[derive(Clone)]
pub(crate) struct Tracked {
    pub(crate) node: NodeHandle,
    /// The span's callsite: its class is the classifier's (`Classifier::with_class`, a
    /// per-thread cache), so a span costs no reference count of it.
    pub(super) meta: &'static CallsiteMetadata<'static>,
    /// The layer's exporters and this span's throttle of counter reports to them; `None`
    /// (one word) when no exporter of the layer wants counter changes.
    pub(super) export: Option<Arc<SpanExport>>,
}

/// One tracked span's entry in the layer's side table.
pub(crate) struct SpanEntry {
    pub(crate) tracked: Tracked,
    /// Where tracked children attach: this node, or past the depth limit beside it (under its
    /// parent: the tree knows which, so the entry keeps no key for it); and the depth of that
    /// place.
    pub(super) attach_beside: bool,
    pub(super) attach_depth: u16,
    /// How many threads have the span entered right now (async spans can overlap).
    pub(super) entered: AtomicU32,
}

impl SpanEntry {
    /// Where this span's tracked children attach.
    #[inline]
    pub(super) fn attach(&self) -> Attach {
        Attach {
            key: self.tracked.node.key(),
            beside: self.attach_beside,
            depth: self.attach_depth,
        }
    }
}

/// Where children attach: the node at `key`, or beside it (under its parent), and the depth
/// of that place.
#[derive(Clone, Copy)]
pub(crate) struct Attach {
    pub(super) key: NodeKey,
    pub(super) beside: bool,
    pub(super) depth: u16,
}

/// What a span needs to report to its layer's exporters.
pub(crate) struct SpanExport {
    pub(super) exporters: Arc<Exporters>,
    pub(super) throttle: Throttle,
}

impl Tracked {
    /// Applies an update to this node; returns the counter report due to exporters, if the
    /// update changed counters and one is due, to send once no guard is held.
    #[must_use]
    pub(crate) fn apply(&self, update: NodeUpdate) -> Option<CounterReport> {
        let counts = update.has_counters();
        self.node.apply(update);
        if counts { self.counter_report() } else { None }
    }

    /// Counter-only update (the extension trait's hot path): atomics, no lock. Returns the
    /// counter report due to exporters, if any, to send once no guard is held.
    #[inline]
    pub(crate) fn count(
        &self,
        total: Option<u64>,
        current: Option<u64>,
        inc: u64,
    ) -> Option<CounterReport> {
        let changed = self.node.count(total, current, inc);
        // Without exporters (the common case) nothing more is looked at.
        if changed && self.export.is_some() {
            self.counter_report()
        } else {
            None
        }
    }

    /// A counter report for the exporters, if one is due now.
    pub(crate) fn counter_report(&self) -> Option<CounterReport> {
        let export = self.export.as_deref()?;
        let exporters = Some(&export.exporters).filter(|e| e.wants_counters())?;
        let now = self.node.store().clock.now_ns();
        exporters
            .counter_due(&export.throttle, now)
            .then(|| CounterReport {
                exporters: exporters.clone(),
                counters: self.node.counters(),
            })
    }

    /// Marks this node failed.
    pub(crate) fn fail(
        &self,
        message: Arc<str>,
        origin: ErrorOrigin,
        target: Arc<str>,
        location: Option<Arc<str>>,
        fields: Metadata,
    ) {
        self.node
            .fail(self.error_info(message, origin, target, location, fields));
    }

    /// An error of this node, now (the store fills in its path).
    pub(super) fn error_info(
        &self,
        message: Arc<str>,
        origin: ErrorOrigin,
        target: Arc<str>,
        location: Option<Arc<str>>,
        fields: Metadata,
    ) -> ErrorInfo {
        ErrorInfo {
            message,
            origin,
            node_id: self.node.id(),
            path: Vec::new(),
            target,
            location,
            fields,
            at_us: self.node.store().clock.now_us(),
            propagated: false,
            recent_events: Vec::new(),
        }
    }

    pub(super) fn node_ref(&self) -> NodeRef {
        NodeRef {
            operation_id: self.node.operation_id(),
            is_root: self.node.is_root(),
        }
    }
}

/// Counter values to report to exporters once the extensions guard is released.
pub(crate) struct CounterReport {
    pub(super) exporters: Arc<Exporters>,
    pub(super) counters: (u64, Option<u64>),
}

impl CounterReport {
    /// Sends it; call with no extensions guard held (exporters may lock the span's).
    pub(crate) fn send(self, span: &Id) {
        let (current, total) = self.counters;
        for e in self.exporters.iter() {
            e.counters_changed(span, current, total);
        }
    }
}
