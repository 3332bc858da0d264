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
    pub(crate) fn new(_route: &str) -> RetryMetrics {
        RetryMetrics
    }

    pub(crate) fn scheduled(&self, _kind: usize) {}

    pub(crate) fn stopped(&self, _reason: &crate::retry::RetryStop) {}
}
