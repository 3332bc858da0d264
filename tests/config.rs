//! Configuration as data (feature `serde`): the default configuration is the documented one, a
//! builder's configuration survives serde unchanged and decides the same over a real server,
//! and every bad field is an error naming its path.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use stanchion::bulkhead::{AdaptiveLimit, Bulkhead, Limits};
use stanchion::client::{Client, ClientConfig, Cluster, HttpClient, Route, RoutePolicy, Target};
use stanchion::pool::{HttpConnector, PoolBuilder};
use stanchion::retry::{Backoff, RetryBudget, UnavailablePolicy};
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);

/// docs/configuration.md shows the defaults once, as JSON: it is exactly what
/// `ClientConfig::default()` writes.
#[test]
fn the_default_configuration_is_the_documented_one() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let start = doc
        .find("<!-- default-config -->\n```json\n")
        .expect("the marker")
        + "<!-- default-config -->\n```json\n".len();
    let end = start + doc[start..].find("\n```").unwrap();
    let written = serde_json::to_string_pretty(&ClientConfig::default()).unwrap();
    assert_eq!(
        written,
        &doc[start..end],
        "docs/configuration.md's defaults differ from ClientConfig::default()"
    );
    // And the documented text reads back as the defaults.
    let read = ClientConfig::from_json(&doc[start..end]).unwrap();
    assert_eq!(serde_json::to_string_pretty(&read).unwrap(), written);
}

/// A builder turning every knob away from its default (and declaring clusters and routes).
fn rich(target: Target) -> stanchion::client::ClientBuilder<stanchion::classify::HttpClassifier> {
    Client::http(target)
        .name("ledger")
        .deadline(Duration::from_secs(4))
        .per_try_timeout(Duration::from_millis(1500))
        .timeout_header(http::HeaderName::from_static("x-timeout"))
        .max_attempts(4)
        .backoff(
            Backoff::new(MS, 3 * MS)
                .unwrap()
                .decorrelated()
                .multiplier(3.0)
                .unwrap(),
        )
        .retry_budget(
            RetryBudget::builder()
                .ratio(0.5)
                .min_per_second(20)
                .window(Duration::from_secs(5))
                .name("ledger-budget")
                .build()
                .unwrap(),
        )
        .retryable_statuses([500, 503, 418])
        .unavailable(UnavailablePolicy::AnyEndpoint)
        .retry_overload_without_hint(true)
        .retry_per_try_timeouts(true)
        .wait_for_ready(true)
        .bulkhead(
            Bulkhead::builder()
                .limits(Limits {
                    concurrency: 40,
                    queue: 5,
                    max_wait: Duration::from_millis(200),
                })
                .partition(
                    "health",
                    Limits {
                        concurrency: 2,
                        queue: 0,
                        max_wait: Duration::ZERO,
                    },
                )
                .adaptive(AdaptiveLimit {
                    slow_call: Some(Duration::from_millis(900)),
                    ..AdaptiveLimit::default()
                })
                .per_key(
                    64,
                    Limits {
                        concurrency: 3,
                        queue: 1,
                        max_wait: Duration::from_millis(20),
                    },
                )
                .release_at_head(),
        )
        .breaker(
            stanchion::breaker::CircuitBreaker::builder()
                .count_window(50)
                .failure_rate(0.25)
                .minimum_calls(10)
                .slow_calls(Duration::from_secs(2), 0.5)
                .open_duration(Duration::from_millis(30))
                .growing_open_duration(2.0, Duration::from_secs(60))
                .open_jitter(0.2)
                .half_open_probes(2)
                .timeout_floor(Duration::from_millis(150))
                .record_at(stanchion::breaker::RecordAt::Head),
        )
        .max_ejection(0.4)
        .panic_threshold(0.2)
        .pool(
            PoolBuilder::new()
                .max_size(7)
                .min_idle(1)
                .checkout_timeout(Duration::from_millis(700))
                .idle_timeout(Duration::from_secs(9))
                .max_lifetime(Duration::from_secs(600))
                .lifetime_jitter(0.3)
                .max_requests_per_connection(1000)
                .max_streams_per_connection(50)
                .max_connecting(2)
                .seed(42),
        )
        .balance(stanchion::balance::Policy::LeastRequest)
        .refresh_interval(Duration::from_secs(12))
        .max_staleness(Duration::from_secs(99))
        .drain_window(Duration::from_secs(3))
        .partition_by_header(http::HeaderName::from_static("x-tenant"))
        .idempotency_keys(true)
        .idempotency_header(http::HeaderName::from_static("x-key"))
        .idempotency_key_format(stanchion::idempotency::KeyFormat::Quoted)
        .replay_limit(1024)
        .cluster(
            "health",
            Cluster::new()
                .pool(PoolBuilder::new().max_size(2))
                .without_ejection(),
        )
        .route(
            Route::path_prefix("/health"),
            RoutePolicy::new()
                .cluster("health")
                .partition("health")
                .without_retries()
                .without_per_try_timeout()
                .deadline(Duration::from_millis(300)),
        )
        .route(
            Route::path_prefix("/v1/charges"),
            RoutePolicy::new()
                .idempotency_keys(true)
                .retryable_statuses([409, 503])
                .wait_for_ready(false)
                .retry_per_try_timeouts(false)
                .without_deadline(),
        )
        .route(
            Route::grpc_service("pkg.Svc"),
            RoutePolicy::new()
                .max_attempts(2)
                .backoff(Backoff::default()),
        )
        .route(
            Route::grpc_method("pkg.Svc", "Get"),
            RoutePolicy::new().retry_budget(RetryBudget::throttling(8.0, 0.25).build().unwrap()),
        )
}

