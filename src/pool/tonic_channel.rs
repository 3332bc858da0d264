//! A pool of tonic channels to one address.
//!
//! A tonic `Channel` is one HTTP/2 connection that reconnects by itself; pooling a few of them
//! per address spreads calls over several connections (one connection's stream limit and
//! flow-control window no longer cap the endpoint) while the round robin above balances across
//! addresses.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::Service;

use super::{Connection, ConnectionService};
use crate::BoxError;
use crate::classify::NeverSent;

type Configure = Arc<dyn Fn(Endpoint) -> Endpoint + Send + Sync>;

/// Connects tonic [`Channel`]s to a `SocketAddr` (plaintext `http://ADDR`), for a
/// [`Pool`](super::Pool); [`configure`](Self::configure) sets the endpoint's options (timeouts,
/// keep-alive). **Plaintext only**: the channel is dialled `http://`, so tonic never uses a TLS
/// config given to the endpoint, and the pool refuses `https` requests
/// ([`PlaintextRefused`](super::PlaintextRefused)). For gRPC over TLS, build the client with
/// `HttpConnector::<tonic::body::Body>::http2().tls(config)` (feature `tls`; docs/pool.md § TLS).
#[derive(Clone, Default)]
pub struct TonicConnector {
    configure: Option<Configure>,
}

impl fmt::Debug for TonicConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TonicConnector")
            .field("configured", &self.configure.is_some())
            .finish()
    }
}

impl TonicConnector {
    /// A connector with tonic's default endpoint settings.
    pub fn new() -> Self {
        TonicConnector::default()
    }

    /// Applies `configure` to every endpoint before connecting.
    pub fn configure(
        mut self,
        configure: impl Fn(Endpoint) -> Endpoint + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }
}

impl Service<SocketAddr> for TonicConnector {
    type Response = Channel;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Channel, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let configure = self.configure.clone();
        Box::pin(async move {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| Box::new(NeverSent::new(e)) as BoxError)?;
            let endpoint = match configure {
                Some(configure) => configure(endpoint),
                None => endpoint,
            };
            endpoint
                .connect()
                .await
                .map_err(|e| Box::new(NeverSent::new(e)) as BoxError)
        })
    }
}

/// A channel is multiplexed and reconnects by itself, so it never counts as closed.
impl Connection for Channel {
    /// Dialled `http://ADDR`: plaintext HTTP/2, whatever the request's URI says (tonic rewrites
    /// it to the channel's origin), so an `https` call is refused before it is sent.
    const SECURE: bool = false;

    fn is_closed(&self) -> bool {
        false
    }

    fn share(&self) -> Option<Self> {
        Some(self.clone())
    }
}

/// tonic reports its own connect failures; [`classify_error`](crate::classify::classify_error)
/// recognises them as never sent.
impl ConnectionService<http::Request<Body>> for Channel {
    fn into_unsent(error: tonic::transport::Error) -> Result<http::Request<Body>, BoxError> {
        Err(Box::new(error))
    }
}
