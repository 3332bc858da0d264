//! [`ClientBuilder`]: the knobs of every layer, validated once, composed in the canonical order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use tower::Layer;

use super::route::{Route, RoutePolicy};
use super::{Client, RoutePartition, RouteStack, Routes};
use crate::balance::{Balancer, Policy, Resolve, StaticResolver};
use crate::breaker::BreakerBuilder;
use crate::bulkhead::{Bulkhead, BulkheadBuilder, BulkheadLayer, Limits};
use crate::classify::{GrpcClassifier, GrpcCodes, HttpClassifier};
use crate::deadline::{
    AttemptLayer, DEFAULT_BUDGET, DEFAULT_PER_TRY_TIMEOUT, DeadlineLayer, MAX_BUDGET,
};
use crate::error::ConfigError;
use crate::idempotency::{DEFAULT_KEY_HEADER, IdempotencyKeyLayer};
use crate::pool::{Pool, PoolBuilder};
use crate::retry::{
    Backoff, DEFAULT_MAX_ATTEMPTS, ReplayBodyLayer, RetryBudget, RetryLayer, UnavailablePolicy,
};

/// Where a client's endpoints come from.
pub struct Target {
    resolver: Box<dyn Resolve>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").finish_non_exhaustive()
    }
}

impl Target {
    /// A fixed list of addresses.
    pub fn addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Target {
        Target::resolver(StaticResolver::new(addrs))
    }

    /// Every A/AAAA record of `name` (e.g. a Kubernetes headless Service), re-resolved by TTL,
    /// with the system's DNS configuration.
    #[cfg(feature = "dns")]
    pub fn dns(name: impl Into<Arc<str>>, port: u16) -> Result<Target, ConfigError> {
        Ok(Target::resolver(crate::balance::DnsResolver::system(
            name, port,
        )?))
    }

    /// Any resolver (a [`DnsResolver`](crate::balance::DnsResolver) against a chosen server, a
    /// [`StaticResolver`] you update, your own service discovery).
    pub fn resolver(resolver: impl Resolve) -> Target {
        Target {
            resolver: Box::new(resolver),
        }
    }
}

impl Resolve for Box<dyn Resolve> {
    fn resolve(&self) -> crate::balance::ResolveFuture {
        (**self).resolve()
    }
}

/// The classifier a client judges outcomes with, and how a route changes it.
pub trait ClientClassifier: Clone + Send + Sync + 'static {
    /// This classifier with `codes` retryable; `None` when the protocol has no such codes.
    fn with_retryable_codes(&self, codes: GrpcCodes) -> Option<Self>;
}

impl ClientClassifier for GrpcClassifier {
    fn with_retryable_codes(&self, codes: GrpcCodes) -> Option<Self> {
        Some(self.retryable_codes(codes))
    }
}

impl ClientClassifier for HttpClassifier {
    fn with_retryable_codes(&self, _: GrpcCodes) -> Option<Self> {
        None
    }
}

/// Builds a [`Client`]: the canonical stack over a [`Target`], every layer optional, every
/// setting checked by [`build`](Self::build). Start from [`Client::http`] or [`Client::grpc`].
///
/// | setting | default | off |
/// |---|---|---|
/// | [`deadline`](Self::deadline) | 30 s per logical call | [`without_deadline`](Self::without_deadline) |
/// | [`per_try_timeout`](Self::per_try_timeout) | 10 s per attempt (written as `grpc-timeout` on gRPC) | [`without_per_try_timeout`](Self::without_per_try_timeout) |
/// | [`max_attempts`](Self::max_attempts) | 3 | [`without_retries`](Self::without_retries) |
/// | [`backoff`](Self::backoff) | full jitter, 50 ms base, 500 ms cap | — |
/// | [`retry_budget`](Self::retry_budget) | 20 % of calls + 10 retries/s over 10 s, shared by every route | — |
/// | [`retryable_codes`](Self::retryable_codes) (gRPC) | UNAVAILABLE | — |
/// | [`unavailable`](Self::unavailable) | 503 / UNAVAILABLE without a hint retried on another endpoint only | — |
/// | [`bulkhead`](Self::bulkhead) | 100 calls at once, 50 more waiting up to 1 s | [`without_bulkhead`](Self::without_bulkhead) |
/// | [`breaker`](Self::breaker) | per endpoint: 5 consecutive failures eject it for 30 s, 3 half-open probes | [`without_ejection`](Self::without_ejection) |
/// | [`max_ejection`](Self::max_ejection) | 50 % of endpoints at most; beyond, panic mode | — |
/// | [`pool`](Self::pool) | per endpoint: 10 connections, checkout 2 s, idle 30 s, lifetime 30 min | — |
/// | [`balance`](Self::balance) | round robin per call | — |
/// | [`refresh_interval`](Self::refresh_interval) | 30 s (sooner by DNS TTL) | — |
/// | [`idempotency_keys`](Self::idempotency_keys) | off (opt in per route) | — |
pub struct ClientBuilder<C> {
    target: Target,
    classifier: C,
    deadline: Option<Duration>,
    per_try: Option<Duration>,
    timeout_header: Option<HeaderName>,
    max_attempts: u32,
    retryable_codes: Option<GrpcCodes>,
    backoff: Backoff,
    budget: Option<RetryBudget>,
    unavailable: UnavailablePolicy,
    bulkhead: Option<BulkheadBuilder>,
    partition_header: Option<HeaderName>,
    breaker: Option<BreakerBuilder>,
    max_ejection: Option<f64>,
    pool: PoolBuilder,
    policy: Policy,
    refresh_interval: Option<Duration>,
    keys: bool,
    key_header: HeaderName,
    replay_limit: usize,
    routes: Vec<(Route, RoutePolicy)>,
}

