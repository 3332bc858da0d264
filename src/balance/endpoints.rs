//! The endpoint snapshot and the pick: which endpoint takes the next call.
//!
//! The snapshot is immutable and `Arc`'d (swapped whole when the resolver's answer changes), so
//! a pick reads it without a lock; one shared cursor makes clones of the balancer take turns
//! together. A pick counts the usable endpoints, then takes the cursor's turn among them, so
//! over N·k calls N usable endpoints get exactly k each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::breaker::{CircuitBreaker, Permit};
use crate::error::{Error, NoEndpointsReason};
use crate::rng::Jitter;

/// One resolved address: its health gate and its stack (e.g. a pool).
pub(crate) struct Endpoint<S> {
    pub(crate) addr: SocketAddr,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) service: S,
    /// Calls in flight (least-request policy).
    pub(crate) in_flight: Arc<AtomicUsize>,
}

/// The endpoints at one moment.
pub(crate) struct Snapshot<S> {
    pub(crate) endpoints: Vec<Arc<Endpoint<S>>>,
    /// The most endpoints that may be ejected at once before panic mode.
    max_ejected: usize,
}

impl<S> Snapshot<S> {
    pub(crate) fn new(endpoints: Vec<Arc<Endpoint<S>>>, max_ejected_share: f64) -> Self {
        let max_ejected = (endpoints.len() as f64 * max_ejected_share).floor() as usize;
        Snapshot {
            endpoints,
            max_ejected,
        }
    }

    pub(crate) fn empty() -> Self {
        Snapshot::new(Vec::new(), 0.0)
    }
}

/// How the balancer chooses among usable endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Per-call round robin (the default): exact turns.
    #[default]
    RoundRobin,
    /// Power of two choices on least outstanding requests: two random usable endpoints, the one
    /// with fewer calls in flight wins. Better when endpoints differ in speed.
    LeastRequest,
}

/// The endpoint chosen for a call and its admission.
pub(crate) struct Picked<'a, S> {
    pub(crate) endpoint: &'a Arc<Endpoint<S>>,
    pub(crate) permit: Permit,
    pub(crate) alternatives: usize,
}

/// What a pick needs besides the snapshot.
pub(crate) struct Picker<'a> {
    pub(crate) policy: Policy,
    pub(crate) cursor: &'a AtomicUsize,
    pub(crate) jitter: &'a Jitter,
}

impl Picker<'_> {
    /// Picks an endpoint for a call, avoiding `avoid` when another is usable.
    pub(crate) fn pick<'s, S>(
        &self,
        snapshot: &'s Snapshot<S>,
        avoid: Option<SocketAddr>,
    ) -> Result<Picked<'s, S>, Error> {
        let endpoints = &snapshot.endpoints;
        let n = endpoints.len();
        if n == 0 {
            return Err(Error::NoEndpoints {
                reason: NoEndpointsReason::NoneResolved,
            });
        }
        let usable = endpoints.iter().filter(|e| e.breaker.is_usable()).count();
        let panic = n - usable > snapshot.max_ejected;
        if panic {
            return Ok(self.pick_in_panic(endpoints, avoid));
        }
        if usable == 0 {
            return Err(Error::NoEndpoints {
                reason: NoEndpointsReason::NoneUsable,
            });
        }
        // A probe slot or the circuit may be taken between the look and the admission; the
        // pick then moves on to the next usable endpoint.
        let first = self.first_turn(endpoints, usable, avoid);
        for turn in first..first + usable {
            // All usable (the common case): the turn is the index.
            let index = if usable == n {
                Some(turn % n)
            } else {
                nth_usable(endpoints, turn % usable)
            };
            let Some(index) = index else {
                break;
            };
            let endpoint = &endpoints[index];
            if let Ok(permit) = endpoint.breaker.try_acquire() {
                return Ok(Picked {
                    endpoint,
                    permit,
                    alternatives: usable - 1,
                });
            }
        }
        // Breakers changed between the count and the pick (another thread opened or reset
        // them): the turns above may have missed an endpoint that is usable now. Before saying
        // "none usable", try every endpoint once, from this call's turn on.
        (0..n)
            .map(|i| &endpoints[(first + i) % n])
            .find_map(|endpoint| {
                let permit = endpoint.breaker.try_acquire().ok()?;
                Some(Picked {
                    endpoint,
                    permit,
                    alternatives: usable.saturating_sub(1),
                })
            })
            .ok_or(Error::NoEndpoints {
                reason: NoEndpointsReason::NoneUsable,
            })
    }

    /// The turn (an index among the usable endpoints) this call takes.
    fn first_turn<S>(
        &self,
        endpoints: &[Arc<Endpoint<S>>],
        usable: usize,
        avoid: Option<SocketAddr>,
    ) -> usize {
        let mut turn = match self.policy {
            Policy::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed) % usable,
            Policy::LeastRequest => {
                let draw = self.jitter.next_u64();
                let a = (draw % usable as u64) as usize;
                if usable == 1 {
                    a
                } else {
                    let b = (a + 1 + ((draw >> 32) % (usable as u64 - 1)) as usize) % usable;
                    let load = |turn| {
                        nth_usable(endpoints, turn).map_or(usize::MAX, |i| {
                            endpoints[i].in_flight.load(Ordering::Relaxed)
                        })
                    };
                    if load(b) < load(a) { b } else { a }
                }
            }
        };
        if usable > 1
            && let Some(avoid) = avoid
            && nth_usable(endpoints, turn).is_some_and(|i| endpoints[i].addr == avoid)
        {
            turn = (turn + 1) % usable;
        }
        turn
    }

    /// Panic mode: more endpoints are ejected than allowed, so every endpoint takes calls,
    /// through open breakers if need be, rather than overload the few that are left.
    fn pick_in_panic<'s, S>(
        &self,
        endpoints: &'s [Arc<Endpoint<S>>],
        avoid: Option<SocketAddr>,
    ) -> Picked<'s, S> {
        let n = endpoints.len();
        let mut index = self.cursor.fetch_add(1, Ordering::Relaxed) % n;
        if n > 1 && avoid == Some(endpoints[index].addr) {
            index = (index + 1) % n;
        }
        let endpoint = &endpoints[index];
        let permit = endpoint
            .breaker
            .try_acquire()
            .unwrap_or_else(|_| endpoint.breaker.acquire_bypassing());
        Picked {
            endpoint,
            permit,
            alternatives: n - 1,
        }
    }
}

/// The index of the `k`-th usable endpoint.
fn nth_usable<S>(endpoints: &[Arc<Endpoint<S>>], k: usize) -> Option<usize> {
    endpoints
        .iter()
        .enumerate()
        .filter(|(_, e)| e.breaker.is_usable())
        .nth(k)
        .map(|(i, _)| i)
}
