//! Classification: what an outcome means for retries, breakers and load shedding.
//!
//! Why a shared vocabulary: the retry layer, the circuit breaker and the bulkhead must agree on
//! what a response *is*. A 503 from a draining instance, a 429 from an overloaded one and a 400
//! from a bad request call for three different reactions, and a gRPC call that failed says so
//! only in its trailers, after the body. So classification has two phases, like tower-http's
//! `ClassifyResponse` / `ClassifyEos`:
//!
//! 1. [`Classify::classify_response`] looks at the response head (or
//!    [`Classify::classify_error`] at an error) and either decides ([`Verdict::Done`]) or defers
//!    to the end of the stream ([`Verdict::AtEndOfStream`]);
//! 2. [`ClassifyEos::classify_eos`] decides from the trailers.
//!
//! A [`Class`] says: success or failure ([`Kind::is_failure`], what breakers count), retryable or
//! not, overload ([`Kind::Overload`]: 429, RESOURCE_EXHAUSTED) versus unavailable
//! ([`Kind::Unavailable`]: 503, UNAVAILABLE), a server delay hint ([`ServerHint`]) and whether
//! the request provably [never reached the server](NeverSent).
//!
//! [`ClassifiedBody`] drives the second phase: it wraps a response body and reports the final
//! class once, when the stream really ends (or fails, or is dropped) — what breakers and
//! bulkheads need, since a call is not over before its body is.
//!
//! Implementations: [`HttpClassifier`] (status codes and `Retry-After`), [`GrpcClassifier`] (gRPC
//! status in headers or trailers, `grpc-retry-pushback-ms`, a per-method set of retryable codes)
//! and [`classify_error`] for errors, used by both.
//!
//! ```
//! use stanchion::classify::{Classify, HttpClassifier, Kind, Verdict};
//!
//! let res = http::Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
//! // HTTP is decided on the head, so `Done` is the only verdict it can give.
//! let Verdict::Done(class) = HttpClassifier::new().classify_response(&res);
//! assert_eq!(class.kind(), Kind::Unavailable);
//! assert!(class.is_retryable());
//! assert_eq!(class.hint().delay(), Some(std::time::Duration::from_secs(2)));
//! ```

#[cfg(feature = "http")]
mod body;
#[cfg(feature = "http")]
mod grpc;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
mod retry_after;

use std::time::Duration;

#[cfg(feature = "http")]
pub use self::body::{ClassifiedBody, OnEnd};
#[cfg(feature = "http")]
pub use self::grpc::{GrpcClassifier, GrpcCode, GrpcCodes, GrpcEos, parse_pushback};
#[cfg(feature = "http")]
pub use self::http::HttpClassifier;
#[cfg(feature = "http")]
pub use self::retry_after::{FixedClock, SystemClock, WallClock, parse_retry_after};

use crate::error::{BoxError, Error};

/// The default cap on a server's delay hint (`Retry-After`, gRPC pushback): 30 s.
pub const DEFAULT_MAX_DELAY_HINT: Duration = Duration::from_secs(30);

/// What kind of outcome a response or error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// The call succeeded.
    Success,
    /// The caller's own mistake (most 4xx; INVALID_ARGUMENT, NOT_FOUND, …). Not the
    /// dependency's fault, so not a failure for breakers, and repeating it will not help.
    ClientError,
    /// The server is overloaded (429, RESOURCE_EXHAUSTED). Retrying deepens the overload.
    Overload,
    /// The server cannot serve now (503, UNAVAILABLE); another instance may.
    Unavailable,
    /// The server or a gateway gave up waiting (408, 504, DEADLINE_EXCEEDED), or an attempt timed
    /// out.
    Timeout,
    /// The server failed (500, 502, INTERNAL, UNKNOWN, DATA_LOSS, …).
    ServerError,
    /// The transport failed: connect error, reset, protocol error.
    Transport,
    /// The call was cancelled (gRPC CANCELLED). Not the dependency's fault.
    Cancelled,
}

