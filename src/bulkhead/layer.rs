//! The bulkhead layer: take a permit of the call's partition (waiting, bounded), then call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use super::partition::{BulkheadPermit, Partition};
use super::{Bulkhead, PartitionKey};
use crate::classify::{Kind, classify_error};
use crate::deadline::DeadlineCarrier;
use crate::error::{BoxError, Error};
use crate::rejected::Rejectable;

/// Limits concurrent calls per partition, with a bounded queue and a bounded wait.
#[derive(Debug, Clone)]
pub struct BulkheadLayer<K> {
    bulkhead: Bulkhead,
    key: K,
}

impl<K> BulkheadLayer<K> {
    /// Admits calls through `bulkhead`, choosing each call's partition with `key`.
    pub fn new(bulkhead: Bulkhead, key: K) -> Self {
        BulkheadLayer { bulkhead, key }
    }
}

impl<S, K: Clone> Layer<S> for BulkheadLayer<K> {
    type Service = BulkheadService<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService {
            inner,
            bulkhead: self.bulkhead.clone(),
            key: self.key.clone(),
        }
    }
}

/// The service of [`BulkheadLayer`].
///
/// `poll_ready` reports only the inner service's backpressure; waiting for a permit happens in
/// the response future, and a rejection is an error from it.
#[derive(Debug, Clone)]
pub struct BulkheadService<S, K> {
    inner: S,
    bulkhead: Bulkhead,
    key: K,
}

/// A response that can hold the call's permit until the call is really over.
pub trait BulkheadResponse: Sized {
    /// The response handed to the caller.
    type Output;

    /// Keeps `permit` until the response stream ends (or drops it now, `until_end` false).
    /// For an adaptive limit, tell the permit first whether the response signals overload
    /// ([`BulkheadPermit::observe`]).
    fn hold(self, permit: BulkheadPermit, until_end: bool) -> Self::Output;
}

/// HTTP and gRPC: 429, 503, RESOURCE_EXHAUSTED and UNAVAILABLE (trailers-only) signal overload.
#[cfg(feature = "http")]
impl<B: http_body::Body> BulkheadResponse for http::Response<B> {
    type Output = http::Response<super::GuardedBody<B>>;

    fn hold(self, mut permit: BulkheadPermit, until_end: bool) -> Self::Output {
        let grpc_overload = self.headers().get("grpc-status").is_some_and(|code| {
            matches!(
                crate::classify::GrpcCode::from_header(code.as_bytes()),
                crate::classify::GrpcCode::ResourceExhausted
                    | crate::classify::GrpcCode::Unavailable
            )
        });
        let status = self.status().as_u16();
        permit.observe(grpc_overload || status == 429 || status == 503);
        let guard = until_end.then_some(permit);
        self.map(|body| super::GuardedBody::new(body, guard))
    }
}

impl<S, K, Req> Service<Req> for BulkheadService<S, K>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: BulkheadResponse,
    K: PartitionKey<Req>,
    Req: DeadlineCarrier,
{
    type Response = <S::Response as BulkheadResponse>::Output;
    type Error = Error;
    type Future = BulkheadFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.inner.poll_ready(cx).map_err(Error::from_inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let partition = self.bulkhead.registry().find(self.key.partition_key(&req));
        let until_end = self.bulkhead.holds_until_end();
        // The service that was made ready makes this call; a clone stays for the next one.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        // Fast path: a free permit, unless others are already waiting for one (FIFO).
        if !partition.has_waiters()
            && let Some(at_full_use) = partition.try_acquire()
        {
            return BulkheadFuture::calling(service, req, partition, until_end, at_full_use);
        }
        if !partition.enqueue() {
            tracing::debug!(partition = %partition.name, "bulkhead full: call rejected");
            let error = Error::BulkheadFull {
                partition: partition.name.clone(),
                limit: partition.limits.concurrency,
                queue: partition.limits.queue,
            };
            return BulkheadFuture {
                inner: Rejectable::rejected(error),
            };
        }
        // Counted in the queue now; look once more, in case a permit came back meanwhile.
        if let Some(at_full_use) = partition.try_acquire() {
            partition.dequeue();
            return BulkheadFuture::calling(service, req, partition, until_end, at_full_use);
        }
        let wait = req.deadline().map_or(partition.limits.max_wait, |d| {
            d.remaining().min(partition.limits.max_wait)
        });
        let acquire = partition.handoff.clone().acquire_owned();
        BulkheadFuture {
            inner: Rejectable::running(Admission::Waiting {
                waiting: Some(Box::new(Waiting {
                    acquire: Box::pin(acquire),
                    timer: Box::pin(tokio::time::sleep(wait)),
                    started: Instant::now(),
                    queued: Queued(partition),
                    service,
                    req,
                    until_end,
                })),
            }),
        }
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A call waiting in its partition's queue (boxed: only waiting calls pay for it).
struct Waiting<S, Req> {
    acquire: Acquire,
    timer: Pin<Box<Sleep>>,
    started: Instant,
    queued: Queued,
    service: S,
    req: Req,
    until_end: bool,
}

/// A place in a partition's queue, given back when dropped (also when the caller gives up).
struct Queued(Arc<Partition>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.dequeue();
    }
}

pin_project! {
    /// The response future of [`BulkheadService`].
    pub struct BulkheadFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: Rejectable<Admission<S, Req>>,
    }
}

