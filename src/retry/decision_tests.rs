//! The retry decision's tests: the whole table of (protocol, method policy, outcome) →
//! decision, built from the real classifiers, and the order of the rules after it.

use std::time::Duration;

use super::*;
use crate::classify::{GrpcClassifier, GrpcCode, GrpcCodes, HttpClassifier, NeverSent, ServerHint};
use crate::error::{Error, NoEndpointsReason};
use crate::retry::policy::Statuses;

const MS: Duration = Duration::from_millis(1);
const FLOOR: Duration = Duration::from_millis(100);

fn rules() -> Rules {
    Rules {
        max_attempts: 3,
        backoff: Backoff::new(10 * MS, 100 * MS).unwrap().seed(1),
        budget: RetryBudget::default(),
        retry_overload_without_hint: false,
        unavailable: UnavailablePolicy::OtherEndpoint,
        retryable: Retryable::default(),
    }
}

fn call() -> CallState {
    CallState {
        attempts: 1,
        polls: 0,
        poll_took: None,
        transparent_used: false,
        safe_to_repeat: true,
        grpc: false,
        replayable: true,
        remaining: Some(Duration::from_secs(10)),
        previous_delay: None,
    }
}

fn outcome(class: Class) -> Outcome {
    Outcome {
        class,
        observed: Observed::Response,
        served_by: None,
    }
}

fn served(alternatives: usize) -> Option<ServedBy> {
    Some(ServedBy {
        endpoint: "127.0.0.1:1".parse().unwrap(),
        alternatives,
    })
}

fn stop(reason: RetryStop) -> Decision {
    Decision::Stop(reason)
}

fn is_retry(d: Decision) -> bool {
    matches!(d, Decision::Retry { .. })
}

fn http(status: u16) -> Class {
    HttpClassifier::new().classify_status(
        http::StatusCode::from_u16(status).unwrap(),
        &http::HeaderMap::new(),
    )
}

fn grpc(code: GrpcCode) -> Class {
    GrpcClassifier::new().classify_code(code, &http::HeaderMap::new())
}

/// A decision, in one letter: `T` transparent retry, `R` retry, `P` poll, `n` not retryable,
/// `u` not safe to repeat, `c` committed, `o` overload without a hint.
fn letter(d: Decision) -> char {
    match d {
        Decision::Retry {
            kind: Resend::Transparent,
            ..
        } => 'T',
        Decision::Retry {
            kind: Resend::Poll, ..
        } => 'P',
        Decision::Retry { .. } => 'R',
        Decision::Stop(RetryStop::NotRetryable) => 'n',
        Decision::Stop(RetryStop::NotSafeToRepeat) => 'u',
        Decision::Stop(RetryStop::Committed) => 'c',
        Decision::Stop(RetryStop::OverloadWithoutHint) => 'o',
        other => panic!("not in the table's alphabet: {other:?}"),
    }
}

/// One outcome as each protocol's classifier reports it, and how the layer observed it.
struct Row {
    name: &'static str,
    http: Option<Class>,
    grpc: Class,
    observed: Observed,
    /// Decisions for: HTTP GET, HTTP POST, HTTP POST with a key, gRPC with no retryable codes,
    /// with the default (UNAVAILABLE), with {UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL}.
    decisions: &'static str,
    /// Whether it counts against the endpoint, (HTTP, gRPC), for an attempt given at least
    /// the timeout floor, and for one given less.
    counts: (bool, bool),
    counts_short: (bool, bool),
}

fn err_class(err: impl Into<crate::BoxError>) -> (Class, Class) {
    let err: crate::BoxError = err.into();
    (
        crate::classify::classify_error(err.as_ref()),
        GrpcClassifier::new().classify_grpc_error(err.as_ref()),
    )
}

