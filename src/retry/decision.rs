//! The retry decision, as a pure function of what happened, so every rule is testable alone.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::policy::{Observed, Request, Retryable};
use super::{Backoff, RetryBudget};
use crate::classify::{Class, Kind, ServerHint};

/// Why the retry layer stopped retrying (or did not start).
///
/// Recorded in the extensions of a returned response ([`RetryStopped`]), in the error of a failed
/// call ([`Error::RetryRefused`](crate::Error::RetryRefused) and friends) and in a `tracing`
/// event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryStop {
    /// The outcome is not worth retrying (a success, a client error, a status or code the route
    /// does not retry, a spent deadline, no endpoint).
    NotRetryable,
    /// The response had begun — its headers arrived — so the call is committed and goes to the
    /// caller as it is (gRFC A6's commit rule for gRPC).
    Committed,
    /// The server asked not to retry (a negative or unparsable gRPC pushback).
    ServerAskedNotToRetry,
    /// The request is not safe to repeat: a non-idempotent HTTP method without an idempotency
    /// key (for gRPC: a code outside the method's retryable codes), and it may have reached the
    /// server.
    NotSafeToRepeat,
    /// The request's body outgrew the replay buffer, so it cannot be sent again.
    BodyNotReplayable,
    /// Every allowed attempt was made.
    AttemptsExhausted,
    /// The server is overloaded and gave no delay hint; retrying would deepen the overload.
    OverloadWithoutHint,
    /// The endpoint is unavailable, gave no delay hint, and no other endpoint can take the retry.
    NoOtherEndpoint,
    /// The endpoint proved unfit for the request before it was sent (its TLS certificate, a
    /// fatal alert, no common protocol: [`EndpointRejected`](crate::classify::EndpointRejected))
    /// and no other endpoint is usable; the same endpoint would reject it again.
    EndpointRejected,
    /// The backoff (or the server's delay hint) does not fit in the time left before the deadline.
    DeadlineTooShort {
        /// The delay the retry would have needed.
        delay: Duration,
        /// The time that was left.
        remaining: Duration,
    },
    /// The retry budget refused another retry.
    BudgetExhausted,
    /// A keyed request's first run was still going after the most polls a call makes
    /// ([`MAX_CONFLICT_POLLS`]).
    PollsExhausted,
}

impl fmt::Display for RetryStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryStop::NotRetryable => f.write_str("the outcome is not retryable"),
            RetryStop::Committed => f.write_str(
                "the response had begun (its headers arrived), so the call is committed",
            ),
            RetryStop::ServerAskedNotToRetry => f.write_str("the server asked not to retry"),
            RetryStop::NotSafeToRepeat => f.write_str(
                "the request is not safe to repeat (non-idempotent method without an idempotency \
                 key) and may have reached the server",
            ),
            RetryStop::BodyNotReplayable => f.write_str(
                "the request body outgrew the replay buffer, so it cannot be sent again",
            ),
            RetryStop::AttemptsExhausted => f.write_str("every allowed attempt was made"),
            RetryStop::OverloadWithoutHint => f.write_str(
                "the server is overloaded and sent no delay hint; retrying would deepen the \
                 overload",
            ),
            RetryStop::NoOtherEndpoint => f.write_str(
                "the endpoint is unavailable, sent no delay hint, and no other endpoint can take \
                 the retry",
            ),
            RetryStop::EndpointRejected => f.write_str(
                "the endpoint rejected the connection before the request was sent (a failed TLS \
                 handshake; see the cause) and no other endpoint is usable",
            ),
            RetryStop::DeadlineTooShort { delay, remaining } => write!(
                f,
                "the retry would wait {delay:?} but only {remaining:?} is left before the deadline"
            ),
            RetryStop::BudgetExhausted => f.write_str(
                "the retry budget is exhausted: retries already added their share of load",
            ),
            RetryStop::PollsExhausted => write!(
                f,
                "the first request with this idempotency key was still running after \
                 {MAX_CONFLICT_POLLS} polls"
            ),
        }
    }
}

