//! Single lines of the verbose renderer: status words, counts, error paths, folded and
//! collapsed children.

use std::fmt::Write;

use super::text::{
    count, counts, first_line, format_percent, one_line, plural, progress, status_text,
};
use crate::model::{ErrorInfo, FailureSummary, FieldValue, FoldedChildren, ProgressLevel, Status};
use crate::time::{DurationStyle, duration, format_duration};

pub(super) fn push_indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// A u64 metadata field that reads as a counter (not an `id`, `*_id`, `pid` or exit code,
/// nor an ordinal such as `attempt` or `index`, whose "per second" would be nonsense).
pub(super) fn is_counter(name: &str, value: &FieldValue) -> bool {
    // Identifiers and codes are numbers, not counts (`pid`, `exit_code`, `signal`: a child
    // process's subprocess node); so are positions and attempt numbers (a retry loop's
    // `#[instrument]`ed `attempt` argument).
    // `n` and `i`: the loop variable of `(0..urls).map(|n| info_span!("item", n))`.
    const ORDINALS: [&str; 13] = [
        "attempt", "retry", "try", "index", "idx", "position", "number", "port", "page", "depth",
        "n", "i", "seq",
    ];
    // Settings are numbers, not counts either: a fetch's `delay_ms` or `timeout_secs`
    // argument read "Delay Ms: 5 (804/sec)". Durations (by their unit), timeouts, limits.
    const SETTINGS: [&str; 22] = [
        "ms",
        "us",
        "ns",
        "millis",
        "micros",
        "nanos",
        "sec",
        "secs",
        "seconds",
        "mins",
        "minutes",
        "hours",
        "timeout",
        "delay",
        "interval",
        "ttl",
        "deadline",
        "backoff",
        "limit",
        "capacity",
        "threshold",
        "level",
    ];
    let not_a_count = |n: &str| ORDINALS.contains(&n) || SETTINGS.contains(&n);
    matches!(value, FieldValue::U64(_))
        && !matches!(name, "id" | "pid" | "exit_code" | "signal")
        && !name.ends_with("_id")
        && !name.starts_with("max_")
        && !name.starts_with("min_")
        && !not_a_count(name)
        && !name
            .rsplit_once('_')
            .is_some_and(|(_, last)| not_a_count(last))
}

pub(super) fn with_peak(label: &str, mean: String, peak: String) -> String {
    if mean == peak {
        format!("{label}: {mean}")
    } else {
        format!("{label}: {mean} (peak {peak})")
    }
}

/// Names from the root to the failing node, joined with ` › `.
pub(super) fn path(e: &ErrorInfo) -> String {
    let names: Vec<_> = e.path.iter().map(|n| one_line(n)).collect();
    names.join(" › ")
}

/// ` (at Big Run › Render)`, or nothing when the path is unknown.
pub(super) fn at_path(e: &ErrorInfo) -> String {
    if e.path.is_empty() {
        String::new()
    } else {
        format!(" (at {})", path(e))
    }
}

/// `Failures Below: 33, first: checksum mismatch (at Big Run › Render › block-300)`.
pub(super) fn failures_below_line(below: &FailureSummary) -> String {
    format!(
        "Failures Below: {}, first: {}{}",
        count(below.count),
        first_line(&below.first.message),
        at_path(&below.first)
    )
}

/// `3/10 songs completed, 30%` for the header's status line.
pub(super) fn root_progress(root: &ProgressLevel, status: Status) -> Option<String> {
    let pct = root.percentage.map(format_percent);
    let mut counted = counts(root);
    if let Some(c) = &mut counted
        && root.unit.is_none()
        && (!root.children.is_empty() || !root.folded.is_empty())
        && !status.is_finished()
    {
        c.push_str(" completed");
    }
    match (counted, pct) {
        (Some(c), Some(p)) => Some(format!("{c}, {p}")),
        (Some(c), None) => Some(c),
        (None, Some(p)) => Some(p),
        (None, None) => None,
    }
}

