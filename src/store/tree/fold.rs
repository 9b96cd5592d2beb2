//! Folding: finished nodes past the limits become per-parent summaries, so memory stays
//! bounded however many nodes an operation creates.
//!
//! Every step is O(1) whatever the number of live siblings: a parent keeps its finished
//! children in completion-order queues (`fold_ok`, `fold_failed`) and its children in a list
//! a node is unlinked from in place.

use std::sync::Arc;

use super::{NIL, Node, Tree};
use crate::model::{FoldedChildren, Status};
use crate::store::node::NodeKey;

impl Tree {
    /// A child of `parent` finished (`key`, failed or not): it is retained among the
    /// operation's and its parent's finished nodes, `count` books it on the parent, and the
    /// parent's oldest finished child folds when the per-parent limit is passed. (The
    /// operation-wide limit is the caller's to enforce, once per change.)
    pub(super) fn retain_finished(
        &mut self,
        parent: u32,
        key: NodeKey,
        failed: bool,
        count: impl FnOnce(&mut Node),
    ) {
        self.finished_retained += 1;
        self.finished.push_back(key);
        self.queue_for_fold(parent, key.slot, failed);
        let per_parent = self.limits.max_finished_children;
        let over = match self.slot_mut(parent) {
            Some(p) => {
                count(p);
                p.retained_finished_children += 1;
                p.retained_finished_children as usize > per_parent
            }
            None => false,
        };
        if over {
            self.fold_oldest_child(parent);
        }
    }

    /// Per-parent limit: fold the oldest finished child, sparing failed ones while possible.
    pub(super) fn fold_oldest_child(&mut self, parent: u32) {
        let Some(p) = self.slot(parent) else { return };
        let victim = if p.fold_ok.head != NIL {
            p.fold_ok.head
        } else {
            p.fold_failed.head
        };
        if victim != NIL {
            self.fold(victim);
        }
    }

    /// Operation-wide limit on retained finished nodes: fold in completion order.
    pub(super) fn enforce_operation_limit(&mut self) {
        let max = self.limits.max_finished_nodes;
        while self.finished_retained > max {
            let Some(key) = self.finished.pop_front() else {
                break;
            };
            if self.node(key).is_some() {
                self.fold(key.slot);
            }
        }
        if self.finished.len() > 2 * max + 64 {
            let nodes = &self.nodes;
            self.finished.retain(|key| {
                nodes
                    .get(key.slot as usize)
                    .and_then(|n| n.as_ref())
                    .is_some_and(|n| n.id == key.id)
            });
        }
    }

    /// Removes a finished node and its subtree, adding it to its parent's folded summary.
    fn fold(&mut self, slot: u32) {
        let Some(n) = self.slot(slot) else { return };
        let Some(parent) = n.parent else { return };
        if !n.status.is_finished() {
            return;
        }
        let (status, duration) = (n.status, n.duration_us());
        // The parent's summary of this level type, found while the node is there to borrow
        // its type from: a fold of a known type clones and drops no `Arc`. Siblings of one
        // callsite share the level's `Arc`: compared by address first.
        let level_type = n.level_type();
        let known = self.slot(parent).and_then(|p| {
            let folded = p.cold.as_deref().map_or(&[][..], |c| &c.folded[..]);
            folded
                .iter()
                .position(|f| Arc::ptr_eq(&f.level_type, level_type) || f.level_type == *level_type)
        });
        let summary = match known {
            Some(i) => Summary::Known(i),
            None => Summary::New(level_type.clone()),
        };
        self.unqueue_for_fold(parent, slot);
        self.unlink_child(parent, slot);
        // Remove the subtree; only finished nodes can be in it (a span outlives its children).
        // The stack allocates only below a node with children (leaves are the common case).
        let mut stack: Vec<u32> = Vec::new();
        let mut next = Some(slot);
        let mut removed = 0u64;
        while let Some(s) = next.take().or_else(|| stack.pop()) {
            let Some(node) = self.slot(s) else { continue };
            let updates = node.live.updates();
            let retained_finished = node.status.is_finished() && node.parent.is_some();
            if node.children.len > 0 {
                stack.extend(self.children_of(node));
            }
            self.metrics.updates += updates;
            if retained_finished {
                self.finished_retained = self.finished_retained.saturating_sub(1);
            }
            // Dropped in place: moving a node out first copies all of it.
            self.nodes[s as usize] = None;
            self.free.push(s);
            removed += 1;
        }
        self.metrics.nodes_folded += removed;
        self.metrics.nodes_retained = self.metrics.nodes_retained.saturating_sub(removed);
        let Some(p) = self.slot_mut(parent) else {
            return;
        };
        p.retained_finished_children = p.retained_finished_children.saturating_sub(1);
        let folded = &mut p.cold().folded;
        let entry = match summary {
            // The summaries did not change since the index was found.
            Summary::Known(i) => &mut folded[i],
            Summary::New(level_type) => {
                folded.push(FoldedChildren {
                    level_type,
                    count: 0,
                    completed: 0,
                    failed: 0,
                    cancelled: 0,
                    min_us: u64::MAX,
                    mean_us: 0,
                    max_us: 0,
                });
                let last = folded.len() - 1;
                &mut folded[last]
            }
        };
        // Running mean in integers: exact enough for µs and never overflows.
        entry.count += 1;
        // (i64 covers 292,000 years of µs; i128 division would be a libcall on every fold.)
        let as_i64 = |v: u64| v.min(i64::MAX as u64) as i64;
        let delta = as_i64(duration).saturating_sub(as_i64(entry.mean_us));
        entry.mean_us = as_i64(entry.mean_us)
            .saturating_add(delta / as_i64(entry.count))
            .max(0) as u64;
        entry.min_us = entry.min_us.min(duration);
        entry.max_us = entry.max_us.max(duration);
        match status {
            Status::Failed => entry.failed += 1,
            Status::Cancelled => entry.cancelled += 1,
            _ => entry.completed += 1,
        }
    }
}

/// Where a folded node is summed up under its parent.
enum Summary {
    /// The parent's summary at this index already counts the node's level type.
    Known(usize),
    /// The first folded child of its type: a new summary.
    New(Arc<str>),
}
