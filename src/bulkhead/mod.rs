//! Bulkheads: bound the work *and* the wait, per partition.
//!
//! A bulkhead keeps one part of a program from taking all the capacity another part needs.
//! tower's `ConcurrencyLimit` queues waiters without bound (tower issue 793), and a silent queue
//! is how pool exhaustion turns into an outage. [`BulkheadLayer`] admits at most `concurrency`
//! calls per partition; further calls wait in a bounded FIFO queue for at most `max_wait` (and
//! never past their deadline); a call that finds the queue full is rejected at once with
//! [`Error::BulkheadFull`](crate::Error::BulkheadFull), one that waited too long gets
//! [`Error::BulkheadTimeout`](crate::Error::BulkheadTimeout). Waiting happens in the response
//! future, never by failing `poll_ready`.
//!
//! **Partitions**: a [`PartitionKey`] picks each call's partition from the request (a route, a
//! tenant, a priority class). Declared partitions have their own limits — health checks in a
//! tiny partition of their own, so a saturated main path cannot starve them; with
//! [`BulkheadBuilder::per_key`] every other key gets its own partition too, in a bounded table
//! (idle partitions make room for new keys; a key that finds none shares the default
//! partition), so a flood of distinct keys cannot grow memory nor slow lookups.
//!
//! The permit is held until the response stream ends (or, with
//! [`BulkheadBuilder::release_at_head`], until the response head), and released if the call's
//! future is dropped.
//!
//! **Adaptive limits** ([`BulkheadBuilder::adaptive`]): each partition's limit moves by AIMD —
//! +1 after a success at the limit, ×0.9 on an overload signal — between a minimum and the
//! partition's `concurrency`.
//!
//! ```
//! use std::time::Duration;
//! use stanchion::bulkhead::{Bulkhead, BulkheadLayer, HeaderKey, Limits};
//!
//! let bulkhead = Bulkhead::builder()
//!     .limits(Limits { concurrency: 100, queue: 50, max_wait: Duration::from_secs(1) })
//!     .partition("health", Limits { concurrency: 2, queue: 2, max_wait: Duration::from_millis(100) })
//!     .build()
//!     .unwrap();
//! let layer = BulkheadLayer::new(bulkhead.clone(), HeaderKey::new("x-partition"));
//! assert_eq!(bulkhead.stats("health").unwrap().in_flight, 0);
//! # let _ = layer;
//! ```

mod layer;
mod partition;
mod registry;

use std::sync::Arc;
use std::time::Duration;

pub use self::layer::{BulkheadFuture, BulkheadLayer, BulkheadResponse, BulkheadService};
pub use self::partition::{AdaptiveLimit, BulkheadPermit, Limits, PartitionStats};
#[cfg(feature = "http")]
pub use crate::guarded::GuardedBody;

use self::registry::Registry;
use crate::error::ConfigError;

/// The name of the default partition: calls with no partition of their own (no route
/// partition, no per-key header) take it. Read its counters with
/// `bulkhead.stats(DEFAULT_PARTITION)` or [`Bulkhead::default_stats`]; it is also the
/// `partition` label of its instruments (feature `metrics`) and of [`Error::BulkheadFull`](crate::Error::BulkheadFull).
pub const DEFAULT_PARTITION: &str = "default";

/// The largest concurrency or queue a partition accepts.
pub(crate) const MAX_SIZE: usize = 1_000_000;
/// The longest wait a partition accepts.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// A bulkhead's partitions and their counters: a cheap handle, shared by clones.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    until_end: bool,
}

