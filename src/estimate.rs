//! Remaining-time estimates and stall detection: pure logic, driven by timestamps passed in.
//!
//! Nothing here reads a clock or takes a lock: callers pass the time of each observation, so
//! tests drive it with any timeline they like. The store calls it while it builds a snapshot,
//! under the operation's lock that the snapshot holds anyway (`store::tree`).
//!
//! # Where observations come from
//!
//! Progress counters are lock-free atomics updated by the instrumented code; estimates add
//! **nothing** to that path (no clock read, no store). Each snapshot is one observation per
//! running node: the snapshot's time, the node's progress (units done plus the fractions of its
//! running children: the sum its percentage uses), its total, and its update count (counter
//! updates plus finished children, both already kept). The price, by design:
//!
//! * the first estimate needs a few snapshots with progress between them: a UI or subscriber
//!   polling the store provides them; a lone `get` after a silence has no rate yet (it shows
//!   the history prior when there is one);
//! * progress is dated by the snapshot that first saw it, so timing is as fine as the
//!   snapshots. The smoothing below is sized so that this does not show: it spans at least ten
//!   typical gaps between observations that saw progress. A stall is seen at most one snapshot
//!   late, never early.
//!
//! # Rate (basis `Rate`)
//!
//! [`RateEstimator`] keeps a *mark*: time and progress of the last observation that saw
//! progress move forward. The first observation is the baseline, so a node first seen at 500 of
//! 1000 is measured from 500, not from 0. Each observation that sees progress gives one rate
//! sample, `Δprogress / Δt` since the mark, and the smoothed rate is an exponentially weighted
//! mean of the samples **over time**: a sample covering `Δt` weighs `α = 1 − e^(−Δt/τ)` and the
//! mean is divided by the total weight (bias correction: early samples are not pulled to zero),
//! so snapshot frequency changes neither its smoothness nor its speed. Observations that see no
//! progress add no sample: a unit that is still running is no evidence of a zero rate.
//!
//! `τ = max(10 s, 10 × typical gap between progress observations, time 50 units take)`:
//! progress seen late by up to a gap, or counted in whole units, then moves the rate by a few
//! percent at most.
//!
//! # Remaining time
//!
//! `remaining = (total − progress) / rate`, with progress extrapolated at the smoothed rate
//! for up to one typical gap after the mark (so the estimate counts down between updates),
//! then held. Progress more than `2 gaps + 3 deviations` late slows the rate used by
//! `due / waited`, so the estimate rises while nothing moves. It needs [`MIN_RATE_SAMPLES`]
//! samples and a known total (`None`, "unknown", until then). A changed total changes the
//! remaining units at once and keeps the rate; progress going backwards moves the mark and
//! keeps the rate.
//!
//! **Range.** `low`/`high` are the remaining units at `rate × (1 ± rel)`,
//! `rel = 2·√(σ²/n_eff + σ²·gap/remaining) / rate + 1/samples`, where `σ²` is the
//! time-weighted variance of the rate samples, `n_eff` the effective number of samples in the
//! weighted mean (so `σ²/n_eff` is its squared standard error), `σ²·gap/remaining` the variance
//! of the rate averaged over the time left, and `1/samples` a warm-up allowance. The
//! pessimistic rate is floored at a tenth of the rate. Always `low ≤ remaining ≤ high`; in the
//! steady-rate tests the truth was inside the range every time after settling.
//!
//! # What is shown ([`Guard`])
//!
//! The raw estimate wobbles with sampling noise; shown as is, it would rise now and then while
//! the rate is steady. So the shown estimate smooths the predicted **completion time**
//! `now + remaining` (a steady rate keeps it constant, and a constant completion time counts
//! down in real time). With `τₛ = noise × remaining + resolution`, where `noise` is three RMS
//! relative changes of the smoothed rate per sample (a steady drift excluded; at least 1 %,
//! plus `1/samples`) and `resolution` the typical gap plus three deviations:
//!
//! * a raw completion time *earlier* than shown is followed with time constant
//!   `0.01 × remaining + resolution` (just `resolution` when more than `3τₛ` earlier): the
//!   estimate falls;
//! * *later* by up to `τₛ` (noise), or by more for less than `τ/2`: the shown remaining time is
//!   kept, not raised;
//! * later by more than `τₛ` for `τ/2`, or by more than `3τₛ`: followed with `τₛ`: the rate
//!   really dropped and the estimate rises.
//!
//! A changed total, progress going backwards or a change of basis start over at the raw value.
//!
//! **What the tests hold it to** (simulated timelines: rates 0.5 to 1,600 units/s, updates every
//! 1 ms to 2 s and snapshots every 20 ms to 2 s, both jittered by up to ±50 %, whole units
//! reported): with a steady rate the shown estimate never rises, and after `3τ` it is within
//! 5 % of the truth and the truth is within `low..high` (while the truth is above 20 × the
//! coarser of update interval, snapshot spacing and unit time; closer to the end its error is
//! about one of those). **Convergence:** after the rate changes by up to 2× either way, it is
//! within 10 % of the truth `5τ` later (measured worst: 4.2τ), within 5 % `6τ` later (measured
//! worst: 5.5τ; τ for the new rate; with the default 10 s,
//! about 50 s for frequent updates).
//!
//! # Before the first unit (basis `History`)
//!
//! [`from_history`]: durations of completed nodes of the same level type and name (of the
//! level type when fewer than two of those), kept by the store (`store::history::Priors`).
//! Given that the node has run `elapsed`, only durations longer than that count: remaining is
//! their median minus `elapsed`, the range their 10th and 90th percentiles (widened to
//! ½× … 2× with fewer than five durations). A node that outlived every recorded duration: unknown.
//!
//! # Parents (basis `Children`)
//!
//! A parent whose progress counts its finished children, with a total and no rate of its own
//! yet ([`from_children`]): the work left is the running children's remaining times plus
//! `m × unit`, `m` children not started yet and `unit` the mean duration of its completed
//! children (folded ones included) or else the history of its children's level type. With `p`
//! children running at once, `remaining = max(longest running child, work left / p)`: the
//! children in flight end no earlier than the longest of them, and the rest is shared by `p`
//! workers. The range combines the children's ranges and `unit ± 2σ·√(m + m²/n)` (`n` durations
//! known). A running child without an estimate counts as `unit − its elapsed time`. Once the
//! parent has a rate of its own (finished children over time, plus running fractions), that
//! is used instead: it sees the real parallelism.
//!
//! # Stall detection
//!
//! A running node is **stalled** when its progress has not moved for more than `k ×` its usual
//! interval between updates (`k` = [`Builder::stall_factor`](crate::Builder::stall_factor),
//! default [`DEFAULT_STALL_FACTOR`]). The usual interval is an EWMA (weight 0.3 per sample) of
//! `Δt / updates` between observations that saw progress, known after [`MIN_INTERVALS`]
//! samples. A node without a rhythm of its own (no progress reported, or too little yet) is
//! stalled instead when it has run longer than the 95th percentile of the durations of its kind
//! (with at least [`MIN_P95_DURATIONS`] of them). A node that reports progress is judged by its
//! own rhythm only: a bigger run than usual that keeps moving is not stalled.
//!
//! # Memory
//!
//! A few dozen words per running node ([`NodeEstimator`]), allocated by the first snapshot that
//! has something to say about the node and dropped when it closes (or fails).

