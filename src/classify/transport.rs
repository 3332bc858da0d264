//! What an error is in gRPC's terms: the code a gRPC client reports for it.
//!
//! A gRPC call that fails without a status from the server still ends with a code, and the
//! method's retry policy is written in codes (gRFC A6's `retryableStatusCodes`), so every error
//! needs one. The mapping follows gRPC's "gRPC over HTTP/2" protocol document (its table of
//! HTTP/2 reset codes), plus two rules of this crate's own. The table is on [`grpc_code_of_error`].

use super::{GrpcCode, NeverSent, chain};
use crate::error::{Error, IdempotencyConflictReason};

/// The gRPC code of an error, found by walking its source chain: the code a gRPC client reports
/// for it. Rules marked *ours* are this crate's; the rest follow gRPC's "gRPC over HTTP/2"
/// protocol document.
///
/// | error | code |
/// |---|---|
/// | a `tonic::Status` | its code |
/// | never sent: a failed connect, `REFUSED_STREAM`, GOAWAY for an unprocessed stream | UNAVAILABLE |
/// | an endpoint unfit for the request ([`EndpointRejected`](super::EndpointRejected): a failed TLS handshake) | UNAVAILABLE |
/// | `RST_STREAM` `CANCEL` | CANCELLED |
/// | `RST_STREAM` `ENHANCE_YOUR_CALM` | RESOURCE_EXHAUSTED |
/// | `RST_STREAM` `INADEQUATE_SECURITY` | PERMISSION_DENIED |
/// | any other `RST_STREAM` (`NO_ERROR`, `PROTOCOL_ERROR`, `INTERNAL_ERROR`, …) | INTERNAL |
/// | the connection lost (GOAWAY, an I/O error, a connection closed mid-call) | UNAVAILABLE |
/// | a timeout: this crate's per-try timeout, tonic's `grpc-timeout` timer, the call's deadline | DEADLINE_EXCEEDED (*ours*: gRFC A6 has no per-try timeout; its hedging and retry attempts end with the call's deadline) |
/// | an open breaker, no endpoint | UNAVAILABLE |
/// | a pool checkout or bulkhead wait that timed out, a full bulkhead | RESOURCE_EXHAUSTED (*ours*: the client ran out of its own capacity) |
/// | an idempotency conflict | ABORTED (in flight) / FAILED_PRECONDITION (another request) |
/// | an invalid idempotency key | INVALID_ARGUMENT |
/// | invalid configuration | INTERNAL |
/// | an `https` call refused by a plaintext pool, or for a host a TLS connection was not verified for | FAILED_PRECONDITION (*ours*) |
/// | anything else | INTERNAL |
///
/// ```
/// use stanchion::classify::{GrpcCode, NeverSent, grpc_code_of_error};
///
/// let lost = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
/// assert_eq!(grpc_code_of_error(&lost), GrpcCode::Unavailable);
/// assert_eq!(grpc_code_of_error(&NeverSent::new("refused")), GrpcCode::Unavailable);
/// let plain: stanchion::BoxError = "something odd".into();
/// assert_eq!(grpc_code_of_error(plain.as_ref()), GrpcCode::Internal);
/// ```
pub fn grpc_code_of_error(err: &(dyn std::error::Error + 'static)) -> GrpcCode {
    let mut lost = false;
    for e in chain(err) {
        if crate::pool::is_own_refusal(e) {
            // Ours: the client was not set up to secure this call.
            return GrpcCode::FailedPrecondition;
        }
        if e.is::<super::EndpointRejected>() {
            // A failed TLS handshake (certificate, alert, no common protocol): UNAVAILABLE,
            // as gRPC's own clients report it.
            return GrpcCode::Unavailable;
        }
        if let Some(own) = e.downcast_ref::<Error>() {
            match own_code(own) {
                Some(code) => return code,
                None => continue,
            }
        }
        #[cfg(feature = "tonic")]
        {
            if let Some(status) = e.downcast_ref::<tonic::Status>() {
                return status.code().into();
            }
            if e.is::<tonic::TimeoutExpired>() {
                return GrpcCode::DeadlineExceeded;
            }
            if e.is::<tonic::ConnectError>() {
                return GrpcCode::Unavailable;
            }
        }
        if e.is::<NeverSent>() {
            return GrpcCode::Unavailable;
        }
        #[cfg(any(feature = "hyper", feature = "tonic"))]
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2_code(h2);
        }
        #[cfg(feature = "hyper")]
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return GrpcCode::DeadlineExceeded;
            }
            // Closed, incomplete, cancelled dispatch: the connection is gone — unless an h2
            // error further down says more.
            lost = true;
            continue;
        }
        lost |= e.is::<std::io::Error>();
    }
    if lost {
        GrpcCode::Unavailable
    } else {
        GrpcCode::Internal
    }
}

