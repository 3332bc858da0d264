//! The retry budget: a cap on the extra load retries may add, shared by every call that uses it.
//!
//! Finagle's model (`RetryBudget`, also Linkerd's): every request *deposits* `ratio` of a token,
//! every retry *withdraws* one whole token, and a *reserve* of `floor × window` tokens lets a
//! low-traffic client retry at all. Deposits and withdrawals count over a sliding window, so over
//! any window retries ≤ ratio × requests + floor × window seconds.
//!
//! How it stays lock-free and exact:
//!
//! - The window is ten time slices. Each counter cell packs the slice it belongs to (high 38 bits)
//!   with its count (low 26 bits) in one `AtomicU64`, so a cell from an old slice is reset and
//!   incremented in one compare-and-swap: no lock, and no count lost to a racing reset.
//! - **Slice numbers never wrap**, by construction: a slice is at least 100 ms (a window of at
//!   least 1 s, in ten slices) and the clock is `u64` nanoseconds since the budget was made
//!   ([`Origin`], saturating at 584 years), so a slice number is at most 2⁶⁴ / 10⁸ < 1.85 × 10¹¹
//!   < 2³⁸. Tags compare as plain numbers. (Before, 24-bit tags wrapped after 2²³ slices — 9.7
//!   days with a 1 s window, 97 with the default 10 s — and a cell from slice 0 then looked newer
//!   than now: withdrawals stopped counting and the budget stopped limiting.)
//! - A cell counts up to 2²⁶ − 1 (67 million) per slice and stripe, and saturates there: a
//!   saturated deposit is lost (fewer retries, never more), and a withdrawal that finds its cell
//!   saturated is refused — a count never overflows into the tag.
//! - Deposits happen on every call, so they are striped: each thread adds to its own cache-padded
//!   stripe and threads never contend on one cache line. They do not read the clock either: a
//!   stripe remembers the slice it last saw, and the clock is read again every 16th deposit on
//!   the stripe and at every withdrawal. A deposit between two reads counts in the slice of the
//!   last read — never a later one — so right after an idle gap up to 15 deposits per stripe may
//!   count in a slice that has left the window (the 16th reads the clock and moves itself to
//!   now): the error only ever grants fewer retries, never more. (Reading the clock on every
//!   deposit would make it exact, at about twice the cost of the whole deposit.)
//! - A withdrawal *reserves first, then checks*: it increments the withdrawal count, then sums the
//!   window; if the balance went negative it gives its reservation back and refuses. Two
//!   concurrent withdrawals can therefore both refuse, but never both succeed on one token — the
//!   overdraw that a check-then-act budget (tower's `TpsBudget`) allows under concurrency.
//! - Token arithmetic is in thousandths, so a fractional ratio is exact to 0.001: at 0.6, ten
//!   requests allow six retries, not ten (tower issue 857).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;
use std::time::Duration;

use crate::clock::Origin;
use crate::error::{ConfigError, check_duration};

const SLICES: u64 = 10;
const STRIPES: usize = 8;
const COUNT_BITS: u32 = 26;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// The largest slice number a tag holds; slice numbers never reach it (see the module docs).
const EPOCH_MAX: u64 = (1 << (64 - COUNT_BITS)) - 1;
// The largest slice number the clock can reach (u64 nanoseconds, slices of at least 100 ms)
// fits a tag: checked when the crate compiles.
const _: () = assert!(u64::MAX / 100_000_000 < EPOCH_MAX);
/// Token amounts are kept in thousandths.
const SCALE: u64 = 1000;

/// The default share of requests that may be retried: 20 %.
pub const DEFAULT_RATIO: f64 = 0.2;
/// The default floor: 10 retries per second, whatever the traffic.
pub const DEFAULT_MIN_PER_SECOND: u32 = 10;
/// The default window: 10 s.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// A budget for retries, shared by every clone (and by every client or layer given a clone).
///
/// ```
/// use std::time::Duration;
/// use stanchion::retry::RetryBudget;
///
/// let budget = RetryBudget::builder()
///     .ratio(0.1)
///     .min_per_second(0)
///     .window(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// for _ in 0..20 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw()); // 20 requests × 0.1 = 2 retries
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// assert_eq!(budget.stats().refused, 1);
/// ```
#[derive(Debug, Clone)]
pub struct RetryBudget {
    mode: Mode,
}

/// The name of a budget not given one (`default`): the `budget` label of its instruments.
pub const DEFAULT_BUDGET_NAME: &str = "default";

