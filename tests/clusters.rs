//! Routes as clusters, over real hyper servers on loopback: a route may send its calls to a
//! cluster of its own — its own pools, target, breakers — and may set its own backoff,
//! retryable statuses and retry budget; everything it leaves unset is the client's.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use stanchion::ConfigError;
use stanchion::client::{Client, Cluster, HttpClient, Route, RoutePolicy, Target};
use stanchion::pool::{HttpConnector, PoolBuilder};
use stanchion::retry::{Backoff, RetryBudget};
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

/// A call read to its end (an HTTP/1 connection goes back to its pool only then): its status.
async fn status(client: HttpClient, path: &'static str) -> u16 {
    let res = client.oneshot(get(path)).await.unwrap();
    let status = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    status
}

fn fast() -> Backoff {
    Backoff::new(MS, 2 * MS).unwrap().seed(3)
}

/// The TCP connections (by accept order) that carried requests under `prefix`.
fn conns(server: &HttpServer, prefix: &str) -> BTreeSet<usize> {
    server
        .recorder()
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with(prefix))
        .map(|r| r.conn.expect("the test server names the connection"))
        .collect()
}

/// The pooling practice: health checks on a pool of their own, 2 connections per endpoint, so
/// a storm of checks neither takes the main pool's connections nor opens more than 2. Over
/// HTTP/1 (one request per connection at a time), 20 concurrent checks held 20 ms each by the
/// servers would open up to 7 connections per endpoint in a shared pool of 10.
#[tokio::test]
async fn a_health_route_keeps_to_its_own_two_connection_pool() {
    let servers = [
        HttpServer::start(FaultPlan::always(Fault::ok().latency(20 * MS))).await,
        HttpServer::start(FaultPlan::always(Fault::ok().latency(20 * MS))).await,
        HttpServer::start(FaultPlan::always(Fault::ok().latency(20 * MS))).await,
    ];
    let client = Client::http(Target::addrs(servers.iter().map(|s| s.addr())))
        .pool(PoolBuilder::new().max_size(10))
        .cluster(
            "health",
            Cluster::new().pool(PoolBuilder::new().max_size(2)),
        )
        .route(
            Route::path_prefix("/health"),
            RoutePolicy::new().cluster("health").without_retries(),
        )
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;

    // Main traffic first: a few calls at once on every endpoint.
    let main: tokio::task::JoinSet<_> = (0..9).map(|_| status(client.clone(), "/work")).collect();
    assert!(main.join_all().await.iter().all(|s| *s == 200));
    let main_before: Vec<_> = client.pool_stats();
    let checks: tokio::task::JoinSet<_> =
        (0..20).map(|_| status(client.clone(), "/health")).collect();
    assert!(checks.join_all().await.iter().all(|s| *s == 200));

    for (i, server) in servers.iter().enumerate() {
        let health = conns(server, "/health");
        let work = conns(server, "/work");
        assert!(!health.is_empty(), "server {i} took no health check");
        assert!(
            health.len() <= 2,
            "server {i}: health checks came on {} connections: {health:?}",
            health.len()
        );
        assert!(
            health.is_disjoint(&work),
            "server {i}: a connection carried both main calls and health checks"
        );
    }
    // The main pool is untouched: no checkout, no connection made for the checks.
    let main_after = client.pool_stats();
    let key = |s: &Vec<stanchion::pool::PoolStats>| {
        s.iter()
            .map(|p| (p.endpoint.to_string(), (p.checkouts, p.created)))
            .collect::<HashMap<_, _>>()
    };
    assert_eq!(key(&main_before), key(&main_after));
    let health = client.cluster_pool_stats("health").unwrap();
    assert_eq!(health.len(), 3);
    assert!(health.iter().all(|p| p.max_size == 2 && p.created <= 2));
    assert_eq!(health.iter().map(|p| p.checkouts).sum::<u64>(), 20);
    assert!(client.cluster_pool_stats("nope").is_none());
}

