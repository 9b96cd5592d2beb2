//! The recording side: a [`Layer`] that maps spans to progress nodes.
//!
//! This module is the hot path. Per tracked span it keeps one private [`Tracked`] value in the
//! span's extensions (the operation it belongs to and its slot there, plus entered/busy time in
//! atomics). Untracked spans cost a field-name scan at creation and an extensions lookup on
//! enter/exit/close. The layer never emits `tracing` events, never holds an extensions guard
//! while calling out, and only ever locks the one operation a span belongs to.

mod builder;
pub(crate) mod classify;
mod panic;
pub(crate) mod span_ext;
mod visitor;

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::{LookupSpan, SpanRef};

pub use builder::{BuildError, Builder, layer};
use classify::{Classifier, SpanClass};
use visitor::FieldVisitor;

use crate::model::{ErrorInfo, ErrorOrigin, Metadata, NodeId};
use crate::store::tree::{LiveCounters, ROOT_SLOT, Update};
use crate::store::{CloseOutcome, NewNode, OperationCell, StoreInner};

/// A `tracing_subscriber` [`Layer`] that builds the progress tree.
///
/// Create it with [`layer()`](crate::layer) or [`Builder`]; both hand back the [`Store`](crate::Store)
/// to query. `S` is the subscriber the layer is added to and is inferred.
///
/// [`Layer`]: tracing_subscriber::Layer
pub struct ProgressLayer<S> {
    shared: Arc<Shared>,
    with_context: span_ext::WithContext,
    _subscriber: PhantomData<fn(S)>,
}

struct Shared {
    store: Arc<StoreInner>,
    classifier: Classifier,
    capture_panics: bool,
    #[cfg(feature = "otel")]
    otel: Option<Arc<crate::otel::Exporter>>,
}

impl<S> fmt::Debug for ProgressLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressLayer")
            .field("capture_panics", &self.shared.capture_panics)
            .finish_non_exhaustive()
    }
}

/// Per-span state in the registry's extensions.
pub(crate) struct Tracked {
    pub(crate) op: Arc<OperationCell>,
    /// The callsite's class, so `on_record` needs no cache lookup.
    class: Arc<SpanClass>,
    /// The node's counters, shared with the tree: counter updates take no lock.
    live: Arc<LiveCounters>,
    pub(crate) slot: u32,
    pub(crate) id: NodeId,
    /// Where tracked children attach: this node, or past the depth limit the same place as
    /// this node's siblings.
    attach: Attach,
    started: AtomicBool,
    /// How many threads have the span entered right now (async spans can overlap).
    entered: AtomicU32,
    entered_at_ns: AtomicU64,
    /// Throttle state of this span's OpenTelemetry progress events.
    #[cfg(feature = "otel")]
    otel_events: crate::otel::SpanEvents,
}

/// A node that children attach to, with its depth.
#[derive(Clone, Copy)]
struct Attach {
    slot: u32,
    id: NodeId,
    depth: u16,
}

/// The nearest tracked ancestor of a new span.
struct Parent {
    op: Arc<OperationCell>,
    attach: Attach,
    id: NodeId,
}

impl Tracked {
    /// Applies an update to this node: counter-only updates lock-free, others under the
    /// operation's lock.
    pub(crate) fn apply(&self, update: Update) {
        if update.is_counters_only() {
            self.count(update.total, update.current, update.inc);
        } else if !update.is_empty() {
            self.op.with_tree(|t| t.apply(self.slot, self.id, update));
        }
    }

    /// Counter-only update (the extension trait's hot path): atomics, no lock.
    #[inline]
    pub(crate) fn count(&self, total: Option<u64>, current: Option<u64>, inc: u64) -> bool {
        let changed = self.live.apply(total, current, inc);
        if changed {
            self.op.mark_changed();
        }
        changed
    }

