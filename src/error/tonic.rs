//! `tonic::Status` codes for stanchion errors (feature `tonic`).
//!
//! tonic turns a transport error into a `Status` by looking for a `Status` in the error's source
//! chain and falls back to UNKNOWN. Mapping with `ServiceBuilder::new().map_err(Status::from)`
//! gives each decision its gRPC code instead. The original [`Error`] stays reachable as the
//! status' `source()`.

use std::sync::Arc;

use tonic::{Code, Status};

use super::{BoxError, Error, IdempotencyConflictReason};

impl Error {
    /// The gRPC code this error surfaces as under tonic.
    pub fn grpc_code(&self) -> Code {
        match self {
            Error::DeadlineExceeded { .. } | Error::AttemptTimedOut { .. } => {
                Code::DeadlineExceeded
            }
            Error::RetriesExhausted { last, .. }
            | Error::RetryBudgetExhausted { last, .. }
            | Error::RetryRefused { last, .. } => code_of_boxed(last),
            Error::CircuitOpen { .. } | Error::NoEndpoints { .. } => Code::Unavailable,
            Error::BulkheadFull { .. }
            | Error::BulkheadTimeout { .. }
            | Error::PoolTimeout { .. } => Code::ResourceExhausted,
            Error::IdempotencyConflict { reason, .. } => match reason {
                IdempotencyConflictReason::InFlight => Code::Aborted,
                IdempotencyConflictReason::PayloadMismatch => Code::FailedPrecondition,
            },
            Error::InvalidIdempotencyKey { .. } => Code::InvalidArgument,
            Error::Config(_) => Code::Internal,
            Error::Inner(inner) => code_of_boxed(inner),
        }
    }
}

/// The code of an error that came from below: a stanchion error maps as above, a `Status` found in
/// its source chain keeps its code, tonic's own timeout (of the `grpc-timeout` it enforces) is
/// DEADLINE_EXCEEDED, a connect or I/O failure is UNAVAILABLE, anything else INTERNAL.
fn code_of_boxed(err: &BoxError) -> Code {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    let mut saw_io = false;
    while let Some(e) = current {
        if let Some(own) = e.downcast_ref::<Error>() {
            return own.grpc_code();
        }
        if let Some(status) = e.downcast_ref::<Status>() {
            return status.code();
        }
        if e.is::<tonic::TimeoutExpired>() {
            return Code::DeadlineExceeded;
        }
        if e.is::<tonic::ConnectError>() {
            return Code::Unavailable;
        }
        saw_io |= e.is::<std::io::Error>();
        current = e.source();
    }
    if saw_io {
        Code::Unavailable
    } else {
        Code::Internal
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Status {
        // A Status from the server passes through untouched (metadata and details included).
        let err = match err {
            Error::Inner(inner) => match inner.downcast::<Status>() {
                Ok(status) => return *status,
                Err(inner) => Error::Inner(inner),
            },
            other => other,
        };
        // A status message is one flat string: the whole chain, not just the outer message.
        let mut status = Status::new(err.grpc_code(), err.report().to_string());
        status.set_source(Arc::new(err));
        status
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::{ConfigError, NoEndpointsReason};

    #[test]
    fn each_decision_has_its_code() {
        let cases: Vec<(Error, Code)> = vec![
            (
                Error::DeadlineExceeded {
                    budget: Duration::from_secs(1),
                },
                Code::DeadlineExceeded,
            ),
            (
                Error::AttemptTimedOut {
                    timeout: Duration::from_secs(1),
                    endpoint: None,
                },
                Code::DeadlineExceeded,
            ),
            (
                Error::CircuitOpen {
                    retry_in: Duration::from_secs(1),
                },
                Code::Unavailable,
            ),
            (
                Error::NoEndpoints {
                    reason: NoEndpointsReason::NoneUsable,
                },
                Code::Unavailable,
            ),
            (
                Error::BulkheadFull {
                    partition: "p".into(),
                    limit: 1,
                    queue: 0,
                },
                Code::ResourceExhausted,
            ),
            (
                Error::BulkheadTimeout {
                    partition: "p".into(),
                    waited: Duration::from_secs(1),
                },
                Code::ResourceExhausted,
            ),
            (
                Error::PoolTimeout {
                    endpoint: "e".into(),
                    waited: Duration::from_secs(1),
                },
                Code::ResourceExhausted,
            ),
            (
                Error::RetriesExhausted {
                    attempts: 3,
                    last: Box::new(Status::unavailable("down")),
                },
                Code::Unavailable,
            ),
            (
                Error::RetryBudgetExhausted {
                    attempts: 2,
                    last: Box::new(Error::AttemptTimedOut {
                        timeout: Duration::from_secs(1),
                        endpoint: None,
                    }),
                },
                Code::DeadlineExceeded,
            ),
            (
                Error::IdempotencyConflict {
                    key: "k".into(),
                    reason: IdempotencyConflictReason::InFlight,
                },
                Code::Aborted,
            ),
            (ConfigError::new("x", "bad").into(), Code::Internal),
            (
                Error::Inner(Box::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                ))),
                Code::Unavailable,
            ),
            (Error::Inner("a plain message".into()), Code::Internal),
            (
                Error::Inner(Box::new(tonic::TimeoutExpired(()))),
                Code::DeadlineExceeded,
            ),
            (
                Error::Inner(Box::new(tonic::ConnectError(Box::new(
                    std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
                )))),
                Code::Unavailable,
            ),
        ];
        for (err, code) in cases {
            // A status message is flat: the whole chain, each cause once.
            let msg = err.report().to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{msg}");
            assert_eq!(status.message(), msg);
            assert_ne!(status.code(), Code::Unknown);
            let source =
                std::error::Error::source(&status).expect("the stanchion error is the source");
            assert!(source.downcast_ref::<Error>().is_some());
        }
    }

    #[test]
    fn a_server_status_passes_through() {
        let mut original = Status::permission_denied("no");
        original
            .metadata_mut()
            .insert("x-why", "policy".parse().unwrap());
        let status = Status::from(Error::from_inner(original));
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(status.message(), "no");
        assert_eq!(status.metadata().get("x-why").unwrap(), "policy");
    }
}
