//! [`HttpConnector`]: HTTP/1 and HTTP/2 connections on hyper's client connection API over
//! tokio TCP, with TLS (rustls, feature `tls`) when given a [`TlsConfig`](super::TlsConfig).
//!
//! hyper's `SendRequest` does not expose the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`, so the
//! pool counts streams itself against its configured limit and opens another connection rather
//! than letting requests queue invisibly inside h2.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::Authority;
use tokio::net::TcpStream;
use tower::Service;

#[cfg(feature = "tls")]
use super::http_conn::Secured;
use super::http_conn::{Handshake, HttpConnection, Plaintext, Security};
use crate::BoxError;
use crate::classify::NeverSent;

/// Default TCP connect timeout: 1 s (a lost SYN is retransmitted after 1 s; failing then lets
/// the caller try another endpoint). The pool's checkout timeout bounds it too.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default HTTP/2 keep-alive: a PING every 20 s, and the connection is closed if the answer
/// takes longer than 20 s (so a dead peer behind a silent network path is found).
pub const DEFAULT_H2_KEEP_ALIVE: Duration = Duration::from_secs(20);

/// Which protocol an [`HttpConnector`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/1.1: one request at a time per connection. Over TLS, ALPN offers `http/1.1`.
    Http1,
    /// HTTP/2: many streams per connection. In plaintext, with prior knowledge (h2c); over TLS,
    /// ALPN offers only `h2`, and a server that does not pick it fails the connect
    /// ([`TlsErrorKind::NoCommonProtocol`](super::TlsErrorKind::NoCommonProtocol)) — what a
    /// gRPC client needs.
    Http2,
    /// Over TLS, ALPN offers `h2` and `http/1.1` and each connection speaks what the server
    /// picked (HTTP/1.1 if it picked none). In plaintext, HTTP/1.1.
    Auto,
}

/// A connector that opens HTTP/1 or HTTP/2 connections to a `SocketAddr`, for a
/// [`Pool`](super::Pool): plaintext by default, TLS with [`tls`](Self::tls) (feature `tls`),
/// which makes it an `HttpConnector<B, Secured>`.
/// For another TLS stack or another transport, connect a stream yourself and start the
/// connection with [`Handshake`](super::Handshake).
///
/// Request bodies must be `Unpin` (hyper's HTTP/2 connection requires it; box a body that is
/// not). Its connect errors (refused, timed out, failed handshake) are all
/// [never sent](crate::classify::NeverSent); a TLS handshake that shows the endpoint unfit (its
/// certificate, an alert, no common protocol) is
/// [`EndpointRejected`](crate::classify::EndpointRejected).
pub struct HttpConnector<B, S = Plaintext> {
    version: HttpVersion,
    connect_timeout: Duration,
    keep_alive: Option<Duration>,
    #[cfg(feature = "tls")]
    tls: Option<Tls>,
    _body: PhantomData<fn(B, S)>,
}

/// A connector's TLS: the settings, and the rustls config with its ALPN offer.
#[cfg(feature = "tls")]
#[derive(Clone)]
struct Tls {
    settings: super::TlsConfig,
    connector: tokio_rustls::TlsConnector,
}

impl<B, S> Clone for HttpConnector<B, S> {
    fn clone(&self) -> Self {
        HttpConnector {
            version: self.version,
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
            _body: PhantomData,
        }
    }
}

impl<B, S> fmt::Debug for HttpConnector<B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HttpConnector");
        d.field("version", &self.version)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive", &self.keep_alive);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.as_ref().map(|t| &t.settings));
        d.finish()
    }
}

impl<B, S> HttpConnector<B, S> {
    /// The same connector (version, timeouts, TLS) for requests with bodies of type `B2`:
    /// what [`ReplayConnector`](crate::client::ReplayConnector) does for `Client::build`, which
    /// sends bodies kept for replay.
    pub fn with_body<B2>(self) -> HttpConnector<B2, S> {
        HttpConnector {
            version: self.version,
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
            #[cfg(feature = "tls")]
            tls: self.tls,
            _body: PhantomData,
        }
    }
}

impl<B> HttpConnector<B> {
    /// An HTTP/1.1 connector.
    pub fn http1() -> Self {
        HttpConnector::new(HttpVersion::Http1)
    }

