//! The retry layer's response future: each attempt's outcome classified, the decision taken
//! (retry, with which backoff and where; or stop, and why), and the call's answer built.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep};
use tower::Service;
use tower::util::Oneshot;

use super::decision::{CallState, Decision, Outcome, Resend};
use super::layer::Policy;
use super::policy::Observed;
use super::{RetryRequest, RetryResponse, RetryStop, RetryStopped};
use crate::classify::{Class, Classify, Kind, Verdict};
use crate::error::{BoxError, Error};

pin_project! {
    /// The response future of [`Retry`].
    pub struct RetryFuture<S, Req, C>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future, Oneshot<S, Req>, Req>,
        service: S,
        policy: Arc<Policy<C>>,
        // A copy of the request, for the next attempt.
        backup: Option<Req>,
        // Attempts made (transparent retries and conflict polls excluded).
        attempts: u32,
        // Polls of a keyed request's conflict.
        polls: u32,
        // When the last poll went out (`None` until the first poll).
        poll_sent: Option<Instant>,
        transparent_used: bool,
        safe: bool,
        grpc: bool,
        // A 409 means "the first attempt with this idempotency key is still running".
        retries_conflicts: bool,
        previous_delay: Option<Duration>,
        // Endpoints that rejected this call before it was sent (a failed TLS handshake): the
        // retries never go to them. Empty (no allocation) unless one did.
        rejected: Vec<std::net::SocketAddr>,
        // When the call started (feature `metrics`; nothing without it).
        started: crate::metrics::CallStart,
        // The call's spans, boxed, only when a subscriber wants them: `None` (one word in the
        // future, nothing allocated) otherwise.
        spans: Option<Box<super::spans::CallSpans>>,
    }
}