fn target() -> Target {
    Target::addrs(["127.0.0.1:1".parse().unwrap()])
}

/// builder → config → JSON → config → `configure` → config: nothing lost, nothing changed, on
/// every knob turned; and the JSON reads back to the same JSON.
#[test]
fn a_builder_survives_serde_unchanged() {
    let first = rich(target()).config();
    let json = serde_json::to_string_pretty(&first).unwrap();
    let read = ClientConfig::from_json(&json).unwrap();
    assert_eq!(serde_json::to_string_pretty(&read).unwrap(), json);
    let rebuilt = Client::http(target()).configure(read).unwrap().config();
    assert_eq!(serde_json::to_string_pretty(&rebuilt).unwrap(), json);
    // Every knob was turned, nested ones too: no leaf of the rich configuration is a default.
    let defaults = serde_json::to_value(ClientConfig::default()).unwrap();
    let rich = serde_json::to_value(&first).unwrap();
    let mut leaves = Vec::new();
    leaves_of(&defaults, String::new(), &mut leaves);
    assert!(leaves.len() > 30, "{leaves:?}");
    for (path, value) in &leaves {
        if path == "/retryable_codes" {
            continue; // gRPC only: below
        }
        assert_ne!(
            rich.pointer(path),
            Some(value),
            "`{path}` was left at its default: the round trip does not cover it"
        );
    }
    // And a route's three-way settings survive: absent, "off" (none of its own), a value.
    assert!(json.contains(r#""per_try_timeout": "off""#));
    assert!(json.contains(r#""deadline": "off""#));

    // gRPC codes, written as names, read back from names in any case or numbers.
    use stanchion::classify::{GrpcCode, GrpcCodes};
    let codes = GrpcCodes::from_iter([GrpcCode::Unavailable, GrpcCode::Aborted]);
    let grpc = Client::grpc(target()).retryable_codes(codes).config();
    let json = serde_json::to_string(&grpc).unwrap();
    assert!(
        json.contains(r#""retryable_codes":["ABORTED","UNAVAILABLE"]"#),
        "{json}"
    );
    let back = Client::grpc(target())
        .configure(ClientConfig::from_json(&json).unwrap())
        .unwrap()
        .config();
    assert_eq!(back.retryable_codes, Some(codes));
    let numbers = ClientConfig::from_json(r#"{"retryable_codes": [14, "aborted"]}"#).unwrap();
    assert_eq!(numbers.retryable_codes, Some(codes));
}

/// Every leaf of a JSON value, as (JSON pointer, value).
fn leaves_of(value: &serde_json::Value, at: String, out: &mut Vec<(String, serde_json::Value)>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                leaves_of(v, format!("{at}/{key}"), out);
            }
        }
        other => out.push((at, other.clone())),
    }
}

/// TOML has no null: what is turned off is written `"off"`, so a client without a deadline,
/// per-try timeout or bulkhead (and a route without its own deadline) comes back without
/// them, and every other knob comes back as it was.
#[test]
fn a_configuration_survives_toml() {
    let builder = rich(target()).without_deadline().without_bulkhead();
    let first = builder.config();
    assert_eq!(first.deadline, None);
    assert!(first.bulkhead.is_none());
    let text = toml::to_string(&first).unwrap();
    assert!(text.contains(r#"deadline = "off""#), "{text}");
    assert!(text.contains(r#"bulkhead = "off""#), "{text}");
    let read = ClientConfig::deserialize_from(toml::Deserializer::parse(&text).unwrap()).unwrap();
    assert_eq!(read.deadline, None);
    assert!(read.bulkhead.is_none());
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        serde_json::to_value(&first).unwrap()
    );
    // `null` is read as "off" too (JSON written before "off" existed).
    let old = ClientConfig::from_json(
        r#"{"deadline": null, "bulkhead": null, "routes": [{"route": {"path_prefix": "/a"}, "deadline": null}]}"#,
    )
    .unwrap();
    assert_eq!(old.deadline, None);
    assert!(old.bulkhead.is_none());
    assert_eq!(old.routes[0].deadline, Some(None));
    // Errors still name the path from TOML.
    let err = ClientConfig::deserialize_from(
        toml::Deserializer::parse("[pool]\nmax_size = \"ten\"\n").unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.path(), "pool.max_size");
    let err = ClientConfig::from_json(r#"{"bulkhead": "on"}"#).unwrap_err();
    assert_eq!(err.path(), "bulkhead");
}

/// Targets are data when they are (addresses, DNS), written as such for the client and each
/// cluster; a resolver of your own is written `"code"` and is never replaced by another
/// target: `configure` keeps the builder's, and a builder without one is an error.
#[test]
fn cluster_targets_are_written_or_refused_never_swapped() {
    let own = "127.0.0.2:9".parse().unwrap();
    let builder = Client::http(target())
        .cluster("fixed", Cluster::new().target(Target::addrs([own])))
        .cluster(
            "custom",
            Cluster::new().target(Target::resolver(stanchion::balance::StaticResolver::new([
                own,
            ]))),
        )
        .route(
            Route::path_prefix("/f"),
            RoutePolicy::new().cluster("fixed"),
        )
        .route(
            Route::path_prefix("/c"),
            RoutePolicy::new().cluster("custom"),
        );
    let config = builder.config();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["target"]["addrs"][0], "127.0.0.1:1");
    assert_eq!(
        json["clusters"]["fixed"]["target"]["addrs"][0],
        "127.0.0.2:9"
    );
    assert_eq!(json["clusters"]["custom"]["target"], "code");
    // Read into a builder that holds the custom resolver: kept.
    let kept = builder.configure(config.clone()).unwrap();
    assert_eq!(serde_json::to_value(kept.config()).unwrap(), json);
    // Read into a new client: the custom cluster cannot be made from data.
    let err = Client::http_from(config.clone()).unwrap_err();
    assert_eq!(err.path(), "clusters.custom.target");
    let err = Client::http(target()).configure(config).unwrap_err();
    assert_eq!(err.path(), "clusters.custom.target");
    // A cluster whose target is left out resolves the client's.
    let read = ClientConfig::from_json(
        r#"{"clusters": {"h": {}}, "routes": [{"route": {"path_prefix": "/h"}, "cluster": "h"}]}"#,
    )
    .unwrap();
    let json =
        serde_json::to_value(Client::http(target()).configure(read).unwrap().config()).unwrap();
    assert!(json["clusters"]["h"].get("target").is_none(), "{json}");
}

/// What each call did: its status and how many requests the server saw for it.
async fn scenario(client: HttpClient, server: &HttpServer) -> Vec<(u16, usize)> {
    let mut seen = Vec::new();
    for (method, path) in [
        ("GET", "/orders/1"),
        ("GET", "/orders/2"),
        ("POST", "/orders"),
        ("POST", "/v1/charges"),
        ("GET", "/health"),
        ("GET", "/orders/3"),
        ("POST", "/v1/charges"),
        ("GET", "/orders/4"),
    ] {
        let before = server.count();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let status = match client.clone().oneshot(req).await {
            Ok(res) => {
                let status = res.status().as_u16();
                res.into_body().collect().await.unwrap();
                status
            }
            Err(_) => 0,
        };
        seen.push((status, server.count() - before));
    }
    seen
}

/// The same script against two servers, one client built by the builder and one from its
/// configuration read back from JSON: the same answers after the same number of attempts.
#[tokio::test]
async fn a_builder_survives_serde_and_decides_the_same() {
    let script = || {
        FaultPlan::scripted([
            Fault::status(503),
            Fault::status(503),
            Fault::ok(),
            Fault::status(418),
            Fault::status(418),
            Fault::status(500),
            Fault::status(409),
            Fault::status(503),
            Fault::ok(),
            Fault::status(503),
            Fault::status(500),
            Fault::status(503),
            Fault::status(500),
            Fault::status(418),
            Fault::ok(),
            Fault::status(429),
        ])
    };
    let built = rich;
    let a = HttpServer::start(script()).await;
    let b = HttpServer::start(script()).await;
    let by_builder = built(Target::addrs([a.addr()]))
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    let json = serde_json::to_string(&built(Target::addrs([b.addr()])).config()).unwrap();
    let by_config = Client::http(Target::addrs([b.addr()]))
        .configure(ClientConfig::from_json(&json).unwrap())
        .unwrap()
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    let seen_a = scenario(by_builder, &a).await;
    let seen_b = scenario(by_config, &b).await;
    assert_eq!(seen_a, seen_b);
    // The script exercised retries (a call took more than one attempt) and refusals.
    assert!(seen_a.iter().any(|(_, n)| *n > 1), "{seen_a:?}");
    assert!(
        seen_a.iter().any(|(s, n)| *s != 200 && *n == 1),
        "{seen_a:?}"
    );
}

/// Each bad field is an error whose path says where it is, whether reading finds it (a type,
/// an unknown field) or `build` does (a value the builders refuse).
#[test]
fn every_bad_field_names_its_path() {
    let cases: &[(&str, &str)] = &[
        (r#"{"pool": {"max_size": "ten"}}"#, "pool.max_size"),
        (r#"{"pool": {"max_sise": 3}}"#, "pool.max_sise"),
        (r#"{"deadline": "30"}"#, "deadline"),
        (r#"{"deadline": 30}"#, "deadline"),
        (r#"{"max_attempts": -1}"#, "max_attempts"),
        (
            r#"{"retry_budget": {"mode": "ratio", "ratio": 11}}"#,
            "retry_budget",
        ),
        (
            r#"{"retry_budget": {"mode": "bucket"}}"#,
            "retry_budget.mode",
        ),
        (r#"{"backoff": {"base": "1s", "cap": "1ms"}}"#, "backoff"),
        (r#"{"retryable_codes": ["NOPE"]}"#, "retryable_codes"),
        (
            r#"{"clusters": {"h": {"pool": {"max_size": []}}}}"#,
            "clusters.h.pool.max_size",
        ),
        (
            r#"{"routes": [{"route": {"path_prefix": "/a"}}, {"route": {"path_prefix": "/b"}, "deadline": 5}]}"#,
            "routes[1].deadline",
        ),
        (
            r#"{"routes": [{"route": {"prefix": "/a"}}]}"#,
            "routes[0].route",
        ),
        (
            r#"{"breaker": {"window": {"count": {"calls": 10}}, "failure_rat": 0.5}}"#,
            "breaker.failure_rat",
        ),
        (r#"{"target": {"addrs": ["nowhere"]}}"#, "target.addrs[0]"),
        (
            r#"{"bulkhead": {"limits": {"concurrency": 1, "queue": 0, "max_wait": "1s", "x": 1}}}"#,
            "bulkhead.limits.x",
        ),
        (r#"{"nope": 1}"#, "nope"),
        (r#""a string""#, "config"),
        (r#"{} trailing"#, "config"),
    ];
    for (json, path) in cases {
        let err = ClientConfig::from_json(json).expect_err(json);
        assert_eq!(err.path(), *path, "{json}: {err}");
    }

    // Values the builders refuse: found by `build`, at the same paths.
    let built = |json: &str| {
        let mut config = ClientConfig::from_json(json).unwrap();
        config.target = Some(stanchion::client::TargetConfig::Addrs(vec![
            "127.0.0.1:1".parse().unwrap(),
        ]));
        Client::http_from(config).and_then(|b| b.build(HttpConnector::<Full<Bytes>>::http1()))
    };
    let cases: &[(&str, &str)] = &[
        (r#"{"pool": {"max_size": 0}}"#, "pool.max_size"),
        (r#"{"max_attempts": 0}"#, "max_attempts"),
        (r#"{"deadline": "0s"}"#, "deadline"),
        (r#"{"max_ejection": 1.5}"#, "max_ejection"),
        (
            r#"{"clusters": {"health": {"pool": {"max_size": 0}}}, "routes": [{"route": {"path_prefix": "/h"}, "cluster": "health"}]}"#,
            "clusters.health.pool.max_size",
        ),
        (
            r#"{"clusters": {"health": {"breaker": {"window": {"count": {"calls": 0}}}}}, "routes": [{"route": {"path_prefix": "/h"}, "cluster": "health"}]}"#,
            "clusters.health.breaker.window.count.calls",
        ),
        (r#"{"clusters": {"unused": {}}}"#, "clusters.unused"),
        (
            r#"{"routes": [{"route": {"path_prefix": "/a"}}, {"route": {"path_prefix": "/b"}, "deadline": "0s"}]}"#,
            "routes[1].deadline",
        ),
        (
            r#"{"routes": [{"route": {"path_prefix": "/a"}, "max_attempts": 11}]}"#,
            "routes[0].max_attempts",
        ),
        (
            r#"{"routes": [{"route": {"path_prefix": "v1"}}]}"#,
            "routes[0].route",
        ),
        (
            r#"{"routes": [{"route": {"path_prefix": "/a"}}, {"route": {"path_prefix": "/a"}}]}"#,
            "routes[1].route",
        ),
        (
            r#"{"routes": [{"route": {"path_prefix": "/a"}, "cluster": "nope"}]}"#,
            "routes[0].cluster",
        ),
        (
            r#"{"routes": [{"route": {"path_prefix": "/a"}, "partition": "nope"}]}"#,
            "routes[0].partition",
        ),
        (
            r#"{"routes": [{"route": {"path_prefix": "/a"}, "retryable_statuses": [99]}]}"#,
            "routes[0].retryable_statuses",
        ),
        (
            r#"{"breaker": {"window": {"count": {"calls": 0}}}}"#,
            "breaker.window.count.calls",
        ),
        (
            r#"{"bulkhead": {"limits": {"concurrency": 0, "queue": 0, "max_wait": "1s"}}}"#,
            "bulkhead.limits.concurrency",
        ),
        (
            r#"{"bulkhead": {"partitions": [{"name": "a", "limits": {"concurrency": 1, "queue": 0, "max_wait": "1s"}}, {"name": "b", "limits": {"concurrency": 1, "queue": 0, "max_wait": "2h"}}]}}"#,
            "bulkhead.partitions[1].limits.max_wait",
        ),
        (
            r#"{"bulkhead": {"per_key": {"max": 10, "limits": {"concurrency": 1, "queue": 99999999, "max_wait": "1s"}}}}"#,
            "bulkhead.per_key.limits.queue",
        ),
        (
            r#"{"breaker": {"window": {"time": {"size": "2h", "buckets": 10}}}}"#,
            "breaker.window.time.size",
        ),
        (r#"{"retryable_codes": ["UNAVAILABLE"]}"#, "retryable_codes"),
        (
            r#"{"partition_by_header": "x-tenant"}"#,
            "partition_by_header",
        ),
    ];
    for (json, path) in cases {
        let err = built(json).expect_err(json);
        assert_eq!(err.path(), *path, "{json}: {err}");
    }
    // A configuration without a target, given to `http_from`.
    let err = Client::http_from(ClientConfig::default()).unwrap_err();
    assert_eq!(err.path(), "target");
}

/// Budgets are shared by name: two routes given clones of one budget in code share it again
/// after the round trip (a throttling budget of 4 tokens against a server that always answers
/// 500: route /a's call makes 2 attempts and leaves 2 tokens, so route /b's makes 1 — with a
/// budget each, it would make 2 as well).
#[tokio::test]
async fn routes_sharing_a_budget_share_it_after_the_round_trip() {
    let server = HttpServer::start(FaultPlan::always(Fault::status(500))).await;
    let shared = RetryBudget::throttling(4.0, 0.1)
        .name("shared")
        .build()
        .unwrap();
    let attempts = attempts_after_round_trip(&server, [shared.clone(), shared]).await;
    assert_eq!(attempts, [2, 1]);
    // Budgets with no name of their own stay apart: each route's call makes 2 attempts.
    let apart = || RetryBudget::throttling(4.0, 0.1).build().unwrap();
    let attempts = attempts_after_round_trip(&server, [apart(), apart()]).await;
    assert_eq!(attempts, [2, 2]);
}

/// Routes `/a` and `/b` with `budgets`, through `config()` → JSON → `configure`: how many
/// attempts one call on each makes against `server`.
async fn attempts_after_round_trip(server: &HttpServer, budgets: [RetryBudget; 2]) -> Vec<usize> {
    let [a, b] = budgets;
    let builder = Client::http(Target::addrs([server.addr()]))
        .max_attempts(5)
        .backoff(Backoff::new(MS, 2 * MS).unwrap())
        .route(Route::path_prefix("/a"), RoutePolicy::new().retry_budget(a))
        .route(Route::path_prefix("/b"), RoutePolicy::new().retry_budget(b));
    let json = serde_json::to_string(&builder.config()).unwrap();
    let client = Client::http(Target::addrs([server.addr()]))
        .configure(ClientConfig::from_json(&json).unwrap())
        .unwrap()
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let mut attempts = Vec::new();
    for path in ["/a", "/b"] {
        let before = server.count();
        let res = client
            .clone()
            .oneshot(Request::get(path).body(Full::new(Bytes::new())).unwrap())
            .await;
        if let Ok(res) = res {
            assert_eq!(res.status(), 500);
        }
        attempts.push(server.count() - before);
    }
    attempts
}
