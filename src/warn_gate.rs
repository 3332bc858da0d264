//! Rate limiting for WARN events that could storm: during an outage every call may hit the same
//! refusal (a pool's checkout timing out, a store that is down), and one WARN per call would
//! flood the logs and cost as much as the calls. A gate lets one WARN through per second per
//! instance (per pool, per server layer); the others go out at DEBUG, and the next WARN says how
//! many were held back (`suppressed`). Each kind of event has a gate of its own, so a storm of
//! one (checkout timeouts) never hides a rarer one (a plaintext misconfiguration, a response
//! that could not be stored). Lock-free: one compare-and-swap per admitted WARN.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::clock::Origin;

/// At most one WARN per this many nanoseconds per gate: 1 s.
const EVERY_NANOS: u64 = 1_000_000_000;

/// One instance's WARN budget.
#[derive(Debug)]
pub(crate) struct WarnGate {
    origin: Origin,
    /// Nanoseconds since `origin` before which no WARN goes out (0: the first may).
    next: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for WarnGate {
    fn default() -> Self {
        WarnGate::new()
    }
}

impl WarnGate {
    pub(crate) fn new() -> WarnGate {
        WarnGate {
            origin: Origin::now(),
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last one)` if this event may go out at WARN; `None` (counted)
    /// if it goes out at DEBUG.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = self.origin.nanos();
        let next = self.next.load(Ordering::Relaxed);
        if now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now.saturating_add(EVERY_NANOS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A WARN through `gate`, or the same event at DEBUG when the gate holds it back; the WARN
/// carries `suppressed`, the events held back since the last one.
macro_rules! gated_warn {
    ($gate:expr, $($field:tt)*) => {
        match $gate.admit() {
            Some(suppressed) => tracing::warn!(suppressed, $($field)*),
            None => tracing::debug!($($field)*),
        }
    };
}
pub(crate) use gated_warn;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn one_warn_per_second_and_the_next_counts_the_held_back() {
        let gate = WarnGate::new();
        assert_eq!(gate.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(gate.admit(), None);
        }
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(gate.admit(), None);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(gate.admit(), Some(6));
        assert_eq!(gate.admit(), None);
        // After a long quiet gap the first event goes out, with what was held back before it.
        tokio::time::sleep(Duration::from_secs(86_400 * 365)).await;
        assert_eq!(gate.admit(), Some(1));
    }
}