fn rows() -> Vec<Row> {
    let hint = ServerHint::RetryAfter(Duration::from_secs(1));
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    let (http_reset, _) = err_class(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    let (_, grpc_reset) = err_class(h2::Error::from(h2::Reason::INTERNAL_ERROR));
    let (http_lost, grpc_lost) = err_class(reset);
    let (http_never, grpc_never) = err_class(NeverSent::new("connection refused"));
    let (http_cut, grpc_cut) = err_class(Error::AttemptTimedOut {
        timeout: Duration::from_secs(1),
        endpoint: None,
        never_sent: false,
    });
    let (http_deadline, grpc_deadline) = err_class(Error::DeadlineExceeded {
        budget: Duration::from_secs(1),
    });
    let (http_pool, grpc_pool) = err_class(Error::PoolTimeout {
        endpoint: "e".into(),
        waited: Duration::from_secs(1),
    });
    let (http_bulkhead, grpc_bulkhead) = err_class(Error::BulkheadFull {
        partition: "p".into(),
        limit: 1,
        queue: 1,
    });
    let (http_open, grpc_open) = err_class(Error::CircuitOpen {
        retry_in: Duration::ZERO,
    });
    let (http_none, grpc_none) = err_class(Error::NoEndpoints {
        reason: NoEndpointsReason::NoneResolved,
    });
    let row = |name, http, grpc, observed, decisions, counts, counts_short| Row {
        name,
        http,
        grpc,
        observed,
        decisions,
        counts,
        counts_short,
    };
    use Observed::{Committed, Final, Response};
    vec![
        row(
            "503 / trailers-only UNAVAILABLE",
            Some(http(503)),
            grpc(GrpcCode::Unavailable),
            Response,
            "RuRnRR",
            (true, true),
            (true, true),
        ),
        row(
            "500 / INTERNAL",
            Some(http(500)),
            grpc(GrpcCode::Internal),
            Response,
            "RuRnnR",
            (true, true),
            (true, true),
        ),
        row(
            "501 / UNIMPLEMENTED",
            Some(http(501)),
            grpc(GrpcCode::Unimplemented),
            Response,
            "nnnnnn",
            (true, false),
            (true, false),
        ),
        row(
            "404 / NOT_FOUND",
            Some(http(404)),
            grpc(GrpcCode::NotFound),
            Response,
            "nnnnnn",
            (false, false),
            (false, false),
        ),
        row(
            "429 / RESOURCE_EXHAUSTED",
            Some(http(429)),
            grpc(GrpcCode::ResourceExhausted),
            Response,
            "ouonnn",
            (false, false),
            (false, false),
        ),
        row(
            "429 / RESOURCE_EXHAUSTED, 1 s hint",
            Some(http(429).with_hint(hint)),
            grpc(GrpcCode::ResourceExhausted).with_hint(hint),
            Response,
            "RuRnnn",
            (false, false),
            (false, false),
        ),
        row(
            "504 / DEADLINE_EXCEEDED from the server",
            Some(http(504)),
            grpc(GrpcCode::DeadlineExceeded),
            Response,
            "RuRnnR",
            (true, true),
            (false, false),
        ),
        row(
            "headers, then a reset (committed)",
            None,
            grpc(GrpcCode::Ok),
            Committed,
            "ccc",
            (false, false),
            (false, false),
        ),
        row(
            "reset after sending (RST_STREAM INTERNAL_ERROR)",
            Some(http_reset),
            grpc_reset,
            Observed::Error,
            "RuRnnR",
            (true, true),
            (true, true),
        ),
        row(
            "connection lost after sending",
            Some(http_lost),
            grpc_lost,
            Observed::Error,
            "RuRnRR",
            (true, true),
            (true, true),
        ),
        row(
            "never sent (connect refused)",
            Some(http_never),
            grpc_never,
            Observed::Error,
            "TTTTTT",
            (true, true),
            (true, true),
        ),
        row(
            "per-try timeout",
            Some(http_cut),
            grpc_cut,
            Observed::Error,
            "RuRnnR",
            (true, true),
            (false, false),
        ),
        row(
            "the call's deadline ran out",
            Some(http_deadline),
            grpc_deadline,
            Final,
            "nnnnnn",
            (true, true),
            (false, false),
        ),
        row(
            "pool checkout timed out",
            Some(http_pool),
            grpc_pool,
            Observed::Error,
            "TTTTTT",
            (false, false),
            (false, false),
        ),
        row(
            "bulkhead full",
            Some(http_bulkhead),
            grpc_bulkhead,
            Final,
            "nnnnnn",
            (false, false),
            (false, false),
        ),
        row(
            "breaker open",
            Some(http_open),
            grpc_open,
            Observed::Error,
            "TTTTTT",
            (false, false),
            (false, false),
        ),
        row(
            "no endpoints",
            Some(http_none),
            grpc_none,
            Final,
            "nnnnnn",
            (false, false),
            (false, false),
        ),
    ]
}

/// Every (protocol, method policy, outcome) → the documented retry decision, and the separate
/// endpoint-accounting decision.
#[test]
fn the_decision_table() {
    let wide = GrpcCodes::from_iter([
        GrpcCode::Unavailable,
        GrpcCode::DeadlineExceeded,
        GrpcCode::Internal,
    ]);
    let grpc_policies = [GrpcCodes::NONE, GrpcCodes::default(), wide];
    for row in rows() {
        let mut got = String::new();
        let decide = |class: Class, codes: GrpcCodes, method_safe: bool, grpc: bool| {
            let mut r = rules();
            r.retryable.codes = codes;
            r.decide(
                Outcome {
                    class,
                    observed: row.observed,
                    served_by: served(1),
                },
                CallState {
                    safe_to_repeat: method_safe,
                    grpc,
                    ..call()
                },
            )
        };
        if let Some(class) = row.http {
            for method_safe in [true, false] {
                got.push(letter(decide(
                    class,
                    GrpcCodes::default(),
                    method_safe,
                    false,
                )));
            }
            // A POST with a key: safe, like an idempotent method.
            got.push(letter(decide(class, GrpcCodes::default(), true, false)));
        }
        for codes in grpc_policies {
            // gRPC calls are POSTs: the method never makes them safe; the codes do.
            got.push(letter(decide(row.grpc, codes, false, true)));
        }
        assert_eq!(got, row.decisions, "{}", row.name);

        let http_counts = row
            .http
            .map(|c| c.counts_against_endpoint(Some(FLOOR), FLOOR));
        let http_short = row
            .http
            .map(|c| c.counts_against_endpoint(Some(FLOOR / 2), FLOOR));
        if let (Some(counts), Some(short)) = (http_counts, http_short) {
            assert_eq!(
                (counts, short),
                (row.counts.0, row.counts_short.0),
                "{} (HTTP)",
                row.name
            );
        }
        if row.observed != Observed::Committed {
            let counts = row.grpc.counts_against_endpoint(Some(FLOOR), FLOOR);
            let short = row.grpc.counts_against_endpoint(Some(FLOOR / 2), FLOOR);
            assert_eq!(
                (counts, short),
                (row.counts.1, row.counts_short.1),
                "{} (gRPC)",
                row.name
            );
        }
    }
}

/// After its one transparent retry, a never-sent outcome follows the policy like any other.
#[test]
fn a_second_never_sent_follows_the_policy() {
    let (http_never, grpc_never) = err_class(NeverSent::new("refused"));
    let used = CallState {
        transparent_used: true,
        safe_to_repeat: false,
        ..call()
    };
    let used_grpc = CallState { grpc: true, ..used };
    let error = |class| Outcome {
        class,
        observed: Observed::Error,
        served_by: None,
    };
    assert!(
        is_retry(rules().decide(error(http_never), used)),
        "safe: never sent"
    );
    let mut none = rules();
    none.retryable.codes = GrpcCodes::NONE;
    assert_eq!(
        none.decide(error(grpc_never), used_grpc),
        stop(RetryStop::NotRetryable)
    );
    assert!(is_retry(rules().decide(error(grpc_never), used_grpc)));
}

/// An HTTP request is judged as HTTP even when its error carries a gRPC code (a `tonic::Status`
/// from a nested client): a POST without a key is not repeated.
#[test]
fn an_http_post_is_not_made_safe_by_a_grpc_code_in_its_error() {
    let (_, unavailable) = err_class(Error::from_inner(tonic_like_unavailable()));
    let post = CallState {
        safe_to_repeat: false,
        ..call()
    };
    let error = Outcome {
        class: unavailable,
        observed: Observed::Error,
        served_by: None,
    };
    assert_eq!(unavailable.grpc_code(), Some(GrpcCode::Unavailable));
    assert_eq!(
        rules().decide(error, post),
        stop(RetryStop::NotSafeToRepeat)
    );
    let grpc = CallState { grpc: true, ..post };
    assert!(is_retry(rules().decide(error, grpc)));
}

/// An error whose gRPC code is UNAVAILABLE without tonic: a lost connection.
fn tonic_like_unavailable() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::ConnectionReset)
}

