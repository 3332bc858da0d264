//! Outcome windows: what the breaker trips on. All lock-free, striped per thread.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// Per-thread stripes: two threads recording outcomes do not share a cache line.
pub(crate) const STRIPES: usize = 4;
/// A count window's counts are packed three to a `u64`, 21 bits each (calls, failures, slow
/// calls): a stripe holds at most 100,000 outcomes (the largest count window), well below 2²¹.
const FIELD: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD) - 1;

/// What a window holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
    pub(crate) consecutive_failures: u32,
}

/// The window a breaker trips on.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
    Consecutive(AtomicU32),
}

impl Window {
    /// Records one outcome at `now_nanos` in `stripe`; returns the tally after it when the
    /// outcome could bring a rate to its threshold: a failure or a slow call, a call that
    /// grows a window still filling (it may be the one that reaches the minimum number of
    /// calls), or a call that starts a new time slice (older calls just left the window).
    /// `None` after a plain success in a full window: it cannot raise a rate.
    #[inline]
    pub(crate) fn record(
        &self,
        stripe: usize,
        failure: bool,
        slow: bool,
        now_nanos: u64,
    ) -> Option<Tally> {
        let bad = failure || slow;
        match self {
            Window::Count(w) => {
                let grew = w.record(stripe, failure, slow);
                (bad || grew).then(|| w.tally())
            }
            Window::Time(w) => {
                let rolled = w.record(stripe, failure, slow, now_nanos);
                (bad || rolled).then(|| w.tally(now_nanos))
            }
            Window::Consecutive(run) => {
                if failure {
                    let consecutive_failures = run.fetch_add(1, Ordering::AcqRel).saturating_add(1);
                    Some(Tally {
                        consecutive_failures,
                        ..Tally::default()
                    })
                } else {
                    if run.load(Ordering::Relaxed) != 0 {
                        run.store(0, Ordering::Release);
                    }
                    None
                }
            }
        }
    }

    /// What the window holds at `now_nanos`.
    pub(crate) fn tally(&self, now_nanos: u64) -> Tally {
        match self {
            Window::Count(w) => w.tally(),
            Window::Time(w) => w.tally(now_nanos),
            Window::Consecutive(run) => Tally {
                consecutive_failures: run.load(Ordering::Acquire),
                ..Tally::default()
            },
        }
    }

    /// Forgets every outcome (on a state change).
    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
            Window::Consecutive(run) => run.store(0, Ordering::Release),
        }
    }
}

fn pack(calls: i64, failures: i64, slow: i64) -> u64 {
    (calls + (failures << FIELD) + (slow << (2 * FIELD))) as u64
}

impl Tally {
    /// Adds the counts packed in `value`.
    fn add_packed(&mut self, value: u64) {
        self.calls += value & FIELD_MASK;
        self.failures += (value >> FIELD) & FIELD_MASK;
        self.slow += (value >> (2 * FIELD)) & FIELD_MASK;
    }
}

/// The last `n` calls of each stripe: a ring of `n` outcome slots per stripe, with packed running
/// counts.
///
/// Each slot holds one outcome; recording swaps the new outcome in and adjusts the stripe's counts
/// by the difference from the outcome it replaced, so counts always agree with the slots. A stripe
/// is mostly one thread's (threads are spread over four), so one thread sees exactly its last `n`
/// calls, and the window as a whole holds up to the last `n` calls of each of the four stripes —
/// up to 4`n` calls, which is what the rate and the minimum number of calls are taken over.
///
/// **Stale stripes age out.** A thread that stopped calling would otherwise keep its old
/// outcomes in the window for ever. The window counts turns: every time any stripe's ring comes
/// round (`n` more calls on it), the turn count goes up by one. A stripe that has recorded nothing
/// for more than seven turns — by then the breaker has recorded at least 4`n` calls elsewhere,
/// as many as the whole window holds — no longer counts, until it records again. A stripe reads the turn
/// count on each call (a cache line written once per `n` calls) and writes its own mark only when
/// the count moved: the success path stays free of shared writes.
#[derive(Debug)]
pub(crate) struct CountWindow {
    stripes: Box<[CountStripe]>,
    /// Turns of any stripe's ring so far.
    turns: AtomicU64,
}

