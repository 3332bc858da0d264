//! Backoff between attempts, with jitter so that clients that failed together do not retry
//! together.
//!
//! - **Full jitter** (the default, gRPC A6's formula): the n-th retry waits
//!   `random(0, min(cap, base · 2ⁿ))`.
//! - **Decorrelated jitter** (from AWS's "Exponential Backoff and Jitter"): each wait is
//!   `min(cap, random(base, previous · 3))`, starting from `previous = base`.
//!
//! The random numbers come from `rand`'s `SmallRng`, one per thread (`crate::rng`): no draw
//! touches shared memory; a seeded backoff draws an exact sequence instead, for tests.

use std::time::Duration;

use crate::error::{ConfigError, check_duration};
use crate::rng;

/// The default base delay: 50 ms.
pub const DEFAULT_BASE: Duration = Duration::from_millis(50);
/// The longest base or cap a backoff accepts: 1 h.
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// How the delay is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Jitter {
    /// `random(0, min(cap, base · 2ⁿ))` — gRPC A6.
    Full,
    /// `min(cap, random(base, previous · 3))` — decorrelated jitter.
    Decorrelated,
}

/// Exponential backoff with jitter. Clones share one random sequence.
///
/// ```
/// use std::time::Duration;
/// use stanchion::retry::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500))
///     .unwrap()
///     .seed(7);
/// for retry in 0..10 {
///     let ceiling = Duration::from_millis(500).min(Duration::from_millis(50) * 2u32.pow(retry));
///     assert!(backoff.delay(retry, None) <= ceiling);
/// }
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    /// Growth per retry of full jitter's ceiling (2 unless set).
    multiplier: f64,
    rng: rng::Jitter,
}

/// The largest [`Backoff::multiplier`] accepted.
const MAX_MULTIPLIER: f64 = 1000.0;

impl Backoff {
    /// Full-jitter backoff from `base` (in (0, 1 h]) up to `cap` (at least `base`, at most 1 h).
    pub fn new(base: Duration, cap: Duration) -> Result<Self, ConfigError> {
        let base = check_duration("backoff base", base, MAX_DELAY)?;
        let cap = check_duration("backoff cap", cap, MAX_DELAY)?;
        if cap < base {
            return Err(ConfigError::new(
                "backoff cap",
                format!("{cap:?} is shorter than the base of {base:?}"),
            ));
        }
        Ok(Backoff {
            base,
            cap,
            jitter: Jitter::Full,
            multiplier: 2.0,
            rng: rng::Jitter::new(),
        })
    }

    /// How much full jitter's ceiling grows per retry (default 2: `base · 2ⁿ`), in [1, 1000]:
    /// `random(0, min(cap, base · multiplierⁿ))` — gRPC A6's `backoffMultiplier`. Decorrelated
    /// jitter does not use it.
    ///
    /// # Errors
    /// A multiplier below 1, above 1000, or not a number.
    pub fn multiplier(mut self, multiplier: f64) -> Result<Self, ConfigError> {
        if !multiplier.is_finite() || !(1.0..=MAX_MULTIPLIER).contains(&multiplier) {
            return Err(ConfigError::new(
                "backoff multiplier",
                format!("{multiplier} is not between 1 and 1000"),
            ));
        }
        self.multiplier = multiplier;
        Ok(self)
    }

    /// How much full jitter's ceiling grows per retry (2 unless set).
    pub fn growth(&self) -> f64 {
        self.multiplier
    }

    /// Uses decorrelated jitter instead of full jitter.
    pub fn decorrelated(mut self) -> Self {
        self.jitter = Jitter::Decorrelated;
        self
    }

