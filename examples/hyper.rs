//! The stanchion stack on hyper connections from the crate's own pool.
//!
//! Starts two local hyper servers (one answers 503 a third of the time) and calls them through
//! `Client::http` over pooled HTTP/2 connections (`HttpConnector::http2`; `http1` works the same
//! way). Health checks get a route of their own: a separate bulkhead partition of 2 calls, no
//! retries and a short deadline, so they can neither crowd out real traffic nor be starved by it.
//!
//! ```text
//! cargo run --example hyper
//! ```

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use stanchion::bulkhead::{Bulkhead, Limits};
use stanchion::client::{Client, Route, RoutePolicy, Target};
use stanchion::pool::{HttpConnector, PoolBuilder};
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

#[tokio::main]
async fn main() -> Result<(), stanchion::BoxError> {
    let servers = [
        HttpServer::start(FaultPlan::healthy()).await,
        HttpServer::start(FaultPlan::seeded(5, 0.33, Fault::status(503))).await,
    ];
    println!(
        "servers at {} (healthy) and {} (503 a third of the time)",
        servers[0].addr(),
        servers[1].addr()
    );

    let client = Client::http(Target::addrs(servers.iter().map(|s| s.addr())))
        .deadline(Duration::from_secs(2))
        .per_try_timeout(Duration::from_millis(500))
        .timeout_header(http::HeaderName::from_static("x-timeout-ms"))
        .pool(PoolBuilder::new().max_size(2))
        .bulkhead(Bulkhead::builder().partition(
            "health",
            Limits {
                concurrency: 2,
                queue: 0,
                max_wait: Duration::ZERO,
            },
        ))
        .route(
            Route::path_prefix("/healthz"),
            RoutePolicy::new()
                .partition("health")
                .without_retries()
                .deadline(Duration::from_millis(200)),
        )
        .build(HttpConnector::<Empty<Bytes>>::http2())?;
    client.resolved().await;

    let mut answered = 0;
    for i in 0..40 {
        let req = http::Request::get(format!("/orders/{i}")).body(Empty::new())?;
        let res = client.clone().oneshot(req).await?;
        if res.status().is_success() {
            answered += 1;
        }
        res.into_body().collect().await?;
    }
    let attempts = servers[0].count() + servers[1].count();
    println!(
        "\n40 GET /orders/N: {answered} answered 2xx; {attempts} attempts ({} / {} per server): \
         every 503 was retried on the other server",
        servers[0].count(),
        servers[1].count()
    );
    let health = client
        .clone()
        .oneshot(http::Request::get("/healthz").body(Empty::new())?)
        .await?;
    let status = health.status();
    // The permit is held until the body is read (or dropped).
    health.into_body().collect().await?;
    println!("GET /healthz: {status} (partition \"health\", no retries, 200 ms)");
    if let Some(stats) = client.bulkhead().and_then(|b| b.stats("health")) {
        println!("health partition: {stats:?}");
    }
    for endpoint in client.balancer().endpoints() {
        println!("endpoint {}: breaker {:?}", endpoint.addr, endpoint.state);
    }
    Ok(())
}
