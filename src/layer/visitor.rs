//! Turns recorded fields into an [`NodeUpdate`]: progress fields by name, everything else metadata.
//!
//! Bad input has one defined outcome per case (also in the crate docs):
//! * a `progress.total`/`current`/`inc` that is negative, not a number, NaN or infinite is
//!   ignored and noted in the node's `input_errors`;
//! * a float is rounded to the nearest integer;
//! * text longer than the limit is cut at a character boundary and ends with
//!   `…[truncated, N bytes]`; control characters other than `\n` and `\t` are written as
//!   `\u{..}` escapes, so nothing is lost and terminals stay safe;
//! * an unknown `progress.*` field is kept as metadata and noted in `input_errors`.

use std::borrow::Cow;
use std::fmt::{self, Write};
use std::sync::Arc;

use tracing_core::field::{Field, Visit};

use super::classify::{PREFIX, Role, SpanClass, SpanLevel};
use crate::model::FieldValue;
use crate::store::NodeUpdate;

/// What the visitor collected beyond the update itself.
#[derive(Default)]
pub(crate) struct Extra {
    pub(crate) level: Option<SpanLevel>,
    pub(crate) operation: Option<Arc<str>>,
    /// The event's `message` field (events only).
    pub(crate) event_message: Option<Arc<str>>,
    /// The event's `error` field (events only), used as the failure text without a message.
    pub(crate) event_error: Option<Arc<str>>,
    /// `progress.key`: matches a planned slot of the parent (spans only).
    pub(crate) key: Option<Arc<str>>,
}

pub(crate) struct FieldVisitor<'a> {
    class: &'a SpanClass,
    max_text: usize,
    is_event: bool,
    /// Real length of a Debug value that was cut while formatting, for the truncation marker.
    cut_len: Option<usize>,
    pub(crate) update: NodeUpdate,
    pub(crate) extra: Extra,
}

#[derive(Clone, Copy)]
enum Num {
    Total,
    Current,
    Inc,
}

impl<'a> FieldVisitor<'a> {
    pub(crate) fn new(class: &'a SpanClass, max_text: usize, is_event: bool) -> Self {
        FieldVisitor {
            class,
            max_text,
            is_event,
            cut_len: None,
            update: NodeUpdate::default(),
            extra: Extra::default(),
        }
    }

    fn text(&self, s: &str) -> Arc<str> {
        Arc::from(sanitize_sized(
            s,
            self.max_text,
            self.cut_len.unwrap_or(s.len()),
        ))
    }

    fn set_number(&mut self, which: Num, value: u64) {
        match which {
            Num::Total => self.update.total = Some(value),
            Num::Current => self.update.current = Some(value),
            Num::Inc => self.update.inc = self.update.inc.saturating_add(value),
        }
    }

    /// `progress.attempt`: attempts are numbered from 1 (0 reads as 1).
    fn set_attempt(&mut self, value: u64) {
        self.update.attempt = Some(value.clamp(1, u64::from(u32::MAX)) as u32);
    }

    fn bad_number(&mut self, field: &Field, shown: &dyn fmt::Display) {
        let mut msg = String::new();
        let _ = write!(
            msg,
            "{} ignored: {shown} is not a non-negative number",
            field.name()
        );
        let msg = sanitize(&msg, 256).into_owned();
        self.update.input_errors.push(Arc::from(msg));
    }

    /// Which count a field sets: a `progress.*` count, or a plain field a rule maps to one.
    fn number_field(&self, field: &Field) -> Option<Num> {
        match field.name().strip_prefix(PREFIX) {
            Some("total") => Some(Num::Total),
            Some("current") => Some(Num::Current),
            Some("inc") => Some(Num::Inc),
            Some(_) => None,
            None => match self.class.role(field.index()) {
                Role::Total => Some(Num::Total),
                Role::Current => Some(Num::Current),
                _ => None,
            },
        }
    }