/// Which rule a budget follows.
#[derive(Debug, Clone)]
enum Mode {
    /// Finagle's: a share of the calls over a sliding window, plus a floor.
    Ratio(Arc<Inner>),
    /// gRFC A6's retry throttling: a token bucket drained by failures.
    Throttle(Arc<Throttled>),
}

/// A throttling budget: the bucket and its instruments.
#[derive(Debug)]
struct Throttled {
    bucket: super::throttle::Throttle,
    name: String,
    refused: AtomicU64,
    metrics: crate::metrics::BudgetMetrics,
}

/// The rule a [`RetryBudget`] follows, and its settings.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BudgetMode {
    /// Finagle's retry budget ([`RetryBudget::builder`]): retries up to `ratio` × calls plus
    /// `min_per_second` × the window, over a sliding `window`.
    Ratio {
        /// Retries allowed per call.
        ratio: f64,
        /// Retries per second allowed whatever the traffic.
        min_per_second: u32,
        /// The sliding window.
        window: Duration,
    },
    /// gRFC A6's retry throttling ([`RetryBudget::throttling`]): `max_tokens` to start, −1 per
    /// failed attempt, +`token_ratio` per success; retries while above `max_tokens / 2`.
    Throttling {
        /// The bucket's size, and where it starts (A6 `maxTokens`).
        max_tokens: f64,
        /// Tokens given back per success (A6 `tokenRatio`).
        token_ratio: f64,
    },
}

#[derive(Debug)]
struct Inner {
    /// Thousandths of a token deposited per request.
    deposit: u64,
    /// The reserve, in thousandths of a token.
    reserve: u64,
    slice_nanos: u64,
    origin: Origin,
    deposits: [Stripe; STRIPES],
    withdrawals: Stripe,
    refused: AtomicU64,
    ratio: f64,
    min_per_second: u32,
    window: Duration,
    name: String,
    /// Feature `metrics`: withdrawals and the balance after each (nothing without it).
    metrics: crate::metrics::BudgetMetrics,
}

/// One cache-padded row of per-slice cells.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    cells: [AtomicU64; SLICES as usize],
    /// The latest slice this stripe has seen (deposits use it instead of reading the clock).
    epoch: AtomicU64,
}

/// How often (in deposits per stripe) a deposit reads the clock.
const CLOCK_EVERY: u64 = 16;

impl Stripe {
    /// Adds `delta` to the cell of `epoch`, resetting it first if it holds an older slice.
    /// A cell already holding a newer slice (a deposit whose stripe had not yet seen the clock
    /// move) is counted into: a tag never moves back. Returns the slice counted in and the
    /// cell's new count, or `None` when the count is saturated and nothing was added.
    fn add(&self, epoch: u64, delta: u64) -> Option<(u64, u64)> {
        let epoch = epoch.min(EPOCH_MAX);
        let cell = &self.cells[(epoch % SLICES) as usize];
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let held = current >> COUNT_BITS;
            let (tag, count) = if held >= epoch {
                (held, current & COUNT_MASK)
            } else {
                (epoch, 0)
            };
            let count = count.checked_add(delta).filter(|c| *c <= COUNT_MASK)?;
            let next = tag << COUNT_BITS | count;
            match cell.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some((tag, count)),
                Err(seen) => current = seen,
            }
        }
    }

    /// Takes back one count added to the cell of `epoch` — only if the cell still holds that
    /// slice (once the slice is gone, so is the count: nobody else's count is taken).
    /// Whether it did.
    fn undo(&self, epoch: u64) -> bool {
        let epoch = epoch.min(EPOCH_MAX);
        let cell = &self.cells[(epoch % SLICES) as usize];
        cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            let count = current & COUNT_MASK;
            (current >> COUNT_BITS == epoch && count > 0).then(|| current - 1)
        })
        .is_ok()
    }

    /// The sum of the cells that belong to the window ending at `epoch`.
    fn window_sum(&self, epoch: u64) -> u64 {
        let epoch = epoch.min(EPOCH_MAX);
        self.cells
            .iter()
            .map(|cell| {
                let value = cell.load(Ordering::Acquire);
                let held = value >> COUNT_BITS;
                if held <= epoch && epoch - held < SLICES {
                    value & COUNT_MASK
                } else {
                    0
                }
            })
            .sum()
    }
}

