//! Connection pools: one per endpoint, with explicit limits and fast, visible failure.
//!
//! Pool exhaustion is a cliff: slow calls hold every connection, callers pile up behind a long
//! checkout wait, and restarts make it worse. A [`Pool`] makes each limit explicit — a maximum
//! size, a bounded checkout wait (never longer than the call's remaining [deadline]), a cap on
//! connection attempts in flight — and turns the cliff into a fast [`Error::PoolTimeout`] plus
//! numbers you can alert on ([`PoolStats`]).
//!
//! A pool sits over a **connector**: a tower `Service` from a target (a resolved address) to a
//! connection, which is itself a `Service` ([`Connection`], [`ConnectionService`]). The crate provides HTTP/1 and
//! HTTP/2 connections on hyper ([`HttpConnector`], feature `hyper`), tonic channels
//! ([`TonicConnector`], feature `tonic`) and reqwest clients ([`ReqwestConnector`], feature
//! `reqwest`); TLS comes from any connector you write, without the pool knowing.
//!
//! The pool is the layer that knows whether a request was sent, so it marks errors
//! [`NeverSent`](crate::classify::NeverSent) when they provably were not: failed connects, a
//! connection found closed before the request went out (its request is then resent on another
//! connection without the caller seeing anything), HTTP/2 `REFUSED_STREAM` and GOAWAY for a
//! stream the server never processed.
//!
//! Connections are returned when the response *body* ends (HTTP/1 cannot carry the next request
//! before), idle ones are closed after the idle timeout, every connection is rotated after a
//! jittered maximum lifetime (and optionally after a number of requests), and broken ones are
//! replaced. The background reaper stops when the pool is dropped.
//!
//! ```no_run
//! # #[cfg(feature = "hyper")]
//! # async fn run() -> Result<(), stanchion::BoxError> {
//! use std::time::Duration;
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use stanchion::pool::{HttpConnector, PoolBuilder};
//! use tower::ServiceExt;
//!
//! let connector = HttpConnector::http1();
//! let pool = PoolBuilder::new()
//!     .max_size(10)
//!     .checkout_timeout(Duration::from_secs(2))
//!     .build(connector, "127.0.0.1:8080".parse()?)?;
//! let req = http::Request::get("/health").body(Empty::<Bytes>::new())?;
//! let res = pool.clone().oneshot(req).await?;
//! assert!(res.status().is_success());
//! println!("utilisation: {:.0} %", pool.stats().utilisation() * 100.0);
//! # Ok(()) }
//! ```
//!
//! [deadline]: crate::deadline::Deadline

mod checkout;
mod config;
mod core;
#[cfg(feature = "hyper")]
mod http_conn;
#[cfg(feature = "hyper")]
mod hyper_conn;
mod reaper;
#[cfg(feature = "reqwest")]
mod reqwest_client;
mod service;
mod stats;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tonic")]
mod tonic_channel;

use crate::BoxError;
use crate::deadline::DeadlineCarrier;
use tower::Service;

pub use self::checkout::Checkout;
pub use self::config::{
    DEFAULT_CHECKOUT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_LIFETIME_JITTER,
    DEFAULT_MAX_CONNECTING, DEFAULT_MAX_LIFETIME, DEFAULT_MAX_SIZE, DEFAULT_MAX_STREAMS,
    PoolBuilder,
};
pub use self::stats::PoolStats;

#[cfg(feature = "hyper")]
pub use self::http_conn::{Handshake, HttpConnection, HttpSendError, Plaintext, Secured, Security};
#[cfg(feature = "hyper")]
pub use self::hyper_conn::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_H2_KEEP_ALIVE, HttpConnector, HttpVersion,
};
#[cfg(feature = "reqwest")]
pub use self::reqwest_client::{ReqwestConnection, ReqwestConnector};
pub use self::service::{Pool, PoolFuture};
#[cfg(feature = "tls")]
pub use self::tls::{DEFAULT_TLS_HANDSHAKE_TIMEOUT, TlsConfig, TlsError, TlsErrorKind};
#[cfg(feature = "tonic")]
pub use self::tonic_channel::TonicConnector;

#[cfg(doc)]
use crate::Error;

