//! One error type for every decision the stack makes.
//!
//! Why one enum: a caller must be able to tell *why* a call failed — its own deadline ran out, the
//! retry budget refused another attempt, a breaker is open, a bulkhead is full — because each calls
//! for a different reaction (give up, shed load, fail over, alert). Every layer in this crate
//! returns [`Error`]; errors of the services they wrap pass through boxed as [`Error::Inner`], the
//! way tower layers pass [`BoxError`]s. Wrapping is flat: a stanchion error coming back from an
//! inner stanchion layer is not wrapped a second time (see [`Error::from_inner`]).
//!
//! Messages follow the error-chain convention: each error says what happened in its own terms,
//! and the error it wraps stays its [`source`](std::error::Error::source) — never printed twice
//! when `anyhow`, `eyre` or a log formatter walks the chain. [`Error::report`] prints the whole
//! chain on one line (`retries exhausted after 3 attempts: the wrapped service failed: connection
//! reset`).
//!
//! Struct variants are `#[non_exhaustive]`: match them with `{ field, .. }`, so that a field added
//! later is not a breaking change.
//!
//! Builders validate their settings and return [`ConfigError`] instead of panicking.
//!
//! With the `tonic` feature, `tonic::Status::from(error)` gives each variant its gRPC code
//! (DEADLINE_EXCEEDED, UNAVAILABLE, RESOURCE_EXHAUSTED, …, never UNKNOWN), so a stanchion stack can
//! be the transport of a tonic client: `ServiceBuilder::new().map_err(tonic::Status::from)`.
//!
//! ```
//! use stanchion::{ConfigError, Error};
//!
//! let own = Error::from(ConfigError::new("budget", "must be greater than zero"));
//! let err = Error::from_inner(own);
//! // Not wrapped twice: the configuration error is still matchable.
//! assert!(matches!(err, Error::Config(_)));
//! assert_eq!(err.to_string(), "invalid configuration of `budget`: must be greater than zero");
//! ```

