//! The server layer's settings: defaults, the builder, validation.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;

use super::IdempotencyLayer;
use crate::classify::HttpClassifier;
use crate::error::{ConfigError, check_duration};
use crate::idempotency::client::DEFAULT_KEY_HEADER;
use crate::idempotency::store::IdempotencyStore;
use crate::metrics::IdempotencyMetrics;

/// The default time a finished request's response is kept: 24 hours (as Stripe keeps keys).
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The default lease of an in-flight record: 10 s, renewed every third of that while the
/// handler runs. After a crash the key can run again once the lease ends.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The default limit on a keyed request's body (read to fingerprint it): 1 MiB.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 1 << 20;
/// The default limit on a stored response body: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BODY: usize = 1 << 20;
/// The header on a replayed response: `idempotency-replayed: true`.
pub const REPLAYED_HEADER: HeaderName = HeaderName::from_static("idempotency-replayed");
/// The header on a replay whose original body was over the limit and not kept.
pub const BODY_OMITTED_HEADER: HeaderName = HeaderName::from_static("idempotency-body-omitted");

const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Finds the tenant (principal) a request belongs to; `None` means it has none.
type ScopeFn = dyn Fn(&http::request::Parts) -> Option<String> + Send + Sync;

pub(super) struct ServerConfig {
    pub(super) header: HeaderName,
    pub(super) ttl: Duration,
    pub(super) lease: Duration,
    pub(super) max_request_body: usize,
    pub(super) max_response_body: usize,
    pub(super) require_key: bool,
    pub(super) routes: Vec<String>,
    pub(super) scope: Option<Box<ScopeFn>>,
    pub(super) detach: bool,
    pub(super) store_failures: bool,
    pub(super) classifier: HttpClassifier,
    /// What happened to leases, for [`IdempotencyLayer::stats`].
    pub(super) leases: LeaseCounters,
    /// The layer's instruments (feature `metrics`), registered by
    /// [`IdempotencyLayerBuilder::build`].
    pub(super) metrics: IdempotencyMetrics,
    /// One WARN a second for store failures that repeat on every request during an outage;
    /// the rest at DEBUG.
    pub(super) warnings: ServerWarnings,
}

/// Counters of lease renewals, shared by a layer and its services.
#[derive(Debug, Default)]
pub(super) struct LeaseCounters {
    pub(super) renewals: std::sync::atomic::AtomicU64,
    pub(super) slow_renewals: std::sync::atomic::AtomicU64,
    pub(super) failed_renewals: std::sync::atomic::AtomicU64,
    pub(super) lost_leases: std::sync::atomic::AtomicU64,
}

/// What an idempotency layer's leases went through, since it was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct IdempotencyStats {
    /// Lease renewals that came back (kept, lost or failed) while handlers ran.
    pub renewals: u64,
    /// Renewals still in flight when the lease's end passed (slower than the lease's margin:
    /// what was left of it when they began).
    pub slow_renewals: u64,
    /// Renewals the store failed (an error).
    pub failed_renewals: u64,
    /// Leases lost while the handler ran — the store no longer held them when a renewal came
    /// back or the response was to be stored, or their end passed with no renewal in flight
    /// (the renewals failed): another request may have run the key.
    pub lost_leases: u64,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("header", &self.header)
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .field("max_request_body", &self.max_request_body)
            .field("max_response_body", &self.max_response_body)
            .field("require_key", &self.require_key)
            .field("routes", &self.routes)
            .field("scoped", &self.scope.is_some())
            .field("detach", &self.detach)
            .field("store_failures", &self.store_failures)
            .finish()
    }
}

impl<St: IdempotencyStore> IdempotencyLayer<St> {
    /// A builder over `store`, with the documented defaults.
    pub fn builder(store: St) -> IdempotencyLayerBuilder<St> {
        IdempotencyLayerBuilder {
            store,
            config: ServerConfig {
                header: DEFAULT_KEY_HEADER,
                ttl: DEFAULT_RECORD_TTL,
                lease: DEFAULT_LEASE,
                max_request_body: DEFAULT_MAX_REQUEST_BODY,
                max_response_body: DEFAULT_MAX_RESPONSE_BODY,
                require_key: false,
                routes: Vec::new(),
                scope: None,
                detach: true,
                store_failures: false,
                classifier: HttpClassifier::new(),
                leases: LeaseCounters::default(),
                metrics: IdempotencyMetrics::unregistered(),
                warnings: ServerWarnings::default(),
            },
        }
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.store
    }

