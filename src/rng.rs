//! A small, lock-free, seedable random sequence shared by clones: SplitMix64 (Steele, Lea and
//! Flood, "Fast splittable pseudorandom number generators", 2014) over one atomic counter. Used
//! for jitter (retry backoff, breaker open durations), where speed and exact tests matter and
//! cryptographic quality does not.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A shared random sequence; clones draw from the same sequence.
#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    state: Arc<AtomicU64>,
}

impl Jitter {
    /// A sequence seeded from the standard library's per-process random hasher keys.
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let seed = std::collections::hash_map::RandomState::new()
            .hash_one(COUNTER.fetch_add(1, Ordering::Relaxed));
        Jitter {
            state: Arc::new(AtomicU64::new(seed)),
        }
    }

    /// Restarts the sequence from `seed` (for every clone).
    pub(crate) fn seed(&self, seed: u64) {
        self.state.store(seed, Ordering::Relaxed);
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in `[low, high]` (`low` when `high < low`).
    pub(crate) fn between(&self, low: Duration, high: Duration) -> Duration {
        let span = high
            .saturating_sub(low)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64;
        let draw = ((u128::from(span) + 1) * u128::from(self.next_u64())) >> 64;
        low + Duration::from_nanos(draw as u64)
    }
}
