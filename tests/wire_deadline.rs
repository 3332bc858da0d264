//! The deadline tells the truth, over real servers under paused time: the timeout written on the
//! wire is what remains when the request is handed to the connection (after waiting for the
//! client's own pool, after connecting), across hops; and the budget covers the response body.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use stanchion::Error;
use stanchion::client::{Client, Target};
use stanchion::deadline::{AdoptDeadlineLayer, parse_grpc_timeout};
use stanchion::pool::{HttpConnection, HttpConnector, Pool, PoolBuilder};
use stanchion::retry::ReplayBody;
use stanchion_echo_proto::EchoRequest;
use stanchion_echo_proto::echo_client::EchoClient;
use tokio::net::TcpListener;
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt};

use support::faults::{Fault, FaultPlan};
use support::grpc_server::GrpcServer;
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);
const TIMEOUT: HeaderName = HeaderName::from_static("x-timeout-ms");

type Body = ReplayBody<Empty<Bytes>>;
type HttpPool = Pool<HttpConnector<Body>, SocketAddr>;

fn get() -> Request<Empty<Bytes>> {
    Request::get("/").body(Empty::new()).unwrap()
}

/// The millisecond timeout each request carried, and how much of the caller's budget was left
/// (whole milliseconds, rounded down) when it arrived.
fn told_and_left(server: &HttpServer, deadline: Instant) -> Vec<(u64, u64)> {
    server
        .recorder()
        .requests()
        .iter()
        .map(|r| {
            let told = r.header("x-timeout-ms").unwrap().parse().unwrap();
            let left = deadline.saturating_duration_since(r.at).as_millis() as u64;
            (told, left)
        })
        .collect()
}

/// Fault 1: a pool of one connection, a server taking 400 ms, two concurrent calls with a 1 s
/// deadline: the second waits ~400 ms for the connection and is told ~600 ms, not 1000 — on
/// HTTP/1, and on HTTP/2 limited to one stream per connection.
#[tokio::test(start_paused = true)]
async fn the_wire_timeout_excludes_the_wait_for_the_clients_own_pool() {
    for http2 in [false, true] {
        let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(400 * MS))).await;
        let connector = if http2 {
            HttpConnector::<Empty<Bytes>>::http2()
        } else {
            HttpConnector::<Empty<Bytes>>::http1()
        };
        let client = Client::http(Target::addrs([server.addr()]))
            .deadline(SEC)
            .timeout_header(TIMEOUT)
            .pool(PoolBuilder::new().max_size(1).max_streams_per_connection(1))
            .build(connector)
            .unwrap();
        client.resolved().await;
        let start = Instant::now();
        let calls: Vec<_> = (0..2)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    let res = client.oneshot(get()).await.unwrap();
                    res.into_body().collect().await.unwrap();
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
        let seen = told_and_left(&server, start + SEC);
        assert_eq!(seen.len(), 2);
        for (told, left) in &seen {
            assert!(
                told.abs_diff(*left) <= 1,
                "http2 {http2}: told {told}, left {left}"
            );
        }
        assert!(
            (599..=601).contains(&seen[1].0),
            "http2 {http2}: the second call was told {} ms",
            seen[1].0
        );
    }
}

/// The same on gRPC: `grpc-timeout` is what remains when the call is handed to the connection.
#[tokio::test(start_paused = true)]
async fn grpc_timeout_excludes_the_wait_for_the_clients_own_pool() {
    let server = GrpcServer::start(FaultPlan::always(Fault::ok().latency(400 * MS))).await;
    let client = Client::grpc(Target::addrs([server.addr()]))
        .deadline(SEC)
        .pool(PoolBuilder::new().max_size(1).max_streams_per_connection(1))
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let start = Instant::now();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let mut echo = EchoClient::new(client.clone().into_tonic());
            tokio::spawn(async move {
                echo.call(EchoRequest {
                    message: "hi".into(),
                })
                .await
                .unwrap()
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    let requests = server.recorder().requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        let told = parse_grpc_timeout(r.header("grpc-timeout").unwrap().as_bytes()).unwrap();
        let left = (start + SEC).saturating_duration_since(r.at);
        assert!(
            told <= left && left - told <= MS,
            "told {told:?}, left {left:?}"
        );
    }
    let second = parse_grpc_timeout(requests[1].header("grpc-timeout").unwrap().as_bytes());
    assert!(second.unwrap() <= 600 * MS, "{second:?}");
}

/// A connector whose connects take 50 ms (a slow network, a slow handshake).
#[derive(Clone)]
struct SlowConnect;

impl Service<SocketAddr> for SlowConnect {
    type Response = HttpConnection<Body>;
    type Error = stanchion::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        Box::pin(async move {
            sleep(50 * MS).await;
            HttpConnector::<Body>::http1().call(addr).await
        })
    }
}

