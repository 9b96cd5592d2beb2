//! The recording side: a [`Layer`] that maps spans to progress nodes.
//!
//! This module is the hot path. Per tracked span it keeps one [`SpanEntry`] in its own side
//! table keyed by span id ([`spans`]), not in the registry's extensions: a [`NodeHandle`] to
//! its node in the store, plus entered time in atomics. A tracked span costs no registry
//! lookup of its own on enter, exit or close, and finds its parent's entry by the parent's id.
//! Untracked spans cost a field-name scan at creation (cached per callsite) and one relaxed
//! load on enter/exit/close: the table's counting filter of tracked span ids says "certainly
//! not tracked" without a lookup. The layer never emits `tracing` events, never calls out or
//! takes an operation's lock while holding a table lock, and only ever locks the one
//! operation a span belongs to. What happens is told to optional exporters through one seam
//! (`crate::export`).
//!
//! Two progress layers in one subscriber (a library's and its application's) each keep their
//! own table; the extension trait reaches both (see [`span_ext`]).

mod builder;
pub(crate) mod classify;
mod events;
mod panic;
mod planned;
mod recent;
pub(crate) mod span_ext;
mod spans;
mod tracked;
mod visitor;

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tracing_subscriber::registry::SpanRef;

use tracing_core::span::{Attributes, Id, Record};
use tracing_core::subscriber::Interest;
use tracing_core::{Event, Level, LevelFilter, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

pub use builder::{BuildError, Builder, layer};
use classify::{Classifier, SpanClass};
pub use events::FailOn;
use events::{EventKind, LogOrigin};
use recent::RecentVisitor;
pub(crate) use spans::SpanTable;
pub(crate) use tracked::{Attach, CounterReport, SpanEntry, SpanExport, Tracked};
use visitor::FieldVisitor;
pub(crate) use visitor::sanitize;

use crate::export::{ClosedNode, Exporters, Throttle};
use crate::model::{ErrorOrigin, EventLevel, Metadata, NodeId, RecentEvent};
use crate::store::{CloseInfo, NewNode, NodeAt, StoreInner};

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

pub(crate) struct Shared {
    store: Arc<StoreInner>,
    classifier: Classifier,
    capture_panics: bool,
    fail_on: FailOn,
    /// Set once the layer is part of a dispatcher.
    installed: AtomicBool,
    /// `None` when there are none, so spans carry no pointer to them.
    exporters: Option<Arc<Exporters>>,
    /// This layer's per-span state, by span id (shared with the extension trait).
    spans: Arc<SpanTable>,
}

impl<S> fmt::Debug for ProgressLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressLayer")
            .field("capture_panics", &self.shared.capture_panics)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A filter for the whole subscriber (not a per-layer one) that stops below INFO also stops
    /// the spans `#[instrument]` and `info_span!` make, before this layer sees them: nothing
    /// would be tracked, silently. Says so once (stderr and `StoreStats::warnings`).
    fn check_level(&self, most_verbose: LevelFilter) {
        // OFF is no information: an `Option::None` layer reports it for "adds nothing".
        if most_verbose >= LevelFilter::INFO || most_verbose == LevelFilter::OFF {
            return;
        }
        self.store.warn_once(
            crate::SetupWarning::LEVEL_FILTERED,
            &format!(
                "the subscriber's most verbose level is {most_verbose} (a global filter, e.g. \
                 EnvFilter with RUST_LOG unset), so INFO spans - the default of #[instrument] \
                 and info_span! - never reach the progress layer and are not tracked. Filter \
                 the output layer instead: \
                 registry().with(progress).with(fmt::layer().with_filter(filter)), or allow \
                 the spans (RUST_LOG=info)"
            ),
        );
    }
}

