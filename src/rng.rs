//! Random draws for jitter (retry backoff, breaker open durations, pool lifetimes) and the
//! least-request pick, from `rand`'s small fast generator (`SmallRng`, xoshiro256++).
//!
//! Unseeded — every production path — each thread draws from its own generator, seeded once
//! from the operating system, so no draw touches memory another thread writes. Seeded (tests,
//! simulations, `--seed` in the examples), clones share one exact sequence: draw number `n` of
//! seed `s` is the first output of a xoshiro256++ generator (`rand`'s `Xoshiro256PlusPlus`,
//! which — unlike `SmallRng` — is the same algorithm on every platform and release) seeded with
//! `s + n·γ` — a counter, lock-free and the same whatever thread draws, so a seeded run repeats
//! exactly when its draws happen in the same order. Neither needs cryptographic quality.

use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::rngs::{SmallRng, SysRng, Xoshiro256PlusPlus};
use rand::{Rng, SeedableRng};

/// The golden-ratio increment (SplitMix64's γ): spreads consecutive draw numbers over the seeds.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

thread_local! {
    static THREAD_RNG: RefCell<SmallRng> = RefCell::new(from_os());
}

/// A generator seeded by the OS; if the OS source fails, from the standard library's
/// per-process random hasher keys (never a panic).
fn from_os() -> SmallRng {
    SmallRng::try_from_rng(&mut SysRng).unwrap_or_else(|_| {
        let seed =
            std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id());
        SmallRng::seed_from_u64(seed)
    })
}

/// A source of random draws: the thread's generator, or a seeded sequence shared by clones.
#[derive(Debug, Clone, Default)]
pub(crate) struct Jitter {
    seeded: Option<Arc<Seeded>>,
}

#[derive(Debug)]
struct Seeded {
    seed: u64,
    draws: AtomicU64,
}

impl Jitter {
    /// Draws from the calling thread's generator.
    pub(crate) fn new() -> Self {
        Jitter::default()
    }

    /// An exact sequence from `seed`, shared by every clone made from it.
    pub(crate) fn seeded(seed: u64) -> Self {
        Jitter {
            seeded: Some(Arc::new(Seeded {
                seed,
                draws: AtomicU64::new(0),
            })),
        }
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        match &self.seeded {
            None => THREAD_RNG.with(|rng| rng.borrow_mut().next_u64()),
            Some(seeded) => {
                let n = seeded.draws.fetch_add(1, Ordering::Relaxed);
                Xoshiro256PlusPlus::seed_from_u64(seeded.seed.wrapping_add(n.wrapping_mul(GAMMA)))
                    .next_u64()
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sequences_repeat_and_clones_share_them() {
        let draw = |j: &Jitter| (0..8).map(|_| j.next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(&Jitter::seeded(7)), draw(&Jitter::seeded(7)));
        assert_ne!(draw(&Jitter::seeded(7)), draw(&Jitter::seeded(8)));
        // Clones continue one sequence: interleaved draws are the sequence itself.
        let a = Jitter::seeded(7);
        let b = a.clone();
        let interleaved: Vec<u64> = (0..4).flat_map(|_| [a.next_u64(), b.next_u64()]).collect();
        assert_eq!(interleaved, draw(&Jitter::seeded(7)));
    }

    #[test]
    fn unseeded_draws_differ_and_stay_in_range() {
        let j = Jitter::new();
        let draws: Vec<u64> = (0..16).map(|_| j.next_u64()).collect();
        let mut distinct = draws.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), draws.len());
        let (low, high) = (Duration::from_millis(5), Duration::from_millis(9));
        for _ in 0..1000 {
            let d = j.between(low, high);
            assert!(low <= d && d <= high, "{d:?}");
        }
        assert_eq!(j.between(high, low), high);
    }
}