impl Kind {
    /// Whether this outcome counts against the dependency's health (what breakers count).
    ///
    /// Success, the caller's own errors and cancellations do not.
    pub fn is_failure(self) -> bool {
        !matches!(self, Kind::Success | Kind::ClientError | Kind::Cancelled)
    }
}

/// A server's hint about when (or whether) to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerHint {
    /// No hint.
    #[default]
    None,
    /// Retry no sooner than after this delay (`Retry-After`, `grpc-retry-pushback-ms`), capped.
    RetryAfter(Duration),
    /// The server asked not to retry (a negative or unparsable gRPC pushback, per gRPC A6).
    DoNotRetry,
}

impl ServerHint {
    /// The delay, if the hint is one.
    pub fn delay(self) -> Option<Duration> {
        match self {
            ServerHint::RetryAfter(delay) => Some(delay),
            _ => None,
        }
    }
}

/// The verdict on one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    kind: Kind,
    retryable: bool,
    hint: ServerHint,
    never_sent: bool,
}

impl Class {
    /// A success.
    pub const fn success() -> Self {
        Class {
            kind: Kind::Success,
            retryable: false,
            hint: ServerHint::None,
            never_sent: false,
        }
    }

    /// An outcome of `kind`, not retryable, with no hint.
    pub const fn new(kind: Kind) -> Self {
        Class {
            kind,
            retryable: false,
            hint: ServerHint::None,
            never_sent: false,
        }
    }

    /// Sets whether the outcome is worth retrying (safety of repeating it is the retry layer's
    /// separate question).
    pub const fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// Sets the server's delay hint.
    pub const fn with_hint(mut self, hint: ServerHint) -> Self {
        self.hint = hint;
        self
    }

    /// Marks the request as provably never sent (see [`NeverSent`]).
    pub const fn with_never_sent(mut self, never_sent: bool) -> Self {
        self.never_sent = never_sent;
        self
    }

    /// The kind of outcome.
    pub const fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether the outcome counts against the dependency's health.
    pub fn is_failure(&self) -> bool {
        self.kind.is_failure()
    }

    /// Whether retrying could help. A server hint of [`ServerHint::DoNotRetry`] makes this false.
    pub const fn is_retryable(&self) -> bool {
        self.retryable && !matches!(self.hint, ServerHint::DoNotRetry)
    }

    /// The server's delay hint.
    pub const fn hint(&self) -> ServerHint {
        self.hint
    }

    /// Whether the request provably never reached the server (always safe to retry).
    pub const fn is_never_sent(&self) -> bool {
        self.never_sent
    }
}

/// The first-phase decision of a classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<E> {
    /// The response head decides.
    Done(Class),
    /// The verdict depends on the end of the stream (trailers); ask `E` there.
    AtEndOfStream(E),
}

/// Classifies a response head or an error (phase one).
pub trait Classify<Res> {
    /// The second phase, for responses whose verdict is in their trailers (a [`ClassifyEos`]).
    type Eos;

    /// Classifies a response head.
    fn classify_response(&self, res: &Res) -> Verdict<Self::Eos>;

    /// Classifies an error from the service.
    fn classify_error(&self, err: &(dyn std::error::Error + 'static)) -> Class {
        classify_error(err)
    }
}

/// Classifies the end of a response stream (phase two), whose trailers are a `T` (for HTTP,
/// `http::HeaderMap`).
pub trait ClassifyEos<T> {
    /// Classifies the end of the stream; `None` when it ended without trailers.
    fn classify_eos(self, trailers: Option<&T>) -> Class;

