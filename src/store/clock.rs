//! Wall-clock timestamps from a monotonic source.

use std::time::{Instant, SystemTime};

/// Reads the wall clock once at start and adds monotonic time to it, so timestamps never go
/// backwards when the system clock is adjusted and cost one `Instant::now()` each.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    epoch_unix_us: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            epoch: Instant::now(),
            epoch_unix_us: super::system_time_to_us(SystemTime::now()),
        }
    }

    /// Nanoseconds since the store was created (monotonic).
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Converts a [`Clock::now_ns`] reading to µs since the Unix epoch.
    #[inline]
    pub(crate) fn ns_to_unix_us(&self, ns: u64) -> u64 {
        self.epoch_unix_us + ns / 1_000
    }

    /// Microseconds since the Unix epoch.
    pub(crate) fn now_us(&self) -> u64 {
        self.ns_to_unix_us(self.now_ns())
    }
}