    /// A plain field a rule maps to a text role (name, message, unit).
    fn text_role(&mut self, role: Role, value: &str, from_debug: bool) {
        let value = if from_debug {
            unescape_debug(value)
        } else {
            Cow::Borrowed(value)
        };
        let text = Some(self.text(&value));
        match role {
            Role::Name => self.update.name = text,
            Role::Message => self.update.message = text,
            Role::Unit => self.update.unit = text,
            Role::None | Role::Total | Role::Current => {}
        }
    }

    /// Handles a text value for any field.
    fn text_field(&mut self, field: &Field, value: &str, from_debug: bool) {
        if let Some(which) = self.number_field(field) {
            match parse_count(value) {
                Some(v) => self.set_number(which, v),
                None => self.bad_number(field, &format_args!("{:?}", truncate_chars(value, 40))),
            }
            if field.name().starts_with(PREFIX) {
                return;
            }
            // A plain field mapped by a rule stays metadata too.
            let v = FieldValue::Str(self.text(value));
            self.meta(field, v);
            return;
        }
        let name = field.name();
        match name.strip_prefix(PREFIX) {
            Some("level") => {
                // The callsite's usual level is taken as is: it was sanitized when first seen,
                // and a value equal to it needs no cleaning.
                self.extra.level = Some(self.class.span_level(value))
            }
            Some("name") => self.update.name = Some(self.text(value)),
            Some("operation") => self.extra.operation = Some(self.text(value)),
            Some("message") => self.update.message = Some(self.text(value)),
            Some("unit") => self.update.unit = Some(self.text(value)),
            Some("key") => self.extra.key = Some(self.text(unescape_debug(value).as_ref())),
            Some("planned") => self.planned(value),
            Some("planned_level") => {
                let level = self
                    .class
                    .intern_level(&sanitize(&unescape_debug(value), 128));
                self.update
                    .planned
                    .get_or_insert_with(Default::default)
                    .level = Some(level);
            }
            Some("attempt") => match parse_count(value) {
                Some(v) => self.set_attempt(v),
                None => self.bad_number(field, &format_args!("{:?}", truncate_chars(value, 40))),
            },
            Some(_) => self.unknown_progress_field(field, FieldValue::Str(self.text(value))),
            None if self.is_event && name == "message" => {
                self.extra.event_message = Some(self.text(value))
            }
            None => {
                if self.is_event && name == "error" {
                    self.extra.event_error = Some(self.text(value));
                }
                let role = self.class.role(field.index());
                if role != Role::None {
                    self.text_role(role, value, from_debug);
                }
                let v = FieldValue::Str(self.text(value));
                self.meta(field, v);
            }
        }
    }

    /// `progress.planned`: the list of children this node will run (see `layer::planned`).
    fn planned(&mut self, value: &str) {
        let cut = self.cut_len.is_some() || value.len() > self.max_text;
        let value = truncate_chars(value, self.max_text);
        // Bounded by the text length; the store keeps at most its cap of them.
        let (plan, error) = super::planned::parse_field(value, cut, usize::MAX);
        let slot = self.update.planned.get_or_insert_with(Default::default);
        slot.entries.extend(plan.entries);
        slot.more += plan.more;
        self.update.input_errors.extend(error);
    }

    fn unknown_progress_field(&mut self, field: &Field, value: FieldValue) {
        self.update.input_errors.push(Arc::from(format!(
            "unknown progress field {:?} kept as metadata",
            field.name()
        )));
        self.meta(field, value);
    }

    fn meta(&mut self, field: &Field, value: FieldValue) {
        let name = self.class.field_name(field.index(), field.name());
        self.update.metadata.push((name, value));
    }

