//! The client builder: the whole canonical stack in a few lines, with per-route policies.
//!
//! Every capability of the crate works on its own; most users want all of them, in the right
//! order, sharing the right state. [`Client::http`] and [`Client::grpc`] start a
//! [`ClientBuilder`] over a [`Target`] (a list of addresses, a DNS name, any resolver); `build`
//! checks every setting and composes, outermost first:
//!
//! ```text
//! route table (gRPC method / service, HTTP path prefix → that route's stack)
//!   IdempotencyKey   on routes that opt in
//!   Deadline         the route's total budget
//!   Bulkhead         one shared bulkhead; the route's partition (or a header's, or the default)
//!   ReplayBody       bodies up to 64 KiB can be sent again
//!   Retry            the route's attempts and retryable codes; one budget shared by every route
//!   Attempt          the route's per-try timeout, written on the wire
//!   Balancer         shared: per-call round robin over the resolved endpoints
//!     per endpoint:  CircuitBreaker (ejection) → Pool of connections
//! ```
//!
//! Each route gets its own stack of the same layers; the balancer (with its breakers and
//! pools), the retry budget and the bulkhead are shared by all of them. Picking the route is a
//! scan of the (short) route table per call, with no allocation. The result is a tower
//! `Service<http::Request<B>>` that is cheap to clone and `Send`: put it under a tonic-generated
//! client ([`Client::into_tonic`], feature `tonic`), call it with requests for reqwest
//! (connector [`ReqwestConnector`](crate::pool::ReqwestConnector), feature `reqwest`), or over
//! hyper connections from the crate's pool ([`HttpConnector`](crate::pool::HttpConnector)).
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use stanchion::client::{Client, Route, RoutePolicy, Target};
//! use stanchion::pool::HttpConnector;
//!
//! # fn main() -> Result<(), stanchion::ConfigError> {
//! let client = Client::http(Target::addrs(["10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap()]))
//!     .deadline(Duration::from_secs(2))
//!     .per_try_timeout(Duration::from_millis(500))
//!     .route(
//!         Route::path_prefix("/v1/payments"),
//!         RoutePolicy::new().idempotency_keys(true).deadline(Duration::from_secs(5)),
//!     )
//!     .build(HttpConnector::<Full<Bytes>>::http1())?;
//! # let _ = client;
//! # Ok(()) }
//! ```
//!
//! See `docs/client.md` for the guide and `docs/recipes.md` for common set-ups.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`Client`]: the route table and the `Service` |
//! | `builder.rs` | [`ClientBuilder`]: every knob and its default |
//! | `compose.rs` | `build`: validation, and each route's stack in the canonical order |
//! | `target.rs` | [`Target`]: where endpoints come from |
//! | `classifier.rs` | [`ClientClassifier`]: the protocol's classifier and a route's changes to it |
//! | `route.rs` | [`Route`] matching and [`RoutePolicy`] overrides |
//! | `tonic.rs` | [`Client::into_tonic`]: errors and body errors as `tonic::Status` (feature `tonic`) |

mod builder;
mod classifier;
mod cluster;
mod compose;
#[cfg(feature = "serde")]
mod config;
mod connector;
#[cfg(feature = "reqwest")]
mod reqwest;
mod route;
#[cfg(feature = "serde")]
mod service_config;
mod target;
#[cfg(feature = "tonic")]
mod tonic;

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request};
use tower::Service;
use tower::util::Oneshot;

pub use self::builder::ClientBuilder;
pub use self::classifier::ClientClassifier;
pub use self::cluster::Cluster;
#[cfg(feature = "serde")]
pub use self::config::{ClientConfig, ClusterConfig, RouteConfig, RouteMatch, TargetConfig};
pub use self::connector::ReplayConnector;
pub use self::route::{Route, RoutePolicy};
#[cfg(feature = "serde")]
pub use self::service_config::{
    MAX_SERVICE_CONFIG_ATTEMPTS, MethodConfig, MethodName, MethodRetryPolicy, ServiceConfig,
};
pub use self::target::Target;
#[cfg(feature = "tonic")]
pub use self::tonic::{StatusBody, TonicClient, TonicFuture};
use crate::balance::Balancer;
use crate::bulkhead::{Bulkhead, BulkheadService, PartitionKey};
use crate::deadline::{AttemptService, DeadlineService};
use crate::idempotency::IdempotencyKeyService;
use crate::retry::{ReplayBodyService, Retry, RetryBudget};

/// The name of a client that was given none ([`ClientBuilder::name`]): the `client` label of
/// its instruments (feature `metrics`) and its retry budget's name.
pub const DEFAULT_CLIENT_NAME: &str = "default";

/// The route label of calls no configured route matches: `default`.
pub const DEFAULT_ROUTE: &str = "default";

