//! [`HttpConnection`]: one HTTP/1 or HTTP/2 connection on hyper's client connection API, over
//! any stream — made by [`HttpConnector`](super::HttpConnector) over TCP (and TLS), or by
//! [`Handshake`] over a stream of your own (another TLS stack, a Unix socket).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, header};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::Service;

use super::{ClosedBeforeResponse, Connection, ConnectionService, HttpVersion};
use crate::BoxError;
use crate::classify::NeverSent;

/// Whether an [`HttpConnection`] (and the [`HttpConnector`](super::HttpConnector) making it)
/// is secured by TLS, in its type: a pool refuses an `https` request to plaintext connections
/// before it connects at all ([`Connection::SECURE`]). Implemented by [`Plaintext`] and
/// [`Secured`] only.
pub trait Security: sealed::Sealed + Send + Sync + 'static {
    /// Whether connections of this kind are secured.
    const SECURE: bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Plaintext {}
    impl Sealed for super::Secured {}
}

/// Plaintext connections (the default).
#[derive(Debug, Clone, Copy)]
pub enum Plaintext {}

/// Connections secured by TLS.
#[derive(Debug, Clone, Copy)]
pub enum Secured {}

impl Security for Plaintext {
    const SECURE: bool = false;
}

impl Security for Secured {
    const SECURE: bool = true;
}

/// What a TLS refusal is, where TLS is built in.
#[cfg(feature = "tls")]
type Refusal = super::TlsErrorKind;
#[cfg(not(feature = "tls"))]
type Refusal = std::convert::Infallible;

/// What a connection's handles and its stream share.
#[derive(Default)]
struct ConnState {
    /// Whether the peer has sent any application data (a response, HTTP/2 SETTINGS).
    read_data: AtomicBool,
    /// The server refused the TLS handshake after our side of it was done (TLS 1.3: our client
    /// certificate), read before it sent any application data.
    refused: std::sync::OnceLock<Refusal>,
}

impl ConnState {
    /// Marks an error of this connection with what the connection knows.
    fn mark<B>(&self, mut error: HttpSendError<B>) -> HttpSendError<B> {
        error.refused = self.refused.get().copied();
        error
    }
}

pin_project_lite::pin_project! {
    /// The connection's stream, watched as hyper reads it: whether the peer has sent
    /// application data, and a TLS refusal read before it did — recorded before hyper sees
    /// the error and closes the connection, so no send can find it closed without the reason.
    struct Watched<IO> {
        #[pin]
        io: IO,
        state: Arc<ConnState>,
    }
}

impl<IO: AsyncRead> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let read = std::task::ready!(this.io.poll_read(cx, buf));
        match &read {
            Ok(()) if buf.filled().len() > before => {
                if !this.state.read_data.load(Ordering::Relaxed) {
                    this.state.read_data.store(true, Ordering::Relaxed);
                }
            }
            Ok(()) => {}
            #[cfg(feature = "tls")]
            Err(error) => {
                if !this.state.read_data.load(Ordering::Relaxed)
                    && let Some(kind) = super::tls::refusal_in(error)
                {
                    let _ = this.state.refused.set(kind);
                }
            }
            #[cfg(not(feature = "tls"))]
            Err(_) => {}
        }
        Poll::Ready(read)
    }
}

impl<IO: AsyncWrite> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Starts an [`HttpConnection`] over a stream you connected (and secured) yourself: any tokio
/// `AsyncRead + AsyncWrite` — a TLS stream of another stack, a Unix socket, an in-memory pipe.
/// The connection's driver is spawned on the current tokio runtime.
///
/// ```no_run
/// # async fn run() -> Result<(), stanchion::BoxError> {
/// use stanchion::pool::{Handshake, HttpConnection};
/// use http_body_util::Full;
/// use bytes::Bytes;
///
/// let stream = tokio::net::TcpStream::connect("127.0.0.1:8080").await?;
/// let conn: HttpConnection<Full<Bytes>> = Handshake::http1()
///     .authority("127.0.0.1:8080".parse()?)
///     .handshake(stream)
///     .await?;
/// # Ok(()) }
/// ```
pub struct Handshake<S = Plaintext> {
    h2: bool,
    keep_alive: Option<Duration>,
    authority: Option<Authority>,
    verified_name: Option<Arc<str>>,
    /// The verified name is the host of the request the connection was made for.
    from_request: bool,
    _security: PhantomData<S>,
}

impl<S> Clone for Handshake<S> {
    fn clone(&self) -> Self {
        Handshake {
            h2: self.h2,
            keep_alive: self.keep_alive,
            authority: self.authority.clone(),
            verified_name: self.verified_name.clone(),
            from_request: self.from_request,
            _security: PhantomData,
        }
    }
}

