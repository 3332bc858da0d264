//! Breaker settings, validated.

use std::time::Duration;

use super::CircuitBreaker;
use crate::error::{ConfigError, check_duration};

/// What a breaker trips on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowKind {
    /// The failure (and slow-call) rate over the last `calls` calls.
    Count {
        /// How many calls the window holds (default 100).
        calls: u32,
    },
    /// The failure (and slow-call) rate over the last `size`, kept in `buckets` slices.
    Time {
        /// The window's length (e.g. 10 s).
        size: Duration,
        /// How many slices it is kept in (e.g. 10: one per second).
        buckets: u32,
    },
    /// A run of consecutive failures (default 5): outlier ejection for one endpoint.
    ConsecutiveFailures {
        /// The run that trips the breaker.
        failures: u32,
    },
}

/// When a call's outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum RecordAt {
    /// When the response stream ends: trailers count (gRPC status), and slow-call time includes
    /// the body. The default.
    #[default]
    EndOfStream,
    /// When the response head arrives (unless only the trailers can tell the outcome).
    Head,
}

/// The default timeout floor: 100 ms. A timeout counts against an endpoint only when its attempt
/// was given at least this long — so a client whose budget is shorter than the service's normal
/// latency does not eject every endpoint, while a hung endpoint is still ejected whichever timer
/// (the per-try timeout or the call's deadline) cut it.
pub const DEFAULT_TIMEOUT_FLOOR: Duration = Duration::from_millis(100);

/// Rates are kept in parts per million, so thresholds compare in integers.
const PPM: f64 = 1_000_000.0;

/// Validated settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) window: WindowKind,
    pub(crate) failure_rate: f64,
    pub(crate) slow_call: Option<(Duration, f64)>,
    /// The failure rate in parts per million (set by `build`).
    pub(crate) failure_ppm: u64,
    /// The slow-call rate in parts per million (set by `build`).
    pub(crate) slow_ppm: u64,
    pub(crate) timeout_floor: Duration,
    pub(crate) minimum_calls: u32,
    pub(crate) open_duration: Duration,
    pub(crate) open_growth: Option<(f64, Duration)>,
    pub(crate) open_jitter: f64,
    pub(crate) half_open_probes: u32,
    pub(crate) record_at: RecordAt,
    pub(crate) name: String,
}

/// Builds a [`CircuitBreaker`]. Defaults: a count window of 100 calls, trips at a 50 % failure
/// rate after at least 20 calls, no slow-call rule, open for 30 s (not growing, no jitter), 3
/// half-open probes, outcomes recorded at the end of the stream.
#[derive(Debug, Clone)]
pub struct BreakerBuilder {
    config: Config,
    /// The trip-rule settings given explicitly ([`TripSettings`]): a template of per-endpoint
    /// breakers keeps its ejection rule unless one is given, and a rule that ignores a setting
    /// given is refused instead of dropping it.
    set: TripSettings,
}

/// Which trip-rule settings a builder was given (bits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct TripSettings(u8);

impl TripSettings {
    const WINDOW: u8 = 1;
    const FAILURE_RATE: u8 = 2;
    const MINIMUM_CALLS: u8 = 4;
    const SLOW_CALLS: u8 = 8;

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

const MAX_OPEN: Duration = Duration::from_secs(24 * 3600);

impl BreakerBuilder {
    pub(crate) fn new() -> Self {
        BreakerBuilder {
            config: Config {
                window: WindowKind::Count { calls: 100 },
                failure_rate: 0.5,
                slow_call: None,
                failure_ppm: 0,
                slow_ppm: 0,
                timeout_floor: DEFAULT_TIMEOUT_FLOOR,
                minimum_calls: 20,
                open_duration: Duration::from_secs(30),
                open_growth: None,
                open_jitter: 0.0,
                half_open_probes: 3,
                record_at: RecordAt::EndOfStream,
                name: "breaker".to_owned(),
            },
            set: TripSettings::default(),
        }
    }

