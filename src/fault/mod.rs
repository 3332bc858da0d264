//! Fault injection for chaos tests of your own stack: latency, errors and chosen outcomes, at a
//! rate, from a seeded sequence.
//!
//! A resilience policy is only as good as the failures it has met. [`FaultLayer`] puts them where
//! you want them — around one endpoint's transport, a whole client, or a test double — so the
//! deadline, retries, breakers and bulkheads above it can be watched at work: in a test under
//! `tokio::time::pause()` (exact and fast), or in a staging environment. The crate's own
//! simulation suite (`tests/simulation.rs`) is built on it.
//!
//! Each call draws from a sequence seeded with [`FaultLayerBuilder::seed`] (`rand`'s
//! `SmallRng`), so a run is repeatable for a given order of calls. Per call, in this order:
//!
//! 1. **latency**: with probability `rate`, wait a uniform time in `[min, max]` first (charged to
//!    the caller's deadline like any network delay);
//! 2. **outcome**: with the probability of each, fail with an injected error
//!    ([`InjectedFault`], optionally marked never sent — the request did not reach anyone), or
//!    answer with a response you make (a 503, a trailers-only gRPC status…) without calling the
//!    inner service; otherwise the inner service answers.
//!
//! ```
//! use std::time::Duration;
//! use stanchion::fault::FaultLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), stanchion::BoxError> {
//! let chaos = FaultLayer::builder()
//!     .seed(7)
//!     .latency(0.5, Duration::from_millis(10), Duration::from_millis(50))
//!     .respond(0.25, || http::Response::builder().status(503).body(()).unwrap())
//!     .build()?;
//! let svc = chaos.layer(service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! let mut unavailable = 0;
//! for _ in 0..100 {
//!     let res = svc.clone().oneshot(http::Request::new(())).await?;
//!     unavailable += usize::from(res.status() == 503);
//! }
//! assert_eq!(unavailable, chaos.stats().responses as usize);
//! assert!((10..=40).contains(&unavailable));
//! # Ok(()) }
//! ```
//!
//! Not for the hot path: each call's future is boxed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt};

use crate::classify::NeverSent;
use crate::deadline::MAX_BUDGET;
use crate::error::{BoxError, ConfigError};
use crate::rng::Jitter;

type MakeResponse<R> = Arc<dyn Fn() -> R + Send + Sync>;

/// The error an injected failure returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFault;

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("injected fault")
    }
}

impl std::error::Error for InjectedFault {}

/// How many calls met each fault so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultStats {
    /// Calls in all.
    pub calls: u64,
    /// Calls delayed.
    pub delayed: u64,
    /// Calls failed with [`InjectedFault`].
    pub errors: u64,
    /// Calls answered with a made response.
    pub responses: u64,
}

struct Config<R> {
    jitter: Jitter,
    latency: Option<(f64, Duration, Duration)>,
    error: f64,
    never_sent: bool,
    responses: Vec<(f64, MakeResponse<R>)>,
    calls: AtomicU64,
    delayed: AtomicU64,
    errors: AtomicU64,
    answered: AtomicU64,
}

/// Injects latency, errors and outcomes at a rate. See the [module docs](self).
pub struct FaultLayer<R> {
    config: Arc<Config<R>>,
}

impl<R> Clone for FaultLayer<R> {
    fn clone(&self) -> Self {
        FaultLayer {
            config: self.config.clone(),
        }
    }
}

impl<R> fmt::Debug for FaultLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayer")
            .field("latency", &self.config.latency)
            .field("error", &self.config.error)
            .field("responses", &self.config.responses.len())
            .finish()
    }
}

/// Builds a [`FaultLayer`].
pub struct FaultLayerBuilder<R> {
    seed: Option<u64>,
    latency: Option<(f64, Duration, Duration)>,
    error: f64,
    never_sent: bool,
    responses: Vec<(f64, MakeResponse<R>)>,
}

impl<R> fmt::Debug for FaultLayerBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultLayerBuilder")
            .field("seed", &self.seed)
            .field("latency", &self.latency)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<R> FaultLayer<R> {
    /// A builder that injects nothing yet, seeded at random.
    pub fn builder() -> FaultLayerBuilder<R> {
        FaultLayerBuilder {
            seed: None,
            latency: None,
            error: 0.0,
            never_sent: false,
            responses: Vec::new(),
        }
    }

    /// What has been injected so far (shared by every service this layer made).
    pub fn stats(&self) -> FaultStats {
        let c = &self.config;
        FaultStats {
            calls: c.calls.load(Ordering::Relaxed),
            delayed: c.delayed.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            responses: c.answered.load(Ordering::Relaxed),
        }
    }
}

impl<R> FaultLayerBuilder<R> {
    /// Seeds the sequence, so runs repeat for the same order of calls.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// With probability `rate`, delay the call by a uniform time in `[min, max]`.
    pub fn latency(mut self, rate: f64, min: Duration, max: Duration) -> Self {
        self.latency = Some((rate, min, max));
        self
    }

    /// With probability `rate`, fail the call with [`InjectedFault`] (the request may have
    /// reached the server, as far as the layers above can tell).
    pub fn error(mut self, rate: f64) -> Self {
        self.error = rate;
        self.never_sent = false;
        self
    }

    /// With probability `rate`, fail the call with [`InjectedFault`] marked
    /// [`NeverSent`] — a refused connection: always safe to retry.
    pub fn never_sent(mut self, rate: f64) -> Self {
        self.error = rate;
        self.never_sent = true;
        self
    }