    /// Classifies an error that broke the stream.
    fn classify_error(self, err: &(dyn std::error::Error + 'static)) -> Class
    where
        Self: Sized,
    {
        classify_error(err)
    }
}

/// The second phase of a classifier that always decides on the head; it is never constructed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoEos {}

impl<T> ClassifyEos<T> for NoEos {
    fn classify_eos(self, _: Option<&T>) -> Class {
        match self {}
    }
}

/// Marks an error whose request provably never reached the server.
///
/// Whether a request may have run is never guessed from an I/O error kind: a connection reset
/// after the request was written may already have executed it. The layer that *knows* wraps its
/// error in `NeverSent`: a connector on a connect failure, an HTTP/2 client on `REFUSED_STREAM` or
/// a GOAWAY for a stream the server never processed, a client that hands an unsent request back,
/// a breaker or pool that rejects before sending. [`classify_error`] finds it anywhere in the
/// source chain; the retry layer retries such requests once transparently.
///
/// ```
/// use stanchion::classify::{NeverSent, classify_error};
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// assert!(classify_error(&NeverSent::new(refused)).is_never_sent());
/// let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert!(!classify_error(&reset).is_never_sent());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("request never sent")]
pub struct NeverSent {
    #[source]
    source: BoxError,
}

impl NeverSent {
    /// Wraps the error of a request that never reached the server.
    pub fn new(source: impl Into<BoxError>) -> Self {
        NeverSent {
            source: source.into(),
        }
    }

    /// The underlying error.
    pub fn into_inner(self) -> BoxError {
        self.source
    }
}

/// Classifies an error by what the layers that raised it know.
///
/// - [`NeverSent`] anywhere in the chain: a retryable transport failure, never sent.
/// - stanchion's own errors: a deadline that ran out is a timeout that must not be retried; an
///   attempt timeout is retryable; an open circuit, a pool timeout or no endpoints were rejected
///   before sending (never sent, retryable on another endpoint); a full bulkhead is overload.
/// - with feature `tonic`: a `tonic::Status` is classified by its code with
///   [`GrpcClassifier`]'s defaults; tonic's `ConnectError` (its connector failed) is never sent;
///   tonic's `TimeoutExpired` (the `grpc-timeout` its channel enforces) is a retryable timeout.
/// - anything else is a retryable transport failure that may have reached the server.
pub fn classify_error(err: &(dyn std::error::Error + 'static)) -> Class {
    let never_sent = chain(err).any(|e| e.is::<NeverSent>() || is_connect_error(e));
    for e in chain(err) {
        if is_transport_timeout(e) {
            return Class::new(Kind::Timeout)
                .with_retryable(true)
                .with_never_sent(never_sent);
        }
        if let Some(class) = e.downcast_ref::<Error>().and_then(classify_own) {
            return class.with_never_sent(never_sent || class.is_never_sent());
        }
        #[cfg(feature = "tonic")]
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            return GrpcClassifier::new()
                .classify_code(GrpcCode::from(status.code()), status.metadata().as_ref())
                .with_never_sent(never_sent);
        }
    }
    Class::new(Kind::Transport)
        .with_retryable(true)
        .with_never_sent(never_sent)
}

/// Whether the transport says it could not connect (tonic's connector marks such errors).
fn is_connect_error(_err: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(feature = "tonic")]
    if _err.is::<tonic::ConnectError>() {
        return true;
    }
    false
}

/// Whether `err` is the transport enforcing a timeout that stanchion wrote on the request (tonic's
/// channel enforces `grpc-timeout` with its own timer, which can fire a moment before ours).
pub(crate) fn is_transport_timeout(_err: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(feature = "tonic")]
    if _err.is::<tonic::TimeoutExpired>() {
        return true;
    }
    false
}

/// Whether `err`, or any error in its source chain, is a transport timeout.
pub(crate) fn chain_has_transport_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    chain(err).any(is_transport_timeout)
}

