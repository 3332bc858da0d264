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
    /// The most endpoints skipped for an open breaker at once (the ejection cap).
    max_ejected: usize,
    /// Fewer endpoints taking calls than this is panic mode (the panic threshold).
    min_healthy: usize,
}

/// The ejection cap and the panic threshold as shares of the endpoints, in `[0, 1]`, with
/// Envoy's meanings (`max_ejection_percent`, `healthy_panic_threshold`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ejection {
    pub(crate) max_ejection: f64,
    pub(crate) panic_threshold: f64,
}

impl<S> Snapshot<S> {
    pub(crate) fn new(endpoints: Vec<Arc<Endpoint<S>>>, ejection: Ejection) -> Self {
        let n = endpoints.len() as u64;
        // Shares to the nearest millionth, compared in integers: `0.29 * 100` is 28.999… in
        // floating point, and would eject 28.
        let ppm = |share: f64| (share * 1_000_000.0).round() as u64;
        let cap = ppm(ejection.max_ejection);
        let mut max_ejected = n * cap / 1_000_000;
        if cap > 0 && n > 0 {
            // One endpoint can always be ejected while the share is above zero (Envoy's
            // `always_eject_one_host`; older Envoy did so by default).
            max_ejected = max_ejected.max(1);
        }
        // Panic when `healthy < threshold * n`, i.e. `healthy < ceil(threshold * n)`.
        let min_healthy = (n * ppm(ejection.panic_threshold)).div_ceil(1_000_000);
        Snapshot {
            endpoints,
            max_ejected: max_ejected.min(n) as usize,
            min_healthy: min_healthy.min(n) as usize,
        }
    }

    pub(crate) fn empty() -> Self {
        Snapshot::new(
            Vec::new(),
            Ejection {
                max_ejection: 0.0,
                panic_threshold: 0.0,
            },
        )
    }

    /// Which endpoints take calls now: those whose breakers admit calls, those over the cap,
    /// and every one in panic mode.
    fn health(&self) -> Health {
        let endpoints = &self.endpoints;
        let n = endpoints.len();
        let usable = endpoints.iter().filter(|e| e.is_usable()).count();
        let open = n - usable;
        let (ejected, eject_through) = if open <= self.max_ejected {
            (open, usize::MAX)
        } else if self.max_ejected == 0 {
            (0, 0)
        } else {
            // Over the cap: the first `max_ejected` open endpoints (in resolution order) stay
            // out; the others take calls through their breakers.
            let last = endpoints
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.is_usable())
                .nth(self.max_ejected - 1)
                .map_or(usize::MAX, |(i, _)| i + 1);
            (self.max_ejected, last)
        };
        Health {
            usable,
            over_cap: open > ejected,
            panic: n - ejected < self.min_healthy,
            eject_through,
        }
    }
}

/// What [`Snapshot::health`] found.
#[derive(Debug, Clone, Copy)]
struct Health {
    /// Endpoints whose breakers admit calls.
    usable: usize,
    /// More breakers are open than the cap lets the balancer skip.
    over_cap: bool,
    /// Fewer endpoints take calls than the panic threshold: every one takes them.
    panic: bool,
    /// Open endpoints before this index are ejected; those from it on are over the cap.
    eject_through: usize,
}

impl Health {
    /// Whether the endpoint at `index` takes calls.
    fn takes_calls<S>(&self, index: usize, endpoint: &Arc<Endpoint<S>>) -> bool {
        self.panic || index >= self.eject_through || endpoint.is_usable()
    }
}

