//! The plain indented dump behind `Display for ProgressState`.

use std::fmt::{self, Write};

use super::{ProgressLevel, ProgressState};

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
    let _ = write!(
        line,
        "{indent}{} {:?} [{}]",
        l.level_type, &*l.name, l.status
    );
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
    let _ = write!(line, " {}", format_duration_us(l.timing.elapsed_us));
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
            format_duration_us(folded.min_us),
            format_duration_us(folded.max_us),
            format_duration_us(folded.mean_us)
        )?;
    }
    Ok(())
}

/// `1.234s`, `12ms`, `850µs`, `2:03:04` style durations, stable for text comparisons.
pub(crate) fn format_duration_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{}ms", us / 1_000)
    } else if us < 60_000_000 {
        format!("{:.3}s", us as f64 / 1e6)
    } else {
        let s = us / 1_000_000;
        format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::format_duration_us;

    #[test]
    fn durations_format_by_magnitude() {
        assert_eq!(format_duration_us(850), "850µs");
        assert_eq!(format_duration_us(12_345), "12ms");
        assert_eq!(format_duration_us(3_200_000), "3.200s");
        assert_eq!(format_duration_us(3_723_000_000), "1:02:03");
    }
}
