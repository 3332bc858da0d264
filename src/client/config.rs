//! [`ClientConfig`]: the whole client configuration as data (feature `serde`) — every knob of
//! every layer, each cluster and each route — read from any self-describing serde format and
//! written back.
//!
//! Why data and builders both: code is where a client is first written; a file (or a config
//! service) is where it is tuned in production without a rebuild. The two meet here, exactly:
//! [`ClientBuilder::config`] writes what a builder holds, [`ClientBuilder::configure`] takes it
//! back, and the client built either way makes the same decisions (`tests/config.rs`). The
//! defaults are the builder's, written once in docs/configuration.md and checked against
//! [`ClientConfig::default`] by a test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use super::Client;
use super::builder::ClientBuilder;
use super::classifier::ClientClassifier;
use super::cluster::Cluster;
use super::route::{Route, RouteKind, RoutePolicy};
use super::target::Target;
use crate::balance::{DEFAULT_MAX_EJECTION, DEFAULT_PANIC_THRESHOLD, Policy};
use crate::breaker::BreakerBuilder;
use crate::bulkhead::BulkheadBuilder;
use crate::classify::{GrpcClassifier, GrpcCodes, HttpClassifier};
use crate::error::ConfigError;
use crate::idempotency::KeyFormat;
use crate::pool::PoolBuilder;
use crate::retry::{Backoff, RetryBudget, UnavailablePolicy};

/// The whole configuration of a [`Client`], as data: what every [`ClientBuilder`] method sets,
/// with the same names and defaults, plus the clusters and routes.
///
/// Durations are text with a unit (`"250ms"`, `"30s"`, `"5m"`); `"off"` (or `null`) turns off
/// what a builder's `without_…` turns off (`deadline`, `per_try_timeout`, `bulkhead`; a
/// route's `deadline` and `per_try_timeout`), and is how they are written — formats without
/// nulls (TOML) keep it; a field left out keeps its default; an unknown field is an error.
/// Read it with [`from_json`](Self::from_json) or
/// [`deserialize_from`](Self::deserialize_from) (any self-describing serde format: JSON,
/// TOML, YAML; errors name the field's path), then [`Client::http_from`] / [`Client::grpc_from`]
/// or [`ClientBuilder::configure`]. Values are checked by `build`, with the builders' errors,
/// each naming where the setting sits (`clusters.health.pool.max_size`, `routes[1].deadline`).
///
/// ```
/// use stanchion::client::{Client, ClientConfig};
///
/// let config = ClientConfig::from_json(r#"{
///     "name": "payments",
///     "target": {"addrs": ["127.0.0.1:8443"]},
///     "deadline": "5s",
///     "max_attempts": 4,
///     "routes": [
///         {"route": {"path_prefix": "/v1/charges"}, "idempotency_keys": true},
///         {"route": {"path_prefix": "/healthz"}, "cluster": "health", "max_attempts": 1}
///     ],
///     "clusters": {"health": {"pool": {"max_size": 2}}}
/// }"#).unwrap();
/// let builder = Client::http_from(config.clone()).unwrap();
/// // What the builder holds is what was read, defaults filled in.
/// assert_eq!(builder.config().max_attempts, 4);
/// assert_eq!(builder.config().routes.len(), 2);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ClientConfig {
    /// [`ClientBuilder::name`].
    pub name: String,
    /// Where the endpoints come from; `None`: the target given in code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetConfig>,
    /// [`ClientBuilder::deadline`]; `None` (`"off"`): [`ClientBuilder::without_deadline`].
    #[serde(with = "crate::config::duration::off")]
    pub deadline: Option<Duration>,
    /// [`ClientBuilder::per_try_timeout`]; `None` (`"off"`): without one.
    #[serde(with = "crate::config::duration::off")]
    pub per_try_timeout: Option<Duration>,
    /// [`ClientBuilder::timeout_header`].
    #[serde(with = "crate::config::opt_header")]
    pub timeout_header: Option<HeaderName>,
    /// [`ClientBuilder::max_attempts`].
    pub max_attempts: u32,
    /// [`ClientBuilder::backoff`]: `{"base": "50ms", "cap": "500ms", "jitter": "full"}`.
    pub backoff: Backoff,
    /// [`ClientBuilder::retry_budget`]; `None`: the client's own (20 % + 10/s over 10 s, named
    /// after the client). `{"mode": "ratio", …}` or `{"mode": "throttling", …}`.
    pub retry_budget: Option<RetryBudget>,
    /// [`ClientBuilder::retryable_codes`] (gRPC), as names; `None`: UNAVAILABLE.
    #[serde(with = "crate::config::opt_codes")]
    pub retryable_codes: Option<GrpcCodes>,
    /// [`ClientBuilder::retryable_statuses`] (HTTP); `None`: 408, 429, 500, 502, 503, 504.
    pub retryable_statuses: Option<Vec<u16>>,
    /// [`ClientBuilder::unavailable`]: `"other_endpoint"`, `"any_endpoint"` or `"never"`.
    pub unavailable: UnavailablePolicy,
    /// [`ClientBuilder::retry_overload_without_hint`].
    pub retry_overload_without_hint: bool,
    /// [`ClientBuilder::retry_per_try_timeouts`].
    pub retry_per_try_timeouts: bool,
    /// [`ClientBuilder::wait_for_ready`].
    pub wait_for_ready: bool,
    /// [`ClientBuilder::bulkhead`]; `None` (`"off"`): [`ClientBuilder::without_bulkhead`].
    #[serde(with = "crate::config::switch")]
    pub bulkhead: Option<BulkheadBuilder>,
    /// [`ClientBuilder::partition_by_header`].
    #[serde(with = "crate::config::opt_header")]
    pub partition_by_header: Option<HeaderName>,
    /// [`ClientBuilder::breaker`]: the template of every endpoint's breaker; `None`: 5
    /// consecutive failures eject an endpoint for 30 s.
    pub breaker: Option<BreakerBuilder>,
    /// [`ClientBuilder::max_ejection`].
    pub max_ejection: f64,
    /// [`ClientBuilder::panic_threshold`].
    pub panic_threshold: f64,
    /// [`ClientBuilder::pool`].
    pub pool: PoolBuilder,
    /// [`ClientBuilder::balance`]: `"round_robin"` or `"least_request"`.
    pub balance: Policy,
    /// [`ClientBuilder::refresh_interval`].
    #[serde(with = "crate::config::duration")]
    pub refresh_interval: Duration,
    /// [`ClientBuilder::max_staleness`].
    #[serde(with = "crate::config::duration")]
    pub max_staleness: Duration,
    /// [`ClientBuilder::drain_window`].
    #[serde(with = "crate::config::duration")]
    pub drain_window: Duration,
    /// [`ClientBuilder::idempotency_keys`].
    pub idempotency_keys: bool,
    /// [`ClientBuilder::idempotency_header`].
    #[serde(with = "crate::config::header")]
    pub idempotency_header: HeaderName,
    /// [`ClientBuilder::idempotency_key_format`]: `"bare"` or `"quoted"`.
    pub idempotency_key_format: KeyFormat,
    /// [`ClientBuilder::replay_limit`], in bytes.
    pub replay_limit: usize,
    /// [`ClientBuilder::cluster`], by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// [`ClientBuilder::route`], in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

