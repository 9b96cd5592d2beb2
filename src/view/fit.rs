//! Fitting a rendered text into a number of lines (a terminal's height): the header and the
//! running levels stay, finished lines give way first, and what is left out is said.

use super::lines::push_indent;
use super::text::{count, plural};
use crate::model::{ProgressLevel, Status};

/// Priorities of lines when the text must fit: the header, running levels, failed ones,
/// pending ones, everything else.
pub(super) const KEEP_HEADER: u8 = 4;
pub(super) const KEEP_RUNNING: u8 = 3;
pub(super) const KEEP_FAILED: u8 = 2;
pub(super) const KEEP_PENDING: u8 = 1;
pub(super) const KEEP_REST: u8 = 0;

pub(super) fn priority(level: &ProgressLevel) -> u8 {
    match level.status {
        Status::Running => KEEP_RUNNING,
        Status::Failed => KEEP_FAILED,
        Status::Pending => KEEP_PENDING,
        _ => KEEP_REST,
    }
}

/// Joins `lines`, keeping at most `max` of them (see [`Verbose::max_lines`]).
pub(super) fn fit(lines: Vec<(u8, String)>, max: usize) -> String {
    if lines.len() <= max {
        let mut out = String::with_capacity(lines.iter().map(|(_, l)| l.len() + 1).sum());
        for (_, line) in lines {
            out.push_str(&line);
            out.push('\n');
        }
        return out;
    }
    let mut keep = vec![true; lines.len()];
    let markers = |keep: &[bool]| {
        keep.iter()
            .zip(keep.iter().skip(1))
            .filter(|(a, b)| **a && !**b)
            .count()
            + usize::from(keep.first() == Some(&false))
    };
    let shown = |keep: &[bool]| keep.iter().filter(|k| **k).count();
    // First try: drop lines below the running ones, least important and latest first, with
    // one marker in place of each run of dropped lines.
    'drop: for prio in KEEP_REST..KEEP_RUNNING {
        for i in (0..lines.len()).rev() {
            if shown(&keep) + markers(&keep) <= max {
                break 'drop;
            }
            if lines[i].0 == prio {
                keep[i] = false;
            }
        }
    }
    if shown(&keep) + markers(&keep) > max {
        // Too tight for markers in place: keep the most important lines (in their order) and
        // say once, at the end, how many were left out.
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lines[i].0));
        let mut keep = vec![false; lines.len()];
        for &i in order.iter().take(max.saturating_sub(1)) {
            keep[i] = true;
        }
        let mut out = String::new();
        for (line, _) in lines.iter().zip(&keep).filter(|(_, k)| **k) {
            out.push_str(&line.1);
            out.push('\n');
        }
        let left = lines.len() - shown(&keep);
        out.push_str(&format!(
            "… {} more {} (a taller terminal shows them)\n",
            count(left as u64),
            plural("line", left as u64)
        ));
        return out;
    }
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if keep[i] {
            out.push_str(&lines[i].1);
            out.push('\n');
            i += 1;
            continue;
        }
        let start = i;
        while i < lines.len() && !keep[i] {
            i += 1;
        }
        let indent = lines[start].1.len() - lines[start].1.trim_start().len();
        push_indent(&mut out, indent);
        let n = (i - start) as u64;
        out.push_str(&format!("… {} more {}\n", count(n), plural("line", n)));
    }
    out
}