/// A client over hyper connections from the crate's pools, for `http::Request<B>` (default
/// `Full<Bytes>`), plaintext or TLS (`S` = [`Secured`](crate::pool::Secured) after
/// `HttpConnector::tls`): what `Client::http(..).build(HttpConnector::<B>::http1())` returns.
#[cfg(feature = "hyper")]
pub type HttpClient<B = http_body_util::Full<bytes::Bytes>, S = crate::pool::Plaintext> = Client<
    crate::pool::Pool<
        crate::pool::HttpConnector<crate::retry::ReplayBody<B>, S>,
        std::net::SocketAddr,
    >,
    crate::classify::HttpClassifier,
>;

/// A gRPC client over hyper HTTP/2 connections from the crate's pools, for tonic's requests:
/// what `Client::grpc(..).build(HttpConnector::<tonic::body::Body>::http2())` returns. Put it
/// under a generated client with [`Client::into_tonic`] ([`TonicGrpcClient`]).
#[cfg(all(feature = "hyper", feature = "tonic"))]
pub type GrpcClient<S = crate::pool::Plaintext> = Client<
    crate::pool::Pool<
        crate::pool::HttpConnector<crate::retry::ReplayBody<::tonic::body::Body>, S>,
        std::net::SocketAddr,
    >,
    crate::classify::GrpcClassifier,
>;

/// The transport a tonic-generated client runs on: [`GrpcClient::into_tonic`](Client::into_tonic)
/// — `EchoClient<TonicGrpcClient>`.
#[cfg(all(feature = "hyper", feature = "tonic"))]
pub type TonicGrpcClient<S = crate::pool::Plaintext> = TonicClient<
    crate::pool::Pool<
        crate::pool::HttpConnector<crate::retry::ReplayBody<::tonic::body::Body>, S>,
        std::net::SocketAddr,
    >,
    crate::classify::GrpcClassifier,
>;

/// A client over reqwest clients, one per resolved address: what
/// `Client::http(..).build(ReqwestConnector::new(host))` returns.
#[cfg(feature = "reqwest")]
pub type ReqwestClient = Client<
    crate::pool::Pool<crate::pool::ReqwestConnector, std::net::SocketAddr>,
    crate::classify::HttpClassifier,
>;

/// The response a client returns for `http::Request<B>`: `http::Response` over the stack's
/// body (which holds the connection, the breaker's and the bulkhead's permits until it ends).
/// `Response<HttpClient, Full<Bytes>>` names it where a helper returns one.
pub type Response<T, B> = <T as Service<Request<B>>>::Response;

/// The body of [`Response`]: `ResponseBody<HttpClient, Full<Bytes>>` — an `http_body::Body`
/// of `Bytes` whose errors are [`Error`](crate::Error)s.
pub type ResponseBody<T, B> = <Response<T, B> as BodyOf>::Body;

/// The future a client's `call` returns for `http::Request<B>` (`Send`, `'static`).
pub type ResponseFuture<T, B> = <T as Service<Request<B>>>::Future;

/// The body type of an `http::Response` ([`ResponseBody`]).
pub trait BodyOf {
    /// The body type.
    type Body;
}

impl<B> BodyOf for http::Response<B> {
    type Body = B;
}

/// One route's stack over the shared balancer `Balancer<E, C>` (see the [module docs](self)).
pub type RouteStack<E, C> = IdempotencyKeyService<
    DeadlineService<
        BulkheadService<
            ReplayBodyService<Retry<AttemptService<Balancer<E, C>>, C>>,
            RoutePartition,
        >,
    >,
>;

/// The resilient client: the canonical stack per route over one shared balancer. A tower
/// `Service<http::Request<B>>`; clones share everything. Build it with [`Client::http`] or
/// [`Client::grpc`].
pub struct Client<E, C> {
    routes: Arc<Routes<E, C>>,
}

impl<E, C> Clone for Client<E, C> {
    fn clone(&self) -> Self {
        Client {
            routes: self.routes.clone(),
        }
    }
}

