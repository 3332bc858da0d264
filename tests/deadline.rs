//! Timeout budgets: exact timing under paused time, and the wire against real servers.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, Request};
use stanchion::Error;
use stanchion::deadline::{
    AdoptDeadlineLayer, Attempt, AttemptLayer, Deadline, DeadlineCarrier, DeadlineLayer,
    parse_grpc_timeout,
};
use tokio::time::{Instant, Sleep, sleep, sleep_until};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use support::faults::{Fault, FaultPlan};
use support::grpc_server::{GrpcServer, echo};
use support::http_server::HttpServer;

const SEC: Duration = Duration::from_secs(1);
const TIMEOUT_MS: HeaderName = HeaderName::from_static("x-timeout-ms");

/// A service that answers after `delay`.
fn slow(
    delay: Duration,
) -> impl Service<Request<()>, Response = http::Response<()>, Error = Infallible> + Clone {
    service_fn(move |_req: Request<()>| async move {
        sleep(delay).await;
        Ok(http::Response::new(()))
    })
}

/// The headers a request arrived with, and the time its deadline had left.
type Seen = (HeaderMap, Option<Duration>);

/// A service that records the headers and deadline of each request and answers at once.
#[derive(Clone, Default)]
struct Capture {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Capture {
    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request arrived")
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Service<Request<()>> for Capture {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<http::Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let remaining = req.deadline().map(|d| d.remaining());
        self.seen
            .lock()
            .unwrap()
            .push((req.headers().clone(), remaining));
        std::future::ready(Ok(http::Response::new(())))
    }
}

/// Wraps a service that is not ready until `ready_at` (backpressure, e.g. a full buffer).
struct ReadyAt<S> {
    inner: S,
    ready_at: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl<S> ReadyAt<S> {
    fn new(inner: S, ready_at: Instant) -> Self {
        ReadyAt {
            inner,
            ready_at,
            sleep: Box::pin(sleep_until(ready_at)),
        }
    }
}

impl<S: Clone> Clone for ReadyAt<S> {
    fn clone(&self) -> Self {
        ReadyAt::new(self.inner.clone(), self.ready_at)
    }
}

impl<S: Service<Request<()>>> Service<Request<()>> for ReadyAt<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        std::task::ready!(self.sleep.as_mut().poll(cx));
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> S::Future {
        self.inner.call(req)
    }
}

async fn call<S>(svc: &mut S, req: Request<()>) -> Result<S::Response, S::Error>
where
    S: Service<Request<()>>,
{
    svc.ready().await?.call(req).await
}

fn grpc_request() -> Request<()> {
    Request::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_three_second_call_fails_at_exactly_one_second() {
    let start = Instant::now();
    let mut svc = DeadlineLayer::new(SEC).unwrap().layer(slow(3 * SEC));
    let err = call(&mut svc, Request::new(())).await.unwrap_err();
    assert!(
        matches!(err, Error::DeadlineExceeded { budget, .. } if budget == SEC),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), SEC);
    assert_eq!(
        err.to_string(),
        "deadline exceeded: the call's budget of 1s ran out"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_within_budget_succeeds_and_sees_its_deadline() {
    let start = Instant::now();
    let capture = Capture::default();
    let mut svc = DeadlineLayer::new(SEC).unwrap().layer(capture.clone());
    call(&mut svc, Request::new(())).await.unwrap();
    assert_eq!(capture.last().1, Some(SEC));

    let mut svc = DeadlineLayer::new(SEC).unwrap().layer(slow(SEC / 2));
    call(&mut svc, Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), SEC / 2);
}

#[tokio::test(start_paused = true)]
async fn nested_budgets_use_the_smaller() {
    for (outer, inner) in [(5 * SEC, 2 * SEC), (2 * SEC, 5 * SEC)] {
        let start = Instant::now();
        let mut svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(outer).unwrap())
            .layer(DeadlineLayer::new(inner).unwrap())
            .service(slow(10 * SEC));
        let err = call(&mut svc, Request::new(())).await.unwrap_err();
        assert!(
            matches!(err, Error::DeadlineExceeded { budget, .. } if budget == 2 * SEC),
            "outer {outer:?}, inner {inner:?}: {err:?}"
        );
        assert_eq!(start.elapsed(), 2 * SEC);
    }
}

#[tokio::test(start_paused = true)]
async fn a_deadline_already_on_the_request_wins_when_earlier() {
    let start = Instant::now();
    let mut req = Request::new(());
    req.set_deadline(Deadline::after(SEC / 4));
    let mut svc = DeadlineLayer::new(SEC).unwrap().layer(slow(10 * SEC));
    let err = call(&mut svc, req).await.unwrap_err();
    assert!(err.is_deadline_exceeded());
    assert_eq!(start.elapsed(), SEC / 4);
}

#[tokio::test(start_paused = true)]
async fn waiting_for_readiness_is_charged() {
    // Never ready within the budget: fails at the budget, not when the service gets ready.
    let start = Instant::now();
    let mut svc = DeadlineLayer::new(SEC)
        .unwrap()
        .layer(ReadyAt::new(slow(Duration::ZERO), start + 3 * SEC));
    let err = call(&mut svc, Request::new(())).await.unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(start.elapsed(), SEC);

    // Ready after 400 ms: the attempt gets what is left, 600 ms, and writes it on the wire.
    let start = Instant::now();
    let capture = Capture::default();
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(SEC).unwrap())
        .layer_fn(|s| ReadyAt::new(s, start + Duration::from_millis(400)))
        .layer(AttemptLayer::new(10 * SEC).unwrap())
        .service(capture.clone());
    call(&mut svc, grpc_request()).await.unwrap();
    let (headers, remaining) = capture.last();
    assert_eq!(remaining, Some(Duration::from_millis(600)));
    assert_eq!(
        parse_grpc_timeout(headers["grpc-timeout"].as_bytes()),
        Some(Duration::from_millis(600))
    );
}