    /// A progress event for the OpenTelemetry span, if one is due.
    #[cfg(feature = "otel")]
    pub(crate) fn otel_event_due(
        &self,
        exporter: Option<&crate::otel::Exporter>,
    ) -> Option<crate::otel::ProgressEvent> {
        let exporter = exporter?;
        let now = self.op.store().clock.now_ns();
        exporter
            .due(&self.otel_events, now)
            .then(|| crate::otel::ProgressEvent {
                current: self.live.current().unwrap_or(0),
                total: self.live.total(),
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
        let at_us = self.op.store().clock.now_us();
        let error = ErrorInfo {
            message,
            origin,
            node_id: self.id,
            path: Vec::new(),
            target,
            location,
            fields,
            at_us,
        };
        self.op.with_tree(|t| t.fail(self.slot, self.id, error));
    }
}

impl<S> ProgressLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn new(store: Arc<StoreInner>, classifier: Classifier, capture_panics: bool) -> Self {
        if capture_panics {
            panic::install_hook();
        }
        ProgressLayer {
            shared: Arc::new(Shared {
                store,
                classifier,
                capture_panics,
                #[cfg(feature = "otel")]
                otel: None,
            }),
            with_context: span_ext::WithContext::new::<S>(),
            _subscriber: PhantomData,
        }
    }

    #[cfg(feature = "otel")]
    pub(crate) fn set_otel(&mut self, exporter: Arc<crate::otel::Exporter>) {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.otel = Some(exporter);
        }
    }

    /// The OpenTelemetry side, if configured.
    #[cfg(feature = "otel")]
    pub(crate) fn otel(&self) -> Option<&crate::otel::Exporter> {
        self.shared.otel.as_deref()
    }

    /// The nearest tracked span at or above `span`.
    fn nearest_tracked(span: Option<SpanRef<'_, S>>) -> Option<Parent> {
        span?.scope().find_map(|s| {
            s.extensions().get::<Tracked>().map(|t| Parent {
                op: t.op.clone(),
                attach: t.attach,
                id: t.id,
            })
        })
    }

    fn new_tracked(
        &self,
        class: &Arc<SpanClass>,
        attrs: &Attributes<'_>,
        span: &SpanRef<'_, S>,
    ) -> Option<Tracked> {
        let store = &self.shared.store;
        let mut visitor = FieldVisitor::new(class, store.limits.max_text_len, false);
        attrs.record(&mut visitor);
        let FieldVisitor {
            mut update, extra, ..
        } = visitor;
        let parent = Self::nearest_tracked(span.parent());
        let created_ns = store.clock.now_ns();
        let name = update
            .name
            .take()
            .unwrap_or_else(|| class.span_name.clone());
        let level_type = extra.level.unwrap_or_else(|| class.level_type.clone());
        let node_id = NodeId::next();
        let max_depth = store.limits.max_depth;
        let mut new = NewNode {
            id: node_id,
            level_type,
            name,
            callsite: class.callsite.clone(),
            created_us: store.clock.ns_to_unix_us(created_ns),
            flattened: false,
        };
        if let Some(Parent {
            op,
            attach: at,
            id: parent_id,
        }) = parent
        {
            let depth = at.depth.saturating_add(1);
            new.flattened = at.id != parent_id;
            let attached = op.with_tree(|t| {
                let slot = t.add_child(at.slot, at.id, new)?;
                t.apply(slot, node_id, update);
                Some((slot, t.live(slot, node_id)?))
            });
            if let Some((slot, live)) = attached {
                // At the depth limit, children go where this node went: beside it.
                let attach = if depth < max_depth {
                    Attach {
                        slot,
                        id: node_id,
                        depth,
                    }
                } else {
                    at
                };
                return Some(Tracked::new(
                    op,
                    class.clone(),
                    live,
                    (slot, node_id),
                    attach,
                    created_ns,
                ));
            }
            // The parent node is gone (cannot normally happen): track as a new operation.
            return None;
        }
        let operation_type = extra
            .operation
            .or_else(|| class.operation_type.clone())
            .unwrap_or_else(|| new.level_type.clone());
        let op = store.start_operation(new, operation_type);
        let live = op.with_tree(|t| {
            t.apply(ROOT_SLOT, node_id, update);
            t.live(ROOT_SLOT, node_id)
        })?;
        let attach = Attach {
            slot: ROOT_SLOT,
            id: node_id,
            depth: 0,
        };
        Some(Tracked::new(
            op,
            class.clone(),
            live,
            (ROOT_SLOT, node_id),
            attach,
            created_ns,
        ))
    }
}

