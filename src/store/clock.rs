//! Wall-clock timestamps from a cheap monotonic source, or from an injected one (tests).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::counters::BusyClock;

/// A time source given to [`Builder::clock`](crate::Builder::clock): time elapsed since an
/// arbitrary fixed start, never going backwards.
pub(crate) type TimeFn = Arc<dyn Fn() -> Duration + Send + Sync>;

/// Reads the wall clock once at start and adds monotonic time to it, so timestamps never go
/// backwards when the system clock is adjusted. The monotonic part is `quanta` (the TSC where
/// it is invariant, about 4x cheaper than `Instant::now()`; the OS clock elsewhere): a tracked
/// span reads the clock four times, so this is a large part of its cost.
///
/// The monotonic part can be replaced by a function ([`Clock::from_fn`]) so that tests drive
/// time by hand; everything in the store (timing, estimates, stall detection) then follows it.
#[derive(Clone)]
pub(crate) struct Clock {
    source: Source,
    epoch_unix_us: u64,
}

#[derive(Clone)]
enum Source {
    Quanta {
        clock: quanta::Clock,
        /// A raw reading at start: readings are scaled as deltas from it, one multiply (no
        /// `Instant`/`Duration` round trip).
        epoch_raw: u64,
    },
    Manual(TimeFn),
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.source {
            Source::Quanta { .. } => "quanta",
            Source::Manual(_) => "manual",
        };
        f.debug_struct("Clock")
            .field("source", &kind)
            .field("epoch_unix_us", &self.epoch_unix_us)
            .finish()
    }
}

impl Clock {
    pub(crate) fn new() -> Self {
        let clock = quanta::Clock::new();
        Clock {
            source: Source::Quanta {
                epoch_raw: clock.raw(),
                clock,
            },
            epoch_unix_us: super::system_time_to_us(SystemTime::now()),
        }
    }

    /// A clock whose monotonic part is `now()`: time since an arbitrary start, which must never
    /// go backwards. Wall-clock timestamps are the system time at creation plus `now()`.
    pub(crate) fn from_fn(now: TimeFn) -> Self {
        Clock {
            source: Source::Manual(now),
            epoch_unix_us: super::system_time_to_us(SystemTime::now()),
        }
    }

    /// Nanoseconds since the store was created (monotonic).
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        match &self.source {
            // 0 for a reading before the epoch (another core's counter slightly behind).
            Source::Quanta { clock, epoch_raw } => clock.delta_as_nanos(*epoch_raw, clock.raw()),
            Source::Manual(now) => now().as_nanos().min(u64::MAX as u128) as u64,
        }
    }

    /// Converts a [`Clock::now_ns`] reading to µs since the Unix epoch.
    #[inline]
    pub(crate) fn ns_to_unix_us(&self, ns: u64) -> u64 {
        self.epoch_unix_us + ns / 1_000
    }

    /// Converts a [`Clock::now_ns`] reading to a [`BusyClock`] one: ns since the Unix epoch
    /// (the epoch's offset is known to the µs, so this is [`Clock::ns_to_unix_us`] with the
    /// reading's ns added) plus the busy clock's offset.
    #[inline]
    pub(crate) fn ns_to_busy_clock(&self, ns: u64) -> u64 {
        BusyClock::at_unix_ns(self.epoch_unix_us.saturating_mul(1_000).saturating_add(ns))
    }

    /// Microseconds since the Unix epoch.
    pub(crate) fn now_us(&self) -> u64 {
        self.ns_to_unix_us(self.now_ns())
    }
}
