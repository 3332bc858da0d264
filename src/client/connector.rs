//! [`ReplayConnector`]: what `Client::build` takes — a connector over the requests' own body
//! type, which the client turns into one over bodies it keeps for replay.
//!
//! Inside a client the retry layer wraps each request body in a
//! [`ReplayBody`](crate::retry::ReplayBody) (so an attempt can be sent again), so the pools
//! below it send `Request<ReplayBody<B>>`. Asking users to spell that connector type made the
//! commonest mistake — forgetting it — a confusing error at the call site; `build` now takes
//! the connector for `Request<B>` and adapts it.

/// A connector `Client::build` can use: it names the connector for the client's pools, whose
/// requests carry bodies kept for replay. Implemented by
/// [`HttpConnector`](crate::pool::HttpConnector) (over `B`: the pools use
/// `HttpConnector<ReplayBody<B>>`, same settings) and
/// [`ReqwestConnector`](crate::pool::ReqwestConnector) (any body). For a transport of your
/// own, implement it, or build with [`ClientBuilder::build_with`](super::ClientBuilder::build_with).
///
/// ```
/// # fn main() -> Result<(), stanchion::ConfigError> {
/// use stanchion::client::{Client, HttpClient, Target};
/// use stanchion::pool::HttpConnector;
///
/// // The connector is over the requests' body type (`Full<Bytes>`, `HttpClient`'s default).
/// let client: HttpClient = Client::http(Target::addrs(["127.0.0.1:8080".parse().unwrap()]))
///     .build(HttpConnector::http1())?;
/// # let _ = client;
/// # Ok(()) }
/// ```
///
/// A connector `build` cannot use is refused with this trait's message, which says what to pass:
///
#[cfg_attr(
    all(feature = "hyper", feature = "tonic"),
    doc = r#"```compile_fail,E0277
let client = stanchion::client::Client::grpc(stanchion::client::Target::addrs([]))
    // tonic's channels do not take the client's replayable bodies.
    .build(stanchion::pool::TonicConnector::new());
```"#
)]
///
/// Writing the replay body into the connector yourself (what `build` once required) now makes
/// bodies wrapped twice, and naming the client says so:
///
#[cfg_attr(
    feature = "hyper",
    doc = r#"```compile_fail,E0308
use bytes::Bytes;
use http_body_util::Full;
use stanchion::client::{Client, HttpClient, Target};
use stanchion::pool::HttpConnector;
use stanchion::retry::ReplayBody;

let client: HttpClient = Client::http(Target::addrs([]))
    .build(HttpConnector::<ReplayBody<Full<Bytes>>>::http1())
    .unwrap();
```"#
)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a connector `Client::build` can use",
    label = "not a `ReplayConnector`",
    note = "pass `HttpConnector::<B>::http1()` (or `http2()`, `auto()`) over your request body type `B`, or a `ReqwestConnector`",
    note = "a `TonicConnector` pools tonic's own channels, which do not take the client's replayable bodies: use `HttpConnector::<tonic::body::Body>::http2()` for a tonic client",
    note = "for a transport of your own, implement `ReplayConnector` or use `ClientBuilder::build_with`"
)]
pub trait ReplayConnector {
    /// The connector the client's pools use.
    type Replaying;

    /// The connector for the client's pools, with this one's settings.
    fn replaying(self) -> Self::Replaying;

    /// Whether every connection it makes speaks HTTP/2, if it knows: `build` refuses a gRPC
    /// client over a connector that may speak HTTP/1.1 (gRPC needs HTTP/2), rather than fail
    /// each call. Default: unknown (`None`), nothing checked.
    fn always_http2(&self) -> Option<bool> {
        None
    }
}

#[cfg(feature = "hyper")]
impl<B, S> ReplayConnector for crate::pool::HttpConnector<B, S> {
    type Replaying = crate::pool::HttpConnector<crate::retry::ReplayBody<B>, S>;

    fn replaying(self) -> Self::Replaying {
        self.with_body()
    }

    /// `http2()` only: `http1()` never, and `auto()` speaks HTTP/1.1 in plaintext and when a
    /// TLS server picks it.
    fn always_http2(&self) -> Option<bool> {
        Some(self.version() == crate::pool::HttpVersion::Http2)
    }
}

#[cfg(feature = "reqwest")]
impl ReplayConnector for crate::pool::ReqwestConnector {
    type Replaying = Self;

    fn replaying(self) -> Self {
        self
    }
}
