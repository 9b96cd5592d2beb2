//! Which spans the layer tracks and their per-span state: a side table keyed by span id,
//! instead of the registry's extensions.
//!
//! Extensions cost a registry lookup (slab reference count), a lock and a `TypeId` map per
//! access, and the map itself is a heap block per span. The table is a fixed number of
//! shards, each a small lock around a hash map of [`SpanEntry`] values stored inline: one
//! atomic and a probe per access, no allocation per span beyond the map's slot. Each layer
//! has its own table, so two progress layers in one subscriber never see each other's
//! entries. Entries go at `on_close`, before the registry can reuse the id, and a shard's map
//! shrinks when most of its spans closed: memory follows the live spans.
//!
//! Only short work happens under a shard lock (atomics, copying a few words out, with
//! exporters their throttle check and its clock read): never the operation's lock, which a
//! snapshot may hold for milliseconds, never a call out to exporters, never a `tracing` call.
//! Code that needs the tree takes a copy out first. So the lock is a spin lock (one atomic to
//! take, a plain store to release; a waiter yields its thread after a few spins): holders
//! never wait for anything.
//!
//! In front of the maps sits a counting filter of tracked ids: enter/exit/close of a span the
//! layer does not track cost one relaxed load and no lock. Each filter bucket belongs to one
//! shard and changes only under its lock, so keeping it costs no atomic read-modify-write.

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tracing_core::span::Id;

use super::tracked::SpanEntry;

/// 64 shards: threads working on different spans rarely share one.
const SHARD_BITS: u32 = 6;

/// 4,096 filter buckets (16 KiB per layer), 64 per shard: with a few dozen tracked spans
/// open, about 1 % of untracked spans share a bucket with one.
const BUCKET_BITS: u32 = 12;

/// Fibonacci hashing: registry ids are slab indices, dense in their low bits. A bucket's
/// shard is its top bits, so each bucket belongs to exactly one shard.
#[inline]
fn fib(id: u64, bits: u32) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

type Map = HashMap<u64, SpanEntry, BuildHasherDefault<IdHasher>>;

// Entries move between threads with the map (see `unsafe impl Sync for Shard`).
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Map>();
};

/// The per-span state of one layer, by span id.
/// Shards and filter inline (24 KiB), so the filter is one pointer away from the layer.
pub(crate) struct SpanTable {
    shards: [Shard; 1 << SHARD_BITS],
    /// Tracked spans per bucket of ids; 0 means "certainly not tracked". Written only under
    /// the lock of the bucket's shard.
    buckets: [AtomicU32; 1 << BUCKET_BITS],
    /// When its layer joined a dispatcher, process-wide (0 until then): the extension trait
    /// takes a dispatcher's layers in this order.
    order: AtomicU64,
}

/// One shard on its own cache lines (no false sharing between neighbours).
#[repr(align(128))]
struct Shard {
    locked: AtomicBool,
    map: UnsafeCell<Map>,
}

// SAFETY: `map` is only reached through a `Guard`, which exists only while `locked` is held
// by its thread (see `Shard::lock`), so no two threads touch the map at once. The entries are
// `Send + Sync` themselves.
unsafe impl Sync for Shard {}

/// The shard's map while its lock is held.
struct Guard<'a>(&'a Shard);

impl Shard {
    #[inline]
    fn lock(&self) -> Guard<'_> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
        Guard(self)
    }

    #[cold]
    fn lock_slow(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                // A holder preempted mid-section: let it run instead of burning the core.
                if spins < 100 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

impl Deref for Guard<'_> {
    type Target = Map;

    fn deref(&self) -> &Map {
        // SAFETY: the guard holds the shard's lock (see `unsafe impl Sync for Shard`).
        unsafe { &*self.0.map.get() }
    }
}

impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Map {
        // SAFETY: as above; `&mut self` makes this the only reference through the guard.
        unsafe { &mut *self.0.map.get() }
    }
}

impl Drop for Guard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
    }
}

/// Hashes a span id for the map inside a shard. Unlike the shard choice (the top bits of a
/// Fibonacci hash, the same for every id in a shard) its top bits vary, which the map's
/// probe bytes need.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b) ^ self.0.rotate_left(8));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        // splitmix64's finalizer.
        let mut z = x ^ (x >> 30);
        z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^= z >> 27;
        z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = z ^ (z >> 31);
    }
}

impl SpanTable {
    pub(crate) fn new() -> Self {
        SpanTable {
            shards: std::array::from_fn(|_| Shard {
                locked: AtomicBool::new(false),
                map: UnsafeCell::new(Map::default()),
            }),
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            order: AtomicU64::new(0),
        }
    }

    /// Its layer joined a dispatcher: numbered once, in the order layers join.
    pub(crate) fn registered(&self) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        if self.order.load(Ordering::Relaxed) == 0 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let _ = self
                .order
                .compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// See [`registered`](Self::registered); `u64::MAX` before.
    pub(crate) fn order(&self) -> u64 {
        match self.order.load(Ordering::Relaxed) {
            0 => u64::MAX,
            n => n,
        }
    }

