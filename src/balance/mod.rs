//! Client-side balancing over every resolved endpoint: per-call round robin (or least-request),
//! unhealthy endpoints skipped, re-resolution in the background.
//!
//! gRPC multiplexes calls on one HTTP/2 connection, so balancing *connections* sends everything
//! to one backend; and a Kubernetes ClusterIP Service resolves to one virtual address, so a
//! client-side balancer behind it has nothing to choose from. A [`Balancer`] resolves every
//! address (a headless Service's pod IPs), keeps re-resolving, picks an endpoint **per call**,
//! and routes around endpoints whose circuit breaker is open (outlier ejection).
//!
//! Each endpoint gets its own [`CircuitBreaker`] (by default: 5
//! consecutive failures eject it, a half-open probe brings it back) and its own stack, made by a
//! function of the address — typically a [`Pool`](crate::pool::Pool). An endpoint is *usable*
//! when it is resolved and its breaker would admit a call. As in Envoy, an ejection cap
//! ([`BalancerBuilder::max_ejection`]) bounds how many are skipped at once, and below a panic
//! threshold of endpoints taking calls ([`BalancerBuilder::panic_threshold`], default half) every
//! endpoint takes them, through open breakers too, rather than overload the rest (panic mode).
//! A call made before the first resolution waits for it (within its
//! deadline); after it, with nothing resolved (or nothing usable outside panic mode) a call
//! fails at once with [`Error::NoEndpoints`](crate::Error::NoEndpoints) — not retried. A
//! resolver *error* keeps the last known endpoints serving (see [`Resolve`] for the table).
//!
//! Responses carry [`ServedBy`](crate::retry::ServedBy); a retry carrying
//! [`AvoidEndpoint`](crate::retry::AvoidEndpoint) goes to another endpoint when one is usable.
//!
//! ```
//! use std::net::SocketAddr;
//! use stanchion::balance::{Balancer, StaticResolver};
//! use stanchion::classify::HttpClassifier;
//! use stanchion::retry::ServedBy;
//! use tower::{ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), stanchion::BoxError> {
//! let addrs: Vec<SocketAddr> = vec!["10.0.0.1:80".parse()?, "10.0.0.2:80".parse()?];
//! // Each endpoint's stack; here a stand-in that answers at once (use a `Pool` in real life).
//! let make = |addr: SocketAddr| {
//!     service_fn(move |_req: http::Request<()>| async move {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(addr.to_string()))
//!     })
//! };
//! let balancer = Balancer::builder(StaticResolver::new(addrs.clone()), make, HttpClassifier::new())
//!     .build()?;
//! balancer.resolved().await;
//! let served_by = |res: &http::Response<_>| res.extensions().get::<ServedBy>().unwrap().endpoint;
//! let first = balancer.clone().oneshot(http::Request::new(())).await?;
//! let second = balancer.clone().oneshot(http::Request::new(())).await?;
//! assert_eq!((served_by(&first), served_by(&second)), (addrs[0], addrs[1]));
//! # Ok(()) }
//! ```

//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`Balancer`], the handle: endpoints, breakers, resolution state, change feed |
//! | `builder.rs` | [`BalancerBuilder`]: settings, defaults, validation |
//! | `shared.rs` | the state clones share; applying a resolution (keep, add, drain) |
//! | `service.rs` | the tower `Service`: per-call pick, admission, [`ServedBy`](crate::retry::ServedBy) |
//! | `endpoints.rs` | the endpoint snapshot and the pick (round robin, least-request, panic mode) |
//! | `resolve.rs`, `dns.rs` | resolvers ([`StaticResolver`], [`DnsResolver`] with feature `dns`) and the diff into [`Change`]s |
//! | `refresh.rs` | the background re-resolution |

mod builder;
#[cfg(feature = "dns")]
mod dns;
mod endpoints;
mod feed;
mod refresh;
mod resolve;
mod service;
mod shared;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use self::builder::BalancerBuilder;
#[cfg(feature = "dns")]
pub use self::dns::DnsResolver;
pub use self::endpoints::Policy;
pub use self::feed::{Changes, Discovered};
pub use self::resolve::{
    Change, Resolve, ResolveFuture, Resolved, StaticResolver, Updates, changes,
};
pub use self::service::{
    BalanceFuture, BalanceRequest, BalanceResponse, WAIT_FOR_READY_POLL, WaitForReady,
};
pub use self::shared::ResolverStats;
pub(crate) use self::shared::Shared;
use crate::background::Started;
use crate::breaker::{BreakerState, CircuitBreaker};

/// Default re-resolution interval: 30 s (the gRPC DNS resolver's practice), or sooner when the
/// answer's TTL ends.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Re-resolution never happens more often than this: 1 s.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Default consecutive failures that eject an endpoint: 5 (an Istio `DestinationRule` example).
pub const DEFAULT_EJECTION_FAILURES: u32 = 5;
/// Default maximum staleness: 5 min (ten default refresh intervals). While resolution fails the
/// last known endpoints keep serving (gRPC clients keep them indefinitely); after this long a
/// name that is really gone stops taking calls.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(300);
/// Default drain window: 60 s (two default refresh intervals). An endpoint removed and re-added
/// within it keeps its breaker and pool.
pub const DEFAULT_DRAIN_WINDOW: Duration = Duration::from_secs(60);

/// Default ejection cap: 1.0, no cap of its own — the panic threshold already bounds how much
/// of a short endpoint list goes unused. Envoy's default (10 %) suits its large clusters.
pub const DEFAULT_MAX_EJECTION: f64 = 1.0;