fn classify_own(err: &Error) -> Option<Class> {
    Some(match err {
        Error::DeadlineExceeded { .. } => Class::new(Kind::Timeout),
        Error::AttemptTimedOut { .. } => Class::new(Kind::Timeout).with_retryable(true),
        Error::CircuitOpen { .. } | Error::NoEndpoints { .. } => Class::new(Kind::Unavailable)
            .with_retryable(true)
            .with_never_sent(true),
        Error::PoolTimeout { .. } => Class::new(Kind::Overload)
            .with_retryable(true)
            .with_never_sent(true),
        Error::BulkheadFull { .. } | Error::BulkheadTimeout { .. } => {
            Class::new(Kind::Overload).with_never_sent(true)
        }
        Error::IdempotencyConflict { .. }
        | Error::InvalidIdempotencyKey { .. }
        | Error::Config(_) => Class::new(Kind::ClientError),
        // Look through to what the retries saw last / what the inner service said.
        Error::RetriesExhausted { .. }
        | Error::RetryBudgetExhausted { .. }
        | Error::RetryRefused { .. }
        | Error::Inner(_) => {
            return None;
        }
    })
}

/// An error and its sources, outermost first.
fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_what_raised_them() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let cases: Vec<(BoxError, Class)> = vec![
            (
                Box::new(io()),
                Class::new(Kind::Transport).with_retryable(true),
            ),
            (
                Box::new(NeverSent::new(io())),
                Class::new(Kind::Transport)
                    .with_retryable(true)
                    .with_never_sent(true),
            ),
            (
                Box::new(Error::Inner(Box::new(NeverSent::new(io())))),
                Class::new(Kind::Transport)
                    .with_retryable(true)
                    .with_never_sent(true),
            ),
            (
                Box::new(Error::DeadlineExceeded {
                    budget: Duration::from_secs(1),
                }),
                Class::new(Kind::Timeout),
            ),
            (
                Box::new(Error::AttemptTimedOut {
                    timeout: Duration::from_secs(1),
                    endpoint: None,
                }),
                Class::new(Kind::Timeout).with_retryable(true),
            ),
            (
                Box::new(Error::CircuitOpen {
                    retry_in: Duration::from_secs(1),
                }),
                Class::new(Kind::Unavailable)
                    .with_retryable(true)
                    .with_never_sent(true),
            ),
            (
                Box::new(Error::BulkheadFull {
                    partition: "p".into(),
                    limit: 1,
                    queue: 1,
                }),
                Class::new(Kind::Overload).with_never_sent(true),
            ),
            (
                Box::new(Error::RetriesExhausted {
                    attempts: 3,
                    last: Box::new(Error::AttemptTimedOut {
                        timeout: Duration::from_secs(1),
                        endpoint: None,
                    }),
                }),
                Class::new(Kind::Timeout).with_retryable(true),
            ),
        ];
        for (err, expected) in cases {
            assert_eq!(classify_error(err.as_ref()), expected, "{err}");
        }
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_transport_errors_say_what_happened() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let connect = Error::Inner(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(
            classify_error(&connect),
            Class::new(Kind::Transport)
                .with_retryable(true)
                .with_never_sent(true)
        );
        assert_eq!(
            classify_error(&tonic::TimeoutExpired(())),
            Class::new(Kind::Timeout).with_retryable(true)
        );
        let status = tonic::Status::resource_exhausted("slow down");
        assert_eq!(classify_error(&status), Class::new(Kind::Overload));
    }

    #[test]
    fn failure_kinds() {
        assert!(!Kind::Success.is_failure());
        assert!(!Kind::ClientError.is_failure());
        assert!(!Kind::Cancelled.is_failure());
        for kind in [
            Kind::Overload,
            Kind::Unavailable,
            Kind::Timeout,
            Kind::ServerError,
            Kind::Transport,
        ] {
            assert!(kind.is_failure(), "{kind:?}");
        }
    }

    #[test]
    fn do_not_retry_hint_overrides_retryable() {
        let class = Class::new(Kind::Unavailable)
            .with_retryable(true)
            .with_hint(ServerHint::DoNotRetry);
        assert!(!class.is_retryable());
        assert_eq!(class.hint().delay(), None);
    }
}
