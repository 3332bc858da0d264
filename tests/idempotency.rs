//! Idempotency keys, client half, against the real HTTP test server: the same key on every
//! attempt, opt-in per route, caller keys kept or rejected, 409 retried and 422 final.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use stanchion::Error;
use stanchion::classify::HttpClassifier;
use stanchion::idempotency::{IdempotencyKey, IdempotencyKeyLayer};
use stanchion::pool::{HttpConnector, Pool, PoolBuilder};
use stanchion::retry::{Backoff, ReplayBody, ReplayBodyLayer, RetryLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);

type Endpoint = Pool<HttpConnector<ReplayBody<Full<Bytes>>>, SocketAddr>;

/// Keys → replay → retry (3 attempts, fast backoff) → a pool to `server`.
fn client(
    server: &HttpServer,
    keys: IdempotencyKeyLayer,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = http::Response<impl http_body::Body<Error = impl std::fmt::Debug> + std::fmt::Debug>,
    Error = Error,
> + Clone {
    let pool: Endpoint = PoolBuilder::new()
        .build(HttpConnector::http1(), server.addr())
        .unwrap();
    ServiceBuilder::new()
        .layer(keys)
        .layer(ReplayBodyLayer::default())
        .layer(
            RetryLayer::builder(HttpClassifier::new())
                .backoff(Backoff::new(MS, 5 * MS).unwrap().seed(7))
                .build()
                .unwrap(),
        )
        .service(pool)
}

fn post(path: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(Bytes::from_static(b"{\"amount\":100}")))
        .unwrap()
}

fn keys_sent(server: &HttpServer) -> Vec<Option<String>> {
    server
        .recorder()
        .requests()
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_attempt_carries_the_same_minted_key() {
    let server = HttpServer::start(FaultPlan::scripted([Fault::status(500)])).await;
    let svc = client(&server, IdempotencyKeyLayer::new().route("/payments"));
    let res = svc.oneshot(post("/payments")).await.unwrap();
    assert_eq!(res.status(), 200);
    let keys = keys_sent(&server);
    assert_eq!(keys.len(), 2, "the POST was retried: it carries a key");
    let key = keys[0].clone().expect("a key on the first attempt");
    assert_eq!(
        keys[1].as_deref(),
        Some(key.as_str()),
        "the same key on the retry"
    );
    // A bare UUIDv4 (what deployed APIs take), by default.
    let parsed = IdempotencyKey::from_header(&key.parse().unwrap()).unwrap();
    assert!(!key.starts_with('"'), "{key}");
    assert_eq!(parsed.as_str(), key);
    assert_eq!(&parsed.as_str()[14..15], "4");
    // Both attempts sent the whole body.
    assert!(
        server
            .recorder()
            .requests()
            .iter()
            .all(|r| r.body == "{\"amount\":100}")
    );
}

#[tokio::test(start_paused = true)]
async fn a_route_not_opted_in_gets_no_key_and_no_retry() {
    let server = HttpServer::start(FaultPlan::scripted([Fault::status(500)])).await;
    let svc = client(&server, IdempotencyKeyLayer::new().route("/payments"));
    let res = svc.clone().oneshot(post("/orders")).await.unwrap();
    assert_eq!(res.status(), 500, "a POST without a key is not retried");
    assert_eq!(keys_sent(&server), [None]);
    // Idempotent methods need no key, even on an opted-in route.
    let get = Request::get("/payments/1").body(Full::default()).unwrap();
    svc.clone().oneshot(get).await.unwrap();
    assert_eq!(keys_sent(&server)[1], None);
    // A route opted in for another host does not apply.
    let svc = client(
        &server,
        IdempotencyKeyLayer::new().host_route("api.other.test", "/"),
    );
    svc.oneshot(post("/payments")).await.unwrap();
    assert_eq!(keys_sent(&server)[2], None);
}

#[tokio::test(start_paused = true)]
async fn the_callers_key_is_kept_and_a_bad_one_is_refused_before_sending() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let svc = client(&server, IdempotencyKeyLayer::new().route("/"));
    let mut req = post("/payments");
    req.headers_mut()
        .insert("idempotency-key", "order-7".parse().unwrap()); // bare, Stripe-style
    svc.clone().oneshot(req).await.unwrap();
    // Sent as given, bare or quoted.
    let mut req = post("/payments");
    req.headers_mut()
        .insert("idempotency-key", "\"order-8\"".parse().unwrap());
    svc.clone().oneshot(req).await.unwrap();
    assert_eq!(
        keys_sent(&server),
        [Some("order-7".to_owned()), Some("\"order-8\"".to_owned())]
    );
    // Minted keys quoted (an sf-string, per the IETF draft) when asked.
    let quoted = client(
        &server,
        IdempotencyKeyLayer::new()
            .route("/")
            .format(stanchion::idempotency::KeyFormat::Quoted),
    );
    quoted.oneshot(post("/payments")).await.unwrap();
    let minted = keys_sent(&server)[2].clone().unwrap();
    assert!(minted.starts_with('"') && minted.ends_with('"'), "{minted}");

    for bad in ["\"unterminated", "\"a\"tail"] {
        let mut req = post("/payments");
        req.headers_mut()
            .insert("idempotency-key", bad.parse().unwrap());
        let err = svc.clone().oneshot(req).await.unwrap_err();
        assert!(matches!(err, Error::InvalidIdempotencyKey { .. }), "{err}");
    }
    let mut req = post("/payments");
    let long = "k".repeat(256);
    req.headers_mut()
        .insert("idempotency-key", long.parse().unwrap());
    let err = svc.clone().oneshot(req).await.unwrap_err();
    assert!(err.to_string().contains("255"), "{err}");
    assert_eq!(server.count(), 3, "nothing was sent for the bad keys");
}

