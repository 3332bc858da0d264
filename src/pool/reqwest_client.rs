//! A pool of reqwest clients, one per resolved address.
//!
//! Each client pins the logical host name to one address (`ClientBuilder::resolve`), so the
//! round robin above can balance over addresses while the `Host` header and the TLS name stay
//! the logical name. reqwest's own retries are turned off, so attempt counts stay exact.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use super::{Connection, ConnectionService};
use crate::BoxError;
use crate::classify::NeverSent;

type Configure = Arc<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>;

/// Builds one reqwest [`Client`](reqwest::Client) per address for `host`, for a
/// [`Pool`](super::Pool) (a pool of size 1 is usual: the client pools connections itself).
#[derive(Clone)]
pub struct ReqwestConnector {
    host: Arc<str>,
    configure: Configure,
}

impl fmt::Debug for ReqwestConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReqwestConnector")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl ReqwestConnector {
    /// Clients for the logical host name `host` (as it appears in request URIs), with
    /// reqwest's defaults.
    pub fn new(host: impl Into<Arc<str>>) -> Self {
        ReqwestConnector {
            host: host.into(),
            configure: Arc::new(reqwest::Client::builder),
        }
    }

    /// Starts every client from the builder `configure` returns (timeouts, TLS, proxies off…);
    /// the address pinning and `retry(never)` are applied on top. For TLS, hand reqwest a
    /// rustls config built with an explicit provider (`tls_backend_preconfigured`): with
    /// reqwest's `rustls-no-provider` feature and no process-wide provider, reqwest panics in
    /// `build()` — the connector reports that as a configuration error (`Error::Config`,
    /// never retried) instead.
    pub fn configure(
        mut self,
        configure: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Arc::new(configure);
        self
    }
}

impl Service<SocketAddr> for ReqwestConnector {
    type Response = ReqwestConnection;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<ReqwestConnection, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let host = self.host.clone();
        // reqwest panics in `build()` on some configurations (with its `rustls-no-provider`
        // feature, when no process-wide rustls provider is installed): a clear error instead.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.configure)()
                .resolve(&self.host, addr)
                .retry(reqwest::retry::never())
                .build()
        }));
        Box::pin(async move {
            match built {
                Ok(built) => built
                    .map(|client| ReqwestConnection {
                        client,
                        host,
                        port: addr.port(),
                    })
                    .map_err(|e| Box::new(NeverSent::new(e)) as BoxError),
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_owned());
                    Err(Box::new(crate::Error::Config(crate::ConfigError::new(
                        "reqwest",
                        format!(
                            "building the reqwest client failed ({why}); for TLS, give \
                             `configure` a builder with `tls_backend_preconfigured(config)` \
                             built with an explicit rustls provider (docs/pool.md § TLS)"
                        ),
                    ))) as BoxError)
                }
            }
        })
    }
}

/// A reqwest client pinned to one address; sends `http::Request`s (converted at the edge) and
/// answers `http::Response`s, so the rest of the stack sees HTTP types.
///
/// Every request goes to the connector's host name at the endpoint's port: a path-only URI
/// (`/v1/orders`) gets `http://{host}:{port}`, and a full URI keeps its scheme, path and query
/// but takes the endpoint's port (addresses resolved for a name — a headless Service's pods —
/// may listen on another port than the one in the URL).
#[derive(Debug, Clone)]
pub struct ReqwestConnection {
    client: reqwest::Client,
    host: Arc<str>,
    port: u16,
}

impl ReqwestConnection {
    /// The client.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }
}

impl Connection for ReqwestConnection {
    /// reqwest secures an https request itself (or refuses it, built without TLS).
    const SECURE: bool = true;

    fn is_closed(&self) -> bool {
        false
    }

    fn share(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<B> Service<http::Request<B>> for ReqwestConnection
where
    B: Into<reqwest::Body>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<reqwest::Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let uri = req.uri();
        let target = format!(
            "{}://{}:{}{}",
            uri.scheme_str().unwrap_or("http"),
            self.host,
            self.port,
            uri.path_and_query().map_or("/", |p| p.as_str())
        );
        // An unusable host name fails the call before anything is sent.
        let sent = match target.parse() {
            Ok(uri) => {
                *req.uri_mut() = uri;
                reqwest::Request::try_from(req)
                    .map(|req| self.client.execute(req))
                    .map_err(|e| Box::new(NeverSent::new(e)) as BoxError)
            }
            Err(e) => Err(Box::new(NeverSent::new(e)) as BoxError),
        };
        Box::pin(async move { Ok(sent?.await?.into()) })
    }
}

/// A connect failure never reached the server; anything else may have.
impl<B> ConnectionService<http::Request<B>> for ReqwestConnection
where
    B: Into<reqwest::Body> + Send + 'static,
{
    fn into_unsent(error: BoxError) -> Result<http::Request<B>, BoxError> {
        match error.downcast::<reqwest::Error>() {
            Ok(error) if error.is_connect() => Err(Box::new(NeverSent::new(*error))),
            Ok(error) => Err(error),
            Err(other) => Err(other),
        }
    }
}
