//! Correct after any uptime: every component that keeps time, tested at t = 0, after the longest
//! idle gap its arithmetic can see, and across the points where a narrower counter would wrap —
//! under paused tokio time, which jumps years in a test.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use stanchion::balance::StaticResolver;
use stanchion::breaker::{BreakerState, CircuitBreaker};
use stanchion::client::{Client, Target};
use stanchion::idempotency::{IdempotencyLayer, MemoryStore};
use stanchion::pool::{HttpConnector, Pool, PoolBuilder};
use tower::ServiceExt;

use stanchion::classify::{Class, Kind};
use stanchion::retry::RetryBudget;
use support::faults::FaultPlan;
use support::http_server::HttpServer;
use support::ledger_server::{Ledger, LedgerServer};

const SEC: Duration = Duration::from_secs(1);
/// A slice of a budget with a 1 s window.
const SLICE: Duration = Duration::from_millis(100);
const DAY: Duration = Duration::from_secs(86_400);
const YEAR: Duration = Duration::from_secs(365 * 86_400);

/// Points a narrower clock or tag would misread: just before and past 2²³ and 2²⁴ slices of a
/// 1 s window (24-bit tags), past 2³² ms (a `u32` of milliseconds), 97 days, a year, a century.
/// The budget test goes to each as a time since the budget was made; the others idle for each
/// as a gap.
fn gaps() -> Vec<(&'static str, Duration)> {
    vec![
        ("none", Duration::ZERO),
        ("2^23 - 20 slices", SLICE * ((1 << 23) - 20)),
        ("2^23 + 2 slices", SLICE * ((1 << 23) + 2)),
        ("2^24 slices", SLICE * (1 << 24)),
        ("2^24 + 25 slices", SLICE * ((1 << 24) + 25)),
        ("2^32 ms", Duration::from_millis(1 << 32) + SEC),
        ("97 days", 97 * DAY),
        ("a year", YEAR),
        ("a century", 100 * YEAR),
    ]
}

/// Fault 1 of the issue, at every gap: ratio 0.2, no floor; after the gap, 100 deposits and
/// 1,000 withdrawals grant at most 20 — the ratio — and the stats count what was granted. The
/// same budget lives through every gap, so cells from old slices are there to be misread.
///
/// Deposits read the clock every 16th time on their stripe (a clock read costs more than the
/// rest of a deposit), so right after an idle gap up to 15 of them may count in the slice before
/// the gap, which has left the window: at most 3 retries fewer here, never more. With the clock
/// read once after the gap (any withdrawal or `stats()`), the count is exact: 20.
#[tokio::test(start_paused = true)]
async fn the_retry_budget_limits_after_any_idle_gap() {
    for window in [SEC, 10 * SEC] {
        for read_clock_first in [false, true] {
            let budget = RetryBudget::builder()
                .ratio(0.2)
                .min_per_second(0)
                .window(window)
                .build()
                .unwrap();
            for (name, gap) in gaps() {
                let case =
                    format!("window {window:?}, after {name}, read first {read_clock_first}");
                tokio::time::advance(gap).await;
                if read_clock_first {
                    budget.stats();
                }
                for _ in 0..100 {
                    budget.deposit();
                }
                let granted = (0..1000).filter(|_| budget.try_withdraw()).count();
                let stats = budget.stats();
                assert_eq!(stats.withdrawals as usize, granted, "{case}");
                assert_eq!(granted as u64, stats.deposits / 5, "{case}");
                if read_clock_first {
                    assert_eq!((stats.deposits, granted), (100, 20), "{case}");
                } else {
                    assert!((85..=100).contains(&stats.deposits), "{case}: {stats:?}");
                    assert!((17..=20).contains(&granted), "{case}: {granted}");
                }
                // Let this round's slices leave the window before the next gap.
                tokio::time::advance(2 * window).await;
            }
        }
    }
}

fn record(breaker: &CircuitBreaker, failure: bool) {
    let class = if failure {
        Class::new(Kind::ServerError)
    } else {
        Class::success()
    };
    breaker.try_acquire().unwrap().record(Some(class));
}

/// Every breaker window, and its open timer, after every gap: outcomes from before the gap are
/// forgotten (a time window) or kept (a count window, which has no notion of time), the breaker
/// trips on exactly the outcomes after it, stays open for exactly its open duration, and closes
/// on a good probe.
#[tokio::test(start_paused = true)]
async fn breakers_trip_and_recover_the_same_after_any_idle_gap() {
    let kinds: Vec<(&str, stanchion::breaker::BreakerBuilder)> = vec![
        (
            "time window",
            CircuitBreaker::builder()
                .time_window(10 * SEC, 10)
                .minimum_calls(10)
                .failure_rate(0.5),
        ),
        (
            "count window",
            CircuitBreaker::builder()
                .count_window(10)
                .minimum_calls(10)
                .failure_rate(0.5),
        ),
        (
            "consecutive",
            CircuitBreaker::builder().consecutive_failures(5),
        ),
    ];
    for (kind, builder) in kinds {
        let breaker = builder
            .open_duration(5 * SEC)
            .half_open_probes(1)
            .build()
            .unwrap();
        for (name, gap) in gaps() {
            let case = format!("{kind}, after {name}");
            // Just short of tripping before the gap.
            for i in 0..10 {
                record(&breaker, i % 2 == 0 && i < 8);
            }
            assert_eq!(breaker.state(), BreakerState::Closed, "{case}");
            tokio::time::advance(gap).await;
            // Ten good calls, then failures until it trips.
            for _ in 0..10 {
                record(&breaker, false);
            }
            let mut failures = 0;
            while breaker.state() == BreakerState::Closed && failures < 100 {
                record(&breaker, true);
                failures += 1;
            }
            let expected = match kind {
                // With no gap the ten calls before it are still in the window (4 failures):
                // 12 more make 16 of 32. After a gap longer than the window they are gone:
                // 10 of the last 20.
                "time window" if gap < 10 * SEC => 12,
                "time window" => 10,
                // 5 of the last 10.
                "count window" => 5,
                _ => 5,
            };
            assert_eq!(failures, expected, "{case}");
            assert_eq!(breaker.state(), BreakerState::Open, "{case}");
            assert_eq!(breaker.retry_in(), Some(5 * SEC), "{case}");
            tokio::time::advance(5 * SEC - Duration::from_millis(1)).await;
            assert!(
                breaker.try_acquire().is_err(),
                "{case}: open for its duration"
            );
            tokio::time::advance(Duration::from_millis(1)).await;
            record(&breaker, false);
            assert_eq!(breaker.state(), BreakerState::Closed, "{case}");
        }
    }
}

