//! Finished operations, bounded by count and age.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

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
    // Read by outside history sources (`crate::store::HistorySource`).
    pub(crate) operation_type: Option<String>,
    pub(crate) status: Option<Status>,
    /// Lowercase.
    pub(crate) name_contains: Option<String>,
    pub(crate) since_us: Option<u64>,
    pub(crate) until_us: Option<u64>,
    pub(crate) limit: Option<usize>,
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
