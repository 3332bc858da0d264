//! A failure profile played against real local HTTP servers through a stanchion client, and the
//! report of what happened. Used by `examples/simulate` (flags → [`Scenario`]) and by
//! `tests/simulate.rs`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use stanchion::Error;
use stanchion::breaker::BreakerState;
use stanchion::client::{Client, Target};
use stanchion::pool::{HttpConnector, PoolBuilder};
use stanchion::retry::{Backoff, ReplayBody, RetryBudget};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// One endpoint answers every request with the failure status from `start` to `end` (measured
/// from the start of the run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    pub endpoint: usize,
    pub start: Duration,
    pub end: Duration,
}

/// What to play: the servers' behaviour and the client's policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub endpoints: usize,
    pub requests: usize,
    pub concurrency: usize,
    /// Share of requests (0 to 1) each server fails at random.
    pub failure_rate: f64,
    /// The status of a failure (503 by default).
    pub failure_status: u16,
    /// How long each server takes to answer.
    pub latency: Duration,
    /// One endpoint (index) that takes this long instead.
    pub slow: Option<(usize, Duration)>,
    /// `Retry-After` seconds sent with every failure.
    pub retry_after: Option<u64>,
    pub outages: Vec<Outage>,
    pub deadline: Duration,
    pub per_try: Duration,
    pub max_attempts: u32,
    pub budget_ratio: f64,
    pub budget_per_second: u32,
    /// The client's bulkhead: this many calls at once and as many waiting (default: the
    /// client's default, 100 + 50 waiting up to 1 s).
    pub bulkhead: Option<usize>,
    pub seed: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            endpoints: 3,
            requests: 1000,
            concurrency: 16,
            failure_rate: 0.1,
            failure_status: 503,
            latency: Duration::from_millis(2),
            slow: None,
            retry_after: None,
            outages: Vec::new(),
            deadline: Duration::from_secs(1),
            per_try: Duration::from_millis(300),
            max_attempts: 3,
            budget_ratio: 0.2,
            budget_per_second: 10,
            bulkhead: None,
            seed: 1,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub requests: usize,
    /// Attempts the client sent, per endpoint (what the balancer dispatched).
    pub attempts_per_endpoint: BTreeMap<String, u64>,
    /// Requests each server received.
    pub seen_per_endpoint: BTreeMap<String, u64>,
    /// Attempts beyond each request's first, counted on each request.
    pub retries: u64,
    /// Requests that never reached an endpoint (bulkhead, no endpoint, deadline before sending).
    pub never_attempted: u64,
    pub outcomes: BTreeMap<String, u64>,
    /// Retries the budget refused.
    pub budget_exhaustions: u64,
    /// Breaker state changes seen, as "from -> to".
    pub breaker_transitions: BTreeMap<String, u64>,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub wall_time: Duration,
}

impl Report {
    /// Attempts sent in all.
    pub fn attempts(&self) -> u64 {
        self.attempts_per_endpoint.values().sum()
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        serde_json::json!({
            "requests": self.requests,
            "attempts": self.attempts(),
            "retries": self.retries,
            "never_attempted": self.never_attempted,
            "attempts_per_endpoint": self.attempts_per_endpoint,
            "seen_per_endpoint": self.seen_per_endpoint,
            "outcomes": self.outcomes,
            "budget_exhaustions": self.budget_exhaustions,
            "breaker_transitions": self.breaker_transitions,
            "latency_ms": { "p50": ms(self.p50), "p99": ms(self.p99), "max": ms(self.max) },
            "wall_time_ms": ms(self.wall_time),
        })
    }

    /// The report for a person.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(&mut out, format!("requests:            {}", self.requests));
        line(
            &mut out,
            format!(
                "attempts:            {} ({:.2} per request) = requests {} - never attempted {} + retries {}",
                self.attempts(),
                self.attempts() as f64 / self.requests.max(1) as f64,
                self.requests,
                self.never_attempted,
                self.retries
            ),
        );
        for (endpoint, sent) in &self.attempts_per_endpoint {
            let seen = self.seen_per_endpoint.get(endpoint).copied().unwrap_or(0);
            line(
                &mut out,
                format!("  {endpoint:<22} sent {sent:>6}  seen by server {seen:>6}"),
            );
        }
        line(
            &mut out,
            format!("budget exhaustions:  {}", self.budget_exhaustions),
        );
        if self.breaker_transitions.is_empty() {
            line(&mut out, "breaker transitions: none".to_owned());
        } else {
            line(&mut out, "breaker transitions:".to_owned());
            for (transition, n) in &self.breaker_transitions {
                line(&mut out, format!("  {n:>6}  {transition}"));
            }
        }
        line(&mut out, "outcomes:".to_owned());
        for (outcome, n) in &self.outcomes {
            line(&mut out, format!("  {n:>6}  {outcome}"));
        }
        line(
            &mut out,
            format!(
                "latency:             p50 {:.1?}  p99 {:.1?}  max {:.1?}",
                self.p50, self.p99, self.max
            ),
        );
        line(
            &mut out,
            format!("wall time:           {:.2?}", self.wall_time),
        );
        out
    }
}