impl<C> std::fmt::Debug for ClientBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("deadline", &self.deadline)
            .field("per_try", &self.per_try)
            .field("max_attempts", &self.max_attempts)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Client<(), ()> {
    /// A client for HTTP calls: outcomes judged by status ([`HttpClassifier`]); retries follow
    /// the method (GET, PUT, DELETE…) or an idempotency key on opted-in routes.
    pub fn http(target: Target) -> ClientBuilder<HttpClassifier> {
        ClientBuilder::new(target, HttpClassifier::new())
    }

    /// A client for gRPC calls: outcomes judged by `grpc-status` ([`GrpcClassifier`]); a call
    /// is retried only for its route's retryable codes (default UNAVAILABLE), as gRPC A6 says.
    pub fn grpc(target: Target) -> ClientBuilder<GrpcClassifier> {
        ClientBuilder::new(target, GrpcClassifier::new())
    }
}

impl<C: ClientClassifier> ClientBuilder<C> {
    /// A builder judging outcomes with `classifier` (for a classifier of your own).
    pub fn new(target: Target, classifier: C) -> Self {
        ClientBuilder {
            target,
            classifier,
            deadline: Some(DEFAULT_BUDGET),
            per_try: Some(DEFAULT_PER_TRY_TIMEOUT),
            timeout_header: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retryable_codes: None,
            backoff: Backoff::default(),
            budget: None,
            unavailable: UnavailablePolicy::OtherEndpoint,
            bulkhead: Some(Bulkhead::builder()),
            partition_header: None,
            breaker: None,
            max_ejection: None,
            pool: PoolBuilder::new(),
            policy: Policy::RoundRobin,
            refresh_interval: None,
            keys: false,
            key_header: DEFAULT_KEY_HEADER,
            replay_limit: crate::retry::DEFAULT_REPLAY_LIMIT,
            routes: Vec::new(),
        }
    }

    /// The total budget of each logical call: bulkhead wait, pool checkout, every attempt and
    /// every backoff included (more than zero, at most a year).
    pub fn deadline(mut self, budget: Duration) -> Self {
        self.deadline = Some(budget);
        self
    }

    /// No budget of the client's own; a deadline the request carries, or adopts from the call
    /// it serves ([`AdoptDeadlineLayer`](crate::deadline::AdoptDeadlineLayer)), still holds.
    pub fn without_deadline(mut self) -> Self {
        self.deadline = None;
        self
    }

    /// The timeout of each attempt: `min(per_try, remaining)`, written on gRPC requests as
    /// `grpc-timeout`.
    pub fn per_try_timeout(mut self, per_try: Duration) -> Self {
        self.per_try = Some(per_try);
        self
    }

    /// No per-attempt timeout: an attempt may use what is left of the deadline.
    pub fn without_per_try_timeout(mut self) -> Self {
        self.per_try = None;
        self
    }

