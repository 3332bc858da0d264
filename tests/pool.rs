//! Connection pools against real loopback servers: limits, the checkout timeout at the cliff,
//! idle and lifetime eviction, replaced connections, HTTP/2 stream sharing, adapters.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use stanchion::Error;
use stanchion::classify::classify_error;
use stanchion::deadline::{Deadline, DeadlineCarrier};
use stanchion::pool::{
    Connection, ConnectionService, HttpConnection, HttpConnector, HttpSendError, Pool, PoolBuilder,
    ReqwestConnector, TonicConnector,
};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tower::{Service, ServiceExt};

use support::faults::{Fault, FaultPlan};
use support::grpc_server::{GrpcServer, echo};
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type HttpPool = Pool<HttpConnector<Full<Bytes>>, SocketAddr>;

fn http1(server: &HttpServer, builder: PoolBuilder) -> HttpPool {
    builder
        .build(HttpConnector::http1(), server.addr())
        .unwrap()
}

fn http2(server: &HttpServer, builder: PoolBuilder) -> HttpPool {
    builder
        .build(HttpConnector::http2(), server.addr())
        .unwrap()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::default()).unwrap()
}

/// Sends `req` through the pool and reads the whole body (which returns the connection).
async fn fetch(pool: &HttpPool, req: Request<Full<Bytes>>) -> Result<Bytes, Error> {
    let res = pool.clone().oneshot(req).await?;
    let body = res.into_body().collect().await.map_err(Error::from_inner)?;
    Ok(body.to_bytes())
}

/// Lets connection tasks on both sides notice closes (real sockets, paused clock).
async fn settle() {
    for _ in 0..5 {
        sleep(MS).await;
    }
}

/// Runs `n` fetches at once and returns each outcome with how long it took.
async fn concurrently(pool: &HttpPool, n: usize) -> Vec<(Result<Bytes, Error>, Duration)> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let pool = pool.clone();
        set.spawn(async move {
            let start = Instant::now();
            let outcome = fetch(&pool, get("/")).await;
            (outcome, start.elapsed())
        });
    }
    set.join_all().await
}

#[tokio::test(start_paused = true)]
async fn max_size_holds_under_ten_times_the_load() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(50 * MS))).await;
    let pool = http1(
        &server,
        PoolBuilder::new().max_size(4).checkout_timeout(10 * SEC),
    );
    let start = Instant::now();
    let outcomes = concurrently(&pool, 40).await;
    assert!(outcomes.iter().all(|(o, _)| o.is_ok()));
    // 40 calls over 4 connections, 50 ms each: ten rounds.
    let elapsed = start.elapsed();
    assert!(elapsed >= 500 * MS && elapsed < 600 * MS, "{elapsed:?}");
    assert_eq!(server.accepted(), 4);
    assert_eq!(server.max_open(), 4);
    let stats = pool.stats();
    assert_eq!((stats.created, stats.open, stats.in_use), (4, 4, 0));
    assert_eq!(stats.checkouts, 40);
    assert!(stats.waited_checkouts >= 36, "{stats:?}");
    assert!(stats.max_wait >= 400 * MS, "{stats:?}");
    assert_eq!(stats.checkout_timeouts, 0);
}

