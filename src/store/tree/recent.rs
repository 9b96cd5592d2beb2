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