    /// Also write each attempt's timeout in whole milliseconds to this HTTP header (the remaining
    /// budget, for servers that read one).
    pub fn timeout_header(mut self, name: HeaderName) -> Self {
        self.timeout_header = Some(name);
        self
    }

    /// Attempts in total, the first included: 1 to 10.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// No retries (a request the transport never sent is still sent once more: it cannot have
    /// run, and it costs no attempt and no budget).
    pub fn without_retries(self) -> Self {
        self.max_attempts(1)
    }

    /// The backoff between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The retry budget shared by every route (pass a clone of one handle to several clients to
    /// share it between them too).
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// What to do with 503 / UNAVAILABLE without a delay hint.
    pub fn unavailable(mut self, policy: UnavailablePolicy) -> Self {
        self.unavailable = policy;
        self
    }

    /// gRPC only: the codes retried on routes that do not say otherwise (default UNAVAILABLE).
    /// An HTTP client refuses this at build time.
    pub fn retryable_codes(mut self, codes: GrpcCodes) -> Self {
        self.retryable_codes = Some(codes);
        self
    }

    /// The bulkhead: its default limits and its named partitions (which routes can take).
    pub fn bulkhead(mut self, bulkhead: BulkheadBuilder) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// A bulkhead with these default-partition limits.
    pub fn concurrency(self, limits: Limits) -> Self {
        self.bulkhead(Bulkhead::builder().limits(limits))
    }

    /// Calls without a route partition take the partition named by this request header (a
    /// tenant id, say), with [`BulkheadBuilder::per_key`] limits; declare `per_key` on the
    /// bulkhead, or every key shares the default partition.
    pub fn partition_by_header(mut self, name: HeaderName) -> Self {
        self.partition_header = Some(name);
        self
    }

    /// No bulkhead: calls are not limited or queued by the client.
    pub fn without_bulkhead(mut self) -> Self {
        self.bulkhead = None;
        self
    }

    /// The template of every endpoint's circuit breaker.
    pub fn breaker(mut self, breaker: BreakerBuilder) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The largest share of endpoints ejected at once, in `[0, 1]`.
    pub fn max_ejection(mut self, share: f64) -> Self {
        self.max_ejection = Some(share);
        self
    }

    /// Endpoints are never ejected for failing (breakers still count, for the stats).
    pub fn without_ejection(self) -> Self {
        self.max_ejection(0.0)
    }

    /// The template of every endpoint's connection pool.
    pub fn pool(mut self, pool: PoolBuilder) -> Self {
        self.pool = pool;
        self
    }

    /// How the balancer chooses among usable endpoints.
    pub fn balance(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// How often to re-resolve the target (at least 1 s).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = Some(interval);
        self
    }

    /// Whether calls on routes that do not say otherwise carry an idempotency key (default
    /// off: opt in the routes whose server honours keys, with
    /// [`RoutePolicy::idempotency_keys`]).
    pub fn idempotency_keys(mut self, on: bool) -> Self {
        self.keys = on;
        self
    }

    /// The header keys travel in (default `Idempotency-Key`).
    pub fn idempotency_header(mut self, name: HeaderName) -> Self {
        self.key_header = name;
        self
    }

