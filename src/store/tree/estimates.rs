//! The estimate tick: one observation of every running node, on the store's schedule.
//!
//! Readers never advance estimates (a snapshot only counts the last tick's estimate down), so
//! the ETA a user sees is the same whether nothing, one page or a hundred SSE clients look.
//! A tick walks the tree bottom-up like a snapshot but builds no model: per node it computes
//! the progress its percentage uses (units done plus running children's fractions), feeds it
//! to the node's [`NodeEstimator`](crate::estimate::NodeEstimator) and decides what to show,
//! with the children's results at hand for a parent that has no rate of its own.

use super::{Progress, ROOT_SLOT, Tree};
use crate::estimate::{self, ChildSample, Family, PriorDurations};
use crate::model::Status;

/// One node being walked: its slot, the next child to visit, and its children's results.
struct Frame {
    slot: u32,
    next_child: u32,
    children: Vec<ChildSample>,
    partial: f64,
}

impl Tree {
    /// Advances the estimates of every running node to `now_us`. Returns true when something
    /// a reader sees changed other than by the passing of time (an estimate appeared or
    /// went, a stall began or ended), so subscribers are told.
    pub(crate) fn tick_estimates(&mut self, now_us: u64) -> bool {
        // Completed nodes buffered since the last tick feed the shared priors first.
        self.pending.record_into(&self.priors);
        let priors = self.priors.clone();
        let priors = priors.read();
        let mut changed = false;
        let frame = |slot: u32, first: u32| Frame {
            slot,
            next_child: first,
            children: Vec::new(),
            partial: 0.0,
        };
        let mut stack = Vec::new();
        if let Some(root) = self.slot(ROOT_SLOT) {
            stack.push(frame(ROOT_SLOT, root.children.first));
        }
        while let Some(top) = stack.last_mut() {
            let child = top.next_child;
            if let Some(c) = self.slot(child) {
                top.next_child = c.next;
                // Finished subtrees need no walk: their root's sample is all the parent uses.
                if c.status.is_finished() {
                    top.children.push(ChildSample {
                        status: c.status(),
                        elapsed_us: c.elapsed_us(now_us),
                        estimate: None,
                    });
                } else {
                    let first = c.children.first;
                    stack.push(frame(child, first));
                }
                continue;
            }
            let Some(done) = stack.pop() else { break };
            let (sample, fraction, flipped) = self.tick_node(&done, now_us, &priors);
            changed |= flipped;
            match stack.last_mut() {
                Some(parent) => {
                    parent.partial += fraction;
                    parent.children.push(sample);
                }
                None => break,
            }
        }
        changed
    }

    /// One node's tick, its children done: its sample for the parent, the fraction of a unit
    /// it adds to the parent's progress, and whether what readers see flipped.
    fn tick_node(
        &mut self,
        frame: &Frame,
        now_us: u64,
        priors: &PriorDurations,
    ) -> (ChildSample, f64, bool) {
        let stall_factor = self.limits.stall_factor;
        // The children's level type, for a unit time from history when none completed yet.
        let child_type = self
            .slot(frame.slot)
            .and_then(|n| self.slot(n.children.first))
            .map(|c| c.level_type().clone());
        let Some(n) = self.slot_mut(frame.slot) else {
            let gone = ChildSample {
                status: Status::Completed,
                elapsed_us: 0,
                estimate: None,
            };
            return (gone, 0.0, false);
        };
        let Progress {
            current,
            total,
            percentage,
        } = n.progress(frame.partial);
        let elapsed_us = n.elapsed_us(now_us);
        let fraction = if n.status.is_finished() {
            0.0
        } else {
            percentage.map_or(0.0, |p| p / 100.0)
        };
        let mut sample = ChildSample {
            status: n.status(),
            elapsed_us,
            estimate: None,
        };
        if n.status() != Status::Running {
            // Pending, or failed while still open: nothing to estimate (any more).
            let flipped = n.est.take().is_some();
            return (sample, fraction, flipped);
        }
        let explicit = n.live.current().is_some();
        let counts_children = !explicit && (n.children.len > 0 || n.finished_children > 0);
        let signal = explicit || total.is_some() || counts_children;
        let history = priors.lookup(n.level_type(), n.name());
        let fresh = n.est.is_none();
        if fresh && !(signal || history.is_some()) {
            return (sample, fraction, false);
        }
        let events = n.live.updates() + n.finished_children;
        let folded = n.cold.as_deref().map_or(&[][..], |c| &c.folded[..]);
        // Progress counted up from nothing since the start (see below).
        let from_start = (!explicit || n.live.counted_from_zero())
            .then(|| n.started())
            .flatten()
            .filter(|&s| s < now_us);
        let state = n.est.get_or_insert_with(Box::default);
        let before = (
            state.shown_at(now_us).is_some(),
            state.stalled(now_us, stall_factor, history, elapsed_us),
        );
        if signal {
            // A first look at a node whose progress counted up from nothing since its start:
            // the start is an observation too (progress 0), so the rate is known one tick
            // sooner. Not so when its current was set (it may have begun at 50 of 100).
            if fresh && let Some(start) = from_start {
                state.observe(start, 0.0, total, 0);
            }
            state.observe(now_us, current as f64 + frame.partial, total, events);
        }
        let fallback = if state.has_rate() {
            None
        } else {
            let family = Family {
                total,
                current,
                children: &frame.children,
                folded,
            };
            counts_children
                .then(|| {
                    let unit_prior = child_type.as_deref().and_then(|t| priors.for_type(t));
                    estimate::from_children(family, unit_prior)
                })
                .flatten()
                .or_else(|| history.and_then(|h| estimate::from_history(h, elapsed_us)))
        };
        sample.estimate = state.tick(now_us, fallback);
        let after = (
            sample.estimate.is_some(),
            state.stalled(now_us, stall_factor, history, elapsed_us),
        );
        (sample, fraction, fresh || before != after)
    }

    /// Nodes holding estimator state, and completions waiting for the priors (tests).
    #[cfg(test)]
    pub(crate) fn estimator_state(&self) -> (usize, usize) {
        let held = self.nodes.iter().flatten().filter(|n| n.est.is_some());
        (held.count(), self.pending.len())
    }
}