pin_project! {
    /// A call admitted or waiting to be.
    #[project = AdmissionProj]
    enum Admission<S, Req>
    where
        S: Service<Req>,
    {
        Waiting {
            waiting: Option<Box<Waiting<S, Req>>>,
        },
        Calling {
            #[pin]
            future: S::Future,
            permit: Option<BulkheadPermit>,
            until_end: bool,
        },
    }
}

impl<S: Service<Req>, Req> BulkheadFuture<S, Req> {
    /// The call, made with a permit in hand.
    fn calling(
        mut service: S,
        req: Req,
        partition: Arc<Partition>,
        until_end: bool,
        at_full_use: bool,
    ) -> Self {
        BulkheadFuture {
            inner: Rejectable::running(Admission::Calling {
                future: service.call(req),
                permit: Some(BulkheadPermit::new(partition, at_full_use)),
                until_end,
            }),
        }
    }
}

impl<S, Req> Future for BulkheadFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: BulkheadResponse,
{
    type Output = Result<<S::Response as BulkheadResponse>::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<S, Req> Future for Admission<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: BulkheadResponse,
{
    type Output = Result<<S::Response as BulkheadResponse>::Output, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                AdmissionProj::Waiting { waiting } => {
                    let w = waiting.as_mut().expect("polled after completion");
                    let acquired = match w.acquire.as_mut().poll(cx) {
                        Poll::Ready(result) => result,
                        Poll::Pending => {
                            ready!(w.timer.as_mut().poll(cx));
                            let partition = &w.queued.0;
                            partition.record_timeout();
                            let waited = w.started.elapsed();
                            tracing::debug!(
                                partition = %partition.name,
                                ?waited,
                                "bulkhead wait timed out"
                            );
                            let error = Error::BulkheadTimeout {
                                partition: partition.name.clone(),
                                waited,
                            };
                            *waiting = None;
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    let mut w = *waiting.take().expect("checked above");
                    let partition = w.queued.0.clone();
                    match acquired {
                        Ok(permit) => {
                            permit.forget();
                            // Claimed before the place in the queue is given back: the queue
                            // never looks emptier than it is.
                            partition.claimed();
                        }
                        // The semaphore is never closed while the bulkhead exists.
                        Err(closed) => return Poll::Ready(Err(closed.into())),
                    }
                    drop(w.queued);
                    partition.record_wait(w.started.elapsed());
                    let future = w.service.call(w.req);
                    self.set(Admission::Calling {
                        future,
                        // A waiter was admitted at the limit by definition.
                        permit: Some(BulkheadPermit::new(partition, true)),
                        until_end: w.until_end,
                    });
                }
                AdmissionProj::Calling {
                    future,
                    permit,
                    until_end,
                } => {
                    let result = ready!(future.poll(cx));
                    let mut permit = permit.take().expect("polled after completion");
                    return Poll::Ready(match result {
                        Ok(response) => Ok(response.hold(permit, *until_end)),
                        Err(err) => {
                            let err: BoxError = err.into();
                            let kind = classify_error(err.as_ref()).kind();
                            if matches!(kind, Kind::Overload | Kind::Timeout) {
                                permit.observe(true);
                            }
                            Err(err)
                        }
                    });
                }
            }
        }
    }
}
