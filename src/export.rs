//! The seam between the recording side and optional exporters (OpenTelemetry spans, a
//! SQLite history file, OpenTelemetry/Prometheus metrics).
//!
//! The layer tells every [`Exporter`] what happened to the nodes of its spans — created,
//! started, counters changed, closed with its final [`ProgressLevel`], operation finished —
//! always with no extensions guard and no store lock held, so an exporter may look at the
//! span (e.g. through another layer's extensions). An exporter depends only on this seam, the
//! [`Store`](crate::Store) handle and the model types; the store knows nothing of
//! exporters, and the layer has no exporter-specific code.

// Without an exporter feature nothing implements the seam; the layer's calls through it are
// then loops over an empty list.
#![cfg_attr(
    not(any(feature = "otel", feature = "sqlite", feature = "metrics")),
    allow(dead_code)
)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tracing_core::Dispatch;
use tracing_core::span::Id;

use crate::model::{OperationId, ProgressLevel, ProgressState};

/// A node as exporters see it when it is created or started.
// Some fields are read only by some exporters (all of them by `otel`).
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeRef {
    pub(crate) operation_id: OperationId,
    pub(crate) is_root: bool,
}

/// A node that just closed.
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClosedNode<'a> {
    /// The node as it ended, without children.
    pub(crate) level: &'a ProgressLevel,
    pub(crate) operation_id: OperationId,
    pub(crate) cancel_requested: bool,
}

/// How often an exporter wants to hear about counter changes of one span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CounterEvents {
    /// At most one report per span per interval; the first interval starts at creation.
    pub(crate) interval: Duration,
    /// At most this many reports per span.
    pub(crate) max_per_span: u32,
}

/// An optional part told what happens to nodes. Every method has a no-op default.
pub(crate) trait Exporter: Send + Sync + 'static {
    /// Counter changes wanted, if any ([`counters_changed`](Self::counters_changed)).
    fn counter_events(&self) -> Option<CounterEvents> {
        None
    }

    /// Whether [`node_closed`](Self::node_closed) is wanted (it costs building the level).
    fn wants_closed_nodes(&self) -> bool {
        false
    }

    /// The layer was registered with a dispatcher.
    fn register_dispatch(&self, _dispatch: &Dispatch) {}

    /// A tracked span got its node.
    fn node_created(&self, _span: &Id, _node: NodeRef) {}

    /// A tracked span was entered for the first time.
    fn node_started(&self, _span: &Id, _node: NodeRef) {}

    /// A span's counters changed (throttled per [`counter_events`](Self::counter_events)).
    fn counters_changed(&self, _span: &Id, _current: u64, _total: Option<u64>) {}

    /// A tracked span closed.
    fn node_closed(&self, _span: &Id, _closed: ClosedNode<'_>) {}

    /// An operation finished and went to history.
    fn operation_finished(&self, _state: &Arc<ProgressState>) {}
}

/// The exporters of one layer, with what they want combined.
#[derive(Default)]
pub(crate) struct Exporters {
    list: Vec<Arc<dyn Exporter>>,
    /// Shortest interval and largest cap any exporter asked for.
    counters: Option<(u64, u32)>,
    closed_nodes: bool,
}

impl fmt::Debug for Exporters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporters")
            .field("count", &self.list.len())
            .finish()
    }
}

impl Exporters {
    pub(crate) fn push(&mut self, exporter: Arc<dyn Exporter>) {
        if let Some(c) = exporter.counter_events() {
            let ns = u64::try_from(c.interval.as_nanos()).unwrap_or(u64::MAX);
            self.counters = Some(match self.counters {
                Some((i, m)) => (i.min(ns), m.max(c.max_per_span)),
                None => (ns, c.max_per_span),
            });
        }
        self.closed_nodes |= exporter.wants_closed_nodes();
        self.list.push(exporter);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn wants_counters(&self) -> bool {
        self.counters.is_some()
    }

    pub(crate) fn wants_closed_nodes(&self) -> bool {
        self.closed_nodes
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &dyn Exporter> {
        self.list.iter().map(|e| &**e)
    }

    /// Whether a counter report is due for a span now (interval and cap; one winner when
    /// threads race).
    pub(crate) fn counter_due(&self, throttle: &Throttle, now_ns: u64) -> bool {
        let Some((interval, max)) = self.counters else {
            return false;
        };
        if throttle.sent.load(Ordering::Relaxed) >= max {
            return false;
        }
        let last = throttle.last_ns.load(Ordering::Relaxed);
        if now_ns.saturating_sub(last) < interval {
            return false;
        }
        if throttle
            .last_ns
            .compare_exchange(last, now_ns, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        throttle.sent.fetch_add(1, Ordering::Relaxed) < max
    }
}

/// Per-span throttle state of counter reports, kept with the span.
#[derive(Debug)]
pub(crate) struct Throttle {
    last_ns: AtomicU64,
    sent: AtomicU32,
}

impl Throttle {
    /// Starts the first interval at the span's creation: a span shorter than one interval
    /// reports no counter changes (its final values arrive at close anyway).
    pub(crate) fn new(created_ns: u64) -> Self {
        Throttle {
            last_ns: AtomicU64::new(created_ns),
            sent: AtomicU32::new(0),
        }
    }
}