/// On a cold connection the connect time is charged too: told 950 ms of a 1 s budget.
#[tokio::test(start_paused = true)]
async fn the_wire_timeout_excludes_the_connect() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let pool = PoolBuilder::new().settings().unwrap();
    let client = Client::http(Target::addrs([server.addr()]))
        .deadline(SEC)
        .timeout_header(TIMEOUT)
        .build_with(move |addr| pool.build(SlowConnect, addr))
        .unwrap();
    client.resolved().await;
    let start = Instant::now();
    let res = client.oneshot(get()).await.unwrap();
    res.into_body().collect().await.unwrap();
    let seen = told_and_left(&server, start + SEC);
    assert_eq!(seen, [(950, 950)]);
}

/// A hop in the middle: adopts the caller's deadline (`x-timeout-ms`), then calls the next hop
/// through a client of its own whose pool holds one connection.
async fn middle_hop(next: SocketAddr) -> SocketAddr {
    let client = Client::http(Target::addrs([next]))
        .timeout_header(TIMEOUT)
        .pool(PoolBuilder::new().max_size(1))
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let handler = tower::service_fn(move |_req: Request<hyper::body::Incoming>| {
        let client = client.clone();
        async move {
            let res = client.oneshot(get()).await?;
            res.into_body().collect().await?;
            Ok::<_, Error>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    });
    let adopting = AdoptDeadlineLayer::new()
        .http_header(TIMEOUT)
        .layer(handler);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let svc = hyper_util::service::TowerToHyperService::new(adopting.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Client → A → B, where A waits 400 ms for its own pool's only connection: B is told no more
/// than what remains of the original 1 s budget, within 1 ms.
#[tokio::test(start_paused = true)]
async fn across_hops_the_next_server_is_told_what_remains() {
    let b = HttpServer::start(FaultPlan::always(Fault::ok().latency(400 * MS))).await;
    let a = middle_hop(b.addr()).await;
    let client = Client::http(Target::addrs([a]))
        .deadline(SEC)
        .timeout_header(TIMEOUT)
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let start = Instant::now();
    let calls: Vec<_> = (0..2)
        .map(|_| tokio::spawn(client.clone().oneshot(get())))
        .collect();
    for call in calls {
        let res = call.await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
    }
    let seen = told_and_left(&b, start + SEC);
    assert_eq!(seen.len(), 2);
    for (told, left) in &seen {
        assert!(told <= left && left - told <= 1, "told {told}, left {left}");
    }
    assert!(seen[1].0 <= 600, "the second was told {} ms", seen[1].0);
}

/// A body that stalls after the head: the read fails at the deadline with the deadline error,
/// the pool's connection and the bulkhead's permit are released then, and the connection is
/// not reused.
#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_reading_the_body() {
    let server = HttpServer::start(FaultPlan::scripted([Fault::stall_body()])).await;
    let pools: Arc<Mutex<Vec<HttpPool>>> = Arc::default();
    let settings = PoolBuilder::new().settings().unwrap();
    let kept = pools.clone();
    let client = Client::http(Target::addrs([server.addr()]))
        .deadline(300 * MS)
        .build_with(move |addr| {
            let pool = settings.build(HttpConnector::<Body>::http1(), addr);
            kept.lock().unwrap().push(pool.clone());
            pool
        })
        .unwrap();
    client.resolved().await;
    let start = Instant::now();
    let res = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "partial");
    let err = body.frame().await.unwrap().unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(start.elapsed(), 300 * MS);
    // Released at the deadline, with the body still held by the caller.
    let pool = pools.lock().unwrap()[0].clone();
    assert_eq!(pool.stats().in_use, 0);
    let partition = client.bulkhead().unwrap().stats("default").unwrap();
    assert_eq!(partition.in_flight, 0);
    assert!(
        body.frame().await.is_none(),
        "the stream is over after the error"
    );
    drop(body);
    // The connection was cut mid-body: the next call opens a new one.
    let res = client.oneshot(get()).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(server.accepted(), 2);
    assert_eq!(pool.stats().created, 2);
}

/// A connector that connects for real, then hands the connection over only at `ready_at`.
#[derive(Clone)]
struct ConnectedAt(Instant);

impl Service<SocketAddr> for ConnectedAt {
    type Response = HttpConnection<Empty<Bytes>>;
    type Error = stanchion::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let at = self.0;
        Box::pin(async move {
            let conn = HttpConnector::<Empty<Bytes>>::http1().call(addr).await?;
            tokio::time::sleep_until(at).await;
            Ok(conn)
        })
    }
}

