//! Attempts: a unit that is retried stays one node.
//!
//! When a new attempt of a unit starts, the node of the attempt before it (a finished sibling
//! with the same span name, level type and name) is taken out of the tree and kept, summed
//! up, in the new node's list of earlier attempts (bounded, [`Attempts::MAX_EARLIER`]). The
//! new node takes its place among the siblings. Whatever the earlier attempt added to its
//! ancestors is taken back: its parent's failed / cancelled / completed count, the failures
//! below it in every ancestor's `failures_below`, the operation's `nodes_failed`. So the
//! parent's status and counts are the last attempt's: a block that failed once and then
//! succeeded leaves its song completed, not "with failures", and a unit whose last attempt
//! failed counts as one failure, not one per attempt.
//!
//! Two ways in:
//! * automatic, when a new node with a key (`progress.name` or a rule's name field, not the
//!   span name by default) is created under a parent that still retains a *failed* sibling of
//!   the same span name, level type and name, among the operation's last
//!   [`RECENT_FAILURES`] failed nodes (so creating a node costs the same however many of its
//!   siblings failed);
//! * explicit, `progress.attempt = n` (n > 1) or `set_attempt(n)`: the latest failed or
//!   cancelled sibling of the same span name, level type and name becomes the earlier attempt,
//!   keyed or not; with none left, the node only records its number.
//!
//! Not attempts: a sibling that completed, that is still running, that has a different name or
//! span name, that lives under a different parent, or that was already folded away; for the
//! automatic rule also one that failed before the operation's last [`RECENT_FAILURES`]
//! failures.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{NIL, Node, Tree};
use crate::model::{Attempt, Attempts, Status};
use crate::store::node::NodeKey;

/// How many of an operation's last failed nodes the automatic rule looks at.
pub(super) const RECENT_FAILURES: usize = 16;

/// The operation's last nodes that closed failed, newest last (stale keys are skipped).
#[derive(Default)]
pub(super) struct RecentFailures(VecDeque<NodeKey>);

impl RecentFailures {
    pub(super) fn push(&mut self, key: NodeKey) {
        if self.0.len() >= RECENT_FAILURES {
            self.0.pop_front();
        }
        self.0.push_back(key);
    }
}

impl Tree {
    /// The automatic rule, for the keyed node at `key` just added under `parent`: nothing to
    /// do (one comparison) when nothing failed lately.
    pub(super) fn auto_attempt(&mut self, parent: u32, key: NodeKey) {
        if self.recent_failures.0.is_empty() {
            return;
        }
        let Some(new) = self.node(key) else { return };
        let prev = self.recent_failures.0.iter().rev().find_map(|k| {
            let c = self.node(*k)?;
            (c.parent == Some(parent) && retries(c, new)).then_some(k.slot)
        });
        if let Some(prev) = prev {
            self.supersede(parent, prev, key, None);
        }
    }

    /// An explicit attempt number (`progress.attempt`, `set_attempt`).
    pub(super) fn set_attempt(&mut self, key: NodeKey, number: u32) {
        let number = number.max(1);
        let Some(n) = self.node(key) else { return };
        if n.status.is_finished() {
            return;
        }
        let merged = n
            .cold
            .as_deref()
            .and_then(|c| c.attempts.as_deref())
            .is_some_and(|a| !a.earlier.is_empty() || a.omitted > 0);
        if let (Some(parent), false, true) = (n.parent, merged, number > 1)
            && let Some(prev) = self.earlier_attempt(parent, n)
        {
            self.supersede(parent, prev, key, Some(number));
            return;
        }
        if let Some(n) = self.node_mut(key) {
            n.cold()
                .attempts
                .get_or_insert_with(|| {
                    Box::new(Attempts {
                        number,
                        earlier: Vec::new(),
                        omitted: 0,
                    })
                })
                .number = number;
        }
    }

    /// Ids of the node at `slot` and everything below it.
    fn subtree_ids(&self, slot: u32) -> Vec<crate::model::NodeId> {
        let mut ids = Vec::new();
        let mut stack = vec![slot];
        while let Some(s) = stack.pop() {
            if let Some(n) = self.slot(s) {
                ids.push(n.id);
                stack.extend(self.children_of(n));
            }
        }
        ids
    }

    /// For an explicit attempt: the latest finished sibling of `new` under `parent`, failed or
    /// cancelled, with the same span name, level type and name (the parent's queues of
    /// finished children, searched whole: explicit attempts are rare).
    fn earlier_attempt(&self, parent: u32, new: &Node) -> Option<u32> {
        let p = self.slot(parent)?;
        let mut found: Option<(u64, u32)> = None;
        for head in [p.fold_failed.head, p.fold_ok.head] {
            let mut cur = head;
            while let Some(c) = (cur != NIL).then(|| self.slot(cur)).flatten() {
                let same =
                    matches!(c.status, Status::Failed | Status::Cancelled) && retries(c, new);
                if same && found.is_none_or(|(at, _)| c.completed_us >= at) {
                    found = Some((c.completed_us, cur));
                }
                cur = c.fold_next;
            }
        }
        found.map(|(_, slot)| slot)
    }

