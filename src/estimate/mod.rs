//! Remaining-time estimates and stall detection: pure logic, driven by timestamps passed in.
//!
//! Nothing here reads a clock or takes a lock: callers pass the time of each observation, so
//! tests drive it with any timeline they like. The store advances each running node's
//! [`NodeEstimator`] on a fixed tick (`store::ticker`), never from a reader, so what a user
//! sees does not depend on how often something looks. The whole method, with the accuracy
//! the tests hold it to, is in `docs/estimates.md`.
//!
//! * [`rate`]: the smoothed rate of one node and its raw remaining time;
//! * [`guard`]: what is shown, so that noise never makes the estimate rise;
//! * [`prior`]: durations of completed nodes per kind, and estimates from them;
//! * [`children`]: a parent's estimate from its running and not-started children.

pub(crate) mod children;
pub(crate) mod guard;
pub(crate) mod prior;
pub(crate) mod rate;
#[cfg(test)]
pub(crate) mod tests;

use crate::model::{Estimate, EstimateBasis};
pub(crate) use children::{ChildSample, Family, from_children};
use guard::{Guard, Tolerance};
pub(crate) use prior::{FinishedNode, PriorDurations, Priors, from_history, past_p95};
use rate::RateEstimator;

/// Width of the range in standard errors.
const Z: f64 = 2.0;
/// Default `k` of stall detection: no progress for `k ×` the usual interval.
pub(crate) const DEFAULT_STALL_FACTOR: f64 = 5.0;

fn estimate(
    remaining: f64,
    low: f64,
    high: f64,
    rate: Option<f64>,
    basis: EstimateBasis,
) -> Estimate {
    // `as` saturates: an absurdly slow rate gives u64::MAX, never a panic.
    let remaining_us = remaining.max(0.0) as u64;
    Estimate {
        remaining_us,
        low_us: (low.max(0.0) as u64).min(remaining_us),
        high_us: (high.max(0.0) as u64).max(remaining_us),
        rate_per_s: rate,
        basis,
    }
}

/// Per-node state: the rate estimator, the guard on what is shown, and what the last tick
/// decided to show.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeEstimator {
    rate: RateEstimator,
    guard: Guard,
    /// The estimate decided at the last tick, and the tick's time.
    shown: Option<(u64, Estimate)>,
}

impl NodeEstimator {
    /// One observation of the node's progress (see [`RateEstimator::observe`]).
    pub(crate) fn observe(&mut self, now_us: u64, progress: f64, total: Option<u64>, events: u64) {
        self.rate
            .observe(now_us, progress, total.map(|t| t as f64), events);
    }

    /// Whether the node's own rate gives the estimate (no fallback needed).
    pub(crate) fn has_rate(&self) -> bool {
        self.rate.ready() && self.rate.total.is_some()
    }

    /// One tick: decides what to show from `now_us` on (the node's own rate if ready, else
    /// `fallback`: children, then history, through the guard) and returns it.
    pub(crate) fn tick(&mut self, now_us: u64, fallback: Option<Estimate>) -> Option<Estimate> {
        let shown = self.decide(now_us, fallback);
        self.shown = shown.clone().map(|e| (now_us, e));
        shown
    }

    /// What the last tick decided, counted down to `now_us` (read-only: looking at an
    /// estimate never changes it).
    pub(crate) fn shown_at(&self, now_us: u64) -> Option<Estimate> {
        let (at, e) = self.shown.as_ref()?;
        let gone = now_us.saturating_sub(*at);
        Some(Estimate {
            remaining_us: e.remaining_us.saturating_sub(gone),
            low_us: e.low_us.saturating_sub(gone),
            high_us: e.high_us.saturating_sub(gone),
            ..e.clone()
        })
    }

    fn decide(&mut self, now_us: u64, fallback: Option<Estimate>) -> Option<Estimate> {
        let reset = self.rate.take_reset();
        match self.rate.estimate(now_us) {
            Some(raw) => self
                .guard
                .apply(now_us, Some(raw), self.rate.tolerance(), reset),
            None => {
                // Coarse estimates: rises within their own range are noise.
                let noise = fallback.as_ref().map_or(0.0, |e| {
                    e.high_us.saturating_sub(e.remaining_us) as f64 / e.remaining_us.max(1) as f64
                });
                let tol = Tolerance {
                    noise,
                    slack_us: 0.0,
                    persist_us: 0.0,
                };
                self.guard.apply(now_us, fallback, tol, reset)
            }
        }
    }

    /// Whether the node had updates (`events` counts them) after the last observation.
    pub(crate) fn updated_since_tick(&self, events: u64) -> bool {
        events > self.rate.events_seen()
    }

    /// Whether the node is stalled (see `docs/estimates.md`); `history` and `elapsed_us` are used
    /// when the node has no rhythm of its own.
    pub(crate) fn stalled(
        &self,
        now_us: u64,
        factor: f64,
        history: Option<&[u64]>,
        elapsed_us: u64,
    ) -> bool {
        self.rate
            .stalled(now_us, factor)
            .unwrap_or_else(|| history.is_some_and(|h| past_p95(h, elapsed_us)))
    }
}