impl Bulkhead {
    /// A builder: a default partition of 100 concurrent calls, a queue of 50 and a 1 s wait.
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder {
            default: Limits::default(),
            named: Vec::new(),
            per_key: None,
            adaptive: None,
            until_end: true,
            recorded: true,
        }
    }

    /// The counters of the partition named `name` ([`DEFAULT_PARTITION`] for the default
    /// partition); `None` for a name never declared (or a per-key partition not in use now).
    pub fn stats(&self, name: &str) -> Option<PartitionStats> {
        self.inner
            .registry
            .all()
            .iter()
            .find(|p| &*p.name == name)
            .map(|p| p.stats())
    }

    /// The counters of the default partition ([`DEFAULT_PARTITION`]), which every bulkhead has.
    pub fn default_stats(&self) -> PartitionStats {
        self.inner.registry.find(None).stats()
    }

    /// The counters of every partition that exists now.
    pub fn all_stats(&self) -> Vec<PartitionStats> {
        self.inner
            .registry
            .all()
            .iter()
            .map(|p| p.stats())
            .collect()
    }

    /// Per-key partitions evicted (idle, and unused since the table last filled) to make room
    /// for new keys, since the bulkhead was built.
    pub fn evicted_partitions(&self) -> u64 {
        self.inner.registry.evicted()
    }

    #[inline]
    fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    #[inline]
    fn holds_until_end(&self) -> bool {
        self.inner.until_end
    }
}

/// Builds a [`Bulkhead`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct BulkheadBuilder {
    default: Limits,
    named: Vec<(String, Limits)>,
    per_key: Option<(usize, Limits)>,
    adaptive: Option<AdaptiveLimit>,
    until_end: bool,
    recorded: bool,
}

impl BulkheadBuilder {
    /// The default partition's limits (for calls without a key, or whose key has no partition).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.default = limits;
        self
    }

    /// A partition of its own for calls whose key is `name`.
    pub fn partition(mut self, name: impl Into<String>, limits: Limits) -> Self {
        self.named.push((name.into(), limits));
        self
    }

    /// Gives every other key a partition of its own with `limits`, in a table of `max` slots (at
    /// most 10,000). A key lives in one of eight slots from its hash on (a lookup reads at most
    /// eight); a new key takes an empty one there, or one whose partition is idle and has not
    /// been used since the table last filled (counted: [`Bulkhead::evicted_partitions`]); a key
    /// that finds no room shares the default partition.
    pub fn per_key(mut self, max: usize, limits: Limits) -> Self {
        self.per_key = Some((max, limits));
        self
    }

    /// A bulkhead whose partitions record no instruments: the pass-through partition of a
    /// client built without a bulkhead is nobody's bulkhead, and must not add its calls (or
    /// its limit of a million) to a declared `default` partition's series.
    #[cfg(feature = "http")]
    pub(crate) fn unrecorded(mut self) -> Self {
        self.recorded = false;
        self
    }

    /// Whether a key read from a request can name a partition other than the default: a
    /// declared one, or a per-key one.
    #[cfg(feature = "http")]
    pub(crate) fn takes_keys(&self) -> bool {
        self.per_key.is_some() || !self.named.is_empty()
    }

    /// Makes every partition's limit adaptive (AIMD), between `adaptive.min` and the
    /// partition's `concurrency`.
    pub fn adaptive(mut self, adaptive: AdaptiveLimit) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// Releases the permit when the response head arrives, instead of when its stream ends.
    pub fn release_at_head(mut self) -> Self {
        self.until_end = false;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Bulkhead, ConfigError> {
        check_limits(&self.default).map_err(|e| e.within("limits"))?;
        for (i, (name, limits)) in self.named.iter().enumerate() {
            if name.is_empty() || name == DEFAULT_PARTITION {
                return Err(ConfigError::at_path(
                    &format!("partitions[{i}].name"),
                    format!("{name:?} is not a usable partition name"),
                ));
            }
            if self.named[..i].iter().any(|(other, _)| other == name) {
                return Err(ConfigError::at_path(
                    &format!("partitions[{i}].name"),
                    format!("{name:?} is declared twice"),
                ));
            }
            check_limits(limits).map_err(|e| e.within(format_args!("partitions[{i}].limits")))?;
        }
        if let Some((max, limits)) = &self.per_key {
            if *max > 10_000 {
                return Err(ConfigError::at_path(
                    "per_key.max",
                    format!("{max} partitions is more than 10,000"),
                ));
            }
            check_limits(limits).map_err(|e| e.within("per_key.limits"))?;
        }
        if let Some(a) = &self.adaptive {
            if a.min == 0 || a.initial < a.min {
                return Err(ConfigError::at_path(
                    "adaptive.min",
                    format!(
                        "needs 1 <= min <= initial, got min {} and initial {}",
                        a.min, a.initial
                    ),
                ));
            }
            if !(a.backoff > 0.0 && a.backoff < 1.0) {
                return Err(ConfigError::at_path(
                    "adaptive.backoff",
                    format!("backoff {} is not in (0, 1)", a.backoff),
                ));
            }
            if a.slow_call.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError::at_path(
                    "adaptive.slow_call",
                    "slow_call must be longer than zero",
                ));
            }
        }
        Ok(Bulkhead {
            inner: Arc::new(Inner {
                registry: Registry::new(
                    self.default,
                    self.named,
                    self.per_key,
                    self.adaptive,
                    self.recorded,
                ),
                until_end: self.until_end,
            }),
        })
    }
}

