//! The client half: every attempt of a logical request carries the same key, on the routes
//! whose server honours keys.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{IdempotencyKey, KeyFormat};
use crate::rejected::Rejectable;
use crate::retry::{RetryOnConflict, RetrySafe};
use crate::{BoxError, Error};

/// The default header: `Idempotency-Key` (also gRPC metadata `idempotency-key`).
pub const DEFAULT_KEY_HEADER: HeaderName = HeaderName::from_static("idempotency-key");

#[derive(Debug, Clone)]
struct Route {
    host: Option<String>,
    path_prefix: String,
}

#[derive(Debug, Clone)]
struct Config {
    header: HeaderName,
    format: KeyFormat,
    routes: Vec<Route>,
}

/// Gives requests that are not idempotent by method (POST, PATCH) an idempotency key — minted,
/// or the caller's own, validated — on the routes you opt in, and marks them safe to retry.
///
/// Opt in only routes whose server honours keys: a server that ignores the header would
/// otherwise be retried into duplicates. Requests on other routes, and idempotent methods, pass
/// untouched. A caller-supplied key that is not valid fails the call with
/// [`Error::InvalidIdempotencyKey`] before anything is sent.
///
/// Put it outside the retry layer (the canonical stack puts it outermost) so every attempt
/// carries the same key. Keyed requests also get [`RetryOnConflict`]: a `409 Conflict` (the
/// first attempt is still running on the server) is retried after backoff, within the deadline.
///
/// ```
/// use stanchion::idempotency::IdempotencyKeyLayer;
///
/// let keys = IdempotencyKeyLayer::new()
///     .route("/v1/payments")              // any host
///     .host_route("api.example.com", "/v1/refunds");
/// # let _ = keys;
/// ```
#[derive(Debug, Clone)]
pub struct IdempotencyKeyLayer {
    config: Arc<Config>,
}

impl Default for IdempotencyKeyLayer {
    fn default() -> Self {
        IdempotencyKeyLayer::new()
    }
}

impl IdempotencyKeyLayer {
    /// A layer with no route opted in, sending keys as `Idempotency-Key`.
    pub fn new() -> Self {
        IdempotencyKeyLayer {
            config: Arc::new(Config {
                header: DEFAULT_KEY_HEADER,
                format: KeyFormat::Bare,
                routes: Vec::new(),
            }),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(Arc::make_mut(&mut self.config));
        self
    }

    /// Opts in requests whose path is under `path_prefix`, segment by segment, on any host:
    /// `/v1/payments` covers `/v1/payments` and `/v1/payments/42`, not `/v1/paymentsXYZ`
    /// (gRPC: a service prefix such as `/payments.v1.Payments/`).
    pub fn route(self, path_prefix: impl Into<String>) -> Self {
        let path_prefix = path_prefix.into();
        self.with(|c| {
            c.routes.push(Route {
                host: None,
                path_prefix,
            })
        })
    }

    /// Opts in every path on `host`.
    pub fn host(self, host: impl Into<String>) -> Self {
        self.host_route(host, "/")
    }

    /// Opts in requests to `host` whose path is under `path_prefix` (segment by segment).
    pub fn host_route(self, host: impl Into<String>, path_prefix: impl Into<String>) -> Self {
        let (host, path_prefix) = (host.into().to_ascii_lowercase(), path_prefix.into());
        self.with(|c| {
            c.routes.push(Route {
                host: Some(host),
                path_prefix,
            })
        })
    }

    /// Sends the key in `header` instead of `Idempotency-Key`.
    pub fn header(self, header: HeaderName) -> Self {
        self.with(|c| c.header = header)
    }

    /// Writes minted keys as `format` (default [`KeyFormat::Bare`]; a caller's own key is sent
    /// as given).
    pub fn format(self, format: KeyFormat) -> Self {
        self.with(|c| c.format = format)
    }
}

impl Config {
    fn opted_in<B>(&self, req: &Request<B>) -> bool {
        if req.method().is_idempotent() {
            return false;
        }
        if self.routes.is_empty() {
            return false;
        }
        let path = req.uri().path();
        let host = req.uri().host().or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h))
        });
        self.routes.iter().any(|route| {
            crate::path::covers(&route.path_prefix, path)
                && route
                    .host
                    .as_deref()
                    .is_none_or(|want| host.is_some_and(|h| h.eq_ignore_ascii_case(want)))
        })
    }
}

impl<S> Layer<S> for IdempotencyKeyLayer {
    type Service = IdempotencyKeyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyKeyService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`IdempotencyKeyLayer`].
#[derive(Debug, Clone)]
pub struct IdempotencyKeyService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S, B> Service<Request<B>> for IdempotencyKeyService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Error;
    type Future = KeyFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if self.config.opted_in(&req) {
            let header = &self.config.header;
            // The caller's own key is validated and sent as given; a minted one is written in
            // the configured format.
            let key = match req.headers().get(header).cloned() {
                // Validated and sent as given — one value only (`insert` drops any other, which
                // would have gone out unchecked).
                Some(value) => IdempotencyKey::from_header(&value).inspect(|_| {
                    req.headers_mut().insert(header.clone(), value);
                }),
                None => IdempotencyKey::mint().inspect(|key| {
                    req.headers_mut()
                        .insert(header.clone(), key.to_header_as(self.config.format));
                }),
            };
            let key = match key {
                Ok(key) => key,
                Err(error) => {
                    return KeyFuture {
                        inner: Rejectable::rejected(error),
                    };
                }
            };
            let extensions = req.extensions_mut();
            extensions.insert(key);
            extensions.insert(RetrySafe);
            extensions.insert(RetryOnConflict);
        }
        KeyFuture {
            inner: Rejectable::running(self.inner.call(req)),
        }
    }
}

pin_project! {
    /// The response future of [`IdempotencyKeyService`].
    pub struct KeyFuture<F> {
        #[pin]
        inner: Rejectable<F>,
    }
}

impl<F, T, E> Future for KeyFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
