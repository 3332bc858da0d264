//! The breaker's state machine, in atomics.
//!
//! The state is one `AtomicU64`: the state kind (2 bits), a generation (30 bits, bumped on every
//! transition), and in half-open the probes in flight and the probe successes (16 bits each).
//! Every transition and every probe slot is a compare-and-swap on that word, so half-open admits
//! exactly `k` probes however many callers race, and an outcome from a previous generation (a
//! call admitted before the circuit opened) cannot move the new state. The closed-state fast path
//! is one load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use crate::sync::AtomicU64;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::config::{Config, WindowKind};
use super::window::{CountWindow, STRIPES, Tally, TimeWindow, Window};
use crate::clock::Origin;
use crate::error::Error;
use crate::rng::Jitter;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const GEN_MASK: u64 = (1 << 30) - 1;
const FORCED_NONE: u8 = 0;
const FORCED_OPEN: u8 = 1;
const FORCED_CLOSED: u8 = 2;

fn pack(kind: u64, generation: u64, in_flight: u64, successes: u64) -> u64 {
    kind | (generation & GEN_MASK) << 2 | (in_flight & 0xFFFF) << 32 | (successes & 0xFFFF) << 48
}

fn kind(word: u64) -> u64 {
    word & 0b11
}

fn generation(word: u64) -> u64 {
    (word >> 2) & GEN_MASK
}

fn in_flight(word: u64) -> u64 {
    (word >> 32) & 0xFFFF
}

fn successes(word: u64) -> u64 {
    word >> 48
}

/// The state of a breaker, as a handle reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls fail fast until the open duration passes.
    Open,
    /// A few probes test whether the dependency recovered.
    HalfOpen,
    /// Held open by hand ([`CircuitBreaker::force_open`]).
    ForcedOpen,
    /// Held closed by hand ([`CircuitBreaker::force_closed`]): calls pass and are counted, but
    /// the breaker does not trip.
    ForcedClosed,
}

/// A breaker's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The current state.
    pub state: BreakerState,
    /// Calls in the window (rate windows).
    pub calls: u64,
    /// Failures in the window (rate windows).
    pub failures: u64,
    /// Slow calls in the window (rate windows).
    pub slow_calls: u64,
    /// The current run of failures (consecutive-failures window).
    pub consecutive_failures: u32,
    /// Calls rejected since the breaker was created.
    pub rejected: u64,
    /// Openings since the circuit last closed.
    pub openings: u32,
}

/// A circuit breaker: shared state behind a cheap handle. Clones share the state.
///
/// Use it through [`CircuitBreakerLayer`](super::CircuitBreakerLayer) around a client, or as a
/// per-endpoint health gate: [`is_usable`](Self::is_usable) asks without reserving anything, and
/// [`try_acquire`](Self::try_acquire) takes the call's [`Permit`] (in half-open, a probe slot).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
    /// One handle per stripe: a permit holds its thread's shard, so threads never bump the same
    /// reference count.
    shards: Arc<[Arc<Shard>]>,
}

/// A reference to the shared state, on a cache line of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Shard {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: Config,
    window: Window,
    state: AtomicU64,
    /// When the open period ends, in nanoseconds since `origin` — for the open period of
    /// generation `open_generation`. Published by the trip that won the state's
    /// compare-and-swap, after it: a racer that lost never writes it.
    open_until: AtomicU64,
    open_generation: AtomicU64,
    /// A sequence lock over the two above: odd while a trip writes them. Readers take no lock;
    /// writers (trips, rare) serialize on `publishing`.
    open_sequence: AtomicU64,
    publishing: crate::sync::Mutex<()>,
    openings: AtomicU32,
    forced: AtomicU8,
    rejected: AtomicU64,
    origin: Origin,
    jitter: Jitter,
    changes: watch::Sender<BreakerState>,
    /// Feature `metrics`: state, transitions, refusals (nothing without it).
    metrics: crate::metrics::BreakerMetrics,
}

#[path = "open.rs"]
mod open;
#[path = "permit.rs"]
mod permit;

use self::permit::Active;
pub use self::permit::Permit;

