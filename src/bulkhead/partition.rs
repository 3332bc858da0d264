//! One partition: a concurrency limit, a bounded FIFO queue, and its counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sync::{AtomicIsize, AtomicUsize};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::clock::Origin;
use crate::metrics::PartitionMetrics;

/// An adaptive concurrency limit (AIMD), in the spirit of Netflix's concurrency-limits: the limit
/// starts at `initial`, grows by one after a success that found the partition at its limit, and
/// shrinks to `backoff` times itself after an overload signal — a 429 / 503 /
/// RESOURCE_EXHAUSTED / UNAVAILABLE answer, an overload or timeout error, or a call slower than
/// `slow_call`. It stays between `min` and the partition's `concurrency`, which becomes its
/// maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct AdaptiveLimit {
    /// The starting limit (default 20).
    pub initial: usize,
    /// The lowest limit (default 1).
    pub min: usize,
    /// The factor applied on an overload signal, in (0, 1) (default 0.9).
    pub backoff: f64,
    /// Calls slower than this count as an overload signal (default: none).
    #[cfg_attr(
        feature = "serde",
        serde(
            skip_serializing_if = "Option::is_none",
            with = "crate::config::duration::option"
        )
    )]
    pub slow_call: Option<Duration>,
}

/// Start at 20, at least 1, ×0.9 on overload, no latency signal.
impl Default for AdaptiveLimit {
    fn default() -> Self {
        AdaptiveLimit {
            initial: 20,
            min: 1,
            backoff: 0.9,
            slow_call: None,
        }
    }
}

/// How a call went, for the adaptive limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    Success,
    Overload,
    /// No signal (cancelled, or an outcome that says nothing about load).
    None,
}

/// The limits of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields, default)
)]
pub struct Limits {
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Calls that may wait for a permit; more are rejected at once.
    pub queue: usize,
    /// The longest a call waits (also capped by its remaining deadline).
    #[cfg_attr(feature = "serde", serde(with = "crate::config::duration"))]
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
    /// The concurrency limit now (moves in adaptive mode).
    pub limit: usize,
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
    /// Free permits; below zero after the adaptive limit shrank under calls in flight (releases
    /// pay the debt before anyone is admitted).
    free: AtomicIsize,
    pub(crate) handoff: Arc<Semaphore>,
    /// The current limit.
    limit: AtomicUsize,
    adaptive: Option<AdaptiveLimit>,
    created: Origin,
    queued: AtomicUsize,
    /// Permits put in the handoff that nobody has claimed yet: handed to a waiter that has not
    /// run since (it still counts in `queued`, though admitted), or left there by one that gave
    /// up as it was handed one. The queue's occupancy is `queued - handed`: counting an
    /// admitted waiter as waiting refused calls while the queue had room.
    handed: AtomicUsize,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    /// For a per-key partition: the registry's generation of misses at its last use.
    used_at: AtomicU64,
    /// Feature `metrics` (nothing without it); shared by the per-key partitions.
    pub(crate) metrics: Arc<PartitionMetrics>,
}

impl Partition {
    pub(crate) fn new(
        name: Arc<str>,
        limits: Limits,
        adaptive: Option<AdaptiveLimit>,
        metrics: Arc<PartitionMetrics>,
    ) -> Self {
        let limit = adaptive.map_or(limits.concurrency, |a| {
            a.initial
                .clamp(a.min.min(limits.concurrency), limits.concurrency)
        });
        metrics.limit(limit as f64);
        Partition {
            metrics,
            name,
            limits,
            free: AtomicIsize::new(limit as isize),
            handoff: Arc::new(Semaphore::new(0)),
            limit: AtomicUsize::new(limit),
            adaptive,
            created: Origin::now(),
            queued: AtomicUsize::new(0),
            handed: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
            used_at: AtomicU64::new(0),
        }
    }

    /// Notes a use at the registry's generation `now` (a write only when it moved).
    #[inline]
    pub(crate) fn mark_used(&self, now: u64) {
        if self.used_at.load(Ordering::Relaxed) != now {
            self.used_at.store(now, Ordering::Relaxed);
        }
    }

