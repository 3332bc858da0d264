//! The span tree of a call, recorded by a subscriber of the test's own: one `stanchion.call`
//! span per logical call and a child `stanchion.attempt` span per request sent, with their
//! fields; the attempt span is current while the attempt goes out, so a propagator's hook
//! writes each attempt's own trace context. Real servers on 127.0.0.1.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use stanchion::client::{Client, Target};
use stanchion::pool::HttpConnector;
use stanchion::retry::Backoff;
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;
use support::spans::Spans;

const MS: Duration = Duration::from_millis(1);

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::new(Bytes::new())).unwrap()
}

/// A stand-in for a propagator: writes the current span's id, as `traceparent` would carry it.
fn inject(headers: &mut http::HeaderMap) {
    let id = tracing::Span::current().id().map_or(0, |id| id.into_u64());
    headers.insert("x-span-id", HeaderValue::from(id));
}

#[tokio::test(start_paused = true)]
async fn a_call_has_one_span_and_a_child_span_per_attempt() {
    let spans = Spans::default();
    let _subscriber = tracing::subscriber::set_default(spans.clone());
    let server = HttpServer::start(FaultPlan::scripted([Fault::status(500), Fault::ok()])).await;
    let client = Client::http(Target::addrs([server.addr()]))
        .backoff(Backoff::new(100 * MS, 100 * MS).unwrap().seed(7))
        .deadline(Duration::from_secs(5))
        .on_attempt(inject)
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let res = client.oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();

    let calls = spans.named("stanchion.call");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call.field("route"), Some("default"));
    // Attempts are the client spans (one per request on the wire); the call is internal.
    assert_eq!(call.field("otel.kind"), Some("internal"));
    assert_eq!(call.field("attempts"), Some("2"));
    assert_eq!(call.field("outcome"), Some("success"));
    assert_eq!(call.field("deadline_ms"), Some("5000"));
    assert!(call.closed);

    let attempts = spans.named("stanchion.attempt");
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    let port = server.addr().port().to_string();
    for (n, (attempt, (kind, outcome))) in attempts
        .iter()
        .zip([("first", "server_error"), ("attempt", "success")])
        .enumerate()
    {
        assert_eq!(attempt.parent, Some(call.id), "{attempt:?}");
        assert_eq!(attempt.field("attempt"), Some((n + 1).to_string().as_str()));
        assert_eq!(attempt.field("kind"), Some(kind));
        assert_eq!(attempt.field("outcome"), Some(outcome));
        assert_eq!(attempt.field("otel.kind"), Some("client"));
        assert_eq!(attempt.field("server.address"), Some("127.0.0.1"));
        assert_eq!(attempt.field("server.port"), Some(port.as_str()));
        assert!(attempt.closed, "{attempt:?}");
    }
    // The retry's span opens when it is sent, after its backoff: its duration is the request's.
    let backoff = attempts[1].opened - attempts[0].closed_at.unwrap();
    assert!(backoff > Duration::ZERO, "{attempts:?}");
    assert!(backoff <= 100 * MS, "{backoff:?}");
    // Only resends carry a resend count.
    assert_eq!(attempts[0].field("http.request.resend_count"), None);
    assert_eq!(attempts[1].field("http.request.resend_count"), Some("1"));

    // Each attempt went out with its own span current: the hook wrote that span's id.
    let seen: Vec<String> = server
        .recorder()
        .requests()
        .iter()
        .map(|r| r.header("x-span-id").unwrap_or("missing").to_owned())
        .collect();
    let expected: Vec<String> = attempts.iter().map(|a| a.id.to_string()).collect();
    assert_eq!(seen, expected);
}

/// A call that fails with no answer: the attempt spans of a refused port (the free resend of a
/// never-sent request included), the call's outcome the error's class, no endpoint recorded.
#[tokio::test(start_paused = true)]
async fn a_failed_call_records_its_attempts_and_outcome() {
    let spans = Spans::default();
    let _subscriber = tracing::subscriber::set_default(spans.clone());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::http(Target::addrs([dead]))
        .max_attempts(1)
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    client.oneshot(get()).await.unwrap_err();
    let calls = spans.named("stanchion.call");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].field("outcome"), Some("transport"));
    assert_eq!(calls[0].field("attempts"), Some("2"));
    let attempts = spans.named("stanchion.attempt");
    let kinds: Vec<_> = attempts.iter().map(|a| a.field("kind")).collect();
    assert_eq!(kinds, [Some("first"), Some("transparent")]);
    assert!(
        attempts
            .iter()
            .all(|a| a.field("outcome") == Some("transport"))
    );
    assert!(
        attempts
            .iter()
            .all(|a| a.closed && a.parent == Some(calls[0].id))
    );
}
