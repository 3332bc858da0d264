//! The idempotency server layer against real hyper servers on loopback: each key runs once —
//! with the in-memory store (paused time) and on a real `redis-server` (real time: leases and
//! TTLs are Redis's own clocks), across two server instances, through the client stack's
//! retries, when handlers are dropped and when an instance crashes.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use stanchion::classify::{GrpcClassifier, HttpClassifier};
use stanchion::deadline::AttemptLayer;
use stanchion::idempotency::{
    Claim, Fingerprint, IdempotencyBody, IdempotencyKeyLayer, IdempotencyLayer,
    IdempotencyLayerBuilder, IdempotencyStore, LeaseToken, MemoryStore, RedisStore, StoredResponse,
};
use stanchion::pool::{HttpConnector, Pool, PoolBuilder};
use stanchion::retry::{Backoff, ReplayBodyLayer, RetryBudget, RetryLayer, UnavailablePolicy};
use tokio::task::JoinSet;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

use support::grpc_server::{ECHO_PATH, Echo};
use support::ledger_server::{Ledger, LedgerServer, handler};
use support::redis_server::RedisServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Raw = Pool<HttpConnector<Full<Bytes>>, SocketAddr>;

/// A plain HTTP/2 client: every request goes out once, concurrently on one connection.
fn raw(server: &LedgerServer) -> Raw {
    PoolBuilder::new()
        .build(HttpConnector::http2(), server.addr())
        .unwrap()
}

