//! What the retry layer needs from requests and responses, and the `http` implementations.

use std::net::SocketAddr;

use super::{RetryStopped, ServedBy};
use crate::deadline::DeadlineCarrier;

/// A request the retry layer can send more than once.
///
/// Implemented for `http::Request<B>` whose body can be replayed ([`ReplayBody`](super::ReplayBody)).
/// Implement it for your own request type to retry other protocols.
pub trait RetryRequest: DeadlineCarrier + Sized {
    /// A copy to send as another attempt, or `None` if the request can no longer be repeated.
    fn try_clone(&self) -> Option<Self>;

    /// Whether a copy taken earlier can still be sent (false once a streamed body outgrew its
    /// replay buffer).
    fn is_replayable(&self) -> bool {
        true
    }

    /// Whether repeating the request is safe even if an attempt may have reached the server.
    fn is_safe_to_repeat(&self) -> bool;

    /// Whether the request is a gRPC call, whose retry safety is its method's retryable codes
    /// (gRFC A6) rather than its HTTP method. Default `false`.
    fn is_grpc(&self) -> bool {
        false
    }

    /// Whether a conflict response (HTTP 409) means "an earlier attempt is still running" and
    /// is worth retrying ([`RetryOnConflict`]).
    fn retries_conflicts(&self) -> bool {
        false
    }

    /// Marks the copy as attempt number `attempt` (1-based), to be sent elsewhere than `avoid`.
    fn prepare_retry(&mut self, attempt: u32, avoid: Option<SocketAddr>);

    /// Marks the copy as never to be sent to `rejected` (endpoints that rejected the call before
    /// it was sent: [`RejectedEndpoints`](crate::retry::RejectedEndpoints)). Called only when
    /// there are some. Default: nothing (a request type that cannot carry it is then never
    /// retried after a rejection by a balancer that cannot read it — see
    /// [`BalanceRequest::rejected_endpoints`](crate::balance::BalanceRequest::rejected_endpoints)).
    fn exclude_endpoints(&mut self, rejected: &[SocketAddr]) {
        let _ = rejected;
    }
}

/// What the retry layer reads from, and writes to, a response.
pub trait RetryResponse {
    /// The endpoint that served the response, if a balancer said.
    fn served_by(&self) -> Option<ServedBy> {
        None
    }

    /// Records why retrying stopped on this response.
    fn record_stop(&mut self, _stopped: RetryStopped) {}

    /// Records, on the response a retried call returns, how many requests went before the one
    /// that answered (called only when some did).
    fn record_previous_attempts(&mut self, _previous: u32) {}

    /// Whether the response is a conflict (HTTP 409; gRPC ABORTED in the response head) that a
    /// keyed request may retry.
    fn is_conflict(&self) -> bool {
        false
    }
}

/// A request body that can be sent again.
pub trait RetryBody: Sized {
    /// A body that produces the same bytes from the start, or `None` if it cannot.
    fn try_clone_body(&self) -> Option<Self>;

    /// Whether [`try_clone_body`](Self::try_clone_body) (or a clone taken earlier) can still
    /// replay the whole body.
    fn is_replayable(&self) -> bool;
}

/// Marks a request as safe to repeat although its method is not idempotent: the idempotency-key
/// layer sets it on routes whose server honours keys. Put it in `http::Request` extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetrySafe;

/// Marks a keyed request whose `409 Conflict` means "an earlier attempt with this idempotency
/// key is still running": the retry layer retries it after backoff (within the deadline and the
/// budget) instead of returning it. Set by the idempotency-key layer; put it in `http::Request`
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryOnConflict;

#[cfg(feature = "http")]
mod http_impls {
    use std::net::SocketAddr;

    use http::{Request, Response};

    use super::{RetryBody, RetryOnConflict, RetryRequest, RetryResponse, RetrySafe};
    use crate::classify::GrpcCode;
    use crate::deadline::Attempt;
    use crate::retry::{AvoidEndpoint, RejectedEndpoints, RetryStopped, ServedBy};

    /// Safe to repeat when the method is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE:
    /// RFC 9110 §9.2.2) or the request is marked [`RetrySafe`] (an idempotency key). A gRPC
    /// call is a POST, so this is false for it: what a gRPC method may repeat is decided by its
    /// retryable codes (gRFC A6), in the retry policy.
    impl<B: RetryBody> RetryRequest for Request<B> {
        fn try_clone(&self) -> Option<Self> {
            let mut copy = Request::new(self.body().try_clone_body()?);
            *copy.method_mut() = self.method().clone();
            *copy.uri_mut() = self.uri().clone();
            *copy.version_mut() = self.version();
            *copy.headers_mut() = self.headers().clone();
            *copy.extensions_mut() = self.extensions().clone();
            Some(copy)
        }

        fn is_replayable(&self) -> bool {
            self.body().is_replayable()
        }

        fn is_safe_to_repeat(&self) -> bool {
            self.method().is_idempotent() || self.extensions().get::<RetrySafe>().is_some()
        }

        fn is_grpc(&self) -> bool {
            crate::wire::is_grpc(self.headers())
        }

        fn retries_conflicts(&self) -> bool {
            self.extensions().get::<RetryOnConflict>().is_some()
        }

