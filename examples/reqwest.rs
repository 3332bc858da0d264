//! The stanchion stack around reqwest, with a POST retried safely under an idempotency key.
//!
//! Starts two local instances of a "payments" server behind stanchion's idempotency server
//! layer, sharing one in-memory store (with Redis, `RedisStore` shares it across machines). The
//! client builds `reqwest::Request`s with reqwest's builder and sends them through the whole
//! stack with `Client::send_reqwest`, which answers `reqwest::Response`s (sent by a reqwest
//! client pinned to each endpoint):
//!
//! 1. a POST on `/payments` (opted in to idempotency keys): the first instance answers 503, the
//!    retry goes to the other instance with the same key, and the payment is made once;
//! 2. the same logical request sent again with its key (say, after the caller restarted): it is
//!    answered from the store, and nothing is paid twice;
//! 3. a POST on `/orders` (not opted in): its 503 is returned as it is — retrying a request that
//!    is not idempotent and carries no key could run it twice.
//!
//! ```text
//! cargo run --example reqwest --features reqwest
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use stanchion::client::{Client, Route, RoutePolicy, Target};
use stanchion::idempotency::{IdempotencyLayer, MemoryStore};
use stanchion::pool::ReqwestConnector;

use support::ledger_server::{Ledger, LedgerServer};

/// A reqwest request, turned into an `http::Request` for the stack (the body is kept so the
/// request can be sent again).
fn post(
    requests: &reqwest::Client,
    path: &str,
    body: &'static str,
    key: Option<&str>,
) -> Result<reqwest::Request, reqwest::Error> {
    let mut builder = requests
        .post(format!("http://payments.local{path}"))
        .body(body);
    if let Some(key) = key {
        builder = builder.header("idempotency-key", key);
    }
    builder.build()
}

/// Every reqwest client starts here: TLS from a rustls config built with an explicit provider
/// (ring), so nothing depends on a process-wide default — with reqwest's `rustls-no-provider`
/// feature, `reqwest::Client::new()` panics when none is installed. Real code would trust
/// `webpki_roots` or the platform's store; these local servers speak plain HTTP.
fn reqwest_client() -> reqwest::ClientBuilder {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

#[tokio::main]
async fn main() -> Result<(), stanchion::BoxError> {
    let ledger = Arc::new(Ledger::default());
    let store = MemoryStore::new();
    let servers = [
        LedgerServer::start(
            IdempotencyLayer::builder(store.clone()).build()?,
            ledger.clone(),
        )
        .await,
        LedgerServer::start(IdempotencyLayer::builder(store).build()?, ledger.clone()).await,
    ];
    println!(
        "payments servers at {} and {} (one shared store)",
        servers[0].addr(),
        servers[1].addr()
    );

    let client = Client::http(Target::addrs(servers.iter().map(|s| s.addr())))
        .route(
            Route::path_prefix("/payments"),
            RoutePolicy::new().idempotency_keys(true),
        )
        .build(ReqwestConnector::new("payments.local").configure(reqwest_client))?;
    client.resolved().await;
    // Builds requests only: the stack's pinned clients send them (`Client::send_reqwest`).
    let requests = reqwest_client().build()?;

    // 1. The first attempt meets a 503; the retry carries the same key to the other instance.
    ledger.fail_next.store(1, Ordering::SeqCst);
    let res = client
        .send_reqwest(post(&requests, "/payments", "amount=5", None)?)
        .await?;
    let status = res.status();
    let body = res.text().await?;
    let keys = ledger
        .keys
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    println!("\n1. POST /payments: {status} {body:?}");
    println!(
        "   attempts seen by the servers: {}, keys: {keys:?}",
        keys.len()
    );
    println!("   payments made: {}", ledger.paid.load(Ordering::SeqCst));
    let key = keys.last().cloned().flatten().ok_or("no key was sent")?;

    // 2. The same logical request again, with its key: answered from the store.
    let res = client
        .send_reqwest(post(&requests, "/payments", "amount=5", Some(&key))?)
        .await?;
    let replayed = res.headers().get("idempotency-replayed").is_some();
    let status = res.status();
    let body = res.text().await?;
    println!("\n2. POST /payments again with key {key}: {status} {body:?} (replayed: {replayed})");
    println!("   payments made: {}", ledger.paid.load(Ordering::SeqCst));

    // 3. Not opted in: a POST without a key is not repeated.
    ledger.fail_next.store(1, Ordering::SeqCst);
    let seen_before = ledger.started.load(Ordering::SeqCst);
    let res = client
        .send_reqwest(post(&requests, "/orders", "item=7", None)?)
        .await?;
    println!(
        "\n3. POST /orders: {} after {} attempt(s) — not retried: it carries no key",
        res.status(),
        ledger.started.load(Ordering::SeqCst) - seen_before
    );
    Ok(())
}
