//! Attempts: a unit of work that was retried is one node whose own fields are its last
//! attempt's, with a bounded list of the earlier attempts (see the crate docs, "Attempts").

use serde::{Deserialize, Serialize};

use super::{CancelReason, ErrorInfo, Status};

/// How a retried node's earlier attempts went, in [`ProgressLevel::attempts`](super::ProgressLevel::attempts).
///
/// The node itself (status, counts, timing, error, recent events) is the latest attempt;
/// `earlier` holds the ones before it, oldest first, at most
/// [`MAX_EARLIER`](Attempts::MAX_EARLIER) of them (older ones are only counted in
/// `omitted`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attempts {
    /// This attempt's number, from 1 (`progress.attempt`, `set_attempt`, or one more than the
    /// attempt it replaced).
    pub number: u32,
    /// Earlier attempts kept, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Attempt>,
    /// Earlier attempts dropped past the bound (the oldest ones).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u32,
}

impl Attempts {
    /// Earlier attempts kept per node; older ones are counted in `omitted`.
    pub const MAX_EARLIER: usize = 8;

    /// Earlier attempts that failed (dropped ones count as failed: their outcome is gone).
    pub fn failed_before(&self) -> u32 {
        let kept = self
            .earlier
            .iter()
            .filter(|a| a.status == Status::Failed)
            .count() as u32;
        kept.saturating_add(self.omitted)
    }
}

/// One earlier attempt of a retried node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attempt {
    /// Its number, from 1.
    pub number: u32,
    /// How it ended (failed or cancelled, in practice).
    pub status: Status,
    /// Why it was cancelled, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<CancelReason>,
    /// When it started (first entered, else created), µs since the Unix epoch.
    pub started_at_us: u64,
    /// How long it ran, µs.
    pub duration_us: u64,
    /// Units it had done.
    pub current: u64,
    /// Units it expected, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Its failure (its own error, else the first failure below it), with the recent events
    /// that led to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<ErrorInfo>>,
    /// Failures below it that were set aside with it (they no longer count for the ancestors).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub failures_below: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}
