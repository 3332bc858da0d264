//! The server half: each key runs once. The first request with a key claims it (with a lease,
//! renewed while the handler runs), runs, and stores its response; repeats get that response
//! replayed, `409` while the first is still running, `422` if they are a different request.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use tower::{Layer, Service};

use super::body::{Collected, IdempotencyBody, collect};
use super::client::DEFAULT_KEY_HEADER;
use super::record::{Fingerprint, StoredResponse, record_id};
use super::store::{Claim, IdempotencyStore, LeaseToken};
use super::{IdempotencyKey, MemoryStore};
use crate::BoxError;
use crate::classify::{GrpcCode, HttpClassifier};
use crate::error::{ConfigError, check_duration};

/// The default time a finished request's response is kept: 24 hours (as Stripe keeps keys).
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The default lease of an in-flight record: 10 s, renewed every third of that while the
/// handler runs. After a crash the key can run again once the lease ends.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The default limit on a keyed request's body (read to fingerprint it): 1 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1 << 20;
/// The default limit on a stored response body: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 1 << 20;
/// The header on a replayed response: `idempotency-replayed: true`.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotency-replayed");
/// The header on a replay whose original body was over the limit and not kept.
pub const BODY_OMITTED_HEADER: HeaderName = HeaderName::from_static("idempotency-body-omitted");

const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Finds the tenant (principal) a request belongs to; `None` means it has none.
type ScopeFn = dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync;

struct ServerConfig {
    header: HeaderName,
    ttl: Duration,
    lease: Duration,
    max_request_body: usize,
    max_response_body: usize,
    require_key: bool,
    routes: Vec<String>,
    scope: Option<Box<ScopeFn>>,
    detach: bool,
    store_failures: bool,
    classifier: HttpClassifier,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("header", &self.header)
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .field("max_request_body", &self.max_request_body)
            .field("max_response_body", &self.max_response_body)
            .field("require_key", &self.require_key)
            .field("routes", &self.routes)
            .field("scoped", &self.scope.is_some())
            .field("detach", &self.detach)
            .field("store_failures", &self.store_failures)
            .finish()
    }
}

/// Executes each idempotency key once, for hyper, axum and tonic servers (any tower `Service`
/// over `http::Request`).
///
/// For a request carrying a key (in `Idempotency-Key`, quoted or bare):
///
/// | the store holds | the answer |
/// |---|---|
/// | nothing | the request runs; its response (status, headers, body up to a limit, trailers) is stored for the TTL |
/// | the same request, finished | the stored response, replayed, with `idempotency-replayed: true` |
/// | the same request, running | `409 Conflict` (gRPC: ABORTED) |
/// | another request (method, path or body differ) | `422 Unprocessable Content` (gRPC: FAILED_PRECONDITION) |
///
/// A POST or PATCH without a key is `400` if [`require_key`](IdempotencyLayerBuilder::require_key)
/// is set, and passes through otherwise; so do requests outside the configured routes. Keys are
/// scoped by [`scope`](IdempotencyLayerBuilder::scope) so one tenant never sees another's
/// response. By default a 5xx (and any outcome the crate classifies as a server failure, such as
/// gRPC UNAVAILABLE) is not stored — the record is released, and a retry runs again.
///
/// The record's lease is renewed while the handler runs. By default the handler runs detached
/// from the connection: if the client goes away, the handler still finishes and its response is
/// stored for the retry. With [`detach(false)`](IdempotencyLayerBuilder::detach) a dropped
/// handler leaves its record in place until the lease ends (it may have half-run its side
/// effect), and then the key can run again.
///
/// ```
/// use std::time::Duration;
/// use stanchion::idempotency::{IdempotencyLayer, MemoryStore};
///
/// let layer = IdempotencyLayer::builder(MemoryStore::new())
///     .route("/v1/payments")
///     .require_key(true)
///     .scope(|req| req.headers.get("x-tenant")?.to_str().ok().map(str::to_owned))
///     .ttl(Duration::from_secs(6 * 60 * 60))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), stanchion::ConfigError>(())
/// ```
pub struct IdempotencyLayer<St = MemoryStore> {
    store: St,
    config: Arc<ServerConfig>,
}

