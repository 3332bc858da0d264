//! Per-route policies: which calls a route covers, and what it changes for them.

use std::time::Duration;

use crate::classify::GrpcCodes;
use crate::error::ConfigError;
use crate::retry::{Backoff, RetryBudget};

/// Which calls a [`RoutePolicy`] covers: a gRPC method, a gRPC service, or an HTTP path prefix.
///
/// When several routes match a call, an exact method wins over any prefix, and a longer prefix
/// over a shorter one; calls no route matches get the client's own settings.
#[derive(Debug, Clone)]
pub struct Route {
    pattern: String,
    exact: bool,
    /// Made by `grpc_service` (written back as one; it matches as a prefix).
    service: bool,
}

/// Two routes are equal when they cover the same calls: `grpc_service("pkg.Svc")` and
/// `path_prefix("/pkg.Svc/")` are one route (declared twice, their policies merge).
impl PartialEq for Route {
    fn eq(&self, other: &Route) -> bool {
        self.pattern == other.pattern && self.exact == other.exact
    }
}

impl Eq for Route {}

impl Route {
    /// One gRPC method: `grpc_method("payments.v1.Payments", "Charge")` covers the path
    /// `/payments.v1.Payments/Charge`.
    pub fn grpc_method(service: &str, method: &str) -> Route {
        Route {
            pattern: format!("/{service}/{method}"),
            exact: true,
            service: false,
        }
    }

    /// Every method of a gRPC service: `grpc_service("payments.v1.Payments")` covers paths
    /// starting with `/payments.v1.Payments/`.
    pub fn grpc_service(service: &str) -> Route {
        Route {
            pattern: format!("/{service}/"),
            exact: false,
            service: true,
        }
    }

    /// HTTP paths under `prefix`, segment by segment: `/v1/payments` covers `/v1/payments`,
    /// `/v1/payments/42` and `/v1/payments?x=1`, not `/v1/paymentsXYZ`.
    pub fn path_prefix(prefix: impl Into<String>) -> Route {
        Route {
            pattern: prefix.into(),
            exact: false,
            service: false,
        }
    }

    /// The path or prefix this route matches.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// What made it: a gRPC method (`/service/method`), a gRPC service, or a path prefix.
    #[cfg(feature = "serde")]
    pub(super) fn kind(&self) -> RouteKind<'_> {
        let p = self.pattern.as_str();
        if self.exact {
            let (service, method) = p[1.min(p.len())..].split_once('/').unwrap_or((p, ""));
            RouteKind::Method { service, method }
        } else if self.service {
            RouteKind::Service(p.trim_start_matches('/').trim_end_matches('/'))
        } else {
            RouteKind::Prefix(p)
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.pattern;
        let segments_ok = if self.exact {
            // `/service/method`: two non-empty segments.
            let mut parts = p[1.min(p.len())..].split('/');
            matches!((parts.next(), parts.next(), parts.next()), (Some(s), Some(m), None) if !s.is_empty() && !m.is_empty())
        } else {
            !p.contains("//") || p == "/"
        };
        if !p.starts_with('/') || !segments_ok || p.contains(['?', '#', ' ']) {
            return Err(ConfigError::new(
                "route",
                format!(
                    "{p:?} is not a usable path (it must start with '/', name non-empty segments, and hold no query)"
                ),
            ));
        }
        Ok(())
    }

    /// How well this route matches `path`: `None` when it does not; more is more specific.
    pub(super) fn score(&self, path: &str) -> Option<usize> {
        let p = self.pattern.as_str();
        if self.exact {
            return (path == p).then_some(usize::MAX);
        }
        crate::path::prefix_score(p, path)
    }
}

