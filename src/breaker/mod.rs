//! Circuit breakers: stop calling a dependency that is failing, so callers fail fast and the
//! dependency can recover.
//!
//! States: **closed** (calls pass; outcomes counted) → **open** (calls fail at once with
//! [`Error::CircuitOpen`](crate::Error::CircuitOpen), which says when the next probe may go) →
//! after the open duration, **half-open** (at most `k` probes in flight; `k` successes close the
//! circuit, any failure reopens it) → closed or open.
//!
//! What trips it ([`WindowKind`]): the failure rate — or the slow-call rate — over the last `n`
//! calls or the last stretch of time, once a minimum number of calls was seen; or a run of
//! consecutive failures (outlier ejection for one endpoint). What counts as a failure is the
//! table of what counts against an endpoint ([`Class::counts_against_endpoint`](crate::classify::Class::counts_against_endpoint)):
//! the server's failures (5xx; UNKNOWN, INTERNAL, DATA_LOSS, UNAVAILABLE) and transport
//! failures count; timeouts count when the attempt had at least the [timeout
//! floor](BreakerBuilder::timeout_floor); success, the caller's own errors (most 4xx,
//! INVALID_ARGUMENT…), deliberate shedding (429, RESOURCE_EXHAUSTED), cancellations and the
//! client's own refusals (this or another breaker, a pool checkout, a bulkhead) do not. An
//! outcome is recorded when the call is really over — at the end of the response stream, so a
//! gRPC status in the trailers counts and slow-call time includes the body
//! ([`RecordAt`]).
//!
//! Known failures of other breakers that this one avoids: half-open letting a stampede through
//! (probe slots are taken by compare-and-swap: exactly `k`), getting stuck when a probe is
//! cancelled (a dropped [`Permit`] gives its slot back), one lucky success closing the circuit
//! (`k` successes are needed), and a mutex per call (the state is one atomic word; windows are
//! striped atomics).
//!
//! Two uses:
//!
//! - around a whole client with [`CircuitBreakerLayer`] (one third-party API);
//! - per endpoint, as a health gate for a balancer: [`CircuitBreaker::is_usable`] asks without
//!   reserving, [`CircuitBreaker::try_acquire`] takes the permit (a probe slot in half-open), and
//!   [`CircuitBreaker::acquire_bypassing`] lets a balancer in panic mode send through an open
//!   breaker.
//!
//! ```
//! use std::time::Duration;
//! use stanchion::breaker::{BreakerState, CircuitBreaker};
//! use stanchion::classify::{Class, Kind};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let breaker = CircuitBreaker::builder()
//!     .consecutive_failures(2)
//!     .open_duration(Duration::from_secs(5))
//!     .half_open_probes(1)
//!     .build()
//!     .unwrap();
//! for _ in 0..2 {
//!     breaker.try_acquire().unwrap().record(Some(Class::new(Kind::ServerError)));
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! assert!(breaker.try_acquire().is_err());
//! tokio::time::advance(Duration::from_secs(5)).await;
//! breaker.try_acquire().unwrap().record(Some(Class::success())); // the probe succeeds
//! assert_eq!(breaker.state(), BreakerState::Closed);
//! # }
//! ```

mod config;
mod core;
mod layer;
mod window;

pub use self::config::{BreakerBuilder, DEFAULT_TIMEOUT_FLOOR, RecordAt, WindowKind};
pub use self::core::{BreakerState, BreakerStats, CircuitBreaker, Permit};
pub use self::layer::{BreakerFuture, BreakerResponse, CircuitBreakerLayer, CircuitBreakerService};