impl<S> ProgressLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn new(
        store: Arc<StoreInner>,
        classifier: Classifier,
        capture_panics: bool,
        fail_on: FailOn,
        exporters: Exporters,
    ) -> Self {
        static NEXT_LAYER: AtomicU32 = AtomicU32::new(1);
        if capture_panics {
            panic::install_hook();
        }
        let id = NEXT_LAYER.fetch_add(1, Ordering::Relaxed);
        // `inc` may skip the span lookup unless an exporter wants counter changes.
        let reports_counters = exporters.wants_counters();
        let spans = Arc::new(SpanTable::new());
        ProgressLayer {
            with_context: span_ext::WithContext::new::<S>(id, reports_counters, spans.clone()),
            shared: Arc::new(Shared {
                store,
                classifier,
                capture_panics,
                fail_on,
                installed: AtomicBool::new(false),
                exporters: (!exporters.is_empty()).then(|| Arc::new(exporters)),
                spans,
            }),
            _subscriber: PhantomData,
        }
    }

    fn exporters(&self) -> impl Iterator<Item = &dyn crate::export::Exporter> {
        self.shared.exporters.iter().flat_map(|e| e.iter())
    }

    /// `f` of this layer's entry of span `id`, if it tracks the span (under the table's lock:
    /// keep `f` short; take copies out for work on the tree).
    #[inline]
    fn with_entry<R>(&self, id: &Id, f: impl FnOnce(&SpanEntry) -> R) -> Option<R> {
        self.shared.spans.with(id, f)
    }

    /// Where the children of the nearest tracked span at or above `first` attach: that span's
    /// operation, the attach point and its depth. `first` is a span id as the registry gives
    /// it; `span` finds its ancestors when it is not tracked itself (through the layer's
    /// filter, if it has one).
    fn nearest_attach<'a>(
        &self,
        first: Option<&Id>,
        span: impl FnOnce() -> Option<SpanRef<'a, S>>,
    ) -> Option<(NodeAt, Attach)>
    where
        S: 'a,
    {
        let look = |id: &Id| self.with_entry(id, |e| (e.tracked.node.at(), e.attach()));
        // Usually the parent itself: one table lookup, no registry lookup.
        if let Some(found) = first.and_then(look) {
            return Some(found);
        }
        // Walked with `parent()`, one registry lookup per ancestor (`scope()` would look the
        // first one up twice).
        let mut next = span()?.parent();
        while let Some(s) = next.take() {
            if let Some(found) = look(&s.id()) {
                return Some(found);
            }
            next = s.parent();
        }
        None
    }

    /// The entry of a new tracked span: its node, under the nearest tracked span above it
    /// (found by the parent's id), or a new operation.
    fn new_entry(
        &self,
        class: &SpanClass,
        attrs: &Attributes<'_>,
        id: &Id,
        ctx: &Context<'_, S>,
    ) -> Option<SpanEntry> {
        let store = &self.shared.store;
        let mut visitor = FieldVisitor::new(class, store.limits.max_text_len, false);
        attrs.record(&mut visitor);
        let FieldVisitor {
            mut update, extra, ..
        } = visitor;
        let created_ns = store.clock.now_ns();
        let keyed = update.name.is_some();
        let mut new = NewNode {
            id: NodeId::next(),
            name: update.name.take(),
            callsite: class.callsite_at(extra.level),
            created_us: store.clock.ns_to_unix_us(created_ns),
            flattened: false,
            key: extra.key,
            keyed,
        };
        // The registry's parent: the current span unless the span says otherwise.
        let found = if attrs.is_root() {
            None
        } else if attrs.is_contextual() {
            let current = ctx.current_span();
            self.nearest_attach(current.id(), || ctx.span(id))
        } else {
            self.nearest_attach(attrs.parent(), || ctx.span(id))
        };
        let (node, attach) = match found {
            Some((parent, at)) => {
                new.flattened = at.beside;
                // The parent node is gone (cannot normally happen): not tracked.
                let node = parent.add_child(at.key, at.beside, new, update)?;
                let depth = at.depth.saturating_add(1);
                // At the depth limit, children go where this node went: beside it.
                let attach = if depth < store.limits.max_depth {
                    Attach {
                        key: node.key(),
                        beside: false,
                        depth,
                    }
                } else {
                    Attach {
                        key: node.key(),
                        beside: true,
                        depth: at.depth,
                    }
                };
                (node, attach)
            }
            None => {
                let operation_type = extra
                    .operation
                    .or_else(|| class.operation_type.clone())
                    .unwrap_or_else(|| new.callsite.level_type.clone());
                let node = store.start_operation(new, operation_type, update)?;
                let attach = Attach {
                    key: node.key(),
                    beside: false,
                    depth: 0,
                };
                (node, attach)
            }
        };
        Some(SpanEntry {
            attach_beside: attach.beside,
            attach_depth: attach.depth,
            entered: AtomicU32::new(0),
            tracked: Tracked {
                node,
                meta: attrs.metadata(),
                // Only counter reports need it: exporters that want none (the history file)
                // cost a span no allocation.
                export: self
                    .shared
                    .exporters
                    .as_ref()
                    .filter(|e| e.wants_counters())
                    .map(|exporters| {
                        Arc::new(SpanExport {
                            exporters: exporters.clone(),
                            throttle: Throttle::new(created_ns),
                        })
                    }),
            },
        })
    }

    /// `f` of the nearest span at or above the event's (its explicit parent, else the current
    /// span) that this layer tracks, with that span's id.
    fn event_entry<R>(
        &self,
        event: &Event<'_>,
        ctx: &Context<'_, S>,
        f: impl Fn(&SpanEntry) -> R,
    ) -> Option<(R, Id)> {
        let current;
        let first = if event.is_root() {
            return None;
        } else if event.is_contextual() {
            current = ctx.current_span();
            current.id()
        } else {
            event.parent()
        };
        // Usually the event's own span: one table lookup, no registry lookup.
        if let Some(id) = first
            && let Some(r) = self.with_entry(id, &f)
        {
            return Some((r, id.clone()));
        }
        // Its ancestors, through the layer's filter if it has one.
        let mut next = ctx.event_span(event);
        while let Some(s) = next.take() {
            let id = s.id();
            if first != Some(&id)
                && let Some(r) = self.with_entry(&id, &f)
            {
                return Some((r, id));
            }
            next = s.parent();
        }
        None
    }
}