impl<E, C> std::fmt::Debug for Client<E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field(
                "routes",
                &self
                    .routes
                    .routes
                    .iter()
                    .map(|(r, _)| r.pattern())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The client's routes and the state they share.
struct Routes<E, C> {
    default: RouteStack<E, C>,
    /// Which routes wait for a usable endpoint (gRPC wait-for-ready): the default route's,
    /// then each route's by index.
    default_waits: bool,
    waits: Vec<bool>,
    routes: Vec<(Route, RouteStack<E, C>)>,
    balancer: Balancer<E, C>,
    /// The named clusters routes send calls to, in declaration order.
    clusters: Vec<(String, Balancer<E, C>)>,
    budget: RetryBudget,
    bulkhead: Option<Bulkhead>,
}

impl<E, C> Routes<E, C> {
    /// The index of the most specific route matching `path`, if any.
    fn matching(&self, path: &str) -> Option<usize> {
        let mut best: Option<(usize, usize)> = None;
        for (i, (route, _)) in self.routes.iter().enumerate() {
            if let Some(score) = route.score(path)
                && best.is_none_or(|(b, _)| score > b)
            {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }
}

impl<E, C> Client<E, C>
where
    E: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    /// The client's own balancer (routes that name no [`Cluster`]): its endpoints, their
    /// breakers, its change feed.
    pub fn balancer(&self) -> &Balancer<E, C> {
        &self.routes.balancer
    }

    /// The balancer of the [`Cluster`] declared as `name`, if there is one.
    pub fn cluster(&self, name: &str) -> Option<&Balancer<E, C>> {
        self.routes
            .clusters
            .iter()
            .find_map(|(n, b)| (n == name).then_some(b))
    }

    /// Waits until the target, and every cluster's, has been resolved once (calls made before
    /// then wait for it too, within their deadline).
    pub async fn resolved(&self) {
        self.balancer().resolved().await;
        for (_, cluster) in &self.routes.clusters {
            cluster.resolved().await;
        }
    }
}

impl<K, C> Client<crate::pool::Pool<K, std::net::SocketAddr>, C>
where
    K: Service<std::net::SocketAddr> + Clone + Send + Sync + 'static,
    K::Response: crate::pool::Connection,
    K::Future: Send + 'static,
    K::Error: Into<crate::BoxError>,
    C: Send + Sync + 'static,
{
    /// Every endpoint's pool numbers now — utilisation, checkout wait, connections created
    /// and closed, checkout timeouts, connect failures — in resolution order. Endpoints that
    /// resolution adds appear, and those it removes leave the list (their pools close after
    /// the drain window). Each breaker's state: [`Balancer::endpoints`].
    pub fn pool_stats(&self) -> Vec<crate::pool::PoolStats> {
        pool_stats(self.balancer())
    }

    /// [`pool_stats`](Self::pool_stats) for the [`Cluster`] declared as `name` (`None`: no
    /// such cluster).
    pub fn cluster_pool_stats(&self, name: &str) -> Option<Vec<crate::pool::PoolStats>> {
        self.cluster(name).map(pool_stats)
    }
}

fn pool_stats<K, C>(
    balancer: &Balancer<crate::pool::Pool<K, std::net::SocketAddr>, C>,
) -> Vec<crate::pool::PoolStats>
where
    K: Service<std::net::SocketAddr> + Clone + Send + Sync + 'static,
    K::Response: crate::pool::Connection,
    K::Future: Send + 'static,
    K::Error: Into<crate::BoxError>,
    C: Send + Sync + 'static,
{
    balancer
        .services()
        .into_iter()
        .map(|(_, pool)| pool.stats())
        .collect()
}

impl<E, C> Client<E, C> {
    /// The retry budget every route draws from (read its stats).
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.routes.budget
    }

    /// The bulkhead, if the client has one (read its partitions' stats).
    pub fn bulkhead(&self) -> Option<&Bulkhead> {
        self.routes.bulkhead.as_ref()
    }

    /// The route a request to `path` takes (`None`: the client's own settings).
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes.matching(path).map(|i| &self.routes.routes[i].0)
    }
}

impl<E, C, B> Service<Request<B>> for Client<E, C>
where
    RouteStack<E, C>: Service<Request<B>> + Clone,
{
    type Response = <RouteStack<E, C> as Service<Request<B>>>::Response;
    type Error = <RouteStack<E, C> as Service<Request<B>>>::Error;
    type Future = Oneshot<RouteStack<E, C>, Request<B>>;

    /// Always ready: every layer waits inside the call, charged to its deadline.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let routes = &*self.routes;
        let (stack, waits) = match routes.matching(req.uri().path()) {
            Some(i) => (&routes.routes[i].1, routes.waits[i]),
            None => (&routes.default, routes.default_waits),
        };
        if waits {
            req.extensions_mut().insert(crate::balance::WaitForReady);
        }
        Oneshot::new(stack.clone(), req)
    }
}

/// The bulkhead partition of a call: the route's own, else the one a header names, else the
/// default partition.
#[derive(Debug, Clone)]
pub struct RoutePartition {
    fixed: Option<Arc<str>>,
    header: Option<HeaderName>,
}

impl<B> PartitionKey<Request<B>> for RoutePartition {
    fn partition_key<'a>(&'a self, req: &'a Request<B>) -> Option<&'a str> {
        if let Some(fixed) = &self.fixed {
            return Some(fixed);
        }
        req.headers().get(self.header.as_ref()?)?.to_str().ok()
    }
}
