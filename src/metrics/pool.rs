//! A pool's instruments, registered once per pool (per endpoint).

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::{
    OPEN_CONNECTIONS, POOL_CLOSED, POOL_CONNECT_FAILURES, POOL_CREATED, POOL_MAX, POOL_PENDING,
    POOL_RESENDS, POOL_TIMEOUTS, POOL_UTILIZATION, POOL_WAIT_TIME,
};

/// Why a pool closed a connection (the `reason` label of `stanchion.pool.connection.closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    Idle,
    Expired,
    Broken,
    Retired,
}

/// The handles of one pool's instruments.
pub(crate) struct PoolMetrics {
    max: Gauge,
    active: Gauge,
    idle: Gauge,
    utilization: Gauge,
    pending: Gauge,
    wait_time: Histogram,
    timeouts: Counter,
    created: Counter,
    closed: [Counter; 4],
    connect_failures: Counter,
    resent_unsent: Counter,
    resent_after_close: Counter,
}

impl PoolMetrics {
    /// Registers the instruments of the pool for `endpoint` (`address:port`, or any name).
    pub(crate) fn new(endpoint: &str, max_size: usize) -> PoolMetrics {
        let (address, port) = match endpoint.parse::<std::net::SocketAddr>() {
            Ok(addr) => (addr.ip().to_string(), addr.port().to_string()),
            Err(_) => (endpoint.to_owned(), String::new()),
        };
        let labels = [("server.address", address), ("server.port", port)];
        let with = |key: &'static str, value: &'static str| {
            let mut all = labels.to_vec();
            all.push((key, value.to_owned()));
            all
        };
        let max = gauge!(POOL_MAX, &labels);
        max.set(max_size as f64);
        PoolMetrics {
            max,
            active: gauge!(OPEN_CONNECTIONS, &with("http.connection.state", "active")),
            idle: gauge!(OPEN_CONNECTIONS, &with("http.connection.state", "idle")),
            utilization: gauge!(POOL_UTILIZATION, &labels),
            pending: gauge!(POOL_PENDING, &labels),
            wait_time: histogram!(POOL_WAIT_TIME, &labels),
            timeouts: counter!(POOL_TIMEOUTS, &labels),
            created: counter!(POOL_CREATED, &labels),
            closed: [
                counter!(POOL_CLOSED, &with("reason", "idle")),
                counter!(POOL_CLOSED, &with("reason", "expired")),
                counter!(POOL_CLOSED, &with("reason", "broken")),
                counter!(POOL_CLOSED, &with("reason", "retired")),
            ],
            connect_failures: counter!(POOL_CONNECT_FAILURES, &labels),
            resent_unsent: counter!(POOL_RESENDS, &with("reason", "unsent")),
            resent_after_close: counter!(POOL_RESENDS, &with("reason", "closed_before_response")),
        }
    }

    pub(crate) fn checkout(&self, waited: Duration) {
        self.wait_time.record(waited.as_secs_f64());
    }

    pub(crate) fn checkout_timeout(&self) {
        self.timeouts.increment(1);
    }

    pub(crate) fn created(&self) {
        self.created.increment(1);
    }

    pub(crate) fn closed(&self, reason: Closed) {
        self.closed[reason as usize].increment(1);
    }

    pub(crate) fn connect_failure(&self) {
        self.connect_failures.increment(1);
    }

    pub(crate) fn resent(&self, after_close: bool) {
        if after_close {
            self.resent_after_close.increment(1);
        } else {
            self.resent_unsent.increment(1);
        }
    }

    /// Publishes the gauges: the size limit, connections active and idle, utilisation,
    /// waiting checkouts.
    pub(crate) fn gauges(&self, active: usize, idle: usize, max_size: usize, pending: usize) {
        self.max.set(max_size as f64);
        self.active.set(active as f64);
        self.idle.set(idle as f64);
        self.utilization.set(active as f64 / max_size.max(1) as f64);
        self.pending.set(pending as f64);
    }
}