use crate::model::{Estimate, EstimateBasis, ProgressLevel, Status};

/// Time constant `τ` of the rate smoothing (10 s).
pub(crate) const TAU_US: f64 = 10_000_000.0;
/// The smoothing spans at least this many typical gaps between progress observations.
const TAU_GAPS: f64 = 10.0;
/// The smoothing spans at least the time this many units take (whole units are coarse).
const TAU_UNITS: f64 = 50.0;
/// Rate samples needed before a rate-based estimate is given.
pub(crate) const MIN_RATE_SAMPLES: u32 = 2;
/// Width of the range in standard errors.
const Z: f64 = 2.0;
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
const MIN_NOISE: f64 = 0.01;
/// A raw estimate this many noise time constants off is followed at once (earlier) or without
/// waiting for persistence (later).
const SIGNIFICANT: f64 = 3.0;
/// A raw estimate later than noise explains is believed after this many rate time constants.
const PERSIST_TAUS: f64 = 0.5;
/// Default `k` of stall detection: no progress for `k ×` the usual interval.
pub(crate) const DEFAULT_STALL_FACTOR: f64 = 5.0;
/// Durations of a kind needed before running past their 95th percentile counts as a stall.
pub(crate) const MIN_P95_DURATIONS: usize = 5;
/// Below this many durations the history range is widened to ½× … 2×.
const FEW_DURATIONS: usize = 5;

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

