//! Retry safety and endpoint accounting over real servers: a gRPC method's codes decide every
//! outcome that may have reached the server (errors included), a hung endpoint is ejected
//! whichever timer cut it, the client's own congestion and a budget shorter than the service's
//! latency eject nobody, and breaker thresholds are exact at their boundary.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use proptest::prelude::*;
use stanchion::breaker::{BreakerState, CircuitBreaker};
use stanchion::classify::{Class, GrpcCodes, Kind};
use stanchion::client::{Client, Route, RoutePolicy, Target};
use stanchion::pool::{HttpConnector, PoolBuilder};
use stanchion::retry::{Backoff, ReplayBody};
use stanchion_echo_proto::EchoRequest;
use stanchion_echo_proto::echo_client::EchoClient;
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::grpc_server::GrpcServer;
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type HttpBody = ReplayBody<Empty<Bytes>>;

fn fast_backoff() -> Backoff {
    Backoff::new(MS, 5 * MS).unwrap().seed(7)
}

/// Fault 1: a method that retries nothing is sent once, whatever happened after sending — a
/// stall past the per-try timeout, or a reset after the server read the whole request — with
/// the codes set on the route or client-wide.
#[tokio::test(start_paused = true)]
async fn a_grpc_method_with_no_retryable_codes_is_sent_once() {
    let faults = [
        (
            "stalls past the per-try timeout",
            Fault::ok().latency(10 * SEC),
        ),
        ("reads the request, then resets", Fault::reset()),
    ];
    for (what, fault) in faults {
        for on_route in [false, true] {
            let server = GrpcServer::start(FaultPlan::always(fault.clone())).await;
            let builder = Client::grpc(Target::addrs([server.addr()]))
                .deadline(3 * SEC)
                .per_try_timeout(200 * MS)
                .backoff(fast_backoff());
            let builder = if on_route {
                builder.route(
                    Route::grpc_service("stanchion.test.Echo"),
                    RoutePolicy::new().retryable_codes(GrpcCodes::NONE),
                )
            } else {
                builder.retryable_codes(GrpcCodes::NONE)
            };
            let client = builder
                .build(HttpConnector::<tonic::body::Body>::http2())
                .unwrap();
            client.resolved().await;
            let status = EchoClient::new(client.into_tonic())
                .call(EchoRequest {
                    message: "pay".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(
                server.count(),
                1,
                "{what} (codes on the route: {on_route}): {status:?}"
            );
        }
    }
}

/// The same faults with UNAVAILABLE and DEADLINE_EXCEEDED retryable: a stall (per-try timeout,
/// DEADLINE_EXCEEDED) is retried; a reset with `INTERNAL_ERROR` is INTERNAL and is not.
#[tokio::test(start_paused = true)]
async fn a_grpc_method_retries_exactly_its_codes_on_errors() {
    use stanchion::classify::GrpcCode;
    let codes = GrpcCodes::from_iter([GrpcCode::Unavailable, GrpcCode::DeadlineExceeded]);
    for (fault, sent) in [(Fault::ok().latency(10 * SEC), 3), (Fault::reset(), 1)] {
        let server = GrpcServer::start(FaultPlan::always(fault.clone())).await;
        let client = Client::grpc(Target::addrs([server.addr()]))
            .deadline(3 * SEC)
            .per_try_timeout(200 * MS)
            .backoff(fast_backoff())
            .retryable_codes(codes)
            .build(HttpConnector::<tonic::body::Body>::http2())
            .unwrap();
        client.resolved().await;
        let _ = EchoClient::new(client.into_tonic())
            .call(EchoRequest {
                message: "pay".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(server.count(), sent, "{fault:?}");
    }
}

/// gRFC A6's commit rule: once the response headers arrived (not trailers-only), the call is
/// committed — a reset after them is not retried, whatever the method's codes.
#[tokio::test(start_paused = true)]
async fn a_grpc_call_is_committed_once_response_headers_arrive() {
    use stanchion::classify::GrpcCode;
    let server = GrpcServer::start(FaultPlan::always(Fault::reset_after_headers())).await;
    let every_failure = GrpcCodes::from_iter([
        GrpcCode::Unavailable,
        GrpcCode::Internal,
        GrpcCode::Unknown,
        GrpcCode::Cancelled,
        GrpcCode::DeadlineExceeded,
    ]);
    let client = Client::grpc(Target::addrs([server.addr()]))
        .backoff(fast_backoff())
        .retryable_codes(every_failure)
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let status = EchoClient::new(client.into_tonic())
        .call(EchoRequest {
            message: "pay".into(),
        })
        .await
        .unwrap_err();
    assert_ne!(status.code(), tonic::Code::Ok);
    assert_eq!(server.count(), 1, "{status:?}");
}

async fn servers(plans: impl IntoIterator<Item = FaultPlan>) -> Vec<HttpServer> {
    let mut servers = Vec::new();
    for plan in plans {
        servers.push(HttpServer::start(plan).await);
    }
    servers
}

fn get() -> Request<Empty<Bytes>> {
    Request::get("/").body(Empty::new()).unwrap()
}

/// Fault 2: with the call's deadline (200 ms) the tighter timer, a hung endpoint is ejected
/// after 5 cut attempts, as it is when the per-try timeout cuts them.
#[tokio::test(start_paused = true)]
async fn a_hung_endpoint_is_ejected_whichever_timer_cuts_it() {
    for (deadline, per_try) in [(200 * MS, 10 * SEC), (2 * SEC, 200 * MS)] {
        let servers = servers([
            FaultPlan::healthy(),
            FaultPlan::always(Fault::hang()),
            FaultPlan::healthy(),
        ])
        .await;
        let hung = servers[1].addr();
        let client = Client::http(Target::addrs(servers.iter().map(|s| s.addr())))
            .deadline(deadline)
            .per_try_timeout(per_try)
            .backoff(fast_backoff())
            .build(HttpConnector::<Empty<Bytes>>::http1())
            .unwrap();
        client.resolved().await;
        for _ in 0..60 {
            if let Ok(res) = client.clone().oneshot(get()).await {
                res.into_body().collect().await.unwrap();
            }
        }
        assert_eq!(
            servers[1].count(),
            5,
            "deadline {deadline:?}, per-try {per_try:?}: the hung endpoint kept getting calls"
        );
        let state = client.balancer().breaker(hung).unwrap().state();
        assert_eq!(state, BreakerState::Open, "{deadline:?} / {per_try:?}");
    }
}

/// A client whose budget (50 ms) is shorter than the service's normal latency (300 ms) times
/// out on every call — and ejects nobody: its attempts had less than the timeout floor.
#[tokio::test(start_paused = true)]
async fn a_budget_below_the_service_latency_ejects_nobody() {
    let slow = || FaultPlan::always(Fault::ok().latency(300 * MS));
    let servers = servers([slow(), slow(), slow()]).await;
    let client = Client::http(Target::addrs(servers.iter().map(|s| s.addr())))
        .deadline(50 * MS)
        .backoff(fast_backoff())
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    for _ in 0..30 {
        let err = client.clone().oneshot(get()).await.unwrap_err();
        assert!(err.is_deadline_exceeded(), "{err:?}");
    }
    for endpoint in client.balancer().endpoints() {
        assert_eq!(endpoint.state, BreakerState::Closed, "{endpoint:?}");
    }
    let sent: usize = servers.iter().map(|s| s.count()).sum();
    assert_eq!(sent, 30, "every call reached an endpoint once");
}

/// Fault 3: our own congestion — a pool of one connection, a 50 ms checkout, 12 concurrent
/// calls to endpoints answering in 300 ms — times calls out in the pool and opens no breaker.
#[tokio::test(start_paused = true)]
async fn our_own_congestion_ejects_no_endpoint() {
    let slow = || FaultPlan::always(Fault::ok().latency(300 * MS));
    let servers = servers([slow(), slow()]).await;
    let client = Client::http(Target::addrs(servers.iter().map(|s| s.addr())))
        .pool(PoolBuilder::new().max_size(1).checkout_timeout(50 * MS))
        .breaker(CircuitBreaker::builder().consecutive_failures(1))
        .backoff(fast_backoff())
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let calls: Vec<_> = (0..12)
        .map(|_| tokio::spawn(client.clone().oneshot(get())))
        .collect();
    let mut ok = 0;
    for call in calls {
        if let Ok(res) = call.await.unwrap() {
            assert_eq!(res.status(), 200);
            ok += 1;
        }
    }
    assert_eq!(
        ok, 2,
        "each server answered the one call its connection carried"
    );
    for endpoint in client.balancer().endpoints() {
        assert_eq!(endpoint.state, BreakerState::Closed, "{endpoint:?}");
    }
    assert_eq!(servers[0].count() + servers[1].count(), 2);
}

/// An attempt cut by its per-try timeout while it still waited for one of the client's own
/// pooled connections never left the client: even an unkeyed POST is sent again (once, free),
/// and the endpoint is not blamed.
#[tokio::test(start_paused = true)]
async fn an_attempt_cut_in_our_own_queue_was_never_sent_and_is_sent_again() {
    // The first request takes 200 ms; the rest are answered at once.
    let servers = servers([FaultPlan::scripted([Fault::ok().latency(200 * MS)])]).await;
    let client = Client::http(Target::addrs([servers[0].addr()]))
        .deadline(2 * SEC)
        .per_try_timeout(150 * MS)
        .route(
            Route::path_prefix("/slow"),
            RoutePolicy::new().per_try_timeout(SEC),
        )
        .pool(PoolBuilder::new().max_size(1))
        .breaker(CircuitBreaker::builder().consecutive_failures(1))
        .backoff(fast_backoff())
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    // A slow GET holds the only connection for 200 ms…
    let holder = tokio::spawn({
        let client = client.clone();
        async move {
            let slow = Request::get("/slow").body(Empty::new()).unwrap();
            let res = client.oneshot(slow).await.unwrap();
            res.into_body().collect().await.unwrap();
        }
    });
    tokio::time::sleep(10 * MS).await;
    // …so the POST's first attempt is cut at 150 ms, still queued; its second is sent.
    let post = Request::post("/orders").body(Empty::new()).unwrap();
    let res = client.clone().oneshot(post).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
    holder.await.unwrap();
    assert_eq!(servers[0].count(), 2, "the POST reached the server once");
    for endpoint in client.balancer().endpoints() {
        assert_eq!(endpoint.state, BreakerState::Closed, "{endpoint:?}");
    }
}

/// 429 and RESOURCE_EXHAUSTED are shedding: an endpoint answering them is not ejected.
#[tokio::test(start_paused = true)]
async fn shedding_ejects_no_endpoint() {
    let servers = servers([FaultPlan::always(Fault::status(429))]).await;
    let client = Client::http(Target::addrs([servers[0].addr()]))
        .breaker(CircuitBreaker::builder().consecutive_failures(1))
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    for _ in 0..10 {
        let res = client.clone().oneshot(get()).await.unwrap();
        assert_eq!(res.status(), 429);
        res.into_body().collect().await.unwrap();
    }
    let state = client
        .balancer()
        .breaker(servers[0].addr())
        .unwrap()
        .state();
    assert_eq!(state, BreakerState::Closed);
}

/// Outcomes that say nothing about the endpoint — shedding, the client's own refusals — are
/// recorded neither way: they do not break a run of failures, and do not complete a probe.
#[tokio::test(start_paused = true)]
async fn neutral_outcomes_neither_break_a_run_nor_close_a_circuit() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(3)
        .open_duration(SEC)
        .half_open_probes(1)
        .build()
        .unwrap();
    let record = |kind| {
        breaker
            .try_acquire()
            .unwrap()
            .record(Some(Class::new(kind)))
    };
    for kind in [
        Kind::ServerError,
        Kind::Overload,
        Kind::ServerError,
        Kind::Refused,
        Kind::ServerError,
    ] {
        record(kind);
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "3 failures in a row, shedding between"
    );
    tokio::time::advance(SEC).await;
    // A probe that meets shedding gives its slot back; the circuit stays half-open.
    record(Kind::Overload);
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    record(Kind::Success);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

/// A connector whose connects never complete (a blackholed address: SYNs dropped).
#[derive(Clone)]
struct Blackhole;

impl tower::Service<std::net::SocketAddr> for Blackhole {
    type Response = stanchion::pool::HttpConnection<HttpBody>;
    type Error = stanchion::BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _addr: std::net::SocketAddr) -> Self::Future {
        Box::pin(std::future::pending())
    }
}

/// An endpoint whose connects hang is the endpoint's failure (a timeout), not our own
/// congestion: with a per-try timeout shorter than any connect timeout, it is still ejected,
/// and calls go to the other endpoint.
#[tokio::test(start_paused = true)]
async fn an_endpoint_whose_connects_hang_is_ejected() {
    let healthy = HttpServer::start(FaultPlan::healthy()).await;
    let blackholed: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let settings = PoolBuilder::new().settings().unwrap();
    let healthy_addr = healthy.addr();
    let client = Client::http(Target::addrs([healthy_addr, blackholed]))
        .per_try_timeout(300 * MS)
        .breaker(CircuitBreaker::builder().consecutive_failures(2))
        .backoff(fast_backoff())
        .build_with(move |addr| {
            if addr == healthy_addr {
                settings.build(
                    tower::util::Either::Left(HttpConnector::<HttpBody>::http1()),
                    addr,
                )
            } else {
                settings.build(tower::util::Either::Right(Blackhole), addr)
            }
        })
        .unwrap();
    client.resolved().await;
    for _ in 0..10 {
        let res = client.clone().oneshot(get()).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let state = client.balancer().breaker(blackholed).unwrap().state();
    assert_eq!(state, BreakerState::Open);
    assert_eq!(healthy.count(), 10);
}

/// The call number on which a fresh breaker opens, given each call's outcome: (failed, slow).
/// A slow call takes 20 ms of paused time, past the 10 ms slow-call threshold.
fn opening_call(breaker: &CircuitBreaker, outcomes: &[(bool, bool)]) -> Option<usize> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        for (i, (failed, slow)) in outcomes.iter().enumerate() {
            let permit = breaker.try_acquire().ok()?;
            if *slow {
                tokio::time::advance(20 * MS).await;
            }
            let kind = if *failed {
                Kind::ServerError
            } else {
                Kind::Success
            };
            permit.record(Some(Class::new(kind)));
            if breaker.state() == BreakerState::Open {
                return Some(i + 1);
            }
        }
        None
    })
}

/// The first call at which `count(call)` / calls reaches `ppm` (parts per million), with at
/// least `minimum` calls in a window of `window`, computed exactly.
fn expected_opening(
    outcomes: &[(bool, bool)],
    window: usize,
    minimum: usize,
    ppm: u64,
    count: impl Fn(&(bool, bool)) -> bool,
) -> Option<usize> {
    (1..=outcomes.len()).find(|&n| {
        let seen = &outcomes[n.saturating_sub(window)..n];
        let hits = seen.iter().filter(|o| count(o)).count() as u64;
        seen.len() >= minimum && hits * 1_000_000 >= ppm * seen.len() as u64
    })
}

/// Fault 4: 0.55 over 100 calls with 45 successes then 55 failures opens on call 100 (not
/// 101: `0.55 × 100` is 55.000000000000007 in floating point); the same for slow calls.
#[test]
fn a_rate_exactly_at_the_threshold_opens_on_that_call() {
    let breaker = CircuitBreaker::builder()
        .failure_rate(0.55)
        .count_window(100)
        .minimum_calls(100)
        .build()
        .unwrap();
    let failures: Vec<(bool, bool)> = (0..100).map(|i| (i >= 45, false)).collect();
    assert_eq!(opening_call(&breaker, &failures), Some(100));
    let slow = CircuitBreaker::builder()
        .slow_calls(10 * MS, 0.55)
        .failure_rate(1.0)
        .count_window(100)
        .minimum_calls(100)
        .build()
        .unwrap();
    let slow_calls: Vec<(bool, bool)> = (0..100).map(|i| (false, i >= 45)).collect();
    assert_eq!(opening_call(&slow, &slow_calls), Some(100));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Over many (rate, window, minimum) and outcome sequences, the breaker opens on exactly the
    /// call where the failure rate — or the slow-call rate — first reaches its threshold (one
    /// thread: the window holds the last `window` calls).
    #[test]
    fn the_breaker_opens_exactly_when_a_rate_reaches_its_threshold(
        failure_millis in 1u64..=1000,
        slow_millis in 1u64..=1000,
        window in 1usize..60,
        minimum_share in 1usize..=100,
        outcomes in proptest::collection::vec((any::<bool>(), any::<bool>()), 1..200),
    ) {
        let minimum = (window * minimum_share).div_ceil(100).max(1);
        let breaker = CircuitBreaker::builder()
            .failure_rate(failure_millis as f64 / 1000.0)
            .slow_calls(10 * MS, slow_millis as f64 / 1000.0)
            .count_window(window as u32)
            .minimum_calls(minimum as u32)
            .build()
            .unwrap();
        let by_failures = expected_opening(&outcomes, window, minimum, failure_millis * 1000, |o| o.0);
        let by_slow = expected_opening(&outcomes, window, minimum, slow_millis * 1000, |o| o.1);
        let expected = match (by_failures, by_slow) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        prop_assert_eq!(opening_call(&breaker, &outcomes), expected);
    }
}
