//! Building a [`Client`]: every setting validated, then each route's stack composed in the
//! canonical order over one shared balancer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::builder::ClientBuilder;
use super::classifier::ClientClassifier;
use super::cluster::Cluster;
use super::route::RoutePolicy;
use super::target::Target;
use super::{Client, RoutePartition, RouteStack, Routes};
use crate::balance::{Balancer, Resolve};
use crate::bulkhead::{Bulkhead, BulkheadBuilder, BulkheadLayer, Limits};
use crate::deadline::{AttemptLayer, DeadlineLayer, MAX_BUDGET};
use crate::error::ConfigError;
use crate::idempotency::IdempotencyKeyLayer;
use crate::pool::{Pool, PoolBuilder};
use crate::retry::{ReplayBodyLayer, RetryBudget, RetryLayer};

impl<C: ClientClassifier> ClientBuilder<C> {
    /// Validates everything and builds the client over pools of connections made by
    /// `connector` — an [`HttpConnector`](crate::pool::HttpConnector) over your request body
    /// type (`HttpConnector::<Full<Bytes>>::http1()`; the pools send the bodies the client keeps
    /// for replay, with the same settings: [`ReplayConnector`](super::ReplayConnector)), or a
    /// [`ReqwestConnector`](crate::pool::ReqwestConnector) — one pool per endpoint. Name the
    /// result with [`HttpClient`](super::HttpClient), [`GrpcClient`](super::GrpcClient) or
    /// [`ReqwestClient`](super::ReqwestClient).
    ///
    /// Inside a tokio runtime the first resolution starts at once.
    #[allow(clippy::type_complexity)]
    pub fn build<K>(
        self,
        connector: K,
    ) -> Result<Client<Pool<K::Replaying, SocketAddr>, C>, ConfigError>
    where
        K: super::ReplayConnector,
        K::Replaying: tower::Service<SocketAddr> + Clone + Send + Sync + 'static,
        <K::Replaying as tower::Service<SocketAddr>>::Response: crate::pool::Connection,
        <K::Replaying as tower::Service<SocketAddr>>::Future: Send + 'static,
        <K::Replaying as tower::Service<SocketAddr>>::Error: Into<crate::BoxError>,
        Pool<K::Replaying, SocketAddr>: Send + Sync,
    {
        // Known before any connection: gRPC needs HTTP/2 on every connection.
        if self.classifier.is_grpc() && connector.always_http2() == Some(false) {
            return Err(ConfigError::new(
                "connector",
                "a gRPC client needs HTTP/2 on every connection: build it with \
                 HttpConnector::<tonic::body::Body>::http2() (over TLS too: ALPN then offers \
                 only h2)",
            ));
        }
        let client_pool = self.pool.clone();
        let connector = connector.replaying();
        self.compose(move |cluster_pool| {
            let settings = cluster_pool
                .unwrap_or(&client_pool)
                .clone()
                .settings()
                .map_err(|e| e.within("pool"))?;
            let connector = connector.clone();
            Ok(Box::new(move |addr| {
                settings.build(connector.clone(), addr)
            }))
        })
    }

    /// Validates everything and builds the client over endpoint stacks made by `make(addr)` —
    /// for a transport of your own.
    ///
    /// The connection checks of [`build`](Self::build)'s pools (an `https` request refused by
    /// a plaintext connection) are the pools': a stack of your own that is no
    /// [`Pool`](crate::pool::Pool) makes its own. A [`Cluster`](super::Cluster) with pool
    /// settings of its own is refused here (`make` builds every endpoint's stack).
    pub fn build_with<E>(
        self,
        make: impl Fn(SocketAddr) -> E + Send + Sync + 'static,
    ) -> Result<Client<E, C>, ConfigError>
    where
        E: Send + Sync + 'static,
    {
        let make = Arc::new(make);
        self.compose(move |cluster_pool| {
            if cluster_pool.is_some() {
                return Err(ConfigError::new(
                    "pool",
                    "a cluster's pool settings need `build` (with `build_with`, your `make` \
                     builds every endpoint's stack)",
                ));
            }
            let make = make.clone();
            Ok(Box::new(move |addr| make(addr)))
        })
    }

