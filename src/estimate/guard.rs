//! What is shown: the predicted completion time, smoothed so that noise never makes the
//! estimate rise (see `docs/estimates.md`, "What is shown").

use super::estimate;
use super::rate::{MIN_NOISE, SIGNIFICANT};
use crate::model::{Estimate, EstimateBasis};

/// Smooths the predicted completion time, so the shown estimate counts down through noise
/// and rises only when the raw estimate is later by more than its noise: see the module docs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Guard {
    shown: Option<Shown>,
}

#[derive(Clone, Debug)]
struct Shown {
    at_us: u64,
    /// Smoothed completion time (µs, same clock as `at_us`).
    end_us: f64,
    basis: EstimateBasis,
    /// Since when the raw completion time has been later than the shown one by more than the
    /// noise, without a break.
    later_since_us: Option<u64>,
}

/// How much a raw estimate moves on noise alone, for [`Guard::apply`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tolerance {
    /// Relative error of the raw remaining time explained by noise.
    pub(crate) noise: f64,
    /// Resolution of the raw estimate in time (µs).
    pub(crate) slack_us: f64,
    /// How long the raw estimate must stay later than noise explains before the shown one
    /// follows it up (µs).
    pub(crate) persist_us: f64,
}

impl Guard {
    /// The estimate to show at `now_us`, given the raw one. The completion time
    /// `now + remaining` is smoothed with time constant `τₛ = noise × remaining + slack`:
    ///
    /// * raw earlier than shown: follow with `0.01 × remaining + slack` (at once when more
    ///   than `3τₛ` earlier): the estimate falls;
    /// * raw later by up to `τₛ`, or by more for less than `persist`: the shown remaining time
    ///   is kept (at most): noise does not make it rise;
    /// * raw later by more than `τₛ` for `persist`, or by more than `3τₛ`: follow with `τₛ`:
    ///   the rate really dropped and the estimate rises.
    ///
    /// `reset` (the remaining work jumped) or a new basis starts over at the raw estimate.
    pub(crate) fn apply(
        &mut self,
        now_us: u64,
        raw: Option<Estimate>,
        tol: Tolerance,
        reset: bool,
    ) -> Option<Estimate> {
        let Some(raw) = raw else {
            self.shown = None;
            return None;
        };
        let now = now_us as f64;
        let raw_remaining = raw.remaining_us as f64;
        let raw_end = now + raw_remaining;
        let (end, later_since_us) = match &self.shown {
            Some(prev) if !reset && prev.basis == raw.basis && now_us >= prev.at_us => {
                let tau = (tol.noise * raw_remaining + tol.slack_us).max(1.0);
                let dt = (now_us - prev.at_us) as f64;
                let ahead = raw_end - prev.end_us;
                let follow = |tau: f64| prev.end_us + -(-dt / tau.max(1.0)).exp_m1() * ahead;
                if ahead < 0.0 {
                    let tau_down = if -ahead > SIGNIFICANT * tau {
                        tol.slack_us
                    } else {
                        MIN_NOISE * raw_remaining + tol.slack_us
                    };
                    (follow(tau_down), None)
                } else if ahead <= tau {
                    (follow(tau).min(prev.end_us + dt), None)
                } else {
                    let since = prev.later_since_us.unwrap_or(now_us);
                    let persisted = (now_us - since) as f64 >= tol.persist_us;
                    if persisted || ahead > SIGNIFICANT * tau {
                        (follow(tau), Some(since))
                    } else {
                        (follow(tau).min(prev.end_us + dt), Some(since))
                    }
                }
            }
            _ => (raw_end, None),
        };
        self.shown = Some(Shown {
            at_us: now_us,
            end_us: end,
            basis: raw.basis,
            later_since_us,
        });
        let remaining = (end - now).max(0.0);
        // The raw range, relative, around the shown value.
        let scale = if raw.remaining_us > 0 {
            remaining / raw_remaining
        } else {
            1.0
        };
        Some(estimate(
            remaining,
            raw.low_us as f64 * scale,
            raw.high_us as f64 * scale,
            raw.rate_per_s,
            raw.basis,
        ))
    }
}
