//! A node's counters, shared by the tree, the span and progress handles, so progress updates
//! take no lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// A node's counters and entered time.
///
/// SeqCst on purpose: subscribers clear an operation's `dirty` flag and then snapshot; an
/// update that saw `dirty` still set must be visible to that snapshot (see
/// `OpSignal::mark_changed`). On x86 a SeqCst read-modify-write costs the same as a relaxed one.
///
/// 40 bytes, so with the `Arc`'s two counts the block is one 64-byte allocator chunk: a live
/// node's memory is dominated by this block, the tree's node and the layer's table entry.
pub(crate) struct LiveCounters {
    current: AtomicU64,
    /// `NO_TOTAL` until set.
    total: AtomicU64,
    /// Time entered (ns). While the span is entered it holds that time minus when it was
    /// entered (a [`BusyClock`] reading), wrapping: a value below `-OPEN_BELOW`, so readers
    /// tell an open stretch from the value alone and one atomic add on enter and on exit
    /// keeps it.
    busy: AtomicU64,
    /// The flags (`EXPLICIT`, `SAW_CANCEL`, `CLOSED`, `RETURNED`, `SET`) in the top byte,
    /// read relaxed on the hot path and set with `fetch_or`; below them (`STARTED`) when the
    /// span was first entered (µs since the Unix epoch), 0 until then: set once, without the
    /// operation's lock (the tree reads a pending node with a start as running).
    started_and_flags: AtomicU64,
    /// Updates applied so far. Bumped with a plain load and store, not a read-modify-write:
    /// it is a statistic (metrics, the estimator's gap between updates), and two threads
    /// updating one node at the same instant may count one update instead of two. `current`
    /// is exact.
    updates: AtomicU64,
}

/// The start time's bits of `started_and_flags` (2^56 µs: 2,284 years).
const STARTED: u64 = (1 << 56) - 1;
/// Where the flags byte sits in `started_and_flags`.
const FLAGS_SHIFT: u32 = 56;

/// Timestamps for the busy time: ns since the Unix epoch plus `BUSY_CLOCK_OFFSET`, so a
/// reading is at least 2^60 whatever the system clock says (a device booted at 1970 too),
/// and an open stretch (the time so far minus a reading) is always below `-OPEN_BELOW`.
pub(crate) struct BusyClock;

impl BusyClock {
    /// The reading at `unix_ns` (ns since the Unix epoch).
    #[inline]
    pub(crate) fn at_unix_ns(unix_ns: u64) -> u64 {
        unix_ns.saturating_add(BUSY_CLOCK_OFFSET)
    }
}

const BUSY_CLOCK_OFFSET: u64 = 1 << 60;
/// A busy value between `-OPEN_BELOW` and 0 is no open stretch but an exit stamped a little
/// before its enter (two threads' clocks a few ns apart): it reads as nothing, and the next
/// stretches add to it as usual (so at most those few ns are lost).
const OPEN_BELOW: i64 = 1 << 59;

const NO_TOTAL: u64 = u64::MAX;
/// `current` was set or incremented (otherwise snapshots count finished children).
const EXPLICIT: u8 = 1;
/// `is_cancelled()` answered true for this node.
const SAW_CANCEL: u8 = 2;
/// The node closed: progress handles stop changing it.
const CLOSED: u8 = 4;
/// The span's `#[instrument(ret)]` / `#[instrument(err)]` event came: it returned.
const RETURNED: u8 = 8;
/// `current` was set to a value (not only incremented): it may not have started from 0.
const SET: u8 = 16;

impl LiveCounters {
    pub(crate) fn new() -> Self {
        LiveCounters {
            current: AtomicU64::new(0),
            total: AtomicU64::new(NO_TOTAL),
            busy: AtomicU64::new(0),
            started_and_flags: AtomicU64::new(0),
            updates: AtomicU64::new(0),
        }
    }

    /// Applies the counter part of an update; true if anything changed.
    #[inline]
    pub(crate) fn apply(&self, total: Option<u64>, current: Option<u64>, inc: u64) -> bool {
        let mut changed = false;
        if let Some(t) = total {
            // u64::MAX itself is kept as "unknown": nobody counts that far.
            self.total.swap(t, Ordering::SeqCst);
            changed = true;
        }
        if let Some(c) = current {
            self.current.swap(c, Ordering::SeqCst);
            if self.flags(Ordering::Relaxed) & SET == 0 {
                self.set_flag(SET, Ordering::SeqCst);
            }
            self.mark_explicit();
            changed = true;
        }
        if inc > 0 {
            // Counts the update.
            self.inc(inc);
            return true;
        }
        if changed {
            self.count_update();
        }
        changed
    }

