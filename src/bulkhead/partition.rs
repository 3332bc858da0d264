//! One partition: a concurrency limit, a bounded FIFO queue, and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

/// The limits of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Calls that may wait for a permit; more are rejected at once.
    pub queue: usize,
    /// The longest a call waits (also capped by its remaining deadline).
    pub max_wait: Duration,
}

/// 100 concurrent, a queue of 50, a 1 s wait.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            concurrency: 100,
            queue: 50,
            max_wait: Duration::from_secs(1),
        }
    }
}

/// A partition's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionStats {
    /// The partition's name.
    pub name: Arc<str>,
    /// Its limits.
    pub limits: Limits,
    /// Calls holding a permit now.
    pub in_flight: usize,
    /// Calls waiting for a permit now.
    pub queued: usize,
    /// Calls rejected because the queue was full, since creation.
    pub rejected: u64,
    /// Calls that waited as long as they could and gave up, since creation.
    pub timed_out: u64,
    /// Calls admitted after waiting, since creation.
    pub waited: u64,
    /// Their total wait.
    pub total_wait: Duration,
}

#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) name: Arc<str>,
    pub(crate) limits: Limits,
    pub(crate) semaphore: Arc<Semaphore>,
    pub(crate) queued: AtomicUsize,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
}

impl Partition {
    pub(crate) fn new(name: Arc<str>, limits: Limits) -> Self {
        Partition {
            name,
            limits,
            semaphore: Arc::new(Semaphore::new(limits.concurrency)),
            queued: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
        }
    }

    /// Takes a place in the queue, or `false` if it is full.
    pub(crate) fn enqueue(&self) -> bool {
        let before = self.queued.fetch_add(1, Ordering::AcqRel);
        if before < self.limits.queue {
            return true;
        }
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.rejected.fetch_add(1, Ordering::Relaxed);
        false
    }

    pub(crate) fn dequeue(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn record_wait(&self, wait: Duration) {
        self.waited.fetch_add(1, Ordering::Relaxed);
        self.wait_nanos.fetch_add(
            wait.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    pub(crate) fn record_timeout(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> PartitionStats {
        PartitionStats {
            name: self.name.clone(),
            limits: self.limits,
            in_flight: self
                .limits
                .concurrency
                .saturating_sub(self.semaphore.available_permits()),
            queued: self.queued.load(Ordering::Acquire),
            rejected: self.rejected.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// A permit of one partition, released when dropped.
#[derive(Debug)]
pub struct BulkheadPermit {
    partition: Arc<Partition>,
}

impl BulkheadPermit {
    /// Wraps a permit taken from `partition`'s semaphore (and forgotten there).
    pub(crate) fn new(partition: Arc<Partition>) -> Self {
        BulkheadPermit { partition }
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.partition.semaphore.add_permits(1);
    }
}
