//! The state every clone of a balancer shares, and how a new resolution is applied to it:
//! endpoints kept, added and removed, and the change feed told.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::endpoints::{Endpoint, Policy, Snapshot};
use super::resolve::{Change, Resolve, changes};
use crate::breaker::BreakerBuilder;
use crate::rng::Jitter;

/// How an endpoint's stack is made from its address.
pub(crate) type MakeEndpoint<S> = dyn Fn(SocketAddr) -> S + Send + Sync;

/// What every clone of a balancer shares.
pub(crate) struct Shared<S, C> {
    pub(super) snapshot: ArcSwap<Snapshot<S>>,
    pub(super) cursor: AtomicUsize,
    pub(super) jitter: Jitter,
    pub(super) policy: Policy,
    pub(super) ejection: super::endpoints::Ejection,
    pub(super) classifier: C,
    pub(super) breaker: BreakerBuilder,
    pub(super) make: Box<MakeEndpoint<S>>,
    pub(super) resolver: Box<dyn Resolve>,
    pub(super) refresh_interval: Duration,
    pub(super) max_staleness: Duration,
    pub(super) drain_window: Duration,
    pub(super) served_by: bool,
    pub(super) warned_single: AtomicBool,
    pub(super) refresh_started: AtomicBool,
    /// The first resolution has completed (well or not): calls no longer wait for it.
    pub(super) first_resolved: AtomicBool,
    pub(super) resolutions: watch::Sender<u64>,
    /// Wakes the refresh task for a resolution now ([`Balancer::refresh_now`](super::Balancer::refresh_now)).
    pub(super) wake: Arc<tokio::sync::Notify>,
    /// Resolutions the refresh task began, and finished (whatever the outcome): a resolution
    /// begun after a `refresh_now` is the one it waits for.
    pub(super) begun: AtomicU64,
    pub(super) refreshes: watch::Sender<u64>,
    /// Answers pushed by the resolver ([`Updates::push`](super::Updates::push)), counted under
    /// the apply lock: a resolution begun before a push is older than it and is not applied.
    pub(super) pushes: AtomicU64,
    /// Endpoints removed recently, kept for the drain window: an address that comes back
    /// within it resumes its breaker and pool. Its lock is held through each apply.
    pub(super) draining: Mutex<Vec<(Arc<Endpoint<S>>, Instant)>>,
    pub(super) counters: ResolverCounters,
    /// Feature `metrics`: resolutions, endpoints, stale episodes, panic mode.
    pub(super) metrics: crate::metrics::BalancerMetrics,
}

/// Where an answer applied comes from.
#[derive(Clone, Copy)]
enum Source {
    /// Pushed by the resolver: applied at once.
    Push,
    /// The refresh task's resolution, begun when the push count was this.
    Resolved(u64),
}

/// The resolver's numbers, kept by the refresh task.
#[derive(Debug, Default)]
pub(crate) struct ResolverCounters {
    pub(super) resolutions: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) stale_episodes: AtomicU64,
    pub(super) stale: AtomicBool,
    pub(super) given_up: AtomicU64,
}

/// What a balancer's resolver has done: [`Balancer::resolver_stats`](super::Balancer::resolver_stats).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResolverStats {
    /// Resolutions that answered (an address set, empty or not).
    pub resolutions: u64,
    /// Resolutions that failed: an error, a timeout, NXDOMAIN or no records for a DNS name.
    pub errors: u64,
    /// Episodes in which resolution failed while endpoints were known, and the balancer kept
    /// serving them (one per run of failures).
    pub stale_episodes: u64,
    /// Whether the endpoints served now are stale: the last resolution failed.
    pub stale: bool,
    /// Times the last known endpoints were given up after the maximum staleness.
    pub given_up: u64,
}

impl<S, C> Shared<S, C> {
    /// Replaces the endpoint set with `addrs`, keeping the breakers and stacks of endpoints
    /// that stay (or come back within the drain window); removed endpoints take no new calls
    /// and finish the ones in flight. `answered`: the set is the resolver's answer (counted as
    /// a resolution), not the last known set given up.
    pub(crate) fn apply(&self, addrs: Vec<SocketAddr>, answered: bool) {
        self.apply_unless_pushed(addrs, answered, Source::Push);
    }

    /// [`apply`](Self::apply) for the refresh task's resolution begun when the push count was
    /// `pushes_before`: `false`, and nothing applied, when the resolver pushed a newer answer
    /// meanwhile (a `StaticResolver::set` between the read and the apply).
    pub(crate) fn apply_resolved(
        &self,
        addrs: Vec<SocketAddr>,
        answered: bool,
        pushes_before: u64,
    ) -> bool {
        self.apply_unless_pushed(addrs, answered, Source::Resolved(pushes_before))
    }