    /// How much of a request body is kept so the request can be sent again (default 64 KiB;
    /// a longer body is sent once and not retried).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.replay_limit = bytes;
        self
    }

    /// Overrides for the calls `route` covers. Routes declared later do not replace earlier
    /// ones: the most specific match wins (an exact method, then the longest prefix).
    pub fn route(mut self, route: Route, policy: RoutePolicy) -> Self {
        if let Some((_, existing)) = self.routes.iter_mut().find(|(r, _)| *r == route) {
            merge(existing, policy);
        } else {
            self.routes.push((route, policy));
        }
        self
    }

    /// Validates everything and builds the client over pools of connections made by
    /// `connector` (an [`HttpConnector`](crate::pool::HttpConnector) on hyper, a
    /// [`TonicConnector`](crate::pool::TonicConnector), a
    /// [`ReqwestConnector`](crate::pool::ReqwestConnector)), one pool per endpoint.
    ///
    /// Inside a tokio runtime the first resolution starts at once.
    #[allow(clippy::type_complexity)]
    pub fn build<K>(self, connector: K) -> Result<Client<Pool<K, SocketAddr>, C>, ConfigError>
    where
        K: tower::Service<SocketAddr> + Clone + Send + Sync + 'static,
        K::Response: crate::pool::Connection,
        K::Future: Send + 'static,
        K::Error: Into<crate::BoxError>,
        Pool<K, SocketAddr>: Send + Sync,
    {
        let pool = self.pool.clone().settings()?;
        self.build_with(move |addr| pool.build(connector.clone(), addr))
    }

    /// Validates everything and builds the client over endpoint stacks made by `make(addr)` —
    /// for a transport of your own.
    pub fn build_with<E>(
        self,
        make: impl Fn(SocketAddr) -> E + Send + Sync + 'static,
    ) -> Result<Client<E, C>, ConfigError>
    where
        E: Send + Sync + 'static,
    {
        // Every route's layers, checked before anything starts.
        self.pool.clone().settings()?;
        let grpc = self
            .classifier
            .with_retryable_codes(GrpcCodes::NONE)
            .is_some();
        if self.retryable_codes.is_some() && !grpc {
            return Err(ConfigError::new(
                "retryable_codes",
                "gRPC retryable codes set on a client that is not gRPC",
            ));
        }
        for (route, policy) in &self.routes {
            route.validate()?;
            if policy.retryable_codes.is_some() && !grpc {
                return Err(ConfigError::new(
                    "retryable_codes",
                    format!(
                        "route {:?} sets gRPC retryable codes on a client that is not gRPC",
                        route.pattern()
                    ),
                ));
            }
        }
        let bulkhead = self
            .bulkhead
            .clone()
            .map(BulkheadBuilder::build)
            .transpose()?;
        let budget = self.budget.clone().unwrap_or_default();
        let default = RoutePolicy::default();
        let mut stacks = Vec::with_capacity(self.routes.len());
        // Check every layer before starting the balancer (its resolution runs in the background).
        let layers = std::iter::once(&default)
            .chain(self.routes.iter().map(|(_, p)| p))
            .map(|policy| self.layers(policy, bulkhead.as_ref(), &budget))
            .collect::<Result<Vec<_>, _>>()?;

        let mut balancer = Balancer::builder(self.target.resolver, make, self.classifier.clone())
            .policy(self.policy);
        if let Some(breaker) = self.breaker {
            balancer = balancer.breaker(breaker);
        }
        if let Some(share) = self.max_ejection {
            balancer = balancer.max_ejection(share);
        }
        if let Some(interval) = self.refresh_interval {
            balancer = balancer.refresh_interval(interval);
        }
        let balancer = balancer.build()?;

        let mut layers = layers.into_iter();
        let default = layers
            .next()
            .map(|l| l.stack(balancer.clone()))
            .ok_or_else(|| ConfigError::new("route", "no default route"))?;
        for ((route, _), layers) in self.routes.into_iter().zip(layers) {
            stacks.push((route, layers.stack(balancer.clone())));
        }
        Ok(Client {
            routes: Arc::new(Routes {
                default,
                routes: stacks,
                balancer,
                budget,
                bulkhead,
            }),
        })
    }

    /// The layers of one route, from the client's settings and the route's overrides.
    fn layers(
        &self,
        policy: &RoutePolicy,
        bulkhead: Option<&Bulkhead>,
        budget: &RetryBudget,
    ) -> Result<RouteLayers<C>, ConfigError> {
        let deadline = policy
            .deadline
            .unwrap_or(self.deadline)
            .unwrap_or(MAX_BUDGET);
        let per_try = policy.per_try.unwrap_or(self.per_try).unwrap_or(MAX_BUDGET);
        let mut attempt = AttemptLayer::new(per_try)?;
        if let Some(name) = &self.timeout_header {
            attempt = attempt.timeout_header(name.clone());
        }
        let classifier = match policy.retryable_codes.or(self.retryable_codes) {
            Some(codes) => self
                .classifier
                .with_retryable_codes(codes)
                .ok_or_else(|| ConfigError::new("retryable_codes", "not a gRPC client"))?,
            None => self.classifier.clone(),
        };
        let retry = RetryLayer::builder(classifier)
            .max_attempts(policy.max_attempts.unwrap_or(self.max_attempts))
            .backoff(self.backoff.clone())
            .budget(budget.clone())
            .unavailable(self.unavailable)
            .build()?;
        let partition = match (&policy.partition, bulkhead) {
            (Some(name), Some(b)) if b.stats(name).is_some() => {
                Some(Arc::<str>::from(name.as_str()))
            }
            (Some(name), Some(_)) => {
                return Err(ConfigError::new(
                    "partition",
                    format!("{name:?} is not a partition declared on the client's bulkhead"),
                ));
            }
            (Some(name), None) => {
                return Err(ConfigError::new(
                    "partition",
                    format!("route partition {name:?} needs a bulkhead, and the client has none"),
                ));
            }
            (None, _) => None,
        };
        let bulkhead = match bulkhead {
            Some(b) => b.clone(),
            None => unlimited()?,
        };
        let keys = if policy.idempotency_keys.unwrap_or(self.keys) {
            IdempotencyKeyLayer::new().route("/")
        } else {
            IdempotencyKeyLayer::new()
        }
        .header(self.key_header.clone());
        Ok(RouteLayers {
            keys,
            deadline: DeadlineLayer::new(deadline)?,
            bulkhead: BulkheadLayer::new(
                bulkhead,
                RoutePartition {
                    fixed: partition,
                    header: self.partition_header.clone(),
                },
            ),
            replay: ReplayBodyLayer::new(self.replay_limit),
            retry,
            attempt,
        })
    }
}

