//! The gRPC service config applied to `Client::grpc`, against a real gRPC server on loopback:
//! per-method retry policies, retry throttling and wait-for-ready do what gRFC A6 and gRPC's
//! service-config document say; every invalid config is refused with the path of its fault.
//! The configs are written here after the shapes of those documents' examples.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use stanchion::balance::StaticResolver;
use stanchion::client::{Client, GrpcClient, ServiceConfig, Target};
use stanchion::pool::HttpConnector;
use stanchion::retry::BudgetMode;
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::grpc_server::{Echo, GrpcServer, encode_frame};

/// A unary call to `path`: its `grpc-status` (from trailers-only headers, or the trailers).
async fn call(client: &GrpcClient, path: &'static str) -> Result<i32, stanchion::Error> {
    let body = http_body_util::Full::new(encode_frame(&Echo {
        message: "hi".to_owned(),
    }));
    let req = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body))
        .unwrap();
    let res = client.clone().oneshot(req).await?;
    let head = res
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let collected = res.into_body().collect().await.unwrap();
    Ok(head
        .or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status"))
                .map(|v| v.to_str().unwrap().parse().unwrap())
        })
        .unwrap_or(-1))
}

fn client(target: Target, config: &str) -> GrpcClient {
    let config = ServiceConfig::from_json(config).unwrap();
    Client::grpc(target)
        .service_config(&config)
        .unwrap()
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap()
}

const FAST: &str = r#""initialBackoff": "0.001s", "maxBackoff": "0.002s", "backoffMultiplier": 2"#;

/// A method with a retry policy for UNAVAILABLE and 4 attempts gets 4; a method named without
/// a policy gets 1; a method the config does not name gets 1 (gRPC retries only by policy).
#[tokio::test]
async fn a_method_retries_by_its_policy_and_others_do_not() {
    let server = GrpcServer::start(FaultPlan::always(Fault::grpc(14).in_headers())).await;
    let config = format!(
        r#"{{"methodConfig": [
            {{"name": [{{"service": "stanchion.test.Echo", "method": "Call"}}],
              "retryPolicy": {{"maxAttempts": 4, {FAST}, "retryableStatusCodes": ["UNAVAILABLE"]}}}},
            {{"name": [{{"service": "stanchion.test.Echo", "method": "Other"}}], "timeout": "2s"}}
        ]}}"#
    );
    let client = client(Target::addrs([server.addr()]), &config);
    client.resolved().await;

    assert_eq!(
        call(&client, "/stanchion.test.Echo/Call").await.unwrap(),
        14
    );
    assert_eq!(server.count(), 4);
    assert_eq!(
        call(&client, "/stanchion.test.Echo/Other").await.unwrap(),
        14
    );
    assert_eq!(server.count(), 5);
    assert_eq!(call(&client, "/other.Service/Method").await.unwrap(), 14);
    assert_eq!(server.count(), 6);
}

/// A code the policy does not list is not retried; `maxAttempts` above 5 is capped at 5; a
/// service-wide entry covers its methods; the method's own entry wins over it.
#[tokio::test]
async fn codes_caps_and_matching_follow_grpc() {
    let server = GrpcServer::start(FaultPlan::always(Fault::grpc(14).in_headers())).await;
    let config = format!(
        r#"{{"methodConfig": [
            {{"name": [{{"service": "stanchion.test.Echo"}}],
              "retryPolicy": {{"maxAttempts": 9, {FAST}, "retryableStatusCodes": [14]}}}},
            {{"name": [{{"service": "stanchion.test.Echo", "method": "Strict"}}],
              "retryPolicy": {{"maxAttempts": 3, {FAST}, "retryableStatusCodes": ["aborted"]}}}}
        ]}}"#
    );
    let client = client(Target::addrs([server.addr()]), &config);
    client.resolved().await;
    call(&client, "/stanchion.test.Echo/Anything")
        .await
        .unwrap();
    assert_eq!(server.count(), 5, "maxAttempts 9 is capped at 5");
    call(&client, "/stanchion.test.Echo/Strict").await.unwrap();
    assert_eq!(server.count(), 6, "UNAVAILABLE is not in Strict's codes");
}