impl CircuitBreaker {
    /// A builder with the defaults (see [`BreakerBuilder`](super::BreakerBuilder)).
    pub fn builder() -> super::BreakerBuilder {
        super::BreakerBuilder::new()
    }

    pub(crate) fn from_config(config: Config) -> Self {
        let window = match config.window {
            WindowKind::Count { calls } => Window::Count(CountWindow::new(calls)),
            WindowKind::Time { size, buckets } => {
                Window::Time(TimeWindow::new((size / buckets).as_nanos() as u64, buckets))
            }
            WindowKind::ConsecutiveFailures { .. } => Window::Consecutive(AtomicU32::new(0)),
        };
        let metrics = crate::metrics::BreakerMetrics::new(&config.name);
        let inner = Arc::new(Inner {
            metrics,
            config,
            window,
            state: AtomicU64::new(pack(CLOSED, 0, 0, 0)),
            open_until: AtomicU64::new(0),
            open_generation: AtomicU64::new(u64::MAX),
            open_sequence: AtomicU64::new(0),
            publishing: crate::sync::Mutex::new(()),
            openings: AtomicU32::new(0),
            forced: AtomicU8::new(FORCED_NONE),
            rejected: AtomicU64::new(0),
            origin: Origin::now(),
            jitter: Jitter::new(),
            changes: watch::channel(BreakerState::Closed).0,
        });
        CircuitBreaker {
            inner: inner.clone(),
            shards: (0..STRIPES)
                .map(|_| {
                    Arc::new(Shard {
                        inner: inner.clone(),
                    })
                })
                .collect(),
        }
    }

    #[inline]
    fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Admits a call, or rejects it with [`Error::CircuitOpen`] (whose `retry_in` says when the
    /// next probe may go; zero when half-open probes are all taken or the breaker is forced
    /// open). In half-open the permit holds a probe slot until its outcome is recorded or it is
    /// dropped.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit, Error> {
        let inner = self.inner();
        match inner.forced.load(Ordering::Acquire) {
            FORCED_OPEN => return Err(inner.reject(Duration::ZERO)),
            FORCED_CLOSED => return Ok(self.permit(u64::MAX, false)),
            _ => {}
        }
        loop {
            let word = inner.state.load(Ordering::Acquire);
            match kind(word) {
                CLOSED => return Ok(self.permit(generation(word), false)),
                OPEN => {
                    let now = inner.now_nanos();
                    let Some(until) = inner.open_until_of(word) else {
                        // The trip that opened it has not published its end yet: still open.
                        return Err(inner.reject(inner.longest_open()));
                    };
                    if now < until {
                        return Err(inner.reject(Duration::from_nanos(until - now)));
                    }
                    let probing = pack(HALF_OPEN, generation(word) + 1, 1, 0);
                    if inner.transition(word, probing) {
                        return Ok(self.permit(generation(probing), true));
                    }
                }
                _ => {
                    if in_flight(word) >= u64::from(inner.config.half_open_probes) {
                        return Err(inner.reject(Duration::ZERO));
                    }
                    let taken = word + (1 << 32);
                    if inner
                        .state
                        .compare_exchange(word, taken, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        return Ok(self.permit(generation(word), true));
                    }
                }
            }
        }
    }

    /// Admits a call whatever the state, without taking a probe slot: for a balancer in panic
    /// mode, which sends calls through open breakers rather than overload the other endpoints.
    /// Its outcome counts only if the circuit is closed.
    pub fn acquire_bypassing(&self) -> Permit {
        let word = self.inner().state.load(Ordering::Acquire);
        self.permit(generation(word), false)
    }

    #[inline]
    fn permit(&self, generation: u64, probe: bool) -> Permit {
        let stripe = crate::stripe::index(STRIPES);
        let shard = self.shards[stripe].clone();
        let started = shard.inner.config.slow_call.map(|_| Instant::now());
        Permit {
            active: Some(Active {
                shard,
                stripe,
                generation,
                probe,
                started,
                given: None,
            }),
        }
    }

