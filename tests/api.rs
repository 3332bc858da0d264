//! The API a user holds: every builder setting takes effect or is refused at build time, never
//! silently dropped; knobs mean what their names say; warnings a storm cannot hide. One test per footgun found by trying the
//! crate as a new user, over real servers on loopback.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use stanchion::ConfigError;
use stanchion::balance::{Resolve, ResolveFuture, Resolved, StaticResolver};
use stanchion::breaker::{BreakerState, CircuitBreaker};
use stanchion::bulkhead::{Bulkhead, DEFAULT_PARTITION, Limits};
use stanchion::client::{Client, Target};
use stanchion::pool::{HttpConnector, Pool, PoolBuilder};
use stanchion::retry::Backoff;
use tokio::time::{Instant, sleep};
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::new(Bytes::new())).unwrap()
}

/// One call, its body read to the end; the status.
async fn call<S, B>(client: &S) -> Result<u16, stanchion::Error>
where
    S: tower::Service<Request<Full<Bytes>>, Response = http::Response<B>, Error = stanchion::Error>
        + Clone,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let res = client.clone().oneshot(get()).await?;
    let status = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    Ok(status)
}

#[tokio::test(start_paused = true)]
async fn a_breaker_template_without_a_trip_rule_keeps_ejecting_after_five_failures() {
    let servers = [
        HttpServer::start(FaultPlan::always(Fault::status(500))).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let sick = servers[0].addr();
    // Only the open duration changes: the ejection rule (5 consecutive failures) stays.
    let client = Client::http(Target::addrs([sick, servers[1].addr()]))
        .breaker(CircuitBreaker::builder().open_duration(60 * SEC))
        .without_retries()
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    for _ in 0..20 {
        call(&client).await.unwrap();
    }
    assert_eq!(servers[0].count(), 5, "ejected after 5 failures, not 20");
    let breaker = client.balancer().breaker(sick).unwrap();
    assert_eq!(breaker.state(), BreakerState::Open);
    // The template's open duration holds: still out after the default 30 s, back after 60 s.
    sleep(31 * SEC).await;
    for _ in 0..4 {
        call(&client).await.unwrap();
    }
    assert_eq!(servers[0].count(), 5);
    sleep(30 * SEC).await;
    for _ in 0..4 {
        call(&client).await.unwrap();
    }
    assert!(servers[0].count() > 5, "probed after its 60 s");
}

#[test]
fn a_breaker_rule_that_would_ignore_a_setting_is_refused() {
    let field =
        |b: stanchion::breaker::BreakerBuilder| b.build().err().map(|e| e.field().to_owned());
    let consecutive = || CircuitBreaker::builder().consecutive_failures(5);
    // A run of failures has no rate: each rate setting is refused, before or after the rule.
    assert_eq!(
        field(consecutive().failure_rate(0.3)).as_deref(),
        Some("failure_rate")
    );
    assert_eq!(
        field(consecutive().minimum_calls(10)).as_deref(),
        Some("minimum_calls")
    );
    assert_eq!(
        field(consecutive().slow_calls(SEC, 0.5)).as_deref(),
        Some("slow_calls")
    );
    assert_eq!(
        field(
            CircuitBreaker::builder()
                .failure_rate(0.3)
                .consecutive_failures(5)
        )
        .as_deref(),
        Some("failure_rate")
    );
    // The same settings on a rate window are taken.
    for ok in [
        CircuitBreaker::builder().failure_rate(0.3),
        CircuitBreaker::builder().count_window(50).minimum_calls(10),
        CircuitBreaker::builder()
            .time_window(10 * SEC, 10)
            .slow_calls(SEC, 0.5),
        consecutive().open_duration(SEC).half_open_probes(1),
    ] {
        assert_eq!(field(ok), None);
    }
    // Through the client, as a per-endpoint template.
    let err = Client::http(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .breaker(
            CircuitBreaker::builder()
                .consecutive_failures(3)
                .failure_rate(0.2),
        )
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap_err();
    assert_eq!(err.field(), "failure_rate");
}

#[tokio::test]
async fn concurrency_keeps_the_partitions_declared_before_it() {
    let small = Limits {
        concurrency: 3,
        queue: 2,
        max_wait: 10 * MS,
    };
    let client = Client::http(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .bulkhead(Bulkhead::builder().partition("health", Limits::default()))
        .concurrency(small)
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    let bulkhead = client.bulkhead().unwrap();
    assert!(
        bulkhead.stats("health").is_some(),
        "the declared partition stays"
    );
    assert_eq!(bulkhead.default_stats().limits, small);
    assert_eq!(bulkhead.stats(DEFAULT_PARTITION).unwrap().limits, small);
    // After `without_bulkhead`, `concurrency` turns a bulkhead back on.
    let client = Client::http(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
        .without_bulkhead()
        .concurrency(small)
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    assert_eq!(client.bulkhead().unwrap().default_stats().limits, small);
}

#[test]
fn partitions_by_header_need_a_partition_a_key_can_name() {
    let tenant = http::HeaderName::from_static("x-tenant");
    let build = |bulkhead: Option<stanchion::bulkhead::BulkheadBuilder>| {
        let builder = Client::http(Target::addrs(["127.0.0.1:1".parse().unwrap()]))
            .partition_by_header(tenant.clone());
        match bulkhead {
            Some(b) => builder.bulkhead(b),
            None => builder.without_bulkhead(),
        }
        .build(HttpConnector::<Full<Bytes>>::http1())
        .map(|_| ())
    };
    let refused = |r: Result<(), ConfigError>| r.unwrap_err().field().to_owned();
    assert_eq!(refused(build(None)), "partition_by_header");
    assert_eq!(
        refused(build(Some(Bulkhead::builder()))),
        "partition_by_header"
    );
    build(Some(Bulkhead::builder().per_key(16, Limits::default()))).unwrap();
    build(Some(
        Bulkhead::builder().partition("gold", Limits::default()),
    ))
    .unwrap();
}

#[tokio::test]
async fn the_client_retries_overload_without_a_hint_only_when_told() {
    for (retry, expected) in [(false, 1), (true, 3)] {
        let server = HttpServer::start(FaultPlan::always(Fault::status(429))).await;
        let client = Client::http(Target::addrs([server.addr()]))
            .backoff(Backoff::new(MS, 2 * MS).unwrap())
            .retry_overload_without_hint(retry)
            .build(HttpConnector::<Full<Bytes>>::http1())
            .unwrap();
        client.resolved().await;
        assert_eq!(call(&client).await.unwrap(), 429);
        assert_eq!(
            server.count(),
            expected,
            "retry_overload_without_hint({retry})"
        );
    }
}

#[tokio::test]
async fn static_resolver_set_takes_effect_on_the_next_call() {
    let servers = [
        HttpServer::start(FaultPlan::healthy()).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let resolver = StaticResolver::new([servers[0].addr()]);
    let client = Client::http(Target::resolver(resolver.clone()))
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    call(&client).await.unwrap();
    assert_eq!((servers[0].count(), servers[1].count()), (1, 0));
    // No refresh interval to wait out: the next call already goes to the new list.
    resolver.set([servers[1].addr()]);
    for _ in 0..3 {
        call(&client).await.unwrap();
    }
    assert_eq!((servers[0].count(), servers[1].count()), (1, 3));
    resolver.set([]);
    assert!(matches!(
        call(&client).await,
        Err(stanchion::Error::NoEndpoints { .. })
    ));
}

/// A resolver that answers whatever list it holds now, and says nothing when it changes.
#[derive(Clone, Default)]
struct Quiet(Arc<Mutex<Vec<SocketAddr>>>);

impl Resolve for Quiet {
    fn resolve(&self) -> ResolveFuture {
        let addrs = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(Resolved { addrs, ttl: None }) })
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_now_resolves_at_once_and_waits_for_the_answer() {
    let servers = [
        HttpServer::start(FaultPlan::healthy()).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let quiet = Quiet::default();
    *quiet.0.lock().unwrap() = vec![servers[0].addr()];
    let client = Client::http(Target::resolver(quiet.clone()))
        .refresh_interval(3600 * SEC)
        .build(HttpConnector::<Full<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    *quiet.0.lock().unwrap() = vec![servers[1].addr()];
    call(&client).await.unwrap();
    assert_eq!(
        servers[0].count(),
        1,
        "a quiet resolver's change waits for a refresh"
    );
    let start = Instant::now();
    client.balancer().refresh_now().await;
    assert!(start.elapsed() < SEC, "no refresh interval waited out");
    call(&client).await.unwrap();
    assert_eq!((servers[0].count(), servers[1].count()), (1, 1));
    // Again, with the refresh task idle in its hour-long sleep.
    *quiet.0.lock().unwrap() = vec![servers[0].addr()];
    client.balancer().refresh_now().await;
    call(&client).await.unwrap();
    assert_eq!((servers[0].count(), servers[1].count()), (2, 1));
}

/// Storm-prone WARNs are rate-limited one a second per kind of event: a storm of checkout
/// timeouts does not hold back the first plaintext misconfiguration in the same second (one
/// gate for every event of a pool once hid it at DEBUG). Here, in a test binary where no other
/// test hits that event's callsite: `tracing` caches a callsite's interest process-wide, and a
/// thread-local subscriber racing another thread's first hit can miss events.
#[tokio::test(start_paused = true)]
async fn a_storm_of_checkout_timeouts_does_not_hide_another_warning() {
    let server = HttpServer::start(FaultPlan::always(Fault::ok().latency(10 * SEC))).await;
    let pool: Pool<HttpConnector<Full<Bytes>>, SocketAddr> = PoolBuilder::new()
        .max_size(1)
        .checkout_timeout(10 * MS)
        .build(HttpConnector::http1(), server.addr())
        .unwrap();
    // Sends `req` through the pool and reads the whole body.
    async fn fetch(
        pool: &Pool<HttpConnector<Full<Bytes>>, SocketAddr>,
        req: Request<Full<Bytes>>,
    ) -> Result<Bytes, stanchion::Error> {
        let res = pool.clone().oneshot(req).await?;
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(stanchion::Error::from_inner)?;
        Ok(body.to_bytes())
    }
    let plaintext = support::warnings::WarnCounter::install("https request refused");
    let holder = tokio::spawn({
        let pool = pool.clone();
        async move { fetch(&pool, get()).await }
    });
    sleep(MS).await;
    for _ in 0..5 {
        let err = fetch(&pool, get()).await.unwrap_err();
        assert!(
            matches!(err, stanchion::Error::PoolTimeout { .. }),
            "{err:?}"
        );
    }
    let start = Instant::now();
    let https = Request::get("https://payments.example/v1/charges")
        .body(Full::default())
        .unwrap();
    fetch(&pool, https).await.unwrap_err();
    assert!(start.elapsed() < SEC, "within the timeouts' second");
    assert_eq!(plaintext.count(), 1);
    holder.abort();
}

/// The types a user holds have names: a helper can return the client, its response and its
/// body, and spawn the call's future — without spelling the stack's nesting.
mod nameable {
    use super::*;
    use stanchion::client::{HttpClient, Response, ResponseBody, ResponseFuture};

    fn payments(addr: SocketAddr) -> Result<HttpClient, ConfigError> {
        // `build` takes the connector over the requests' own body type.
        Client::http(Target::addrs([addr])).build(HttpConnector::http1())
    }

    fn send(client: &HttpClient) -> ResponseFuture<HttpClient, Full<Bytes>> {
        tower::Service::call(&mut client.clone(), get())
    }

    async fn body_of(res: Response<HttpClient, Full<Bytes>>) -> Bytes {
        let body: ResponseBody<HttpClient, Full<Bytes>> = res.into_body();
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_helper_returns_the_client_its_response_and_its_body() {
        let server = HttpServer::start(FaultPlan::healthy()).await;
        let client = payments(server.addr()).unwrap();
        client.resolved().await;
        // The future is `Send + 'static`: it can be spawned.
        let res = tokio::spawn(send(&client)).await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
        body_of(res).await;
        assert_eq!(server.count(), 1);
    }
}

/// A resolver that pushes its changes, and whose lookups wait for a gate: a lookup that read
/// the list before a push, and answers after it, is older than the push.
#[derive(Clone)]
struct Pushing {
    list: Arc<Mutex<Vec<SocketAddr>>>,
    attached: Arc<Mutex<Vec<stanchion::balance::Updates>>>,
    gate: Arc<tokio::sync::Semaphore>,
    lookups: Arc<std::sync::atomic::AtomicUsize>,
    /// Lookups fail at once while set.
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Resolve for Pushing {
    fn resolve(&self) -> ResolveFuture {
        let addrs = self.list.lock().unwrap().clone();
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(async { Err("the registry is down".into()) });
        }
        let gate = self.gate.clone();
        Box::pin(async move {
            gate.acquire().await.unwrap().forget();
            Ok(Resolved { addrs, ttl: None })
        })
    }

    fn attach(&self, updates: stanchion::balance::Updates) {
        self.attached.lock().unwrap().push(updates);
    }
}

impl Pushing {
    fn new() -> Self {
        Pushing {
            list: Arc::default(),
            attached: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            lookups: Arc::default(),
            failing: Arc::default(),
        }
    }

    fn set(&self, addrs: Vec<SocketAddr>) {
        *self.list.lock().unwrap() = addrs.clone();
        for updates in self.attached.lock().unwrap().iter() {
            updates.push(addrs.clone());
        }
    }
}

/// Endpoints that answer at once.
type Answer =
    fn(Request<()>) -> std::future::Ready<Result<http::Response<()>, std::convert::Infallible>>;
type Builder = stanchion::balance::BalancerBuilder<
    tower::util::ServiceFn<Answer>,
    stanchion::classify::HttpClassifier,
>;

/// A balancer over `resolver`, its settings changed by `tune`.
fn over(
    resolver: &Pushing,
    tune: impl FnOnce(Builder) -> Builder,
) -> stanchion::balance::Balancer<tower::util::ServiceFn<Answer>, stanchion::classify::HttpClassifier>
{
    fn answer(
        _: Request<()>,
    ) -> std::future::Ready<Result<http::Response<()>, std::convert::Infallible>> {
        std::future::ready(Ok(http::Response::new(())))
    }
    let builder = stanchion::balance::Balancer::builder(
        resolver.clone(),
        |_| tower::service_fn(answer as Answer),
        stanchion::classify::HttpClassifier::new(),
    );
    tune(builder).build().unwrap()
}

/// An answer read before a push and applied after it must not undo the push: the refresh
/// task's lookup of `[a]` was in flight when `[b]` was pushed; when it answers, `[b]` stays.
#[tokio::test]
async fn a_lookup_older_than_a_push_does_not_undo_it() {
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    let resolver = Pushing::new();
    *resolver.list.lock().unwrap() = vec![a];
    resolver.gate.add_permits(1);
    let balancer = over(&resolver, |b| b);
    balancer.resolved().await;
    let now = |lb: &stanchion::balance::Balancer<_, _>| -> Vec<SocketAddr> {
        lb.endpoints().iter().map(|e| e.addr).collect()
    };
    assert_eq!(now(&balancer), [a]);
    // A lookup reads `[a]` and waits at the gate; meanwhile `[b]` is pushed.
    let refresh = tokio::spawn({
        let balancer = balancer.clone();
        async move { balancer.refresh_now().await }
    });
    for _ in 0..1000 {
        if resolver.lookups.load(std::sync::atomic::Ordering::SeqCst) == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        resolver.lookups.load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    resolver.set(vec![b]);
    assert_eq!(now(&balancer), [b]);
    // The old lookup answers now: it is not applied.
    resolver.gate.add_permits(1);
    refresh.await.unwrap();
    assert_eq!(now(&balancer), [b]);
}

/// A resolver whose lookups fail but which pushes answers is not stale: its pushes restart the
/// staleness clock (one episode, no repeated warning), and its endpoints are never given up
/// however long the lookups fail.
#[tokio::test(start_paused = true)]
async fn pushed_answers_keep_a_failing_resolvers_endpoints() {
    let (a, b): (SocketAddr, SocketAddr) = (
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
    );
    let resolver = Pushing::new();
    *resolver.list.lock().unwrap() = vec![a];
    resolver.gate.add_permits(10_000);
    let balancer = over(&resolver, |b| {
        b.refresh_interval(SEC).max_staleness(5 * SEC)
    });
    balancer.resolved().await;
    resolver
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // 30 s of failing lookups, six times the maximum staleness, with a push every 2 s.
    for i in 0..15 {
        sleep(2 * SEC).await;
        resolver.set(vec![if i % 2 == 0 { b } else { a }]);
        assert_eq!(balancer.endpoints().len(), 1, "round {i}");
    }
    let stats = balancer.resolver_stats();
    assert!(stats.errors >= 10, "{stats:?}");
    assert_eq!((stats.given_up, stats.stale_episodes), (0, 1), "{stats:?}");
}
