//! The client builder over real servers: a tonic-generated client on the stack, reqwest at the
//! edge, hyper connections from the crate's pool, per-route overrides, and validation.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use stanchion::ConfigError;
use stanchion::bulkhead::{Bulkhead, Limits};
use stanchion::classify::{GrpcCode, GrpcCodes};
use stanchion::client::{Client, Route, RoutePolicy, Target};
use stanchion::pool::{HttpConnector, ReqwestConnector};
use stanchion::retry::Backoff;
use stanchion_echo_proto::EchoRequest;
use stanchion_echo_proto::echo_client::EchoClient;
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::grpc_server::GrpcServer;
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);

fn fast_backoff() -> Backoff {
    Backoff::new(MS, 5 * MS).unwrap().seed(7)
}

#[tokio::test]
async fn a_generated_tonic_client_over_the_stack_avoids_the_failing_server() {
    let healthy = [
        GrpcServer::start(FaultPlan::healthy()).await,
        GrpcServer::start(FaultPlan::healthy()).await,
    ];
    // tonic servers answer errors trailers-only (the status in the response headers).
    let failing = GrpcServer::start(FaultPlan::always(Fault::grpc(14).in_headers())).await;
    let client = Client::grpc(Target::addrs([
        healthy[0].addr(),
        failing.addr(),
        healthy[1].addr(),
    ]))
    .deadline(Duration::from_secs(5))
    .per_try_timeout(Duration::from_secs(2))
    .backoff(fast_backoff())
    .build(HttpConnector::<tonic::body::Body>::http2())
    .unwrap();
    client.resolved().await;
    let mut echo = EchoClient::new(client.clone().into_tonic());

    for i in 0..30 {
        let reply = echo
            .call(EchoRequest {
                message: format!("call {i}"),
            })
            .await
            .unwrap_or_else(|status| panic!("call {i} failed: {status:?}"));
        assert_eq!(reply.into_inner().message, format!("call {i}"));
    }
    // Round robin sends every third call there until 5 consecutive UNAVAILABLEs eject it; each
    // failure is retried on another endpoint. Then it takes no traffic for the open period.
    assert_eq!(failing.count(), 5, "the failing server kept getting calls");
    assert_eq!(healthy[0].count() + healthy[1].count(), 30);
    let ejected = client
        .balancer()
        .endpoints()
        .into_iter()
        .find(|e| e.addr == failing.addr())
        .unwrap();
    assert!(!ejected.usable);

    // Every attempt carried its timeout on the wire, never more than the per-try timeout.
    for req in healthy[0].recorder().requests() {
        let sent = req.header("grpc-timeout").expect("grpc-timeout sent");
        let timeout = stanchion::deadline::parse_grpc_timeout(sent.as_bytes()).unwrap();
        assert!(timeout <= Duration::from_secs(2), "{sent}");
        assert!(timeout > Duration::from_secs(1), "{sent}");
    }
}

