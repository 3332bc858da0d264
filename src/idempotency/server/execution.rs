//! One claimed key's run: the handler under a renewed lease, then its outcome stored or the
//! record released.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::Service;

use super::config::ServerConfig;
use super::headers::end_to_end_headers;
use crate::BoxError;
use crate::classify::{GrpcCode, Kind};
use crate::idempotency::body::{Collected, IdempotencyBody, collect};
use crate::idempotency::record::{Fingerprint, StoredResponse};
use crate::idempotency::store::{IdempotencyStore, LeaseToken};

/// One claimed key's run: the handler under a renewed lease, then the outcome stored or the
/// record released.
pub(super) struct Execution<St> {
    pub(super) store: St,
    pub(super) config: Arc<ServerConfig>,
    pub(super) id: String,
    pub(super) token: LeaseToken,
    pub(super) fingerprint: Fingerprint,
}

impl<St: IdempotencyStore> Execution<St> {
    pub(super) async fn run<S, ReqB, ResB>(
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

    /// Whether the response is a failure worth running again rather than storing: anything but
    /// a success, the caller's own error or a cancellation — a 5xx, 408, 429, gRPC UNAVAILABLE,
    /// INTERNAL, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED….
    fn is_failure(&self, stored: &StoredResponse) -> bool {
        let failed =
            |kind: Kind| !matches!(kind, Kind::Success | Kind::ClientError | Kind::Cancelled);
        let http = failed(
            self.config
                .classifier
                .classify_status(stored.status, &stored.headers)
                .kind(),
        );
        let grpc = [Some(&stored.headers), stored.trailers.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|h| h.get("grpc-status"))
            .any(|code| failed(GrpcCode::from_header(code.as_bytes()).kind()));
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