#[tokio::test(start_paused = true)]
async fn a_checkout_past_its_timeout_fails_with_the_pool_timeout_error() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(10 * SEC))).await;
    let pool = http1(
        &server,
        PoolBuilder::new().max_size(1).checkout_timeout(100 * MS),
    );
    let holder = tokio::spawn({
        let pool = pool.clone();
        async move { fetch(&pool, get("/")).await }
    });
    sleep(MS).await;
    let start = Instant::now();
    let err = fetch(&pool, get("/")).await.unwrap_err();
    assert_eq!(start.elapsed(), 100 * MS);
    match &err {
        Error::PoolTimeout {
            endpoint, waited, ..
        } => {
            assert_eq!(&**endpoint, server.addr().to_string());
            assert_eq!(*waited, 100 * MS);
        }
        other => panic!("expected a pool timeout, got {other:?}"),
    }
    assert!(err.to_string().contains("pool checkout timed out"));
    let stats = pool.stats();
    assert_eq!((stats.checkout_timeouts, stats.waiters), (1, 0));
    assert!(holder.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_cliff_is_bounded_by_the_checkout_timeout() {
    // The test every team should run before production: the server slows to 1 s per call.
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(SEC))).await;
    let pool = http1(
        &server,
        PoolBuilder::new().max_size(2).checkout_timeout(250 * MS),
    );
    let outcomes = concurrently(&pool, 20).await;
    let served = outcomes.iter().filter(|(o, _)| o.is_ok()).count();
    assert_eq!(served, 2);
    for (outcome, took) in &outcomes {
        match outcome {
            Ok(_) => assert!(*took >= SEC),
            Err(Error::PoolTimeout { waited, .. }) => {
                // Fast, visible failure instead of a pile-up behind slow calls.
                assert_eq!(*waited, 250 * MS);
                assert_eq!(*took, 250 * MS);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let stats = pool.stats();
    assert_eq!(stats.checkout_timeouts, 18);
    assert_eq!(server.accepted(), 2);
    // Once the slow calls end, the pool serves again.
    sleep(SEC).await;
    assert!(fetch(&pool, get("/")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_shortens_the_checkout() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(10 * SEC))).await;
    let pool = http1(&server, PoolBuilder::new().max_size(1));
    let _holder = tokio::spawn({
        let pool = pool.clone();
        async move { fetch(&pool, get("/")).await }
    });
    sleep(MS).await;
    let mut req = get("/");
    req.set_deadline(Deadline::after(40 * MS));
    // Bounded by the deadline, plus the 1 ms a deadline layer above would use to cut it first.
    match fetch(&pool, req).await {
        Err(Error::PoolTimeout { waited, .. }) => assert_eq!(waited, 41 * MS),
        other => panic!("expected a pool timeout, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let pool = http1(&server, PoolBuilder::new().idle_timeout(5 * SEC));
    fetch(&pool, get("/")).await.unwrap();
    sleep(4 * SEC).await;
    assert_eq!((pool.stats().open, server.open()), (1, 1));
    sleep(2 * SEC).await;
    settle().await;
    assert_eq!((pool.stats().open, server.open()), (0, 0));
    assert_eq!(pool.stats().closed, 1);
    fetch(&pool, get("/")).await.unwrap();
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(start_paused = true)]
async fn lifetimes_are_jittered_so_reconnects_spread_out() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(10 * MS))).await;
    let pool = http1(
        &server,
        PoolBuilder::new()
            .max_size(8)
            .idle_timeout(3600 * SEC)
            .max_lifetime(100 * SEC)
            .lifetime_jitter(0.5)
            .seed(7),
    );
    let opened = Instant::now();
    assert!(concurrently(&pool, 8).await.iter().all(|(o, _)| o.is_ok()));
    assert_eq!(pool.stats().open, 8);
    let mut close_times = Vec::new();
    let mut open = 8;
    while open > 0 && opened.elapsed() < 200 * SEC {
        sleep(SEC).await;
        let now_open = pool.stats().open;
        for _ in now_open..open {
            close_times.push(opened.elapsed().as_secs());
        }
        open = now_open;
    }
    assert_eq!(close_times.len(), 8, "every connection rotated");
    // Lifetimes lie in [50 s, 100 s] (plus one reaper tick), and are not all the same.
    assert!(
        close_times.iter().all(|&t| (50..=102).contains(&t)),
        "{close_times:?}"
    );
    close_times.dedup();
    assert!(close_times.len() >= 4, "closes bunched: {close_times:?}");
    settle().await;
    assert_eq!(server.open(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_rotates_after_its_request_limit() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let pool = http1(&server, PoolBuilder::new().max_requests_per_connection(3));
    for _ in 0..9 {
        fetch(&pool, get("/")).await.unwrap();
    }
    assert_eq!(server.accepted(), 3);
    assert_eq!(server.count(), 9);
}

/// Five calls 3 s apart to a server that closes connections idle for 2 s: none fails, and the
/// pool opens a new connection for at least `min_new` of them.
async fn connections_closed_by_the_server_are_replaced(
    pool: HttpPool,
    server: HttpServer,
    min_new: usize,
) {
    for round in 0..5 {
        fetch(&pool, get("/"))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // The server's keep-alive (2 s) is shorter than the pool's idle timeout (30 s).
        sleep(3 * SEC).await;
    }
    assert!(server.accepted() >= min_new, "{}", server.accepted());
    assert_eq!(server.count(), 5);
    let stats = pool.stats();
    assert!(stats.closed >= min_new as u64 - 1, "{stats:?}");
    assert_eq!(stats.created, server.accepted() as u64);
}

#[tokio::test(start_paused = true)]
async fn http1_connections_closed_by_the_server_are_replaced() {
    let server = HttpServer::start_with(FaultPlan::healthy(), Some(2 * SEC)).await;
    let pool = http1(&server, PoolBuilder::new());
    connections_closed_by_the_server_are_replaced(pool, server, 5).await;
}

#[tokio::test(start_paused = true)]
async fn http2_connections_sent_goaway_are_replaced() {
    let server = HttpServer::start_with(FaultPlan::healthy(), Some(2 * SEC)).await;
    let pool = http2(&server, PoolBuilder::new());
    // A draining HTTP/2 connection may still carry a stream opened before its final GOAWAY,
    // so not every call needs a new connection; none may fail.
    connections_closed_by_the_server_are_replaced(pool, server, 3).await;
}

/// Wraps a real connection; its first send hands the request back unsent, as hyper does when
/// it finds the connection closed before writing.
struct HandsBackFirst {
    inner: HttpConnection<Full<Bytes>>,
    handed_back: Arc<AtomicUsize>,
}

enum HandBackError {
    Unsent(Request<Full<Bytes>>),
    Send(HttpSendError<Full<Bytes>>),
}

impl Connection for HandsBackFirst {
    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn share(&self) -> Option<Self> {
        None
    }
}

impl Service<Request<Full<Bytes>>> for HandsBackFirst {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = HandBackError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, HandBackError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), HandBackError>> {
        self.inner.poll_ready(cx).map_err(HandBackError::Send)
    }

    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        if self.handed_back.fetch_add(1, Ordering::SeqCst) == 0 {
            return Box::pin(async move { Err(HandBackError::Unsent(req)) });
        }
        let sent = self.inner.call(req);
        Box::pin(async move { sent.await.map_err(HandBackError::Send) })
    }
}

impl ConnectionService<Request<Full<Bytes>>> for HandsBackFirst {
    fn into_unsent(error: HandBackError) -> Result<Request<Full<Bytes>>, stanchion::BoxError> {
        match error {
            HandBackError::Unsent(req) => Ok(req),
            HandBackError::Send(e) => HttpConnection::<Full<Bytes>>::into_unsent(e),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_handed_back_unsent_is_resent_without_the_caller_seeing_it() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let handed_back = Arc::new(AtomicUsize::new(0));
    let counter = handed_back.clone();
    let connector = tower::service_fn(move |addr: SocketAddr| {
        let counter = counter.clone();
        let mut inner = HttpConnector::<Full<Bytes>>::http1();
        async move {
            let inner = inner.call(addr).await?;
            Ok::<_, stanchion::BoxError>(HandsBackFirst {
                inner,
                handed_back: counter,
            })
        }
    });
    let pool = PoolBuilder::new().build(connector, server.addr()).unwrap();
    let res = pool.clone().oneshot(get("/once")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(handed_back.load(Ordering::SeqCst), 2);
    assert_eq!(server.count(), 1, "the request went out once");
    let stats = pool.stats();
    assert_eq!(stats.resent, 1);
    // The connection that handed the request back was dropped and replaced.
    assert_eq!((stats.created, stats.open), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn http2_calls_share_a_connection_up_to_the_stream_limit() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(100 * MS))).await;
    let pool = http2(&server, PoolBuilder::new().max_size(4));
    let outcomes = concurrently(&pool, 50).await;
    assert!(outcomes.iter().all(|(o, _)| o.is_ok()));
    assert_eq!(server.accepted(), 1, "50 streams fit in one connection");

    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(100 * MS))).await;
    let pool = http2(
        &server,
        PoolBuilder::new()
            .max_size(4)
            .max_streams_per_connection(10),
    );
    let outcomes = concurrently(&pool, 25).await;
    assert!(outcomes.iter().all(|(o, _)| o.is_ok()));
    assert_eq!(server.accepted(), 3, "25 streams at 10 per connection");
    assert_eq!(server.count(), 25);
}

#[tokio::test(start_paused = true)]
async fn a_failed_connect_is_a_never_sent_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let pool: HttpPool = PoolBuilder::new()
        .build(HttpConnector::http1(), addr)
        .unwrap();
    let err = fetch(&pool, get("/")).await.unwrap_err();
    assert!(classify_error(&err).is_never_sent(), "{err}");
    // The address is in the chain (the connect error), once.
    let report = err.report().to_string();
    assert_eq!(report.matches(&addr.to_string()).count(), 1, "{report}");
    let stats = pool.stats();
    assert_eq!(
        (stats.connect_failures, stats.open, stats.connecting),
        (1, 0, 0)
    );
}

