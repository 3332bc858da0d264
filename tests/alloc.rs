//! Heap allocations per call, counted by a global allocator.
//!
//! The deadline layer's own per-call state allocates nothing with a cheap request type; with an
//! `http::Request` the only allocations are the ones `http` makes to store the deadline in the
//! request's extensions and the header values the attempt stamp writes (documented in
//! `docs/performance.md`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::poll_fn;
use std::time::Duration;

use stanchion::breaker::{CircuitBreaker, CircuitBreakerLayer};
use stanchion::bulkhead::{Bulkhead, BulkheadLayer, NoKey};
use stanchion::classify::HttpClassifier;
use stanchion::deadline::{AttemptLayer, DeadlineLayer};
use stanchion::retry::{ReplayBodyLayer, RetryLayer};
use tower::{Layer, Service, ServiceBuilder};

#[path = "support/cheap.rs"]
mod cheap;

use cheap::{NoOp, Ping, PongClassifier};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// Allocations per call, averaged over `calls` after a warm-up, with requests made outside the
/// count.
fn per_call<S, R>(mut svc: S, make: impl Fn() -> R, calls: u64) -> u64
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut total = 0;
        for round in 0..calls + 10 {
            let req = make();
            let before = allocations();
            poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            svc.call(req).await.unwrap();
            if round >= 10 {
                total += allocations() - before;
            }
        }
        total / calls
    })
}

const BUDGET: Duration = Duration::from_secs(30);

#[test]
fn the_deadline_layer_allocates_nothing_per_call_with_a_cheap_request() {
    let svc = DeadlineLayer::new(BUDGET).unwrap().layer(NoOp);
    assert_eq!(per_call(svc, Ping::default, 1000), 0);
}

#[test]
fn the_retry_layer_and_its_budget_allocate_nothing_on_the_success_path() {
    let retry = RetryLayer::builder(PongClassifier).build().unwrap();
    assert_eq!(per_call(retry.layer(NoOp), Ping::default, 1000), 0);
    let stack = ServiceBuilder::new()
        .layer(DeadlineLayer::new(BUDGET).unwrap())
        .layer(RetryLayer::builder(PongClassifier).build().unwrap())
        .service(NoOp);
    assert_eq!(per_call(stack, Ping::default, 1000), 0);
}

#[test]
fn the_breaker_allocates_nothing_per_call() {
    for breaker in [
        CircuitBreaker::builder().build().unwrap(),
        CircuitBreaker::builder()
            .time_window(Duration::from_secs(10), 10)
            .build()
            .unwrap(),
        CircuitBreaker::builder()
            .consecutive_failures(5)
            .build()
            .unwrap(),
    ] {
        let svc = CircuitBreakerLayer::new(breaker, PongClassifier).layer(NoOp);
        assert_eq!(per_call(svc, Ping::default, 1000), 0);
    }
}

#[test]
fn the_bulkhead_allocates_nothing_per_call_when_a_permit_is_free() {
    let svc = BulkheadLayer::new(Bulkhead::builder().build().unwrap(), NoKey).layer(NoOp);
    assert_eq!(per_call(svc, Ping::default, 1000), 0);
}

#[test]
fn http_requests_pay_only_for_their_extensions_and_headers() {
    let plain = || http::Request::new(());
    let grpc = || {
        http::Request::post("/pkg.Service/Method")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    // Baseline: the no-op service allocates nothing.
    assert_eq!(per_call(NoOp, plain, 100), 0);
    // The deadline in `http::Extensions`: the map's box, its table and the boxed value.
    let deadline = DeadlineLayer::new(BUDGET).unwrap().layer(NoOp);
    assert_eq!(per_call(deadline, plain, 100), 3);
    // The attempt stamp adds one `grpc-timeout` header value.
    let stamped = DeadlineLayer::new(BUDGET)
        .unwrap()
        .layer(AttemptLayer::default().layer(NoOp));
    let with_headers = per_call(NoOp, grpc, 100);
    assert_eq!(with_headers, 0);
    assert_eq!(per_call(stamped, grpc, 100), 4);
}

#[test]
fn retrying_http_requests_pays_for_the_replay_copy() {
    let get = || {
        http::Request::get("/items")
            .header("accept", "application/json")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let stack = ServiceBuilder::new()
        .layer(ReplayBodyLayer::default())
        .layer(RetryLayer::builder(HttpClassifier::new()).build().unwrap())
        .service(tower::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(()))
        }));
    // The replay body's shared state (1) and the copy kept for a retry: its header map (2), and
    // the first copy of the URI and of the header value promotes their bytes to shared (1 each).
    assert_eq!(per_call(stack, get, 100), 5);
}

