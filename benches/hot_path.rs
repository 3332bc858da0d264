//! The per-call cost of the layers, against a bare no-op service and tower's equivalents, all
//! measured in the same run. Results and ratios: `docs/performance.md`.
//!
//! Each measurement drives `iters` calls (`poll_ready` + `call` + await) on a current-thread tokio
//! runtime with timers enabled, so every layer pays for its real timer registration.

use std::convert::Infallible;
use std::future::{Ready, poll_fn, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use stanchion::breaker::{CircuitBreaker, CircuitBreakerLayer};
use stanchion::bulkhead::{Bulkhead, BulkheadLayer, NoKey};
use stanchion::classify::Class;
use stanchion::deadline::{AttemptLayer, DeadlineLayer};
use stanchion::retry::{RetryBudget, RetryLayer};
use tower::retry::budget::{Budget, TpsBudget};
use tower::timeout::Timeout;
use tower::{Layer, Service};

#[path = "../tests/support/cheap.rs"]
mod cheap;

use cheap::{NoOp, Ping, PongClassifier};

/// A service whose response is pending once before it is ready, like any call that waits for
/// I/O: the layers must arm their timers.
#[derive(Debug, Clone, Copy)]
struct PendingOnce;

struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = Result<cheap::Pong, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.0 {
            Poll::Ready(Ok(cheap::Pong))
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl<R> Service<R> for PendingOnce {
    type Response = cheap::Pong;
    type Error = Infallible;
    type Future = YieldOnce;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        YieldOnce(false)
    }
}

fn drive<S, R>(
    rt: &tokio::runtime::Runtime,
    mut svc: S,
    make: impl Fn() -> R,
    iters: u64,
) -> Duration
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            black_box(svc.call(black_box(make())).await.unwrap());
        }
        start.elapsed()
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

const BUDGET: Duration = Duration::from_secs(30);

fn cheap_request(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("cheap_request");
    group.bench_function("baseline_noop", |b| {
        b.iter_custom(|n| drive(&rt, NoOp, Ping::default, n))
    });
    group.bench_function("stanchion_deadline", |b| {
        let svc = DeadlineLayer::new(BUDGET).unwrap().layer(NoOp);
        b.iter_custom(|n| drive(&rt, svc.clone(), Ping::default, n))
    });
    group.bench_function("tower_timeout", |b| {
        b.iter_custom(|n| drive(&rt, Timeout::new(NoOp, BUDGET), Ping::default, n))
    });
    group.finish();

    let mut group = c.benchmark_group("cheap_request_pending_once");
    group.bench_function("baseline_noop", |b| {
        b.iter_custom(|n| drive(&rt, PendingOnce, Ping::default, n))
    });
    group.bench_function("stanchion_deadline", |b| {
        let svc = DeadlineLayer::new(BUDGET).unwrap().layer(PendingOnce);
        b.iter_custom(|n| drive(&rt, svc.clone(), Ping::default, n))
    });
    group.bench_function("tower_timeout", |b| {
        b.iter_custom(|n| drive(&rt, Timeout::new(PendingOnce, BUDGET), Ping::default, n))
    });
    group.finish();
}

