//! The attempt level: a per-try timeout clamped to the deadline, written on the wire.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::grpc_timeout::grpc_timeout_header;
use super::layer::{Expiry, ResponseFuture};
use super::{Deadline, DeadlineCarrier, MAX_BUDGET};
use crate::error::{BoxError, ConfigError, Error, check_duration};
use crate::wire::is_grpc;

/// The default per-try timeout: 10 s (as .NET's standard resilience handler).
pub const DEFAULT_PER_TRY_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
use crate::wire::GRPC_PREVIOUS_ATTEMPTS;

/// The 1-based number of the attempt a request is, in its extensions (set by the retry layer;
/// absent means the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempt(pub u32);

impl Attempt {
    /// The attempt number of `req` (1 when unset).
    pub fn of<B>(req: &Request<B>) -> u32 {
        req.extensions().get::<Attempt>().map_or(1, |a| a.0)
    }
}

/// The HTTP header an [`AttemptLayer`] writes the timeout to, named in the request's extensions
/// so a pool can write it again when it hands the request to a connection.
#[derive(Debug, Clone)]
struct TimeoutHeader(HeaderName);

/// Lowers the timeouts the request carries to `timeout`: `grpc-timeout` on a gRPC request that
/// has one, and the HTTP header an [`AttemptLayer`] named, in whole milliseconds rounded down. A
/// value already there that is shorter stays; one that does not parse is replaced.
pub(super) fn write_timeouts<B>(req: &mut Request<B>, timeout: Duration) {
    let name = req.extensions().get::<TimeoutHeader>().map(|h| h.0.clone());
    let grpc = is_grpc(req.headers());
    let headers = req.headers_mut();
    if grpc && headers.contains_key(GRPC_TIMEOUT) {
        lower_grpc_timeout(headers, timeout);
    }
    if let Some(name) = name {
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let written = headers
            .get(&name)
            .and_then(|v| crate::wire::parse_decimal(v.as_bytes()));
        if written.is_none_or(|written| millis < written) {
            headers.insert(name, HeaderValue::from(millis));
        }
    }
}

/// Writes `grpc-timeout: timeout` unless a shorter valid value is there already.
fn lower_grpc_timeout(headers: &mut http::HeaderMap, timeout: Duration) {
    let written = headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| super::parse_grpc_timeout(v.as_bytes()));
    if written.is_none_or(|written| timeout < written) {
        headers.insert(GRPC_TIMEOUT, grpc_timeout_header(timeout));
    }
}

/// Bounds each attempt by min(per-try timeout, remaining deadline) and stamps it on the request.
///
/// Sits innermost, around the transport (per endpoint, below retries). For each attempt it:
///
/// - fails at once with [`Error::DeadlineExceeded`] if the deadline has already passed, without
///   calling the inner service;
/// - gives the layers below the attempt's own [`Deadline`] in place of the call's: it ends when
///   the attempt does, and its [`budget`](Deadline::budget) is what the attempt was given (a
///   pool bounds its checkout by it; a balancer's breakers weigh timeouts by it);
/// - writes the attempt's timeout to the request: `grpc-timeout` on gRPC requests (content type
///   `application/grpc…`), and, if configured with [`timeout_header`](Self::timeout_header), an
///   HTTP header in whole milliseconds (rounded down, so never more than what is left). A
///   [`Pool`](crate::pool::Pool) below writes both again when it hands the request to a
///   connection — after its checkout, connect and handshake — with what is left then
///   ([`DeadlineCarrier::restamp`]);
/// - writes `grpc-previous-rpc-attempts` on gRPC retries (gRPC A6), and the attempt number in a
///   configured [`attempt_header`](Self::attempt_header);
/// - fails with [`Error::AttemptTimedOut`] when the per-try timeout fires first, or with
///   [`Error::DeadlineExceeded`] when the deadline does.
///
/// ```
/// use std::time::Duration;
/// use stanchion::deadline::AttemptLayer;
///
/// let layer = AttemptLayer::new(Duration::from_secs(2))
///     .unwrap()
///     .timeout_header(http::HeaderName::from_static("x-timeout-ms"));
/// assert_eq!(layer.per_try_timeout(), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
pub struct AttemptLayer {
    per_try: Duration,
    timeout_header: Option<HeaderName>,
    attempt_header: Option<HeaderName>,
    on_send: Option<SendHook>,
}

/// A function called with each attempt's headers as the attempt goes out: see
/// [`AttemptLayer::on_send`].
#[derive(Clone)]
pub struct SendHook(std::sync::Arc<dyn Fn(&mut http::HeaderMap) + Send + Sync>);

impl SendHook {
    /// Wraps `hook`.
    pub fn new(hook: impl Fn(&mut http::HeaderMap) + Send + Sync + 'static) -> Self {
        SendHook(std::sync::Arc::new(hook))
    }
}

impl std::fmt::Debug for SendHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SendHook")
    }
}

impl AttemptLayer {
    /// Each attempt gets at most `per_try` (more than zero, at most a year).
    pub fn new(per_try: Duration) -> Result<Self, ConfigError> {
        Ok(AttemptLayer {
            per_try: check_duration("per_try_timeout", per_try, MAX_BUDGET)?,
            timeout_header: None,
            attempt_header: None,
            on_send: None,
        })
    }

    /// Also writes each attempt's timeout, in whole milliseconds, to header `name`.
    pub fn timeout_header(mut self, name: HeaderName) -> Self {
        self.timeout_header = Some(name);
        self
    }

    /// Also writes the attempt number (1, 2, …) to header `name`.
    pub fn attempt_header(mut self, name: HeaderName) -> Self {
        self.attempt_header = Some(name);
        self
    }

