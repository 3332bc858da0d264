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
//! when it is resolved and its breaker would admit a call. At most half the endpoints are
//! ejected at once: beyond that (panic mode) calls go through open breakers too, rather than
//! overload the rest. With nothing resolved (or nothing usable outside panic mode) a call fails
//! at once with [`Error::NoEndpoints`].
//!
//! Responses carry [`ServedBy`]; a retry carrying
//! [`AvoidEndpoint`] goes to another endpoint when one is usable.
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

#[cfg(feature = "dns")]
mod dns;
mod endpoints;
mod refresh;
mod resolve;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use arc_swap::ArcSwap;
use pin_project_lite::pin_project;
use tokio::sync::watch;
use tower::Service;
use tower::util::Oneshot;

#[cfg(feature = "dns")]
pub use self::dns::DnsResolver;
pub use self::endpoints::Policy;
use self::endpoints::{Endpoint, Picker, Snapshot};
pub use self::resolve::{Change, Resolve, ResolveFuture, Resolved, StaticResolver, changes};
use crate::BoxError;
use crate::breaker::{
    BreakerBuilder, BreakerFuture, BreakerResponse, BreakerState, CircuitBreaker,
};
use crate::classify::Classify;
use crate::error::{ConfigError, Error, check_duration};
use crate::retry::{AvoidEndpoint, ServedBy};
use crate::rng::Jitter;

/// Default re-resolution interval: 30 s (the gRPC DNS resolver's practice), or sooner when the
/// answer's TTL ends.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Re-resolution never happens more often than this: 1 s.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Default consecutive failures that eject an endpoint: 5 (an Istio `DestinationRule` example).
pub const DEFAULT_EJECTION_FAILURES: u32 = 5;
/// How many endpoint changes the feed of [`Balancer::changes`] keeps for a slow reader.
const CHANGE_FEED_CAPACITY: usize = 256;

/// Default largest share of endpoints ejected at once: 50 %; beyond it, panic mode.
pub const DEFAULT_MAX_EJECTION: f64 = 0.5;

type MakeEndpoint<S> = dyn Fn(SocketAddr) -> S + Send + Sync;

/// What every clone of a balancer shares.
pub(crate) struct Shared<S, C> {
    snapshot: ArcSwap<Snapshot<S>>,
    cursor: AtomicUsize,
    jitter: Jitter,
    policy: Policy,
    max_ejection: f64,
    classifier: C,
    breaker: BreakerBuilder,
    make: Box<MakeEndpoint<S>>,
    resolver: Box<dyn Resolve>,
    refresh_interval: Duration,
    served_by: bool,
    warned_single: AtomicBool,
    refresh_started: AtomicBool,
    resolutions: watch::Sender<u64>,
    changes: tokio::sync::broadcast::Sender<Change>,
}

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

/// Builds a [`Balancer`]; see [`Balancer::builder`].
pub struct BalancerBuilder<S, C> {
    resolver: Box<dyn Resolve>,
    make: Box<MakeEndpoint<S>>,
    classifier: C,
    breaker: BreakerBuilder,
    policy: Policy,
    max_ejection: f64,
    refresh_interval: Duration,
    served_by: bool,
    seed: Option<u64>,
}

impl<S, C> fmt::Debug for BalancerBuilder<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerBuilder")
            .field("policy", &self.policy)
            .field("max_ejection", &self.max_ejection)
            .field("refresh_interval", &self.refresh_interval)
            .finish_non_exhaustive()
    }
}

