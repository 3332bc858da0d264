//! The tower contract, for every layer and for the whole client: a table of stacks, each run
//! through the same checks over an inner service that holds it to the contract.
//!
//! - **`call` only after `poll_ready`**, on the same instance — including the clones a layer
//!   makes for retries (the requests are PUTs, so their 503s are retried) and the endpoint stacks
//!   a balancer calls. The inner service counts every violation.
//! - **A pending readiness registers a waker**: the inner service is not ready at first on every
//!   instance and wakes whoever asked a millisecond later; a layer that dropped the waker hangs
//!   (and fails the check's timeout).
//! - **Dropping a future at any point releases what it holds**: a call that hangs in the inner
//!   service is dropped; its inner future is gone, and the stack's permits, probe slots and
//!   checkouts come back (checked per stack).
//! - **Errors keep their source**: an inner error is found in the layer's error chain.
//! - Configuration edge cases fail with `ConfigError`, never a panic: `tests/bad_input.rs`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use stanchion::BoxError;
use stanchion::balance::{Balancer, StaticResolver};
use stanchion::breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer};
use stanchion::bulkhead::{Bulkhead, BulkheadLayer, Limits, NoKey};
use stanchion::classify::HttpClassifier;
use stanchion::client::{Client, Target};
use stanchion::deadline::{AttemptLayer, DeadlineLayer};
use stanchion::idempotency::IdempotencyKeyLayer;
use stanchion::retry::{Backoff, ReplayBodyLayer, RetryLayer};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// The error the inner service fails with, to be found in every layer's error chain.
#[derive(Debug, thiserror::Error)]
#[error("the inner service failed")]
struct InnerFailure;

#[derive(Default)]
struct Shared {
    /// `call` without a `poll_ready` that returned ready on the same instance.
    violations: AtomicUsize,
    calls: AtomicUsize,
    /// Inner futures alive now.
    alive: AtomicUsize,
    /// Every instance is pending on its first `poll_ready`.
    pending_first: bool,
    wakers: Mutex<Vec<Waker>>,
}

/// The inner service: holds its caller to the contract. A clone is a new instance, not ready.
/// Requests say what to do: `x-fail` answers 503, `x-error` fails with [`InnerFailure`],
/// `x-hang` never answers.
struct Strict {
    ready: bool,
    asked: bool,
    shared: Arc<Shared>,
}

impl Strict {
    fn new(pending_first: bool) -> (Strict, Arc<Shared>) {
        let shared = Arc::new(Shared {
            pending_first,
            ..Shared::default()
        });
        (
            Strict {
                ready: false,
                asked: false,
                shared: shared.clone(),
            },
            shared,
        )
    }
}

impl Clone for Strict {
    fn clone(&self) -> Self {
        Strict {
            ready: false,
            asked: false,
            shared: self.shared.clone(),
        }
    }
}

/// Counts an inner future alive until dropped.
struct Alive(Arc<Shared>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, BoxError>> + Send>>;

impl<B: Send + 'static> Service<Request<B>> for Strict {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.shared.pending_first && !self.asked {
            self.asked = true;
            self.shared.wakers.lock().unwrap().push(cx.waker().clone());
            return Poll::Pending;
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Answer {
        if !std::mem::replace(&mut self.ready, false) {
            self.shared.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.shared.calls.fetch_add(1, Ordering::SeqCst);
        self.shared.alive.fetch_add(1, Ordering::SeqCst);
        let alive = Alive(self.shared.clone());
        let has = |name: &str| req.headers().contains_key(name);
        let (fail, error, hang) = (has("x-fail"), has("x-error"), has("x-hang"));
        Box::pin(async move {
            let _alive = alive;
            if hang {
                std::future::pending::<()>().await;
            }
            if error {
                return Err(InnerFailure.into());
            }
            let status = if fail { 503 } else { 200 };
            Ok(Response::builder()
                .status(status)
                .body(Full::new(Bytes::new()))
                .unwrap())
        })
    }
}

type Boxed = BoxCloneService<Request<Full<Bytes>>, Response<()>, BoxError>;

/// Boxes a stack: responses lose their body type, errors become `BoxError`.
fn boxed<S, B>(svc: S) -> Boxed
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    BoxCloneService::new(
        svc.map_response(|res: Response<B>| res.map(|_| ()))
            .map_err(Into::into),
    )
}

