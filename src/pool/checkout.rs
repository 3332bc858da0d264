//! What a caller holds from the pool: a reserved connect, a place in the wait, a checkout.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Connection;
use super::core::Slots;

/// Room reserved for one new connection; given back if the connect fails or is dropped.
pub(crate) struct Reservation<Conn: Connection> {
    pub(super) slots: Option<Arc<Slots<Conn>>>,
    /// The host the connect is for, when the pool's connections are keyed by host.
    pub(super) host: Option<Arc<str>>,
}

impl<Conn: Connection> Reservation<Conn> {
    /// Turns the reservation into a connection in the pool, checked out by the caller when
    /// `take`.
    pub(crate) fn fill(mut self, conn: Conn, take: bool) -> Option<Checkout<Conn>> {
        // The connection's own code first, while the reservation still holds its place: if it
        // panics, dropping the reservation gives the place back.
        let shared = conn.share();
        let name = super::core::keyed_name(&conn, &self.host);
        let slots = self.slots.take()?;
        slots.insert(conn, shared, name, take, &self.host)
    }
}

impl<Conn: Connection> Drop for Reservation<Conn> {
    fn drop(&mut self) {
        if let Some(slots) = self.slots.take() {
            let keyed = {
                let mut state = slots.lock();
                Slots::end_pending(&mut state, &self.host);
                state.keyed
            };
            // Someone waiting may connect in our place (keyed by host: anyone may be it).
            if keyed {
                slots.notify.notify_waiters();
            } else {
                slots.notify.notify_one();
            }
        }
    }
}

/// Decrements the waiter gauge when a waiting checkout ends.
pub(crate) struct WaiterGuard<'a>(pub(super) &'a AtomicUsize, pub(super) bool);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        // Dropped by a per-try timeout while still waiting for one of our connections: the
        // endpoint never saw the request, so its breaker must not count it.
        crate::deadline::cut::cut_while_queued(self.1);
    }
}

/// A connection, or a stream on a multiplexed one, checked out of a [`Pool`](super::Pool).
///
/// It goes back when dropped — held by the response body, that is when the body ends — so a
/// cancelled call never leaks its connection. A connection whose send failed goes back marked
/// broken and is closed.
pub struct Checkout<Conn: Connection> {
    pub(super) slots: Arc<Slots<Conn>>,
    pub(super) id: u64,
    pub(super) conn: Option<Conn>,
    pub(super) exclusive: bool,
    /// The connection sat idle in the pool before this checkout (it was not opened for it).
    pub(super) reused: bool,
    pub(super) broken: bool,
    /// A request went out and its response has not been read to its end: an exclusive
    /// connection given back now is mid-exchange and cannot carry another request — it is
    /// closed, so the next caller never pays a failed readiness check on it.
    pub(super) sending: bool,
}

impl<Conn: Connection> Checkout<Conn> {
    /// The endpoint the connection goes to.
    pub fn endpoint(&self) -> &str {
        &self.slots.endpoint
    }

    /// The connection (for a multiplexed one, a handle on it).
    pub fn connection(&self) -> Option<&Conn> {
        self.conn.as_ref()
    }

    pub(crate) fn conn_mut(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    /// Marks a request as sent and its response as pending, until the response body ends.
    pub(crate) fn set_sending(&mut self, sending: bool) {
        self.sending = sending;
    }

    /// Says the exchange is over — the response was read to its end — so the connection can
    /// carry another request. A checkout of a one-request-at-a-time (HTTP/1) connection dropped
    /// without it is mid-exchange: its connection is closed, never handed to the next caller.
    /// The crate's `http::Response` bodies call it at their end; a [`PoolResponse`](super::PoolResponse)
    /// of your own calls it when its response is complete.
    pub fn complete(&mut self) {
        self.sending = false;
    }

    /// Whether this is a reused one-request-at-a-time connection (HTTP/1), which the server
    /// may have closed while it sat idle.
    pub(crate) fn is_reused_exclusive(&self) -> bool {
        self.exclusive && self.reused
    }

    /// Marks the connection unusable: it takes no new requests and closes when idle.
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }
}

impl<Conn: Connection> fmt::Debug for Checkout<Conn> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkout")
            .field("endpoint", &self.slots.endpoint)
            .field("id", &self.id)
            .field("exclusive", &self.exclusive)
            .finish()
    }
}

#[cfg(feature = "http")]
impl<Conn: Connection> crate::guarded::BodyGuard for Checkout<Conn> {
    fn body_ended(&mut self) {
        self.complete();
    }
}

impl<Conn: Connection> Drop for Checkout<Conn> {
    fn drop(&mut self) {
        if self.exclusive && self.sending {
            // Dropped mid-exchange (the response, or its body, not read to the end).
            self.broken = true;
        }
        let conn = self.conn.take();
        let conn = if self.exclusive {
            conn
        } else {
            drop(conn);
            None
        };
        self.slots.give_back(self.id, conn, self.broken);
    }
}