#[cfg(feature = "tonic")]
mod tonic;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A type-erased error, as tower passes them between layers.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Every way a call through stanchion's layers can fail.
///
/// Each message says why. Errors of the wrapped service arrive as [`Error::Inner`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The logical call's total budget ran out (queueing, checkout, attempts and backoff included).
    #[error("deadline exceeded: the call's budget of {budget:?} ran out")]
    #[non_exhaustive]
    DeadlineExceeded {
        /// The total budget the call had (its own, or a smaller one adopted from upstream).
        budget: Duration,
    },

    /// One attempt ran longer than the per-try timeout while the call's deadline still had time.
    #[error("attempt timed out: no response within the per-try timeout of {timeout:?}")]
    #[non_exhaustive]
    AttemptTimedOut {
        /// The per-try timeout that expired.
        timeout: Duration,
        /// The endpoint the attempt was on, when a balancer below said.
        endpoint: Option<std::net::SocketAddr>,
        /// The attempt was cut before its request was handed to a connection (waiting for one
        /// of the client's own pooled connections, connecting): it never left the client, so
        /// it is safe to send again whatever its method.
        never_sent: bool,
    },

    /// Every allowed attempt failed; `last` is the error of the final attempt.
    #[error("retries exhausted after {attempts} attempts")]
    #[non_exhaustive]
    RetriesExhausted {
        /// How many requests were sent, the first included (attempts, and polls of an
        /// idempotency conflict; transparent resends of never-sent requests excluded).
        attempts: u32,
        /// The error of the final attempt.
        #[source]
        last: BoxError,
    },

    /// The retry budget refused another attempt, to cap the extra load retries put on the server.
    #[error(
        "retry budget exhausted after {attempts} attempts: retries already used up the share of \
         traffic they may add"
    )]
    #[non_exhaustive]
    RetryBudgetExhausted {
        /// How many requests were sent, the first included (attempts, and polls of an
        /// idempotency conflict; transparent resends of never-sent requests excluded).
        attempts: u32,
        /// The error of the final attempt.
        #[source]
        last: BoxError,
    },

    /// Retrying stopped for a reason other than running out of attempts or budget — the request
    /// was not safe to repeat, its body could not be replayed, the server was overloaded without a
    /// delay hint, the delay did not fit in the deadline — while the error itself was retryable.
    #[error("not retried after {attempts} attempt(s): {reason}")]
    #[non_exhaustive]
    RetryRefused {
        /// Why retrying stopped.
        reason: crate::retry::RetryStop,
        /// How many requests were sent, the first included (attempts, and polls of an
        /// idempotency conflict; transparent resends of never-sent requests excluded).
        attempts: u32,
        /// The error of the final attempt.
        #[source]
        last: BoxError,
    },

    /// A circuit breaker is open: the dependency failed too often, so calls fail fast.
    #[error("circuit open: the dependency failed too often; {}", next_probe(*retry_in))]
    #[non_exhaustive]
    CircuitOpen {
        /// Time until the breaker lets a probe through; zero while half-open probes are all in
        /// flight (or the breaker is forced open).
        retry_in: Duration,
    },

    /// The bulkhead's partition had every permit in use and its queue was full.
    #[error(
        "bulkhead full: partition `{partition}` has all {limit} permits in use and its queue of \
         {queue} waiters is full"
    )]
    #[non_exhaustive]
    BulkheadFull {
        /// The partition that rejected the call.
        partition: Arc<str>,
        /// The partition's concurrency limit.
        limit: usize,
        /// The partition's queue bound.
        queue: usize,
    },

    /// A call waited in the bulkhead's queue for as long as it may (its max wait, or the deadline).
    #[error("bulkhead wait timed out: waited {waited:?} for a permit in partition `{partition}`")]
    #[non_exhaustive]
    BulkheadTimeout {
        /// The partition the call waited in.
        partition: Arc<str>,
        /// How long it waited.
        waited: Duration,
    },

    /// No connection to the endpoint could be checked out in time.
    #[error("pool checkout timed out: no connection to {endpoint} became free within {waited:?}")]
    #[non_exhaustive]
    PoolTimeout {
        /// The endpoint whose pool was exhausted.
        endpoint: Arc<str>,
        /// How long the checkout waited.
        waited: Duration,
    },

    /// There was no endpoint to send the call to.
    #[error("no endpoints: {reason}")]
    #[non_exhaustive]
    NoEndpoints {
        /// Why no endpoint could take the call.
        reason: NoEndpointsReason,
    },

    /// The server holds a different outcome for this idempotency key.
    #[error("idempotency conflict for key `{key}`: {reason}")]
    #[non_exhaustive]
    IdempotencyConflict {
        /// The key in conflict.
        key: Arc<str>,
        /// What the conflict is.
        reason: IdempotencyConflictReason,
    },

    /// A caller-supplied idempotency key is not a valid key; nothing was sent.
    #[error("invalid idempotency key: {reason}")]
    #[non_exhaustive]
    InvalidIdempotencyKey {
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A layer was configured with invalid settings.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The wrapped service failed; its error is passed through unchanged, as this error's
    /// [`source`](std::error::Error::source).
    #[error("the wrapped service failed")]
    Inner(#[source] BoxError),
}

/// When the next probe may go, in words.
fn next_probe(retry_in: Duration) -> String {
    if retry_in.is_zero() {
        "every probe slot is taken (or the circuit is held open)".to_owned()
    } else {
        format!("next probe allowed in {retry_in:?}")
    }
}

impl Error {
    /// Wraps an error of an inner service, without wrapping a stanchion [`Error`] twice.
    pub fn from_inner(err: impl Into<BoxError>) -> Self {
        match err.into().downcast::<Error>() {
            Ok(own) => *own,
            Err(other) => Error::Inner(other),
        }
    }

    /// True for [`Error::DeadlineExceeded`].
    pub fn is_deadline_exceeded(&self) -> bool {
        matches!(self, Error::DeadlineExceeded { .. })
    }

    /// This error and every error behind it, on one line, outermost first, separated by `: `.
    ///
    /// ```
    /// use stanchion::Error;
    ///
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
    /// let err = Error::from_inner(io);
    /// assert_eq!(err.to_string(), "the wrapped service failed");
    /// assert_eq!(err.report().to_string(), "the wrapped service failed: connection reset");
    /// ```
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }
}

/// An error and its sources on one line; see [`Error::report`].
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(self.0);
        let mut first = true;
        while let Some(err) = current {
            if !first {
                f.write_str(": ")?;
            }
            first = false;
            fmt::Display::fmt(err, f)?;
            current = err.source();
        }
        Ok(())
    }
}

