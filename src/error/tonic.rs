//! `tonic::Status` codes for stanchion errors (feature `tonic`).
//!
//! tonic turns a transport error into a `Status` by looking for a `Status` in the error's source
//! chain and falls back to UNKNOWN. Mapping with `ServiceBuilder::new().map_err(Status::from)`
//! gives each decision its gRPC code instead. The original [`Error`] stays reachable as the
//! status' `source()`.

use std::sync::Arc;

use tonic::{Code, Status};

use super::Error;

impl Error {
    /// The gRPC code this error surfaces as under tonic: the code gRPC gives it
    /// ([`grpc_code_of_error`](crate::classify::grpc_code_of_error)) — a status from the server
    /// keeps its code, a spent deadline is DEADLINE_EXCEEDED, an open breaker or no endpoint
    /// UNAVAILABLE, a full bulkhead RESOURCE_EXHAUSTED, a lost connection UNAVAILABLE, and so on.
    pub fn grpc_code(&self) -> Code {
        crate::classify::grpc_code_of_error(self).into()
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
        let message = err.report().to_string();
        let retried = match &err {
            Error::RetriesExhausted { attempts, last }
            | Error::RetryBudgetExhausted { attempts, last }
            | Error::RetryRefused { attempts, last, .. } => Some((*attempts, last)),
            _ => None,
        };
        let mut status = match retried.and_then(|(_, last)| last.downcast_ref::<Status>()) {
            // The last attempt's status from the server: its code, details and metadata stay.
            Some(last) => Status::with_details_and_metadata(
                last.code(),
                message,
                last.details().to_vec().into(),
                last.metadata().clone(),
            ),
            None => Status::new(err.grpc_code(), message),
        };
        // The attempts a retried call made, as gRFC A6's `grpc-previous-rpc-attempts`.
        if let Some((attempts, _)) = retried
            && attempts > 1
        {
            status.metadata_mut().insert(
                "grpc-previous-rpc-attempts",
                tonic::metadata::MetadataValue::from(attempts - 1),
            );
        }
        status.set_source(Arc::new(err));
        status
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::error::{ConfigError, IdempotencyConflictReason, NoEndpointsReason};

    #[test]
    fn a_retried_status_keeps_the_servers_details_and_says_how_many_attempts_went_before() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("x-shard", "7".parse().unwrap());
        let last = Status::with_details_and_metadata(
            Code::Internal,
            "boom",
            bytes::Bytes::from_static(b"details"),
            metadata,
        );
        let status = Status::from(Error::RetriesExhausted {
            attempts: 3,
            last: Box::new(last),
        });
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.details(), b"details");
        assert_eq!(status.metadata().get("x-shard").unwrap(), "7");
        assert_eq!(
            status.metadata().get("grpc-previous-rpc-attempts").unwrap(),
            "2"
        );
        assert!(status.message().contains("boom"), "{status:?}");
        // One attempt: nothing went before it.
        let status = Status::from(Error::RetryBudgetExhausted {
            attempts: 1,
            last: Box::new(Status::unavailable("down")),
        });
        assert!(
            status
                .metadata()
                .get("grpc-previous-rpc-attempts")
                .is_none()
        );
    }

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
                    never_sent: false,
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
                        never_sent: false,
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