    /// Whether a call would be admitted now. Reserves nothing: a balancer asks this to skip
    /// endpoints, then takes the permit with [`try_acquire`](Self::try_acquire).
    #[inline]
    pub fn is_usable(&self) -> bool {
        let inner = self.inner();
        match inner.forced.load(Ordering::Acquire) {
            FORCED_OPEN => return false,
            FORCED_CLOSED => return true,
            _ => {}
        }
        let word = inner.state.load(Ordering::Acquire);
        match kind(word) {
            CLOSED => true,
            OPEN => inner
                .open_until_of(word)
                .is_some_and(|until| inner.now_nanos() >= until),
            _ => in_flight(word) < u64::from(inner.config.half_open_probes),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner().state_now()
    }

    /// Time until the next probe may go, while open.
    pub fn retry_in(&self) -> Option<Duration> {
        let inner = self.inner();
        let word = inner.state.load(Ordering::Acquire);
        if kind(word) != OPEN {
            return None;
        }
        // Not yet published by the trip that opened it: at most the longest opening.
        Some(
            inner
                .open_until_of(word)
                .map_or(inner.longest_open(), |until| {
                    Duration::from_nanos(until.saturating_sub(inner.now_nanos()))
                }),
        )
    }

    /// The counters.
    pub fn stats(&self) -> BreakerStats {
        let inner = self.inner();
        let tally = inner.window.tally(inner.now_nanos());
        BreakerStats {
            state: inner.state_now(),
            calls: tally.calls,
            failures: tally.failures,
            slow_calls: tally.slow,
            consecutive_failures: tally.consecutive_failures,
            rejected: inner.rejected.load(Ordering::Relaxed),
            openings: inner.openings.load(Ordering::Relaxed),
        }
    }

    /// Holds the circuit open (manual isolation) until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.inner().forced.store(FORCED_OPEN, Ordering::Release);
        self.inner().announce(BreakerState::ForcedOpen, None);
    }

    /// Holds the circuit closed until [`reset`](Self::reset): calls pass and are counted, but it
    /// does not trip.
    pub fn force_closed(&self) {
        self.inner().forced.store(FORCED_CLOSED, Ordering::Release);
        self.inner().announce(BreakerState::ForcedClosed, None);
    }

    /// Releases a forced state and closes the circuit with an empty window.
    pub fn reset(&self) {
        let inner = self.inner();
        inner.forced.store(FORCED_NONE, Ordering::Release);
        // A compare-and-swap, so every generation is used once: a plain store of "read + 1"
        // could reuse one a racing transition took, and a stale open period would be trusted.
        let _ = inner
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                Some(pack(CLOSED, generation(word) + 1, 0, 0))
            });
        inner.window.reset();
        inner.openings.store(0, Ordering::Relaxed);
        inner.announce(BreakerState::Closed, None);
    }

    /// A receiver that sees every state change (the latest state; changes are also `tracing`
    /// events).
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.inner().changes.subscribe()
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner().config.name
    }

    pub(crate) fn record_at(&self) -> super::RecordAt {
        self.inner().config.record_at
    }
}

impl Inner {
    #[inline]
    fn now_nanos(&self) -> u64 {
        self.origin.nanos()
    }

    fn reject(&self, retry_in: Duration) -> Error {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected();
        Error::CircuitOpen { retry_in }
    }

