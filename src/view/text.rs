//! Deterministic text pieces shared by the views: percentages, counts, names. Times and
//! durations are in `src/time.rs`.
//!
//! Everything here is integer arithmetic or fixed-precision `format!`, so the same snapshot
//! always renders to the same bytes on every platform, whatever the local time zone.

use std::borrow::Cow;
use std::fmt::Write;

use crate::model::{ProgressLevel, Status};

// === public formatting ===

/// A percentage: whole numbers from 10% up, one decimal below 10%, rounded to nearest.
///
/// Exactly zero reads `0%`; anything short of 100 never reads `100%` (it stops at `99%`), so a
/// running level does not look finished. Negative input reads `0%`, non-finite input `?%`.
///
/// ```
/// use tracing_progress::view::format_percent;
/// assert_eq!(format_percent(84.67), "85%");
/// assert_eq!(format_percent(7.56), "7.6%");
/// assert_eq!(format_percent(99.7), "99%");
/// assert_eq!(format_percent(0.0), "0%");
/// ```
pub fn format_percent(p: f64) -> String {
    if !p.is_finite() {
        return "?%".to_owned();
    }
    if p <= 0.0 {
        return "0%".to_owned();
    }
    let tenths = (p * 10.0).round();
    if tenths < 100.0 {
        let t = tenths as u64;
        return format!("{}.{}%", t / 10, t % 10);
    }
    let mut whole = p.round();
    if p < 100.0 && whole >= 100.0 {
        whole = 99.0;
    }
    format!("{}%", count(whole as u64))
}

// === private pieces ===

/// `9,950`: thousands separated by commas.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate per second: one decimal under 100, whole (with separators) from there.
pub(crate) fn rate(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        "0.0".to_owned()
    } else if r < 99.95 {
        format!("{r:.1}")
    } else {
        count(r.round() as u64)
    }
}

/// Bytes in binary units labelled the usual way: `512 B`, `64 KB`, `128 MB`, `1.5 GB`.
pub(crate) fn bytes(n: u64) -> String {
    const KB: u64 = 1 << 10;
    const MB: u64 = 1 << 20;
    const GB: u64 = 1 << 30;
    if n < KB {
        format!("{n} B")
    } else if n < MB {
        format!("{} KB", n / KB)
    } else if n < GB {
        format!("{} MB", n / MB)
    } else {
        let tenths = n / (GB / 10);
        format!("{}.{} GB", count(tenths / 10), tenths % 10)
    }
}

/// `word` for one, `words` otherwise.
pub(crate) fn plural(word: &str, n: u64) -> String {
    if n == 1 || word.is_empty() {
        word.to_owned()
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|end| word.ends_with(end))
    {
        // "subprocesses", "boxes", "batches": not "subprocesss".
        format!("{word}es")
    } else {
        format!("{word}s")
    }
}

/// `events_found` → `Events Found`: words split at `_`, `.`, `-` and spaces, each capitalized;
/// the word `id` reads `ID`.
pub(crate) fn title_words(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for word in name.split(['_', '.', '-', ' ']).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        if word.eq_ignore_ascii_case("id") {
            out.push_str("ID");
            continue;
        }
        let mut chars = one_line(word).into_owned().into_bytes();
        // The first byte is ASCII or the start of a multi-byte char; only ASCII is uppercased.
        if let Some(first) = chars.first_mut() {
            first.make_ascii_uppercase();
        }
        out.push_str(&String::from_utf8(chars).unwrap_or_default());
    }
    out
}

/// User text made safe for one line: control characters (newlines included, tabs excepted)
/// written as `\n` or `\u{1b}` escapes.
pub(crate) fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push('\t'),
            c if c.is_control() => {
                let _ = write!(out, "{}", c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The first line of user text, made safe: for one-line summaries of long messages.
/// `s` cut to about `max` bytes (on a character boundary) with a note of its full length.
pub(crate) fn clipped(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes in all)", &s[..end], s.len()))
}

pub(crate) fn first_line(s: &str) -> Cow<'_, str> {
    match s.split_once('\n') {
        Some((first, _)) => Cow::Owned(format!("{} …", one_line(first))),
        None => one_line(s),
    }
}

/// Status with a capital: `Running`.
pub(crate) fn status_word(status: Status) -> &'static str {
    match status {
        Status::Pending => "Pending",
        Status::Running => "Running",
        Status::Completed => "Completed",
        Status::Failed => "Failed",
        Status::Cancelled => "Cancelled",
    }
}

// === tree pieces shared by the views ===

/// Children folded away below `level`, all level types together.
pub(crate) fn folded_total(level: &ProgressLevel) -> u64 {
    level.folded.iter().map(|f| f.count).sum()
}

/// Position of the retained child at `index` among its siblings, and what it is out of
/// (see [`children_out_of`]; pass it in when numbering many children of one parent).
///
/// Folded children are counted before the retained ones (they are the ones that finished
/// first).
pub(crate) fn position(parent: &ProgressLevel, index: usize) -> (u64, Option<u64>) {
    position_in(parent, index, children_out_of(parent))
}

/// [`position`] with the parent's [`children_out_of`] already known (checking it walks the
/// children).
pub(crate) fn position_in(
    parent: &ProgressLevel,
    index: usize,
    of: Option<u64>,
) -> (u64, Option<u64>) {
    (folded_total(parent) + index as u64 + 1, of)
}