/// What a stack holds when nothing is running: a description of what leaked, if anything.
type Leaks = Box<dyn Fn() -> Option<String>>;

struct Row {
    name: &'static str,
    svc: Boxed,
    inner: Arc<Shared>,
    leaks: Leaks,
}

fn no_leaks() -> Leaks {
    Box::new(|| None)
}

/// One row per layer, and the whole client — built over a fresh inner service.
fn rows(pending_first: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |name, build: &dyn Fn(Strict) -> (Boxed, Leaks)| {
        let (strict, inner) = Strict::new(pending_first);
        let (svc, leaks) = build(strict);
        rows.push(Row {
            name,
            svc,
            inner,
            leaks,
        });
    };
    row("deadline", &|s| {
        (boxed(DeadlineLayer::new(SEC).unwrap().layer(s)), no_leaks())
    });
    row("attempt", &|s| {
        (boxed(AttemptLayer::new(SEC).unwrap().layer(s)), no_leaks())
    });
    row("bulkhead", &|s| {
        let bulkhead = Bulkhead::builder()
            .limits(Limits {
                concurrency: 2,
                queue: 4,
                max_wait: SEC,
            })
            .build()
            .unwrap();
        let svc = boxed(BulkheadLayer::new(bulkhead.clone(), NoKey).layer(s));
        let leaks: Leaks = Box::new(move || {
            let stats = bulkhead.stats("default").unwrap();
            (stats.in_flight + stats.queued > 0).then(|| format!("{stats:?}"))
        });
        (svc, leaks)
    });
    row("breaker", &|s| {
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(100)
            .half_open_probes(1)
            .build()
            .unwrap();
        let svc = boxed(CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new()).layer(s));
        let leaks: Leaks = Box::new(move || {
            let state = breaker.state();
            (state != BreakerState::Closed).then(|| format!("{state:?}"))
        });
        (svc, leaks)
    });
    row("retry", &|s| {
        let retry = RetryLayer::builder(HttpClassifier::new())
            .backoff(Backoff::new(MS, 2 * MS).unwrap())
            .build()
            .unwrap();
        let svc = boxed(ReplayBodyLayer::new(1024).layer(retry.layer(s)));
        (svc, no_leaks())
    });
    row("balancer", &|s| {
        let addrs = [1, 2, 3].map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], p)));
        let lb = Balancer::builder(
            StaticResolver::new(addrs),
            move |_| s.clone(),
            HttpClassifier::new(),
        )
        .build()
        .unwrap();
        let svc = boxed(lb.clone());
        let leaks: Leaks = Box::new(move || {
            let open: Vec<_> = lb
                .endpoints()
                .into_iter()
                .filter(|e| e.state != BreakerState::Closed)
                .collect();
            (!open.is_empty()).then(|| format!("{open:?}"))
        });
        (svc, leaks)
    });
    row("idempotency keys", &|s| {
        (
            boxed(IdempotencyKeyLayer::new().route("/").layer(s)),
            no_leaks(),
        )
    });
    row("client", &|s| {
        let client = Client::http(Target::addrs([std::net::SocketAddr::from((
            [127, 0, 0, 1],
            9,
        ))]))
        .backoff(Backoff::new(MS, 2 * MS).unwrap())
        .build_with(move |_| s.clone())
        .unwrap();
        let svc = boxed(client.clone());
        let leaks: Leaks = Box::new(move || {
            let stats = client.bulkhead()?.stats("default")?;
            (stats.in_flight + stats.queued > 0).then(|| format!("{stats:?}"))
        });
        (svc, leaks)
    });
    rows
}

/// A PUT (idempotent: the layers that retry do retry its 503s, on clones of their inner
/// service and with copies of its body).
fn request(flag: Option<&'static str>) -> Request<Full<Bytes>> {
    let mut req = Request::put("/orders");
    if let Some(flag) = flag {
        req = req.header(flag, "1");
    }
    req.body(Full::new(Bytes::from_static(b"x"))).unwrap()
}

/// The rows whose stacks retry a 503.
const RETRYING: [&str; 2] = ["retry", "client"];