fn pay(path: &str, key: Option<&str>, body: &str, work: Duration) -> Request<Full<Bytes>> {
    let mut req = Request::post(path)
        .header("x-work-ms", work.as_millis().to_string())
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    if let Some(key) = key {
        req.headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    req
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn replayed(&self) -> bool {
        self.headers.get("idempotency-replayed").is_some()
    }
}

async fn send<S, B>(client: &S, req: Request<Full<Bytes>>) -> Answer
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Error: std::fmt::Debug>,
{
    let res = client.clone().oneshot(req).await.expect("an answer");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("a body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn layer<St: IdempotencyStore>(store: St) -> IdempotencyLayerBuilder<St> {
    IdempotencyLayer::builder(store)
}

/// 50 concurrent POSTs with one key, spread over `servers`: the handler runs once; each answer
/// is the stored response or 409; afterwards a repeat is a replay.
async fn fifty_concurrent_run_once(servers: &[&LedgerServer], ledger: &Ledger) {
    let clients: Vec<Raw> = servers.iter().map(|s| raw(s)).collect();
    let mut calls = JoinSet::new();
    for i in 0..50 {
        let client = clients[i % clients.len()].clone();
        calls.spawn(async move {
            let req = pay("/payments", Some("\"k-50\""), "amount=5", 200 * MS);
            send(&client, req).await
        });
    }
    let answers = calls.join_all().await;
    assert_eq!(ledger.paid(), 1, "the handler ran once");
    assert_eq!(ledger.started(), 1);
    let created: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty(), "the first request got its response");
    assert!(created.iter().all(|a| a.body == "payment #1: amount=5"));
    assert!(
        answers
            .iter()
            .all(|a| a.status == StatusCode::CREATED || a.status == StatusCode::CONFLICT),
        "{answers:?}"
    );
    for client in &clients {
        let again = send(client, pay("/payments", Some("k-50"), "amount=5", MS)).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(
            again.body, "payment #1: amount=5",
            "replayed (bare key = quoted key)"
        );
        assert!(again.replayed());
        assert_eq!(again.headers["x-payment"], "1", "headers are replayed too");
    }
    assert_eq!(ledger.started(), 1);
}

/// Keys → replay → retry (409 and 503 retried after 50–200 ms backoff, up to 10 attempts, a budget
/// that does not run out here) → `client`.
fn retrying<S, B>(
    client: S,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = http::Response<B>,
    Error = stanchion::Error,
    Future: Send,
> + Clone
+ Send
+ 'static
where
    S: Service<Request<stanchion::retry::ReplayBody<Full<Bytes>>>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<stanchion::BoxError>,
    B: http_body::Body<Error: std::fmt::Debug>,
{
    ServiceBuilder::new()
        .layer(IdempotencyKeyLayer::new().route("/payments"))
        .layer(ReplayBodyLayer::default())
        .layer(
            RetryLayer::builder(HttpClassifier::new())
                .max_attempts(10)
                .backoff(Backoff::new(50 * MS, 200 * MS).unwrap().seed(3))
                // One endpoint per client here: a 503 may be retried on it.
                .unavailable(UnavailablePolicy::AnyEndpoint)
                .budget(RetryBudget::builder().min_per_second(1000).build().unwrap())
                .build()
                .unwrap(),
        )
        .service(client)
}

/// 50 concurrent calls with the caller's one key, through the client's retry layer: every one
/// ends with the stored response.
async fn fifty_retrying_clients_end_with_the_stored_response(
    servers: &[&LedgerServer],
    ledger: &Ledger,
) {
    let clients: Vec<_> = servers
        .iter()
        .map(|s| {
            let pool: Pool<HttpConnector<_>, SocketAddr> = PoolBuilder::new()
                .build(HttpConnector::http2(), s.addr())
                .unwrap();
            retrying(pool)
        })
        .collect();
    let mut calls = JoinSet::new();
    for i in 0..50 {
        let client = clients[i % clients.len()].clone();
        calls.spawn(async move {
            send(
                &client,
                pay("/payments", Some("order-r"), "amount=9", 300 * MS),
            )
            .await
        });
    }
    for answer in calls.join_all().await {
        assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
        assert_eq!(answer.body, "payment #1: amount=9");
    }
    assert_eq!(ledger.paid(), 1);
}

// ---- in memory -------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn memory_fifty_concurrent_requests_with_one_key_run_the_handler_once() {
    let ledger = Arc::new(Ledger::default());
    let server =
        LedgerServer::start(layer(MemoryStore::new()).build().unwrap(), ledger.clone()).await;
    fifty_concurrent_run_once(&[&server], &ledger).await;
}

#[tokio::test(start_paused = true)]
async fn memory_fifty_retrying_clients_all_get_the_stored_response() {
    let ledger = Arc::new(Ledger::default());
    let server =
        LedgerServer::start(layer(MemoryStore::new()).build().unwrap(), ledger.clone()).await;
    fifty_retrying_clients_end_with_the_stored_response(&[&server], &ledger).await;
}

#[tokio::test(start_paused = true)]
async fn replayed_within_the_ttl_and_run_again_after_it() {
    let ledger = Arc::new(Ledger::default());
    let layer = layer(MemoryStore::new()).ttl(3600 * SEC).build().unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);
    let first = send(&client, pay("/payments", Some("t"), "a", MS)).await;
    assert_eq!(
        (first.status, first.replayed()),
        (StatusCode::CREATED, false)
    );
    tokio::time::advance(59 * 60 * SEC).await;
    let again = send(&client, pay("/payments", Some("t"), "a", MS)).await;
    assert_eq!(again.body, "payment #1: a");
    assert!(again.replayed());
    tokio::time::advance(2 * 60 * SEC).await;
    let later = send(&client, pay("/payments", Some("t"), "a", MS)).await;
    assert_eq!(
        later.body, "payment #2: a",
        "after the TTL the key runs again"
    );
    assert!(!later.replayed());
    assert_eq!(ledger.paid(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_different_request_under_a_used_key_is_422() {
    let ledger = Arc::new(Ledger::default());
    let server =
        LedgerServer::start(layer(MemoryStore::new()).build().unwrap(), ledger.clone()).await;
    let client = raw(&server);
    // While the first is in flight, and after it finished.
    let running = {
        let client = client.clone();
        tokio::spawn(async move { send(&client, pay("/payments", Some("m"), "a", 100 * MS)).await })
    };
    tokio::time::sleep(10 * MS).await;
    let during = send(&client, pay("/payments", Some("m"), "b", MS)).await;
    assert_eq!(during.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(running.await.unwrap().status, StatusCode::CREATED);
    for changed in [
        pay("/payments", Some("m"), "a-changed", MS), // body
        pay("/payments?x=1", Some("m"), "a", MS),     // path and query
        Request::patch("/payments") // method
            .header("idempotency-key", "m")
            .body(Full::new(Bytes::from_static(b"a")))
            .unwrap(),
    ] {
        let answer = send(&client, changed).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{answer:?}"
        );
        assert!(answer.body.contains("different request"));
    }
    assert_eq!(ledger.paid(), 1);
}

#[tokio::test(start_paused = true)]
async fn tenants_never_see_each_others_responses() {
    let ledger = Arc::new(Ledger::default());
    let layer = layer(MemoryStore::new())
        .scope(|req| {
            req.headers
                .get("x-tenant")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .build()
        .unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);
    let as_tenant = |tenant: &str| {
        let mut req = pay("/payments", Some("shared-key"), "x", MS);
        req.headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        req
    };
    let a = send(&client, as_tenant("acme")).await;
    let b = send(&client, as_tenant("globex")).await;
    assert_eq!(a.body, "payment #1: x");
    assert_eq!(
        b.body, "payment #2: x",
        "one tenant's key does not replay another's"
    );
    assert!(!b.replayed());
    let a_again = send(&client, as_tenant("acme")).await;
    let b_again = send(&client, as_tenant("globex")).await;
    assert_eq!(
        (a_again.body.as_str(), a_again.replayed()),
        ("payment #1: x", true)
    );
    assert_eq!(
        (b_again.body.as_str(), b_again.replayed()),
        ("payment #2: x", true)
    );
    let nobody = send(&client, pay("/payments", Some("shared-key"), "x", MS)).await;
    assert_eq!(
        nobody.status,
        StatusCode::UNAUTHORIZED,
        "a keyed request needs a tenant"
    );
    assert_eq!(ledger.paid(), 2);
}

#[tokio::test(start_paused = true)]
async fn keys_required_validated_and_limited_to_routes() {
    let ledger = Arc::new(Ledger::default());
    let layer = layer(MemoryStore::new())
        .route("/payments")
        .require_key(true)
        .build()
        .unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);
    let missing = send(&client, pay("/payments", None, "x", MS)).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body.contains("required"));
    for bad in ["\"unterminated", "\"a\"tail", &"k".repeat(256)] {
        let answer = send(&client, pay("/payments", Some(bad), "x", MS)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(ledger.started(), 0, "nothing ran");
    // Idempotent methods need no key; other routes are not deduplicated.
    let get = Request::get("/payments/1").body(Full::default()).unwrap();
    assert_eq!(send(&client, get).await.status, StatusCode::CREATED);
    for _ in 0..2 {
        let other = send(&client, pay("/orders", Some("o"), "x", MS)).await;
        assert!(!other.replayed());
    }
    assert_eq!(ledger.paid(), 3);
}

/// A route covers whole path segments: `/pay` is not a prefix of `/payments` (it was, with a
/// plain `starts_with`), while `/pay/42` is under it.
#[tokio::test(start_paused = true)]
async fn routes_cover_whole_segments() {
    let ledger = Arc::new(Ledger::default());
    let layer = layer(MemoryStore::new()).route("/pay").build().unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);
    for _ in 0..2 {
        let neighbour = send(&client, pay("/payments", Some("k1"), "x", MS)).await;
        assert!(!neighbour.replayed(), "/payments is not under /pay");
    }
    assert_eq!(ledger.paid(), 2, "not deduplicated: both ran");
    let first = send(&client, pay("/pay/42", Some("k2"), "x", MS)).await;
    let again = send(&client, pay("/pay/42", Some("k2"), "x", MS)).await;
    assert!(
        !first.replayed() && again.replayed(),
        "/pay/42 is under /pay"
    );
    assert_eq!(ledger.paid(), 3);
}

#[tokio::test(start_paused = true)]
async fn server_failures_are_not_stored_unless_asked() {
    let ledger = Arc::new(Ledger::default());
    let server =
        LedgerServer::start(layer(MemoryStore::new()).build().unwrap(), ledger.clone()).await;
    let client = raw(&server);
    ledger.fail_next.store(1, Ordering::SeqCst);
    let failed = send(&client, pay("/payments", Some("f"), "x", MS)).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    let retried = send(&client, pay("/payments", Some("f"), "x", MS)).await;
    assert_eq!(
        retried.status,
        StatusCode::CREATED,
        "the 503 was not stored: it ran again"
    );
    assert!(!retried.replayed());

    let ledger = Arc::new(Ledger::default());
    let layer = layer(MemoryStore::new())
        .store_failures(true)
        .build()
        .unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);
    ledger.fail_next.store(1, Ordering::SeqCst);
    send(&client, pay("/payments", Some("f"), "x", MS)).await;
    let again = send(&client, pay("/payments", Some("f"), "x", MS)).await;
    assert_eq!(again.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(again.replayed());
    assert_eq!(ledger.started(), 1);
}

#[tokio::test(start_paused = true)]
async fn bodies_over_the_limits() {
    let ledger = Arc::new(Ledger::default());
    let layer = layer(MemoryStore::new())
        .max_request_body(16)
        .max_response_body(20)
        .build()
        .unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);
    let big = send(&client, pay("/payments", Some("b"), &"x".repeat(17), MS)).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ledger.started(), 0);
    // "payment #1: " + 16 bytes = 28 > 20: the first client gets it all, a replay says the body
    // was not kept.
    let body = "y".repeat(16);
    let first = send(&client, pay("/payments", Some("b"), &body, MS)).await;
    assert_eq!(first.body, format!("payment #1: {body}"));
    let replay = send(&client, pay("/payments", Some("b"), &body, MS)).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert!(replay.replayed());
    assert_eq!(replay.headers["idempotency-body-omitted"], "true");
    assert_eq!(replay.body, "");
    assert_eq!(ledger.paid(), 1);
}

// ---- leases: dropped handlers ---------------------------------------------------------------

type Direct = stanchion::idempotency::IdempotencyService<
    tower::util::BoxCloneSyncService<
        Request<IdempotencyBody<Full<Bytes>>>,
        http::Response<Full<Bytes>>,
        std::convert::Infallible,
    >,
    MemoryStore,
>;

/// The layer around the handler, called directly so a test can drop a call mid-flight exactly
/// as a server does when its client goes away.
fn direct(layer: IdempotencyLayer<MemoryStore>, ledger: &Arc<Ledger>) -> Direct {
    let handler = tower::util::BoxCloneSyncService::new(handler(ledger.clone()));
    layer.layer(handler)
}

async fn call_direct(svc: &Direct, req: Request<Full<Bytes>>) -> Answer {
    send(svc, req).await
}

/// Starts a call and drops it once the handler has started.
async fn start_and_drop(svc: &Direct, req: Request<Full<Bytes>>, ledger: &Ledger) {
    let started = ledger.started();
    let mut call = Box::pin(svc.clone().oneshot(req));
    let _ = tokio::time::timeout(50 * MS, &mut call).await;
    assert_eq!(ledger.started(), started + 1, "the handler was running");
    drop(call);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_handler_keeps_its_record_until_the_lease_ends() {
    let ledger = Arc::new(Ledger::default());
    let layer = layer(MemoryStore::new())
        .lease(3 * SEC)
        .detach(false)
        .build()
        .unwrap();
    let svc = direct(layer, &ledger);
    start_and_drop(&svc, pay("/payments", Some("d"), "x", 10 * SEC), &ledger).await;
    assert_eq!(
        ledger.paid(),
        0,
        "cancelled mid-way: its side effect may be half done"
    );
    let during = call_direct(&svc, pay("/payments", Some("d"), "x", MS)).await;
    assert_eq!(
        during.status,
        StatusCode::CONFLICT,
        "no duplicate while the lease lives"
    );
    tokio::time::advance(2 * SEC).await;
    let still = call_direct(&svc, pay("/payments", Some("d"), "x", MS)).await;
    assert_eq!(still.status, StatusCode::CONFLICT);
    assert_eq!(ledger.started(), 1);
    tokio::time::advance(SEC).await;
    let after = call_direct(&svc, pay("/payments", Some("d"), "x", MS)).await;
    assert_eq!(
        after.status,
        StatusCode::CREATED,
        "the lease ended: the key runs again"
    );
    assert_eq!(ledger.started(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_detached_handler_finishes_after_its_client_left_and_is_replayed() {
    let ledger = Arc::new(Ledger::default());
    let layer = layer(MemoryStore::new()).lease(3 * SEC).build().unwrap();
    let svc = direct(layer, &ledger);
    start_and_drop(&svc, pay("/payments", Some("d"), "x", 10 * SEC), &ledger).await;
    // Well past the lease: it is renewed while the detached handler runs.
    tokio::time::sleep(5 * SEC).await;
    let during = call_direct(&svc, pay("/payments", Some("d"), "x", MS)).await;
    assert_eq!(during.status, StatusCode::CONFLICT, "the lease was renewed");
    tokio::time::sleep(6 * SEC).await;
    assert_eq!(ledger.paid(), 1, "the handler ran to the end");
    let after = call_direct(&svc, pay("/payments", Some("d"), "x", MS)).await;
    assert_eq!(after.body, "payment #1: x");
    assert!(after.replayed());
    assert_eq!(ledger.started(), 1);
}

// ---- client + retry + server -----------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn end_to_end_a_retried_post_pays_once_and_other_routes_are_not_retried() {
    let ledger = Arc::new(Ledger::default());
    let server =
        LedgerServer::start(layer(MemoryStore::new()).build().unwrap(), ledger.clone()).await;
    let pool: Pool<HttpConnector<_>, SocketAddr> = PoolBuilder::new()
        .build(HttpConnector::http1(), server.addr())
        .unwrap();
    // Per-try timeout 100 ms under the retry layer.
    let client = retrying(AttemptLayer::new(100 * MS).unwrap().layer(pool));

    // A 503 before paying: retried under the same key, paid once.
    ledger.fail_next.store(1, Ordering::SeqCst);
    let answer = send(&client, pay("/payments", None, "a", MS)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let keys = ledger.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].is_some() && keys[0] == keys[1], "{keys:?}");

    // The first attempt times out on the client while the handler keeps going (250 ms): the
    // retries get 409 until it finishes, then its stored response.
    let answer = send(&client, pay("/payments", None, "b", 250 * MS)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body, "payment #2: b");
    assert!(answer.replayed(), "the response came from the store");
    assert_eq!(ledger.paid(), 2, "one payment per logical request");
    assert_eq!(ledger.started(), 3);

    // Not opted in: no key, and the POST is not retried after a 503.
    ledger.fail_next.store(1, Ordering::SeqCst);
    let answer = send(&client, pay("/orders", None, "c", MS)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ledger.started(), 4, "sent once");
    assert_eq!(ledger.keys.lock().unwrap().last(), Some(&None));
}

// ---- on Redis (real time) --------------------------------------------------------------------

async fn redis_layer(redis: &RedisServer) -> IdempotencyLayerBuilder<RedisStore> {
    layer(
        RedisStore::connect(&redis.url())
            .await
            .expect("connect to redis"),
    )
}

#[tokio::test]
async fn redis_fifty_concurrent_requests_with_one_key_run_the_handler_once() {
    let Some(redis) = RedisServer::start("redis_fifty_concurrent").await else {
        return;
    };
    let ledger = Arc::new(Ledger::default());
    let server =
        LedgerServer::start(redis_layer(&redis).await.build().unwrap(), ledger.clone()).await;
    fifty_concurrent_run_once(&[&server], &ledger).await;
}

#[tokio::test]
async fn redis_two_instances_share_one_record() {
    let Some(redis) = RedisServer::start("redis_two_instances").await else {
        return;
    };
    let ledger = Arc::new(Ledger::default());
    let a = LedgerServer::start(redis_layer(&redis).await.build().unwrap(), ledger.clone()).await;
    let b = LedgerServer::start(redis_layer(&redis).await.build().unwrap(), ledger.clone()).await;
    fifty_concurrent_run_once(&[&a, &b], &ledger).await;

    let ledger = Arc::new(Ledger::default());
    let a = LedgerServer::start(redis_layer(&redis).await.build().unwrap(), ledger.clone()).await;
    let b = LedgerServer::start(redis_layer(&redis).await.build().unwrap(), ledger.clone()).await;
    fifty_retrying_clients_end_with_the_stored_response(&[&a, &b], &ledger).await;
}

#[tokio::test]
async fn redis_ttl_mismatch_tenants_and_lease_renewal() {
    let Some(redis) = RedisServer::start("redis_ttl").await else {
        return;
    };
    let ledger = Arc::new(Ledger::default());
    let layer = redis_layer(&redis)
        .await
        .ttl(1000 * MS)
        .lease(300 * MS)
        .scope(|req| {
            req.headers
                .get("x-tenant")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .build()
        .unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);
    let as_tenant = |tenant: &str, body: &str, work: Duration| {
        let mut req = pay("/payments", Some("r"), body, work);
        req.headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        req
    };
    // The handler runs for 4 leases: renewal keeps repeats out.
    let running = {
        let client = client.clone();
        let req = as_tenant("acme", "x", 1200 * MS);
        tokio::spawn(async move { send(&client, req).await })
    };
    tokio::time::sleep(600 * MS).await;
    let during = send(&client, as_tenant("acme", "x", MS)).await;
    assert_eq!(during.status, StatusCode::CONFLICT, "the lease was renewed");
    let mismatch = send(&client, as_tenant("acme", "other", MS)).await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    let first = running.await.unwrap();
    assert_eq!(first.body, "payment #1: x");
    let replay = send(&client, as_tenant("acme", "x", MS)).await;
    assert_eq!(
        (replay.body.as_str(), replay.replayed()),
        ("payment #1: x", true)
    );
    let other_tenant = send(&client, as_tenant("globex", "x", MS)).await;
    assert_eq!(other_tenant.body, "payment #2: x");
    // Past the TTL the key runs again.
    tokio::time::sleep(1100 * MS).await;
    let later = send(&client, as_tenant("acme", "x", MS)).await;
    assert_eq!(
        (later.body.as_str(), later.replayed()),
        ("payment #3: x", false)
    );
}

/// An instance dies mid-request (its runtime is shut down: handler, lease renewal and Redis
/// connection gone). Its record blocks duplicates until the lease ends; then the key runs on
/// another instance.
#[test]
fn redis_after_a_crash_the_key_runs_again_once_the_lease_ends() {
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let Some(redis) = main.block_on(RedisServer::start("redis_crash")) else {
        return;
    };
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ledger = Arc::new(Ledger::default());
    let lease = 1500 * MS;
    let crashing = doomed.block_on(async {
        let layer = redis_layer(&redis).await.lease(lease).build().unwrap();
        LedgerServer::start(layer, ledger.clone()).await
    });
    main.block_on(async {
        let layer = redis_layer(&redis).await.lease(lease).build().unwrap();
        let survivor = LedgerServer::start(layer, ledger.clone()).await;
        let to_crashing = raw(&crashing);
        let doomed_call = tokio::spawn(async move {
            to_crashing
                .oneshot(pay("/payments", Some("c"), "x", 10 * SEC))
                .await
                .map(|_| ())
        });
        let started = tokio::time::Instant::now();
        while ledger.started() == 0 {
            assert!(
                started.elapsed() < 5 * SEC,
                "the doomed request never started"
            );
            tokio::time::sleep(5 * MS).await;
        }
        doomed.shutdown_background();
        assert!(
            doomed_call.await.unwrap().is_err(),
            "the crashed instance never answered"
        );

        let client = raw(&survivor);
        let blocked = send(&client, pay("/payments", Some("c"), "x", MS)).await;
        assert_eq!(
            blocked.status,
            StatusCode::CONFLICT,
            "the dead instance's lease holds"
        );
        tokio::time::sleep(lease + 300 * MS).await;
        let ran = send(&client, pay("/payments", Some("c"), "x", MS)).await;
        assert_eq!(
            ran.status,
            StatusCode::CREATED,
            "the lease ended: the key ran again"
        );
        assert_eq!(ran.body, "payment #1: x");
        assert_eq!(ledger.started(), 2);
    });
    drop(crashing);
}

#[tokio::test]
async fn redis_unreachable_is_a_503_and_nothing_runs() {
    let Some(redis) = RedisServer::start("redis_unreachable").await else {
        return;
    };
    let ledger = Arc::new(Ledger::default());
    let layer = redis_layer(&redis).await.build().unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    drop(redis); // killed
    let client = raw(&server);
    let answer = send(&client, pay("/payments", Some("u"), "x", MS)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ledger.started(),
        0,
        "a key that cannot be claimed does not run"
    );
}

#[test]
fn invalid_settings_are_config_errors() {
    let err = layer(MemoryStore::new())
        .ttl(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "ttl");
    let err = layer(MemoryStore::new())
        .lease(10 * MS)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "lease");
    let err = layer(MemoryStore::new())
        .route("payments")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "route");
    let ok = layer(MemoryStore::new()).build().unwrap();
    assert_eq!(ok.ttl(), Duration::from_secs(86_400));
    assert_eq!(ok.lease(), 10 * SEC);
}

// ---- gRPC: keys in metadata, statuses in trailers ---------------------------------------------

/// A tonic server with the layer in front of a gRPC handler that counts its calls.
async fn grpc_server(
    paid: Arc<AtomicUsize>,
    work: Duration,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    support::ledger_server::grpc_ledger(layer(MemoryStore::new()).build().unwrap(), paid, work)
        .await
}

async fn call<S>(
    client: S,
    req: tonic::Request<Echo>,
) -> Result<tonic::Response<Echo>, tonic::Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<stanchion::BoxError>,
    S::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<stanchion::BoxError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(client);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::from_error(e.into()))?;
    grpc.unary(
        req,
        http::uri::PathAndQuery::from_static(ECHO_PATH),
        tonic_prost::ProstCodec::<Echo, Echo>::default(),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn grpc_calls_with_one_key_run_once_and_replays_carry_the_trailers() {
    let paid = Arc::new(AtomicUsize::new(0));
    let (addr, server) = grpc_server(paid.clone(), 200 * MS).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    // The client stack: keys (the caller's own, in metadata) → replay → retry (ABORTED, the
    // server's "still in flight", is retried after backoff for keyed calls) → channel.
    let client = ServiceBuilder::new()
        .map_err(tonic::Status::from)
        .layer(IdempotencyKeyLayer::new().route("/stanchion.test.Echo/"))
        .layer(ReplayBodyLayer::default())
        .layer(
            RetryLayer::builder(GrpcClassifier::new())
                .max_attempts(10)
                .backoff(Backoff::new(50 * MS, 200 * MS).unwrap().seed(5))
                .budget(RetryBudget::builder().min_per_second(1000).build().unwrap())
                .build()
                .unwrap(),
        )
        .map_request(
            |req: Request<stanchion::retry::ReplayBody<tonic::body::Body>>| {
                req.map(tonic::body::Body::new)
            },
        )
        .service(channel.clone());
    let keyed = |message: &str| {
        let mut req = tonic::Request::new(Echo {
            message: message.to_owned(),
        });
        req.metadata_mut()
            .insert("idempotency-key", "grpc-1".parse().unwrap());
        req
    };
    let mut calls = JoinSet::new();
    for _ in 0..5 {
        let client = client.clone();
        let req = keyed("pay 5");
        calls.spawn(call(client, req));
    }
    for reply in calls.join_all().await {
        assert_eq!(reply.unwrap().into_inner().message, "paid #1: pay 5");
    }
    assert_eq!(
        paid.load(Ordering::SeqCst),
        1,
        "five concurrent calls, one execution"
    );

    // Without the retry layer the conflict is visible: ABORTED while the first call runs.
    let first = tokio::spawn(call(channel.clone(), {
        let mut req = keyed("pay 6");
        req.metadata_mut()
            .insert("idempotency-key", "grpc-2".parse().unwrap());
        req
    }));
    tokio::time::sleep(50 * MS).await;
    let mut again = keyed("pay 6");
    again
        .metadata_mut()
        .insert("idempotency-key", "grpc-2".parse().unwrap());
    let status = call(channel.clone(), again).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(
        first.await.unwrap().unwrap().into_inner().message,
        "paid #2: pay 6"
    );
    // A replay carries its trailers: tonic reads the OK status from them.
    let mut replay = keyed("pay 6");
    replay
        .metadata_mut()
        .insert("idempotency-key", "grpc-2".parse().unwrap());
    let replayed = call(channel.clone(), replay).await.unwrap();
    assert_eq!(
        replayed.metadata().get("idempotency-replayed").unwrap(),
        "true"
    );
    assert_eq!(replayed.into_inner().message, "paid #2: pay 6");
    assert_eq!(paid.load(Ordering::SeqCst), 2);
    server.abort();
}

/// Fault 2 of the time-and-data issue: a value under the store's prefix that claims more headers
/// than a header map holds (with the bytes behind them), or lengths beyond its end, is a store
/// error — the documented `503`, nothing runs — never a panic of the server.
#[tokio::test]
async fn redis_a_crafted_stored_value_is_a_store_error_not_a_panic() {
    let Some(redis) = RedisServer::start("redis_crafted").await else {
        return;
    };
    let ledger = Arc::new(Ledger::default());
    let server =
        LedgerServer::start(redis_layer(&redis).await.build().unwrap(), ledger.clone()).await;
    let client = raw(&server);
    let answer = send(&client, pay("/payments", Some("k1"), "a", MS)).await;
    assert_eq!(answer.status, StatusCode::CREATED);

    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Tag, version, fingerprint, status, body-omitted flag: 37 bytes, then the header count.
    let head = &stored[..37];
    let crafted = |count: u32, headers: u32, tail: &[u8]| {
        let mut value = head.to_vec();
        value.extend_from_slice(&count.to_be_bytes());
        for i in 0..headers {
            let name = format!("h{i}");
            value.extend_from_slice(&(name.len() as u32).to_be_bytes());
            value.extend_from_slice(name.as_bytes());
            value.extend_from_slice(&1u32.to_be_bytes());
            value.push(b'v');
        }
        value.extend_from_slice(tail);
        value
    };
    let empty_tail = [0u8, 0, 0, 0, 0];
    let values = [
        // One more header than a header map holds, every one present.
        crafted(32_769, 32_769, &empty_tail),
        // The count says more than the bytes behind it.
        crafted(u32::MAX, 3, &empty_tail),
        // A body length far past the end.
        crafted(0, 0, &[0xff, 0xff, 0xff, 0xff, 0]),
    ];
    for (i, value) in values.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(&keys[0])
            .arg(value.as_slice())
            .query_async(&mut conn)
            .await
            .unwrap();
        let answer = send(&client, pay("/payments", Some("k1"), "a", MS)).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "value {i}");
    }
    assert_eq!(
        ledger.started(),
        1,
        "nothing ran on a value that does not decode"
    );
    // The server is still serving.
    let answer = send(&client, pay("/payments", Some("k2"), "b", MS)).await;
    assert_eq!(answer.status, StatusCode::CREATED);
}

