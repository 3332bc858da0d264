//! The deterministic simulation suite: the whole `Client::http` stack over simulated endpoints
//! (a `FaultLayer` around an in-process handler per endpoint), under `tokio::time::pause()` with
//! seeded randomness, and the crate's promises checked as properties over seeds and parameters.
//!
//! No sockets: each endpoint is a service in the test, so a run of hundreds of calls over
//! seconds of virtual time takes milliseconds. What each property says is in
//! `docs/reliability.md`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use proptest::prelude::*;
use stanchion::breaker::BreakerState;
use stanchion::bulkhead::Limits;
use stanchion::client::{Client, Target};
use stanchion::deadline::Deadline;
use stanchion::fault::FaultLayer;
use stanchion::retry::{Backoff, ReplayBody, RetryBudget};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

type Body = ReplayBody<Empty<Bytes>>;
type Answer = Response<Empty<Bytes>>;

/// One simulated endpoint's behaviour.
#[derive(Debug, Clone)]
struct Profile {
    /// Share of calls answered with `status` at once.
    fail: f64,
    status: u16,
    /// Share of calls refused before reaching the endpoint (never sent).
    refused: f64,
    /// The handler's own time.
    latency: Duration,
    /// Share of calls delayed by up to `stall` more.
    stall_rate: f64,
    stall: Duration,
    /// How the endpoint changes over (virtual) time.
    phase: Phase,
}

/// Time-dependent behaviour, measured from the start of the run.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Steady,
    /// Answers 503 to everything in `[from, to)`, then recovers (a temporary failure).
    Outage {
        from: Duration,
        to: Duration,
    },
    /// Alternates healthy and failing (503) every `period`.
    Flapping {
        period: Duration,
    },
    /// Takes `slow` more per call until `until` (caches warming up).
    ColdStart {
        until: Duration,
        slow: Duration,
    },
}

impl Profile {
    fn healthy() -> Profile {
        Profile {
            fail: 0.0,
            status: 500,
            refused: 0.0,
            latency: MS,
            stall_rate: 0.0,
            stall: Duration::ZERO,
            phase: Phase::Steady,
        }
    }
}

#[derive(Debug, Clone)]
struct Sim {
    endpoints: Vec<Profile>,
    calls: usize,
    concurrency: usize,
    deadline: Duration,
    per_try: Duration,
    attempts: u32,
    backoff_cap: Duration,
    bulkhead: Limits,
    budget_ratio: f64,
    budget_floor: u32,
    /// Breaker per endpoint: consecutive failures, open time, half-open probes.
    breaker: Option<(u32, Duration, u32)>,
    /// Each caller waits this long between its calls.
    pace: Duration,
    seed: u64,
}

impl Sim {
    fn new(endpoints: Vec<Profile>, seed: u64) -> Sim {
        Sim {
            endpoints,
            calls: 300,
            concurrency: 12,
            deadline: Duration::from_millis(500),
            per_try: Duration::from_millis(100),
            attempts: 3,
            backoff_cap: 10 * MS,
            bulkhead: Limits {
                concurrency: 100,
                queue: 50,
                max_wait: Duration::from_secs(1),
            },
            budget_ratio: 0.2,
            budget_floor: 10,
            breaker: None,
            pace: Duration::ZERO,
            seed,
        }
    }
}

/// What the endpoints and the callers saw.
#[derive(Debug, Default)]
struct Seen {
    /// Attempts that reached each endpoint's probe (dispatched by the balancer).
    attempts: Vec<u64>,
    /// Attempts dispatched at or after their deadline.
    late_starts: u64,
    /// The most attempts in flight at once, over all endpoints.
    max_in_flight: usize,
    /// Each call's duration.
    durations: Vec<Duration>,
    outcomes: BTreeMap<String, u64>,
    budget_refused: u64,
    /// Calls the endpoints' fault layers refused (never sent).
    never_sent: u64,
    /// The most probes one half-open period of one endpoint had in flight at once.
    max_probes: u32,
}

