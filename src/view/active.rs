//! The one-line active path.

use std::fmt::Write;

use super::text::{count, first_line, format_percent, index_of, one_line, position};
use crate::model::{ProgressLevel, ProgressState, Status};
use crate::time::{DurationStyle, duration};

/// One line saying where a running operation is, following the deepest running path:
///
/// `setlist "My Setlist" 2/3 › song 4/12 audio4.wav › action 1/5 LoadAudio › block 37/80 block-37 (46%, ETA 0:31)`
///
/// * The root reads its level type, its quoted name and `current/total` (or `current` when the
///   total is unknown and something was counted).
/// * Each level below reads its level type, its position among its siblings out of the
///   parent's total (see [`Verbose`](super::Verbose)) and its name (left out when it is just
///   the level type again).
/// * At each level the path follows the running child that started last.
/// * The last level adds its percentage, `ETA m:ss` and `stalled`, when known, in brackets.
/// * An operation asked to cancel ends with `[cancel requested]`.
/// * An operation that is not running reads just its state: `setlist "My Setlist" completed`,
///   `... cancelled`, `... pending`, or `... failed: <first line of the error>`.
///
/// Names are kept as they are, with control characters escaped, so the result is one line.
///
/// ```
/// use tracing_progress::ProgressState;
/// use tracing_progress::view::active_path;
///
/// let state: ProgressState = serde_json::from_str(r#"{
///   "schema_version": 1, "id": 42, "operation_type": "setlist", "name": "My Setlist",
///   "status": "running", "cancel_requested": false, "snapshot_at_us": 0,
///   "metrics": {"nodes_seen": 2, "nodes_retained": 2, "nodes_folded": 0, "nodes_failed": 0,
///               "updates": 3, "input_errors": 0},
///   "root": {"id": 42, "level_type": "setlist", "name": "My Setlist", "span_name": "run",
///     "target": "app", "status": "running", "current": 0, "total": 3,
///     "timing": {"created_at_us": 0, "elapsed_us": 0, "busy_us": 0, "idle_us": 0},
///     "children": [{"id": 43, "level_type": "song", "name": "audio1.wav", "span_name": "song",
///       "target": "app", "status": "running", "current": 1, "total": 4, "percentage": 25.0,
///       "estimate": {"remaining_us": 31000000, "low_us": 20000000, "high_us": 40000000,
///                    "basis": "history"},
///       "timing": {"created_at_us": 0, "elapsed_us": 0, "busy_us": 0, "idle_us": 0}}]}
/// }"#).unwrap();
///
/// assert_eq!(
///     active_path(&state),
///     r#"setlist "My Setlist" 0/3 › song 1/3 audio1.wav (25%, ETA 0:31)"#
/// );
/// ```
pub fn active_path(state: &ProgressState) -> String {
    let root = &state.root;
    let mut out = format!(
        "{} \"{}\"",
        one_line(&root.level_type),
        one_line(&state.name)
    );
    match state.status {
        Status::Running => {}
        Status::Failed => {
            out.push_str(" failed");
            if let Some(e) = state.error.as_ref().or(root.error.as_deref()) {
                let _ = write!(out, ": {}", first_line(&e.message));
            }
            return out;
        }
        other => {
            let _ = write!(out, " {other}");
            if other == Status::Completed && (state.with_failures || root.with_failures) {
                out.push_str(" with failures");
            }
            if let Some(reason) = root.cancel_reason.filter(|_| other == Status::Cancelled) {
                let _ = write!(out, " ({reason})");
            }
            return out;
        }
    }
    match root.total {
        Some(total) => {
            let _ = write!(out, " {}/{}", count(root.current), count(total));
        }
        None if root.current > 0 => {
            let _ = write!(out, " {}", count(root.current));
        }
        None => {}
    }
    let mut node = root;
    while let Some((i, child)) = latest_running_child(node) {
        let (index, of) = position(node, i);
        let _ = write!(
            out,
            " › {} {}",
            one_line(&child.level_type),
            index_of(index, of)
        );
        if child.name != child.level_type {
            let _ = write!(out, " {}", one_line(&child.name));
        }
        node = child;
    }
    let mut extras = Vec::new();
    if let Some(p) = node.percentage {
        extras.push(format_percent(p));
    }
    if let Some(e) = node.estimate() {
        extras.push(format!(
            "ETA {}",
            duration(e.remaining_us, DurationStyle::ShortClock)
        ));
    }
    if node.stalled {
        extras.push("stalled".to_owned());
    }
    if !extras.is_empty() {
        let _ = write!(out, " ({})", extras.join(", "));
    }
    if state.cancel_requested {
        out.push_str(" [cancel requested]");
    }
    out
}

/// The running child that started last (the later one in creation order on a tie).
fn latest_running_child(level: &ProgressLevel) -> Option<(usize, &ProgressLevel)> {
    level
        .children
        .iter()
        .enumerate()
        .filter(|(_, c)| c.status == Status::Running)
        .max_by_key(|(i, c)| (c.timing.started_at_us.unwrap_or(c.timing.created_at_us), *i))
}