    /// How long finished responses are kept.
    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    /// The lease of an in-flight record.
    pub fn lease(&self) -> Duration {
        self.config.lease
    }
}

/// Settings of an [`IdempotencyLayer`]; [`build`](Self::build) validates them.
pub struct IdempotencyLayerBuilder<St> {
    store: St,
    config: ServerConfig,
}

impl<St: std::fmt::Debug> std::fmt::Debug for IdempotencyLayerBuilder<St> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

impl<St: IdempotencyStore> IdempotencyLayerBuilder<St> {
    /// The header the key arrives in (default `Idempotency-Key`; gRPC metadata has the same
    /// name).
    pub fn header(mut self, header: HeaderName) -> Self {
        self.config.header = header;
        self
    }

    /// How long a finished response is kept for replay (default 24 h, at most a year).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// The lease of an in-flight record (default 10 s): renewed every third of it while the
    /// handler runs; after a crash, the key runs again once it ends. At least 30 ms.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// The largest keyed request body read to fingerprint it (default 1 MiB); a larger one is
    /// refused with `413`.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.config.max_request_body = bytes;
        self
    }

    /// The largest response body stored (default 1 MiB). A larger response still reaches its
    /// client whole; its record keeps the status and headers, and a replay carries
    /// `idempotency-body-omitted: true` and an empty body.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.config.max_response_body = bytes;
        self
    }

    /// Refuse POST and PATCH requests without a key with `400` (default: let them through).
    pub fn require_key(mut self, require: bool) -> Self {
        self.config.require_key = require;
        self
    }

    /// Apply the layer only to paths under `prefix`, segment by segment (`/v1/payments` covers
    /// `/v1/payments/42`, not `/v1/paymentsXYZ`); call again for more. Without routes, it
    /// applies to every path.
    pub fn route(mut self, prefix: impl Into<String>) -> Self {
        self.config.routes.push(prefix.into());
        self
    }

    /// The tenant (principal) a request belongs to, from its head — an authenticated user id,
    /// an API key's account. Keys are scoped by it, so one tenant can never replay another's
    /// response. A keyed request whose scope is `None` is refused with `401`. Without a scope
    /// function every request shares one scope.
    pub fn scope<F>(mut self, scope: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.config.scope = Some(Box::new(scope));
        self
    }

    /// Run the handler on its own task, so a client going away does not cancel it (default
    /// `true`). With `false`, a dropped handler's record stays until its lease ends.
    pub fn detach(mut self, detach: bool) -> Self {
        self.config.detach = detach;
        self
    }

    /// Store server failures (5xx, gRPC UNAVAILABLE/INTERNAL/…) too, so a repeat replays the
    /// failure instead of running again (default `false`).
    pub fn store_failures(mut self, store: bool) -> Self {
        self.config.store_failures = store;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<IdempotencyLayer<St>, ConfigError> {
        let mut config = self.config;
        config.ttl = check_duration("ttl", config.ttl, MAX_TTL)?;
        config.lease = check_duration("lease", config.lease, MAX_TTL)?;
        if config.lease < Duration::from_millis(30) {
            return Err(ConfigError::new(
                "lease",
                "must be at least 30 ms (it is renewed every third of it)",
            ));
        }
        if let Some(route) = config.routes.iter().find(|r| !r.starts_with('/')) {
            return Err(ConfigError::new(
                "route",
                format!("`{route}` must start with `/`"),
            ));
        }
        // Registered once, here: the layer and its services share them (recording allocates
        // nothing).
        config.metrics = IdempotencyMetrics::new();
        Ok(IdempotencyLayer {
            store: self.store,
            config: Arc::new(config),
        })
    }
}

/// The server layer's WARN gates, one per kind of event (see `crate::warn_gate`): a storm of
/// failed claims never hides a response that could not be stored (a key that may run twice).
#[derive(Debug, Default)]
pub(super) struct ServerWarnings {
    pub(super) token: crate::warn_gate::WarnGate,
    pub(super) claim: crate::warn_gate::WarnGate,
    pub(super) renewal: crate::warn_gate::WarnGate,
    pub(super) store: crate::warn_gate::WarnGate,
    pub(super) release: crate::warn_gate::WarnGate,
}