/// What a [`Pool`] must know about a connection it holds.
pub trait Connection: Send + 'static {
    /// Whether the connections of this type protect what they carry (TLS). A pool refuses a
    /// request that needs it (an `https` URI, or any scheme other than `http`) on a connection
    /// type that does not, before connecting or writing a byte ([`PlaintextRefused`]).
    /// Default: `false` — fail closed; a connection type that secures its traffic, or refuses
    /// an https request itself, says `true` (reqwest clients do, and the crate's hyper
    /// connections made over TLS, `HttpConnection<B, Secured>`; plaintext hyper connections and
    /// tonic channels dialled `http://` do not).
    const SECURE: bool = false;

    /// The server name the peer's TLS certificate was verified for, if this connection knows
    /// it. A pool never sends a request for another host on it ([`ServerNameMismatch`]).
    /// Default: `None` (no TLS, or a connection that picks the name per request itself).
    fn verified_name(&self) -> Option<&str> {
        None
    }

    /// Whether the [verified name](Self::verified_name) is the host of the request the
    /// connection was made for ([`connecting_for`]) rather than one its connector was
    /// configured with. A pool then keys such connections by name: a connection carries
    /// requests for its own host only, and a request for another host gets a connection of its
    /// own (verified for that host) — pooled connections are keyed by (server name, address).
    /// Default: `false`.
    fn names_from_requests(&self) -> bool {
        false
    }

    /// Whether the connection can carry no more requests (closed by the peer, failed, told to
    /// go away). The pool drops such connections and opens new ones.
    fn is_closed(&self) -> bool;

    /// For a multiplexed connection (HTTP/2, a tonic channel), a handle that sends on the same
    /// connection; the pool hands such handles to up to the stream limit of callers at once.
    /// `None` for a connection that carries one request at a time (HTTP/1).
    fn share(&self) -> Option<Self>
    where
        Self: Sized;
}

tokio::task_local! {
    static CONNECTING_FOR: Option<std::sync::Arc<str>>;
}

/// The host of the request a [`Pool`] is connecting for — its URI's host, else its `Host`
/// header's — when called inside a connector's `call` (or its future) that the pool drives;
/// for the warm connections of `min_idle`, the host the last request named. `None` outside a
/// pool's connect, or for a request that names no host. A TLS connector with no configured
/// server name verifies the connection for this host (SNI), as
/// `HttpConnector`'s does; a connector of your own may too
/// (then say so with [`Connection::names_from_requests`]).
pub fn connecting_for() -> Option<std::sync::Arc<str>> {
    CONNECTING_FOR.try_with(Clone::clone).ok().flatten()
}

/// Runs `connect` with [`connecting_for`] answering `host`.
pub(crate) async fn connect_for<F: std::future::Future>(
    host: Option<std::sync::Arc<str>>,
    connect: F,
) -> F::Output {
    CONNECTING_FOR.scope(host, connect).await
}

/// A [`Connection`] that sends `Req`s: a tower `Service` that can say whether a failed request
/// was sent.
pub trait ConnectionService<Req>: Connection + Service<Req> {
    /// Splits a send error: `Ok(request)` when the connection handed the request back unsent
    /// (the pool resends it on another connection), otherwise the error to report — wrapped in
    /// [`NeverSent`](crate::classify::NeverSent) when the connection knows the server never saw
    /// the request.
    fn into_unsent(error: Self::Error) -> Result<Req, BoxError>;
}

/// What a [`Pool`] needs of a request: its deadline (the checkout is bounded by it, and what
/// remains is written on the wire at hand-off) and, where it is safe, a copy to send again.
///
/// Implemented for `http::Request<B>` with a body that can be copied
/// ([`RetryBody`](crate::retry::RetryBody): `ReplayBody`, `Full`, `Empty`, `String`; a streamed
/// body such as hyper's `Incoming` cannot be, and is never resent).
pub trait PoolRequest: DeadlineCarrier + Sized {
    /// A copy to send again if this request's *reused* connection closes before any of the
    /// response arrives (a server closing an idle connection at its keep-alive timeout as the
    /// request goes out): only for a request safe to repeat — an idempotent method (RFC 9110
    /// §9.2.2) or one carrying an idempotency key — whose body can be copied. `None` (the
    /// default): never resent.
    fn resend_copy(&self) -> Option<Self> {
        None
    }

    /// Whether the request must not go in plaintext. Default: no (a request type of your own
    /// that can be sent over TLS says so).
    fn needs_tls(&self) -> bool {
        false
    }

