//! Retries with retry budgets: retry only when it is safe and useful, and cap the extra load.
//!
//! Retries are where clients hurt the services they call: retry storms multiply load exactly when
//! a service is struggling, repeated non-idempotent requests duplicate side effects, and retries
//! past the caller's deadline are wasted work. [`RetryLayer`] decides after every attempt, in
//! this order, and records each refusal with its [`RetryStop`] reason:
//!
//! 1. the outcome's [`Class`](crate::classify::Class) says retryable (and the server did not ask
//!    not to retry);
//! 2. the request is safe to repeat: an idempotent HTTP method, or [`RetrySafe`] (a key on a route
//!    whose server honours keys); for gRPC the method's retryable codes, in its classifier
//!    (gRPC A6) — and a body that can still be replayed ([`ReplayBody`]);
//! 3. attempts are left (default 3 in total);
//! 4. overload (429, RESOURCE_EXHAUSTED) without a delay hint is not retried; unavailable (503,
//!    UNAVAILABLE) without a hint is retried only on a different endpoint ([`UnavailablePolicy`]);
//! 5. the backoff — or the server's delay hint, whichever is longer — fits in the remaining
//!    deadline; a longer wait fails now instead of sleeping into the deadline;
//! 6. last, the [`RetryBudget`] grants a token (taken last, so no other refusal spends one).
//!
//! A request that provably never reached the server
//! ([`NeverSent`](crate::classify::NeverSent)) is retried once at once, without using an attempt
//! or a budget token (gRPC A6).
//!
//! When retrying stops on a response (a final 503), the caller gets that response, with
//! [`RetryStopped`] in its extensions. When it stops on an error, the error says why:
//! [`Error::RetriesExhausted`](crate::Error::RetriesExhausted),
//! [`Error::RetryBudgetExhausted`](crate::Error::RetryBudgetExhausted) or
//! [`Error::RetryRefused`](crate::Error::RetryRefused); an error that is not retryable at all
//! is returned as it is.
//!
//! Place the layer below the deadline (so backoff sleeps are charged to it) and above the
//! balancer (so a retry can go elsewhere), with an [`AttemptLayer`](crate::deadline::AttemptLayer)
//! below it to bound each attempt and mark retries on the wire.
//!
//! ```
//! use std::time::Duration;
//! use stanchion::classify::HttpClassifier;
//! use stanchion::deadline::{AttemptLayer, DeadlineLayer};
//! use stanchion::retry::{Backoff, ReplayBodyLayer, RetryBudget, RetryLayer};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), stanchion::ConfigError> {
//! let budget = RetryBudget::default(); // share it with other clients of the same service
//! let retry = RetryLayer::builder(HttpClassifier::new())
//!     .max_attempts(3)
//!     .backoff(Backoff::new(Duration::from_millis(50), Duration::from_millis(500))?)
//!     .budget(budget.clone())
//!     .build()?;
//! let stack = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(2))?)
//!     .layer(ReplayBodyLayer::default())
//!     .layer(retry)
//!     .layer(AttemptLayer::new(Duration::from_millis(500))?);
//! # let _ = stack; Ok(()) }
//! ```

mod backoff;
#[cfg(feature = "http")]
mod body;
mod budget;
#[cfg(feature = "serde")]
mod data;
mod decision;
mod future;
mod layer;
mod policy;
mod request;
mod spans;
mod throttle;

pub use self::backoff::{Backoff, DEFAULT_BASE, Jitter};
#[cfg(feature = "http")]
pub use self::body::{
    DEFAULT_REPLAY_LIMIT, ReplayBody, ReplayBodyLayer, ReplayBodyService, ReplayError,
};
pub use self::budget::{
    BudgetMode, BudgetStats, DEFAULT_BUDGET_NAME, DEFAULT_MIN_PER_SECOND, DEFAULT_RATIO,
    DEFAULT_WINDOW, RetryBudget, RetryBudgetBuilder, ThrottlingBuilder,
};
#[cfg(feature = "metrics")]
pub(crate) use self::decision::STOP_LABELS;
pub use self::decision::{
    AvoidEndpoint, MAX_CONFLICT_POLLS, RejectedEndpoints, RetryStop, RetryStopped, ServedBy,
    UnavailablePolicy,
};
pub use self::future::RetryFuture;
pub use self::layer::{DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS, Retry, RetryLayer, RetryLayerBuilder};
pub use self::policy::DEFAULT_RETRYABLE_STATUSES;
pub use self::request::{RetryBody, RetryOnConflict, RetryRequest, RetryResponse, RetrySafe};
pub use self::throttle::MAX_THROTTLE_TOKENS;
