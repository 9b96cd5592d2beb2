//! `ProgressSpanExt`: progress updates on a `tracing::Span` without re-recording fields.
//!
//! Recording `progress.current` with `span.record` works, but `fmt` appends every re-recorded
//! field to its output (tokio-rs/tracing#2334). These methods reach the layer directly: the
//! span's dispatcher is downcast to a private [`WithContext`] (what the first progress layer
//! exposes through `downcast_raw`), which holds the side table of every progress layer of
//! that dispatcher (each layer adds its own when the dispatcher is made). The span itself is
//! one table lookup; only an untracked span's ancestors need the registry. When a wrapper
//! hides the layer from `downcast_raw` (`tracing_subscriber::reload`), the registry is still
//! reachable: layers behind such a wrapper list their tables under the registry's address
//! ([`HIDDEN`]). Without the layer installed every method is a silent no-op.

use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use tracing::Span;
use tracing_core::{Dispatch, span::Id};
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;

use super::visitor::sanitize;
use super::{CounterReport, SpanTable, Tracked};
use crate::model::{ErrorOrigin, FieldValue, Metadata, NodeId, OperationId};
use crate::store::{NodeUpdate, ProgressHandle};

/// How many progress layers of one dispatcher the extension trait reaches (the first one's
/// and three more; a fifth layer's nodes are updated through span fields only).
const MAX_LAYERS: usize = 4;

/// Runs a closure on each progress layer's node of the nearest tracked span, sending the
/// counter reports it returns once no lock is held. `in_table`: run it under the table's
/// lock (atomics only), else on a copy taken out.
type VisitTracked =
    fn(&Dispatch, &Id, &[&SpanTable], bool, &mut dyn FnMut(&Tracked) -> Option<CounterReport>);

/// What the layer hands out through `downcast_raw`: a function for its subscriber type, the
/// tables of the dispatcher's progress layers, and whether `inc` may go through a thread's
/// cached handle (no exporter wants counter changes).
pub(crate) struct WithContext {
    visit: VisitTracked,
    layer: u32,
    cacheable: bool,
    own: Arc<SpanTable>,
    /// The other progress layers' tables, added once each as the dispatcher is made.
    more: [OnceLock<Arc<SpanTable>>; MAX_LAYERS - 1],
}

impl WithContext {
    pub(crate) fn new<S>(layer: u32, reports_counters: bool, own: Arc<SpanTable>) -> Self
    where
        S: tracing_core::Subscriber + for<'a> LookupSpan<'a>,
    {
        WithContext {
            visit: with_tracked::<S>,
            layer,
            cacheable: !reports_counters,
            own,
            more: Default::default(),
        }
    }

    /// The layer became part of `dispatch`: makes its table reachable from the dispatcher's
    /// first `WithContext`, or through the registry when a wrapper hides it.
    pub(crate) fn register(&self, dispatch: &Dispatch) {
        self.own.registered();
        match dispatch.downcast_ref::<WithContext>() {
            Some(first) if std::ptr::eq(first, self) => {}
            Some(first) => {
                let mut table = Some(self.own.clone());
                for slot in &first.more {
                    if slot.get().is_some_and(|t| Arc::ptr_eq(t, &self.own)) {
                        return;
                    }
                    if let Some(t) = table.take()
                        && let Err(t) = slot.set(t)
                    {
                        table = Some(t);
                    }
                    if table.is_none() {
                        return;
                    }
                }
            }
            None => {
                if let Some(registry) = dispatch.downcast_ref::<Registry>() {
                    let mut hidden = HIDDEN.lock();
                    hidden.retain(|(_, t)| t.strong_count() > 0);
                    let key = registry as *const Registry as usize;
                    if !hidden
                        .iter()
                        .any(|(k, t)| *k == key && t.as_ptr() == Arc::as_ptr(&self.own))
                    {
                        hidden.push((key, Arc::downgrade(&self.own)));
                    }
                }
            }
        }
    }

