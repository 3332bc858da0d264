//! HTTP/1 and HTTP/2 connections on hyper's client connection API over tokio TCP.
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

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower::Service;

use super::{ClosedBeforeResponse, Connection, ConnectionService};
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
pub enum HttpVersion {
    /// HTTP/1.1: one request at a time per connection.
    Http1,
    /// HTTP/2 with prior knowledge (h2c): many streams per connection.
    Http2,
}

/// A connector that opens plaintext HTTP/1 or HTTP/2 connections to a `SocketAddr`, for a
/// [`Pool`](super::Pool). For TLS, write a connector of your own over any TLS stack: the pool
/// only needs a `Service` from a target to a [`Connection`].
///
/// Request bodies must be `Unpin` (hyper's HTTP/2 connection requires it; box a body that is
/// not). Its connect errors (refused, timed out, failed handshake) are all
/// [never sent](crate::classify::NeverSent).
pub struct HttpConnector<B> {
    version: HttpVersion,
    connect_timeout: Duration,
    keep_alive: Option<Duration>,
    _body: PhantomData<fn(B)>,
}

impl<B> Clone for HttpConnector<B> {
    fn clone(&self) -> Self {
        HttpConnector {
            version: self.version,
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
            _body: PhantomData,
        }
    }
}

impl<B> fmt::Debug for HttpConnector<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConnector")
            .field("version", &self.version)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl<B> HttpConnector<B> {
    /// An HTTP/1.1 connector.
    pub fn http1() -> Self {
        HttpConnector::new(HttpVersion::Http1)
    }

    /// An HTTP/2 (prior knowledge) connector, with keep-alive pings every
    /// [`DEFAULT_H2_KEEP_ALIVE`].
    pub fn http2() -> Self {
        HttpConnector::new(HttpVersion::Http2)
    }

    fn new(version: HttpVersion) -> Self {
        HttpConnector {
            version,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            keep_alive: Some(DEFAULT_H2_KEEP_ALIVE),
            _body: PhantomData,
        }
    }

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
}

impl<B> Service<SocketAddr> for HttpConnector<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = HttpConnection<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpConnection<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            connector
                .connect(addr)
                .await
                .map_err(|e| Box::new(NeverSent::new(e)) as BoxError)
        })
    }
}

impl<B> HttpConnector<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    async fn connect(self, addr: SocketAddr) -> Result<HttpConnection<B>, ConnectError> {
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
        let io = TokioIo::new(stream);
        let handshake = |source| ConnectError::Handshake { addr, source };
        let authority = Authority::try_from(addr.to_string()).ok();
        let send = match self.version {
            HttpVersion::Http1 => {
                let (send, conn) = http1::handshake(io).await.map_err(handshake)?;
                tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%addr, %error, "HTTP/1 connection ended with an error");
                    }
                });
                Sender::Http1(send)
            }
            HttpVersion::Http2 => {
                let mut builder = http2::Builder::new(TokioExecutor::new());
                builder.timer(TokioTimer::new());
                if let Some(interval) = self.keep_alive {
                    builder
                        .keep_alive_interval(interval)
                        .keep_alive_timeout(interval)
                        .keep_alive_while_idle(true);
                }
                let (send, conn) = builder.handshake(io).await.map_err(handshake)?;
                tokio::spawn(async move {
                    // Ends after a GOAWAY once the streams the server accepted have finished
                    // (graceful drain), or when every handle is dropped.
                    if let Err(error) = conn.await {
                        tracing::debug!(%addr, %error, "HTTP/2 connection ended with an error");
                    }
                });
                Sender::Http2(send)
            }
        };
        Ok(HttpConnection { send, authority })
    }
}

enum Sender<B> {
    Http1(http1::SendRequest<B>),
    Http2(http2::SendRequest<B>),
}

/// An HTTP/1 or HTTP/2 connection made by an [`HttpConnector`].
///
/// Requests may carry an absolute URI or just a path: HTTP/1 sends the origin form with a
/// `Host` header, HTTP/2 fills `:scheme` and `:authority` from the address when missing.
pub struct HttpConnection<B> {
    send: Sender<B>,
    authority: Option<Authority>,
}

impl<B> fmt::Debug for HttpConnection<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.send {
            Sender::Http1(_) => HttpVersion::Http1,
            Sender::Http2(_) => HttpVersion::Http2,
        };
        f.debug_struct("HttpConnection")
            .field("version", &version)
            .field("authority", &self.authority)
            .finish()
    }
}

