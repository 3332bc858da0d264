//! The retry layer: classify → decide → back off → send again.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::decision::Rules;
use super::future::RetryFuture;
use super::policy::{Retryable, Statuses};
use super::{Backoff, RetryBudget, RetryRequest, RetryResponse, UnavailablePolicy};
use crate::classify::{Classify, GrpcCodes};
use crate::error::{BoxError, ConfigError, Error};

/// The default number of attempts, the first included: 3.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The most attempts a layer accepts.
pub const MAX_ATTEMPTS: u32 = 10;

/// Retries calls that failed in a way worth retrying, when it is safe, within the deadline and
/// within a shared retry budget. See the [module docs](super).
#[derive(Debug)]
pub struct RetryLayer<C> {
    policy: Arc<Policy<C>>,
}

impl<C> Clone for RetryLayer<C> {
    fn clone(&self) -> Self {
        RetryLayer {
            policy: self.policy.clone(),
        }
    }
}

#[derive(Debug)]
pub(super) struct Policy<C> {
    pub(super) rules: Rules,
    pub(super) classifier: C,
    /// Feature `metrics`: retries scheduled and stopped (nothing without it).
    pub(super) metrics: crate::metrics::RetryMetrics,
    /// The route this layer serves (a configured pattern, or `default`): the call span's
    /// `route`.
    pub(super) route: Arc<str>,
}

impl<C> RetryLayer<C> {
    /// A builder that judges outcomes with `classifier` (an
    /// [`HttpClassifier`](crate::classify::HttpClassifier), a
    /// [`GrpcClassifier`](crate::classify::GrpcClassifier), or your own), starting from the
    /// defaults: 3 attempts, full-jitter backoff from 50 ms capped at 500 ms, a budget of 20 % +
    /// 10/s over 10 s, overload without a hint not retried, unavailable without a hint retried
    /// only on another endpoint, gRPC codes retried: UNAVAILABLE, HTTP statuses retried: 408,
    /// 429, 500, 502, 503, 504.
    pub fn builder(classifier: C) -> RetryLayerBuilder<C> {
        RetryLayerBuilder {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            budget: None,
            retry_overload_without_hint: false,
            retry_per_try_timeouts: false,
            unavailable: UnavailablePolicy::OtherEndpoint,
            codes: GrpcCodes::default(),
            statuses: None,
            classifier,
            route: "default".to_owned(),
            client: "default".to_owned(),
        }
    }

    /// The retry budget (a handle: read its stats, or share it with another layer).
    pub fn budget(&self) -> &RetryBudget {
        &self.policy.rules.budget
    }

    /// The maximum number of attempts, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.policy.rules.max_attempts
    }
}

/// Builds a [`RetryLayer`].
#[derive(Debug, Clone)]
pub struct RetryLayerBuilder<C> {
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<RetryBudget>,
    retry_overload_without_hint: bool,
    retry_per_try_timeouts: bool,
    unavailable: UnavailablePolicy,
    codes: GrpcCodes,
    statuses: Option<Vec<u16>>,
    classifier: C,
    route: String,
    client: String,
}

impl<C> RetryLayerBuilder<C> {
    /// The `route` label of this layer's instruments (feature `metrics`; `stanchion::metrics`):
    /// a configured route pattern, never a raw path. Default: `default`. The client builder
    /// sets each route's.
    pub fn route(mut self, route: &str) -> Self {
        self.route = route.to_owned();
        self
    }

    /// The `client` label of this layer's instruments (feature `metrics`): which client (which
    /// dependency) the calls are for, so two clients' `default` routes stay apart. Default:
    /// `default`. The client builder sets it from [`ClientBuilder::name`](crate::client::ClientBuilder::name).
    pub fn client(mut self, name: &str) -> Self {
        self.client = name.to_owned();
        self
    }

    /// gRPC: the status codes worth retrying (gRFC A6's per-method `retryableStatusCodes`;
    /// default UNAVAILABLE only). An outcome that may have reached the server — a status, a
    /// reset, a lost connection, a per-try timeout (DEADLINE_EXCEEDED) — is retried only if its
    /// code is here; a request that was never sent is retried once whatever the codes.
    pub fn retryable_codes(mut self, codes: GrpcCodes) -> Self {
        self.codes = codes;
        self
    }

    /// HTTP: the response statuses worth retrying (default
    /// [`DEFAULT_RETRYABLE_STATUSES`](super::DEFAULT_RETRYABLE_STATUSES): 408, 429, 500, 502,
    /// 503, 504), when the method is idempotent or the request has an idempotency key. Each must
    /// be a status, 100 to 999.
    pub fn retryable_statuses(mut self, statuses: impl IntoIterator<Item = u16>) -> Self {
        self.statuses = Some(statuses.into_iter().collect());
        self
    }

    /// Attempts in total, the first included: 1 (no retries) to 10. Default 3.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// The backoff between attempts. Default: full jitter, 50 ms base, 500 ms cap.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The retry budget; pass a clone of one handle to several layers to share it. Default: a
    /// budget of its own (20 % + 10/s over 10 s).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Retry 429 / RESOURCE_EXHAUSTED even without a delay hint. Default false.
    pub fn retry_overload_without_hint(mut self, retry: bool) -> Self {
        self.retry_overload_without_hint = retry;
        self
    }

    /// Retry an attempt cut by the per-try timeout whatever its gRPC code — gRPC's
    /// `perAttemptRecvTimeout` (gRFC A6's retry policy): its cut attempts are retried even
    /// when DEADLINE_EXCEEDED is not among the retryable codes. Default false: a cut gRPC
    /// attempt is retried only if DEADLINE_EXCEEDED is listed (HTTP: by the method's safety,
    /// as any timeout).
    pub fn retry_per_try_timeouts(mut self, retry: bool) -> Self {
        self.retry_per_try_timeouts = retry;
        self
    }

    /// What to do with 503 / UNAVAILABLE without a delay hint. Default
    /// [`UnavailablePolicy::OtherEndpoint`].
    pub fn unavailable(mut self, policy: UnavailablePolicy) -> Self {
        self.unavailable = policy;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<RetryLayer<C>, ConfigError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "max_attempts",
                format!("{} is not between 1 and {MAX_ATTEMPTS}", self.max_attempts),
            ));
        }
        let statuses = match self.statuses {
            Some(statuses) => Statuses::of(statuses)?,
            None => Statuses::default(),
        };
        Ok(RetryLayer {
            policy: Arc::new(Policy {
                rules: Rules {
                    max_attempts: self.max_attempts,
                    backoff: self.backoff,
                    budget: self.budget.unwrap_or_default(),
                    retry_overload_without_hint: self.retry_overload_without_hint,
                    unavailable: self.unavailable,
                    retryable: Retryable {
                        codes: self.codes,
                        statuses,
                        per_try_timeouts: self.retry_per_try_timeouts,
                    },
                },
                classifier: self.classifier,
                metrics: crate::metrics::RetryMetrics::new(&self.client, &self.route),
                route: Arc::from(self.route.as_str()),
            }),
        })
    }
}

impl<S, C> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Retry<S, C> {
        Retry {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service of [`RetryLayer`].
#[derive(Debug)]
pub struct Retry<S, C> {
    inner: S,
    policy: Arc<Policy<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S, C, Req> Service<Req> for Retry<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: RetryResponse,
    Req: RetryRequest,
    C: Classify<S::Response>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = RetryFuture<S, Req, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.policy.rules.budget.deposit();
        // The service that was made ready sends the first attempt; a clone sends the retries.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        RetryFuture::start(ready, req, self.policy.clone())
    }
}