impl<S, C> Balancer<S, C>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    /// A builder: endpoints from `resolver`, each endpoint's stack made by `make(addr)`, outcomes
    /// judged by `classifier` for the endpoints' breakers.
    ///
    /// | setting | default |
    /// |---|---|
    /// | [`breaker`](BalancerBuilder::breaker) | [`DEFAULT_EJECTION_FAILURES`] (5) consecutive failures, open 30 s, 3 half-open probes |
    /// | [`policy`](BalancerBuilder::policy) | [`Policy::RoundRobin`] |
    /// | [`max_ejection`](BalancerBuilder::max_ejection) | [`DEFAULT_MAX_EJECTION`] (0.5) |
    /// | [`refresh_interval`](BalancerBuilder::refresh_interval) | [`DEFAULT_REFRESH_INTERVAL`] (30 s), never below [`MIN_REFRESH_INTERVAL`] (1 s) |
    /// | [`served_by`](BalancerBuilder::served_by) | on |
    pub fn builder(
        resolver: impl Resolve,
        make: impl Fn(SocketAddr) -> S + Send + Sync + 'static,
        classifier: C,
    ) -> BalancerBuilder<S, C> {
        BalancerBuilder {
            resolver: Box::new(resolver),
            make: Box::new(make),
            classifier,
            breaker: CircuitBreaker::builder().consecutive_failures(DEFAULT_EJECTION_FAILURES),
            policy: Policy::RoundRobin,
            max_ejection: DEFAULT_MAX_EJECTION,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            served_by: true,
            seed: None,
        }
    }
}

impl<S, C> BalancerBuilder<S, C>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    /// The template for every endpoint's breaker (its name is set to the address).
    pub fn breaker(mut self, breaker: BreakerBuilder) -> Self {
        self.breaker = breaker;
        self
    }

    /// How to choose among usable endpoints.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The largest share of endpoints skipped for an open breaker, in `[0, 1]`; when more are
    /// open, every endpoint takes calls (panic mode). `1.0` turns panic mode off.
    pub fn max_ejection(mut self, share: f64) -> Self {
        self.max_ejection = share;
        self
    }

    /// Whether responses carry [`ServedBy`] (default: yes). The retry layer needs it to send a
    /// retried 503 to another endpoint; turning it off saves the response-extension insert
    /// (three small allocations per call, made by `http`'s extension map).
    pub fn served_by(mut self, record: bool) -> Self {
        self.served_by = record;
        self
    }

    /// Seeds the least-request policy's random choices, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How often to re-resolve (sooner when the answer's TTL ends; never more often than every
    /// second).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Validates the settings and builds the balancer. Inside a tokio runtime the first
    /// resolution starts now; otherwise on the first call. Until it completes, calls fail with
    /// [`Error::NoEndpoints`]; [`Balancer::resolved`] waits for it.
    pub fn build(self) -> Result<Balancer<S, C>, ConfigError> {
        if !(0.0..=1.0).contains(&self.max_ejection) {
            return Err(ConfigError::new(
                "max_ejection",
                format!("{} is outside [0, 1]", self.max_ejection),
            ));
        }
        check_duration(
            "refresh_interval",
            self.refresh_interval,
            Duration::from_secs(24 * 3600),
        )?;
        if self.refresh_interval < MIN_REFRESH_INTERVAL {
            return Err(ConfigError::new(
                "refresh_interval",
                format!("{:?} is below the minimum of 1 s", self.refresh_interval),
            ));
        }
        // Every endpoint's breaker is built from this template: check it once.
        self.breaker.clone().build()?;
        let jitter = Jitter::new();
        if let Some(seed) = self.seed {
            jitter.seed(seed);
        }
        let balancer = Balancer {
            shared: Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                cursor: AtomicUsize::new(0),
                jitter,
                policy: self.policy,
                max_ejection: self.max_ejection,
                classifier: self.classifier,
                breaker: self.breaker,
                make: self.make,
                resolver: self.resolver,
                refresh_interval: self.refresh_interval,
                served_by: self.served_by,
                warned_single: AtomicBool::new(false),
                refresh_started: AtomicBool::new(false),
                resolutions: watch::Sender::new(0),
                changes: tokio::sync::broadcast::Sender::new(CHANGE_FEED_CAPACITY),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            balancer.start_refresh();
        }
        Ok(balancer)
    }
}

impl<S, C> Balancer<S, C>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    /// Waits until the resolver has answered at least once.
    pub async fn resolved(&self) {
        self.start_refresh();
        let mut seen = self.shared.resolutions.subscribe();
        let _ = seen.wait_for(|n| *n > 0).await;
    }

    /// A feed of the endpoint set's changes from now on (inserted and removed endpoints, as
    /// tower's `Discover` reports them). A reader that falls more than 256 changes behind
    /// gets a `Lagged` error and continues from the newest.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
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
        let shared = &self.shared;
        if shared.refresh_started.load(Ordering::Relaxed)
            || shared.refresh_started.swap(true, Ordering::Relaxed)
        {
            return;
        }
        tokio::spawn(refresh::run(Arc::downgrade(&self.shared)));
    }
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