/// Smoothed rate of one node's progress, from observations `(time, progress, total)`.
#[derive(Clone, Debug, Default)]
pub(crate) struct RateEstimator {
    started: bool,
    last_us: u64,
    total: Option<f64>,
    /// When progress was last seen moving forward (or the baseline), and its value then.
    mark_us: u64,
    mark: f64,
    mark_events: u64,
    samples: u32,
    /// Time-weighted EWMA of rate samples (units/µs), not yet divided by `weight`.
    mean: f64,
    weight: f64,
    weight_sq: f64,
    /// Time-weighted EWMA of squared deviations of samples from the mean, and its weight.
    var: f64,
    var_weight: f64,
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
        let tau = self.tau_us(self.rate_per_us().unwrap_or(sample));
        let a = -(-dt / tau).exp_m1();
        let before = self.rate_per_us();
        if let Some(mean) = before {
            let dev = sample - mean;
            self.var = (1.0 - a) * self.var + a * dev * dev;
            self.var_weight = (1.0 - a) * self.var_weight + a;
        }
        self.mean = (1.0 - a) * self.mean + a * sample;
        self.weight = (1.0 - a) * self.weight + a;
        self.weight_sq = (1.0 - a) * (1.0 - a) * self.weight_sq + a * a;
        if let (Some(old), Some(new)) = (before, self.rate_per_us())
            && new > 0.0
        {
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
        (self.weight > 0.0)
            .then(|| self.mean / self.weight)
            .filter(|r| r.is_finite())
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

    /// Time constant of the smoothing at `rate` (units/µs): see the module docs.
    fn tau_us(&self, rate: f64) -> f64 {
        TAU_US.max(TAU_GAPS * self.gap_us).max(TAU_UNITS / rate)
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
                .map_or(0.0, |r| self.tau_us(r) * PERSIST_TAUS),
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
        let var = if self.var_weight > 0.0 {
            self.var / self.var_weight
        } else {
            0.0
        };
        let n_eff = (self.weight * self.weight / self.weight_sq).max(1.0);
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

    /// Whether the remaining work jumped since the last call (and clears it).
    fn take_reset(&mut self) -> bool {
        std::mem::take(&mut self.reset)
    }
}

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

/// Quantile `q` (0 to 1) of sorted, non-empty `xs`, nearest rank.
fn quantile(xs: &[u64], q: f64) -> u64 {
    let i = ((xs.len() - 1) as f64 * q).round() as usize;
    xs[i.min(xs.len() - 1)]
}

/// Prior estimate of a node that has run `elapsed_us`, from sorted durations of its kind.
pub(crate) fn from_history(sorted: &[u64], elapsed_us: u64) -> Option<Estimate> {
    let longer = &sorted[sorted.partition_point(|&d| d <= elapsed_us)..];
    if longer.is_empty() {
        return None;
    }
    let e = elapsed_us as f64;
    let median = quantile(longer, 0.5) as f64 - e;
    let mut low = quantile(longer, 0.1) as f64 - e;
    let mut high = quantile(longer, 0.9) as f64 - e;
    if sorted.len() < FEW_DURATIONS {
        low = low.min(median / 2.0);
        high = high.max(median * 2.0);
    }
    Some(estimate(median, low, high, None, EstimateBasis::History))
}

/// Whether a node that has run `elapsed_us` is past the 95th percentile of `sorted` durations.
pub(crate) fn past_p95(sorted: &[u64], elapsed_us: u64) -> bool {
    sorted.len() >= MIN_P95_DURATIONS && {
        let rank = (sorted.len() as f64 * 0.95).ceil() as usize;
        elapsed_us > sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

/// Mean and spread of unit (child) durations.
#[derive(Clone, Copy, Debug, Default)]
struct UnitTime {
    n: f64,
    mean: f64,
    /// Sum of squared deviations (Welford).
    m2: f64,
}

impl UnitTime {
    fn merge(&mut self, n: f64, mean: f64, m2: f64) {
        if n <= 0.0 {
            return;
        }
        let total = self.n + n;
        let delta = mean - self.mean;
        self.mean += delta * n / total;
        self.m2 += m2 + delta * delta * self.n * n / total;
        self.n = total;
    }

    fn from_sorted(sorted: &[u64]) -> Option<Self> {
        let mut u = UnitTime::default();
        for &d in sorted {
            u.merge(1.0, d as f64, 0.0);
        }
        (u.n > 0.0).then_some(u)
    }

    fn sd(&self) -> f64 {
        if self.n >= 2.0 {
            (self.m2 / (self.n - 1.0)).sqrt()
        } else {
            self.mean / 2.0
        }
    }
}

/// Estimate of a parent from its children (see the module docs). `level` is the parent as
/// built for the snapshot, its children already carrying their estimates; `unit_prior` is the
/// history of its children's level type, used when none of its children completed yet.
pub(crate) fn from_children(level: &ProgressLevel, unit_prior: Option<&[u64]>) -> Option<Estimate> {
    let total = level.total?;
    let mut unit = UnitTime::default();
    for c in &level.children {
        if c.status == Status::Completed {
            unit.merge(1.0, c.timing.elapsed_us as f64, 0.0);
        }
    }
    for f in &level.folded {
        // Folded summaries keep min / mean / max: a range over four is a fair spread guess.
        let sd = (f.max_us.saturating_sub(f.min_us)) as f64 / 4.0;
        let n = f.count as f64;
        unit.merge(n, f.mean_us as f64, sd * sd * (n - 1.0).max(0.0));
    }
    let unit = if unit.n > 0.0 {
        Some(unit)
    } else {
        unit_prior.and_then(UnitTime::from_sorted)
    };
    let (mut running, mut sum, mut sum_low, mut sum_high) = (0u64, 0.0, 0.0, 0.0);
    let (mut max, mut max_low, mut max_high) = (0.0f64, 0.0f64, 0.0f64);
    for c in level
        .children
        .iter()
        .filter(|c| c.status == Status::Running)
    {
        let (r, lo, hi) = match (&c.estimate, unit) {
            (Some(e), _) => (e.remaining_us as f64, e.low_us as f64, e.high_us as f64),
            (None, Some(u)) => {
                let el = c.timing.elapsed_us as f64;
                let r = (u.mean - el).max(0.0);
                (r, 0.0, (u.mean + Z * u.sd() - el).max(r))
            }
            (None, None) => return None,
        };
        running += 1;
        sum += r;
        sum_low += lo;
        sum_high += hi;
        max = max.max(r);
        max_low = max_low.max(lo);
        max_high = max_high.max(hi);
    }
    let not_started = total.saturating_sub(level.current).saturating_sub(running) as f64;
    let (work, half_width) = if not_started > 0.0 {
        let u = unit?;
        let hw = Z * u.sd() * (not_started + not_started * not_started / u.n).sqrt();
        (not_started * u.mean, hw)
    } else {
        (0.0, 0.0)
    };
    let p = running.max(1) as f64;
    Some(estimate(
        max.max((sum + work) / p),
        max_low.max((sum_low + (work - half_width).max(0.0)) / p),
        max_high.max((sum_high + work + half_width) / p),
        None,
        EstimateBasis::Children,
    ))
}

/// Per-node state: the rate estimator and the guard on what is shown.
#[derive(Clone, Debug, Default)]
pub(crate) struct NodeEstimator {
    rate: RateEstimator,
    guard: Guard,
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

    /// What to show at `now_us`: the node's own rate if ready, else `fallback` (children, then
    /// history), through the guard.
    pub(crate) fn estimate(&mut self, now_us: u64, fallback: Option<Estimate>) -> Option<Estimate> {
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

    /// Whether the node is stalled (see the module docs); `history` and `elapsed_us` are used
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// xorshift64*: deterministic randomness for simulated timelines.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        /// Uniform in [0, 1).
        pub(crate) fn f64(&mut self) -> f64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
        }

        /// `mean`, give or take `jitter / 2` of it.
        pub(crate) fn around(&mut self, mean: f64, jitter: f64) -> f64 {
            mean * (1.0 + jitter * (self.f64() - 0.5))
        }
    }

    /// A node doing work at piecewise constant rates, reporting `floor(units done)` at
    /// jittered update times, observed by jittered snapshots (as the store observes it).
    #[derive(Clone, Debug)]
    pub(crate) struct Sim {
        /// `(from_s, units per second)`; the first piece starts at 0.
        pub(crate) rates: Vec<(f64, f64)>,
        pub(crate) start: u64,
        pub(crate) total: u64,
        /// From this time (s) on, the total is this.
        pub(crate) new_total: Option<(f64, u64)>,
        pub(crate) update_us: f64,
        pub(crate) update_jitter: f64,
        pub(crate) snapshot_us: f64,
        pub(crate) snapshot_jitter: f64,
        pub(crate) seed: u64,
    }

    /// One snapshot of a simulation.
    #[derive(Debug)]
    pub(crate) struct Seen {
        pub(crate) at_us: u64,
        pub(crate) estimate: Option<Estimate>,
        /// Time until the work reaches the total known at this snapshot.
        pub(crate) truth_us: f64,
    }

    impl Sim {
        pub(crate) fn steady(rate: f64, start: u64, total: u64) -> Self {
            Sim {
                rates: vec![(0.0, rate)],
                start,
                total,
                new_total: None,
                update_us: 100_000.0,
                update_jitter: 0.0,
                snapshot_us: 250_000.0,
                snapshot_jitter: 0.0,
                seed: 1,
            }
        }

        fn total_at(&self, t_us: f64) -> u64 {
            match self.new_total {
                Some((at, t)) if t_us >= at * 1e6 => t,
                _ => self.total,
            }
        }

        /// Units done by `t_us` (continuous).
        pub(crate) fn done(&self, t_us: f64) -> f64 {
            let mut x = self.start as f64;
            for (i, &(from, rate)) in self.rates.iter().enumerate() {
                let to = self.rates.get(i + 1).map_or(f64::INFINITY, |n| n.0 * 1e6);
                if t_us <= from * 1e6 {
                    break;
                }
                x += rate * (t_us.min(to) - from * 1e6) / 1e6;
            }
            x
        }

        /// When the work reaches `total` (µs).
        pub(crate) fn end_us(&self, total: u64) -> f64 {
            let mut x = self.start as f64;
            for (i, &(from, rate)) in self.rates.iter().enumerate() {
                let to = self.rates.get(i + 1).map_or(f64::INFINITY, |n| n.0 * 1e6);
                let reach = x + rate * (to - from * 1e6) / 1e6;
                if reach >= total as f64 {
                    return from * 1e6 + (total as f64 - x) / rate * 1e6;
                }
                x = reach;
            }
            f64::INFINITY
        }

        /// Largest of the update interval, the snapshot spacing and the time one unit takes
        /// (µs): how finely the estimator can see the timeline at all.
        pub(crate) fn resolution_us(&self) -> f64 {
            let slowest = self.rates.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
            self.update_us.max(self.snapshot_us).max(1e6 / slowest) * 2.0
        }

        /// Three smoothing time constants (module docs), from these parameters.
        pub(crate) fn settle_us(&self, rate: f64) -> f64 {
            let gap = self.update_us.max(self.snapshot_us) * 2.0;
            3.0 * TAU_US.max(TAU_GAPS * gap).max(TAU_UNITS * 1e6 / rate)
        }

        pub(crate) fn run(&self) -> Vec<Seen> {
            let mut rng = Rng::new(self.seed);
            let mut node = NodeEstimator::default();
            let (mut i, mut current, mut events) = (0u64, self.start, 0u64);
            let next = |i: u64, rng: &mut Rng| {
                self.update_us * (i as f64 + 1.0 + self.update_jitter * (rng.f64() - 0.5))
            };
            let mut next_update = next(0, &mut rng);
            let mut now = 0.0;
            let mut out = Vec::new();
            node.observe(0, self.start as f64, Some(self.total), 0);
            loop {
                now += rng.around(self.snapshot_us, self.snapshot_jitter).max(1.0);
                while next_update <= now {
                    current = (self.done(next_update) as u64).min(self.total_at(next_update));
                    events += 1;
                    i += 1;
                    next_update = next(i, &mut rng);
                }
                let total = self.total_at(now);
                if current >= total {
                    return out;
                }
                let at = now as u64;
                node.observe(at, current as f64, Some(total), events);
                out.push(Seen {
                    at_us: at,
                    estimate: node.estimate(at, None),
                    truth_us: self.end_us(total) - now,
                });
            }
        }
    }

    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    const S: u64 = 1_000_000;

    /// Fixed seed and no regression files: the same cases every run.
    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            rng_seed: RngSeed::Fixed(0x7e57_e57a),
            ..ProptestConfig::default()
        }
    }

    /// Steady timelines over the documented ranges: rate 0.5 to 1,600 units/s, 60 to 1,000 s
    /// of work from a start of 0 to 90 % of the total, updates every 1 ms to 2 s and snapshots
    /// every 20 ms to 2 s, both jittered by up to ±50 %.
    fn steady() -> impl Strategy<Value = Sim> {
        (
            (-0.3f64..3.2, 60.0f64..1_000.0, 0.0f64..0.9),
            (
                3.0f64..6.3,
                0.0f64..1.0,
                4.3f64..6.3,
                0.0f64..1.0,
                any::<u64>(),
            ),
        )
            .prop_map(|((rate, secs, start), (upd, upd_j, snap, snap_j, seed))| {
                let rate = 10f64.powf(rate);
                let work = (rate * secs) as u64 + 1;
                let start = (work as f64 * start / (1.0 - start)) as u64;
                Sim {
                    update_us: 10f64.powf(upd),
                    update_jitter: upd_j,
                    snapshot_us: 10f64.powf(snap),
                    snapshot_jitter: snap_j,
                    seed,
                    ..Sim::steady(rate, start, start + work)
                }
            })
    }

    fn rel_err(e: &Estimate, truth_us: f64) -> f64 {
        (e.remaining_us as f64 - truth_us).abs() / truth_us
    }

    proptest! {
        #![proptest_config(config(48))]

        /// Constant rate: within 5 % of the truth after 3τ, whatever the start.
        #[test]
        fn steady_rate_is_within_5_percent_after_settling(sim in steady()) {
            let rate = sim.rates[0].1;
            let seen = sim.run();
            let mut checked = 0;
            for s in &seen {
                if (s.at_us as f64) < sim.settle_us(rate) || s.truth_us < 20.0 * sim.resolution_us() {
                    continue;
                }
                let e = s.estimate.as_ref();
                prop_assert!(e.is_some(), "no estimate at {} µs", s.at_us);
                let e = e.unwrap();
                prop_assert_eq!(e.basis, EstimateBasis::Rate);
                let err = rel_err(e, s.truth_us);
                prop_assert!(err <= 0.05, "{:.3} off at {} µs: {:?}, truth {}", err, s.at_us, e, s.truth_us);
                prop_assert!(
                    e.low_us as f64 <= s.truth_us && s.truth_us <= e.high_us as f64,
                    "truth {} outside {:?}", s.truth_us, e
                );
                // The rate itself is shown unsmoothed by the guard: a looser bound.
                let rate_err = (e.rate_per_s.unwrap() - rate).abs() / rate;
                prop_assert!(rate_err <= 0.10, "rate {:?} vs {}", e.rate_per_s, rate);
                checked += 1;
            }
            // The window can be empty for the shortest runs; most have hundreds of checks.
            prop_assert!(checked > 0 || sim.settle_us(rate) + 20.0 * sim.resolution_us() > sim.end_us(sim.total) * 0.8);
        }

        /// Constant rate, jittered updates and snapshots: the shown estimate never rises, from
        /// the first one on, and its range always holds it.
        #[test]
        fn steady_rate_never_rises(sim in steady()) {
            let mut prev: Option<(u64, u64)> = None;
            for s in sim.run() {
                let Some(e) = s.estimate else { continue };
                prop_assert!(e.low_us <= e.remaining_us && e.remaining_us <= e.high_us, "{:?}", e);
                if let Some((at, remaining)) = prev {
                    prop_assert!(e.remaining_us <= remaining,
                        "rose from {} at {} µs to {} at {} µs", remaining, at, e.remaining_us, s.at_us);
                }
                prev = Some((s.at_us, e.remaining_us));
            }
            prop_assert!(prev.is_some(), "never estimated");
        }

        /// The rate changes by 0.5× to 2× once settled: within 10 % of the truth 5τ later and
        /// within 5 % 6τ later (τ for the new rate), and never out of its own range.
        #[test]
        fn rate_change_converges_within_5_to_6_tau(sim in steady(), factor in 0.5f64..2.0) {
            let mut sim = sim;
            let rate = sim.rates[0].1;
            let change_s = sim.settle_us(rate) * 1.5 / 1e6;
            let new_rate = rate * factor;
            let settle = sim.settle_us(new_rate).max(sim.settle_us(rate));
            sim.rates.push((change_s, new_rate));
            sim.start = 0;
            sim.total = sim.done(change_s * 1e6 + 3.0 * settle) as u64;
            let tau = sim.settle_us(new_rate) / 3.0;
            let by = change_s * 1e6 + 5.0 * tau;
            let mut checked = 0;
            for s in sim.run() {
                let Some(e) = s.estimate else { continue };
                prop_assert!(e.low_us <= e.remaining_us && e.remaining_us <= e.high_us);
                if (s.at_us as f64) < by || s.truth_us < 20.0 * sim.resolution_us() {
                    continue;
                }
                let err = rel_err(&e, s.truth_us);
                let bound = if (s.at_us as f64) < by + tau { 0.10 } else { 0.05 };
                prop_assert!(err <= bound, "{:.3} off {} s after the change: {:?}, truth {}",
                    err, (s.at_us as f64 / 1e6 - change_s), e, s.truth_us);
                checked += 1;
            }
            prop_assert!(checked > 0);
        }

        /// The total changes (up or down) mid-run: the estimate follows at once (within 10 % at
        /// the first snapshot after: the raw estimate, without the smoothing of what is shown)
        /// and stays non-increasing afterwards.
        #[test]
        fn changed_total_is_followed_at_once(sim in steady(), new_total in 0.3f64..3.0) {
            let mut sim = sim;
            let rate = sim.rates[0].1;
            let at_s = sim.settle_us(rate) * 1.2 / 1e6;
            let done_then = sim.done(at_s * 1e6);
            let left = (sim.total as f64 - done_then).max(rate * 60.0);
            let new = (done_then + left * new_total) as u64;
            prop_assume!(new as f64 > done_then + 40.0 * sim.resolution_us() / 1e6 * rate);
            sim.total = (done_then + left) as u64;
            sim.new_total = Some((at_s, new));
            let (mut first_after, mut prev) = (true, None::<u64>);
            for s in sim.run() {
                let Some(e) = s.estimate else { continue };
                if (s.at_us as f64) < at_s * 1e6 {
                    continue;
                }
                if first_after {
                    let err = rel_err(&e, s.truth_us);
                    prop_assert!(err <= 0.10, "{:.3} off right after the change: {:?} truth {}", err, e, s.truth_us);
                    first_after = false;
                } else if let Some(p) = prev {
                    prop_assert!(e.remaining_us <= p, "rose after the change");
                }
                prev = Some(e.remaining_us);
            }
            prop_assert!(!first_after);
        }
    }

    #[test]
    fn non_zero_start_is_measured_from_the_first_observation() {
        // First seen at 500 of 1000, then 10 units/s. At 20 s: 700 done, 300 to go: 30 s (a
        // rate counted from 0 would be 35/s and say 8.6 s).
        let mut node = NodeEstimator::default();
        let mut last = None;
        for i in 0..=40u64 {
            let at = i * 500_000;
            node.observe(at, 500.0 + i as f64 * 5.0, Some(1000), i);
            last = node.estimate(at, None);
        }
        let e = last.expect("an estimate after 20 s of progress");
        assert_eq!(e.basis, EstimateBasis::Rate);
        assert!((e.remaining_us as f64 - 30e6).abs() < 0.02 * 30e6, "{e:?}");
        assert!((e.rate_per_s.unwrap() - 10.0).abs() < 0.1, "{e:?}");
    }

    #[test]
    fn unknown_until_there_is_signal() {
        let mut node = NodeEstimator::default();
        node.observe(0, 0.0, Some(100), 0);
        assert_eq!(node.estimate(0, None), None, "one observation is no rate");
        node.observe(1_000_000, 0.0, Some(100), 0);
        assert_eq!(node.estimate(1_000_000, None), None, "no progress yet");
        node.observe(2_000_000, 10.0, Some(100), 1);
        assert_eq!(
            node.estimate(2_000_000, None),
            None,
            "one sample is not enough"
        );
        node.observe(3_000_000, 20.0, Some(100), 2);
        assert!(node.estimate(3_000_000, None).is_some());
        // A rate without a total says nothing about the time left.
        let mut node = NodeEstimator::default();
        for i in 0..10u64 {
            node.observe(i * 1_000_000, i as f64, None, i);
        }
        assert_eq!(node.estimate(10_000_000, None), None);
    }

    #[test]
    fn counts_down_between_updates_then_rises_when_progress_is_overdue() {
        let mut node = NodeEstimator::default();
        // One unit per second, observed every 100 ms, for 30 s.
        let mut last = None;
        for i in 0..=300u64 {
            let at = i * 100_000;
            node.observe(at, (i / 10) as f64, Some(100), i / 10);
            last = node.estimate(at, None).map(|e| (at, e.remaining_us));
        }
        let (at, remaining) = last.unwrap();
        assert!((remaining as f64 - 70e6).abs() < 0.03 * 70e6, "{remaining}");
        // Nothing moves any more: the estimate holds, then rises once progress is overdue.
        let later = |secs: u64| node.clone().estimate(at + secs * 1_000_000, None).unwrap();
        assert!(later(1).remaining_us <= remaining);
        assert!(
            later(60).remaining_us > remaining + 30_000_000,
            "{:?}",
            later(60)
        );
    }

    #[test]
    fn raw_estimate_counts_down_between_updates() {
        // One unit per second, observed when it happens: between updates the raw estimate
        // extrapolates at the rate for up to one typical gap, then holds.
        let mut rate = RateEstimator::default();
        for i in 0..=30u64 {
            rate.observe(i * S, i as f64, Some(100.0), i);
        }
        let at = |us: u64| rate.estimate(30 * S + us).unwrap().remaining_us;
        assert!(at(0).abs_diff(70 * S) < 1_000, "{}", at(0));
        assert!(at(S / 2).abs_diff(69 * S + S / 2) < 1_000, "{}", at(S / 2));
        assert_eq!(
            at(S),
            at(2 * S),
            "held while the next update may still come"
        );
    }

    #[test]
    fn stall_needs_k_intervals_without_progress() {
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let interval = 10f64.powf(4.0 + rng.f64() * 3.0); // 10 ms to 10 s
            let k = 2.0 + rng.f64() * 8.0;
            let snap = interval * (0.05 + rng.f64() * 0.5);
            let mut node = NodeEstimator::default();
            let (mut t, mut updates, mut last_update) = (0.0f64, 0u64, 0.0f64);
            // 30 regular updates, observed every `snap`.
            while updates < 30 {
                t += snap;
                while (updates + 1) as f64 * interval <= t {
                    updates += 1;
                    last_update = updates as f64 * interval;
                }
                node.observe(t as u64, updates as f64, Some(1_000), updates);
                assert!(
                    !node.stalled(t as u64, k, None, t as u64),
                    "stalled while moving"
                );
            }
            // Then nothing: not stalled before k intervals (less the 10 % the interval estimate
            // may be off by), stalled once k intervals and one snapshot have passed.
            loop {
                t += snap;
                node.observe(t as u64, updates as f64, Some(1_000), updates);
                let quiet = t - last_update;
                let stalled = node.stalled(t as u64, k, None, t as u64);
                if quiet < 0.9 * k * interval {
                    assert!(
                        !stalled,
                        "stalled after {quiet} µs, k {k}, interval {interval}"
                    );
                }
                if quiet > 1.1 * k * interval + snap {
                    assert!(
                        stalled,
                        "not stalled after {quiet} µs, k {k}, interval {interval}"
                    );
                    break;
                }
            }
        }
    }