/// The code of one of this crate's own errors; `None` for those that wrap another error (the
/// code is the wrapped one's).
fn own_code(err: &Error) -> Option<GrpcCode> {
    Some(match err {
        Error::DeadlineExceeded { .. } | Error::AttemptTimedOut { .. } => {
            GrpcCode::DeadlineExceeded
        }
        Error::CircuitOpen { .. } | Error::NoEndpoints { .. } => GrpcCode::Unavailable,
        Error::BulkheadFull { .. } | Error::BulkheadTimeout { .. } | Error::PoolTimeout { .. } => {
            GrpcCode::ResourceExhausted
        }
        Error::IdempotencyConflict { reason, .. } => match reason {
            IdempotencyConflictReason::InFlight => GrpcCode::Aborted,
            IdempotencyConflictReason::PayloadMismatch => GrpcCode::FailedPrecondition,
        },
        Error::InvalidIdempotencyKey { .. } => GrpcCode::InvalidArgument,
        Error::Config(_) => GrpcCode::Internal,
        Error::RetriesExhausted { .. }
        | Error::RetryBudgetExhausted { .. }
        | Error::RetryRefused { .. }
        | Error::Inner(_) => return None,
    })
}

/// An HTTP/2 error's code, as gRPC's protocol document maps reset codes.
#[cfg(any(feature = "hyper", feature = "tonic"))]
fn h2_code(err: &h2::Error) -> GrpcCode {
    if err.is_io() || err.is_go_away() {
        return GrpcCode::Unavailable;
    }
    match err.reason() {
        Some(h2::Reason::REFUSED_STREAM) => GrpcCode::Unavailable,
        Some(h2::Reason::CANCEL) => GrpcCode::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => GrpcCode::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => GrpcCode::PermissionDenied,
        _ => GrpcCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::BoxError;
    use crate::error::NoEndpointsReason;

    #[test]
    fn own_errors_and_io() {
        let cases: Vec<(BoxError, GrpcCode)> = vec![
            (
                Box::new(Error::AttemptTimedOut {
                    timeout: Duration::from_secs(1),
                    endpoint: None,
                    never_sent: false,
                }),
                GrpcCode::DeadlineExceeded,
            ),
            (
                Box::new(Error::NoEndpoints {
                    reason: NoEndpointsReason::NoneResolved,
                }),
                GrpcCode::Unavailable,
            ),
            (
                Box::new(Error::PoolTimeout {
                    endpoint: "e".into(),
                    waited: Duration::from_secs(1),
                }),
                GrpcCode::ResourceExhausted,
            ),
            (
                Box::new(Error::RetriesExhausted {
                    attempts: 2,
                    last: Box::new(Error::CircuitOpen {
                        retry_in: Duration::ZERO,
                    }),
                }),
                GrpcCode::Unavailable,
            ),
            (
                Box::new(Error::Inner(Box::new(std::io::Error::from(
                    std::io::ErrorKind::BrokenPipe,
                )))),
                GrpcCode::Unavailable,
            ),
            ("odd".into(), GrpcCode::Internal),
        ];
        for (err, code) in cases {
            assert_eq!(grpc_code_of_error(err.as_ref()), code, "{err}");
        }
    }

    #[cfg(any(feature = "hyper", feature = "tonic"))]
    #[test]
    fn reset_codes_follow_the_protocol_document() {
        let cases = [
            (h2::Reason::REFUSED_STREAM, GrpcCode::Unavailable),
            (h2::Reason::CANCEL, GrpcCode::Cancelled),
            (h2::Reason::ENHANCE_YOUR_CALM, GrpcCode::ResourceExhausted),
            (h2::Reason::INADEQUATE_SECURITY, GrpcCode::PermissionDenied),
            (h2::Reason::NO_ERROR, GrpcCode::Internal),
            (h2::Reason::PROTOCOL_ERROR, GrpcCode::Internal),
            (h2::Reason::INTERNAL_ERROR, GrpcCode::Internal),
            (h2::Reason::FLOW_CONTROL_ERROR, GrpcCode::Internal),
            (h2::Reason::FRAME_SIZE_ERROR, GrpcCode::Internal),
            (h2::Reason::COMPRESSION_ERROR, GrpcCode::Internal),
            (h2::Reason::CONNECT_ERROR, GrpcCode::Internal),
        ];
        for (reason, code) in cases {
            let err = h2::Error::from(reason);
            assert_eq!(grpc_code_of_error(&err), code, "{reason:?}");
        }
    }
}