/// Where endpoints come from: `{"addrs": ["10.0.0.7:8080"]}`,
/// `{"dns": {"name": "payments.svc", "port": 8443}}` (feature `dns`), or `"code"`: a resolver
/// of your own, which is not data — [`ClientBuilder::config`] writes `"code"` for it, and
/// [`ClientBuilder::configure`] keeps the one the builder holds (an error where it holds none,
/// never another target in its place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetConfig {
    /// [`Target::addrs`].
    Addrs(Vec<SocketAddr>),
    /// [`Target::dns`].
    Dns {
        /// The name to resolve.
        name: String,
        /// The port of every endpoint.
        port: u16,
    },
    /// A resolver given in code ([`Target::resolver`]).
    Code,
}

impl TargetConfig {
    fn target(&self) -> Result<Target, ConfigError> {
        match self {
            // Kept from the builder by `configure`, refused by `builder`: never made here.
            TargetConfig::Code => Err(ConfigError::new(
                "code",
                "a resolver given in code is not data",
            )),
            TargetConfig::Addrs(addrs) => Ok(Target::addrs(addrs.iter().copied())),
            #[cfg(feature = "dns")]
            TargetConfig::Dns { name, port } => Target::dns(name.as_str(), *port),
            #[cfg(not(feature = "dns"))]
            TargetConfig::Dns { .. } => Err(ConfigError::new(
                "dns",
                "a DNS target needs stanchion's `dns` feature",
            )),
        }
    }
}

/// A [`Cluster`] as data; each field left out is the client's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// [`Cluster::target`]; `None`: the client's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetConfig>,
    /// [`Cluster::pool`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolBuilder>,
    /// [`Cluster::breaker`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerBuilder>,
    /// [`Cluster::balance`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<Policy>,
    /// [`Cluster::max_ejection`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ejection: Option<f64>,
}