    #[test]
    fn history_prior_is_the_conditional_median() {
        let durations: Vec<u64> = (1..=20).map(|i| i * 1_000_000).collect(); // 1 s .. 20 s
        let e = from_history(&durations, 0).unwrap();
        assert_eq!(e.basis, EstimateBasis::History);
        assert_eq!(e.remaining_us, 11_000_000);
        assert!(e.low_us <= e.remaining_us && e.remaining_us <= e.high_us);
        // After 15 s only 16..20 s are still possible: median 18 s, 3 s to go.
        let e = from_history(&durations, 15_000_000).unwrap();
        assert_eq!(e.remaining_us, 3_000_000);
        assert_eq!((e.low_us, e.high_us), (1_000_000, 5_000_000));
        // Beyond all of them: unknown, and past the 95th percentile.
        assert_eq!(from_history(&durations, 21_000_000), None);
        assert!(past_p95(&durations, 20_000_001));
        assert!(!past_p95(&durations, 19_000_000));
        assert!(
            !past_p95(&durations[..4], 60_000_000),
            "too few durations to judge"
        );
        // Few durations: a wide range.
        let e = from_history(&[10_000_000], 0).unwrap();
        assert_eq!(
            (e.low_us, e.remaining_us, e.high_us),
            (5_000_000, 10_000_000, 20_000_000)
        );
    }