    /// Every table of the dispatcher, in the order their layers joined it (for
    /// `registry().with(a).with(b)`: `a`, then `b`).
    fn tables(&self) -> ([&SpanTable; MAX_LAYERS], usize) {
        let mut out = [&*self.own; MAX_LAYERS];
        let mut n = 1;
        for t in self.more.iter().filter_map(OnceLock::get) {
            out[n] = t;
            n += 1;
        }
        out[..n].sort_unstable_by_key(|t| t.order());
        (out, n)
    }
}

/// Tables of progress layers hidden from `downcast_raw` by a wrapper, by the address of the
/// registry they sit on; dead entries are dropped when a layer registers.
static HIDDEN: Mutex<Vec<(usize, Weak<SpanTable>)>> = Mutex::new(Vec::new());

/// The hidden tables of the registry at `registry`.
fn hidden_tables(registry: &Registry) -> Vec<Arc<SpanTable>> {
    let key = registry as *const Registry as usize;
    HIDDEN
        .lock()
        .iter()
        .filter(|(k, _)| *k == key)
        .filter_map(|(_, t)| t.upgrade())
        .take(MAX_LAYERS)
        .collect()
}

/// The handle of the span itself, if exactly one progress layer tracks it.
fn own_handle(ctx: &WithContext, id: &Id) -> Option<ProgressHandle> {
    let handle = ctx.own.with(id, |e| e.tracked.node.progress())?;
    let (tables, n) = ctx.tables();
    tables[..n]
        .iter()
        .all(|t| std::ptr::eq(*t, &*ctx.own) || !t.contains(id))
        .then_some(handle)
}

/// The last span this thread called `inc` on, with its handle: a loop of `span.inc(1)` then
/// costs a thread-local read and one atomic instead of a table lookup. Only spans that are
/// themselves tracked are cached: a span id is reused only after its span closed, and its
/// node closed with it, so a stale entry is seen (`is_open` is false) and replaced.
struct LastInc {
    layer: u32,
    span: u64,
    handle: ProgressHandle,
}

thread_local! {
    static LAST_INC: std::cell::RefCell<Option<LastInc>> = const { std::cell::RefCell::new(None) };
}

/// `inc` through the thread's cached handle; false if the cache does not apply.
#[inline]
fn cached_inc(ctx: &WithContext, id: &Id, delta: u64) -> bool {
    LAST_INC
        .try_with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return false;
            };
            if let Some(l) = last.as_ref()
                && l.layer == ctx.layer
                && l.span == id.into_u64()
                && l.handle.is_open()
            {
                l.handle.inc(delta);
                return true;
            }
            let Some(handle) = own_handle(ctx, id) else {
                return false;
            };
            handle.inc(delta);
            *last = Some(LastInc {
                layer: ctx.layer,
                span: id.into_u64(),
                handle,
            });
            true
        })
        .unwrap_or(false)
}

fn with_tracked<S>(
    dispatch: &Dispatch,
    id: &Id,
    tables: &[&SpanTable],
    in_table: bool,
    f: &mut dyn FnMut(&Tracked) -> Option<CounterReport>,
) where
    S: tracing_core::Subscriber + for<'a> LookupSpan<'a>,
{
    // The span itself first: no registry lookup when it is tracked.
    if visit_span(tables, id, in_table, f) {
        return;
    }
    let Some(span) = dispatch.downcast_ref::<S>().and_then(|s| s.span(id)) else {
        return;
    };
    let mut next = span.parent();
    while let Some(s) = next.take() {
        if visit_span(tables, &s.id(), in_table, f) {
            return;
        }
        next = s.parent();
    }
}

/// Runs `f` on each progress layer's node of span `id`, if it has any; true if it had.
#[inline]
fn visit_span(
    tables: &[&SpanTable],
    id: &Id,
    in_table: bool,
    f: &mut dyn FnMut(&Tracked) -> Option<CounterReport>,
) -> bool {
    // Usually one table; two progress layers give two, and each gets the update.
    let mut found = false;
    let mut reports: [Option<CounterReport>; MAX_LAYERS] = Default::default();
    for (table, report) in tables.iter().zip(reports.iter_mut()) {
        let r = if in_table {
            table.with(id, |e| f(&e.tracked))
        } else {
            table.with(id, |e| e.tracked.clone()).map(|t| f(&t))
        };
        if let Some(r) = r {
            found = true;
            *report = r;
        }
    }
    // Exporters are called with no lock held.
    for r in reports.into_iter().flatten() {
        r.send(id);
    }
    found
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for tracing::Span {}
}