/// Which calls a route covers: `{"path_prefix": "/v1/payments"}`,
/// `{"grpc_service": "pkg.Svc"}` or `{"grpc_method": {"service": "pkg.Svc", "method": "M"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
#[non_exhaustive]
pub enum RouteMatch {
    /// [`Route::path_prefix`].
    PathPrefix(String),
    /// [`Route::grpc_service`].
    GrpcService(String),
    /// [`Route::grpc_method`].
    GrpcMethod {
        /// The service (`pkg.Svc`).
        service: String,
        /// The method.
        method: String,
    },
}

impl RouteMatch {
    fn route(&self) -> Route {
        match self {
            RouteMatch::PathPrefix(p) => Route::path_prefix(p.as_str()),
            RouteMatch::GrpcService(s) => Route::grpc_service(s),
            RouteMatch::GrpcMethod { service, method } => Route::grpc_method(service, method),
        }
    }

    fn of(route: &Route) -> RouteMatch {
        match route.kind() {
            RouteKind::Method { service, method } => RouteMatch::GrpcMethod {
                service: service.to_owned(),
                method: method.to_owned(),
            },
            RouteKind::Service(s) => RouteMatch::GrpcService(s.to_owned()),
            RouteKind::Prefix(p) => RouteMatch::PathPrefix(p.to_owned()),
        }
    }
}

/// One route and what its [`RoutePolicy`] changes; each field left out is the client's.
/// `deadline` and `per_try_timeout` may be `"off"` (or `null`): none of the route's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteConfig {
    /// Which calls.
    pub route: RouteMatch,
    /// [`RoutePolicy::deadline`] (`Some(None)`, `"off"`: [`RoutePolicy::without_deadline`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::config::duration::setting"
    )]
    pub deadline: Option<Option<Duration>>,
    /// [`RoutePolicy::per_try_timeout`] (`"off"`: without one).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::config::duration::setting"
    )]
    pub per_try_timeout: Option<Option<Duration>>,
    /// [`RoutePolicy::max_attempts`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// [`RoutePolicy::retryable_codes`] (gRPC), as names.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::config::opt_codes"
    )]
    pub retryable_codes: Option<GrpcCodes>,
    /// [`RoutePolicy::retryable_statuses`] (HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable_statuses: Option<Vec<u16>>,
    /// [`RoutePolicy::backoff`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// [`RoutePolicy::retry_budget`]: a budget of the route's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// [`RoutePolicy::idempotency_keys`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_keys: Option<bool>,
    /// [`RoutePolicy::partition`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// [`RoutePolicy::cluster`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// [`RoutePolicy::wait_for_ready`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_ready: Option<bool>,
    /// [`RoutePolicy::retry_per_try_timeouts`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_per_try_timeouts: Option<bool>,
}

impl RouteConfig {
    /// A route covering `route` that changes nothing yet.
    pub fn new(route: RouteMatch) -> RouteConfig {
        RouteConfig::of(&route.route(), &RoutePolicy::new())
    }

    fn of(route: &Route, p: &RoutePolicy) -> RouteConfig {
        RouteConfig {
            route: RouteMatch::of(route),
            deadline: p.deadline,
            per_try_timeout: p.per_try,
            max_attempts: p.max_attempts,
            retryable_codes: p.retryable_codes,
            retryable_statuses: p.retryable_statuses.clone(),
            backoff: p.backoff.clone(),
            retry_budget: p.budget.clone(),
            idempotency_keys: p.idempotency_keys,
            partition: p.partition.clone(),
            cluster: p.cluster.clone(),
            wait_for_ready: p.wait_for_ready,
            retry_per_try_timeouts: p.per_try_timeouts,
        }
    }

    fn policy(&self) -> RoutePolicy {
        RoutePolicy {
            deadline: self.deadline,
            per_try: self.per_try_timeout,
            max_attempts: self.max_attempts,
            retryable_codes: self.retryable_codes,
            retryable_statuses: self.retryable_statuses.clone(),
            backoff: self.backoff.clone(),
            budget: self.retry_budget.clone(),
            idempotency_keys: self.idempotency_keys,
            partition: self.partition.clone(),
            cluster: self.cluster.clone(),
            wait_for_ready: self.wait_for_ready,
            per_try_timeouts: self.retry_per_try_timeouts,
        }
    }
}

/// The builder's defaults ([`Client::http`]'s), with no target.
impl Default for ClientConfig {
    fn default() -> Self {
        let mut config = Client::http(Target::addrs([])).config();
        config.target = None;
        config
    }
}