    /// A level as a snapshot would build it, for the combination functions.
    fn level(
        status: crate::model::Status,
        total: Option<u64>,
        current: u64,
        elapsed_us: u64,
    ) -> ProgressLevel {
        let name: std::sync::Arc<str> = std::sync::Arc::from("x");
        ProgressLevel {
            id: crate::model::NodeId::from_u64(1),
            level_type: name.clone(),
            name: name.clone(),
            span_name: name.to_string().into(),
            target: "test".into(),
            status,
            current,
            total,
            percentage: None,
            unit: None,
            message: None,
            timing: crate::model::Timing {
                elapsed_us,
                ..Default::default()
            },
            error: None,
            failures_below: None,
            metadata: Default::default(),
            input_errors: Vec::new(),
            flattened: false,
            children: Vec::new(),
            folded: Vec::new(),
            estimate: None,
            stalled: false,
            resources: None,
        }
    }

    #[test]
    fn bounds_hold_for_random_history_and_children() {
        use crate::model::Status;
        let mut rng = Rng::new(9);
        for _ in 0..2_000 {
            let n = 1 + (rng.f64() * 64.0) as usize;
            let mut d: Vec<u64> = (0..n).map(|_| (rng.f64() * 1e8) as u64).collect();
            d.sort_unstable();
            if let Some(e) = from_history(&d, (rng.f64() * 1e8) as u64) {
                assert!(
                    e.low_us <= e.remaining_us && e.remaining_us <= e.high_us,
                    "{e:?}"
                );
            }
            // A parent with random finished, running (with or without estimates) and
            // not-started children.
            let total = 1 + (rng.f64() * 20.0) as u64;
            let mut parent = level(Status::Running, Some(total), 0, 0);
            for _ in 0..(rng.f64() * total as f64) as u64 {
                let status = if rng.f64() < 0.5 {
                    Status::Completed
                } else {
                    Status::Running
                };
                let mut c = level(status, None, 0, (rng.f64() * 1e8) as u64);
                if status == Status::Completed {
                    parent.current += 1;
                } else if rng.f64() < 0.7 {
                    let r = (rng.f64() * 1e8) as u64;
                    c.estimate = Some(Box::new(estimate(
                        r as f64,
                        r as f64 * rng.f64(),
                        r as f64 * (1.0 + rng.f64()),
                        None,
                        EstimateBasis::History,
                    )));
                }
                parent.children.push(c);
            }
            let prior = (rng.f64() < 0.5).then_some(&d[..]);
            if let Some(e) = from_children(&parent, prior) {
                assert_eq!(e.basis, EstimateBasis::Children);
                assert!(
                    e.low_us <= e.remaining_us && e.remaining_us <= e.high_us,
                    "{e:?}"
                );
                let longest = parent
                    .children
                    .iter()
                    .filter_map(|c| c.estimate.as_ref())
                    .map(|e| e.remaining_us)
                    .max();
                assert!(
                    longest.is_none_or(|l| e.remaining_us + 1 >= l),
                    "no earlier than the longest child"
                );
            }
        }
    }
}