/// Errors name the limit (`concurrency`, `queue`, `max_wait`); the caller says whose.
fn check_limits(limits: &Limits) -> Result<(), ConfigError> {
    if !(1..=MAX_SIZE).contains(&limits.concurrency) {
        return Err(ConfigError::new(
            "concurrency",
            format!(
                "concurrency {} is not between 1 and {MAX_SIZE}",
                limits.concurrency
            ),
        ));
    }
    if limits.queue > MAX_SIZE {
        return Err(ConfigError::new(
            "queue",
            format!("queue {} is more than {MAX_SIZE}", limits.queue),
        ));
    }
    if limits.max_wait > MAX_WAIT {
        return Err(ConfigError::new(
            "max_wait",
            format!("max_wait {:?} is longer than {MAX_WAIT:?}", limits.max_wait),
        ));
    }
    Ok(())
}

/// Picks a call's partition from its request: `None` for the default partition.
pub trait PartitionKey<Req> {
    /// The partition key of `req`.
    fn partition_key<'a>(&'a self, req: &'a Req) -> Option<&'a str>;
}

/// Every call in the default partition.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKey;

impl<Req> PartitionKey<Req> for NoKey {
    fn partition_key<'a>(&'a self, _: &'a Req) -> Option<&'a str> {
        None
    }
}

/// Any function from a request to its key, e.g. `fn(&Request<B>) -> Option<&str>`.
impl<Req> PartitionKey<Req> for for<'a> fn(&'a Req) -> Option<&'a str> {
    fn partition_key<'a>(&'a self, req: &'a Req) -> Option<&'a str> {
        self(req)
    }
}

/// The key is the value of a request header (e.g. a tenant id or a priority class).
#[cfg(feature = "http")]
#[derive(Debug, Clone)]
pub struct HeaderKey(http::HeaderName);

#[cfg(feature = "http")]
impl HeaderKey {
    /// Reads the key from header `name`.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name; use [`HeaderKey::from_name`] for names from input.
    pub fn new(name: &'static str) -> Self {
        HeaderKey(http::HeaderName::from_static(name))
    }

    /// Reads the key from header `name`.
    pub fn from_name(name: http::HeaderName) -> Self {
        HeaderKey(name)
    }
}

#[cfg(feature = "http")]
impl<B> PartitionKey<http::Request<B>> for HeaderKey {
    fn partition_key<'a>(&'a self, req: &'a http::Request<B>) -> Option<&'a str> {
        req.headers().get(&self.0)?.to_str().ok()
    }
}

#[cfg(feature = "serde")]
mod data;
