//! A backoff's and a retry budget's settings as data (feature `serde`).
//!
//! A [`Backoff`] is `{"base": "50ms", "cap": "500ms", "jitter": "full", "multiplier": 2.0}` (a seed is not
//! configuration: a backoff read back draws unseeded). A [`RetryBudget`] is
//! `{"mode": "ratio", "ratio": 0.2, "min_per_second": 10, "window": "10s"}` or
//! `{"mode": "throttling", "max_tokens": 10, "token_ratio": 0.1}`, each with an optional
//! `name`; reading one builds a new budget (clones of one handle share it; a budget read twice
//! is two budgets). Values are checked as they are read, with the builders' errors.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    Backoff, BudgetMode, DEFAULT_MIN_PER_SECOND, DEFAULT_RATIO, DEFAULT_WINDOW, Jitter, RetryBudget,
};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffData {
    #[serde(with = "crate::config::duration")]
    base: Duration,
    #[serde(with = "crate::config::duration")]
    cap: Duration,
    #[serde(default = "full")]
    jitter: Jitter,
    /// Full jitter's growth per retry (default 2).
    #[serde(default = "two")]
    multiplier: f64,
}

fn two() -> f64 {
    2.0
}

fn full() -> Jitter {
    Jitter::Full
}

impl Serialize for Backoff {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        BackoffData {
            base: self.base(),
            cap: self.cap(),
            jitter: self.jitter(),
            multiplier: self.growth(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Backoff {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = BackoffData::deserialize(d)?;
        let backoff = Backoff::new(data.base, data.cap)
            .and_then(|b| b.multiplier(data.multiplier))
            .map_err(D::Error::custom)?;
        Ok(match data.jitter {
            Jitter::Full => backoff,
            Jitter::Decorrelated => backoff.decorrelated(),
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
enum BudgetData {
    Ratio {
        #[serde(default = "ratio")]
        ratio: f64,
        #[serde(default = "min_per_second")]
        min_per_second: u32,
        #[serde(default = "window", with = "crate::config::duration")]
        window: Duration,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Throttling {
        max_tokens: f64,
        token_ratio: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

fn ratio() -> f64 {
    DEFAULT_RATIO
}

fn min_per_second() -> u32 {
    DEFAULT_MIN_PER_SECOND
}

fn window() -> Duration {
    DEFAULT_WINDOW
}

impl Serialize for RetryBudget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let name = Some(self.name().to_owned());
        match self.mode() {
            BudgetMode::Ratio {
                ratio,
                min_per_second,
                window,
            } => BudgetData::Ratio {
                ratio,
                min_per_second,
                window,
                name,
            },
            BudgetMode::Throttling {
                max_tokens,
                token_ratio,
            } => BudgetData::Throttling {
                max_tokens,
                token_ratio,
                name,
            },
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for RetryBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match BudgetData::deserialize(d)? {
            BudgetData::Ratio {
                ratio,
                min_per_second,
                window,
                name,
            } => {
                let mut b = RetryBudget::builder()
                    .ratio(ratio)
                    .min_per_second(min_per_second)
                    .window(window);
                if let Some(name) = name {
                    b = b.name(name);
                }
                b.build()
            }
            BudgetData::Throttling {
                max_tokens,
                token_ratio,
                name,
            } => {
                let mut b = RetryBudget::throttling(max_tokens, token_ratio);
                if let Some(name) = name {
                    b = b.name(name);
                }
                b.build()
            }
        }
        .map_err(D::Error::custom)
    }
}
