//! The smoothed rate of one node's progress (basis `Rate`; see `docs/estimates.md`).

use super::guard::Tolerance;
use super::{Z, estimate};
use crate::model::{Estimate, EstimateBasis};

/// Time constant `τ` of the rate smoothing (10 s).
pub(crate) const TAU_US: f64 = 10_000_000.0;
/// The smoothing spans at least this many typical gaps between progress observations.
pub(super) const TAU_GAPS: f64 = 10.0;
/// The smoothing spans at least the time this many units take (whole units are coarse).
pub(super) const TAU_UNITS: f64 = 50.0;
/// Rate samples needed before a rate-based estimate is given.
pub(crate) const MIN_RATE_SAMPLES: u32 = 2;
/// Progress this many typical gaps (plus three deviations) late slows the rate used.
const OVERDUE: f64 = 2.0;
/// Weight of a new sample in the typical gap and interval averages.
const INTERVAL_ALPHA: f64 = 0.3;
/// Interval samples needed before stall detection by rhythm.
pub(crate) const MIN_INTERVALS: u32 = 2;
/// The pessimistic rate is at least this fraction of the smoothed rate.
const MAX_SLOWDOWN: f64 = 10.0;
/// The guard's noise tolerance in RMS relative changes of the rate per sample.
const NOISE_RMS: f64 = 3.0;
/// The guard's noise tolerance is at least this (relative), and earlier estimates are followed
/// within this fraction of the remaining time.
pub(super) const MIN_NOISE: f64 = 0.01;
/// A raw estimate this many noise time constants off is followed at once (earlier) or without
/// waiting for persistence (later).
pub(super) const SIGNIFICANT: f64 = 3.0;
/// A raw estimate later than noise explains is believed after this many rate time constants.
const PERSIST_TAUS: f64 = 0.5;
/// The fast rate (change detection) spans at least this many typical gaps...
const FAST_GAPS: f64 = 2.0;
/// ...and the time this many units take...
const FAST_UNITS: f64 = 5.0;
/// ...and this share of the time the node has run: it adapts to the job's own time scale.
const FAST_SHARE: f64 = 0.04;
/// The fast rate must differ from the smoothed one by this much (relative) ...
const CHANGE_MIN: f64 = 0.2;
/// ... and by this many standard errors of the difference ...
const CHANGE_SIGMAS: f64 = 4.0;
/// ... at this many observations in a row, for the rate to count as changed.
const CHANGE_RUN: u32 = 2;
/// After a change, the smoothing adapts with the fast time constant for this many of them.
const ADAPT_TAUS: f64 = 3.0;

/// A time-weighted, bias-corrected exponentially weighted mean of rate samples and their
/// variance (see `docs/estimates.md`, "Rate").
#[derive(Clone, Copy, Debug, Default)]
struct Ewma {
    /// Weighted sum of samples (units/µs), not yet divided by `weight`.
    mean: f64,
    weight: f64,
    weight_sq: f64,
    /// Weighted squared deviations of samples from the mean, and their weight.
    var: f64,
    var_weight: f64,
}

impl Ewma {
    /// Adds `sample` with weight `a` (`1 − e^(−Δt/τ)`).
    fn push(&mut self, sample: f64, a: f64) {
        if let Some(mean) = self.rate() {
            let dev = sample - mean;
            self.var = (1.0 - a) * self.var + a * dev * dev;
            self.var_weight = (1.0 - a) * self.var_weight + a;
        }
        self.mean = (1.0 - a) * self.mean + a * sample;
        self.weight = (1.0 - a) * self.weight + a;
        self.weight_sq = (1.0 - a) * (1.0 - a) * self.weight_sq + a * a;
    }

    fn rate(&self) -> Option<f64> {
        (self.weight > 0.0)
            .then(|| self.mean / self.weight)
            .filter(|r| r.is_finite())
    }

    /// Time-weighted variance of the samples.
    fn sample_var(&self) -> f64 {
        if self.var_weight > 0.0 {
            self.var / self.var_weight
        } else {
            0.0
        }
    }

    /// Effective number of samples in the mean.
    fn n_eff(&self) -> f64 {
        if self.weight_sq > 0.0 {
            (self.weight * self.weight / self.weight_sq).max(1.0)
        } else {
            1.0
        }
    }

    /// This mean's rate and spread, worth `weight` of data (a fresh start that knows it).
    fn reweighted(&self, weight: f64) -> Ewma {
        let rate = self.rate().unwrap_or(0.0);
        Ewma {
            mean: rate * weight,
            weight,
            weight_sq: weight * weight,
            var: self.sample_var() * weight,
            var_weight: weight,
        }
    }
}