/// `retryThrottling` with 10 tokens and a ratio of 0.1 against a server that always fails:
/// the first call's 4 failed attempts leave 6 tokens; the second call's first failure leaves
/// 5 (= 10 / 2) and stops its retries — the 5th failure — and every call after it gets one
/// attempt. Successes give tokens back: one lifts the count above the half again.
#[tokio::test]
async fn throttling_from_the_config_stops_retries_at_the_fifth_failure() {
    let server = GrpcServer::start(FaultPlan::with_script(
        FaultPlan::healthy(),
        std::iter::repeat_n(Fault::grpc(14).in_headers(), 6),
    ))
    .await;
    let config = format!(
        r#"{{"methodConfig": [{{"name": [{{}}],
              "retryPolicy": {{"maxAttempts": 4, {FAST}, "retryableStatusCodes": ["UNAVAILABLE"]}}}}],
            "retryThrottling": {{"maxTokens": 10, "tokenRatio": 0.1}}}}"#
    );
    let client = client(Target::addrs([server.addr()]), &config);
    client.resolved().await;
    assert_eq!(
        client.retry_budget().mode(),
        BudgetMode::Throttling {
            max_tokens: 10.0,
            token_ratio: 0.1
        }
    );
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let before = server.count();
        call(&client, "/stanchion.test.Echo/Call")
            .await
            .unwrap_err_or_status();
        attempts.push(server.count() - before);
    }
    assert_eq!(attempts, [4, 1, 1]);
    assert_eq!(client.retry_budget().stats().tokens, Some(4.0));
    assert_eq!(client.retry_budget().stats().refused, 2);
    // The server now answers OK: each success gives 0.1 back.
    assert_eq!(call(&client, "/stanchion.test.Echo/Call").await.unwrap(), 0);
    let tokens = client.retry_budget().stats().tokens.unwrap();
    assert!((tokens - 4.1).abs() < 1e-9, "{tokens}");
}

/// What a call ended in: its status, or -2 for an error.
trait StatusOr {
    fn unwrap_err_or_status(self) -> i32;
}

impl StatusOr for Result<i32, stanchion::Error> {
    fn unwrap_err_or_status(self) -> i32 {
        self.unwrap_or(-2)
    }
}