#[tokio::test(start_paused = true)]
async fn a_conflict_is_retried_and_a_payload_mismatch_is_final() {
    // 409: the original is still in flight on the server; wait and try again.
    let server = HttpServer::start(FaultPlan::scripted([Fault::status(409)])).await;
    let svc = client(&server, IdempotencyKeyLayer::new().route("/"));
    let res = svc.oneshot(post("/payments")).await.unwrap();
    assert_eq!(res.status(), 200);
    let keys = keys_sent(&server);
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);

    // 422: the key was used with another payload. 400: a bad request. Both final.
    for status in [422, 400] {
        let server = HttpServer::start(FaultPlan::scripted([Fault::status(status)])).await;
        let svc = client(&server, IdempotencyKeyLayer::new().route("/"));
        let res = svc.oneshot(post("/payments")).await.unwrap();
        assert_eq!(res.status(), status);
        assert_eq!(server.count(), 1, "{status} is not retried");
        res.into_body().collect().await.unwrap();
    }

    // Without a key, a 409 is an ordinary client error: not retried.
    let server = HttpServer::start(FaultPlan::scripted([Fault::status(409)])).await;
    let svc = client(&server, IdempotencyKeyLayer::new());
    let put = Request::put("/doc").body(Full::default()).unwrap();
    assert_eq!(svc.oneshot(put).await.unwrap().status(), 409);
    assert_eq!(server.count(), 1);
}

/// Opting in `/payments` keys `/payments` and `/payments/7`, not the neighbouring
/// `/payments-report` (a plain `starts_with` keyed it).
#[tokio::test(start_paused = true)]
async fn routes_cover_whole_segments() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let svc = client(&server, IdempotencyKeyLayer::new().route("/payments"));
    for path in ["/payments", "/payments/7", "/payments-report"] {
        svc.clone().oneshot(post(path)).await.unwrap();
    }
    let keyed: Vec<bool> = keys_sent(&server).iter().map(Option::is_some).collect();
    assert_eq!(keyed, [true, true, false]);
}