#[tokio::test(start_paused = true)]
async fn the_attempt_stamp_writes_min_of_per_try_and_remaining() {
    let cases = [
        // (budget, per-try, expected on the wire)
        (5 * SEC, 2 * SEC, 2 * SEC),
        (SEC, 2 * SEC, SEC),
        (2 * SEC, 2 * SEC, 2 * SEC),
    ];
    for (budget, per_try, expected) in cases {
        let capture = Capture::default();
        let mut svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(budget).unwrap())
            .layer(
                AttemptLayer::new(per_try)
                    .unwrap()
                    .timeout_header(TIMEOUT_MS),
            )
            .service(capture.clone());
        call(&mut svc, grpc_request()).await.unwrap();
        let (headers, _) = capture.last();
        assert_eq!(
            parse_grpc_timeout(headers["grpc-timeout"].as_bytes()),
            Some(expected),
            "budget {budget:?}, per-try {per_try:?}"
        );
        assert_eq!(
            headers[&TIMEOUT_MS],
            expected.as_millis().to_string().as_str()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_stamp_without_a_deadline_is_the_per_try_timeout() {
    let capture = Capture::default();
    let mut svc = AttemptLayer::new(3 * SEC).unwrap().layer(capture.clone());
    call(&mut svc, grpc_request()).await.unwrap();
    assert_eq!(capture.last().0["grpc-timeout"], "3000000u");
}

#[tokio::test(start_paused = true)]
async fn plain_http_requests_get_no_grpc_timeout() {
    let capture = Capture::default();
    let mut svc = AttemptLayer::default().layer(capture.clone());
    call(&mut svc, Request::new(())).await.unwrap();
    assert!(capture.last().0.is_empty());
}

#[tokio::test(start_paused = true)]
async fn attempt_numbers_are_stamped() {
    let capture = Capture::default();
    let attempt_header = HeaderName::from_static("x-attempt");
    let mut svc = AttemptLayer::default()
        .attempt_header(attempt_header.clone())
        .layer(capture.clone());
    call(&mut svc, grpc_request()).await.unwrap();
    let (headers, _) = capture.last();
    assert_eq!(headers[&attempt_header], "1");
    assert!(headers.get("grpc-previous-rpc-attempts").is_none());

    let mut third = grpc_request();
    third.extensions_mut().insert(Attempt(3));
    call(&mut svc, third).await.unwrap();
    let (headers, _) = capture.last();
    assert_eq!(headers[&attempt_header], "3");
    assert_eq!(headers["grpc-previous-rpc-attempts"], "2");
}

#[tokio::test(start_paused = true)]
async fn the_per_try_timeout_fails_the_attempt_before_the_deadline() {
    let start = Instant::now();
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(5 * SEC).unwrap())
        .layer(AttemptLayer::new(2 * SEC).unwrap())
        .service(slow(3 * SEC));
    let err = call(&mut svc, Request::new(())).await.unwrap_err();
    assert!(
        matches!(err, Error::AttemptTimedOut { timeout, .. } if timeout == 2 * SEC),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), 2 * SEC);

    // When the deadline is nearer than the per-try timeout, it is the deadline that fails.
    let start = Instant::now();
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(SEC).unwrap())
        .layer(AttemptLayer::new(2 * SEC).unwrap())
        .service(slow(3 * SEC));
    let err = call(&mut svc, Request::new(())).await.unwrap_err();
    assert!(
        matches!(err, Error::DeadlineExceeded { budget, .. } if budget == SEC),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), SEC);
}