impl ClientConfig {
    /// Reads a configuration from JSON. Errors name the field's path
    /// (`clusters.health.pool.max_size`) and say what was wrong.
    pub fn from_json(text: &str) -> Result<ClientConfig, ConfigError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let config = ClientConfig::deserialize_from(&mut de)?;
        de.end()
            .map_err(|e| ConfigError::at_path("config", e.to_string()))?;
        Ok(config)
    }

    /// Reads a configuration from any self-describing serde format (TOML, YAML, …: its
    /// `Deserializer`), with errors that name the field's path as
    /// [`from_json`](Self::from_json)'s do. Formats that are not self-describing (bincode,
    /// postcard) are not supported: some settings take more than one shape (`"off"` or a
    /// map; a status code's name or number).
    pub fn deserialize_from<'de, D>(deserializer: D) -> Result<ClientConfig, ConfigError>
    where
        D: serde::Deserializer<'de>,
    {
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." {
                "config".to_owned()
            } else {
                path
            };
            ConfigError::at_path(&path, e.into_inner().to_string())
        })
    }

    fn builder<C: ClientClassifier>(self, classifier: C) -> Result<ClientBuilder<C>, ConfigError> {
        let target = match &self.target {
            None | Some(TargetConfig::Code) => {
                return Err(ConfigError::new(
                    "target",
                    "the configuration names no target as data (give addrs or dns, or build \
                     with Client::http(target).configure(config))",
                ));
            }
            Some(target) => target.target().map_err(|e| e.within("target"))?,
        };
        ClientBuilder::new(target, classifier).configure(self)
    }
}

impl Client<(), ()> {
    /// A client for HTTP calls configured by `config`, whose `target` must be set.
    pub fn http_from(config: ClientConfig) -> Result<ClientBuilder<HttpClassifier>, ConfigError> {
        config.builder(HttpClassifier::new())
    }

    /// A client for gRPC calls configured by `config`, whose `target` must be set.
    pub fn grpc_from(config: ClientConfig) -> Result<ClientBuilder<GrpcClassifier>, ConfigError> {
        config.builder(GrpcClassifier::new())
    }
}

