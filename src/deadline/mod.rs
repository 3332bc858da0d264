//! Timeout budgets: one deadline for the whole logical call.
//!
//! Why a budget and not a timeout per layer: a caller cares how long the *call* takes. Time spent
//! queueing in a bulkhead, waiting for a pooled connection, in each attempt and in every backoff
//! sleep all come out of the same budget, so a call with a 2 s budget ends by 2 s whatever happens
//! inside. Per-layer timeouts add up instead (three 10 s attempts plus backoff is not a 10 s call).
//!
//! - [`Deadline`] is an absolute instant carried with the request ([`DeadlineCarrier`]; for
//!   `http::Request` in its extensions). Every layer that waits reads it and clamps its own wait to
//!   [`Deadline::remaining`].
//! - [`DeadlineLayer`] sets the budget of a logical call (default 30 s). It waits for the inner
//!   service's readiness *inside* its response future, so that wait is charged too; when the
//!   budget runs out the call fails with [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded).
//!   A deadline already on the request, or adopted from upstream, or a `grpc-timeout` the caller
//!   wrote (tonic's `Request::set_timeout`, [`DeadlineCarrier::caller_timeout`]), wins when it is
//!   earlier: nested budgets use the smaller. An `AttemptLayer` only ever lowers a
//!   `grpc-timeout` already on the request. The budget also bounds reading the response body
//!   ([`DeadlineBody`]): a body still coming at the deadline ends with the same error.
//! - [`AdoptDeadlineLayer`] (server side) adopts an incoming `grpc-timeout` (or a configured HTTP
//!   header) into the request's extensions and a task-local scope ([`current`]); a client stack
//!   called inside that handler uses the smaller of its own budget and the adopted one, so
//!   budgets shrink across hops.
//! - [`AttemptLayer`] (innermost, per attempt) enforces min(per-try timeout, remaining) and writes
//!   it to the outgoing request: `grpc-timeout` for gRPC, optionally an HTTP header.
//!
//! ```
//! use std::time::Duration;
//! use stanchion::deadline::{DeadlineLayer, Deadline};
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let slow = service_fn(|req: http::Request<()>| async move {
//!     let remaining = Deadline::of(&req).unwrap().remaining();
//!     assert_eq!(remaining, Duration::from_secs(1));
//!     tokio::time::sleep(Duration::from_secs(3)).await;
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! });
//! let mut svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(1)).unwrap())
//!     .service(slow);
//! let err = svc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
//! assert!(err.is_deadline_exceeded());
//! # }
//! ```

#[cfg(feature = "http")]
mod adopt;
#[cfg(feature = "http")]
mod attempt;
#[cfg(feature = "http")]
mod body;
pub(crate) mod cut;
#[cfg(feature = "http")]
mod grpc_timeout;
mod layer;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;

#[cfg(feature = "http")]
pub use self::adopt::{AdoptDeadline, AdoptDeadlineLayer};
#[cfg(feature = "http")]
pub use self::attempt::{
    Attempt, AttemptFuture, AttemptLayer, AttemptService, DEFAULT_PER_TRY_TIMEOUT, SendHook,
};
#[cfg(feature = "http")]
pub use self::body::DeadlineBody;
#[cfg(feature = "http")]
pub use self::grpc_timeout::{format_grpc_timeout, parse_grpc_timeout};
pub use self::layer::{
    DeadlineFuture, DeadlineLayer, DeadlineResponse, DeadlineService, ResponseFuture,
};

/// The default total budget of a logical call: 30 s (as .NET's standard resilience handler).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

/// The longest budget a builder accepts, and the longest adopted from the wire: 365 days.
pub const MAX_BUDGET: Duration = Duration::from_secs(365 * 24 * 3600);

/// An absolute deadline, and the budget it was set from: a logical call's — or, below an
/// [`AttemptLayer`], one attempt's (its end, and what the attempt was given;
/// [`is_attempt`](Self::is_attempt)), which also knows the deadline of the call it belongs to
/// ([`call`](Self::call)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
    attempt: bool,
    /// For an attempt's deadline: the end and budget of its call's deadline, if it has one.
    call: Option<(Instant, Duration)>,
}