/// Put in the extensions of a response returned after retrying stopped on it (a final 503, say):
/// why it stopped and how many attempts were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryStopped {
    /// Why retrying stopped.
    pub reason: RetryStop,
    /// Requests sent, the first included: attempts and polls of a conflict (transparent
    /// retries of never-sent requests excluded). With polls it may exceed `max_attempts`.
    pub attempts: u32,
}

/// Every [`RetryStop`]'s metric label, in `RetryStop::index` order.
pub(crate) const STOP_LABELS: [&str; 12] = [
    "not_retryable",
    "committed",
    "server_asked_not_to_retry",
    "not_safe_to_repeat",
    "body_not_replayable",
    "attempts_exhausted",
    "overload_without_hint",
    "no_other_endpoint",
    "endpoint_rejected",
    "deadline_too_short",
    "budget_exhausted",
    "polls_exhausted",
];

impl RetryStop {
    /// The reason as a metric label (`snake_case`, a fixed list: the `reason` of
    /// `stanchion.retry.stopped`).
    pub fn label(&self) -> &'static str {
        STOP_LABELS[self.index()]
    }

    /// The reason's position in [`STOP_LABELS`].
    pub(crate) fn index(&self) -> usize {
        match self {
            RetryStop::NotRetryable => 0,
            RetryStop::Committed => 1,
            RetryStop::ServerAskedNotToRetry => 2,
            RetryStop::NotSafeToRepeat => 3,
            RetryStop::BodyNotReplayable => 4,
            RetryStop::AttemptsExhausted => 5,
            RetryStop::OverloadWithoutHint => 6,
            RetryStop::NoOtherEndpoint => 7,
            RetryStop::EndpointRejected => 8,
            RetryStop::DeadlineTooShort { .. } => 9,
            RetryStop::BudgetExhausted => 10,
            RetryStop::PollsExhausted => 11,
        }
    }
}

/// Which endpoint served an attempt. A balancer puts it in response extensions, so that the
/// retry layer can send a retry of an unavailable endpoint's answer elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedBy {
    /// The endpoint that answered.
    pub endpoint: SocketAddr,
    /// How many other endpoints were usable when it was picked.
    pub alternatives: usize,
}

/// Put in a retry's extensions by the retry layer: the balancer should pick another endpoint than
/// this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvoidEndpoint(pub SocketAddr);

/// Put in a retry's extensions by the retry layer: the endpoints that rejected this call before
/// it was sent ([`EndpointRejected`](crate::classify::EndpointRejected): a failed TLS
/// handshake). The balancer never picks them again for this call — not even in panic mode, nor
/// when they are all that is left (the call then fails with
/// [`NoEndpointsReason::AllRejected`](crate::error::NoEndpointsReason::AllRejected)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RejectedEndpoints(pub Vec<SocketAddr>);

/// What to do with a retryable 503 / UNAVAILABLE that came without a delay hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum UnavailablePolicy {
    /// Retry only on a different endpoint, when there is one (default: a draining instance
    /// answers 503; another one can serve).
    OtherEndpoint,
    /// Retry on any endpoint.
    AnyEndpoint,
    /// Do not retry.
    Never,
}

/// The rules the decision applies.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) budget: RetryBudget,
    pub(crate) retry_overload_without_hint: bool,
    pub(crate) unavailable: UnavailablePolicy,
    pub(crate) retryable: Retryable,
}

/// What happened in one attempt, as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) class: Class,
    pub(crate) observed: Observed,
    /// Who answered, if a balancer said.
    pub(crate) served_by: Option<ServedBy>,
}

/// The state of the logical call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallState {
    /// Attempts made so far (transparent retries and conflict polls excluded).
    pub(crate) attempts: u32,
    /// Polls of a keyed request's conflict so far.
    pub(crate) polls: u32,
    /// How long the last poll took to be answered, if one was sent.
    pub(crate) poll_took: Option<Duration>,
    pub(crate) transparent_used: bool,
    /// An idempotent method, or an idempotency key.
    pub(crate) safe_to_repeat: bool,
    /// A gRPC call (judged by its code and the method's codes).
    pub(crate) grpc: bool,
    pub(crate) replayable: bool,
    pub(crate) remaining: Option<Duration>,
    pub(crate) previous_delay: Option<Duration>,
}