/// gRFC A6: the attempts a retried call made travel with its answer, as
/// `grpc-previous-rpc-attempts` in the metadata — on the final status when retries run out, on
/// the response when a retry succeeds; an answer at the first attempt carries none.
#[tokio::test]
async fn the_final_grpc_status_carries_the_attempts_made() {
    let attempts = |metadata: &tonic::metadata::MetadataMap| {
        metadata
            .get("grpc-previous-rpc-attempts")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let call = |client: &Client<_, _>| {
        let mut echo = EchoClient::new(Client::clone(client).into_tonic());
        async move {
            echo.call(EchoRequest {
                message: "m".into(),
            })
            .await
        }
    };
    // INTERNAL every time, retried (the client's codes), three attempts: two before the last.
    let server = GrpcServer::start(FaultPlan::always(Fault::grpc(13).in_headers())).await;
    let client = Client::grpc(Target::addrs([server.addr()]))
        .backoff(fast_backoff())
        .retryable_codes(GrpcCodes::NONE.with(GrpcCode::Internal))
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let status = call(&client).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert_eq!(server.count(), 3);
    assert_eq!(
        attempts(status.metadata()).as_deref(),
        Some("2"),
        "{status:?}"
    );

    // Once INTERNAL, then OK: the reply says one attempt went before it.
    let server = GrpcServer::start(FaultPlan::scripted([Fault::grpc(13).in_headers()])).await;
    let client = Client::grpc(Target::addrs([server.addr()]))
        .backoff(fast_backoff())
        .retryable_codes(GrpcCodes::NONE.with(GrpcCode::Internal))
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let reply = call(&client).await.unwrap();
    assert_eq!(attempts(reply.metadata()).as_deref(), Some("1"));
    let reply = call(&client).await.unwrap();
    assert_eq!(
        attempts(reply.metadata()),
        None,
        "answered at the first attempt"
    );

    // Retries that end in an error of the transport (a refused connection every time): the
    // count rides on the status stanchion makes.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::grpc(Target::addrs([dead]))
        .backoff(fast_backoff())
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let status = call(&client).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(attempts(status.metadata()).is_some(), "{status:?}");
}

#[tokio::test]
async fn a_spent_budget_reaches_the_tonic_caller_as_deadline_exceeded() {
    let server = GrpcServer::start(FaultPlan::always(Fault::hang())).await;
    let client = Client::grpc(Target::addrs([server.addr()]))
        .deadline(Duration::from_millis(150))
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let status = EchoClient::new(client.into_tonic())
        .call(EchoRequest {
            message: "late".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    let sent = server.recorder().requests()[0]
        .header("grpc-timeout")
        .map(str::to_owned);
    let timeout = stanchion::deadline::parse_grpc_timeout(sent.unwrap().as_bytes()).unwrap();
    assert!(timeout <= Duration::from_millis(150));
}

#[tokio::test]
async fn a_route_override_changes_its_route_and_no_other() {
    // Every call answers ABORTED once, then OK. Only the Charge method retries ABORTED.
    let server = GrpcServer::start(FaultPlan::scripted([
        Fault::grpc(10).in_headers(),
        Fault::ok(),
        Fault::grpc(10).in_headers(),
        Fault::ok(),
    ]))
    .await;
    let client = Client::grpc(Target::addrs([server.addr()]))
        .backoff(fast_backoff())
        .route(
            Route::grpc_method("stanchion.test.Echo", "Charge"),
            RoutePolicy::new()
                .retryable_codes(GrpcCodes::NONE.with(GrpcCode::Aborted))
                .per_try_timeout(Duration::from_millis(700)),
        )
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let call = |path: &'static str| unary(client.clone().into_tonic(), path);
    // The overridden method: ABORTED retried, then answered.
    call("/stanchion.test.Echo/Charge").await.unwrap();
    assert_eq!(server.count(), 2);
    // Another method of the same service: ABORTED is not retryable there.
    let status = call("/stanchion.test.Echo/Call").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(server.count(), 3);

    let requests = server.recorder().requests();
    let timeout = |i: usize| {
        stanchion::deadline::parse_grpc_timeout(
            requests[i].header("grpc-timeout").unwrap().as_bytes(),
        )
        .unwrap()
    };
    assert!(
        timeout(0) <= Duration::from_millis(700),
        "route per-try not applied"
    );
    assert!(
        timeout(2) > Duration::from_secs(9),
        "route per-try leaked to another method"
    );
    assert_eq!(
        client
            .route_for("/stanchion.test.Echo/Charge")
            .map(Route::pattern),
        Some("/stanchion.test.Echo/Charge")
    );
    assert_eq!(client.route_for("/stanchion.test.Echo/Call"), None);
}

/// One unary Echo call on any method path, through the generated codec.
async fn unary(
    client: stanchion::client::TonicGrpcClient,
    path: &'static str,
) -> Result<tonic::Response<stanchion_echo_proto::EchoReply>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(client);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<EchoRequest, stanchion_echo_proto::EchoReply>::default();
    grpc.unary(
        tonic::Request::new(EchoRequest {
            message: path.into(),
        }),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
}

#[tokio::test]
async fn the_clients_retryable_codes_hold_where_a_route_sets_none() {
    let server = GrpcServer::start(FaultPlan::scripted([
        Fault::grpc(10).in_headers(),
        Fault::ok(),
        Fault::grpc(10).in_headers(),
    ]))
    .await;
    let client = Client::grpc(Target::addrs([server.addr()]))
        .backoff(fast_backoff())
        .retryable_codes(GrpcCodes::NONE.with(GrpcCode::Aborted))
        .route(
            Route::grpc_method("stanchion.test.Echo", "Strict"),
            RoutePolicy::new().retryable_codes(GrpcCodes::NONE),
        )
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    unary(client.clone().into_tonic(), "/stanchion.test.Echo/Call")
        .await
        .unwrap();
    assert_eq!(
        server.count(),
        2,
        "ABORTED was not retried under the client's codes"
    );
    let status = unary(client.into_tonic(), "/stanchion.test.Echo/Strict")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(
        server.count(),
        3,
        "the route's own (empty) codes did not hold"
    );
}

#[tokio::test]
async fn reqwest_at_the_edge_retries_a_post_under_one_key_on_an_opted_in_route() {
    let server = HttpServer::start(FaultPlan::scripted([
        Fault::status(500),
        Fault::ok(),
        Fault::status(500),
    ]))
    .await;
    let client = Client::http(Target::addrs([server.addr()]))
        .backoff(fast_backoff())
        .route(
            Route::path_prefix("/payments"),
            RoutePolicy::new().idempotency_keys(true),
        )
        .build(ReqwestConnector::new("127.0.0.1").configure(support::reqwest_builder))
        .unwrap();
    client.resolved().await;
    let post = |path: &str| {
        // Built as a reqwest request, turned into an `http::Request` for the stack.
        let req = support::reqwest_builder()
            .build()
            .unwrap()
            .post(format!("http://127.0.0.1{path}"))
            .body("amount=5")
            .build()
            .unwrap();
        http::Request::<reqwest::Body>::try_from(req)
            .unwrap()
            .map(|body| {
                Full::new(
                    body.as_bytes()
                        .map(Bytes::copy_from_slice)
                        .unwrap_or_default(),
                )
            })
    };

    let res = client
        .clone()
        .oneshot(post("/payments/charge"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = server.recorder().requests();
    assert_eq!(seen.len(), 2, "the keyed POST was not retried");
    let key = seen[0].header("idempotency-key").expect("a key was sent");
    assert_eq!(seen[1].header("idempotency-key"), Some(key));
    assert_eq!(seen[1].body, Bytes::from_static(b"amount=5"));

    // Not opted in: a POST is not safe to repeat, so its 500 comes back as it is.
    let res = client.oneshot(post("/orders")).await.unwrap();
    assert_eq!(res.status(), 500);
    let seen = server.recorder().requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].header("idempotency-key"), None);
}

#[tokio::test]
async fn hyper_connections_from_the_pool_carry_the_stack() {
    let servers = [
        HttpServer::start(FaultPlan::scripted([Fault::status(503)])).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let client = Client::http(Target::addrs(servers.iter().map(|s| s.addr())))
        .backoff(fast_backoff())
        .timeout_header(http::HeaderName::from_static("x-timeout-ms"))
        .bulkhead(Bulkhead::builder().partition(
            "health",
            Limits {
                concurrency: 1,
                queue: 0,
                max_wait: Duration::ZERO,
            },
        ))
        .route(
            Route::path_prefix("/healthz"),
            RoutePolicy::new().partition("health").without_retries(),
        )
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let get = |path: &str| Request::get(path).body(Full::new(Bytes::new())).unwrap();
    // A 503 on the first endpoint is retried on the other.
    let res = client.clone().oneshot(get("/a")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!((servers[0].count(), servers[1].count()), (1, 1));
    res.into_body().collect().await.unwrap();
    let sent = servers[1].recorder().requests()[0]
        .header("x-timeout-ms")
        .map(str::to_owned);
    assert!(sent.unwrap().parse::<u64>().unwrap() <= 10_000);

    // The health route takes its own partition (1 at a time, no queue): with one call held
    // open, a second is refused while ordinary calls still pass.
    let held = client.clone().oneshot(get("/healthz")).await.unwrap();
    let refused = client.clone().oneshot(get("/healthz")).await.unwrap_err();
    assert!(
        matches!(refused, stanchion::Error::BulkheadFull { ref partition, .. } if &**partition == "health"),
        "{refused:?}"
    );
    assert_eq!(
        client.clone().oneshot(get("/b")).await.unwrap().status(),
        200
    );
    drop(held);
    assert_eq!(client.oneshot(get("/healthz")).await.unwrap().status(), 200);
}

#[test]
fn invalid_settings_are_config_errors() {
    fn addrs() -> Target {
        Target::addrs(["127.0.0.1:1".parse().unwrap()])
    }
    type H = HttpConnector<Full<Bytes>>;
    let errors: Vec<ConfigError> = [
        Client::http(addrs())
            .deadline(Duration::ZERO)
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .per_try_timeout(Duration::ZERO)
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .max_attempts(0)
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .max_attempts(11)
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .max_ejection(1.5)
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .max_ejection(f64::NAN)
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .refresh_interval(Duration::ZERO)
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .pool(stanchion::pool::PoolBuilder::new().max_size(0))
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .retryable_codes(GrpcCodes::NONE.with(GrpcCode::Aborted))
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .route(Route::path_prefix("v1"), RoutePolicy::new())
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .route(
                Route::path_prefix("/v1"),
                RoutePolicy::new().partition("nope"),
            )
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .without_bulkhead()
            .route(
                Route::path_prefix("/v1"),
                RoutePolicy::new().partition("nope"),
            )
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .route(
                Route::path_prefix("/v1"),
                RoutePolicy::new().max_attempts(99),
            )
            .build(H::http1())
            .err(),
        Client::http(addrs())
            .route(
                Route::path_prefix("/v1"),
                RoutePolicy::new().deadline(Duration::ZERO),
            )
            .build(H::http1())
            .err(),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, e)| e.unwrap_or_else(|| panic!("case {i} was accepted")))
    .collect();
    for error in errors {
        assert!(!error.to_string().is_empty());
    }
    // gRPC needs HTTP/2 on every connection: a connector that may speak HTTP/1.1 is refused
    // when the client is built, not on each call.
    type G = HttpConnector<tonic::body::Body>;
    for connector in [G::http1(), G::auto()] {
        let Err(err) = Client::grpc(addrs()).build(connector) else {
            panic!("a gRPC client over a connector that may speak HTTP/1.1 was built");
        };
        assert_eq!(err.field(), "connector", "{err}");
        assert!(err.reason().contains("http2()"), "{err}");
    }
    Client::grpc(addrs()).build(G::http2()).unwrap();
}

#[tokio::test]
async fn every_layer_can_be_turned_off() {
    let server = HttpServer::start(FaultPlan::scripted([Fault::status(500)])).await;
    let client = Client::http(Target::addrs([server.addr()]))
        .without_deadline()
        .without_per_try_timeout()
        .without_retries()
        .without_bulkhead()
        .without_ejection()
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    assert!(client.bulkhead().is_none());
    let res = client
        .oneshot(Request::get("/").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 500, "no retries: the first answer comes back");
    assert_eq!(server.count(), 1);
    assert_eq!(server.recorder().requests()[0].header("x-timeout-ms"), None);
}

#[test]
fn the_client_and_its_calls_can_cross_threads() {
    fn shared<T: Send + Sync + Clone + 'static>(_: &T) {}
    fn sendable<F: std::future::Future + Send + 'static>(_: &F) {}
    let client = Client::http(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    shared(&client);
    let call = client
        .clone()
        .oneshot(Request::get("/").body(Full::new(Bytes::new())).unwrap());
    sendable(&call);
    let grpc = Client::grpc(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap()
        .into_tonic();
    shared(&grpc);
    let call = grpc.oneshot(Request::new(tonic::body::Body::empty()));
    sendable(&call);
}
