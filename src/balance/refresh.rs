//! The background re-resolution: every refresh interval, or when the answer's TTL ends if
//! sooner (never more often than every second); with doubling backoff from 1 s while no
//! endpoint is usable or the resolver fails. It holds only a weak reference and ends when the
//! balancer is dropped.

use std::sync::Weak;

use super::{MIN_REFRESH_INTERVAL, Shared};

pub(crate) async fn run<S, C>(weak: Weak<Shared<S, C>>)
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    let mut backoff = MIN_REFRESH_INTERVAL;
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let resolving = shared.resolver.resolve();
        let interval = shared.refresh_interval;
        drop(shared);
        let outcome = resolving.await;
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let healthy_wait = match outcome {
            Ok(resolved) => {
                let ttl = resolved.ttl;
                shared.apply(resolved.addrs);
                shared
                    .any_usable()
                    .then(|| ttl.map_or(interval, |ttl| ttl.min(interval)))
            }
            Err(error) => {
                tracing::warn!(%error, "re-resolution failed: keeping the last endpoints");
                shared.resolution_failed();
                None
            }
        };
        drop(shared);
        let wait = match healthy_wait {
            Some(wait) => {
                backoff = MIN_REFRESH_INTERVAL;
                wait
            }
            None => {
                let wait = backoff;
                backoff = (backoff * 2).min(interval);
                wait
            }
        };
        tokio::time::sleep(wait.max(MIN_REFRESH_INTERVAL)).await;
    }
}
