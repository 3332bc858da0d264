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

/// `now + duration`, or — for a duration too long to represent — about 30 years from now: a
/// caller-given duration never panics on overflow.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn after(now: Instant, duration: std::time::Duration) -> Instant {
    now.checked_add(duration)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(30 * 365 * 86_400))
}

/// Adds `duration` to a running total of nanoseconds, saturating at `u64::MAX` (584 years)
/// rather than wrapping: a total of many concurrent waits grows faster than time (a thousand
/// callers waiting all the time add a thousand seconds a second, and a wrapping `u64` would go
/// back to zero after seven months).
pub(crate) fn add_nanos(total: &std::sync::atomic::AtomicU64, duration: std::time::Duration) {
    use std::sync::atomic::Ordering;
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
        (t != u64::MAX).then(|| t.saturating_add(nanos))
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_total_of_waits_saturates_instead_of_wrapping() {
        let total = std::sync::atomic::AtomicU64::new(u64::MAX - 5);
        add_nanos(&total, Duration::from_nanos(3));
        assert_eq!(
            total.load(std::sync::atomic::Ordering::Relaxed),
            u64::MAX - 2
        );
        add_nanos(&total, Duration::from_secs(1));
        assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), u64::MAX);
        add_nanos(&total, Duration::MAX);
        assert_eq!(total.load(std::sync::atomic::Ordering::Relaxed), u64::MAX);
    }

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