impl<S, Req, C> RetryFuture<S, Req, C>
where
    S: Service<Req>,
    Req: RetryRequest,
{
    /// Sends the first attempt of a call through `ready` (a service made ready) and returns the
    /// future that retries it.
    pub(super) fn start(mut ready: S, req: Req, policy: Arc<Policy<C>>) -> Self {
        let safe = req.is_safe_to_repeat();
        let grpc = req.is_grpc();
        let retries_conflicts = req.retries_conflicts();
        let backup = req.try_clone();
        // One clock read for the call's start and what was left of its deadline then.
        let started = crate::metrics::CallStart::now();
        #[cfg(feature = "metrics")]
        policy
            .metrics
            .sending(req.deadline().map(|d| started.remaining(d)));
        let spans = super::spans::CallSpans::open(&policy.route, req.deadline());
        let first = match &spans {
            Some(spans) => spans.attempt.in_scope(|| ready.call(req)),
            None => ready.call(req),
        };
        RetryFuture {
            state: State::First { future: first },
            service: ready,
            policy,
            backup,
            attempts: 1,
            polls: 0,
            poll_sent: None,
            transparent_used: false,
            safe,
            grpc,
            retries_conflicts,
            previous_delay: None,
            rejected: Vec::new(),
            started,
            spans,
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, O, R> {
        First { #[pin] future: F },
        Retrying { #[pin] future: O },
        // Boxed: only retries sleep, and the timer would otherwise double the future's size.
        Sleeping { sleep: Pin<Box<Sleep>>, next: Option<R> },
    }
}

impl<S, Req, C> Future for RetryFuture<S, Req, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    S::Response: RetryResponse,
    Req: RetryRequest,
    C: Classify<S::Response>,
{
    type Output = Result<S::Response, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // The call's span is current while the layer decides (its events belong to it); a
        // clone, because the attempt's span changes below. Nothing without a subscriber.
        let call_span = this.spans.as_ref().map(|s| s.call.clone());
        let _call = call_span.as_ref().map(tracing::Span::enter);
        loop {
            let result: Result<S::Response, BoxError> = match this.state.as_mut().project() {
                StateProj::First { future } => {
                    let _attempt = this.spans.as_ref().map(|s| s.attempt.enter());
                    ready!(future.poll(cx)).map_err(Into::into)
                }
                StateProj::Retrying { future } => {
                    let _attempt = this.spans.as_ref().map(|s| s.attempt.enter());
                    ready!(future.poll(cx)).map_err(Into::into)
                }
                StateProj::Sleeping { sleep, next } => {
                    ready!(sleep.as_mut().poll(cx));
                    let next = next.take().expect("a request waits out the backoff");
                    #[cfg(feature = "metrics")]
                    this.policy
                        .metrics
                        .sending(next.deadline().map(|d| d.remaining()));
                    if this.poll_sent.is_some() {
                        *this.poll_sent = Some(Instant::now());
                    }
                    if let Some(spans) = this.spans.as_mut() {
                        spans.sending();
                    }
                    this.state.set(State::Retrying {
                        future: Oneshot::new(this.service.clone(), next),
                    });
                    continue;
                }
            };
            // How long the last poll of a conflict took to be answered (a round trip).
            let poll_took = this.poll_sent.map(|sent| sent.elapsed());
            let classifier = &this.policy.classifier;
            let (class, observed, served_by) = match &result {
                // The first request with this key still runs: the class carries the server's
                // hint (`Retry-After`, pushback) for the poll.
                Ok(res) if *this.retries_conflicts && res.is_conflict() => {
                    let class = match classifier.classify_response(res) {
                        Verdict::Done(class) => class,
                        Verdict::AtEndOfStream(_) => Class::new(Kind::ClientError),
                    };
                    (class, Observed::Conflict, res.served_by())
                }
                Ok(res) => match classifier.classify_response(res) {
                    Verdict::Done(class) => (class, Observed::Response, res.served_by()),
                    // The verdict is in the trailers: the response has begun, so the call is
                    // committed (a gRPC status after the headers, per gRPC A6). The outcome is
                    // not known yet; the decision hands the response over as it is.
                    Verdict::AtEndOfStream(_) => {
                        (Class::success(), Observed::Committed, res.served_by())
                    }
                },
                Err(err) => {
                    let observed = if ends_the_call(err.as_ref()) {
                        Observed::Final
                    } else {
                        Observed::Error
                    };
                    // An endpoint unfit for the request (its TLS identity): only another
                    // endpoint may be tried, whatever a classifier of the user's own says; the
                    // balancer said which one it was and how many others were usable.
                    let rejected = crate::classify::rejects_endpoint(err.as_ref());
                    let class = classifier.classify_error(err.as_ref());
                    let class = if rejected {
                        class.with_never_sent(true).with_other_endpoint(true)
                    } else {
                        class
                    };
                    let served_by = if rejected {
                        crate::classify::rejected_at(err.as_ref())
                    } else {
                        None
                    };
                    (class, observed, served_by)
                }
            };
            let outcome = (observed != Observed::Committed).then(|| class.kind().index());
            this.policy.metrics.attempt(outcome);
            let label = super::spans::outcome_label(observed != Observed::Committed, class.kind());
            if let Some(spans) = this.spans.as_mut() {
                spans.attempt_done(
                    label,
                    served_by.map(|s| s.endpoint).or_else(|| match &result {
                        Err(err) => cut_endpoint(err.as_ref()),
                        Ok(_) => None,
                    }),
                );
            }
            if class.kind() == Kind::Success && observed == Observed::Response {
                this.policy.rules.budget.succeeded();
                this.policy.metrics.call(outcome, *this.started);
                if let Some(spans) = this.spans {
                    spans.call_done(label);
                }
                return Poll::Ready(result.map_err(Error::from_inner));
            }
            if observed == Observed::Committed {
                // Its status comes in the trailers; the server took the call, and it cannot be
                // retried: a throttling budget counts it a success now (see `RetryBudget::
                // throttling`).
                this.policy.rules.budget.succeeded();
            }
            let call = CallState {
                attempts: *this.attempts,
                polls: *this.polls,
                poll_took,
                transparent_used: *this.transparent_used,
                safe_to_repeat: *this.safe,
                grpc: *this.grpc,
                replayable: this.backup.as_ref().is_some_and(|b| b.is_replayable()),
                remaining: this
                    .backup
                    .as_ref()
                    .and_then(|b| b.deadline())
                    .map(|d| d.remaining()),
                previous_delay: *this.previous_delay,
            };
            match this.policy.rules.decide(
                Outcome {
                    class,
                    observed,
                    served_by,
                },
                call,
            ) {
                Decision::Retry { delay, kind, avoid } => {
                    // An attempt cut by its per-try timeout: retry on another endpoint if one is
                    // usable (the balancer decides), like Envoy's previous-hosts predicate.
                    let avoid = avoid.or_else(|| match &result {
                        Err(err) => cut_endpoint(err.as_ref()),
                        Ok(_) => None,
                    });
                    this.policy.metrics.scheduled(match kind {
                        Resend::Attempt => 0,
                        Resend::Transparent => 1,
                        Resend::Poll => 2,
                    });
                    if let Some(spans) = this.spans.as_mut() {
                        spans.next_attempt(match kind {
                            Resend::Attempt => "attempt",
                            Resend::Transparent => "transparent",
                            Resend::Poll => "poll",
                        });
                    }
                    match kind {
                        Resend::Transparent => *this.transparent_used = true,
                        Resend::Attempt => {
                            *this.attempts += 1;
                            *this.previous_delay = Some(delay);
                        }
                        Resend::Poll => {
                            *this.polls += 1;
                            *this.previous_delay = Some(delay);
                            // Timed from when it goes out (after its backoff).
                            *this.poll_sent = Some(Instant::now());
                        }
                    }
                    let mut next = this
                        .backup
                        .take()
                        .expect("a retry is only decided with a replayable copy");
                    *this.backup = next.try_clone();
                    let sends = *this.attempts + *this.polls;
                    next.prepare_retry(sends, avoid);
                    if class.needs_other_endpoint()
                        && let Some(served) = served_by
                    {
                        this.rejected.push(served.endpoint);
                    }
                    if !this.rejected.is_empty() {
                        next.exclude_endpoints(this.rejected);
                    }

                    tracing::debug!(
                        attempt = sends,
                        ?delay,
                        ?kind,
                        outcome = ?class.kind(),
                        "retry scheduled"
                    );
                    if delay.is_zero() {
                        #[cfg(feature = "metrics")]
                        this.policy
                            .metrics
                            .sending(next.deadline().map(|d| d.remaining()));
                        if let Some(spans) = this.spans.as_mut() {
                            spans.sending();
                        }
                        this.state.set(State::Retrying {
                            future: Oneshot::new(this.service.clone(), next),
                        });
                    } else {
                        this.state.set(State::Sleeping {
                            sleep: Box::pin(sleep(delay)),
                            next: Some(next),
                        });
                    }
                }
                Decision::Stop(reason) => {
                    // A committed response's outcome is not known yet; any other one that is
                    // not a success (a 5xx, a 429, a 409…) says why retrying stopped.
                    let settled = observed != Observed::Committed && class.kind() != Kind::Success;
                    if settled || result.is_err() {
                        this.policy.metrics.stopped(&reason);
                    }
                    let sends = *this.attempts + *this.polls;
                    this.policy.metrics.call(outcome, *this.started);
                    if let Some(spans) = this.spans {
                        spans.call_done(label);
                    }
                    if let Err(err) = &result
                        && ran_out(err.as_ref())
                    {
                        this.policy.metrics.deadline_exceeded();
                    }
                    return Poll::Ready(stop(result, settled, reason, sends));
                }
            }
        }
    }
}

/// The caller's answer once retrying stops: the response with the reason in its extensions, or
/// an error that says why. `settled`: the outcome is known and is not a success.
fn stop<Res: RetryResponse>(
    result: Result<Res, BoxError>,
    settled: bool,
    reason: RetryStop,
    attempts: u32,
) -> Result<Res, Error> {
    if settled || result.is_err() {
        tracing::debug!(%reason, attempts, "retrying stopped");
    }
    match result {
        Ok(mut res) => {
            if settled {
                res.record_stop(RetryStopped { reason, attempts });
            }
            if attempts > 1 {
                res.record_previous_attempts(attempts - 1);
            }
            Ok(res)
        }
        Err(last) => Err(match reason {
            // Not worth retrying, or nothing was configured to be retried: the error is the answer.
            RetryStop::NotRetryable => Error::from_inner(last),
            RetryStop::AttemptsExhausted if attempts == 1 => Error::from_inner(last),
            RetryStop::AttemptsExhausted => Error::RetriesExhausted { attempts, last },
            RetryStop::BudgetExhausted => Error::RetryBudgetExhausted { attempts, last },
            reason => Error::RetryRefused {
                reason,
                attempts,
                last,
            },
        }),
    }
}

/// Whether an error from below ends the call whatever the policy: the deadline ran out, no
/// endpoint can take the call, the bulkhead refused it, the request itself is invalid.
fn ends_the_call(err: &(dyn std::error::Error + 'static)) -> bool {
    // An https request refused by a plaintext pool, or for a host its TLS connections were not
    // verified for: it would be refused again, anywhere.
    if crate::classify::chain(err).any(crate::pool::is_own_refusal) {
        return true;
    }
    crate::classify::chain(err)
        .filter_map(|e| e.downcast_ref::<Error>())
        .any(|own| {
            matches!(
                own,
                Error::DeadlineExceeded { .. }
                    | Error::NoEndpoints { .. }
                    | Error::BulkheadFull { .. }
                    | Error::BulkheadTimeout { .. }
                    | Error::InvalidIdempotencyKey { .. }
                    | Error::Config(_)
            )
        })
}

/// Whether the call's deadline ran out (not an attempt's timeout).
fn ran_out(err: &(dyn std::error::Error + 'static)) -> bool {
    crate::classify::chain(err)
        .filter_map(|e| e.downcast_ref::<Error>())
        .any(|own| matches!(own, Error::DeadlineExceeded { .. }))
}

/// The endpoint of an attempt cut by its per-try timeout, if a balancer said.
fn cut_endpoint(err: &(dyn std::error::Error + 'static)) -> Option<std::net::SocketAddr> {
    match err.downcast_ref::<Error>()? {
        Error::AttemptTimedOut { endpoint, .. } => *endpoint,
        _ => None,
    }
}