    /// An HTTP/2 connector (prior knowledge in plaintext, `h2` by ALPN over TLS), with
    /// keep-alive pings every [`DEFAULT_H2_KEEP_ALIVE`].
    pub fn http2() -> Self {
        HttpConnector::new(HttpVersion::Http2)
    }

    /// A connector that speaks what the server picks by ALPN over TLS (`h2` or `http/1.1`);
    /// HTTP/1.1 in plaintext.
    pub fn auto() -> Self {
        HttpConnector::new(HttpVersion::Auto)
    }

    fn new(version: HttpVersion) -> Self {
        HttpConnector {
            version,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keep_alive: Some(DEFAULT_H2_KEEP_ALIVE),
            #[cfg(feature = "tls")]
            tls: None,
            _body: PhantomData,
        }
    }

    /// Connects over TLS with `config` (feature `tls`): the certificate is verified for the
    /// config's [server name](super::TlsConfig::server_name), or else for the host of the
    /// request each connection is made for (an IP-literal host, or none, as an IP), ALPN
    /// offers what [the version](HttpVersion) speaks, and the handshake is bounded by the
    /// config's handshake timeout, the checkout timeout and the call's deadline. Connections
    /// are then secure: `https` requests go on them, and only for the verified name.
    #[cfg(feature = "tls")]
    pub fn tls(self, config: super::TlsConfig) -> HttpConnector<B, Secured> {
        HttpConnector {
            version: self.version,
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
            tls: Some(Tls::new(config, self.version)),
            _body: PhantomData,
        }
    }
}

impl<B, S> HttpConnector<B, S> {
    /// The TCP connect timeout (zero is treated as "no connect timeout of its own").
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// HTTP/2 keep-alive: the ping interval and answer timeout, or `None` for no pings.
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval.filter(|i| !i.is_zero());
        self
    }

    /// The protocol this connector speaks.
    pub fn version(&self) -> HttpVersion {
        self.version
    }
}

#[cfg(feature = "tls")]
impl Tls {
    fn new(settings: super::TlsConfig, version: HttpVersion) -> Tls {
        let alpn: &[&[u8]] = match version {
            HttpVersion::Http1 => &[b"http/1.1"],
            HttpVersion::Http2 => &[b"h2"],
            HttpVersion::Auto => &[b"h2", b"http/1.1"],
        };
        let connector = tokio_rustls::TlsConnector::from(settings.with_alpn(alpn));
        Tls {
            settings,
            connector,
        }
    }
}

/// Why a connect failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    TimedOut {
        addr: SocketAddr,
        timeout: Duration,
        /// An I/O timeout, so classification sees a timeout.
        source: std::io::Error,
    },
    #[error("connect to {addr} failed")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {addr} failed")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(super::TlsError),
    /// The request's host, when the name is taken from it: refused.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Host(super::HostNotServed),
}

impl ConnectError {
    /// The error the pool sees: never sent, and for an endpoint unfit for the request (its
    /// certificate, an alert, no common protocol), rejected.
    fn into_boxed(self) -> BoxError {
        #[cfg(feature = "tls")]
        if let ConnectError::Host(refused) = self {
            return Box::new(refused);
        }
        #[cfg(feature = "tls")]
        if let ConnectError::Tls(tls) = self {
            if tls.kind().rejects_endpoint() {
                return Box::new(crate::classify::EndpointRejected::new(tls));
            }
            // A connect failure (a handshake timeout's cause is an I/O timeout, so
            // classification sees a timeout, like a TCP connect timeout).
            return Box::new(NeverSent::new(tls));
        }
        Box::new(NeverSent::new(self))
    }
}

impl<B, S: Security> Service<SocketAddr> for HttpConnector<B, S>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = HttpConnection<B, S>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpConnection<B, S>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            connector
                .connect(addr)
                .await
                .map_err(ConnectError::into_boxed)
        })
    }
}

