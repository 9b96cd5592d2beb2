//! What the layer keeps per tracked span: a [`Tracked`] entry in the span's extensions (its
//! node handle, entered time, exporter throttle), chained when two progress layers track the
//! same span, and the counter reports it hands to exporters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};

use tracing_core::span::Id;

use super::classify::SpanClass;
use crate::export::{Exporters, NodeRef, Throttle};
use crate::model::{ErrorInfo, ErrorOrigin, Metadata};
use crate::store::{NodeHandle, NodeKey, NodeUpdate};

/// Per-span state in the registry's extensions.
pub(crate) struct Tracked {
    /// Id of the layer that made this entry.
    pub(super) layer: u32,
    pub(crate) node: NodeHandle,
    /// The callsite's class, so `on_record` needs no cache lookup.
    pub(super) class: Arc<SpanClass>,
    /// Where tracked children attach: this node, or past the depth limit the same place as
    /// this node's siblings; and the depth of that place.
    pub(super) attach: NodeKey,
    pub(super) attach_depth: u16,
    pub(super) started: AtomicBool,
    /// Set by the span's `#[instrument(ret)]` / `#[instrument(err)]` event: it returned.
    pub(super) returned: AtomicBool,
    /// How many threads have the span entered right now (async spans can overlap).
    pub(super) entered: AtomicU32,
    pub(super) entered_at_ns: AtomicU64,
    /// The layer's exporters and this span's throttle of counter reports to them; `None`
    /// (one word) when the layer has no exporters.
    pub(super) export: Option<Box<SpanExport>>,
    /// The same span's entry of another progress layer.
    pub(super) next: Option<Box<Tracked>>,
}

/// A node that children attach to, with its depth.
#[derive(Clone, Copy)]
pub(crate) struct Attach {
    pub(super) key: NodeKey,
    pub(super) depth: u16,
}

/// What a span needs to report to its layer's exporters.
pub(crate) struct SpanExport {
    pub(super) exporters: Arc<Exporters>,
    pub(super) throttle: Throttle,
}

impl Tracked {
    /// This layer's entry in the chain starting at `self`.
    #[inline]
    pub(super) fn of(&self, layer: u32) -> Option<&Tracked> {
        let mut t = Some(self);
        while let Some(e) = t {
            if e.layer == layer {
                return Some(e);
            }
            t = e.next.as_deref();
        }
        None
    }

    /// Appends another layer's entry at the end of the chain.
    pub(super) fn push_back(&mut self, other: Tracked) {
        match &mut self.next {
            Some(next) => next.push_back(other),
            None => self.next = Some(Box::new(other)),
        }
    }

    /// Every entry of the chain (one per progress layer that tracks the span).
    pub(crate) fn chain(&self) -> impl Iterator<Item = &Tracked> {
        std::iter::successors(Some(self), |t| t.next.as_deref())
    }

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
