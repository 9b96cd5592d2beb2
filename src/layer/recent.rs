//! Recording ordinary events into the recent events of the tracked node they happen in.
//!
//! Only events at or above the configured level, outside `progress.*` events and
//! `#[instrument(ret)]` returns, are kept. The cost is paid only inside tracked spans: a
//! per-thread count of entered tracked spans lets events on threads with none open return
//! before any registry lookup.

use std::cell::Cell;
use std::fmt::{self, Write};
use std::sync::Arc;

use tracing_core::field::{Field, Visit};
use tracing_core::{Event, Level};

use super::events::LogOrigin;
use super::visitor::{ErrorChain, LimitedWriter, TextSink, is_clean, sanitize_sized};
use crate::model::{EventLevel, FieldValue};
use crate::store::{RecentRecord, Slot, TextBuf};

thread_local! {
    /// Tracked spans (of any progress layer) entered on this thread and not exited yet.
    static ENTERED_TRACKED: Cell<u32> = const { Cell::new(0) };
}

/// A tracked span was entered on this thread.
#[inline]
pub(super) fn entered() {
    let _ = ENTERED_TRACKED.try_with(|c| c.set(c.get().saturating_add(1)));
}

/// A tracked span was exited on this thread.
#[inline]
pub(super) fn exited() {
    let _ = ENTERED_TRACKED.try_with(|c| c.set(c.get().saturating_sub(1)));
}

/// False when the event certainly happens outside every tracked span: it has no explicit
/// parent and no tracked span is entered on this thread. (During thread teardown: true.)
#[inline]
pub(super) fn may_be_inside(event: &Event<'_>) -> bool {
    !event.is_contextual() || ENTERED_TRACKED.try_with(|c| c.get() != 0).unwrap_or(true)
}

pub(super) fn level_of(level: &Level) -> EventLevel {
    match *level {
        Level::TRACE => EventLevel::Trace,
        Level::DEBUG => EventLevel::Debug,
        Level::INFO => EventLevel::Info,
        Level::WARN => EventLevel::Warn,
        _ => EventLevel::Error,
    }
}

/// Collects an event's message and fields into a [`RecentRecord`]: text sanitized and cut to
/// `max_text` bytes and all of them together to `text_budget` (so one event with a huge value
/// cannot push every other event out of the ring's byte cap), at most `max_fields` fields,
/// names and target borrowed from the callsite.
pub(super) struct RecentVisitor {
    meta: &'static tracing_core::Metadata<'static>,
    max_text: usize,
    text_budget: usize,
    max_fields: usize,
    /// A `log` record through tracing-log: its `log.*` fields say where it came from.
    from_log: bool,
    /// Filled in place and handed to the ring by reference, which copies only its bytes.
    record: RecentRecord,
    origin: LogOrigin,
}

impl RecentVisitor {
    pub(super) fn new(
        meta: &'static tracing_core::Metadata<'static>,
        max_text: usize,
        text_budget: usize,
        max_fields: usize,
    ) -> Self {
        let mut record = RecentRecord::empty();
        record.level = level_of(meta.level());
        record.target = meta.target();
        RecentVisitor {
            meta,
            max_text,
            text_budget,
            max_fields,
            from_log: meta.target() == "log",
            record,
            origin: LogOrigin::default(),
        }
    }

    /// The event, timestamped `at_us`.
    #[inline]
    pub(super) fn finish(&mut self, at_us: u64) -> &RecentRecord {
        self.record.at_us = at_us;
        self.record.log_target = self.origin.target.take();
        &self.record
    }

    /// Whether `name` is one of a `log` record's origin fields (then kept as the origin).
    fn origin(&mut self, name: &str, value: impl FnOnce() -> FieldValue) -> bool {
        self.from_log && name.starts_with("log.") && self.origin.take(self.meta, name, &value())
    }

    fn value(&mut self, field: &Field, slot: Slot, value: impl FnOnce() -> FieldValue) {
        if !self.origin(field.name(), value) && self.record.fields.len() < self.max_fields {
            self.record.fields.push((field.name(), slot));
        }
    }

    /// Bytes the next text value may keep.
    fn limit(&self) -> usize {
        self.limit_at(self.record.text.len())
    }

    /// Bytes a text value starting at `start` of the buffer may keep (at least 16, room for
    /// the start of it and the cut marker).
    fn limit_at(&self, start: usize) -> usize {
        self.max_text
            .min(self.text_budget.saturating_sub(start))
            .max(16)
    }

    /// Appends `text`, a prefix of `full_len` bytes, sanitized and cut.
    fn push_text(&mut self, text: &str, full_len: usize) -> std::ops::Range<u32> {
        let limit = self.limit();
        let text_buf = &mut self.record.text;
        let start = text_buf.len();
        text_buf.push_str(&sanitize_sized(text, limit, full_len));
        start as u32..text_buf.len() as u32
    }

    /// The text at `start..` of the buffer (written there by Debug formatting) was `full_len`
    /// bytes before the cut, and `clean` if every piece written had no control characters:
    /// sanitize it in place unless it is already.
    fn settle_text(&mut self, start: usize, full_len: usize, clean: bool) -> std::ops::Range<u32> {
        let end = self.record.text.len();
        if clean && end - start == full_len && full_len <= self.limit_at(start) {
            return start as u32..end as u32;
        }
        let raw = self.record.text.split_off(start);
        self.push_text(&raw, full_len)
    }

    /// Writes `value` at the end of the text buffer, cut past `max_text`, and settles it.
    fn write_text(&mut self, value: fmt::Arguments<'_>) -> std::ops::Range<u32> {
        let start = self.record.text.len();
        let limit = self.limit();
        let mut out = CheckedText {
            buf: &mut self.record.text,
            clean: true,
        };
        let mut writer = LimitedWriter::new(&mut out, start + limit + 1);
        let _ = writer.write_fmt(value);
        let total = writer.total;
        let clean = out.clean;
        self.settle_text(start, total, clean)
    }

    fn text_field(&mut self, field: &Field, range: std::ops::Range<u32>) {
        if field.name() == "message" {
            self.record.message = Some(range);
            return;
        }
        let text = &mut self.record.text;
        let from_log = self.from_log && field.name().starts_with("log.");
        if from_log {
            let value = FieldValue::Str(Arc::from(
                text.get(range.start as usize..range.end as usize),
            ));
            if self.origin.take(self.meta, field.name(), &value) {
                text.truncate(range.start as usize);
                return;
            }
        }
        if self.record.fields.len() < self.max_fields {
            self.record
                .fields
                .push((field.name(), Slot::Str(range.start, range.end)));
        } else {
            text.truncate(range.start as usize);
        }
    }
}

impl Visit for RecentVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, Slot::F64(value), || FieldValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, Slot::I64(value), || FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, Slot::U64(value), || FieldValue::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, Slot::Bool(value), || FieldValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let range = self.push_text(value, value.len());
        self.text_field(field, range);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let range = self.write_text(format_args!("{}", ErrorChain(value)));
        self.text_field(field, range);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let range = self.write_text(format_args!("{value:?}"));
        self.text_field(field, range);
    }
}

/// A record's text buffer that notes, as pieces are appended, whether any had a control
/// character (then the value is sanitized after; else it is kept as written).
struct CheckedText<'a> {
    buf: &'a mut TextBuf,
    clean: bool,
}

impl TextSink for CheckedText<'_> {
    fn len(&self) -> usize {
        self.buf.len()
    }
    fn push_str(&mut self, s: &str) {
        self.clean &= is_clean(s);
        self.buf.push_str(s)
    }
}
