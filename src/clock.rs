//! Time as the lock-free state machines keep it: nanoseconds since an origin, in a `u64`.
//!
//! Why one helper: the breaker (open periods, time windows), the bulkhead (adaptive limits'
//! latency signal) and the retry budget (its time slices) pack times into atomics, so each needs
//! "now" as a plain number. Reading it one way everywhere keeps the arithmetic in one place and
//! makes its range plain: `u64` nanoseconds since the origin last 584 years, so no value read
//! here wraps in a process's life (the saturation below only guards a clock that could). The
//! state machines take `now` as an argument, so tests and models drive them with any time.
//!
//! It reads `tokio::time::Instant`, so tests under `tokio::time::pause()` move it exactly.

use tokio::time::Instant;

/// A fixed origin to measure time from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    at: Instant,
}

impl Origin {
    /// An origin at the current instant.
    pub(crate) fn now() -> Self {
        Origin { at: Instant::now() }
    }

    /// Nanoseconds from the origin to now (zero before it; saturating at `u64::MAX`, 584
    /// years).
    #[inline]
    pub(crate) fn nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    /// Nanoseconds from the origin to `now`.
    #[inline]
    pub(crate) fn nanos_at(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.at).as_nanos();
        u64::try_from(elapsed).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_from_the_origin_and_never_goes_back() {
        let origin = Origin::now();
        assert_eq!(origin.nanos(), 0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(origin.nanos(), 1_500_000_000);
        // Years of uptime fit: 200 years is well inside u64 nanoseconds.
        let far = origin.at + Duration::from_secs(200 * 365 * 24 * 3600);
        assert_eq!(origin.nanos_at(far), 200 * 365 * 24 * 3600 * 1_000_000_000);
        // Before the origin: zero, not a wrap.
        let later = Origin::now();
        assert_eq!(later.nanos_at(origin.at), 0);
    }
}