fn get() -> http::Request<Full<Bytes>> {
    http::Request::get("/")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A pool after every gap: the connection idle since before the gap is closed (idle timeout,
/// lifetime), a call opens a new one and succeeds, and the pool's numbers add up.
#[tokio::test(start_paused = true)]
async fn pools_rotate_and_serve_after_any_idle_gap() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let pool: Pool<HttpConnector<Full<Bytes>>, _> = PoolBuilder::new()
        .build(HttpConnector::http1(), server.addr())
        .unwrap();
    let mut expected_connections = 0;
    let mut previous_gap = None;
    for (name, gap) in gaps() {
        let res = pool.clone().oneshot(get()).await.unwrap();
        res.into_body().collect().await.unwrap();
        // A new connection: the first, or after the last gap closed the idle one.
        if previous_gap.is_none_or(|g| g >= 30 * SEC) {
            expected_connections += 1;
        }
        previous_gap = Some(gap);
        assert_eq!(server.accepted(), expected_connections, "after {name}");
        tokio::time::advance(gap).await;
        // Let the reaper run at its next tick.
        tokio::time::sleep(2 * SEC).await;
        let stats = pool.stats();
        if gap >= 30 * SEC {
            assert_eq!(
                stats.open, 0,
                "after {name}: the idle connection was closed"
            );
        }
        assert_eq!(
            stats.created - stats.closed,
            stats.open as u64,
            "after {name}"
        );
    }
}

/// The idempotency server's timers after every gap: a finished record is replayed within its
/// TTL and gone after it; a handler running across several leases keeps its key.
#[tokio::test(start_paused = true)]
async fn idempotency_records_and_leases_keep_time_after_any_idle_gap() {
    let ledger = Arc::new(Ledger::default());
    let layer = IdempotencyLayer::builder(MemoryStore::new())
        .ttl(3600 * SEC)
        .lease(3 * SEC)
        .build()
        .unwrap();
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let pool: Pool<HttpConnector<Full<Bytes>>, _> = PoolBuilder::new()
        .build(HttpConnector::http2(), server.addr())
        .unwrap();
    let pay = |key: &str, work: Duration| {
        http::Request::post("/payments")
            .header("idempotency-key", key)
            .header("x-work-ms", work.as_millis().to_string())
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap()
    };
    let status = |pool: &Pool<HttpConnector<Full<Bytes>>, _>, req| {
        let pool = pool.clone();
        async move {
            let res = pool.oneshot(req).await.unwrap();
            let replayed = res.headers().contains_key("idempotency-replayed");
            (res.status(), replayed)
        }
    };
    for (i, (name, gap)) in gaps().into_iter().enumerate() {
        tokio::time::advance(gap).await;
        let key = format!("k{i}");
        // Runs for 10 s: three leases and more, renewed beside the handler.
        let running = tokio::spawn(status(&pool, pay(&key, 10 * SEC)));
        tokio::time::sleep(7 * SEC).await;
        assert_eq!(
            status(&pool, pay(&key, Duration::ZERO)).await.0,
            StatusCode::CONFLICT,
            "after {name}: the renewed lease still holds the key"
        );
        assert_eq!(
            running.await.unwrap(),
            (StatusCode::CREATED, false),
            "after {name}"
        );
        assert_eq!(
            status(&pool, pay(&key, Duration::ZERO)).await,
            (StatusCode::CREATED, true),
            "after {name}: replayed within the TTL"
        );
        tokio::time::advance(3601 * SEC).await;
        assert_eq!(
            status(&pool, pay(&key, Duration::ZERO)).await,
            (StatusCode::CREATED, false),
            "after {name}: past the TTL the key runs again"
        );
    }
}

/// A balancer after every gap: a new answer from the resolver reaches it within the refresh
/// interval, and calls go to the new endpoint.
#[tokio::test(start_paused = true)]
async fn resolution_goes_on_after_any_idle_gap() {
    let servers = [
        HttpServer::start(FaultPlan::healthy()).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let resolver = StaticResolver::new([servers[0].addr()]);
    let client = Client::http(Target::resolver(resolver.clone()))
        .refresh_interval(SEC)
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    for (i, (name, gap)) in gaps().into_iter().enumerate() {
        tokio::time::advance(gap).await;
        let next = servers[(i + 1) % 2].addr();
        resolver.set([next]);
        tokio::time::sleep(2 * SEC).await;
        assert!(client.balancer().breaker(next).is_some(), "after {name}");
        let before = servers[(i + 1) % 2].count();
        let res = client.clone().oneshot(get()).await.unwrap();
        res.into_body().collect().await.unwrap();
        assert_eq!(servers[(i + 1) % 2].count(), before + 1, "after {name}");
    }
}
