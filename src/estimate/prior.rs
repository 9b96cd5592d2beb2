//! Durations of completed nodes per kind, and the estimates and stall checks drawn from
//! them (basis `History`; see `docs/estimates.md`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Keyed by level type or name: a fast string hash (std's SipHash cost ~20 ns per lookup,
/// six lookups per completed node). The maps are bounded (see [`PRIOR_NAME_KEYS`]), so a
/// flood of colliding names cannot grow them.
type Map<V> = HashMap<Arc<str>, V, foldhash::fast::RandomState>;

use parking_lot::{RwLock, RwLockReadGuard};

use super::estimate;
use crate::model::{Estimate, EstimateBasis};

/// Durations of a kind needed before running past their 95th percentile counts as a stall.
pub(crate) const MIN_P95_DURATIONS: usize = 5;
/// Below this many durations the history range is widened to ½× … 2×.
const FEW_DURATIONS: usize = 5;

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

/// Durations kept per key (the last this many completed nodes).
pub(crate) const PRIOR_RING: usize = 64;
/// (level type, name) keys kept; the key fed least recently goes first.
pub(crate) const PRIOR_NAME_KEYS: usize = 256;
/// Level-type keys kept; the key fed least recently goes first.
pub(crate) const PRIOR_TYPE_KEYS: usize = 64;

/// A node that completed, waiting to be added to the store's [`Priors`].
pub(crate) struct FinishedNode {
    pub(crate) level_type: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) duration_us: u64,
}

/// Durations of completed nodes that remaining-time estimates use as a prior (basis
/// `History`) and stall detection as a yardstick (past the 95th percentile).
///
/// Two maps of rings: per (level type, name) and per level type, each ring the last
/// [`PRIOR_RING`] durations, kept sorted as well so percentiles are a lookup. At most
/// [`PRIOR_NAME_KEYS`] + [`PRIOR_TYPE_KEYS`] keys, so at most about 330 KiB whatever runs;
/// when a map is full the key fed least recently is dropped (LRU by feeding, so lookups stay
/// read-only and snapshots of different operations can read it at once).
///
/// Fed with the completed nodes an operation buffered (at most 256) by each snapshot of it and
/// when it ends: closing a span never takes this lock. Lock order: an operation's tree lock,
/// then this one; never the other way round.
#[derive(Default)]
pub(crate) struct Priors {
    inner: RwLock<PriorDurations>,
}

impl Priors {
    /// Adds `batch` (and empties it). Called by snapshots and at the end of an operation, not
    /// per close.
    pub(crate) fn record(&self, batch: &mut VecDeque<FinishedNode>) {
        if !batch.is_empty() {
            let mut p = self.inner.write();
            for f in batch.drain(..) {
                p.record_run(&f.level_type, &f.name, std::iter::once(f.duration_us));
            }
        }
    }

    /// Adds runs of completed nodes of one kind each, under one write lock (see
    /// [`PriorDurations::record_run`]).
    pub(crate) fn record_runs(&self, f: impl FnOnce(&mut PriorDurations)) {
        f(&mut self.inner.write());
    }

    /// Read access for one snapshot.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, PriorDurations> {
        self.inner.read()
    }
}

/// The rings of [`Priors`].
#[derive(Default)]
pub(crate) struct PriorDurations {
    by_type: Map<Durations>,
    /// Level type, then name.
    by_name: Map<Map<Durations>>,
    names: usize,
    tick: u64,
}

/// Below this many durations for (level type, name), the level type's ring is used instead.
const MIN_NAME_DURATIONS: usize = 2;

impl PriorDurations {
    /// Adds `durations` (oldest first) of completed nodes of one level type and name: each
    /// ring is looked up once per run, and a kind already known clones no `Arc`.
    pub(crate) fn record_run(
        &mut self,
        level_type: &Arc<str>,
        name: &Arc<str>,
        durations: impl Iterator<Item = u64> + Clone,
    ) {
        let first_tick = self.tick;
        if !self.by_type.contains_key(&**level_type) {
            if self.by_type.len() >= PRIOR_TYPE_KEYS {
                evict_oldest(&mut self.by_type);
            }
            self.by_type
                .insert(level_type.clone(), Durations::default());
        }
        if let Some(ring) = self.by_type.get_mut(&**level_type) {
            for d in durations.clone() {
                self.tick += 1;
                ring.push(d, self.tick);
            }
        }
        let known = self
            .by_name
            .get(&**level_type)
            .is_some_and(|m| m.contains_key(&**name));
        if !known {
            if self.names >= PRIOR_NAME_KEYS {
                self.evict_oldest_name();
            }
            self.names += 1;
            self.by_name
                .entry(level_type.clone())
                .or_default()
                .insert(name.clone(), Durations::default());
        }
        if let Some(ring) = self
            .by_name
            .get_mut(&**level_type)
            .and_then(|m| m.get_mut(&**name))
        {
            let mut tick = first_tick;
            for d in durations {
                tick += 1;
                ring.push(d, tick);
            }
        }
    }