impl<S> fmt::Debug for Handshake<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handshake")
            .field("h2", &self.h2)
            .field("keep_alive", &self.keep_alive)
            .field("authority", &self.authority)
            .field("verified_name", &self.verified_name)
            .finish()
    }
}

impl Handshake {
    /// HTTP/1.1: one request at a time.
    pub fn http1() -> Handshake {
        Handshake::new(false)
    }

    /// HTTP/2 (prior knowledge, or `h2` agreed by ALPN), with keep-alive pings every
    /// [`DEFAULT_H2_KEEP_ALIVE`](super::DEFAULT_H2_KEEP_ALIVE).
    pub fn http2() -> Handshake {
        Handshake::new(true)
    }

    fn new(h2: bool) -> Handshake {
        Handshake {
            h2,
            keep_alive: Some(super::DEFAULT_H2_KEEP_ALIVE),
            authority: None,
            verified_name: None,
            from_request: false,
            _security: PhantomData,
        }
    }

    /// The stream is secured (TLS you did yourself): the connection is an
    /// `HttpConnection<B, Secured>`, on which `https` requests may go and a path-only request
    /// gets the `https` scheme. `verified_name`: the name the peer's certificate was verified
    /// for, if any — the pool then sends no request for another host on this connection.
    pub fn secure(self, verified_name: Option<&str>) -> Handshake<Secured> {
        Handshake {
            h2: self.h2,
            keep_alive: self.keep_alive,
            authority: self.authority,
            verified_name: verified_name.map(Arc::from),
            from_request: false,
            _security: PhantomData,
        }
    }
}

impl Handshake<Secured> {
    /// The verified name is the host of the request the pool connected for
    /// ([`connecting_for`](super::connecting_for)), not one the connector was configured
    /// with: the pool keys the connection by it ([`Connection::names_from_requests`]).
    pub fn named_from_request(mut self) -> Self {
        self.from_request = true;
        self
    }
}

impl<S: Security> Handshake<S> {
    /// HTTP/2 keep-alive: the ping interval and answer timeout, or `None` for no pings.
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval.filter(|i| !i.is_zero());
        self
    }

    /// The authority for requests that carry only a path (HTTP/1 `Host`, HTTP/2
    /// `:authority`). Default: none.
    pub fn authority(mut self, authority: Authority) -> Self {
        self.authority = Some(authority);
        self
    }

    /// Runs the HTTP handshake over `io` (for HTTP/2, the connection preface and settings) and
    /// spawns the connection's driver.
    ///
    /// # Errors
    /// hyper's error when the handshake fails.
    pub async fn handshake<B, IO>(self, io: IO) -> Result<HttpConnection<B, S>, hyper::Error>
    where
        B: http_body::Body + Send + Unpin + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let state = Arc::new(ConnState::default());
        let io = TokioIo::new(Watched {
            io,
            state: state.clone(),
        });
        let peer = self.authority.clone();
        let send = if self.h2 {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new());
            if let Some(interval) = self.keep_alive {
                builder
                    .keep_alive_interval(interval)
                    .keep_alive_timeout(interval)
                    .keep_alive_while_idle(true);
            }
            let (send, conn) = builder.handshake(io).await?;
            tokio::spawn(async move {
                // Ends after a GOAWAY once the streams the server accepted have finished
                // (graceful drain), or when every handle is dropped.
                if let Err(error) = conn.await {
                    tracing::debug!(peer = ?peer, %error, "HTTP/2 connection ended with an error");
                }
            });
            Sender::Http2(send)
        } else {
            let (send, conn) = http1::handshake(io).await?;
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    tracing::debug!(peer = ?peer, %error, "HTTP/1 connection ended with an error");
                }
            });
            Sender::Http1(send)
        };
        Ok(HttpConnection {
            send,
            authority: self.authority,
            verified_name: self.verified_name,
            from_request: self.from_request,
            state,
            _security: PhantomData,
        })
    }
}

pub(super) enum Sender<B> {
    Http1(http1::SendRequest<B>),
    Http2(http2::SendRequest<B>),
}

/// An HTTP/1 or HTTP/2 connection, made by an [`HttpConnector`](super::HttpConnector) or by a
/// [`Handshake`] over a stream of your own.
///
/// Requests may carry an absolute URI or just a path: HTTP/1 sends the origin form with a
/// `Host` header, HTTP/2 fills `:scheme` (`https` on a secure connection) and `:authority`
/// from the connection's authority when missing.
///
/// `S` says in the type whether it is secured ([`Plaintext`], the default, or [`Secured`]).
pub struct HttpConnection<B, S = Plaintext> {
    send: Sender<B>,
    authority: Option<Authority>,
    verified_name: Option<Arc<str>>,
    from_request: bool,
    /// Shared by an HTTP/2 connection's handles and the driver task.
    state: Arc<ConnState>,
    _security: PhantomData<S>,
}