/// `waitForReady`: with no endpoint yet, a call waits for one (and succeeds once the resolver
/// names the server); without it the call fails at once; a call that waits past its timeout
/// fails at the deadline.
#[tokio::test]
async fn wait_for_ready_holds_calls_until_an_endpoint_is_usable() {
    let server = GrpcServer::start(FaultPlan::healthy()).await;
    let resolver = StaticResolver::new([]);
    let config = r#"{"methodConfig": [
        {"name": [{"service": "stanchion.test.Echo", "method": "Call"}], "waitForReady": true, "timeout": "5s"},
        {"name": [{"service": "stanchion.test.Echo", "method": "Short"}], "waitForReady": true, "timeout": "0.2s"},
        {"name": [{"service": "stanchion.test.Echo", "method": "Fast"}], "timeout": "5s"}
    ]}"#;
    let client = client(Target::resolver(resolver.clone()), config);
    client.resolved().await;

    // Not waiting: nothing resolved, so it fails at once.
    let started = tokio::time::Instant::now();
    let err = call(&client, "/stanchion.test.Echo/Fast")
        .await
        .unwrap_err();
    assert!(
        matches!(err, stanchion::Error::NoEndpoints { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // Waiting past its timeout: the deadline ends it.
    let err = call(&client, "/stanchion.test.Echo/Short")
        .await
        .unwrap_err();
    assert!(
        matches!(err, stanchion::Error::DeadlineExceeded { .. }),
        "{err:?}"
    );
    assert_eq!(server.count(), 0);

    // Waiting: the call goes out once the server is resolved.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "/stanchion.test.Echo/Call").await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!waiting.is_finished(), "the call did not wait");
    resolver.set([server.addr()]);
    assert_eq!(waiting.await.unwrap().unwrap(), 0);
    assert_eq!(server.count(), 1);
}

/// Every invalid service config is refused, with the path of its fault and why.
#[test]
fn invalid_service_configs_name_their_fault() {
    let policy = |p: &str| {
        format!(r#"{{"methodConfig": [{{"name": [{{"service": "a.B"}}], "retryPolicy": {p}}}]}}"#)
    };
    let ok = r#""maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]"#;
    let table: Vec<(String, &str)> = vec![
        (policy(&format!("{{{}}}", ok.replace(r#""maxAttempts": 3"#, r#""maxAttempts": 1"#))), "methodConfig[0].retryPolicy.maxAttempts"),
        (policy(&format!("{{{}}}", ok.replace(r#""maxAttempts": 3, "#, ""))), "methodConfig[0].retryPolicy.maxAttempts"),
        (policy(&format!("{{{}}}", ok.replace(r#""initialBackoff": "0.1s""#, r#""initialBackoff": "0s""#))), "methodConfig[0].retryPolicy.initialBackoff"),
        (policy(&format!("{{{}}}", ok.replace(r#""maxBackoff": "1s""#, r#""maxBackoff": "1""#))), "methodConfig[0].retryPolicy.maxBackoff"),
        (policy(&format!("{{{}}}", ok.replace(r#""backoffMultiplier": 2"#, r#""backoffMultiplier": 0"#))), "methodConfig[0].retryPolicy.backoffMultiplier"),
        (policy(&format!("{{{}}}", ok.replace(r#"["UNAVAILABLE"]"#, "[]"))), "methodConfig[0].retryPolicy.retryableStatusCodes"),
        (policy(&format!("{{{}}}", ok.replace(r#"["UNAVAILABLE"]"#, r#"["UNAVAILABLE", "NOPE"]"#))), "methodConfig[0].retryPolicy.retryableStatusCodes[1]"),
        (policy(&format!("{{{}}}", ok.replace(r#"["UNAVAILABLE"]"#, "[17]"))), "methodConfig[0].retryPolicy.retryableStatusCodes[0]"),
        (policy(&format!("{{{}}}", ok.replace(r#"["UNAVAILABLE"]"#, r#"["OK"]"#))), "methodConfig[0].retryPolicy.retryableStatusCodes"),
        (policy(&format!("{{{ok}, \"jitter\": 0.2}}")), "methodConfig[0].retryPolicy.jitter"),
        (r#"{"methodConfig": [{"name": [{"service": "a.B"}], "hedgingPolicy": {"maxAttempts": 2}}]}"#.to_owned(), "methodConfig[0].hedgingPolicy"),
        (r#"{"methodConfig": [{"name": [{"service": "a.B"}], "maxRequestMessageBytes": 1024}]}"#.to_owned(), "methodConfig[0].maxRequestMessageBytes"),
        (r#"{"methodConfig": [{"name": [{"service": "a.B"}], "timeout": "-1s"}]}"#.to_owned(), "methodConfig[0].timeout"),
        (r#"{"methodConfig": [{"name": [{"service": "a.B"}], "timeout": "0s"}]}"#.to_owned(), "methodConfig[0].timeout"),
        (r#"{"methodConfig": [{"name": [{"service": "a.B"}], "waitForReady": "yes"}]}"#.to_owned(), "methodConfig[0].waitForReady"),
        (r#"{"methodConfig": [{"timeout": "1s"}]}"#.to_owned(), "methodConfig[0].name"),
        (r#"{"methodConfig": [{"name": []}]}"#.to_owned(), "methodConfig[0].name"),
        (r#"{"methodConfig": [{"name": [{"method": "Get"}]}]}"#.to_owned(), "methodConfig[0].name[0].method"),
        (r#"{"methodConfig": [{"name": [{"service": "a.B", "methd": "Get"}]}]}"#.to_owned(), "methodConfig[0].name[0].methd"),
        (r#"{"methodConfig": [{"name": [{"service": "a.B"}]}, {"name": [{"service": "c.D"}, {"service": "a.B"}]}]}"#.to_owned(), "methodConfig[1].name"),
        (r#"{"methodConfig": [{"name": [{}]}, {"name": [{"service": ""}]}]}"#.to_owned(), "methodConfig[1].name"),
        (r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 0.1}}"#.to_owned(), "retryThrottling.maxTokens"),
        (r#"{"retryThrottling": {"maxTokens": 1001, "tokenRatio": 0.1}}"#.to_owned(), "retryThrottling.maxTokens"),
        (r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0}}"#.to_owned(), "retryThrottling.tokenRatio"),
        (r#"{"retryThrottling": {"maxTokens": 10}}"#.to_owned(), "retryThrottling.tokenRatio"),
        (r#"{"loadBalancingPolicy": "pick_first"}"#.to_owned(), "loadBalancingPolicy"),
        (r#"{"loadBalancingConfig": [{"pick_first": {}}]}"#.to_owned(), "loadBalancingConfig"),
        (r#"{"loadBalancingConfig": [{"least_request_experimental": {"choiceCount": 3}}]}"#.to_owned(), "loadBalancingConfig[0].least_request_experimental.choiceCount"),
        (r#"{"healthCheckConfig": {"serviceName": ""}}"#.to_owned(), "healthCheckConfig"),
        (r#"{"methodConfigs": []}"#.to_owned(), "methodConfigs"),
        (r#"{"methodConfig": {}}"#.to_owned(), "methodConfig"),
        ("[]".to_owned(), "service_config"),
        ("{".to_owned(), "service_config"),
    ];
    for (json, path) in &table {
        let err = ServiceConfig::from_json(json).expect_err(json);
        assert_eq!(err.path(), *path, "{json}: {err}");
        assert!(!err.reason().is_empty());
    }
    // Valid ones, for contrast: the first supported balancing policy is taken.
    for json in [
        r#"{"loadBalancingConfig": [{"pick_first": {}}, {"round_robin": {}}]}"#,
        r#"{"loadBalancingConfig": [{"least_request_experimental": {"choiceCount": 2}}]}"#,
        r#"{"methodConfig": [{"name": [{}], "timeout": "1.000000001s"}]}"#,
        r#"{"methodConfig": []}"#,
        "{}",
    ] {
        ServiceConfig::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    }
}

/// The config's numbers reach the client: a deadline per method, throttling, balancing.
#[test]
fn a_service_config_sets_what_it_names() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B", "method": "Get"}], "timeout": "1.5s",
             "retryPolicy": {"maxAttempts": 7, "initialBackoff": "0.25s", "maxBackoff": "2s",
                             "backoffMultiplier": 1.5, "retryableStatusCodes": ["unavailable", 10],
                             "perAttemptRecvTimeout": "0.5s"}}],
            "loadBalancingConfig": [{"least_request_experimental": {}}]}"#,
    )
    .unwrap();
    let builder = Client::grpc(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .service_config(&config)
        .unwrap();
    let data = serde_json::to_value(builder.config()).unwrap();
    let route = &data["routes"][0];
    assert_eq!(route["route"]["grpc_method"]["service"], "a.B");
    assert_eq!(route["deadline"], "1s 500ms");
    assert_eq!(route["per_try_timeout"], "500ms");
    assert_eq!(route["max_attempts"], 5);
    assert_eq!(route["backoff"]["base"], "250ms");
    assert_eq!(route["backoff"]["cap"], "2s");
    assert_eq!(route["backoff"]["multiplier"], 1.5);
    assert_eq!(
        route["retryable_codes"],
        serde_json::json!(["ABORTED", "UNAVAILABLE"])
    );
    // Methods the config gives no policy are not retried; balancing is least request.
    assert_eq!(data["max_attempts"], 1);
    assert_eq!(data["balance"], "least_request");
}

/// What gRPC does and the client's defaults would not, each against a real server: a listed
/// RESOURCE_EXHAUSTED is retried without a delay hint; a method that retries nothing takes no
/// throttling token for its failures; a call waiting for ready is bounded by its deadline, not
/// by a per-try timeout the client had before the service config.
#[tokio::test]
async fn grpc_semantics_where_the_client_defaults_differ() {
    // RESOURCE_EXHAUSTED (8), no pushback: 3 attempts, as listed; UNAVAILABLE after.
    let server = GrpcServer::start(FaultPlan::with_script(
        FaultPlan::always(Fault::grpc(14).in_headers()),
        std::iter::repeat_n(Fault::grpc(8).in_headers(), 3),
    ))
    .await;
    let config = format!(
        r#"{{"methodConfig": [
            {{"name": [{{"service": "stanchion.test.Echo", "method": "Call"}}],
              "retryPolicy": {{"maxAttempts": 3, {FAST}, "retryableStatusCodes": ["RESOURCE_EXHAUSTED"]}}}},
            {{"name": [{{"service": "stanchion.test.Echo", "method": "Once"}}], "timeout": "2s"}}],
            "retryThrottling": {{"maxTokens": 10, "tokenRatio": 0.1}}}}"#
    );
    let client = client(Target::addrs([server.addr()]), &config);
    client.resolved().await;
    assert_eq!(call(&client, "/stanchion.test.Echo/Call").await.unwrap(), 8);
    assert_eq!(server.count(), 3, "a listed RESOURCE_EXHAUSTED is retried");
    assert_eq!(client.retry_budget().stats().tokens, Some(7.0));
    // A method without a policy: 6 failures (UNAVAILABLE, the client's own retryable code),
    // no token taken.
    for _ in 0..6 {
        assert_eq!(
            call(&client, "/stanchion.test.Echo/Once").await.unwrap(),
            14
        );
    }
    assert_eq!(server.count(), 9);
    assert_eq!(client.retry_budget().stats().tokens, Some(7.0));

    // A per-try timeout of 100 ms set before the service config does not cut a call waiting
    // for ready: it waits 300 ms for its endpoint and succeeds within its 5 s deadline.
    let healthy = GrpcServer::start(FaultPlan::healthy()).await;
    let resolver = StaticResolver::new([]);
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "stanchion.test.Echo"}],
             "waitForReady": true, "timeout": "5s"}]}"#,
    )
    .unwrap();
    let client = Client::grpc(Target::resolver(resolver.clone()))
        .per_try_timeout(Duration::from_millis(100))
        .service_config(&config)
        .unwrap()
        .build(HttpConnector::<tonic::body::Body>::http2())
        .unwrap();
    client.resolved().await;
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "/stanchion.test.Echo/Call").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the call did not wait");
    resolver.set([healthy.addr()]);
    assert_eq!(waiting.await.unwrap().unwrap(), 0);
    assert_eq!(healthy.count(), 1);
}

/// gRPC uses exactly one method config per call: a method an entry names takes nothing from
/// the default entry `{}` — its unset fields are the client's own from before the config — and
/// no entry leaves the client's per-try timeout in place unless it sets
/// `perAttemptRecvTimeout`. Backoffs follow A6's formula, and what they cannot hold is refused
/// with its path.
#[test]
fn one_entry_per_call_and_a6_backoffs() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [
            {"name": [{}], "timeout": "3s", "waitForReady": true,
             "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.5s", "maxBackoff": "0.2s",
                             "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
                             "perAttemptRecvTimeout": "1s"}},
            {"name": [{"service": "a.B", "method": "Get"}]},
            {"name": [{"service": "a.B"}], "timeout": "4s"}
        ]}"#,
    )
    .unwrap();
    let builder = Client::grpc(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .deadline(Duration::from_secs(20))
        .service_config(&config)
        .unwrap();
    let data = serde_json::to_value(builder.config()).unwrap();
    // The default entry is the client's own settings.
    assert_eq!(data["deadline"], "3s");
    assert_eq!(data["wait_for_ready"], true);
    assert_eq!(data["per_try_timeout"], "1s");
    assert_eq!(data["max_attempts"], 3);
    // maxBackoff below initialBackoff caps every delay, the first too.
    assert_eq!(data["backoff"]["base"], "200ms");
    assert_eq!(data["backoff"]["cap"], "200ms");
    // A6 retries every listed code, an overload too; the default entry's
    // perAttemptRecvTimeout retries cut attempts, and only its calls'.
    assert_eq!(data["retry_overload_without_hint"], true);
    assert_eq!(data["retry_per_try_timeouts"], true);
    let routes = data["routes"].as_array().unwrap();
    let get = &routes[0];
    assert_eq!(get["route"]["grpc_method"]["method"], "Get");
    assert_eq!(
        get["deadline"], "20s",
        "the client's deadline, not the default entry's"
    );
    assert_eq!(get["wait_for_ready"], false);
    assert_eq!(get["per_try_timeout"], "off");
    assert_eq!(get["retry_per_try_timeouts"], false);
    assert_eq!(get["max_attempts"], 1);
    let service = &routes[1];
    assert_eq!(service["deadline"], "4s");
    assert_eq!(service["per_try_timeout"], "off");

    // Without a default entry: no retries and no per-try timeout for the rest.
    let builder = Client::grpc(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .service_config(&ServiceConfig::from_json("{}").unwrap())
        .unwrap();
    let data = serde_json::to_value(builder.config()).unwrap();
    assert_eq!(data["per_try_timeout"], "off");
    assert_eq!(data["max_attempts"], 1);

    // A listed RESOURCE_EXHAUSTED is retried without a hint.
    let overload = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B"}], "retryPolicy": {"maxAttempts": 2,
             "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
             "retryableStatusCodes": ["RESOURCE_EXHAUSTED"]}}]}"#,
    )
    .unwrap();
    let builder = Client::grpc(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .service_config(&overload)
        .unwrap();
    assert!(builder.config().retry_overload_without_hint);

    // What the backoff cannot hold (over an hour), and balancing settings nobody reads.
    for (json, path) in [
        (
            r#"{"methodConfig": [{"name": [{"service": "a.B"}], "retryPolicy": {"maxAttempts": 2,
                "initialBackoff": "0.1s", "maxBackoff": "7200s", "backoffMultiplier": 2,
                "retryableStatusCodes": [14]}}]}"#,
            "methodConfig[0].retryPolicy.maxBackoff",
        ),
        (
            r#"{"methodConfig": [{"name": [{"service": "a.B"}], "retryPolicy": {"maxAttempts": 2,
                "initialBackoff": "7200s", "maxBackoff": "7300s", "backoffMultiplier": 2,
                "retryableStatusCodes": [14]}}]}"#,
            "methodConfig[0].retryPolicy.initialBackoff",
        ),
        (
            r#"{"loadBalancingConfig": [{"round_robin": {"weights": [1]}}]}"#,
            "loadBalancingConfig[0].round_robin.weights",
        ),
    ] {
        let err = ServiceConfig::from_json(json).expect_err(json);
        assert_eq!(err.path(), path, "{json}: {err}");
    }
}

/// `perAttemptRecvTimeout`: an attempt it cuts is retried whatever the codes, as gRPC does —
/// here the first attempt hangs, the second answers; with only UNAVAILABLE listed, the call
/// still succeeds on its second attempt. An empty code list is valid with it.
#[tokio::test]
async fn a_per_attempt_timeout_is_retried_whatever_the_codes() {
    let server = GrpcServer::start(FaultPlan::with_script(
        FaultPlan::healthy(),
        [Fault::hang()],
    ))
    .await;
    let config = format!(
        r#"{{"methodConfig": [{{"name": [{{"service": "stanchion.test.Echo"}}], "timeout": "5s",
              "retryPolicy": {{"maxAttempts": 3, {FAST}, "retryableStatusCodes": ["UNAVAILABLE"],
                              "perAttemptRecvTimeout": "0.2s"}}}}]}}"#
    );
    let client = client(Target::addrs([server.addr()]), &config);
    client.resolved().await;
    assert_eq!(call(&client, "/stanchion.test.Echo/Call").await.unwrap(), 0);
    assert_eq!(server.count(), 2);

    let empty = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B"}], "retryPolicy": {"maxAttempts": 2,
             "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
             "retryableStatusCodes": [], "perAttemptRecvTimeout": "1s"}}]}"#,
    )
    .unwrap();
    assert!(
        empty.method_configs()[0]
            .retry
            .as_ref()
            .unwrap()
            .retryable_codes
            .iter()
            .next()
            .is_none()
    );
}

/// A wait-for-ready call does not go through panic mode: with the only endpoint ejected (it
/// refuses connections, and its breaker opened), the call waits — until the resolver names a
/// server that answers — instead of failing at once through the open breaker.
#[tokio::test]
async fn wait_for_ready_waits_while_every_breaker_is_open() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let healthy = GrpcServer::start(FaultPlan::healthy()).await;
    let resolver = StaticResolver::new([dead]);
    let config = r#"{"methodConfig": [
        {"name": [{"service": "stanchion.test.Echo", "method": "Call"}], "waitForReady": true, "timeout": "5s"},
        {"name": [{"service": "stanchion.test.Echo", "method": "Fast"}], "timeout": "5s"}
    ]}"#;
    let client = client(Target::resolver(resolver.clone()), config);
    client.resolved().await;
    // Fail-fast calls open the dead endpoint's breaker (5 consecutive failures).
    for _ in 0..5 {
        call(&client, "/stanchion.test.Echo/Fast")
            .await
            .unwrap_err();
    }
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { call(&client, "/stanchion.test.Echo/Call").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the call went through the open breaker: {:?}",
        waiting.await
    );
    resolver.set([dead, healthy.addr()]);
    assert_eq!(waiting.await.unwrap().unwrap(), 0);
    assert_eq!(healthy.count(), 1);
}

/// What gRPC's rules skip is reported, not silently dropped: a balancing policy stanchion does
/// not have (the next one is taken), and `loadBalancingPolicy` beside `loadBalancingConfig`.
/// Timeouts longer than a deadline holds are a year.
#[test]
fn skipped_fields_are_warnings_and_timeouts_are_bounded() {
    let config = ServiceConfig::from_json(
        r#"{"loadBalancingPolicy": "round_robin",
            "loadBalancingConfig": [{"pick_first": {}}, {"round_robin": {}}]}"#,
    )
    .unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("loadBalancingPolicy")));
    assert!(warnings.iter().any(|w| w.contains("pick_first")));
    assert!(
        ServiceConfig::from_json("{}")
            .unwrap()
            .warnings()
            .is_empty()
    );
    // gRPC does not read loadBalancingPolicy beside loadBalancingConfig, whatever it names.
    let config = ServiceConfig::from_json(
        r#"{"loadBalancingPolicy": "pick_first", "loadBalancingConfig": [{"round_robin": {}}]}"#,
    )
    .unwrap();
    assert_eq!(config.warnings().len(), 1, "{:?}", config.warnings());
    // Timeouts longer than a deadline holds (a year) are a year, as any deadline is.
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.B"}], "timeout": "40000000s",
             "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.1s", "maxBackoff": "1s",
                             "backoffMultiplier": 2, "retryableStatusCodes": [14],
                             "perAttemptRecvTimeout": "40000000s"}}]}"#,
    )
    .unwrap();
    let m = &config.method_configs()[0];
    assert_eq!(m.timeout, Some(stanchion::deadline::MAX_BUDGET));
    assert_eq!(
        m.retry.as_ref().unwrap().per_attempt_timeout,
        Some(stanchion::deadline::MAX_BUDGET)
    );
}
