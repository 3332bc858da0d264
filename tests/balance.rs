//! Client-side balancing over real loopback servers: exact per-call turns, ejection and return,
//! panic mode, no endpoints, removal, the single-address warning, least-request.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use stanchion::Error;
use stanchion::balance::{Balancer, BalancerBuilder, Change, DnsResolver, Policy, StaticResolver};
use stanchion::breaker::{BreakerState, CircuitBreaker};
use stanchion::classify::HttpClassifier;
use stanchion::error::NoEndpointsReason;
use stanchion::pool::{HttpConnector, Pool, PoolBuilder};
use stanchion::retry::{AvoidEndpoint, RejectedEndpoints, ServedBy};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep};
use tower::ServiceExt;

use support::dns_server::DnsServer;
use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;
use support::warnings::WarnCounter;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

type Endpoint = Pool<HttpConnector<Full<Bytes>>, SocketAddr>;
type Lb = Balancer<Endpoint, HttpClassifier>;

fn pool(addr: SocketAddr) -> Endpoint {
    PoolBuilder::new()
        .build(HttpConnector::http1(), addr)
        .expect("the default pool settings are valid")
}

async fn balancer(resolver: StaticResolver) -> Lb {
    let lb = Balancer::builder(resolver, pool, HttpClassifier::new())
        .build()
        .unwrap();
    lb.resolved().await;
    lb
}

async fn servers(plans: impl IntoIterator<Item = FaultPlan>) -> Vec<HttpServer> {
    let mut servers = Vec::new();
    for plan in plans {
        servers.push(HttpServer::start(plan).await);
    }
    servers
}

fn addrs(servers: &[HttpServer]) -> Vec<SocketAddr> {
    servers.iter().map(|s| s.addr()).collect()
}

fn get() -> Request<Full<Bytes>> {
    Request::get("/").body(Full::default()).unwrap()
}

/// One call through a clone of the balancer; the whole body is read (the breaker records at the
/// end of the stream). Returns the endpoint that served it and the status.
async fn call(lb: &Lb, req: Request<Full<Bytes>>) -> Result<(SocketAddr, u16), Error> {
    let res = lb.clone().oneshot(req).await?;
    let served = res
        .extensions()
        .get::<ServedBy>()
        .expect("ServedBy")
        .endpoint;
    let status = res.status().as_u16();
    res.into_body().collect().await.map_err(Error::from_inner)?;
    Ok((served, status))
}

fn tally(served: impl IntoIterator<Item = SocketAddr>) -> HashMap<SocketAddr, usize> {
    let mut counts = HashMap::new();
    for addr in served {
        *counts.entry(addr).or_default() += 1;
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn five_servers_fifty_calls_ten_each() {
    let servers = servers((0..5).map(|_| FaultPlan::healthy())).await;
    let lb = balancer(StaticResolver::new(addrs(&servers))).await;
    // Sequential calls on clones made per request.
    for _ in 0..50 {
        call(&lb, get()).await.unwrap();
    }
    for server in &servers {
        assert_eq!(server.count(), 10);
    }
    // Concurrent calls, each on its own clone: still exact turns.
    let mut set = JoinSet::new();
    for _ in 0..50 {
        let lb = lb.clone();
        set.spawn(async move { call(&lb, get()).await.map(|(addr, _)| addr) });
    }
    let served: Vec<_> = set
        .join_all()
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(tally(served).values().all(|&n| n == 10));
    for server in &servers {
        assert_eq!(server.count(), 20);
    }
}

type Instant_ = fn(Request<()>) -> std::future::Ready<Result<http::Response<()>, Infallible>>;

fn answer(_req: Request<()>) -> std::future::Ready<Result<http::Response<()>, Infallible>> {
    std::future::ready(Ok(http::Response::new(())))
}

/// Endpoint stacks that answer at once, for properties of the pick alone.
fn instant_balancer(n: usize) -> Balancer<tower::util::ServiceFn<Instant_>, HttpClassifier> {
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)))
        .collect();
    let make = |_addr| tower::service_fn(answer as Instant_);
    Balancer::builder(StaticResolver::new(addrs), make, HttpClassifier::new())
        .panic_threshold(0.0)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over N·k calls, N endpoints get exactly k each, from any starting point of the cursor.
    #[test]
    fn round_robin_is_exactly_fair(n in 1usize..16, k in 1usize..16, offset in 0usize..40) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let counts = rt.block_on(async {
            let lb = instant_balancer(n);
            lb.resolved().await;
            for _ in 0..offset {
                lb.clone().oneshot(Request::new(())).await.unwrap();
            }
            let mut served = Vec::new();
            for _ in 0..n * k {
                let res = lb.clone().oneshot(Request::new(())).await.unwrap();
                served.push(res.extensions().get::<ServedBy>().unwrap().endpoint);
            }
            tally(served)
        });
        prop_assert_eq!(counts.len(), n);
        prop_assert!(counts.values().all(|&c| c == k), "{:?}", counts);
    }
}