/// A connection that comes less than a millisecond before the deadline: the request is not
/// sent at all (a server told "0 ms" starts work only to drop it); the call ends with the
/// deadline's error at the deadline.
#[tokio::test(start_paused = true)]
async fn a_request_with_under_a_millisecond_left_is_not_sent() {
    use stanchion::deadline::{AttemptLayer, DeadlineLayer};
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let t0 = Instant::now();
    // The call starts half a millisecond past t0, so its 100 ms deadline is 500 µs after the
    // connection is handed over (at t0 + 100 ms).
    tokio::time::advance(Duration::from_micros(500)).await;
    let start = Instant::now();
    let pool = PoolBuilder::new()
        .build(ConnectedAt(t0 + 100 * MS), server.addr())
        .unwrap();
    let svc = DeadlineLayer::new(100 * MS).unwrap().layer(
        AttemptLayer::new(SEC)
            .unwrap()
            .timeout_header(TIMEOUT)
            .layer(pool),
    );
    let err = svc.oneshot(get()).await.unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert!(start.elapsed() >= 100 * MS && start.elapsed() <= 101 * MS);
    let told: Vec<_> = server
        .recorder()
        .requests()
        .iter()
        .map(|r| r.header("x-timeout-ms").map(str::to_owned))
        .collect();
    assert!(told.is_empty(), "sent with {told:?} left");
}

/// tonic's `Request::set_timeout` (a `grpc-timeout` the caller wrote) is part of the call's
/// deadline: the earlier of it and the client's budget ends the call, and is what the server
/// is told.
#[tokio::test(start_paused = true)]
async fn a_grpc_timeout_set_by_the_caller_shortens_the_deadline() {
    let server = GrpcServer::start(FaultPlan::scripted([
        Fault::ok(),
        Fault::ok().latency(500 * MS),
    ]))
    .await;
    let client = Client::grpc(Target::addrs([server.addr()]))
        .deadline(SEC)
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let mut echo = EchoClient::new(client.into_tonic());
    let request = || {
        let mut req = tonic::Request::new(EchoRequest {
            message: "hi".into(),
        });
        req.set_timeout(300 * MS);
        req
    };
    echo.call(request()).await.unwrap();
    let told = server.recorder().requests()[0]
        .header("grpc-timeout")
        .map(|v| parse_grpc_timeout(v.as_bytes()).unwrap());
    assert!(
        told.is_some_and(|t| t <= 300 * MS && t >= 299 * MS),
        "told {told:?}"
    );
    let start = Instant::now();
    let status = echo.call(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(start.elapsed(), 300 * MS);
}

/// A client used as the transport of another client's attempts: the response body outlives the
/// attempt, so it is bounded by the outer call's deadline (2 s) — not by the attempt's 200 ms.
#[tokio::test(start_paused = true)]
async fn a_nested_clients_body_is_bounded_by_the_call_not_the_attempt() {
    use stanchion::deadline::{AttemptLayer, DeadlineLayer};
    let server = HttpServer::start(FaultPlan::always(Fault::trickle(5, 100 * MS))).await;
    let pool: Pool<HttpConnector<Empty<Bytes>>, SocketAddr> = PoolBuilder::new()
        .build(HttpConnector::http1(), server.addr())
        .unwrap();
    let inner = DeadlineLayer::default().layer(pool);
    let outer = DeadlineLayer::new(2 * SEC)
        .unwrap()
        .layer(AttemptLayer::new(200 * MS).unwrap().layer(inner));
    let start = Instant::now();
    let res = outer.oneshot(get()).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 5 * "chunk".len());
    assert_eq!(start.elapsed(), 500 * MS);

    // Past the outer call's deadline, the body is cut with the call's budget in the error.
    let server = HttpServer::start(FaultPlan::always(Fault::trickle(5, SEC))).await;
    let pool: Pool<HttpConnector<Empty<Bytes>>, SocketAddr> = PoolBuilder::new()
        .build(HttpConnector::http1(), server.addr())
        .unwrap();
    let outer = DeadlineLayer::new(2 * SEC).unwrap().layer(
        AttemptLayer::new(200 * MS)
            .unwrap()
            .layer(DeadlineLayer::default().layer(pool)),
    );
    let start = Instant::now();
    let res = outer.oneshot(get()).await.unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert!(
        matches!(err, Error::DeadlineExceeded { budget, .. } if budget == 2 * SEC),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), 2 * SEC);
}