/// The HTTP statuses retried are the route's.
#[test]
fn retryable_statuses_are_the_routes() {
    let mut r = rules();
    r.retryable.statuses = Statuses::of([409]).unwrap();
    assert!(is_retry(r.decide(outcome(http(409)), call())));
    assert_eq!(
        r.decide(outcome(http(503)), call()),
        stop(RetryStop::NotRetryable)
    );
}

#[test]
fn the_rules_apply_in_order() {
    let r = rules();
    let hint = |s| ServerHint::RetryAfter(Duration::from_secs(s));
    let cases: Vec<(&str, Outcome, CallState, Decision)> = vec![
        (
            "success",
            outcome(http(200)),
            call(),
            stop(RetryStop::NotRetryable),
        ),
        (
            "client error",
            outcome(http(400)),
            call(),
            stop(RetryStop::NotRetryable),
        ),
        (
            "server said no",
            outcome(grpc(GrpcCode::Unavailable).with_hint(ServerHint::DoNotRetry)),
            call(),
            stop(RetryStop::ServerAskedNotToRetry),
        ),
        (
            "unsafe POST",
            outcome(http(500)),
            CallState {
                safe_to_repeat: false,
                ..call()
            },
            stop(RetryStop::NotSafeToRepeat),
        ),
        (
            "body too big",
            outcome(http(500)),
            CallState {
                replayable: false,
                ..call()
            },
            stop(RetryStop::BodyNotReplayable),
        ),
        (
            "attempts used",
            outcome(http(500)),
            CallState {
                attempts: 3,
                ..call()
            },
            stop(RetryStop::AttemptsExhausted),
        ),
        (
            "429 without hint",
            outcome(http(429)),
            call(),
            stop(RetryStop::OverloadWithoutHint),
        ),
        (
            "503 without hint, one endpoint",
            Outcome {
                served_by: served(0),
                ..outcome(http(503))
            },
            call(),
            stop(RetryStop::NoOtherEndpoint),
        ),
        (
            "503 without hint, no balancer",
            outcome(http(503)),
            call(),
            stop(RetryStop::NoOtherEndpoint),
        ),
        (
            "hint longer than what is left",
            outcome(http(503).with_hint(hint(30))),
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
            outcome(http(429).with_hint(hint(1))),
            call(),
            Decision::Retry {
                delay: Duration::from_secs(1),
                kind: Resend::Attempt,
                avoid: None,
            },
        ),
        (
            "never sent: transparent, even when unsafe and out of attempts",
            Outcome {
                observed: Observed::Error,
                ..outcome(Class::new(Kind::Transport).with_never_sent(true))
            },
            CallState {
                safe_to_repeat: false,
                attempts: 3,
                ..call()
            },
            Decision::Retry {
                delay: Duration::ZERO,
                kind: Resend::Transparent,
                avoid: None,
            },
        ),
        (
            "never sent twice: counts as usual",
            Outcome {
                observed: Observed::Error,
                ..outcome(Class::new(Kind::Transport).with_never_sent(true))
            },
            CallState {
                transparent_used: true,
                attempts: 3,
                ..call()
            },
            stop(RetryStop::AttemptsExhausted),
        ),
        (
            "never sent, but the deadline is spent",
            Outcome {
                observed: Observed::Error,
                ..outcome(Class::new(Kind::Transport).with_never_sent(true))
            },
            CallState {
                remaining: Some(Duration::ZERO),
                ..call()
            },
            stop(RetryStop::DeadlineTooShort {
                delay: Duration::ZERO,
                remaining: Duration::ZERO,
            }),
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
            ..outcome(http(503))
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
        ..outcome(http(503))
    };
    assert!(is_retry(any.decide(o, call())));
    any.unavailable = UnavailablePolicy::Never;
    assert_eq!(any.decide(o, call()), stop(RetryStop::NoOtherEndpoint));

    // An unavailable *error* names no draining endpoint: it may be retried anywhere.
    let error = Outcome {
        observed: Observed::Error,
        ..outcome(Class::new(Kind::Unavailable))
    };
    assert!(is_retry(rules().decide(error, call())));

    let mut overload = rules();
    overload.retry_overload_without_hint = true;
    assert!(is_retry(overload.decide(outcome(http(429)), call())));
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
        r.decide(outcome(http(500)), unsafe_call);
    }
    assert!(is_retry(r.decide(outcome(http(500)), call())));
    assert_eq!(
        r.decide(outcome(http(500)), call()),
        stop(RetryStop::BudgetExhausted)
    );
    // Transparent retries are free.
    let never_sent = Outcome {
        observed: Observed::Error,
        ..outcome(Class::new(Kind::Transport).with_never_sent(true))
    };
    assert!(is_retry(r.decide(never_sent, call())));
}