/// Which endpoints take calls with `open` breakers (by index), after Envoy's rules: at most
/// `cap · n` endpoints are ejected (at least one when the cap is above zero), the first open
/// ones in order; below `threshold · n` endpoints taking calls, all take them — but not a call
/// waiting for ready (`ready`), which panic mode never sends through an open breaker. `None`:
/// none do.
fn model_takers(
    n: usize,
    open: &[bool],
    cap: f64,
    threshold: f64,
    ready: bool,
) -> Option<Vec<usize>> {
    // Shares to the nearest millionth, as documented.
    let ppm = |share: f64| (share * 1e6).round() as usize;
    let mut max_ejected = n * ppm(cap) / 1_000_000;
    if ppm(cap) > 0 {
        max_ejected = max_ejected.max(1);
    }
    let ejected: Vec<usize> = (0..n).filter(|&i| open[i]).take(max_ejected).collect();
    let healthy = n - ejected.len();
    // healthy < threshold · n, exactly: healthy · 10⁶ < ppm(threshold) · n.
    let panic = healthy * 1_000_000 < ppm(threshold) * n && !ready;
    let takers: Vec<usize> = (0..n).filter(|i| panic || !ejected.contains(i)).collect();
    (!takers.is_empty()).then_some(takers)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The ejection cap and the panic threshold, over every share and set of open breakers, for
    /// calls that fail fast and calls that wait for ready: the endpoints the model says take
    /// calls get exactly their turns, the others none; with none, a fail-fast call is refused
    /// and a waiting one waits.
    #[test]
    fn the_ejection_cap_and_the_panic_threshold_decide_who_takes_calls(
        open in proptest::collection::vec(any::<bool>(), 1..9),
        cap in prop_oneof![Just(0.0), Just(0.1), Just(0.25), Just(0.5), Just(0.75), Just(1.0), 0.0..=1.0f64],
        threshold in prop_oneof![Just(0.0), Just(0.3), Just(0.5), Just(0.75), Just(1.0), 0.0..=1.0f64],
        k in 1usize..4,
        ready in any::<bool>(),
    ) {
        let n = open.len();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = rt.block_on(async {
            let addrs: Vec<SocketAddr> = (0..n)
                .map(|i| SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)))
                .collect();
            let make = |_addr| tower::service_fn(answer as Instant_);
            let lb = Balancer::builder(StaticResolver::new(addrs.clone()), make, HttpClassifier::new())
                .max_ejection(cap)
                .panic_threshold(threshold)
                .build()
                .unwrap();
            lb.resolved().await;
            for (addr, _) in addrs.iter().zip(&open).filter(|(_, open)| **open) {
                lb.breaker(*addr).unwrap().force_open();
            }
            let mut served = Vec::new();
            for _ in 0..n * k {
                let mut req = Request::new(());
                if ready {
                    req.extensions_mut().insert(stanchion::balance::WaitForReady);
                }
                // Time is paused: a call that waits for ready sees its 10 s pass at once.
                let call = tokio::time::timeout(Duration::from_secs(10), lb.clone().oneshot(req));
                match call.await {
                    Ok(Ok(res)) => {
                        let addr = res.extensions().get::<ServedBy>().unwrap().endpoint;
                        served.push(addrs.iter().position(|a| *a == addr).unwrap());
                    }
                    Ok(Err(Error::NoEndpoints { .. })) if !ready => return None,
                    Err(_) if ready => return None,
                    Ok(Err(e)) => panic!("{e:?}"),
                    Err(_) => panic!("a fail-fast call waited"),
                }
            }
            Some(served)
        });
        match (model_takers(n, &open, cap, threshold, ready), outcome) {
            (None, None) => {}
            (Some(takers), Some(served)) => {
                let mut counts = vec![0usize; n];
                for i in served {
                    counts[i] += 1;
                }
                // n·k calls over `takers`: round robin gives each the same number, when it divides.
                let each = n * k / takers.len();
                for i in 0..n {
                    if takers.contains(&i) {
                        prop_assert!(counts[i] == each || counts[i] == each + 1, "{:?} {:?}", takers, counts);
                    } else {
                        prop_assert_eq!(counts[i], 0, "{:?} {:?}", takers, counts);
                    }
                }
            }
            (model, seen) => prop_assert!(false, "model {:?}, balancer {:?}", model, seen),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_endpoint_is_ejected_and_returns_through_half_open() {
    // The first server fails its first 5 calls, then recovers.
    let failing = FaultPlan::scripted((0..5).map(|_| Fault::status(500)));
    let servers = servers([failing, FaultPlan::healthy(), FaultPlan::healthy()]).await;
    let sick = servers[0].addr();
    let lb = balancer(StaticResolver::new(addrs(&servers))).await;
    for _ in 0..15 {
        call(&lb, get()).await.unwrap();
    }
    assert_eq!(servers[0].count(), 5);
    assert_eq!(lb.breaker(sick).unwrap().state(), BreakerState::Open);
    // Ejected: the others take every call.
    let served: Vec<_> = calls_in_turn(&lb, 20).await;
    assert!(!served.contains(&sick));
    assert_eq!(servers[0].count(), 5);
    // After the open period (30 s) it is probed, succeeds, and takes its turns again.
    sleep(31 * SEC).await;
    let served: Vec<_> = calls_in_turn(&lb, 30).await;
    assert!(tally(served)[&sick] >= 3, "probes and turns reach it again");
    assert_eq!(lb.breaker(sick).unwrap().state(), BreakerState::Closed);
}

/// `n` calls one after another; the endpoints that served them.
async fn calls_in_turn(lb: &Lb, n: usize) -> Vec<SocketAddr> {
    let mut served = Vec::new();
    for _ in 0..n {
        served.push(call(lb, get()).await.unwrap().0);
    }
    served
}

/// Four servers: the first three always answer 500, the last is healthy.
async fn three_failing_one_healthy() -> Vec<HttpServer> {
    let failing = || FaultPlan::always(Fault::status(500));
    servers([failing(), failing(), failing(), FaultPlan::healthy()]).await
}

#[tokio::test(start_paused = true)]
async fn beyond_half_ejected_every_endpoint_takes_calls_again() {
    let servers = three_failing_one_healthy().await;
    let lb = balancer(StaticResolver::new(addrs(&servers))).await;
    // Eject the failing ones (5 consecutive failures each).
    for _ in 0..40 {
        call(&lb, get()).await.unwrap();
    }
    let open = lb
        .endpoints()
        .iter()
        .filter(|e| e.state == BreakerState::Open)
        .count();
    assert_eq!(open, 3);
    // 3 of 4 ejected is beyond the 50 % cap: panic mode spreads calls over all four, rather
    // than send everything to the one healthy endpoint.
    let before: Vec<usize> = servers.iter().map(|s| s.count()).collect();
    let _ = calls_in_turn(&lb, 40).await;
    for (server, before) in servers.iter().zip(before) {
        assert_eq!(server.count() - before, 10);
    }
}

#[tokio::test(start_paused = true)]
async fn without_panic_mode_ejected_endpoints_get_nothing() {
    let servers = three_failing_one_healthy().await;
    let resolver = StaticResolver::new(addrs(&servers));
    let lb = Balancer::builder(resolver, pool, HttpClassifier::new())
        .panic_threshold(0.0)
        .build()
        .unwrap();
    lb.resolved().await;
    let _ = calls_in_turn(&lb, 40).await;
    let before: Vec<usize> = servers.iter().map(|s| s.count()).collect();
    let _ = calls_in_turn(&lb, 20).await;
    assert_eq!(servers[3].count() - before[3], 20);
    // All four ejected and no panic mode: no usable endpoint, fail fast.
    lb.breaker(servers[3].addr()).unwrap().force_open();
    let start = Instant::now();
    match call(&lb, get()).await {
        Err(Error::NoEndpoints { reason, .. }) => assert_eq!(reason, NoEndpointsReason::NoneUsable),
        other => panic!("expected no endpoints, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn zero_endpoints_fail_fast_and_recover_when_addresses_appear() {
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let resolver = StaticResolver::new([]);
    let lb = balancer(resolver.clone()).await;
    let start = Instant::now();
    match call(&lb, get()).await {
        Err(Error::NoEndpoints { reason, .. }) => {
            assert_eq!(reason, NoEndpointsReason::NoneResolved)
        }
        other => panic!("expected no endpoints, got {other:?}"),
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "never hangs");
    resolver.set([server.addr()]);
    // With nothing usable, re-resolution backs off from 1 s, not the 30 s interval.
    sleep(1100 * MS).await;
    assert_eq!(call(&lb, get()).await.unwrap().0, server.addr());
}

#[tokio::test(start_paused = true)]
async fn new_endpoints_get_traffic_and_removed_ones_drain() {
    let servers = servers([
        FaultPlan::always(Fault::ok().latency(3 * SEC)),
        FaultPlan::healthy(),
        FaultPlan::healthy(),
    ])
    .await;
    let (slow, b, c) = (servers[0].addr(), servers[1].addr(), servers[2].addr());
    let resolver = StaticResolver::new([slow, b]);
    let lb = Balancer::builder(resolver.clone(), pool, HttpClassifier::new())
        .refresh_interval(SEC)
        .build()
        .unwrap();
    lb.resolved().await;
    // A call in flight to the endpoint about to be removed.
    let in_flight = tokio::spawn({
        let lb = lb.clone();
        async move { call(&lb, get()).await }
    });
    sleep(10 * MS).await;
    resolver.set([b, c]);
    sleep(1100 * MS).await;
    let served = tally(calls_in_turn(&lb, 20).await);
    assert_eq!(
        served.get(&slow),
        None,
        "a removed endpoint gets no new calls"
    );
    assert_eq!(
        (served[&b], served[&c]),
        (10, 10),
        "the new one takes its turns"
    );
    // ...and the call that was in flight finishes normally.
    assert_eq!(in_flight.await.unwrap().unwrap(), (slow, 200));
}

#[tokio::test(start_paused = true)]
async fn a_retry_avoids_the_endpoint_that_just_failed() {
    let servers = servers([FaultPlan::healthy(), FaultPlan::healthy()]).await;
    let lb = balancer(StaticResolver::new(addrs(&servers))).await;
    for _ in 0..10 {
        let mut req = get();
        req.extensions_mut()
            .insert(AvoidEndpoint(servers[0].addr()));
        assert_eq!(call(&lb, req).await.unwrap().0, servers[1].addr());
    }
    // With one endpoint, avoiding it is not possible: the call still goes.
    let lb = balancer(StaticResolver::new([servers[0].addr()])).await;
    let mut req = get();
    req.extensions_mut()
        .insert(AvoidEndpoint(servers[0].addr()));
    assert_eq!(call(&lb, req).await.unwrap().0, servers[0].addr());
}

/// Endpoints that rejected a call (`RejectedEndpoints`, put there by the retry layer after a
/// failed TLS handshake) are never picked for it — over every subset of four endpoints, with
/// another endpoint's breaker open, and in panic mode (through open breakers, still never a
/// rejected one). When every endpoint rejected it: `NoEndpoints` (`AllRejected`).
#[tokio::test]
async fn rejected_endpoints_are_never_picked_again() {
    let servers = servers((0..4).map(|_| FaultPlan::healthy())).await;
    let all = addrs(&servers);
    for open in [vec![], vec![3], vec![0, 1, 2]] {
        let lb = balancer(StaticResolver::new(all.clone())).await;
        for &i in &open {
            lb.breaker(all[i]).unwrap().force_open();
        }
        for mask in 0u32..16 {
            let rejected: Vec<SocketAddr> = (0..4)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| all[i])
                .collect();
            for _ in 0..6 {
                let mut req = get();
                req.extensions_mut()
                    .insert(RejectedEndpoints(rejected.clone()));
                match call(&lb, req).await {
                    Ok((addr, _)) => {
                        assert!(
                            !rejected.contains(&addr),
                            "open {open:?}, mask {mask}: {addr}"
                        )
                    }
                    Err(Error::NoEndpoints { reason, .. }) => {
                        let allowed: Vec<usize> = (0..4).filter(|i| mask & (1 << i) == 0).collect();
                        if allowed.is_empty() {
                            assert_eq!(reason, NoEndpointsReason::AllRejected);
                        } else {
                            // Outside panic mode, every endpoint not rejected is open.
                            assert!(open.len() < 3, "panic mode refused: {mask}");
                            assert!(allowed.iter().all(|i| open.contains(i)), "mask {mask}");
                            assert_eq!(reason, NoEndpointsReason::NoneUsable);
                        }
                    }
                    Err(e) => panic!("open {open:?}, mask {mask}: {}", e.report()),
                }
            }
        }
    }
}

/// One address of a static list is no mistake (an external API's one address): it works, and
/// nothing warns. The warning is for a DNS name (`resolution::a_name_with_one_address_warns_once`).
#[tokio::test(start_paused = true)]
async fn one_static_address_works_and_does_not_warn() {
    let warnings = WarnCounter::install("headless Service");
    let server = HttpServer::start(FaultPlan::healthy()).await;
    let lb = Balancer::builder(
        StaticResolver::new([server.addr()]),
        pool,
        HttpClassifier::new(),
    )
    .refresh_interval(SEC)
    .build()
    .unwrap();
    lb.resolved().await;
    for _ in 0..5 {
        call(&lb, get()).await.unwrap();
        sleep(2 * SEC).await; // several re-resolutions
    }
    assert_eq!(server.count(), 5);
    assert_eq!(warnings.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn least_request_sends_less_to_a_slow_endpoint() {
    let servers = servers([
        FaultPlan::always(Fault::ok().latency(500 * MS)),
        FaultPlan::always(Fault::ok().latency(10 * MS)),
        FaultPlan::always(Fault::ok().latency(10 * MS)),
    ])
    .await;
    let lb = Balancer::builder(
        StaticResolver::new(addrs(&servers)),
        pool,
        HttpClassifier::new(),
    )
    .policy(Policy::LeastRequest)
    .build()
    .unwrap();
    lb.resolved().await;
    // A steady stream: one call every 5 ms for 3 s.
    let mut set = JoinSet::new();
    for _ in 0..600 {
        let lb = lb.clone();
        set.spawn(async move { call(&lb, get()).await });
        sleep(5 * MS).await;
    }
    assert!(set.join_all().await.iter().all(Result::is_ok));
    let slow = servers[0].count();
    // Round robin would give it 200.
    assert!(slow < 100, "slow endpoint got {slow} of 600");
}

#[test]
fn invalid_settings_are_config_errors() {
    type Builder = BalancerBuilder<Endpoint, HttpClassifier>;
    let lb = |f: fn(Builder) -> Builder| {
        f(Balancer::builder(
            StaticResolver::new([]),
            pool,
            HttpClassifier::new(),
        ))
        .build()
        .map(|_| ())
        .unwrap_err()
        .field()
        .to_owned()
    };
    assert_eq!(lb(|b| b.max_ejection(1.5)), "max_ejection");
    assert_eq!(lb(|b| b.max_ejection(f64::NAN)), "max_ejection");
    assert_eq!(lb(|b| b.panic_threshold(-0.1)), "panic_threshold");
    assert_eq!(lb(|b| b.panic_threshold(f64::INFINITY)), "panic_threshold");
    assert_eq!(
        lb(|b| b.refresh_interval(Duration::from_millis(10))),
        "refresh_interval"
    );
    assert_eq!(
        lb(|b| b.breaker(CircuitBreaker::builder().consecutive_failures(0))),
        "failures"
    );
}

#[tokio::test(start_paused = true)]
async fn dns_record_changes_reach_the_balancer() {
    let [v4, v6] = HttpServer::start_pair([FaultPlan::healthy(), FaultPlan::healthy()]).await;
    let port = v4.addr().port();
    // TTL 5 s: re-resolution follows it rather than the 30 s interval.
    let dns = DnsServer::start([v4.addr().ip()], 5).await;
    let resolver = DnsResolver::with_server("api.stanchion.test.", port, dns.addr());
    let lb = Balancer::builder(resolver, pool, HttpClassifier::new())
        .build()
        .unwrap();
    let mut feed = lb.changes();
    lb.resolved().await;
    let resolved: Vec<_> = lb.endpoints().iter().map(|e| e.addr).collect();
    assert_eq!(resolved, [v4.addr()]);
    assert_eq!(feed.next().await.unwrap(), Change::Insert(v4.addr()));
    assert!(calls_in_turn(&lb, 4).await.iter().all(|a| *a == v4.addr()));

    // A new record: the new endpoint takes its turns after the next re-resolution.
    dns.set([v4.addr().ip(), v6.addr().ip()]);
    sleep(6 * SEC).await;
    let served = tally(calls_in_turn(&lb, 10).await);
    assert_eq!((served[&v4.addr()], served[&v6.addr()]), (5, 5));

    // A removed record: that endpoint gets no new calls.
    dns.set([v6.addr().ip()]);
    sleep(6 * SEC).await;
    let before = v4.count();
    assert!(calls_in_turn(&lb, 6).await.iter().all(|a| *a == v6.addr()));
    assert_eq!(feed.next().await.unwrap(), Change::Insert(v6.addr()));
    assert_eq!(feed.next().await.unwrap(), Change::Remove(v4.addr()));
    assert_eq!(v4.count(), before);
    assert!(dns.queries() >= 6, "three resolutions, A and AAAA each");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The change feed loses nothing for a slow reader: whatever sets the resolver answers and
    /// whenever the reader reads, the set its changes add up to is the balancer's set once it
    /// has read everything available — and it never reports an insertion of an address it
    /// already has or a removal of one it does not.
    #[test]
    fn the_change_feed_adds_up_to_the_balancers_set_for_any_reader(
        steps in proptest::collection::vec(
            (proptest::collection::vec(0u16..6, 0..5), any::<bool>()),
            1..12,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let addr = |i: u16| SocketAddr::from(([127, 0, 0, 1], 20_000 + i));
            let resolver = StaticResolver::new([addr(0)]);
            let make = |_addr| tower::service_fn(answer as Instant_);
            let lb = Balancer::builder(resolver.clone(), make, HttpClassifier::new())
                .build()
                .unwrap();
            lb.resolved().await;
            let mut feed = lb.changes();
            let mut seen: Vec<SocketAddr> = lb.endpoints().iter().map(|e| e.addr).collect();
            let read = |feed: &mut stanchion::balance::Changes<_, _>, seen: &mut Vec<SocketAddr>| {
                let mut changes = Vec::new();
                loop {
                    let next = std::pin::pin!(feed.next());
                    let waker = std::task::Waker::noop();
                    match next.poll(&mut std::task::Context::from_waker(waker)) {
                        std::task::Poll::Ready(Some(change)) => changes.push(change),
                        _ => break,
                    }
                }
                for change in changes {
                    match change {
                        Change::Insert(a) => {
                            assert!(!seen.contains(&a), "inserted twice: {a}");
                            seen.push(a);
                        }
                        Change::Remove(a) => {
                            assert!(seen.contains(&a), "removed unseen: {a}");
                            seen.retain(|s| *s != a);
                        }
                    }
                }
            };
            for (set, read_now) in steps {
                resolver.set(set.into_iter().map(addr));
                if read_now {
                    read(&mut feed, &mut seen);
                }
            }
            read(&mut feed, &mut seen);
            let mut now: Vec<SocketAddr> = lb.endpoints().iter().map(|e| e.addr).collect();
            now.sort();
            seen.sort();
            assert_eq!(seen, now);
        });
    }
}

/// An address removed and back after the drain window gets a new stack (a new pool): the
/// Discover feed reports it again (tower replaces the stack under that key), so a tower
/// balancer never keeps the dropped one; the address feed, whose set did not change, does not.
#[tokio::test]
async fn a_replaced_stack_is_discovered_again() {
    /// The next item, within a second (a missing one fails the test instead of hanging it).
    async fn next<T: futures_core::Stream + Unpin>(stream: &mut T) -> Option<T::Item> {
        let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx));
        tokio::time::timeout(SEC, next)
            .await
            .expect("an item within a second")
    }

    let addr = |i: u16| SocketAddr::from(([127, 0, 0, 1], 21_000 + i));
    let resolver = StaticResolver::new([addr(0), addr(1)]);
    let make = |_addr| tower::service_fn(answer as Instant_);
    let lb = Balancer::builder(resolver.clone(), make, HttpClassifier::new())
        .drain_window(Duration::ZERO)
        .build()
        .unwrap();
    lb.resolved().await;
    let mut discover = lb.discover();
    let mut changes = lb.changes();
    let key = |c: tower::discover::Change<SocketAddr, _>| match c {
        tower::discover::Change::Insert(a, _) => (true, a),
        tower::discover::Change::Remove(a) => (false, a),
    };
    for i in 0..2 {
        assert_eq!(
            key(next(&mut discover).await.unwrap().unwrap()),
            (true, addr(i))
        );
    }
    // Away and back while nobody reads: a new endpoint, with a new stack.
    resolver.set([addr(0)]);
    resolver.set([addr(0), addr(1)]);
    assert_eq!(
        key(next(&mut discover).await.unwrap().unwrap()),
        (true, addr(1))
    );
    let nothing = tokio::time::timeout(Duration::from_millis(20), changes.next()).await;
    assert!(nothing.is_err(), "the address set is the same: {nothing:?}");
}

/// The crate's resolution feeding tower's own balancer: `Balancer::discover()` is a tower
/// `Discover` (every endpoint, each with its stack), so tower's power-of-two-choices balancer
/// spreads calls over what the resolver answers and follows its changes.
#[tokio::test]
async fn tower_p2c_balances_over_the_discovered_endpoints() {
    use tower::Service;
    use tower::load::{CompleteOnResponse, PendingRequestsDiscover};

    let servers = servers([
        FaultPlan::healthy(),
        FaultPlan::healthy(),
        FaultPlan::healthy(),
    ])
    .await;
    let resolver = StaticResolver::new([servers[0].addr(), servers[1].addr()]);
    let lb = Balancer::builder(resolver.clone(), pool, HttpClassifier::new())
        .build()
        .unwrap();
    lb.resolved().await;
    let discover = PendingRequestsDiscover::new(lb.discover(), CompleteOnResponse::default());
    let mut p2c = tower::balance::p2c::Balance::new(discover);
    macro_rules! send {
        () => {{
            let res = p2c.ready().await.unwrap().call(get()).await.unwrap();
            res.into_body().collect().await.unwrap();
        }};
    }
    for _ in 0..40 {
        send!();
    }
    assert_eq!(servers[0].count() + servers[1].count(), 40);
    assert!(servers[0].count() > 0 && servers[1].count() > 0);
    // The resolver's change reaches tower's balancer: only the third server from now on.
    resolver.set([servers[2].addr()]);
    let before = (servers[0].count(), servers[1].count());
    for _ in 0..10 {
        send!();
    }
    assert_eq!((servers[0].count(), servers[1].count()), before);
    assert_eq!(servers[2].count(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_name_without_records_means_no_endpoints() {
    let dns = DnsServer::start([], 30).await;
    let resolver = DnsResolver::with_server("empty.stanchion.test.", 80, dns.addr());
    let lb = Balancer::builder(resolver, pool, HttpClassifier::new())
        .build()
        .unwrap();
    lb.resolved().await;
    match call(&lb, get()).await {
        Err(Error::NoEndpoints { reason, .. }) => {
            assert_eq!(reason, NoEndpointsReason::NoneResolved)
        }
        other => panic!("expected no endpoints, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_retried_503_goes_to_another_endpoint() {
    use stanchion::retry::{ReplayBody, ReplayBodyLayer, RetryLayer};
    use tower::ServiceBuilder;

    let servers = servers([FaultPlan::always(Fault::status(503)), FaultPlan::healthy()]).await;
    let make = |addr| {
        PoolBuilder::new()
            .build(HttpConnector::<ReplayBody<Full<Bytes>>>::http1(), addr)
            .unwrap()
    };
    // Random picks (least request, seeded), so a retry would land on the failing endpoint
    // about half the time if the balancer did not avoid it.
    let lb = Balancer::builder(
        StaticResolver::new(addrs(&servers)),
        make,
        HttpClassifier::new(),
    )
    .policy(Policy::LeastRequest)
    .seed(11)
    // Keep the failing endpoint in rotation: this test is about where retries go.
    .breaker(CircuitBreaker::builder().consecutive_failures(1000))
    .build()
    .unwrap();
    lb.resolved().await;
    let stack = ServiceBuilder::new()
        .layer(ReplayBodyLayer::default())
        .layer(RetryLayer::builder(HttpClassifier::new()).build().unwrap())
        .service(lb);
    let mut first_attempts_on_the_failing_one = 0;
    for _ in 0..8 {
        let before = servers[0].count();
        let res = stack.clone().oneshot(get()).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.extensions().get::<ServedBy>().unwrap().endpoint,
            servers[1].addr()
        );
        res.into_body().collect().await.unwrap();
        // At most one attempt per call met the 503: its retry went elsewhere.
        let met = servers[0].count() - before;
        assert!(met <= 1, "a retry went back to the endpoint that failed");
        first_attempts_on_the_failing_one += met;
    }
    assert_eq!(servers[1].count(), 8);
    assert!(
        first_attempts_on_the_failing_one >= 2,
        "{first_attempts_on_the_failing_one}"
    );
}

#[tokio::test(start_paused = true)]
async fn re_resolution_ends_when_the_balancer_is_dropped() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let dns = DnsServer::start(["127.0.0.1".parse().unwrap()], 1).await;
    let before = metrics.num_alive_tasks();
    let resolver = DnsResolver::with_server("gone.stanchion.test.", 80, dns.addr());
    let lb = Balancer::builder(resolver, pool, HttpClassifier::new())
        .build()
        .unwrap();
    lb.resolved().await;
    sleep(5 * SEC).await;
    let queries = dns.queries();
    assert!(
        queries >= 6,
        "re-resolving every second (TTL 1 s): {queries}"
    );
    drop(lb);
    sleep(5 * SEC).await;
    // No task left behind, and no more queries.
    assert!(dns.queries() <= queries + 2);
    let after = dns.queries();
    sleep(10 * SEC).await;
    assert_eq!(dns.queries(), after);
    assert_eq!(metrics.num_alive_tasks(), before);
}

/// Paused time runs on one thread; here clones pick from two threads at once: the shared
/// cursor still gives every endpoint exactly its share.
#[test]
fn turns_stay_exact_across_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counts = rt.block_on(async {
        let lb = instant_balancer(4);
        lb.resolved().await;
        let mut set = JoinSet::new();
        for _ in 0..8 {
            let lb = lb.clone();
            set.spawn(async move {
                let mut served = Vec::new();
                for _ in 0..50 {
                    let res = lb.clone().oneshot(Request::new(())).await.unwrap();
                    served.push(res.extensions().get::<ServedBy>().unwrap().endpoint);
                }
                served
            });
        }
        tally(set.join_all().await.into_iter().flatten())
    });
    assert_eq!(counts.len(), 4);
    assert!(counts.values().all(|&n| n == 100), "{counts:?}");
}

/// Fault 2 of the races issue: one endpoint always usable, three flipped between forced-open
/// and reset by another thread while three threads call: no call is told "no endpoints".
#[test]
fn a_usable_endpoint_is_found_while_others_flip() {
    use std::sync::atomic::{AtomicBool, Ordering};

    let lb = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let lb = instant_balancer(4);
        rt.block_on(lb.resolved());
        lb
    };
    // Panic mode off (every endpoint may be ejected) so a pick must find the usable one.
    let addrs: Vec<SocketAddr> = lb.endpoints().iter().map(|e| e.addr).collect();
    let breakers: Vec<_> = addrs.iter().map(|a| lb.breaker(*a).unwrap()).collect();
    let stop = AtomicBool::new(false);
    let failures = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let b = &breakers[1 + i % 3];
                if i.is_multiple_of(2) {
                    b.force_open();
                } else {
                    b.reset();
                }
                i += 1;
            }
        });
        let callers: Vec<_> = (0..3)
            .map(|_| {
                let lb = lb.clone();
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let mut failures = 0;
                        for _ in 0..30_000 {
                            if lb.clone().oneshot(Request::new(())).await.is_err() {
                                failures += 1;
                            }
                        }
                        failures
                    })
                })
            })
            .collect();
        let failures: usize = callers.into_iter().map(|c| c.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        failures
    });
    assert_eq!(failures, 0, "calls told there were no endpoints");
}