    /// Whether it is stale at generation `now`: last used two generations or more before.
    pub(crate) fn stale_at(&self, now: u64) -> bool {
        self.used_at.load(Ordering::Relaxed) + 2 <= now
    }

    /// Whether nothing is in flight or waiting (a moment's view): every permit is free, or left
    /// in the handoff by a waiter that gave up as it was handed one.
    pub(crate) fn is_idle(&self) -> bool {
        let free = self.free.load(Ordering::SeqCst) + self.handoff.available_permits() as isize;
        self.queued.load(Ordering::SeqCst) == 0
            && free >= self.limit.load(Ordering::SeqCst) as isize
    }

    /// Takes a free permit without waiting: from the free count, or one left in the handoff
    /// semaphore by a waiter that gave up. Lock-free. `Some(true)` when it was the last one (the
    /// partition is now at its limit).
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<bool> {
        let mut free = self.free.load(Ordering::SeqCst);
        while free > 0 {
            match self.free.compare_exchange_weak(
                free,
                free - 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(free == 1),
                Err(seen) => free = seen,
            }
        }
        match self.handoff.try_acquire() {
            Ok(permit) => {
                permit.forget();
                self.claimed();
                Some(true)
            }
            Err(_) => None,
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
            // Counted before the permit can be claimed (a claim subtracts it). The waiter it
            // goes to is admitted now: it leaves the `queued` gauge (back on at its claim,
            // which its dequeue then takes away), as it leaves `PartitionStats::queued`.
            self.handed.fetch_add(1, Ordering::SeqCst);
            self.metrics.queued(-1.0);
            self.handoff.add_permits(1);
        }
    }

    /// A permit taken out of the handoff (by the waiter it was handed to, or by a call that
    /// found it left there).
    #[inline]
    pub(crate) fn claimed(&self) {
        self.handed.fetch_sub(1, Ordering::SeqCst);
        self.metrics.queued(1.0);
    }

    /// Waiters not yet admitted: the queue's occupancy.
    fn waiting(&self) -> usize {
        let queued = self.queued.load(Ordering::SeqCst);
        queued.saturating_sub(self.handed.load(Ordering::SeqCst))
    }