#[test]
fn every_reason_explains_itself() {
    let reasons = [
        RetryStop::NotRetryable,
        RetryStop::Committed,
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
        RetryStop::PollsExhausted,
    ];
    let texts: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
    for (i, text) in texts.iter().enumerate() {
        assert!(text.len() > 20, "{text}");
        assert!(!texts[..i].contains(text), "duplicate: {text}");
    }
    assert!(texts[8].contains("30s") && texts[8].contains("5s"));
}

/// A keyed request's conflict (409 / ABORTED) with the server's hint is polled: bounded by the
/// deadline and the budget (one token for all of a call's polls), not by the attempts; each
/// wait is the backoff, at most the hint and at least the backoff's base. A conflict without a
/// hint is an ordinary retry; one whose server asked not to retry is not retried.
#[test]
fn conflicts_are_polled_within_the_deadline_not_the_attempts() {
    let conflict = |hint: ServerHint| Outcome {
        class: http(409).with_hint(hint),
        observed: Observed::Conflict,
        served_by: None,
    };
    let after = |d: Duration| conflict(ServerHint::RetryAfter(d));
    let r = rules();
    let base = r.backoff.base();
    // Out of attempts, still polled; every wait between the base and the hint (or the base,
    // when the hint is shorter: never back-to-back polls).
    let spent = CallState {
        attempts: 3,
        polls: 7,
        ..call()
    };
    for hint in [
        Duration::ZERO,
        MS,
        15 * MS,
        200 * MS,
        Duration::from_secs(10),
    ] {
        let Decision::Retry { delay, kind, .. } = r.decide(after(hint), spent) else {
            panic!("a conflict is polled whatever the attempts");
        };
        assert_eq!(kind, Resend::Poll);
        assert!(
            delay >= base && delay <= hint.max(base),
            "hint {hint:?}: {delay:?}"
        );
    }
    // Without a hint (a server that does not say how long): an ordinary retry, counted against
    // the attempts.
    let Decision::Retry { kind, .. } = r.decide(conflict(ServerHint::None), call()) else {
        panic!("a keyed request's conflict without a hint is retried");
    };
    assert_eq!(kind, Resend::Attempt);
    assert_eq!(
        r.decide(conflict(ServerHint::None), spent),
        stop(RetryStop::AttemptsExhausted)
    );
    assert_eq!(
        r.decide(conflict(ServerHint::DoNotRetry), call()),
        stop(RetryStop::ServerAskedNotToRetry)
    );
    // The deadline bounds it.
    let late = CallState {
        remaining: Some(Duration::ZERO),
        ..call()
    };
    assert!(matches!(
        r.decide(after(MS), late),
        Decision::Stop(RetryStop::DeadlineTooShort { .. })
    ));
    // One budget token for all of a call's polls.
    let mut tight = rules();
    tight.budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(1))
        .build()
        .unwrap();
    assert!(is_retry(tight.decide(after(MS), call())));
    let polled = CallState { polls: 1, ..call() };
    for _ in 0..5 {
        assert!(is_retry(tight.decide(after(MS), polled)));
    }
    assert_eq!(
        tight.decide(after(MS), call()),
        stop(RetryStop::BudgetExhausted),
        "a second call's first poll needs a token of its own"
    );
    // A safety net when there is no deadline at all.
    let endless = CallState {
        polls: MAX_CONFLICT_POLLS,
        remaining: None,
        ..call()
    };
    assert_eq!(
        r.decide(after(MS), endless),
        stop(RetryStop::PollsExhausted)
    );
}