impl Seen {
    fn total_attempts(&self) -> u64 {
        self.attempts.iter().sum()
    }

    fn percentile(&self, q: f64) -> Duration {
        let mut d = self.durations.clone();
        d.sort();
        d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1]
    }
}

/// Counts attempts, late starts and attempts in flight; then passes the call on.
#[derive(Clone)]
struct Probe<S> {
    inner: S,
    index: usize,
    shared: Arc<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    attempts: Vec<AtomicU64>,
    late: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Reads an endpoint's breaker: its state and how often it opened since it last closed.
    breakers: std::sync::OnceLock<BreakerLookup>,
    /// Per endpoint: the last breaker observation and the episode it started.
    episodes: Mutex<Vec<(Option<Observed>, u32)>>,
    /// Probes of each half-open period, per (endpoint, episode): in flight now, and at most.
    probes: Mutex<BTreeMap<(usize, u32), (u32, u32)>>,
}

/// A breaker's state and how often it opened since it last closed.
type Observed = (BreakerState, u32);
type BreakerLookup = Box<dyn Fn(usize) -> Option<Observed> + Send + Sync>;

struct InFlight(Arc<ProbeState>);

/// A half-open probe in flight, until its call ends.
struct ProbeGuard(Arc<ProbeState>, (usize, u32));

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some((now, _)) = self.0.probes.lock().unwrap().get_mut(&self.1) {
            *now -= 1;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S> Service<Request<Body>> for Probe<S>
where
    S: Service<Request<Body>, Response = Answer> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<stanchion::BoxError>,
{
    type Response = Answer;
    type Error = stanchion::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, stanchion::BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let s = &self.shared;
        s.attempts[self.index].fetch_add(1, Ordering::SeqCst);
        if Deadline::of(&req).is_some_and(|d| Instant::now() >= d.instant()) {
            s.late.fetch_add(1, Ordering::SeqCst);
        }
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        // The balancer took this call's breaker permit just now, in the same poll.
        let mut probe_guard = None;
        // A half-open period is told apart from the next by any change in what is observed
        // (closed calls between two periods, or one more opening).
        if let Some(observed) = s.breakers.get().and_then(|b| b(self.index)) {
            let mut episodes = s.episodes.lock().unwrap();
            let (last, episode) = &mut episodes[self.index];
            if *last != Some(observed) {
                *last = Some(observed);
                *episode += 1;
            }
            if observed.0 == BreakerState::HalfOpen {
                let key = (self.index, *episode);
                let mut probes = s.probes.lock().unwrap();
                let (now, most) = probes.entry(key).or_default();
                *now += 1;
                *most = (*most).max(*now);
                probe_guard = Some(ProbeGuard(s.clone(), key));
            }
        }
        let guard = InFlight(s.clone());
        let inner = self.inner.clone();
        Box::pin(async move {
            let _guards = (guard, probe_guard);
            inner.oneshot(req).await.map_err(Into::into)
        })
    }
}

/// Plays `sim` on a paused current-thread runtime.
fn run(sim: &Sim) -> Seen {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(play(sim))
}