/// What a parent's children are numbered out of: its total when that counts them (no unit,
/// and children of one level type: a total beside checksums, images and directories counts
/// something else), otherwise unknown (the siblings seen so far are no total: "3/3" would
/// read as "the last of all").
pub(crate) fn children_out_of(parent: &ProgressLevel) -> Option<u64> {
    match (parent.total, &parent.unit) {
        (Some(total), None) if child_type(parent).is_some() => Some(total),
        _ => None,
    }
}

/// `3/10`, or `3` when the total is unknown.
pub(crate) fn index_of(index: u64, of: Option<u64>) -> String {
    match of {
        Some(of) => format!("{}/{}", count(index), count(of)),
        None => count(index),
    }
}

/// The level type a level's children share (retained and folded ones); `None` without
/// children or when they are of several types (a unit named after one of them would be
/// wrong for the rest).
pub(crate) fn child_type(level: &ProgressLevel) -> Option<&str> {
    let first = level
        .children
        .first()
        .map(|c| &*c.level_type)
        .or_else(|| level.folded.first().map(|f| &*f.level_type))?;
    let one_type = level.children.iter().all(|c| &*c.level_type == first)
        && level.folded.iter().all(|f| &*f.level_type == first);
    one_type.then_some(first)
}

/// What `current`/`total` count: the unit, else the children's level type (pluralized for
/// `n`), else nothing.
pub(crate) fn units_of(level: &ProgressLevel, n: u64) -> Option<String> {
    match &level.unit {
        Some(unit) => Some(one_line(unit).into_owned()),
        None => child_type(level).map(|t| plural(&one_line(t), n)),
    }
}

/// `127/150 events`, `3/10 songs`, `12 blocks`, `16 MB/40 MB` (unit `bytes`), or `None` when
/// there is nothing to count.
/// The status in words with what sets it apart: `Completed with failures`,
/// `Cancelled (dropped)`.
pub(crate) fn status_text(level: &ProgressLevel) -> String {
    // Planned children read as what they are for the user: waiting in line, or never run.
    if level.planned {
        return "Pending (planned)".to_owned();
    }
    if level.cancel_reason == Some(crate::CancelReason::Skipped) {
        return "Skipped".to_owned();
    }
    let mut s = status_word(level.status).to_owned();
    if level.with_failures {
        s.push_str(" with failures");
    }
    if let Some(reason) = level.cancel_reason
        && reason != crate::CancelReason::Requested
    {
        s.push_str(&format!(" ({reason})"));
    }
    s
}

/// A rate with its unit of time: per second, or per minute / hour for slow levels, so a slow
/// level never reads `0.0/sec`. `units` is e.g. `songs`.
pub(crate) fn rate_per(per_s: f64, units: Option<&str>) -> String {
    let (r, per) = if per_s >= 0.1 || per_s <= 0.0 || !per_s.is_finite() {
        (per_s, "sec")
    } else if per_s * 60.0 >= 0.1 {
        (per_s * 60.0, "min")
    } else {
        (per_s * 3600.0, "hour")
    };
    match units {
        Some(u) => format!("{} {u}/{per}", rate(r)),
        None => format!("{}/{per}", rate(r)),
    }
}

pub(crate) fn counts(level: &ProgressLevel) -> Option<String> {
    if level.unit.as_deref() == Some("bytes") {
        return match level.total {
            Some(total) => Some(format!("{}/{}", bytes(level.current), bytes(total))),
            None if level.current > 0 => Some(bytes(level.current)),
            None => None,
        };
    }
    let (text, n) = match level.total {
        Some(total) => (format!("{}/{}", count(level.current), count(total)), total),
        None if level.current > 0 => (count(level.current), level.current),
        None => return None,
    };
    let mut text = match units_of(level, n) {
        Some(units) => format!("{text} {units}"),
        None => text,
    };
    // Failed children are not done work: said apart, so `2/3 songs` never hides a failure.
    if level.failed > 0 {
        text.push_str(&format!(", {} failed", count(level.failed)));
    }
    if level.skipped > 0 {
        text.push_str(&format!(", {} skipped", count(level.skipped)));
    }
    Some(text)
}

/// `85% (127/150 events)`, `85%`, `127/150 events`, or `None`.
pub(crate) fn progress(level: &ProgressLevel) -> Option<String> {
    let pct = level.percentage.map(format_percent);
    match (pct, counts(level)) {
        (Some(p), Some(c)) => Some(format!("{p} ({c})")),
        (Some(p), None) => Some(p),
        (None, Some(c)) => Some(c),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_cuts_on_a_char_boundary_and_says_how_long() {
        assert_eq!(clipped("short", 10), "short");
        let s = "é".repeat(200); // 400 bytes
        let c = clipped(&s, 301);
        assert!(c.starts_with(&"é".repeat(150)), "{c}");
        assert!(c.ends_with("… (400 bytes in all)"), "{c}");
    }

    #[test]
    fn small_pieces() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(1.25), "1.2");
        assert_eq!(rate(1234.5), "1,235");
        assert_eq!(bytes(128 << 20), "128 MB");
        assert_eq!(bytes(3 << 29), "1.5 GB");
        assert_eq!(title_words("events_found"), "Events Found");
        assert_eq!(title_words("block_id"), "Block ID");
        assert_eq!(title_words("otel.name"), "Otel Name");
        assert_eq!(one_line("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(plural("song", 1), "song");
        assert_eq!(plural("song", 0), "songs");
        assert_eq!(plural("subprocess", 4), "subprocesses");
        assert_eq!(plural("batch", 2), "batches");
    }
}
