//! The client-side budget of a logical call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::util::Oneshot;
use tower::{Layer, Service};

use super::{DEFAULT_BUDGET, Deadline, DeadlineCarrier, MAX_BUDGET, current};
use crate::classify::chain_has_transport_timeout;
use crate::error::{BoxError, ConfigError, Error, check_duration};

/// Sets one total budget per logical call. See the [module docs](super).
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    budget: Duration,
}

impl DeadlineLayer {
    /// A layer giving each call `budget` (more than zero, at most [`MAX_BUDGET`]).
    pub fn new(budget: Duration) -> Result<Self, ConfigError> {
        Ok(DeadlineLayer {
            budget: check_duration("budget", budget, MAX_BUDGET)?,
        })
    }

    /// The budget each call gets.
    pub fn budget(&self) -> Duration {
        self.budget
    }
}

/// A 30 s budget ([`DEFAULT_BUDGET`]).
impl Default for DeadlineLayer {
    fn default() -> Self {
        DeadlineLayer {
            budget: DEFAULT_BUDGET,
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService {
            inner,
            budget: self.budget,
        }
    }
}

/// The service of [`DeadlineLayer`].
///
/// Always ready: it clones the inner service into each call and waits for its readiness inside
/// the response future, so that wait is charged to the budget (hence `S: Clone`).
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    budget: Duration,
}

impl<S> DeadlineService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// A response whose body the deadline layer can bound, so the budget covers reading it too.
///
/// Implemented for `http::Response<B>` (its body becomes a
/// [`DeadlineBody`](super::DeadlineBody), feature `http`). Implement it for your own response
/// type (returning the response as it is, if it has no body to bound).
pub trait DeadlineResponse: Sized {
    /// The response handed to the caller.
    type Output;

    /// Bounds what is left of the response — its body — by `deadline`.
    fn bound(self, deadline: Deadline) -> Self::Output;
}

impl<S, Req> Service<Req> for DeadlineService<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: DeadlineResponse,
    Req: DeadlineCarrier,
{
    type Response = <S::Response as DeadlineResponse>::Output;
    type Error = Error;
    type Future = DeadlineFuture<Oneshot<S, Req>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let now = Instant::now();
        let own = Deadline::starting_at(now, self.budget);
        // What bounds the call, and what bounds reading its body: the same, unless the request
        // carries an attempt's deadline (this client is the transport of another's attempt) —
        // the body outlives that attempt, bounded by the other's call.
        let (mut deadline, mut body) = (own, own);
        let mut fold = |d: Deadline| {
            deadline = deadline.earliest(d);
            if let Some(call) = d.call() {
                body = body.earliest(call);
            }
        };
        let carried = req.deadline();
        // A `grpc-timeout` the caller wrote counts too — unless the request carries an
        // attempt's deadline: then an `AttemptLayer` above wrote it, from that deadline.
        if !carried.is_some_and(|d| d.is_attempt())
            && let Some(timeout) = req.caller_timeout()
        {
            fold(Deadline::starting_at(now, timeout));
        }
        if let Some(carried) = carried {
            fold(carried);
        }
        if let Some(adopted) = current() {
            fold(adopted);
        }
        req.set_deadline(deadline);
        let expiry = Expiry::of(deadline);
        let inner = if deadline.instant() <= now {
            ResponseFuture::expired(expiry)
        } else {
            ResponseFuture::racing(
                Oneshot::new(self.inner.clone(), req),
                deadline.instant(),
                expiry,
                false,
            )
        };
        DeadlineFuture { inner, body }
    }
}

pin_project! {
    /// The response future of [`DeadlineService`]: the call raced against its deadline, then
    /// the response's body bounded by the call's deadline.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: ResponseFuture<F>,
        body: Deadline,
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    T: DeadlineResponse,
{
    type Output = Result<T::Output, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(response.bound(*this.body)))
    }
}

pin_project! {
    /// The response future of [`DeadlineService`] and [`AttemptService`](super::AttemptService):
    /// the inner call raced against a timer.
    ///
    /// The timer is armed the first time the inner future is pending, so a call that completes at
    /// once never touches the timer wheel.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running {
            #[pin]
            inner: F,
            #[pin]
            timer: Timer,
            expiry: Expiry,
            // The timeout was written on the request, so the transport may enforce it itself.
            stamped: bool,
        },
        Expired {
            expiry: Expiry,
        },
    }
}

