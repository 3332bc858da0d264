//! # stanchion
//!
//! Composable [tower] middleware that makes *clients* resilient. Each capability is a standalone
//! `Layer` + `Service` that also works inside `tower::ServiceBuilder`; they share one vocabulary
//! (a deadline carried with the request, a classification of outcomes, one error type) so they
//! compose into the canonical stack, outermost first:
//!
//! ```text
//! IdempotencyKey → Deadline → Bulkhead → Retry → RoundRobin → per endpoint: CircuitBreaker → Pool
//!                                                               attempt level: AttemptLayer
//! ```
//!
//! ## Map of the crate
//!
//! | module | what it holds |
//! |---|---|
//! | [`balance`] | client-side balancing: [`Balancer`](balance::Balancer) over every resolved address ([`DnsResolver`](balance::DnsResolver) with feature `dns`, [`StaticResolver`](balance::StaticResolver)), per-call round robin or least-request, breaker ejection, panic mode |
//! | [`breaker`] | circuit breakers: [`CircuitBreaker`](breaker::CircuitBreaker) (rate, slow-call and consecutive-failure windows, exact half-open probes) and [`CircuitBreakerLayer`](breaker::CircuitBreakerLayer) |
//! | [`bulkhead`] | bulkheads: [`BulkheadLayer`](bulkhead::BulkheadLayer) — bounded concurrency, queue and wait per partition |
//! | [`deadline`] | timeout budgets: [`DeadlineLayer`](deadline::DeadlineLayer) (one budget per logical call), [`AdoptDeadlineLayer`](deadline::AdoptDeadlineLayer) (server side: adopt `grpc-timeout`), [`AttemptLayer`](deadline::AttemptLayer) (per-try timeout written on the wire) |
//! | [`idempotency`] | idempotency keys: [`IdempotencyKeyLayer`](idempotency::IdempotencyKeyLayer) (client: one key per logical request on opted-in routes, safe retries, 409 retried) and [`IdempotencyLayer`](idempotency::IdempotencyLayer) (server: each key runs once, in a [`MemoryStore`](idempotency::MemoryStore) or on Redis) |
//! | [`pool`] | connection pools per endpoint: [`PoolBuilder`](pool::PoolBuilder), [`Pool`](pool::Pool) (bounded checkout, idle and lifetime rotation, never-sent detection); HTTP/1 and HTTP/2 on hyper, tonic channels, reqwest clients |
//! | [`retry`] | retries: [`RetryLayer`](retry::RetryLayer), [`RetryBudget`](retry::RetryBudget), [`Backoff`](retry::Backoff), [`ReplayBody`](retry::ReplayBody) |
//! | [`client`] | the client builder: [`Client::http`](client::Client::http) / [`Client::grpc`](client::Client::grpc) over a [`Target`](client::Target) compose the whole stack, with per-route policies ([`Route`](client::Route), [`RoutePolicy`](client::RoutePolicy)) |
//! | [`classify`] | what an outcome means: success or failure, retryable, overload or unavailable, server delay hints, never-sent requests; for HTTP and gRPC |
//! | `metrics` | (feature `metrics`) the instruments recorded through the `metrics` facade: names, kinds, units, labels; `describe()` |
//! | `fault` | (feature `fault`) `FaultLayer`: seeded latency, errors and outcomes at a rate, for chaos tests of your own stack |
//! | [`error`] | [`Error`], one variant per decision; [`ConfigError`] for builders; `tonic::Status` codes with feature `tonic` |
//!
//! ## Features
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `http` | yes | `http::Request` carriers, header stamps, HTTP and gRPC classification, the balancer and the client builder |
//! | `tonic` | no | `tonic::Status` from [`Error`] with the right codes; pools of tonic channels |
//! | `hyper` | yes | pooled HTTP/1 and HTTP/2 connections on hyper over tokio TCP |
//! | `reqwest` | no | pools of reqwest clients, one per resolved address |
//! | `dns` | no | [`DnsResolver`](balance::DnsResolver): hickory-resolver, every A/AAAA record |
//! | `redis` | no | `RedisStore`: idempotency records on Redis, shared by server instances |
//! | `fault` | no | `FaultLayer`: seeded fault injection for chaos tests |
//! | `tls` | no | TLS for `HttpConnector` (rustls, ring); `tls-webpki-roots`, `tls-native-roots` add root stores |
//! | `metrics` | no | instruments through the `metrics` facade for every layer (see docs/observability.md) |
//!
//! [tower]: https://docs.rs/tower
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// On docs.rs (which builds with every feature and `--cfg docsrs`), each feature-gated item
// shows the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod background;
pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod classify;
#[cfg(feature = "http")]
pub mod client;
mod clock;
#[cfg(feature = "serde")]
mod config;
pub mod deadline;
pub mod error;
#[cfg(feature = "fault")]
pub mod fault;
#[cfg(feature = "http")]
mod guarded;
#[cfg(feature = "http")]
pub mod idempotency;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics/off.rs"]
mod metrics;
#[cfg(feature = "http")]
mod path;
pub mod pool;
mod rejected;
pub mod retry;
mod rng;
mod stripe;
mod sync;
mod warn_gate;
#[cfg(feature = "http")]
mod wire;

pub use error::{BoxError, ConfigError, Error};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The guides' examples, compiled (and run, unless marked `no_run`) as doctests: a name a guide
/// shows exists, with the signature it shows.
#[cfg(all(
    doctest,
    feature = "hyper",
    feature = "tonic",
    feature = "reqwest",
    feature = "dns",
    feature = "redis"
))]
mod guides {
    #[doc = include_str!("../docs/balancing.md")]
    struct Balancing;
    #[doc = include_str!("../docs/bulkhead.md")]
    struct Bulkhead;
    #[doc = include_str!("../docs/circuit-breaker.md")]
    struct CircuitBreaker;
    #[doc = include_str!("../docs/client.md")]
    struct Client;
    #[cfg(feature = "serde")]
    #[doc = include_str!("../docs/configuration.md")]
    struct Configuration;
    #[doc = include_str!("../docs/deadline.md")]
    struct Deadline;
    #[doc = include_str!("../docs/idempotency.md")]
    struct Idempotency;
    #[doc = include_str!("../docs/pool.md")]
    struct Pool;
    #[doc = include_str!("../docs/recipes.md")]
    struct Recipes;
    #[doc = include_str!("../docs/retry.md")]
    struct Retry;
}
