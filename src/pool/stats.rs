//! A pool's numbers.

use std::sync::Arc;
use std::time::Duration;

/// A snapshot of one pool's numbers: the four a pool must expose — utilisation, checkout wait,
/// connection churn, errors — and the gauges behind them.
///
/// Alert on [`utilisation`](Self::utilisation) above 0.8 for a minute, and on any
/// [`checkout_timeouts`](Self::checkout_timeouts).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// The endpoint the pool connects to.
    pub endpoint: Arc<str>,
    /// The configured maximum number of connections.
    pub max_size: usize,
    /// Connections open now.
    pub open: usize,
    /// Connections carrying at least one request now.
    pub in_use: usize,
    /// Open connections carrying no request.
    pub idle: usize,
    /// Requests in flight (several per HTTP/2 connection).
    pub in_flight: usize,
    /// Connection attempts in flight.
    pub connecting: usize,
    /// Callers waiting for a connection now.
    pub waiters: usize,
    /// Successful checkouts so far.
    pub checkouts: u64,
    /// Checkouts that had to wait (for a return or a new connection).
    pub waited_checkouts: u64,
    /// Total time checkouts waited.
    pub total_wait: Duration,
    /// The longest a checkout waited.
    pub max_wait: Duration,
    /// Connections opened so far (the creation rate is its derivative).
    pub created: u64,
    /// Connections closed so far (idle, expired, rotated, broken).
    pub closed: u64,
    /// Checkouts that failed with [`Error::PoolTimeout`](crate::Error::PoolTimeout).
    pub checkout_timeouts: u64,
    /// Connection attempts that failed or timed out.
    pub connect_failures: u64,
    /// Requests a connection handed back unsent and the pool sent on another connection.
    pub resent: u64,
    /// Requests whose reused connection closed before the response began, sent once more on a
    /// fresh connection (idempotent or keyed requests with a copyable body only).
    pub resent_after_close: u64,
}

impl PoolStats {
    /// Connections in use over the maximum size, in `[0, 1]`.
    pub fn utilisation(&self) -> f64 {
        self.in_use as f64 / self.max_size as f64
    }

    /// The mean wait of the checkouts that waited.
    pub fn mean_wait(&self) -> Duration {
        match u32::try_from(self.waited_checkouts) {
            Ok(0) => Duration::ZERO,
            Ok(n) => self.total_wait / n,
            Err(_) => self.total_wait.div_f64(self.waited_checkouts as f64),
        }
    }
}