/// The estimator inside the store's tree: priors fed by closes, parents, state lifetime.
#[cfg(test)]
mod store_tests {
    use std::sync::Arc;

    use crate::model::{EstimateBasis, NodeId, ProgressState};
    use crate::store::tree::{Callsite, CloseOutcome, NewNode, ROOT_SLOT, Tree, Update};
    use crate::store::{Limits, Priors};

    const S: u64 = 1_000_000;

    type Node = (u32, NodeId);

    /// One operation's tree, driven by hand with explicit timestamps.
    struct Op {
        tree: Tree,
        root: Node,
    }

    fn new_node(level: &str, name: &str, at: u64) -> NewNode {
        NewNode {
            id: NodeId::next(),
            level_type: Arc::from(level),
            name: Arc::from(name),
            callsite: Arc::new(Callsite {
                span_name: "test",
                target: "test",
            }),
            created_us: at,
            flattened: false,
        }
    }

    impl Op {
        fn new(priors: &Arc<Priors>, limits: Limits, at: u64) -> Self {
            let root = new_node("op", "op", at);
            let id = root.id;
            let mut tree = Tree::new(root, Arc::from("op"), limits).with_priors(priors.clone());
            tree.start(ROOT_SLOT, id, at);
            Op {
                tree,
                root: (ROOT_SLOT, id),
            }
        }