/// Progress methods on [`tracing::Span`].
///
/// Each method acts on the nearest *tracked* span at or above this one, so
/// `Span::current().inc(1)` works from inside an untracked helper span. When the layer is not
/// installed (or the span is disabled), every method does nothing and the queries return
/// `false`/`None`. With several progress layers in one subscriber, updates reach each of
/// them (up to four); queries answer for the first one added.
///
/// ```
/// use tracing_progress::ProgressSpanExt;
/// use tracing_subscriber::prelude::*;
/// let (layer, store) = tracing_progress::layer();
/// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
///     let span = tracing::info_span!("scan", progress.level = "scan");
///     let _g = span.enter();
///     span.set_total(10);
///     span.inc(3);
///     span.set_message("scanning");
///     let op = store.get(span.operation_id().unwrap()).unwrap();
///     assert_eq!((op.root.current, op.root.total), (3, Some(10)));
///     assert_eq!(op.root.message.as_deref(), Some("scanning"));
/// });
/// // without the layer: no-ops
/// tracing::info_span!("scan").inc(1);
/// ```
pub trait ProgressSpanExt: sealed::Sealed {
    /// Sets the number of units expected.
    fn set_total(&self, total: u64);
    /// Sets the number of units done.
    fn set_current(&self, current: u64);
    /// Adds to the number of units done.
    fn inc(&self, delta: u64);
    /// Sets the message.
    fn set_message(&self, message: &str);
    /// Sets one metadata field.
    fn set_metadata(&self, name: &str, value: FieldValue);
    /// Marks the node failed with this message (it ends as failed when it closes).
    fn fail(&self, message: &str);
    /// Whether the node's operation was asked to cancel.
    fn is_cancelled(&self) -> bool;
    /// Id of the nearest tracked node.
    fn progress_id(&self) -> Option<NodeId>;
    /// Id of the operation the nearest tracked node belongs to.
    fn operation_id(&self) -> Option<OperationId>;
    /// A [`ProgressHandle`] to the nearest tracked node, for updates in a tight loop or from
    /// other threads: find the span once here, then each update is one atomic. Empty (every
    /// method a no-op) when no progress layer tracks the span; with two progress layers it
    /// updates the first one's node.
    fn progress(&self) -> ProgressHandle;
    /// Declares which attempt of its unit this node is (from 1). For `n > 1` the latest
    /// failed or cancelled sibling with the same span name, level type and name becomes its
    /// earlier attempt (see the crate docs, "Attempts"); same as `progress.attempt = n`.
    fn set_attempt(&self, n: u32);
    /// Declares the children this node will run, before they start: each name becomes a
    /// pending child in this position ("Song 4/10: audio4.wav — Pending (planned)"), and the
    /// node's total counts them unless it sets a total of its own. A tracked child span
    /// whose name equals a planned name takes that slot (same id and position) when it is
    /// created; a child that matches none is added after them as usual. Slots no span took
    /// when the node ends read skipped ([`CancelReason::Skipped`](crate::CancelReason::Skipped)),
    /// not failed. `level` is the children's level type (`"song"`); `None` takes the type
    /// of the first child that starts. Each call adds to the plan; at most
    /// [`Builder::max_planned_children`](crate::Builder::max_planned_children) names are kept
    /// as nodes, the rest are counted in the total only.
    ///
    /// The same from `#[instrument]`: `fields(progress.planned = ?songs)` with a list, or
    /// `progress.planned = "a.wav, b.wav"`, and optionally `progress.planned_level = "song"`.
    ///
    /// ```
    /// use tracing_progress::{ProgressSpanExt, Status};
    /// use tracing_subscriber::prelude::*;
    /// let (layer, store) = tracing_progress::layer();
    /// tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
    ///     let setlist = tracing::info_span!("setlist", progress.level = "setlist");
    ///     setlist.plan(Some("song"), ["a.wav", "b.wav", "c.wav"]);
    ///     let _g = setlist.enter();
    ///     let op = store.get(setlist.operation_id().unwrap()).unwrap();
    ///     assert_eq!(op.root.total, Some(3));
    ///     assert!(op.root.children.iter().all(|c| c.planned && c.status == Status::Pending));
    ///     let song = tracing::info_span!("song", progress.name = "b.wav");
    ///     let op = store.get(setlist.operation_id().unwrap()).unwrap();
    ///     assert_eq!(op.root.children[1].id, song.progress_id().unwrap());
    ///     assert!(!op.root.children[1].planned);
    /// });
    /// ```
    fn plan<I>(&self, level: Option<&str>, names: I)
    where
        I: IntoIterator,
        I::Item: AsRef<str>;
    /// [`plan`](Self::plan) with a key per child, `(key, name)`: a child span takes the slot
    /// whose key equals its `progress.key` field (else one with its name), so two children of
    /// the same name, or a name known only when the child starts, still find their slot.
    fn plan_keyed<I, K, N>(&self, level: Option<&str>, entries: I)
    where
        I: IntoIterator<Item = (K, N)>,
        K: AsRef<str>,
        N: AsRef<str>;
}

