//! Endpoints and resolution over real servers under paused time: no endpoints fails at once,
//! a call made before the first resolution waits for it, a resolver outage keeps the last known
//! endpoints (until the maximum staleness), and an address that flaps keeps its state.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use stanchion::Error;
use stanchion::balance::{DnsResolver, Resolve, ResolveFuture, Resolved, StaticResolver};
use stanchion::breaker::BreakerState;
use stanchion::classify::HttpClassifier;
use stanchion::client::{Client, Target};
use stanchion::error::NoEndpointsReason;
use stanchion::pool::{HttpConnector, Pool};
use stanchion::retry::ReplayBody;
use tokio::time::{Instant, sleep};
use tower::ServiceExt;

use support::dns_server::DnsServer;
use support::faults::FaultPlan;
use support::http_server::HttpServer;
use support::warnings::WarnCounter;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Body = ReplayBody<Empty<Bytes>>;

fn get() -> Request<Empty<Bytes>> {
    Request::get("/").body(Empty::new()).unwrap()
}

fn no_endpoints(result: Result<http::Response<impl Sized>, Error>) -> NoEndpointsReason {
    match result {
        Err(Error::NoEndpoints { reason, .. }) => reason,
        Err(other) => panic!("expected no endpoints, got {other:?}"),
        Ok(_) => panic!("expected no endpoints, got a response"),
    }
}

/// Fault 1: a client with no endpoints fails at once with `NoEndpoints` — not retried, no
/// budget token, no backoff.
#[tokio::test(start_paused = true)]
async fn no_endpoints_fails_at_once_without_retrying() {
    let client = Client::http(Target::addrs([]))
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    let start = Instant::now();
    let reason = no_endpoints(client.clone().oneshot(get()).await);
    assert_eq!(reason, NoEndpointsReason::NoneResolved);
    assert_eq!(start.elapsed(), Duration::ZERO);
    let budget = client.retry_budget().stats();
    assert_eq!((budget.withdrawals, budget.refused), (0, 0));
}

/// A resolver that answers `addrs` after `delay`, counting its resolutions.
#[derive(Clone)]
struct SlowResolver {
    addrs: Vec<SocketAddr>,
    delay: Duration,
    asked: Arc<AtomicUsize>,
}

impl Resolve for SlowResolver {
    fn resolve(&self) -> ResolveFuture {
        let (addrs, delay) = (self.addrs.clone(), self.delay);
        self.asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            sleep(delay).await;
            Ok(Resolved { addrs, ttl: None })
        })
    }
}

type HttpClient = Client<Pool<HttpConnector<Body>, SocketAddr>, HttpClassifier>;

fn slow_client(addrs: Vec<SocketAddr>, deadline: Duration) -> HttpClient {
    let resolver = SlowResolver {
        addrs,
        delay: 50 * MS,
        asked: Arc::default(),
    };
    Client::http(Target::resolver(resolver))
        .deadline(deadline)
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap()
}

/// Fault 2: a call made before the first resolution completes waits for it, within its
/// deadline: with 200 ms it succeeds once the resolver answers (50 ms); with 30 ms it fails with
/// the deadline error.
#[tokio::test(start_paused = true)]
async fn a_call_before_the_first_resolution_waits_for_it() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let start = Instant::now();
    let client = slow_client(vec![server.addr()], 200 * MS);
    let res = client.oneshot(get()).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(start.elapsed(), 50 * MS);
    assert_eq!(server.count(), 1);

    let start = Instant::now();
    let client = slow_client(vec![server.addr()], 30 * MS);
    let err = client.oneshot(get()).await.unwrap_err();
    assert!(err.is_deadline_exceeded(), "{err:?}");
    assert_eq!(start.elapsed(), 30 * MS);
}

/// A first resolution that completes with no addresses fails the calls waiting for it at once.
#[tokio::test(start_paused = true)]
async fn a_first_resolution_with_no_addresses_fails_the_waiting_calls() {
    let start = Instant::now();
    let client = slow_client(Vec::new(), SEC);
    let reason = no_endpoints(client.oneshot(get()).await);
    assert_eq!(reason, NoEndpointsReason::NoneResolved);
    assert_eq!(start.elapsed(), 50 * MS);
}

