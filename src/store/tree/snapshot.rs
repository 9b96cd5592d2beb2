//! Snapshots: the model tree built from the arena, read-only.
//!
//! One walk does both kinds of snapshot: [`Tree::snapshot`] builds a new [`ProgressState`],
//! [`Tree::refresh`] brings an earlier snapshot of the same tree (one nobody else holds any
//! more) up to date in place. A refresh reuses each level whose node is still there: its
//! children's buffer, its strings when they are still the node's (no reference count
//! touched), its numbers overwritten; levels of new nodes are built, levels of nodes gone
//! are dropped. Both give the same result (tested): [`Tree::fill_level`] sets every field of
//! a level from its node, whatever the level held before. A watcher that takes a snapshot,
//! reads it and drops it (the terminal view, the HTTP stream, a polling loop) then costs the
//! walk and little more: no allocation, no page faults, nothing dropped. The operation keeps
//! its last snapshot for that (see `OperationCell::snapshot`).
//!
//! The walk recurses: the tree is at most `max_depth` (1 to 64) levels deep, plus planned
//! children one below; grafted subtrees (a child process's report) are built by their graft.

use std::sync::Arc;

use super::{Node, Progress, ROOT_SLOT, Tree};
use crate::estimate::PriorDurations;
use crate::model::{
    Metadata, NodeId, OperationMetrics, ProgressLevel, ProgressState, SCHEMA_VERSION, Status,
    Timing,
};

/// How far ahead among the old children a refresh looks for a node's earlier level before
/// building a new one: children only leave from the middle by folding, a few at a time.
const LOOKAHEAD: usize = 8;

impl Tree {
    /// Builds the model tree at `now_us`. Read-only: estimates are the last tick's, counted
    /// down to `now_us`.
    pub(crate) fn snapshot(
        &self,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) -> ProgressState {
        let priors = self.priors.read();
        let mut live_updates = 0;
        let root = match self.slot(ROOT_SLOT) {
            Some(n) => self.build(n, now_us, &priors, &mut live_updates),
            None => self.placeholder_root(id, now_us),
        };
        let mut state = ProgressState {
            schema_version: SCHEMA_VERSION,
            id,
            run: None,
            operation_type: self.operation_type.clone(),
            name: root.name.clone(),
            status: root.status,
            with_failures: false,
            cancel_requested,
            started_at_us: None,
            completed_at_us: None,
            error: None,
            metrics: OperationMetrics::default(),
            snapshot_at_us: now_us,
            root,
        };
        self.fill_state(&mut state, id, cancel_requested, now_us, live_updates);
        state
    }

    /// Brings `state`, an earlier snapshot of this tree, to what [`snapshot`](Self::snapshot)
    /// would return at `now_us`, reusing what it can (see the module docs).
    pub(crate) fn refresh(
        &self,
        state: &mut ProgressState,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
    ) {
        let priors = self.priors.read();
        let mut live_updates = 0;
        match self.slot(ROOT_SLOT) {
            Some(n) if state.root.id == n.id => {
                self.refresh_level(n, &mut state.root, now_us, &priors, &mut live_updates)
            }
            Some(n) => state.root = self.build(n, now_us, &priors, &mut live_updates),
            None => state.root = self.placeholder_root(id, now_us),
        }
        self.fill_state(state, id, cancel_requested, now_us, live_updates);
    }

    /// The operation's own fields, from its root level.
    fn fill_state(
        &self,
        s: &mut ProgressState,
        id: NodeId,
        cancel_requested: bool,
        now_us: u64,
        live_updates: u64,
    ) {
        let root = &s.root;
        s.schema_version = SCHEMA_VERSION;
        s.id = id;
        s.run = None;
        set_arc(&mut s.operation_type, &self.operation_type);
        set_arc(&mut s.name, &root.name);
        s.status = root.status;
        s.with_failures = root.with_failures;
        s.cancel_requested = cancel_requested;
        s.started_at_us = root.timing.started_at_us;
        s.completed_at_us = root.timing.completed_at_us;
        s.error = root
            .error
            .as_deref()
            .cloned()
            .or_else(|| root.failures_below.as_ref().map(|f| f.first.clone()));
        s.metrics = OperationMetrics {
            updates: self.metrics.updates + live_updates,
            ..self.metrics.clone()
        };
        s.snapshot_at_us = now_us;
    }

    /// A new level for `n` and its subtree.
    fn build(
        &self,
        n: &Node,
        now_us: u64,
        priors: &PriorDurations,
        live_updates: &mut u64,
    ) -> ProgressLevel {
        let mut level = blank_of(n);
        self.refresh_level(n, &mut level, now_us, priors, live_updates);
        level
    }

