//! A pool's settings as data (feature `serde`): [`PoolBuilder`] reads and writes the fields its
//! methods name, each with its default when absent; unknown fields are refused. Values are
//! checked when the pool (or the client) is built, with the same errors as the methods'.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{PoolBuilder, PoolConfig};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PoolData {
    max_size: usize,
    min_idle: usize,
    #[serde(with = "crate::config::duration")]
    checkout_timeout: Duration,
    #[serde(with = "crate::config::duration")]
    idle_timeout: Duration,
    #[serde(with = "crate::config::duration")]
    max_lifetime: Duration,
    lifetime_jitter: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_requests_per_connection: Option<u64>,
    max_streams_per_connection: usize,
    max_connecting: usize,
    /// Seeds the lifetime jitter (tests); absent: unseeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

impl From<&PoolConfig> for PoolData {
    fn from(c: &PoolConfig) -> Self {
        PoolData {
            max_size: c.max_size,
            min_idle: c.min_idle,
            checkout_timeout: c.checkout_timeout,
            idle_timeout: c.idle_timeout,
            max_lifetime: c.max_lifetime,
            lifetime_jitter: c.lifetime_jitter,
            max_requests_per_connection: c.max_requests,
            max_streams_per_connection: c.max_streams,
            max_connecting: c.max_connecting,
            seed: c.seed,
        }
    }
}

impl Default for PoolData {
    fn default() -> Self {
        PoolData::from(&PoolBuilder::new().config)
    }
}

/// The fields of its methods: `max_size`, `min_idle`, `checkout_timeout` (`"2s"`),
/// `idle_timeout`, `max_lifetime`, `lifetime_jitter`, `max_requests_per_connection`,
/// `max_streams_per_connection`, `max_connecting` (and `seed`).
impl Serialize for PoolBuilder {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PoolData::from(&self.config).serialize(s)
    }
}

impl<'de> Deserialize<'de> for PoolBuilder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = PoolData::deserialize(d)?;
        Ok(PoolBuilder {
            config: PoolConfig {
                max_size: data.max_size,
                min_idle: data.min_idle,
                checkout_timeout: data.checkout_timeout,
                idle_timeout: data.idle_timeout,
                max_lifetime: data.max_lifetime,
                lifetime_jitter: data.lifetime_jitter,
                max_requests: data.max_requests_per_connection,
                max_streams: data.max_streams_per_connection,
                max_connecting: data.max_connecting,
                seed: data.seed,
            },
        })
    }
}
