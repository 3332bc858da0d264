//! Clusters: a set of endpoints and how to reach them, named so routes can share it.
//!
//! Why: a route is a set of calls; a cluster (Envoy's word) is where they go — a target and
//! the balancer, pools and breakers over its endpoints. One client can then keep a health
//! check on a 2-connection pool of its own, or send one route to another service, without a
//! second client and routing of your own between the two. Routes that name one cluster share
//! its balancer and pools; a cluster is built only for the routes that name it.

use crate::balance::Policy;
use crate::breaker::BreakerBuilder;
use crate::pool::PoolBuilder;

use super::target::Target;

/// A named set of endpoints for routes to share: its own [`Target`], pool settings,
/// per-endpoint breaker template and balancing policy — each unset one inherited from the
/// client. Declare it with [`ClientBuilder::cluster`](super::ClientBuilder::cluster) and send
/// a route there with [`RoutePolicy::cluster`](super::RoutePolicy::cluster).
///
/// A cluster always has a balancer and pools of its own, even when it inherits the client's
/// target (both resolve the same name; a [`StaticResolver`](crate::balance::StaticResolver)
/// feeds both): that is what keeps a health check's 2 connections apart from the main pool.
/// Its breakers are its own too, so an endpoint ejected by one cluster still takes the other's
/// calls. The resolution settings (refresh interval, staleness, drain window) and the panic
/// threshold are the client's; the ejection cap is the client's unless the cluster sets one.
///
/// ```
/// # #[cfg(feature = "hyper")] {
/// use std::time::Duration;
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use stanchion::client::{Client, Cluster, Route, RoutePolicy, Target};
/// use stanchion::pool::{HttpConnector, PoolBuilder};
///
/// let client = Client::http(Target::addrs(["127.0.0.1:8080".parse().unwrap()]))
///     .cluster("health", Cluster::new().pool(PoolBuilder::new().max_size(2)))
///     .route(
///         Route::path_prefix("/health"),
///         RoutePolicy::new().cluster("health").deadline(Duration::from_secs(1)),
///     )
///     .build(HttpConnector::<Full<Bytes>>::http1())
///     .unwrap();
/// # let _ = client;
/// # }
/// ```
#[derive(Debug, Default)]
pub struct Cluster {
    pub(super) target: Option<Target>,
    pub(super) pool: Option<PoolBuilder>,
    pub(super) breaker: Option<BreakerBuilder>,
    pub(super) policy: Option<Policy>,
    pub(super) max_ejection: Option<f64>,
}

impl Cluster {
    /// A cluster that inherits everything from the client (its target too): own pools and
    /// breakers over the same endpoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where this cluster's endpoints come from (default: the client's target). A resolver
    /// shared with the client is asked once per cluster;
    /// [`Resolve::attach`](crate::balance::Resolve::attach) is called once per cluster.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// The pool settings of each of this cluster's endpoints (default: the client's
    /// [`pool`](super::ClientBuilder::pool)). With a
    /// [`ReqwestConnector`](crate::pool::ReqwestConnector) the pool's size limits nothing:
    /// reqwest keeps connections of its own (see docs/pool.md).
    pub fn pool(mut self, pool: PoolBuilder) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The breaker each of this cluster's endpoints gets (default: the client's
    /// [`breaker`](super::ClientBuilder::breaker)).
    pub fn breaker(mut self, breaker: BreakerBuilder) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// How this cluster picks an endpoint (default: the client's
    /// [`balance`](super::ClientBuilder::balance)).
    pub fn balance(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The share of this cluster's endpoints that may be ejected at once (default: the
    /// client's [`max_ejection`](super::ClientBuilder::max_ejection)).
    pub fn max_ejection(mut self, share: f64) -> Self {
        self.max_ejection = Some(share);
        self
    }

    /// This cluster's endpoints are never ejected for failing (a health checker wants to see
    /// every endpoint): its ejection cap at zero.
    pub fn without_ejection(self) -> Self {
        self.max_ejection(0.0)
    }
}