/// Why [`Error::NoEndpoints`] was returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoEndpointsReason {
    /// The resolver returned no addresses (yet).
    NoneResolved,
    /// Addresses exist, but every one is ejected or draining and panic mode does not apply.
    NoneUsable,
    /// Every endpoint that could take the call rejected it before it was sent (a failed TLS
    /// handshake), earlier in the same call.
    AllRejected,
}

impl fmt::Display for NoEndpointsReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoEndpointsReason::NoneResolved => "the resolver has returned no addresses",
            NoEndpointsReason::NoneUsable => {
                "every resolved endpoint is ejected or draining and none may take the call"
            }
            NoEndpointsReason::AllRejected => {
                "every endpoint that could take the call rejected it before it was sent (a failed \
                 TLS handshake)"
            }
        })
    }
}

/// Why [`Error::IdempotencyConflict`] was returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdempotencyConflictReason {
    /// The first request with this key is still running (HTTP 409).
    InFlight,
    /// The key was used before with a different request (HTTP 422).
    PayloadMismatch,
}

impl fmt::Display for IdempotencyConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdempotencyConflictReason::InFlight => {
                "the first request with this key is still in progress"
            }
            IdempotencyConflictReason::PayloadMismatch => {
                "the key was already used for a different request"
            }
        })
    }
}

/// A builder was given a setting it cannot honour.
///
/// [`field`](Self::field) is the setting's name; [`path`](Self::path) says where it sits in the
/// whole configuration (`clusters.health.pool.max_size`, `routes[2].deadline`), the same for a
/// builder's setting and for a field of a [`ClientConfig`](crate::client::ClientConfig) read
/// from a file.
///
/// ```
/// use std::time::Duration;
/// use stanchion::deadline::DeadlineLayer;
///
/// let err = DeadlineLayer::new(Duration::ZERO).unwrap_err();
/// assert_eq!(err.field(), "budget");
/// assert_eq!(err.path(), "budget");
/// assert!(err.to_string().contains("must be greater than zero"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration of `{}`: {reason}", self.path())]
pub struct ConfigError {
    field: Cow<'static, str>,
    /// Where the setting sits, outermost first (`clusters.health.pool`), or empty.
    prefix: String,
    reason: Cow<'static, str>,
}

impl ConfigError {
    /// A new error for `field`, saying why its value is invalid.
    pub fn new(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        ConfigError {
            field: Cow::Borrowed(field),
            prefix: String::new(),
            reason: reason.into(),
        }
    }

    /// An error at a whole path (`routes[1].retry_policy.max_attempts`): its last segment is
    /// the field.
    pub(crate) fn at_path(path: &str, reason: impl Into<Cow<'static, str>>) -> Self {
        let (prefix, field) = match path.rfind('.') {
            Some(dot) => (&path[..dot], &path[dot + 1..]),
            None => ("", path),
        };
        ConfigError {
            field: Cow::Owned(field.to_owned()),
            prefix: prefix.to_owned(),
            reason: reason.into(),
        }
    }

    /// The same error, inside `outer` (`pool`, `clusters.health`, `routes[2]`).
    pub(crate) fn within(mut self, outer: impl std::fmt::Display) -> Self {
        self.prefix = if self.prefix.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", self.prefix)
        };
        self
    }

    /// The setting that was invalid (the last segment of [`path`](Self::path)).
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Where the setting sits in the whole configuration: `pool.max_size`,
    /// `clusters.health.pool.max_size`, `routes[2].deadline` — or just the field, for a
    /// setting at the top.
    pub fn path(&self) -> Cow<'_, str> {
        if self.prefix.is_empty() {
            Cow::Borrowed(&self.field)
        } else {
            Cow::Owned(format!("{}.{}", self.prefix, self.field))
        }
    }

    /// Why it was invalid.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Checks that a duration setting lies in `(0, max]`.
pub(crate) fn check_duration(
    field: &'static str,
    value: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        Err(ConfigError::new(field, "must be greater than zero"))
    } else if value > max {
        Err(ConfigError::new(
            field,
            format!("{value:?} is longer than the maximum of {max:?}"),
        ))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
