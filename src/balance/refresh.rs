//! The background re-resolution: every refresh interval, or when the answer's TTL ends if
//! sooner (never more often than every second); with doubling backoff from 1 s while no
//! endpoint is usable or the resolver fails. It holds only a weak reference and ends when the
//! balancer is dropped.
//!
//! A resolver *error* — a failed or timed-out lookup, NXDOMAIN or no records for a DNS name —
//! never wipes the endpoints: the last known set keeps serving (as gRPC clients do on resolver
//! errors), the episode is logged once with the name and counted, and resolution goes on with
//! backoff. Only after the maximum staleness are the endpoints given up. An *answer* — any
//! address set, empty included (`StaticResolver::set([])`, a resolver of your own returning no
//! addresses) — is applied at once: it is an instruction, not a failure.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::{MIN_REFRESH_INTERVAL, Shared};
use crate::background::Started;

/// The refresh loop. `started` is held for the task's life: if its runtime ends (even before
/// it first runs), the next call starts it again ([`Started`]).
pub(crate) async fn run<S, C>(started: Started<Shared<S, C>>)
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    let weak = started.weak();
    let mut backoff = MIN_REFRESH_INTERVAL;
    // When the current run of resolver errors began, while endpoints were known (or, if the
    // resolver pushed an answer during the run, when that was last seen).
    let mut stale_since: Option<Instant> = None;
    // The resolver's pushes as of the end of the last pass: one since then is a fresh answer.
    let mut pushes_seen = weak
        .upgrade()
        .map_or(0, |s| s.pushes.load(Ordering::Relaxed));
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        // Endpoints removed longer ago than the drain window go now, answers or not.
        shared.prune_draining(Instant::now());
        shared.begun.fetch_add(1, Ordering::Relaxed);
        let pushes_before = shared.pushes.load(Ordering::Relaxed);
        let resolving = shared.resolver.resolve();
        let interval = shared.refresh_interval;
        drop(shared);
        let outcome = resolving.await;
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let name = shared.resolver.name().unwrap_or("the target");
        // The pushes this pass has taken into account (read once: a push after the read is
        // seen by the next pass).
        let mut pass_pushes = pushes_before;
        let healthy_wait = match outcome {
            Ok(resolved) => {
                if stale_since.take().is_some() {
                    shared.counters.stale.store(false, Ordering::Relaxed);
                    tracing::info!(name, "resolution recovered");
                }
                let ttl = resolved.ttl;
                // Not applied if the resolver pushed a newer answer while this one was read.
                shared.apply_resolved(resolved.addrs, true, pushes_before);
                shared
                    .any_usable()
                    .then(|| ttl.map_or(interval, |ttl| ttl.min(interval)))
            }
            Err(error) if shared.has_endpoints() => {
                shared.resolution_failed();
                let now = Instant::now();
                pass_pushes = shared.pushes.load(Ordering::Relaxed);
                // An answer the resolver pushed since the last pass is fresh: the staleness
                // clock of a run already counted starts again (no new episode, no warning).
                if stale_since.is_some() && pass_pushes != pushes_seen {
                    stale_since = Some(now);
                }
                let since = *stale_since.get_or_insert_with(|| {
                    shared
                        .counters
                        .stale_episodes
                        .fetch_add(1, Ordering::Relaxed);
                    shared.metrics.stale_episode();
                    shared.counters.stale.store(true, Ordering::Relaxed);
                    tracing::warn!(
                        name,
                        %error,
                        "resolution failed: keeping the last known endpoints"
                    );
                    now
                });
                // Not an answer: the counters say it failed. Not over a push since the read
                // above either: that push is fresh, and the next pass restarts the clock.
                if now.saturating_duration_since(since) >= shared.max_staleness
                    && shared.apply_resolved(Vec::new(), false, pass_pushes)
                {
                    tracing::warn!(
                        name,
                        %error,
                        stale_for = ?now.saturating_duration_since(since),
                        "resolution has failed for the maximum staleness: gave the last known \
                         endpoints up"
                    );
                    shared.counters.given_up.fetch_add(1, Ordering::Relaxed);
                    shared.metrics.given_up();
                    stale_since = None;
                    shared.counters.stale.store(false, Ordering::Relaxed);
                } else {
                    tracing::debug!(name, %error, "resolution failed again");
                }
                None
            }
            Err(error) => {
                tracing::warn!(name, %error, "resolution failed, and no endpoint is known");
                shared.resolution_failed();
                None
            }
        };
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
        // Until the next refresh, or sooner when asked (`Balancer::refresh_now`; a request made
        // while this resolution ran is kept as the `Notify`'s permit).
        let wake = shared.wake.clone();
        pushes_seen = pass_pushes;
        shared.refreshes.send_modify(|n| *n += 1);
        drop(shared);
        let _ = tokio::time::timeout(wait.max(MIN_REFRESH_INTERVAL), wake.notified()).await;
    }
}