impl<C: ClientClassifier> ClientBuilder<C> {
    /// What this builder holds, as data: every knob, each cluster and each route. Targets
    /// made by [`Target::addrs`] and [`Target::dns`] are written as such; a resolver of your
    /// own is not data: the client's is left out (`target` is `None`), a cluster's is written
    /// as [`TargetConfig::Code`]. Not written either: the [`on_attempt`](Self::on_attempt)
    /// hook, a backoff's seed. A retry budget is written as its settings: one read back is a
    /// new budget (routes that shared one handle get one each).
    pub fn config(&self) -> ClientConfig {
        ClientConfig {
            name: self.name.clone(),
            target: self.target.data.clone(),
            deadline: self.deadline,
            per_try_timeout: self.per_try,
            timeout_header: self.timeout_header.clone(),
            max_attempts: self.max_attempts,
            backoff: self.backoff.clone(),
            retry_budget: self.budget.clone(),
            retryable_codes: self.retryable_codes,
            retryable_statuses: self.retryable_statuses.clone(),
            unavailable: self.unavailable,
            retry_overload_without_hint: self.retry_overload_without_hint,
            retry_per_try_timeouts: self.retry_per_try_timeouts,
            wait_for_ready: self.wait_for_ready,
            bulkhead: self.bulkhead.clone(),
            partition_by_header: self.partition_header.clone(),
            breaker: self.breaker.clone(),
            max_ejection: self.max_ejection.unwrap_or(DEFAULT_MAX_EJECTION),
            panic_threshold: self.panic_threshold.unwrap_or(DEFAULT_PANIC_THRESHOLD),
            pool: self.pool.clone(),
            balance: self.policy,
            refresh_interval: self
                .refresh_interval
                .unwrap_or(crate::balance::DEFAULT_REFRESH_INTERVAL),
            max_staleness: self
                .max_staleness
                .unwrap_or(crate::balance::DEFAULT_MAX_STALENESS),
            drain_window: self
                .drain_window
                .unwrap_or(crate::balance::DEFAULT_DRAIN_WINDOW),
            idempotency_keys: self.keys,
            idempotency_header: self.key_header.clone(),
            idempotency_key_format: self.key_format,
            replay_limit: self.replay_limit,
            clusters: self
                .clusters
                .iter()
                .map(|(name, c)| {
                    (
                        name.clone(),
                        ClusterConfig {
                            target: c
                                .target
                                .as_ref()
                                .map(|t| t.data.clone().unwrap_or(TargetConfig::Code)),
                            pool: c.pool.clone(),
                            breaker: c.breaker.clone(),
                            balance: c.policy,
                            max_ejection: c.max_ejection,
                        },
                    )
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|(route, policy)| RouteConfig::of(route, policy))
                .collect(),
        }
    }

    /// Takes every setting from `config`, replacing what the builder held — its clusters and
    /// routes included. Kept from the builder: its target when `config` names none or
    /// [`TargetConfig::Code`], a cluster's target of its own when the config's cluster of that
    /// name says [`TargetConfig::Code`] (a cluster whose `target` is left out resolves the
    /// client's), the classifier, the [`on_attempt`](Self::on_attempt) hook.
    ///
    /// # Errors
    /// A target or route the config names that cannot be made (a DNS target without the `dns`
    /// feature, `"code"` for a cluster the builder holds no resolver for, a route listed
    /// twice), with its path. Every value is checked by [`build`](Self::build), as the
    /// builder's own are.
    pub fn configure(mut self, config: ClientConfig) -> Result<Self, ConfigError> {
        match &config.target {
            None | Some(TargetConfig::Code) => {}
            Some(target) => self.target = target.target().map_err(|e| e.within("target"))?,
        }
        let mut old_clusters = std::mem::take(&mut self.clusters);
        for (name, c) in config.clusters {
            let target = match &c.target {
                None => None,
                Some(TargetConfig::Code) => Some(
                    old_clusters
                        .iter_mut()
                        .find(|(n, _)| *n == name)
                        .and_then(|(_, old)| old.target.take())
                        .ok_or_else(|| {
                            ConfigError::at_path(
                                &format!("clusters.{name}.target"),
                                "names a resolver given in code, and the builder holds no \
                                 cluster of this name with one",
                            )
                        })?,
                ),
                Some(t) => Some(
                    t.target()
                        .map_err(|e| e.within(format_args!("clusters.{name}.target")))?,
                ),
            };
            self.clusters.push((
                name,
                Cluster {
                    target,
                    pool: c.pool,
                    breaker: c.breaker,
                    policy: c.balance,
                    max_ejection: c.max_ejection,
                },
            ));
        }
        // Budgets are shared by name: routes whose budgets have one name of their own (not the
        // default `default`) and the same settings — clones of one handle, when written —
        // share one budget again, and the client's too. Unnamed budgets stay apart.
        let mut budgets: Vec<RetryBudget> = config.retry_budget.iter().cloned().collect();
        let mut shared = |budget: &RetryBudget| -> RetryBudget {
            match budgets.iter().find(|b| {
                b.name() != crate::retry::DEFAULT_BUDGET_NAME
                    && b.name() == budget.name()
                    && b.mode() == budget.mode()
            }) {
                Some(seen) => seen.clone(),
                None => {
                    budgets.push(budget.clone());
                    budget.clone()
                }
            }
        };
        let mut routes: Vec<(Route, RoutePolicy)> = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let route = r.route.route();
            if routes.iter().any(|(seen, _)| *seen == route) {
                return Err(ConfigError::new(
                    "route",
                    format!(
                        "{:?} is listed twice (one entry per route)",
                        route.pattern()
                    ),
                )
                .within(format_args!("routes[{i}]")));
            }
            let mut policy = r.policy();
            policy.budget = policy.budget.as_ref().map(&mut shared);
            routes.push((route, policy));
        }
        self.routes = routes;
        self.name = config.name;
        self.deadline = config.deadline;
        self.per_try = config.per_try_timeout;
        self.timeout_header = config.timeout_header;
        self.max_attempts = config.max_attempts;
        self.backoff = config.backoff;
        // The client's own, if the config gives one, is the first of `budgets`.
        self.budget = match config.retry_budget {
            Some(_) => budgets.into_iter().next(),
            None => None,
        };
        self.retryable_codes = config.retryable_codes;
        self.retryable_statuses = config.retryable_statuses;
        self.unavailable = config.unavailable;
        self.retry_overload_without_hint = config.retry_overload_without_hint;
        self.retry_per_try_timeouts = config.retry_per_try_timeouts;
        self.wait_for_ready = config.wait_for_ready;
        self.bulkhead = config.bulkhead;
        self.partition_header = config.partition_by_header;
        self.breaker = config.breaker;
        self.max_ejection = Some(config.max_ejection);
        self.panic_threshold = Some(config.panic_threshold);
        self.pool = config.pool;
        self.policy = config.balance;
        self.refresh_interval = Some(config.refresh_interval);
        self.max_staleness = Some(config.max_staleness);
        self.drain_window = Some(config.drain_window);
        self.keys = config.idempotency_keys;
        self.key_header = config.idempotency_header;
        self.key_format = config.idempotency_key_format;
        self.replay_limit = config.replay_limit;
        Ok(self)
    }
}
