//! The balancer as a tower `Service`: pick an endpoint per call, admit through its breaker,
//! mark the response with who served it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tower::Service;
use tower::util::Oneshot;

use super::Balancer;
use super::endpoints::{Picker, Policy};
use crate::BoxError;
use crate::breaker::{BreakerFuture, BreakerResponse};
use crate::classify::Classify;
#[cfg(feature = "http")]
use crate::deadline::Deadline;
use crate::error::{Error, NoEndpointsReason};
#[cfg(feature = "http")]
use crate::retry::AvoidEndpoint;
use crate::retry::ServedBy;

impl<S, C, Req> Service<Req> for Balancer<S, C>
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Response: BalanceResponse + BreakerResponse<C>,
    C: Classify<S::Response> + Clone + Send + Sync + 'static,
    Req: BalanceRequest,
{
    type Response = <S::Response as BreakerResponse<C>>::Output;
    type Error = Error;
    type Future = BalanceFuture<S, Req, C>;

    /// Always ready: an endpoint is chosen per call, and its stack waits inside the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.start_refresh();
        if !self.shared.first_resolved.load(Ordering::Acquire) {
            // Before the first resolution completes, a call waits for it (within its deadline:
            // the timers above cover the wait), then picks.
            let mut resolutions = self.shared.resolutions.subscribe();
            let wait = Box::pin(async move {
                let _ = resolutions.wait_for(|n| *n > 0).await;
            });
            return BalanceFuture {
                state: BalanceState::Resolving {
                    waiting: Some(Box::new(Resolving {
                        balancer: self.clone(),
                        req,
                        wait,
                    })),
                },
            };
        }
        self.dispatch_or_wait(req)
    }
}

/// How often a call waiting for a usable endpoint ([`WaitForReady`]) looks again, besides each
/// resolution: an ejected endpoint becomes usable by time alone (its breaker's open duration).
pub const WAIT_FOR_READY_POLL: Duration = Duration::from_millis(50);

/// A request marked to wait for a usable endpoint (gRPC's wait-for-ready): while none can take
/// it — none resolved, or every one's breaker open (panic mode does not send it through an
/// open breaker) — the balancer holds the call and
/// looks again at each resolution and every [`WAIT_FOR_READY_POLL`], instead of failing with
/// [`NoEndpoints`](crate::Error::NoEndpoints). Bounded by the call's deadline (the layers
/// above cut the wait). A [`Client`](crate::client::Client) route sets it with
/// [`RoutePolicy::wait_for_ready`](crate::client::RoutePolicy::wait_for_ready).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitForReady;

impl<S, C> Balancer<S, C> {
    /// Dispatches `req`, or holds it until an endpoint can take it if it waits for one.
    fn dispatch_or_wait<Req>(&self, req: Req) -> BalanceFuture<S, Req, C>
    where
        S: Service<Req> + Clone,
        C: Clone,
        Req: BalanceRequest,
    {
        match self.dispatch(req) {
            Ok(inner) => BalanceFuture {
                state: BalanceState::Picked { inner },
            },
            Err(req) => {
                let mut resolutions = self.shared.resolutions.subscribe();
                resolutions.mark_unchanged();
                let wait = Box::pin(async move {
                    let mut sleep = std::pin::pin!(tokio::time::sleep(WAIT_FOR_READY_POLL));
                    let mut changed = std::pin::pin!(resolutions.changed());
                    std::future::poll_fn(|cx| {
                        if sleep.as_mut().poll(cx).is_ready()
                            || changed.as_mut().poll(cx).is_ready()
                        {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        }
                    })
                    .await;
                });
                BalanceFuture {
                    state: BalanceState::Resolving {
                        waiting: Some(Box::new(Resolving {
                            balancer: self.clone(),
                            req,
                            wait,
                        })),
                    },
                }
            }
        }
    }
}