impl Tracked {
    #[cfg_attr(not(feature = "otel"), allow(unused_variables))]
    fn new(
        op: Arc<OperationCell>,
        class: Arc<SpanClass>,
        live: Arc<LiveCounters>,
        (slot, id): (u32, NodeId),
        attach: Attach,
        created_ns: u64,
    ) -> Self {
        Tracked {
            op,
            class,
            live,
            slot,
            id,
            attach,
            started: AtomicBool::new(false),
            entered: AtomicU32::new(0),
            entered_at_ns: AtomicU64::new(0),
            #[cfg(feature = "otel")]
            otel_events: crate::otel::SpanEvents::new(created_ns),
        }
    }
}

impl<S> tracing_subscriber::Layer<S> for ProgressLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(class) = self.shared.classifier.classify(attrs.metadata()) else {
            return;
        };
        let Some(span) = ctx.span(id) else { return };
        if let Some(tracked) = self.new_tracked(&class, attrs, &span) {
            span.extensions_mut().insert(tracked);
            #[cfg(feature = "otel")]
            if let Some(otel) = self.otel() {
                otel.check_order(id);
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        let Some(tracked) = ext.get::<Tracked>() else {
            return;
        };
        let max_text = self.shared.store.limits.max_text_len;
        let mut visitor = FieldVisitor::new(&tracked.class, max_text, false);
        values.record(&mut visitor);
        #[cfg(feature = "otel")]
        let counts = visitor.update.has_counters();
        tracked.apply(visitor.update);
        #[cfg(feature = "otel")]
        if counts {
            let due = tracked.otel_event_due(self.otel());
            drop(ext);
            if let (Some(otel), Some(event)) = (self.otel(), due) {
                otel.emit_progress(id, event);
            }
        }
    }

    fn on_register_dispatch(&self, _dispatch: &tracing_core::Dispatch) {
        #[cfg(feature = "otel")]
        if let Some(otel) = self.otel() {
            otel.register_dispatch(_dispatch);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let is_error = *meta.level() == Level::ERROR;
        if !is_error && !Classifier::declares_progress(meta) {
            return;
        }
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(span) = scope
            .into_iter()
            .find(|s| s.extensions().get::<Tracked>().is_some())
        else {
            return;
        };
        let class = self.shared.classifier.event_class(meta);
        let mut visitor = FieldVisitor::new(&class, self.shared.store.limits.max_text_len, true);
        event.record(&mut visitor);
        let FieldVisitor {
            mut update, extra, ..
        } = visitor;
        let ext = span.extensions();
        let Some(tracked) = ext.get::<Tracked>() else {
            return;
        };
        if is_error {
            let message = extra
                .event_message
                .or(extra.event_error)
                .unwrap_or_else(|| Arc::from(format!("error event in {}", meta.name())));
            let mut fields = Metadata::default();
            for (k, v) in std::mem::take(&mut update.metadata) {
                fields.insert(k, v);
            }
            let location = meta
                .file()
                .map(|f| Arc::from(format!("{f}:{}", meta.line().unwrap_or(0))));
            tracked.apply(update);
            tracked.fail(
                message,
                ErrorOrigin::Event,
                Arc::from(class.callsite.target),
                location,
                fields,
            );
        } else {
            if update.message.is_none() {
                update.message = extra.event_message;
            }
            #[cfg(feature = "otel")]
            let counts = update.has_counters();
            tracked.apply(update);
            #[cfg(feature = "otel")]
            if counts {
                let due = tracked.otel_event_due(self.otel());
                drop(ext);
                if let (Some(otel), Some(event)) = (self.otel(), due) {
                    otel.emit_progress(&span.id(), event);
                }
            }
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        let Some(t) = ext.get::<Tracked>() else {
            return;
        };
        let now = self.shared.store.clock.now_ns();
        let at = self.shared.store.clock.ns_to_unix_us(now);
        if t.entered.fetch_add(1, Ordering::AcqRel) == 0 {
            t.entered_at_ns.store(now, Ordering::Release);
            t.live.entered_at_us.store(at.max(1), Ordering::Relaxed);
        }
        if !t.started.swap(true, Ordering::AcqRel) {
            t.op.with_tree(|tree| tree.start(t.slot, t.id, at));
            // Heartbeats need the root's OpenTelemetry span context; take it without our guard.
            #[cfg(feature = "otel")]
            if t.slot == ROOT_SLOT
                && let Some(otel) = self.otel().filter(|o| o.heartbeat_enabled())
            {
                let op = t.op.clone();
                drop(ext);
                if let Some(sc) = otel.span_context(id) {
                    let _ = op.otel_root.set(sc);
                }
            }
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        let Some(t) = ext.get::<Tracked>() else {
            return;
        };
        if t.entered.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = self.shared.store.clock.now_ns();
            let since = t.entered_at_ns.load(Ordering::Acquire);
            t.live
                .busy_ns
                .fetch_add(now.saturating_sub(since), Ordering::Relaxed);
            t.live.entered_at_us.store(0, Ordering::Relaxed);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        // Take our data out and release the guard before doing anything else.
        let Some(t) = span.extensions_mut().remove::<Tracked>() else {
            return;
        };
        let store = &self.shared.store;
        let now = store.clock.now_ns();
        let mut busy = t.live.busy_ns.load(Ordering::Relaxed);
        if t.entered.load(Ordering::Acquire) > 0 {
            busy += now.saturating_sub(t.entered_at_ns.load(Ordering::Acquire));
        }
        if std::thread::panicking() {
            let (message, location) =
                match self.shared.capture_panics.then(panic::last_panic).flatten() {
                    Some(p) => (p.message, p.location),
                    None => (Arc::from("panicked while the span was open"), None),
                };
            t.fail(
                message,
                ErrorOrigin::Panic,
                span.metadata().target().into(),
                location,
                Metadata::default(),
            );
        }
        let outcome = if t.op.is_cancelled() {
            CloseOutcome::Cancelled
        } else {
            CloseOutcome::Completed
        };
        let at = store.clock.ns_to_unix_us(now);
        #[cfg(feature = "otel")]
        let mut report = None;
        let root_closed = t.op.with_tree(|tree| {
            tree.close(t.slot, t.id, at, busy, outcome, |_tree| {
                #[cfg(feature = "otel")]
                if self.otel().is_some() {
                    report = _tree.final_report(t.slot, t.id, t.op.id, t.op.is_cancelled());
                }
            })
        });
        #[cfg(feature = "otel")]
        if let (Some(otel), Some(report)) = (self.otel(), report) {
            otel.finish(&id, report);
        }
        if root_closed {
            store.finish_operation(&t.op);
        }
    }

    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else if id == TypeId::of::<span_ext::WithContext>() {
            Some(&self.with_context as *const span_ext::WithContext as *const ())
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn live_node_fits_300_bytes() {
        // Per live node: its arena slot plus our extension entry (the registry adds its own
        // type-map slot, which every layer with per-span data pays).
        let tracked = std::mem::size_of::<super::Tracked>();
        let slot = std::mem::size_of::<Option<crate::store::tree::Node>>();
        println!(
            "Tracked {tracked} B + arena slot {slot} B = {} B",
            tracked + slot
        );
        assert!(tracked + slot <= 300, "Tracked {tracked} B + slot {slot} B");
    }
}
