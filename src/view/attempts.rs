//! How the text views show attempts: a retried node reads as one level with its attempt
//! number and one line per earlier attempt (see the crate docs, "Attempts").

use std::fmt::Write;

use super::text::{count, first_line, status_word};
use crate::model::{Attempt, Attempts, ProgressLevel, Status};
use crate::time::{format_duration, format_timestamp};

/// `attempt 2 (after 1 failed)`, or `None` for a node that is its unit's only attempt.
pub(super) fn attempt_note(l: &ProgressLevel) -> Option<String> {
    let a = l
        .attempts()
        .filter(|a| a.number > 1 || !a.earlier.is_empty())?;
    let mut s = format!("attempt {}", a.number);
    if let Some(before) = before(a) {
        let _ = write!(s, " (after {before})");
    }
    Some(s)
}

/// `1 failed`, `2 failed, 1 cancelled`: how the earlier attempts ended, dropped ones as failed.
fn before(a: &Attempts) -> Option<String> {
    let failed = a.failed_before();
    let cancelled = a
        .earlier
        .iter()
        .filter(|e| e.status == Status::Cancelled)
        .count() as u64;
    let mut parts = Vec::new();
    if failed > 0 {
        parts.push(format!("{} failed", count(u64::from(failed))));
    }
    if cancelled > 0 {
        parts.push(format!("{} cancelled", count(cancelled)));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// `Attempt 1: Failed in 2.4s, started 2024-01-15 10:30:45, error: decoder diverged`.
pub(super) fn earlier_line(e: &Attempt) -> String {
    let mut s = format!(
        "Attempt {}: {} in {}, started {}",
        e.number,
        status_word(e.status),
        format_duration(e.duration_us),
        format_timestamp(e.started_at_us)
    );
    if let Some(err) = &e.error {
        let _ = write!(s, ", error: {}", first_line(&err.message));
    }
    s
}
