//! Retries against real servers on loopback: what is retried, what is not, and how much.

mod support;

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use stanchion::Error;
use stanchion::classify::{Classify, FixedClock, GrpcClassifier, HttpClassifier};
use stanchion::deadline::{AttemptLayer, DeadlineBody, DeadlineLayer, parse_grpc_timeout};
use stanchion::retry::{
    Backoff, ReplayBody, ReplayBodyLayer, RetryBudget, RetryLayer, RetrySafe, RetryStop,
    RetryStopped, UnavailablePolicy,
};
use tower::{Service, ServiceBuilder, ServiceExt};

use support::balancer::TestBalancer;
use support::faults::{Fault, FaultPlan};
use support::grpc_server::{GrpcServer, echo};
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Body = ReplayBody<Full<Bytes>>;

/// Fast backoff, so real-time tests stay short.
fn fast() -> Backoff {
    Backoff::new(MS, 5 * MS).unwrap().seed(42)
}

/// Deadline → replay → retry → attempt → a balancer over `servers`.
fn stack<C>(
    retry: RetryLayer<C>,
    budget: Duration,
    servers: &[&HttpServer],
) -> impl Service<Request<Full<Bytes>>, Response = Response<DeadlineBody<Incoming>>, Error = Error>
+ Clone
+ use<C>
where
    C: Classify<Response<Incoming>> + Send + Sync + 'static,
{
    let endpoints = servers.iter().map(|s| s.addr()).collect();
    ServiceBuilder::new()
        .layer(DeadlineLayer::new(budget).unwrap())
        .layer(ReplayBodyLayer::default())
        .layer(retry)
        .layer(AttemptLayer::default())
        .service(TestBalancer::<Body>::new(endpoints))
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::default()).unwrap()
}