/// How the balancer chooses among usable endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
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
    pub(crate) metrics: &'a crate::metrics::BalancerMetrics,
    /// A call waiting for ready ([`WaitForReady`](super::WaitForReady)): panic mode does not
    /// send it through an open breaker — with no endpoint taking calls but by panic, it is told
    /// none is usable, and waits. The ejection cap still holds (an endpoint over the cap takes
    /// it through its breaker, as any call).
    pub(crate) ready_only: bool,
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
        let mut health = snapshot.health();
        self.metrics.panic(health.panic);
        health.panic &= !self.ready_only;
        if health.panic || health.over_cap {
            return self.pick_among(endpoints, health, avoid);
        }
        let usable = health.usable;
        if usable == 0 {
            return Err(Error::NoEndpoints {
                reason: NoEndpointsReason::NoneUsable,
            });
        }
        let first = self.first_turn(endpoints, usable, avoid);
        let (index, permit) = choose(endpoints, usable, first).ok_or(Error::NoEndpoints {
            reason: NoEndpointsReason::NoneUsable,
        })?;
        Ok(Picked {
            endpoint: &endpoints[index],
            permit,
            alternatives: usable.saturating_sub(1),
        })
    }

    /// Picks an endpoint for a retry that must not go to `rejected` (they rejected the call
    /// before it was sent): the next one in turn among the others that admits the call, through
    /// an open breaker if the balancer is in panic mode — `avoid` only if no other will; never
    /// one in `rejected`. Only retries after a rejection take this path, so it scans the list.
    pub(crate) fn pick_excluding<'s, S>(
        &self,
        snapshot: &'s Snapshot<S>,
        rejected: &[SocketAddr],
        avoid: Option<SocketAddr>,
    ) -> Result<Picked<'s, S>, Error> {
        let endpoints = &snapshot.endpoints;
        let n = endpoints.len();
        if n == 0 {
            return Err(Error::NoEndpoints {
                reason: NoEndpointsReason::NoneResolved,
            });
        }
        let allowed = |e: &Arc<Endpoint<S>>| !rejected.contains(&e.addr);
        let mut health = snapshot.health();
        self.metrics.panic(health.panic);
        health.panic &= !self.ready_only;
        let candidates = |i: usize| allowed(&endpoints[i]) && health.takes_calls(i, &endpoints[i]);
        let others = (0..n).filter(|&i| candidates(i)).count();
        let first = self.cursor.fetch_add(1, Ordering::Relaxed);
        let found = admit_first(endpoints, health, first, avoid, candidates);
        let Some((endpoint, permit)) = found else {
            let reason = if endpoints.iter().any(allowed) {
                NoEndpointsReason::NoneUsable
            } else {
                NoEndpointsReason::AllRejected
            };
            return Err(Error::NoEndpoints { reason });
        };
        Ok(Picked {
            endpoint,
            permit,
            alternatives: others.saturating_sub(1),
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

    /// Panic mode (too few endpoints would take calls: every one takes them, through open
    /// breakers if need be, rather than overload the few that are left), or more breakers open
    /// than the cap (those over it take calls through their breakers): the cursor's turn among
    /// the endpoints that take calls, `avoid` last. An endpoint inside the cap whose breaker
    /// refuses the call (its half-open probes taken) is passed over, as outside this mode; the
    /// policy is round robin here (least-request needs the usable endpoints' loads).
    fn pick_among<'s, S>(
        &self,
        endpoints: &'s [Arc<Endpoint<S>>],
        health: Health,
        avoid: Option<SocketAddr>,
    ) -> Result<Picked<'s, S>, Error> {
        let n = endpoints.len();
        let takes = |i: usize| health.takes_calls(i, &endpoints[i]);
        let count = (0..n).filter(|&i| takes(i)).count();
        // The cursor's turn among those taking calls (exact turns), then on from it.
        let turn = self.cursor.fetch_add(1, Ordering::Relaxed) % count.max(1);
        let first = (0..n).filter(|&i| takes(i)).nth(turn).unwrap_or(0);
        let found = admit_first(endpoints, health, first, avoid, takes);
        let (endpoint, permit) = found.ok_or(Error::NoEndpoints {
            reason: NoEndpointsReason::NoneUsable,
        })?;
        Ok(Picked {
            endpoint,
            permit,
            alternatives: count.saturating_sub(1),
        })
    }
}

/// The scans of panic mode, over-cap mode and retries after a rejection: from index `first`
/// on, `avoid` (the endpoint the last attempt failed on) last if another will do, the first
/// endpoint `candidate` allows that admits the call — through its open breaker if the balancer
/// is in panic mode or the endpoint is over the ejection cap; otherwise only if its breaker
/// admits it (a half-open endpoint whose probes are taken is passed over).
fn admit_first<S>(
    endpoints: &[Arc<Endpoint<S>>],
    health: Health,
    first: usize,
    avoid: Option<SocketAddr>,
    candidate: impl Fn(usize) -> bool,
) -> Option<(&Arc<Endpoint<S>>, Permit)> {
    let n = endpoints.len();
    (0..n)
        .map(|i| (first + i) % n)
        .filter(|&i| Some(endpoints[i].addr) != avoid)
        .chain((0..n).filter(|&i| Some(endpoints[i].addr) == avoid))
        .filter(|&i| candidate(i))
        .find_map(|i| {
            let endpoint = &endpoints[i];
            let permit = match endpoint.breaker.try_acquire() {
                Ok(permit) => permit,
                Err(_) if health.panic || i >= health.eject_through => {
                    endpoint.breaker.acquire_bypassing()
                }
                Err(_) => return None,
            };
            Some((endpoint, permit))
        })
}

/// What a pick needs of an endpoint: whether it would take a call now, and its admission.
pub(crate) trait Candidate {
    /// The admission a taken call holds.
    type Permit;
    /// Whether it would take a call now (its breaker closed, or a probe slot free).
    fn is_usable(&self) -> bool;
    /// Admits a call, if it still would.
    fn admit(&self) -> Option<Self::Permit>;
}