        fn prepare_retry(&mut self, attempt: u32, avoid: Option<SocketAddr>) {
            let extensions = self.extensions_mut();
            extensions.insert(Attempt(attempt));
            match avoid {
                Some(endpoint) => {
                    extensions.insert(AvoidEndpoint(endpoint));
                }
                None => {
                    extensions.remove::<AvoidEndpoint>();
                }
            }
        }

        /// Adds to the endpoints already excluded (by an outer retry layer, or the caller).
        fn exclude_endpoints(&mut self, rejected: &[SocketAddr]) {
            let extensions = self.extensions_mut();
            match extensions.get_mut::<RejectedEndpoints>() {
                Some(RejectedEndpoints(known)) => {
                    for endpoint in rejected {
                        if !known.contains(endpoint) {
                            known.push(*endpoint);
                        }
                    }
                }
                None => {
                    extensions.insert(RejectedEndpoints(rejected.to_vec()));
                }
            }
        }
    }

    /// A whole body in memory: every copy sends the same bytes.
    impl<D: Clone> RetryBody for http_body_util::Full<D> {
        fn try_clone_body(&self) -> Option<Self> {
            Some(self.clone())
        }

        fn is_replayable(&self) -> bool {
            true
        }
    }

    /// No body: nothing to replay.
    impl<D> RetryBody for http_body_util::Empty<D> {
        fn try_clone_body(&self) -> Option<Self> {
            Some(http_body_util::Empty::new())
        }

        fn is_replayable(&self) -> bool {
            true
        }
    }

    /// Bodies held whole in memory (strings, bytes): every copy sends the same bytes.
    macro_rules! whole_bodies {
        ($($body:ty),*) => {$(
            impl RetryBody for $body {
                fn try_clone_body(&self) -> Option<Self> {
                    Some(self.clone())
                }

                fn is_replayable(&self) -> bool {
                    true
                }
            }
        )*};
    }
    whole_bodies!(String, &'static str, Vec<u8>, bytes::Bytes);

    /// reqwest's body may stream: not sent twice (wrap it in a
    /// [`ReplayBody`](crate::retry::ReplayBody) to be).
    #[cfg(feature = "reqwest")]
    impl RetryBody for reqwest::Body {
        fn try_clone_body(&self) -> Option<Self> {
            None
        }

        fn is_replayable(&self) -> bool {
            false
        }
    }

    /// Type-erased bodies (what `axum::body::Body` wraps, what `BodyExt::boxed` makes): they
    /// cannot be copied. Wrap the body in [`ReplayBody`](crate::retry::ReplayBody) — or box a
    /// `ReplayBody` — to send it again.
    impl<D, E> RetryBody for http_body_util::combinators::BoxBody<D, E> {
        fn try_clone_body(&self) -> Option<Self> {
            None
        }

        fn is_replayable(&self) -> bool {
            false
        }
    }

    /// See the `BoxBody` impl.
    impl<D, E> RetryBody for http_body_util::combinators::UnsyncBoxBody<D, E> {
        fn try_clone_body(&self) -> Option<Self> {
            None
        }

        fn is_replayable(&self) -> bool {
            false
        }
    }

    /// A streamed body (a proxied request): it cannot be sent twice. A retry layer over
    /// `Request<Incoming>` therefore makes no retries at all (not even of a never-sent request,
    /// which needs a copy too); wrap the body in [`ReplayBody`](crate::retry::ReplayBody) to
    /// retry it.
    #[cfg(feature = "hyper")]
    impl RetryBody for hyper::body::Incoming {
        fn try_clone_body(&self) -> Option<Self> {
            None
        }

        fn is_replayable(&self) -> bool {
            false
        }
    }

    /// tonic's body streams the messages; wrap it in a [`ReplayBody`](crate::retry::ReplayBody)
    /// to send it again.
    #[cfg(feature = "tonic")]
    impl RetryBody for tonic::body::Body {
        fn try_clone_body(&self) -> Option<Self> {
            None
        }

        fn is_replayable(&self) -> bool {
            false
        }
    }

    impl<B> RetryResponse for Response<B> {
        fn served_by(&self) -> Option<ServedBy> {
            self.extensions().get::<ServedBy>().copied()
        }

        fn record_stop(&mut self, stopped: RetryStopped) {
            self.extensions_mut().insert(stopped);
        }

        /// On a gRPC response, `grpc-previous-rpc-attempts` in the initial metadata, as gRFC A6
        /// has clients report it: a tonic caller reads it from the response's metadata, or
        /// from the `Status` of a trailers-only answer (a status in the trailers of a response
        /// that began leaves it in the initial metadata only). Other responses carry the count
        /// in [`RetryStopped`] when retrying stopped on a failure.
        fn record_previous_attempts(&mut self, previous: u32) {
            if crate::wire::is_grpc(self.headers()) {
                self.headers_mut().insert(
                    crate::wire::GRPC_PREVIOUS_ATTEMPTS,
                    http::HeaderValue::from(previous),
                );
            }
        }

        fn is_conflict(&self) -> bool {
            // HTTP 409, or gRPC ABORTED as a trailers-only answer (what the server half sends
            // for a key still in flight) — but not a stored answer replayed for the key (a
            // handler's own 409 "already exists"): that is the request's outcome.
            let conflict = self.status() == http::StatusCode::CONFLICT
                || self.headers().get("grpc-status").is_some_and(|code| {
                    GrpcCode::from_header(code.as_bytes()) == GrpcCode::Aborted
                });
            conflict && !self.headers().contains_key("idempotency-replayed")
        }
    }
}