/// A client called from inside another's attempt (its transport) carries the attempt's
/// deadline: running out of it is the attempt's timeout — retryable above — not the end of the
/// call.
#[tokio::test(start_paused = true)]
async fn a_nested_budget_ends_as_the_outer_attempt_not_the_call() {
    let inner = DeadlineLayer::new(10 * SEC).unwrap().layer(slow(3 * SEC));
    let mut svc = ServiceBuilder::new()
        .layer(DeadlineLayer::new(10 * SEC).unwrap())
        .layer(AttemptLayer::new(SEC).unwrap())
        .service(inner);
    let start = Instant::now();
    let err = call(&mut svc, Request::new(())).await.unwrap_err();
    assert!(matches!(err, Error::AttemptTimedOut { .. }), "{err:?}");
    assert_eq!(start.elapsed(), SEC);
}

#[tokio::test(start_paused = true)]
async fn a_transport_enforcing_the_stamped_timeout_reports_our_expiry() {
    // tonic's channel enforces the grpc-timeout we write with its own timer, which can fire a
    // moment before ours: the caller still gets the deadline (or attempt) error.
    let enforcing = service_fn(|_req: Request<()>| async {
        Err::<http::Response<()>, _>(stanchion::BoxError::from(tonic::TimeoutExpired(())))
    });
    let cases = [(SEC, 2 * SEC, "deadline"), (5 * SEC, 2 * SEC, "attempt")];
    for (budget, per_try, expected) in cases {
        let mut svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(budget).unwrap())
            .layer(AttemptLayer::new(per_try).unwrap())
            .service(enforcing);
        let err = call(&mut svc, grpc_request()).await.unwrap_err();
        match expected {
            "deadline" => assert!(err.is_deadline_exceeded(), "{err:?}"),
            _ => assert!(matches!(err, Error::AttemptTimedOut { .. }), "{err:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_does_not_send() {
    let capture = Capture::default();
    let mut req = grpc_request();
    req.set_deadline(Deadline::after(SEC));
    tokio::time::advance(2 * SEC).await;
    let mut svc = AttemptLayer::default().layer(capture.clone());
    let err = call(&mut svc, req).await.unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(capture.count(), 0);
}

/// A server handler that calls a downstream service through its own 5 s client budget.
fn handler() -> impl Service<
    Request<()>,
    Response = Option<Duration>,
    Error = Error,
    Future = impl Future<Output = Result<Option<Duration>, Error>>,
> + Clone {
    service_fn(|req: Request<()>| async move {
        let incoming = req.deadline().map(|d| d.remaining());
        let mut client = DeadlineLayer::new(5 * SEC).unwrap().layer(slow(10 * SEC));
        call(&mut client, Request::new(())).await.map(|_| incoming)
    })
}

#[tokio::test(start_paused = true)]
async fn an_adopted_incoming_budget_shortens_the_clients() {
    let cases: [(&[(&str, &str)], Duration); 5] = [
        (&[("grpc-timeout", "1S")], SEC),
        (&[("x-timeout-ms", "1500")], Duration::from_millis(1500)),
        (
            &[("grpc-timeout", "3S"), ("x-timeout-ms", "700")],
            Duration::from_millis(700),
        ),
        // Longer than the client's own budget: the client's 5 s wins.
        (&[("grpc-timeout", "1M")], 5 * SEC),
        // Malformed: ignored.
        (&[("grpc-timeout", "1s"), ("x-timeout-ms", "-3")], 5 * SEC),
    ];
    for (headers, expected) in cases {
        let start = Instant::now();
        let mut server = AdoptDeadlineLayer::new()
            .http_header(TIMEOUT_MS)
            .layer(handler());
        let mut req = Request::new(());
        for (name, value) in headers {
            req.headers_mut()
                .insert(HeaderName::from_static(name), value.parse().unwrap());
        }
        let err = call(&mut server, req).await.unwrap_err();
        assert!(err.is_deadline_exceeded(), "{headers:?}: {err:?}");
        assert_eq!(start.elapsed(), expected, "{headers:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_handler_sees_the_adopted_deadline() {
    let seen = service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>((
            req.deadline().map(|d| d.remaining()),
            stanchion::deadline::current().map(|d| d.remaining()),
        ))
    });
    let mut server = AdoptDeadlineLayer::new().layer(seen);
    let mut req = Request::new(());
    req.headers_mut()
        .insert("grpc-timeout", "250m".parse().unwrap());
    let (in_extensions, in_scope) = call(&mut server, req).await.unwrap();
    assert_eq!(in_extensions, Some(Duration::from_millis(250)));
    assert_eq!(in_scope, Some(Duration::from_millis(250)));

    let (in_extensions, in_scope) = call(&mut server, Request::new(())).await.unwrap();
    assert_eq!((in_extensions, in_scope), (None, None));
}

#[test]
fn invalid_settings_are_errors() {
    let err = DeadlineLayer::new(Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "budget");
    let err = DeadlineLayer::new(Duration::from_secs(400 * 86_400)).unwrap_err();
    assert_eq!(err.field(), "budget");
    let err = AttemptLayer::new(Duration::ZERO).unwrap_err();
    assert_eq!(err.field(), "per_try_timeout");
    assert_eq!(DeadlineLayer::default().budget(), 30 * SEC);
    assert_eq!(AttemptLayer::default().per_try_timeout(), 10 * SEC);
}

// ---- against real servers (real time: loopback I/O under paused time would fire timers early)

#[tokio::test]
async fn a_grpc_call_arrives_with_a_timeout_within_the_remaining_budget() {
    let server = GrpcServer::start(FaultPlan::healthy()).await;
    for (budget, per_try) in [(5 * SEC, 10 * SEC), (5 * SEC, 2 * SEC)] {
        let stack = ServiceBuilder::new()
            .map_err(tonic::Status::from)
            .layer(DeadlineLayer::new(budget).unwrap())
            .layer(AttemptLayer::new(per_try).unwrap())
            .service(server.channel());
        let reply = echo(stack, "hello").await.unwrap();
        assert_eq!(reply.get_ref().message, "hello");
        let recorded = server.recorder().requests();
        let wire = recorded.last().unwrap().header("grpc-timeout").unwrap();
        let timeout = parse_grpc_timeout(wire.as_bytes()).unwrap();
        assert!(
            timeout > Duration::ZERO && timeout <= budget.min(per_try),
            "grpc-timeout {wire} for budget {budget:?}, per-try {per_try:?}"
        );
    }
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_deadline_reaches_a_tonic_caller_as_deadline_exceeded() {
    let server = GrpcServer::start(FaultPlan::always(Fault::hang())).await;
    let stack = ServiceBuilder::new()
        .map_err(tonic::Status::from)
        .layer(DeadlineLayer::new(Duration::from_millis(200)).unwrap())
        .layer(AttemptLayer::default())
        .service(server.channel());
    let status = echo(stack, "hello").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("budget of 200ms"), "{status:?}");
}

#[tokio::test]
async fn an_http_call_through_the_budget_carries_its_timeout_header() {
    use bytes::Bytes;
    use http_body_util::Empty;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let server = HttpServer::start(FaultPlan::scripted([Fault::ok(), Fault::hang()])).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut stack = ServiceBuilder::new()
        .layer(DeadlineLayer::new(SEC).unwrap())
        .layer(AttemptLayer::default().timeout_header(TIMEOUT_MS))
        .service(client);
    let req = || {
        Request::get(server.uri("/thing"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let res = stack.ready().await.unwrap().call(req()).await.unwrap();
    assert_eq!(res.status(), 200);
    let sent: u64 = server.recorder().requests()[0]
        .header("x-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(sent <= 1000, "x-timeout-ms {sent}");

    let err = stack.ready().await.unwrap().call(req()).await.unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(server.count(), 2);
}