/// How a [`Route`] was made.
#[cfg(feature = "serde")]
pub(super) enum RouteKind<'a> {
    Method { service: &'a str, method: &'a str },
    Service(&'a str),
    Prefix(&'a str),
}

/// What a route changes from the client's settings. Every field left unset keeps the client's.
///
/// ```
/// use std::time::Duration;
/// use stanchion::client::RoutePolicy;
/// use stanchion::classify::{GrpcCode, GrpcCodes};
///
/// let charge = RoutePolicy::new()
///     .deadline(Duration::from_secs(5))
///     .retryable_codes(GrpcCodes::NONE.with(GrpcCode::Unavailable).with(GrpcCode::Aborted))
///     .idempotency_keys(true)
///     .partition("payments");
/// # let _ = charge;
/// ```
#[derive(Debug, Clone, Default)]
pub struct RoutePolicy {
    pub(super) deadline: Option<Option<Duration>>,
    pub(super) per_try: Option<Option<Duration>>,
    pub(super) max_attempts: Option<u32>,
    pub(super) retryable_codes: Option<GrpcCodes>,
    pub(super) retryable_statuses: Option<Vec<u16>>,
    pub(super) backoff: Option<Backoff>,
    pub(super) budget: Option<RetryBudget>,
    pub(super) idempotency_keys: Option<bool>,
    pub(super) partition: Option<String>,
    pub(super) cluster: Option<String>,
    pub(super) wait_for_ready: Option<bool>,
    pub(super) per_try_timeouts: Option<bool>,
}

impl RoutePolicy {
    /// A policy that changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// `over`'s settings replace this policy's where set (a route declared twice).
    pub(super) fn merge(&mut self, over: RoutePolicy) {
        self.deadline = over.deadline.or(self.deadline);
        self.per_try = over.per_try.or(self.per_try);
        self.max_attempts = over.max_attempts.or(self.max_attempts);
        self.retryable_codes = over.retryable_codes.or(self.retryable_codes);
        self.retryable_statuses = over.retryable_statuses.or(self.retryable_statuses.take());
        self.backoff = over.backoff.or(self.backoff.take());
        self.budget = over.budget.or(self.budget.take());
        self.idempotency_keys = over.idempotency_keys.or(self.idempotency_keys);
        self.partition = over.partition.or(self.partition.take());
        self.cluster = over.cluster.or(self.cluster.take());
        self.wait_for_ready = over.wait_for_ready.or(self.wait_for_ready);
        self.per_try_timeouts = over.per_try_timeouts.or(self.per_try_timeouts);
    }

    /// The total budget of each call on this route.
    pub fn deadline(mut self, budget: Duration) -> Self {
        self.deadline = Some(Some(budget));
        self
    }

    /// No budget of the route's own (a deadline the request carries, or adopts from its caller,
    /// still holds).
    pub fn without_deadline(mut self) -> Self {
        self.deadline = Some(None);
        self
    }

    /// The timeout of each attempt on this route.
    pub fn per_try_timeout(mut self, per_try: Duration) -> Self {
        self.per_try = Some(Some(per_try));
        self
    }

    /// No per-attempt timeout: each attempt may use what is left of the deadline.
    pub fn without_per_try_timeout(mut self) -> Self {
        self.per_try = Some(None);
        self
    }

    /// Attempts in total, the first included (1 to 10).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// No retries on this route (a request the transport never sent is still sent once more,
    /// for free: it cannot have run).
    pub fn without_retries(self) -> Self {
        self.max_attempts(1)
    }

    /// gRPC only: the status codes worth retrying on this route (gRPC A6's per-method
    /// `retryableStatusCodes`). A client for HTTP refuses this at build time.
    pub fn retryable_codes(mut self, codes: GrpcCodes) -> Self {
        self.retryable_codes = Some(codes);
        self
    }

    /// HTTP only: the response statuses worth retrying on this route (default: the client's,
    /// else 408, 429, 500, 502, 503, 504), each 100 to 999. A client for gRPC refuses this at
    /// build time (its calls are judged by code: [`retryable_codes`](Self::retryable_codes)).
    pub fn retryable_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.retryable_statuses = Some(statuses.into_iter().collect());
        self
    }

    /// The backoff between this route's attempts (default: the client's).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    /// A retry budget of this route's own (default: the client's, shared by every route). Give
    /// two routes clones of one budget to share it between them only.
    pub fn retry_budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The [`Cluster`](super::Cluster) this route's calls go to — its target, pools and
    /// breakers — declared with [`ClientBuilder::cluster`](super::ClientBuilder::cluster)
    /// (default: the client's own endpoints).
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = Some(name.into());
        self
    }

    /// Retry an attempt cut by the per-try timeout whatever its gRPC code (default: the
    /// client's, [`ClientBuilder::retry_per_try_timeouts`](super::ClientBuilder::retry_per_try_timeouts));
    /// the service config sets it for a policy with `perAttemptRecvTimeout`.
    pub fn retry_per_try_timeouts(mut self, retry: bool) -> Self {
        self.per_try_timeouts = Some(retry);
        self
    }

    /// gRPC's wait-for-ready: while no endpoint can take a call (none resolved yet or any
    /// more, every one's breaker open — panic mode does not send it through one), the call
    /// waits for one — within its
    /// deadline — instead of failing at once with
    /// [`NoEndpoints`](crate::Error::NoEndpoints). Default off (gRPC's default too); the
    /// service config's `waitForReady`.
    pub fn wait_for_ready(mut self, wait: bool) -> Self {
        self.wait_for_ready = Some(wait);
        self
    }

    /// Whether calls on this route carry an idempotency key (POST and PATCH get one and become
    /// safe to retry). Opt in only where the server honours keys.
    pub fn idempotency_keys(mut self, on: bool) -> Self {
        self.idempotency_keys = Some(on);
        self
    }

    /// The bulkhead partition this route's calls take their permits from; it must be declared
    /// on the client's bulkhead ([`BulkheadBuilder::partition`](crate::bulkhead::BulkheadBuilder::partition)).
    pub fn partition(mut self, name: impl Into<String>) -> Self {
        self.partition = Some(name.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments_and_methods_match_exactly() {
        let prefix = Route::path_prefix("/v1/payments");
        assert_eq!(prefix.score("/v1/payments"), Some(12));
        assert_eq!(prefix.score("/v1/payments/42"), Some(12));
        assert_eq!(prefix.score("/v1/paymentsXYZ"), None);
        assert_eq!(prefix.score("/v1"), None);
        let service = Route::grpc_service("pay.v1.Pay");
        assert!(service.score("/pay.v1.Pay/Charge").is_some());
        assert!(service.score("/pay.v1.PayMore/Charge").is_none());
        let method = Route::grpc_method("pay.v1.Pay", "Charge");
        assert_eq!(method.score("/pay.v1.Pay/Charge"), Some(usize::MAX));
        assert_eq!(method.score("/pay.v1.Pay/ChargeMore"), None);
        assert_eq!(Route::path_prefix("/").score("/anything"), Some(1));
    }

    #[test]
    fn unusable_patterns_are_refused() {
        for bad in [
            Route::path_prefix(""),
            Route::path_prefix("v1"),
            Route::path_prefix("/a//b"),
            Route::path_prefix("/a?b=1"),
            Route::grpc_method("", "Charge"),
            Route::grpc_method("pay.Pay", ""),
            Route::grpc_method("pay/Pay", "Charge"),
            Route::grpc_service(""),
        ] {
            assert!(bad.validate().is_err(), "{bad:?} was accepted");
        }
        for good in [
            Route::path_prefix("/"),
            Route::path_prefix("/v1/payments"),
            Route::grpc_method("pay.Pay", "Charge"),
            Route::grpc_service("pay.Pay"),
        ] {
            assert!(good.validate().is_ok(), "{good:?} was refused");
        }
    }
}
