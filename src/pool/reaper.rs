//! The pool's reaper: a background task per pool that closes idle, expired and broken
//! connections and keeps `min_idle` connections open — backing off after failed connects, so
//! an endpoint that is down or refuses the TLS handshake is not dialled on every tick.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::Connection;
use super::config::PoolConfig;
use super::core::Slots;
use crate::BoxError;
use crate::background::Started;

/// How often the reaper looks: often enough that idle and lifetime limits hold to within a
/// quarter of the shorter one, at most once a second and at least once a millisecond.
pub(super) fn reap_tick(config: &PoolConfig) -> Duration {
    let shortest = config
        .idle_timeout
        .min(config.max_lifetime.mul_f64(1.0 - config.lifetime_jitter));
    (shortest / 4).clamp(Duration::from_millis(1), Duration::from_secs(1))
}

/// The longest the reaper waits before trying again to open `min_idle` connections after
/// connects failed: attempts back off from one tick, doubling per consecutive failure, up to
/// this (an endpoint that refuses TLS or is down is not dialled every tick).
pub(crate) const MIN_IDLE_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// How long after the last refill attempt the reaper tries again, after `failures`
/// consecutive connect failures: no wait with none, then one tick doubled per failure, capped
/// at [`MIN_IDLE_BACKOFF_CAP`].
fn refill_backoff(tick: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    tick.saturating_mul(1u32 << (failures - 1).min(16))
        .min(MIN_IDLE_BACKOFF_CAP)
}

pub(super) async fn reaper<C, T>(
    started: Started<Slots<C::Response>>,
    tick: Duration,
    connector: C,
    target: T,
) where
    C: Service<T> + Clone + Send + 'static,
    C::Response: Connection,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    T: Clone + Send + Sync + 'static,
{
    let weak = started.weak();
    // Consecutive failed `min_idle` connects; reset by a success.
    let failures = Arc::new(AtomicU32::new(0));
    let mut last_refill: Option<Instant> = None;
    loop {
        tokio::time::sleep(tick).await;
        let Some(slots) = weak.upgrade() else {
            return;
        };
        let backoff = refill_backoff(tick, failures.load(Ordering::Relaxed));
        let refill = last_refill.is_none_or(|at| at.elapsed() >= backoff);
        let reserved = slots.reap(refill);
        let timeout = slots.config.checkout_timeout;
        drop(slots);
        if !reserved.is_empty() {
            last_refill = Some(Instant::now());
        }
        for reservation in reserved {
            let connect = super::connect_for(
                reservation.host.clone(),
                connector.clone().oneshot(target.clone()),
            );
            let weak = weak.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(timeout, connect).await;
                match outcome {
                    Ok(Ok(conn)) => {
                        failures.store(0, Ordering::Relaxed);
                        reservation.fill(conn, false);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        if let Some(slots) = weak.upgrade() {
                            slots.record_connect_failure();
                        }
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refill_backoff_doubles_per_failure_up_to_the_cap() {
        let tick = Duration::from_secs(1);
        let waits: Vec<u64> = (0..8).map(|n| refill_backoff(tick, n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(refill_backoff(tick, u32::MAX), MIN_IDLE_BACKOFF_CAP);
        assert_eq!(
            refill_backoff(Duration::from_millis(1), 3),
            Duration::from_millis(4)
        );
    }
}