/// Smoothed rate of one node's progress, from observations `(time, progress, total)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RateEstimator {
    started: bool,
    first_us: u64,
    last_us: u64,
    pub(super) total: Option<f64>,
    /// When progress was last seen moving forward (or the baseline), and its value then.
    mark_us: u64,
    mark: f64,
    mark_events: u64,
    samples: u32,
    /// The smoothed rate (time constant [`Self::tau_us`]).
    slow: Ewma,
    /// A fast rate (time constant [`Self::fast_tau_us`]): when it differs from the smoothed
    /// one by more than noise explains, the rate has changed and the smoothing starts over.
    fast: Ewma,
    /// Observations in a row at which the fast rate differed from the smoothed one.
    differing: u32,
    /// Mean squared relative difference of the fast and smoothed rates while they agree.
    calm_diff: f64,
    /// Until then the smoothing uses the fast time constant (after a detected change).
    adapt_until_us: u64,
    /// Typical time between observations that saw progress (µs), and its mean deviation.
    gap_us: f64,
    gap_dev_us: f64,
    /// Usual time between updates (µs), and how many samples it has.
    interval_us: f64,
    intervals: u32,
    /// EWMA of the squared relative change of the smoothed rate per sample: how much the
    /// estimate moves on noise alone.
    jump_var: f64,
    /// EWMA of the relative change itself: a steady drift (the rate really changing) is not
    /// noise, so `jump_var` is taken around it.
    jump_mean: f64,
    /// Set when the remaining work jumped (total changed, progress went back).
    reset: bool,
}

impl RateEstimator {
    /// One observation: at `now_us` the node had done `progress` units of `total`, after
    /// `events` updates in all (a monotonic count).
    pub(crate) fn observe(&mut self, now_us: u64, progress: f64, total: Option<f64>, events: u64) {
        if !progress.is_finite() {
            return;
        }
        if !self.started {
            *self = RateEstimator {
                started: true,
                first_us: now_us,
                last_us: now_us,
                total,
                mark_us: now_us,
                mark: progress,
                mark_events: events,
                ..RateEstimator::default()
            };
            return;
        }
        if now_us < self.last_us {
            return;
        }
        self.last_us = now_us;
        if total != self.total {
            self.total = total;
            self.reset = true;
        }
        if progress < self.mark {
            self.mark = progress;
            self.mark_us = now_us;
            self.mark_events = events;
            self.reset = true;
            return;
        }
        if progress == self.mark || now_us == self.mark_us {
            // No progress, or no time to spread it over: the next observation includes it.
            return;
        }
        let dt = (now_us - self.mark_us) as f64;
        let sample = (progress - self.mark) / dt;
        let before = self.rate_per_us();
        let tau = self.tau_us(now_us, before.unwrap_or(sample));
        self.slow.push(sample, -(-dt / tau).exp_m1());
        let fast_tau = self.fast_tau_us(now_us, self.fast.rate().unwrap_or(sample));
        self.fast.push(sample, -(-dt / fast_tau).exp_m1());
        if self.rate_changed() {
            // Start over from what the fast rate knows, worth its own time constant of data
            // at the smoothing's: later samples take over within a few of them.
            let worth = -(-fast_tau / self.tau_us(now_us, sample)).exp_m1();
            self.slow = self.fast.reweighted(worth);
            self.adapt_until_us = now_us + (ADAPT_TAUS * fast_tau) as u64;
            // A change this large is no noise: what is shown starts over from it.
            self.reset = true;
        } else if let (Some(old), Some(new)) = (before, self.rate_per_us())
            && new > 0.0
            && now_us >= self.adapt_until_us
        {
            // While adapting, the rate moves by design: that is not noise.
            let jump = (new - old) / new;
            let dev = jump - self.jump_mean;
            self.jump_mean += INTERVAL_ALPHA * dev;
            self.jump_var += INTERVAL_ALPHA * (dev * dev - self.jump_var);
        }
        let per_update = dt / events.saturating_sub(self.mark_events).max(1) as f64;
        if self.samples == 0 {
            self.gap_us = dt;
            self.interval_us = per_update;
        } else {
            self.gap_dev_us += INTERVAL_ALPHA * ((dt - self.gap_us).abs() - self.gap_dev_us);
            self.gap_us += INTERVAL_ALPHA * (dt - self.gap_us);
            self.interval_us += INTERVAL_ALPHA * (per_update - self.interval_us);
        }
        self.samples += 1;
        self.intervals += 1;
        self.mark = progress;
        self.mark_us = now_us;
        self.mark_events = events;
    }

    fn rate_per_us(&self) -> Option<f64> {
        self.slow.rate()
    }