impl Scenario {
    /// Checks the numbers before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints == 0 || self.endpoints > 64 {
            return Err(format!(
                "--endpoints {} is not between 1 and 64",
                self.endpoints
            ));
        }
        if self.requests == 0 || self.requests > 1_000_000 {
            return Err(format!(
                "--requests {} is not between 1 and 1000000",
                self.requests
            ));
        }
        if self.concurrency == 0 || self.concurrency > 10_000 {
            return Err(format!(
                "--concurrency {} is not between 1 and 10000",
                self.concurrency
            ));
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!(
                "--failure-rate {} is not between 0 and 1",
                self.failure_rate
            ));
        }
        if http::StatusCode::from_u16(self.failure_status).is_err() {
            return Err(format!(
                "--failure-status {} is not an HTTP status",
                self.failure_status
            ));
        }
        for outage in &self.outages {
            if outage.endpoint >= self.endpoints || outage.start >= outage.end {
                return Err(format!(
                    "--outage {}:{}-{} needs an endpoint below {} and start < end",
                    outage.endpoint,
                    outage.start.as_millis(),
                    outage.end.as_millis(),
                    self.endpoints
                ));
            }
        }
        if let Some((endpoint, _)) = self.slow
            && endpoint >= self.endpoints
        {
            return Err(format!(
                "--slow {endpoint}: there are only {} endpoints",
                self.endpoints
            ));
        }
        Ok(())
    }

    /// Starts the servers, plays the requests, and reports.
    pub async fn run(&self) -> Result<Report, Box<dyn std::error::Error + Send + Sync>> {
        self.validate()?;
        let started = Instant::now();
        let mut servers = Vec::with_capacity(self.endpoints);
        for i in 0..self.endpoints {
            servers.push(SimServer::start(self, i, started).await?);
        }
        let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
        let sent: Arc<BTreeMap<SocketAddr, AtomicU64>> =
            Arc::new(addrs.iter().map(|a| (*a, AtomicU64::new(0))).collect());

        let budget = RetryBudget::builder()
            .ratio(self.budget_ratio)
            .min_per_second(self.budget_per_second)
            .build()?;
        let pool = PoolBuilder::new().settings()?;
        let counted = sent.clone();
        let mut client = Client::http(Target::addrs(addrs.clone()));
        if let Some(limit) = self.bulkhead {
            client = client.concurrency(stanchion::bulkhead::Limits {
                concurrency: limit,
                queue: limit,
                max_wait: self.deadline.min(Duration::from_secs(3600)),
            });
        }
        let client = client
            .deadline(self.deadline)
            .per_try_timeout(self.per_try)
            .max_attempts(self.max_attempts)
            .backoff(
                Backoff::new(Duration::from_millis(10), Duration::from_millis(100))?
                    .seed(self.seed),
            )
            .retry_budget(budget.clone())
            .build_with(move |addr| {
                let counted = counted.clone();
                let pool = pool.build(HttpConnector::<ReplayBody<Empty<Bytes>>>::http1(), addr);
                tower::util::MapRequest::new(pool, move |req: Request<ReplayBody<Empty<Bytes>>>| {
                    if let Some(counter) = counted.get(&addr) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(tally) = req.extensions().get::<Tally>() {
                        tally.0.fetch_add(1, Ordering::Relaxed);
                    }
                    req
                })
            })?;
        client.resolved().await;

        // Breaker transitions, from each endpoint's state feed.
        let transitions = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
        let mut watchers = JoinSet::new();
        for addr in &addrs {
            let Some(breaker) = client.balancer().breaker(*addr) else {
                continue;
            };
            let transitions = transitions.clone();
            watchers.spawn(async move {
                let mut feed = breaker.subscribe();
                let mut last = *feed.borrow_and_update();
                while feed.changed().await.is_ok() {
                    let now = *feed.borrow_and_update();
                    if now != last {
                        let key = format!("{} -> {}", state_name(last), state_name(now));
                        *transitions
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(key)
                            .or_default() += 1;
                        last = now;
                    }
                }
            });
        }

        let run_started = Instant::now();
        let mut workers = JoinSet::new();
        for worker in 0..self.concurrency.min(self.requests) {
            let client = client.clone();
            let (requests, concurrency) = (self.requests, self.concurrency);
            workers.spawn(async move {
                let mut results = Vec::new();
                for _ in (worker..requests).step_by(concurrency) {
                    let tally = Tally(Arc::new(AtomicU32::new(0)));
                    let mut req = Request::get("/sim")
                        .body(Empty::<Bytes>::new())
                        .expect("a valid request");
                    req.extensions_mut().insert(tally.clone());
                    let t0 = Instant::now();
                    let outcome = match client.clone().oneshot(req).await {
                        Ok(res) => {
                            let status = res.status();
                            // Read the body so the connection goes back to its pool.
                            let _ = res.into_body().collect().await;
                            if status.is_success() {
                                "ok".to_owned()
                            } else {
                                format!("status_{}", status.as_u16())
                            }
                        }
                        Err(error) => error_name(&error).to_owned(),
                    };
                    results.push((outcome, t0.elapsed(), tally.0.load(Ordering::Relaxed)));
                }
                results
            });
        }
        let mut report = Report {
            requests: self.requests,
            ..Report::default()
        };
        let mut latencies = Vec::with_capacity(self.requests);
        while let Some(results) = workers.join_next().await {
            for (outcome, latency, attempts) in results? {
                *report.outcomes.entry(outcome).or_default() += 1;
                latencies.push(latency);
                match attempts {
                    0 => report.never_attempted += 1,
                    n => report.retries += u64::from(n - 1),
                }
            }
        }
        report.wall_time = run_started.elapsed();
        // Let the last transitions arrive, then stop watching.
        tokio::task::yield_now().await;
        watchers.abort_all();
        latencies.sort();
        report.p50 = percentile(&latencies, 0.50);
        report.p99 = percentile(&latencies, 0.99);
        report.max = latencies.last().copied().unwrap_or_default();
        report.budget_exhaustions = budget.stats().refused;
        report.breaker_transitions = transitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (addr, n) in sent.iter() {
            report
                .attempts_per_endpoint
                .insert(addr.to_string(), n.load(Ordering::Relaxed));
        }
        for server in &servers {
            report
                .seen_per_endpoint
                .insert(server.addr.to_string(), server.seen.load(Ordering::Relaxed));
        }
        Ok(report)
    }
}

