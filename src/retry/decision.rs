//! The retry decision, as a pure function of what happened, so every rule is testable alone.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

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
    /// The outcome is not worth retrying (a success, a client error, a non-retryable code).
    NotRetryable,
    /// The server asked not to retry (a negative or unparsable gRPC pushback).
    ServerAskedNotToRetry,
    /// The request is not safe to repeat: a non-idempotent HTTP method without an idempotency
    /// key, and it may have reached the server.
    NotSafeToRepeat,
    /// The request's body outgrew the replay buffer, so it cannot be sent again.
    BodyNotReplayable,
    /// Every allowed attempt was made.
    AttemptsExhausted,
    /// The server is overloaded and gave no delay hint; retrying would deepen the overload.
    OverloadWithoutHint,
    /// The endpoint is unavailable, gave no delay hint, and no other endpoint can take the retry.
    NoOtherEndpoint,
    /// The backoff (or the server's delay hint) does not fit in the time left before the deadline.
    DeadlineTooShort {
        /// The delay the retry would have needed.
        delay: Duration,
        /// The time that was left.
        remaining: Duration,
    },
    /// The retry budget refused another retry.
    BudgetExhausted,
}

impl fmt::Display for RetryStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryStop::NotRetryable => f.write_str("the outcome is not retryable"),
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
            RetryStop::DeadlineTooShort { delay, remaining } => write!(
                f,
                "the retry would wait {delay:?} but only {remaining:?} is left before the deadline"
            ),
            RetryStop::BudgetExhausted => f.write_str(
                "the retry budget is exhausted: retries already added their share of load",
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
    /// Attempts made, the first included (transparent retries of never-sent requests excluded).
    pub attempts: u32,
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

/// What to do with a retryable 503 / UNAVAILABLE that came without a delay hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

/// What happened in one attempt, as the decision needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) class: Class,
    /// The outcome is a response (an endpoint answered), not an error.
    pub(crate) is_response: bool,
    /// Who answered, if a balancer said.
    pub(crate) served_by: Option<ServedBy>,
}

/// The state of the logical call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallState {
    /// Attempts made so far (transparent retries excluded).
    pub(crate) attempts: u32,
    pub(crate) transparent_used: bool,
    pub(crate) safe_to_repeat: bool,
    pub(crate) replayable: bool,
    pub(crate) remaining: Option<Duration>,
    pub(crate) previous_delay: Option<Duration>,
}

/// The decision after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send the request again after `delay`.
    Retry {
        delay: Duration,
        /// A transparent retry of a never-sent request: no attempt used, no budget token.
        transparent: bool,
        avoid: Option<SocketAddr>,
    },
    /// Stop and return this outcome.
    Stop(RetryStop),
}

