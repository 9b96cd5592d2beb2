//! What the layer keeps per tracked span: a [`Tracked`] entry in the span's extensions (its
//! node handle, entered time, exporter throttle), chained when two progress layers track the
//! same span, and the counter reports it hands to exporters.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

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
    /// Where tracked children attach: this node (`None`), or past the depth limit the same
    /// place as this node's siblings (boxed: rare, and a live span stays one word smaller);
    /// and the depth of that place.
    pub(super) attach_elsewhere: Option<Box<NodeKey>>,
    pub(super) attach_depth: u16,
    /// Set by the span's `#[instrument(ret)]` / `#[instrument(err)]` event: it returned.
    pub(super) returned: AtomicBool,
    /// How many threads have the span entered right now (async spans can overlap).
    pub(super) entered: AtomicU32,
    pub(super) entered_at_ns: AtomicU64,
    /// The layer's exporters and this span's throttle of counter reports to them; `None`
    /// (one word) when no exporter of the layer wants counter changes.
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
    /// Where this span's tracked children attach.
    #[inline]
    pub(super) fn attach(&self) -> Attach {
        Attach {
            key: self
                .attach_elsewhere
                .as_deref()
                .copied()
                .unwrap_or(self.node.key()),
            depth: self.attach_depth,
        }
    }

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

/// Which span ids may be tracked: a counting filter over span ids, so enter/exit/close of a
/// span the layer does not track costs one relaxed load instead of a registry lookup and an
/// extensions lock. A zero bucket means "certainly not tracked"; a non-zero one is looked up
/// (ids sharing a bucket with a tracked span only pay what every span paid before). Bounded:
/// a fixed table whatever the number of spans.
pub(crate) struct TrackedIds {
    buckets: Box<[AtomicU32]>,
}

/// 4,096 buckets (16 KiB per layer): with a few dozen tracked spans open, about 1 % of
/// untracked spans share a bucket with one.
const BUCKET_BITS: u32 = 12;

impl TrackedIds {
    pub(crate) fn new() -> Self {
        TrackedIds {
            buckets: (0..1usize << BUCKET_BITS)
                .map(|_| AtomicU32::new(0))
                .collect(),
        }
    }

    #[inline]
    fn bucket(&self, id: &Id) -> &AtomicU32 {
        // Fibonacci hashing: registry ids are slab indices, dense in their low bits.
        let h = id.into_u64().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKET_BITS);
        &self.buckets[h as usize]
    }

    /// A span with this id is tracked from now on, until [`remove`](Self::remove).
    pub(crate) fn insert(&self, id: &Id) {
        self.bucket(id).fetch_add(1, Ordering::Relaxed);
    }

    /// The tracked span with this id closed.
    pub(crate) fn remove(&self, id: &Id) {
        let b = self.bucket(id);
        // Never below zero, even if called without a matching insert.
        let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// False if no span with this id is tracked; true if one may be. The span's creation
    /// happened before any use of its id on another thread, so a relaxed read sees its insert.
    #[inline]
    pub(crate) fn may_contain(&self, id: &Id) -> bool {
        self.bucket(id).load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_ids_never_forget_a_tracked_span() {
        let ids = TrackedIds::new();
        let all: Vec<Id> = (1..=20_000).map(Id::from_u64).collect();
        for id in all.iter().step_by(3) {
            ids.insert(id);
        }
        // No false negatives; and with 6,667 tracked in 4,096 buckets some are still free.
        assert!(all.iter().step_by(3).all(|id| ids.may_contain(id)));
        assert!(all.iter().any(|id| !ids.may_contain(id)));
        for id in all.iter().step_by(3) {
            ids.remove(id);
        }
        assert!(all.iter().all(|id| !ids.may_contain(id)));
        // A remove without an insert does not wrap the bucket around.
        ids.remove(&all[0]);
        assert!(!ids.may_contain(&all[0]));
    }
}
