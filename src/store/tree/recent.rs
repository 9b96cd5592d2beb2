//! A node's ring of recent events: the last `n` events, at most `max_bytes` of them.
//!
//! The layer records an event as a [`RecentRecord`]: field names and the target borrowed
//! from the callsite, all text in one buffer, so recording costs two allocations whatever the
//! number of fields. A record becomes a [`RecentEvent`] (the model's shared strings) only when
//! a snapshot first reads it, and stays converted; most events in a busy node are pushed out
//! before anyone looks.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::model::{EventLevel, FieldValue, Metadata, RecentEvent};

/// Fields a record holds without a heap block of their own.
pub(crate) type RecordFields = SmallVec<[(&'static str, Slot); 3]>;

/// A field value of a [`RecentRecord`]; text is a range of the record's buffer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Slot {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Range<u32>),
}

/// An event as the layer records it (see the module docs).
#[derive(Debug)]
pub(crate) struct RecentRecord {
    pub(crate) at_us: u64,
    pub(crate) level: EventLevel,
    /// The callsite's target...
    pub(crate) target: &'static str,
    /// ...unless the event is a `log` record (tracing-log), which names its own.
    pub(crate) log_target: Option<Arc<str>>,
    pub(crate) message: Option<Range<u32>>,
    pub(crate) fields: RecordFields,
    /// The message and every text value, sanitized and cut, one after another.
    pub(crate) text: TextBuf,
}

impl RecentRecord {
    /// Heap and inline bytes the record holds: what the ring's byte cap counts.
    fn weight(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.text.heap_bytes()
            + if self.fields.spilled() {
                self.fields.capacity() * std::mem::size_of::<(&str, Slot)>()
            } else {
                0
            }
    }

    fn to_event(&self) -> RecentEvent {
        let text = |r: &Range<u32>| -> Arc<str> {
            Arc::from(self.text.get(r.start as usize..r.end as usize))
        };
        let mut fields = Metadata::default();
        for (name, slot) in &self.fields {
            let value = match slot {
                Slot::Bool(b) => FieldValue::Bool(*b),
                Slot::U64(n) => FieldValue::U64(*n),
                Slot::I64(n) => FieldValue::I64(*n),
                Slot::F64(n) => FieldValue::F64(*n),
                Slot::Str(r) => FieldValue::Str(text(r)),
            };
            fields.insert(*name, value);
        }
        RecentEvent {
            at_us: self.at_us,
            level: self.level,
            target: match &self.log_target {
                Some(t) => t.clone(),
                None => Arc::from(self.target),
            },
            message: self.message.as_ref().map(text),
            fields,
        }
    }
}

/// A record's text: inline up to 96 bytes, so most events need no heap block for it. Only
/// whole `&str`s are appended and it is only cut where an append started, so it is always
/// UTF-8 (checked where read, never assumed).
#[derive(Debug, Default)]
pub(crate) struct TextBuf(SmallVec<[u8; 96]>);

impl TextBuf {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn push_str(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// Drops everything from `at` on.
    pub(crate) fn truncate(&mut self, at: usize) {
        self.0.truncate(at);
    }

    /// The text at `range` (empty if the range is not whole characters of it).
    #[inline]
    pub(crate) fn get(&self, range: Range<usize>) -> &str {
        self.0
            .get(range)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    /// Takes out the text from `at` on.
    pub(crate) fn split_off(&mut self, at: usize) -> String {
        let tail = self.get(at..self.len()).to_owned();
        self.truncate(at.min(self.len()));
        tail
    }

    fn heap_bytes(&self) -> usize {
        if self.0.spilled() {
            self.0.capacity()
        } else {
            0
        }
    }
}

// The ring's slots are allocated once and reused: a converted event in a record-sized slot
// costs no allocation, boxing the record would cost one per event.
#[allow(clippy::large_enum_variant)]
enum Entry {
    Recorded(RecentRecord),
    Converted(RecentEvent),
}

impl Entry {
    /// Whether the event is `other`, converting the record (once) if it still is one.
    fn matches(&mut self, other: &RecentEvent) -> bool {
        match self {
            Entry::Converted(e) => e == other,
            Entry::Recorded(r) => {
                let event = r.to_event();
                let same = event == *other;
                *self = Entry::Converted(event);
                same
            }
        }
    }

    /// The event, converting the record (once) if it still is one.
    fn read(&mut self) -> RecentEvent {
        let event = match self {
            Entry::Converted(e) => return e.clone(),
            Entry::Recorded(r) => r.to_event(),
        };
        *self = Entry::Converted(event.clone());
        event
    }
}

/// Bounded by count and by the summed weights counted at push; the oldest go first. A single
/// event heavier than the byte cap is still kept alone (text is already cut to `max_text_len`).
#[derive(Default)]
pub(super) struct Ring {
    /// `(entry, weight counted at push)`. A `RefCell` so a snapshot, which reads the tree
    /// through `&`, can keep the records it converted.
    events: RefCell<VecDeque<(Entry, usize)>>,
    bytes: usize,
    /// Events pushed out (by count or bytes) since the node started.
    dropped: u64,
}

impl Ring {
    #[inline]
    pub(super) fn push(&mut self, record: RecentRecord, max_events: usize, max_bytes: usize) {
        let w = record.weight();
        self.push_entry(Entry::Recorded(record), w, max_events, max_bytes);
    }

    /// An event already in model form (an error event's copy of its failure).
    pub(super) fn push_event(&mut self, event: RecentEvent, max_events: usize, max_bytes: usize) {
        let w = event.weight();
        self.push_entry(Entry::Converted(event), w, max_events, max_bytes);
    }

    #[inline]
    fn push_entry(&mut self, entry: Entry, w: usize, max_events: usize, max_bytes: usize) {
        let events = self.events.get_mut();
        while !events.is_empty() && (events.len() >= max_events || self.bytes + w > max_bytes) {
            if let Some((_, old)) = events.pop_front() {
                self.bytes -= old;
                self.dropped += 1;
            }
        }
        self.bytes += w;
        events.push_back((entry, w));
    }

    /// Makes `out` the ring's events, leaving it alone (no allocation) when it already is:
    /// what a refreshed snapshot needs (see `tree::snapshot`).
    pub(super) fn refresh_into(&self, out: &mut Vec<RecentEvent>) {
        let Ok(mut events) = self.events.try_borrow_mut() else {
            // Not reachable, as in `to_vec`.
            out.clear();
            return;
        };
        let same = out.len() == events.len()
            && events
                .iter_mut()
                .zip(out.iter())
                .all(|((e, _), o)| e.matches(o));
        if !same {
            *out = events.iter_mut().map(|(e, _)| e.read()).collect();
        }
    }

    pub(super) fn to_vec(&self) -> Vec<RecentEvent> {
        match self.events.try_borrow_mut() {
            Ok(mut events) => events.iter_mut().map(|(e, _)| e.read()).collect(),
            // Not reachable: the tree is read behind its operation's lock, one reader at a time.
            Err(_) => Vec::new(),
        }
    }

    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::{RecentRecord, Ring, Slot, TextBuf};
    use crate::model::{EventLevel, FieldValue};

    fn record(i: u64, text: usize) -> RecentRecord {
        let mut buf = TextBuf::default();
        buf.push_str(&"x".repeat(text));
        buf.push_str("/data/a.wav");
        RecentRecord {
            at_us: i,
            level: EventLevel::Info,
            target: "t",
            log_target: None,
            message: Some(0..text as u32),
            fields: smallvec::smallvec![
                ("i", Slot::U64(i)),
                ("path", Slot::Str(text as u32..buf.len() as u32)),
            ],
            text: buf,
        }
    }

    #[test]
    fn ring_keeps_the_newest_within_count_and_bytes() {
        let mut r = Ring::default();
        for i in 0..1000 {
            r.push(record(i, 10), 16, 1 << 20);
        }
        let kept: Vec<u64> = r.to_vec().iter().map(|e| e.at_us).collect();
        assert_eq!(kept, (984..1000).collect::<Vec<_>>());
        assert_eq!(r.dropped(), 984);
        let mut r = Ring::default();
        let w = record(0, 500).weight();
        for i in 0..100 {
            r.push(record(i, 500), 1000, 4 * w);
            assert!(r.bytes() <= 4 * w);
        }
        assert_eq!(r.to_vec().len(), 4);
        // One event over the cap alone is still kept (its text was cut already).
        r.push(record(100, 10 * w), 1000, 4 * w);
        assert_eq!(r.to_vec().len(), 1);
        assert_eq!(r.bytes(), record(0, 10 * w).weight());
    }

    #[test]
    fn a_record_reads_back_as_the_event_it_was_and_stays_converted() {
        let mut r = Ring::default();
        r.push(record(7, 3), 16, 1 << 20);
        let first = r.to_vec();
        let e = &first[0];
        assert_eq!(e.message.as_deref(), Some("xxx"));
        assert_eq!(&*e.target, "t");
        assert_eq!(e.fields.get("i"), Some(&FieldValue::U64(7)));
        assert_eq!(
            e.fields.get("path").and_then(|v| v.as_str()),
            Some("/data/a.wav")
        );
        // The second read shares the first one's strings: converted once.
        let second = r.to_vec();
        assert!(std::sync::Arc::ptr_eq(
            first[0].message.as_ref().unwrap(),
            second[0].message.as_ref().unwrap()
        ));
        assert_eq!(r.bytes(), record(7, 3).weight());
    }
}