        fn child(&mut self, parent: Node, level: &str, name: &str, at: u64) -> Node {
            let new = new_node(level, name, at);
            let id = new.id;
            let slot = self.tree.add_child(parent.0, parent.1, new).unwrap();
            self.tree.start(slot, id, at);
            (slot, id)
        }

        fn counters(&mut self, n: Node, total: Option<u64>, current: Option<u64>) {
            self.tree.apply(
                n.0,
                n.1,
                Update {
                    total,
                    current,
                    ..Update::default()
                },
            );
        }

        fn close(&mut self, n: Node, at: u64) -> bool {
            self.tree
                .close(n.0, n.1, at, 0, CloseOutcome::Completed, |_| {})
        }

        fn snap(&mut self, at: u64) -> ProgressState {
            self.tree.snapshot(self.root.1, false, at)
        }
    }

    /// Completed nodes of `level`/`name` lasting `secs`, recorded through a finished operation.
    fn history(priors: &Arc<Priors>, level: &str, name: &str, secs: &[u64]) {
        let mut op = Op::new(priors, Limits::default(), 0);
        let root = op.root;
        for (i, d) in secs.iter().enumerate() {
            let start = i as u64 * 100 * S;
            let n = op.child(root, level, name, start);
            op.close(n, start + d * S);
        }
        assert!(op.close(root, 10_000 * S), "root closed");
    }

    #[test]
    fn history_prior_before_the_first_unit_then_stall_past_p95() {
        let priors = Arc::new(Priors::default());
        history(&priors, "block", "encode", &[8, 9, 10, 11, 12]);
        let mut op = Op::new(&priors, Limits::default(), 20_000 * S);
        let root = op.root;
        let encode = op.child(root, "block", "encode", 20_000 * S);
        // A name never seen: the level type's durations.
        let decode = op.child(root, "block", "decode", 20_000 * S);
        // A level type never seen: nothing to say.
        let other = op.child(root, "song", "x", 20_000 * S);
        let snap = op.snap(20_003 * S);
        for id in [encode.1, decode.1] {
            let level = snap.find(id).unwrap();
            let e = level.estimate.as_ref().expect("history estimate");
            assert_eq!(e.basis, EstimateBasis::History);
            // Durations longer than the 3 s already run: 8..12 s, median 10 s: 7 s to go.
            assert_eq!(e.remaining_us, 7 * S, "{e:?}");
            assert!(e.low_us < e.remaining_us && e.remaining_us < e.high_us);
            assert!(!level.stalled);
        }
        let other = snap.find(other.1).unwrap();
        assert_eq!((other.estimate.as_ref(), other.stalled), (None, false));
        // Past every recorded duration: no estimate any more, and stalled (past the p95).
        let snap = op.snap(20_013 * S);
        let level = snap.find(encode.1).unwrap();
        assert_eq!(level.estimate, None);
        assert!(level.stalled);
        assert!(!snap.find(other.id).unwrap().stalled);
    }

