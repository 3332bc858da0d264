//! A breaker's settings as data (feature `serde`): [`BreakerBuilder`] reads and writes the
//! settings its methods name. Every field is optional, and a trip-rule setting (`window`,
//! `failure_rate`, `minimum_calls`, `slow_calls`) is written only when it was given — so a
//! balancer's breaker template read back keeps its ejection rule exactly when the builder did.
//! Values are checked when the breaker (or the client) is built, with the methods' errors.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{BreakerBuilder, RecordAt, TripSettings, WindowKind};

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct BreakerData {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    /// `{"count": {"calls": 100}}`, `{"time": {"size": "10s", "buckets": 10}}` or
    /// `{"consecutive_failures": {"failures": 5}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<Window>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    minimum_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slow_calls: Option<SlowCalls>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::config::duration::option"
    )]
    timeout_floor: Option<Duration>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::config::duration::option"
    )]
    open_duration: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    growing_open_duration: Option<Growth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    open_jitter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    half_open_probes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    record_at: Option<RecordAt>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Window {
    Count {
        calls: u32,
    },
    Time {
        #[serde(with = "crate::config::duration")]
        size: Duration,
        buckets: u32,
    },
    ConsecutiveFailures {
        failures: u32,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlowCalls {
    #[serde(with = "crate::config::duration")]
    threshold: Duration,
    rate: f64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Growth {
    multiplier: f64,
    #[serde(with = "crate::config::duration")]
    max: Duration,
}

/// The fields of its methods, each optional: `name`, `window`, `failure_rate`,
/// `minimum_calls`, `slow_calls` (`{"threshold": "1s", "rate": 0.5}`), `timeout_floor`,
/// `open_duration`, `growing_open_duration` (`{"multiplier": 2.0, "max": "5m"}`),
/// `open_jitter`, `half_open_probes`, `record_at` (`"end_of_stream"` / `"head"`).
impl Serialize for BreakerBuilder {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = &self.config;
        let set = |bit| self.set.has(bit);
        BreakerData {
            name: Some(c.name.clone()),
            window: set(TripSettings::WINDOW).then_some(match c.window {
                WindowKind::Count { calls } => Window::Count { calls },
                WindowKind::Time { size, buckets } => Window::Time { size, buckets },
                WindowKind::ConsecutiveFailures { failures } => {
                    Window::ConsecutiveFailures { failures }
                }
            }),
            failure_rate: set(TripSettings::FAILURE_RATE).then_some(c.failure_rate),
            minimum_calls: set(TripSettings::MINIMUM_CALLS).then_some(c.minimum_calls),
            slow_calls: c
                .slow_call
                .filter(|_| set(TripSettings::SLOW_CALLS))
                .map(|(threshold, rate)| SlowCalls { threshold, rate }),
            timeout_floor: Some(c.timeout_floor),
            open_duration: Some(c.open_duration),
            growing_open_duration: c
                .open_growth
                .map(|(multiplier, max)| Growth { multiplier, max }),
            open_jitter: Some(c.open_jitter),
            half_open_probes: Some(c.half_open_probes),
            record_at: Some(c.record_at),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for BreakerBuilder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = BreakerData::deserialize(d)?;
        let mut b = BreakerBuilder::new();
        if let Some(name) = data.name {
            b = b.name(name);
        }
        b = match data.window {
            Some(Window::Count { calls }) => b.count_window(calls),
            Some(Window::Time { size, buckets }) => b.time_window(size, buckets),
            Some(Window::ConsecutiveFailures { failures }) => b.consecutive_failures(failures),
            None => b,
        };
        if let Some(rate) = data.failure_rate {
            b = b.failure_rate(rate);
        }
        if let Some(calls) = data.minimum_calls {
            b = b.minimum_calls(calls);
        }
        if let Some(slow) = data.slow_calls {
            b = b.slow_calls(slow.threshold, slow.rate);
        }
        if let Some(floor) = data.timeout_floor {
            b = b.timeout_floor(floor);
        }
        if let Some(open) = data.open_duration {
            b = b.open_duration(open);
        }
        if let Some(growth) = data.growing_open_duration {
            b = b.growing_open_duration(growth.multiplier, growth.max);
        }
        if let Some(jitter) = data.open_jitter {
            b = b.open_jitter(jitter);
        }
        if let Some(probes) = data.half_open_probes {
            b = b.half_open_probes(probes);
        }
        if let Some(at) = data.record_at {
            b = b.record_at(at);
        }
        Ok(b)
    }
}