/// A slow network: each connect takes 100 ms; counts the most connects in flight at once.
#[derive(Clone, Default)]
struct SlowConnector {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Service<SocketAddr> for SlowConnector {
    type Response = HttpConnection<Full<Bytes>>;
    type Error = stanchion::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let (now, most) = (self.now.clone(), self.most.clone());
        let mut inner = HttpConnector::<Full<Bytes>>::http1();
        Box::pin(async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            sleep(100 * MS).await;
            let conn = inner.call(addr).await;
            now.fetch_sub(1, Ordering::SeqCst);
            conn
        })
    }
}

#[tokio::test(start_paused = true)]
async fn connection_attempts_in_flight_are_capped() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(10 * MS))).await;
    let connector = SlowConnector::default();
    let most = connector.most.clone();
    let pool = PoolBuilder::new()
        .max_size(10)
        .max_connecting(2)
        .build(connector, server.addr())
        .unwrap();
    let mut set = JoinSet::new();
    for _ in 0..20 {
        let pool = pool.clone();
        // Read to the end: a connection given back mid-response would be closed.
        set.spawn(async move {
            let res = pool.oneshot(get("/")).await?;
            res.into_body().collect().await?;
            Ok::<_, stanchion::BoxError>(())
        });
    }
    let outcomes = set.join_all().await;
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(most.load(Ordering::SeqCst), 2);
    assert!(server.accepted() <= 10);
}

