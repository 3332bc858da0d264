use super::*;

#[test]
fn errors_are_classified_by_what_raised_them() {
    let io = || std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    let refused = Class::new(Kind::Refused).with_never_sent(true);
    let cases: Vec<(BoxError, Class)> = vec![
        (Box::new(io()), Class::new(Kind::Transport)),
        (
            Box::new(NeverSent::new(io())),
            Class::new(Kind::Transport).with_never_sent(true),
        ),
        (
            Box::new(Error::Inner(Box::new(NeverSent::new(io())))),
            Class::new(Kind::Transport).with_never_sent(true),
        ),
        (
            Box::new(Error::DeadlineExceeded {
                budget: Duration::from_secs(1),
            }),
            Class::new(Kind::Timeout),
        ),
        (
            Box::new(Error::AttemptTimedOut {
                timeout: Duration::from_secs(1),
                endpoint: None,
                never_sent: false,
            }),
            // The client's own per-try timer: a cut, which a route may retry whatever its codes.
            Class {
                per_try_cut: true,
                ..Class::new(Kind::Timeout)
            },
        ),
        (
            Box::new(Error::CircuitOpen {
                retry_in: Duration::from_secs(1),
            }),
            refused,
        ),
        (
            Box::new(Error::PoolTimeout {
                endpoint: "e".into(),
                waited: Duration::from_secs(1),
            }),
            refused,
        ),
        (
            Box::new(Error::BulkheadFull {
                partition: "p".into(),
                limit: 1,
                queue: 1,
            }),
            refused,
        ),
        (
            Box::new(Error::RetriesExhausted {
                attempts: 3,
                last: Box::new(Error::AttemptTimedOut {
                    timeout: Duration::from_secs(1),
                    endpoint: None,
                    never_sent: false,
                }),
            }),
            Class {
                per_try_cut: true,
                ..Class::new(Kind::Timeout)
            },
        ),
    ];
    for (err, expected) in cases {
        assert_eq!(classify_error(err.as_ref()), expected, "{err}");
    }
}

#[cfg(feature = "tonic")]
#[test]
fn tonic_transport_errors_say_what_happened() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let connect = Error::Inner(Box::new(tonic::ConnectError(Box::new(refused))));
    assert_eq!(
        classify_error(&connect),
        Class::new(Kind::Transport).with_never_sent(true)
    );
    assert_eq!(
        classify_error(&tonic::TimeoutExpired(())),
        Class::new(Kind::Timeout)
    );
    let status = tonic::Status::resource_exhausted("slow down");
    assert_eq!(
        classify_error(&status),
        Class::new(Kind::Overload).with_grpc_code(GrpcCode::ResourceExhausted)
    );
}

/// The endpoint-accounting table, over every kind and both sides of the timeout floor.
#[test]
fn what_counts_against_an_endpoint() {
    let floor = Duration::from_millis(100);
    use EndpointVerdict::{Failure, Neutral, Success};
    let table = [
        (Kind::Success, false, Success),
        (Kind::ClientError, false, Success),
        (Kind::Cancelled, false, Neutral),
        (Kind::Overload, false, Neutral),
        (Kind::Refused, false, Neutral),
        (Kind::Unavailable, true, Failure),
        (Kind::ServerError, true, Failure),
        (Kind::Transport, true, Failure),
        (Kind::Timeout, true, Failure),
    ];
    for (kind, counts, verdict) in table {
        assert_eq!(
            Class::new(kind).endpoint_verdict(Some(floor), floor),
            verdict
        );
        let below = if kind == Kind::Timeout {
            Neutral
        } else {
            verdict
        };
        assert_eq!(
            Class::new(kind).endpoint_verdict(Some(floor / 2), floor),
            below,
            "{kind:?}"
        );
        assert_eq!(kind.is_failure(), counts, "{kind:?}");
        for given in [None, Some(floor), Some(floor * 10)] {
            assert_eq!(
                Class::new(kind).counts_against_endpoint(given, floor),
                counts,
                "{kind:?} {given:?}"
            );
        }
        let short = Some(floor - Duration::from_millis(1));
        assert_eq!(
            Class::new(kind).counts_against_endpoint(short, floor),
            counts && kind != Kind::Timeout,
            "{kind:?} given less than the floor"
        );
    }
}
