//! A node's ring of recent events: the last `n` events, at most `max_bytes` of them.

use std::collections::VecDeque;

use crate::model::RecentEvent;

/// Bounded by count and by the summed [`RecentEvent::weight`]; the oldest go first. A single
/// event heavier than the byte cap is still kept alone (text is already cut to `max_text_len`).
#[derive(Default)]
pub(super) struct Ring {
    events: VecDeque<RecentEvent>,
    bytes: usize,
    /// Events pushed out (by count or bytes) since the node started.
    dropped: u64,
}

impl Ring {
    pub(super) fn push(&mut self, event: RecentEvent, max_events: usize, max_bytes: usize) {
        let w = event.weight();
        while !self.events.is_empty()
            && (self.events.len() >= max_events || self.bytes + w > max_bytes)
        {
            if let Some(old) = self.events.pop_front() {
                self.bytes -= old.weight();
                self.dropped += 1;
            }
        }
        self.bytes += w;
        self.events.push_back(event);
    }

    pub(super) fn to_vec(&self) -> Vec<RecentEvent> {
        self.events.iter().cloned().collect()
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
    use std::sync::Arc;

    use super::Ring;
    use crate::model::{EventLevel, Metadata, RecentEvent};

    fn event(i: u64, text: usize) -> RecentEvent {
        RecentEvent {
            at_us: i,
            level: EventLevel::Info,
            target: Arc::from("t"),
            message: Some(Arc::from("x".repeat(text))),
            fields: Metadata::default(),
        }
    }

    #[test]
    fn ring_keeps_the_newest_within_count_and_bytes() {
        let mut r = Ring::default();
        for i in 0..1000 {
            r.push(event(i, 10), 16, 1 << 20);
        }
        let kept: Vec<u64> = r.to_vec().iter().map(|e| e.at_us).collect();
        assert_eq!(kept, (984..1000).collect::<Vec<_>>());
        assert_eq!(r.dropped(), 984);
        let mut r = Ring::default();
        let w = event(0, 500).weight();
        for i in 0..100 {
            r.push(event(i, 500), 1000, 4 * w);
            assert!(r.bytes() <= 4 * w);
        }
        assert_eq!(r.to_vec().len(), 4);
        // One event over the cap alone is still kept (its text was cut already).
        r.push(event(100, 10 * w), 1000, 4 * w);
        assert_eq!(r.to_vec().len(), 1);
        assert_eq!(r.bytes(), event(0, 10 * w).weight());
    }
}
