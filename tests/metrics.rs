//! The instruments recorded through the `metrics` facade, read back with metrics-util's
//! debugging recorder installed for the test's thread while the pools are built: a scripted
//! scenario against real servers on 127.0.0.1, exact values and label sets.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};

use metrics_util::debugging::DebuggingRecorder;
use stanchion::client::{Client, Target};
use stanchion::metrics;
use stanchion::pool::{HttpConnector, Pool, PoolBuilder};
use stanchion::retry::ReplayBody;
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;
use support::seen::Seen;

const MS: Duration = Duration::from_millis(1);

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::new(Bytes::new())).unwrap()
}

type HttpPool = Pool<HttpConnector<Full<Bytes>>, SocketAddr>;

fn endpoint(addr: SocketAddr) -> [(&'static str, String); 2] {
    [
        ("server.address", addr.ip().to_string()),
        ("server.port", addr.port().to_string()),
    ]
}

fn labels<'a>(
    endpoint: &'a [(&'static str, String); 2],
    more: &[(&'static str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    endpoint
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(more.iter().copied())
        .collect()
}

/// The pool family: connections created and closed by reason, checkout wait, checkout
/// timeouts, connect failures, and the gauges the reaper publishes — exact values.
#[tokio::test(start_paused = true)]
async fn the_pool_records_its_connections_waits_and_failures() {
    let recorder = DebuggingRecorder::new();
    let seen = Seen::new(&recorder);
    let server = HttpServer::start(FaultPlan::scripted([
        Fault::ok(),
        Fault::ok().latency(2500 * MS),
    ]))
    .await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let (pool, dead_pool): (HttpPool, HttpPool) = ::metrics::with_local_recorder(&recorder, || {
        let build = |addr| {
            PoolBuilder::new()
                .max_size(1)
                .checkout_timeout(100 * MS)
                .idle_timeout(Duration::from_secs(2))
                .build(HttpConnector::http1(), addr)
                .unwrap()
        };
        (build(server.addr()), build(dead))
    });
    let ep = endpoint(server.addr());
    let plain = labels(&ep, &[]);

    // One call: a connection created, one checkout that did not wait.
    let res = pool.clone().oneshot(get()).await.unwrap();
    res.into_body().collect().await.unwrap();
    seen.refresh();
    assert_eq!(seen.gauge(metrics::POOL_MAX, &plain), Some(1.0));
    assert_eq!(seen.counter(metrics::POOL_CREATED, &plain), 1);
    assert_eq!(seen.histogram(metrics::POOL_WAIT_TIME, &plain), [0.0]);

    // A slow call holds the only connection; a second checkout times out after 100 ms.
    let slow = tokio::spawn(pool.clone().oneshot(get()));
    tokio::time::sleep(10 * MS).await;
    let err = pool.clone().oneshot(get()).await.unwrap_err();
    assert!(
        matches!(err, stanchion::Error::PoolTimeout { .. }),
        "{err:?}"
    );
    seen.refresh();
    assert_eq!(seen.counter(metrics::POOL_TIMEOUTS, &plain), 1);
    // A reaper tick while the slow call holds the connection: one active, none idle.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    seen.refresh();
    let state = |s| labels(&ep, &[("http.connection.state", s)]);
    assert_eq!(
        seen.gauge(metrics::OPEN_CONNECTIONS, &state("active")),
        Some(1.0)
    );
    assert_eq!(
        seen.gauge(metrics::OPEN_CONNECTIONS, &state("idle")),
        Some(0.0)
    );
    let res = slow.await.unwrap().unwrap();
    res.into_body().collect().await.unwrap();
    seen.refresh();
    assert_eq!(seen.histogram(metrics::POOL_WAIT_TIME, &plain).len(), 2);

    // After a reaper tick: one connection, idle; nothing waiting; max 1.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    seen.refresh();
    assert_eq!(
        seen.gauge(metrics::OPEN_CONNECTIONS, &state("idle")),
        Some(1.0)
    );
    assert_eq!(
        seen.gauge(metrics::OPEN_CONNECTIONS, &state("active")),
        Some(0.0)
    );
    assert_eq!(seen.gauge(metrics::POOL_PENDING, &plain), Some(0.0));
    assert_eq!(seen.gauge(metrics::POOL_MAX, &plain), Some(1.0));

    // Idle past the idle timeout: closed as idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    seen.refresh();
    let closed = |reason| seen.counter(metrics::POOL_CLOSED, &labels(&ep, &[("reason", reason)]));
    assert_eq!(closed("idle"), 1);
    assert_eq!(closed("broken") + closed("expired") + closed("retired"), 0);
    assert_eq!(
        seen.gauge(metrics::OPEN_CONNECTIONS, &state("idle")),
        Some(0.0)
    );

    // A refused port: one connect failure, on that endpoint's labels only.
    dead_pool.oneshot(get()).await.unwrap_err();
    seen.refresh();
    let dead_ep = endpoint(dead);
    assert_eq!(
        seen.counter(metrics::POOL_CONNECT_FAILURES, &labels(&dead_ep, &[])),
        1
    );
    assert_eq!(seen.counter(metrics::POOL_CONNECT_FAILURES, &plain), 0);

    // A second pool to the same endpoint adds to its gauges; a dropped pool takes away what it
    // added.
    let second: HttpPool = ::metrics::with_local_recorder(&recorder, || {
        PoolBuilder::new()
            .max_size(4)
            .build(HttpConnector::http1(), server.addr())
            .unwrap()
    });
    seen.refresh();
    assert_eq!(seen.gauge(metrics::POOL_MAX, &plain), Some(5.0));
    drop(pool);
    drop(second);
    seen.refresh();
    assert_eq!(seen.gauge(metrics::POOL_MAX, &plain), Some(0.0));
    assert_eq!(
        seen.gauge(metrics::OPEN_CONNECTIONS, &state("idle")),
        Some(0.0)
    );
}

/// A connection the server closes is counted closed as broken when the pool next looks.
#[tokio::test]
async fn a_connection_the_server_closed_is_counted_broken() {
    let recorder = DebuggingRecorder::new();
    let seen = Seen::new(&recorder);
    let server = HttpServer::start(FaultPlan::scripted([Fault::reset(), Fault::ok()])).await;
    let pool: HttpPool = ::metrics::with_local_recorder(&recorder, || {
        PoolBuilder::new()
            .build(HttpConnector::http1(), server.addr())
            .unwrap()
    });
    let ep = endpoint(server.addr());
    pool.clone().oneshot(get()).await.unwrap_err();
    let res = pool.clone().oneshot(get()).await.unwrap();
    res.into_body().collect().await.unwrap();
    seen.refresh();
    let broken = seen.counter(metrics::POOL_CLOSED, &labels(&ep, &[("reason", "broken")]));
    assert_eq!(broken, 1);
    for other in ["idle", "expired", "retired"] {
        let n = seen.counter(metrics::POOL_CLOSED, &labels(&ep, &[("reason", other)]));
        assert_eq!(n, 0, "{other}");
    }
    assert_eq!(seen.counter(metrics::POOL_CREATED, &labels(&ep, &[])), 2);
}

/// A connection past its lifetime is counted closed as expired — also when it expired while
/// busy (retired then, closed when its request finished) — and one that served its maximum
/// number of requests as retired.
#[tokio::test(start_paused = true)]
async fn expired_and_retired_connections_are_counted_by_reason() {
    let recorder = DebuggingRecorder::new();
    let seen = Seen::new(&recorder);
    let server = HttpServer::start(FaultPlan::scripted([
        Fault::ok().latency(Duration::from_secs(3)),
        Fault::ok(),
        Fault::ok(),
    ]))
    .await;
    let (expiring, limited): (HttpPool, HttpPool) =
        ::metrics::with_local_recorder(&recorder, || {
            (
                PoolBuilder::new()
                    .max_lifetime(Duration::from_secs(2))
                    .lifetime_jitter(0.0)
                    .build(HttpConnector::http1(), server.addr())
                    .unwrap(),
                PoolBuilder::new()
                    .max_requests_per_connection(1)
                    .build(HttpConnector::http1(), server.addr())
                    .unwrap(),
            )
        });
    let ep = endpoint(server.addr());
    let closed = |reason| seen.counter(metrics::POOL_CLOSED, &labels(&ep, &[("reason", reason)]));
    // A 3 s call on a connection with a 2 s lifetime: it expires while busy.
    let res = expiring.clone().oneshot(get()).await.unwrap();
    res.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    seen.refresh();
    assert_eq!(closed("expired"), 1);
    let res = limited.clone().oneshot(get()).await.unwrap();
    res.into_body().collect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    seen.refresh();
    assert_eq!(closed("retired"), 1);
    assert_eq!(closed("expired"), 1);
    assert_eq!(closed("broken") + closed("idle"), 0);
}

/// Handles are registered when a pool is built: a pool built before the recorder is installed
/// records nothing, even when it is used while one is.
#[tokio::test]
async fn a_pool_built_before_the_recorder_records_nothing() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let pool: HttpPool = PoolBuilder::new()
        .build(HttpConnector::http1(), server.addr())
        .unwrap();
    let recorder = DebuggingRecorder::new();
    let seen = Seen::new(&recorder);
    {
        // The recorder stays installed on this thread across the call (a current-thread
        // runtime: the call runs here).
        let _installed = ::metrics::set_default_local_recorder(&recorder);
        let res = pool.clone().oneshot(get()).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    assert!(seen.snapshotter.snapshot().into_vec().is_empty());
}

/// Every endpoint's pool is reachable from a client made with `build()`, and endpoints that
/// leave the resolution leave the list at the next refresh.
#[tokio::test(start_paused = true)]
async fn a_client_reaches_every_endpoints_pool() {
    let servers = [
        HttpServer::start(FaultPlan::healthy()).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let resolver = stanchion::balance::StaticResolver::new(servers.iter().map(|s| s.addr()));
    let client = Client::http(Target::resolver(resolver.clone()))
        .build(HttpConnector::<ReplayBody<Full<Bytes>>>::http1())
        .unwrap();
    client.resolved().await;
    for _ in 0..4 {
        let res = client.clone().oneshot(get()).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let stats = client.pool_stats();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats.iter().map(|s| s.checkouts).sum::<u64>(), 4);
    for (s, server) in stats.iter().zip(&servers) {
        assert_eq!(&*s.endpoint, server.addr().to_string());
        assert_eq!(s.created, 1);
    }
    resolver.set([servers[1].addr()]);
    // The next refresh (every 30 s by default) sees it.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let stats = client.pool_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(&*stats[0].endpoint, servers[1].addr().to_string());
}

fn post() -> Request<Full<Bytes>> {
    Request::post("/pay/charges")
        .body(Full::new(Bytes::from_static(b"amount=5")))
        .unwrap()
}

/// The retry family: retries scheduled by kind and calls stopped by reason, per route pattern
/// — attempts used up, a POST not safe to repeat, the budget's refusal, a transparent resend of
/// a never-sent request.
#[tokio::test]
async fn retries_are_counted_by_kind_and_stops_by_reason_per_route() {
    use stanchion::client::{Route, RoutePolicy};
    use stanchion::retry::{Backoff, RetryBudget};

    let recorder = DebuggingRecorder::new();
    let seen = Seen::new(&recorder);
    let server = HttpServer::start(FaultPlan::always(Fault::status(500))).await;
    let fast = Backoff::new(MS, 2 * MS).unwrap();
    let client = ::metrics::with_local_recorder(&recorder, || {
        Client::http(Target::addrs([server.addr()]))
            .backoff(fast.clone())
            .route(Route::path_prefix("/pay"), RoutePolicy::new())
            .build(HttpConnector::<ReplayBody<Full<Bytes>>>::http1())
            .unwrap()
    });
    client.resolved().await;
    let scheduled = |route, kind| {
        seen.counter(
            metrics::RETRY_SCHEDULED,
            &[("route", route), ("kind", kind)],
        )
    };
    let stopped = |route, reason| {
        seen.counter(
            metrics::RETRY_STOPPED,
            &[("route", route), ("reason", reason)],
        )
    };

    // A GET failing with 500 three times: two retries, then every attempt is used.
    let res = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 500);
    seen.refresh();
    assert_eq!(scheduled("default", "attempt"), 2);
    assert_eq!(stopped("default", "attempts_exhausted"), 1);

    // A POST on the /pay route: not safe to repeat, stopped at once, counted on its route.
    let res = client.clone().oneshot(post()).await.unwrap();
    assert_eq!(res.status(), 500);
    seen.refresh();
    assert_eq!(stopped("/pay", "not_safe_to_repeat"), 1);
    assert_eq!(scheduled("/pay", "attempt"), 0);
    assert_eq!(scheduled("default", "attempt"), 2);

    // A budget with no room: the retry is refused by the budget.
    let empty = RetryBudget::builder()
        .ratio(0.0)
        .min_per_second(0)
        .build()
        .unwrap();
    let client = ::metrics::with_local_recorder(&recorder, || {
        Client::http(Target::addrs([server.addr()]))
            .backoff(fast.clone())
            .retry_budget(empty)
            .build(HttpConnector::<ReplayBody<Full<Bytes>>>::http1())
            .unwrap()
    });
    client.resolved().await;
    client.clone().oneshot(get()).await.unwrap();
    seen.refresh();
    assert_eq!(stopped("default", "budget_exhausted"), 1);
    assert_eq!(scheduled("default", "attempt"), 2);

    // A refused port: the first refusal is resent once, for free, before attempts are used.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let client = ::metrics::with_local_recorder(&recorder, || {
        Client::http(Target::addrs([dead]))
            .backoff(fast)
            .max_attempts(1)
            .build(HttpConnector::<ReplayBody<Full<Bytes>>>::http1())
            .unwrap()
    });
    client.resolved().await;
    client.oneshot(get()).await.unwrap_err();
    seen.refresh();
    assert_eq!(scheduled("default", "transparent"), 1);
    assert_eq!(stopped("default", "attempts_exhausted"), 2);
}