    /// Seeds the random sequence, so delays repeat exactly (clones made after seeding share
    /// the sequence). Unseeded, each thread draws from its own generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = rng::Jitter::seeded(seed);
        self
    }

    /// The base delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The cap.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry number `retry` (0 for the first retry). `previous` is the delay
    /// before the previous retry, which decorrelated jitter grows from.
    pub fn delay(&self, retry: u32, previous: Option<Duration>) -> Duration {
        match self.jitter {
            Jitter::Full if self.multiplier == 2.0 => {
                let ceiling = self
                    .base
                    .checked_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
                    .map_or(self.cap, |d| d.min(self.cap));
                self.rng.between(Duration::ZERO, ceiling)
            }
            Jitter::Full => {
                // base · multiplierⁿ in f64 seconds, capped before it becomes a Duration (an
                // overflow to infinity is the cap too).
                let grown = self.base.as_secs_f64() * self.multiplier.powf(f64::from(retry));
                let ceiling = if grown.is_finite() && grown < self.cap.as_secs_f64() {
                    Duration::from_secs_f64(grown)
                } else {
                    self.cap
                };
                self.rng.between(Duration::ZERO, ceiling)
            }
            Jitter::Decorrelated => {
                let previous = previous.unwrap_or(self.base).max(self.base);
                let upper = previous.saturating_mul(3).min(self.cap);
                self.rng.between(self.base, upper)
            }
        }
    }
}

/// Full jitter from 50 ms, capped at 500 ms (10 × base).
impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_BASE, DEFAULT_BASE * 10).expect("the defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn seeded_sequences_repeat_and_differ_by_seed() {
        let draw = |seed| {
            let b = Backoff::default().seed(seed);
            (0..20).map(|n| b.delay(n % 4, None)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn invalid_settings_are_errors() {
        assert_eq!(
            Backoff::new(Duration::ZERO, MS).unwrap_err().field(),
            "backoff base"
        );
        assert_eq!(
            Backoff::new(10 * MS, 5 * MS).unwrap_err().field(),
            "backoff cap"
        );
        assert_eq!(
            Backoff::new(MS, Duration::from_secs(7200))
                .unwrap_err()
                .field(),
            "backoff cap"
        );
        let defaults = Backoff::default();
        assert_eq!((defaults.base(), defaults.cap()), (50 * MS, 500 * MS));
        assert_eq!(defaults.jitter(), Jitter::Full);
    }

    /// 1,000 clients fail at the same instant; their first retries must spread uniformly over
    /// [0, base] (chi-square, 10 bins, 9 degrees of freedom, 1 % level: 21.666).
    #[test]
    fn first_retries_of_many_clients_are_uniform() {
        let backoff = Backoff::new(100 * MS, Duration::from_secs(1))
            .unwrap()
            .seed(2026);
        let mut bins = [0u32; 10];
        for _client in 0..1000 {
            let delay = backoff.delay(0, None);
            assert!(delay <= 100 * MS);
            bins[((delay.as_nanos() * 10 / (100 * MS).as_nanos()) as usize).min(9)] += 1;
        }
        let expected = 100.0;
        let chi2: f64 = bins
            .iter()
            .map(|&o| (f64::from(o) - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 21.666, "chi-square {chi2:.2} for bins {bins:?}");
    }

    proptest! {
        #[test]
        fn every_delay_lies_in_its_interval(
            base_ms in 1u64..2000,
            cap_factor in 1u32..50,
            retry in 0u32..100,
            seed in any::<u64>(),
            decorrelated in any::<bool>(),
            previous_ms in 0u64..100_000,
            multiplier in prop_oneof![Just(2.0), 1.0f64..1000.0],
        ) {
            let base = Duration::from_millis(base_ms);
            let cap = (base * cap_factor).min(MAX_DELAY);
            let mut backoff = Backoff::new(base, cap).unwrap().seed(seed).multiplier(multiplier).unwrap();
            if decorrelated {
                backoff = backoff.decorrelated();
            }
            let delay = backoff.delay(retry, Some(Duration::from_millis(previous_ms)));
            prop_assert!(delay <= cap);
            if decorrelated {
                prop_assert!(delay >= base);
            } else {
                // base · multiplierⁿ, computed apart (with a nanosecond of rounding room).
                let grown = base.as_secs_f64() * multiplier.powf(f64::from(retry));
                let ceiling = if grown.is_finite() && grown < cap.as_secs_f64() {
                    Duration::from_secs_f64(grown) + Duration::from_nanos(1)
                } else {
                    cap
                };
                prop_assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            }
        }
    }
}