impl<B, S: Security> HttpConnector<B, S>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn connect(self, addr: SocketAddr) -> Result<HttpConnection<B, S>, ConnectError> {
        // The name to verify, before dialling: a host no certificate can be verified for is
        // refused without a connect.
        #[cfg(feature = "tls")]
        let host = super::connecting_for();
        #[cfg(feature = "tls")]
        let tls_name = match &self.tls {
            Some(tls) => Some(
                tls.settings
                    .name_for(addr, host.as_deref())
                    .map_err(ConnectError::Host)?,
            ),
            None => None,
        };
        let connecting = TcpStream::connect(addr);
        let stream = if self.connect_timeout.is_zero() {
            connecting.await
        } else {
            tokio::time::timeout(self.connect_timeout, connecting)
                .await
                .map_err(|_| ConnectError::TimedOut {
                    addr,
                    timeout: self.connect_timeout,
                    source: std::io::ErrorKind::TimedOut.into(),
                })?
        }
        .map_err(|source| ConnectError::Io { addr, source })?;
        stream
            .set_nodelay(true)
            .map_err(|source| ConnectError::Io { addr, source })?;
        let h2 = self.version == HttpVersion::Http2;
        let handshake = |source| ConnectError::Handshake { addr, source };
        #[cfg(feature = "tls")]
        if let (Some(tls), Some((name, from_request))) = (&self.tls, tls_name) {
            let (stream, h2, name) = tls
                .handshake(
                    stream,
                    addr,
                    name,
                    from_request,
                    host.as_deref(),
                    self.version,
                )
                .await?;
            let mut start = self.start(h2).secure(Some(&name));
            if from_request {
                start = start.named_from_request();
            }
            if let Ok(authority) = Authority::try_from(authority_text(&name, addr)) {
                start = start.authority(authority);
            }
            let conn = start.handshake(stream).await.map_err(handshake)?;
            return Ok(conn.into_security());
        }
        let mut start = self.start(h2);
        if let Ok(authority) = Authority::try_from(addr.to_string()) {
            start = start.authority(authority);
        }
        let conn = start.handshake(stream).await.map_err(handshake)?;
        Ok(conn.into_security())
    }

    fn start(&self, h2: bool) -> Handshake {
        let start = if h2 {
            Handshake::http2()
        } else {
            Handshake::http1()
        };
        start.keep_alive(self.keep_alive)
    }
}

/// The authority a path-only request gets on a TLS connection: the verified name, with the
/// port unless it is 443.
#[cfg(feature = "tls")]
fn authority_text(name: &str, addr: SocketAddr) -> String {
    let host = if name.contains(':') {
        format!("[{name}]")
    } else {
        name.to_owned()
    };
    if addr.port() == 443 {
        host
    } else {
        format!("{host}:{}", addr.port())
    }
}

#[cfg(feature = "tls")]
impl Tls {
    /// The TLS handshake over `stream`, verifying `name` (`from_request`: the host of the
    /// request, `host`): the stream, whether the server picked `h2`, and the name as text. A
    /// certificate not valid for a name taken from the request is the request's host not
    /// served there ([`HostNotServed`](super::HostNotServed)), not the endpoint's fault.
    async fn handshake(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        name: rustls::pki_types::ServerName<'static>,
        from_request: bool,
        host: Option<&str>,
        version: HttpVersion,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, bool, String), ConnectError> {
        use super::{TlsError, TlsErrorKind};
        let text = super::tls::name_text(&name);
        let connecting = self.connector.connect(name, stream);
        let timeout = self.settings.handshake_timeout;
        let done = if timeout.is_zero() {
            connecting.await
        } else {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(done) => done,
                Err(_) => {
                    return Err(ConnectError::Tls(TlsError::new(
                        TlsErrorKind::TimedOut,
                        addr,
                        text,
                        Some(Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut))),
                    )));
                }
            }
        };
        let stream = done.map_err(|e| {
            let tls = TlsError::from_io(e, addr, text.clone());
            match host {
                Some(host) if from_request && tls.kind() == TlsErrorKind::CertificateWrongName => {
                    ConnectError::Host(super::HostNotServed::new(
                        addr,
                        host,
                        "its certificate is not valid for that name",
                        Some(Box::new(tls)),
                    ))
                }
                _ => ConnectError::Tls(tls),
            }
        })?;
        let picked_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        if version == HttpVersion::Http2 && !picked_h2 {
            return Err(ConnectError::Tls(TlsError::new(
                TlsErrorKind::NoCommonProtocol,
                addr,
                text,
                Some("the server did not pick h2 by ALPN (HTTP/2 is required)".into()),
            )));
        }
        Ok((stream, picked_h2, text))
    }
}
