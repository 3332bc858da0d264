//! Answers to keyed requests that are not run: their HTTP status or gRPC code, and the message.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::classify::GrpcCode;
use crate::idempotency::body::IdempotencyBody;
use crate::metrics::IdempotencyOutcome;

/// How a keyed request is answered without running it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    MissingKey,
    BadKey(&'static str),
    NoScope,
    BodyTooLarge,
    BodyUnreadable,
    /// The first request with the key still runs; it holds a lease of this length at most.
    InFlight {
        lease: Duration,
    },
    Mismatch,
    StoreUnavailable,
}

impl Refusal {
    /// The `outcome` it is counted as (`stanchion.idempotency.requests`).
    pub(super) fn outcome(self) -> IdempotencyOutcome {
        match self {
            Refusal::MissingKey => IdempotencyOutcome::MissingKey,
            Refusal::BadKey(_) => IdempotencyOutcome::InvalidKey,
            Refusal::NoScope => IdempotencyOutcome::NoScope,
            Refusal::BodyTooLarge => IdempotencyOutcome::BodyTooLarge,
            Refusal::BodyUnreadable => IdempotencyOutcome::BodyUnreadable,
            Refusal::InFlight { .. } => IdempotencyOutcome::InFlight,
            Refusal::Mismatch => IdempotencyOutcome::Mismatch,
            Refusal::StoreUnavailable => IdempotencyOutcome::StoreUnavailable,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::MissingKey | Refusal::BadKey(_) | Refusal::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Refusal::NoScope => StatusCode::UNAUTHORIZED,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::InFlight { .. } => StatusCode::CONFLICT,
            Refusal::Mismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn grpc_code(self) -> GrpcCode {
        match self {
            Refusal::MissingKey | Refusal::BadKey(_) | Refusal::BodyUnreadable => {
                GrpcCode::InvalidArgument
            }
            Refusal::NoScope => GrpcCode::Unauthenticated,
            Refusal::BodyTooLarge => GrpcCode::ResourceExhausted,
            Refusal::InFlight { .. } => GrpcCode::Aborted,
            Refusal::Mismatch => GrpcCode::FailedPrecondition,
            Refusal::StoreUnavailable => GrpcCode::Unavailable,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::MissingKey => "an Idempotency-Key is required for this request",
            Refusal::BadKey(reason) => reason,
            Refusal::NoScope => "the request has no principal to scope its idempotency key",
            Refusal::BodyTooLarge => "the request body is larger than the idempotency limit",
            Refusal::BodyUnreadable => "the request body could not be read",
            Refusal::InFlight { .. } => {
                "a request with this idempotency key is still being processed"
            }
            Refusal::Mismatch => "this idempotency key was already used for a different request",
            Refusal::StoreUnavailable => "the idempotency store is unavailable; retry later",
        }
    }

    pub(super) fn respond<B>(self, grpc: bool) -> Response<IdempotencyBody<B>> {
        let mut response = Response::new(IdempotencyBody::empty());
        if !grpc {
            *response.status_mut() = self.status();
        }
        let headers = response.headers_mut();
        if grpc {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(self.grpc_code() as u16));
            headers.insert("grpc-message", grpc_message(self.message()));
            if let Refusal::InFlight { lease } = self {
                // gRFC A6 pushback: when to ask again, in milliseconds.
                let millis = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
                headers.insert("grpc-retry-pushback-ms", HeaderValue::from(millis));
            }
        } else {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if let Refusal::InFlight { lease } = self {
                // Whole seconds, rounded up: an upper bound on when the first request ends (its
                // lease), not a schedule — a client polls sooner, with backoff.
                let secs = lease.as_secs() + u64::from(lease.subsec_nanos() > 0);
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            *response.body_mut() = IdempotencyBody::full(Bytes::from(self.message()), None);
        }
        response
    }
}

/// Bytes a `grpc-message` must percent-encode: everything outside printable ASCII, and `%`
/// itself (gRPC over HTTP/2, "Responses": `Percent-Byte-Unencoded` is 0x20–0x7E except `%`).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// A grpc-message value: the message's UTF-8 bytes, percent-encoded as the gRPC spec asks.
fn grpc_message(message: &str) -> HeaderValue {
    let encoded = utf8_percent_encode(message, GRPC_MESSAGE).to_string();
    // Only printable ASCII is left after encoding.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static("idempotency"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded() {
        assert_eq!(grpc_message("50% done\n"), "50%25 done%0A");
        assert_eq!(grpc_message("déjà"), "d%C3%A9j%C3%A0");
        let in_flight = Refusal::InFlight {
            lease: Duration::from_millis(2500),
        };
        let http = in_flight.respond::<()>(false);
        assert_eq!(http.status(), StatusCode::CONFLICT);
        assert_eq!(
            http.headers()["retry-after"],
            "3",
            "rounded up: an upper bound"
        );
        let grpc = in_flight.respond::<()>(true);
        assert_eq!(grpc.headers()["grpc-retry-pushback-ms"], "2500");
        for refusal in [in_flight, Refusal::Mismatch, Refusal::MissingKey] {
            let res = refusal.respond::<()>(true);
            assert_eq!(res.status(), StatusCode::OK, "gRPC errors ride on HTTP 200");
            assert_eq!(
                res.headers()["grpc-status"],
                (refusal.grpc_code() as u16).to_string().as_str()
            );
        }
    }
}