async fn play(sim: &Sim) -> Seen {
    let origin = Instant::now();
    let n = sim.endpoints.len();
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)))
        .collect();
    let probe = Arc::new(ProbeState {
        attempts: (0..n).map(|_| AtomicU64::new(0)).collect(),
        episodes: Mutex::new(vec![(None, 0); n]),
        ..ProbeState::default()
    });
    let faults = Arc::new(Mutex::new(Vec::new()));
    let endpoints: Vec<_> = sim
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let status = p.status;
            let fault = FaultLayer::builder()
                .seed(sim.seed.wrapping_add(i as u64 * 7919))
                .latency(p.stall_rate, Duration::ZERO, p.stall)
                .never_sent(p.refused)
                .respond(p.fail, move || {
                    Response::builder()
                        .status(status)
                        .body(Empty::new())
                        .unwrap()
                })
                .build()
                .unwrap();
            faults.lock().unwrap().push(fault.clone());
            let (latency, phase) = (p.latency, p.phase);
            let handler = tower::service_fn(move |_req: Request<Body>| async move {
                let t = origin.elapsed();
                let failing = match phase {
                    Phase::Outage { from, to } => (from..to).contains(&t),
                    Phase::Flapping { period } => {
                        (t.as_nanos() / period.as_nanos().max(1)) % 2 == 1
                    }
                    Phase::Steady | Phase::ColdStart { .. } => false,
                };
                let extra = match phase {
                    Phase::ColdStart { until, slow } if t < until => slow,
                    _ => Duration::ZERO,
                };
                tokio::time::sleep(latency + extra).await;
                let status = if failing { 503 } else { 200 };
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(status)
                        .body(Empty::<Bytes>::new())
                        .unwrap(),
                )
            });
            Probe {
                inner: fault.layer(handler),
                index: i,
                shared: probe.clone(),
            }
        })
        .collect();
    let by_addr: BTreeMap<SocketAddr, _> = addrs.iter().copied().zip(endpoints).collect();
    let budget = RetryBudget::builder()
        .ratio(sim.budget_ratio)
        .min_per_second(sim.budget_floor)
        .build()
        .unwrap();
    let mut client = Client::http(Target::addrs(addrs.clone()));
    if let Some((failures, open, probes)) = sim.breaker {
        client = client
            .breaker(
                stanchion::breaker::CircuitBreaker::builder()
                    .consecutive_failures(failures)
                    .open_duration(open)
                    .half_open_probes(probes),
            )
            // No panic mode: open breakers are never bypassed, so probes are all there is.
            .panic_threshold(0.0);
    }
    let client = client
        .deadline(sim.deadline)
        .per_try_timeout(sim.per_try)
        .max_attempts(sim.attempts)
        .backoff(Backoff::new(MS, sim.backoff_cap).unwrap().seed(sim.seed))
        .retry_budget(budget.clone())
        .concurrency(sim.bulkhead)
        .build_with(move |addr| by_addr.get(&addr).cloned().expect("a simulated endpoint"))
        .unwrap();
    client.resolved().await;
    let balancer = client.balancer().clone();
    let lookup: BreakerLookup = Box::new(move |i| {
        let stats = balancer.breaker(addrs[i])?.stats();
        Some((stats.state, stats.openings))
    });
    let _ = probe.breakers.set(lookup);

    let results = Arc::new(Mutex::new((Vec::new(), BTreeMap::<String, u64>::new())));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..sim.concurrency {
        let (client, results) = (client.clone(), results.clone());
        let (calls, concurrency, pace) = (sim.calls, sim.concurrency, sim.pace);
        workers.spawn(async move {
            for _ in (w..calls).step_by(concurrency) {
                if !pace.is_zero() {
                    tokio::time::sleep(pace).await;
                }
                let req = Request::get("/sim").body(Empty::new()).unwrap();
                let t0 = Instant::now();
                let outcome = match client.clone().oneshot(req).await {
                    Ok(res) => {
                        let status = res.status().as_u16();
                        let _ = res.into_body().collect().await;
                        format!("{status}")
                    }
                    Err(e) => format!("{e:?}")
                        .split([' ', '{', '('])
                        .next()
                        .unwrap_or("")
                        .to_owned(),
                };
                let mut r = results.lock().unwrap();
                r.0.push(t0.elapsed());
                *r.1.entry(outcome).or_default() += 1;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let (durations, outcomes) = std::mem::take(&mut *results.lock().unwrap());
    Seen {
        attempts: probe
            .attempts
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .collect(),
        late_starts: probe.late.load(Ordering::SeqCst),
        max_in_flight: probe.max_in_flight.load(Ordering::SeqCst),
        durations,
        outcomes,
        budget_refused: budget.stats().refused,
        never_sent: faults
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.stats().errors)
            .sum(),
        max_probes: probe
            .probes
            .lock()
            .unwrap()
            .values()
            .map(|(_, most)| *most)
            .max()
            .unwrap_or(0),
    }
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        Just(Phase::Steady),
        (0u64..300, 1u64..600).prop_map(|(from, len)| Phase::Outage {
            from: Duration::from_millis(from),
            to: Duration::from_millis(from + len),
        }),
        (5u64..200).prop_map(|p| Phase::Flapping {
            period: Duration::from_millis(p)
        }),
        (1u64..500, 1u64..300).prop_map(|(until, slow)| Phase::ColdStart {
            until: Duration::from_millis(until),
            slow: Duration::from_millis(slow),
        }),
    ]
}

fn profile() -> impl Strategy<Value = Profile> {
    (
        0.0f64..0.6,
        prop::sample::select(vec![500u16, 503, 429]),
        0.0f64..0.2,
        0u64..20,
        0.0f64..0.3,
        0u64..400,
        phase(),
    )
        .prop_map(
            |(fail, status, refused, latency, stall_rate, stall, phase)| Profile {
                fail,
                status,
                refused,
                latency: Duration::from_millis(latency),
                stall_rate,
                stall: Duration::from_millis(stall),
                phase,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// At 100 % retryable failure, retries stay within the budget: ratio · requests plus the
    /// floor's reserve (floor · 10 s window), plus free resends of never-sent requests.
    #[test]
    fn a_failure_storm_stays_within_the_retry_budget(
        seed in any::<u64>(), endpoints in 1usize..6, calls in 50usize..400,
        ratio in 0.0f64..0.5, floor in 0u32..20, attempts in 2u32..6,
        refused in prop_oneof![Just(0.0), 0.0f64..0.3],
    ) {
        // Every request that reaches an endpoint fails; some never reach it (refused).
        let failing = Profile { fail: 1.0 - refused, refused, ..Profile::healthy() };
        let sim = Sim {
            calls,
            attempts,
            budget_ratio: ratio,
            budget_floor: floor,
            ..Sim::new(vec![failing; endpoints], seed)
        };
        let seen = run(&sim);
        // A never-sent request is resent once for free (gRPC A6's transparent retry): those
        // resends are outside the budget, at most one per call.
        let retries = seen.total_attempts() - calls as u64;
        let transparent = seen.never_sent.min(calls as u64);
        // The budget keeps tokens in thousandths: the ratio counts rounded to 0.001.
        let per_mille = (ratio * 1000.0).round() as u64;
        let bound = per_mille * calls as u64 / 1000 + u64::from(floor) * 10;
        prop_assert!(retries <= bound + transparent, "{retries} retries > {bound} + {transparent} ({seen:?})");
        if refused == 0.0 {
            prop_assert_eq!(seen.outcomes.get("500").copied(), Some(calls as u64));
        }
        if bound < calls as u64 * u64::from(attempts - 1) {
            prop_assert!(seen.budget_refused > 0);
        }
    }

    /// No attempt starts at or after its deadline, and no call outlives its deadline by more
    /// than one timer tick (1 ms).
    #[test]
    fn no_attempt_starts_late_and_no_call_outlives_its_deadline(
        seed in any::<u64>(), profiles in proptest::collection::vec(profile(), 1..6),
        deadline in 20u64..400, per_try in 5u64..300, attempts in 1u32..5,
    ) {
        let sim = Sim {
            deadline: Duration::from_millis(deadline),
            per_try: Duration::from_millis(per_try),
            attempts,
            calls: 150,
            ..Sim::new(profiles, seed)
        };
        let seen = run(&sim);
        prop_assert_eq!(seen.late_starts, 0);
        let longest = seen.durations.iter().max().copied().unwrap_or_default();
        prop_assert!(longest <= sim.deadline + MS, "a call took {longest:?} of {:?}", sim.deadline);
    }

    /// Attempts in flight never exceed the bulkhead's concurrency (one logical call has at most
    /// one attempt in flight).
    #[test]
    fn in_flight_never_exceeds_the_bulkhead(
        seed in any::<u64>(), profiles in proptest::collection::vec(profile(), 1..6),
        limit in 1usize..8, queue in 0usize..8, callers in 1usize..24,
    ) {
        let sim = Sim {
            concurrency: callers,
            calls: 120,
            bulkhead: Limits { concurrency: limit, queue, max_wait: Duration::from_millis(50) },
            ..Sim::new(profiles, seed)
        };
        let seen = run(&sim);
        prop_assert!(seen.max_in_flight <= limit, "{} in flight > {limit}", seen.max_in_flight);
        prop_assert_eq!(seen.durations.len(), 120);
    }

    /// With one of five endpoints slow (it answers after several per-try timeouts), p99 stays
    /// within one per-try timeout plus one backoff (plus the healthy endpoints' own latency):
    /// the slow attempt is cut at the per-try timeout, the retry goes elsewhere, and the breaker
    /// soon ejects the slow endpoint.
    #[test]
    fn one_slow_endpoint_costs_at_most_a_per_try_and_a_backoff(
        seed in any::<u64>(), slow in 0usize..5, per_try in 20u64..200,
    ) {
        let mut endpoints = vec![Profile { latency: 2 * MS, ..Profile::healthy() }; 5];
        endpoints[slow].latency = Duration::from_millis(per_try * 10);
        let sim = Sim {
            per_try: Duration::from_millis(per_try),
            deadline: Duration::from_secs(2),
            calls: 400,
            ..Sim::new(endpoints, seed)
        };
        let seen = run(&sim);
        let bound = sim.per_try + sim.backoff_cap + 2 * 2 * MS + MS;
        let p99 = seen.percentile(0.99);
        prop_assert!(p99 <= bound, "p99 {p99:?} > {bound:?}");
        prop_assert_eq!(seen.outcomes.get("200").copied(), Some(400));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A half-open breaker never has more than its k probes in flight, whatever the endpoints
    /// do (outages, flapping, random failures) and however many callers race. (A probe that
    /// succeeds, or is cancelled, gives its slot to the next one until k have succeeded.)
    #[test]
    fn half_open_never_admits_more_than_its_probes(
        seed in any::<u64>(), profiles in proptest::collection::vec(profile(), 1..5),
        probes in 1u32..5, open in 5u64..100, failures in 1u32..6, callers in 1usize..24,
    ) {
        let sim = Sim {
            concurrency: callers,
            calls: 200,
            breaker: Some((failures, Duration::from_millis(open), probes)),
            ..Sim::new(profiles, seed)
        };
        let seen = run(&sim);
        prop_assert!(seen.max_probes <= probes, "{} probes in flight at once > {probes}", seen.max_probes);
    }
}

/// The simulation itself is deterministic: the same seed gives the same run.
#[test]
fn a_seed_replays_the_same_run() {
    let profiles = vec![
        Profile {
            fail: 0.3,
            status: 503,
            refused: 0.1,
            ..Profile::healthy()
        },
        Profile {
            stall_rate: 0.2,
            stall: Duration::from_millis(150),
            ..Profile::healthy()
        },
        Profile::healthy(),
    ];
    let a = run(&Sim::new(profiles.clone(), 42));
    let b = run(&Sim::new(profiles, 42));
    assert_eq!(a.attempts, b.attempts);
    assert_eq!(a.outcomes, b.outcomes);
    assert_eq!(a.durations, b.durations);
}

/// A per-try timeout that cuts an attempt counts as that endpoint's failure (5 in a row eject
/// it), and the retry goes to another endpoint.
#[test]
fn attempts_cut_by_the_per_try_timeout_eject_a_slow_endpoint() {
    let mut endpoints = vec![Profile::healthy(); 3];
    endpoints[1].latency = Duration::from_secs(60);
    let sim = Sim {
        calls: 60,
        concurrency: 1,
        // Above the breakers' 100 ms timeout floor: the cut is the endpoint's timeout.
        per_try: Duration::from_millis(150),
        deadline: Duration::from_secs(1),
        ..Sim::new(endpoints, 5)
    };
    let seen = run(&sim);
    assert_eq!(
        seen.attempts[1], 5,
        "the slow endpoint was not ejected after 5 timeouts"
    );
    assert_eq!(seen.outcomes.get("200").copied(), Some(60));
    // Each of the 5 calls that met it paid one per-try timeout, one backoff and a fast answer.
    let slowest = seen.durations.iter().max().copied().unwrap();
    assert!(
        slowest <= sim.per_try + sim.backoff_cap + 2 * MS,
        "{slowest:?}"
    );
    assert_eq!(
        seen.total_attempts(),
        65,
        "each cut attempt was retried once, elsewhere"
    );
}

/// The retry of an attempt cut by its per-try timeout goes to another endpoint, even when the
/// round robin's turn has come back to the slow one.
#[tokio::test(start_paused = true)]
async fn the_retry_of_a_cut_attempt_avoids_its_endpoint() {
    let addrs: Vec<SocketAddr> = vec![
        "127.0.0.1:9001".parse().unwrap(),
        "127.0.0.1:9002".parse().unwrap(),
    ];
    let probe = Arc::new(ProbeState {
        attempts: (0..2).map(|_| AtomicU64::new(0)).collect(),
        ..ProbeState::default()
    });
    let make = {
        let (addrs, probe) = (addrs.clone(), probe.clone());
        move |addr: SocketAddr| {
            let index = addrs.iter().position(|a| *a == addr).unwrap();
            let latency = if index == 0 {
                Duration::from_secs(60)
            } else {
                MS
            };
            Probe {
                inner: tower::service_fn(move |_req: Request<Body>| async move {
                    tokio::time::sleep(latency).await;
                    Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
                }),
                index,
                shared: probe.clone(),
            }
        }
    };
    let client = Client::http(Target::addrs(addrs))
        .per_try_timeout(Duration::from_millis(100))
        .backoff(Backoff::new(MS, 10 * MS).unwrap().seed(1))
        .build_with(make)
        .unwrap();
    client.resolved().await;
    let get = || Request::get("/").body(Empty::<Bytes>::new()).unwrap();
    let first = tokio::spawn(client.clone().oneshot(get()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    // A second call takes the other endpoint's turn, so the next turn is the slow one's again.
    client.clone().oneshot(get()).await.unwrap();
    let t0 = Instant::now();
    let res = first.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        probe.attempts[0].load(Ordering::SeqCst),
        1,
        "the retry went back to the slow endpoint"
    );
    assert_eq!(probe.attempts[1].load(Ordering::SeqCst), 2);
    assert!(t0.elapsed() <= Duration::from_millis(80) + 10 * MS + 2 * MS);
}

type Keyed = ReplayBody<http_body_util::Full<Bytes>>;

/// Plays keyed POSTs through the whole client against two in-process server instances that
/// share one idempotency store; handlers take longer than the per-try timeout at random, so
/// attempts are cut and retried under the same key (meeting 409 while the first one runs, then
/// the stored answer). Returns how often each key's handler ran, and the calls' statuses.
async fn keyed_run(
    seed: u64,
    lease: Duration,
    per_try: Duration,
) -> (BTreeMap<String, u32>, BTreeMap<u16, u32>) {
    use stanchion::client::{Route, RoutePolicy};
    use stanchion::idempotency::{IdempotencyBody, IdempotencyLayer, MemoryStore};
    let runs: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let store = MemoryStore::new();
    let handler = {
        let runs = runs.clone();
        tower::service_fn(move |req: Request<IdempotencyBody<Keyed>>| {
            let runs = runs.clone();
            async move {
                let key = req
                    .headers()
                    .get("idempotency-key")
                    .and_then(|k| k.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                *runs.lock().unwrap().entry(key.clone()).or_default() += 1;
                // 0 to 3 per-try timeouts of work, chosen by the key and the seed.
                let work = (key.bytes().map(u64::from).sum::<u64>() ^ seed) % 4;
                tokio::time::sleep(per_try * work as u32).await;
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(201)
                        .body(http_body_util::Full::new(Bytes::from(key)))
                        .unwrap(),
                )
            }
        })
    };
    let layer = IdempotencyLayer::builder(store)
        .lease(lease)
        .build()
        .unwrap();
    let instance = layer.layer(handler);
    let addrs: Vec<SocketAddr> = vec![
        "127.0.0.1:9101".parse().unwrap(),
        "127.0.0.1:9102".parse().unwrap(),
    ];
    let client = Client::http(Target::addrs(addrs))
        .deadline(Duration::from_secs(5))
        .per_try_timeout(per_try)
        .max_attempts(10)
        .backoff(Backoff::new(per_try / 2, per_try * 2).unwrap().seed(seed))
        .without_ejection()
        .route(
            Route::path_prefix("/pay"),
            RoutePolicy::new().idempotency_keys(true),
        )
        .build_with(move |_| instance.clone())
        .unwrap();
    client.resolved().await;
    let statuses: Arc<Mutex<BTreeMap<u16, u32>>> = Arc::default();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (client, statuses) = (client.clone(), statuses.clone());
        calls.spawn(async move {
            let req = Request::post("/pay")
                .body(http_body_util::Full::new(Bytes::from(format!(
                    "amount={i}"
                ))))
                .unwrap();
            let status = match client.oneshot(req).await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let _ = res.into_body().collect().await;
                    status
                }
                Err(_) => 0,
            };
            *statuses.lock().unwrap().entry(status).or_default() += 1;
        });
    }
    while calls.join_next().await.is_some() {}
    let runs = runs.lock().unwrap().clone();
    let statuses = statuses.lock().unwrap().clone();
    (runs, statuses)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// A keyed request's handler never runs twice while its record or lease is held, however
    /// its attempts are cut, retried and spread over instances.
    #[test]
    fn a_keyed_handler_never_runs_twice(seed in any::<u64>(), lease in 30u64..200, per_try in 20u64..80) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let (runs, statuses) = rt.block_on(keyed_run(seed, Duration::from_millis(lease), Duration::from_millis(per_try)));
        prop_assert_eq!(runs.len(), 40, "every call reached a handler once: {:?}", runs);
        for (key, n) in &runs {
            prop_assert_eq!(*n, 1, "key {} ran {} times", key, n);
        }
        // A call whose attempts all met the first one still running ends with that 409 (the
        // conflict, surfaced); every other call gets the stored 201. Nothing else.
        prop_assert!(statuses.keys().all(|s| *s == 201 || *s == 409), "{:?}", statuses);
        prop_assert!(statuses.get(&201).copied().unwrap_or(0) >= 30, "{:?}", statuses);
    }
}

/// A seed the property found: one call's ten attempts all met the first still running, and it
/// ended with the 409 — the handler still ran once.
#[test]
fn a_surfaced_conflict_still_means_one_run() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (runs, statuses) = rt.block_on(keyed_run(
        7_417_621_709_127_820_173,
        Duration::from_millis(109),
        Duration::from_millis(77),
    ));
    assert_eq!(runs.len(), 40);
    assert!(runs.values().all(|n| *n == 1), "{runs:?}");
    assert!(
        statuses.keys().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
}

/// The half-open property is not vacuous: with callers waiting, a half-open period fills all of
/// its k probe slots at once, and no more.
#[test]
fn a_half_open_period_fills_exactly_its_probe_slots() {
    let recovering = Profile {
        latency: 20 * MS,
        phase: Phase::Outage {
            from: Duration::ZERO,
            to: Duration::from_millis(100),
        },
        ..Profile::healthy()
    };
    // Over a few seeds (each an exact replay): never more than k, and k is reached.
    let most = (0..8)
        .map(|seed| {
            // Callers keep coming (a call per millisecond each): with every endpoint ejected
            // a call fails at once (no endpoints), so without a pace they would all be spent
            // before the half-open period.
            let sim = Sim {
                concurrency: 20,
                calls: 400,
                pace: MS,
                breaker: Some((2, Duration::from_millis(10), 3)),
                ..Sim::new(vec![recovering.clone()], seed)
            };
            let probes = run(&sim).max_probes;
            assert!(probes <= 3, "seed {seed}: {probes} probes in flight");
            probes
        })
        .max();
    assert_eq!(most, Some(3));
}
