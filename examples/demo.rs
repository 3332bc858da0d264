//! The stanchion demo: flaky local servers, called through the whole stack, with a report of
//! what happened.
//!
//! Run it with `cargo run --example demo --features metrics` (or without the feature, for the
//! report alone). It needs no network beyond 127.0.0.1: it starts three
//! hyper servers (the fault-injecting ones from `tests/support/`) whose requests fail, hang, stall
//! or reset at random (seeded, so a run is repeatable up to arrival order), and sends 300 GET calls,
//! 8 at a time, through the stack one `Client::http` builder makes:
//!
//! ```text
//! Deadline (400 ms budget per call: waits, attempts and backoff included)
//!   └ Bulkhead (6 calls at once, 4 more may wait up to 50 ms)
//!     └ ReplayBody (bodies can be sent again)
//!       └ Retry (3 attempts, jittered backoff, budget 20 % + 10/s)
//!           └ Attempt (per-try 150 ms, written as x-timeout-ms)
//!               └ Balancer (per-call round robin over the 3 addresses)
//!                   └ per endpoint: CircuitBreaker (5 consecutive failures eject it)
//!                                   → Pool (HTTP/1, at most 4 connections, checkout ≤ 100 ms)
//! ```
//!
//! The report counts outcomes by reason, attempts per server, retries and budget refusals, and
//! latency percentiles: no call outlives its budget, and retries add at most their budgeted share
//! of load. Run with `--features metrics` (the README's command), it ends with a Prometheus
//! scrape of the run: every instrument the stack recorded, through `metrics-exporter-prometheus`
//! installed before the client is built.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, Request, Response};
use http_body_util::{BodyExt, Empty};
use stanchion::Error;
use stanchion::bulkhead::Limits;
use stanchion::classify::{Classify, HttpClassifier, Verdict, classify_error};
use stanchion::client::{Client, Target};
use stanchion::pool::{HttpConnector, PoolBuilder};
use stanchion::retry::{Backoff, RetryBudget, RetryStopped};
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