/// Fault 3 of the time-and-data issue: with room for two records, tenant B's finished request
/// survives tenant A sending two more keys — A's own older record goes — so B's retry is a
/// replay, not a second run.
#[tokio::test(start_paused = true)]
async fn one_tenant_cannot_evict_another_tenants_records() {
    let ledger = Arc::new(Ledger::default());
    let store = MemoryStore::with_max_entries(2).unwrap();
    let layer = layer(store.clone())
        .scope(|req| {
            req.headers
                .get("x-tenant")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .build()
        .unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);
    let as_tenant = |tenant: &str, key: &str| {
        let mut req = pay("/payments", Some(key), key, MS);
        req.headers_mut()
            .insert("x-tenant", tenant.parse().unwrap());
        req
    };
    let first = send(&client, as_tenant("b", "b-1")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    for key in ["a-1", "a-2"] {
        assert_eq!(
            send(&client, as_tenant("a", key)).await.status,
            StatusCode::CREATED
        );
    }
    let retry = send(&client, as_tenant("b", "b-1")).await;
    assert!(retry.replayed(), "B's record was evicted: {retry:?}");
    assert_eq!(retry.body, first.body);
    assert_eq!(ledger.started(), 3, "B's handler ran once");
    assert_eq!(store.scope_stats("a").unwrap().evicted_early, 1);
    assert_eq!(store.scope_stats("b").unwrap().evicted_early, 0);
}

/// A store whose renewals take `renew_takes` (a store far away, or struggling).
#[derive(Clone)]
struct SlowRenewals {
    inner: MemoryStore,
    renew_takes: Duration,
}

impl IdempotencyStore for SlowRenewals {
    fn claim(
        &self,
        id: &str,
        fingerprint: Fingerprint,
        token: LeaseToken,
        lease: Duration,
    ) -> impl std::future::Future<Output = Result<Claim, stanchion::BoxError>> + Send {
        self.inner.claim(id, fingerprint, token, lease)
    }

    fn renew(
        &self,
        id: &str,
        token: LeaseToken,
        lease: Duration,
    ) -> impl std::future::Future<Output = Result<bool, stanchion::BoxError>> + Send {
        let (inner, id, wait) = (self.inner.clone(), id.to_owned(), self.renew_takes);
        async move {
            tokio::time::sleep(wait).await;
            inner.renew(&id, token, lease).await
        }
    }

    fn complete(
        &self,
        id: &str,
        token: LeaseToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Result<bool, stanchion::BoxError>> + Send {
        self.inner.complete(id, token, response, ttl)
    }

    fn release(
        &self,
        id: &str,
        token: LeaseToken,
    ) -> impl std::future::Future<Output = Result<bool, stanchion::BoxError>> + Send {
        self.inner.release(id, token)
    }
}

/// Fault 1 of the I/O-paths issue: a store whose renewals take 1 s, a lease of 300 ms, a
/// handler of steps of 30 ms (12 of them: it outlives the lease). The handler is polled while
/// renewals are in flight: its steps stay 30 ms apart and it ends in ~360 ms (before, 1.01 s
/// apart). The slow renewal and the lapsed lease are reported; a retry claims the key once the
/// lease lapsed, and the first run's completion does not overwrite that newer claim.
#[tokio::test(start_paused = true)]
async fn lease_renewal_runs_beside_the_handler() {
    let steps: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let runs = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (steps, runs) = (steps.clone(), runs.clone());
        tower::service_fn(move |_req: Request<_>| {
            let (steps, runs) = (steps.clone(), runs.clone());
            async move {
                let run = runs.fetch_add(1, Ordering::SeqCst);
                // The first run takes 12 steps; a later one, one (well within its own lease).
                let steps_to_take = if run == 0 { 12 } else { 1 };
                for _ in 0..steps_to_take {
                    tokio::time::sleep(30 * MS).await;
                    if run == 0 {
                        steps.lock().unwrap().push(tokio::time::Instant::now());
                    }
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                    format!("run {run}"),
                ))))
            }
        })
    };
    let store = SlowRenewals {
        inner: MemoryStore::new(),
        renew_takes: SEC,
    };
    let layer = IdempotencyLayer::builder(store)
        .lease(300 * MS)
        .build()
        .unwrap();
    let svc = layer.layer(handler);
    let start = tokio::time::Instant::now();
    let first = tokio::spawn(svc.clone().oneshot(pay("/payments", Some("k"), "a", MS)));
    // The lease (300 ms) lapses while the renewal (1 s) is in flight: a retry at 320 ms claims
    // the key and runs.
    tokio::time::sleep(320 * MS).await;
    let retry = tokio::spawn(svc.clone().oneshot(pay("/payments", Some("k"), "a", MS)));
    let first = first.await.unwrap().unwrap();
    let took = start.elapsed();
    assert!(took < 400 * MS, "the handler took {took:?}");
    assert!(took >= 360 * MS);
    let gaps: Vec<Duration> = steps
        .lock()
        .unwrap()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert_eq!(gaps.len(), 11);
    assert!(gaps.iter().all(|g| *g <= 31 * MS), "steps {gaps:?}");
    assert_eq!(first.status(), StatusCode::OK);
    let retry = retry.await.unwrap().unwrap();
    let retry_body = retry.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(retry_body, "run 1");
    // Let the first run's slow renewal come back, then ask again: the stored answer is the
    // retry's — the first run's completion did not overwrite the newer claim.
    tokio::time::sleep(2 * SEC).await;
    let again = svc
        .clone()
        .oneshot(pay("/payments", Some("k"), "a", MS))
        .await
        .unwrap();
    assert!(again.headers().contains_key("idempotency-replayed"));
    assert_eq!(
        again.into_body().collect().await.unwrap().to_bytes(),
        "run 1"
    );
    let stats = svc.stats();
    assert!(stats.slow_renewals >= 1, "{stats:?}");
    assert!(stats.lost_leases >= 1, "{stats:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A key sent bare and the same key sent quoted (an sf-string) are one key to the server.
#[tokio::test(start_paused = true)]
async fn a_bare_and_a_quoted_key_are_the_same_key() {
    let ledger = Arc::new(Ledger::default());
    let server =
        LedgerServer::start(layer(MemoryStore::new()).build().unwrap(), ledger.clone()).await;
    let client = raw(&server);
    let first = send(&client, pay("/payments", Some("order-9"), "a", MS)).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = send(&client, pay("/payments", Some("\"order-9\""), "a", MS)).await;
    assert!(again.replayed(), "{again:?}");
    assert_eq!(again.body, first.body);
    assert_eq!(ledger.started(), 1);
}