    /// Makes `level` (a blank one, or `n`'s level in an earlier snapshot) `n`'s level at
    /// `now_us`, subtree included.
    fn refresh_level(
        &self,
        n: &Node,
        level: &mut ProgressLevel,
        now_us: u64,
        priors: &PriorDurations,
        live_updates: &mut u64,
    ) {
        *live_updates += n.live.updates();
        let grafts = n.cold.as_deref().map_or(&[][..], |c| &c.grafts[..]);
        let children = &mut level.children;
        // Running children's fractions, rolled up into this node's percentage.
        let mut partial = 0.0;
        let mut add = |child: &ProgressLevel| {
            if !child.status.is_finished() {
                partial += child.percentage.map_or(0.0, |p| p / 100.0);
            }
        };
        // In place while the old children line up with the node's; from the first that does
        // not, the rest of the old ones are matched by id and moved (or dropped).
        let mut i = 0;
        let mut rest: Option<std::vec::IntoIter<ProgressLevel>> = None;
        for slot in self.children_of(n) {
            let Some(c) = self.slot(slot) else { break };
            if rest.is_none() {
                if let Some(old) = children.get_mut(i)
                    && old.id == c.id
                {
                    self.refresh_level(c, old, now_us, priors, live_updates);
                    add(old);
                    i += 1;
                    continue;
                }
                rest = Some(children.split_off(i).into_iter());
                children.reserve((n.children.len as usize).saturating_sub(i) + grafts.len());
            }
            let found = rest.as_mut().and_then(|r| {
                let at = r
                    .as_slice()
                    .iter()
                    .take(LOOKAHEAD)
                    .position(|o| o.id == c.id)?;
                r.nth(at)
            });
            // Filled where it lies: a level is 424 bytes, moving it costs.
            children.push(found.unwrap_or_else(|| blank_of(c)));
            if let Some(child) = children.last_mut() {
                self.refresh_level(c, child, now_us, priors, live_updates);
                add(child);
            }
            i += 1;
        }
        drop(rest);
        // Old levels past the node's children: gone, or last snapshot's grafts.
        children.truncate(i);
        children.extend(grafts.iter().map(|g| g.level(now_us)));
        self.fill_level(n, level, partial, now_us);
        self.shown_estimate(n, level, now_us, priors);
    }

    /// `n`'s own level at `now_us`, without children or estimate (a node as it closes).
    pub(super) fn lone_level(&self, n: &Node, now_us: u64) -> ProgressLevel {
        let mut level = blank_of(n);
        self.fill_level(n, &mut level, 0.0, now_us);
        level
    }