    /// Whether any trip-rule setting (a window, the failure rate, minimum calls, the slow-call
    /// rule) was given: a balancer's breaker template without one keeps the ejection rule.
    pub(crate) fn has_trip_rule(&self) -> bool {
        self.set != TripSettings::default()
    }

    /// A name for events and errors (default "breaker"), e.g. the dependency or endpoint.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Trips on the failure rate over the last `calls` calls (1 to 100,000).
    pub fn count_window(mut self, calls: u32) -> Self {
        self.config.window = WindowKind::Count { calls };
        self.set.0 |= TripSettings::WINDOW;
        self
    }

    /// Trips on the failure rate over the last `size`, kept in `buckets` slices (1 to 60; each
    /// slice at least 10 ms; the window at most 1 h).
    pub fn time_window(mut self, size: Duration, buckets: u32) -> Self {
        self.config.window = WindowKind::Time { size, buckets };
        self.set.0 |= TripSettings::WINDOW;
        self
    }

    /// Trips on `failures` consecutive failures (1 to 100,000): outlier ejection.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.config.window = WindowKind::ConsecutiveFailures { failures };
        self.set.0 |= TripSettings::WINDOW;
        self
    }

    /// The failure rate that trips a rate window, in (0, 1] (default 0.5), to the nearest
    /// millionth: the breaker trips on the call that brings failures / calls to it, compared
    /// exactly (in integers, so `0.55` over 100 calls trips at the 55th failure, not the 56th).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self.set.0 |= TripSettings::FAILURE_RATE;
        self
    }

    /// Also trips when the share of calls slower than `threshold` reaches `rate` (in (0, 1], to
    /// the nearest millionth, compared exactly like the failure rate).
    pub fn slow_calls(mut self, threshold: Duration, rate: f64) -> Self {
        self.config.slow_call = Some((threshold, rate));
        self.set.0 |= TripSettings::SLOW_CALLS;
        self
    }

    /// A timeout counts as a failure only when its attempt was given at least `floor` (default
    /// [`DEFAULT_TIMEOUT_FLOOR`], 100 ms; zero counts every timeout). Applies where the time an
    /// attempt had is known — a balancer's per-endpoint breakers; a breaker around a whole
    /// client counts every timeout. See
    /// [`Class::counts_against_endpoint`](crate::classify::Class::counts_against_endpoint).
    pub fn timeout_floor(mut self, floor: Duration) -> Self {
        self.config.timeout_floor = floor;
        self
    }

    /// Calls a rate window needs before it may trip (default 20; at least 1, and for a count
    /// window at most its size).
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.config.minimum_calls = calls;
        self.set.0 |= TripSettings::MINIMUM_CALLS;
        self
    }

    /// How long the circuit stays open (default 30 s; at most 24 h).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_duration = duration;
        self
    }

    /// Grows the open duration on repeated openings without a successful close: each opening
    /// lasts `multiplier` (1 to 100) times the previous one, up to `max`.
    pub fn growing_open_duration(mut self, multiplier: f64, max: Duration) -> Self {
        self.config.open_growth = Some((multiplier, max));
        self
    }

    /// Shortens each open duration by a random share of up to `fraction` (in [0, 1); default 0),
    /// so breakers that opened together do not probe together.
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.config.open_jitter = fraction;
        self
    }

    /// Probes admitted at once in half-open, and successes needed to close (default 3; 1 to
    /// 1000).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.config.half_open_probes = probes;
        self
    }

    /// When outcomes are recorded (default at the end of the stream).
    pub fn record_at(mut self, at: RecordAt) -> Self {
        self.config.record_at = at;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        Ok(CircuitBreaker::from_config(self.validated()?))
    }

    /// Validates the settings without making a breaker (a template checked once registers no
    /// instruments of its own).
    pub(crate) fn validated(mut self) -> Result<Config, ConfigError> {
        let c = &self.config;
        let rate_ok = |r: f64| r.is_finite() && r * PPM >= 0.5 && r <= 1.0;
        match c.window {
            WindowKind::Count { calls } => {
                if !(1..=100_000).contains(&calls) {
                    return Err(ConfigError::at_path(
                        "window.count.calls",
                        format!("{calls} calls is not between 1 and 100,000"),
                    ));
                }
                if c.minimum_calls > calls {
                    return Err(ConfigError::new(
                        "minimum_calls",
                        format!(
                            "{} is more than the window's {calls} calls, so it could never trip",
                            c.minimum_calls
                        ),
                    ));
                }
            }
            WindowKind::Time { size, buckets } => {
                check_duration("size", size, Duration::from_secs(3600))
                    .map_err(|e| e.within("window.time"))?;
                if !(1..=60).contains(&buckets) {
                    return Err(ConfigError::at_path(
                        "window.time.buckets",
                        format!("{buckets} buckets is not between 1 and 60"),
                    ));
                }
                if size / buckets < Duration::from_millis(10) {
                    return Err(ConfigError::at_path(
                        "window.time.buckets",
                        format!("{size:?} in {buckets} buckets makes slices shorter than 10ms"),
                    ));
                }
            }
            WindowKind::ConsecutiveFailures { failures } => {
                if !(1..=100_000).contains(&failures) {
                    return Err(ConfigError::at_path(
                        "window.consecutive_failures.failures",
                        format!("{failures} is not between 1 and 100,000"),
                    ));
                }
                // A run of failures has no rate: refuse the rate settings rather than drop them.
                for (bit, field) in [
                    (TripSettings::FAILURE_RATE, "failure_rate"),
                    (TripSettings::MINIMUM_CALLS, "minimum_calls"),
                    (TripSettings::SLOW_CALLS, "slow_calls"),
                ] {
                    if self.set.has(bit) {
                        return Err(ConfigError::new(
                            field,
                            format!(
                                "applies to a count or time window; a breaker tripping on \
                                 {failures} consecutive failures would ignore it"
                            ),
                        ));
                    }
                }
            }
        }
        if !rate_ok(c.failure_rate) {
            return Err(ConfigError::new(
                "failure_rate",
                format!(
                    "{} is not in (0, 1] (at least one in a million)",
                    c.failure_rate
                ),
            ));
        }
        if let Some((threshold, rate)) = c.slow_call {
            check_duration("slow_calls", threshold, MAX_OPEN)?;
            if !rate_ok(rate) {
                return Err(ConfigError::new(
                    "slow_calls",
                    format!("the rate {rate} is not in (0, 1]"),
                ));
            }
        }
        if c.minimum_calls == 0 {
            return Err(ConfigError::new("minimum_calls", "must be at least 1"));
        }
        check_duration("open_duration", c.open_duration, MAX_OPEN)?;
        if let Some((multiplier, max)) = c.open_growth {
            if !(multiplier.is_finite() && (1.0..=100.0).contains(&multiplier)) {
                return Err(ConfigError::new(
                    "growing_open_duration",
                    format!("the multiplier {multiplier} is not between 1 and 100"),
                ));
            }
            if max < c.open_duration || max > MAX_OPEN {
                return Err(ConfigError::new(
                    "growing_open_duration",
                    format!(
                        "the maximum {max:?} must lie between the open duration {:?} and 24h",
                        c.open_duration
                    ),
                ));
            }
        }
        if !(c.open_jitter.is_finite() && (0.0..1.0).contains(&c.open_jitter)) {
            return Err(ConfigError::new(
                "open_jitter",
                format!("{} is not in [0, 1)", c.open_jitter),
            ));
        }
        if !(1..=1000).contains(&c.half_open_probes) {
            return Err(ConfigError::new(
                "half_open_probes",
                format!("{} is not between 1 and 1000", c.half_open_probes),
            ));
        }
        if c.timeout_floor > MAX_OPEN {
            return Err(ConfigError::new(
                "timeout_floor",
                format!("{:?} is longer than 24h", c.timeout_floor),
            ));
        }
        let ppm = |rate: f64| (rate * PPM).round() as u64;
        self.config.failure_ppm = ppm(self.config.failure_rate);
        self.config.slow_ppm = self.config.slow_call.map_or(0, |(_, rate)| ppm(rate));
        Ok(self.config)
    }
}

#[cfg(feature = "serde")]
#[path = "data.rs"]
mod data;