impl<S> Candidate for Arc<Endpoint<S>> {
    type Permit = Permit;

    fn is_usable(&self) -> bool {
        self.breaker.is_usable()
    }

    fn admit(&self) -> Option<Permit> {
        self.breaker.try_acquire().ok()
    }
}

/// The pick among `candidates`, `usable` of which were usable when counted: the `first`-th
/// usable one (a turn among the usable), moving on to the next usable ones if admission fails
/// (a probe slot or the circuit taken between the look and the admission). Breakers can change
/// between the count and the pick (another thread opens or resets them), so the turns can miss
/// an endpoint usable now: before saying none is usable, every candidate is tried once, from
/// the turn on. `None`: none would take the call. Pure over [`Candidate`]s, so it is
/// model-checked (loom) over candidates that flip.
pub(crate) fn choose<C: Candidate>(
    candidates: &[C],
    usable: usize,
    first: usize,
) -> Option<(usize, C::Permit)> {
    let n = candidates.len();
    if n == 0 {
        return None;
    }
    for turn in first..first + usable {
        // All usable (the common case): the turn is the index.
        let index = if usable == n {
            Some(turn % n)
        } else {
            nth_usable(candidates, turn % usable.max(1))
        };
        let Some(index) = index else {
            break;
        };
        if let Some(permit) = candidates[index].admit() {
            return Some((index, permit));
        }
    }
    (0..n)
        .map(|i| (first + i) % n)
        .filter(|i| candidates[*i].is_usable())
        .find_map(|i| Some((i, candidates[i].admit()?)))
}

/// The index of the `k`-th usable candidate.
fn nth_usable<C: Candidate>(candidates: &[C], k: usize) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.is_usable())
        .nth(k)
        .map(|(i, _)| i)
}

/// Model checks (`RUSTFLAGS="--cfg stanchion_loom" cargo test --release --lib loom`): the pick over
/// candidates whose breakers another thread flips.
#[cfg(all(test, stanchion_loom))]
mod loom_models {
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Flipping(AtomicBool);

    impl Candidate for Arc<Flipping> {
        type Permit = ();

        fn is_usable(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }

        fn admit(&self) -> Option<()> {
            self.is_usable().then_some(())
        }
    }

    /// One candidate always usable, two flipped by another thread between the pick's count and
    /// its choice: the pick always finds one (before, a count that no longer matched made it
    /// say none was usable).
    #[test]
    fn loom_a_usable_candidate_is_found_while_others_flip() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let candidates: Vec<Arc<Flipping>> = [true, true, false]
                .into_iter()
                .map(|u| Arc::new(Flipping(AtomicBool::new(u))))
                .collect();
            let flipper = {
                let (b, c) = (candidates[1].clone(), candidates[2].clone());
                loom::thread::spawn(move || {
                    b.0.store(false, Ordering::SeqCst);
                    c.0.store(true, Ordering::SeqCst);
                })
            };
            for first in 0..2 {
                let usable = candidates.iter().filter(|c| c.is_usable()).count();
                let picked = choose(&candidates, usable, first);
                let (index, ()) = picked.expect("a usable candidate was there all along");
                assert!(index < 3);
            }
            flipper.join().unwrap();
        });
    }
}

#[cfg(all(test, not(stanchion_loom)))]
mod snapshot_tests {
    use super::*;

    fn endpoints(n: u16) -> Vec<Arc<Endpoint<()>>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint {
                    addr: SocketAddr::from(([127, 0, 0, 1], 30_000 + i)),
                    breaker: CircuitBreaker::builder().build().unwrap(),
                    service: (),
                    in_flight: Arc::new(AtomicUsize::new(0)),
                })
            })
            .collect()
    }

    /// Shares are taken to the nearest millionth and compared in integers: floating point
    /// makes `0.29 · 100` 28.99… and `(1 − 0.7) · 10` 3.000…04.
    #[test]
    fn shares_are_exact_at_the_boundaries() {
        let snapshot = |n, max_ejection, panic_threshold| {
            let s = Snapshot::new(
                endpoints(n),
                Ejection {
                    max_ejection,
                    panic_threshold,
                },
            );
            (s.max_ejected, s.min_healthy)
        };
        assert_eq!(snapshot(100, 0.29, 0.0), (29, 0));
        assert_eq!(snapshot(10, 1.0, 1.0 - 0.7), (10, 3));
        assert_eq!(snapshot(3, 0.1, 0.5), (1, 2), "one ejectable above zero");
        assert_eq!(snapshot(3, 0.0, 0.5), (0, 2));
        assert_eq!(snapshot(0, 0.5, 0.5), (0, 0));
        assert_eq!(snapshot(4, 1.0, 1.0), (4, 4));
    }
}