/// Fault 3: a resolver going from live servers to nothing (NXDOMAIN-like: no records) keeps the
/// last known endpoints serving, warns once for the episode naming the name, counts it; when the
/// records come back nothing was reset; beyond the maximum staleness the endpoints are given up.
#[tokio::test(start_paused = true)]
async fn a_resolver_outage_keeps_the_last_endpoints_until_the_maximum_staleness() {
    let warnings = WarnCounter::install("keeping the last known endpoints");
    let [v4, v6] = HttpServer::start_pair([FaultPlan::healthy(), FaultPlan::healthy()]).await;
    let port = v4.addr().port();
    let dns = DnsServer::start([v4.addr().ip(), v6.addr().ip()], 5).await;
    let name = "rollout.stanchion.test.";
    let client = Client::http(Target::resolver(DnsResolver::with_server(
        name,
        port,
        dns.addr(),
    )))
    .max_staleness(60 * SEC)
    .build(HttpConnector::<Empty<Bytes>>::http1())
    .unwrap();
    client.resolved().await;
    // Mark one endpoint's breaker: a reset would lose it.
    client.balancer().breaker(v6.addr()).unwrap().force_open();

    dns.set([]);
    for _ in 0..20 {
        sleep(SEC).await;
        let res = client.clone().oneshot(get()).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let stats = client.balancer().resolver_stats();
    assert!(stats.stale, "{stats:?}");
    assert_eq!(stats.stale_episodes, 1, "{stats:?}");
    assert!(stats.errors >= 3, "{stats:?}");
    assert_eq!(warnings.count(), 1, "one warning for the episode");
    assert_eq!(v4.count(), 20, "the last known endpoint kept serving");

    dns.set([v4.addr().ip(), v6.addr().ip()]);
    sleep(31 * SEC).await;
    let stats = client.balancer().resolver_stats();
    assert!(!stats.stale, "{stats:?}");
    let state = client.balancer().breaker(v6.addr()).unwrap().state();
    assert_eq!(state, BreakerState::ForcedOpen, "the breaker was not reset");
    assert_eq!(v4.accepted(), 1, "the pool was not reset either");

    // Gone for longer than the maximum staleness: given up.
    dns.set([]);
    sleep(90 * SEC).await;
    let reason = no_endpoints(client.clone().oneshot(get()).await);
    assert_eq!(reason, NoEndpointsReason::NoneResolved);
    let stats = client.balancer().resolver_stats();
    assert_eq!((stats.stale_episodes, stats.given_up), (2, 1), "{stats:?}");
    assert_eq!(warnings.count(), 2);
}

/// An address present, absent, present again within the drain window keeps its breaker (here
/// forced open) and its pool; an explicit empty set from the resolver is applied at once.
#[tokio::test(start_paused = true)]
async fn a_flapping_address_keeps_its_state_and_an_explicit_empty_set_applies_at_once() {
    let servers = [
        HttpServer::start(FaultPlan::healthy()).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let (a, b) = (servers[0].addr(), servers[1].addr());
    let resolver = StaticResolver::new([a, b]);
    let client = Client::http(Target::resolver(resolver.clone()))
        .refresh_interval(SEC)
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    client.balancer().breaker(b).unwrap().force_open();
    resolver.set([a]);
    sleep(1100 * MS).await;
    assert!(
        client.balancer().breaker(b).is_none(),
        "b is not resolved now"
    );
    resolver.set([a, b]);
    sleep(SEC).await;
    let state = client.balancer().breaker(b).unwrap().state();
    assert_eq!(
        state,
        BreakerState::ForcedOpen,
        "b came back with its breaker"
    );

    resolver.set([]);
    sleep(SEC).await;
    let reason = no_endpoints(client.clone().oneshot(get()).await);
    assert_eq!(reason, NoEndpointsReason::NoneResolved);
    assert!(!client.balancer().resolver_stats().stale);
}

/// A DNS name that resolves to one address is worth one warning, naming the name.
#[tokio::test(start_paused = true)]
async fn a_name_with_one_address_warns_once() {
    let warnings = WarnCounter::install("single.stanchion.test.");
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let dns = DnsServer::start([server.addr().ip()], 1).await;
    let resolver =
        DnsResolver::with_server("single.stanchion.test.", server.addr().port(), dns.addr());
    let client = Client::http(Target::resolver(resolver))
        .build(HttpConnector::<Empty<Bytes>>::http1())
        .unwrap();
    client.resolved().await;
    for _ in 0..3 {
        let res = client.clone().oneshot(get()).await.unwrap();
        res.into_body().collect().await.unwrap();
        sleep(2 * SEC).await;
    }
    assert_eq!(warnings.count(), 1);
}

/// An endpoint stack that says when it is dropped.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    _alive: Arc<()>,
}

impl<S: tower::Service<R>, R> tower::Service<R> for Tracked<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

/// Which endpoint stacks are alive: each made by `make`, with a token dropped with it.
type Alive = Arc<std::sync::Mutex<Vec<(SocketAddr, std::sync::Weak<()>)>>>;

fn tracked(kept: Alive) -> impl Fn(SocketAddr) -> Tracked<Pool<HttpConnector<Body>, SocketAddr>> {
    let pool = stanchion::pool::PoolBuilder::new().settings().unwrap();
    move |addr| {
        let token = Arc::new(());
        kept.lock().unwrap().push((addr, Arc::downgrade(&token)));
        Tracked {
            inner: pool.build(HttpConnector::<Body>::http1(), addr),
            _alive: token,
        }
    }
}

fn is_alive(alive: &Alive, addr: SocketAddr) -> bool {
    alive
        .lock()
        .unwrap()
        .iter()
        .any(|(a, token)| *a == addr && token.strong_count() > 0)
}

/// A zero drain window keeps nothing: a removed endpoint's stack goes at once, and an address
/// that comes back starts afresh.
#[tokio::test(start_paused = true)]
async fn a_zero_drain_window_keeps_nothing() {
    let servers = [
        HttpServer::start(FaultPlan::healthy()).await,
        HttpServer::start(FaultPlan::healthy()).await,
    ];
    let (a, b) = (servers[0].addr(), servers[1].addr());
    let resolver = StaticResolver::new([a, b]);
    let alive = Alive::default();
    let client = Client::http(Target::resolver(resolver.clone()))
        .refresh_interval(SEC)
        .drain_window(Duration::ZERO)
        .build_with(tracked(alive.clone()))
        .unwrap();
    client.resolved().await;
    client.balancer().breaker(b).unwrap().force_open();
    resolver.set([a]);
    sleep(1100 * MS).await;
    assert!(!is_alive(&alive, b), "removed with nothing kept");
    resolver.set([a, b]);
    sleep(SEC).await;
    let state = client.balancer().breaker(b).unwrap().state();
    assert_eq!(state, BreakerState::Closed, "b came back afresh");
}

/// A removed endpoint is let go when its drain window ends, even if the resolver fails from
/// then on and no new answer comes to prune it: its pool (and connections) close.
#[tokio::test(start_paused = true)]
async fn a_removed_endpoint_is_let_go_after_the_drain_window_even_while_resolution_fails() {
    let [v4, v6] = HttpServer::start_pair([FaultPlan::healthy(), FaultPlan::healthy()]).await;
    let dns = DnsServer::start([v4.addr().ip(), v6.addr().ip()], 1).await;
    let alive = Alive::default();
    let client = Client::http(Target::resolver(DnsResolver::with_server(
        "drain.stanchion.test.",
        v4.addr().port(),
        dns.addr(),
    )))
    .drain_window(5 * SEC)
    .build_with(tracked(alive.clone()))
    .unwrap();
    client.resolved().await;
    let is_alive = |addr| is_alive(&alive, addr);
    assert!(is_alive(v6.addr()));
    dns.set([v4.addr().ip()]);
    sleep(2 * SEC).await;
    assert!(client.balancer().breaker(v6.addr()).is_none(), "v6 removed");
    assert!(is_alive(v6.addr()), "kept for its drain window");
    // From now on the resolver fails: no answer will come to prune the drained endpoint.
    dns.set([]);
    sleep(10 * SEC).await;
    assert!(client.balancer().resolver_stats().stale);
    assert!(
        !is_alive(v6.addr()),
        "let go at the end of its drain window"
    );
    assert!(is_alive(v4.addr()), "the last known endpoint still serves");
}

/// A balancer whose runtime ends before its first resolution resolves in the next runtime it is
/// used in (a client kept in a static across `#[tokio::test]`s).
#[test]
fn a_balancer_outliving_its_runtime_resolves_in_the_next() {
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let server = second.block_on(HttpServer::start(FaultPlan::healthy()));
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Built inside the first runtime, which ends before its refresh task ever runs.
    let client = first.block_on(async {
        Client::http(Target::addrs([server.addr()]))
            .deadline(SEC)
            .build(HttpConnector::<Empty<Bytes>>::http1())
            .unwrap()
    });
    drop(first);
    second.block_on(async {
        let res = client.clone().oneshot(get()).await.unwrap();
        res.into_body().collect().await.unwrap();
    });
}