#[derive(Debug)]
#[repr(align(128))]
struct CountStripe {
    /// Outcomes recorded on this stripe: a `u64` never wraps (a `u32` did after 2³² calls, an
    /// hour at a million calls a second, and the ring then skipped slots).
    cursor: AtomicU64,
    counts: AtomicU64,
    slots: Box<[AtomicU8]>,
    /// The window's turn count at this stripe's last record.
    seen_turn: AtomicU64,
}

/// Turns after which a stripe that recorded nothing no longer counts. Seven: the other three
/// stripes may each be one call short of a turn (three turns in three calls), and the stripe's
/// own last call may complete one, so seven turns mean at least 4`n` calls elsewhere — the whole
/// window's capacity — since its last record (when threads do not share a stripe; two that do
/// may both count one wrap, or lose a cursor step: the window is statistical there).
const STALE_AFTER_TURNS: u64 = 7;

const PRESENT: u8 = 1;
const FAILED: u8 = 2;
const SLOW: u8 = 4;

fn slot_counts(slot: u8) -> (i64, i64, i64) {
    (
        i64::from(slot & PRESENT != 0),
        i64::from(slot & FAILED != 0),
        i64::from(slot & SLOW != 0),
    )
}

impl CountWindow {
    pub(crate) fn new(calls: u32) -> Self {
        CountWindow {
            stripes: (0..STRIPES)
                .map(|_| CountStripe {
                    cursor: AtomicU64::new(0),
                    counts: AtomicU64::new(0),
                    slots: (0..calls).map(|_| AtomicU8::new(0)).collect(),
                    seen_turn: AtomicU64::new(0),
                })
                .collect(),
            turns: AtomicU64::new(0),
        }
    }

    /// Records an outcome; `true` when it filled a slot that was empty (the window grew).
    fn record(&self, stripe: usize, failure: bool, slow: bool) -> bool {
        let stripe = &self.stripes[stripe % STRIPES];
        // Not a read-modify-write: a stripe is mostly one thread's. Two threads racing on it may
        // write one slot twice; the swap below keeps the counts exact either way.
        let position = stripe.cursor.load(Ordering::Relaxed);
        stripe
            .cursor
            .store(position.wrapping_add(1), Ordering::Relaxed);
        let len = stripe.slots.len() as u64;
        let i = (position % len) as usize;
        let turn = self.turns.load(Ordering::Relaxed);
        if stripe.seen_turn.load(Ordering::Relaxed) != turn {
            stripe.seen_turn.store(turn, Ordering::Relaxed);
        }
        if (position + 1).is_multiple_of(len) {
            self.turns.fetch_add(1, Ordering::Relaxed);
        }
        let new = PRESENT | if failure { FAILED } else { 0 } | if slow { SLOW } else { 0 };
        let slot = &stripe.slots[i];
        // In steady state a success replaces a success: nothing to write, nothing to count.
        if slot.load(Ordering::Relaxed) == new {
            return false;
        }
        let old = slot.swap(new, Ordering::AcqRel);
        stripe.adjust(old, new);
        old & PRESENT == 0
    }

    fn tally(&self) -> Tally {
        let turn = self.turns.load(Ordering::Relaxed);
        let mut tally = Tally::default();
        for stripe in self.stripes.iter() {
            let seen = stripe.seen_turn.load(Ordering::Relaxed);
            if turn.saturating_sub(seen) <= STALE_AFTER_TURNS {
                tally.add_packed(stripe.counts.load(Ordering::Acquire));
            }
        }
        tally
    }

    fn reset(&self) {
        for stripe in self.stripes.iter() {
            for slot in stripe.slots.iter() {
                let old = slot.swap(0, Ordering::AcqRel);
                stripe.adjust(old, 0);
            }
        }
    }
}

impl CountStripe {
    /// Moves the counts from what slot value `old` contributed to what `new` does.
    fn adjust(&self, old: u8, new: u8) {
        if old == new {
            return;
        }
        let (oc, of, os) = slot_counts(old);
        let (nc, nf, ns) = slot_counts(new);
        self.counts
            .fetch_add(pack(nc - oc, nf - of, ns - os), Ordering::AcqRel);
    }
}

