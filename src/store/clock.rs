//! Wall-clock timestamps from a cheap monotonic source.

use std::time::SystemTime;

/// Reads the wall clock once at start and adds monotonic time to it, so timestamps never go
/// backwards when the system clock is adjusted. The monotonic part is `quanta` (the TSC where
/// it is invariant, about 4x cheaper than `Instant::now()`; the OS clock elsewhere): a tracked
/// span reads the clock four times, so this is a large part of its cost.
#[derive(Clone, Debug)]
pub(crate) struct Clock {
    source: quanta::Clock,
    epoch: quanta::Instant,
    epoch_unix_us: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let source = quanta::Clock::new();
        Clock {
            epoch: source.now(),
            source,
            epoch_unix_us: super::system_time_to_us(SystemTime::now()),
        }
    }

    /// Nanoseconds since the store was created (monotonic).
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.source
            .now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
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
