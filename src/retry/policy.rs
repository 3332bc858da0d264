//! Which outcomes a route retries, and when repeating a request is safe: the protocol half of
//! the retry decision, read from a [`Class`]'s facts — the same rules for a response and for an
//! error.
//!
//! A request is gRPC by its content type (`application/grpc…`); every other request is judged
//! as HTTP, even when its outcome carries a gRPC code (a nested client's `tonic::Status`).
//!
//! | outcome | worth retrying | safe to repeat |
//! |---|---|---|
//! | never sent (connect failure, `REFUSED_STREAM`, unprocessed GOAWAY, an open breaker, a pool checkout) | — (transparent: once, free) | always |
//! | gRPC, anything that may have been sent (a status, a reset, a lost connection, a per-try timeout) | its code is in the method's retryable codes (gRFC A6; default UNAVAILABLE) | the codes decide: yes |
//! | gRPC, response headers received (not trailers-only) | no: the call is committed (gRFC A6) | — |
//! | HTTP response | its status is in the retryable statuses (default 408, 429, 500, 502, 503, 504) | an idempotent method (RFC 9110 §9.2.2) or an idempotency key |
//! | HTTP error (reset, lost connection, per-try timeout) | its kind is transport, timeout, unavailable or a refusal | an idempotent method or a key |
//! | the call's deadline ran out, no endpoint, a full bulkhead | never | — |

use std::fmt;

use super::RetryStop;
use crate::classify::{Class, GrpcCode, GrpcCodes, Kind, ServerHint};
use crate::error::ConfigError;

/// The HTTP statuses retried by default: 408, 429, 500, 502, 503, 504 — the statuses where
/// another attempt can get another answer (501, 505 and the like will not change).
pub const DEFAULT_RETRYABLE_STATUSES: [u16; 6] = [408, 429, 500, 502, 503, 504];

/// A set of HTTP status codes (100 to 999).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Statuses([u64; 16]);

impl Statuses {
    pub(crate) const NONE: Statuses = Statuses([0; 16]);

    /// The set of `codes`, each checked to be a status (100 to 999).
    pub(crate) fn of(codes: impl IntoIterator<Item = u16>) -> Result<Statuses, ConfigError> {
        let mut set = Statuses::NONE;
        for code in codes {
            if !(100..=999).contains(&code) {
                return Err(ConfigError::new(
                    "retryable_statuses",
                    format!("{code} is not an HTTP status (100 to 999)"),
                ));
            }
            set.0[usize::from(code / 64)] |= 1 << (code % 64);
        }
        Ok(set)
    }

    pub(crate) fn contains(&self, code: u16) -> bool {
        code < 1024 && self.0[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }
}

impl Default for Statuses {
    fn default() -> Self {
        let mut set = Statuses::NONE;
        for code in DEFAULT_RETRYABLE_STATUSES {
            set.0[usize::from(code / 64)] |= 1 << (code % 64);
        }
        set
    }
}

impl fmt::Debug for Statuses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries((100..1000).filter(|c| self.contains(*c)))
            .finish()
    }
}

/// How an attempt ended, as the retry policy tells outcomes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Observed {
    /// A response whose head decides (HTTP; gRPC trailers-only or a non-200 status).
    Response,
    /// A response whose verdict is in its trailers: its headers arrived, so the call is
    /// committed (gRFC A6) and is handed to the caller as it is.
    Committed,
    /// A keyed request's `409` / `ABORTED`: the first request with the key is still running.
    Conflict,
    /// An error that ends the call whatever the policy: the deadline ran out, no endpoint can
    /// take the call, the bulkhead refused it, the request itself is invalid.
    Final,
    /// Any other error: the transport, a per-try timeout, a refusal about one endpoint.
    Error,
}

/// The retryable outcomes of one route.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Retryable {
    pub(crate) codes: GrpcCodes,
    pub(crate) statuses: Statuses,
    /// An attempt cut by the per-try timeout is worth retrying whatever its code (gRPC's
    /// `perAttemptRecvTimeout`).
    pub(crate) per_try_timeouts: bool,
}

impl Retryable {
    /// Why this outcome is not to be repeated, if it is not: not worth it, the server asked,
    /// or not safe (`method_safe`: an idempotent method or an idempotency key).
    pub(crate) fn refusal(
        &self,
        class: &Class,
        observed: Observed,
        request: Request,
    ) -> Option<RetryStop> {
        match observed {
            Observed::Committed => return Some(RetryStop::Committed),
            Observed::Final => return Some(RetryStop::NotRetryable),
            // A keyed request: the key makes it safe, and the conflict says to wait.
            Observed::Conflict => return None,
            Observed::Response | Observed::Error => {}
        }
        if class.hint() == ServerHint::DoNotRetry {
            return Some(RetryStop::ServerAskedNotToRetry);
        }
        // A gRPC call is judged by its code, so its method's codes say whether it may be
        // repeated (gRFC A6); anything else by its status, or its kind for an error.
        let code = class.grpc_code().filter(|_| request.grpc);
        // An attempt the per-try timeout cut (an error of the client's own; a server's
        // DEADLINE_EXCEEDED is a response): gRPC retries it whatever the method's codes when its
        // policy sets `perAttemptRecvTimeout`.
        let cut = observed == Observed::Error && class.is_per_try_cut();
        let worth = (cut && self.per_try_timeouts) || self.worth_retrying(class, code);
        if !worth {
            return Some(RetryStop::NotRetryable);
        }
        let safe = class.is_never_sent() || code.is_some() || request.method_safe;
        (!safe).then_some(RetryStop::NotSafeToRepeat)
    }

    fn worth_retrying(&self, class: &Class, code: Option<GrpcCode>) -> bool {
        if class.kind() == Kind::Success {
            return false;
        }
        match (code, class.status()) {
            (Some(code), _) => self.codes.contains(code),
            (None, Some(status)) => self.statuses.contains(status),
            (None, None) => matches!(
                class.kind(),
                Kind::Transport | Kind::Timeout | Kind::Unavailable | Kind::Refused
            ),
        }
    }
}

/// What the policy needs to know of the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    /// A gRPC call (its content type): judged by its code and its method's retryable codes.
    pub(crate) grpc: bool,
    /// An idempotent HTTP method, or an idempotency key.
    pub(crate) method_safe: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let default = Statuses::default();
        for code in 100..1000 {
            assert_eq!(
                default.contains(code),
                DEFAULT_RETRYABLE_STATUSES.contains(&code),
                "{code}"
            );
        }
        assert!(Statuses::of([99]).is_err());
        assert!(Statuses::of([1000]).is_err());
        let set = Statuses::of([100, 999, 503]).unwrap();
        assert!(set.contains(100) && set.contains(999) && set.contains(503));
        assert!(!set.contains(500) && !set.contains(1023) && !set.contains(u16::MAX));
        assert_eq!(format!("{set:?}"), "{100, 503, 999}");
    }
}
