//! The per-call cost of the layers, against a bare no-op service and tower's equivalents, all
//! measured in the same run. Results and ratios: `docs/performance.md`.
//!
//! Each measurement drives `iters` calls (`poll_ready` + `call` + await) on a current-thread tokio
//! runtime with timers enabled, so every layer pays for its real timer registration.

use std::convert::Infallible;
use std::future::{Ready, poll_fn, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use stanchion::deadline::{AttemptLayer, Deadline, DeadlineCarrier, DeadlineLayer};
use tower::timeout::Timeout;
use tower::{Layer, Service};

/// A cheap-to-clone request that carries its deadline inline.
#[derive(Debug, Clone, Copy, Default)]
struct Ping {
    deadline: Option<Deadline>,
}

impl DeadlineCarrier for Ping {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

/// The baseline: a service that answers at once.
#[derive(Debug, Clone, Copy)]
struct NoOp;

impl<R> Service<R> for NoOp {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        ready(Ok(()))
    }
}

/// A service whose response is pending once before it is ready, like any call that waits for
/// I/O: the layers must arm their timers.
#[derive(Debug, Clone, Copy)]
struct PendingOnce;

struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = Result<(), Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.0 {
            Poll::Ready(Ok(()))
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

impl<R> Service<R> for PendingOnce {
    type Response = ();
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

criterion_group!(benches, cheap_request, http_request);
criterion_main!(benches);
