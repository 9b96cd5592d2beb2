//! A node's ring of recent events: the last `n` events, at most `max_bytes` of them.
//!
//! The layer records an event as a [`RecentRecord`]: field names and the target borrowed
//! from the callsite, all text in one buffer, so recording costs two allocations whatever the
//! number of fields. A record becomes a [`RecentEvent`] (the model's shared strings) only when
//! a snapshot first reads it, and stays converted; most events in a busy node are pushed out
//! before anyone looks.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::model::{EventLevel, FieldValue, Metadata, RecentEvent};

/// Fields a record holds without a heap block of their own.
pub(crate) type RecordFields = SmallVec<[(&'static str, Slot); FIELDS_INLINE]>;
const FIELDS_INLINE: usize = 3;
/// Text bytes a record holds without a heap block.
const TEXT_INLINE: usize = 96;

/// A field value of a [`RecentRecord`]; text is `start..end` of the record's buffer (`Copy`,
/// so a record's fields copy as one block).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Slot {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(u32, u32),
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
    /// A record with nothing in it, for the visitor to fill.
    pub(crate) fn empty() -> Self {
        RecentRecord {
            at_us: 0,
            level: EventLevel::Info,
            target: "",
            log_target: None,
            message: None,
            fields: RecordFields::new(),
            text: TextBuf::default(),
        }
    }

    /// An owned copy (`Clone` would suggest it is cheap to call on the hot path; it is not).
    fn copy(&self) -> Self {
        RecentRecord {
            at_us: self.at_us,
            level: self.level,
            target: self.target,
            log_target: self.log_target.clone(),
            message: self.message.clone(),
            fields: SmallVec::from_slice(&self.fields),
            text: TextBuf(SmallVec::from_slice(&self.text.0)),
        }
    }

    /// Heap and inline bytes the record holds once copied into a ring slot: what the ring's
    /// byte cap counts. A copy grows its buffers the way `SmallVec` does, to a power of two.
    fn weight(&self) -> usize {
        let heap = |len: usize, inline: usize, item: usize| {
            if len > inline {
                len.next_power_of_two() * item
            } else {
                0
            }
        };
        std::mem::size_of::<Self>()
            + heap(self.text.len(), TEXT_INLINE, 1)
            + heap(
                self.fields.len(),
                FIELDS_INLINE,
                std::mem::size_of::<(&str, Slot)>(),
            )
            + self.log_target.as_ref().map_or(0, |t| t.len() + 16)
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
                Slot::Str(start, end) => FieldValue::Str(text(&(*start..*end))),
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
pub(crate) struct TextBuf(SmallVec<[u8; TEXT_INLINE]>);

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

    /// Becomes a copy of `record`, reusing this slot's buffers when they hold nothing on the
    /// heap (so a reused slot never keeps more memory than its weight says).
    #[inline]
    fn refill(&mut self, record: &RecentRecord) {
        match self {
            Entry::Recorded(r) if !r.text.0.spilled() && !r.fields.spilled() => {
                r.at_us = record.at_us;
                r.level = record.level;
                r.target = record.target;
                r.log_target.clone_from(&record.log_target);
                r.message.clone_from(&record.message);
                r.fields.clear();
                r.fields.extend_from_slice(&record.fields);
                r.text.0.clear();
                r.text.0.extend_from_slice(&record.text.0);
            }
            _ => *self = Entry::Recorded(record.copy()),
        }
    }

    /// A slot no longer counted: let go of what it holds on the heap.
    fn retire(&mut self) {
        let heavy = match self {
            Entry::Recorded(r) => {
                r.text.0.spilled() || r.fields.spilled() || r.log_target.is_some()
            }
            Entry::Converted(_) => true,
        };
        if heavy {
            *self = Entry::Recorded(RecentRecord::empty());
        }
    }
}

/// Bounded by count and by the summed weights counted at push; the oldest go first. A single
/// event heavier than the byte cap is still kept alone (text is already cut to `max_text_len`).
///
/// A circular buffer of slots that are overwritten in place: recording an event copies its
/// bytes into the oldest slot, instead of moving a whole record in and out of a queue.
#[derive(Default)]
pub(super) struct Ring {
    /// `(entry, weight counted at push)`; the live ones are `len` slots from `head` on,
    /// wrapping; the others are spares kept for reuse. A `RefCell` so a snapshot, which reads
    /// the tree through `&`, can keep the records it converted.
    slots: RefCell<Vec<(Entry, usize)>>,
    head: usize,
    len: usize,
    bytes: usize,
    /// Events pushed out (by count or bytes) since the node started.
    dropped: u64,
}

impl Ring {
    #[inline]
    pub(super) fn push(&mut self, record: &RecentRecord, max_events: usize, max_bytes: usize) {
        let w = record.weight();
        self.make_room(w, max_events, max_bytes).0.refill(record);
    }

    /// An event already in model form (an error event's copy of its failure).
    pub(super) fn push_event(&mut self, event: RecentEvent, max_events: usize, max_bytes: usize) {
        let w = event.weight();
        self.make_room(w, max_events, max_bytes).0 = Entry::Converted(event);
    }

    /// Pushes out the oldest until an entry of weight `w` fits, then counts it in the next
    /// slot, which the caller fills.
    #[inline]
    fn make_room(&mut self, w: usize, max_events: usize, max_bytes: usize) -> &mut (Entry, usize) {
        let slots = self.slots.get_mut();
        while self.len > 0 && (self.len >= max_events || self.bytes + w > max_bytes) {
            let oldest = &mut slots[self.head];
            self.bytes -= oldest.1;
            oldest.0.retire();
            self.head = wrap(self.head + 1, slots.len());
            self.len -= 1;
            self.dropped += 1;
        }
        let at = if self.len < slots.len() {
            wrap(self.head + self.len, slots.len())
        } else {
            // Every slot is live and there is room for one more: grow at the end of the
            // circle (just before the oldest), which keeps the order.
            slots.insert(self.head, (Entry::Recorded(RecentRecord::empty()), 0));
            let at = self.head;
            self.head += 1;
            if self.len == 0 {
                self.head = 0;
            }
            at
        };
        self.len += 1;
        self.bytes += w;
        let slot = &mut slots[at];
        slot.1 = w;
        slot
    }

    /// Makes `out` the ring's events, leaving it alone (no allocation) when it already is:
    /// what a refreshed snapshot needs (see `tree::snapshot`).
    pub(super) fn refresh_into(&self, out: &mut Vec<RecentEvent>) {
        let Ok(mut slots) = self.slots.try_borrow_mut() else {
            // Not reachable, as in `to_vec`.
            out.clear();
            return;
        };
        let same = out.len() == self.len
            && self
                .live(&mut slots)
                .zip(out.iter())
                .all(|(e, o)| e.matches(o));
        if !same {
            *out = self.live(&mut slots).map(Entry::read).collect();
        }
    }

    pub(super) fn to_vec(&self) -> Vec<RecentEvent> {
        match self.slots.try_borrow_mut() {
            Ok(mut slots) => self.live(&mut slots).map(Entry::read).collect(),
            // Not reachable: the tree is read behind its operation's lock, one reader at a time.
            Err(_) => Vec::new(),
        }
    }

    /// The live entries of `slots` (this ring's), oldest first.
    fn live<'a>(&self, slots: &'a mut [(Entry, usize)]) -> impl Iterator<Item = &'a mut Entry> {
        let (newer, older) = slots.split_at_mut(self.head);
        older
            .iter_mut()
            .chain(newer.iter_mut())
            .take(self.len)
            .map(|(e, _)| e)
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

/// `i % n` for `i < 2 * n` (a slot index one turn past the end), without a division.
#[inline]
fn wrap(i: usize, n: usize) -> usize {
    if i >= n { i - n } else { i }
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
                ("path", Slot::Str(text as u32, buf.len() as u32)),
            ],
            text: buf,
        }
    }

    #[test]
    fn ring_keeps_the_newest_within_count_and_bytes() {
        let mut r = Ring::default();
        for i in 0..1000 {
            r.push(&record(i, 10), 16, 1 << 20);
        }
        let kept: Vec<u64> = r.to_vec().iter().map(|e| e.at_us).collect();
        assert_eq!(kept, (984..1000).collect::<Vec<_>>());
        assert_eq!(r.dropped(), 984);
        let mut r = Ring::default();
        let w = record(0, 500).weight();
        for i in 0..100 {
            r.push(&record(i, 500), 1000, 4 * w);
            assert!(r.bytes() <= 4 * w);
        }
        assert_eq!(r.to_vec().len(), 4);
        // One event over the cap alone is still kept (its text was cut already).
        r.push(&record(100, 10 * w), 1000, 4 * w);
        assert_eq!(r.to_vec().len(), 1);
        assert_eq!(r.bytes(), record(0, 10 * w).weight());
    }

    /// The circle of reused slots keeps arrival order through growth, count and byte
    /// evictions, reads (which convert slots) and heavy events, against a plain queue.
    #[test]
    fn reused_slots_keep_the_order_of_a_plain_queue() {
        use std::collections::VecDeque;
        let mut r = Ring::default();
        let mut model: VecDeque<(u64, usize)> = VecDeque::new();
        let (max_events, max_bytes) = (5, 3 * record(0, 200).weight());
        let mut bytes = 0;
        for i in 0..=400u64 {
            // Mostly small events, every 7th heavy (spilled text), every 11th read back.
            let rec = record(i, if i % 7 == 0 { 200 } else { 5 });
            let w = rec.weight();
            while !model.is_empty() && (model.len() >= max_events || bytes + w > max_bytes) {
                bytes -= model.pop_front().unwrap().1;
            }
            model.push_back((i, w));
            bytes += w;
            r.push(&rec, max_events, max_bytes);
            assert_eq!(r.bytes(), bytes, "after {i}");
            if i % 11 == 0 {
                let got: Vec<u64> = r.to_vec().iter().map(|e| e.at_us).collect();
                let want: Vec<u64> = model.iter().map(|(i, _)| *i).collect();
                assert_eq!(got, want, "after {i}");
            }
        }
        let events = r.to_vec();
        let want: Vec<u64> = model.iter().map(|(i, _)| *i).collect();
        assert_eq!(events.iter().map(|e| e.at_us).collect::<Vec<_>>(), want);
        // A reused slot holds this event's text, not a longer earlier one's.
        let last = events.last().unwrap();
        assert_eq!(last.message.as_deref(), Some("xxxxx"));
        assert_eq!(last.fields.get("i"), Some(&FieldValue::U64(400)));
        assert!(r.slots.borrow().len() <= max_events);
    }

    #[test]
    fn a_record_reads_back_as_the_event_it_was_and_stays_converted() {
        let mut r = Ring::default();
        r.push(&record(7, 3), 16, 1 << 20);
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
