//! Server side: adopt the caller's deadline, so budgets shrink across hops.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, Request};
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{Deadline, DeadlineCarrier, current, parse_grpc_timeout, scope, sync_scope};

const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Adopts an incoming request's deadline (server side).
///
/// Reads `grpc-timeout` and, if configured, an HTTP header holding the timeout in whole
/// milliseconds (the format [`AttemptLayer::timeout_header`](super::AttemptLayer::timeout_header)
/// writes). The earliest of these becomes the request's [`Deadline`] (in its extensions) and the
/// task's adopted deadline ([`current`]) while the handler runs, so a [`DeadlineLayer`]
/// client stack called from the handler ends by then. A malformed header is ignored (and logged
/// at debug level); adopted budgets are capped at [`MAX_BUDGET`](super::MAX_BUDGET).
///
/// The layer does not cancel the handler at the deadline; it passes the budget on.
///
/// [`DeadlineLayer`]: super::DeadlineLayer
///
/// ```
/// use stanchion::deadline::AdoptDeadlineLayer;
/// use http::HeaderName;
///
/// let layer = AdoptDeadlineLayer::new().http_header(HeaderName::from_static("x-timeout-ms"));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Default)]
pub struct AdoptDeadlineLayer {
    http_header: Option<HeaderName>,
}

impl AdoptDeadlineLayer {
    /// Adopts `grpc-timeout` only.
    pub fn new() -> Self {
        AdoptDeadlineLayer::default()
    }

    /// Also adopts `name`, a timeout in whole milliseconds.
    pub fn http_header(mut self, name: HeaderName) -> Self {
        self.http_header = Some(name);
        self
    }
}

impl<S> Layer<S> for AdoptDeadlineLayer {
    type Service = AdoptDeadline<S>;

    fn layer(&self, inner: S) -> AdoptDeadline<S> {
        AdoptDeadline {
            inner,
            http_header: self.http_header.clone(),
        }
    }
}

/// The service of [`AdoptDeadlineLayer`].
#[derive(Debug, Clone)]
pub struct AdoptDeadline<S> {
    inner: S,
    http_header: Option<HeaderName>,
}

impl<S> AdoptDeadline<S> {
    fn incoming(&self, headers: &HeaderMap) -> Option<Duration> {
        let grpc = headers.get(GRPC_TIMEOUT).and_then(|v| {
            let parsed = parse_grpc_timeout(v.as_bytes());
            if parsed.is_none() {
                tracing::debug!(value = ?v, "ignoring malformed grpc-timeout");
            }
            parsed
        });
        let http = self.http_header.as_ref().and_then(|name| {
            let v = headers.get(name)?;
            let parsed = crate::wire::parse_decimal(v.as_bytes()).map(Duration::from_millis);
            if parsed.is_none() {
                tracing::debug!(header = %name, value = ?v, "ignoring malformed timeout header");
            }
            parsed
        });
        match (grpc, http) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<S, B> Service<Request<B>> for AdoptDeadline<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Option<Deadline>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let mut deadline = self
            .incoming(req.headers())
            .map(|timeout| Deadline::starting_at(Instant::now(), timeout));
        for other in [req.deadline(), current()].into_iter().flatten() {
            deadline = Some(deadline.map_or(other, |d| d.earliest(other)));
        }
        if let Some(deadline) = deadline {
            tracing::trace!(remaining = ?deadline.remaining(), "adopted incoming deadline");
            req.set_deadline(deadline);
        }
        // The handler's synchronous part runs in the scope too.
        let fut = sync_scope(deadline, || self.inner.call(req));
        scope(deadline, fut)
    }
}