    fn state_now(&self) -> BreakerState {
        match self.forced.load(Ordering::Acquire) {
            FORCED_OPEN => return BreakerState::ForcedOpen,
            FORCED_CLOSED => return BreakerState::ForcedClosed,
            _ => {}
        }
        match kind(self.state.load(Ordering::Acquire)) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Moves from `from` to `to` if nothing moved first; announces the change.
    fn transition(&self, from: u64, to: u64) -> bool {
        self.transition_until(from, to, None)
    }

    /// [`transition`](Self::transition), publishing the end of the open period `to` starts.
    fn transition_until(&self, from: u64, to: u64, open_until: Option<u64>) -> bool {
        if self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        let state = match kind(to) {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        };
        if let Some(until) = open_until
            && !self.publish_open_until(generation(to), until)
        {
            // The state has already left this open period (a reset, another trip): it was
            // never seen open — nothing to announce, no opening to count.
            return false;
        }
        let open_for =
            open_until.map(|until| Duration::from_nanos(until.saturating_sub(self.now_nanos())));
        self.announce(state, open_for);
        true
    }

    fn announce(&self, state: BreakerState, open_for: Option<Duration>) {
        let name = &self.config.name;
        match state {
            BreakerState::Open => tracing::warn!(breaker = %name, ?open_for, "circuit opened"),
            BreakerState::HalfOpen => tracing::info!(breaker = %name, "circuit half-open: probing"),
            BreakerState::Closed => tracing::info!(breaker = %name, "circuit closed"),
            BreakerState::ForcedOpen => tracing::warn!(breaker = %name, "circuit forced open"),
            BreakerState::ForcedClosed => tracing::warn!(breaker = %name, "circuit forced closed"),
        }
        self.metrics.entered(state);
        // Publish the state as it is now, not as announced: the announcements of racing
        // transitions can arrive out of order (each is made after its compare-and-swap), and
        // the last one to arrive must not leave a stale state behind. Re-read until what was
        // published still holds (bounded: a breaker flapping that fast is published again by
        // the announcement of the transition that moved it).
        for _ in 0..4 {
            let now = self.state_now();
            self.metrics.publish(now);
            self.changes.send_if_modified(|published| {
                let changed = *published != now;
                *published = now;
                changed
            });
            if self.state_now() == now {
                break;
            }
        }
    }

    fn should_trip(&self, tally: Tally) -> bool {
        let config = &self.config;
        match config.window {
            WindowKind::ConsecutiveFailures { failures } => tally.consecutive_failures >= failures,
            WindowKind::Count { .. } | WindowKind::Time { .. } => {
                // failures / calls >= rate, in integers: exact at the boundary.
                let reaches = |count: u64, ppm: u64| {
                    u128::from(count) * 1_000_000 >= u128::from(ppm) * u128::from(tally.calls)
                };
                tally.calls >= u64::from(config.minimum_calls)
                    && (reaches(tally.failures, config.failure_ppm)
                        || (config.slow_call.is_some() && reaches(tally.slow, config.slow_ppm)))
            }
        }
    }

    /// Records a closed-state outcome of generation `generation`.
    #[inline]
    fn record_closed(&self, stripe: usize, generation_of_call: u64, failure: bool, slow: bool) {
        let word = self.state.load(Ordering::Acquire);
        let forced_closed = self.forced.load(Ordering::Acquire) == FORCED_CLOSED;
        // Outcomes of calls admitted in an earlier period say nothing about this one.
        if kind(word) != CLOSED || (generation(word) != generation_of_call && !forced_closed) {
            return;
        }
        let now = match self.window {
            Window::Time(_) => self.now_nanos(),
            _ => 0,
        };
        // Only a failure, a slow call, a call that grows a filling window or one that starts a
        // new time slice can bring a rate to its threshold (the window says which).
        if let Some(tally) = self.window.record(stripe, failure, slow, now)
            && !forced_closed
            && self.should_trip(tally)
        {
            self.trip(word);
        }
    }

    /// Ends a probe of generation `generation`: a bad outcome reopens, the k-th success closes.
    fn finish_probe(&self, generation_of_probe: u64, outcome: Option<bool>) {
        loop {
            let word = self.state.load(Ordering::Acquire);
            if kind(word) != HALF_OPEN || generation(word) != generation_of_probe {
                return;
            }
            let next = match outcome {
                // Cancelled: only the slot is given back.
                None => word - (1 << 32),
                Some(true) => {
                    self.trip(word);
                    if kind(self.state.load(Ordering::Acquire)) == OPEN {
                        return;
                    }
                    continue;
                }
                Some(false) => {
                    let done = successes(word) + 1;
                    if done >= u64::from(self.config.half_open_probes) {
                        if self.transition(word, pack(CLOSED, generation(word) + 1, 0, 0)) {
                            self.window.reset();
                            self.openings.store(0, Ordering::Relaxed);
                            return;
                        }
                        continue;
                    }
                    pack(HALF_OPEN, generation(word), in_flight(word) - 1, done)
                }
            };
            if self
                .state
                .compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return;
            }
        }
    }
}

/// Model checks (`RUSTFLAGS="--cfg stanchion_loom" cargo test --release --lib loom`): every interleaving
/// of racing trips and a reader.
#[cfg(all(test, stanchion_loom))]
#[path = "core_loom.rs"]
mod loom_models;
