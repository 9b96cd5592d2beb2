//! Plans as the layer reads them: the `progress.planned` field and the
//! [`ProgressSpanExt::plan`](crate::ProgressSpanExt::plan) calls, turned into a bounded
//! [`PlanUpdate`] (the store's side is `store::tree::planned`).
//!
//! The field takes a list in either of two forms:
//! * a Debug list, as `progress.planned = ?songs` writes a `Vec<String>`, `&[&str]` or
//!   `Vec<PathBuf>`: `["a.wav", "b.wav"]` (quoted items with Rust's escapes; unquoted items,
//!   e.g. numbers, are taken as written);
//! * plain text, names separated by commas: `progress.planned = "a.wav, b.wav"`.
//!
//! Only the first `max_planned_children` names are copied; the rest are counted. A field cut
//! at `max_text_len` loses its last, partial name and notes it in `input_errors`.

use std::sync::Arc;

use super::visitor::sanitize;
use crate::store::PlanUpdate;

/// Longest planned name or key kept (longer ones are cut with the usual marker).
const MAX_NAME: usize = 1024;

/// Builds a plan from `(key, name)` entries, copying at most `cap` of them.
pub(crate) fn from_entries<K: AsRef<str>, N: AsRef<str>>(
    entries: impl IntoIterator<Item = (Option<K>, N)>,
    cap: usize,
    level: Option<&str>,
    at_us: u64,
) -> PlanUpdate {
    let mut plan = PlanUpdate {
        level: level.map(|l| Arc::from(sanitize(l, 128))),
        at_us,
        ..PlanUpdate::default()
    };
    let mut iter = entries.into_iter();
    for (key, name) in iter.by_ref().take(cap) {
        let key = key.map(|k| Arc::from(sanitize(k.as_ref(), MAX_NAME)));
        plan.entries
            .push((key, Arc::from(sanitize(name.as_ref(), MAX_NAME))));
    }
    // Counted, not copied: a million names cost one pass and no memory.
    plan.more = iter.count() as u64;
    plan
}

/// Parses the `progress.planned` field; `cut`: the text was cut at the length limit.
/// Returns the plan and an input error when something was lost.
pub(crate) fn parse_field(text: &str, cut: bool, cap: usize) -> (PlanUpdate, Option<Arc<str>>) {
    let t = text.trim();
    let names: Vec<String> = match t.strip_prefix('[') {
        Some(rest) => debug_list(rest.strip_suffix(']').unwrap_or(rest)),
        None => {
            let t = unquote(t);
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }
    };
    let mut names = names;
    let mut error = None;
    if cut && !names.is_empty() {
        names.pop();
        error = Some(Arc::from(format!(
            "progress.planned cut at the text length limit: its last name was dropped, {} kept",
            names.len()
        )));
    }
    let plan = from_entries(names.into_iter().map(|n| (None::<&str>, n)), cap, None, 0);
    (plan, error)
}

/// A Debug string literal's quotes removed (`"a, b"` → `a, b`).
fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

/// Items of a Debug list body: `"a", "b\"c"` or `1, 2`.
fn debug_list(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut item = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('n') => item.push('\n'),
                        Some('t') => item.push('\t'),
                        Some('r') => item.push('\r'),
                        Some('0') => item.push('\0'),
                        Some('u') => {
                            // `\u{1b}`
                            let mut hex = String::new();
                            if chars.peek() == Some(&'{') {
                                chars.next();
                                for h in chars.by_ref() {
                                    if h == '}' {
                                        break;
                                    }
                                    hex.push(h);
                                }
                            }
                            if let Some(c) =
                                u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32)
                            {
                                item.push(c);
                            }
                        }
                        Some(c) => item.push(c),
                        None => break,
                    },
                    c => item.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                item.push(c);
                chars.next();
            }
            item = item.trim().to_owned();
        }
        out.push(item);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &PlanUpdate) -> Vec<&str> {
        p.entries.iter().map(|(_, n)| &**n).collect()
    }

    #[test]
    fn field_forms() {
        let (p, e) = parse_field(r#"["a.wav", "b \"x\".wav", "c,d"]"#, false, 100);
        assert_eq!(names(&p), ["a.wav", "b \"x\".wav", "c,d"]);
        assert!(e.is_none());
        let (p, _) = parse_field("a.wav, b.wav ,,c.wav", false, 100);
        assert_eq!(names(&p), ["a.wav", "b.wav", "c.wav"]);
        let (p, _) = parse_field("\"a, b\"", false, 100);
        assert_eq!(names(&p), ["a", "b"]);
        let (p, _) = parse_field("[1, 2, 3]", false, 100);
        assert_eq!(names(&p), ["1", "2", "3"]);
        let (p, _) = parse_field(r#"["C:\\m\\a.mov", "\u{1b}x"]"#, false, 100);
        assert_eq!(names(&p), ["C:\\m\\a.mov", "\\u{1b}x"]);
        // Cut at the length limit: the partial last name goes, and it says so.
        let (p, e) = parse_field(r#"["a", "b", "c"#, true, 100);
        assert_eq!(names(&p), ["a", "b"]);
        assert!(e.unwrap().contains("2 kept"));
        // Past the cap: counted only.
        let (p, _) = parse_field("a,b,c,d,e", false, 2);
        assert_eq!((names(&p), p.more), (vec!["a", "b"], 3));
        assert_eq!(parse_field("", false, 10).0.entries.len(), 0);
    }
}
