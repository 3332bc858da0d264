//! End to end over real loopback HTTP/1: the whole `Client::http` stack against the raw client
//! it runs on, in the same run. Results: `docs/performance.md`.
//!
//! Three clients call the same hyper server in this process:
//! - `hyper_util`: hyper-util's legacy `Client` (its own pool) — the usual raw hyper client;
//! - `pool`: stanchion's `Pool` of hyper HTTP/1 connections alone (the stack's transport);
//! - `stack`: `Client::http` over the same pools (route table, deadline, bulkhead, replay body,
//!   retry with budget, attempt timeout, round robin, breaker).
//!
//! Both on a current-thread runtime and on two worker threads (this machine's cores); the
//! server runs on the same runtime. Two measurements, each in alternating rounds so drift hits
//! every client alike:
//! - latency: one request at a time; every request's time goes into a histogram, reported as
//!   p50 / p99 (the median round's);
//! - throughput: 16 requests in flight at once, requests per second (the median round's).
//!
//! Run with `cargo bench --bench end_to_end` (not a criterion bench: it needs the whole latency
//! distribution, not a mean).

#[path = "common/loopback.rs"]
mod loopback;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use stanchion::client::{Client, Target};
use stanchion::pool::{HttpConnector, PoolBuilder};
use stanchion::retry::ReplayBody;
use tower::ServiceExt;

const ROUNDS: usize = 5;
const LATENCY_REQUESTS: usize = 4_000;
const THROUGHPUT_REQUESTS: usize = 20_000;
const IN_FLIGHT: usize = 16;

type HyperUtil = HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;
type StackClient = Client<
    stanchion::pool::Pool<HttpConnector<ReplayBody<Full<Bytes>>>, SocketAddr>,
    stanchion::classify::HttpClassifier,
>;

/// One client under test: sends a GET and reads the body.
#[derive(Clone)]
enum Under {
    HyperUtil(Box<HyperUtil>, http::Uri),
    Pool(stanchion::pool::Pool<HttpConnector<Full<Bytes>>, SocketAddr>),
    Stack(StackClient),
}

impl Under {
    fn name(&self) -> &'static str {
        match self {
            Under::HyperUtil(..) => "hyper_util",
            Under::Pool(_) => "pool",
            Under::Stack(_) => "stack",
        }
    }

    async fn get(&self) {
        match self {
            Under::HyperUtil(client, uri) => {
                let req = Request::get(uri.clone()).body(Full::default()).unwrap();
                let res = client.request(req).await.unwrap();
                black_box(res.into_body().collect().await.unwrap());
            }
            Under::Pool(pool) => {
                let req = Request::get("/").body(Full::default()).unwrap();
                let res = pool.clone().oneshot(req).await.unwrap();
                black_box(res.into_body().collect().await.unwrap());
            }
            Under::Stack(client) => {
                let req = Request::get("/").body(Full::default()).unwrap();
                let res = client.clone().oneshot(req).await.unwrap();
                black_box(res.into_body().collect().await.unwrap());
            }
        }
    }
}

/// Every request's latency, one at a time.
async fn latencies(under: &Under) -> Vec<Duration> {
    let mut all = Vec::with_capacity(LATENCY_REQUESTS);
    for _ in 0..LATENCY_REQUESTS {
        let t0 = Instant::now();
        under.get().await;
        all.push(t0.elapsed());
    }
    all.sort();
    all
}

/// Requests per second with `IN_FLIGHT` at once.
async fn throughput(under: &Under) -> f64 {
    let left = Arc::new(AtomicUsize::new(THROUGHPUT_REQUESTS));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (under, left) = (under.clone(), left.clone());
        set.spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                under.get().await;
            }
        });
    }
    set.join_all().await;
    THROUGHPUT_REQUESTS as f64 / t0.elapsed().as_secs_f64()
}

fn at(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes criterion-style flags; `--list` (from `cargo bench -- --list`)
    // must not run anything.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    for flavor in ["current_thread", "two_workers"] {
        let rt = loopback::runtime(flavor);
        rt.block_on(measure(flavor));
    }
}

async fn measure(flavor: &str) {
    let addr = loopback::start_ok_server().await;
    let pool_settings = PoolBuilder::new().max_size(IN_FLIGHT).settings().unwrap();
    let hyper_util = HyperClient::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let stack = Client::http(Target::addrs([addr]))
        .pool(PoolBuilder::new().max_size(IN_FLIGHT))
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    stack.resolved().await;
    let clients = [
        Under::HyperUtil(Box::new(hyper_util), uri),
        Under::Pool(pool_settings.build(HttpConnector::http1(), addr)),
        Under::Stack(stack),
    ];
    // Warm up: connections open, caches warm.
    for c in &clients {
        for _ in 0..500 {
            c.get().await;
        }
    }
    let mut p50 = vec![Vec::new(); clients.len()];
    let mut p99 = vec![Vec::new(); clients.len()];
    let mut rps = vec![Vec::new(); clients.len()];
    for _ in 0..ROUNDS {
        for (i, c) in clients.iter().enumerate() {
            let l = latencies(c).await;
            p50[i].push(at(&l, 0.50));
            p99[i].push(at(&l, 0.99));
            rps[i].push(throughput(c).await);
        }
    }
    let (p50, p99, rps): (Vec<_>, Vec<_>, Vec<_>) = (
        p50.into_iter().map(median).collect(),
        p99.into_iter().map(median).collect(),
        rps.into_iter().map(median).collect(),
    );
    println!("\nend to end over loopback HTTP/1, {flavor} runtime (median of {ROUNDS} rounds)");
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>14}",
        "client", "p50", "p99", "req/s (16)", "÷ hyper_util"
    );
    for (i, c) in clients.iter().enumerate() {
        println!(
            "{:<12} {:>10.1?} {:>10.1?} {:>12.0} {:>14.3}",
            c.name(),
            p50[i],
            p99[i],
            rps[i],
            rps[i] / rps[0]
        );
    }
    let added = |base: usize| p50[2].as_nanos() as i128 - p50[base].as_nanos() as i128;
    println!(
        "stack: {:.3} of hyper_util's throughput, {:.3} of the pool's; median added {:.2} µs over \
         hyper_util, {:.2} µs over the pool",
        rps[2] / rps[0],
        rps[2] / rps[1],
        added(0) as f64 / 1000.0,
        added(1) as f64 / 1000.0
    );
}
