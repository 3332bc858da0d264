//! Building a [`Client`]: every setting validated, then each route's stack composed in the
//! canonical order over one shared balancer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::builder::ClientBuilder;
use super::classifier::ClientClassifier;
use super::route::RoutePolicy;
use super::{Client, RoutePartition, RouteStack, Routes};
use crate::balance::Balancer;
use crate::bulkhead::{Bulkhead, BulkheadBuilder, BulkheadLayer, Limits};
use crate::deadline::{AttemptLayer, DeadlineLayer, MAX_BUDGET};
use crate::error::ConfigError;
use crate::idempotency::IdempotencyKeyLayer;
use crate::pool::Pool;
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
        let pool = self.pool.clone().settings()?;
        let connector = connector.replaying();
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
        let grpc = self.classifier.is_grpc();
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
            .transpose()?;
        let budget = match self.budget.clone() {
            Some(budget) => budget,
            None => RetryBudget::builder().name(self.name.clone()).build()?,
        };
        let default = RoutePolicy::default();
        let mut stacks = Vec::with_capacity(self.routes.len());
        // Check every layer before starting the balancer (its resolution runs in the background).
        let layers = std::iter::once((super::DEFAULT_ROUTE, &default))
            .chain(self.routes.iter().map(|(r, p)| (r.pattern(), p)))
            .map(|(route, policy)| self.layers(route, policy, bulkhead.as_ref(), &budget))
            .collect::<Result<Vec<_>, _>>()?;

        let mut balancer = Balancer::builder(self.target.resolver, make, self.classifier.clone())
            .policy(self.policy);
        if let Some(breaker) = self.breaker {
            balancer = balancer.breaker(breaker);
        }
        if let Some(share) = self.max_ejection {
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
        let retry = RetryLayer::builder(self.classifier.clone())
            .retryable_codes(codes)
            .max_attempts(policy.max_attempts.unwrap_or(self.max_attempts))
            .backoff(self.backoff.clone())
            .budget(budget.clone())
            .unavailable(self.unavailable)
            .retry_overload_without_hint(self.retry_overload_without_hint)
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
