//! The plain indented dump behind `Display for ProgressState`.

use std::fmt::{self, Write};

use super::{ProgressLevel, ProgressState};
use crate::time::format_duration;

/// A plain indented dump of the tree, one node per line, for logs and debugging:
/// `println!("{state}")` or `state.to_string()`. For reports meant to be read, use
/// [`view::Verbose`](crate::view::Verbose).
impl fmt::Display for ProgressState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "operation {} #{} {}{}",
            self.operation_type,
            self.id,
            self.status,
            if self.cancel_requested && !self.status.is_finished() {
                " (cancel requested)"
            } else {
                ""
            }
        )?;
        // Iterative walk: trees can be deep and this runs inside other people's programs.
        let mut stack: Vec<(&ProgressLevel, usize)> = vec![(&self.root, 1)];
        while let Some((level, depth)) = stack.pop() {
            write_level(f, level, depth)?;
            stack.extend(level.children.iter().rev().map(|c| (c, depth + 1)));
        }
        Ok(())
    }
}

fn write_level(f: &mut fmt::Formatter<'_>, l: &ProgressLevel, depth: usize) -> fmt::Result {
    let indent = "  ".repeat(depth);
    let mut line = String::new();
    // Planned children say so: waiting in line, or skipped (never run).
    let status = if l.planned {
        "pending, planned"
    } else if l.cancel_reason == Some(super::CancelReason::Skipped) {
        "skipped"
    } else {
        l.status.as_str()
    };
    let _ = write!(line, "{indent}{} {:?} [{status}]", l.level_type, &*l.name);
    match l.total {
        Some(total) => {
            let _ = write!(line, " {}/{}", l.current, total);
        }
        None if l.current > 0 => {
            let _ = write!(line, " {}", l.current);
        }
        None => {}
    }
    if let Some(unit) = &l.unit {
        let _ = write!(line, " {unit}");
    }
    if let Some(p) = l.percentage {
        let _ = write!(line, " {p:.1}%");
    }
    let _ = write!(line, " {}", format_duration(l.timing.elapsed_us));
    if let Some(m) = &l.message {
        let _ = write!(line, " - {m}");
    }
    writeln!(f, "{line}")?;
    for (k, v) in l.metadata.iter() {
        writeln!(f, "{indent}    {k}: {v}")?;
    }
    if let Some(e) = &l.error {
        writeln!(f, "{indent}    error: {}", e.message)?;
    }
    if let Some(below) = &l.failures_below {
        writeln!(
            f,
            "{indent}    failed below: {} (first: {} - {})",
            below.count,
            below.first.path.join(" > "),
            below.first.message
        )?;
    }
    for folded in &l.folded {
        writeln!(
            f,
            "{indent}  ... {} {} folded ({} completed, {} failed, {} cancelled; {}..{} mean {})",
            folded.count,
            folded.level_type,
            folded.completed,
            folded.failed,
            folded.cancelled,
            format_duration(folded.min_us),
            format_duration(folded.max_us),
            format_duration(folded.mean_us)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::model::ProgressState;

    /// A finished operation whose root took `root_us` and its one child `child_us`.
    fn state(root_us: u64, child_us: u64) -> ProgressState {
        let level = |id: u64, kind: &str, us: u64, children: &str| {
            format!(
                r#"{{"id":{id},"level_type":"{kind}","name":"{kind}","span_name":"{kind}",
                "target":"app","status":"completed","current":0,"timing":{{"created_at_us":0,
                "elapsed_us":{us},"busy_us":{us},"idle_us":0}},"children":[{children}]}}"#
            )
        };
        let json = format!(
            r#"{{"schema_version":1,"id":1,"operation_type":"job","name":"job",
            "status":"completed","cancel_requested":false,"metrics":{{"nodes_seen":2,
            "nodes_retained":2,"nodes_folded":0,"nodes_failed":0,"updates":0,"input_errors":0}},
            "snapshot_at_us":0,"root":{}}}"#,
            level(1, "job", root_us, &level(2, "step", child_us, ""))
        );
        serde_json::from_str(&json).expect("a valid snapshot")
    }

    /// The dump writes durations like the views do (`crate::time::format_duration`).
    #[test]
    fn durations_read_like_the_views() {
        let text = state(3_290_000, 850_400).to_string();
        assert_eq!(
            text,
            "operation job #1 completed\n  job \"job\" [completed] 3.2s\n    \
             step \"step\" [completed] 850ms\n"
        );
        let text = state(3_723_000_000, 0).to_string();
        assert!(text.contains("[completed] 1:02:03\n"), "{text}");
        assert!(text.contains("[completed] 0ms\n"), "{text}");
    }
}
