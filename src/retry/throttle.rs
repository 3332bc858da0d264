//! gRPC's retry throttling (gRFC A6 `retryThrottling`): the second mode of a
//! [`RetryBudget`](super::RetryBudget), driven by failures rather than by the share of calls.
//!
//! A6's rule, per server name (here: per budget, so a client's routes share it): a token count
//! starts at `maxTokens` and stays within `0..=maxTokens`; every failed attempt takes 1, every
//! success adds `tokenRatio`; while the count is at or below `maxTokens / 2` nothing is retried.
//! It cannot be expressed as a ratio budget — it has no window and forgets nothing, and a burst
//! of failures closes it however much traffic came before — hence a mode of its own.
//!
//! What counts, as grpc-go and grpc-java count it: an attempt that failed with an outcome the
//! route would retry (a retryable status or code, a transport error) takes a token — the last
//! attempt of a call too, and whether or not a retry follows; an answer judged a success adds
//! `tokenRatio`. Outcomes the route never retries (a non-retryable code, a 4xx) leave the count
//! alone, as do the free resends of a request that was never sent and the polls of a keyed
//! request still running. A gRPC response whose status comes in its trailers (the usual unary
//! answer) counts as a success when its headers arrive: the server took the call, it can no
//! longer be retried, and the retry layer does not read the caller's body — a failure status in
//! those trailers is not counted (a deviation from A6, which counts the RPC's final status).
//!
//! Arithmetic is in thousandths (A6 supports three decimal places of both numbers), in one
//! `AtomicU64` updated by compare-and-swap, clamped to `0..=maxTokens`: no lock, no lost update.

use std::sync::atomic::Ordering;

use crate::error::ConfigError;
use crate::sync::AtomicU64;

/// The largest `maxTokens` A6 allows.
pub const MAX_THROTTLE_TOKENS: f64 = 1000.0;

/// The token bucket of one throttling budget.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// Thousandths of a token, `0..=max`.
    tokens: AtomicU64,
    max: u64,
    ratio: u64,
}

impl Throttle {
    /// A bucket holding `max_tokens`, refilled by `token_ratio` per success; both in A6's
    /// ranges (`maxTokens` in (0, 1000], `tokenRatio` > 0), to three decimal places.
    pub(crate) fn new(max_tokens: f64, token_ratio: f64) -> Result<Throttle, ConfigError> {
        if !max_tokens.is_finite() || max_tokens <= 0.0 || max_tokens > MAX_THROTTLE_TOKENS {
            return Err(ConfigError::new(
                "max_tokens",
                format!("{max_tokens} is not in (0, 1000] (gRFC A6)"),
            ));
        }
        if !token_ratio.is_finite() || token_ratio <= 0.0 || token_ratio > MAX_THROTTLE_TOKENS {
            return Err(ConfigError::new(
                "token_ratio",
                format!("{token_ratio} is not above 0 and at most 1000 (gRFC A6)"),
            ));
        }
        let max = (max_tokens * 1000.0).round() as u64;
        let ratio = (token_ratio * 1000.0).round() as u64;
        if max == 0 || ratio == 0 {
            return Err(ConfigError::new(
                if max == 0 {
                    "max_tokens"
                } else {
                    "token_ratio"
                },
                "below 0.001: A6 supports three decimal places",
            ));
        }
        Ok(Throttle {
            tokens: AtomicU64::new(max),
            max,
            ratio,
        })
    }

    fn update(&self, f: impl Fn(u64) -> u64) -> u64 {
        let mut current = self.tokens.load(Ordering::Acquire);
        loop {
            let next = f(current);
            match self.tokens.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }

    /// A success: adds `tokenRatio`, up to `maxTokens`.
    pub(crate) fn succeeded(&self) {
        let (max, ratio) = (self.max, self.ratio);
        if self.tokens.load(Ordering::Relaxed) < max {
            self.update(|t| t.saturating_add(ratio).min(max));
        }
    }

    /// A failed attempt: takes one token (not below zero).
    pub(crate) fn failed(&self) {
        self.update(|t| t.saturating_sub(1000));
    }

    /// Whether retries are allowed now: the count is above `maxTokens / 2`.
    pub(crate) fn allows(&self) -> bool {
        // Compared doubled: exact for odd thousandths too.
        self.tokens.load(Ordering::Acquire) * 2 > self.max
    }

    /// The token count now.
    pub(crate) fn tokens(&self) -> f64 {
        self.tokens.load(Ordering::Acquire) as f64 / 1000.0
    }

    pub(crate) fn max_tokens(&self) -> f64 {
        self.max as f64 / 1000.0
    }

    pub(crate) fn token_ratio(&self) -> f64 {
        self.ratio as f64 / 1000.0
    }
}

#[cfg(all(test, not(stanchion_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a6_ranges_are_checked() {
        for (max, ratio, field) in [
            (0.0, 0.1, "max_tokens"),
            (-1.0, 0.1, "max_tokens"),
            (1000.001, 0.1, "max_tokens"),
            (f64::NAN, 0.1, "max_tokens"),
            (f64::INFINITY, 0.1, "max_tokens"),
            (0.0004, 0.1, "max_tokens"),
            (10.0, 0.0, "token_ratio"),
            (10.0, -0.1, "token_ratio"),
            (10.0, f64::NAN, "token_ratio"),
            (10.0, 0.0004, "token_ratio"),
        ] {
            let err = Throttle::new(max, ratio).expect_err(&format!("{max} {ratio}"));
            assert_eq!(err.field(), field, "{max} {ratio}: {err}");
        }
        assert!(Throttle::new(1000.0, 0.001).is_ok());
        assert!(Throttle::new(0.001, 1000.0).is_ok());
    }

    /// The token count against a model in integers, over every sequence of up to 12 outcomes
    /// for several bucket shapes: clamped to `0..=max`, and retries allowed exactly while the
    /// count is above half of `max`.
    #[test]
    fn the_bucket_follows_a6_over_every_sequence() {
        for (max, ratio) in [
            (10.0, 0.1),
            (3.0, 1.0),
            (1.0, 0.5),
            (7.5, 0.25),
            (0.001, 0.001),
        ] {
            for len in 0..=12u32 {
                for bits in 0u32..(1 << len) {
                    let t = Throttle::new(max, ratio).unwrap();
                    let (m, r) = (
                        (max * 1000.0f64).round() as i64,
                        (ratio * 1000.0f64).round() as i64,
                    );
                    let mut model = m;
                    for i in 0..len {
                        if bits >> i & 1 == 1 {
                            t.succeeded();
                            model = (model + r).min(m);
                        } else {
                            t.failed();
                            model = (model - 1000).max(0);
                        }
                        assert_eq!(t.tokens(), model as f64 / 1000.0);
                        assert_eq!(t.allows(), 2 * model > m, "{max} {ratio} {bits:b}");
                    }
                }
            }
        }
    }

    /// A6's numbers: with `maxTokens` 10, the fifth failure in a row brings the count to 5
    /// (= 10 / 2) and stops retries; one success at 0.1 lifts it above the half again.
    #[test]
    fn ten_tokens_stop_retries_at_the_fifth_failure() {
        let t = Throttle::new(10.0, 0.1).unwrap();
        for failure in 1..=4 {
            t.failed();
            assert!(t.allows(), "failure {failure}");
        }
        t.failed();
        assert!(!t.allows());
        t.succeeded();
        assert!(t.allows());
        assert_eq!(t.tokens(), 5.1);
    }
}