/// What a [`RetryBudget`] holds now.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BudgetStats {
    /// Requests deposited in the current window.
    pub deposits: u64,
    /// Retries granted in the current window.
    pub withdrawals: u64,
    /// Retries refused since the budget was created.
    pub refused: u64,
    /// Retries that could be granted now. A throttling budget: how far its token count is
    /// above `max_tokens / 2` (the failures it can take before retries stop), never below 0.
    pub balance: f64,
    /// A throttling budget's token count (gRFC A6 `token_count`); `None` for a ratio budget.
    pub tokens: Option<f64>,
}

impl RetryBudget {
    /// A builder starting from the defaults: 20 % of requests, 10 retries/s, 10 s window.
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder {
            ratio: DEFAULT_RATIO,
            min_per_second: DEFAULT_MIN_PER_SECOND,
            window: DEFAULT_WINDOW,
            name: DEFAULT_BUDGET_NAME.to_owned(),
        }
    }

    /// A budget in gRFC A6's retry-throttling mode (the service config's `retryThrottling`):
    /// a token count starts at `max_tokens` (in (0, 1000]) and stays within 0 and it; every
    /// failed attempt the route would retry takes 1, every success adds `token_ratio` (above
    /// 0); retries are allowed only while the count is above `max_tokens / 2`. Both numbers
    /// are kept to three decimal places, as A6 says. So after a run of failures from a full
    /// bucket, retries stop at failure number ⌈`max_tokens` / 2⌉ (the 5th with 10 tokens).
    ///
    /// One budget per server name, as A6 keeps one per server name: a client's routes share it.
    /// Calls ([`deposit`](Self::deposit)) do not change it. What counts as a failure or a
    /// success, as grpc-go counts it (a gRPC answer whose status is in its trailers is a success
    /// when its headers arrive): docs/retry.md, § Retry throttling.
    ///
    /// ```
    /// use stanchion::retry::RetryBudget;
    ///
    /// let budget = RetryBudget::throttling(10.0, 0.1).build().unwrap();
    /// for _ in 0..4 {
    ///     budget.failed();
    ///     assert!(budget.try_withdraw());
    /// }
    /// budget.failed(); // 5 tokens left: not above 10 / 2
    /// assert!(!budget.try_withdraw());
    /// budget.succeeded(); // 5.1
    /// assert!(budget.try_withdraw());
    /// ```
    ///
    /// # Errors
    /// [`ThrottlingBuilder::build`] refuses numbers outside A6's ranges (`max_tokens`,
    /// `token_ratio`).
    pub fn throttling(max_tokens: f64, token_ratio: f64) -> ThrottlingBuilder {
        ThrottlingBuilder {
            max_tokens,
            token_ratio,
            name: DEFAULT_BUDGET_NAME.to_owned(),
        }
    }

    /// The `budget` label of its instruments ([`RetryBudgetBuilder::name`]).
    pub fn name(&self) -> &str {
        match &self.mode {
            Mode::Ratio(inner) => &inner.name,
            Mode::Throttle(t) => &t.name,
        }
    }

    /// The rule this budget follows, and its settings.
    pub fn mode(&self) -> BudgetMode {
        match &self.mode {
            Mode::Ratio(inner) => BudgetMode::Ratio {
                ratio: inner.ratio,
                min_per_second: inner.min_per_second,
                window: inner.window,
            },
            Mode::Throttle(t) => BudgetMode::Throttling {
                max_tokens: t.bucket.max_tokens(),
                token_ratio: t.bucket.token_ratio(),
            },
        }
    }

    /// An attempt succeeded (the retry layer calls this): a throttling budget gets
    /// `token_ratio` back; a ratio budget is not changed.
    #[inline]
    pub fn succeeded(&self) {
        if let Mode::Throttle(t) = &self.mode {
            t.bucket.succeeded();
        }
    }

    /// An attempt failed with an outcome its route would retry (the retry layer calls this,
    /// whether or not a retry follows): a throttling budget loses a token; a ratio budget is
    /// not changed.
    #[inline]
    pub fn failed(&self) {
        if let Mode::Throttle(t) = &self.mode {
            t.bucket.failed();
        }
    }

    /// Records a request (every logical call deposits once). Lock-free, and reads the clock only
    /// on every 16th deposit of its stripe. A throttling budget ignores it.
    #[inline]
    pub fn deposit(&self) {
        let Mode::Ratio(inner) = &self.mode else {
            return;
        };
        let stripe = &inner.deposits[crate::stripe::index(STRIPES)];
        let cached = stripe.epoch.load(Ordering::Relaxed);
        let Some((slice, count)) = stripe.add(cached, 1) else {
            // The cell is saturated: read the clock — a later slice's cell may have room — and
            // count the deposit there (else it is lost: fewer retries, never more).
            let _ = stripe.add(epoch_of(inner), 1);
            return;
        };
        if count.is_multiple_of(CLOCK_EVERY) {
            let now = epoch_of(inner);
            if now > slice && stripe.undo(slice) {
                // This deposit, at least, is known to be now's: move it there.
                let _ = stripe.add(now, 1);
            }
        }
    }

    /// Takes one retry token if the balance allows; never overdraws under concurrency. A
    /// throttling budget allows the retry while its token count is above `max_tokens / 2`
    /// (it takes nothing: failures drain it).
    pub fn try_withdraw(&self) -> bool {
        let inner = match &self.mode {
            Mode::Ratio(inner) => &**inner,
            Mode::Throttle(t) => {
                let allowed = t.bucket.allows();
                if !allowed {
                    t.refused.fetch_add(1, Ordering::Relaxed);
                }
                t.metrics.withdrawal(allowed, throttle_balance(&t.bucket));
                return allowed;
            }
        };
        let epoch = epoch_of(inner);
        // A withdrawal that cannot be counted (its cell saturated) is not granted.
        if let Some((slice, _)) = inner.withdrawals.add(epoch, 1) {
            // Checked over the window that holds the reservation: the cell may hold a later
            // slice than this thread's reading of the clock (it stalled).
            let left = balance_at(inner, slice);
            if left >= 0 {
                inner.metrics.withdrawal(true, tokens(left));
                return true;
            }
            inner.withdrawals.undo(slice);
            inner
                .metrics
                .withdrawal(false, tokens(left + SCALE as i128));
        } else {
            inner.metrics.withdrawal(false, 0.0);
        }
        inner.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// How many retries could be granted now (a throttling budget: see
    /// [`BudgetStats::balance`]).
    pub fn balance(&self) -> f64 {
        match &self.mode {
            Mode::Ratio(inner) => balance_at(inner, epoch_of(inner)) as f64 / SCALE as f64,
            Mode::Throttle(t) => throttle_balance(&t.bucket),
        }
    }

    /// Deposits and withdrawals in the window, refusals so far, and the balance (a throttling
    /// budget: its token count; it keeps no window, so `deposits` and `withdrawals` are 0).
    pub fn stats(&self) -> BudgetStats {
        let inner = match &self.mode {
            Mode::Ratio(inner) => &**inner,
            Mode::Throttle(t) => {
                return BudgetStats {
                    deposits: 0,
                    withdrawals: 0,
                    refused: t.refused.load(Ordering::Relaxed),
                    balance: throttle_balance(&t.bucket),
                    tokens: Some(t.bucket.tokens()),
                };
            }
        };
        let epoch = epoch_of(inner);
        BudgetStats {
            deposits: inner.deposits.iter().map(|s| s.window_sum(epoch)).sum(),
            withdrawals: inner.withdrawals.window_sum(epoch),
            refused: inner.refused.load(Ordering::Relaxed),
            balance: (balance_at(inner, epoch) as f64 / SCALE as f64).max(0.0),
            tokens: None,
        }
    }

    /// The share of requests that may be retried (0 for a throttling budget: see
    /// [`mode`](Self::mode)).
    pub fn ratio(&self) -> f64 {
        match &self.mode {
            Mode::Ratio(inner) => inner.ratio,
            Mode::Throttle(_) => 0.0,
        }
    }

    /// Retries per second allowed whatever the traffic (0 for a throttling budget).
    pub fn min_per_second(&self) -> u32 {
        match &self.mode {
            Mode::Ratio(inner) => inner.min_per_second,
            Mode::Throttle(_) => 0,
        }
    }

    /// The sliding window (zero for a throttling budget, which keeps none).
    pub fn window(&self) -> Duration {
        match &self.mode {
            Mode::Ratio(inner) => inner.window,
            Mode::Throttle(_) => Duration::ZERO,
        }
    }
}

