//! Without feature `metrics`: the same calls, recording nothing (compiled away).

use std::time::Duration;

/// Why a pool closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    Idle,
    Expired,
    Broken,
    Retired,
}

/// A pool's instruments: none.
pub(crate) struct PoolMetrics;

impl PoolMetrics {
    pub(crate) fn new(_endpoint: &str, _max_size: usize) -> PoolMetrics {
        PoolMetrics
    }

    pub(crate) fn checkout(&self, _waited: Duration) {}

    pub(crate) fn checkout_timeout(&self) {}

    pub(crate) fn created(&self) {}

    pub(crate) fn closed(&self, _reason: Closed) {}

    pub(crate) fn connect_failure(&self) {}

    pub(crate) fn resent(&self, _after_close: bool) {}

    pub(crate) fn gauges(&self, _active: usize, _idle: usize, _pending: usize) {}
}

/// A retry layer's instruments: none.
#[derive(Debug)]
pub(crate) struct RetryMetrics;

impl RetryMetrics {
    pub(crate) fn new(_client: &str, _route: &str) -> RetryMetrics {
        RetryMetrics
    }

    pub(crate) fn scheduled(&self, _kind: usize) {}

    pub(crate) fn stopped(&self, _reason: &crate::retry::RetryStop) {}

    pub(crate) fn attempt(&self, _outcome: Option<usize>) {}

    pub(crate) fn call(&self, _outcome: Option<usize>, _started: CallStart) {}

    #[allow(dead_code)]
    pub(crate) fn sending(&self, _remaining: Option<std::time::Duration>) {}

    pub(crate) fn deadline_exceeded(&self) {}
}

/// When a call started: nothing kept.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallStart;

impl CallStart {
    pub(crate) fn now() -> CallStart {
        CallStart
    }
}

/// What the idempotency server layer did with a keyed request.
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdempotencyOutcome {
    Claimed,
    Replayed,
    InFlight,
    Mismatch,
    MissingKey,
    InvalidKey,
    NoScope,
    BodyTooLarge,
    BodyUnreadable,
    StoreUnavailable,
}

/// An idempotency store call that failed.
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOperation {
    Claim,
    Renew,
    Complete,
    Release,
}

/// An idempotency server layer's instruments: none.
#[cfg(feature = "http")]
pub(crate) struct IdempotencyMetrics;

#[cfg(feature = "http")]
impl IdempotencyMetrics {
    pub(crate) fn new() -> IdempotencyMetrics {
        IdempotencyMetrics
    }

    pub(crate) fn unregistered() -> IdempotencyMetrics {
        IdempotencyMetrics
    }

    pub(crate) fn request(&self, _outcome: IdempotencyOutcome) {}

    pub(crate) fn renewal(&self) {}

    pub(crate) fn slow_renewal(&self) {}

    pub(crate) fn lease_lost(&self) {}

    pub(crate) fn store_error(&self, _operation: StoreOperation) {}
}

/// A breaker's instruments: none.
#[derive(Debug)]
pub(crate) struct BreakerMetrics;

impl BreakerMetrics {
    pub(crate) fn new(_name: &str) -> BreakerMetrics {
        BreakerMetrics
    }

    pub(crate) fn entered(&self, _state: crate::breaker::BreakerState) {}

    pub(crate) fn publish(&self, _state: crate::breaker::BreakerState) {}

    pub(crate) fn rejected(&self) {}
}

/// A balancer's instruments: none.
#[derive(Debug)]
pub(crate) struct BalancerMetrics;

impl BalancerMetrics {
    pub(crate) fn new(_target: &str) -> BalancerMetrics {
        BalancerMetrics
    }

    pub(crate) fn resolved(&self, _endpoints: usize) {}

    pub(crate) fn endpoints_now(&self, _endpoints: usize) {}

    pub(crate) fn failed(&self) {}

    pub(crate) fn stale_episode(&self) {}

    pub(crate) fn given_up(&self) {}

    #[inline]
    pub(crate) fn panic(&self, _panic: bool) {}
}

/// The `partition` label of every per-key partition.
pub(crate) const PER_KEY: &str = "per_key";

/// A bulkhead partition's instruments: none.
#[derive(Debug)]
pub(crate) struct PartitionMetrics;

impl PartitionMetrics {
    pub(crate) fn new(_name: &str) -> PartitionMetrics {
        PartitionMetrics
    }

    pub(crate) fn unrecorded() -> PartitionMetrics {
        PartitionMetrics
    }

    #[inline]
    pub(crate) fn in_flight(&self, _change: f64) {}

    pub(crate) fn queued(&self, _change: f64) {}

    pub(crate) fn limit(&self, _change: f64) {}

    pub(crate) fn full(&self) {}

    pub(crate) fn timed_out(&self) {}

    pub(crate) fn waited(&self, _wait: std::time::Duration) {}
}

/// A retry budget's instruments: none.
#[derive(Debug)]
pub(crate) struct BudgetMetrics;

impl BudgetMetrics {
    pub(crate) fn new(_name: &str, _balance: f64) -> BudgetMetrics {
        BudgetMetrics
    }

    pub(crate) fn withdrawal(&self, _granted: bool, _balance: f64) {}
}
