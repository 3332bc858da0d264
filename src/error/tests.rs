use super::*;

#[test]
fn inner_errors_are_boxed_once() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
    let err = Error::from_inner(io);
    assert!(matches!(err, Error::Inner(_)));
    assert_eq!(err.to_string(), "the wrapped service failed");
    assert_eq!(
        err.report().to_string(),
        "the wrapped service failed: refused"
    );
    let again = Error::from_inner(err);
    match again {
        Error::Inner(inner) => assert!(inner.downcast_ref::<std::io::Error>().is_some()),
        other => panic!("expected Inner, got {other:?}"),
    }
}

#[test]
fn every_message_says_why() {
    let cases: Vec<(Error, &str)> = vec![
        (
            Error::AttemptTimedOut {
                timeout: Duration::from_millis(250),
                endpoint: None,
                never_sent: false,
            },
            "per-try timeout of 250ms",
        ),
        (
            Error::RetriesExhausted {
                attempts: 3,
                last: "503 Service Unavailable".into(),
            },
            "retries exhausted after 3 attempts",
        ),
        (
            Error::RetryBudgetExhausted {
                attempts: 1,
                last: "boom".into(),
            },
            "share of traffic",
        ),
        (
            Error::CircuitOpen {
                retry_in: Duration::from_secs(30),
            },
            "next probe allowed in 30s",
        ),
        (
            Error::CircuitOpen {
                retry_in: Duration::ZERO,
            },
            "every probe slot is taken",
        ),
        (
            Error::BulkheadFull {
                partition: "default".into(),
                limit: 100,
                queue: 50,
            },
            "queue of 50 waiters is full",
        ),
        (
            Error::BulkheadTimeout {
                partition: "health".into(),
                waited: Duration::from_secs(1),
            },
            "waited 1s",
        ),
        (
            Error::PoolTimeout {
                endpoint: "127.0.0.1:80".into(),
                waited: Duration::from_secs(2),
            },
            "127.0.0.1:80 became free within 2s",
        ),
        (
            Error::NoEndpoints {
                reason: NoEndpointsReason::NoneResolved,
            },
            "resolver has returned no addresses",
        ),
        (
            Error::IdempotencyConflict {
                key: "k1".into(),
                reason: IdempotencyConflictReason::InFlight,
            },
            "still in progress",
        ),
        (
            ConfigError::new("max_attempts", "must be at least 1").into(),
            "`max_attempts`: must be at least 1",
        ),
    ];
    for (err, needle) in cases {
        let msg = err.to_string();
        assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    }
}

/// Every error that wraps another keeps it in `source()` and out of its own message, so a
/// chain printer shows each cause once.
#[test]
fn causes_are_sources_not_part_of_the_message() {
    let cause = || -> BoxError { "the cause XYZ".into() };
    let wrapping = [
        Error::RetriesExhausted {
            attempts: 3,
            last: cause(),
        },
        Error::RetryBudgetExhausted {
            attempts: 2,
            last: cause(),
        },
        Error::RetryRefused {
            reason: crate::retry::RetryStop::NotSafeToRepeat,
            attempts: 1,
            last: cause(),
        },
        Error::Inner(cause()),
    ];
    for err in wrapping {
        let own = err.to_string();
        assert!(!own.contains("XYZ"), "{own}");
        let source = std::error::Error::source(&err).expect("the cause is the source");
        assert_eq!(source.to_string(), "the cause XYZ");
        assert_eq!(err.report().to_string().matches("XYZ").count(), 1);
    }
    let never_sent = crate::classify::NeverSent::new(cause());
    assert!(!never_sent.to_string().contains("XYZ"));
    assert!(std::error::Error::source(&never_sent).is_some());
}

#[test]
fn durations_are_validated() {
    let max = Duration::from_secs(10);
    assert!(check_duration("t", Duration::ZERO, max).is_err());
    assert!(check_duration("t", Duration::from_secs(11), max).is_err());
    assert_eq!(check_duration("t", max, max), Ok(max));
}