#[tokio::test(start_paused = true)]
async fn the_response_body_holds_the_connection_until_read() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let pool = http1(
        &server,
        PoolBuilder::new().max_size(1).checkout_timeout(100 * MS),
    );
    let first = pool.clone().oneshot(get("/first")).await.unwrap();
    assert_eq!(pool.stats().in_use, 1);
    assert!(matches!(
        fetch(&pool, get("/second")).await,
        Err(Error::PoolTimeout { .. })
    ));
    assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(pool.stats().in_use, 0);
    fetch(&pool, get("/third")).await.unwrap();
    assert_eq!(server.accepted(), 1, "the connection was reused");
}

#[tokio::test(start_paused = true)]
async fn cancelled_calls_return_their_connections_and_waits() {
    let server = HttpServer::start(FaultPlan::scripted([Fault::hang()])).await;
    let pool = http1(
        &server,
        PoolBuilder::new().max_size(1).checkout_timeout(SEC),
    );
    // A call in flight on the only connection, and one waiting for it; both dropped.
    let in_flight = tokio::time::timeout(50 * MS, fetch(&pool, get("/hang")));
    let waiting = async {
        sleep(10 * MS).await;
        tokio::time::timeout(20 * MS, fetch(&pool, get("/wait"))).await
    };
    let (a, b) = tokio::join!(in_flight, waiting);
    assert!(a.is_err() && b.is_err());
    let stats = pool.stats();
    assert_eq!((stats.in_use, stats.in_flight, stats.waiters), (0, 0, 0));
    // The connection dropped mid-exchange is not reused; the next call gets a fresh one.
    fetch(&pool, get("/after")).await.unwrap();
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(start_paused = true)]
async fn min_idle_connections_are_opened_ahead_of_demand() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let pool = http1(&server, PoolBuilder::new().min_idle(2));
    // The reaper's first pass, one tick (1 s) after the pool is built.
    sleep(SEC + 10 * MS).await;
    assert_eq!(server.accepted(), 2);
    assert_eq!(pool.stats().idle, 2);
    fetch(&pool, get("/")).await.unwrap();
    assert_eq!(server.accepted(), 2, "a warm connection was used");
}

