//! A cheap-to-clone request and a no-op service, for the hot-path bench and the allocation test:
//! they show what the layers themselves cost, with nothing else allocating or waiting.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use stanchion::breaker::{BreakerResponse, Permit};
use stanchion::bulkhead::{BulkheadPermit, BulkheadResponse};
use stanchion::classify::{Class, Classify, NoEos, Verdict};
use stanchion::deadline::{Deadline, DeadlineCarrier};
use stanchion::retry::{RetryRequest, RetryResponse};

/// A `Copy` request that carries its deadline and attempt number inline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ping {
    pub deadline: Option<Deadline>,
    pub attempt: u32,
    /// The endpoint a retry asked to avoid.
    pub avoid: Option<SocketAddr>,
}

impl DeadlineCarrier for Ping {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

impl RetryRequest for Ping {
    fn try_clone(&self) -> Option<Self> {
        Some(*self)
    }

    fn is_safe_to_repeat(&self) -> bool {
        true
    }

    fn prepare_retry(&mut self, attempt: u32, avoid: Option<SocketAddr>) {
        self.attempt = attempt;
        self.avoid = avoid;
    }
}

/// The answer to a [`Ping`]: always a success.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pong;

impl RetryResponse for Pong {}

/// Classifies every [`Pong`] as a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct PongClassifier;

impl Classify<Pong> for PongClassifier {
    type Eos = NoEos;

    fn classify_response(&self, _: &Pong) -> Verdict<NoEos> {
        Verdict::Done(Class::success())
    }
}

/// A [`Pong`]'s outcome is known at once.
impl BreakerResponse<PongClassifier> for Pong {
    type Output = Pong;

    fn finish(self, classifier: &PongClassifier, permit: Permit, _at_head: bool) -> Pong {
        let Verdict::Done(class) = classifier.classify_response(&self);
        permit.record(Some(class));
        self
    }
}

/// A [`Pong`] is over when it arrives: the permit goes back at once.
impl BulkheadResponse for Pong {
    type Output = Pong;

    fn hold(self, permit: BulkheadPermit, _until_end: bool) -> Pong {
        drop(permit);
        self
    }
}

/// A [`Pong`] has no body for the deadline to bound.
impl stanchion::deadline::DeadlineResponse for Pong {
    type Output = Pong;

    fn bound(self, _deadline: Deadline) -> Pong {
        self
    }
}

/// A service that answers at once.
#[derive(Debug, Clone, Copy)]
pub struct NoOp;

impl<R> tower::Service<R> for NoOp {
    type Response = Pong;
    type Error = Infallible;
    type Future = Ready<Result<Pong, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: R) -> Self::Future {
        ready(Ok(Pong))
    }
}

/// The balancer reads the endpoint to avoid from the request itself.
#[cfg(feature = "http")]
impl stanchion::balance::BalanceRequest for Ping {
    fn avoid_endpoint(&self) -> Option<SocketAddr> {
        self.avoid
    }
}

/// A [`Pong`] does not record who served it.
#[cfg(feature = "http")]
impl stanchion::balance::BalanceResponse for Pong {
    fn record_served_by(&mut self, _: stanchion::retry::ServedBy) {}
}
