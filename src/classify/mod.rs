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
//! A [`Class`] reports **facts**, never policy: the [`Kind`] of outcome (success, the caller's own
//! error, overload — 429, RESOURCE_EXHAUSTED — unavailable — 503, UNAVAILABLE — timeout, server
//! error, transport failure, cancellation, or a refusal by the client itself), the HTTP status or
//! gRPC code it is ([`Class::status`], [`Class::grpc_code`]; an error gets the code gRPC gives
//! it, see [`grpc_code_of_error`]), a server delay hint ([`ServerHint`]) and whether the request
//! provably [never reached the server](NeverSent). What to *do* about it is decided elsewhere,
//! by two separate tables: the route's retry policy (in [`retry`](crate::retry): the method or
//! key for HTTP, the method's retryable codes for gRPC — the same rules for a response and for
//! an error), and what counts against an endpoint ([`Class::counts_against_endpoint`]: the
//! breaker gate and ejection).
//!
//! [`ClassifiedBody`] drives the second phase: it wraps a response body and reports the final
//! class once, when the stream really ends (or fails, or is dropped) — what breakers and
//! bulkheads need, since a call is not over before its body is.
//!
//! Implementations: [`HttpClassifier`] (status codes and `Retry-After`), [`GrpcClassifier`] (gRPC
//! status in headers or trailers, `grpc-retry-pushback-ms`, errors by their gRPC code) and
//! [`classify_error`] for errors, used by both.
//!
//! ```
//! use stanchion::classify::{Classify, HttpClassifier, Kind, Verdict};
//!
//! let res = http::Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
//! // HTTP is decided on the head, so `Done` is the only verdict it can give.
//! let Verdict::Done(class) = HttpClassifier::new().classify_response(&res);
//! assert_eq!(class.kind(), Kind::Unavailable);
//! assert_eq!(class.status(), Some(503));
//! assert_eq!(class.hint().delay(), Some(std::time::Duration::from_secs(2)));
//! ```

#[cfg(feature = "http")]
mod body;
mod code;
#[cfg(feature = "http")]
mod grpc;
#[cfg(feature = "http")]
mod http;
mod rejected;
#[cfg(feature = "http")]
mod retry_after;
mod transport;

use std::time::Duration;

#[cfg(feature = "http")]
pub use self::body::{ClassifiedBody, OnEnd};
pub use self::code::{GrpcCode, GrpcCodes};
#[cfg(feature = "http")]
pub use self::grpc::{GrpcClassifier, GrpcEos, parse_pushback};
#[cfg(feature = "http")]
pub use self::http::HttpClassifier;
pub use self::rejected::EndpointRejected;
pub(crate) use self::rejected::{RejectedAt, rejected_at, rejects_endpoint};
#[cfg(feature = "http")]
pub use self::retry_after::{FixedClock, SystemClock, WallClock, parse_retry_after};
pub use self::transport::grpc_code_of_error;

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
    /// The client refused the call itself before sending it: an open breaker, a pool checkout
    /// or a bulkhead wait that timed out, a full bulkhead, no endpoint to send to. The server
    /// played no part.
    Refused,
}

/// Every [`Kind`]'s label, in [`Kind::index`] order.
pub(crate) const KIND_LABELS: [&str; 9] = [
    "success",
    "client_error",
    "overload",
    "unavailable",
    "timeout",
    "server_error",
    "transport",
    "cancelled",
    "refused",
];

impl Kind {
    /// The kind as a metric label (`snake_case`, a fixed list: `success`, `client_error`,
    /// `overload`, `unavailable`, `timeout`, `server_error`, `transport`, `cancelled`,
    /// `refused` — the `outcome` of `stanchion.client.calls` and `stanchion.client.attempts`).
    pub fn label(self) -> &'static str {
        KIND_LABELS[self.index()]
    }

    /// The kind's position in [`KIND_LABELS`].
    pub(crate) fn index(self) -> usize {
        match self {
            Kind::Success => 0,
            Kind::ClientError => 1,
            Kind::Overload => 2,
            Kind::Unavailable => 3,
            Kind::Timeout => 4,
            Kind::ServerError => 5,
            Kind::Transport => 6,
            Kind::Cancelled => 7,
            Kind::Refused => 8,
        }
    }

    /// Whether this kind of outcome counts against the endpoint that produced it (breakers,
    /// ejection) — before the timeout floor of [`Class::counts_against_endpoint`]:
    ///
    /// | kind | counts | why |
    /// |---|---|---|
    /// | server error (5xx, UNKNOWN, INTERNAL, DATA_LOSS), unavailable (503, UNAVAILABLE), transport (connect failure, reset, lost connection) | yes | the endpoint failed, or could not be reached |
    /// | timeout (408, 504, DEADLINE_EXCEEDED, a per-try or deadline cut) | yes, if the attempt had at least the floor | a hung endpoint is a failing one; a budget shorter than the service's latency is the caller's |
    /// | overload (429, RESOURCE_EXHAUSTED) | no | deliberate shedding: the endpoint is protecting itself, not failing |
    /// | refused (our own breaker, pool, bulkhead; no endpoint) | no | the endpoint played no part |
    /// | success, the caller's own error (4xx), cancelled | no | |
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Kind::ServerError | Kind::Unavailable | Kind::Transport | Kind::Timeout
        )
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