#[tokio::test(start_paused = true)]
async fn min_idle_refills_back_off_while_the_endpoint_refuses_connects() {
    // A port nothing listens on: every connect is refused at once.
    let addr = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let dials = Arc::new(AtomicUsize::new(0));
    let counted = dials.clone();
    let connector = tower::service_fn(move |addr: SocketAddr| {
        counted.fetch_add(1, Ordering::SeqCst);
        HttpConnector::<Full<Bytes>>::http1().oneshot(addr)
    });
    let pool = PoolBuilder::new()
        .min_idle(1)
        .build(connector, addr)
        .unwrap();
    // Two minutes of one-second reaper ticks. Without the back-off every tick dials (~120);
    // with it the refills come at 1, 2, 4, 8, 16, 32, 62, 92 s (doubling, capped at 30 s).
    for _ in 0..120 {
        sleep(SEC).await;
        settle().await;
    }
    let dialled = dials.load(Ordering::SeqCst);
    assert!((6..=10).contains(&dialled), "{dialled} connects in 120 s");
    assert_eq!(pool.stats().connect_failures, dialled as u64);
}

#[tokio::test(start_paused = true)]
async fn background_work_ends_when_the_pool_is_dropped() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let pool = http1(&server, PoolBuilder::new().min_idle(1));
    sleep(SEC + 10 * MS).await;
    // The reaper, the warm connection's task, and the server's task for that connection.
    assert_eq!(metrics.num_alive_tasks(), before + 3);
    drop(pool);
    sleep(2 * SEC).await;
    settle().await;
    assert_eq!(metrics.num_alive_tasks(), before);
    assert_eq!(server.open(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_pool_of_tonic_channels_carries_grpc_calls() {
    let server = GrpcServer::start(FaultPlan::healthy()).await;
    let pool = PoolBuilder::new()
        .max_size(2)
        .max_streams_per_connection(1)
        .build(TonicConnector::new(), server.addr())
        .unwrap();
    let mut set = JoinSet::new();
    for i in 0..6 {
        let pool = pool.clone();
        set.spawn(async move { echo(pool, &format!("m{i}")).await });
    }
    for reply in set.join_all().await {
        assert!(reply.unwrap().into_inner().message.starts_with('m'));
    }
    assert_eq!(server.count(), 6);
    assert_eq!(pool.stats().created, 2);
}

#[tokio::test]
async fn a_pool_of_reqwest_clients_keeps_the_logical_host_name() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let connector = ReqwestConnector::new("api.example.test").configure(support::reqwest_builder);
    let pool = PoolBuilder::new()
        .max_size(1)
        .build(connector, server.addr())
        .unwrap();
    let uri = format!("http://api.example.test:{}/r", server.addr().port());
    let req = Request::post(uri)
        .body(Bytes::from_static(b"payload"))
        .unwrap();
    let res = pool.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ok");
    let seen = &server.recorder().requests()[0];
    let expected_host = format!("api.example.test:{}", server.addr().port());
    assert_eq!(seen.header("host"), Some(expected_host.as_str()));
    assert_eq!(seen.body, "payload");

    // A connect failure is never sent.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let pool = PoolBuilder::new()
        .build(
            ReqwestConnector::new("api.example.test").configure(support::reqwest_builder),
            dead,
        )
        .unwrap();
    let uri = format!("http://api.example.test:{}/r", dead.port());
    let err = pool
        .oneshot(Request::get(uri).body(Bytes::new()).unwrap())
        .await
        .unwrap_err();
    assert!(classify_error(&err).is_never_sent(), "{err}");
}

/// A raw HTTP/2 server (the h2 crate) that refuses the first stream it gets with
/// `REFUSED_STREAM` and answers every other with 200; counts accepted connections.
async fn refusing_h2_server() -> (SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    let task = tokio::spawn(async move {
        let refused = Arc::new(AtomicUsize::new(0));
        let mut conns = JoinSet::new();
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let refused = refused.clone();
            conns.spawn(async move {
                let Ok(mut conn) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    if refused.fetch_add(1, Ordering::SeqCst) == 0 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    } else {
                        let res = http::Response::new(());
                        let _ = respond.send_response(res, true);
                    }
                }
            });
        }
    });
    (addr, accepted, task)
}

