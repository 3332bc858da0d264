//! One claimed key's run: the handler under a renewed lease, then its outcome stored or the
//! record released.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
use crate::metrics::StoreOperation;
use crate::warn_gate::gated_warn;

/// One claimed key's run: the handler under a renewed lease, then the outcome stored or the
/// record released.
pub(super) struct Execution<St> {
    pub(super) store: St,
    pub(super) config: Arc<ServerConfig>,
    pub(super) id: String,
    pub(super) token: LeaseToken,
    pub(super) fingerprint: Fingerprint,
    /// When the claim was sent: the lease runs from here.
    pub(super) claimed_at: tokio::time::Instant,
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

    /// Runs `work`, renewing the lease every third of it until `work` ends — *beside* it: the
    /// handler is polled while a renewal is in flight, so a slow store never stalls it. A
    /// renewal still in flight when the lease's end passes (slower than the lease's margin), a
    /// failed one, and a lease lost — its end passed with no renewal back, or the store no longer
    /// holds it — are reported (a warning, [`IdempotencyStats`](super::IdempotencyStats) and,
    /// with feature `metrics`, `stanchion.idempotency.*`; each lapse once); the handler is not
    /// cancelled (its side effects are unknowable), and its completion is fenced by the lease
    /// token (it does not overwrite a newer claim). If this future is dropped, renewal stops and
    /// the record stays until its lease runs out.
    async fn under_lease<T>(&self, work: impl Future<Output = T>) -> T {
        let lease = self.config.lease;
        let every = lease / 3;
        let counters = &self.config.leases;
        let mut work = pin!(work);
        let mut tick = pin!(tokio::time::sleep_until(self.claimed_at + every));
        let mut renewal = pin!(none_of(|| self.store.renew(&self.id, self.token, lease)));
        let mut started = tokio::time::Instant::now();
        // The lease is held until here (from the claim, then from each renewal that kept it);
        // past it with no renewal back, it has lapsed.
        let mut lapse = pin!(tokio::time::sleep_until(self.claimed_at + lease));
        // This lapse was reported (as lost, or the renewal in flight as slow).
        let mut lapsed = false;
        let metrics = &self.config.metrics;
        let lost = |why: &str| {
            counters.lost_leases.fetch_add(1, Ordering::Relaxed);
            metrics.lease_lost();
            tracing::warn!(
                record = %self.id,
                why,
                "idempotency lease lost while the handler ran: another request may run this key"
            );
        };
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            loop {
                // A renewal that is back is taken before the lease's end is looked at.
                if let Some(in_flight) = renewal.as_mut().as_pin_mut() {
                    let Poll::Ready(result) = in_flight.poll(cx) else {
                        if !lapsed && lapse.as_mut().poll(cx).is_ready() {
                            // Still in flight at the lease's end: slow; whether the lease is
                            // lost, its answer says.
                            lapsed = true;
                            counters.slow_renewals.fetch_add(1, Ordering::Relaxed);
                            metrics.slow_renewal();
                            tracing::warn!(
                                record = %self.id,
                                took = ?started.elapsed(),
                                ?lease,
                                "idempotency lease renewal is slower than the lease's margin"
                            );
                        }
                        return Poll::Pending;
                    };
                    renewal.set(None);
                    counters.renewals.fetch_add(1, Ordering::Relaxed);
                    metrics.renewal();
                    match result {
                        Ok(true) => {
                            // Kept: held for a lease from when this renewal began.
                            lapse.as_mut().reset(started + lease);
                            lapsed = false;
                        }
                        Ok(false) => lost("the store no longer holds it for this run"),
                        Err(error) => {
                            counters.failed_renewals.fetch_add(1, Ordering::Relaxed);
                            metrics.store_error(StoreOperation::Renew);
                            gated_warn!(
                                self.config.warnings.renewal,
                                %error,
                                record = %self.id,
                                "idempotency lease renewal failed"
                            );
                        }
                    }
                    // The next renewal a third of the lease after this one began.
                    tick.as_mut().reset(started + every);
                }
                if !lapsed && lapse.as_mut().poll(cx).is_ready() {
                    // Its end passed with no renewal in flight (they failed): lost.
                    lapsed = true;
                    lost("its end passed with no renewal back");
                }
                if tick.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                started = tokio::time::Instant::now();
                renewal.set(Some(self.store.renew(&self.id, self.token, lease)));
            }
        })
        .await
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
            Ok(false) => {
                self.config
                    .leases
                    .lost_leases
                    .fetch_add(1, Ordering::Relaxed);
                self.config.metrics.lease_lost();
                tracing::warn!(
                    record = %self.id,
                    "idempotency lease ran out before the handler finished: its response was not stored"
                )
            }
            Err(error) => {
                self.config.metrics.store_error(StoreOperation::Complete);
                gated_warn!(
                    self.config.warnings.store,
                    %error,
                    record = %self.id,
                    "idempotency store: could not store the response"
                )
            }
        }
    }

    async fn release(&self) {
        if let Err(error) = self.store.release(&self.id, self.token).await {
            self.config.metrics.store_error(StoreOperation::Release);
            gated_warn!(
                self.config.warnings.release,
                %error,
                record = %self.id,
                "idempotency store: could not release the record"
            );
        }
    }
}

/// `None`, typed as the option of what `make` would return (never called): a slot for a future
/// of a type that cannot be named.
fn none_of<F>(_make: impl FnOnce() -> F) -> Option<F> {
    None
}