    /// The host the request is for (its URI's host, else its `Host` header's), for messages.
    /// Default: `None`.
    fn host(&self) -> Option<&str> {
        None
    }

    /// Whether every host the request names (its URI's host, every `Host` header) is `name`, a
    /// TLS connection's [verified name](Connection::verified_name); a request that names none
    /// is (the connection fills in its name). Default: `true`.
    fn is_for_host(&self, name: &str) -> bool {
        let _ = name;
        true
    }

    /// Whether a copy taken by [`resend_copy`](Self::resend_copy) can still be sent: its body
    /// can still replay from the start (a replay buffer may have been outgrown, or its source
    /// failed, while the first copy was sent). Default: yes.
    fn can_resend(&self) -> bool {
        true
    }
}

#[cfg(feature = "http")]
impl<B: crate::retry::RetryBody> PoolRequest for http::Request<B> {
    fn resend_copy(&self) -> Option<Self> {
        // Go's HTTP transport does the same for the same requests (`isReplayable`: idempotent
        // methods, or an `Idempotency-Key` / `X-Idempotency-Key` header).
        let keyed = self.extensions().get::<crate::retry::RetrySafe>().is_some()
            || self.headers().contains_key("idempotency-key")
            || self.headers().contains_key("x-idempotency-key");
        if !(self.method().is_idempotent() || keyed) {
            return None;
        }
        crate::retry::RetryRequest::try_clone(self)
    }

    fn can_resend(&self) -> bool {
        crate::retry::RetryBody::is_replayable(self.body())
    }

    /// Any scheme but `http` (in any case): `https`, `HTTPS`, a scheme the pool does not know —
    /// fail closed. A URI without a scheme (origin-form) is `http`.
    fn needs_tls(&self) -> bool {
        self.uri()
            .scheme_str()
            .is_some_and(|scheme| !scheme.eq_ignore_ascii_case("http"))
    }

    fn host(&self) -> Option<&str> {
        if let Some(host) = self.uri().host() {
            return Some(host);
        }
        let host = self.headers().get(http::header::HOST)?.to_str().ok()?;
        Some(host_of(host))
    }

    /// The URI's host and every `Host` header must name `name`; an unreadable `Host` does not.
    fn is_for_host(&self, name: &str) -> bool {
        if let Some(host) = self.uri().host()
            && !same_host(name, host)
        {
            return false;
        }
        self.headers()
            .get_all(http::header::HOST)
            .iter()
            .all(|value| value.to_str().is_ok_and(|h| same_host(name, host_of(h))))
    }
}

/// The host of a `Host` header's value: `name[:port]`, `[v6]:port`.
#[cfg(feature = "http")]
fn host_of(host: &str) -> &str {
    match host.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .map_or(host, |(v6, _)| &host[..v6.len() + 2]),
        None => host.split_once(':').map_or(host, |(name, _)| name),
    }
}

/// Whether `requested` (a URI host: a DNS name, an IPv4 address or a bracketed IPv6 one) names
/// the host a connection was verified for: DNS names compared without case and without a
/// trailing dot, IP addresses compared as addresses.
pub(crate) fn same_host(verified: &str, requested: &str) -> bool {
    // Without brackets, without one trailing dot: slices, no allocation (a keyed pool compares
    // on every checkout).
    fn bare(h: &str) -> &str {
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h)
    }
    let (v, r) = (bare(verified), bare(requested));
    if v.eq_ignore_ascii_case(r) {
        return true;
    }
    if let (Ok(a), Ok(b)) = (v.parse::<std::net::IpAddr>(), r.parse::<std::net::IpAddr>()) {
        return a == b;
    }
    let one_dot = |h: &str| h.len() - usize::from(h.ends_with('.'));
    v[..one_dot(v)].eq_ignore_ascii_case(&r[..one_dot(r)])
}

/// A request for one host refused on a TLS connection verified for another: nothing was
/// written. A connector's TLS name ([`TlsConfig::server_name`]) must be the host of the URLs it
/// serves. The caller's own mistake — never retried, neither a failure nor a success of the
/// endpoint.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused to send a request for host {requested:?} on a TLS connection to {endpoint} verified \
     for {verified:?}: set the connector's server name to the host of the URLs it serves"
)]
pub struct ServerNameMismatch {
    endpoint: std::sync::Arc<str>,
    verified: String,
    requested: String,
}