/// A refused stream is about that stream: it is never sent, and the connection — a server at
/// its stream limit, not a broken one — keeps carrying calls (no churn of connections).
#[tokio::test(start_paused = true)]
async fn a_refused_http2_stream_is_never_sent_and_its_connection_kept() {
    let (addr, accepted, _server) = refusing_h2_server().await;
    let pool: HttpPool = PoolBuilder::new()
        .build(HttpConnector::http2(), addr)
        .unwrap();
    let err = fetch(&pool, get("/")).await.unwrap_err();
    assert!(classify_error(&err).is_never_sent(), "{err:?}");
    assert_eq!(pool.stats().open, 1, "the connection stays");
    for _ in 0..3 {
        fetch(&pool, get("/")).await.unwrap();
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "no new connection");
    assert_eq!(pool.stats().created, 1);
}

#[tokio::test]
async fn only_checkouts_that_waited_count_as_waits_in_real_time() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let pool = http1(&server, PoolBuilder::new());
    for _ in 0..5 {
        fetch(&pool, get("/")).await.unwrap();
    }
    let stats = pool.stats();
    // The first waited for its connection; the other four found it free.
    assert_eq!((stats.checkouts, stats.waited_checkouts), (5, 1));
}

/// A loopback listener that never completes a handshake: its accept backlog is full and nobody
/// accepts, so new connects hang (their SYNs are dropped). The filling sockets are kept open.
fn black_hole() -> (
    SocketAddr,
    tokio::net::TcpListener,
    Vec<std::net::TcpStream>,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut filling = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            Ok(stream) => filling.push(stream),
            Err(_) => break,
        }
    }
    (addr, listener, filling)
}

/// Fault 2 of the I/O-paths issue: connects that hang (a full accept backlog), a 300 ms connect
/// timeout, the pool's defaults, 20 callers at once. A failed connect reaches every caller
/// waiting for it: all 20 get the connect error — never sent — within 300 ms × ⌈20 / 4⌉ (in
/// fact at the first failure), and none waits for the 2 s checkout timeout (before, 14 did,
/// and the rest failed one connect timeout apart).
#[tokio::test(start_paused = true)]
async fn hanging_connects_fail_every_waiter_with_the_connect_error() {
    let (addr, _listener, _filling) = black_hole();
    let pool: HttpPool = PoolBuilder::new()
        .build(HttpConnector::http1().connect_timeout(300 * MS), addr)
        .unwrap();
    let start = tokio::time::Instant::now();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let err = fetch(&pool, get("/")).await.unwrap_err();
                (err, tokio::time::Instant::now())
            })
        })
        .collect();
    for call in calls {
        let (err, at) = call.await.unwrap();
        let waited = at - start;
        assert!(
            !matches!(err, Error::PoolTimeout { .. }),
            "waited {waited:?} for the checkout timeout: {err:?}"
        );
        assert!(classify_error(&err).is_never_sent(), "{err:?}");
        assert!(waited <= 1500 * MS, "{waited:?}: {err:?}");
    }
    assert!(pool.stats().connect_failures >= 1);
}

