//! The state every clone of a balancer shares, and how a new resolution is applied to it:
//! endpoints kept, added and removed, and the change feed told.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

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
    pub(super) max_ejection: f64,
    pub(super) classifier: C,
    pub(super) breaker: BreakerBuilder,
    pub(super) make: Box<MakeEndpoint<S>>,
    pub(super) resolver: Box<dyn Resolve>,
    pub(super) refresh_interval: Duration,
    pub(super) served_by: bool,
    pub(super) warned_single: AtomicBool,
    pub(super) refresh_started: AtomicBool,
    pub(super) resolutions: watch::Sender<u64>,
    pub(super) changes: tokio::sync::broadcast::Sender<Change>,
}

impl<S, C> Shared<S, C> {
    /// Replaces the endpoint set with `addrs`, keeping the breakers and stacks of endpoints
    /// that stay; removed endpoints take no new calls and finish the ones in flight.
    pub(crate) fn apply(&self, mut addrs: Vec<SocketAddr>) {
        let mut seen = std::collections::HashSet::with_capacity(addrs.len());
        addrs.retain(|a| seen.insert(*a));
        let old = self.snapshot.load();
        let mut endpoints = Vec::with_capacity(addrs.len());
        for addr in &addrs {
            if let Some(kept) = old.endpoints.iter().find(|e| e.addr == *addr) {
                endpoints.push(kept.clone());
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
        let before: Vec<SocketAddr> = old.endpoints.iter().map(|e| e.addr).collect();
        let kept: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
        for change in changes(&before, &kept) {
            if let Change::Remove(addr) = change {
                tracing::info!(%addr, "endpoint removed: no new calls, in-flight calls finish");
            }
            // Nobody listening is fine.
            let _ = self.changes.send(change);
        }
        if addrs.len() == 1 && !self.warned_single.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                addr = %addrs[0],
                "the name resolved to a single address: there is nothing to balance. If this is a \
                 Kubernetes ClusterIP Service, every call goes through one virtual IP (and, for \
                 gRPC, one connection to one pod); use a headless Service (clusterIP: None) so \
                 every pod address is resolved"
            );
        }
        self.snapshot
            .store(Arc::new(Snapshot::new(endpoints, self.max_ejection)));
        self.resolutions.send_modify(|n| *n += 1);
    }

    /// Whether any endpoint would take a call now.
    pub(crate) fn any_usable(&self) -> bool {
        self.snapshot
            .load()
            .endpoints
            .iter()
            .any(|e| e.breaker.is_usable())
    }

    /// Counts a resolution that failed, so [`Balancer::resolved`] does not wait forever.
    pub(crate) fn resolution_failed(&self) {
        self.resolutions.send_modify(|n| *n += 1);
    }
}
