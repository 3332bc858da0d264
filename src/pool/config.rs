//! Pool settings, their defaults and their validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Service;

use super::service::Pool;
use crate::error::{ConfigError, check_duration};

/// Default maximum number of connections per endpoint: 10 (small pools, as pool-tuning
/// practice recommends: more connections rarely buy more throughput from one server).
pub const DEFAULT_MAX_SIZE: usize = 10;
/// Default longest wait for a connection: 2 s (and never longer than the call's deadline).
pub const DEFAULT_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default idle timeout: 30 s, below common server keep-alives (nginx 75 s, AWS ALB 60 s), so
/// the client closes an idle connection before the server does and never sends into a closing
/// one.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default maximum connection lifetime: 30 min, after which a connection is rotated (new
/// connections follow DNS and load-balancer changes).
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Default lifetime jitter: each connection's lifetime is drawn uniformly from the last 10 % of
/// the maximum (27–30 min by default), so connections opened together do not all reconnect at
/// once.
pub const DEFAULT_LIFETIME_JITTER: f64 = 0.1;
/// Default number of concurrent requests per multiplexed (HTTP/2) connection: 100, the lowest
/// `SETTINGS_MAX_CONCURRENT_STREAMS` RFC 9113 recommends servers allow. Beyond it the pool
/// opens another connection instead of letting requests queue invisibly inside h2.
pub const DEFAULT_MAX_STREAMS: usize = 100;
/// Default number of connection attempts in flight per endpoint: 4, so an endpoint coming back
/// from an outage is not hit by a connect storm.
pub const DEFAULT_MAX_CONNECTING: usize = 4;

/// The longest duration a pool setting accepts: 7 days.
const MAX_SETTING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Validated pool settings.
#[derive(Debug, Clone)]
pub(crate) struct PoolConfig {
    pub(crate) max_size: usize,
    pub(crate) min_idle: usize,
    pub(crate) checkout_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) lifetime_jitter: f64,
    pub(crate) max_requests: Option<u64>,
    pub(crate) max_streams: usize,
    pub(crate) max_connecting: usize,
    pub(crate) seed: Option<u64>,
}

/// Builds a [`Pool`]; every setting is validated by [`build`](PoolBuilder::build).
///
/// | setting | default |
/// |---|---|
/// | [`max_size`](Self::max_size) | [`DEFAULT_MAX_SIZE`] (10) |
/// | [`min_idle`](Self::min_idle) | 0 |
/// | [`checkout_timeout`](Self::checkout_timeout) | [`DEFAULT_CHECKOUT_TIMEOUT`] (2 s) |
/// | [`idle_timeout`](Self::idle_timeout) | [`DEFAULT_IDLE_TIMEOUT`] (30 s) |
/// | [`max_lifetime`](Self::max_lifetime) | [`DEFAULT_MAX_LIFETIME`] (30 min) |
/// | [`lifetime_jitter`](Self::lifetime_jitter) | [`DEFAULT_LIFETIME_JITTER`] (0.1) |
/// | [`max_requests_per_connection`](Self::max_requests_per_connection) | unlimited |
/// | [`max_streams_per_connection`](Self::max_streams_per_connection) | [`DEFAULT_MAX_STREAMS`] (100) |
/// | [`max_connecting`](Self::max_connecting) | [`DEFAULT_MAX_CONNECTING`] (4) |
#[derive(Debug, Clone)]
pub struct PoolBuilder {
    config: PoolConfig,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            config: PoolConfig {
                max_size: DEFAULT_MAX_SIZE,
                min_idle: 0,
                checkout_timeout: DEFAULT_CHECKOUT_TIMEOUT,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                max_lifetime: DEFAULT_MAX_LIFETIME,
                lifetime_jitter: DEFAULT_LIFETIME_JITTER,
                max_requests: None,
                max_streams: DEFAULT_MAX_STREAMS,
                max_connecting: DEFAULT_MAX_CONNECTING,
                seed: None,
            },
        }
    }
}

impl PoolBuilder {
    /// A builder with the documented defaults.
    pub fn new() -> Self {
        PoolBuilder::default()
    }

