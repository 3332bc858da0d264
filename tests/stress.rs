//! Races between threads on the shared atomics (paused time runs on one thread and cannot show
//! them): the bulkhead's permits, the retry budget's reserve-then-check, the breaker's half-open
//! probe slots. Real threads, bounded rounds, invariants checked after every round.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use stanchion::breaker::{BreakerState, CircuitBreaker};
use stanchion::bulkhead::{Bulkhead, BulkheadLayer, Limits, NoKey};
use stanchion::classify::{Class, Kind};
use stanchion::retry::RetryBudget;
use tower::{Layer, ServiceExt};

#[path = "support/cheap.rs"]
#[allow(dead_code)]
mod cheap;

use cheap::{Ping, Pong};

#[test]
fn the_bulkhead_never_admits_more_than_its_limit_across_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        const LIMIT: usize = 3;
        let bulkhead = Bulkhead::builder()
            .limits(Limits {
                concurrency: LIMIT,
                queue: 64,
                max_wait: Duration::from_secs(10),
            })
            .build()
            .unwrap();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let svc = {
            let (in_flight, most) = (in_flight.clone(), most.clone());
            BulkheadLayer::new(bulkhead.clone(), NoKey).layer(tower::service_fn(move |_: Ping| {
                let (in_flight, most) = (in_flight.clone(), most.clone());
                async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(Pong)
                }
            }))
        };
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let svc = svc.clone();
            tasks.spawn(async move {
                for _ in 0..300 {
                    svc.clone().oneshot(Ping::default()).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        assert!(
            most.load(Ordering::SeqCst) <= LIMIT,
            "{} in flight",
            most.load(Ordering::SeqCst)
        );
        assert_eq!(
            most.load(Ordering::SeqCst),
            LIMIT,
            "the limit was never reached: no race was run"
        );
        let stats = bulkhead.stats("default").unwrap();
        assert_eq!((stats.in_flight, stats.queued, stats.rejected), (0, 0, 0));
    });
}

#[test]
fn the_retry_budget_never_grants_more_than_it_holds_across_threads() {
    for round in 0..20 {
        let budget = RetryBudget::builder()
            .ratio(0.25)
            .min_per_second(0)
            .build()
            .unwrap();
        let granted = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (budget, granted, start) = (budget.clone(), granted.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    for i in 0..4_000 {
                        budget.deposit();
                        // Everyone tries to retry far more than the budget allows.
                        if i % 2 == 0 && budget.try_withdraw() {
                            granted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 16 000 requests × 0.25 = 4 000 retries at most, however the threads interleaved.
        let granted = granted.load(Ordering::SeqCst);
        assert!(granted <= 4_000, "round {round}: {granted} retries granted");
        assert!(granted >= 3_000, "round {round}: only {granted} granted");
    }
}

#[test]
fn half_open_never_admits_more_than_its_probes_across_threads() {
    const PROBES: u32 = 2;
    const THREADS: usize = 8;
    for round in 0..60 {
        let breaker = CircuitBreaker::builder()
            .consecutive_failures(1)
            .open_duration(Duration::from_millis(5))
            .half_open_probes(PROBES)
            .build()
            .unwrap();
        breaker
            .try_acquire()
            .unwrap()
            .record(Some(Class::new(Kind::ServerError)));
        assert_eq!(breaker.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(6));
        let admitted = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (breaker, admitted, start) = (breaker.clone(), admitted.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    // Hold the permit (a probe in flight) until every thread has tried.
                    let permit = breaker.try_acquire().ok();
                    if permit.is_some() {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                    permit
                })
            })
            .collect();
        let permits: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let admitted = admitted.load(Ordering::SeqCst);
        assert_eq!(
            admitted, PROBES as usize,
            "round {round}: {admitted} probes admitted at once"
        );
        drop(permits);
    }
}
