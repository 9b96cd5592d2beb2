//! A node's counters, shared by the tree and the span so progress updates take no lock.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A node's counters and entered time.
///
/// SeqCst on purpose: subscribers clear an operation's `dirty` flag and then snapshot; an
/// update that saw `dirty` still set must be visible to that snapshot (see
/// `OperationCell::mark_changed`).
#[derive(Default)]
pub(crate) struct LiveCounters {
    current: AtomicU64,
    /// `NO_TOTAL` until set.
    total: AtomicU64,
    explicit: AtomicBool,
    /// Set when `is_cancelled()` answered true for this node.
    saw_cancel: AtomicBool,
    updates: AtomicU64,
    /// Time entered so far (ns), for snapshots of running spans; the span adds to it on exit.
    busy_ns: AtomicU64,
    /// When the span was last entered (µs since the Unix epoch), 0 while not entered.
    entered_at_us: AtomicU64,
}

const NO_TOTAL: u64 = u64::MAX;

impl LiveCounters {
    pub(crate) fn new() -> Self {
        LiveCounters {
            total: AtomicU64::new(NO_TOTAL),
            ..Default::default()
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
            changed = true;
        }
        if inc > 0 {
            let _ = self
                .current
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| {
                    Some(c.saturating_add(inc))
                });
            changed = true;
        }
        if changed {
            if !self.explicit.load(Ordering::Relaxed) && (current.is_some() || inc > 0) {
                self.explicit.store(true, Ordering::SeqCst);
            }
            self.updates.fetch_add(1, Ordering::Relaxed);
        }
        changed
    }

    pub(crate) fn current(&self) -> Option<u64> {
        self.explicit
            .load(Ordering::SeqCst)
            .then(|| self.current.load(Ordering::SeqCst))
    }

    pub(crate) fn total(&self) -> Option<u64> {
        let t = self.total.load(Ordering::SeqCst);
        (t != NO_TOTAL).then_some(t)
    }

    /// The node saw its operation's cancel request.
    pub(crate) fn saw_cancel_now(&self) {
        self.saw_cancel.store(true, Ordering::Relaxed);
    }

    pub(crate) fn saw_cancel(&self) -> bool {
        self.saw_cancel.load(Ordering::Relaxed)
    }

    /// Counter updates applied so far.
    pub(crate) fn updates(&self) -> u64 {
        self.updates.load(Ordering::Relaxed)
    }

    /// The span was entered at `at_us` (first of possibly overlapping enters).
    pub(crate) fn entered(&self, at_us: u64) {
        self.entered_at_us.store(at_us.max(1), Ordering::Relaxed);
    }

    /// The span was exited after being entered for `ns`.
    pub(crate) fn exited(&self, ns: u64) {
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        self.entered_at_us.store(0, Ordering::Relaxed);
    }

    /// Time entered up to `now_us`, including the current stretch (µs).
    pub(crate) fn busy_us(&self, now_us: u64) -> u64 {
        let entered_at = self.entered_at_us.load(Ordering::Relaxed);
        let current = if entered_at == 0 {
            0
        } else {
            now_us.saturating_sub(entered_at)
        };
        self.busy_ns.load(Ordering::Relaxed) / 1_000 + current
    }

    /// Time entered so far, not counting a stretch still open (ns).
    pub(crate) fn busy_ns(&self) -> u64 {
        self.busy_ns.load(Ordering::Relaxed)
    }
}
