//! Which spans the layer tracks and their per-span state: a side table keyed by span id,
//! instead of the registry's extensions.
//!
//! Extensions cost a registry lookup (slab reference count), a lock and a `TypeId` map per
//! access, and the map itself is a heap block per span. The table is a fixed number of
//! shards, each a small mutex around a hash map of [`SpanEntry`] values stored inline: one
//! uncontended lock and a probe per access, no allocation per span beyond the map's slot.
//! Each layer has its own table, so two progress layers in one subscriber never see each
//! other's entries. Entries go at `on_close`, before the registry can reuse the id, and a
//! shard's map shrinks when most of its spans closed: memory follows the live spans.
//!
//! Only short work happens under a shard lock (atomics, a clock read, copying a few words
//! out): never the operation's lock, which a snapshot may hold for milliseconds, and never a
//! call out to exporters. Code that needs the tree takes a [`Tracked`] clone out first.
//!
//! In front of the table sits [`TrackedIds`], a counting filter: enter/exit/close of a span
//! the layer does not track cost one relaxed load and no lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;
use tracing_core::span::Id;

use super::tracked::SpanEntry;

/// 64 shards: threads working on different spans rarely share one.
const SHARD_BITS: u32 = 6;

/// Fibonacci hashing: registry ids are slab indices, dense in their low bits.
#[inline]
fn fib(id: u64, bits: u32) -> usize {
    (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

/// The per-span state of one layer, by span id.
pub(crate) struct SpanTable {
    shards: Box<[Shard]>,
}

/// One shard on its own cache lines (no false sharing between neighbours).
#[repr(align(128))]
struct Shard(Mutex<HashMap<u64, SpanEntry, BuildHasherDefault<IdHasher>>>);

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
            shards: (0..1usize << SHARD_BITS)
                .map(|_| Shard(Mutex::new(HashMap::default())))
                .collect(),
        }
    }

    #[inline]
    fn shard(&self, id: &Id) -> &Mutex<HashMap<u64, SpanEntry, BuildHasherDefault<IdHasher>>> {
        &self.shards[fib(id.into_u64(), SHARD_BITS)].0
    }

    /// Keeps `entry` as the state of span `id` (replacing a stale one, which cannot normally
    /// exist: entries go when their span closes).
    pub(crate) fn insert(&self, id: &Id, entry: SpanEntry) {
        let old = self.shard(id).lock().insert(id.into_u64(), entry);
        // Dropped outside the lock: it releases node handles.
        drop(old);
    }

    /// Takes the state of span `id` out; the map shrinks once most of its slots are free.
    pub(crate) fn remove(&self, id: &Id) -> Option<SpanEntry> {
        let mut map = self.shard(id).lock();
        let entry = map.remove(&id.into_u64());
        let (len, cap) = (map.len(), map.capacity());
        // A quarter full: halve (amortized O(1): it takes many removes to get here again).
        if cap > 64 && len < cap / 4 {
            map.shrink_to(len * 2);
        }
        drop(map);
        entry
    }

    /// Runs `f` on the state of span `id`, under its shard's lock: keep it short (no tree
    /// lock, no exporter, no `tracing` call).
    #[inline]
    pub(crate) fn with<R>(&self, id: &Id, f: impl FnOnce(&SpanEntry) -> R) -> Option<R> {
        self.shard(id).lock().get(&id.into_u64()).map(f)
    }

    /// Whether span `id` has an entry.
    #[inline]
    pub(crate) fn contains(&self, id: &Id) -> bool {
        self.shard(id).lock().contains_key(&id.into_u64())
    }

    /// Entries held now (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    /// Slots allocated now, all shards together (tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().capacity()).sum()
    }
}

/// Which span ids may be tracked: a counting filter over span ids, so enter/exit/close of a
/// span the layer does not track costs one relaxed load instead of a table lookup. A zero
/// bucket means "certainly not tracked"; a non-zero one is looked up (ids sharing a bucket
/// with a tracked span only pay the lookup). Bounded: a fixed table whatever the number of
/// spans.
pub(crate) struct TrackedIds {
    buckets: Box<[AtomicU32]>,
}

/// 4,096 buckets (16 KiB per layer): with a few dozen tracked spans open, about 1 % of
/// untracked spans share a bucket with one.
const BUCKET_BITS: u32 = 12;

impl TrackedIds {
    pub(crate) fn new() -> Self {
        TrackedIds {
            buckets: (0..1usize << BUCKET_BITS)
                .map(|_| AtomicU32::new(0))
                .collect(),
        }
    }

    #[inline]
    fn bucket(&self, id: &Id) -> &AtomicU32 {
        &self.buckets[fib(id.into_u64(), BUCKET_BITS)]
    }

    /// A span with this id is tracked from now on, until [`remove`](Self::remove).
    pub(crate) fn insert(&self, id: &Id) {
        self.bucket(id).fetch_add(1, Ordering::Relaxed);
    }

    /// The tracked span with this id closed.
    pub(crate) fn remove(&self, id: &Id) {
        let b = self.bucket(id);
        // Never below zero, even if called without a matching insert.
        let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// False if no span with this id is tracked; true if one may be. The span's creation
    /// happened before any use of its id on another thread, so a relaxed read sees its insert.
    #[inline]
    pub(crate) fn may_contain(&self, id: &Id) -> bool {
        self.bucket(id).load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracked_ids_never_forget_a_tracked_span() {
        let ids = TrackedIds::new();
        let all: Vec<Id> = (1..=20_000).map(Id::from_u64).collect();
        for id in all.iter().step_by(3) {
            ids.insert(id);
        }
        // No false negatives; and with 6,667 tracked in 4,096 buckets some are still free.
        assert!(all.iter().step_by(3).all(|id| ids.may_contain(id)));
        assert!(all.iter().any(|id| !ids.may_contain(id)));
        for id in all.iter().step_by(3) {
            ids.remove(id);
        }
        assert!(all.iter().all(|id| !ids.may_contain(id)));
        // A remove without an insert does not wrap the bucket around.
        ids.remove(&all[0]);
        assert!(!ids.may_contain(&all[0]));
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