    /// Most connections open (or opening) to the endpoint at once (at least 1).
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.config.max_size = max_size;
        self
    }

    /// Idle connections the pool keeps open ahead of demand (at most `max_size`); the
    /// background reaper opens them.
    pub fn min_idle(mut self, min_idle: usize) -> Self {
        self.config.min_idle = min_idle;
        self
    }

    /// Longest wait for a connection, including connecting; the call's remaining deadline
    /// shortens it. Past it the call fails with [`Error::PoolTimeout`](crate::Error::PoolTimeout).
    pub fn checkout_timeout(mut self, timeout: Duration) -> Self {
        self.config.checkout_timeout = timeout;
        self
    }

    /// How long a connection may sit unused before the pool closes it.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// The longest a connection lives: past its (jittered) lifetime it takes no new requests
    /// and closes once its in-flight requests finish.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.max_lifetime = lifetime;
        self
    }

    /// The share of `max_lifetime` over which lifetimes are spread, in `[0, 1)`: each
    /// connection lives a uniform draw from `[max_lifetime × (1 − jitter), max_lifetime]`.
    pub fn lifetime_jitter(mut self, jitter: f64) -> Self {
        self.config.lifetime_jitter = jitter;
        self
    }

    /// Rotates a connection after it has carried `max` requests (at least 1): spreads load
    /// again after the endpoint set changes behind one address.
    pub fn max_requests_per_connection(mut self, max: u64) -> Self {
        self.config.max_requests = Some(max);
        self
    }

    /// Concurrent requests per multiplexed (HTTP/2) connection before the pool opens another
    /// (at least 1).
    pub fn max_streams_per_connection(mut self, max: usize) -> Self {
        self.config.max_streams = max;
        self
    }

    /// Connection attempts in flight at once (at least 1).
    pub fn max_connecting(mut self, max: usize) -> Self {
        self.config.max_connecting = max;
        self
    }

    /// Seeds the lifetime jitter, for reproducible tests.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Validates the settings and builds a pool of connections to `target`, made by
    /// `connector`. Inside a tokio runtime the background reaper starts now (and opens
    /// `min_idle` connections); otherwise on the first call.
    pub fn build<C, T>(self, connector: C, target: T) -> Result<Pool<C, T>, ConfigError>
    where
        C: Service<T> + Clone + Send + 'static,
        C::Response: super::Connection,
        C::Future: Send + 'static,
        C::Error: Into<crate::BoxError>,
        T: fmt::Display + Clone + Send + Sync + 'static,
    {
        Ok(self.settings()?.build(connector, target))
    }

    /// Validates the settings once, for building many pools (one per endpoint) without a
    /// `Result` each: what a balancer's per-endpoint constructor wants.
    pub fn settings(self) -> Result<PoolSettings, ConfigError> {
        Ok(PoolSettings {
            config: self.validate()?,
        })
    }

    fn validate(self) -> Result<PoolConfig, ConfigError> {
        let c = self.config;
        if c.max_size == 0 {
            return Err(ConfigError::new("max_size", "must be at least 1"));
        }
        if c.min_idle > c.max_size {
            return Err(ConfigError::new(
                "min_idle",
                format!("{} is more than max_size ({})", c.min_idle, c.max_size),
            ));
        }
        check_duration("checkout_timeout", c.checkout_timeout, MAX_SETTING)?;
        check_duration("idle_timeout", c.idle_timeout, MAX_SETTING)?;
        check_duration("max_lifetime", c.max_lifetime, MAX_SETTING)?;
        if !(0.0..1.0).contains(&c.lifetime_jitter) {
            return Err(ConfigError::new(
                "lifetime_jitter",
                format!("{} is outside [0, 1)", c.lifetime_jitter),
            ));
        }
        if c.max_requests == Some(0) {
            return Err(ConfigError::new(
                "max_requests_per_connection",
                "must be at least 1",
            ));
        }
        if c.max_streams == 0 {
            return Err(ConfigError::new(
                "max_streams_per_connection",
                "must be at least 1",
            ));
        }
        if c.max_connecting == 0 {
            return Err(ConfigError::new("max_connecting", "must be at least 1"));
        }
        Ok(c)
    }
}

/// Validated pool settings ([`PoolBuilder::settings`]): builds pools that cannot fail.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    config: PoolConfig,
}

impl PoolSettings {
    /// A pool of connections to `target`, made by `connector`, with these settings.
    pub fn build<C, T>(&self, connector: C, target: T) -> Pool<C, T>
    where
        C: Service<T> + Clone + Send + 'static,
        C::Response: super::Connection,
        C::Future: Send + 'static,
        C::Error: Into<crate::BoxError>,
        T: fmt::Display + Clone + Send + Sync + 'static,
    {
        let endpoint: Arc<str> = target.to_string().into();
        Pool::new(self.config.clone(), connector, target, endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = PoolBuilder::default().validate().unwrap();
        assert_eq!(c.max_size, 10);
        assert_eq!(c.min_idle, 0);
        assert_eq!(c.checkout_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(30));
        assert_eq!(c.max_lifetime, Duration::from_secs(1800));
        assert_eq!(c.lifetime_jitter, 0.1);
        assert_eq!(c.max_requests, None);
        assert_eq!(c.max_streams, 100);
        assert_eq!(c.max_connecting, 4);
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let cases = [
            (PoolBuilder::default().max_size(0), "max_size"),
            (PoolBuilder::default().max_size(2).min_idle(3), "min_idle"),
            (
                PoolBuilder::default().checkout_timeout(Duration::ZERO),
                "checkout_timeout",
            ),
            (
                PoolBuilder::default().idle_timeout(Duration::ZERO),
                "idle_timeout",
            ),
            (
                PoolBuilder::default().max_lifetime(Duration::from_secs(u64::MAX)),
                "max_lifetime",
            ),
            (
                PoolBuilder::default().lifetime_jitter(1.0),
                "lifetime_jitter",
            ),
            (
                PoolBuilder::default().lifetime_jitter(f64::NAN),
                "lifetime_jitter",
            ),
            (
                PoolBuilder::default().max_requests_per_connection(0),
                "max_requests_per_connection",
            ),
            (
                PoolBuilder::default().max_streams_per_connection(0),
                "max_streams_per_connection",
            ),
            (PoolBuilder::default().max_connecting(0), "max_connecting"),
        ];
        for (builder, field) in cases {
            assert_eq!(builder.validate().unwrap_err().field(), field);
        }
    }
}

#[cfg(feature = "serde")]
#[path = "data.rs"]
mod data;
