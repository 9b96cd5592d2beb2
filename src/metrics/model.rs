//! The figures both outputs read: counters and duration histograms kept by the exporter, and
//! the running operations read from the store on demand. Every label value goes through a
//! capped set, so the number of series stays bounded whatever the instrumented code names.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::Store;
use crate::model::{OperationId, ProgressState, Status};

/// Label value that stands for every type past the cap.
pub const OTHER: &str = "_other";
/// Label values are cut to this many bytes (at a character boundary).
pub const MAX_LABEL_LEN: usize = 64;
/// Upper bounds of the node duration buckets, seconds (`+Inf` is implied).
pub const DURATION_BUCKETS_S: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
];
/// How long one read of the running operations is reused (the three per-operation gauges of
/// one collection, a scrape racing a push).
const RUNNING_TTL: Duration = Duration::from_millis(250);

/// Per level type: durations of closed nodes and failures.
#[derive(Debug)]
pub(crate) struct LevelStats {
    pub(crate) label: Arc<str>,
    buckets: [AtomicU64; DURATION_BUCKETS_S.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
    failures: AtomicU64,
}

/// One histogram as read: (upper bound, count in that bucket alone) pairs, sum in seconds, count.
#[derive(Clone, Debug)]
pub(crate) struct HistogramRead {
    pub(crate) buckets: Vec<(f64, u64)>,
    pub(crate) sum_s: f64,
    pub(crate) count: u64,
}

impl LevelStats {
    fn new(label: Arc<str>) -> Self {
        LevelStats {
            label,
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, elapsed_us: u64) {
        let s = elapsed_us as f64 / 1e6;
        if let Some(i) = DURATION_BUCKETS_S.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(elapsed_us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fail(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn histogram(&self) -> HistogramRead {
        let buckets: Vec<(f64, u64)> = DURATION_BUCKETS_S
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| (*b, n.load(Ordering::Relaxed)))
            .collect();
        let in_buckets: u64 = buckets.iter().map(|b| b.1).sum();
        // Read count last: it is bumped last, so it is never below the buckets' sum.
        let sum_s = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let count = self.count.load(Ordering::Relaxed).max(in_buckets);
        HistogramRead {
            buckets,
            sum_s,
            count,
        }
    }
}

/// A running operation as the per-operation gauges show it.
#[derive(Clone, Debug)]
pub(crate) struct RunningOp {
    pub(crate) id: OperationId,
    pub(crate) operation_type: Arc<str>,
    pub(crate) name: Arc<str>,
    /// 0..=1, when the root knows its share done.
    pub(crate) ratio: Option<f64>,
    /// Seconds left, when the root has an estimate.
    pub(crate) eta_s: Option<f64>,
}

/// What one read of the store found.
#[derive(Debug, Default)]
pub(crate) struct Running {
    /// Running operations per (capped) type, every known type present (0 when none runs).
    pub(crate) active_by_type: Vec<(Arc<str>, u64)>,
    /// The oldest running operations, at most the cap.
    pub(crate) ops: Vec<RunningOp>,
    /// Running operations left out of `ops` by the cap.
    pub(crate) omitted: u64,
}

/// A set of label values that grows up to a cap, then maps everything new to [`OTHER`].
#[derive(Debug)]
struct Capped<V> {
    map: RwLock<HashMap<Arc<str>, Arc<V>>>,
    cap: usize,
}

impl<V> Capped<V> {
    fn new(cap: usize) -> Self {
        Capped {
            map: RwLock::new(HashMap::new()),
            cap,
        }
    }

    fn get(&self, value: &str, make: impl FnOnce(Arc<str>) -> V) -> Arc<V> {
        if let Some(v) = self.map.read().get(value) {
            return v.clone();
        }
        let mut map = self.map.write();
        if let Some(v) = map.get(value) {
            return v.clone();
        }
        // The cap counts real values; `_other` is one more.
        let real = map.len() - usize::from(map.contains_key(OTHER));
        let key: Arc<str> = Arc::from(if real >= self.cap { OTHER } else { cut(value) });
        map.entry(key.clone())
            .or_insert_with(|| Arc::new(make(key)))
            .clone()
    }

    fn values(&self) -> Vec<Arc<V>> {
        self.map.read().values().cloned().collect()
    }
}

/// `value` cut to [`MAX_LABEL_LEN`] bytes at a character boundary.
pub(crate) fn cut(value: &str) -> &str {
    if value.len() <= MAX_LABEL_LEN {
        return value;
    }
    let mut end = MAX_LABEL_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The label of a finished operation's outcome.
pub(crate) fn outcome(state: &ProgressState) -> &'static str {
    match state.status {
        Status::Completed if state.with_failures => "completed_with_failures",
        s => s.as_str(),
    }
}

/// The figures of one store.
#[derive(Debug)]
pub(crate) struct Model {
    store: Store,
    levels: Capped<LevelStats>,
    op_types: Capped<OpType>,
    max_running: usize,
    running: Mutex<Option<(Instant, Arc<Running>)>>,
}

/// Per operation type: finished operations by outcome.
#[derive(Debug)]
pub(crate) struct OpType {
    pub(crate) label: Arc<str>,
    finished: Mutex<Vec<(&'static str, u64)>>,
}

impl OpType {
    pub(crate) fn finished(&self) -> Vec<(&'static str, u64)> {
        self.finished.lock().clone()
    }
}

impl Model {
    pub(crate) fn new(store: Store, max_types: usize, max_running: usize) -> Self {
        Model {
            store,
            levels: Capped::new(max_types),
            op_types: Capped::new(max_types),
            max_running,
            running: Mutex::new(None),
        }
    }

    pub(crate) fn level(&self, level_type: &str) -> Arc<LevelStats> {
        self.levels.get(level_type, LevelStats::new)
    }

    fn op_type(&self, operation_type: &str) -> Arc<OpType> {
        self.op_types.get(operation_type, |label| OpType {
            label,
            finished: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn operation_finished(&self, state: &ProgressState) {
        // The next read must not show it running (e.g. the last push at shutdown).
        *self.running.lock() = None;
        let t = self.op_type(&state.operation_type);
        let outcome = outcome(state);
        let mut finished = t.finished.lock();
        match finished.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, n)) => *n += 1,
            None => finished.push((outcome, 1)),
        }
    }

    /// Level types seen, sorted by label.
    pub(crate) fn levels(&self) -> Vec<Arc<LevelStats>> {
        let mut v = self.levels.values();
        v.sort_by(|a, b| a.label.cmp(&b.label));
        v
    }

    /// Operation types seen, sorted by label.
    pub(crate) fn op_types(&self) -> Vec<Arc<OpType>> {
        let mut v = self.op_types.values();
        v.sort_by(|a, b| a.label.cmp(&b.label));
        v
    }

    /// The running operations, read at most every [`RUNNING_TTL`]: a count per type for all of
    /// them, a snapshot each for the oldest `max_running`.
    pub(crate) fn running(&self) -> Arc<Running> {
        let mut cached = self.running.lock();
        if let Some((at, r)) = &*cached
            && at.elapsed() < RUNNING_TTL
        {
            return r.clone();
        }
        let r = Arc::new(self.read_running());
        *cached = Some((Instant::now(), r.clone()));
        r
    }

    fn read_running(&self) -> Running {
        let types = self.store.active_types();
        let mut counts: HashMap<Arc<str>, u64> = HashMap::new();
        let mut ops = Vec::new();
        for (id, operation_type) in &types {
            let label = self.op_type(operation_type).label.clone();
            *counts.entry(label.clone()).or_default() += 1;
            if ops.len() >= self.max_running {
                continue;
            }
            // Finished in between: it is counted by the finished counter instead.
            let Some(state) = self.store.get(*id) else {
                continue;
            };
            if state.status.is_finished() {
                continue;
            }
            ops.push(RunningOp {
                id: *id,
                operation_type: label,
                name: Arc::from(cut(&state.name)),
                ratio: state.root.percentage.map(|p| (p / 100.0).clamp(0.0, 1.0)),
                eta_s: state.root.estimate().map(|e| e.remaining_us as f64 / 1e6),
            });
        }
        let omitted = (types.len() - ops.len().min(types.len())) as u64;
        let active_by_type = self
            .op_types()
            .into_iter()
            .map(|t| {
                let n = counts.get(&t.label).copied().unwrap_or(0);
                (t.label.clone(), n)
            })
            .collect();
        Running {
            active_by_type,
            ops,
            omitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_maps_past_the_cap_to_other() {
        let c: Capped<()> = Capped::new(2);
        assert_eq!(&*key(&c, "a"), "a");
        assert_eq!(&*key(&c, "b"), "b");
        assert_eq!(&*key(&c, "c"), OTHER);
        assert_eq!(&*key(&c, "d"), OTHER);
        assert_eq!(&*key(&c, "a"), "a");
        assert_eq!(c.values().len(), 3);
    }

    fn key(c: &Capped<()>, v: &str) -> Arc<str> {
        let got = c.get(v, |_| ());
        c.map
            .read()
            .iter()
            .find(|(_, x)| Arc::ptr_eq(x, &got))
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from("?"))
    }

    #[test]
    fn cut_keeps_char_boundaries() {
        let s = "é".repeat(40);
        let c = cut(&s);
        assert!(c.len() <= MAX_LABEL_LEN);
        assert_eq!(c.chars().count(), 32);
    }

    #[test]
    fn histogram_counts_per_bucket() {
        let l = LevelStats::new(Arc::from("x"));
        l.observe(500); // 0.5 ms
        l.observe(2_000_000); // 2 s
        l.observe(7_200_000_000); // 2 h: past the last bound, only in +Inf
        let h = l.histogram();
        assert_eq!(h.count, 3);
        assert_eq!(h.buckets[0], (0.001, 1));
        assert_eq!(h.buckets[7], (5.0, 1));
        assert_eq!(h.buckets.iter().map(|b| b.1).sum::<u64>(), 2);
        assert!((h.sum_s - 7202.0005).abs() < 1e-6);
    }
}