/// The current slice, read from the clock; every stripe learns it too.
fn epoch_of(inner: &Inner) -> u64 {
    // Slices are at least 100 ms and u64 nanoseconds last 584 years: below 2³⁸ slices.
    let epoch = inner.origin.nanos() / inner.slice_nanos;
    for stripe in &inner.deposits {
        if stripe.epoch.load(Ordering::Relaxed) < epoch {
            stripe.epoch.fetch_max(epoch, Ordering::Relaxed);
        }
    }
    epoch
}

/// Thousandths of a token left after every withdrawal counted so far: non-negative means
/// every one of them, the latest included, is covered.
fn balance_at(inner: &Inner, epoch: u64) -> i128 {
    let deposits: u64 = inner.deposits.iter().map(|s| s.window_sum(epoch)).sum();
    let withdrawals = inner.withdrawals.window_sum(epoch);
    i128::from(inner.reserve) + i128::from(deposits) * i128::from(inner.deposit)
        - i128::from(withdrawals) * i128::from(SCALE)
}

/// A throttling budget's balance: its tokens above `max_tokens / 2`, never below 0.
fn throttle_balance(bucket: &super::throttle::Throttle) -> f64 {
    (bucket.tokens() - bucket.max_tokens() / 2.0).max(0.0)
}