    /// Validates everything and composes the client: `make_for(cluster's pool settings)`
    /// gives each cluster's endpoint stacks.
    fn compose<E>(
        mut self,
        make_for: impl Fn(Option<&PoolBuilder>) -> Result<MakeEndpoint<E>, ConfigError>,
    ) -> Result<Client<E, C>, ConfigError>
    where
        E: Send + Sync + 'static,
    {
        // Every route's layers, checked before anything starts. Errors name where the
        // setting sits: `pool.max_size`, `routes[2].deadline`, `clusters.health.pool.max_size`.
        self.pool.clone().settings().map_err(|e| e.within("pool"))?;
        let grpc = self.classifier.is_grpc();
        if self.retryable_codes.is_some() && !grpc {
            return Err(ConfigError::new(
                "retryable_codes",
                "gRPC retryable codes set on a client that is not gRPC",
            ));
        }
        if self.retryable_statuses.is_some() && grpc {
            return Err(ConfigError::new(
                "retryable_statuses",
                "HTTP retryable statuses set on a gRPC client (its calls are judged by code: \
                 retryable_codes)",
            ));
        }
        for (i, (route, policy)) in self.routes.iter().enumerate() {
            let at = |e: ConfigError| e.within(format_args!("routes[{i}]"));
            route.validate().map_err(at)?;
            if policy.retryable_codes.is_some() && !grpc {
                return Err(at(ConfigError::new(
                    "retryable_codes",
                    format!(
                        "route {:?} sets gRPC retryable codes on a client that is not gRPC",
                        route.pattern()
                    ),
                )));
            }
            if policy.retryable_statuses.is_some() && grpc {
                return Err(at(ConfigError::new(
                    "retryable_statuses",
                    format!(
                        "route {:?} sets HTTP retryable statuses on a gRPC client",
                        route.pattern()
                    ),
                )));
            }
            if let Some(name) = &policy.cluster
                && !self.clusters.iter().any(|(n, _)| n == name)
            {
                return Err(at(ConfigError::new(
                    "cluster",
                    format!(
                        "route {:?} names the cluster {name:?}, which is not declared",
                        route.pattern()
                    ),
                )));
            }
        }
        for (name, cluster) in &self.clusters {
            if !self
                .routes
                .iter()
                .any(|(_, p)| p.cluster.as_deref() == Some(name.as_str()))
            {
                return Err(ConfigError::at_path(
                    &format!("clusters.{name}"),
                    "declared, but no route names it",
                ));
            }
            if let Some(pool) = &cluster.pool {
                pool.clone()
                    .settings()
                    .map_err(|e| e.within(format_args!("clusters.{name}.pool")))?;
            }
            if let Some(breaker) = &cluster.breaker {
                breaker
                    .clone()
                    .validated()
                    .map_err(|e| e.within(format_args!("clusters.{name}.breaker")))?;
            }
        }
        if self.partition_header.is_some() {
            match &self.bulkhead {
                None => {
                    return Err(ConfigError::new(
                        "partition_by_header",
                        "partitions by header need a bulkhead, and the client has none",
                    ));
                }
                Some(b) if !b.takes_keys() => {
                    return Err(ConfigError::new(
                        "partition_by_header",
                        "the bulkhead declares no partitions and no per_key limits, so every \
                         key would share the default partition",
                    ));
                }
                Some(_) => {}
            }
        }
        let bulkhead = self
            .bulkhead
            .clone()
            .map(BulkheadBuilder::build)
            .transpose()
            .map_err(|e| e.within("bulkhead"))?;
        let budget = match self.budget.clone() {
            Some(budget) => budget,
            None => RetryBudget::builder().name(self.name.clone()).build()?,
        };
        let default = RoutePolicy::default();
        let mut stacks = Vec::with_capacity(self.routes.len());
        // Check every layer before starting the balancer (its resolution runs in the background).
        let mut layers =
            vec![self.layers(super::DEFAULT_ROUTE, &default, bulkhead.as_ref(), &budget)?];
        for (i, (route, policy)) in self.routes.iter().enumerate() {
            layers.push(
                self.layers(route.pattern(), policy, bulkhead.as_ref(), &budget)
                    .map_err(|e| e.within(format_args!("routes[{i}]")))?,
            );
        }

        // The client's own endpoints, then each cluster's: a cluster without a target of its
        // own resolves the client's (one resolver, shared).
        let declared = std::mem::take(&mut self.clusters);
        let resolver: Arc<dyn Resolve> =
            Arc::from(std::mem::replace(&mut self.target, Target::addrs([])).resolver);
        let balancer = self.balancer(resolver.clone(), make_for(None)?, &Cluster::default())?;
        let mut clusters = Vec::with_capacity(declared.len());
        for (name, mut cluster) in declared {
            let make = make_for(cluster.pool.as_ref())
                .map_err(|e| e.within(format_args!("clusters.{name}")))?;
            let resolver = match cluster.target.take() {
                Some(own) => Arc::from(own.resolver),
                None => resolver.clone(),
            };
            let balancer = self
                .balancer(resolver, make, &cluster)
                .map_err(|e| e.within(format_args!("clusters.{name}")))?;
            clusters.push((name, balancer));
        }
        let mut layers = layers.into_iter();
        let default = layers
            .next()
            .map(|l| l.stack(balancer.clone()))
            .ok_or_else(|| ConfigError::new("route", "no default route"))?;
        let default_waits = self.wait_for_ready;
        let waits = self
            .routes
            .iter()
            .map(|(_, p)| p.wait_for_ready.unwrap_or(default_waits))
            .collect();
        for ((route, policy), layers) in self.routes.into_iter().zip(layers) {
            let balancer = match &policy.cluster {
                Some(name) => clusters
                    .iter()
                    .find_map(|(n, b): &(String, Balancer<E, C>)| (n == name).then(|| b.clone()))
                    .ok_or_else(|| ConfigError::new("cluster", format!("{name:?} not built")))?,
                None => balancer.clone(),
            };
            stacks.push((route, layers.stack(balancer)));
        }
        Ok(Client {
            routes: Arc::new(Routes {
                default,
                default_waits,
                waits,
                routes: stacks,
                balancer,
                clusters,
                budget,
                bulkhead,
            }),
        })
    }