/// A connector whose connects take 50 ms, and whose `fail_at`-th connect (counting from 1)
/// is refused after 10 ms.
#[derive(Clone)]
struct OneRefusal {
    made: Arc<AtomicUsize>,
    fail_at: usize,
}

impl Service<SocketAddr> for OneRefusal {
    type Response = HttpConnection<Full<Bytes>>;
    type Error = stanchion::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, addr: SocketAddr) -> Self::Future {
        let n = self.made.fetch_add(1, Ordering::SeqCst) + 1;
        let fail = n == self.fail_at;
        let mut inner = HttpConnector::<Full<Bytes>>::http1();
        Box::pin(async move {
            if fail {
                sleep(10 * MS).await;
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into());
            }
            sleep(50 * MS).await;
            inner.call(addr).await
        })
    }
}

/// One connect refused while others are in flight (HTTP/1, the pool emptied by its idle
/// timeout): only its own caller fails — the waiters are not told a connect that cannot come,
/// since others are still on their way.
#[tokio::test(start_paused = true)]
async fn one_refused_connect_fails_only_its_caller_while_others_are_in_flight() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(100 * MS))).await;
    let pool = PoolBuilder::new()
        .idle_timeout(SEC)
        .build(
            OneRefusal {
                made: Arc::default(),
                fail_at: 2,
            },
            server.addr(),
        )
        .unwrap();
    let fetch = |pool: &Pool<OneRefusal, SocketAddr>| {
        let pool = pool.clone();
        async move {
            let res = pool.oneshot(get("/")).await?;
            res.into_body().collect().await.map_err(Error::from_inner)?;
            Ok::<_, Error>(())
        }
    };
    // Learn that the endpoint speaks HTTP/1, then let the connection idle out.
    fetch(&pool).await.unwrap();
    sleep(3 * SEC).await;
    assert_eq!(pool.stats().open, 0);
    let calls: Vec<_> = (0..8).map(|_| tokio::spawn(fetch(&pool))).collect();
    let mut failed = 0;
    for call in calls {
        if call.await.unwrap().is_err() {
            failed += 1;
        }
    }
    assert_eq!(
        failed, 1,
        "one refused connect failed more than its own caller"
    );
}

/// Paused time runs on one thread; this runs the pool's bookkeeping on two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_threads_never_push_the_pool_past_its_size() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(MS))).await;
    let pool = http1(
        &server,
        PoolBuilder::new().max_size(4).checkout_timeout(10 * SEC),
    );
    let run = |cancel_some: bool| {
        let mut set = JoinSet::new();
        for worker in 0..32 {
            let pool = pool.clone();
            set.spawn(async move {
                for i in 0..10 {
                    let call = fetch(&pool, get("/"));
                    if cancel_some && (worker + i) % 7 == 0 {
                        // Gives up mid-call: the connection is closed and must be accounted for.
                        let _ = tokio::time::timeout(Duration::from_micros(500), call).await;
                    } else {
                        call.await.unwrap();
                    }
                }
            });
        }
        set.join_all()
    };
    run(false).await;
    assert!(
        server.max_open() <= 4,
        "{} connections at once",
        server.max_open()
    );
    assert!(server.accepted() <= 4);
    // With cancellations the server may briefly still hold a socket the pool has closed, so
    // the pool's own books are what must hold.
    run(true).await;
    let stats = pool.stats();
    assert_eq!(
        (stats.in_use, stats.in_flight, stats.waiters),
        (0, 0, 0),
        "{stats:?}"
    );
    assert!(stats.open <= 4, "{stats:?}");
    assert_eq!(stats.created - stats.closed, stats.open as u64, "{stats:?}");
}

