//! Finished operations, bounded by count, age and an estimate of their bytes.
//!
//! Each finished operation gets an estimate of the heap it holds when it enters history
//! ([`estimated_bytes`]: a walk of its tree counting every node, string and metadata entry
//! with the allocator's overhead); the sum of the kept estimates stays under
//! `history_max_bytes` by evicting the oldest. The estimate errs high: it is calibrated
//! against measured RSS (`tests/hardening.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::filter::MetaFilter;
use crate::model::{
    ErrorInfo, Estimate, FieldValue, Metadata, OperationId, ParseError, ProgressLevel,
    ProgressState, ResourceUsage, Status,
};

/// Filters for [`Store::history`](crate::Store::history). Empty means "everything".
///
/// Times compare with an operation's completion time. The same filters select running
/// operations in [`Store::active_matching`](crate::Store::active_matching) (a running
/// operation's time is now).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tracing_progress::{HistoryQuery, Status};
/// let q = HistoryQuery::new()
///     .operation_type("setlist_processing")
///     .status(Status::Completed)
///     .name_contains("setlist")
///     .since(SystemTime::now() - Duration::from_secs(3600))
///     .meta("block_id=block-002".parse().unwrap())
///     .limit(20);
/// ```
#[derive(Clone, Debug, Default)]
pub struct HistoryQuery {
    // Read by outside history sources (`crate::store::HistorySource`).
    pub(crate) operation_type: Option<String>,
    pub(crate) status: Option<Status>,
    /// Completed with failures below the root (`true`) or without (`false`).
    pub(crate) with_failures: Option<bool>,
    /// Lowercase.
    pub(crate) name_contains: Option<String>,
    pub(crate) since_us: Option<u64>,
    pub(crate) until_us: Option<u64>,
    pub(crate) limit: Option<usize>,
    /// All must match.
    pub(crate) meta: Vec<MetaFilter>,
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

    /// Only operations that completed with failures below their root (`true`: the
    /// "completed with failures" outcome, whatever the status filter says), or that did not
    /// (`false`: failed, cancelled and cleanly completed ones).
    ///
    /// ```
    /// use tracing_progress::{HistoryQuery, Status};
    /// let partial = HistoryQuery::new().status(Status::Completed).with_failures(true);
    /// # let _ = partial;
    /// ```
    pub fn with_failures(mut self, yes: bool) -> Self {
        self.with_failures = Some(yes);
        self
    }

    /// Only operations with this outcome, as the CLI and the HTTP API take it: a status
    /// (`pending`, `running`, `completed`, `failed`, `cancelled`; `completed` includes the
    /// ones with failures below) or `completed_with_failures`.
    ///
    /// ```
    /// use tracing_progress::HistoryQuery;
    /// assert!(HistoryQuery::new().outcome("completed_with_failures").is_ok());
    /// let err = HistoryQuery::new().outcome("done").unwrap_err();
    /// assert!(err.to_string().contains("completed_with_failures"));
    /// ```
    pub fn outcome(self, outcome: &str) -> Result<Self, ParseError> {
        let words = outcome.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        if words == "completed_with_failures" {
            return Ok(self.status(Status::Completed).with_failures(true));
        }
        match words.parse::<Status>() {
            Ok(status) => Ok(self.status(status)),
            Err(_) => Err(ParseError::new(
                "status",
                outcome,
                "one of pending, running, completed, completed_with_failures, failed, cancelled",
            )),
        }
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

    /// Only operations with a node whose metadata passes this filter (see [`MetaFilter`]);
    /// several calls add conditions that must all hold.
    pub fn meta(mut self, filter: MetaFilter) -> Self {
        self.meta.push(filter);
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
            && self.with_failures.is_none_or(|w| s.with_failures == w)
            && self
                .name_contains
                .as_deref()
                .is_none_or(|n| s.name.to_lowercase().contains(n))
            && self.since_us.is_none_or(|t| done >= t)
            && self.until_us.is_none_or(|t| done <= t)
            && self.matches_meta(s)
    }

    /// Whether one operation passes the metadata filters (true when there are none).
    pub(crate) fn matches_meta(&self, s: &ProgressState) -> bool {
        self.meta.iter().all(|f| f.matches(s))
    }
}

pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) state: Arc<ProgressState>,
    /// [`estimated_bytes`] of `state`, taken once when it entered history.
    bytes: usize,
}

pub(crate) struct History {
    entries: VecDeque<Entry>,
    limit: usize,
    max_age_us: u64,
    /// Bound on the sum of the entries' estimates (the newest entry is kept even alone over it).
    max_bytes: usize,
    /// Sum of the kept entries' estimates.
    bytes: usize,
    next_seq: u64,
    evicted: u64,
}

impl History {
    pub(crate) fn new(limit: usize, max_age: Duration, max_bytes: usize) -> Self {
        History {
            entries: VecDeque::new(),
            limit,
            max_age_us: max_age.as_micros().min(u64::MAX as u128) as u64,
            max_bytes,
            bytes: 0,
            next_seq: 1,
            evicted: 0,
        }
    }

    /// Adds a finished operation whose [`estimated_bytes`] are `bytes` (computed by the caller,
    /// outside the lock).
    pub(crate) fn push(&mut self, state: Arc<ProgressState>, bytes: usize, now_us: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.entries.push_back(Entry { seq, state, bytes });
        self.expire(now_us);
    }