fn http_request(c: &mut Criterion) {
    let rt = runtime();
    let grpc = || {
        http::Request::post("/pkg.Service/Method")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    let mut group = c.benchmark_group("http_request");
    group.bench_function("baseline_noop", |b| {
        b.iter_custom(|n| drive(&rt, NoOp, grpc, n))
    });
    group.bench_function("stanchion_deadline", |b| {
        let svc = DeadlineLayer::new(BUDGET).unwrap().layer(NoOp);
        b.iter_custom(|n| drive(&rt, svc.clone(), grpc, n))
    });
    group.bench_function("tower_timeout", |b| {
        b.iter_custom(|n| drive(&rt, Timeout::new(NoOp, BUDGET), grpc, n))
    });
    group.bench_function("stanchion_deadline_and_attempt_stamp", |b| {
        let svc = DeadlineLayer::new(BUDGET)
            .unwrap()
            .layer(AttemptLayer::default().layer(NoOp));
        b.iter_custom(|n| drive(&rt, svc.clone(), grpc, n))
    });
    group.finish();
}

/// tower's retry, with its `TpsBudget`, configured like stanchion's default budget.
#[derive(Clone)]
struct TowerPolicy {
    budget: Arc<TpsBudget>,
}

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for TowerPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Ready<()>> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(_) => self.budget.withdraw().then(|| ready(())),
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn tps_budget() -> TpsBudget {
    TpsBudget::new(Duration::from_secs(10), 10, 0.2)
}

fn retry(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("retry_success_path");
    group.bench_function("baseline_noop", |b| {
        b.iter_custom(|n| drive(&rt, NoOp, Ping::default, n))
    });
    group.bench_function("stanchion_retry_with_budget", |b| {
        let svc = RetryLayer::builder(PongClassifier)
            .build()
            .unwrap()
            .layer(NoOp);
        b.iter_custom(|n| drive(&rt, svc.clone(), Ping::default, n))
    });
    group.bench_function("tower_retry_with_tps_budget", |b| {
        let policy = TowerPolicy {
            budget: Arc::new(tps_budget()),
        };
        let svc = tower::retry::Retry::new(policy, NoOp);
        b.iter_custom(|n| drive(&rt, svc.clone(), Ping::default, n))
    });
    group.finish();

    // One deposit and one withdrawal per iteration, from two threads at once.
    let mut group = c.benchmark_group("budget_two_threads");
    group.bench_function("stanchion_retry_budget", |b| {
        b.iter_custom(|n| {
            let budget = RetryBudget::default();
            two_threads(n, move || {
                budget.deposit();
                black_box(budget.try_withdraw());
            })
        })
    });
    group.bench_function("tower_tps_budget", |b| {
        b.iter_custom(|n| {
            let budget = Arc::new(tps_budget());
            two_threads(n, move || {
                budget.deposit();
                black_box(budget.withdraw());
            })
        })
    });
    group.finish();
}

/// Runs `op` `iters` times in total, split over two threads started together; the wall time.
fn two_threads(iters: u64, op: impl Fn() + Clone + Send + 'static) -> Duration {
    let barrier = Arc::new(std::sync::Barrier::new(3));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (op, barrier) = (op.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters / 2 {
                    op();
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for handle in handles {
        handle.join().unwrap();
    }
    start.elapsed()
}

fn breaker(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("breaker_success_path");
    group.bench_function("baseline_noop", |b| {
        b.iter_custom(|n| drive(&rt, NoOp, Ping::default, n))
    });
    group.bench_function("stanchion_breaker_count_window", |b| {
        let breaker = CircuitBreaker::builder().build().unwrap();
        let svc = CircuitBreakerLayer::new(breaker, PongClassifier).layer(NoOp);
        b.iter_custom(|n| drive(&rt, svc.clone(), Ping::default, n))
    });
    group.bench_function("stanchion_breaker_consecutive", |b| {
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(5)
            .build()
            .unwrap();
        let svc = CircuitBreakerLayer::new(breaker, PongClassifier).layer(NoOp);
        b.iter_custom(|n| drive(&rt, svc.clone(), Ping::default, n))
    });
    group.finish();

    // Admit and record a success: one thread, then two threads sharing one breaker.
    let mut group = c.benchmark_group("breaker_shared");
    group.bench_function("one_thread", |b| {
        b.iter_custom(|n| {
            let breaker = CircuitBreaker::builder().build().unwrap();
            let start = Instant::now();
            for _ in 0..n {
                breaker
                    .try_acquire()
                    .unwrap()
                    .record(Some(Class::success()));
            }
            start.elapsed()
        })
    });
    group.bench_function("two_threads", |b| {
        b.iter_custom(|n| {
            let breaker = CircuitBreaker::builder().build().unwrap();
            two_threads(n, move || {
                breaker
                    .try_acquire()
                    .unwrap()
                    .record(Some(Class::success()));
            })
        })
    });
    group.finish();
}

fn bulkhead(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("bulkhead_success_path");
    group.bench_function("baseline_noop", |b| {
        b.iter_custom(|n| drive(&rt, NoOp, Ping::default, n))
    });
    group.bench_function("stanchion_bulkhead", |b| {
        let svc = BulkheadLayer::new(Bulkhead::builder().build().unwrap(), NoKey).layer(NoOp);
        b.iter_custom(|n| drive(&rt, svc.clone(), Ping::default, n))
    });
    group.bench_function("tower_concurrency_limit", |b| {
        let svc = tower::limit::ConcurrencyLimitLayer::new(100).layer(NoOp);
        b.iter_custom(|n| drive(&rt, svc.clone(), Ping::default, n))
    });
    group.finish();

    // One bulkhead shared by two threads, each on its own runtime.
    let mut group = c.benchmark_group("bulkhead_shared");
    for threads in [1u64, 2] {
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter_custom(|n| {
                let svc =
                    BulkheadLayer::new(Bulkhead::builder().build().unwrap(), NoKey).layer(NoOp);
                let start = Instant::now();
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        let svc = svc.clone();
                        std::thread::spawn(move || {
                            drive(&runtime(), svc, Ping::default, n / threads)
                        })
                    })
                    .collect();
                for handle in handles {
                    handle.join().unwrap();
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

type Answer = fn(http::Request<()>) -> Ready<Result<http::Response<()>, Infallible>>;

fn answer(_req: http::Request<()>) -> Ready<Result<http::Response<()>, Infallible>> {
    ready(Ok(http::Response::new(())))
}

/// A pick among 8 usable endpoints (round robin, breaker permit, outcome recorded), against
/// calling the endpoint's service directly.
fn balancer(c: &mut Criterion) {
    use stanchion::balance::{Balancer, Policy, StaticResolver};
    use stanchion::classify::HttpClassifier;
    let rt = runtime();
    let endpoint = tower::service_fn(answer as Answer);
    let addrs: Vec<std::net::SocketAddr> = (0..8)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect();
    let build = |policy: Policy, served_by: bool| {
        rt.block_on(async {
            let lb = Balancer::builder(
                StaticResolver::new(addrs.clone()),
                move |_| endpoint,
                HttpClassifier::new(),
            )
            .policy(policy)
            .served_by(served_by)
            .build()
            .unwrap();
            lb.resolved().await;
            lb
        })
    };
    let plain = || http::Request::new(());
    let mut group = c.benchmark_group("balancer_8_endpoints");
    group.bench_function("baseline_endpoint_direct", |b| {
        b.iter_custom(|n| drive(&rt, endpoint, plain, n))
    });
    for (name, policy, served_by) in [
        ("round_robin", Policy::RoundRobin, false),
        ("least_request", Policy::LeastRequest, false),
        ("round_robin_with_served_by", Policy::RoundRobin, true),
    ] {
        let lb = build(policy, served_by);
        group.bench_function(name, |b| {
            b.iter_custom(|n| drive(&rt, lb.clone(), plain, n))
        });
    }
    group.finish();
}

type Paid = http::Response<http_body_util::Full<bytes::Bytes>>;

fn pay<B>(_req: http::Request<B>) -> Ready<Result<Paid, Infallible>> {
    ready(Ok(http::Response::new(http_body_util::Full::new(
        bytes::Bytes::from_static(b"payment #1"),
    ))))
}

/// The idempotency server layer (in-memory store) around a handler that answers at once: no key
/// (passed through), a repeated key (replayed from the store), and a new key per call (claim,
/// run, store), against calling the handler directly.
fn idempotency_server(c: &mut Criterion) {
    use http_body_util::Full;
    use stanchion::idempotency::{IdempotencyBody, IdempotencyLayer, MemoryStore};
    use std::sync::atomic::{AtomicU64, Ordering};
    type Body = Full<bytes::Bytes>;
    let rt = runtime();
    let request = |key: Option<String>| {
        let mut req = http::Request::post("/payments")
            .body(Full::new(bytes::Bytes::from_static(b"amount=5")))
            .unwrap();
        if let Some(key) = key {
            req.headers_mut()
                .insert("idempotency-key", key.parse().unwrap());
        }
        req
    };
    let handler = tower::service_fn(pay::<IdempotencyBody<Body>>);
    let layered = |detach: bool| {
        IdempotencyLayer::builder(MemoryStore::new())
            .detach(detach)
            .build()
            .unwrap()
            .layer(handler)
    };
    let mut group = c.benchmark_group("idempotency_server");
    group.bench_function("baseline_handler_direct", |b| {
        b.iter_custom(|n| drive(&rt, tower::service_fn(pay::<Body>), || request(None), n))
    });
    group.bench_function("no_key_passthrough", |b| {
        b.iter_custom(|n| drive(&rt, layered(true), || request(None), n))
    });
    group.bench_function("same_key_replayed", |b| {
        b.iter_custom(|n| drive(&rt, layered(true), || request(Some("k-1".into())), n))
    });
    let next = AtomicU64::new(0);
    for (name, detach) in [
        ("new_key_run_and_stored", false),
        ("new_key_detached", true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|n| {
                let key = || format!("k-{}", next.fetch_add(1, Ordering::Relaxed));
                drive(&rt, layered(detach), || request(Some(key())), n)
            })
        });
    }
    group.finish();
}

type Empty = http_body_util::Empty<bytes::Bytes>;
type ReplayEmpty = stanchion::retry::ReplayBody<Empty>;

fn answer_empty(
    _req: http::Request<ReplayEmpty>,
) -> Ready<Result<http::Response<Empty>, Infallible>> {
    ready(Ok(http::Response::new(Empty::new())))
}

/// The canonical stack over 8 endpoints whose services answer at once: what the layers
/// themselves cost per call. With a cheap request: deadline → bulkhead → retry with budget →
/// round robin → per endpoint: breaker → no-op. With `http::Request`: the whole `Client::http`
/// stack (route table, idempotency keys, deadline, bulkhead, replay body, retry, attempt
/// stamp, balancer, breakers), against building the request and answering it directly.
fn full_stack(c: &mut Criterion) {
    use stanchion::balance::{Balancer, StaticResolver};
    use stanchion::client::{Client, Target};
    use tower::ServiceBuilder;
    let rt = runtime();
    let addrs: Vec<std::net::SocketAddr> = (0..8)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect();

    let balancer = rt.block_on(async {
        let lb = Balancer::builder(StaticResolver::new(addrs.clone()), |_| NoOp, PongClassifier)
            .build()
            .unwrap();
        lb.resolved().await;
        lb
    });
    let cheap_stack = ServiceBuilder::new()
        .layer(DeadlineLayer::new(BUDGET).unwrap())
        .layer(BulkheadLayer::new(
            Bulkhead::builder().build().unwrap(),
            NoKey,
        ))
        .layer(RetryLayer::builder(PongClassifier).build().unwrap())
        .service(balancer);
    let mut group = c.benchmark_group("full_stack_8_endpoints");
    group.bench_function("cheap_request/baseline_noop", |b| {
        b.iter_custom(|n| drive(&rt, NoOp, Ping::default, n))
    });
    group.bench_function("cheap_request/stack", |b| {
        b.iter_custom(|n| drive(&rt, cheap_stack.clone(), Ping::default, n))
    });

    let endpoint = tower::service_fn(answer_empty as fn(_) -> _);
    let client = rt.block_on(async {
        let client = Client::http(Target::addrs(addrs.clone()))
            .build_with(move |_| endpoint)
            .unwrap();
        client.resolved().await;
        client
    });
    let get = || {
        http::Request::get("/items")
            .header("accept", "application/json")
            .body(Empty::new())
            .unwrap()
    };
    let direct = tower::service_fn(|_req: http::Request<Empty>| {
        ready(Ok::<_, Infallible>(http::Response::new(Empty::new())))
    });
    group.bench_function("http_request/baseline_direct", |b| {
        b.iter_custom(|n| drive(&rt, direct, get, n))
    });
    group.bench_function("http_request/client", |b| {
        b.iter_custom(|n| drive(&rt, client.clone(), get, n))
    });
    group.finish();
}

criterion_group!(
    benches,
    cheap_request,
    http_request,
    retry,
    breaker,
    bulkhead,
    balancer,
    idempotency_server,
    full_stack
);
criterion_main!(benches);
