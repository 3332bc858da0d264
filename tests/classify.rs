//! Classification of real responses: gRPC status in headers or trailers from a tonic server,
//! HTTP status and `Retry-After` from a hyper server, and errors from a broken connection.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stanchion::classify::{
    Class, Classify, ClassifyEos, GrpcClassifier, GrpcCode, HttpClassifier, Kind, ServerHint,
    Verdict, classify_error,
};
use tower::{Service, ServiceExt};

use support::faults::{Fault, FaultPlan};
use support::grpc_server::{GrpcServer, echo, raw_request};
use support::http_server::HttpServer;

/// Sends one raw gRPC call and classifies it in both phases, reading the body to its end.
async fn classify_grpc_call(server: &GrpcServer) -> (Class, bool) {
    let mut channel = server.channel();
    let res = channel
        .ready()
        .await
        .unwrap()
        .call(raw_request("hi"))
        .await
        .unwrap();
    match GrpcClassifier::new().classify_response(&res) {
        Verdict::Done(class) => (class, false),
        Verdict::AtEndOfStream(eos) => {
            let collected = res.into_body().collect().await.unwrap();
            (eos.classify_eos(collected.trailers()), true)
        }
    }
}

#[tokio::test]
async fn grpc_status_in_trailers_is_classified_at_end_of_stream() {
    let cases = [
        (Fault::ok(), Class::success().with_grpc_code(GrpcCode::Ok)),
        (
            Fault::grpc(14),
            Class::new(Kind::Unavailable).with_grpc_code(GrpcCode::Unavailable),
        ),
        (
            Fault::grpc(8).pushback("1500"),
            Class::new(Kind::Overload)
                .with_grpc_code(GrpcCode::ResourceExhausted)
                .with_hint(ServerHint::RetryAfter(Duration::from_millis(1500))),
        ),
        (
            Fault::grpc(14).pushback("-1"),
            Class::new(Kind::Unavailable)
                .with_grpc_code(GrpcCode::Unavailable)
                .with_hint(ServerHint::DoNotRetry),
        ),
        (
            Fault::grpc(13),
            Class::new(Kind::ServerError).with_grpc_code(GrpcCode::Internal),
        ),
        (
            Fault::grpc(3),
            Class::new(Kind::ClientError).with_grpc_code(GrpcCode::InvalidArgument),
        ),
    ];
    for (fault, expected) in cases {
        let server = GrpcServer::start(FaultPlan::always(fault.clone())).await;
        let (class, from_trailers) = classify_grpc_call(&server).await;
        assert!(from_trailers, "{fault:?} should be decided by the trailers");
        assert_eq!(class, expected, "{fault:?}");
    }
}

#[tokio::test]
async fn grpc_trailers_only_and_proxy_errors_are_classified_on_the_head() {
    let cases = [
        (
            Fault::grpc(14).in_headers(),
            Class::new(Kind::Unavailable).with_grpc_code(GrpcCode::Unavailable),
        ),
        (
            Fault::grpc(8).in_headers().pushback("200"),
            Class::new(Kind::Overload)
                .with_grpc_code(GrpcCode::ResourceExhausted)
                .with_hint(ServerHint::RetryAfter(Duration::from_millis(200))),
        ),
        (
            // A proxy's 503: UNAVAILABLE, per gRPC's HTTP-to-gRPC mapping.
            Fault::status(503),
            Class::new(Kind::Unavailable)
                .with_grpc_code(GrpcCode::Unavailable)
                .with_status(503),
        ),
        (
            // A proxy's 429: UNAVAILABLE to gRPC, but shedding all the same (not a failure of
            // the endpoint, not retried without a hint).
            Fault::status(429),
            Class::new(Kind::Overload)
                .with_grpc_code(GrpcCode::Unavailable)
                .with_status(429),
        ),
    ];
    for (fault, expected) in cases {
        let server = GrpcServer::start(FaultPlan::always(fault.clone())).await;
        let (class, from_trailers) = classify_grpc_call(&server).await;
        assert!(!from_trailers, "{fault:?} should be decided by the head");
        assert_eq!(class, expected, "{fault:?}");
    }
}

#[tokio::test]
async fn a_classified_body_reports_the_trailers_status_when_the_stream_ends() {
    use stanchion::classify::ClassifiedBody;
    use std::sync::{Arc, Mutex};

    for (fault, kind) in [
        (Fault::ok(), Kind::Success),
        (Fault::grpc(14), Kind::Unavailable),
        (Fault::grpc(4), Kind::Timeout),
    ] {
        let server = GrpcServer::start(FaultPlan::always(fault)).await;
        let res = server.channel().oneshot(raw_request("hi")).await.unwrap();
        let verdict = GrpcClassifier::new().classify_response(&res);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let body = ClassifiedBody::new(res.into_body(), verdict, move |class| {
            record.lock().unwrap().push(class)
        });
        assert!(seen.lock().unwrap().is_empty());
        body.collect().await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].unwrap().kind(), kind);
    }
}

#[tokio::test]
async fn a_tonic_status_from_trailers_classifies_as_an_error_too() {
    let server = GrpcServer::start(FaultPlan::always(Fault::grpc(14))).await;
    let status = echo(server.channel(), "hi").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let class = classify_error(&status);
    assert_eq!(class.kind(), Kind::Unavailable);
    assert_eq!(class.grpc_code(), Some(GrpcCode::Unavailable));
    assert!(!class.is_never_sent());
}

#[tokio::test]
async fn http_status_and_retry_after_are_classified_over_http1_and_http2() {
    let plan = || {
        FaultPlan::scripted([
            Fault::status(503).retry_after("2"),
            Fault::status(429).retry_after("Fri, 01 Jan 2100 00:00:00 GMT"),
            Fault::status(404),
            Fault::status(503).retry_after("soon"),
            Fault::ok(),
        ])
    };
    let expected = [
        Class::new(Kind::Unavailable)
            .with_status(503)
            .with_hint(ServerHint::RetryAfter(Duration::from_secs(2))),
        // A date far in the future: capped at 30 s.
        Class::new(Kind::Overload)
            .with_status(429)
            .with_hint(ServerHint::RetryAfter(Duration::from_secs(30))),
        Class::new(Kind::ClientError).with_status(404),
        // Malformed Retry-After: ignored.
        Class::new(Kind::Unavailable).with_status(503),
        Class::success().with_status(200),
    ];
    for http2 in [false, true] {
        let server = HttpServer::start(plan()).await;
        let mut client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build_http::<Empty<Bytes>>();
        for want in expected {
            let req = Request::get(server.uri("/")).body(Empty::new()).unwrap();
            let res = client.ready().await.unwrap().call(req).await.unwrap();
            // HTTP is decided on the head: the other verdict cannot be constructed.
            let Verdict::Done(class) = HttpClassifier::new().classify_response(&res);
            assert_eq!(class, want, "http2: {http2}, status {}", res.status());
        }
        let version = server.recorder().requests()[0].version;
        assert_eq!(version == http::Version::HTTP_2, http2);
    }
}

#[tokio::test]
async fn a_reset_after_sending_is_a_transport_failure_that_may_have_run() {
    let server = HttpServer::start(FaultPlan::always(Fault::reset())).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::post(server.uri("/pay"))
        .body(Empty::new())
        .unwrap();
    let err = client.oneshot(req).await.unwrap_err();
    let class = classify_error(&err);
    assert_eq!(class.kind(), Kind::Transport);
    assert_eq!(class.status(), None);
    // The request reached the server: it must not be marked never-sent.
    assert!(!class.is_never_sent());
    assert_eq!(server.count(), 1);
}