    fn expire(&mut self, now_us: u64) {
        let cutoff = now_us.saturating_sub(self.max_age_us);
        while self.entries.len() > self.limit
            || (self.bytes > self.max_bytes && self.entries.len() > 1)
            || self
                .entries
                .front()
                .is_some_and(|e| finished_at(&e.state) < cutoff)
        {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.bytes);
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

    /// Sum of the kept operations' [`estimated_bytes`].
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// What one heap allocation costs beyond its bytes (glibc: a 16-byte header, 16-byte rounding),
/// rounded up.
const ALLOC_OVERHEAD: usize = 32;

/// An estimate, erring high, of the heap one finished operation holds: every node (its slot in
/// the parent's `Vec`), every string (`Arc<str>`: two counters, the bytes, the allocation),
/// every metadata entry, error and folded summary. Calibrated against RSS in
/// `tests/hardening.rs`: the estimate is at least the measured cost per operation.
pub(crate) fn estimated_bytes(state: &ProgressState) -> usize {
    let mut total = std::mem::size_of::<ProgressState>() + ALLOC_OVERHEAD;
    total += arc_str(&state.operation_type) + arc_str(&state.name);
    if let Some(e) = &state.error {
        total += error_bytes(e);
    }
    // The root is inline in the state; its own Vec slot is not counted twice.
    total += level_bytes(&state.root) - std::mem::size_of::<ProgressLevel>();
    total
}

fn level_bytes(level: &ProgressLevel) -> usize {
    let mut total = std::mem::size_of::<ProgressLevel>();
    // `span_name`, `target` and usually `level_type` are shared with the callsite; counted
    // anyway, so an operation with its own strings is not under-estimated.
    total += arc_str(&level.level_type)
        + arc_str(&level.name)
        + arc_str(&level.span_name)
        + arc_str(&level.target);
    total += level.unit.as_deref().map_or(0, arc_str);
    total += level.message.as_deref().map_or(0, arc_str);
    total += metadata_bytes(&level.metadata);
    total += recent_bytes(&level.recent_events);
    if !level.input_errors.is_empty() {
        total += level.input_errors.capacity() * std::mem::size_of::<Arc<str>>() + ALLOC_OVERHEAD;
        total += level.input_errors.iter().map(|e| arc_str(e)).sum::<usize>();
    }
    if let Some(e) = &level.error {
        total += std::mem::size_of::<ErrorInfo>() + ALLOC_OVERHEAD + error_bytes(e);
    }
    if let Some(f) = &level.failures_below {
        total += std::mem::size_of_val(&**f) + ALLOC_OVERHEAD;
        total += error_bytes(&f.first) + error_bytes(&f.last);
    }
    if level.estimate.is_some() {
        total += std::mem::size_of::<Estimate>() + ALLOC_OVERHEAD;
    }
    if level.resources.is_some() {
        total += std::mem::size_of::<ResourceUsage>() + ALLOC_OVERHEAD;
    }
    if !level.folded.is_empty() {
        total += level.folded.capacity() * std::mem::size_of_val(&level.folded[0]) + ALLOC_OVERHEAD;
        total += level
            .folded
            .iter()
            .map(|f| arc_str(&f.level_type))
            .sum::<usize>();
    }
    if !level.children.is_empty() {
        // Unused capacity of the children's Vec, then each child (which counts its own slot).
        total += (level.children.capacity() - level.children.len())
            * std::mem::size_of::<ProgressLevel>()
            + ALLOC_OVERHEAD;
        total += level.children.iter().map(level_bytes).sum::<usize>();
    }
    total
}

/// The heap parts of an error (its own struct is counted by the caller).
fn error_bytes(e: &ErrorInfo) -> usize {
    let mut total = arc_str(&e.message) + arc_str(&e.target);
    total += e.location.as_deref().map_or(0, arc_str);
    total += e.path.capacity() * std::mem::size_of::<Arc<str>>() + ALLOC_OVERHEAD;
    total += e.path.iter().map(|p| arc_str(p)).sum::<usize>();
    total + metadata_bytes(&e.fields) + recent_bytes(&e.recent_events)
}

/// Recent events: their own estimate plus the vector's slots.
fn recent_bytes(events: &[crate::model::RecentEvent]) -> usize {
    if events.is_empty() {
        return 0;
    }
    ALLOC_OVERHEAD
        + events
            .iter()
            .map(|e| e.weight() + ALLOC_OVERHEAD)
            .sum::<usize>()
}

fn metadata_bytes(m: &Metadata) -> usize {
    if m.is_empty() {
        return 0;
    }
    let entry = std::mem::size_of::<(Arc<str>, FieldValue)>();
    // The Vec grows by doubling: up to twice the entries.
    let mut total = m.len().next_power_of_two() * entry + ALLOC_OVERHEAD;
    for (k, v) in m.iter() {
        total += arc_str(k);
        if let FieldValue::Str(s) = v {
            total += arc_str(s);
        }
    }
    total
}

/// An `Arc<str>` of its own: strong and weak counts, the bytes, the allocation's overhead.
fn arc_str(s: &str) -> usize {
    2 * std::mem::size_of::<usize>() + s.len() + ALLOC_OVERHEAD
}

fn finished_at(s: &ProgressState) -> u64 {
    s.completed_at_us.unwrap_or(s.snapshot_at_us)
}