    /// Replaces the finished node at `old` (a child of `parent`) with the running node at
    /// `new`: `old` becomes `new`'s latest earlier attempt and leaves the tree with its
    /// subtree, taking back what it added to its ancestors.
    fn supersede(&mut self, parent: u32, old: u32, new: NodeKey, number: Option<u32>) {
        let Some(o) = self.slot_mut(old) else { return };
        let status = o.status;
        let mut attempts = o
            .cold
            .as_deref_mut()
            .and_then(|c| c.attempts.take())
            .unwrap_or_else(|| {
                Box::new(Attempts {
                    number: 1,
                    earlier: Vec::new(),
                    omitted: 0,
                })
            });
        let cold = o.cold.as_deref();
        let below = cold
            .and_then(|c| c.failures_below.as_ref())
            .map_or(0, |f| f.count);
        // What `fail` counted in the ancestors for this node itself: its own first error,
        // unless that was a failure below passed up.
        let own = cold
            .and_then(|c| c.error.as_ref())
            .is_some_and(|e| !e.propagated);
        let record = Attempt {
            number: attempts.number,
            status,
            cancel_reason: cold.and_then(|c| c.cancel_reason),
            started_at_us: o.started().unwrap_or(o.created_us),
            duration_us: o.duration_us(),
            current: o.live.current().unwrap_or(o.finished_children),
            total: o.live.total(),
            error: cold
                .and_then(|c| {
                    c.error
                        .clone()
                        .or_else(|| c.failures_below.as_ref().map(|f| f.first.clone()))
                })
                .map(Box::new),
            failures_below: below,
        };
        let taken_back = below + u64::from(own);

        // The parent's counts and every ancestor's failures, as if `old` had never run.
        if let Some(p) = self.slot_mut(parent) {
            match status {
                Status::Completed => p.finished_children = p.finished_children.saturating_sub(1),
                Status::Failed => {
                    let c = p.cold();
                    c.failed_children = c.failed_children.saturating_sub(1);
                }
                _ => {
                    let c = p.cold();
                    c.cancelled_children = c.cancelled_children.saturating_sub(1);
                }
            }
            p.retained_finished_children = p.retained_finished_children.saturating_sub(1);
        }
        if taken_back > 0 {
            // The failures set aside are the subtree's: an ancestor's first/last that points
            // into it is replaced by the other one when that one is still standing.
            let gone = self.subtree_ids(old);
            let stale = |e: &crate::model::ErrorInfo| gone.contains(&e.node_id);
            let mut cur = Some(parent);
            while let Some(s) = cur {
                let Some(a) = self.slot_mut(s) else { break };
                cur = a.parent;
                let Some(cold) = a.cold.as_deref_mut() else {
                    continue;
                };
                if let Some(f) = cold.failures_below.as_mut() {
                    f.count = f.count.saturating_sub(taken_back);
                    if f.count == 0 {
                        cold.failures_below = None;
                    } else if stale(&f.first) && !stale(&f.last) {
                        f.first = f.last.clone();
                    } else if stale(&f.last) && !stale(&f.first) {
                        f.last = f.first.clone();
                    }
                }
            }
        }

        // `new` takes `old`'s place among the siblings.
        self.unqueue_for_fold(parent, old);
        self.unlink_child(parent, new.slot);
        let Some((prev, next)) = self.slot(old).map(|o| (o.prev, o.next)) else {
            return;
        };
        match self.slot_mut(prev) {
            Some(p) => p.next = new.slot,
            None => {
                if let Some(p) = self.slot_mut(parent) {
                    p.children.first = new.slot;
                }
            }
        }
        match self.slot_mut(next) {
            Some(n) => n.prev = new.slot,
            None => {
                if let Some(p) = self.slot_mut(parent) {
                    p.children.last = new.slot;
                }
            }
        }
        if let Some(n) = self.slot_mut(new.slot) {
            n.prev = prev;
            n.next = next;
        }

        // Drop `old` and its subtree (all finished: a span outlives its children).
        let mut stack = vec![old];
        let (mut removed, mut failed) = (0u64, 0u64);
        while let Some(s) = stack.pop() {
            if let Some(node) = self.nodes.get_mut(s as usize).and_then(Option::take) {
                self.metrics.updates += node.live.updates();
                if node.status.is_finished() && node.parent.is_some() {
                    self.finished_retained = self.finished_retained.saturating_sub(1);
                }
                failed += u64::from(node.status == Status::Failed);
                stack.extend(self.children_of(&node));
                self.free.push(s);
                removed += 1;
            }
        }
        self.metrics.nodes_retained = self.metrics.nodes_retained.saturating_sub(removed);
        self.metrics.nodes_failed = self.metrics.nodes_failed.saturating_sub(failed);
        self.metrics.retried += 1;
        self.plan_child_retried(parent);

        attempts.number = number.unwrap_or(record.number.saturating_add(1));
        attempts.earlier.push(record);
        if attempts.earlier.len() > Attempts::MAX_EARLIER {
            attempts.earlier.remove(0);
            attempts.omitted = attempts.omitted.saturating_add(1);
        }
        if let Some(n) = self.node_mut(new) {
            n.cold().attempts = Some(attempts);
        }
    }
}

/// Whether `new` is another attempt of the closed node `c`: same span name, level type and
/// name (the caller checks the parent and `c`'s status).
fn retries(c: &Node, new: &Node) -> bool {
    c.completed_us != 0
        && c.own_name() == new.own_name()
        && c.level_type() == new.level_type()
        && (Arc::ptr_eq(&c.callsite, &new.callsite)
            || c.callsite.span_name == new.callsite.span_name)
}
