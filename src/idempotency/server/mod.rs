//! The server half: each key runs once. The first request with a key claims it (with a lease,
//! renewed while the handler runs), runs, and stores its response; repeats get that response
//! replayed, `409` while the first is still running, `422` if they are a different request.
//!
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | the layer and service, and the routing of one request: pass through, refuse, replay or run |
//! | `config.rs` | defaults, [`IdempotencyLayerBuilder`] and its validation |
//! | `refusal.rs` | the answers to requests that do not run (400, 401, 409, 413, 422, 503 and their gRPC codes) |
//! | `execution.rs` | one claimed key's run: the handler under a renewed lease, then store or release |
//! | `headers.rs` | what a stored response keeps of its headers, and how a replay is framed |

mod config;
mod execution;
mod headers;
mod refusal;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower::{Layer, Service};

use self::config::ServerConfig;
pub use self::config::{
    BODY_OMITTED_HEADER, DEFAULT_LEASE, DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY,
    DEFAULT_RECORD_TTL, IdempotencyLayerBuilder, IdempotencyStats, REPLAYED_HEADER,
};
use self::execution::Execution;
use self::headers::replay;
use self::refusal::Refusal;
use super::body::{Collected, IdempotencyBody, collect};
use super::record::{Fingerprint, record_id};
use super::store::{Claim, IdempotencyStore, LeaseToken};
use super::{IdempotencyKey, MemoryStore};
use crate::BoxError;
use crate::metrics::{IdempotencyOutcome, StoreOperation};
use crate::warn_gate::gated_warn;
use crate::wire::is_grpc;

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
/// With feature `metrics`, the layer registers its instruments when it is built: keyed requests
/// by outcome (`stanchion.idempotency.requests`), lease renewals, slow ones and leases lost
/// (`stanchion.idempotency.lease.*`), and failed store calls by operation
/// (`stanchion.idempotency.store.errors`) — see the `stanchion::metrics` module.
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

/// What the leases of a layer's handlers went through (shared by the layer and its services).
fn stats_of(config: &ServerConfig) -> IdempotencyStats {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &config.leases;
    IdempotencyStats {
        renewals: c.renewals.load(Relaxed),
        slow_renewals: c.slow_renewals.load(Relaxed),
        failed_renewals: c.failed_renewals.load(Relaxed),
        lost_leases: c.lost_leases.load(Relaxed),
    }
}

impl<St> IdempotencyLayer<St> {
    /// What the leases of this layer's handlers went through: renewals, slow and failed ones,
    /// leases lost while a handler ran.
    pub fn stats(&self) -> IdempotencyStats {
        stats_of(&self.config)
    }
}

impl<S, St> IdempotencyService<S, St> {
    /// What the leases of this service's handlers went through (shared with its layer).
    pub fn stats(&self) -> IdempotencyStats {
        stats_of(&self.config)
    }
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
            .any(|prefix| crate::path::covers(prefix, parts.uri.path()));
    let grpc = is_grpc(&parts.headers);
    let key = match parts.headers.get(&config.header) {
        _ if !applies => None,
        None => None,
        Some(value) => match IdempotencyKey::from_header(value) {
            Ok(key) => Some(key),
            Err(crate::Error::InvalidIdempotencyKey { reason }) => {
                return Ok(refuse(&config, Refusal::BadKey(reason), grpc));
            }
            Err(_) => {
                return Ok(refuse(
                    &config,
                    Refusal::BadKey("invalid idempotency key"),
                    grpc,
                ));
            }
        },
    };
    let Some(key) = key else {
        if applies && config.require_key && matches!(parts.method, Method::POST | Method::PATCH) {
            return Ok(refuse(&config, Refusal::MissingKey, grpc));
        }
        return passthrough(inner, Request::from_parts(parts, body)).await;
    };
    let scope = match &config.scope {
        None => String::new(),
        Some(scope) => match scope(&parts) {
            Some(scope) => scope,
            None => return Ok(refuse(&config, Refusal::NoScope, grpc)),
        },
    };
    let (body, trailers) = match collect(body, config.max_request_body).await {
        Collected::Complete { body, trailers } => (body, trailers),
        Collected::TooLarge { .. } => return Ok(refuse(&config, Refusal::BodyTooLarge, grpc)),
        Collected::Failed { .. } => return Ok(refuse(&config, Refusal::BodyUnreadable, grpc)),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fingerprint = Fingerprint::of(&parts.method, path, &body);
    let id = record_id("", &scope, key.as_str());
    let token = match LeaseToken::random() {
        Ok(token) => token,
        Err(error) => {
            gated_warn!(config.warnings.token, %error, "idempotency: no lease token");
            return Ok(refuse(&config, Refusal::StoreUnavailable, grpc));
        }
    };
    let claimed_at = tokio::time::Instant::now();
    match store.claim(&id, fingerprint, token, config.lease).await {
        Err(error) => {
            gated_warn!(config.warnings.claim, %error, key = key.as_str(), "idempotency store: claim failed");
            config.metrics.store_error(StoreOperation::Claim);
            Ok(refuse(&config, Refusal::StoreUnavailable, grpc))
        }
        Ok(Claim::InFlight(held)) if held != fingerprint => {
            Ok(refuse(&config, Refusal::Mismatch, grpc))
        }
        Ok(Claim::InFlight(_)) => {
            let lease = config.lease;
            Ok(refuse(&config, Refusal::InFlight { lease }, grpc))
        }
        Ok(Claim::Completed(stored)) if stored.fingerprint != fingerprint => {
            Ok(refuse(&config, Refusal::Mismatch, grpc))
        }
        Ok(Claim::Completed(stored)) => {
            config.metrics.request(IdempotencyOutcome::Replayed);
            Ok(replay(*stored))
        }
        Ok(Claim::Acquired) => {
            config.metrics.request(IdempotencyOutcome::Claimed);
            let request = Request::from_parts(parts, IdempotencyBody::full(body, trailers));
            let run = Execution {
                store,
                config: config.clone(),
                id,
                token,
                fingerprint,
                claimed_at,
            }
            .run(inner, request);
            if !config.detach {
                return run.await;
            }
            // Detached, the handler runs in a task of its own: take the adopted deadline and
            // the tracing span along (task-locals and the current span stay behind otherwise).
            let adopted = crate::deadline::current();
            let run = tracing::Instrument::in_current_span(crate::deadline::scope(adopted, run));
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

/// The answer to a keyed request that does not run, counted by its outcome.
fn refuse<B>(config: &ServerConfig, refusal: Refusal, grpc: bool) -> Response<IdempotencyBody<B>> {
    config.metrics.request(refusal.outcome());
    refusal.respond(grpc)
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