    /// With probability `rate`, answer with `make()` instead of calling the inner service.
    /// Several outcomes may be given; their rates and the error rate add up to at most 1.
    pub fn respond(mut self, rate: f64, make: impl Fn() -> R + Send + Sync + 'static) -> Self {
        self.responses.push((rate, Arc::new(make)));
        self
    }

    /// Checks the rates (each in `[0, 1]`, the outcomes' sum at most 1) and the latency range.
    pub fn build(self) -> Result<FaultLayer<R>, ConfigError> {
        let rate_ok = |r: f64| (0.0..=1.0).contains(&r);
        if let Some((rate, min, max)) = self.latency {
            if !rate_ok(rate) {
                return Err(ConfigError::new(
                    "latency",
                    format!("rate {rate} is outside [0, 1]"),
                ));
            }
            if min > max || max > MAX_BUDGET {
                return Err(ConfigError::new(
                    "latency",
                    format!("[{min:?}, {max:?}] is not a range of at most a year"),
                ));
            }
        }
        if !rate_ok(self.error) {
            return Err(ConfigError::new(
                "error",
                format!("rate {} is outside [0, 1]", self.error),
            ));
        }
        let mut sum = self.error;
        for (rate, _) in &self.responses {
            if !rate_ok(*rate) {
                return Err(ConfigError::new(
                    "respond",
                    format!("rate {rate} is outside [0, 1]"),
                ));
            }
            sum += rate;
        }
        if sum > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                "respond",
                format!("the outcomes' rates add up to {sum}, more than 1"),
            ));
        }
        let jitter = self.seed.map_or_else(Jitter::new, Jitter::seeded);
        Ok(FaultLayer {
            config: Arc::new(Config {
                jitter,
                latency: self.latency,
                error: self.error,
                never_sent: self.never_sent,
                responses: self.responses,
                calls: AtomicU64::new(0),
                delayed: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                answered: AtomicU64::new(0),
            }),
        })
    }
}

impl<S, R> Layer<S> for FaultLayer<R> {
    type Service = FaultService<S, R>;

    fn layer(&self, inner: S) -> FaultService<S, R> {
        FaultService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service of [`FaultLayer`].
pub struct FaultService<S, R> {
    inner: S,
    config: Arc<Config<R>>,
}

impl<S: Clone, R> Clone for FaultService<S, R> {
    fn clone(&self) -> Self {
        FaultService {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for FaultService<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What one call meets.
enum Plan<R> {
    Pass,
    Fail,
    Answer(R),
}

impl<R> Config<R> {
    fn unit(&self) -> f64 {
        (self.jitter.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn plan(&self) -> (Option<Duration>, Plan<R>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let delay = self.latency.and_then(|(rate, min, max)| {
            (self.unit() < rate).then(|| {
                self.delayed.fetch_add(1, Ordering::Relaxed);
                self.jitter.between(min, max)
            })
        });
        let mut draw = self.unit();
        if draw < self.error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return (delay, Plan::Fail);
        }
        draw -= self.error;
        for (rate, make) in &self.responses {
            if draw < *rate {
                self.answered.fetch_add(1, Ordering::Relaxed);
                return (delay, Plan::Answer(make()));
            }
            draw -= rate;
        }
        (delay, Plan::Pass)
    }
}

impl<S, R, Req> Service<Req> for FaultService<S, R>
where
    S: Service<Req, Response = R> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    R: Send + 'static,
    Req: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

    /// Always ready: the inner service's readiness is awaited inside the call, after any delay.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (delay, plan) = self.config.plan();
        let never_sent = self.config.never_sent;
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            match plan {
                Plan::Pass => inner.oneshot(req).await.map_err(Into::into),
                Plan::Answer(res) => Ok(res),
                Plan::Fail if never_sent => {
                    Err(Box::new(NeverSent::new(InjectedFault)) as BoxError)
                }
                Plan::Fail => Err(Box::new(InjectedFault) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> FaultLayerBuilder<u32> {
        FaultLayer::builder()
    }

    #[test]
    fn rates_and_ranges_are_checked() {
        assert!(layer().error(1.5).build().is_err());
        assert!(layer().error(f64::NAN).build().is_err());
        assert!(layer().respond(-0.1, || 1).build().is_err());
        assert!(layer().error(0.6).respond(0.6, || 1).build().is_err());
        assert!(
            layer()
                .latency(0.5, Duration::from_secs(2), Duration::from_secs(1))
                .build()
                .is_err()
        );
        assert!(
            layer()
                .latency(2.0, Duration::ZERO, Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(layer().error(0.5).respond(0.5, || 1).build().is_ok());
    }

    #[test]
    fn a_seed_repeats_the_same_plan() {
        let plans = |seed| {
            let l = layer()
                .seed(seed)
                .error(0.3)
                .respond(0.3, || 7)
                .build()
                .unwrap();
            (0..64)
                .map(|_| match l.config.plan().1 {
                    Plan::Pass => 0,
                    Plan::Fail => 1,
                    Plan::Answer(_) => 2,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(plans(9), plans(9));
        assert_ne!(plans(9), plans(10));
        let counts = plans(9);
        for outcome in 0..3 {
            let n = counts.iter().filter(|c| **c == outcome).count();
            assert!((8..=36).contains(&n), "outcome {outcome}: {n} of 64");
        }
    }
}