/// Thousandths of a token as tokens, never below zero.
fn tokens(thousandths: i128) -> f64 {
    thousandths.max(0) as f64 / SCALE as f64
}

/// 20 % of requests, 10 retries/s, over 10 s.
impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::builder()
            .build()
            .expect("the defaults are valid")
    }
}

/// Builds a [`RetryBudget`]; every setting is validated by [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    ratio: f64,
    min_per_second: u32,
    window: Duration,
    name: String,
}

impl RetryBudgetBuilder {
    /// Retries allowed per request, in 0.0..=10.0 (default 0.2: 20 %). Exact to 0.001.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries per second allowed whatever the traffic (default 10; at most 1,000,000).
    pub fn min_per_second(mut self, floor: u32) -> Self {
        self.min_per_second = floor;
        self
    }

    /// The sliding window, from 1 s to 1 h (default 10 s).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The `budget` label of its instruments (feature `metrics`; default `"default"`): name
    /// the budgets when a process has several clients.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !self.ratio.is_finite() || !(0.0..=10.0).contains(&self.ratio) {
            return Err(ConfigError::new(
                "ratio",
                format!("{} is not between 0.0 and 10.0", self.ratio),
            ));
        }
        if self.min_per_second > 1_000_000 {
            return Err(ConfigError::new(
                "min_per_second",
                format!("{} is more than 1,000,000", self.min_per_second),
            ));
        }
        let window = check_duration("window", self.window, Duration::from_secs(3600))?;
        if window < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "window",
                format!("{window:?} is shorter than 1s"),
            ));
        }
        // Whole seconds of reserve per second of window, in thousandths.
        let reserve = u64::from(self.min_per_second) * window.as_millis() as u64;
        Ok(RetryBudget {
            mode: Mode::Ratio(Arc::new(Inner {
                deposit: (self.ratio * SCALE as f64).round() as u64,
                reserve,
                slice_nanos: (window / SLICES as u32).as_nanos() as u64,
                origin: Origin::now(),
                deposits: Default::default(),
                withdrawals: Stripe::default(),
                refused: AtomicU64::new(0),
                ratio: self.ratio,
                min_per_second: self.min_per_second,
                window,
                metrics: crate::metrics::BudgetMetrics::new(&self.name, tokens(reserve.into())),
                name: self.name,
            })),
        })
    }
}

/// Builds a throttling [`RetryBudget`] ([`RetryBudget::throttling`]).
#[derive(Debug, Clone)]
pub struct ThrottlingBuilder {
    max_tokens: f64,
    token_ratio: f64,
    name: String,
}

impl ThrottlingBuilder {
    /// The `budget` label of its instruments (feature `metrics`; default `"default"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Validates the settings against gRFC A6's ranges: `max_tokens` in (0, 1000],
    /// `token_ratio` above 0 (and at most 1000), each at least 0.001.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        let bucket = super::throttle::Throttle::new(self.max_tokens, self.token_ratio)?;
        let metrics = crate::metrics::BudgetMetrics::new(&self.name, throttle_balance(&bucket));
        Ok(RetryBudget {
            mode: Mode::Throttle(Arc::new(Throttled {
                bucket,
                name: self.name,
                refused: AtomicU64::new(0),
                metrics,
            })),
        })
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;

/// Model checks (`RUSTFLAGS="--cfg stanchion_loom" cargo test --release --lib loom`): every interleaving
/// of racing withdrawals and deposits on the budget's cells.
#[cfg(all(test, stanchion_loom))]
#[path = "budget_loom.rs"]
mod loom_models;