impl<St: Clone> Clone for IdempotencyLayer<St> {
    fn clone(&self) -> Self {
        IdempotencyLayer {
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

impl<St: std::fmt::Debug> std::fmt::Debug for IdempotencyLayer<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

impl<St: IdempotencyStore> IdempotencyLayer<St> {
    /// A builder over `store`, with the documented defaults.
    pub fn builder(store: St) -> IdempotencyLayerBuilder<St> {
        IdempotencyLayerBuilder {
            store,
            config: ServerConfig {
                header: DEFAULT_KEY_HEADER,
                ttl: DEFAULT_RECORD_TTL,
                lease: DEFAULT_LEASE,
                max_request_body: DEFAULT_MAX_REQUEST_BODY,
                max_response_body: DEFAULT_MAX_RESPONSE_BODY,
                require_key: false,
                routes: Vec::new(),
                scope: None,
                detach: true,
                store_failures: false,
                classifier: HttpClassifier::new(),
            },
        }
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// How long finished responses are kept.
    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// The lease of an in-flight record.
    pub fn lease(&self) -> Duration {
        self.config.lease
    }
}

/// Settings of an [`IdempotencyLayer`]; [`build`](Self::build) validates them.
pub struct IdempotencyLayerBuilder<St> {
    store: St,
    config: ServerConfig,
}

impl<St: std::fmt::Debug> std::fmt::Debug for IdempotencyLayerBuilder<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

impl<St: IdempotencyStore> IdempotencyLayerBuilder<St> {
    /// The header the key arrives in (default `Idempotency-Key`; gRPC metadata has the same
    /// name).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.config.header = header;
        self
    }

    /// How long a finished response is kept for replay (default 24 h, at most a year).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// The lease of an in-flight record (default 10 s): renewed every third of it while the
    /// handler runs; after a crash, the key runs again once it ends. At least 30 ms.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// The largest keyed request body read to fingerprint it (default 1 MiB); a larger one is
    /// refused with `413`.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.config.max_request_body = bytes;
        self
    }

    /// The largest response body stored (default 1 MiB). A larger response still reaches its
    /// client whole; its record keeps the status and headers, and a replay carries
    /// `idempotency-body-omitted: true` and an empty body.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.config.max_response_body = bytes;
        self
    }

    /// Refuse POST and PATCH requests without a key with `400` (default: let them through).
    pub fn require_key(mut self, require: bool) -> Self {
        self.config.require_key = require;
        self
    }

    /// Apply the layer only to paths starting with `prefix` (call again for more). Without
    /// routes, it applies to every path.
    pub fn route(mut self, prefix: impl Into<String>) -> Self {
        self.config.routes.push(prefix.into());
        self
    }

    /// The tenant (principal) a request belongs to, from its head — an authenticated user id,
    /// an API key's account. Keys are scoped by it, so one tenant can never replay another's
    /// response. A keyed request whose scope is `None` is refused with `401`. Without a scope
    /// function every request shares one scope.
    pub fn scope<F>(mut self, scope: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.config.scope = Some(Box::new(scope));
        self
    }

    /// Run the handler on its own task, so a client going away does not cancel it (default
    /// `true`). With `false`, a dropped handler's record stays until its lease ends.
    pub fn detach(mut self, detach: bool) -> Self {
        self.config.detach = detach;
        self
    }

    /// Store server failures (5xx, gRPC UNAVAILABLE/INTERNAL/…) too, so a repeat replays the
    /// failure instead of running again (default `false`).
    pub fn store_failures(mut self, store: bool) -> Self {
        self.config.store_failures = store;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<IdempotencyLayer<St>, ConfigError> {
        let mut config = self.config;
        config.ttl = check_duration("ttl", config.ttl, MAX_TTL)?;
        config.lease = check_duration("lease", config.lease, MAX_TTL)?;
        if config.lease < Duration::from_millis(30) {
            return Err(ConfigError::new(
                "lease",
                "must be at least 30 ms (it is renewed every third of it)",
            ));
        }
        if let Some(route) = config.routes.iter().find(|r| !r.starts_with('/')) {
            return Err(ConfigError::new(
                "route",
                format!("`{route}` must start with `/`"),
            ));
        }
        Ok(IdempotencyLayer {
            store: self.store,
            config: Arc::new(config),
        })
    }
}

impl<S, St: Clone> Layer<S> for IdempotencyLayer<St> {
    type Service = IdempotencyService<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService {
            inner,
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

/// The service of an [`IdempotencyLayer`].
pub struct IdempotencyService<S, St = MemoryStore> {
    inner: S,
    store: St,
    config: Arc<ServerConfig>,
}

impl<S: Clone, St: Clone> Clone for IdempotencyService<S, St> {
    fn clone(&self) -> Self {
        IdempotencyService {
            inner: self.inner.clone(),
            store: self.store.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: std::fmt::Debug, St: std::fmt::Debug> std::fmt::Debug for IdempotencyService<S, St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

/// The future of an [`IdempotencyService`].
pub type IdempotencyFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<IdempotencyBody<B>>, E>> + Send>>;

impl<S, St, ReqB, ResB> Service<Request<ReqB>> for IdempotencyService<S, St>
where
    S: Service<Request<IdempotencyBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: IdempotencyStore,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<IdempotencyBody<ResB>>;
    type Error = S::Error;
    type Future = IdempotencyFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let store = self.store.clone();
        Box::pin(handle(inner, store, config, req))
    }
}

/// How a keyed request is answered without running it.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    MissingKey,
    BadKey(&'static str),
    NoScope,
    BodyTooLarge,
    BodyUnreadable,
    InFlight,
    Mismatch,
    StoreUnavailable,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::MissingKey | Refusal::BadKey(_) | Refusal::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Refusal::NoScope => StatusCode::UNAUTHORIZED,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::InFlight => StatusCode::CONFLICT,
            Refusal::Mismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn grpc_code(self) -> GrpcCode {
        match self {
            Refusal::MissingKey | Refusal::BadKey(_) | Refusal::BodyUnreadable => {
                GrpcCode::InvalidArgument
            }
            Refusal::NoScope => GrpcCode::Unauthenticated,
            Refusal::BodyTooLarge => GrpcCode::ResourceExhausted,
            Refusal::InFlight => GrpcCode::Aborted,
            Refusal::Mismatch => GrpcCode::FailedPrecondition,
            Refusal::StoreUnavailable => GrpcCode::Unavailable,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::MissingKey => "an Idempotency-Key is required for this request",
            Refusal::BadKey(reason) => reason,
            Refusal::NoScope => "the request has no principal to scope its idempotency key",
            Refusal::BodyTooLarge => "the request body is larger than the idempotency limit",
            Refusal::BodyUnreadable => "the request body could not be read",
            Refusal::InFlight => "a request with this idempotency key is still being processed",
            Refusal::Mismatch => "this idempotency key was already used for a different request",
            Refusal::StoreUnavailable => "the idempotency store is unavailable; retry later",
        }
    }

    fn respond<B>(self, grpc: bool) -> Response<IdempotencyBody<B>> {
        let mut response = Response::new(IdempotencyBody::empty());
        if !grpc {
            *response.status_mut() = self.status();
        }
        let headers = response.headers_mut();
        if grpc {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(self.grpc_code() as u16));
            headers.insert("grpc-message", grpc_message(self.message()));
        } else {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            *response.body_mut() = IdempotencyBody::full(Bytes::from(self.message()), None);
        }
        response
    }
}

/// A grpc-message value: percent-encoded as the gRPC spec asks (ASCII messages need only `%`
/// and controls escaped).
fn grpc_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("idempotency"))
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

async fn handle<S, St, ReqB, ResB>(
    inner: S,
    store: St,
    config: Arc<ServerConfig>,
    req: Request<ReqB>,
) -> Result<Response<IdempotencyBody<ResB>>, S::Error>
where
    S: Service<Request<IdempotencyBody<ReqB>>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: IdempotencyStore,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let applies = config.routes.is_empty()
        || config
            .routes
            .iter()
            .any(|r| parts.uri.path().starts_with(r.as_str()));
    let grpc = is_grpc(&parts.headers);
    let key = match parts.headers.get(&config.header) {
        _ if !applies => None,
        None => None,
        Some(value) => match IdempotencyKey::from_header(value) {
            Ok(key) => Some(key),
            Err(crate::Error::InvalidIdempotencyKey { reason }) => {
                return Ok(Refusal::BadKey(reason).respond(grpc));
            }
            Err(_) => return Ok(Refusal::BadKey("invalid idempotency key").respond(grpc)),
        },
    };
    let Some(key) = key else {
        if applies && config.require_key && matches!(parts.method, Method::POST | Method::PATCH) {
            return Ok(Refusal::MissingKey.respond(grpc));
        }
        return passthrough(inner, Request::from_parts(parts, body)).await;
    };
    let scope = match &config.scope {
        None => String::new(),
        Some(scope) => match scope(&parts) {
            Some(scope) => scope,
            None => return Ok(Refusal::NoScope.respond(grpc)),
        },
    };
    let (body, trailers) = match collect(body, config.max_request_body).await {
        Collected::Complete { body, trailers } => (body, trailers),
        Collected::TooLarge { .. } => return Ok(Refusal::BodyTooLarge.respond(grpc)),
        Collected::Failed { .. } => return Ok(Refusal::BodyUnreadable.respond(grpc)),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fingerprint = Fingerprint::of(&parts.method, path, &body);
    let id = record_id("", &scope, key.as_str());
    let token = match LeaseToken::random() {
        Ok(token) => token,
        Err(error) => {
            tracing::warn!(%error, "idempotency: no lease token");
            return Ok(Refusal::StoreUnavailable.respond(grpc));
        }
    };
    match store.claim(&id, fingerprint, token, config.lease).await {
        Err(error) => {
            tracing::warn!(%error, key = key.as_str(), "idempotency store: claim failed");
            Ok(Refusal::StoreUnavailable.respond(grpc))
        }
        Ok(Claim::InFlight(held)) if held != fingerprint => Ok(Refusal::Mismatch.respond(grpc)),
        Ok(Claim::InFlight(_)) => Ok(Refusal::InFlight.respond(grpc)),
        Ok(Claim::Completed(stored)) if stored.fingerprint != fingerprint => {
            Ok(Refusal::Mismatch.respond(grpc))
        }
        Ok(Claim::Completed(stored)) => Ok(replay(*stored)),
        Ok(Claim::Acquired) => {
            let request = Request::from_parts(parts, IdempotencyBody::full(body, trailers));
            let run = Execution {
                store,
                config: config.clone(),
                id,
                token,
                fingerprint,
            }
            .run(inner, request);
            if !config.detach {
                return run.await;
            }
            match tokio::spawn(run).await {
                Ok(result) => result,
                Err(error) => {
                    // The handler panicked: its side effect may be half done, so the record is
                    // left to its lease (no longer renewed) rather than released.
                    tracing::error!(%error, key = key.as_str(), "idempotent handler panicked");
                    let mut response = Response::new(IdempotencyBody::empty());
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    Ok(response)
                }
            }
        }
    }
}

async fn passthrough<S, ReqB, ResB>(
    mut inner: S,
    req: Request<ReqB>,
) -> Result<Response<IdempotencyBody<ResB>>, S::Error>
where
    S: Service<Request<IdempotencyBody<ReqB>>, Response = Response<ResB>>,
{
    let response = inner.call(req.map(IdempotencyBody::passthrough)).await?;
    Ok(response.map(IdempotencyBody::passthrough))
}

/// The headers worth storing: the response's own, without the hop-by-hop ones that describe
/// this connection's framing (a replay is framed anew).
fn end_to_end_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for hop in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::header::TE,
        http::header::TRAILER,
    ] {
        kept.remove(hop);
    }
    kept.remove("keep-alive");
    kept
}

fn replay<B>(stored: StoredResponse) -> Response<IdempotencyBody<B>> {
    let mut response = Response::new(IdempotencyBody::full(stored.body, stored.trailers));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    let headers = response.headers_mut();
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    if stored.body_omitted {
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(BODY_OMITTED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// One claimed key's run: the handler under a renewed lease, then the outcome stored or the
/// record released.
struct Execution<St> {
    store: St,
    config: Arc<ServerConfig>,
    id: String,
    token: LeaseToken,
    fingerprint: Fingerprint,
}

impl<St: IdempotencyStore> Execution<St> {
    async fn run<S, ReqB, ResB>(
        self,
        mut inner: S,
        request: Request<IdempotencyBody<ReqB>>,
    ) -> Result<Response<IdempotencyBody<ResB>>, S::Error>
    where
        S: Service<Request<IdempotencyBody<ReqB>>, Response = Response<ResB>>,
        ResB: Body<Data = Bytes>,
        ResB::Error: Into<BoxError>,
    {
        let limit = self.config.max_response_body;
        let work = async move {
            match inner.call(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    Ok((parts, collect(body, limit).await))
                }
                Err(error) => Err(error),
            }
        };
        let outcome = self.under_lease(work).await;
        let (parts, collected) = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                self.release().await;
                return Err(error);
            }
        };
        let stored = match &collected {
            Collected::Complete { body, trailers } => Some(StoredResponse {
                fingerprint: self.fingerprint,
                status: parts.status,
                headers: end_to_end_headers(&parts.headers),
                body: body.clone(),
                trailers: trailers.clone(),
                body_omitted: false,
            }),
            Collected::TooLarge { .. } => Some(StoredResponse {
                fingerprint: self.fingerprint,
                status: parts.status,
                headers: end_to_end_headers(&parts.headers),
                body: Bytes::new(),
                trailers: None,
                body_omitted: true,
            }),
            Collected::Failed { .. } => None,
        };
        match stored {
            Some(stored) if self.config.store_failures || !self.is_failure(&stored) => {
                self.complete(&stored).await;
            }
            _ => self.release().await,
        }
        Ok(Response::from_parts(parts, collected.into_body()))
    }

    /// Runs `work`, renewing the lease every third of it until `work` ends. If this future is
    /// dropped, renewal stops and the record stays until its lease runs out.
    async fn under_lease<T>(&self, work: impl Future<Output = T>) -> T {
        let mut work = pin!(work);
        let every = self.config.lease / 3;
        loop {
            let mut tick = pin!(tokio::time::sleep(every));
            let done = std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Some(out)),
                Poll::Pending => tick.as_mut().poll(cx).map(|()| None),
            })
            .await;
            if let Some(out) = done {
                return out;
            }
            match self
                .store
                .renew(&self.id, self.token, self.config.lease)
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    record = %self.id,
                    "idempotency lease lost while the handler ran: another request may run this key"
                ),
                Err(error) => {
                    tracing::warn!(%error, record = %self.id, "idempotency lease renewal failed")
                }
            }
        }
    }

    fn is_failure(&self, stored: &StoredResponse) -> bool {
        let http = self
            .config
            .classifier
            .classify_status(stored.status, &stored.headers)
            .kind()
            .is_failure();
        let grpc = [Some(&stored.headers), stored.trailers.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|h| h.get("grpc-status"))
            .any(|code| GrpcCode::from_header(code.as_bytes()).kind().is_failure());
        http || grpc
    }

    async fn complete(&self, stored: &StoredResponse) {
        match self
            .store
            .complete(&self.id, self.token, stored, self.config.ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                record = %self.id,
                "idempotency lease ran out before the handler finished: its response was not stored"
            ),
            Err(error) => {
                tracing::warn!(%error, record = %self.id, "idempotency store: could not store the response")
            }
        }
    }

    async fn release(&self) {
        if let Err(error) = self.store.release(&self.id, self.token).await {
            tracing::warn!(%error, record = %self.id, "idempotency store: could not release the record");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_headers_drop_the_connections_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        let kept = end_to_end_headers(&headers);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept["content-type"], "application/json");
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("50% done\n"), "50%25 done%0A");
        for refusal in [Refusal::InFlight, Refusal::Mismatch, Refusal::MissingKey] {
            let res = refusal.respond::<()>(true);
            assert_eq!(res.status(), StatusCode::OK, "gRPC errors ride on HTTP 200");
            assert_eq!(
                res.headers()["grpc-status"],
                (refusal.grpc_code() as u16).to_string().as_str()
            );
        }
    }
}