const CALLS: usize = 300;
const CONCURRENCY: usize = 8;
const BUDGET: Duration = Duration::from_millis(400);
const PER_TRY: Duration = Duration::from_millis(150);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let servers = [
        // Mostly healthy.
        HttpServer::start(FaultPlan::mix(1, [(0.05, Fault::status(500))])).await,
        // Draining: often answers 503, sometimes with a Retry-After.
        HttpServer::start(FaultPlan::mix(
            2,
            [
                (0.30, Fault::status(503)),
                (0.10, Fault::status(503).retry_after("0")),
            ],
        ))
        .await,
        // Slow and unreliable: stalls, hangs, resets, overload.
        HttpServer::start(FaultPlan::mix(
            3,
            [
                (0.15, Fault::ok().latency(Duration::from_millis(200))),
                (0.05, Fault::hang()),
                (0.05, Fault::reset()),
                (0.10, Fault::status(429)),
            ],
        ))
        .await,
    ];
    println!("stanchion demo: {CALLS} GET calls, {CONCURRENCY} at a time, over 3 local servers");
    for (i, server) in servers.iter().enumerate() {
        let profile = [
            "5% 500",
            "30% 503, 10% 503 + Retry-After: 0",
            "15% 200 ms stall, 5% hang, 5% reset, 10% 429",
        ][i];
        println!("  server {i} at {}: {profile}", server.addr());
    }
    println!(
        "  stack: Deadline({BUDGET:?}) -> Bulkhead(6 + 4 waiting) -> ReplayBody -> Retry(3 attempts, budget 20% + 10/s) -> \
         Attempt(per-try {PER_TRY:?}) -> round robin -> per endpoint: CircuitBreaker -> Pool -> hyper\n"
    );

    // The recorder goes in before the client is built: instruments are registered then.
    #[cfg(feature = "metrics")]
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    #[cfg(feature = "metrics")]
    stanchion::metrics::describe();

    // The whole stack from one builder.
    let budget = RetryBudget::default();
    let client = Client::http(Target::addrs(servers.iter().map(|s| s.addr())))
        .deadline(BUDGET)
        .per_try_timeout(PER_TRY)
        .timeout_header(HeaderName::from_static("x-timeout-ms"))
        .max_attempts(3)
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
        )?)
        .retry_budget(budget.clone())
        .concurrency(Limits {
            concurrency: 6,
            queue: 4,
            max_wait: Duration::from_millis(50),
        })
        .pool(
            PoolBuilder::new()
                .max_size(4)
                .checkout_timeout(Duration::from_millis(100)),
        )
        .build(HttpConnector::<Empty<Bytes>>::http1())?;
    client.resolved().await;
    let balancer = client.balancer().clone();
    let bulkhead = client
        .bulkhead()
        .cloned()
        .ok_or("the client has a bulkhead")?;
    let stack = client.clone();

    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let stack = stack.clone();
        workers.spawn(async move {
            let mut results = Vec::new();
            for _ in (worker..CALLS).step_by(CONCURRENCY) {
                let req = Request::get("/orders").body(Empty::new()).unwrap();
                let t0 = Instant::now();
                // The body is read to its end, as a real caller would: an HTTP/1 connection
                // whose response was not read cannot be reused.
                let result = match stack.clone().oneshot(req).await {
                    Ok(res) => {
                        let (parts, body) = res.into_parts();
                        match body.collect().await {
                            Ok(_) => Ok(Response::from_parts(parts, ())),
                            Err(e) => Err(Error::from_inner(e)),
                        }
                    }
                    Err(e) => Err(e),
                };
                let outcome = describe(result);
                results.push((outcome, t0.elapsed()));
            }
            results
        });
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(CALLS);
    while let Some(results) = workers.join_next().await {
        for (outcome, latency) in results? {
            *outcomes.entry(outcome).or_default() += 1;
            latencies.push(latency);
        }
    }
    latencies.sort();
    let attempts: usize = servers.iter().map(|s| s.count()).sum();
    let stats = budget.stats();

    println!("calls:                {CALLS}");
    println!(
        "attempts at servers:  {attempts} ({:.2} per call; per server: {})",
        attempts as f64 / CALLS as f64,
        servers
            .iter()
            .map(|s| s.count().to_string())
            .collect::<Vec<_>>()
            .join(" / ")
    );
    println!(
        "retries granted:      {} (budget refused {})",
        stats.withdrawals, stats.refused
    );
    for endpoint in balancer.endpoints() {
        let breaker = balancer.breaker(endpoint.addr).expect("resolved endpoint");
        let circuit = breaker.stats();
        println!(
            "endpoint {}: breaker {:?}, ejected {} time(s)",
            endpoint.addr, circuit.state, circuit.openings
        );
    }
    for stats in client.pool_stats() {
        println!(
            "pool {}: {} connections opened, {} closed, {} checkouts waited, {} checkout timeouts",
            stats.endpoint,
            stats.created,
            stats.closed,
            stats.waited_checkouts,
            stats.checkout_timeouts
        );
    }
    let partition = bulkhead
        .stats("default")
        .expect("the default partition always exists");
    println!(
        "bulkhead:             {} calls waited ({:.1?} in all), {} timed out waiting, {} rejected",
        partition.waited, partition.total_wait, partition.timed_out, partition.rejected
    );
    println!("wall time:            {:.2?}", started.elapsed());
    println!("\noutcomes by reason:");
    for (reason, count) in &outcomes {
        println!("  {count:>4}  {reason}");
    }
    println!(
        "\nlatency: p50 {:?}  p99 {:?}  max {:?}  (budget {BUDGET:?})",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    #[cfg(feature = "metrics")]
    {
        prometheus.run_upkeep();
        println!("\nPrometheus scrape of the run (feature `metrics`):\n");
        print!("{}", prometheus.render());
    }
    #[cfg(not(feature = "metrics"))]
    println!("\n(run with `--features metrics` for a Prometheus scrape of this run)");
    Ok(())
}

/// One line per outcome: the final status and why retrying stopped, or the error's reason.
fn describe<B>(result: Result<Response<B>, Error>) -> String {
    match result {
        Ok(res) => {
            let Verdict::Done(class) = HttpClassifier::new().classify_response(&res);
            let status = res.status();
            match res.extensions().get::<RetryStopped>() {
                Some(stop) => format!(
                    "{status} after {} attempt(s): {}",
                    stop.attempts, stop.reason
                ),
                None if class.is_failure() => format!("{status}"),
                None => format!("{status} ({:?})", class.kind()),
            }
        }
        Err(Error::DeadlineExceeded { .. }) => "error: deadline exceeded".to_owned(),
        Err(Error::RetriesExhausted { attempts, .. }) => {
            format!("error: retries exhausted after {attempts} attempts")
        }
        Err(Error::RetryBudgetExhausted { .. }) => "error: retry budget exhausted".to_owned(),
        Err(Error::RetryRefused { reason, .. }) => format!("error: not retried: {reason}"),
        Err(Error::BulkheadFull { .. }) => "error: bulkhead full".to_owned(),
        Err(Error::BulkheadTimeout { .. }) => "error: bulkhead wait timed out".to_owned(),
        Err(Error::PoolTimeout { .. }) => "error: pool checkout timed out".to_owned(),
        Err(Error::NoEndpoints { reason, .. }) => format!("error: no endpoints: {reason}"),
        Err(other) => format!("error: {:?}", classify_error(&other).kind()),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