/// A cluster with a target of its own: its route reaches only its servers, and no other route
/// reaches them.
#[tokio::test]
async fn a_route_with_its_own_target_reaches_only_its_own_servers() {
    let main = [
        HttpServer::start(FaultPlan::healthy()).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let billing = HttpServer::start(FaultPlan::healthy()).await;
    let client = Client::http(Target::addrs(main.iter().map(|s| s.addr())))
        .cluster(
            "billing",
            Cluster::new().target(Target::addrs([billing.addr()])),
        )
        .route(
            Route::path_prefix("/billing"),
            RoutePolicy::new().cluster("billing"),
        )
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    for i in 0..10 {
        let path = if i % 2 == 0 {
            "/billing/invoices"
        } else {
            "/orders"
        };
        let res = client.clone().oneshot(get(path)).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(billing.count(), 5);
    assert!(
        billing
            .recorder()
            .requests()
            .iter()
            .all(|r| r.path == "/billing/invoices")
    );
    for server in &main {
        assert!(
            server
                .recorder()
                .requests()
                .iter()
                .all(|r| r.path == "/orders"),
            "a billing call reached the main servers"
        );
    }
    assert_eq!(main.iter().map(|s| s.count()).sum::<usize>(), 5);
    let billing_endpoints: Vec<_> = client
        .cluster("billing")
        .unwrap()
        .endpoints()
        .into_iter()
        .map(|e| e.addr)
        .collect();
    assert_eq!(billing_endpoints, vec![billing.addr()]);
}

/// A route's retryable statuses, backoff and retry budget are its own; the client's are
/// untouched by it.
#[tokio::test]
async fn a_route_retries_by_its_own_statuses_and_budget() {
    let server = HttpServer::start(FaultPlan::always(Fault::status(418))).await;
    let own_budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_second(1)
        .window(Duration::from_secs(1))
        .build()
        .unwrap();
    let client = Client::http(Target::addrs([server.addr()]))
        .backoff(fast())
        .route(
            Route::path_prefix("/teapot"),
            RoutePolicy::new().retryable_statuses([418]).backoff(fast()),
        )
        .route(
            Route::path_prefix("/frugal"),
            RoutePolicy::new()
                .retryable_statuses([418])
                .retry_budget(own_budget.clone()),
        )
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;

    // The client's statuses do not include 418: one attempt.
    client.clone().oneshot(get("/plain")).await.unwrap();
    assert_eq!(server.count(), 1);
    // The route's do: three attempts, from the client's budget.
    client.clone().oneshot(get("/teapot")).await.unwrap();
    assert_eq!(server.count(), 4);
    assert_eq!(client.retry_budget().stats().withdrawals, 2);
    // The route with a budget of one retry per second: one retry, then refused, and the
    // client's budget is not asked.
    client.clone().oneshot(get("/frugal")).await.unwrap();
    client.clone().oneshot(get("/frugal")).await.unwrap();
    assert_eq!(server.count(), 4 + 2 + 1);
    assert_eq!(own_budget.stats().withdrawals, 1);
    // Refused for the first call's second retry and the second call's first.
    assert_eq!(own_budget.stats().refused, 2);
    assert_eq!(client.retry_budget().stats().withdrawals, 2);
    assert_eq!(client.retry_budget().stats().refused, 0);
}

/// Where the refused setting sits.
fn field(result: Result<impl std::fmt::Debug, ConfigError>) -> String {
    result.expect_err("build accepted it").path().into_owned()
}

#[test]
fn clusters_that_could_not_take_effect_are_refused() {
    let target = || Target::addrs(["127.0.0.1:1".parse().unwrap()]);
    let connector = || HttpConnector::<Full<Bytes>>::http1();
    // A route naming a cluster nobody declared.
    assert_eq!(
        field(
            Client::http(target())
                .route(Route::path_prefix("/a"), RoutePolicy::new().cluster("x"))
                .build(connector())
        ),
        "routes[0].cluster"
    );
    // A cluster no route names.
    assert_eq!(
        field(
            Client::http(target())
                .cluster("x", Cluster::new())
                .build(connector())
        ),
        "clusters.x"
    );
    // A cluster's pool settings with `build_with` (which makes every stack itself).
    assert_eq!(
        field(
            Client::http(target())
                .cluster("x", Cluster::new().pool(PoolBuilder::new().max_size(2)))
                .route(Route::path_prefix("/a"), RoutePolicy::new().cluster("x"))
                .build_with(|_| ())
        ),
        "clusters.x.pool"
    );
    // A cluster's invalid pool.
    assert_eq!(
        field(
            Client::http(target())
                .cluster("x", Cluster::new().pool(PoolBuilder::new().max_size(0)))
                .route(Route::path_prefix("/a"), RoutePolicy::new().cluster("x"))
                .build(connector())
        ),
        "clusters.x.pool.max_size"
    );
    // HTTP statuses on a gRPC client, the client's or a route's.
    assert_eq!(
        field(
            Client::grpc(target())
                .retryable_statuses([503])
                .build(HttpConnector::<Full<Bytes>>::http2())
        ),
        "retryable_statuses"
    );
    assert_eq!(
        field(
            Client::grpc(target())
                .route(
                    Route::grpc_service("a.B"),
                    RoutePolicy::new().retryable_statuses([503])
                )
                .build(HttpConnector::<Full<Bytes>>::http2())
        ),
        "routes[0].retryable_statuses"
    );
    // A status that is no status.
    assert_eq!(
        field(
            Client::http(target())
                .route(
                    Route::path_prefix("/a"),
                    RoutePolicy::new().retryable_statuses([1000])
                )
                .build(connector())
        ),
        "routes[0].retryable_statuses"
    );
    // Declared and used: accepted (declaring again replaces).
    Client::http(target())
        .cluster("x", Cluster::new().pool(PoolBuilder::new().max_size(0)))
        .cluster("x", Cluster::new().pool(PoolBuilder::new().max_size(2)))
        .route(Route::path_prefix("/a"), RoutePolicy::new().cluster("x"))
        .build(connector())
        .unwrap();
}