/// The part after ` - ` on a `Summary` line.
pub(super) fn summary_status(l: &ProgressLevel) -> String {
    let mut s = status_text(l);
    match l.status {
        Status::Pending => {}
        // A skipped planned child never ran: no duration.
        _ if l.cancel_reason == Some(crate::CancelReason::Skipped) => {}
        Status::Running => {
            if let Some(p) = progress(l) {
                let _ = write!(s, " {p}");
            }
            if let Some(e) = l.estimate() {
                let _ = write!(
                    s,
                    ", ETA {}",
                    duration(e.remaining_us, DurationStyle::Clock)
                );
            }
        }
        _ => {
            let _ = write!(s, " in {}", format_duration(l.timing.elapsed_us));
        }
    }
    if let Some(e) = &l.error {
        let _ = write!(s, ", error: {}", first_line(&e.message));
    }
    if let Some(below) = l.failures_below() {
        let _ = write!(s, ", {} failed below", count(below.count));
    }
    if let Some(note) = super::attempts::attempt_note(l) {
        let _ = write!(s, ", {note}");
    }
    if l.stalled {
        s.push_str(", STALLED");
    }
    s
}

/// Counts by status, in a fixed order, zeros left out: `9,947 completed, 33 failed, 10 running`.
pub(super) fn status_counts(by_status: [(u64, &str); 5]) -> String {
    let parts: Vec<String> = by_status
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, word)| format!("{} {word}", count(*n)))
        .collect();
    parts.join(", ")
}

pub(super) fn folded_line(f: &FoldedChildren) -> String {
    let counted = status_counts([
        (f.completed, "completed"),
        (f.failed, "failed"),
        (f.cancelled, "cancelled"),
        (0, ""),
        (0, ""),
    ]);
    format!(
        "… {} {} folded: {counted}; took {} to {}, mean {}",
        count(f.count),
        plural(&one_line(&f.level_type), f.count),
        format_duration(f.min_us),
        format_duration(f.max_us),
        format_duration(f.mean_us)
    )
}

pub(super) fn collapsed_line(hidden: &[ProgressLevel], after_shown: bool) -> String {
    let mut by = [0u64; 5];
    for c in hidden {
        let slot = match c.status {
            Status::Completed => 0,
            Status::Failed => 1,
            Status::Cancelled => 2,
            Status::Running => 3,
            Status::Pending => 4,
        };
        by[slot] += 1;
    }
    let n = hidden.len() as u64;
    let kind = match hidden.first() {
        Some(first) if hidden.iter().all(|c| c.level_type == first.level_type) => {
            plural(&one_line(&first.level_type), n)
        }
        _ if n == 1 => "child".to_owned(),
        _ => "children".to_owned(),
    };
    let more = if after_shown { "more " } else { "" };
    let counted = status_counts([
        (by[0], "completed"),
        (by[1], "failed"),
        (by[2], "cancelled"),
        (by[3], "running"),
        (by[4], "pending"),
    ]);
    format!("… {} {more}{kind}: {counted}", count(n))
}

/// `… 345 levels hidden below (max depth 2): 5 actions, 340 blocks`.
pub(super) fn depth_hidden_line(level: &ProgressLevel, max_depth: usize) -> String {
    let mut by_type: Vec<(&str, u64)> = Vec::new();
    for node in level.walk() {
        if !std::ptr::eq(node, level) {
            bump(&mut by_type, &node.level_type, 1);
        }
        for f in &node.folded {
            bump(&mut by_type, &f.level_type, f.count);
        }
    }
    let total: u64 = by_type.iter().map(|(_, n)| n).sum();
    let parts: Vec<String> = by_type
        .iter()
        .map(|(t, n)| format!("{} {}", count(*n), plural(&one_line(t), *n)))
        .collect();
    format!(
        "… {} {} hidden below (max depth {max_depth}): {}",
        count(total),
        plural("level", total),
        parts.join(", ")
    )
}

pub(super) fn bump<'t>(by_type: &mut Vec<(&'t str, u64)>, t: &'t str, n: u64) {
    match by_type.iter_mut().find(|(k, _)| *k == t) {
        Some((_, total)) => *total += n,
        None => by_type.push((t, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::is_counter;
    use crate::model::FieldValue;

    #[test]
    fn counts_are_counters_ids_and_ordinals_are_not() {
        let n = FieldValue::U64(3);
        for name in [
            "bytes",
            "rows_written",
            "frames",
            "retries",
            "items",
            "timeouts_hit",
        ] {
            assert!(is_counter(name, &n), "{name}");
        }
        for name in [
            "id",
            "block_id",
            "pid",
            "attempt",
            "retry_attempt",
            "page",
            "chunk_index",
            "n",
            "i",
            "item_seq",
            "delay_ms",
            "timeout_secs",
            "timeout",
            "retry_backoff",
            "max_retries",
            "min_size",
            "rate_limit",
            "log_level",
        ] {
            assert!(!is_counter(name, &n), "{name}");
        }
        assert!(!is_counter("bytes", &FieldValue::I64(3)));
    }
}
