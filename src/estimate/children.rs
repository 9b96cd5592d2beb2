//! A parent's estimate from its children (basis `Children`; see `docs/estimates.md`).

use super::{Z, estimate};
use crate::model::{Estimate, EstimateBasis, FoldedChildren, Status};

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

/// What a parent's estimate needs of one retained child.
#[derive(Clone, Debug)]
pub(crate) struct ChildSample {
    pub(crate) status: Status,
    pub(crate) elapsed_us: u64,
    pub(crate) estimate: Option<Estimate>,
}

/// A parent as [`from_children`] sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Family<'a> {
    pub(crate) total: Option<u64>,
    pub(crate) current: u64,
    pub(crate) children: &'a [ChildSample],
    pub(crate) folded: &'a [FoldedChildren],
}

/// Estimate of a parent from its children (see `docs/estimates.md`). The children carry their
/// own estimates already; `unit_prior` is the history of the children's level type, used when
/// none of them completed yet.
pub(crate) fn from_children(level: Family<'_>, unit_prior: Option<&[u64]>) -> Option<Estimate> {
    let total = level.total?;
    let mut unit = UnitTime::default();
    for c in level.children {
        if c.status == Status::Completed {
            unit.merge(1.0, c.elapsed_us as f64, 0.0);
        }
    }
    for f in level.folded {
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
                let el = c.elapsed_us as f64;
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