/// Default panic threshold: 0.5, Envoy's default `healthy_panic_threshold`. With fewer than
/// half the endpoints taking calls, every endpoint takes them.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 0.5;

/// A client-side balancer over resolved endpoints; a tower `Service` for `http::Request`s.
/// Clones share the endpoints and the cursor. See the [module docs](self).
pub struct Balancer<S, C> {
    shared: Arc<Shared<S, C>>,
}

impl<S, C> Clone for Balancer<S, C> {
    fn clone(&self) -> Self {
        Balancer {
            shared: self.shared.clone(),
        }
    }
}

impl<S, C> fmt::Debug for Balancer<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("endpoints", &self.shared.snapshot.load().endpoints.len())
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// One endpoint as the balancer sees it now.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The address.
    pub addr: SocketAddr,
    /// Its breaker's state.
    pub state: BreakerState,
    /// Whether it would take a call now.
    pub usable: bool,
    /// Calls in flight to it (counted with [`Policy::LeastRequest`] only; zero otherwise).
    pub in_flight: usize,
}

impl<S, C> Balancer<S, C>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    /// Waits until the resolver has answered (or failed) at least once. Calls need not: a call
    /// made before the first resolution waits for it, within its deadline.
    ///
    /// # Panics
    /// Outside a tokio runtime (as a call does): the re-resolution runs on one. The feeds
    /// ([`changes`](Self::changes), [`discover`](Self::discover)) polled outside one do not
    /// panic; they wait for a call made inside one.
    pub async fn resolved(&self) {
        self.start_refresh();
        let mut seen = self.shared.resolutions.subscribe();
        let _ = seen.wait_for(|n| *n > 0).await;
    }

    /// Resolves the target now, instead of at the next refresh, and waits until that
    /// resolution (begun after this call) is applied — or has failed, which keeps the last
    /// known endpoints as any failed resolution does ([`Resolve`]). A resolver that pushes its
    /// changes ([`StaticResolver::set`]) needs no call: its changes apply at once. Calls made
    /// meanwhile use the endpoints known now. It waits as long as the resolver takes (a
    /// `DnsResolver` lookup is bounded by its timeout; a resolver of your
    /// own, by what it does).
    ///
    /// # Panics
    /// Outside a tokio runtime, which must run the resolution.
    pub async fn refresh_now(&self) {
        self.start_refresh();
        let mut done = self.shared.refreshes.subscribe();
        let target = self.shared.begun.load(Ordering::Relaxed) + 1;
        self.shared.wake.notify_one();
        let _ = done.wait_for(|n| *n >= target).await;
    }

    /// The endpoint set's changes from now on (inserted and removed endpoints), as a
    /// [`futures_core::Stream`] (or `changes.next().await`). A slow reader loses nothing: it
    /// gets the net difference since what it last read ([`Changes`]).
    pub fn changes(&self) -> Changes<S, C> {
        Changes::new(&self.shared)
    }

    /// The endpoints as tower's [`Discover`](tower::discover::Discover): every endpoint known
    /// now, then the changes, each insertion with a clone of the endpoint's stack — to feed a
    /// tower balancer from the crate's resolvers ([`Discovered`]).
    pub fn discover(&self) -> Discovered<S, C>
    where
        S: Clone,
    {
        Discovered::new(&self.shared)
    }

    /// Every endpoint now, in resolution order.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.shared
            .snapshot
            .load()
            .endpoints
            .iter()
            .map(|e| EndpointStatus {
                addr: e.addr,
                state: e.breaker.state(),
                usable: e.breaker.is_usable(),
                in_flight: e.in_flight.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Every endpoint's service now (for the client's pools: their stats), in resolution order;
    /// endpoints that left the resolution leave the list.
    pub fn services(&self) -> Vec<(SocketAddr, S)>
    where
        S: Clone,
    {
        self.shared
            .snapshot
            .load()
            .endpoints
            .iter()
            .map(|e| (e.addr, e.service.clone()))
            .collect()
    }

    /// What the resolver has done: answers, errors, stale episodes.
    pub fn resolver_stats(&self) -> ResolverStats {
        self.shared.resolver_stats()
    }

    /// The breaker of the endpoint at `addr`, if it is resolved.
    pub fn breaker(&self, addr: SocketAddr) -> Option<CircuitBreaker> {
        self.shared
            .snapshot
            .load()
            .endpoints
            .iter()
            .find(|e| e.addr == addr)
            .map(|e| e.breaker.clone())
    }

    fn start_refresh(&self) {
        start_refresh(&self.shared);
    }
}

/// Starts the re-resolution task if none runs (one atomic load when it does: this is on every
/// call). Outside a tokio runtime it panics, as tokio does, rather than leave a call waiting for
/// a resolution nothing will run; a feed polled outside one uses [`start_refresh_in_runtime`].
pub(crate) fn start_refresh<S, C>(shared: &Arc<Shared<S, C>>)
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    if let Some(started) = Started::claim(shared, |s| &s.refresh_started) {
        tokio::spawn(refresh::run(started));
    }
}

/// [`start_refresh`], doing nothing outside a tokio runtime (a feed polled by another executor
/// waits for a call, or `refresh_now`, made inside one).
pub(crate) fn start_refresh_in_runtime<S, C>(shared: &Arc<Shared<S, C>>)
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    if shared.refresh_started.load(Ordering::Acquire)
        || tokio::runtime::Handle::try_current().is_err()
    {
        return;
    }
    start_refresh(shared);
}
