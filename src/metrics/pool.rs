//! A pool's instruments, registered once per pool (per endpoint).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::{
    OPEN_CONNECTIONS, POOL_CLOSED, POOL_CONNECT_FAILURES, POOL_CREATED, POOL_MAX, POOL_PENDING,
    POOL_RESENDS, POOL_TIMEOUTS, POOL_WAIT_TIME,
};

/// Why a pool closed a connection (the `reason` label of `stanchion.pool.connection.closed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    Idle,
    Expired,
    Broken,
    Retired,
}

/// The handles of one pool's instruments. The gauges are up-down counts: each pool adds what
/// it holds and takes it away again when it changes or is dropped, so pools that share an
/// endpoint's labels (two clients, a pool draining beside its replacement) add up, and a
/// dropped pool leaves nothing behind.
pub(crate) struct PoolMetrics {
    max: Gauge,
    max_size: usize,
    active: Gauge,
    idle: Gauge,
    pending: Gauge,
    /// What this pool last added to `active`, `idle`, `pending`.
    published: [AtomicUsize; 3],
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
        max.increment(max_size as f64);
        PoolMetrics {
            max,
            max_size,
            active: gauge!(OPEN_CONNECTIONS, &with("http.connection.state", "active")),
            idle: gauge!(OPEN_CONNECTIONS, &with("http.connection.state", "idle")),
            pending: gauge!(POOL_PENDING, &labels),
            published: Default::default(),
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

    /// Publishes the gauges: connections active and idle, waiting checkouts (what changed
    /// since the last time).
    pub(crate) fn gauges(&self, active: usize, idle: usize, pending: usize) {
        for ((gauge, published), now) in [&self.active, &self.idle, &self.pending]
            .into_iter()
            .zip(&self.published)
            .zip([active, idle, pending])
        {
            let before = published.swap(now, Ordering::Relaxed);
            gauge.increment(now as f64 - before as f64);
        }
    }
}

impl Drop for PoolMetrics {
    /// A dropped pool takes away what it added.
    fn drop(&mut self) {
        self.gauges(0, 0, 0);
        self.max.decrement(self.max_size as f64);
    }
}