/// A request for a host no TLS connection to the endpoint can be verified for, when the name
/// is taken from the request (a `TlsConfig` with no configured
/// server name): the host is no name TLS can verify (refused before connecting), or the
/// endpoint's certificate is not valid for it (rustls' error in `source()`). The caller's own
/// mistake — a host the service does not serve, a typo — never retried, neither a failure nor
/// a success of the endpoint (another endpoint, or the next request for a served host, is not
/// at fault), gRPC FAILED_PRECONDITION.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused a request for host {host:?}: {endpoint} cannot be verified for it over TLS ({why})"
)]
pub struct HostNotServed {
    endpoint: std::sync::Arc<str>,
    host: String,
    why: &'static str,
    #[source]
    source: Option<BoxError>,
}

impl HostNotServed {
    #[cfg(feature = "tls")]
    pub(crate) fn new(
        endpoint: std::net::SocketAddr,
        host: &str,
        why: &'static str,
        source: Option<BoxError>,
    ) -> Self {
        HostNotServed {
            endpoint: endpoint.to_string().into(),
            host: host.to_owned(),
            why,
            source,
        }
    }

    /// The host the request named.
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// Whether `err` is the pool's own refusal to send (plaintext, a TLS name mismatch, a host no
/// TLS connection can be verified for).
pub(crate) fn is_own_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    err.is::<PlaintextRefused>() || err.is::<ServerNameMismatch>() || err.is::<HostNotServed>()
}

/// Why a pool would not write `req` on `conn`, if it would not.
pub(crate) fn refusal<Conn: Connection, Req: PoolRequest>(
    conn: &Conn,
    req: &Req,
    endpoint: &std::sync::Arc<str>,
) -> Option<BoxError> {
    let verified = conn.verified_name()?;
    if req.is_for_host(verified) {
        return None;
    }
    Some(Box::new(ServerNameMismatch {
        endpoint: endpoint.clone(),
        verified: verified.to_owned(),
        requested: req.host().unwrap_or("an unreadable Host header").to_owned(),
    }))
}

/// An `https` request refused by a pool whose connections are plaintext
/// ([`Connection::SECURE`] is `false`: an [`HttpConnector`] without TLS): nothing was connected
/// or written. The caller's own mistake — a client error, never retried.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused to send an https request in plaintext to {endpoint}: this pool's connections have \
     no TLS (give the connector a TlsConfig, or use an http:// URI for a plaintext endpoint)"
)]
pub struct PlaintextRefused {
    endpoint: std::sync::Arc<str>,
}

impl PlaintextRefused {
    pub(crate) fn new(endpoint: std::sync::Arc<str>) -> Self {
        PlaintextRefused { endpoint }
    }
}

/// A request that went out on a reused connection, which closed before any of the response
/// arrived: it may have reached the server (so it is not never-sent). The pool sends a copy
/// once more on a fresh connection when that is safe ([`PoolRequest::resend_copy`]); otherwise
/// this is the error.
#[derive(Debug, thiserror::Error)]
#[error("the reused connection closed before the response began")]
pub struct ClosedBeforeResponse {
    #[source]
    source: BoxError,
}

impl ClosedBeforeResponse {
    /// Wraps the transport's error.
    pub fn new(source: impl Into<BoxError>) -> Self {
        ClosedBeforeResponse {
            source: source.into(),
        }
    }
}

/// A response that can hold a pool [`Checkout`] until it is fully read, so its connection
/// (or HTTP/2 stream) counts as busy until then.
pub trait PoolResponse<Conn: Connection>: Sized {
    /// The response handed to the caller.
    type Output;

    /// Keeps `checkout` until the response stream ends, fails or is dropped; calls
    /// [`Checkout::complete`] when the response was read to its end (a one-request-at-a-time
    /// connection given back without it is closed).
    fn hold(self, checkout: Checkout<Conn>) -> Self::Output;
}

#[cfg(feature = "http")]
impl<B: http_body::Body, Conn: Connection> PoolResponse<Conn> for http::Response<B> {
    type Output = http::Response<crate::guarded::GuardedBody<B, Checkout<Conn>>>;

    fn hold(self, checkout: Checkout<Conn>) -> Self::Output {
        self.map(|body| crate::guarded::GuardedBody::new(body, Some(checkout)))
    }
}
