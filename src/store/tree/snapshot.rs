//! Snapshots: the model tree built from the arena, read-only, in two steps so writers are not
//! stopped for long. Under the operation's lock the arena is copied as it is ([`Frozen`]: a
//! clone of each slot, mostly reference-count bumps, into a buffer reused between snapshots);
//! the `ProgressLevel` tree — the allocations, estimates, prior lookups — is built from the
//! copy after the lock is released. The copy is one consistent cut: every node has its
//! parent, and a parent's counts of finished children match its children.

use std::sync::Arc;

use super::{Node, Progress, ROOT_SLOT, Tree};
use crate::estimate::{PriorDurations, Priors};
use crate::model::{
    Metadata, NodeId, OperationMetrics, ProgressLevel, ProgressState, SCHEMA_VERSION, Status,
    Timing,
};

/// A copy of a tree's arena and what a snapshot needs besides, taken under the lock.
#[derive(Default)]
pub(crate) struct Frozen {
    nodes: Vec<Option<Node>>,
    metrics: OperationMetrics,
    stall_factor: f64,
    operation_type: Option<Arc<str>>,
    priors: Option<Arc<Priors>>,
}

impl Tree {
    /// Copies the arena into `out` (call with the lock held; `out` empty, see
    /// [`Frozen::clear`], so no old copy is dropped under the lock).
    pub(crate) fn freeze_into(&self, out: &mut Frozen) {
        out.nodes.extend(self.nodes.iter().cloned());
        out.metrics.clone_from(&self.metrics);
        out.stall_factor = self.limits.stall_factor;
        out.operation_type = Some(self.operation_type.clone());
        out.priors = Some(self.priors.clone());
    }

    /// Builds the model tree at `now_us` in one go (copy and build).
    #[cfg(test)]
    pub(crate) fn snapshot(
        &self,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) -> ProgressState {
        let mut frozen = Frozen::default();
        self.freeze_into(&mut frozen);
        frozen.snapshot(id, cancel_requested, now_us)
    }

    pub(super) fn build_level(
        &self,
        n: &Node,
        children: Vec<ProgressLevel>,
        partial: f64,
        now_us: u64,
    ) -> ProgressLevel {
        build_level(n, children, partial, now_us)
    }
}

impl Frozen {
    /// Drops the copied nodes, keeping the buffer for the next snapshot.
    pub(crate) fn clear(&mut self) {
        self.nodes.clear();
        self.operation_type = None;
        self.priors = None;
    }

    fn slot(&self, slot: u32) -> Option<&Node> {
        self.nodes.get(slot as usize)?.as_ref()
    }

    /// Builds the model tree at `now_us`. Read-only: estimates are the last tick's, counted
    /// down to `now_us`. Iterative, so deep trees cannot overflow the stack.
    pub(crate) fn snapshot<'a>(
        &'a self,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) -> ProgressState {
        let priors_arc = self.priors.clone().unwrap_or_default();
        let priors = priors_arc.read();
        let operation_type = self.operation_type.clone().unwrap_or_else(|| Arc::from(""));
        // Depth-first with an explicit stack of frames: each finished level moves once, into
        // its parent's preallocated children, and deep trees cannot overflow the call stack.
        struct Frame<'a> {
            node: &'a Node,
            next_child: u32,
            children: Vec<ProgressLevel>,
            partial: f64,
        }
        let frame = |node: &'a Node| Frame {
            node,
            next_child: node.children.first,
            children: Vec::with_capacity(node.children.len as usize),
            partial: 0.0,
        };
        let mut live_updates = 0;
        let mut root = None;
        let mut stack: Vec<Frame<'_>> = self.slot(ROOT_SLOT).map(frame).into_iter().collect();
        while let Some(top) = stack.last_mut() {
            if let Some(c) = self.slot(top.next_child) {
                top.next_child = c.next;
                stack.push(frame(c));
                continue;
            }
            let Some(done) = stack.pop() else { break };
            live_updates += done.node.live.updates();
            let mut level = build_level(done.node, done.children, done.partial, now_us);
            self.shown_estimate(done.node, &mut level, now_us, &priors);
            match stack.last_mut() {
                Some(parent) => {
                    if !level.status.is_finished() {
                        parent.partial += level.percentage.map_or(0.0, |p| p / 100.0);
                    }
                    parent.children.push(level);
                }
                None => root = Some(level),
            }
        }
        let root = root.unwrap_or_else(|| placeholder_root(id, operation_type.clone(), now_us));
        let error = root
            .error
            .as_deref()
            .cloned()
            .or_else(|| root.failures_below.as_ref().map(|f| f.first.clone()));
        ProgressState {
            schema_version: SCHEMA_VERSION,
            id,
            operation_type,
            name: root.name.clone(),
            status: root.status,
            with_failures: root.with_failures,
            cancel_requested,
            started_at_us: root.timing.started_at_us,
            completed_at_us: root.timing.completed_at_us,
            error,
            metrics: OperationMetrics {
                updates: self.metrics.updates + live_updates,
                ..self.metrics.clone()
            },
            snapshot_at_us: now_us,
            root,
        }
    }

    /// The estimate and stall flag of a running node as of `now_us`, from the state the last
    /// tick left (see `tree::estimates`).
    fn shown_estimate(
        &self,
        n: &Node,
        level: &mut ProgressLevel,
        now_us: u64,
        priors: &PriorDurations,
    ) {
        let Some(state) = n.est.as_deref() else {
            return;
        };
        if level.status != Status::Running {
            return;
        }
        let history = priors.lookup(&n.level_type, &n.name);
        level.estimate = state.shown_at(now_us).map(Box::new);
        // Updates since the last tick are progress the tick has not seen yet: not stalled.
        let events = n.live.updates() + n.finished_children;
        level.stalled = !state.updated_since_tick(events)
            && state.stalled(now_us, self.stall_factor, history, level.timing.elapsed_us);
    }
}