/// An `https` request through a pool of plaintext hyper connections is refused before anything
/// is connected: the listener accepts no connection and receives no byte — on HTTP/1 and on
/// HTTP/2 (whose preface would be written at the handshake) — and the full client does not
/// retry it.
#[tokio::test]
async fn an_https_request_is_never_written_in_plaintext() {
    use stanchion::client::{Client, Target};
    use stanchion::pool::PlaintextRefused;
    use stanchion::retry::ReplayBody;
    use tokio::io::AsyncReadExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = {
        let (received, accepted) = (received.clone(), accepted.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let received = received.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = socket.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        received.fetch_add(n, Ordering::SeqCst);
                    }
                });
            }
        })
    };
    let secret = || {
        Request::post("https://payments.example/v1/charges")
            .header("authorization", "Bearer sk_live_secret")
            .body(Full::new(Bytes::from_static(b"amount=100")))
            .unwrap()
    };
    for connector in [
        HttpConnector::<Full<Bytes>>::http1(),
        HttpConnector::<Full<Bytes>>::http2(),
    ] {
        let pool = PoolBuilder::new().build(connector, addr).unwrap();
        let err = pool.oneshot(secret()).await.unwrap_err();
        let refused = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .any(|e| e.is::<PlaintextRefused>());
        assert!(refused, "{err:?}");
        // The client's own refusal: it says nothing about the endpoint (a breaker neither counts
        // it as a failure nor as a success that closes a half-open circuit).
        let class = classify_error(&err);
        assert_eq!(class.kind(), stanchion::classify::Kind::Refused);
        assert_eq!(
            class.endpoint_verdict(None, Duration::ZERO),
            stanchion::classify::EndpointVerdict::Neutral
        );
    }
    // A scheme spelt otherwise (`HTTPS`, or one the pool does not know) fails closed too.
    let pool: HttpPool = PoolBuilder::new()
        .build(HttpConnector::http1(), addr)
        .unwrap();
    for scheme in ["HTTPS", "wss"] {
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority("payments.example")
            .path_and_query("/v1/charges")
            .build()
            .unwrap();
        let req = Request::post(uri).body(Full::new(Bytes::new())).unwrap();
        let err = pool.clone().oneshot(req).await.unwrap_err();
        assert!(
            err.report().to_string().contains("plaintext"),
            "{scheme}: {}",
            err.report()
        );
    }
    // A tonic channel from `TonicConnector` is dialled `http://`: an https call is refused too.
    let tonic_pool = PoolBuilder::new()
        .build(stanchion::pool::TonicConnector::new(), addr)
        .unwrap();
    let mut req = support::grpc_server::raw_request("hi");
    *req.uri_mut() = "https://payments.example/stanchion.test.Echo/Echo"
        .parse()
        .unwrap();
    let err = tonic_pool.oneshot(req).await.unwrap_err();
    assert!(
        err.report().to_string().contains("plaintext"),
        "{}",
        err.report()
    );
    // Through the whole client: refused once, not retried (the endpoint stack is called once).
    let calls = Arc::new(AtomicUsize::new(0));
    let settings = PoolBuilder::new().settings().unwrap();
    let counted = calls.clone();
    let client = Client::http(Target::addrs([addr]))
        .build_with(move |addr| {
            let pool = settings.build(HttpConnector::<ReplayBody<Full<Bytes>>>::http1(), addr);
            let counted = counted.clone();
            tower::util::MapRequest::new(pool, move |req| {
                counted.fetch_add(1, Ordering::SeqCst);
                req
            })
        })
        .unwrap();
    let err = client.oneshot(secret()).await.unwrap_err();
    assert!(
        err.report().to_string().contains("plaintext"),
        "{}",
        err.report()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the refused request was retried"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "a connection was made");
    assert_eq!(
        received.load(Ordering::SeqCst),
        0,
        "bytes reached the socket"
    );
    server.abort();
}
