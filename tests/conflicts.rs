//! Keyed duplicates wait for the first answer, and a connection the server just closed costs no
//! error — over real servers under paused time.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use stanchion::client::{Client, Route, RoutePolicy, Target};
use stanchion::idempotency::{IdempotencyLayer, MemoryStore};
use stanchion::pool::{ClosedBeforeResponse, HttpConnector, Pool, PoolBuilder};
use stanchion::retry::{RetryStop, RetryStopped};
use stanchion_echo_proto::EchoRequest;
use stanchion_echo_proto::echo_client::EchoClient;
use tokio::task::JoinSet;
use tokio::time::sleep;
use tower::ServiceExt;

use support::faults::FaultPlan;
use support::http_server::HttpServer;
use support::ledger_server::{Ledger, LedgerServer, grpc_ledger};

const MS: Duration = Duration::from_millis(1);

fn keyed_post(key: &str) -> Request<Full<Bytes>> {
    Request::post("/payments")
        .header("idempotency-key", key)
        .header("x-work-ms", "180")
        .body(Full::new(Bytes::from_static(b"amount=10")))
        .unwrap()
}

async fn ledger_server(ledger: &Arc<Ledger>) -> LedgerServer {
    let layer = IdempotencyLayer::builder(MemoryStore::new())
        .build()
        .unwrap();
    LedgerServer::start(layer, ledger.clone()).await
}

/// Fault 1: 50 concurrent POSTs with one key, a handler taking 180 ms, the client's defaults
/// (keys on the route): every caller ends with the stored 201, and the handler runs once.
///
/// Real time: these three tests keep many sockets busy while timers are pending, and paused
/// time would jump to the next timer while their bytes are still in flight.
#[tokio::test]
async fn keyed_duplicates_wait_for_the_first_answer() {
    let ledger = Arc::new(Ledger::default());
    let server = ledger_server(&ledger).await;
    let client = Client::http(Target::addrs([server.addr()]))
        .route(
            Route::path_prefix("/payments"),
            RoutePolicy::new().idempotency_keys(true),
        )
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let client = client.clone();
        calls.spawn(async move {
            let res = client.oneshot(keyed_post("order-42")).await.unwrap();
            let status = res.status();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        });
    }
    for (status, body) in calls.join_all().await {
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body, "payment #1: amount=10");
    }
    assert_eq!(ledger.paid(), 1);
    assert_eq!(ledger.started(), 1);
}

/// A handler's own 409 ("already exists") is stored for the key: the client's retry of the
/// hintless 409 (an ordinary attempt: to the Idempotency-Key draft a keyed 409 means "in
/// progress") meets it replayed, and a replayed answer is the request's outcome — never polled
/// as if the first were still running. The handler runs once.
#[tokio::test]
async fn a_stored_conflict_is_the_answer_not_a_reason_to_poll() {
    let ledger = Arc::new(Ledger::default());
    let server = ledger_server(&ledger).await;
    let client = Client::http(Target::addrs([server.addr()]))
        .route(
            Route::path_prefix("/payments"),
            RoutePolicy::new().idempotency_keys(true),
        )
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let mut req = keyed_post("taken-1");
    req.headers_mut()
        .insert("x-answer-status", "409".parse().unwrap());
    req.headers_mut().insert("x-work-ms", "0".parse().unwrap());
    let start = std::time::Instant::now();
    let res = client.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let stopped = res.extensions().get::<RetryStopped>().copied().unwrap();
    assert_eq!(stopped.reason, RetryStop::NotRetryable, "{stopped:?}");
    assert_eq!(stopped.attempts, 2, "{stopped:?}");
    assert!(res.headers().contains_key("idempotency-replayed"));
    // Sent again by the caller: the stored 409, replayed — and not polled.
    let mut again = keyed_post("taken-1");
    again
        .headers_mut()
        .insert("x-answer-status", "409".parse().unwrap());
    again
        .headers_mut()
        .insert("x-work-ms", "0".parse().unwrap());
    let res = client.oneshot(again).await.unwrap();
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.headers().contains_key("idempotency-replayed"));
    assert_eq!(ledger.started(), 1, "the handler ran once");
    // Not polled until the deadline (30 s): one backoff (at most 500 ms) and two round trips.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// With a deadline shorter than the handler, the duplicates stop polling when the next wait no
