//! The breaker as a layer around a whole client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::{CircuitBreaker, Permit};
use crate::classify::Classify;
#[cfg(feature = "http")]
use crate::classify::Verdict;
use crate::error::{BoxError, Error};
use crate::rejected::Rejectable;

/// Fails calls fast while the breaker is open, without touching the inner service; records every
/// admitted call's outcome, classified by `C`.
///
/// ```
/// use std::time::Duration;
/// use stanchion::breaker::{CircuitBreaker, CircuitBreakerLayer};
/// use stanchion::classify::HttpClassifier;
///
/// let breaker = CircuitBreaker::builder()
///     .name("payments-api")
///     .failure_rate(0.5)
///     .minimum_calls(20)
///     .open_duration(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// let layer = CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new());
/// // `breaker` is the handle: read its state, force it open, subscribe to changes.
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl<C> CircuitBreakerLayer<C> {
    /// Guards calls with `breaker`, judging outcomes with `classifier`.
    pub fn new(breaker: CircuitBreaker, classifier: C) -> Self {
        CircuitBreakerLayer {
            breaker,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            at_head: self.breaker.record_at() == super::RecordAt::Head,
            inner_ready: false,
        }
    }
}

/// The service of [`CircuitBreakerLayer`].
///
/// While the circuit is open, `poll_ready` does not wait for the inner service (whose backpressure
/// may be the very failure): it reports ready, and the call fails fast.
#[derive(Debug)]
pub struct CircuitBreakerService<S, C> {
    inner: S,
    breaker: CircuitBreaker,
    classifier: C,
    at_head: bool,
    /// The inner service reported ready for the next call.
    inner_ready: bool,
}

impl<S: Clone, C: Clone> Clone for CircuitBreakerService<S, C> {
    fn clone(&self) -> Self {
        CircuitBreakerService {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
            at_head: self.at_head,
            // Readiness belongs to the service that was polled.
            inner_ready: false,
        }
    }
}

/// A response whose outcome a breaker can record: when its stream ends (HTTP responses, whose
/// body is wrapped in a [`ClassifiedBody`](crate::classify::ClassifiedBody)), or at once.
pub trait BreakerResponse<C>: Sized {
    /// The response handed to the caller.
    type Output;

    /// Arranges for `permit` to get this response's outcome, judged by `classifier`.
    fn finish(self, classifier: &C, permit: Permit, at_head: bool) -> Self::Output;
}

#[cfg(feature = "http")]
impl<B, C> BreakerResponse<C> for http::Response<B>
where
    C: Classify<http::Response<B>>,
{
    type Output = http::Response<crate::classify::ClassifiedBody<B, C::Eos, Permit>>;

    fn finish(self, classifier: &C, permit: Permit, at_head: bool) -> Self::Output {
        match classifier.classify_response(&self) {
            Verdict::Done(class) if at_head => {
                permit.record(Some(class));
                self.map(|body| {
                    crate::classify::ClassifiedBody::new(
                        body,
                        Verdict::Done(class),
                        Permit::spent(),
                    )
                })
            }
            verdict => self.map(|body| crate::classify::ClassifiedBody::new(body, verdict, permit)),
        }
    }
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: BreakerResponse<C>,
    C: Classify<S::Response> + Clone,
{
    type Response = <S::Response as BreakerResponse<C>>::Output;
    type Error = Error;
    type Future = BreakerFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.inner_ready {
            return Poll::Ready(Ok(()));
        }
        if !self.breaker.is_usable() {
            // The call will be rejected; do not wait on the inner service for it.
            return Poll::Ready(Ok(()));
        }
        ready!(self.inner.poll_ready(cx)).map_err(Error::from_inner)?;
        self.inner_ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let admitted = self.breaker.try_acquire();
        let inner_ready = std::mem::take(&mut self.inner_ready);
        match admitted {
            // Admitted, but readiness was skipped while the circuit was open: the state changed
            // between `poll_ready` and `call`. Give the permit back and fail fast this once.
            Ok(permit) if !inner_ready => {
                drop(permit);
                BreakerFuture::rejected(Error::CircuitOpen {
                    retry_in: std::time::Duration::ZERO,
                })
            }
            Ok(permit) => BreakerFuture::running(
                self.inner.call(req),
                permit,
                self.classifier.clone(),
                self.at_head,
            ),
            Err(rejection) => BreakerFuture::rejected(rejection),
        }
    }
}

pin_project! {
    /// The response future of [`CircuitBreakerService`].
    pub struct BreakerFuture<F, C> {
        #[pin]
        inner: Rejectable<Recording<F, C>>,
    }
}

pin_project! {
    /// An admitted call: its outcome goes to the permit.
    struct Recording<F, C> {
        #[pin]
        future: F,
        permit: Option<Permit>,
        classifier: C,
        at_head: bool,
    }
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
impl<F, C> BreakerFuture<F, C> {
    /// A call admitted with `permit`: its outcome is recorded when `future` completes (or at
    /// the end of the response stream, unless `at_head`).
    pub(crate) fn running(future: F, permit: Permit, classifier: C, at_head: bool) -> Self {
        BreakerFuture {
            inner: Rejectable::running(Recording {
                future,
                permit: Some(permit),
                classifier,
                at_head,
            }),
        }
    }

    /// A call rejected before it started.
    pub(crate) fn rejected(error: Error) -> Self {
        BreakerFuture {
            inner: Rejectable::rejected(error),
        }
    }
}

impl<F, C, T, E> Future for Recording<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    T: BreakerResponse<C>,
    C: Classify<T>,
{
    type Output = Result<T::Output, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        let permit = this.permit.take().expect("polled after completion");
        Poll::Ready(match result {
            Ok(response) => Ok(response.finish(this.classifier, permit, *this.at_head)),
            Err(err) => {
                let err: BoxError = err.into();
                permit.record(Some(this.classifier.classify_error(err.as_ref())));
                Err(err)
            }
        })
    }
}

impl<F, C, T, E> Future for BreakerFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    T: BreakerResponse<C>,
    C: Classify<T>,
{
    type Output = Result<T::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}