/// Hands a plan to the nearest tracked node.
fn plan_entries<K: AsRef<str>, N: AsRef<str>>(
    span: &Span,
    level: Option<&str>,
    entries: impl IntoIterator<Item = (Option<K>, N)>,
) {
    let mut entries = Some(entries);
    with_node(span, |t| {
        // With two progress layers only the first gets the plan: the names are read once.
        let Some(entries) = entries.take() else {
            return;
        };
        let store = t.node.store();
        let at_us = store.clock.ns_to_unix_us(store.clock.now_ns());
        let cap = t.node.limits().max_planned_children;
        let plan = super::planned::from_entries(entries, cap, level, at_us);
        let _ = t.apply(NodeUpdate {
            planned: Some(Box::new(plan)),
            ..NodeUpdate::default()
        });
    });
}

/// Runs `f` on a copy of the node, outside the table's lock (it may take the tree's).
fn with_node(span: &Span, mut f: impl FnMut(&Tracked)) {
    visit(span, false, |t| {
        f(t);
        None
    });
}

/// Runs `f` on the node under the table's lock: for atomics and copies only.
fn with_node_in_table(span: &Span, mut f: impl FnMut(&Tracked)) {
    visit(span, true, |t| {
        f(t);
        None
    });
}

/// Runs `f` on the node handle of the nearest tracked span at or above `span` (the first
/// progress layer's, if there are two); for helpers outside the layer (`crate::process`).
#[cfg_attr(not(all(feature = "process", unix)), allow(dead_code))]
pub(crate) fn with_node_handle(span: &Span, mut f: impl FnMut(&crate::store::NodeHandle)) {
    let mut done = false;
    with_node(span, |t| {
        if !done {
            done = true;
            f(&t.node);
        }
    });
}

/// Counter updates: lock-free, and may be due a report to exporters.
fn count(span: &Span, total: Option<u64>, current: Option<u64>, inc: u64) {
    visit(span, true, |t| t.count(total, current, inc));
}

/// `inc`: through the thread's cached handle when it applies, else like [`count`].
fn inc(span: &Span, delta: u64) {
    if delta == 0 {
        return;
    }
    span.with_subscriber(|(id, dispatch)| {
        if let Some(ctx) = dispatch.downcast_ref::<WithContext>()
            && ctx.cacheable
            && cached_inc(ctx, id, delta)
        {
            return;
        }
        visit_in(dispatch, id, true, &mut |t: &Tracked| {
            t.count(None, None, delta)
        });
    });
}

fn visit(span: &Span, in_table: bool, mut f: impl FnMut(&Tracked) -> Option<CounterReport>) {
    span.with_subscriber(|(id, dispatch)| visit_in(dispatch, id, in_table, &mut f));
}

