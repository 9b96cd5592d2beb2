//! Completed nodes waiting for the shared priors, grouped by kind.
//!
//! A loop closes many nodes of one kind in a row; they share their level type's and name's
//! `Arc`s, so a run of them is one group holding those once plus its durations. Closing a node
//! then clones and drops no `Arc` (two of each per node otherwise, shared atomics on the hot
//! path); the clones happen at the next estimate tick, once per recorded node, off it.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::estimate::Priors;

/// Completed nodes buffered between ticks; past this many the oldest are dropped (the
/// priors keep the last 64 per kind anyway, and the buffer stays bounded).
const PRIOR_PENDING_MAX: usize = 256;

/// Consecutive completions of one kind.
struct Group {
    level_type: Arc<str>,
    name: Arc<str>,
    /// Oldest first. The first duration is inline, so a group of one allocates nothing.
    first: u64,
    more: VecDeque<u64>,
}

#[derive(Default)]
pub(super) struct PendingPriors {
    groups: VecDeque<Group>,
    len: usize,
}

impl PendingPriors {
    /// Adds a completed node, dropping the oldest past the bound.
    pub(super) fn push(&mut self, level_type: &Arc<str>, name: &Arc<str>, duration_us: u64) {
        match self.groups.back_mut() {
            Some(g) if Arc::ptr_eq(&g.level_type, level_type) && Arc::ptr_eq(&g.name, name) => {
                g.more.push_back(duration_us)
            }
            _ => self.groups.push_back(Group {
                level_type: level_type.clone(),
                name: name.clone(),
                first: duration_us,
                more: VecDeque::new(),
            }),
        }
        self.len += 1;
        if self.len > PRIOR_PENDING_MAX {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let Some(g) = self.groups.front_mut() else {
            return;
        };
        match g.more.pop_front() {
            Some(next) => g.first = next,
            None => {
                self.groups.pop_front();
            }
        }
        self.len -= 1;
    }

    /// Hands everything buffered to the priors, oldest first, a run of one kind at a time.
    pub(super) fn record_into(&mut self, priors: &Priors) {
        if self.len == 0 {
            return;
        }
        let groups = &mut self.groups;
        priors.record_runs(|p| {
            for g in groups.drain(..) {
                let durations = std::iter::once(g.first).chain(g.more.iter().copied());
                p.record_run(&g.level_type, &g.name, durations);
            }
        });
        self.len = 0;
    }

    /// Completions buffered (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_in_order_and_stays_bounded() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("block"), Arc::from("song"));
        let mut p = PendingPriors::default();
        // Runs of one kind, a kind equal by value but another Arc, and a bound to pass.
        for i in 0..300u64 {
            let kind = if (i / 50) % 2 == 0 { &a } else { &b };
            p.push(kind, kind, i);
        }
        p.push(&Arc::from("block"), &a, 300);
        assert_eq!(p.len(), PRIOR_PENDING_MAX);
        let mut seen = Vec::new();
        for g in &p.groups {
            seen.extend(std::iter::once(g.first).chain(g.more.iter().copied()));
        }
        let expected: Vec<u64> = (301 - PRIOR_PENDING_MAX as u64..=300).collect();
        assert_eq!(seen, expected, "the newest, oldest first");
        let priors = Priors::default();
        p.record_into(&priors);
        assert_eq!(p.len(), 0);
        assert!(p.groups.is_empty());
        assert!(priors.read().for_type("block").is_some());
        assert!(priors.read().for_type("song").is_some());
    }
}