impl Deadline {
    /// A deadline `budget` from now.
    #[inline]
    pub fn after(budget: Duration) -> Deadline {
        Deadline::starting_at(Instant::now(), budget)
    }

    /// A deadline `budget` after `start`.
    #[inline]
    pub fn starting_at(start: Instant, budget: Duration) -> Deadline {
        let budget = budget.min(MAX_BUDGET);
        Deadline {
            at: start + budget,
            budget,
            attempt: false,
            call: None,
        }
    }

    /// One attempt's deadline: `given` after `start`, within the deadline of its call, `call`
    /// (which may itself be an attempt's, of an outer client: its call's deadline is kept).
    #[cfg(feature = "http")]
    pub(crate) fn for_attempt(start: Instant, given: Duration, call: Option<Deadline>) -> Deadline {
        Deadline {
            attempt: true,
            call: call.and_then(|d| d.call()).map(|d| (d.at, d.budget)),
            ..Deadline::starting_at(start, given)
        }
    }

    /// The deadline of the logical call: this one for a call's deadline; for an attempt's, the
    /// deadline of the call it belongs to — `None` when there is none (an [`AttemptLayer`]
    /// with no [`DeadlineLayer`] above it). It bounds what outlives the attempt: reading the
    /// response body.
    pub fn call(&self) -> Option<Deadline> {
        if !self.attempt {
            return Some(*self);
        }
        self.call.map(|(at, budget)| Deadline {
            at,
            budget,
            attempt: false,
            call: None,
        })
    }

    /// Whether this is one attempt's deadline (set by an [`AttemptLayer`] for the layers below
    /// it) rather than a logical call's. A layer that runs out of an attempt's deadline reports
    /// [`Error::AttemptTimedOut`](crate::Error::AttemptTimedOut), which the retry layer above
    /// may retry, not [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded), which ends
    /// the call.
    pub fn is_attempt(&self) -> bool {
        self.attempt
    }

    /// The deadline carried by `req`, if any.
    pub fn of<R: DeadlineCarrier>(req: &R) -> Option<Deadline> {
        req.deadline()
    }

    /// The instant the call must be over by.
    #[inline]
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The total budget this deadline was set from.
    #[inline]
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Time left until the deadline (zero once it has passed).
    #[inline]
    pub fn remaining(&self) -> Duration {
        self.remaining_at(Instant::now())
    }

    /// Time left at `now`.
    #[inline]
    pub fn remaining_at(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// Whether the deadline has passed.
    #[inline]
    pub fn is_expired(&self) -> bool {
        self.at <= Instant::now()
    }

    /// The earlier of two deadlines. On a tie an attempt's deadline wins over a call's (running
    /// out of it ends one attempt, which a retry layer above may follow with another), then
    /// `self`.
    #[inline]
    pub fn earliest(self, other: Deadline) -> Deadline {
        if other.at < self.at || (other.at == self.at && other.attempt && !self.attempt) {
            other
        } else {
            self
        }
    }
}

/// A request that carries a [`Deadline`].
///
/// Implemented for `http::Request` (in its extensions, feature `http`). Implement it for your own
/// request type to use the deadline layer elsewhere.
pub trait DeadlineCarrier {
    /// The deadline the request carries.
    fn deadline(&self) -> Option<Deadline>;

    /// Sets the request's deadline.
    fn set_deadline(&mut self, deadline: Deadline);

    /// Rewrites the timeouts written on the request (by an `AttemptLayer`: `grpc-timeout` on a
    /// gRPC request, a configured HTTP header) with what remains of its deadline *now*, if that
    /// is less than they say. A pool calls it as it hands the request to a connection — after
    /// its bulkhead wait, checkout, connect and handshake — so the server is told what is really
    /// left. The default does nothing.
    fn restamp(&mut self) {}

    /// A timeout the caller wrote on the request itself, which a [`DeadlineLayer`] folds into
    /// the call's deadline (the earlier wins) — unless the request carries an attempt's
    /// [`Deadline`] (an `AttemptLayer` above wrote the value from it). For
    /// `http::Request`: a gRPC request's `grpc-timeout` header — what tonic's
    /// `Request::set_timeout` writes (a value that does not parse is ignored, and overwritten by
    /// an `AttemptLayer`). The default: none.
    fn caller_timeout(&self) -> Option<Duration> {
        None
    }
}

#[cfg(feature = "http")]
impl<B> DeadlineCarrier for http::Request<B> {
    fn deadline(&self) -> Option<Deadline> {
        self.extensions().get::<Deadline>().copied()
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.extensions_mut().insert(deadline);
    }