    /// Calls `hook` with each attempt's headers as the attempt goes out, after the layer wrote
    /// its own — **the place to inject trace context per attempt**. Below a retry layer the
    /// attempt's `stanchion.attempt` span is the current span while the hook runs, so a
    /// propagator injects a `traceparent` naming that attempt, not the call: with
    /// `tracing-opentelemetry`,
    /// `propagator.inject_context(&Span::current().context(), &mut HeaderInjector(headers))`.
    /// Runs once per attempt, resends included; it must not block.
    pub fn on_send(mut self, hook: SendHook) -> Self {
        self.on_send = Some(hook);
        self
    }

    /// The per-try timeout.
    pub fn per_try_timeout(&self) -> Duration {
        self.per_try
    }
}

/// A 10 s per-try timeout, `grpc-timeout` only.
impl Default for AttemptLayer {
    fn default() -> Self {
        AttemptLayer {
            per_try: DEFAULT_PER_TRY_TIMEOUT,
            timeout_header: None,
            attempt_header: None,
            on_send: None,
        }
    }
}

impl<S> Layer<S> for AttemptLayer {
    type Service = AttemptService<S>;

    fn layer(&self, inner: S) -> AttemptService<S> {
        AttemptService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`AttemptLayer`].
#[derive(Debug, Clone)]
pub struct AttemptService<S> {
    inner: S,
    layer: AttemptLayer,
}

/// The response future of [`AttemptService`].
pub type AttemptFuture<F> = ResponseFuture<F>;

impl<S, B> Service<Request<B>> for AttemptService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let now = Instant::now();
        let carried = req.deadline();
        let (timeout, expiry) = match carried {
            Some(deadline) if deadline.remaining_at(now) <= self.layer.per_try => {
                (deadline.remaining_at(now), Expiry::of(deadline))
            }
            _ => (self.layer.per_try, Expiry::Attempt(self.layer.per_try)),
        };
        if timeout.is_zero() {
            return ResponseFuture::expired(expiry);
        }
        let attempt = Attempt::of(&req);
        let is_grpc = is_grpc(req.headers());
        if is_grpc {
            // Lowered, never raised: a shorter `grpc-timeout` the caller wrote stays.
            lower_grpc_timeout(req.headers_mut(), timeout);
            if attempt > 1 {
                req.headers_mut()
                    .insert(GRPC_PREVIOUS_ATTEMPTS, HeaderValue::from(attempt - 1));
            }
        }
        if let Some(name) = &self.layer.timeout_header {
            // Named in the request, so a pool can write it again at hand-off.
            req.extensions_mut().insert(TimeoutHeader(name.clone()));
            write_timeouts(&mut req, timeout);
        }
        if let Some(name) = &self.layer.attempt_header {
            req.headers_mut()
                .insert(name.clone(), HeaderValue::from(attempt));
        }
        if let Some(hook) = &self.layer.on_send {
            (hook.0)(req.headers_mut());
        }
        // Below this layer the request's deadline is the attempt's: it ends when the attempt
        // does, and its budget is what the attempt was given (the pool bounds its checkout by
        // it; the balancer tells the endpoint's breaker, for the timeout floor). Written in
        // place: no allocation when the call already carries a deadline.
        let attempt = Deadline::for_attempt(now, timeout, carried);
        match req.extensions_mut().get_mut::<Deadline>() {
            Some(deadline) => *deadline = attempt,
            None => req.set_deadline(attempt),
        }
        ResponseFuture::racing(self.inner.call(req), now + timeout, expiry, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Every combination of protocol, what is written already (shorter, longer, garbage,
    /// nothing) and header: a timeout is only ever lowered, and `grpc-timeout` only on gRPC.
    #[test]
    fn timeouts_on_the_wire_are_only_ever_lowered() {
        let written = [None, Some("100m"), Some("900m"), Some("bogus")];
        let header = HeaderName::from_static("x-timeout-ms");
        for grpc in [false, true] {
            for grpc_timeout in written {
                for ms_header in [None, Some("100"), Some("900"), Some("x")] {
                    for named in [false, true] {
                        let mut req = Request::new(());
                        if grpc {
                            req.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                HeaderValue::from_static("application/grpc"),
                            );
                        }
                        if let Some(v) = grpc_timeout {
                            req.headers_mut()
                                .insert(GRPC_TIMEOUT, HeaderValue::from_static(v));
                        }
                        if let Some(v) = ms_header {
                            req.headers_mut()
                                .insert(header.clone(), HeaderValue::from_static(v));
                        }
                        if named {
                            req.extensions_mut().insert(TimeoutHeader(header.clone()));
                        }
                        write_timeouts(&mut req, 500 * MS);
                        let case = (grpc, grpc_timeout, ms_header, named);
                        let got = req.headers().get(GRPC_TIMEOUT).map(|v| v.to_str().unwrap());
                        let want = match grpc_timeout {
                            None => None,
                            Some(v) if !grpc => Some(v.to_owned()),
                            Some("100m") => Some("100m".to_owned()),
                            Some(_) => Some(super::super::format_grpc_timeout(500 * MS)),
                        };
                        assert_eq!(got.map(str::to_owned), want, "{case:?}");
                        let got = req.headers().get(&header).map(|v| v.to_str().unwrap());
                        let want = match (named, ms_header) {
                            (false, v) => v,
                            (true, Some("100")) => Some("100"),
                            (true, _) => Some("500"),
                        };
                        assert_eq!(got, want, "{case:?}");
                    }
                }
            }
        }
    }
}