/// Counts a logical request's attempts; every attempt carries a clone (extensions are copied).
#[derive(Debug, Clone)]
struct Tally(Arc<AtomicU32>);

fn state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
        _ => "other",
    }
}

/// A stable name for each error a caller can get.
pub fn error_name(error: &Error) -> &'static str {
    match error {
        Error::DeadlineExceeded { .. } => "deadline_exceeded",
        Error::AttemptTimedOut { .. } => "attempt_timed_out",
        Error::RetriesExhausted { .. } => "retries_exhausted",
        Error::RetryBudgetExhausted { .. } => "retry_budget_exhausted",
        Error::RetryRefused { .. } => "retry_refused",
        Error::CircuitOpen { .. } => "circuit_open",
        Error::BulkheadFull { .. } => "bulkhead_full",
        Error::BulkheadTimeout { .. } => "bulkhead_timeout",
        Error::PoolTimeout { .. } => "pool_timeout",
        Error::NoEndpoints { .. } => "no_endpoints",
        _ => "transport_error",
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A local HTTP/1 server that plays one endpoint's part of the scenario.
struct SimServer {
    addr: SocketAddr,
    seen: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Behaviour {
    index: usize,
    seed: u64,
    failure_rate: f64,
    failure_status: u16,
    latency: Duration,
    retry_after: Option<u64>,
    outages: Vec<(Duration, Duration)>,
    started: Instant,
    seen: Arc<AtomicU64>,
}

impl SimServer {
    async fn start(
        scenario: &Scenario,
        index: usize,
        started: Instant,
    ) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(AtomicU64::new(0));
        let behaviour = Arc::new(Behaviour {
            index,
            seed: scenario.seed,
            failure_rate: scenario.failure_rate,
            failure_status: scenario.failure_status,
            latency: match scenario.slow {
                Some((slow, latency)) if slow == index => latency,
                _ => scenario.latency,
            },
            retry_after: scenario.retry_after,
            outages: scenario
                .outages
                .iter()
                .filter(|o| o.endpoint == index)
                .map(|o| (o.start, o.end))
                .collect(),
            started,
            seen: seen.clone(),
        });
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let behaviour = behaviour.clone();
                connections.spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| answer(behaviour.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(SimServer { addr, seen, task })
    }
}

async fn answer(
    behaviour: Arc<Behaviour>,
    _req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = behaviour.seen.fetch_add(1, Ordering::Relaxed);
    let elapsed = behaviour.started.elapsed();
    let in_outage = behaviour
        .outages
        .iter()
        .any(|(start, end)| (*start..*end).contains(&elapsed));
    let roll = unit(mix(behaviour.seed ^ ((behaviour.index as u64) << 48) ^ n));
    let fail = in_outage || roll < behaviour.failure_rate;
    if !behaviour.latency.is_zero() {
        tokio::time::sleep(behaviour.latency).await;
    }
    let mut res = Response::builder().status(if fail { behaviour.failure_status } else { 200 });
    if fail && let Some(seconds) = behaviour.retry_after {
        res = res.header(http::header::RETRY_AFTER, seconds);
    }
    Ok(res
        .body(Full::new(Bytes::from_static(if fail {
            b"failed"
        } else {
            b"ok"
        })))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// SplitMix64's output function: a well-mixed 64-bit value from a counter.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value in [0, 1) from 64 random bits.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