    /// Adds `delta` to `current`: one atomic add, plus relaxed reads.
    #[inline]
    pub(crate) fn inc(&self, delta: u64) {
        let old = self.current.fetch_add(delta, Ordering::SeqCst);
        if old.checked_add(delta).is_none() {
            // Wrapped past u64::MAX (bad input, not counting): pin it instead.
            self.current.store(u64::MAX, Ordering::SeqCst);
        }
        self.mark_explicit();
        self.count_update();
    }

    #[inline]
    fn mark_explicit(&self) {
        if self.flags(Ordering::Relaxed) & EXPLICIT == 0 {
            self.set_flag(EXPLICIT, Ordering::SeqCst);
        }
    }

    #[inline]
    fn count_update(&self) {
        // Not a read-modify-write on purpose (see the field).
        let n = self.updates.load(Ordering::Relaxed);
        self.updates.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    pub(crate) fn current(&self) -> Option<u64> {
        (self.flags(Ordering::SeqCst) & EXPLICIT != 0).then(|| self.current.load(Ordering::SeqCst))
    }

    pub(crate) fn total(&self) -> Option<u64> {
        let t = self.total.load(Ordering::SeqCst);
        (t != NO_TOTAL).then_some(t)
    }

    /// Whether `current` only ever grew by increments, so it was 0 when the node started
    /// (never set to a value, e.g. a resumed job's `progress.current = 50`).
    pub(crate) fn counted_from_zero(&self) -> bool {
        self.flags(Ordering::Relaxed) & SET == 0
    }

    /// The node saw its operation's cancel request.
    pub(crate) fn saw_cancel_now(&self) {
        self.set_flag(SAW_CANCEL, Ordering::Relaxed);
    }

    pub(crate) fn saw_cancel(&self) -> bool {
        self.flags(Ordering::Relaxed) & SAW_CANCEL != 0
    }

    /// The span returned (its return event came).
    pub(crate) fn set_returned(&self) {
        if self.flags(Ordering::Relaxed) & RETURNED == 0 {
            self.set_flag(RETURNED, Ordering::Relaxed);
        }
    }

    /// Whether the span's return event came.
    pub(crate) fn returned(&self) -> bool {
        self.flags(Ordering::Acquire) & RETURNED != 0
    }

    /// The node closed; progress handles become no-ops.
    pub(crate) fn close(&self) {
        self.set_flag(CLOSED, Ordering::SeqCst);
    }

    /// Whether the node closed (a relaxed read: a handle racing with close may land one more
    /// update, which the closed node's final state may or may not include).
    #[inline]
    pub(crate) fn is_closed(&self) -> bool {
        self.flags(Ordering::Relaxed) & CLOSED != 0
    }

    /// Counter updates applied so far.
    pub(crate) fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    #[inline]
    fn flags(&self, order: Ordering) -> u8 {
        (self.started_and_flags.load(order) >> FLAGS_SHIFT) as u8
    }

    #[inline]
    fn set_flag(&self, flag: u8, order: Ordering) {
        self.started_and_flags
            .fetch_or(u64::from(flag) << FLAGS_SHIFT, order);
    }

    /// The span was entered at `at_ns` (a [`BusyClock`] reading; the first of possibly
    /// overlapping enters).
    #[inline]
    pub(crate) fn entered(&self, at_ns: u64) {
        self.busy.fetch_sub(at_ns, Ordering::Relaxed);
    }

    /// First enter at `at_us`; later calls keep the first time. True if this one set it.
    pub(crate) fn start(&self, at_us: u64) -> bool {
        let at = at_us.clamp(1, STARTED);
        let mut now = self.started_and_flags.load(Ordering::Relaxed);
        // Flags set meanwhile change the word: try again, unless it started meanwhile.
        while now & STARTED == 0 {
            match self.started_and_flags.compare_exchange_weak(
                now,
                now | at,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => now = seen,
            }
        }
        false
    }

    /// Whether the node was entered (a relaxed load).
    #[inline]
    pub(crate) fn is_started(&self) -> bool {
        self.started_and_flags.load(Ordering::Relaxed) & STARTED != 0
    }

    /// When the node was first entered (µs since the Unix epoch), if it was.
    pub(crate) fn started_us(&self) -> Option<u64> {
        let at = self.started_and_flags.load(Ordering::SeqCst) & STARTED;
        (at != 0).then_some(at)
    }

    /// The span was exited at `at_ns` (a [`BusyClock`] reading; the last of overlapping
    /// enters).
    #[inline]
    pub(crate) fn exited(&self, at_ns: u64) {
        self.busy.fetch_add(at_ns, Ordering::Relaxed);
    }

    /// Time entered up to `now_ns` (a [`BusyClock`] reading), the open stretch included.
    /// `now_ns` must be read after the stretch began (see [`LiveCounters::busy_us_with`]): an
    /// earlier one takes the difference off the closed stretches (never below 0). An exit
    /// stamped before its enter reads 0, never a wrapped value; so would a reading between a
    /// second enter's subtraction and the first one's exit, which the layer rules out (both
    /// happen under the span's table lock, with the count of enters).
    pub(crate) fn busy_ns_at(&self, now_ns: u64) -> u64 {
        self.busy_ns_with(|| now_ns)
    }

    fn busy_ns_with(&self, now_ns: impl FnOnce() -> u64) -> u64 {
        let busy = self.busy.load(Ordering::Relaxed);
        match busy as i64 {
            0.. => busy,
            v if v > -OPEN_BELOW => 0,
            _ => (busy.wrapping_add(now_ns()) as i64).max(0) as u64,
        }
    }

    /// Time entered up to `now_us` (µs since the Unix epoch), the open stretch included.
    #[cfg(test)]
    pub(crate) fn busy_us(&self, now_us: u64) -> u64 {
        self.busy_us_with(|| now_us)
    }

    /// [`LiveCounters::busy_us`] with the time read only for an open stretch, and after the
    /// counter (so the stretch began before it): a snapshot's instant is taken once, and a
    /// span entered while the walk runs would otherwise read its closed stretches short.
    pub(crate) fn busy_us_with(&self, now_us: impl FnOnce() -> u64) -> u64 {
        self.busy_ns_with(|| BusyClock::at_unix_ns(now_us().saturating_mul(1_000))) / 1_000
    }

    /// The time entered in all, once the span closed (ns).
    pub(crate) fn set_busy_ns(&self, ns: u64) {
        self.busy.store(ns.min(i64::MAX as u64), Ordering::Relaxed);
    }

    /// Time entered so far, once no stretch is open (ns).
    pub(crate) fn busy_ns(&self) -> u64 {
        self.busy_ns_at(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_from_several_threads_sum_and_set_current_sets() {
        let c = LiveCounters::new();
        assert_eq!(c.current(), None, "nothing counted yet");
        c.inc(3);
        std::thread::scope(|s| {
            s.spawn(|| (0..1_000).for_each(|_| c.inc(2)));
        });
        c.inc(4);
        assert_eq!(c.current(), Some(2_007));
        std::thread::scope(|s| {
            s.spawn(|| c.apply(None, Some(10), 0));
        });
        assert_eq!(c.current(), Some(10));
        c.inc(1);
        assert_eq!(c.current(), Some(11));
        assert_eq!(c.updates(), 1_004);
    }

    #[test]
    fn busy_time_adds_stretches_and_reads_the_open_one() {
        let c = LiveCounters::new();
        let t0 = BusyClock::at_unix_ns(1_780_000_000_000_000_000); // late 2026
        assert_eq!(c.busy_ns_at(t0), 0);
        c.entered(t0);
        assert_eq!(c.busy_ns_at(t0 + 250), 250, "the open stretch");
        assert_eq!(
            c.busy_ns_at(t0 - 5),
            0,
            "read before the enter: nothing, not a wrap"
        );
        c.exited(t0 + 1_000);
        assert_eq!(c.busy_ns_at(t0 + 5_000), 1_000, "closed stretches only");
        c.entered(t0 + 10_000);
        assert_eq!(c.busy_ns_at(t0 + 10_500), 1_500);
        assert_eq!(c.busy_us((1_780_000_000_000_000_000 + 12_000) / 1_000), 3);
        c.exited(t0 + 11_000);
        assert_eq!(c.busy_ns(), 2_000);
        c.set_busy_ns(7);
        assert_eq!(c.busy_ns_at(t0), 7);
    }

    #[test]
    fn an_exit_stamped_before_its_enter_reads_nothing_not_years() {
        // First enter and last exit on two threads whose clocks are a few ns apart; also
        // with a system clock at 1970 (no epoch offset to hide behind).
        for epoch in [0, 1_780_000_000_000_000_000u64] {
            let c = LiveCounters::new();
            let t0 = BusyClock::at_unix_ns(epoch + 1_000);
            c.entered(t0);
            c.exited(t0 - 5);
            assert_eq!(c.busy_ns_at(t0 + 1_000_000), 0);
            assert_eq!(c.busy_ns(), 0);
            c.entered(t0 + 100);
            assert_eq!(
                c.busy_ns_at(t0 + 150),
                45,
                "the 5 ns are lost, nothing else"
            );
            c.exited(t0 + 200);
            assert_eq!(c.busy_ns(), 95);
        }
    }

    #[test]
    fn a_time_read_after_an_enter_keeps_the_closed_stretches() {
        let c = LiveCounters::new();
        let unix = 1_780_000_000_000_000_000u64;
        c.entered(BusyClock::at_unix_ns(unix));
        c.exited(BusyClock::at_unix_ns(unix + 3_000));
        // A snapshot read its instant at +4 µs; the span was entered again at +9 µs.
        c.entered(BusyClock::at_unix_ns(unix + 9_000));
        let snapshot_us = (unix + 4_000) / 1_000;
        assert_eq!(
            c.busy_us(snapshot_us),
            0,
            "the stale instant takes 5 µs off"
        );
        let read_after = (unix + 10_000) / 1_000;
        let mut read = false;
        assert_eq!(
            c.busy_us_with(|| {
                read = true;
                read_after
            }),
            4
        );
        assert!(read, "an open stretch reads the clock");
        c.exited(BusyClock::at_unix_ns(unix + 10_000));
        assert_eq!(c.busy_us_with(|| unreachable!("a closed one does not")), 4);
    }

    #[test]
    fn an_enter_landing_before_an_exit_reads_nothing_until_it_lands() {
        // A reading between a second enter's subtraction and the first one's exit (the layer
        // rules it out: both happen under the span's table lock, with the count of enters).
        let c = LiveCounters::new();
        let t0 = BusyClock::at_unix_ns(1_780_000_000_000_000_000);
        c.entered(t0);
        c.entered(t0 + 10);
        assert_eq!(
            c.busy_ns_at(t0 + 20),
            0,
            "both stretches subtracted: nothing, not a wrap"
        );
        c.exited(t0 + 15);
        assert_eq!(c.busy_ns_at(t0 + 20), 25, "A's 15 ns and B's 10 so far");
        c.exited(t0 + 30);
        assert_eq!(c.busy_ns(), 35);
    }

    #[test]
    fn the_start_and_the_flags_share_a_word_without_losing_either() {
        let c = LiveCounters::new();
        c.saw_cancel_now();
        assert!(!c.is_started());
        assert!(c.start(1_780_000_000_000_000));
        assert!(!c.start(1_780_000_000_000_999), "the first start stays");
        c.close();
        c.set_returned();
        c.inc(2);
        assert_eq!(c.started_us(), Some(1_780_000_000_000_000));
        assert!(c.saw_cancel() && c.is_closed() && c.returned());
        assert_eq!(c.current(), Some(2));
        // Flags set from other threads while the start is being set.
        let c = LiveCounters::new();
        std::thread::scope(|s| {
            s.spawn(|| (0..1_000).for_each(|_| c.inc(1)));
            s.spawn(|| {
                for _ in 0..1_000 {
                    c.saw_cancel_now();
                    c.set_returned();
                }
            });
            assert!(c.start(42));
        });
        assert_eq!(c.started_us(), Some(42));
        assert!(c.saw_cancel() && c.returned() && c.current() == Some(1_000));
    }

    #[test]
    fn counters_fill_one_64_byte_block_with_the_arc() {
        // The figure the RSS per live node is built from (tests/memory.rs measures it).
        assert!(std::mem::size_of::<LiveCounters>() <= 40);
    }

    #[test]
    fn counting_past_the_maximum_pins_it() {
        let c = LiveCounters::new();
        c.apply(None, Some(u64::MAX - 1), 0);
        std::thread::scope(|s| {
            s.spawn(|| c.inc(5));
        });
        assert_eq!(c.current(), Some(u64::MAX));
        c.inc(5);
        assert_eq!(c.current(), Some(u64::MAX));
    }
}