impl<S, C> Balancer<S, C> {
    /// Picks an endpoint for `req` and calls it through its breaker; gives `req` back when no
    /// endpoint can take it now and it waits for one ([`WaitForReady`]).
    fn dispatch<Req>(&self, req: Req) -> Result<BreakerFuture<Served<Oneshot<S, Req>>, C>, Req>
    where
        S: Service<Req> + Clone,
        C: Clone,
        Req: BalanceRequest,
    {
        let shared = &*self.shared;
        let snapshot = shared.snapshot.load();
        let picker = Picker {
            policy: shared.policy,
            cursor: &shared.cursor,
            jitter: &shared.jitter,
            metrics: &shared.metrics,
            // A call waiting for ready does not go through panic mode: with every endpoint
            // ejected (refusing connections, failing), it waits for one to admit calls again,
            // as gRPC holds wait-for-ready calls while the channel is in TRANSIENT_FAILURE.
            ready_only: req.wait_for_ready(),
        };
        let avoid = req.avoid_endpoint();
        let given = req.attempt_budget();
        let picked = match req.rejected_endpoints() {
            [] => picker.pick(&snapshot, avoid),
            rejected => picker.pick_excluding(&snapshot, rejected, avoid),
        };
        if let Err(Error::NoEndpoints {
            reason: NoEndpointsReason::NoneResolved | NoEndpointsReason::NoneUsable,
        }) = &picked
            && req.wait_for_ready()
        {
            return Err(req);
        }
        Ok(match picked {
            Ok(picked) => {
                let endpoint = picked.endpoint;
                let at_head = endpoint.breaker.record_at() == crate::breaker::RecordAt::Head;
                // Calls in flight are counted for the least-request policy only.
                let in_flight = (shared.policy == Policy::LeastRequest).then(|| {
                    endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
                    InFlight(endpoint.in_flight.clone())
                });
                let served = Served {
                    inner: Oneshot::new(endpoint.service.clone(), req),
                    served_by: shared.served_by.then_some(ServedBy {
                        endpoint: endpoint.addr,
                        alternatives: picked.alternatives,
                    }),
                    in_flight,
                    cut: CutReport {
                        endpoint: Some(endpoint.addr),
                    },
                };
                BreakerFuture::running(
                    served,
                    picked.permit.given(given),
                    shared.classifier.clone(),
                    at_head,
                )
            }
            Err(error) => BreakerFuture::rejected(error),
        })
    }
}

/// A call waiting for the first resolution (boxed: only such calls pay for it).
struct Resolving<S, C, Req> {
    balancer: Balancer<S, C>,
    req: Req,
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Counts a call in flight to an endpoint until dropped.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// An endpoint's response, marked with the endpoint that served it.
    struct Served<F> {
        #[pin]
        inner: F,
        served_by: Option<ServedBy>,
        in_flight: Option<InFlight>,
        cut: CutReport,
    }
}

/// Tells a per-try timeout that cuts this attempt which endpoint it was on (see
/// `deadline::cut`); disarmed once the endpoint answers.
struct CutReport {
    endpoint: Option<SocketAddr>,
}

impl Drop for CutReport {
    fn drop(&mut self) {
        if let Some(endpoint) = self.endpoint {
            crate::deadline::cut::cut_at(endpoint);
        }
    }
}

impl<F, R, E> Future for Served<F>
where
    F: Future<Output = Result<R, E>>,
    R: BalanceResponse,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        this.cut.endpoint = None;
        let mut res = match result {
            Ok(res) => res,
            Err(error) => {
                let error: BoxError = error.into();
                // An endpoint unfit for the request (a failed TLS handshake): say which one
                // and how many others were usable, so that a retry goes only elsewhere.
                return Poll::Ready(Err(match *this.served_by {
                    Some(served_by) if crate::classify::rejects_endpoint(error.as_ref()) => {
                        Box::new(crate::classify::RejectedAt {
                            served_by,
                            source: error,
                        })
                    }
                    _ => error,
                }));
            }
        };
        if let Some(served_by) = *this.served_by {
            res.record_served_by(served_by);
        }
        Poll::Ready(Ok(res))
    }
}

