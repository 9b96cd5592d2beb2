//! Human output of operation lists: one row per operation, failures below their row.

use console::measure_text_width;
use tracing_progress::view::{format_duration, format_percent, format_timestamp};
use tracing_progress::{ErrorInfo, ProgressLevel, ProgressState, Status};

use crate::error::one_line;

const HEADERS: [&str; 7] = [
    "ID", "STATUS", "TYPE", "PROGRESS", "STARTED", "DURATION", "NAME",
];

/// A table of operations; an empty string for none.
pub(crate) fn operations(ops: &[ProgressState]) -> String {
    operations_with_status(ops, status)
}

/// [`operations`] with the status column told by `status_of` (the history file's
/// `interrupted`).
pub(crate) fn operations_with_status(
    ops: &[ProgressState],
    status_of: impl Fn(&ProgressState) -> String,
) -> String {
    if ops.is_empty() {
        return String::new();
    }
    let rows: Vec<[String; 7]> = ops
        .iter()
        .map(|op| {
            [
                // Another run's operation (from a history file) is named with its run.
                op.reference().to_string(),
                status_of(op),
                one_line(&op.operation_type),
                progress(&op.root),
                op.started_at_us
                    .map_or_else(|| "-".to_owned(), format_timestamp),
                format_duration(op.root.timing.elapsed_us),
                one_line(&op.name),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(measure_text_width);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(measure_text_width(cell));
        }
    }
    let mut out = String::new();
    push_row(&mut out, &HEADERS.map(str::to_owned), &widths);
    for (op, row) in ops.iter().zip(&rows) {
        push_row(&mut out, row, &widths);
        if let Some(line) = failure(op) {
            out.push_str("    ");
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

fn push_row(out: &mut String, row: &[String; 7], widths: &[usize; 7]) {
    let mut line = String::new();
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push_str("  ");
        }
        line.push_str(cell);
        if i + 1 < row.len() {
            let pad = width.saturating_sub(measure_text_width(cell));
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The status, with a running operation asked to cancel as `cancelling`.
pub(crate) fn status(op: &ProgressState) -> String {
    if op.cancel_requested && !op.status.is_finished() {
        "cancelling".to_owned()
    } else if op.with_failures {
        "completed with failures".to_owned()
    } else {
        op.status.to_string()
    }
}

/// `3/10 30%`, `3/10 blocks`, `5`, or `-`.
fn progress(level: &ProgressLevel) -> String {
    let mut parts = Vec::new();
    match level.total {
        Some(total) => parts.push(format!("{}/{}", level.current, total)),
        None if level.current > 0 => parts.push(level.current.to_string()),
        None => {}
    }
    if let (Some(unit), false) = (&level.unit, parts.is_empty()) {
        parts.push(one_line(unit));
    }
    if let Some(p) = level.percentage
        && level.status != Status::Completed
    {
        parts.push(format_percent(p));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

/// `error in op › step-1: disk full` for an operation with a failure, and the first failure
/// below it when that is another one (the likely root cause).
pub(crate) fn failure(op: &ProgressState) -> Option<String> {
    let e = op.error.as_ref()?;
    let what = if op.status == Status::Failed {
        "error"
    } else {
        "failure"
    };
    let mut out = describe(what, e);
    if let Some(below) = op.root.failures_below()
        && below.first.node_id != e.node_id
    {
        out.push_str("\n    ");
        out.push_str(&describe("first failure", &below.first));
    }
    Some(out)
}

fn describe(what: &str, e: &ErrorInfo) -> String {
    let message = e.message.lines().next().unwrap_or("");
    let more = if e.message.contains('\n') { " …" } else { "" };
    let path: Vec<String> = e.path.iter().map(|p| one_line(p)).collect();
    if path.is_empty() {
        format!("{what}: {}{more}", one_line(message))
    } else {
        format!(
            "{what} in {}: {}{more}",
            path.join(" › "),
            one_line(message)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, operation_type: &str, name: &str) -> ProgressState {
        let json = serde_json::json!({
            "schema_version": 1, "id": id, "operation_type": operation_type, "name": name,
            "status": "completed", "cancel_requested": false,
            "metrics": {"nodes_seen": 1, "nodes_retained": 1, "nodes_folded": 0,
                        "nodes_failed": 0, "updates": 0, "input_errors": 0},
            "snapshot_at_us": 0,
            "root": {
                "id": id, "level_type": operation_type, "name": name, "span_name": "op",
                "target": "app", "status": "completed", "current": 0,
                "timing": {"created_at_us": 0, "elapsed_us": 3_290_000, "busy_us": 0,
                           "idle_us": 0}
            }
        });
        serde_json::from_value(json).expect("a valid snapshot")
    }

    /// Columns line up on screen: a wide (CJK) cell takes two columns per character, so the
    /// cells after it start at the same terminal column on every row.
    #[test]
    fn columns_align_by_display_width() {
        let text = operations(&[op(1, "歌歌", "wide"), op(22, "song", "narrow")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let column_of = |line: &str, cell: &str| {
            let at = line.find(cell).expect("cell in the row");
            measure_text_width(&line[..at])
        };
        let name_column = column_of(lines[0], "NAME");
        assert_eq!(column_of(lines[1], "wide"), name_column, "{text}");
        assert_eq!(column_of(lines[2], "narrow"), name_column, "{text}");
        let duration_column = column_of(lines[0], "DURATION");
        assert_eq!(column_of(lines[1], "3.2s"), duration_column, "{text}");
        assert_eq!(column_of(lines[2], "3.2s"), duration_column, "{text}");
    }
}