/// With no bulkhead, calls take permits from a partition too large to fill.
fn unlimited() -> Result<Bulkhead, ConfigError> {
    Bulkhead::builder()
        .limits(Limits {
            concurrency: crate::bulkhead::MAX_SIZE,
            queue: 0,
            max_wait: Duration::ZERO,
        })
        .build()
}

/// `over`'s settings replace `base`'s where set.
fn merge(base: &mut RoutePolicy, over: RoutePolicy) {
    base.deadline = over.deadline.or(base.deadline);
    base.per_try = over.per_try.or(base.per_try);
    base.max_attempts = over.max_attempts.or(base.max_attempts);
    base.retryable_codes = over.retryable_codes.or(base.retryable_codes);
    base.idempotency_keys = over.idempotency_keys.or(base.idempotency_keys);
    base.partition = over.partition.or(base.partition.take());
}

struct RouteLayers<C> {
    keys: IdempotencyKeyLayer,
    deadline: DeadlineLayer,
    bulkhead: BulkheadLayer<RoutePartition>,
    replay: ReplayBodyLayer,
    retry: RetryLayer<C>,
    attempt: AttemptLayer,
}

impl<C> RouteLayers<C> {
    fn stack<E>(self, balancer: Balancer<E, C>) -> RouteStack<E, C> {
        self.keys.layer(
            self.deadline.layer(
                self.bulkhead.layer(
                    self.replay
                        .layer(self.retry.layer(self.attempt.layer(balancer))),
                ),
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::addrs(["127.0.0.1:1".parse().unwrap()])
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let b = Client::http(target());
        assert_eq!(b.deadline, Some(Duration::from_secs(30)));
        assert_eq!(b.per_try, Some(Duration::from_secs(10)));
        assert_eq!(b.max_attempts, 3);
        assert_eq!(b.retryable_codes, None);
        assert_eq!(b.unavailable, UnavailablePolicy::OtherEndpoint);
        assert!(b.bulkhead.is_some());
        assert!(
            b.breaker.is_none(),
            "the balancer's default breaker (5 consecutive failures)"
        );
        assert_eq!(b.max_ejection, None);
        assert_eq!(b.policy, Policy::RoundRobin);
        assert!(!b.keys);
        assert_eq!(b.key_header, DEFAULT_KEY_HEADER);
        assert_eq!(b.replay_limit, 64 * 1024);
        assert!(b.routes.is_empty());

        let client = Client::http(target())
            .build_with(|_| {
                tower::service_fn(|_: http::Request<()>| async {
                    Ok::<_, std::convert::Infallible>(())
                })
            })
            .unwrap();
        let budget = client.retry_budget();
        assert_eq!(
            (budget.ratio(), budget.min_per_second(), budget.window()),
            (0.2, 10, Duration::from_secs(10))
        );
        let bulkhead = client.bulkhead().unwrap().stats("default").unwrap();
        assert_eq!(
            bulkhead.limits,
            Limits {
                concurrency: 100,
                queue: 50,
                max_wait: Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn without_a_bulkhead_there_is_none_to_read() {
        let client = Client::http(target())
            .without_bulkhead()
            .build_with(|_| ())
            .unwrap();
        assert!(client.bulkhead().is_none());
    }
}