/// One node as the model shows it, with its children already built.
fn build_level(n: &Node, children: Vec<ProgressLevel>, partial: f64, now_us: u64) -> ProgressLevel {
    {
        let Progress {
            current,
            total,
            percentage,
        } = n.progress(partial);
        let start = n.started().unwrap_or(n.created_us);
        let end = n.completed().unwrap_or(now_us).max(start);
        let alive = end.saturating_sub(n.created_us);
        let busy_us = if n.completed_us != 0 {
            n.busy_ns / 1_000
        } else {
            // Still open: what it has been entered so far, plus the current stretch.
            n.live.busy_us(now_us)
        };
        let cold = n.cold.as_deref();
        ProgressLevel {
            id: n.id,
            level_type: n.level_type.clone(),
            name: n.name.clone(),
            span_name: n.callsite.span_name.clone(),
            target: n.callsite.target.clone(),
            status: n.status,
            current,
            failed: cold.map_or(0, |c| c.failed_children),
            total,
            percentage,
            unit: cold.and_then(|c| c.unit.clone()),
            message: n.message.clone(),
            timing: Timing {
                created_at_us: n.created_us,
                started_at_us: n.started(),
                completed_at_us: n.completed(),
                elapsed_us: end - start,
                busy_us,
                idle_us: alive.saturating_sub(busy_us),
            },
            error: cold.and_then(|c| c.error.clone()).map(Box::new),
            failures_below: cold.and_then(|c| c.failures_below.clone()).map(Box::new),
            with_failures: n.status == Status::Completed
                && cold.is_some_and(|c| c.failures_below.is_some()),
            cancel_reason: cold.and_then(|c| c.cancel_reason),
            handled_errors: cold.and_then(|c| c.handled.clone()).map(Box::new),
            metadata: n.metadata.clone(),
            input_errors: cold.map(|c| c.input_errors.clone()).unwrap_or_default(),
            flattened: cold.is_some_and(|c| c.flattened),
            children,
            folded: cold.map(|c| c.folded.clone()).unwrap_or_default(),
            estimate: None,
            stalled: false,
            resources: cold
                .and_then(|c| c.resources.as_ref())
                .map(|r| Box::new(r.usage())),
        }
    }
}

/// Only reachable if the root slot were lost; keeps snapshots total instead of panicking.
fn placeholder_root(id: NodeId, operation_type: Arc<str>, now_us: u64) -> ProgressLevel {
    {
        let empty: Arc<str> = Arc::from("");
        ProgressLevel {
            id,
            level_type: operation_type,
            name: empty.clone(),
            span_name: empty.clone(),
            target: empty.clone(),
            status: Status::Completed,
            current: 0,
            failed: 0,
            total: None,
            percentage: None,
            unit: None,
            message: None,
            timing: Timing {
                created_at_us: now_us,
                ..Timing::default()
            },
            error: None,
            failures_below: None,
            with_failures: false,
            cancel_reason: None,
            handled_errors: None,
            metadata: Metadata::default(),
            input_errors: Vec::new(),
            flattened: false,
            children: Vec::new(),
            folded: Vec::new(),
            estimate: None,
            stalled: false,
            resources: None,
        }
    }
}