impl<S, C, Req> Service<Req> for Balancer<S, C>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Response: BalanceResponse + BreakerResponse<C>,
    C: Classify<S::Response> + Clone + Send + Sync + 'static,
    Req: BalanceRequest,
{
    type Response = <S::Response as BreakerResponse<C>>::Output;
    type Error = Error;
    type Future = BalanceFuture<S, Req, C>;

    /// Always ready: an endpoint is chosen per call, and its stack waits inside the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.start_refresh();
        let shared = &*self.shared;
        let snapshot = shared.snapshot.load();
        let picker = Picker {
            policy: shared.policy,
            cursor: &shared.cursor,
            jitter: &shared.jitter,
        };
        let avoid = req.avoid_endpoint();
        match picker.pick(&snapshot, avoid) {
            Ok(picked) => {
                let endpoint = picked.endpoint;
                let at_head = endpoint.breaker.record_at() == crate::breaker::RecordAt::Head;
                // Calls in flight are counted for the least-request policy only.
                let in_flight = (shared.policy == Policy::LeastRequest).then(|| {
                    endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
                    InFlight(endpoint.in_flight.clone())
                });
                let served = Served {
                    inner: Oneshot::new(endpoint.service.clone(), req),
                    served_by: shared.served_by.then_some(ServedBy {
                        endpoint: endpoint.addr,
                        alternatives: picked.alternatives,
                    }),
                    in_flight,
                    cut: CutReport {
                        endpoint: Some(endpoint.addr),
                    },
                };
                BalanceFuture {
                    inner: BreakerFuture::running(
                        served,
                        picked.permit,
                        shared.classifier.clone(),
                        at_head,
                    ),
                }
            }
            Err(error) => BalanceFuture {
                inner: BreakerFuture::rejected(error),
            },
        }
    }
}

/// Counts a call in flight to an endpoint until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// An endpoint's response, marked with the endpoint that served it.
    struct Served<F> {
        #[pin]
        inner: F,
        served_by: Option<ServedBy>,
        in_flight: Option<InFlight>,
        cut: CutReport,
    }
}

/// Tells a per-try timeout that cuts this attempt which endpoint it was on (see
/// `deadline::cut`); disarmed once the endpoint answers.
struct CutReport {
    endpoint: Option<SocketAddr>,
}

impl Drop for CutReport {
    fn drop(&mut self) {
        if let Some(endpoint) = self.endpoint {
            crate::deadline::cut::cut_at(endpoint);
        }
    }
}

impl<F, R, E> Future for Served<F>
where
    F: Future<Output = Result<R, E>>,
    R: BalanceResponse,
{
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        this.cut.endpoint = None;
        let mut res = result?;
        if let Some(served_by) = *this.served_by {
            res.record_served_by(served_by);
        }
        Poll::Ready(Ok(res))
    }
}

pin_project! {
    /// The response future of a [`Balancer`].
    pub struct BalanceFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: BreakerFuture<Served<Oneshot<S, Req>>, C>,
    }
}

impl<S, C, Req> Future for BalanceFuture<S, Req, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: BalanceResponse + BreakerResponse<C>,
    C: Classify<S::Response>,
{
    type Output = Result<<S::Response as BreakerResponse<C>>::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

/// What the balancer reads from a request: the endpoint a retry asks to avoid
/// ([`AvoidEndpoint`], put there by the retry layer).
pub trait BalanceRequest {
    /// The endpoint this attempt should not go to, when another is usable.
    fn avoid_endpoint(&self) -> Option<SocketAddr>;
}

/// What the balancer writes on a response: the endpoint that served it ([`ServedBy`]).
pub trait BalanceResponse {
    /// Records the endpoint that served this response.
    fn record_served_by(&mut self, served_by: ServedBy);
}

impl<B> BalanceRequest for http::Request<B> {
    fn avoid_endpoint(&self) -> Option<SocketAddr> {
        self.extensions().get::<AvoidEndpoint>().map(|a| a.0)
    }
}

impl<B> BalanceResponse for http::Response<B> {
    fn record_served_by(&mut self, served_by: ServedBy) {
        self.extensions_mut().insert(served_by);
    }
}