fn post(path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn stopped<B>(res: &Response<B>) -> Option<RetryStopped> {
    res.extensions().get::<RetryStopped>().copied()
}

fn http_retry() -> stanchion::retry::RetryLayerBuilder<HttpClassifier> {
    RetryLayer::builder(HttpClassifier::new()).backoff(fast())
}

#[tokio::test]
async fn a_storm_is_capped_by_the_budget() {
    const CALLS: usize = 100;
    let server = HttpServer::start(FaultPlan::always(Fault::reset())).await;
    let budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_second(1)
        .window(Duration::from_secs(10))
        .build()
        .unwrap();
    let retry = http_retry().budget(budget.clone()).build().unwrap();
    let svc = stack(retry, 10 * SEC, &[&server]);
    let (mut exhausted, mut budget_refused) = (0, 0);
    for _ in 0..CALLS {
        match svc.clone().oneshot(get("/storm")).await.unwrap_err() {
            Error::RetriesExhausted { attempts: 3, .. } => exhausted += 1,
            Error::RetryBudgetExhausted { .. } => budget_refused += 1,
            other => panic!("unexpected error: {other}"),
        }
    }
    // N·(1 + ratio) + floor·window.
    let bound = CALLS + CALLS / 5 + 10;
    assert!(
        server.count() <= bound,
        "{} attempts > {bound}",
        server.count()
    );
    assert!(server.count() > CALLS, "some retries were allowed");
    assert_eq!(exhausted + budget_refused, CALLS);
    assert!(
        budget_refused > CALLS / 2,
        "{budget_refused} refused by the budget"
    );
    let stats = budget.stats();
    assert_eq!(stats.deposits, CALLS as u64);
    assert_eq!(stats.withdrawals as usize, server.count() - CALLS);
}

#[tokio::test]
async fn a_hint_longer_than_the_deadline_fails_at_once() {
    let server = HttpServer::start(FaultPlan::always(Fault::status(503).retry_after("30"))).await;
    let svc = stack(http_retry().build().unwrap(), 5 * SEC, &[&server]);
    let res = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), 503);
    let stop = stopped(&res).expect("the reason is recorded");
    assert_eq!(stop.attempts, 1);
    let RetryStop::DeadlineTooShort { delay, remaining } = stop.reason else {
        panic!("unexpected reason {:?}", stop.reason);
    };
    assert_eq!(delay, 30 * SEC);
    assert!(remaining <= 5 * SEC);
    assert_eq!(server.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_one_second_hint_is_waited_out() {
    let server =
        HttpServer::start(FaultPlan::scripted([Fault::status(503).retry_after("1")])).await;
    let svc = stack(http_retry().build().unwrap(), 10 * SEC, &[&server]);
    let res = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(res.status(), 200);
    let arrivals: Vec<_> = server.recorder().requests().iter().map(|r| r.at).collect();
    assert_eq!(arrivals.len(), 2);
    assert!(
        arrivals[1] - arrivals[0] >= SEC,
        "{:?}",
        arrivals[1] - arrivals[0]
    );
}

#[tokio::test]
async fn an_http_date_hint_is_read_with_the_injected_clock() {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let date = httpdate::fmt_http_date(now + 2 * SEC);
    let server = HttpServer::start(FaultPlan::always(Fault::status(429).retry_after(&date))).await;
    let classifier = HttpClassifier::new().with_clock(FixedClock(now));
    let retry = RetryLayer::builder(classifier)
        .backoff(fast())
        .build()
        .unwrap();
    let res = stack(retry, SEC, &[&server])
        .oneshot(get("/"))
        .await
        .unwrap();
    let reason = stopped(&res).unwrap().reason;
    // Exactly 2 s: read against the injected clock (the system clock would give months).
    assert!(
        matches!(reason, RetryStop::DeadlineTooShort { delay, .. } if delay == 2 * SEC),
        "{reason:?}"
    );
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    for status in [400, 404, 409, 422] {
        let server = HttpServer::start(FaultPlan::always(Fault::status(status))).await;
        let res = stack(http_retry().build().unwrap(), 5 * SEC, &[&server])
            .oneshot(get("/"))
            .await
            .unwrap();
        assert_eq!(res.status(), status);
        // Not retried, and the response says so.
        assert_eq!(
            stopped(&res).map(|s| (s.reason, s.attempts)),
            Some((RetryStop::NotRetryable, 1)),
            "{status}"
        );
        assert_eq!(server.count(), 1, "{status}");
    }
}

#[tokio::test]
async fn overload_is_retried_only_with_a_hint() {
    let server = HttpServer::start(FaultPlan::always(Fault::status(429))).await;
    let res = stack(http_retry().build().unwrap(), 5 * SEC, &[&server])
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(
        stopped(&res).unwrap().reason,
        RetryStop::OverloadWithoutHint
    );
    assert_eq!(server.count(), 1);

    let server =
        HttpServer::start(FaultPlan::scripted([Fault::status(429).retry_after("0")])).await;
    let res = stack(http_retry().build().unwrap(), 5 * SEC, &[&server])
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn unavailable_without_a_hint_goes_to_another_endpoint_only() {
    let draining = HttpServer::start(FaultPlan::always(Fault::status(503))).await;
    let healthy = HttpServer::start(FaultPlan::healthy()).await;
    let svc = stack(
        http_retry().build().unwrap(),
        5 * SEC,
        &[&draining, &healthy],
    );
    for _ in 0..4 {
        let res = svc.clone().oneshot(get("/")).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    // The balancer's cursor moves twice per call, so every first attempt met the draining
    // endpoint; every retry avoided it.
    assert_eq!(draining.count(), 4);
    assert_eq!(healthy.count(), 4);

    // Alone, it is not retried at all.
    let alone = HttpServer::start(FaultPlan::always(Fault::status(503))).await;
    let res = stack(http_retry().build().unwrap(), 5 * SEC, &[&alone])
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(stopped(&res).unwrap().reason, RetryStop::NoOtherEndpoint);
    assert_eq!(alone.count(), 1);

    // Unless the policy says any endpoint will do.
    let alone = HttpServer::start(FaultPlan::scripted([Fault::status(503)])).await;
    let retry = http_retry()
        .unavailable(UnavailablePolicy::AnyEndpoint)
        .build()
        .unwrap();
    let res = stack(retry, 5 * SEC, &[&alone])
        .oneshot(get("/"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(alone.count(), 2);
}

#[tokio::test]
async fn a_post_is_retried_only_with_a_key_and_keeps_its_key_and_body() {
    let server = HttpServer::start(FaultPlan::always(Fault::reset())).await;
    let err = stack(http_retry().build().unwrap(), 5 * SEC, &[&server])
        .oneshot(post("/pay", "amount=10"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RetryRefused {
                reason: RetryStop::NotSafeToRepeat,
                attempts: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("not safe to repeat"), "{err}");
    assert_eq!(server.count(), 1);

    let server = HttpServer::start(FaultPlan::scripted([Fault::reset(), Fault::reset()])).await;
    let mut req = post("/pay", "amount=10");
    req.headers_mut().insert(
        "idempotency-key",
        "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"".parse().unwrap(),
    );
    req.extensions_mut().insert(RetrySafe);
    let res = stack(http_retry().build().unwrap(), 5 * SEC, &[&server])
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = server.recorder().requests();
    assert_eq!(seen.len(), 3);
    for attempt in &seen {
        assert_eq!(
            attempt.header("idempotency-key"),
            Some("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")
        );
        assert_eq!(attempt.body, "amount=10");
    }
}

#[tokio::test]
async fn a_body_over_the_replay_limit_is_not_retried() {
    let server = HttpServer::start(FaultPlan::always(Fault::reset())).await;
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(5 * SEC).unwrap())
        .layer(ReplayBodyLayer::new(16))
        .layer(http_retry().build().unwrap())
        .layer(AttemptLayer::default())
        .service(TestBalancer::<Body>::new(vec![server.addr()]));
    let err = svc
        .oneshot(
            Request::put("/doc")
                .body(Full::new(Bytes::from(vec![b'x'; 100])))
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RetryRefused {
                reason: RetryStop::BodyNotReplayable,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.count(), 1);
    assert_eq!(server.recorder().requests()[0].body.len(), 100);
}

#[tokio::test]
async fn a_never_sent_request_is_retried_once_for_free() {
    // An endpoint that refuses connections, then a healthy one.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let healthy = HttpServer::start(FaultPlan::healthy()).await;
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap();
    let retry = http_retry()
        .max_attempts(1)
        .budget(budget.clone())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(5 * SEC).unwrap())
        .layer(ReplayBodyLayer::default())
        .layer(retry)
        .layer(AttemptLayer::default())
        .service(TestBalancer::<Body>::new(vec![closed, healthy.addr()]));
    // A POST, no retries configured, no budget: the transparent retry still happens.
    let res = svc.oneshot(post("/orders", "x")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(healthy.count(), 1);
    assert_eq!(budget.stats().withdrawals, 0);
}

#[tokio::test]
async fn grpc_unavailable_is_retried_per_method_policy_with_shrinking_timeouts() {
    use stanchion::classify::{GrpcCode, GrpcCodes};

    let server = GrpcServer::start(FaultPlan::scripted([
        Fault::grpc(14).in_headers().latency(50 * MS),
        Fault::grpc(14).in_headers(),
    ]))
    .await;
    let retry = RetryLayer::builder(GrpcClassifier::new())
        .retryable_codes(GrpcCodes::from_iter([GrpcCode::Unavailable]))
        .backoff(fast())
        .unavailable(UnavailablePolicy::AnyEndpoint)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .map_err(tonic::Status::from)
        .layer(DeadlineLayer::new(5 * SEC).unwrap())
        .layer(ReplayBodyLayer::default())
        .layer(retry)
        .layer(AttemptLayer::default())
        .map_request(|req: Request<ReplayBody<tonic::body::Body>>| req.map(tonic::body::Body::new))
        .service(server.channel());
    let reply = echo(svc, "hello").await.unwrap();
    assert_eq!(reply.get_ref().message, "hello");
    let seen = server.recorder().requests();
    assert_eq!(seen.len(), 3);
    let timeouts: Vec<Duration> = seen
        .iter()
        .map(|r| parse_grpc_timeout(r.header("grpc-timeout").unwrap().as_bytes()).unwrap())
        .collect();
    assert!(timeouts[1] < timeouts[0], "{timeouts:?}");
    assert!(timeouts[2] < timeouts[1], "{timeouts:?}");
    assert_eq!(seen[0].header("grpc-previous-rpc-attempts"), None);
    assert_eq!(seen[1].header("grpc-previous-rpc-attempts"), Some("1"));
    assert_eq!(seen[2].header("grpc-previous-rpc-attempts"), Some("2"));
    // The request message was replayed on every attempt.
    assert!(
        seen.iter()
            .all(|r| r.body == seen[0].body && !r.body.is_empty())
    );
}

#[tokio::test]
async fn grpc_codes_outside_the_policy_are_not_retried() {
    for code in [3, 5, 13] {
        let server = GrpcServer::start(FaultPlan::always(Fault::grpc(code).in_headers())).await;
        let retry = RetryLayer::builder(GrpcClassifier::new())
            .backoff(fast())
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .map_err(tonic::Status::from)
            .layer(ReplayBodyLayer::default())
            .layer(retry)
            .map_request(|req: Request<ReplayBody<tonic::body::Body>>| {
                req.map(tonic::body::Body::new)
            })
            .service(server.channel());
        let status = echo(svc, "hi").await.unwrap_err();
        assert_eq!(status.code() as i32, code);
        assert_eq!(server.count(), 1, "code {code}");
    }
}

#[tokio::test]
async fn a_replayed_body_reaches_a_reqwest_transport_intact() {
    // Requests stay `http::Request` through the stack and become reqwest requests at the edge.
    let server = HttpServer::start(FaultPlan::scripted([Fault::reset()])).await;
    let client = support::reqwest_builder()
        .retry(reqwest::retry::never()) // attempt counts stay the retry layer's
        .build()
        .unwrap();
    let transport = tower::service_fn(move |req: Request<Body>| {
        let client = client.clone();
        async move {
            let req = reqwest::Request::try_from(req.map(reqwest::Body::wrap))?;
            let res = client.execute(req).await?;
            Ok::<_, reqwest::Error>(http::Response::<reqwest::Body>::from(res))
        }
    });
    let svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(5 * SEC).unwrap())
        .layer(ReplayBodyLayer::default())
        .layer(http_retry().build().unwrap())
        .service(transport);
    let mut req = Request::put(server.uri("/doc"))
        .body(Full::new(Bytes::from_static(b"version 2")))
        .unwrap();
    req.headers_mut().insert("x-request", "7".parse().unwrap());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = server.recorder().requests();
    assert_eq!(seen.len(), 2, "the reset attempt and its retry");
    for attempt in &seen {
        assert_eq!(attempt.body, "version 2");
        assert_eq!(attempt.header("x-request"), Some("7"));
    }
}

#[test]
fn invalid_settings_are_errors() {
    for attempts in [0, 11] {
        let err = RetryLayer::builder(HttpClassifier::new())
            .max_attempts(attempts)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_attempts");
    }
    let layer = RetryLayer::builder(HttpClassifier::new()).build().unwrap();
    assert_eq!(layer.max_attempts(), 3);
    assert_eq!(layer.budget().ratio(), 0.2);
}
