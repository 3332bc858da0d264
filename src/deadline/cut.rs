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
    static UNSENT: Cell<bool> = const { Cell::new(false) };
    static CUT_ENDPOINT: Cell<Option<SocketAddr>> = const { Cell::new(None) };
}

/// What a cut learned from the layers it dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cut {
    /// The endpoint the attempt was on, if a balancer below said.
    pub(crate) endpoint: Option<SocketAddr>,
    /// The request had not been handed to a connection: it never left the client, so it is
    /// safe to send again whatever its method (a pool said so).
    pub(crate) unsent: bool,
}

/// Clears the flag when the drop ends, however it ends.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        CUTTING.set(false);
        QUEUED.set(false);
        UNSENT.set(false);
    }
}

/// Runs `drop_attempt` (which drops a timed-out attempt's future) with the flag set; returns
/// what the layers below said while they were dropped.
pub(crate) fn cutting(drop_attempt: impl FnOnce()) -> Cut {
    CUT_ENDPOINT.set(None);
    QUEUED.set(false);
    UNSENT.set(false);
    CUTTING.set(true);
    let reset = Reset;
    drop_attempt();
    let unsent = UNSENT.get();
    drop(reset);
    Cut {
        endpoint: CUT_ENDPOINT.take(),
        unsent,
    }
}

/// Whether the attempt being dropped now was cut by a timer (its per-try timeout, the call's
/// deadline) while its endpoint had it — not while it waited in the client's own pool.
pub(crate) fn blames_endpoint() -> bool {
    CUTTING.get() && !QUEUED.get()
}

/// Called by a pool while a cut attempt's wait for a connection is dropped: the attempt is not
/// at the endpoint now (not its fault); `unsent`: it never left the client (not a resend of a
/// request that went out once already).
pub(crate) fn cut_while_queued(unsent: bool) {
    if CUTTING.get() {
        QUEUED.set(true);
        if unsent {
            UNSENT.set(true);
        }
    }
}

/// Called by a pool while a cut attempt's connect is dropped: the request never left the client,
/// though the endpoint did not accept a connection in time (which the breaker counts).
pub(crate) fn cut_before_sending() {
    if CUTTING.get() {
        UNSENT.set(true);
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
        assert_eq!(
            seen,
            Cut {
                endpoint: Some(addr),
                unsent: false
            }
        );
        assert!(!blames_endpoint());
        // Cut while queued in the client's own pool: the endpoint is not to blame, and the
        // request never left.
        let seen = cutting(|| {
            cut_while_queued(true);
            assert!(!blames_endpoint());
        });
        assert!(seen.unsent);
        // Queued again for a resend: not the endpoint's fault, but it went out once.
        let seen = cutting(|| cut_while_queued(false));
        assert!(!seen.unsent);
        // Cut while connecting: never sent, but the endpoint's connect was slow.
        let seen = cutting(|| {
            cut_before_sending();
            assert!(blames_endpoint());
        });
        assert!(seen.unsent);
        cut_while_queued(true);
        cut_before_sending();
        assert!(!blames_endpoint());
        assert_eq!(cutting(|| {}), Cut::default());
        // Outside a cut, nothing is recorded.
        cut_at(addr);
        assert_eq!(cutting(|| {}), Cut::default());
    }

    #[test]
    fn a_panicking_drop_still_clears_the_flag() {
        let result = std::panic::catch_unwind(|| cutting(|| panic!("destructor panicked")));
        assert!(result.is_err());
        assert!(!blames_endpoint());
    }
}
