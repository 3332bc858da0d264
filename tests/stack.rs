//! The layers composed in the canonical order, over real servers: they fit together, and the
//! caller sees the right answer and the right error.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use stanchion::breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer};
use stanchion::bulkhead::{Bulkhead, BulkheadLayer, Limits, NoKey};
use stanchion::classify::GrpcClassifier;
use stanchion::deadline::{AttemptLayer, DeadlineLayer};
use stanchion::retry::{Backoff, ReplayBody, ReplayBodyLayer, RetryLayer, UnavailablePolicy};
use tower::ServiceBuilder;

use support::faults::{Fault, FaultPlan};
use support::grpc_server::{GrpcServer, echo};

const MS: Duration = Duration::from_millis(1);

/// Deadline → bulkhead → replay → retry → attempt → breaker → tonic channel.
fn grpc_stack(
    server: &GrpcServer,
    budget: Duration,
    bulkhead: Bulkhead,
    breaker: CircuitBreaker,
) -> impl tonic::client::GrpcService<
    tonic::body::Body,
    Error = tonic::Status,
    ResponseBody: http_body::Body<Data = Bytes, Error: Into<stanchion::BoxError> + Send> + Send,
    Future: Send,
> + Send
+ use<> {
    let retry = RetryLayer::builder(GrpcClassifier::new())
        .backoff(Backoff::new(MS, 5 * MS).unwrap().seed(3))
        .unavailable(UnavailablePolicy::AnyEndpoint)
        .build()
        .unwrap();
    ServiceBuilder::new()
        .map_err(tonic::Status::from)
        .layer(DeadlineLayer::new(budget).unwrap())
        .layer(BulkheadLayer::new(bulkhead, NoKey))
        .layer(ReplayBodyLayer::default())
        .layer(retry)
        .layer(AttemptLayer::default())
        .layer(CircuitBreakerLayer::new(breaker, GrpcClassifier::new()))
        .map_request(|req: Request<ReplayBody<tonic::body::Body>>| req.map(tonic::body::Body::new))
        .service(server.channel())
}

fn bulkhead(concurrency: usize, queue: usize) -> Bulkhead {
    Bulkhead::builder()
        .limits(Limits {
            concurrency,
            queue,
            max_wait: Duration::from_secs(1),
        })
        .build()
        .unwrap()
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder()
        .consecutive_failures(5)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_grpc_call_through_the_whole_stack_is_retried_and_answered() {
    let server = GrpcServer::start(FaultPlan::scripted([Fault::grpc(14).in_headers()])).await;
    let breaker = breaker();
    let bulkhead = bulkhead(4, 4);
    let stack = grpc_stack(
        &server,
        Duration::from_secs(2),
        bulkhead.clone(),
        breaker.clone(),
    );
    let reply = echo(stack, "through everything").await.unwrap();
    assert_eq!(reply.get_ref().message, "through everything");
    let seen = server.recorder().requests();
    assert_eq!(seen.len(), 2, "the UNAVAILABLE attempt and its retry");
    assert_eq!(seen[1].header("grpc-previous-rpc-attempts"), Some("1"));
    assert!(seen.iter().all(|r| r.header("grpc-timeout").is_some()));
    assert_eq!(
        breaker.stats().consecutive_failures,
        0,
        "the success reset the run"
    );
    assert_eq!(
        bulkhead.default_stats().in_flight,
        0,
        "the permit came back"
    );
}

#[tokio::test]
async fn each_refusal_reaches_a_tonic_caller_with_its_code() {
    // The budget runs out while the server hangs.
    let hanging = GrpcServer::start(FaultPlan::always(Fault::hang())).await;
    let status = echo(
        grpc_stack(&hanging, 200 * MS, bulkhead(4, 4), breaker()),
        "x",
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");

    // The bulkhead is full: one call in flight, no queue.
    let slow = GrpcServer::start(FaultPlan::always(Fault::ok().latency(300 * MS))).await;
    let shared = bulkhead(1, 0);
    let first = tokio::spawn(echo(
        grpc_stack(&slow, Duration::from_secs(2), shared.clone(), breaker()),
        "first",
    ));
    while shared.default_stats().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    let status = echo(
        grpc_stack(&slow, Duration::from_secs(2), shared.clone(), breaker()),
        "second",
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    first.await.unwrap().unwrap();

    // The breaker is open.
    let open = breaker();
    open.force_open();
    let healthy = GrpcServer::start(FaultPlan::healthy()).await;
    let status = echo(
        grpc_stack(
            &healthy,
            Duration::from_secs(2),
            bulkhead(4, 4),
            open.clone(),
        ),
        "x",
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(open.state(), BreakerState::ForcedOpen);
    assert_eq!(healthy.count(), 0, "nothing reached the server");
}
