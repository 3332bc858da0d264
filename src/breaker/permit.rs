//! A call's admission through a breaker, and how its outcome is recorded.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Shard;
use crate::classify::{Class, EndpointVerdict};

/// The right to make one call through a breaker; record its outcome with
/// [`record`](Self::record). Dropping it unrecorded is a cancellation: it does not count, and a
/// half-open probe slot is given back — unless the drop is an attempt being cut by its per-try
/// timeout ([`AttemptLayer`](crate::deadline::AttemptLayer)), which counts as a timeout.
#[derive(Debug)]
pub struct Permit {
    pub(super) active: Option<Active>,
}

#[derive(Debug)]
pub(super) struct Active {
    pub(super) shard: Arc<Shard>,
    pub(super) stripe: usize,
    pub(super) generation: u64,
    pub(super) probe: bool,
    pub(super) started: Option<Instant>,
    /// How long the attempt was given, when the caller knows (for the timeout floor).
    pub(super) given: Option<Duration>,
}

impl Permit {
    /// A permit whose outcome was already recorded: recording again does nothing.
    #[cfg(feature = "http")]
    pub(crate) fn spent() -> Self {
        Permit { active: None }
    }

    /// Says how long the attempt this permit admits was given (its per-try timeout or what was
    /// left of its deadline): a timeout then counts only if that was at least the breaker's
    /// [`timeout_floor`](crate::breaker::BreakerBuilder::timeout_floor).
    pub fn given(mut self, budget: Option<Duration>) -> Self {
        if let Some(active) = &mut self.active {
            active.given = budget;
        }
        self
    }

    /// Records the call's outcome (`None`: cancelled before the outcome was known). Whether it
    /// counts as a failure, a success or neither is [`Class::endpoint_verdict`]: an outcome
    /// that says nothing about the endpoint (shedding, the client's own refusal, a timeout
    /// below the floor) is recorded like a cancellation — it neither breaks a run of failures
    /// nor completes a half-open probe.
    #[inline]
    pub fn record(mut self, class: Option<Class>) {
        let Some(active) = self.active.take() else {
            return;
        };
        let inner = &*active.shard.inner;
        let Some(class) = class else {
            if active.probe {
                inner.finish_probe(active.generation, None);
            }
            return;
        };
        let slow = match (inner.config.slow_call, active.started) {
            (Some((threshold, _)), Some(started)) => started.elapsed() >= threshold,
            _ => false,
        };
        let failure = match class.endpoint_verdict(active.given, inner.config.timeout_floor) {
            EndpointVerdict::Failure => true,
            EndpointVerdict::Success => false,
            // Shedding, our own refusal, a timeout below the floor: neither a failure nor a
            // success — recorded like a cancellation (a probe slot goes back).
            EndpointVerdict::Neutral => {
                if active.probe {
                    inner.finish_probe(active.generation, None);
                }
                return;
            }
        };
        if active.probe {
            inner.finish_probe(active.generation, Some(failure || slow));
        } else {
            inner.record_closed(active.stripe, active.generation, failure, slow);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Dropped because a timer — the attempt's per-try timeout or the call's deadline — cut
        // it while the endpoint had it: the endpoint was too slow, which counts as a timeout
        // (subject to the floor), not as a cancellation.
        if self.active.is_some() && crate::deadline::cut::blames_endpoint() {
            let permit = Permit {
                active: self.active.take(),
            };
            permit.record(Some(Class::new(crate::classify::Kind::Timeout)));
            return;
        }
        if let Some(active) = self.active.take()
            && active.probe
        {
            active.shard.inner.finish_probe(active.generation, None);
        }
    }
}

#[cfg(feature = "http")]
impl crate::classify::OnEnd for Permit {
    fn on_end(self, class: Option<Class>) {
        self.record(class);
    }
}
