//! Real servers on loopback (127.0.0.1, and ::1 where a test needs two addresses) for the
//! integration tests, with per-request fault injection.
//!
//! - [`http_server::HttpServer`]: hyper, HTTP/1 and HTTP/2 (prior knowledge) on one port.
//! - [`grpc_server::GrpcServer`]: tonic's server with a hand-written service (no protoc needed),
//!   whose status can go in the headers (trailers-only) or in the trailers.
//!
//! - [`dns_server::DnsServer`]: a small authoritative DNS server (UDP and TCP) whose records a
//!   test can change.
//!
//! - [`balancer::TestBalancer`]: a plain round robin with no breakers, for the retry tests and the
//!   demo, whose attempt counts must not depend on ejection (stanchion's own `Balancer` is tested
//!   in `tests/balance.rs`): it honours `AvoidEndpoint`, reports `ServedBy`, and marks connect
//!   failures `NeverSent`.
//!
//! - [`ledger_server::LedgerServer`]: a hyper server with stanchion's idempotency server layer
//!   around a handler that counts its side effects; [`redis_server::RedisServer`]: a private
//!   `redis-server` on a free port.
//!
//! The servers take a [`faults::FaultPlan`] (scripted, or by seeded probability) and record every request
//! ([`faults::Recorder`]) so tests can count attempts and read the headers that arrived.
#![allow(dead_code)]

pub mod balancer;
pub mod cheap;
pub mod dns_server;
pub mod faults;
pub mod grpc_server;
pub mod http_server;
#[cfg(feature = "http")]
pub mod ledger_server;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod seen;
pub mod server;
pub mod spans;
pub mod warnings;

/// A reqwest client builder with TLS set up the way docs/pool.md says: a rustls config built
/// with an explicit provider (reqwest's `rustls-no-provider` panics at `build()` otherwise, as
/// no process-wide provider is installed), trusting nothing (plain-HTTP tests) or `roots`.
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    reqwest_builder_trusting(rustls::RootCertStore::empty())
}

/// [`reqwest_builder`] trusting `roots`.
pub fn reqwest_builder_trusting(roots: rustls::RootCertStore) -> reqwest::ClientBuilder {
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(config)
}