pin_project! {
    #[project = TimerProj]
    enum Timer {
        Unarmed { at: Instant },
        Armed {
            #[pin]
            sleep: Sleep,
        },
    }
}

/// What the timer running out means.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expiry {
    /// The call's deadline, set from this budget.
    Deadline(Duration),
    /// The per-try timeout of one attempt.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Attempt(Duration),
}

impl Expiry {
    /// What running out of `deadline` means: the end of the call, or of one attempt (a client
    /// called from inside an attempt of another, whose deadline it carries).
    pub(crate) fn of(deadline: Deadline) -> Expiry {
        if deadline.is_attempt() {
            Expiry::Attempt(deadline.budget())
        } else {
            Expiry::Deadline(deadline.budget())
        }
    }

    fn error(self, cut: super::cut::Cut) -> Error {
        match self {
            Expiry::Deadline(budget) => {
                tracing::debug!(?budget, "deadline exceeded");
                Error::DeadlineExceeded { budget }
            }
            Expiry::Attempt(timeout) => {
                tracing::debug!(?timeout, never_sent = cut.unsent, "attempt timed out");
                Error::AttemptTimedOut {
                    timeout,
                    endpoint: cut.endpoint,
                    never_sent: cut.unsent,
                }
            }
        }
    }
}

/// Whether `err` is a pool's checkout timing out at or after `due`: the pool bounds a checkout
/// just past the deadline it was given, so the timer of the layer above is what ran out.
fn own_wait_ran_out(err: &(dyn std::error::Error + 'static), due: Instant) -> bool {
    matches!(err.downcast_ref::<Error>(), Some(Error::PoolTimeout { .. })) && Instant::now() >= due
}

impl<F> ResponseFuture<F> {
    /// Races `inner` against a timer that fires at `at`. `stamped`: the timeout was written on
    /// the request, so a transport timeout from below means this timer's expiry.
    #[inline]
    pub(crate) fn racing(inner: F, at: Instant, expiry: Expiry, stamped: bool) -> Self {
        ResponseFuture {
            state: State::Running {
                inner,
                timer: Timer::Unarmed { at },
                expiry,
                stamped,
            },
        }
    }

    /// A call that failed before it started.
    #[inline]
    pub(crate) fn expired(expiry: Expiry) -> Self {
        ResponseFuture {
            state: State::Expired { expiry },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fired = match self.as_mut().project().state.project() {
            StateProj::Running {
                inner,
                mut timer,
                expiry,
                stamped,
            } => {
                // The response wins a tie with the timer.
                if let Poll::Ready(result) = inner.poll(cx) {
                    let due = match &*timer {
                        Timer::Unarmed { at } => *at,
                        Timer::Armed { sleep } => sleep.deadline(),
                    };
                    return Poll::Ready(result.map_err(|err| {
                        let err: BoxError = err.into();
                        if *stamped && chain_has_transport_timeout(err.as_ref()) {
                            expiry.error(super::cut::Cut::default())
                        } else if own_wait_ran_out(err.as_ref(), due) {
                            // A wait of our own below (a pool's checkout, bounded just past
                            // this timer) ended as this timer came due: what ran out is this
                            // timer's time, and the request never left.
                            expiry.error(super::cut::Cut {
                                endpoint: None,
                                unsent: true,
                            })
                        } else {
                            Error::from_inner(err)
                        }
                    }));
                }
                if let TimerProj::Unarmed { at } = timer.as_mut().project() {
                    let sleep = sleep_until(*at);
                    timer.set(Timer::Armed { sleep });
                }
                if let TimerProj::Armed { sleep } = timer.project() {
                    ready!(sleep.poll(cx));
                }
                *expiry
            }
            StateProj::Expired { expiry } => {
                return Poll::Ready(Err(expiry.error(super::cut::Cut::default())));
            }
        };
        // The timer fired — a per-try timeout or the call's deadline. Either drops the call
        // below it now, telling the layers below that it was cut (the endpoint's breaker of an
        // attempt in flight counts it as a timeout, whichever timer cut it) and learning which
        // endpoint it was on (a retry goes elsewhere).
        let cut = super::cut::cutting(|| {
            self.as_mut()
                .project()
                .state
                .set(State::Expired { expiry: fired });
        });
        Poll::Ready(Err(fired.error(cut)))
    }
}
