//! Snapshots: the model tree built from the arena, read-only.

use std::sync::Arc;

use super::{Node, Progress, ROOT_SLOT, Tree};
use crate::estimate::PriorDurations;
use crate::model::{
    NodeId, OperationMetrics, ProgressLevel, ProgressState, SCHEMA_VERSION, Status, Timing,
};

impl Tree {
    /// Builds the model tree at `now_us`. Read-only: estimates are the last tick's, counted
    /// down to `now_us`. Iterative, so deep trees cannot overflow the stack.
    pub(crate) fn snapshot<'a>(
        &'a self,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) -> ProgressState {
        let priors = self.priors.read();
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
            let mut level = self.build_level(done.node, done.children, done.partial, now_us);
            if let Some(cold) = done.node.cold.as_deref() {
                level
                    .children
                    .extend(cold.grafts.iter().map(|g| g.level(now_us)));
            }
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
        let root = root.unwrap_or_else(|| self.placeholder_root(id, now_us));
        let error = root
            .error
            .as_deref()
            .cloned()
            .or_else(|| root.failures_below.as_ref().map(|f| f.first.clone()));
        ProgressState {
            schema_version: SCHEMA_VERSION,
            id,
            run: None,
            operation_type: self.operation_type.clone(),
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

    pub(super) fn build_level(
        &self,
        n: &Node,
        children: Vec<ProgressLevel>,
        partial: f64,
        now_us: u64,
    ) -> ProgressLevel {
        let Progress {
            current,
            total,
            percentage,
        } = n.progress(partial);
        let start = n.started().unwrap_or(n.created_us);
        let end = n.completed().unwrap_or(now_us).max(start);
        let alive = end.saturating_sub(n.created_us);
        let busy_us = if n.completed_us != 0 {
            n.live.busy_ns() / 1_000
        } else {
            // Still open: what it has been entered so far, plus the current stretch.
            n.live.busy_us(now_us)
        };
        let cold = n.cold.as_deref();
        let plan = cold.map(|c| c.plan_view()).unwrap_or_default();
        ProgressLevel {
            id: n.id,
            level_type: n.level_type.clone(),
            name: n.name().clone(),
            span_name: n.callsite.span_name.clone(),
            target: n.callsite.target.clone(),
            status: n.status(),
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
            metadata: n.metadata.as_deref().cloned().unwrap_or_default(),
            input_errors: cold.map(|c| c.input_errors.clone()).unwrap_or_default(),
            recent_events: cold.map(|c| c.recent.to_vec()).unwrap_or_default(),
            flattened: cold.is_some_and(|c| c.flattened),
            children,
            folded: cold.map(|c| c.folded.clone()).unwrap_or_default(),
            estimate: None,
            stalled: false,
            resources: cold
                .and_then(|c| c.resources.as_ref())
                .map(|r| Box::new(r.usage())),
            planned: plan.planned,
            key: plan.key,
            skipped: plan.skipped,
            planned_hidden: plan.hidden,
            attempts: cold.and_then(|c| c.attempts.clone()),
        }
    }

    /// Only reachable if the root slot were lost; keeps snapshots total instead of panicking.
    fn placeholder_root(&self, id: NodeId, now_us: u64) -> ProgressLevel {
        let empty: Arc<str> = Arc::from("");
        ProgressLevel {
            timing: Timing {
                created_at_us: now_us,
                ..Timing::default()
            },
            ..ProgressLevel::blank(
                id,
                self.operation_type.clone(),
                empty.clone(),
                empty.clone(),
                empty,
                Status::Completed,
            )
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
        let history = priors.lookup(&n.level_type, n.name());
        level.estimate = state.shown_at(now_us).map(Box::new);
        // Updates since the last tick are progress the tick has not seen yet: not stalled.
        let events = n.live.updates() + n.finished_children;
        level.stalled = !state.updated_since_tick(events)
            && state.stalled(
                now_us,
                self.limits.stall_factor,
                history,
                level.timing.elapsed_us,
            );
    }
}