    fn apply_unless_pushed(
        &self,
        mut addrs: Vec<SocketAddr>,
        answered: bool,
        source: Source,
    ) -> bool {
        let mut seen = std::collections::HashSet::with_capacity(addrs.len());
        addrs.retain(|a| seen.insert(*a));
        let now = Instant::now();
        // The lock serialises applies (the refresh task's and a resolver's push): each reads
        // the set the one before it stored.
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        match source {
            Source::Push => {
                self.pushes.fetch_add(1, Ordering::Relaxed);
            }
            Source::Resolved(before) if self.pushes.load(Ordering::Relaxed) != before => {
                drop(draining);
                // An answer all the same (counted), superseded by the push; still a completed
                // resolution for those waiting on one.
                if answered {
                    self.counters.resolutions.fetch_add(1, Ordering::Relaxed);
                    self.metrics.resolved(self.snapshot.load().endpoints.len());
                }
                self.resolved_once();
                return false;
            }
            Source::Resolved(_) => {}
        }
        let old = self.snapshot.load_full();
        self.prune(&mut draining, now);
        let mut endpoints = Vec::with_capacity(addrs.len());
        for addr in &addrs {
            if let Some(kept) = old.endpoints.iter().find(|e| e.addr == *addr) {
                endpoints.push(kept.clone());
                continue;
            }
            if let Some(i) = draining.iter().position(|(e, _)| e.addr == *addr) {
                // Back within the drain window: its breaker and pool resume as they were.
                let (back, _) = draining.swap_remove(i);
                tracing::info!(%addr, "endpoint back: its breaker and pool are kept");
                endpoints.push(back);
                continue;
            }
            let breaker = match self.breaker.clone().name(addr.to_string()).build() {
                Ok(breaker) => breaker,
                Err(error) => {
                    // Validated at build time; kept as a guard rather than a panic.
                    tracing::error!(%addr, %error, "endpoint skipped: its breaker is invalid");
                    continue;
                }
            };
            tracing::info!(%addr, "endpoint added");
            endpoints.push(Arc::new(Endpoint {
                addr: *addr,
                breaker,
                service: (self.make)(*addr),
                in_flight: Arc::new(AtomicUsize::new(0)),
            }));
        }
        if !self.drain_window.is_zero() {
            for gone in old.endpoints.iter().filter(|e| !addrs.contains(&e.addr)) {
                draining.push((gone.clone(), now));
            }
        }
        let before: Vec<SocketAddr> = old.endpoints.iter().map(|e| e.addr).collect();
        let kept: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
        for change in changes(&before, &kept) {
            if let Change::Remove(addr) = change {
                tracing::info!(%addr, "endpoint removed: no new calls, in-flight calls finish");
            }
        }
        if let (1, Some(name)) = (addrs.len(), self.resolver.name())
            && !self.warned_single.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                name,
                addr = %addrs[0],
                "the name resolved to a single address: there is nothing to balance. If this is a \
                 Kubernetes ClusterIP Service, every call goes through one virtual IP (and, for \
                 gRPC, one connection to one pod); use a headless Service (clusterIP: None) so \
                 every pod address is resolved"
            );
        }
        let count = endpoints.len();
        self.snapshot
            .store(Arc::new(Snapshot::new(endpoints, self.ejection)));
        // Under the lock, so two applies publish their counts in the order they applied.
        if answered {
            self.counters.resolutions.fetch_add(1, Ordering::Relaxed);
            self.metrics.resolved(count);
        } else {
            self.metrics.endpoints_now(count);
        }
        drop(draining);
        self.resolved_once();
        true
    }

    /// Drops the endpoints removed longer ago than the drain window (their pools close).
    pub(crate) fn prune_draining(&self, now: Instant) {
        let mut draining = self.draining.lock().unwrap_or_else(PoisonError::into_inner);
        self.prune(&mut draining, now);
    }

    fn prune(&self, draining: &mut Vec<(Arc<Endpoint<S>>, Instant)>, now: Instant) {
        draining.retain(|(_, since)| now.saturating_duration_since(*since) < self.drain_window);
    }

    /// Whether any endpoint would take a call now.
    pub(crate) fn any_usable(&self) -> bool {
        self.snapshot
            .load()
            .endpoints
            .iter()
            .any(|e| e.breaker.is_usable())
    }

    /// Whether any endpoint is known (resolved, however long ago).
    pub(crate) fn has_endpoints(&self) -> bool {
        !self.snapshot.load().endpoints.is_empty()
    }

    /// Counts a resolution that failed, so [`Balancer::resolved`](super::Balancer::resolved)
    /// does not wait forever and calls waiting for the first resolution go on.
    pub(crate) fn resolution_failed(&self) {
        self.counters.errors.fetch_add(1, Ordering::Relaxed);
        self.metrics.failed();
        self.resolved_once();
    }

    fn resolved_once(&self) {
        self.first_resolved.store(true, Ordering::Release);
        self.resolutions.send_modify(|n| *n += 1);
    }

    /// The resolver's numbers.
    pub(crate) fn resolver_stats(&self) -> ResolverStats {
        let c = &self.counters;
        ResolverStats {
            resolutions: c.resolutions.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            stale_episodes: c.stale_episodes.load(Ordering::Relaxed),
            stale: c.stale.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
        }
    }
}