    /// Handles a non-text value.
    fn value_field(&mut self, field: &Field, value: FieldValue) {
        let name = field.name();
        if let Some(which) = self.number_field(field) {
            match &value {
                FieldValue::U64(v) => self.set_number(which, *v),
                FieldValue::I64(v) if *v >= 0 => self.set_number(which, *v as u64),
                FieldValue::F64(v) if v.is_finite() && *v >= 0.0 => {
                    self.set_number(which, v.round().min(u64::MAX as f64) as u64)
                }
                other => self.bad_number(field, other),
            }
            if !name.starts_with(PREFIX) {
                // A plain field mapped by a rule stays metadata too.
                self.meta(field, value);
            }
            return;
        }
        match name.strip_prefix(PREFIX) {
            // `progress.track = true` only marks the span as tracked.
            Some("track") if matches!(value, FieldValue::Bool(_)) => {}
            Some("attempt") => match value {
                FieldValue::U64(v) => self.set_attempt(v),
                FieldValue::I64(v) if v >= 0 => self.set_attempt(v as u64),
                other => self.bad_number(field, &other),
            },
            Some(
                "level" | "name" | "operation" | "message" | "unit" | "key" | "planned"
                | "planned_level",
            ) => {
                let text = value.to_string();
                self.text_field(field, &text, false);
            }
            Some(_) => self.unknown_progress_field(field, value),
            None => {
                let role = self.class.role(field.index());
                if role != Role::None {
                    self.text_role(role, &value.to_string(), false);
                }
                self.meta(field, value);
            }
        }
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value_field(field, FieldValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value_field(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value_field(field, FieldValue::U64(value));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.record_i64(field, v),
            Err(_) => self.record_debug(field, &value),
        }
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.record_u64(field, v),
            Err(_) => self.record_debug(field, &value),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value_field(field, FieldValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text_field(field, value, false);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.formatted_field(field, format_args!("{}", ErrorChain(value)), false);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.formatted_field(field, format_args!("{value:?}"), true);
    }
}

impl FieldVisitor<'_> {
    /// A text field whose value is formatted, at most `max_text` bytes of it.
    fn formatted_field(&mut self, field: &Field, value: fmt::Arguments<'_>, from_debug: bool) {
        let mut text = String::new();
        let mut writer = LimitedWriter::new(&mut text, self.max_text + 1);
        let _ = writer.write_fmt(value);
        let total = writer.total;
        self.cut_len = (total > text.len()).then_some(total);
        self.text_field(field, &text, from_debug);
        self.cut_len = None;
    }
}

/// An error and its sources, `: `-separated.
pub(super) struct ErrorChain<'a>(pub(super) &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Text a [`LimitedWriter`] can append to.
pub(super) trait TextSink {
    fn len(&self) -> usize;
    fn push_str(&mut self, s: &str);
}

impl TextSink for String {
    fn len(&self) -> usize {
        String::len(self)
    }
    fn push_str(&mut self, s: &str) {
        String::push_str(self, s)
    }
}

/// Stops collecting after `limit` bytes, so a huge Debug value cannot allocate without bound.
pub(super) struct LimitedWriter<'a, T: TextSink = String> {
    out: &'a mut T,
    limit: usize,
    /// Bytes offered, kept or not.
    pub(super) total: usize,
}

impl<'a, T: TextSink> LimitedWriter<'a, T> {
    pub(super) fn new(out: &'a mut T, limit: usize) -> Self {
        LimitedWriter {
            out,
            limit,
            total: 0,
        }
    }
}

impl<T: TextSink> Write for LimitedWriter<'_, T> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.total += s.len();
        let room = self.limit.saturating_sub(self.out.len());
        if room == 0 {
            return Ok(());
        }
        self.out.push_str(truncate_chars(s, room));
        Ok(())
    }
}

/// Parses a count given as text: an integer, or a non-negative finite float (rounded).
fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim().trim_matches('"');
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    let f = s.parse::<f64>().ok()?;
    (f.is_finite() && f >= 0.0).then(|| f.round().min(u64::MAX as f64) as u64)
}