impl<B: Send + 'static> Connection for HttpConnection<B> {
    fn is_closed(&self) -> bool {
        match &self.send {
            Sender::Http1(send) => send.is_closed(),
            Sender::Http2(send) => send.is_closed(),
        }
    }

    fn share(&self) -> Option<Self> {
        match &self.send {
            Sender::Http1(_) => None,
            Sender::Http2(send) => Some(HttpConnection {
                send: Sender::Http2(send.clone()),
                authority: self.authority.clone(),
            }),
        }
    }
}

/// A failed send on an [`HttpConnection`]: hyper's error, and the request when hyper handed it
/// back unsent.
pub struct HttpSendError<B> {
    error: hyper::Error,
    unsent: Option<Request<B>>,
}

impl<B> HttpSendError<B> {
    /// hyper's error.
    pub fn error(&self) -> &hyper::Error {
        &self.error
    }

    /// Whether hyper handed the request back unsent.
    pub fn is_unsent(&self) -> bool {
        self.unsent.is_some()
    }
}

impl<B> fmt::Debug for HttpSendError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSendError")
            .field("error", &self.error)
            .field("unsent", &self.unsent.is_some())
            .finish()
    }
}

impl<B> fmt::Display for HttpSendError<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<B> From<TrySendError<Request<B>>> for HttpSendError<B> {
    fn from(mut e: TrySendError<Request<B>>) -> Self {
        let unsent = e.take_message();
        HttpSendError {
            error: e.into_error(),
            unsent,
        }
    }
}

impl<B> From<hyper::Error> for HttpSendError<B> {
    fn from(error: hyper::Error) -> Self {
        HttpSendError {
            error,
            unsent: None,
        }
    }
}

impl<B> Service<Request<B>> for HttpConnection<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = HttpSendError<B>;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<Incoming>, HttpSendError<B>>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HttpSendError<B>>> {
        match &mut self.send {
            Sender::Http1(send) => send.poll_ready(cx),
            Sender::Http2(send) => send.poll_ready(cx),
        }
        .map_err(HttpSendError::from)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match &mut self.send {
            Sender::Http1(send) => {
                let req = origin_form(req, self.authority.as_ref());
                let sent = send.try_send_request(req);
                Box::pin(async move { sent.await.map_err(HttpSendError::from) })
            }
            Sender::Http2(send) => {
                let req = absolute_form(req, self.authority.as_ref());
                let sent = send.try_send_request(req);
                Box::pin(async move { sent.await.map_err(HttpSendError::from) })
            }
        }
    }
}

impl<B> ConnectionService<Request<B>> for HttpConnection<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn into_unsent(error: HttpSendError<B>) -> Result<Request<B>, BoxError> {
        if let Some(req) = error.unsent {
            return Ok(req);
        }
        if never_processed(&error.error) {
            Err(Box::new(NeverSent::new(error.error)))
        } else if closed_before_response(&error.error) {
            Err(Box::new(ClosedBeforeResponse::new(error.error)))
        } else {
            Err(Box::new(error.error))
        }
    }
}

/// HTTP/2 says which streams the server never processed (see
/// [`crate::classify::never_processed`]), anywhere in hyper's error chain.
fn never_processed(error: &hyper::Error) -> bool {
    crate::classify::chain(error).any(crate::classify::never_processed)
}

/// The connection closed before any of the response arrived (HTTP/1: "connection closed before
/// message completed", or the write failing on a connection the server had closed).
///
/// Only the connection's own I/O counts: hyper's error's direct cause. An error of the request
/// *body* (a user error to hyper — say an upload read from a client that reset) is not the
/// connection closing, however deep an I/O reset sits in its chain, and is never resent.
fn closed_before_response(error: &hyper::Error) -> bool {
    if error.is_user() {
        return false;
    }
    if error.is_incomplete_message() {
        return true;
    }
    std::error::Error::source(error)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            )
        })
}

/// HTTP/1: the request line carries the path; the authority goes in `Host`.
fn origin_form<B>(mut req: Request<B>, fallback: Option<&Authority>) -> Request<B> {
    let authority = req.uri().authority().cloned().or_else(|| fallback.cloned());
    if !req.headers().contains_key(header::HOST)
        && let Some(value) = authority.and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, value);
    }
    if req.uri().authority().is_some() {
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
    }
    req
}

/// HTTP/2: `:scheme` and `:authority` come from the URI; fill them from the address if absent.
fn absolute_form<B>(mut req: Request<B>, fallback: Option<&Authority>) -> Request<B> {
    if req.uri().authority().is_none()
        && let Some(authority) = fallback
    {
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
#[path = "hyper_conn_tests.rs"]
mod tests;
