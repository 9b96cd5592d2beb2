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
use super::visitor::{LimitedWriter, sanitize_sized};
use crate::model::{EventLevel, FieldValue, Metadata, RecentEvent};

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

/// Collects an event's message and fields, text sanitized and cut to `max_text` bytes, at
/// most `max_fields` fields.
pub(super) struct RecentVisitor<'m> {
    meta: &'m tracing_core::Metadata<'m>,
    max_text: usize,
    max_fields: usize,
    message: Option<Arc<str>>,
    fields: Metadata,
    origin: LogOrigin,
}

impl<'m> RecentVisitor<'m> {
    pub(super) fn new(
        meta: &'m tracing_core::Metadata<'m>,
        max_text: usize,
        max_fields: usize,
    ) -> Self {
        RecentVisitor {
            meta,
            max_text,
            max_fields,
            message: None,
            fields: Metadata::default(),
            origin: LogOrigin::default(),
        }
    }

    /// The event, timestamped `at_us`.
    pub(super) fn finish(self, at_us: u64) -> RecentEvent {
        let target = match self.origin.target {
            Some(t) => t,
            None => Arc::from(self.meta.target()),
        };
        RecentEvent {
            at_us,
            level: level_of(self.meta.level()),
            target,
            message: self.message,
            fields: self.fields,
        }
    }

    fn value(&mut self, field: &Field, value: FieldValue) {
        if self.origin.take(self.meta, field.name(), &value) {
            return;
        }
        if self.fields.len() < self.max_fields {
            self.fields.insert(field.name(), value);
        }
    }

    fn text(&mut self, field: &Field, text: &str, full_len: usize) {
        let clean: Arc<str> = Arc::from(sanitize_sized(text, self.max_text, full_len));
        if field.name() == "message" {
            self.message = Some(clean);
        } else {
            self.value(field, FieldValue::Str(clean));
        }
    }
}

impl Visit for RecentVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.value(field, FieldValue::F64(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, FieldValue::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, FieldValue::U64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.value(field, FieldValue::Bool(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value, value.len());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(s) = source {
            let _ = write!(text, ": {s}");
            source = s.source();
        }
        self.text(field, &text, text.len());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut text = String::new();
        let mut writer = LimitedWriter::new(&mut text, self.max_text + 1);
        let _ = write!(writer, "{value:?}");
        let total = writer.total;
        self.text(field, &text, total);
    }
}