/// A throttling budget (gRFC A6) counts what the decision sees: each failure the route would
/// retry takes a token — unsafe to repeat, out of attempts or not — and the fifth in a row from
/// 10 tokens stops retries; outcomes never retried, free resends, conflicts and the failures
/// of a route that makes one attempt count nothing.
#[test]
fn a_throttling_budget_counts_retryable_failures_only() {
    let mut r = rules();
    r.budget = RetryBudget::throttling(10.0, 0.1).build().unwrap();
    let tokens = |r: &Rules| r.budget.stats().tokens.unwrap();
    let never_sent = Outcome {
        observed: Observed::Error,
        ..outcome(Class::new(Kind::Transport).with_never_sent(true))
    };
    let conflict = Outcome {
        observed: Observed::Conflict,
        ..outcome(http(409))
    };
    let last = CallState {
        attempts: 3,
        ..call()
    };
    let unsafe_call = CallState {
        safe_to_repeat: false,
        ..call()
    };
    // (outcome, call state, tokens it takes)
    let table: [(Outcome, CallState, f64); 9] = [
        (outcome(http(404)), call(), 0.0),
        // The server said not to retry: a failure all the same (A6), if the route would
        // retry it; a 404 it never retries takes nothing.
        (
            outcome(http(503).with_hint(ServerHint::DoNotRetry)),
            call(),
            1.0,
        ),
        (
            outcome(http(404).with_hint(ServerHint::DoNotRetry)),
            call(),
            0.0,
        ),
        (outcome(http(501)), call(), 0.0),
        (never_sent, call(), 0.0),
        (conflict, call(), 0.0),
        (outcome(http(503)), last, 1.0),
        (outcome(http(500)), unsafe_call, 1.0),
        (outcome(http(500)), call(), 1.0),
    ];
    for (i, (o, c, takes)) in table.into_iter().enumerate() {
        let before = tokens(&r);
        r.decide(o, c);
        assert_eq!(before - tokens(&r), takes, "row {i}");
    }
    // A route making one attempt retries nothing: its failures take no token, whatever
    // they are (a gRPC method without a `retryPolicy`).
    let mut single = r.clone();
    single.max_attempts = 1;
    for o in [outcome(http(500)), outcome(http(503)), outcome(http(429))] {
        let before = tokens(&r);
        assert_eq!(single.decide(o, call()), stop(RetryStop::AttemptsExhausted));
        assert_eq!(tokens(&r), before, "a one-attempt route took a token");
    }
    // 10 - 4 = 6: the 5th failure leaves 5 and refuses.
    assert_eq!(
        r.decide(outcome(http(500)), call()),
        stop(RetryStop::BudgetExhausted)
    );
    assert_eq!(tokens(&r), 5.0);
}