/// What kind of send another one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// A transparent retry of a never-sent request: no attempt used, no budget token.
    Transparent,
    /// A retry: one of the attempts, one budget token.
    Attempt,
    /// A poll of a keyed request whose first run is still going: no attempt used; one budget
    /// token for all of a call's polls.
    Poll,
}

/// The decision after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send the request again after `delay`.
    Retry {
        delay: Duration,
        kind: Resend,
        avoid: Option<SocketAddr>,
    },
    /// Stop and return this outcome.
    Stop(RetryStop),
}

/// The most polls of a conflict one call makes, whatever its deadline: a safety net for calls
/// with no deadline at all (a deadline or the budget ends them long before).
pub const MAX_CONFLICT_POLLS: u32 = 100;

impl Rules {
    /// The decision, in the documented order; the budget token is taken last, so a refusal for any
    /// other reason never spends one.
    pub(crate) fn decide(&self, outcome: Outcome, call: CallState) -> Decision {
        let class = outcome.class;
        match outcome.observed {
            Observed::Committed => return Decision::Stop(RetryStop::Committed),
            Observed::Final => return Decision::Stop(RetryStop::NotRetryable),
            Observed::Response | Observed::Error if class.kind() == Kind::Success => {
                return Decision::Stop(RetryStop::NotRetryable);
            }
            _ => {}
        }
        // An endpoint unfit for the request (its TLS identity, its protocols): only another
        // endpoint, never this one again.
        let elsewhere = if class.needs_other_endpoint() {
            match outcome.served_by {
                Some(served) if served.alternatives > 0 => Some(served.endpoint),
                _ => return Decision::Stop(RetryStop::EndpointRejected),
            }
        } else {
            None
        };
        // A request that never reached the server: once, at once, for free (gRPC A6).
        if class.is_never_sent() && !call.transparent_used && call.replayable {
            if call.remaining.is_some_and(|r| r.is_zero()) {
                return Decision::Stop(RetryStop::DeadlineTooShort {
                    delay: Duration::ZERO,
                    remaining: Duration::ZERO,
                });
            }
            return Decision::Retry {
                delay: Duration::ZERO,
                kind: Resend::Transparent,
                avoid: elsewhere,
            };
        }
        if outcome.observed == Observed::Conflict {
            match class.hint() {
                ServerHint::DoNotRetry => return Decision::Stop(RetryStop::ServerAskedNotToRetry),
                // The server says when the first run may be over: poll.
                ServerHint::RetryAfter(_) => return self.poll(class, call),
                // No hint: a keyed request's 409 still means "in progress" (the Idempotency-Key
                // draft), from a server that does not say for how long — an ordinary retry,
                // counted against the attempts. (A stored 409 replayed for the key is not a
                // conflict at all: `RetryResponse::is_conflict`.)
                ServerHint::None => {}
            }
        }
        // 1–2. Worth retrying, by the route's statuses or codes, and safe to repeat?
        let request = Request {
            grpc: call.grpc,
            method_safe: call.safe_to_repeat,
        };
        let refusal = self.retryable.refusal(&class, outcome.observed, request);
        // A failure the route would retry (were the request safe to repeat): a throttling
        // budget (gRFC A6) loses a token, whether or not a retry follows. A route that makes
        // one attempt retries nothing, so none of its failures count (as a gRPC method
        // without a `retryPolicy`).
        // A server's "do not retry" (a negative `grpc-retry-pushback-ms`) on a failure the
        // route would retry counts too (A6, as grpc-go counts it).
        let would_retry =
            |refusal: Option<RetryStop>| matches!(refusal, None | Some(RetryStop::NotSafeToRepeat));
        let counts = match refusal {
            Some(RetryStop::ServerAskedNotToRetry) => would_retry(self.retryable.refusal(
                &class.with_hint(ServerHint::None),
                outcome.observed,
                request,
            )),
            other => would_retry(other),
        };
        if self.max_attempts > 1 && counts && outcome.observed != Observed::Conflict {
            self.budget.failed();
        }
        if let Some(stop) = refusal {
            return Decision::Stop(stop);
        }
        if !call.replayable {
            return Decision::Stop(RetryStop::BodyNotReplayable);
        }
        // 3. Attempts left?
        if call.attempts >= self.max_attempts {
            return Decision::Stop(RetryStop::AttemptsExhausted);
        }
        // 4. Overload and unavailability without a hint.
        let hint = class.hint().delay();
        let mut avoid = elsewhere;
        if hint.is_none() {
            match class.kind() {
                Kind::Overload if !self.retry_overload_without_hint => {
                    return Decision::Stop(RetryStop::OverloadWithoutHint);
                }
                Kind::Unavailable => match self.unavailable {
                    UnavailablePolicy::Never => return Decision::Stop(RetryStop::NoOtherEndpoint),
                    UnavailablePolicy::AnyEndpoint => {}
                    // An endpoint answered "unavailable" (it may be draining): only another one.
                    UnavailablePolicy::OtherEndpoint if outcome.observed == Observed::Response => {
                        match outcome.served_by {
                            Some(served) if served.alternatives > 0 => {
                                avoid = Some(served.endpoint);
                            }
                            _ => return Decision::Stop(RetryStop::NoOtherEndpoint),
                        }
                    }
                    // An error: no endpoint is known to be draining, so any endpoint may serve.
                    UnavailablePolicy::OtherEndpoint => {}
                },
                _ => {}
            }
        }
        // 5. The backoff, or the server's hint if longer, must fit in what is left.
        let backoff = self
            .backoff
            .delay(call.attempts.saturating_sub(1), call.previous_delay);
        let delay = hint.map_or(backoff, |h| h.max(backoff));
        if let Some(remaining) = call.remaining
            && delay >= remaining
        {
            return Decision::Stop(RetryStop::DeadlineTooShort { delay, remaining });
        }
        // 6. Last, a token from the budget.
        if !self.budget.try_withdraw() {
            return Decision::Stop(RetryStop::BudgetExhausted);
        }
        Decision::Retry {
            delay,
            kind: Resend::Attempt,
            avoid,
        }
    }

