//! Finished operations, bounded by count and age; durations of finished nodes (the priors of
//! remaining-time estimates), bounded by key count and ring size.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{RwLock, RwLockReadGuard};

use crate::model::{OperationId, ProgressState, Status};

/// Filters for [`Store::history`](crate::Store::history). Empty means "everything".
///
/// Times compare with an operation's completion time.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tracing_progress::{HistoryQuery, Status};
/// let q = HistoryQuery::new()
///     .operation_type("setlist_processing")
///     .status(Status::Completed)
///     .name_contains("setlist")
///     .since(SystemTime::now() - Duration::from_secs(3600))
///     .limit(20);
/// ```
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    operation_type: Option<String>,
    status: Option<Status>,
    name_contains: Option<String>,
    since_us: Option<u64>,
    until_us: Option<u64>,
    limit: Option<usize>,
}

impl HistoryQuery {
    /// A query that matches everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only operations of this type (exact match).
    pub fn operation_type(mut self, t: impl Into<String>) -> Self {
        self.operation_type = Some(t.into());
        self
    }

    /// Only operations that ended with this status.
    pub fn status(mut self, s: Status) -> Self {
        self.status = Some(s);
        self
    }

    /// Only operations whose name contains this text (case-insensitive).
    pub fn name_contains(mut self, text: impl Into<String>) -> Self {
        self.name_contains = Some(text.into().to_lowercase());
        self
    }

    /// Only operations that completed at or after this time.
    pub fn since(mut self, t: SystemTime) -> Self {
        self.since_us = Some(super::system_time_to_us(t));
        self
    }

    /// Only operations that completed at or before this time.
    pub fn until(mut self, t: SystemTime) -> Self {
        self.until_us = Some(super::system_time_to_us(t));
        self
    }

    /// At most this many results (newest first).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Whether one operation passes the filters (the limit aside).
    pub fn matches(&self, s: &ProgressState) -> bool {
        let done = s.completed_at_us.unwrap_or(s.snapshot_at_us);
        self.operation_type
            .as_deref()
            .is_none_or(|t| *s.operation_type == *t)
            && super::status_matches(self.status, s.status)
            && self
                .name_contains
                .as_deref()
                .is_none_or(|n| s.name.to_lowercase().contains(n))
            && self.since_us.is_none_or(|t| done >= t)
            && self.until_us.is_none_or(|t| done <= t)
    }
}

pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) state: Arc<ProgressState>,
}

pub(crate) struct History {
    entries: VecDeque<Entry>,
    limit: usize,
    max_age_us: u64,
    next_seq: u64,
    evicted: u64,
}

impl History {
    pub(crate) fn new(limit: usize, max_age: Duration) -> Self {
        History {
            entries: VecDeque::new(),
            limit,
            max_age_us: max_age.as_micros().min(u64::MAX as u128) as u64,
            next_seq: 1,
            evicted: 0,
        }
    }

    pub(crate) fn push(&mut self, state: Arc<ProgressState>, now_us: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.push_back(Entry { seq, state });
        self.expire(now_us);
    }

    fn expire(&mut self, now_us: u64) {
        let cutoff = now_us.saturating_sub(self.max_age_us);
        while self.entries.len() > self.limit
            || self
                .entries
                .front()
                .is_some_and(|e| finished_at(&e.state) < cutoff)
        {
            self.entries.pop_front();
            self.evicted += 1;
        }
        if self.entries.capacity() > 2 * self.entries.len() + 64 {
            self.entries.shrink_to(self.entries.len() + 16);
        }
    }

    pub(crate) fn get(&self, id: OperationId) -> Option<Arc<ProgressState>> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.state.id == id)
            .map(|e| e.state.clone())
    }

    pub(crate) fn query(&self, q: &HistoryQuery, now_us: u64) -> Vec<Arc<ProgressState>> {
        let cutoff = now_us.saturating_sub(self.max_age_us);
        self.entries
            .iter()
            .rev()
            .filter(|e| finished_at(&e.state) >= cutoff && q.matches(&e.state))
            .take(q.limit.unwrap_or(usize::MAX))
            .map(|e| e.state.clone())
            .collect()
    }

    /// Entries pushed after `seq`, oldest first, and how many of those were already evicted.
    pub(crate) fn since_seq(&self, seq: u64) -> (Vec<Arc<ProgressState>>, u64, u64) {
        let first_kept = self.entries.front().map_or(self.next_seq, |e| e.seq);
        let missed = first_kept.saturating_sub(seq + 1);
        let states = self
            .entries
            .iter()
            .filter(|e| e.seq > seq)
            .map(|e| e.state.clone())
            .collect();
        (states, missed, self.next_seq - 1)
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }
}

fn finished_at(s: &ProgressState) -> u64 {
    s.completed_at_us.unwrap_or(s.snapshot_at_us)
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
            self.inner.write().record(batch);
        }
    }

    /// Read access for one snapshot.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, PriorDurations> {
        self.inner.read()
    }
}

/// The rings of [`Priors`].
#[derive(Default)]
pub(crate) struct PriorDurations {
    by_type: HashMap<Arc<str>, Durations>,
    /// Level type, then name.
    by_name: HashMap<Arc<str>, HashMap<Arc<str>, Durations>>,
    names: usize,
    tick: u64,
}

/// Below this many durations for (level type, name), the level type's ring is used instead.
const MIN_NAME_DURATIONS: usize = 2;

impl PriorDurations {
    fn record(&mut self, batch: &mut VecDeque<FinishedNode>) {
        for f in batch.drain(..) {
            self.tick += 1;
            let tick = self.tick;
            if !self.by_type.contains_key(&*f.level_type) && self.by_type.len() >= PRIOR_TYPE_KEYS {
                evict_oldest(&mut self.by_type);
            }
            self.by_type
                .entry(f.level_type.clone())
                .or_default()
                .push(f.duration_us, tick);
            let known = self
                .by_name
                .get(&*f.level_type)
                .is_some_and(|m| m.contains_key(&*f.name));
            if !known {
                if self.names >= PRIOR_NAME_KEYS {
                    self.evict_oldest_name();
                }
                self.names += 1;
            }
            self.by_name
                .entry(f.level_type)
                .or_default()
                .entry(f.name)
                .or_default()
                .push(f.duration_us, tick);
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

fn evict_oldest(map: &mut HashMap<Arc<str>, Durations>) {
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