    fn restamp(&mut self) {
        if let Some(deadline) = self.deadline() {
            attempt::write_timeouts(self, deadline.remaining());
        }
    }

    fn caller_timeout(&self) -> Option<Duration> {
        // The header first: most requests have none, and one lookup says so.
        let value = self.headers().get(attempt::GRPC_TIMEOUT)?;
        if !crate::wire::is_grpc(self.headers()) {
            return None;
        }
        parse_grpc_timeout(value.as_bytes())
    }
}

tokio::task_local! {
    static ADOPTED: Option<Deadline>;
}

/// Whether any task has ever entered a [`scope`]: until one has, [`current`] skips the task-local
/// lookup, so clients that never adopt a deadline do not pay for it on every call.
static SCOPES_USED: AtomicBool = AtomicBool::new(false);

/// The deadline adopted for the current task by [`scope`] (e.g. by [`AdoptDeadlineLayer`] in a
/// server handler), if any.
#[inline]
pub fn current() -> Option<Deadline> {
    if !SCOPES_USED.load(Ordering::Relaxed) {
        return None;
    }
    ADOPTED.try_with(|d| *d).ok().flatten()
}

/// Runs `fut` with `deadline` as the task's adopted deadline: client calls made inside it through
/// a [`DeadlineLayer`] end by `deadline` at the latest.
pub fn scope<F: Future>(
    deadline: Option<Deadline>,
    fut: F,
) -> TaskLocalFuture<Option<Deadline>, F> {
    // A scope without a deadline changes nothing `current` would say unless another scope
    // with one exists, which sets the flag itself.
    if deadline.is_some() {
        SCOPES_USED.store(true, Ordering::Relaxed);
    }
    ADOPTED.scope(deadline, fut)
}

/// Runs `f` synchronously with `deadline` as the adopted deadline.
#[cfg(feature = "http")]
pub(crate) fn sync_scope<R>(deadline: Option<Deadline>, f: impl FnOnce() -> R) -> R {
    SCOPES_USED.store(true, Ordering::Relaxed);
    ADOPTED.sync_scope(deadline, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remaining_counts_down() {
        let d = Deadline::after(Duration::from_secs(2));
        assert_eq!(d.remaining(), Duration::from_secs(2));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(d.remaining(), Duration::from_millis(500));
        assert!(!d.is_expired());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(d.remaining(), Duration::ZERO);
        assert!(d.is_expired());
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_wins_and_scope_is_visible() {
        let short = Deadline::after(Duration::from_secs(1));
        let long = Deadline::after(Duration::from_secs(5));
        assert_eq!(long.earliest(short), short);
        assert_eq!(short.earliest(long), short);
        assert_eq!(current(), None);
        scope(Some(short), async { assert_eq!(current(), Some(short)) }).await;
        assert_eq!(Deadline::after(Duration::MAX).budget(), MAX_BUDGET);
    }

    #[cfg(feature = "http")]
    #[tokio::test(start_paused = true)]
    async fn an_attempt_knows_its_call_and_wins_a_tie() {
        let now = Instant::now();
        let call = Deadline::after(Duration::from_secs(2));
        let attempt = Deadline::for_attempt(now, Duration::from_secs(2), Some(call));
        assert!(attempt.is_attempt());
        assert_eq!(attempt.call(), Some(call));
        assert_eq!(call.call(), Some(call));
        // A tie: the attempt's, whichever way round.
        assert_eq!(call.earliest(attempt), attempt);
        assert_eq!(attempt.earliest(call), attempt);
        // An attempt inside an attempt (a nested client) keeps the outermost call.
        let inner = Deadline::for_attempt(now, Duration::from_secs(1), Some(attempt));
        assert_eq!(inner.call(), Some(call));
        // No call above: none.
        let alone = Deadline::for_attempt(now, Duration::from_secs(1), None);
        assert_eq!(alone.call(), None);
    }
}
