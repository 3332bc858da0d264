//! Circuit breakers: every transition under paused time, a reference model, concurrency, and
//! real servers.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use proptest::prelude::*;
use stanchion::Error;
use stanchion::breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer, RecordAt};
use stanchion::classify::{Class, GrpcClassifier, HttpClassifier, Kind};
use tokio::time::{advance, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

use support::faults::{Fault, FaultPlan};
use support::grpc_server::{GrpcServer, raw_request};
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn fail() -> Option<Class> {
    Some(Class::new(Kind::ServerError))
}

fn ok() -> Option<Class> {
    Some(Class::success())
}

fn call(breaker: &CircuitBreaker, outcome: Option<Class>) -> Result<(), Error> {
    breaker.try_acquire().map(|permit| permit.record(outcome))
}

fn retry_in(err: Error) -> Duration {
    match err {
        Error::CircuitOpen { retry_in, .. } => retry_in,
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn closed_open_half_open_closed() {
    let breaker = CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(4)
        .failure_rate(0.5)
        .open_duration(10 * SEC)
        .half_open_probes(2)
        .build()
        .unwrap();
    let mut changes = breaker.subscribe();
    call(&breaker, ok()).unwrap();
    for _ in 0..2 {
        call(&breaker, fail()).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Closed, "fewer than 4 calls");
    call(&breaker, fail()).unwrap();
    assert_eq!(breaker.state(), BreakerState::Open, "3 of 4 failed");
    assert!(changes.has_changed().unwrap());
    assert_eq!(*changes.borrow_and_update(), BreakerState::Open);

    assert_eq!(retry_in(call(&breaker, ok()).unwrap_err()), 10 * SEC);
    advance(10 * SEC - MS).await;
    assert_eq!(retry_in(call(&breaker, ok()).unwrap_err()), MS);
    assert!(!breaker.is_usable());
    advance(MS).await;
    assert!(breaker.is_usable());

    // Two probes may go at once; a third waits.
    let first = breaker.try_acquire().unwrap();
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    let second = breaker.try_acquire().unwrap();
    assert_eq!(retry_in(breaker.try_acquire().unwrap_err()), Duration::ZERO);
    assert!(!breaker.is_usable());
    // One lucky success does not close the circuit.
    first.record(ok());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    second.record(ok());
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.stats().calls, 0, "closing starts a fresh window");
    assert!(breaker.stats().rejected >= 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_for_longer_each_time() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(10 * SEC)
        .growing_open_duration(2.0, 35 * SEC)
        .half_open_probes(1)
        .build()
        .unwrap();
    call(&breaker, fail()).unwrap();
    let mut expected = [10 * SEC, 20 * SEC, 35 * SEC, 35 * SEC].into_iter();
    let mut open_for = expected.next().unwrap();
    for next in expected {
        assert_eq!(breaker.retry_in(), Some(open_for));
        advance(open_for).await;
        // The probe fails: open again, for longer.
        call(&breaker, fail()).unwrap();
        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(breaker.retry_in(), Some(next));
        open_for = next;
    }
    // A successful probe closes it and the growth starts over.
    advance(open_for).await;
    call(&breaker, ok()).unwrap();
    assert_eq!(breaker.state(), BreakerState::Closed);
    call(&breaker, fail()).unwrap();
    assert_eq!(breaker.retry_in(), Some(10 * SEC));
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_a_success_resets_the_run() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(5)
        .build()
        .unwrap();
    for _ in 0..4 {
        call(&breaker, fail()).unwrap();
    }
    call(&breaker, ok()).unwrap();
    for _ in 0..4 {
        call(&breaker, fail()).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.stats().consecutive_failures, 4);
    call(&breaker, fail()).unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_cancellations_do_not_count() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(2)
        .build()
        .unwrap();
    for _ in 0..10 {
        call(&breaker, Some(Class::new(Kind::ClientError))).unwrap();
        call(&breaker, Some(Class::new(Kind::Cancelled))).unwrap();
        call(&breaker, None).unwrap();
        drop(breaker.try_acquire().unwrap());
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_time_window_trips_on_recent_failures_only() {
    let breaker = CircuitBreaker::builder()
        .time_window(10 * SEC, 10)
        .minimum_calls(4)
        .failure_rate(0.5)
        .build()
        .unwrap();
    for _ in 0..3 {
        call(&breaker, fail()).unwrap();
    }
    // Those failures leave the window before enough calls arrive.
    advance(11 * SEC).await;
    call(&breaker, fail()).unwrap();
    for _ in 0..3 {
        call(&breaker, ok()).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.stats().calls, 4);
    call(&breaker, fail()).unwrap();
    call(&breaker, fail()).unwrap();
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "3 of 6 recent calls failed"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_breaker_through_the_layer() {
    let breaker = CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(4)
        .slow_calls(SEC, 0.5)
        .record_at(RecordAt::Head)
        .build()
        .unwrap();
    let slow = service_fn(|_req: Request<()>| async {
        sleep(2 * SEC).await;
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let mut svc = CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new()).layer(slow);
    for _ in 0..4 {
        let res = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(breaker.stats().openings, 1);
    assert_eq!(breaker.state(), BreakerState::Open);
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_fails_fast_without_waiting_for_the_inner_service() {
    // An inner service that is never ready, e.g. a full buffer in front of a hung dependency.
    struct NeverReady;
    impl Service<Request<()>> for NeverReady {
        type Response = http::Response<Empty<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Pending
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            unreachable!("never ready, never called")
        }
    }
    let breaker = CircuitBreaker::builder().build().unwrap();
    breaker.force_open();
    let svc = CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new()).layer(NeverReady);
    let start = tokio::time::Instant::now();
    let err = svc.oneshot(Request::new(())).await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err:?}");
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn forcing_overrides_and_reset_restores() {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    breaker.force_open();
    assert!(call(&breaker, ok()).is_err());
    assert_eq!(breaker.state(), BreakerState::ForcedOpen);
    breaker.force_closed();
    for _ in 0..5 {
        call(&breaker, fail()).unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::ForcedClosed);
    breaker.reset();
    assert_eq!(breaker.state(), BreakerState::Closed);
    call(&breaker, fail()).unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn exactly_k_of_100_concurrent_callers_probe_and_dropped_probes_free_their_slots() {
    const K: usize = 3;
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(SEC)
        .half_open_probes(K as u32)
        .record_at(RecordAt::Head)
        .build()
        .unwrap();
    call(&breaker, fail()).unwrap();
    advance(SEC).await;

    let reached = Arc::new(AtomicUsize::new(0));
    let counting = {
        let reached = reached.clone();
        service_fn(move |_req: Request<()>| {
            reached.fetch_add(1, Ordering::SeqCst);
            async {
                // Hold the probe until cancelled.
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
            }
        })
    };
    let svc = CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new()).layer(counting);
    for round in 1..=2 {
        let mut calls = tokio::task::JoinSet::new();
        let rejected = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let (svc, rejected) = (svc.clone(), rejected.clone());
            calls.spawn(async move {
                if let Err(Error::CircuitOpen { .. }) = svc.oneshot(Request::new(())).await {
                    rejected.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        // Let every caller run until it waits.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(reached.load(Ordering::SeqCst), K * round);
        assert_eq!(rejected.load(Ordering::SeqCst), 100 - K);
        assert!(!breaker.is_usable());
        // Cancel the probes: their slots come back.
        calls.abort_all();
        while calls.join_next().await.is_some() {}
        assert!(breaker.is_usable());
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
    }
}

#[test]
fn half_open_never_admits_more_than_k_across_threads() {
    const K: usize = 3;
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(1)
        .open_duration(Duration::from_millis(1))
        .half_open_probes(K as u32)
        .build()
        .unwrap();
    call(&breaker, fail()).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    let held = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let admitted = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    if let Ok(permit) = breaker.try_acquire() {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        admitted.fetch_add(1, Ordering::SeqCst);
                        std::hint::spin_loop();
                        held.fetch_sub(1, Ordering::SeqCst);
                        // Cancelled: the slot goes back, the circuit stays half-open.
                        drop(permit);
                    }
                }
            });
        }
    });
    assert!(
        peak.load(Ordering::SeqCst) <= K,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(admitted.load(Ordering::SeqCst) > K, "slots were reused");
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    assert!(breaker.is_usable());
}

/// A small sequential model of the spec, for the property test.
#[derive(Debug)]
struct Model {
    state: BreakerState,
    window: std::collections::VecDeque<bool>,
    open_until: Duration,
    successes: u32,
}

const N: usize = 8;
const MIN: usize = 4;
const K: u32 = 2;
const OPEN: Duration = Duration::from_millis(100);

impl Model {
    /// One call at time `now` that fails or not; returns whether it was admitted.
    fn call(&mut self, now: Duration, failure: bool) -> bool {
        match self.state {
            BreakerState::Closed => {
                self.window.push_back(failure);
                if self.window.len() > N {
                    self.window.pop_front();
                }
                let failures = self.window.iter().filter(|f| **f).count();
                // The call that brings the rate to the threshold, with enough calls, trips it —
                // a success too, when it is the call that reaches the minimum.
                if self.window.len() >= MIN && failures * 2 >= self.window.len() {
                    self.open(now);
                }
                true
            }
            BreakerState::Open if now < self.open_until => false,
            _ => {
                // Half-open (or open and due): a probe.
                self.state = BreakerState::HalfOpen;
                if failure {
                    self.open(now);
                } else {
                    self.successes += 1;
                    if self.successes >= K {
                        self.state = BreakerState::Closed;
                        self.window.clear();
                    }
                }
                true
            }
        }
    }

    fn open(&mut self, now: Duration) {
        self.state = BreakerState::Open;
        self.open_until = now + OPEN;
        self.successes = 0;
        self.window.clear();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_breaker_agrees_with_a_reference_model(
        steps in proptest::collection::vec((any::<bool>(), 0u64..60), 1..200)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let breaker = CircuitBreaker::builder()
                .count_window(N as u32)
                .minimum_calls(MIN as u32)
                .failure_rate(0.5)
                .open_duration(OPEN)
                .half_open_probes(K)
                .build()
                .unwrap();
            let mut model = Model {
                state: BreakerState::Closed,
                window: Default::default(),
                open_until: Duration::ZERO,
                successes: 0,
            };
            let start = tokio::time::Instant::now();
            for (i, (failure, step_ms)) in steps.into_iter().enumerate() {
                advance(Duration::from_millis(step_ms)).await;
                let now = start.elapsed();
                let admitted = model.call(now, failure);
                let outcome = if failure { fail() } else { ok() };
                let real = call(&breaker, outcome).is_ok();
                prop_assert_eq!(real, admitted, "step {}: admission", i);
                prop_assert_eq!(breaker.state(), model.state, "step {}: state", i);
            }
            Ok(())
        })?;
    }
}

// ---- against real servers (real time)

#[tokio::test]
async fn after_tripping_the_server_sees_nothing_until_the_open_time_passes() {
    let server = HttpServer::start(FaultPlan::always(Fault::status(503))).await;
    let breaker = CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(4)
        .open_duration(Duration::from_millis(300))
        .half_open_probes(1)
        .build()
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let svc = CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new()).layer(client);
    let get = || Request::get(server.uri("/")).body(Empty::new()).unwrap();
    for _ in 0..4 {
        let res = svc.clone().oneshot(get()).await.unwrap();
        assert_eq!(res.status(), 503);
        // The outcome is recorded when the body ends.
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    for _ in 0..20 {
        let err = svc.clone().oneshot(get()).await.unwrap_err();
        assert!(matches!(err, Error::CircuitOpen { .. }), "{err:?}");
    }
    assert_eq!(
        server.count(),
        4,
        "no request reached the server while open"
    );
    sleep(Duration::from_millis(350)).await;
    let res = svc.clone().oneshot(get()).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(server.count(), 5, "the probe went through");
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "and failed, so it reopened"
    );
}

#[tokio::test]
async fn a_grpc_failure_in_the_trailers_counts() {
    let server = GrpcServer::start(FaultPlan::always(Fault::grpc(14))).await;
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(3)
        .build()
        .unwrap();
    let svc =
        CircuitBreakerLayer::new(breaker.clone(), GrpcClassifier::new()).layer(server.channel());
    for _ in 0..3 {
        let res = svc.clone().oneshot(raw_request("hi")).await.unwrap();
        assert_eq!(res.status(), 200, "the head says nothing");
        assert_eq!(
            breaker.state(),
            BreakerState::Closed,
            "not over before the trailers"
        );
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    let err = svc.clone().oneshot(raw_request("hi")).await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }));
    assert_eq!(server.count(), 3);
}

#[test]
fn invalid_settings_are_errors() {
    let cases = [
        (
            CircuitBreaker::builder().count_window(0),
            "window.count.calls",
        ),
        (
            CircuitBreaker::builder().count_window(10).minimum_calls(20),
            "minimum_calls",
        ),
        (CircuitBreaker::builder().minimum_calls(0), "minimum_calls"),
        (CircuitBreaker::builder().failure_rate(0.0), "failure_rate"),
        (CircuitBreaker::builder().failure_rate(1.5), "failure_rate"),
        (
            CircuitBreaker::builder().failure_rate(f64::NAN),
            "failure_rate",
        ),
        (
            CircuitBreaker::builder().slow_calls(Duration::ZERO, 0.5),
            "slow_calls",
        ),
        (CircuitBreaker::builder().slow_calls(SEC, 2.0), "slow_calls"),
        (
            CircuitBreaker::builder().time_window(Duration::from_millis(50), 10),
            "window.time.buckets",
        ),
        (
            CircuitBreaker::builder().time_window(10 * SEC, 0),
            "window.time.buckets",
        ),
        (
            CircuitBreaker::builder().consecutive_failures(0),
            "window.consecutive_failures.failures",
        ),
        (
            CircuitBreaker::builder().open_duration(Duration::ZERO),
            "open_duration",
        ),
        (
            CircuitBreaker::builder().growing_open_duration(0.5, 60 * SEC),
            "growing_open_duration",
        ),
        (
            CircuitBreaker::builder().growing_open_duration(2.0, SEC),
            "growing_open_duration",
        ),
        (CircuitBreaker::builder().open_jitter(1.0), "open_jitter"),
        (
            CircuitBreaker::builder().half_open_probes(0),
            "half_open_probes",
        ),
    ];
    // Paths are the shape the settings are written in as data (docs/configuration.md).
    for (builder, path) in cases {
        assert_eq!(builder.build().unwrap_err().path(), path);
    }
    let defaults = CircuitBreaker::builder().build().unwrap();
    assert_eq!(defaults.state(), BreakerState::Closed);
    assert_eq!(defaults.name(), "breaker");
}