/// An attempt cut by its per-try timeout counts against its endpoint's breaker only if the
/// endpoint had it: cut while waiting for the client's own pool, it never reached the endpoint.
#[tokio::test]
async fn a_cut_attempt_blames_the_endpoint_only_if_it_was_sent() {
    use stanchion::deadline::AttemptLayer;
    use tower::Layer;
    let server = HttpServer::start(FaultPlan::always(
        Fault::ok().latency(Duration::from_millis(200)),
    ))
    .await;
    let one_connection = |addr| {
        PoolBuilder::new()
            .max_size(1)
            .build(HttpConnector::<Full<Bytes>>::http1(), addr)
            .unwrap()
    };
    let lb = Balancer::builder(
        StaticResolver::new([server.addr()]),
        one_connection,
        HttpClassifier::new(),
    )
    .breaker(CircuitBreaker::builder().consecutive_failures(1))
    .build()
    .unwrap();
    lb.resolved().await;
    let patient = AttemptLayer::new(SEC).unwrap().layer(lb.clone());
    // 150 ms: above the breakers' 100 ms timeout floor, so a cut counts when it is the
    // endpoint's.
    let impatient = AttemptLayer::new(150 * MS).unwrap().layer(lb.clone());
    let breaker = lb.breaker(server.addr()).unwrap();

    // The only connection is busy for 200 ms; the impatient call waits for it in the pool
    // until its attempt's deadline, which cuts it (the pool waits 1 ms longer, so the error
    // says what ran out: the attempt's time) — never sent, so never the endpoint's fault.
    let holder = tokio::spawn(patient.clone().oneshot(get()));
    sleep(20 * MS).await;
    let err = impatient.clone().oneshot(get()).await.unwrap_err();
    assert!(
        matches!(err, Error::AttemptTimedOut { timeout, never_sent: true, .. } if timeout == 150 * MS),
        "{err:?}"
    );
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "a wait in our own pool was blamed on the endpoint"
    );
    let res = holder.await.unwrap().unwrap();
    res.into_body().collect().await.unwrap();

    // Sent to the endpoint, which takes 200 ms: the cut is the endpoint's timeout.
    let err = impatient.oneshot(get()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::AttemptTimedOut {
                endpoint: Some(_),
                never_sent: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(breaker.state(), BreakerState::Open);
}