    /// A keyed request met the first request with its key still running (a 409, a gRPC
    /// ABORTED): poll with backoff, each wait at most the server's hint (the first request's
    /// lease, an upper bound), within the deadline. Polls use no attempt — attempts are for
    /// failures — and one budget token in all.
    fn poll(&self, class: Class, call: CallState) -> Decision {
        if !call.replayable {
            return Decision::Stop(RetryStop::BodyNotReplayable);
        }
        if call.polls >= MAX_CONFLICT_POLLS {
            return Decision::Stop(RetryStop::PollsExhausted);
        }
        let backoff = self.backoff.delay(call.polls, call.previous_delay);
        // At most the hint (an upper bound on when the first run ends), and at least the
        // backoff's base: a zero hint (`Retry-After: 0`, a date already past) must not turn
        // into back-to-back polls.
        let delay = class
            .hint()
            .delay()
            .map_or(backoff, |hint| backoff.min(hint))
            .max(self.backoff.base());
        // The poll's answer must be able to arrive in time too: judged by the last one's round
        // trip, with room for it to be twice as slow. A poll that cannot would end the call in
        // the deadline error; stopping now returns the conflict, and why.
        let needs = delay + call.poll_took.unwrap_or_default() * 2;
        if let Some(remaining) = call.remaining
            && needs >= remaining
        {
            return Decision::Stop(RetryStop::DeadlineTooShort {
                delay: needs,
                remaining,
            });
        }
        if call.polls == 0 && !self.budget.try_withdraw() {
            return Decision::Stop(RetryStop::BudgetExhausted);
        }
        Decision::Retry {
            delay,
            kind: Resend::Poll,
            avoid: None,
        }
    }
}

#[cfg(all(test, any(feature = "hyper", feature = "tonic")))]
#[path = "decision_tests.rs"]
mod tests;
