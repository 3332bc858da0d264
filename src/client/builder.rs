//! [`ClientBuilder`]: the knobs of every layer and their defaults (validated and composed in
//! `compose.rs`).

use std::time::Duration;

use http::HeaderName;

use super::classifier::ClientClassifier;
use super::cluster::Cluster;
use super::route::{Route, RoutePolicy};
use super::target::Target;
use super::{Client, DEFAULT_CLIENT_NAME};
use crate::balance::Policy;
use crate::breaker::BreakerBuilder;
use crate::bulkhead::{Bulkhead, BulkheadBuilder, Limits};
use crate::classify::{GrpcClassifier, GrpcCodes, HttpClassifier};
use crate::deadline::{DEFAULT_BUDGET, DEFAULT_PER_TRY_TIMEOUT};
use crate::idempotency::DEFAULT_KEY_HEADER;
use crate::pool::PoolBuilder;
use crate::retry::{Backoff, DEFAULT_MAX_ATTEMPTS, RetryBudget, UnavailablePolicy};

/// Builds a [`Client`]: the canonical stack over a [`Target`], every layer optional, every
/// setting checked by [`build`](Self::build). Start from [`Client::http`] or [`Client::grpc`].
///
/// | setting | default | off |
/// |---|---|---|
/// | [`name`](Self::name) | `default`: the `client` label of its instruments, its budget's name | — |
/// | [`deadline`](Self::deadline) | 30 s per logical call | [`without_deadline`](Self::without_deadline) |
/// | [`per_try_timeout`](Self::per_try_timeout) | 10 s per attempt (written as `grpc-timeout` on gRPC) | [`without_per_try_timeout`](Self::without_per_try_timeout) |
/// | [`max_attempts`](Self::max_attempts) | 3 | [`without_retries`](Self::without_retries) |
/// | [`backoff`](Self::backoff) | full jitter, 50 ms base, 500 ms cap | — |
/// | [`retry_budget`](Self::retry_budget) | 20 % of calls + 10 retries/s over 10 s, shared by every route | — |
/// | [`retryable_codes`](Self::retryable_codes) (gRPC) | UNAVAILABLE | — |
/// | [`unavailable`](Self::unavailable) | 503 / UNAVAILABLE without a hint retried on another endpoint only | — |
/// | [`bulkhead`](Self::bulkhead) | 100 calls at once, 50 more waiting up to 1 s | [`without_bulkhead`](Self::without_bulkhead) |
/// | [`breaker`](Self::breaker) | per endpoint: 5 consecutive failures eject it for 30 s, 3 half-open probes | [`without_ejection`](Self::without_ejection) |
/// | [`max_ejection`](Self::max_ejection) | 1.0: no cap of its own (Envoy's `max_ejection_percent`) | [`without_ejection`](Self::without_ejection) |
/// | [`panic_threshold`](Self::panic_threshold) | 0.5: below half the endpoints taking calls, all take them (Envoy's) | `panic_threshold(0.0)` |
/// | [`retry_overload_without_hint`](Self::retry_overload_without_hint) | off: 429 / RESOURCE_EXHAUSTED retried only with a delay hint | — |
/// | [`retry_per_try_timeouts`](Self::retry_per_try_timeouts) | off: a gRPC attempt cut by the per-try timeout retried only if DEADLINE_EXCEEDED is retryable | — |
/// | [`pool`](Self::pool) | per endpoint: 10 connections, checkout 2 s, idle 30 s, lifetime 30 min | — |
/// | [`balance`](Self::balance) | round robin per call | — |
/// | [`refresh_interval`](Self::refresh_interval) | 30 s (sooner by DNS TTL) | — |
/// | [`max_staleness`](Self::max_staleness) | 5 min: the last known endpoints serve while resolution fails | — |
/// | [`drain_window`](Self::drain_window) | 60 s: a removed endpoint that comes back keeps its breaker and pool | — |
/// | [`idempotency_keys`](Self::idempotency_keys) | off (opt in per route) | — |
///
/// Settings apply in the order they are called: a knob set twice, or set and then turned off
/// with its `without_` form (or the other way round), keeps the last call. The knobs that touch
/// another say so: [`bulkhead`](Self::bulkhead) replaces the whole bulkhead (and the limits
/// [`concurrency`](Self::concurrency) set), `concurrency` keeps `bulkhead`'s partitions;
/// [`without_ejection`](Self::without_ejection) is `max_ejection(0.0)`;
/// [`without_retries`](Self::without_retries) is `max_attempts(1)`. A route's
/// [`RoutePolicy`] overrides the client's settings for its calls only; two `route` calls for
/// one route merge, the later policy's settings winning. Nothing is dropped without a
/// [`ConfigError`](crate::ConfigError): a setting that could not take effect is refused by
/// `build`.
pub struct ClientBuilder<C> {
    pub(super) target: Target,
    pub(super) name: String,
    pub(super) classifier: C,
    pub(super) deadline: Option<Duration>,
    pub(super) per_try: Option<Duration>,
    pub(super) timeout_header: Option<HeaderName>,
    pub(super) on_attempt: Option<crate::deadline::SendHook>,
    pub(super) max_attempts: u32,
    pub(super) retryable_codes: Option<GrpcCodes>,
    pub(super) backoff: Backoff,
    pub(super) budget: Option<RetryBudget>,
    pub(super) unavailable: UnavailablePolicy,
    pub(super) bulkhead: Option<BulkheadBuilder>,
    pub(super) partition_header: Option<HeaderName>,
    pub(super) breaker: Option<BreakerBuilder>,
    pub(super) max_ejection: Option<f64>,
    pub(super) panic_threshold: Option<f64>,
    pub(super) retry_overload_without_hint: bool,
    pub(super) retry_per_try_timeouts: bool,
    pub(super) pool: PoolBuilder,
    pub(super) policy: Policy,
    pub(super) refresh_interval: Option<Duration>,
    pub(super) max_staleness: Option<Duration>,
    pub(super) drain_window: Option<Duration>,
    pub(super) keys: bool,
    pub(super) key_header: HeaderName,
    pub(super) key_format: crate::idempotency::KeyFormat,
    pub(super) replay_limit: usize,
    pub(super) retryable_statuses: Option<Vec<u16>>,
    pub(super) wait_for_ready: bool,
    pub(super) routes: Vec<(Route, RoutePolicy)>,
    pub(super) clusters: Vec<(String, Cluster)>,
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
            name: DEFAULT_CLIENT_NAME.to_owned(),
            classifier,
            deadline: Some(DEFAULT_BUDGET),
            per_try: Some(DEFAULT_PER_TRY_TIMEOUT),
            timeout_header: None,
            on_attempt: None,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            retryable_codes: None,
            backoff: Backoff::default(),
            budget: None,
            unavailable: UnavailablePolicy::OtherEndpoint,
            bulkhead: Some(Bulkhead::builder()),
            partition_header: None,
            breaker: None,
            max_ejection: None,
            panic_threshold: None,
            retry_overload_without_hint: false,
            retry_per_try_timeouts: false,
            pool: PoolBuilder::new(),
            policy: Policy::RoundRobin,
            refresh_interval: None,
            max_staleness: None,
            drain_window: None,
            keys: false,
            key_header: DEFAULT_KEY_HEADER,
            key_format: crate::idempotency::KeyFormat::Bare,
            replay_limit: crate::retry::DEFAULT_REPLAY_LIMIT,
            retryable_statuses: None,
            wait_for_ready: false,
            routes: Vec::new(),
            clusters: Vec::new(),
        }
    }

    /// The client's name (default [`DEFAULT_CLIENT_NAME`], `default`): the `client` label of
    /// its call, attempt, retry and deadline instruments (feature `metrics`) and the name of
    /// its retry budget unless [`retry_budget`](Self::retry_budget) gives one, so two clients
    /// (two dependencies) are told apart on a dashboard. Name each client after what it calls
    /// (`payments`, `inventory`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
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

    /// Calls `hook` with each attempt's headers as it goes out (resends included), with the
    /// attempt's `stanchion.attempt` span current: where a propagator injects `traceparent` per
    /// attempt ([`AttemptLayer::on_send`](crate::deadline::AttemptLayer::on_send)). Default: none.
    pub fn on_attempt(
        mut self,
        hook: impl Fn(&mut http::HeaderMap) + Send + Sync + 'static,
    ) -> Self {
        self.on_attempt = Some(crate::deadline::SendHook::new(hook));
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

    /// Retry 429 / RESOURCE_EXHAUSTED even without a delay hint (default off: an overloaded
    /// server that gives no `Retry-After` / `grpc-retry-pushback-ms` is not retried)
    /// ([`RetryLayerBuilder::retry_overload_without_hint`](crate::retry::RetryLayerBuilder::retry_overload_without_hint)).
    pub fn retry_overload_without_hint(mut self, retry: bool) -> Self {
        self.retry_overload_without_hint = retry;
        self
    }

    /// Retry an attempt cut by the per-try timeout whatever its gRPC code (default off), as
    /// gRPC does for a policy with `perAttemptRecvTimeout`
    /// ([`RetryLayerBuilder::retry_per_try_timeouts`](crate::retry::RetryLayerBuilder::retry_per_try_timeouts));
    /// a route may say otherwise ([`RoutePolicy::retry_per_try_timeouts`]).
    pub fn retry_per_try_timeouts(mut self, retry: bool) -> Self {
        self.retry_per_try_timeouts = retry;
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

    /// HTTP only: the response statuses retried on routes that do not say otherwise (default
    /// 408, 429, 500, 502, 503, 504:
    /// [`DEFAULT_RETRYABLE_STATUSES`](crate::retry::DEFAULT_RETRYABLE_STATUSES)), each 100 to
    /// 999. A gRPC client refuses
    /// this at build time.
    pub fn retryable_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.retryable_statuses = Some(statuses.into_iter().collect());
        self
    }

    /// gRPC's wait-for-ready for routes that do not say otherwise (default off): while no
    /// endpoint can take a call, it waits for one within its deadline instead of failing with
    /// [`NoEndpoints`](crate::Error::NoEndpoints) ([`RoutePolicy::wait_for_ready`]).
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.wait_for_ready = wait;
        self
    }

    /// Declares the [`Cluster`] `name`, for routes to send their calls to
    /// ([`RoutePolicy::cluster`]): its own target, pools, breakers and balancing, each unset
    /// one the client's. Declaring a name again replaces the cluster. `build` refuses a
    /// cluster no route names, and a route naming a cluster not declared.
    pub fn cluster(mut self, name: impl Into<String>, cluster: Cluster) -> Self {
        let name = name.into();
        self.clusters.retain(|(n, _)| *n != name);
        self.clusters.push((name, cluster));
        self
    }

    /// The bulkhead: its default limits and its named partitions (which routes can take).
    pub fn bulkhead(mut self, bulkhead: BulkheadBuilder) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// The default partition's limits. Keeps the partitions already declared with
    /// [`bulkhead`](Self::bulkhead) (and turns the bulkhead back on after
    /// [`without_bulkhead`](Self::without_bulkhead)); a later `bulkhead(..)` replaces the
    /// whole bulkhead, these limits included.
    pub fn concurrency(mut self, limits: Limits) -> Self {
        let bulkhead = self.bulkhead.take().unwrap_or_else(Bulkhead::builder);
        self.bulkhead = Some(bulkhead.limits(limits));
        self
    }

    /// Calls without a route partition take the partition named by this request header (a
    /// tenant id, say): a declared partition of that name, else one of
    /// [`BulkheadBuilder::per_key`]'s (an unknown key with no per-key room shares the default
    /// partition). `build` refuses it with no bulkhead, or a bulkhead with neither declared
    /// partitions nor `per_key`, where every key would share the default partition.
    pub fn partition_by_header(mut self, name: HeaderName) -> Self {
        self.partition_header = Some(name);
        self
    }

    /// No bulkhead: calls are not limited or queued by the client.
    pub fn without_bulkhead(mut self) -> Self {
        self.bulkhead = None;
        self
    }

    /// The template of every endpoint's circuit breaker. A template that names no trip rule
    /// keeps the ejection rule (5 consecutive failures): see
    /// [`BalancerBuilder::breaker`](crate::balance::BalancerBuilder::breaker).
    pub fn breaker(mut self, breaker: BreakerBuilder) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The ejection cap: the largest share of endpoints skipped at once for an open breaker,
    /// in `[0, 1]` (Envoy's `max_ejection_percent`; see
    /// [`BalancerBuilder::max_ejection`](crate::balance::BalancerBuilder::max_ejection)).
    pub fn max_ejection(mut self, share: f64) -> Self {
        self.max_ejection = Some(share);
        self
    }

    /// The panic threshold: below this share of endpoints taking calls, every endpoint takes
    /// them; `0.0` turns panic mode off (Envoy's `healthy_panic_threshold`; see
    /// [`BalancerBuilder::panic_threshold`](crate::balance::BalancerBuilder::panic_threshold)).
    pub fn panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = Some(share);
        self
    }

    /// Endpoints are never ejected for failing (breakers still count, for the stats): the
    /// ejection cap at zero.
    pub fn without_ejection(self) -> Self {
        self.max_ejection(0.0)
    }

    /// The template of every endpoint's connection pool (a [`Cluster`] may have its own).
    /// With a [`ReqwestConnector`](crate::pool::ReqwestConnector) the size limits nothing:
    /// each endpoint's reqwest client keeps connections of its own, so bound concurrency with
    /// the bulkhead instead (docs/pool.md, § Connectors and connections).
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

    /// How long the last known endpoints keep serving while resolution fails, before they are
    /// given up ([`BalancerBuilder::max_staleness`](crate::balance::BalancerBuilder::max_staleness)).
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = Some(staleness);
        self
    }

    /// How long a removed endpoint's breaker and pool are kept for its return
    /// ([`BalancerBuilder::drain_window`](crate::balance::BalancerBuilder::drain_window)).
    pub fn drain_window(mut self, window: Duration) -> Self {
        self.drain_window = Some(window);
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

    /// How minted keys are written (default bare, as deployed APIs take them; quoted per the
    /// IETF draft as an option — [`KeyFormat`](crate::idempotency::KeyFormat)).
    pub fn idempotency_key_format(mut self, format: crate::idempotency::KeyFormat) -> Self {
        self.key_format = format;
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
            existing.merge(policy);
        } else {
            self.routes.push((route, policy));
        }
        self
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
        assert_eq!(b.panic_threshold, None);
        assert!(!b.retry_overload_without_hint);
        assert_eq!(
            (
                crate::balance::DEFAULT_MAX_EJECTION,
                crate::balance::DEFAULT_PANIC_THRESHOLD
            ),
            (1.0, 0.5)
        );
        assert_eq!(b.policy, Policy::RoundRobin);
        assert!(!b.keys);
        assert_eq!(b.key_header, DEFAULT_KEY_HEADER);
        assert_eq!(b.key_format, crate::idempotency::KeyFormat::Bare);
        assert_eq!(b.replay_limit, 64 * 1024);
        assert!(b.routes.is_empty());
        // Left to the balancer, whose defaults are the documented ones.
        assert_eq!((b.max_staleness, b.drain_window), (None, None));
        assert_eq!(
            crate::balance::DEFAULT_MAX_STALENESS,
            Duration::from_secs(300)
        );
        assert_eq!(
            crate::balance::DEFAULT_DRAIN_WINDOW,
            Duration::from_secs(60)
        );

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
        let bulkhead = client.bulkhead().unwrap().default_stats();
        assert_eq!(
            bulkhead.limits,
            Limits {
                concurrency: 100,
                queue: 50,
                max_wait: Duration::from_secs(1)
            }
        );
    }

    /// The last call of a knob wins, whichever form it takes: each pair below in both orders.
    #[test]
    fn the_last_call_of_a_knob_wins() {
        type B = ClientBuilder<HttpClassifier>;
        #[allow(clippy::type_complexity)]
        let pairs: Vec<(fn(B) -> B, fn(B) -> B, fn(&B) -> String)> = vec![
            (
                |b| b.deadline(Duration::from_secs(7)),
                B::without_deadline,
                |b| format!("{:?}", b.deadline),
            ),
            (
                |b| b.per_try_timeout(Duration::from_secs(7)),
                B::without_per_try_timeout,
                |b| format!("{:?}", b.per_try),
            ),
            (
                |b| b.max_attempts(5),
                B::without_retries,
                |b| format!("{:?}", b.max_attempts),
            ),
            (
                |b| b.concurrency(Limits::default()),
                B::without_bulkhead,
                |b| format!("{:?}", b.bulkhead.is_some()),
            ),
            (
                |b| b.max_ejection(0.3),
                B::without_ejection,
                |b| format!("{:?}", b.max_ejection),
            ),
            (
                |b| b.idempotency_keys(true),
                |b| b.idempotency_keys(false),
                |b| format!("{:?}", b.keys),
            ),
        ];
        for (i, (set, other, read)) in pairs.into_iter().enumerate() {
            let last_set = read(&set(other(Client::http(target()))));
            let last_other = read(&other(set(Client::http(target()))));
            assert_eq!(
                last_set,
                read(&set(Client::http(target()))),
                "pair {i}: set last"
            );
            assert_eq!(
                last_other,
                read(&other(Client::http(target()))),
                "pair {i}: other last"
            );
            assert_ne!(last_set, last_other, "pair {i} must differ");
        }
        // `bulkhead(..)` after `concurrency(..)` replaces it; `concurrency(..)` after keeps
        // `bulkhead(..)`'s partitions (tests/api.rs builds both).
        let small = Limits {
            concurrency: 3,
            queue: 0,
            max_wait: Duration::ZERO,
        };
        let replaced = Client::http(target())
            .concurrency(small)
            .bulkhead(Bulkhead::builder())
            .build_with(|_| ())
            .unwrap();
        assert_eq!(
            replaced.bulkhead().unwrap().default_stats().limits,
            Limits::default()
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
