//! The idempotency server layer's instruments, registered once per layer (when it is built).
//!
//! Labels come from fixed lists: the outcome of a keyed request and the store operation that
//! failed. Handles are registered up front, one per label value, so recording is an index into
//! an array (no key is built, nothing is allocated per request).

// The server layer needs feature `http`; without it, nothing records.
#![cfg_attr(not(feature = "http"), allow(dead_code))]

use metrics::{Counter, counter};

/// `stanchion.idempotency.requests`.
pub const IDEMPOTENCY_REQUESTS: &str = "stanchion.idempotency.requests";
/// `stanchion.idempotency.lease.renewals`.
pub const IDEMPOTENCY_LEASE_RENEWALS: &str = "stanchion.idempotency.lease.renewals";
/// `stanchion.idempotency.lease.slow_renewals`.
pub const IDEMPOTENCY_LEASE_SLOW_RENEWALS: &str = "stanchion.idempotency.lease.slow_renewals";
/// `stanchion.idempotency.lease.lost`.
pub const IDEMPOTENCY_LEASE_LOST: &str = "stanchion.idempotency.lease.lost";
/// `stanchion.idempotency.store.errors`.
pub const IDEMPOTENCY_STORE_ERRORS: &str = "stanchion.idempotency.store.errors";

/// What the layer did with a keyed request (the `outcome` label of
/// `stanchion.idempotency.requests`), in [`OUTCOME_LABELS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdempotencyOutcome {
    /// The key was claimed: the handler ran.
    Claimed,
    /// A stored response was replayed.
    Replayed,
    /// `409`: the first request with the key still runs.
    InFlight,
    /// `422`: the key was used for a different request.
    Mismatch,
    /// `400`: a POST or PATCH without a key, on a layer that requires one.
    MissingKey,
    /// `400`: the key is malformed.
    InvalidKey,
    /// `401`: the request has no scope (tenant).
    NoScope,
    /// `413`: the body is over the limit read to fingerprint it.
    BodyTooLarge,
    /// `400`: the body could not be read.
    BodyUnreadable,
    /// `503`: the store failed the claim (or no lease token could be drawn).
    StoreUnavailable,
}

/// The `outcome` label values, in [`IdempotencyOutcome`] order.
pub(crate) const OUTCOME_LABELS: [&str; 10] = [
    "claimed",
    "replayed",
    "in_flight",
    "mismatch",
    "missing_key",
    "invalid_key",
    "no_scope",
    "body_too_large",
    "body_unreadable",
    "store_unavailable",
];

/// A store call that failed (the `operation` label of `stanchion.idempotency.store.errors`), in
/// [`OPERATION_LABELS`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOperation {
    Claim,
    Renew,
    Complete,
    Release,
}

/// The `operation` label values, in [`StoreOperation`] order.
pub(crate) const OPERATION_LABELS: [&str; 4] = ["claim", "renew", "complete", "release"];

/// The handles of one idempotency server layer's instruments (shared by the layer and its
/// services).
pub(crate) struct IdempotencyMetrics {
    /// By outcome, in [`IdempotencyOutcome`] order.
    requests: [Counter; 10],
    renewals: Counter,
    slow_renewals: Counter,
    lost: Counter,
    /// By operation, in [`StoreOperation`] order.
    store_errors: [Counter; 4],
}

impl IdempotencyMetrics {
    /// Registers the layer's instruments with the installed recorder.
    pub(crate) fn new() -> IdempotencyMetrics {
        IdempotencyMetrics {
            requests: OUTCOME_LABELS
                .map(|outcome| counter!(IDEMPOTENCY_REQUESTS, "outcome" => outcome)),
            renewals: counter!(IDEMPOTENCY_LEASE_RENEWALS),
            slow_renewals: counter!(IDEMPOTENCY_LEASE_SLOW_RENEWALS),
            lost: counter!(IDEMPOTENCY_LEASE_LOST),
            store_errors: OPERATION_LABELS
                .map(|operation| counter!(IDEMPOTENCY_STORE_ERRORS, "operation" => operation)),
        }
    }

    /// Handles that record nothing: a builder's, until [`new`](Self::new) registers the layer's.
    pub(crate) fn unregistered() -> IdempotencyMetrics {
        IdempotencyMetrics {
            requests: std::array::from_fn(|_| Counter::noop()),
            renewals: Counter::noop(),
            slow_renewals: Counter::noop(),
            lost: Counter::noop(),
            store_errors: std::array::from_fn(|_| Counter::noop()),
        }
    }

    /// A keyed request was claimed, replayed or refused.
    pub(crate) fn request(&self, outcome: IdempotencyOutcome) {
        self.requests[outcome as usize].increment(1);
    }

    /// A lease renewal came back (kept, lost or failed).
    pub(crate) fn renewal(&self) {
        self.renewals.increment(1);
    }

    /// A renewal was still in flight when the lease's end passed.
    pub(crate) fn slow_renewal(&self) {
        self.slow_renewals.increment(1);
    }

    /// A lease was lost while its handler ran: another request may run the key.
    pub(crate) fn lease_lost(&self) {
        self.lost.increment(1);
    }

    /// A store call failed (an error, not a lease no longer held).
    pub(crate) fn store_error(&self, operation: StoreOperation) {
        self.store_errors[operation as usize].increment(1);
    }
}