    #[inline]
    fn take_free(&self) -> bool {
        self.free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n > 0).then_some(n - 1)
            })
            .is_ok()
    }

    fn nanos_since_creation(&self) -> u64 {
        self.created.nanos()
    }

    /// Whether calls' outcomes move this partition's limit.
    #[inline]
    pub(crate) fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// Moves the adaptive limit after a call: +1 after a success at the limit, ×backoff after
    /// an overload signal.
    #[cold]
    #[inline(never)]
    fn adapt(&self, signal: Signal, at_full_use: bool, started: u64) {
        let Some(adaptive) = self.adaptive else {
            return;
        };
        let slow = match adaptive.slow_call {
            Some(threshold) if started != 0 => {
                let took = (self.nanos_since_creation() + 1).saturating_sub(started);
                Duration::from_nanos(took) > threshold
            }
            _ => false,
        };
        let signal = if slow { Signal::Overload } else { signal };
        let max = self.limits.concurrency;
        let floor = adaptive.min.min(max);
        // The new limit is computed inside the compare-and-swap and the permits moved by exactly
        // the change that swap made. (Reading the limit again after the swap — as before — saw
        // other threads' changes too, and moved permits by theirs: under concurrent signals the
        // partition leaked permits until it admitted nothing.)
        let mut after = 0;
        let update = self
            .limit
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |limit| {
                let next = next_limit(limit, signal, at_full_use, max, floor, adaptive.backoff);
                if let Some(next) = next {
                    after = next;
                }
                next
            });
        if let Ok(before) = update {
            self.metrics.limit(after as f64 - before as f64);
            self.moved(before, after);
        }
    }

    /// Moves the free permits by a change of the limit from `before` to `after`.
    fn moved(&self, before: usize, after: usize) {
        if after > before {
            // More permits (growth is one at a time): to the free count, or a waiter.
            for _ in before..after {
                self.release();
            }
        } else if before > after {
            self.free
                .fetch_sub((before - after) as isize, Ordering::SeqCst);
            tracing::debug!(partition = %self.name, limit = after, "bulkhead limit lowered");
        }
    }

    /// Takes a place in the queue, or `false` if it is full.
    pub(crate) fn enqueue(&self) -> bool {
        let before = self.queued.fetch_add(1, Ordering::SeqCst);
        // Waiters already handed a permit are not waiting any more: they do not fill the queue.
        let waiting = before.saturating_sub(self.handed.load(Ordering::SeqCst));
        if waiting < self.limits.queue {
            self.metrics.queued(1.0);
            return true;
        }
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.full();
        false
    }

    pub(crate) fn dequeue(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.metrics.queued(-1.0);
    }

    pub(crate) fn record_wait(&self, wait: Duration) {
        self.waited.fetch_add(1, Ordering::Relaxed);
        crate::clock::add_nanos(&self.wait_nanos, wait);
        self.metrics.waited(wait);
    }

    pub(crate) fn record_timeout(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
        self.metrics.timed_out();
    }

    pub(crate) fn stats(&self) -> PartitionStats {
        PartitionStats {
            name: self.name.clone(),
            limits: self.limits,
            limit: self.limit.load(Ordering::SeqCst),
            in_flight: (self.limit.load(Ordering::SeqCst) as isize
                - self.free.load(Ordering::SeqCst)
                - self.handoff.available_permits() as isize)
                .max(0) as usize,
            queued: self.waiting(),
            rejected: self.rejected.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            waited: self.waited.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// The adaptive limit after one call's signal (AIMD): +1 after a success that found the
/// partition at its limit, ×`backoff` (at least `floor`) after an overload; `None` when it does
/// not move.
fn next_limit(
    limit: usize,
    signal: Signal,
    at_full_use: bool,
    max: usize,
    floor: usize,
    backoff: f64,
) -> Option<usize> {
    match signal {
        Signal::Success if at_full_use && limit < max => Some(limit + 1),
        Signal::Overload => {
            let shrunk = ((limit as f64 * backoff) as usize).max(floor);
            (shrunk < limit).then_some(shrunk)
        }
        _ => None,
    }
}

/// A permit of one partition, released when dropped.
#[derive(Debug)]
pub struct BulkheadPermit {
    partition: Arc<Partition>,
    /// Taking it left no permit free.
    at_full_use: bool,
    /// When the call was admitted, in nanoseconds since the partition was created, plus one;
    /// zero when not tracked (only adaptive mode with a latency signal needs it). Eight bytes,
    /// not an `Option<Instant>`'s sixteen: the permit lives in every call's future.
    started: u64,
    signal: Signal,
}

impl BulkheadPermit {
    /// Wraps a permit taken from `partition`.
    #[inline]
    pub(crate) fn new(partition: Arc<Partition>, at_full_use: bool) -> Self {
        let started = match &partition.adaptive {
            Some(AdaptiveLimit {
                slow_call: Some(_), ..
            }) => partition.nanos_since_creation() + 1,
            _ => 0,
        };
        partition.metrics.in_flight(1.0);
        BulkheadPermit {
            partition,
            at_full_use,
            started,
            signal: Signal::None,
        }
    }

    /// Records how the call went, for an adaptive limit: `overload` for a 429 / 503 /
    /// RESOURCE_EXHAUSTED / UNAVAILABLE answer, an overload or a timeout; otherwise a success.
    pub fn observe(&mut self, overload: bool) {
        self.signal = if overload {
            Signal::Overload
        } else {
            Signal::Success
        };
    }
}

impl Drop for BulkheadPermit {
    #[inline]
    fn drop(&mut self) {
        if self.partition.is_adaptive() {
            self.partition
                .adapt(self.signal, self.at_full_use, self.started);
        }
        self.partition.metrics.in_flight(-1.0);
        self.partition.release();
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.metrics
            .limit(-(self.limit.load(Ordering::SeqCst) as f64));
    }
}

/// Model checks (`RUSTFLAGS="--cfg stanchion_loom" cargo test --release --lib loom`): every interleaving
/// of calls taking and returning permits while their signals move the adaptive limit.
#[cfg(all(test, stanchion_loom))]
#[path = "partition_loom.rs"]
mod loom_models;