/// Undoes `Debug` formatting of a string-like value (`"C:\\media\\a.mov"` → `C:\media\a.mov`):
/// the quotes and Rust's escapes. Anything that is not a quoted, well-escaped string is kept
/// as it is.
fn unescape_debug(s: &str) -> Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return Cow::Borrowed(s);
    };
    if !inner.contains('\\') {
        return Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let unescaped = match chars.next() {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('0') => '\0',
            Some(c @ ('\\' | '"' | '\'')) => c,
            Some('u') => {
                let rest = chars.as_str();
                let code = rest
                    .strip_prefix('{')
                    .and_then(|r| r.split_once('}'))
                    .and_then(|(hex, _)| u32::from_str_radix(hex, 16).ok().map(|v| (hex.len(), v)))
                    .and_then(|(len, v)| Some((len, char::from_u32(v)?)));
                match code {
                    Some((len, c)) => {
                        chars = rest[len + 2..].chars();
                        c
                    }
                    None => return Cow::Borrowed(s),
                }
            }
            _ => return Cow::Borrowed(s),
        };
        out.push(unescaped);
    }
    Cow::Owned(out)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_chars(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Whether `s` has no control characters but newline and tab (what [`sanitize`] escapes).
pub(super) fn is_clean(s: &str) -> bool {
    // Printable ASCII, newline and tab: one pass without early exit, so the loop vectorizes
    // (clean text is the case that matters). Anything else is looked at per character.
    let printable = s.bytes().fold(true, |ok, b| {
        ok & ((b.wrapping_sub(0x20) < 0x5f) | (b == b'\n') | (b == b'\t'))
    });
    printable || s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t')
}

/// Limits length and escapes control characters (except newline and tab).
pub(crate) fn sanitize(s: &str, max: usize) -> Cow<'_, str> {
    sanitize_sized(s, max, s.len())
}

/// [`sanitize`] for text that may already be a cut prefix of `full_len` bytes.
pub(super) fn sanitize_sized(s: &str, max: usize, full_len: usize) -> Cow<'_, str> {
    let clean = |c: char| !c.is_control() || c == '\n' || c == '\t';
    if s.len() <= max && full_len == s.len() && is_clean(s) {
        return Cow::Borrowed(s);
    }
    let kept = truncate_chars(s, max);
    let mut out = String::with_capacity(kept.len() + 32);
    for c in kept.chars() {
        if clean(c) {
            out.push(c);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    if kept.len() < full_len {
        let _ = write!(out, "…[truncated, {full_len} bytes]");
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_truncates_on_char_boundary_with_marker() {
        let s = "é".repeat(10);
        let out = sanitize(&s, 5);
        assert_eq!(out, "éé…[truncated, 20 bytes]");
    }

    #[test]
    fn sanitize_escapes_control_characters_but_keeps_newlines() {
        assert_eq!(sanitize("a\u{1b}[31mb\nc\td", 100), "a\\u{1b}[31mb\nc\td");
        assert!(matches!(sanitize("plain", 100), Cow::Borrowed(_)));
    }

    #[test]
    fn debug_strings_are_unescaped() {
        let path = std::path::PathBuf::from(r"C:\media\a.mov");
        assert_eq!(unescape_debug(&format!("{path:?}")), r"C:\media\a.mov");
        assert_eq!(
            unescape_debug(&format!("{:?}", "tab\there \"q\" é \u{7}")),
            "tab\there \"q\" é \u{7}"
        );
        assert_eq!(unescape_debug("Point { x: 1 }"), "Point { x: 1 }");
        assert_eq!(unescape_debug(r#""bad \q""#), r#""bad \q""#);
    }

    #[test]
    fn counts_parse_from_text() {
        assert_eq!(parse_count(" 12 "), Some(12));
        assert_eq!(parse_count("2.6"), Some(3));
        assert_eq!(parse_count("\"7\""), Some(7));
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count("NaN"), None);
        assert_eq!(parse_count("abc"), None);
    }
}
