//! [`BalancerBuilder`]: the balancer's settings, their defaults and validation.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::endpoints::{Policy, Snapshot};
use super::resolve::Resolve;
use super::shared::{MakeEndpoint, ResolverCounters, Shared};
use super::{
    Balancer, DEFAULT_DRAIN_WINDOW, DEFAULT_EJECTION_FAILURES, DEFAULT_MAX_EJECTION,
    DEFAULT_MAX_STALENESS, DEFAULT_PANIC_THRESHOLD, DEFAULT_REFRESH_INTERVAL, MIN_REFRESH_INTERVAL,
};
use crate::breaker::{BreakerBuilder, CircuitBreaker};
use crate::error::{ConfigError, check_duration};
use crate::rng::Jitter;

/// Builds a [`Balancer`]; see [`Balancer::builder`].
pub struct BalancerBuilder<S, C> {
    resolver: Box<dyn Resolve>,
    make: Box<MakeEndpoint<S>>,
    classifier: C,
    breaker: BreakerBuilder,
    policy: Policy,
    max_ejection: f64,
    panic_threshold: f64,
    refresh_interval: Duration,
    max_staleness: Duration,
    drain_window: Duration,
    served_by: bool,
    seed: Option<u64>,
}

impl<S, C> fmt::Debug for BalancerBuilder<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalancerBuilder")
            .field("policy", &self.policy)
            .field("max_ejection", &self.max_ejection)
            .field("panic_threshold", &self.panic_threshold)
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
    /// | [`breaker`](BalancerBuilder::breaker) | [`DEFAULT_EJECTION_FAILURES`] (5) consecutive failures, open 30 s, 3 half-open probes (a template without a trip rule keeps this one) |
    /// | [`policy`](BalancerBuilder::policy) | [`Policy::RoundRobin`] |
    /// | [`max_ejection`](BalancerBuilder::max_ejection) | [`DEFAULT_MAX_EJECTION`] (1.0: no cap beyond the panic threshold) |
    /// | [`panic_threshold`](BalancerBuilder::panic_threshold) | [`DEFAULT_PANIC_THRESHOLD`] (0.5, Envoy's) |
    /// | [`refresh_interval`](BalancerBuilder::refresh_interval) | [`DEFAULT_REFRESH_INTERVAL`] (30 s), never below [`MIN_REFRESH_INTERVAL`] (1 s) |
    /// | [`max_staleness`](BalancerBuilder::max_staleness) | [`DEFAULT_MAX_STALENESS`] (5 min) |
    /// | [`drain_window`](BalancerBuilder::drain_window) | [`DEFAULT_DRAIN_WINDOW`] (60 s) |
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
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
            max_staleness: DEFAULT_MAX_STALENESS,
            drain_window: DEFAULT_DRAIN_WINDOW,
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
    ///
    /// A template that names no trip rule — no window ([`consecutive_failures`], a count or time
    /// window), no failure rate, minimum calls or slow-call rule — keeps the ejection rule,
    /// [`DEFAULT_EJECTION_FAILURES`] consecutive failures: `CircuitBreaker::builder()
    /// .open_duration(60s)` changes how long an endpoint stays out, not when it goes out. Name a
    /// rule to replace it.
    ///
    /// [`consecutive_failures`]: BreakerBuilder::consecutive_failures
    pub fn breaker(mut self, breaker: BreakerBuilder) -> Self {
        self.breaker = if breaker.has_trip_rule() {
            breaker
        } else {
            breaker.consecutive_failures(DEFAULT_EJECTION_FAILURES)
        };
        self
    }

    /// How to choose among usable endpoints.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// The ejection cap: the largest share of endpoints skipped at once for an open breaker, in
    /// `[0, 1]` (Envoy's `max_ejection_percent` / 100; default [`DEFAULT_MAX_EJECTION`], 1.0).
    /// Shares are taken to the nearest millionth. At least one endpoint can always be ejected
    /// when that is above zero (Envoy's
    /// `always_eject_one_host`, the default of older Envoy versions); `0.0` ejects none
    /// (breakers still count, for the stats). When more breakers are open than the cap allows,
    /// the first ones in resolution order stay out and the others take calls through their
    /// open breakers (round robin among them; Envoy keeps the first ejected instead).
    ///
    /// Not the off switch for panic mode: that is [`panic_threshold(0.0)`](Self::panic_threshold).
    pub fn max_ejection(mut self, share: f64) -> Self {
        self.max_ejection = share;
        self
    }

    /// The panic threshold: when the share of endpoints taking calls (not ejected) falls below
    /// it, every endpoint takes calls, through open breakers too, rather than overload the few
    /// left (Envoy's `healthy_panic_threshold` / 100; in `[0, 1]`; default
    /// [`DEFAULT_PANIC_THRESHOLD`], 0.5). `0.0` turns panic mode off: calls go only to
    /// endpoints that admit them, and fail with
    /// [`NoEndpoints`](crate::Error::NoEndpoints) when none does.
    pub fn panic_threshold(mut self, share: f64) -> Self {
        self.panic_threshold = share;
        self
    }

    /// Whether responses carry [`ServedBy`](crate::retry::ServedBy) (default: yes). The retry layer needs it to send a
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

    /// How long the last known endpoints keep serving while resolution fails (a DNS outage, a
    /// name briefly gone mid-rollout) before they are given up (default
    /// [`DEFAULT_MAX_STALENESS`], 5 min; at least 1 s, at most 24 h).
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.max_staleness = staleness;
        self
    }

    /// How long a removed endpoint's breaker and pool are kept: an address that comes back
    /// within it resumes them, so a flapping answer does not reset ejection or reconnect
    /// (default [`DEFAULT_DRAIN_WINDOW`], 60 s; at most 24 h; zero keeps nothing).
    pub fn drain_window(mut self, window: Duration) -> Self {
        self.drain_window = window;
        self
    }

    /// Validates the settings and builds the balancer. Inside a tokio runtime the first
    /// resolution starts now; otherwise on the first call. Calls made before it completes wait
    /// for it (within their deadline); [`Balancer::resolved`] waits for it too.
    pub fn build(self) -> Result<Balancer<S, C>, ConfigError> {
        for (field, share) in [
            ("max_ejection", self.max_ejection),
            ("panic_threshold", self.panic_threshold),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(ConfigError::new(
                    field,
                    format!("{share} is outside [0, 1]"),
                ));
            }
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
        let day = Duration::from_secs(24 * 3600);
        check_duration("max_staleness", self.max_staleness, day)?;
        if self.max_staleness < MIN_REFRESH_INTERVAL {
            return Err(ConfigError::new(
                "max_staleness",
                format!("{:?} is below the minimum of 1 s", self.max_staleness),
            ));
        }
        if self.drain_window > day {
            return Err(ConfigError::new(
                "drain_window",
                format!("{:?} is longer than 24h", self.drain_window),
            ));
        }
        // Every endpoint's breaker is built from this template: check it once.
        self.breaker
            .clone()
            .validated()
            .map_err(|e| e.within("breaker"))?;
        let jitter = self.seed.map_or_else(Jitter::new, Jitter::seeded);
        let metrics =
            crate::metrics::BalancerMetrics::new(self.resolver.name().unwrap_or("unnamed"));
        let balancer = Balancer {
            shared: Arc::new(Shared {
                metrics,
                snapshot: ArcSwap::from_pointee(Snapshot::empty()),
                cursor: AtomicUsize::new(0),
                jitter,
                policy: self.policy,
                ejection: super::endpoints::Ejection {
                    max_ejection: self.max_ejection,
                    panic_threshold: self.panic_threshold,
                },
                classifier: self.classifier,
                breaker: self.breaker,
                make: self.make,
                resolver: self.resolver,
                refresh_interval: self.refresh_interval,
                max_staleness: self.max_staleness,
                drain_window: self.drain_window,
                served_by: self.served_by,
                warned_single: AtomicBool::new(false),
                refresh_started: AtomicBool::new(false),
                first_resolved: AtomicBool::new(false),
                resolutions: watch::Sender::new(0),
                wake: Arc::new(tokio::sync::Notify::new()),
                begun: std::sync::atomic::AtomicU64::new(0),
                refreshes: watch::Sender::new(0),
                pushes: std::sync::atomic::AtomicU64::new(0),
                draining: Mutex::default(),
                counters: ResolverCounters::default(),
            }),
        };
        // A resolver that learns of changes itself hands them over at once.
        let weak = Arc::downgrade(&balancer.shared);
        let alive = weak.clone();
        balancer
            .shared
            .resolver
            .attach(super::resolve::Updates::new(
                move |addrs| {
                    let Some(shared) = weak.upgrade() else {
                        return false;
                    };
                    shared.apply(addrs, true);
                    true
                },
                move || alive.strong_count() > 0,
            ));
        if tokio::runtime::Handle::try_current().is_ok() {
            balancer.start_refresh();
        }
        Ok(balancer)
    }
}