#[test]
fn the_balancer_pick_allocates_nothing_per_call() {
    use stanchion::balance::{Balancer, StaticResolver};
    let addrs: Vec<std::net::SocketAddr> = (0..8)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect();
    let make = |_addr| {
        tower::service_fn(|_req: http::Request<()>| {
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(())))
        })
    };
    let balancer = |served_by: bool| {
        // Resolve on a runtime of its own; the endpoints stay after it is gone.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let lb = Balancer::builder(
                StaticResolver::new(addrs.clone()),
                make,
                HttpClassifier::new(),
            )
            .served_by(served_by)
            .build()
            .unwrap();
            lb.resolved().await;
            lb
        })
    };
    let plain = || http::Request::new(());
    // Picking among 8 endpoints, taking the breaker permit, recording the outcome: nothing.
    assert_eq!(per_call(balancer(false), plain, 1000), 0);
    // `ServedBy` in the response's extensions: the map's box, its table and the boxed value.
    assert_eq!(per_call(balancer(true), plain, 1000), 3);
}

/// Resolves on a runtime of its own; the endpoints stay after it is gone.
fn resolved<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(f)
}

fn eight_addrs() -> Vec<std::net::SocketAddr> {
    (0..8)
        .map(|i| std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
        .collect()
}

#[test]
fn the_full_stack_over_eight_endpoints_allocates_nothing_per_call_with_a_cheap_request() {
    use stanchion::balance::{Balancer, StaticResolver};
    let balancer = resolved(async {
        let lb = Balancer::builder(StaticResolver::new(eight_addrs()), |_| NoOp, PongClassifier)
            .build()
            .unwrap();
        lb.resolved().await;
        lb
    });
    // Deadline → bulkhead → retry with budget → round robin → per endpoint: breaker → no-op.
    let stack = ServiceBuilder::new()
        .layer(DeadlineLayer::new(BUDGET).unwrap())
        .layer(BulkheadLayer::new(
            Bulkhead::builder().build().unwrap(),
            NoKey,
        ))
        .layer(RetryLayer::builder(PongClassifier).build().unwrap())
        .service(balancer);
    assert_eq!(per_call(stack, Ping::default, 1000), 0);
}

#[test]
fn the_client_builder_stack_pays_only_for_http_extensions_headers_and_the_replay_copy() {
    use bytes::Bytes;
    use http_body_util::Empty;
    use stanchion::client::{Client, Target};
    use stanchion::retry::ReplayBody;
    let client = resolved(async {
        let client = Client::http(Target::addrs(eight_addrs()))
            .build_with(|_| {
                tower::service_fn(|_req: http::Request<ReplayBody<Empty<Bytes>>>| {
                    std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(
                        Empty::<Bytes>::new(),
                    )))
                })
            })
            .unwrap();
        client.resolved().await;
        client
    });
    let get = || {
        http::Request::get("/items")
            .header("accept", "application/json")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // All of it is `http`'s storage, none the layers' own state (see docs/performance.md):
    // the deadline in the request's extensions (map box, table, value: 3), the replay body's
    // shared state (1), the copy kept for a retry (header map 2, URI and header value promoted
    // to shared bytes 2, the extensions with the deadline cloned 3), and `ServedBy` in the
    // response's extensions (3).
    assert_eq!(per_call(client, get, 200), 14);
}