    /// Sets every field of `level` but its children from `n` at `now_us` (`partial`: the
    /// running children's fractions). Whatever `level` held before, the result is the same;
    /// strings and lists already equal to the node's are left alone, so refreshing an
    /// unchanged level allocates nothing and touches no reference count.
    pub(super) fn fill_level(
        &self,
        n: &Node,
        level: &mut ProgressLevel,
        partial: f64,
        now_us: u64,
    ) {
        let Progress {
            current: units,
            total: expected,
            percentage: percent,
        } = n.progress(partial);
        let start = n.started().unwrap_or(n.created_us);
        let end = n.completed().unwrap_or(now_us).max(start);
        let alive = end.saturating_sub(n.created_us);
        let busy = if n.completed_us != 0 {
            n.live.busy_ns() / 1_000
        } else {
            // Still open: what it has been entered so far, plus the current stretch.
            n.live.busy_us(now_us)
        };
        let cold = n.cold.as_deref();
        let plan = cold.map(|c| c.plan_view()).unwrap_or_default();
        // Every field by name (no `..`): a field added to the model must be filled here.
        let ProgressLevel {
            id,
            level_type,
            name,
            span_name,
            target,
            status,
            current,
            failed,
            total,
            percentage,
            unit,
            message,
            timing,
            error,
            failures_below,
            with_failures,
            cancel_reason,
            handled_errors,
            metadata,
            input_errors,
            recent_events,
            flattened,
            children: _,
            folded,
            estimate,
            stalled,
            resources,
            planned,
            key,
            skipped,
            planned_hidden,
            attempts,
        } = level;
        *id = n.id;
        set_arc(level_type, &n.level_type);
        set_arc(name, n.name());
        set_arc(span_name, &n.callsite.span_name);
        set_arc(target, &n.callsite.target);
        *status = n.status();
        *current = units;
        *failed = cold.map_or(0, |c| c.failed_children);
        *total = expected;
        *percentage = percent;
        set_opt_arc(unit, cold.and_then(|c| c.unit.as_ref()));
        set_opt_arc(message, n.message.as_ref());
        *timing = Timing {
            created_at_us: n.created_us,
            started_at_us: n.started(),
            completed_at_us: n.completed(),
            elapsed_us: end - start,
            busy_us: busy,
            idle_us: alive.saturating_sub(busy),
        };
        *with_failures =
            n.status == Status::Completed && cold.is_some_and(|c| c.failures_below.is_some());
        *flattened = cold.is_some_and(|c| c.flattened);
        match n.metadata.as_deref() {
            Some(m) => set_eq(metadata, m),
            None if metadata.is_empty() => {}
            None => *metadata = Metadata::default(),
        }
        // A node that is not running shows neither (`shown_estimate` sets them for the others).
        if *status != Status::Running {
            clear(estimate);
            *stalled = false;
        }
        *planned = plan.planned;
        *key = plan.key;
        *skipped = plan.skipped;
        *planned_hidden = plan.hidden;
        let Some(c) = cold else {
            // Most nodes: nothing rare to copy, and a reused level has nothing to clear.
            clear(error);
            clear(failures_below);
            *cancel_reason = None;
            clear(handled_errors);
            clear_vec(input_errors);
            clear_vec(recent_events);
            clear_vec(folded);
            clear(resources);
            clear(attempts);
            return;
        };
        // Compared first: a failed node's error, say, is not copied again every snapshot.
        set_boxed(error, c.error.as_ref());
        set_boxed(failures_below, c.failures_below.as_ref());
        *cancel_reason = c.cancel_reason;
        set_boxed(handled_errors, c.handled.as_ref());
        set_eq(input_errors, &c.input_errors);
        c.recent.refresh_into(recent_events);
        set_eq(folded, &c.folded);
        set_boxed(resources, c.resources.as_ref().map(|r| r.usage()).as_ref());
        set_eq(attempts, &c.attempts);
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
    /// tick left (see `tree::estimates`); other nodes were cleared by `fill_level`.
    fn shown_estimate(
        &self,
        n: &Node,
        level: &mut ProgressLevel,
        now_us: u64,
        priors: &PriorDurations,
    ) {
        if level.status != Status::Running {
            return;
        }
        let Some(state) = n.est.as_deref() else {
            clear(&mut level.estimate);
            level.stalled = false;
            return;
        };
        let history = priors.lookup(&n.level_type, n.name());
        // Compared first: an estimate unchanged since the last tick is not boxed again.
        set_boxed(&mut level.estimate, state.shown_at(now_us).as_ref());
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

/// A level holding `n`'s strings, so filling it touches no reference count again.
fn blank_of(n: &Node) -> ProgressLevel {
    ProgressLevel::blank(
        n.id,
        n.level_type.clone(),
        n.name().clone(),
        n.callsite.span_name.clone(),
        n.callsite.target.clone(),
        n.status(),
    )
}

/// A boxed copy of `src` in `dst`: nothing done when equal already, and an existing box is
/// written over (no allocation either way).
#[inline]
fn set_boxed<T: Clone + PartialEq>(dst: &mut Option<Box<T>>, src: Option<&T>) {
    match (dst.as_deref_mut(), src) {
        (Some(d), Some(s)) => {
            if d != s {
                d.clone_from(s);
            }
        }
        (None, None) => {}
        _ => *dst = src.cloned().map(Box::new),
    }
}

/// `*dst = src.clone()`, unless it already is `src` (no reference count touched).
#[inline]
fn set_arc(dst: &mut Arc<str>, src: &Arc<str>) {
    if !Arc::ptr_eq(dst, src) {
        *dst = src.clone();
    }
}

#[inline]
fn set_opt_arc(dst: &mut Option<Arc<str>>, src: Option<&Arc<str>>) {
    match (dst.as_ref(), src) {
        (Some(d), Some(s)) if Arc::ptr_eq(d, s) => {}
        (None, None) => {}
        _ => *dst = src.cloned(),
    }
}

/// `*dst = src.clone()`, unless equal already (comparing costs less than allocating).
#[inline]
fn set_eq<T: Clone + PartialEq>(dst: &mut T, src: &T) {
    if dst != src {
        dst.clone_from(src);
    }
}

#[inline]
fn clear<T>(dst: &mut Option<T>) {
    if dst.is_some() {
        *dst = None;
    }
}

#[inline]
fn clear_vec<T>(dst: &mut Vec<T>) {
    if !dst.is_empty() {
        *dst = Vec::new();
    }
}