/// longer fits, with the 409 and `RetryStopped` saying why.
#[tokio::test]
async fn a_duplicate_past_its_deadline_ends_with_the_conflict_and_why() {
    let ledger = Arc::new(Ledger::default());
    let server = ledger_server(&ledger).await;
    let client = Client::http(Target::addrs([server.addr()]))
        .deadline(100 * MS)
        .route(
            Route::path_prefix("/payments"),
            RoutePolicy::new().idempotency_keys(true),
        )
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let first = tokio::spawn(client.clone().oneshot(keyed_post("order-7")));
    sleep(40 * MS).await;
    let mut duplicates = JoinSet::new();
    for _ in 0..5 {
        duplicates.spawn(client.clone().oneshot(keyed_post("order-7")));
    }
    let mut results = duplicates.join_all().await;
    results.push(first.await.unwrap());
    // One call ran the handler and ran out of its deadline; the others met it running.
    let mut ran_out = 0;
    for result in results {
        let res = match result {
            Err(err) => {
                assert!(err.is_deadline_exceeded(), "{err:?}");
                ran_out += 1;
                continue;
            }
            Ok(res) => res,
        };
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let stopped = res.extensions().get::<RetryStopped>().copied().unwrap();
        assert!(
            matches!(stopped.reason, RetryStop::DeadlineTooShort { .. }),
            "{stopped:?}"
        );
        assert!(stopped.attempts > 1, "it polled: {stopped:?}");
    }
    assert_eq!(ran_out, 1);
    assert_eq!(ledger.started(), 1);
}

/// The same over gRPC: ABORTED with pushback, polled by a tonic client until the stored answer.
#[tokio::test]
async fn grpc_keyed_duplicates_wait_for_the_first_answer() {
    let paid = Arc::new(AtomicUsize::new(0));
    let layer = IdempotencyLayer::builder(MemoryStore::new())
        .build()
        .unwrap();
    let (addr, _server) = grpc_ledger(layer, paid.clone(), 180 * MS).await;
    let client = Client::grpc(Target::addrs([addr]))
        .route(
            Route::grpc_service("stanchion.test.Echo"),
            RoutePolicy::new().idempotency_keys(true),
        )
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let mut calls = JoinSet::new();
    for _ in 0..20 {
        let mut echo = EchoClient::new(client.clone().into_tonic());
        calls.spawn(async move {
            let mut req = tonic::Request::new(EchoRequest {
                message: "pay".into(),
            });
            req.metadata_mut()
                .insert("idempotency-key", "grpc-order".parse().unwrap());
            echo.call(req).await
        });
    }
    for reply in calls.join_all().await {
        assert_eq!(reply.unwrap().into_inner().message, "paid #1: pay");
    }
    assert_eq!(paid.load(Ordering::SeqCst), 1);
}

type RawPool = Pool<HttpConnector<Full<Bytes>>, SocketAddr>;

fn request(method: &str, key: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::builder().method(method).uri("/");
    if let Some(key) = key {
        req = req.header("idempotency-key", key);
    }
    req.body(Full::new(Bytes::from_static(b"x"))).unwrap()
}

/// 200 calls through a bare pool, each after a pause around the server's 120 ms keep-alive:
/// `(errors, requests the server saw, resends)`.
async fn around_the_keep_alive(method: &str, key: Option<&str>) -> (usize, usize, u64) {
    let server = HttpServer::start_with(FaultPlan::healthy(), Some(120 * MS)).await;
    let pool: RawPool = PoolBuilder::new()
        .build(HttpConnector::http1(), server.addr())
        .unwrap();
    let mut errors = 0;
    for i in 0..200u64 {
        // 119.0 … 121.0 ms, in 0.01 ms steps, spread over the run.
        sleep(Duration::from_micros(119_000 + (i * 37 % 200) * 10)).await;
        match pool.clone().oneshot(request(method, key)).await {
            Ok(res) => {
                res.into_body().collect().await.unwrap();
            }
            Err(err) => {
                let closed =
                    std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
                        e.source()
                    })
                    .any(|e| e.is::<ClosedBeforeResponse>());
                assert!(closed, "{}", err.report());
                errors += 1;
            }
        }
    }
    (errors, server.count(), pool.stats().resent_after_close)
}

/// Fault 2: a reused connection the server closed at its keep-alive boundary costs a GET or a
/// keyed POST no error: it is sent once more on a fresh connection. An unkeyed POST is never
/// sent twice: it fails when it meets the race.
#[tokio::test(start_paused = true)]
async fn a_connection_closed_at_the_keep_alive_boundary_costs_no_error() {
    let (errors, seen, resent) = around_the_keep_alive("GET", None).await;
    assert_eq!(errors, 0);
    assert!(
        resent > 0,
        "the race never happened: the test proves nothing"
    );
    assert_eq!(seen, 200);
    let (errors, _, resent) = around_the_keep_alive("POST", Some("k-1")).await;
    assert_eq!(errors, 0);
    assert!(resent > 0);
    let (errors, seen, resent) = around_the_keep_alive("POST", None).await;
    assert!(errors > 0, "the race never happened for the unkeyed POST");
    assert_eq!(resent, 0, "an unkeyed POST is never resent");
    assert!(seen <= 200, "{seen}");
}
