//! A circuit breaker's instruments, registered once per breaker (per endpoint, for the
//! balancer's breakers, which are named after their endpoint's address).

use std::sync::atomic::{AtomicUsize, Ordering};

use metrics::{Counter, Gauge, counter, gauge};

use super::{BREAKER_REJECTED, BREAKER_STATE, BREAKER_TRANSITIONS};
use crate::breaker::BreakerState;

/// The `state` labels, in [`state_index`] order.
const STATES: [&str; 5] = [
    "closed",
    "open",
    "half_open",
    "forced_open",
    "forced_closed",
];

fn state_index(state: BreakerState) -> usize {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
        BreakerState::ForcedOpen => 3,
        BreakerState::ForcedClosed => 4,
    }
}

/// The handles of one breaker's instruments. `stanchion.breaker.state` is an up-down gauge per
/// state: the breaker adds 1 to its current state and moves it at each transition, so across
/// breakers the gauge counts how many are in each state; a dropped breaker takes its 1 away.
pub(crate) struct BreakerMetrics {
    state: [Gauge; 5],
    /// The state this breaker last added 1 to.
    published: AtomicUsize,
    transitions: [Counter; 5],
    rejected: Counter,
}

impl BreakerMetrics {
    /// Registers the instruments of the breaker named `name`; it starts closed.
    pub(crate) fn new(name: &str) -> BreakerMetrics {
        let with =
            |state: &'static str| [("breaker", name.to_owned()), ("state", state.to_owned())];
        let metrics = BreakerMetrics {
            state: STATES.map(|s| gauge!(BREAKER_STATE, &with(s))),
            published: AtomicUsize::new(0),
            transitions: STATES.map(|s| counter!(BREAKER_TRANSITIONS, &with(s))),
            rejected: counter!(BREAKER_REJECTED, &[("breaker", name.to_owned())]),
        };
        metrics.state[0].increment(1.0);
        metrics
    }

    /// The breaker entered `state` (a transition, counted).
    pub(crate) fn entered(&self, state: BreakerState) {
        self.transitions[state_index(state)].increment(1);
    }

    /// The breaker is in `state` now: the 1 moves there from the state last published, so the
    /// gauges always add up to one per breaker.
    pub(crate) fn publish(&self, state: BreakerState) {
        let to = state_index(state);
        let from = self.published.swap(to, Ordering::AcqRel);
        if from != to {
            self.state[from].decrement(1.0);
            self.state[to].increment(1.0);
        }
    }

    /// The breaker refused a call.
    pub(crate) fn rejected(&self) {
        self.rejected.increment(1);
    }
}

impl Drop for BreakerMetrics {
    fn drop(&mut self) {
        self.state[*self.published.get_mut()].decrement(1.0);
    }
}

impl std::fmt::Debug for BreakerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerMetrics").finish_non_exhaustive()
    }
}