/// The last `size` of time, in `buckets` slices, per stripe.
///
/// A bucket records its slice number next to its counts; a record for a newer slice resets the
/// bucket first (never an older one: a late record of a slice already replaced is dropped). A
/// record racing with that reset may lose its call or its failure — the window is statistical —
/// and a bucket never reports more failures or slow calls than calls.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: usize,
    stripes: Box<[TimeStripe]>,
}

#[derive(Debug)]
#[repr(align(128))]
struct TimeStripe {
    slices: Box<[AtomicU64]>,
    counts: Box<[BucketCounts]>,
}

/// One bucket's counts, each in its own `u64`: a bucket may see any number of calls (an hour at
/// any rate), so they are not packed (21-bit packed counts overflowed into each other past
/// 2 million calls a bucket — phantom failures). A success touches only `calls`.
#[derive(Debug, Default)]
struct BucketCounts {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl BucketCounts {
    fn clear(&self) {
        self.calls.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.slow.store(0, Ordering::Release);
    }

    /// Adds to `tally`. Failures and slow calls are read before calls, and recorded after
    /// them, so outside a roll every failure seen has its call seen; across a roll a failure
    /// may outlive its call, so each is capped at the calls.
    fn add_to(&self, tally: &mut Tally) {
        let failures = self.failures.load(Ordering::Acquire);
        let slow = self.slow.load(Ordering::Acquire);
        let calls = self.calls.load(Ordering::Acquire);
        tally.calls += calls;
        tally.failures += failures.min(calls);
        tally.slow += slow.min(calls);
    }
}

impl TimeWindow {
    pub(crate) fn new(bucket_nanos: u64, buckets: u32) -> Self {
        let buckets = buckets as usize;
        TimeWindow {
            bucket_nanos,
            buckets,
            stripes: (0..STRIPES)
                .map(|_| TimeStripe {
                    // u64::MAX: a slice that never comes.
                    slices: (0..buckets).map(|_| AtomicU64::new(u64::MAX)).collect(),
                    counts: (0..buckets).map(|_| BucketCounts::default()).collect(),
                })
                .collect(),
        }
    }

    /// Records an outcome; `true` when it started a new slice in its bucket.
    fn record(&self, stripe: usize, failure: bool, slow: bool, now_nanos: u64) -> bool {
        let slice = now_nanos / self.bucket_nanos;
        let stripe = &self.stripes[stripe % STRIPES];
        let i = (slice % self.buckets as u64) as usize;
        let seen = stripe.slices[i].load(Ordering::Acquire);
        if seen != u64::MAX && seen > slice {
            // A record made before a preemption, whose bucket has moved on to a later slice:
            // its slice has left the window; rolling the bucket back would wipe newer outcomes.
            return false;
        }
        let rolled = seen != slice
            && stripe.slices[i]
                .compare_exchange(seen, slice, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        let counts = &stripe.counts[i];
        if rolled {
            counts.clear();
        }
        counts.calls.fetch_add(1, Ordering::AcqRel);
        if failure {
            counts.failures.fetch_add(1, Ordering::AcqRel);
        }
        if slow {
            counts.slow.fetch_add(1, Ordering::AcqRel);
        }
        rolled
    }

    fn tally(&self, now_nanos: u64) -> Tally {
        let slice = now_nanos / self.bucket_nanos;
        let mut tally = Tally::default();
        for stripe in self.stripes.iter() {
            for (held, counts) in stripe.slices.iter().zip(stripe.counts.iter()) {
                let held = held.load(Ordering::Acquire);
                if held <= slice && slice - held < self.buckets as u64 {
                    counts.add_to(&mut tally);
                }
            }
        }
        tally
    }

    fn reset(&self) {
        for stripe in self.stripes.iter() {
            for (held, counts) in stripe.slices.iter().zip(stripe.counts.iter()) {
                held.store(u64::MAX, Ordering::Release);
                counts.clear();
            }
        }
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