    #[test]
    fn parent_combines_running_children_and_unit_time() {
        let priors = Arc::new(Priors::default());
        history(&priors, "action", "a", &[10, 10, 10]);
        let mut op = Op::new(&priors, Limits::default(), 0);
        let root = op.root;
        let song = op.child(root, "song", "s1", 0);
        op.counters(song, Some(4), None);
        let a1 = op.child(song, "action", "a", 0);
        op.close(a1, 10 * S);
        let a2 = op.child(song, "action", "a", 10 * S);
        let snap = op.snap(14 * S);
        let child = snap.find(a2.1).unwrap().estimate.clone().unwrap();
        assert_eq!(
            (child.basis, child.remaining_us),
            (EstimateBasis::History, 6 * S)
        );
        // One done in 10 s (the unit), one running with 6 s to go, two not started:
        // 6 + 2 × 10 = 26 s for one worker.
        let e = snap.find(song.1).unwrap().estimate.clone().unwrap();
        assert_eq!(e.basis, EstimateBasis::Children, "{e:?}");
        assert!(e.remaining_us.abs_diff(26 * S) < 1_000, "{e:?}");
        assert!(
            e.low_us < e.remaining_us && e.remaining_us < e.high_us,
            "{e:?}"
        );
        // Two running at once (2 s and 6 s to go) and one not started: 18 s of work for two
        // workers, 9 s, longer than the longest running child.
        let a3 = op.child(song, "action", "a", 14 * S);
        let snap = op.snap(18 * S);
        let e = snap.find(song.1).unwrap().estimate.clone().unwrap();
        assert_eq!(e.basis, EstimateBasis::Children, "{e:?}");
        assert!(e.remaining_us.abs_diff(9 * S) < 1_000, "{e:?}");
        // Children finishing give the parent a rate of its own, which then takes over.
        op.close(a2, 20 * S);
        let a4 = op.child(song, "action", "a", 20 * S);
        op.snap(21 * S);
        op.close(a3, 24 * S);
        let snap = op.snap(25 * S);
        let e = snap.find(song.1).unwrap().estimate.clone().unwrap();
        assert_eq!(e.basis, EstimateBasis::Rate, "{e:?}");
        // State lives while nodes run: root, song and a4 hold it; closing drops it.
        assert_eq!(op.tree.estimator_state().0, 3);
        op.close(a4, 30 * S);
        op.close(song, 31 * S);
        op.snap(32 * S);
        assert_eq!(op.tree.estimator_state().0, 1, "only the root still runs");
        op.close(root, 33 * S);
        assert_eq!(op.tree.estimator_state(), (0, 0));
    }

    #[test]
    fn priors_are_fed_by_closes_and_folds_and_stay_bounded() {
        let priors = Arc::new(Priors::default());
        let limits = Limits {
            max_finished_children: 10,
            max_finished_nodes: 100,
            ..Limits::default()
        };
        let mut op = Op::new(&priors, limits, 0);
        let root = op.root;
        for i in 0..10_000u64 {
            let n = op.child(root, "block", &format!("b{i}"), i * S);
            op.close(n, i * S + 1 + i % 7);
            assert!(
                op.tree.estimator_state().1 <= 256,
                "the close path buffers, bounded"
            );
        }
        assert!(
            priors.read().for_type("block").is_none(),
            "closes never lock the priors"
        );
        // The next snapshot adds them: the last 64 per kind, folded nodes included.
        let snap = op.snap(20_000 * S);
        assert_eq!(snap.metrics.nodes_folded, 9_990);
        assert_eq!(op.tree.estimator_state().1, 0);
        let p = priors.read();
        let durations = p.for_type("block").unwrap();
        assert_eq!(durations.len(), 64, "the last 64 per kind");
        assert!(durations.iter().all(|d| (1..=7).contains(d)));
    }

    /// Through the real layer, with the store's clock moved by hand.
    #[test]
    fn snapshots_through_the_layer_carry_estimate_and_stall() {
        use tracing_subscriber::prelude::*;

        use crate::ProgressSpanExt as _;
        use crate::store::Clock;

        let (_, hand) = Clock::manual();
        let read = hand.clone();
        let (layer, store) = crate::Builder::new()
            .stall_factor(3.0)
            .clock(move || read.elapsed())
            .build::<tracing_subscriber::Registry>()
            .unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("scan", progress.total = 1_000u64);
            let _guard = span.enter();
            let id = span.progress_id().unwrap();
            let mut last = None;
            // 10 units a second, looked at every 250 ms, for 40 s (3τ and more).
            for step in 1..=160u64 {
                hand.advance(std::time::Duration::from_millis(250));
                if step % 4 == 0 {
                    span.inc(10);
                }
                last = store.get(id).unwrap().root.estimate.clone();
            }
            let e = last.expect("an estimate after 40 s of progress");
            assert_eq!(e.basis, EstimateBasis::Rate);
            assert!(e.remaining_us.abs_diff(60 * S) < 3 * S, "{e:?}");
            // Then nothing for 2.5 s (fine), and for 3.5 s (3 × the 1 s interval: stalled).
            hand.advance(std::time::Duration::from_millis(2_500));
            assert!(!store.get(id).unwrap().root.stalled);
            hand.advance(std::time::Duration::from_millis(1_000));
            assert!(store.get(id).unwrap().root.stalled);
        });
    }
}