impl<S> tracing_subscriber::Layer<S> for ProgressLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let classifier = &self.shared.classifier;
        if !classifier.tracks(meta) {
            return;
        }
        // The entry goes into the table where it is built: returned out of the class lookup,
        // its copies through the `Option`s cost more than the lookup saved.
        let made = classifier.with_class(meta, |class| {
            let entry = self.new_entry(class, attrs, id, &ctx)?;
            let node = entry.tracked.node_ref();
            self.shared.spans.insert(id, entry);
            Some(node)
        });
        let Some(node) = made else {
            return;
        };
        for e in self.exporters() {
            e.node_created(id, node);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let Some(meta) = self.with_entry(id, |e| e.tracked.meta) else {
            return;
        };
        // Fields outside the table's lock: their `Debug` impls are the user's code.
        let max_text = self.shared.store.limits.max_text_len;
        let update = self.shared.classifier.with_class(meta, |class| {
            let mut visitor = FieldVisitor::new(class, max_text, false);
            values.record(&mut visitor);
            visitor.update
        });
        let report = if update.is_counters_only() {
            // `span.record("progress.current", n)`: atomics, done in the table.
            let (total, current, inc) = (update.total, update.current, update.inc);
            self.with_entry(id, |e| e.tracked.count(total, current, inc))
                .flatten()
        } else {
            self.with_entry(id, |e| e.tracked.clone())
                .and_then(|t| t.apply(update))
        };
        if let Some(report) = report {
            report.send(id);
        }
    }

    fn on_register_dispatch(&self, dispatch: &tracing_core::Dispatch) {
        self.shared.installed.store(true, Ordering::Relaxed);
        self.with_context.register(dispatch);
        for e in self.exporters() {
            e.register_dispatch(dispatch);
        }
    }

    fn on_layer(&mut self, inner: &mut S) {
        // A global filter below us (`fmt().with_env_filter(..).finish().with(progress)`).
        if let Some(hint) = inner.max_level_hint() {
            self.shared.check_level(hint);
        }
    }

    fn register_callsite(&self, _meta: &'static tracing_core::Metadata<'static>) -> Interest {
        // A global filter anywhere in the stack, as `tracing` itself sees it (one load, once
        // per callsite).
        if self.shared.installed.load(Ordering::Relaxed) {
            self.shared.check_level(LevelFilter::current());
        }
        Interest::always()
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let is_error = *meta.level() == Level::ERROR;
        let kind = EventKind::of(meta);
        let limits = &self.shared.store.limits;
        // An ordinary event only matters as a recent event of the tracked node it is in.
        let keep_recent = limits.recent_events > 0 && *meta.level() <= limits.recent_event_level;
        if !is_error && kind == EventKind::Other && !(keep_recent && recent::may_be_inside(event)) {
            return;
        }
        if kind == EventKind::Return {
            // `#[instrument(ret)]`: the function returned; its span is the event's own span.
            let own = if event.is_contextual() {
                ctx.current_span().id().cloned()
            } else {
                event.parent().cloned()
            };
            let span_meta = own.and_then(|id| {
                self.with_entry(&id, |e| {
                    e.tracked.node.live().set_returned();
                    e.tracked.meta
                })
            });
            if let Some(span_meta) = span_meta {
                self.shared.classifier.saw_return(span_meta);
            }
            return;
        }
        if kind == EventKind::Other && !is_error {
            // A recent event: only the node's operation and key leave the table.
            let Some((node, _)) = self.event_entry(event, &ctx, |e| e.tracked.node.at()) else {
                return;
            };
            // An event's text takes at most a quarter of the ring's bytes.
            let mut visitor = RecentVisitor::new(
                meta,
                limits.max_text_len,
                limits.recent_event_bytes / 4,
                limits.max_metadata_entries,
            );
            event.record(&mut visitor);
            node.record(visitor.finish(self.shared.store.clock.now_us()));
            return;
        }
        // Fields first, outside any lock: their `Debug` impls are the user's code.
        let class = self.shared.classifier.class_of(meta);
        let mut visitor = FieldVisitor::new(&class, self.shared.store.limits.max_text_len, true);
        event.record(&mut visitor);
        let FieldVisitor {
            mut update, extra, ..
        } = visitor;
        if !is_error {
            if update.message.is_none() {
                update.message = extra.event_message;
            }
            let report = if update.is_counters_only() {
                // `info!(progress.inc = 1)`: atomics, done in the table (no copy taken out).
                let (total, current, inc) = (update.total, update.current, update.inc);
                self.event_entry(event, &ctx, |e| e.tracked.count(total, current, inc))
                    .and_then(|(report, id)| Some((report?, id)))
            } else {
                self.event_entry(event, &ctx, |e| e.tracked.clone())
                    .and_then(|(tracked, id)| Some((tracked.apply(update)?, id)))
            };
            if let Some((report, id)) = report {
                report.send(&id);
            }
            return;
        }
        let Some((tracked, _)) = self.event_entry(event, &ctx, |e| e.tracked.clone()) else {
            return;
        };
        let returned = kind == EventKind::ReturnedError;
        let message = extra
            .event_message
            .or(extra.event_error)
            .unwrap_or_else(|| Arc::from(format!("error event in {}", meta.name())));
        let mut fields = Metadata::default();
        let mut origin = LogOrigin::default();
        for (k, v) in std::mem::take(&mut update.metadata) {
            if !origin.take(meta, &k, &v) {
                fields.insert(k, v);
            }
        }
        let location = origin
            .file
            .as_deref()
            .or(meta.file())
            .map(|f| Arc::from(format!("{f}:{}", origin.line.or(meta.line()).unwrap_or(0))));
        // A failing event's counters are recorded; the final values reach exporters at close.
        let _ = tracked.apply(update);
        if returned {
            tracked.node.live().set_returned();
        }
        let target = origin
            .target
            .unwrap_or_else(|| class.callsite.target.clone());
        let error = tracked.error_info(message, ErrorOrigin::Event, target, location, fields);
        // Failing or not, the error is kept: as the node's failure or as one it handled.
        let line = keep_recent.then(|| RecentEvent {
            at_us: error.at_us,
            level: EventLevel::Error,
            target: error.target.clone(),
            message: Some(error.message.clone()),
            fields: error.fields.clone(),
        });
        if self.shared.fail_on.fails(returned) {
            tracked.node.fail(error);
        } else {
            tracked.node.handled_error(error);
        }
        // After the failure, which carries the lines that led to it, not itself.
        if let Some(line) = line {
            tracked.node.record_event(line);
        }
    }

    fn on_enter(&self, id: &Id, _ctx: Context<'_, S>) {
        if !self.shared.spans.may_hold(id) {
            return;
        }
        // Read before the table's lock: a clock given to the builder is the user's code.
        let clock = &self.shared.store.clock;
        let now = clock.now_ns();
        let at = clock.ns_to_unix_us(now);
        let at_ns = clock.ns_to_busy_clock(now);
        let started = self.with_entry(id, |e| {
            if e.entered.fetch_add(1, Ordering::AcqRel) == 0 {
                e.tracked.node.live().entered(at_ns);
            }
            // The first enter starts the node (a load on later enters, no read-modify-write).
            e.tracked.node.start(at).then(|| e.tracked.node_ref())
        });
        let Some(started) = started else { return };
        recent::entered();
        if let Some(node) = started {
            for e in self.exporters() {
                e.node_started(id, node);
            }
        }
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        if !self.shared.spans.may_hold(id) {
            return;
        }
        let clock = &self.shared.store.clock;
        let at_ns = clock.ns_to_busy_clock(clock.now_ns());
        let found = self.with_entry(id, |e| {
            if e.entered.fetch_sub(1, Ordering::AcqRel) == 1 {
                e.tracked.node.live().exited(at_ns);
            }
        });
        if found.is_some() {
            recent::exited();
        }
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        // Taken out first: the id may be reused as soon as this returns.
        let Some(entry) = self.shared.spans.remove(&id) else {
            return;
        };
        let store = &self.shared.store;
        let now = store.clock.now_ns();
        let t = &entry.tracked;
        // A stretch still open (closed while entered: a panic's unwind) counts to now.
        let busy = t.node.live().busy_ns_at(store.clock.ns_to_busy_clock(now));
        if std::thread::panicking() {
            let (message, location) =
                match self.shared.capture_panics.then(panic::last_panic).flatten() {
                    Some(p) => (p.message, p.location),
                    None => (Arc::from("panicked while the span was open"), None),
                };
            // The callsite's target is the span's.
            let classifier = &self.shared.classifier;
            let target = classifier.with_class(t.meta, |c| c.callsite.target.clone());
            t.fail(
                message,
                ErrorOrigin::Panic,
                target,
                location,
                Metadata::default(),
            );
        }
        let cancel_requested = t.node.is_cancelled();
        // A callsite that reports returns whose span did not: a future dropped while pending.
        let missing_return = !t.node.live().returned() && self.shared.classifier.returns(t.meta);
        let want_level = self
            .shared
            .exporters
            .as_ref()
            .is_some_and(|e| e.wants_closed_nodes());
        let at = store.clock.ns_to_unix_us(now);
        let info = CloseInfo {
            at_us: at,
            busy_ns: busy,
            cancel_requested,
            never_entered: !t.node.live().is_started(),
            missing_return: missing_return && !std::thread::panicking(),
        };
        let closed = t.node.close(info, want_level);
        if let Some(level) = &closed.level {
            let node = ClosedNode {
                level,
                operation_id: t.node.operation_id(),
                cancel_requested,
            };
            for e in self.exporters() {
                e.node_closed(&id, node);
            }
        }
        if let Some(state) = &closed.finished {
            for e in self.exporters() {
                e.operation_finished(state);
            }
        }
    }

    // SAFETY: the pointers handed out point at `self` and at `self.with_context`, each for
    // exactly the type its `TypeId` names, and live as long as `self`, which the dispatcher
    // keeps alive while it uses them (`tracing_subscriber`'s contract for `downcast_raw`).
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