    /// The id's filter bucket and its shard. A zero bucket: span `id` certainly has no entry
    /// (a span's creation happened before any use of its id on another thread, so a relaxed
    /// read sees its insert).
    #[inline]
    fn place(&self, id: &Id) -> (&AtomicU32, &Shard) {
        let b = fib(id.into_u64(), BUCKET_BITS);
        (
            &self.buckets[b],
            &self.shards[b >> (BUCKET_BITS - SHARD_BITS)],
        )
    }

    /// False if span `id` certainly has no entry (one relaxed load, no lock).
    #[inline]
    pub(crate) fn may_hold(&self, id: &Id) -> bool {
        self.place(id).0.load(Ordering::Relaxed) != 0
    }

    /// Keeps `entry` as the state of span `id` (replacing a stale one, which cannot normally
    /// exist: entries go when their span closes).
    pub(crate) fn insert(&self, id: &Id, entry: SpanEntry) {
        let (bucket, shard) = self.place(id);
        let mut map = shard.lock();
        let old = map.insert(id.into_u64(), entry);
        if old.is_none() {
            // Under the shard's lock: a plain store is enough.
            let n = bucket.load(Ordering::Relaxed);
            bucket.store(n.saturating_add(1), Ordering::Relaxed);
        }
        drop(map);
        // Dropped outside the lock: it releases node handles.
        drop(old);
    }

    /// Takes the state of span `id` out; the map shrinks once most of its slots are free.
    pub(crate) fn remove(&self, id: &Id) -> Option<SpanEntry> {
        let (bucket, shard) = self.place(id);
        if bucket.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut map = shard.lock();
        let entry = map.remove(&id.into_u64());
        if entry.is_some() {
            let n = bucket.load(Ordering::Relaxed);
            bucket.store(n.saturating_sub(1), Ordering::Relaxed);
            let (len, cap) = (map.len(), map.capacity());
            // A quarter full: halve (amortized O(1): it takes many removes to get here again).
            if cap > 64 && len < cap / 4 {
                map.shrink_to(len * 2);
            }
        }
        drop(map);
        entry
    }

    /// Runs `f` on the state of span `id`, under its shard's lock: keep it short (no tree
    /// lock, no exporter, no `tracing` call).
    #[inline]
    pub(crate) fn with<R>(&self, id: &Id, f: impl FnOnce(&SpanEntry) -> R) -> Option<R> {
        let (bucket, shard) = self.place(id);
        if bucket.load(Ordering::Relaxed) == 0 {
            return None;
        }
        shard.lock().get(&id.into_u64()).map(f)
    }

    /// Whether span `id` has an entry.
    #[inline]
    pub(crate) fn contains(&self, id: &Id) -> bool {
        self.with(id, |_| ()).is_some()
    }

    /// Entries held now and slots allocated for them, all shards together (tests).
    #[cfg(test)]
    pub(crate) fn usage(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(n, cap), s| {
            let map = s.lock();
            (n + map.len(), cap + map.capacity())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn an_entry_stays_within_its_layout_budget() {
        // With its key an entry fills 64 of a bucket's bytes: part of the RSS per live node
        // (tests/memory.rs measures the whole).
        let size = std::mem::size_of::<SpanEntry>();
        assert!(size <= 56, "SpanEntry is {size} bytes");
    }

    #[test]
    fn entries_go_when_spans_close_and_the_table_shrinks() {
        let (layer, _store) = crate::layer::<tracing_subscriber::Registry>();
        let table = layer.shared.spans.clone();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let root = tracing::info_span!("root", progress.level = "root");
            let block = || tracing::info_span!("block", progress.level = "block");
            let untracked: Vec<_> = (0..1_000).map(|_| tracing::info_span!("helper")).collect();
            let live: Vec<_> = (0..20_000).map(|_| root.in_scope(block)).collect();
            let (n, grown) = table.usage();
            assert_eq!(
                n, 20_001,
                "one entry per tracked span, none for untracked ones"
            );
            drop(live);
            let (n, shrunk) = table.usage();
            assert_eq!(n, 1);
            assert!(
                shrunk * 4 < grown,
                "{grown} slots, {shrunk} after the spans closed"
            );
            // Ids the registry reuses get fresh entries.
            let again: Vec<_> = (0..100).map(|_| root.in_scope(block)).collect();
            assert_eq!(table.usage().0, 101);
            drop((again, untracked));
        });
        assert_eq!(table.usage().0, 0, "every entry went with its span");
    }

    #[test]
    fn id_hash_spreads_ids_of_one_shard() {
        // The map's probe bytes are the hash's top 7 bits: ids of one shard must not share them.
        let tops: std::collections::HashSet<u64> = (1..=100_000u64)
            .filter(|&id| fib(id, SHARD_BITS) == 0)
            .map(|id| {
                let mut h = IdHasher::default();
                h.write_u64(id);
                h.finish() >> 57
            })
            .collect();
        assert!(tops.len() > 100, "only {} distinct probe bytes", tops.len());
    }
}