/// Wakes every stored waker each millisecond (the inner service's late readiness).
fn waker_pump(rows: &[Row]) -> tokio::task::JoinHandle<()> {
    let shared: Vec<Arc<Shared>> = rows.iter().map(|r| r.inner.clone()).collect();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(MS).await;
            for s in &shared {
                for waker in s.wakers.lock().unwrap().drain(..) {
                    waker.wake();
                }
            }
        }
    })
}

/// `call` only after `poll_ready` on the same instance, for plain calls, 503s (retried by the
/// layers that retry) and errors — with the inner service ready at once, and not ready at
/// first on every instance (a pending readiness must register a waker, or the call hangs).
#[tokio::test(start_paused = true)]
async fn every_layer_calls_only_after_readiness_and_waits_on_a_waker() {
    for pending_first in [false, true] {
        let rows = rows(pending_first);
        let pump = waker_pump(&rows);
        for row in &rows {
            for flag in [None, Some("x-fail"), Some("x-error"), None] {
                let call = row.svc.clone().oneshot(request(flag));
                let done = tokio::time::timeout(10 * SEC, call).await;
                assert!(
                    done.is_ok(),
                    "{} (pending first {pending_first}): a call hung — a readiness waker was lost",
                    row.name
                );
            }
            let calls = row.inner.calls.load(Ordering::SeqCst);
            if RETRYING.contains(&row.name) {
                assert!(
                    calls > 4,
                    "{}: the 503 was not retried ({calls} calls)",
                    row.name
                );
            } else {
                assert!(calls >= 4, "{}: the inner service was called", row.name);
            }
            assert_eq!(
                row.inner.violations.load(Ordering::SeqCst),
                0,
                "{} (pending first {pending_first}): call without poll_ready",
                row.name
            );
        }
        pump.abort();
    }
}

/// A call dropped while it hangs in the inner service leaves nothing behind: its inner future
/// is dropped, and permits, probe slots and checkouts come back.
#[tokio::test(start_paused = true)]
async fn dropping_a_call_at_any_point_releases_what_it_holds() {
    for pending_first in [false, true] {
        let rows = rows(pending_first);
        let pump = waker_pump(&rows);
        for row in &rows {
            // Dropped after 0, 1 and 5 ms: before readiness, in the inner call, later.
            for after in [Duration::ZERO, MS, 5 * MS] {
                let call = row.svc.clone().oneshot(request(Some("x-hang")));
                assert!(tokio::time::timeout(after, call).await.is_err());
                assert_eq!(
                    row.inner.alive.load(Ordering::SeqCst),
                    0,
                    "{} (after {after:?}): the inner future outlived the call",
                    row.name
                );
                if let Some(leak) = (row.leaks)() {
                    panic!("{} (after {after:?}): left behind {leak}", row.name);
                }
            }
            // And the stack still serves.
            let res = tokio::time::timeout(10 * SEC, row.svc.clone().oneshot(request(None))).await;
            assert!(
                matches!(res, Ok(Ok(_))),
                "{}: after dropped calls: {res:?}",
                row.name
            );
        }
        pump.abort();
    }
}

/// The inner error is in every layer's error chain.
#[tokio::test(start_paused = true)]
async fn every_layer_keeps_the_inner_error_as_a_source() {
    let rows = rows(false);
    for row in &rows {
        let err = row
            .svc
            .clone()
            .oneshot(request(Some("x-error")))
            .await
            .unwrap_err();
        let found =
            std::iter::successors(Some(err.as_ref() as &dyn std::error::Error), |e| e.source())
                .any(|e| e.is::<InnerFailure>());
        assert!(found, "{}: the inner error was lost: {err:?}", row.name);
    }
}

/// A probe that is dropped mid-call frees its half-open slot: the next call probes.
#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot() {
    let (strict, _inner) = Strict::new(false);
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .half_open_probes(1)
        .open_duration(SEC)
        .build()
        .unwrap();
    let svc = boxed(CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new()).layer(strict));
    svc.clone().oneshot(request(Some("x-fail"))).await.unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
    tokio::time::advance(SEC).await;
    let probe = svc.clone().oneshot(request(Some("x-hang")));
    assert!(tokio::time::timeout(MS, probe).await.is_err());
    let res = svc.clone().oneshot(request(None)).await;
    assert!(res.is_ok(), "the dropped probe kept its slot: {res:?}");
    assert_eq!(breaker.state(), BreakerState::Closed);
}
