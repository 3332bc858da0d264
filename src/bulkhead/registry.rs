//! Which partition a call belongs to: declared partitions, bounded per-key partitions, a default.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;

use super::partition::{AdaptiveLimit, Limits, Partition};
use crate::metrics::{PER_KEY, PartitionMetrics};

/// How many slots a key may live in, from its hash on: a lookup reads at most this many.
const PROBE: usize = 8;

/// The partitions of one bulkhead. Lookups take no lock: declared partitions are fixed at build
/// time, and per-key partitions live in a fixed-size table of atomically swapped slots.
///
/// A key lives in one of the [`PROBE`] slots from its hash on, so a lookup reads at most eight
/// slots whatever the table's size (O(1)), without a lock. A new key — under a lock only
/// inserts take — gets the first empty slot there, or else one whose partition is idle (nothing
/// in flight or queued) and *stale*: unused while calls of new keys missed at least as many
/// times as the table has slots. (The table counts misses in generations of one table's worth;
/// a partition remembers the generation of its last use and is stale two generations on.) So a
/// partition in use keeps its slot, and keys that come and go do not evict each other on every
/// call. A key that finds no room shares the default partition — also when free slots are
/// elsewhere in the table, outside its eight: size the table above the keys you expect.
/// Evictions are counted ([`Registry::evicted`]).
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) default: Arc<Partition>,
    named: Box<[Arc<Partition>]>,
    per_key: Option<PerKey>,
}

#[derive(Debug)]
struct PerKey {
    limits: Limits,
    adaptive: Option<AdaptiveLimit>,
    slots: Box<[ArcSwapOption<Partition>]>,
    /// Calls of new keys that found their slots full (no empty, no idle and stale one).
    misses: AtomicU64,
    /// `misses` / the table's size, kept apart so a lookup reads a line written once per
    /// table's worth of misses.
    generation: AtomicU64,
    evicted: AtomicU64,
    /// Inserts and evictions (rare: a key's first call, or a miss) take it, so two never race
    /// for a key or a slot; lookups never do.
    inserting: Mutex<()>,
    /// The instruments every per-key partition records to (feature `metrics`).
    metrics: Arc<PartitionMetrics>,
}

impl Registry {
    pub(crate) fn new(
        default: Limits,
        named: Vec<(String, Limits)>,
        per_key: Option<(usize, Limits)>,
        adaptive: Option<AdaptiveLimit>,
        recorded: bool,
    ) -> Self {
        let metrics = |name: &str| {
            Arc::new(if recorded {
                PartitionMetrics::new(name)
            } else {
                PartitionMetrics::unrecorded()
            })
        };
        Registry {
            default: Arc::new(Partition::new(
                super::DEFAULT_PARTITION.into(),
                default,
                adaptive,
                metrics(super::DEFAULT_PARTITION),
            )),
            named: named
                .into_iter()
                .map(|(name, limits)| {
                    let metrics = metrics(&name);
                    Arc::new(Partition::new(name.into(), limits, adaptive, metrics))
                })
                .collect(),
            per_key: per_key.map(|(max, limits)| PerKey {
                metrics: metrics(PER_KEY),
                limits,
                adaptive,
                slots: (0..max).map(|_| ArcSwapOption::empty()).collect(),
                misses: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
                inserting: Mutex::new(()),
            }),
        }
    }

    /// The partition for `key` (the default when there is no key, or no room for a new one).
    #[inline]
    pub(crate) fn find(&self, key: Option<&str>) -> Arc<Partition> {
        let Some(key) = key else {
            return self.default.clone();
        };
        if let Some(named) = self.named.iter().find(|p| &*p.name == key) {
            return named.clone();
        }
        match &self.per_key {
            Some(per_key) if !per_key.slots.is_empty() => per_key.find(key, &self.default),
            _ => self.default.clone(),
        }
    }

    /// Per-key partitions evicted to make room for new keys, since the bulkhead was built.
    pub(crate) fn evicted(&self) -> u64 {
        self.per_key
            .as_ref()
            .map_or(0, |p| p.evicted.load(Ordering::Relaxed))
    }

    /// Every partition that exists now.
    pub(crate) fn all(&self) -> Vec<Arc<Partition>> {
        let mut all = vec![self.default.clone()];
        all.extend(self.named.iter().cloned());
        if let Some(per_key) = &self.per_key {
            all.extend(per_key.slots.iter().filter_map(|slot| slot.load_full()));
        }
        all
    }
}

impl PerKey {
    /// The slots `key` may live in, from its hash on.
    fn window(&self, key: &str) -> impl Iterator<Item = usize> + use<> {
        let len = self.slots.len();
        let start = fnv1a(key.as_bytes()) as usize % len;
        (0..PROBE.min(len)).map(move |step| (start + step) % len)
    }

