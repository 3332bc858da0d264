//! Pooled HTTP/1 over loopback against hyper-util's legacy `Client` (its own pool), at
//! concurrency 1 and 64, and the pool's checkout/return overhead against a tokio semaphore
//! acquire/release — all measured in the same run. Results: `docs/performance.md`.
//!
//! Both clients talk to the same minimal hyper server in this process, on a two-worker and on
//! a current-thread tokio runtime; each iteration sends `concurrency` requests at once (each in
//! its own task) and reads every body.

#[path = "common/loopback.rs"]
mod loopback;

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stanchion::pool::{Connection, HttpConnector, Pool, PoolBuilder};
use tokio::task::JoinSet;
use tower::{Service, ServiceExt};

type HttpPool = Pool<HttpConnector<Full<Bytes>>, SocketAddr>;

async fn via_pool(pool: HttpPool, n: usize) {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let pool = pool.clone();
        set.spawn(async move {
            let req = Request::get("/").body(Full::default()).unwrap();
            let res = pool.oneshot(req).await.unwrap();
            black_box(res.into_body().collect().await.unwrap());
        });
    }
    set.join_all().await;
}

async fn via_hyper_util(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: http::Uri,
    n: usize,
) {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let client = client.clone();
        let uri = uri.clone();
        set.spawn(async move {
            let req = Request::get(uri).body(Full::default()).unwrap();
            let res = client.request(req).await.unwrap();
            black_box(res.into_body().collect().await.unwrap());
        });
    }
    set.join_all().await;
}

fn pooled_http1(c: &mut Criterion) {
    for flavor in ["multi_thread", "current_thread"] {
        pooled_http1_on(c, flavor);
    }
}

fn pooled_http1_on(c: &mut Criterion, flavor: &str) {
    let mut group = c.benchmark_group(format!("pooled_http1_{flavor}"));
    group.measurement_time(Duration::from_secs(5));
    for concurrency in [1usize, 64] {
        group.throughput(Throughput::Elements(concurrency as u64));
        // Each contender gets a fresh runtime and server: on a multi-thread runtime, where the
        // connection tasks land decides the latency more than either client does, so neither
        // may inherit the other's placement.
        {
            let rt = loopback::runtime(flavor);
            let addr = rt.block_on(loopback::start_ok_server());
            let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
            let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
            connector.set_nodelay(true);
            let client = Client::builder(TokioExecutor::new()).build(connector);
            group.bench_function(format!("hyper_util_client/c{concurrency}"), |b| {
                b.iter(|| rt.block_on(via_hyper_util(client.clone(), uri.clone(), concurrency)))
            });
        }
        {
            let rt = loopback::runtime(flavor);
            let addr = rt.block_on(loopback::start_ok_server());
            let pool: HttpPool = rt.block_on(async {
                PoolBuilder::new()
                    .max_size(concurrency)
                    .max_connecting(concurrency)
                    .build(HttpConnector::http1(), addr)
                    .unwrap()
            });
            group.bench_function(format!("stanchion_pool/c{concurrency}"), |b| {
                b.iter(|| rt.block_on(via_pool(pool.clone(), concurrency)))
            });
        }
    }
    group.finish();
}

/// A connection that does nothing: the cost measured is the pool's own bookkeeping.
#[derive(Clone)]
struct Idle {
    multiplexed: bool,
}

impl Connection for Idle {
    fn is_closed(&self) -> bool {
        false
    }

    fn share(&self) -> Option<Self> {
        self.multiplexed.then(|| self.clone())
    }
}

/// `Here` is the target, displayed as the endpoint name.
#[derive(Clone)]
struct Here;

impl std::fmt::Display for Here {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("here")
    }
}

#[derive(Clone)]
struct IdleConnector {
    multiplexed: bool,
}

impl Service<Here> for IdleConnector {
    type Response = Idle;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Idle, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Here) -> Self::Future {
        std::future::ready(Ok(Idle {
            multiplexed: self.multiplexed,
        }))
    }
}

fn checkout_return(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("checkout_return");
    let semaphore = Arc::new(tokio::sync::Semaphore::new(10));
    group.bench_function("tokio_semaphore", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    drop(black_box(semaphore.clone().acquire_owned().await.unwrap()));
                }
                start.elapsed()
            })
        })
    });
    for (name, multiplexed) in [("exclusive", false), ("multiplexed", true)] {
        let pool = rt.block_on(async {
            PoolBuilder::new()
                .build(IdleConnector { multiplexed }, Here)
                .unwrap()
        });
        group.bench_function(format!("pool_{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(black_box(pool.checkout(None).await.unwrap()));
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pooled_http1, checkout_return);
criterion_main!(benches);