    /// A balancer over `resolver`'s endpoints with the client's settings, and `cluster`'s
    /// where it has its own.
    fn balancer<E>(
        &self,
        resolver: Arc<dyn Resolve>,
        make: MakeEndpoint<E>,
        cluster: &Cluster,
    ) -> Result<Balancer<E, C>, ConfigError>
    where
        E: Send + Sync + 'static,
    {
        let mut balancer = Balancer::builder(resolver, make, self.classifier.clone())
            .policy(cluster.policy.unwrap_or(self.policy));
        if let Some(breaker) = cluster.breaker.as_ref().or(self.breaker.as_ref()) {
            balancer = balancer.breaker(breaker.clone());
        }
        if let Some(share) = cluster.max_ejection.or(self.max_ejection) {
            balancer = balancer.max_ejection(share);
        }
        if let Some(share) = self.panic_threshold {
            balancer = balancer.panic_threshold(share);
        }
        if let Some(interval) = self.refresh_interval {
            balancer = balancer.refresh_interval(interval);
        }
        if let Some(staleness) = self.max_staleness {
            balancer = balancer.max_staleness(staleness);
        }
        if let Some(window) = self.drain_window {
            balancer = balancer.drain_window(window);
        }
        balancer.build()
    }

    /// The layers of one route, from the client's settings and the route's overrides.
    fn layers(
        &self,
        route: &str,
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
        if let Some(hook) = &self.on_attempt {
            attempt = attempt.on_send(hook.clone());
        }
        let codes = policy
            .retryable_codes
            .or(self.retryable_codes)
            .unwrap_or_default();
        let mut retry = RetryLayer::builder(self.classifier.clone())
            .retryable_codes(codes)
            .max_attempts(policy.max_attempts.unwrap_or(self.max_attempts))
            .backoff(
                policy
                    .backoff
                    .clone()
                    .unwrap_or_else(|| self.backoff.clone()),
            )
            .budget(policy.budget.clone().unwrap_or_else(|| budget.clone()));
        if let Some(statuses) = policy
            .retryable_statuses
            .as_ref()
            .or(self.retryable_statuses.as_ref())
        {
            retry = retry.retryable_statuses(statuses.iter().copied());
        }
        let retry = retry
            .unavailable(self.unavailable)
            .retry_overload_without_hint(self.retry_overload_without_hint)
            .retry_per_try_timeouts(
                policy
                    .per_try_timeouts
                    .unwrap_or(self.retry_per_try_timeouts),
            )
            .route(route)
            .client(&self.name)
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
        .header(self.key_header.clone())
        .format(self.key_format);
        Ok(RouteLayers {
            keys,
            // Named as the client's setting (the layer's own is `budget`).
            deadline: DeadlineLayer::new(deadline)
                .map_err(|e| ConfigError::new("deadline", e.reason().to_owned()))?,
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

/// With no bulkhead, calls take permits from a partition too large to fill, which records no
/// instruments (it is no bulkhead of the user's).
fn unlimited() -> Result<Bulkhead, ConfigError> {
    Bulkhead::builder()
        .limits(Limits {
            concurrency: crate::bulkhead::MAX_SIZE,
            queue: 0,
            max_wait: Duration::ZERO,
        })
        .unrecorded()
        .build()
}

/// Makes one endpoint's stack from its address.
type MakeEndpoint<E> = Box<dyn Fn(SocketAddr) -> E + Send + Sync>;

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
