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

/// Permits live in one of two places. `free` is an atomic count: taking and returning a permit
/// there is one atomic operation, with no lock. `handoff` is a semaphore, empty while nobody waits:
/// a permit returned while calls are queued goes there, to the longest waiter (FIFO). tokio's
/// semaphore takes a lock on every release, so it is only used when someone waits.
#[derive(Debug)]
pub(crate) struct Partition {
    pub(crate) name: Arc<str>,
    pub(crate) limits: Limits,
    free: AtomicUsize,
    pub(crate) handoff: Arc<Semaphore>,
    queued: AtomicUsize,
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
            free: AtomicUsize::new(limits.concurrency),
            handoff: Arc::new(Semaphore::new(0)),
            queued: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
        }
    }

    /// Takes a free permit without waiting: from the free count, or one left in the handoff
    /// semaphore by a waiter that gave up. Lock-free.
    #[inline]
    pub(crate) fn try_acquire(&self) -> bool {
        let mut free = self.free.load(Ordering::SeqCst);
        while free > 0 {
            match self.free.compare_exchange_weak(
                free,
                free - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return true,
                Err(seen) => free = seen,
            }
        }
        match self.handoff.try_acquire() {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// Whether calls are waiting (a new call then queues behind them).
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > 0
    }

    /// Returns a permit: to the free count, then on to the waiters if there are any. (A waiter
    /// counts itself before it looks at the free count, and a release adds to the free count
    /// before it looks for waiters, so one of them always sees the other.)
    #[inline]
    pub(crate) fn release(&self) {
        self.free.fetch_add(1, Ordering::SeqCst);
        if self.has_waiters() && self.take_free() {
            self.handoff.add_permits(1);
        }
    }

    #[inline]
    fn take_free(&self) -> bool {
        self.free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Takes a place in the queue, or `false` if it is full.
    pub(crate) fn enqueue(&self) -> bool {
        let before = self.queued.fetch_add(1, Ordering::SeqCst);
        if before < self.limits.queue {
            return true;
        }
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.rejected.fetch_add(1, Ordering::Relaxed);
        false
    }

    pub(crate) fn dequeue(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
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
            in_flight: self.limits.concurrency.saturating_sub(
                self.free.load(Ordering::SeqCst) + self.handoff.available_permits(),
            ),
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
    #[inline]
    pub(crate) fn new(partition: Arc<Partition>) -> Self {
        BulkheadPermit { partition }
    }
}

impl Drop for BulkheadPermit {
    #[inline]
    fn drop(&mut self) {
        self.partition.release();
    }
}