/// What one outcome was: facts for the retry policy and for endpoint accounting to decide on.
///
/// ```
/// use std::time::Duration;
/// use stanchion::classify::{Class, GrpcCode, Kind};
///
/// let cut = Class::new(Kind::Timeout).with_grpc_code(GrpcCode::DeadlineExceeded);
/// let floor = Duration::from_millis(100);
/// // A timeout counts against the endpoint only if the attempt was given at least the floor.
/// assert!(cut.counts_against_endpoint(Some(Duration::from_secs(2)), floor));
/// assert!(!cut.counts_against_endpoint(Some(Duration::from_millis(50)), floor));
/// // Shedding never does.
/// assert!(!Class::new(Kind::Overload).counts_against_endpoint(None, floor));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    kind: Kind,
    hint: ServerHint,
    never_sent: bool,
    other_endpoint: bool,
    /// The per-try timeout cut the attempt ([`Error::AttemptTimedOut`]).
    per_try_cut: bool,
    grpc_code: Option<GrpcCode>,
    status: Option<u16>,
}

impl Class {
    /// A success.
    pub const fn success() -> Self {
        Class::new(Kind::Success)
    }

    /// An outcome of `kind`, with no hint, status or code.
    pub const fn new(kind: Kind) -> Self {
        Class {
            kind,
            hint: ServerHint::None,
            never_sent: false,
            other_endpoint: false,
            per_try_cut: false,
            grpc_code: None,
            status: None,
        }
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

    /// Marks the outcome as one the endpoint gave because it is unfit for the request (see
    /// [`EndpointRejected`]): retried only on another endpoint.
    pub const fn with_other_endpoint(mut self, other_endpoint: bool) -> Self {
        self.other_endpoint = other_endpoint;
        self
    }

    /// Records the gRPC code the outcome is (a gRPC classifier sets it on every class).
    pub const fn with_grpc_code(mut self, code: GrpcCode) -> Self {
        self.grpc_code = Some(code);
        self
    }

    /// Records the HTTP status of a response.
    pub const fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The kind of outcome.
    pub const fn kind(&self) -> Kind {
        self.kind
    }

    /// The gRPC code of a gRPC outcome (a response's status, or the code of an error).
    pub const fn grpc_code(&self) -> Option<GrpcCode> {
        self.grpc_code
    }

    /// The HTTP status of an HTTP response (`None` for an error).
    pub const fn status(&self) -> Option<u16> {
        self.status
    }

    /// Whether the kind of outcome counts against the endpoint ([`Kind::is_failure`]), with no
    /// timeout floor.
    pub fn is_failure(&self) -> bool {
        self.kind.is_failure()
    }

    /// Whether the outcome counts against the endpoint that produced it (its breaker, its
    /// ejection): the table of [`Kind::is_failure`], where a timeout counts only if the
    /// attempt was `given` at least `floor` (`given` unknown: it counts).
    pub fn counts_against_endpoint(&self, given: Option<Duration>, floor: Duration) -> bool {
        self.endpoint_verdict(given, floor) == EndpointVerdict::Failure
    }

    /// What the outcome says about the endpoint's health: a failure (see
    /// [`counts_against_endpoint`](Self::counts_against_endpoint)); a success — the endpoint
    /// answered properly, a success or the caller's own error (4xx); or nothing at all —
    /// shedding, a cancellation, the client's own refusal, a timeout below the floor — which a
    /// breaker must record neither way (it neither breaks nor extends a run of failures).
    pub fn endpoint_verdict(&self, given: Option<Duration>, floor: Duration) -> EndpointVerdict {
        match self.kind {
            Kind::Success | Kind::ClientError => EndpointVerdict::Success,
            Kind::Timeout if given.is_some_and(|given| given < floor) => EndpointVerdict::Neutral,
            kind if kind.is_failure() => EndpointVerdict::Failure,
            _ => EndpointVerdict::Neutral,
        }
    }

    /// The server's delay hint.
    pub const fn hint(&self) -> ServerHint {
        self.hint
    }

    /// Whether the request provably never reached the server (always safe to retry).
    pub const fn is_never_sent(&self) -> bool {
        self.never_sent
    }

    /// Whether the endpoint proved unfit for the request ([`EndpointRejected`]: its TLS
    /// identity, its protocols): the request may go only to another endpoint.
    pub const fn needs_other_endpoint(&self) -> bool {
        self.other_endpoint
    }

    /// Whether the client's own per-try timeout cut the attempt ([`Error::AttemptTimedOut`]),
    /// as opposed to any other timeout (a TCP timeout, a server's DEADLINE_EXCEEDED).
    pub const fn is_per_try_cut(&self) -> bool {
        self.per_try_cut
    }
}

/// What one outcome says about an endpoint's health ([`Class::endpoint_verdict`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointVerdict {
    /// It failed: counts against the endpoint.
    Failure,
    /// It answered properly.
    Success,
    /// Says nothing about the endpoint: recorded neither way.
    Neutral,
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

/// Classifies an error by what the layers that raised it know (facts only: the retry policy
/// decides what to do with them).
///
/// - [`NeverSent`] anywhere in the chain, or HTTP/2 saying the server never processed the
///   stream (`REFUSED_STREAM`, a GOAWAY below it — from any transport): never sent.
/// - an I/O timeout (`ErrorKind::TimedOut`: a connect that did not complete in time) is a
///   timeout.
/// - stanchion's own errors: a deadline that ran out or a per-try timeout is a timeout; an open
///   breaker, a pool checkout or bulkhead wait that timed out, a full bulkhead and no endpoints
///   are the client's own refusals ([`Kind::Refused`]), never sent; idempotency conflicts and
///   configuration errors are the caller's own.
/// - with feature `tonic`: a `tonic::Status` is classified by its code; tonic's
///   `ConnectError` (its connector failed) is never sent; tonic's `TimeoutExpired` (the
///   `grpc-timeout` its channel enforces) is a timeout.
/// - anything else is a transport failure that may have reached the server.
pub fn classify_error(err: &(dyn std::error::Error + 'static)) -> Class {
    let never_sent =
        chain(err).any(|e| e.is::<NeverSent>() || is_connect_error(e) || never_processed(e));
    for e in chain(err) {
        if crate::pool::is_own_refusal(e) {
            // The client's own refusal (an https request to a plaintext pool): nothing about
            // the endpoint — neither its failure nor its success — and the retry layer ends
            // the call (it would be refused again anywhere).
            return Class::new(Kind::Refused).with_never_sent(true);
        }
        if e.is::<EndpointRejected>() {
            // The endpoint is unfit (its certificate, an alert, no common protocol): never
            // sent, its failure, and only another endpoint may be tried.
            return Class::new(Kind::Transport)
                .with_never_sent(true)
                .with_other_endpoint(true);
        }
        if is_transport_timeout(e) || is_io_timeout(e) {
            return Class::new(Kind::Timeout).with_never_sent(never_sent);
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
    Class::new(Kind::Transport).with_never_sent(never_sent)
}

/// Whether the transport says it could not connect (tonic's connector marks such errors).
fn is_connect_error(_err: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(feature = "tonic")]
    if _err.is::<tonic::ConnectError>() {
        return true;
    }
    false
}

/// Whether `err` is an I/O timeout (a connect that did not complete in time, a read that
/// timed out): a timeout, whichever layer reports it.
fn is_io_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    err.downcast_ref::<std::io::Error>()
        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
}

/// Whether `err` is HTTP/2 saying the server never processed the stream: a `REFUSED_STREAM`
/// reset or a GOAWAY whose last stream id is below the stream's (RFC 9113 §8.7), from the
/// server. Whatever transport carried it (hyper, a tonic channel, reqwest), the request never
/// ran.
pub(crate) fn never_processed(_err: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(any(feature = "hyper", feature = "tonic"))]
    if let Some(h2) = _err.downcast_ref::<h2::Error>() {
        let refused = h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        return h2.is_remote() && (refused || h2.is_go_away());
    }
    false
}

/// Whether `err`, or an error in its source chain, is the server's GOAWAY (RFC 9113 §6.8): the
/// connection takes no new streams, so a pool must not hand it out again.
pub(crate) fn is_go_away(_err: &(dyn std::error::Error + 'static)) -> bool {
    #[cfg(any(feature = "hyper", feature = "tonic"))]
    return chain(_err).any(|e| {
        e.downcast_ref::<h2::Error>()
            .is_some_and(|h2| h2.is_go_away() && h2.is_remote())
    });
    #[cfg(not(any(feature = "hyper", feature = "tonic")))]
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
        // Cut while it waited for one of the client's own connections, or while connecting:
        // never sent.
        Error::AttemptTimedOut { never_sent, .. } => Class {
            per_try_cut: true,
            ..Class::new(Kind::Timeout).with_never_sent(*never_sent)
        },
        Error::CircuitOpen { .. }
        | Error::NoEndpoints { .. }
        | Error::PoolTimeout { .. }
        | Error::BulkheadFull { .. }
        | Error::BulkheadTimeout { .. } => Class::new(Kind::Refused).with_never_sent(true),
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
pub(crate) fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