    fn find(&self, key: &str, default: &Arc<Partition>) -> Arc<Partition> {
        let now = self.generation.load(Ordering::Relaxed);
        // The lookup: lock-free, at most eight slots.
        for i in self.window(key) {
            if let Some(partition) = &*self.slots[i].load()
                && &*partition.name == key
            {
                partition.mark_used(now);
                return Arc::clone(partition);
            }
        }
        self.insert(key, default)
    }

    /// A key's first call, or one that found no room: under the insert lock, look again (another
    /// call may have just put the key in), then take an empty slot of the window, or evict an
    /// idle, stale partition.
    #[cold]
    fn insert(&self, key: &str, default: &Arc<Partition>) -> Arc<Partition> {
        let _inserting = self
            .inserting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.generation.load(Ordering::Relaxed);
        let mut room = None;
        for i in self.window(key) {
            match &*self.slots[i].load() {
                Some(partition) if &*partition.name == key => {
                    partition.mark_used(now);
                    return Arc::clone(partition);
                }
                None if room.is_none() => room = Some(i),
                Some(partition)
                    if room.is_none() && partition.stale_at(now) && partition.is_idle() =>
                {
                    room = Some(i);
                }
                _ => {}
            }
        }
        let Some(i) = room else {
            // No room: the default partition, and one more miss.
            let misses = self.misses.fetch_add(1, Ordering::Relaxed) + 1;
            let generation = misses / self.slots.len() as u64;
            if generation != now {
                self.generation.store(generation, Ordering::Relaxed);
            }
            return default.clone();
        };
        let partition = Arc::new(Partition::new(
            key.into(),
            self.limits,
            self.adaptive,
            self.metrics.clone(),
        ));
        partition.mark_used(now);
        let evicted = self.slots[i].swap(Some(partition.clone()));
        if let Some(evicted) = evicted {
            // A lookup may have taken the evicted partition just before the swap: put it back
            // if it is in use now, and let this key share the default partition this time.
            if !evicted.is_idle() || !evicted.stale_at(now) {
                self.slots[i].store(Some(evicted));
                return default.clone();
            }
            self.evicted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(partition = %evicted.name, "idle bulkhead partition evicted for a new key");
        }
        partition
    }
}

/// FNV-1a: a fast, fixed hash for short keys (the table is bounded, so collisions only cost
/// probes).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(max: usize) -> Registry {
        Registry::new(
            Limits::default(),
            vec![("health".into(), Limits::default())],
            Some((max, Limits::default())),
            None,
            true,
        )
    }

    fn names(r: &Registry) -> Vec<String> {
        r.all().iter().map(|p| p.name.to_string()).collect()
    }

    #[test]
    fn keys_find_their_partition_and_the_table_is_bounded() {
        let r = registry(4);
        assert_eq!(&*r.find(None).name, "default");
        assert_eq!(&*r.find(Some("health")).name, "health");
        for i in 0..4 {
            let key = format!("tenant-{i}");
            let p = r.find(Some(&key));
            assert_eq!(&*p.name, key);
            // Found again, the same partition.
            assert!(Arc::ptr_eq(&p, &r.find(Some(&key))));
        }
        // Full: new keys share the default partition — until two tables' worth of them (8)
        // found no room while the four sat unused: then a new key takes a stale one's slot.
        for i in 0..8 {
            assert_eq!(&*r.find(Some(&format!("miss-{i}"))).name, "default", "{i}");
        }
        assert_eq!(r.evicted(), 0);
        assert_eq!(&*r.find(Some("tenant-5")).name, "tenant-5");
        assert_eq!(r.evicted(), 1);
        // Never more partitions than the table's slots (plus the default and the declared).
        for i in 0..1000 {
            r.find(Some(&format!("flood-{i}")));
            assert!(r.all().len() <= 1 + 1 + 4);
        }
    }

    /// A partition with a call in flight, or used since the table last filled, keeps its slot
    /// through a flood of new keys; the rest make room.
    #[test]
    fn busy_and_recently_used_partitions_keep_their_slots() {
        let r = registry(8);
        let busy = r.find(Some("busy"));
        assert!(busy.try_acquire().is_some());
        let regular = r.find(Some("regular"));
        // "regular" is used once every four new keys (half the table's size).
        for i in 0..10_000 {
            r.find(Some(&format!("flood-{i}")));
            if i % 4 == 0 {
                assert!(Arc::ptr_eq(&regular, &r.find(Some("regular"))), "round {i}");
            }
        }
        assert!(Arc::ptr_eq(&busy, &r.find(Some("busy"))));
        assert!(Arc::ptr_eq(&regular, &r.find(Some("regular"))));
        assert!(r.evicted() > 0);
        busy.release();
    }

    #[test]
    fn concurrent_inserts_never_duplicate_a_key() {
        let r = registry(64);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..32 {
                        r.find(Some(&format!("k{i}")));
                    }
                });
            }
        });
        let mut names = names(&r);
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(count, 1 + 1 + 32);
    }
}
