//! One clock for every test that needs time to pass: it moves only when told to.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A clock that starts at zero and moves only through [`advance`](Self::advance). Clones share
/// the hand.
///
/// ```text
/// let clock = ManualClock::new();
/// let builder = Builder::new().clock(clock.reader());
/// clock.advance_ms(1_500); // 1.5 s pass for the store, instantly
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// The time source to give [`Builder::clock`](tracing_progress::Builder::clock).
    pub fn reader(&self) -> impl Fn() -> Duration + Send + Sync + 'static {
        let hand = self.0.clone();
        move || Duration::from_nanos(hand.load(Ordering::SeqCst))
    }

    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).expect("a test advances less than 584 years");
        self.0.fetch_add(ns, Ordering::SeqCst);
    }

    pub fn advance_ms(&self, ms: u64) {
        self.advance(Duration::from_millis(ms));
    }

    /// Time since the clock started.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}
