//! How a timer tells the layers below which attempt it cut.
//!
//! When an attempt's per-try timeout fires — or the call's deadline, in `DeadlineLayer`, in
//! `AttemptLayer`, or in a `DeadlineBody` still reading — the layer drops what is below it at
//! once.
//! The layers inside that future learn *why* they are dropped from a thread-local flag set for
//! the duration of that (synchronous) drop: an endpoint's breaker records the cut attempt as a
//! timeout — a slow endpoint is a failing endpoint — and the balancer reports which endpoint it
//! was, so the retry goes elsewhere. An attempt cut while it was still waiting for one of its own
//! pool's connections to come back never reached the endpoint: the pool says so, and the breaker
//! does not blame the endpoint. Nothing is allocated and nothing outlives the drop: the flags
//! are set and cleared around it on the same thread, even if a destructor panics.

use std::cell::Cell;
use std::net::SocketAddr;

thread_local! {
    static CUTTING: Cell<bool> = const { Cell::new(false) };
    static QUEUED: Cell<bool> = const { Cell::new(false) };
    static CUT_ENDPOINT: Cell<Option<SocketAddr>> = const { Cell::new(None) };
}

/// Clears the flag when the drop ends, however it ends.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        CUTTING.set(false);
        QUEUED.set(false);
    }
}

/// Runs `drop_attempt` (which drops a timed-out attempt's future) with the flag set; returns the
/// endpoint the attempt was on, if a balancer below said.
pub(crate) fn cutting(drop_attempt: impl FnOnce()) -> Option<SocketAddr> {
    CUT_ENDPOINT.set(None);
    QUEUED.set(false);
    CUTTING.set(true);
    let reset = Reset;
    drop_attempt();
    drop(reset);
    CUT_ENDPOINT.take()
}

/// Whether the attempt being dropped now was cut by a timer (its per-try timeout, the call's
/// deadline) while its endpoint had it — not while it waited in the client's own pool.
pub(crate) fn blames_endpoint() -> bool {
    CUTTING.get() && !QUEUED.get()
}

/// Called by a pool while a cut attempt's wait for a connection is dropped: the attempt never
/// reached the endpoint.
pub(crate) fn cut_while_queued() {
    if CUTTING.get() {
        QUEUED.set(true);
    }
}

/// Called by a balancer while a cut attempt is dropped: the attempt was on `endpoint`.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn cut_at(endpoint: SocketAddr) {
    if CUTTING.get() {
        CUT_ENDPOINT.set(Some(endpoint));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_holds_only_during_the_drop() {
        assert!(!blames_endpoint());
        let addr: SocketAddr = "127.0.0.1:7".parse().unwrap();
        let seen = cutting(|| {
            assert!(blames_endpoint());
            cut_at(addr);
        });
        assert_eq!(seen, Some(addr));
        assert!(!blames_endpoint());
        // Cut while queued in the client's own pool: the endpoint is not to blame.
        cutting(|| {
            cut_while_queued();
            assert!(!blames_endpoint());
        });
        cut_while_queued();
        assert!(!blames_endpoint());
        assert!(cutting(|| {}).is_none());
        // Outside a cut, nothing is recorded.
        cut_at(addr);
        assert_eq!(cutting(|| {}), None);
    }

    #[test]
    fn a_panicking_drop_still_clears_the_flag() {
        let result = std::panic::catch_unwind(|| cutting(|| panic!("destructor panicked")));
        assert!(result.is_err());
        assert!(!blames_endpoint());
    }
}