fn visit_in(
    dispatch: &Dispatch,
    id: &Id,
    in_table: bool,
    f: &mut dyn FnMut(&Tracked) -> Option<CounterReport>,
) {
    if let Some(ctx) = dispatch.downcast_ref::<WithContext>() {
        let (tables, n) = ctx.tables();
        (ctx.visit)(dispatch, id, &tables[..n], in_table, f);
    } else if let Some(registry) = dispatch.downcast_ref::<Registry>() {
        // A wrapper that does not forward `downcast_raw` (`reload::Layer`, some third-party
        // layers) hides the layer, not the registry behind it: the layer listed its table
        // under the registry's address.
        let hidden = hidden_tables(registry);
        if hidden.is_empty() {
            return;
        }
        let tables: Vec<&SpanTable> = hidden.iter().map(|t| &**t).collect();
        with_tracked::<Registry>(dispatch, id, &tables, in_table, f);
    }
}

impl ProgressSpanExt for Span {
    fn set_total(&self, total: u64) {
        count(self, Some(total), None, 0);
    }

    fn set_current(&self, current: u64) {
        count(self, None, Some(current), 0);
    }

    fn inc(&self, delta: u64) {
        inc(self, delta);
    }

    fn set_message(&self, message: &str) {
        with_node(self, |t| {
            let max = t.node.limits().max_text_len;
            let _ = t.apply(NodeUpdate {
                message: Some(Arc::from(sanitize(message, max))),
                ..NodeUpdate::default()
            });
        });
    }

    fn set_metadata(&self, name: &str, value: FieldValue) {
        with_node(self, |t| {
            let max = t.node.limits().max_text_len;
            let value = match &value {
                FieldValue::Str(s) => FieldValue::Str(Arc::from(sanitize(s, max))),
                other => other.clone(),
            };
            let _ = t.apply(NodeUpdate {
                metadata: vec![(Arc::from(sanitize(name, 256)), value)],
                ..NodeUpdate::default()
            });
        });
    }

    fn set_attempt(&self, n: u32) {
        with_node(self, |t| {
            let _ = t.apply(NodeUpdate {
                attempt: Some(n.max(1)),
                ..NodeUpdate::default()
            });
        });
    }

    fn fail(&self, message: &str) {
        with_node(self, |t| {
            let max = t.node.limits().max_text_len;
            let target = self
                .metadata()
                .map(|m| Arc::from(m.target()))
                .unwrap_or_else(|| Arc::from(""));
            t.fail(
                Arc::from(sanitize(message, max)),
                ErrorOrigin::Explicit,
                target,
                None,
                Metadata::default(),
            );
        });
    }

    fn is_cancelled(&self) -> bool {
        let mut cancelled = false;
        with_node_in_table(self, |t| cancelled |= t.node.observe_cancel());
        cancelled
    }

    fn progress_id(&self) -> Option<NodeId> {
        let mut id = None;
        with_node_in_table(self, |t| id = id.or(Some(t.node.id())));
        id
    }

    fn operation_id(&self) -> Option<OperationId> {
        let mut id = None;
        with_node_in_table(self, |t| id = id.or(Some(t.node.operation_id())));
        id
    }

    fn plan<I>(&self, level: Option<&str>, names: I)
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        plan_entries(self, level, names.into_iter().map(|n| (None::<&str>, n)));
    }

    fn plan_keyed<I, K, N>(&self, level: Option<&str>, entries: I)
    where
        I: IntoIterator<Item = (K, N)>,
        K: AsRef<str>,
        N: AsRef<str>,
    {
        plan_entries(self, level, entries.into_iter().map(|(k, n)| (Some(k), n)));
    }

    fn progress(&self) -> ProgressHandle {
        let mut handle = None;
        with_node_in_table(self, |t| {
            if handle.is_none() {
                handle = Some(t.node.progress());
            }
        });
        handle.unwrap_or_default()
    }
}

/// Whether the operation of the current span was asked to cancel; `false` outside tracked
/// spans. Shorthand for `Span::current().is_cancelled()`.
///
/// ```
/// if tracing_progress::is_cancelled() {
///     return; // stop early; the node will end as cancelled
/// }
/// ```
pub fn is_cancelled() -> bool {
    Span::current().is_cancelled()
}