    /// Whether the fast rate has differed from the smoothed one by more than
    /// `max(CHANGE_MIN, CHANGE_SIGMAS × their RMS difference while agreeing)` for `CHANGE_RUN`
    /// observations in a row.
    fn rate_changed(&mut self) -> bool {
        let (Some(slow), Some(fast)) = (self.slow.rate(), self.fast.rate()) else {
            return false;
        };
        if self.samples < MIN_RATE_SAMPLES || slow <= 0.0 {
            return false;
        }
        let diff = (fast - slow).abs() / slow;
        // How far apart noise alone puts them is measured while they agree (the squared
        // relative difference, averaged): it includes what a formula would miss, such as
        // whole units seen early then late, which cancel out over a few samples.
        let err = self.calm_diff.sqrt();
        if diff > CHANGE_MIN.max(CHANGE_SIGMAS * err) {
            self.differing += 1;
        } else {
            self.differing = 0;
        }
        // Only clear agreement teaches the noise, so neither the start of a change nor a
        // slow drift can raise the threshold past twice the minimum.
        if diff <= CHANGE_MIN / 2.0 {
            self.calm_diff += INTERVAL_ALPHA * (diff * diff - self.calm_diff);
        }
        if self.differing >= CHANGE_RUN {
            self.differing = 0;
            return true;
        }
        false
    }

    /// Whether enough samples are in for a rate-based estimate.
    pub(crate) fn ready(&self) -> bool {
        self.samples >= MIN_RATE_SAMPLES
    }

    /// How late progress may be seen without meaning anything: the typical gap between
    /// observations that saw progress plus three mean deviations of it (µs).
    pub(crate) fn resolution_us(&self) -> f64 {
        self.gap_us + 3.0 * self.gap_dev_us
    }

    /// Time constant of the smoothing at `rate` (units/µs): see the module docs. Right after
    /// a detected change, the fast one.
    fn tau_us(&self, now_us: u64, rate: f64) -> f64 {
        let tau = TAU_US.max(TAU_GAPS * self.gap_us).max(TAU_UNITS / rate);
        if now_us < self.adapt_until_us {
            tau.min(self.fast_tau_us(now_us, rate))
        } else {
            tau
        }
    }

    /// Time constant of the fast rate: a few gaps and units, and a share of the time run.
    fn fast_tau_us(&self, now_us: u64, rate: f64) -> f64 {
        let run = now_us.saturating_sub(self.first_us) as f64;
        (FAST_GAPS * self.gap_us)
            .max(FAST_UNITS / rate)
            .max(FAST_SHARE * run)
            .min(TAU_US.max(TAU_GAPS * self.gap_us).max(TAU_UNITS / rate))
    }

    /// How much the raw estimate moves on noise alone (see [`Guard::apply`]): its relative
    /// noise, its time resolution, and half a time constant of persistence before a later
    /// estimate is believed.
    pub(crate) fn tolerance(&self) -> Tolerance {
        Tolerance {
            noise: self.noise(),
            slack_us: self.resolution_us(),
            persist_us: self
                .rate_per_us()
                .map_or(0.0, |r| self.tau_us(self.last_us, r) * PERSIST_TAUS),
        }
    }

    /// Relative change of the estimate that noise alone explains: three RMS relative changes
    /// of the smoothed rate per sample (around their mean, so a real drift is not noise), at
    /// least 1 %, plus the warm-up allowance `1/samples`.
    pub(crate) fn noise(&self) -> f64 {
        (NOISE_RMS * self.jump_var.sqrt()).max(MIN_NOISE) + 1.0 / f64::from(self.samples.max(1))
    }

    /// The rate-based estimate at `now_us` (not yet through the [`Guard`]).
    pub(crate) fn estimate(&self, now_us: u64) -> Option<Estimate> {
        if !self.ready() {
            return None;
        }
        let total = self.total?;
        let rate = self.rate_per_us().filter(|r| *r > 0.0)?;
        let waited = now_us.saturating_sub(self.mark_us) as f64;
        let typical = self.gap_us.max(1.0);
        let done = (self.mark + rate * waited.min(typical)).min(total.max(self.mark));
        let units = (total - done).max(0.0);
        let due = OVERDUE * typical + 3.0 * self.gap_dev_us;
        let rate_now = if waited > due {
            rate * due / waited
        } else {
            rate
        };
        let remaining = units / rate_now;
        let var = self.slow.sample_var();
        let n_eff = self.slow.n_eff();
        let horizon = (typical / remaining.max(1.0)).min(1.0);
        let rel = Z * (var / n_eff + var * horizon).sqrt() / rate + 1.0 / f64::from(self.samples);
        let low = units / (rate_now * (1.0 + rel));
        let high = units / (rate_now * (1.0 - rel).max(1.0 / MAX_SLOWDOWN));
        Some(estimate(
            remaining,
            low,
            high,
            Some(rate * 1e6),
            EstimateBasis::Rate,
        ))
    }

    /// `Some(stalled)` once the usual interval between updates is known.
    pub(crate) fn stalled(&self, now_us: u64, factor: f64) -> Option<bool> {
        (self.intervals >= MIN_INTERVALS)
            .then(|| now_us.saturating_sub(self.mark_us) as f64 > factor * self.interval_us)
    }

    /// The update count of the last observation that saw progress.
    pub(super) fn events_seen(&self) -> u64 {
        self.mark_events
    }

    /// Whether the remaining work jumped since the last call (and clears it).
    pub(super) fn take_reset(&mut self) -> bool {
        std::mem::take(&mut self.reset)
    }
}
