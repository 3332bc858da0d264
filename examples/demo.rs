//! The stanchion demo: a flaky local server, called through what the crate has today, with a
//! report of what happened.
//!
//! Run it with `cargo run --example demo`. It needs no network beyond 127.0.0.1: it starts its
//! own hyper server (the fault-injecting one from `tests/support/`) whose requests fail, hang,
//! stall or reset at random (seeded, so every run sees the same faults in the same order of
//! arrival), and sends 200 calls through this stack:
//!
//! ```text
//! DeadlineLayer (300 ms budget per call)
//!   └ AttemptLayer (per-try 150 ms; writes x-timeout-ms)
//!       └ hyper-util client
//! ```
//!
//! The report counts outcomes by reason, as the crate's classification sees them, and shows
//! latency percentiles: no call outlives its budget, whatever the server does.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stanchion::Error;
use stanchion::classify::{Classify, HttpClassifier, Kind, Verdict};
use stanchion::deadline::{AttemptLayer, DeadlineLayer};
use tower::{ServiceBuilder, ServiceExt};

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

const CALLS: usize = 200;
const CONCURRENCY: usize = 8;
const BUDGET: Duration = Duration::from_millis(300);
const PER_TRY: Duration = Duration::from_millis(150);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let plan = FaultPlan::mix(
        2026,
        [
            (0.15, Fault::status(503).retry_after("1")),
            (0.05, Fault::status(429)),
            (0.04, Fault::hang()),
            (0.10, Fault::ok().latency(Duration::from_millis(200))),
            (0.03, Fault::reset()),
        ],
    );
    let server = HttpServer::start(plan).await;
    println!(
        "stanchion demo: {CALLS} calls, {CONCURRENCY} at a time, to a flaky server at {}",
        server.addr()
    );
    println!(
        "  faults (seeded): 15% 503 + Retry-After, 5% 429, 4% hang, 10% 200 ms stall, 3% reset"
    );
    println!(
        "  stack: DeadlineLayer({BUDGET:?}) -> AttemptLayer(per-try {PER_TRY:?}) -> hyper client\n"
    );

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let stack = ServiceBuilder::new()
        .layer(DeadlineLayer::new(BUDGET)?)
        .layer(AttemptLayer::new(PER_TRY)?.timeout_header(HeaderName::from_static("x-timeout-ms")))
        .service(client);

    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let stack = stack.clone();
        let uri = server.uri("/orders");
        workers.spawn(async move {
            let mut results = Vec::new();
            for _ in (worker..CALLS).step_by(CONCURRENCY) {
                let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                let t0 = Instant::now();
                let outcome = describe(stack.clone().oneshot(req).await);
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

    println!("requests sent:        {CALLS}");
    println!("attempts at server:   {}", server.count());
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
    let sent = server.recorder().requests();
    let stamped = sent
        .iter()
        .filter(|r| r.header("x-timeout-ms").is_some())
        .count();
    println!(
        "requests carrying x-timeout-ms: {stamped} of {}",
        sent.len()
    );
    println!(
        "\nRetries, breakers, bulkheads, pools and round robin join this stack as they land; see README.md."
    );
    Ok(())
}

/// One line per outcome: the status and how the classifier sees it, or the error's reason.
fn describe(result: Result<http::Response<hyper::body::Incoming>, Error>) -> String {
    match result {
        Ok(res) => {
            let Verdict::Done(class) = HttpClassifier::new().classify_response(&res);
            let kind = match class.kind() {
                Kind::Success => "success".to_owned(),
                other => format!("{other:?}"),
            };
            let hint = class
                .hint()
                .delay()
                .map(|d| format!(", server asks to wait {d:?}"))
                .unwrap_or_default();
            format!("{} ({kind}{hint})", res.status())
        }
        Err(Error::DeadlineExceeded { .. }) => "deadline exceeded (budget ran out)".to_owned(),
        Err(Error::AttemptTimedOut { .. }) => "attempt timed out (per-try timeout)".to_owned(),
        Err(other) => format!(
            "transport error, classified {:?}",
            stanchion::classify::classify_error(&other).kind()
        ),
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