pin_project! {
    /// The response future of a [`Balancer`].
    pub struct BalanceFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: BalanceState<S, Req, C>,
    }
}

pin_project! {
    #[project = BalanceStateProj]
    enum BalanceState<S, Req, C>
    where
        S: Service<Req>,
    {
        Resolving {
            waiting: Option<Box<Resolving<S, C, Req>>>,
        },
        Picked {
            #[pin]
            inner: BreakerFuture<Served<Oneshot<S, Req>>, C>,
        },
    }
}

impl<S, C, Req> Future for BalanceFuture<S, Req, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: BalanceResponse + BreakerResponse<C>,
    C: Classify<S::Response> + Clone,
    Req: BalanceRequest,
{
    type Output = Result<<S::Response as BreakerResponse<C>>::Output, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                BalanceStateProj::Resolving { waiting } => {
                    let w = waiting.as_mut().expect("polled after completion");
                    ready!(w.wait.as_mut().poll(cx));
                    let w = waiting.take().expect("checked above");
                    let next = w.balancer.dispatch_or_wait(w.req);
                    state.set(next.state);
                }
                BalanceStateProj::Picked { inner } => return inner.poll(cx),
            }
        }
    }
}

/// What the balancer reads from a request: the endpoint a retry asks to avoid
/// ([`AvoidEndpoint`], put there by the retry layer), and how long the attempt has.
pub trait BalanceRequest {
    /// The endpoint this attempt should not go to, when another is usable.
    fn avoid_endpoint(&self) -> Option<SocketAddr>;

    /// Endpoints this call must never go to: they rejected it before it was sent
    /// ([`RejectedEndpoints`](crate::retry::RejectedEndpoints), put there by the retry layer).
    /// Default: none.
    fn rejected_endpoints(&self) -> &[SocketAddr] {
        &[]
    }

    /// How long this attempt has (its per-try timeout, or what is left of its deadline), if
    /// known: the endpoint's breaker then counts a timeout only if that was at least its
    /// timeout floor. `None` (the default): every timeout counts.
    fn attempt_budget(&self) -> Option<Duration> {
        None
    }

    /// Whether the call waits for a usable endpoint instead of failing when none is
    /// ([`WaitForReady`]). Default: no.
    fn wait_for_ready(&self) -> bool {
        false
    }
}

/// What the balancer writes on a response: the endpoint that served it ([`ServedBy`]).
pub trait BalanceResponse {
    /// Records the endpoint that served this response.
    fn record_served_by(&mut self, served_by: ServedBy);
}

#[cfg(feature = "http")]
impl<B> BalanceRequest for http::Request<B> {
    fn avoid_endpoint(&self) -> Option<SocketAddr> {
        self.extensions().get::<AvoidEndpoint>().map(|a| a.0)
    }

    fn rejected_endpoints(&self) -> &[SocketAddr] {
        self.extensions()
            .get::<crate::retry::RejectedEndpoints>()
            .map_or(&[], |r| r.0.as_slice())
    }

    fn wait_for_ready(&self) -> bool {
        self.extensions().get::<WaitForReady>().is_some()
    }

    /// What the attempt was given, below an [`AttemptLayer`](crate::deadline::AttemptLayer)
    /// (its deadline's budget); else what is left of the call's deadline now.
    fn attempt_budget(&self) -> Option<Duration> {
        let deadline = self.extensions().get::<Deadline>()?;
        Some(if deadline.is_attempt() {
            deadline.budget()
        } else {
            deadline.remaining()
        })
    }
}

#[cfg(feature = "http")]
impl<B> BalanceResponse for http::Response<B> {
    fn record_served_by(&mut self, served_by: ServedBy) {
        self.extensions_mut().insert(served_by);
    }
}
