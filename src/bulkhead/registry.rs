//! Which partition a call belongs to: declared partitions, bounded per-key partitions, a default.

use std::sync::{Arc, OnceLock};

use super::partition::{AdaptiveLimit, Limits, Partition};

/// The partitions of one bulkhead. Lookups take no lock: declared partitions are fixed at build
/// time, and per-key partitions live in a fixed-size table whose slots are filled once
/// (`OnceLock`), so a flood of distinct keys fills the table and then shares the default.
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
    slots: Box<[OnceLock<Arc<Partition>>]>,
}

impl Registry {
    pub(crate) fn new(
        default: Limits,
        named: Vec<(String, Limits)>,
        per_key: Option<(usize, Limits)>,
        adaptive: Option<AdaptiveLimit>,
    ) -> Self {
        Registry {
            default: Arc::new(Partition::new("default".into(), default, adaptive)),
            named: named
                .into_iter()
                .map(|(name, limits)| Arc::new(Partition::new(name.into(), limits, adaptive)))
                .collect(),
            per_key: per_key.map(|(max, limits)| PerKey {
                limits,
                adaptive,
                slots: (0..max).map(|_| OnceLock::new()).collect(),
            }),
        }
    }

    /// The partition for `key` (the default when there is no key, or no room for a new one).
    #[inline]
    pub(crate) fn find(&self, key: Option<&str>) -> &Arc<Partition> {
        let Some(key) = key else {
            return &self.default;
        };
        if let Some(named) = self.named.iter().find(|p| &*p.name == key) {
            return named;
        }
        let Some(per_key) = &self.per_key else {
            return &self.default;
        };
        let len = per_key.slots.len();
        if len == 0 {
            return &self.default;
        }
        let start = fnv1a(key.as_bytes()) as usize % len;
        for step in 0..len {
            let slot = &per_key.slots[(start + step) % len];
            // Slots fill in probe order and never change, so the first slot holding `key` (or
            // the first empty one, where it is inserted) is the same for every thread.
            let partition = slot.get_or_init(|| {
                Arc::new(Partition::new(key.into(), per_key.limits, per_key.adaptive))
            });
            if &*partition.name == key {
                return partition;
            }
        }
        &self.default
    }

    /// Every partition that exists now.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<Partition>> {
        std::iter::once(&self.default)
            .chain(self.named.iter())
            .chain(
                self.per_key
                    .iter()
                    .flat_map(|p| p.slots.iter().filter_map(OnceLock::get)),
            )
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
        )
    }

    #[test]
    fn keys_find_their_partition_and_the_table_is_bounded() {
        let r = registry(4);
        assert_eq!(&*r.find(None).name, "default");
        assert_eq!(&*r.find(Some("health")).name, "health");
        let tenants: Vec<String> = (0..100).map(|i| format!("tenant-{i}")).collect();
        let mut own = 0;
        for tenant in &tenants {
            let p = r.find(Some(tenant));
            if &*p.name == tenant.as_str() {
                own += 1;
                // Found again, the same partition.
                assert!(Arc::ptr_eq(p, r.find(Some(tenant))));
            } else {
                assert_eq!(&*p.name, "default");
            }
        }
        assert_eq!(own, 4);
        assert_eq!(r.all().count(), 1 + 1 + 4);
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
        let mut names: Vec<String> = r.all().map(|p| p.name.to_string()).collect();
        let count = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), count);
        assert_eq!(count, 1 + 1 + 32);
    }
}