/// gRPC's `perAttemptRecvTimeout`: with the route's `per_try_timeouts`, an attempt the per-try
/// timeout cut is retried whatever the codes (here UNAVAILABLE only); without it, it is not. A
/// server's own DEADLINE_EXCEEDED is a response, judged by the codes either way.
#[test]
fn per_try_timeouts_are_retried_when_the_route_says_so() {
    let (_, cut) = err_class(Error::AttemptTimedOut {
        timeout: Duration::from_secs(1),
        endpoint: None,
        never_sent: false,
    });
    let mut r = rules();
    r.retryable.codes = GrpcCodes::NONE.with(GrpcCode::Unavailable);
    let grpc_call = CallState {
        grpc: true,
        ..call()
    };
    let cut = Outcome {
        observed: Observed::Error,
        ..outcome(cut)
    };
    let answered = outcome(grpc(GrpcCode::DeadlineExceeded));
    assert_eq!(r.decide(cut, grpc_call), stop(RetryStop::NotRetryable));
    assert_eq!(r.decide(answered, grpc_call), stop(RetryStop::NotRetryable));
    r.retryable.per_try_timeouts = true;
    assert!(is_retry(r.decide(cut, grpc_call)));
    assert_eq!(r.decide(answered, grpc_call), stop(RetryStop::NotRetryable));
    // Only the client's own per-try timer: another timeout error (a classifier's, a nested
    // client's deadline) is judged by its code.
    let other = Outcome {
        observed: Observed::Error,
        ..outcome(Class::new(Kind::Timeout).with_grpc_code(GrpcCode::DeadlineExceeded))
    };
    assert_eq!(r.decide(other, grpc_call), stop(RetryStop::NotRetryable));
}