    fn evict_oldest_name(&mut self) {
        let oldest = self
            .by_name
            .iter()
            .flat_map(|(t, m)| m.iter().map(move |(n, d)| (d.fed_at, t, n)))
            .min_by_key(|(fed_at, _, _)| *fed_at)
            .map(|(_, t, n)| (t.clone(), n.clone()));
        if let Some((t, n)) = oldest
            && let Some(m) = self.by_name.get_mut(&t)
        {
            m.remove(&n);
            self.names -= 1;
            if m.is_empty() {
                self.by_name.remove(&t);
            }
        }
    }

    /// Sorted durations of completed nodes like this one: same level type and name when there
    /// are at least two of those, else same level type. `None` when nothing is known.
    pub(crate) fn lookup(&self, level_type: &str, name: &str) -> Option<&[u64]> {
        if self.tick == 0 {
            return None;
        }
        self.by_name
            .get(level_type)
            .and_then(|m| m.get(name))
            .filter(|d| d.sorted.len() >= MIN_NAME_DURATIONS)
            .or_else(|| self.by_type.get(level_type))
            .map(|d| d.sorted.as_slice())
            .filter(|d| !d.is_empty())
    }

    /// Sorted durations of completed nodes of this level type.
    pub(crate) fn for_type(&self, level_type: &str) -> Option<&[u64]> {
        self.by_type
            .get(level_type)
            .map(|d| d.sorted.as_slice())
            .filter(|d| !d.is_empty())
    }

    /// Number of keys held (for the bound test).
    #[cfg(test)]
    fn keys(&self) -> (usize, usize) {
        (self.by_type.len(), self.names)
    }
}

fn evict_oldest(map: &mut Map<Durations>) {
    let oldest = map
        .iter()
        .min_by_key(|(_, d)| d.fed_at)
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        map.remove(&k);
    }
}

/// The last [`PRIOR_RING`] durations of one key, in arrival order and sorted.
#[derive(Default)]
struct Durations {
    order: VecDeque<u64>,
    sorted: Vec<u64>,
    fed_at: u64,
}

impl Durations {
    fn push(&mut self, d: u64, tick: u64) {
        if self.order.len() >= PRIOR_RING
            && let Some(old) = self.order.pop_front()
            && let Ok(i) = self.sorted.binary_search(&old)
        {
            self.sorted.remove(i);
        }
        self.order.push_back(d);
        let at = self.sorted.partition_point(|&x| x <= d);
        self.sorted.insert(at, d);
        self.fed_at = tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finished(t: &str, n: &str, d: u64) -> FinishedNode {
        FinishedNode {
            level_type: Arc::from(t),
            name: Arc::from(n),
            duration_us: d,
        }
    }

    #[test]
    fn priors_stay_bounded_and_sorted() {
        let priors = Priors::default();
        for i in 0..5_000u64 {
            let mut batch = VecDeque::from([finished(
                &format!("type{}", i % 100),
                &format!("name{i}"),
                (i * 7919) % 1_000,
            )]);
            priors.record(&mut batch);
            assert!(batch.is_empty());
        }
        let mut batch: VecDeque<_> = (0..1_000u64).map(|i| finished("block", "b", i)).collect();
        priors.record(&mut batch);
        let p = priors.read();
        let (types, names) = p.keys();
        assert!(types <= PRIOR_TYPE_KEYS, "{types}");
        assert!(names <= PRIOR_NAME_KEYS, "{names}");
        let block = p.lookup("block", "b").unwrap();
        assert_eq!(block.len(), PRIOR_RING);
        assert_eq!(block.first(), Some(&(1_000 - PRIOR_RING as u64)));
        assert!(block.windows(2).all(|w| w[0] <= w[1]));
        drop(p);
        priors.record(&mut VecDeque::from([finished("block", "other", 5)]));
        // One duration of a name: the level type's ring answers; two: the name's ring.
        let p = priors.read();
        assert_eq!(
            p.lookup("block", "other").map(<[u64]>::len),
            Some(PRIOR_RING)
        );
        assert_eq!(
            p.lookup("block", "other").and_then(<[u64]>::first),
            Some(&5)
        );
        drop(p);
        priors.record(&mut VecDeque::from([finished("block", "other", 7)]));
        let p = priors.read();
        assert_eq!(p.lookup("block", "other"), Some(&[5u64, 7][..]));
        assert_eq!(p.for_type("block").map(<[u64]>::len), Some(PRIOR_RING));
        assert_eq!(p.lookup("song", "x"), None);
    }
}
