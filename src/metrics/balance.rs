//! A balancer's instruments, registered once per balancer (per client): its resolver's work
//! and its panic-mode episodes, labelled with the target's name.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use metrics::{Counter, Gauge, counter, gauge};

use super::{
    BALANCER_PANIC, RESOLVER_ENDPOINTS, RESOLVER_GIVEN_UP, RESOLVER_RESOLUTIONS, RESOLVER_STALE,
};

/// The handles of one balancer's instruments.
pub(crate) struct BalancerMetrics {
    resolved: Counter,
    failed: Counter,
    stale: Counter,
    given_up: Counter,
    panic: Counter,
    /// Whether the last pick found the balancer in panic mode.
    in_panic: AtomicBool,
    endpoints: Gauge,
    /// What this balancer last added to `endpoints`.
    published: AtomicUsize,
}

impl BalancerMetrics {
    /// Registers the instruments of the balancer over `target` (the resolver's name).
    pub(crate) fn new(target: &str) -> BalancerMetrics {
        let target = || ("target", target.to_owned());
        let result = |r: &'static str| [target(), ("result", r.to_owned())];
        BalancerMetrics {
            resolved: counter!(RESOLVER_RESOLUTIONS, &result("ok")),
            failed: counter!(RESOLVER_RESOLUTIONS, &result("error")),
            stale: counter!(RESOLVER_STALE, &[target()]),
            given_up: counter!(RESOLVER_GIVEN_UP, &[target()]),
            panic: counter!(BALANCER_PANIC, &[target()]),
            in_panic: AtomicBool::new(false),
            endpoints: gauge!(RESOLVER_ENDPOINTS, &[target()]),
            published: AtomicUsize::new(0),
        }
    }

    /// A resolution answered; the balancer now has `endpoints` endpoints.
    pub(crate) fn resolved(&self, endpoints: usize) {
        self.resolved.increment(1);
        self.endpoints_now(endpoints);
    }

    /// The balancer now has `endpoints` endpoints (after an answer, or giving the last known
    /// ones up).
    pub(crate) fn endpoints_now(&self, endpoints: usize) {
        let before = self.published.swap(endpoints, Ordering::AcqRel);
        self.endpoints.increment(endpoints as f64 - before as f64);
    }

    /// A resolution failed.
    pub(crate) fn failed(&self) {
        self.failed.increment(1);
    }

    /// Resolution failed while endpoints were known: a stale episode began.
    pub(crate) fn stale_episode(&self) {
        self.stale.increment(1);
    }

    /// The last known endpoints were given up after the maximum staleness.
    pub(crate) fn given_up(&self) {
        self.given_up.increment(1);
    }

    /// A pick found the balancer in panic mode (`true`) or not; an episode is counted when it
    /// begins.
    #[inline]
    pub(crate) fn panic(&self, panic: bool) {
        if self.in_panic.load(Ordering::Relaxed) != panic
            && self.in_panic.swap(panic, Ordering::Relaxed) != panic
            && panic
        {
            self.panic.increment(1);
        }
    }
}

impl Drop for BalancerMetrics {
    fn drop(&mut self) {
        self.endpoints.decrement(*self.published.get_mut() as f64);
    }
}

impl std::fmt::Debug for BalancerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerMetrics").finish_non_exhaustive()
    }
}