impl<B, S: Security> HttpConnection<B, S> {
    /// The same connection typed as `T` — only for the crate's connector, which made a
    /// `Secured` connection exactly when `T` is `Secured`.
    pub(super) fn into_security<T: Security>(self) -> HttpConnection<B, T> {
        debug_assert_eq!(S::SECURE, T::SECURE);
        HttpConnection {
            send: self.send,
            authority: self.authority,
            verified_name: self.verified_name,
            from_request: self.from_request,
            state: self.state,
            _security: PhantomData,
        }
    }
}

impl<B, S: Security> fmt::Debug for HttpConnection<B, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let version = match self.send {
            Sender::Http1(_) => HttpVersion::Http1,
            Sender::Http2(_) => HttpVersion::Http2,
        };
        f.debug_struct("HttpConnection")
            .field("version", &version)
            .field("authority", &self.authority)
            .field("secure", &S::SECURE)
            .field("verified_name", &self.verified_name)
            .finish()
    }
}

impl<B: Send + 'static, S: Security> Connection for HttpConnection<B, S> {
    const SECURE: bool = S::SECURE;

    fn verified_name(&self) -> Option<&str> {
        self.verified_name.as_deref()
    }

    fn names_from_requests(&self) -> bool {
        self.from_request
    }

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
                verified_name: self.verified_name.clone(),
                from_request: self.from_request,
                state: self.state.clone(),
                _security: PhantomData,
            }),
        }
    }
}

/// A failed send on an [`HttpConnection`]: hyper's error, and the request when hyper handed it
/// back unsent.
pub struct HttpSendError<B> {
    error: hyper::Error,
    unsent: Option<Request<B>>,
    /// The connection's stream read the server's refusal of the handshake.
    refused: Option<Refusal>,
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
            refused: None,
        }
    }
}

impl<B> From<hyper::Error> for HttpSendError<B> {
    fn from(error: hyper::Error) -> Self {
        HttpSendError {
            error,
            unsent: None,
            refused: None,
        }
    }
}

impl<B, S: Security> Service<Request<B>> for HttpConnection<B, S>
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
        let state = &self.state;
        match &mut self.send {
            Sender::Http1(send) => send.poll_ready(cx),
            Sender::Http2(send) => send.poll_ready(cx),
        }
        .map_err(|e| state.mark(e.into()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let state = self.state.clone();
        match &mut self.send {
            Sender::Http1(send) => {
                let req = origin_form(req, self.authority.as_ref());
                Box::pin(finish(send.try_send_request(req), state))
            }
            Sender::Http2(send) => {
                let req = absolute_form(req, self.authority.as_ref(), S::SECURE);
                Box::pin(finish(send.try_send_request(req), state))
            }
        }
    }
}

/// Awaits a send; its error carries what the connection knows.
async fn finish<B>(
    sent: impl Future<Output = Result<Response<Incoming>, TrySendError<Request<B>>>>,
    state: Arc<ConnState>,
) -> Result<Response<Incoming>, HttpSendError<B>> {
    sent.await.map_err(|e| state.mark(e.into()))
}

impl<B, S: Security> ConnectionService<Request<B>> for HttpConnection<B, S>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn into_unsent(error: HttpSendError<B>) -> Result<Request<B>, BoxError> {
        // TLS 1.3: a server that refuses our client certificate says so after our side of the
        // handshake is done, before it sends any application data; the connection's stream
        // recorded it as hyper read it. The server accepted none of what was sent. Such a
        // request is not handed back to be resent: the endpoint would refuse it again.
        #[cfg(feature = "tls")]
        if let Some(kind) = error.refused {
            return Err(Box::new(crate::classify::EndpointRejected::new(
                super::TlsError::after_handshake(kind, Box::new(error.error)),
            )));
        }
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
pub(super) fn origin_form<B>(mut req: Request<B>, fallback: Option<&Authority>) -> Request<B> {
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

/// HTTP/2: `:scheme` and `:authority` come from the URI; fill them from the connection if
/// absent (`https` on a secure connection).
pub(super) fn absolute_form<B>(
    mut req: Request<B>,
    fallback: Option<&Authority>,
    secure: bool,
) -> Request<B> {
    if req.uri().authority().is_none()
        && let Some(authority) = fallback
    {
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(if secure { Scheme::HTTPS } else { Scheme::HTTP });
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
#[path = "http_conn_tests.rs"]
mod tests;
