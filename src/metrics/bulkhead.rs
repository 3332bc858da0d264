//! A bulkhead partition's instruments, registered once per declared partition (and once for
//! all per-key partitions together, labelled `per_key`: keys are not labels).

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::{
    BULKHEAD_IN_FLIGHT, BULKHEAD_LIMIT, BULKHEAD_QUEUED, BULKHEAD_REJECTED, BULKHEAD_WAIT_TIME,
};

/// The `partition` label of every per-key partition.
pub(crate) const PER_KEY: &str = "per_key";

/// The handles of one partition's instruments (shared by the per-key partitions). The gauges
/// are up-down counts, so the per-key partitions add up.
pub(crate) struct PartitionMetrics {
    in_flight: Gauge,
    queued: Gauge,
    limit: Gauge,
    full: Counter,
    timed_out: Counter,
    wait_time: Histogram,
}

impl PartitionMetrics {
    /// Registers the instruments of partition `name`.
    pub(crate) fn new(name: &str) -> PartitionMetrics {
        let partition = || ("partition", name.to_owned());
        let reason = |r: &'static str| [partition(), ("reason", r.to_owned())];
        PartitionMetrics {
            in_flight: gauge!(BULKHEAD_IN_FLIGHT, &[partition()]),
            queued: gauge!(BULKHEAD_QUEUED, &[partition()]),
            limit: gauge!(BULKHEAD_LIMIT, &[partition()]),
            full: counter!(BULKHEAD_REJECTED, &reason("full")),
            timed_out: counter!(BULKHEAD_REJECTED, &reason("timeout")),
            wait_time: histogram!(BULKHEAD_WAIT_TIME, &[partition()]),
        }
    }

    /// Handles that record nothing: the partition a client without a bulkhead passes its calls
    /// through, which is not a bulkhead anyone declared.
    pub(crate) fn unrecorded() -> PartitionMetrics {
        PartitionMetrics {
            in_flight: Gauge::noop(),
            queued: Gauge::noop(),
            limit: Gauge::noop(),
            full: Counter::noop(),
            timed_out: Counter::noop(),
            wait_time: Histogram::noop(),
        }
    }

    /// A call was admitted (`1.0`) or finished (`-1.0`).
    #[inline]
    pub(crate) fn in_flight(&self, change: f64) {
        self.in_flight.increment(change);
    }

    /// A call joined (`1.0`) or left (`-1.0`) the queue.
    pub(crate) fn queued(&self, change: f64) {
        self.queued.increment(change);
    }

    /// The partition's limit moved by `change` (its creation adds it, its drop takes it away).
    pub(crate) fn limit(&self, change: f64) {
        self.limit.increment(change);
    }

    /// A call found the queue full.
    pub(crate) fn full(&self) {
        self.full.increment(1);
    }

    /// A queued call waited past its bound.
    pub(crate) fn timed_out(&self) {
        self.timed_out.increment(1);
    }

    /// A queued call was admitted after `wait`.
    pub(crate) fn waited(&self, wait: std::time::Duration) {
        self.wait_time.record(wait.as_secs_f64());
    }
}

impl std::fmt::Debug for PartitionMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionMetrics").finish_non_exhaustive()
    }
}