impl Rules {
    /// The decision, in the documented order; the budget token is taken last, so a refusal for any
    /// other reason never spends one.
    pub(crate) fn decide(&self, outcome: Outcome, call: CallState) -> Decision {
        let class = outcome.class;
        if class.kind() == Kind::Success {
            return Decision::Stop(RetryStop::NotRetryable);
        }
        // A request that never reached the server: once, at once, for free (gRPC A6).
        if class.is_never_sent()
            && class.is_retryable()
            && !call.transparent_used
            && call.replayable
        {
            if call.remaining.is_some_and(|r| r.is_zero()) {
                return Decision::Stop(RetryStop::DeadlineTooShort {
                    delay: Duration::ZERO,
                    remaining: Duration::ZERO,
                });
            }
            return Decision::Retry {
                delay: Duration::ZERO,
                transparent: true,
                avoid: None,
            };
        }
        // 1. Worth retrying?
        if class.hint() == ServerHint::DoNotRetry {
            return Decision::Stop(RetryStop::ServerAskedNotToRetry);
        }
        if !class.is_retryable() {
            return Decision::Stop(RetryStop::NotRetryable);
        }
        // 2. Safe to repeat?
        if !(class.is_never_sent() || call.safe_to_repeat) {
            return Decision::Stop(RetryStop::NotSafeToRepeat);
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
        let mut avoid = None;
        if hint.is_none() {
            match class.kind() {
                Kind::Overload if !self.retry_overload_without_hint => {
                    return Decision::Stop(RetryStop::OverloadWithoutHint);
                }
                Kind::Unavailable => match self.unavailable {
                    UnavailablePolicy::Never => return Decision::Stop(RetryStop::NoOtherEndpoint),
                    UnavailablePolicy::AnyEndpoint => {}
                    // An endpoint answered "unavailable" (it may be draining): only another one.
                    UnavailablePolicy::OtherEndpoint if outcome.is_response => {
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
            transparent: false,
            avoid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn rules() -> Rules {
        Rules {
            max_attempts: 3,
            backoff: Backoff::new(10 * MS, 100 * MS).unwrap().seed(1),
            budget: RetryBudget::default(),
            retry_overload_without_hint: false,
            unavailable: UnavailablePolicy::OtherEndpoint,
        }
    }

    fn call() -> CallState {
        CallState {
            attempts: 1,
            transparent_used: false,
            safe_to_repeat: true,
            replayable: true,
            remaining: Some(Duration::from_secs(10)),
            previous_delay: None,
        }
    }

    fn outcome(class: Class) -> Outcome {
        Outcome {
            class,
            is_response: true,
            served_by: None,
        }
    }

    fn served(alternatives: usize) -> Option<ServedBy> {
        Some(ServedBy {
            endpoint: "127.0.0.1:1".parse().unwrap(),
            alternatives,
        })
    }

    fn retryable(kind: Kind) -> Class {
        Class::new(kind).with_retryable(true)
    }

    fn stop(reason: RetryStop) -> Decision {
        Decision::Stop(reason)
    }

    fn is_retry(d: Decision) -> bool {
        matches!(d, Decision::Retry { .. })
    }

    #[test]
    fn the_rules_apply_in_order() {
        let r = rules();
        let hint = |s| ServerHint::RetryAfter(Duration::from_secs(s));
        let cases: Vec<(&str, Outcome, CallState, Decision)> = vec![
            (
                "success",
                outcome(Class::success()),
                call(),
                stop(RetryStop::NotRetryable),
            ),
            (
                "client error",
                outcome(Class::new(Kind::ClientError)),
                call(),
                stop(RetryStop::NotRetryable),
            ),
            (
                "server said no",
                outcome(retryable(Kind::Unavailable).with_hint(ServerHint::DoNotRetry)),
                call(),
                stop(RetryStop::ServerAskedNotToRetry),
            ),
            (
                "unsafe POST",
                outcome(retryable(Kind::ServerError)),
                CallState {
                    safe_to_repeat: false,
                    ..call()
                },
                stop(RetryStop::NotSafeToRepeat),
            ),
            (
                "body too big",
                outcome(retryable(Kind::ServerError)),
                CallState {
                    replayable: false,
                    ..call()
                },
                stop(RetryStop::BodyNotReplayable),
            ),
            (
                "attempts used",
                outcome(retryable(Kind::ServerError)),
                CallState {
                    attempts: 3,
                    ..call()
                },
                stop(RetryStop::AttemptsExhausted),
            ),
            (
                "429 without hint",
                outcome(retryable(Kind::Overload)),
                call(),
                stop(RetryStop::OverloadWithoutHint),
            ),
            (
                "503 without hint, one endpoint",
                Outcome {
                    served_by: served(0),
                    ..outcome(retryable(Kind::Unavailable))
                },
                call(),
                stop(RetryStop::NoOtherEndpoint),
            ),
            (
                "503 without hint, no balancer",
                outcome(retryable(Kind::Unavailable)),
                call(),
                stop(RetryStop::NoOtherEndpoint),
            ),
            (
                "hint longer than what is left",
                outcome(retryable(Kind::Unavailable).with_hint(hint(30))),
                CallState {
                    remaining: Some(Duration::from_secs(5)),
                    ..call()
                },
                stop(RetryStop::DeadlineTooShort {
                    delay: Duration::from_secs(30),
                    remaining: Duration::from_secs(5),
                }),
            ),
            (
                "hint that fits",
                outcome(retryable(Kind::Overload).with_hint(hint(1))),
                call(),
                Decision::Retry {
                    delay: Duration::from_secs(1),
                    transparent: false,
                    avoid: None,
                },
            ),
            (
                "never sent: transparent, even when unsafe and out of attempts",
                outcome(retryable(Kind::Transport).with_never_sent(true)),
                CallState {
                    safe_to_repeat: false,
                    attempts: 3,
                    ..call()
                },
                Decision::Retry {
                    delay: Duration::ZERO,
                    transparent: true,
                    avoid: None,
                },
            ),
            (
                "never sent twice: counts as usual",
                outcome(retryable(Kind::Transport).with_never_sent(true)),
                CallState {
                    transparent_used: true,
                    attempts: 3,
                    ..call()
                },
                stop(RetryStop::AttemptsExhausted),
            ),
        ];
        for (name, outcome, state, expected) in cases {
            assert_eq!(r.decide(outcome, state), expected, "{name}");
        }
    }

    #[test]
    fn unavailable_goes_to_another_endpoint() {
        let decision = rules().decide(
            Outcome {
                served_by: served(2),
                ..outcome(retryable(Kind::Unavailable))
            },
            call(),
        );
        let Decision::Retry { avoid, .. } = decision else {
            panic!("expected a retry, got {decision:?}");
        };
        assert_eq!(avoid, Some("127.0.0.1:1".parse().unwrap()));

        let mut any = rules();
        any.unavailable = UnavailablePolicy::AnyEndpoint;
        let o = Outcome {
            served_by: served(0),
            ..outcome(retryable(Kind::Unavailable))
        };
        assert!(is_retry(any.decide(o, call())));
        any.unavailable = UnavailablePolicy::Never;
        assert_eq!(any.decide(o, call()), stop(RetryStop::NoOtherEndpoint));

        // An unavailable *error* names no draining endpoint: it may be retried anywhere.
        let error = Outcome {
            is_response: false,
            ..outcome(retryable(Kind::Unavailable))
        };
        assert!(is_retry(rules().decide(error, call())));

        let mut overload = rules();
        overload.retry_overload_without_hint = true;
        assert!(is_retry(
            overload.decide(outcome(retryable(Kind::Overload)), call())
        ));
    }

    #[test]
    fn refusals_never_spend_a_budget_token() {
        let mut r = rules();
        r.budget = RetryBudget::builder()
            .ratio(0.0)
            .min_per_second(1)
            .window(Duration::from_secs(1))
            .build()
            .unwrap();
        // Refused before the budget: the single token stays.
        let unsafe_call = CallState {
            safe_to_repeat: false,
            ..call()
        };
        for _ in 0..5 {
            r.decide(outcome(retryable(Kind::ServerError)), unsafe_call);
        }
        assert!(is_retry(
            r.decide(outcome(retryable(Kind::ServerError)), call())
        ));
        assert_eq!(
            r.decide(outcome(retryable(Kind::ServerError)), call()),
            stop(RetryStop::BudgetExhausted)
        );
        // Transparent retries are free.
        assert!(is_retry(r.decide(
            outcome(retryable(Kind::Transport).with_never_sent(true)),
            call()
        )));
    }

    #[test]
    fn every_reason_explains_itself() {
        let reasons = [
            RetryStop::NotRetryable,
            RetryStop::ServerAskedNotToRetry,
            RetryStop::NotSafeToRepeat,
            RetryStop::BodyNotReplayable,
            RetryStop::AttemptsExhausted,
            RetryStop::OverloadWithoutHint,
            RetryStop::NoOtherEndpoint,
            RetryStop::DeadlineTooShort {
                delay: Duration::from_secs(30),
                remaining: Duration::from_secs(5),
            },
            RetryStop::BudgetExhausted,
        ];
        let texts: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
        for (i, text) in texts.iter().enumerate() {
            assert!(text.len() > 20, "{text}");
            assert!(!texts[..i].contains(text), "duplicate: {text}");
        }
        assert!(texts[7].contains("30s") && texts[7].contains("5s"));
    }
}
