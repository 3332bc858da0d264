//! The pool as a tower `Service`: check out, send, resend what came back unsent, and hold the
//! checkout until the response body ends.

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::checkout::Checkout;
use super::config::PoolConfig;
use super::core::{Slots, Take, Want};
use super::reaper::{reap_tick, reaper};
use super::stats::PoolStats;
use super::{Connection, ConnectionService, PoolRequest, PoolResponse};
use crate::background::Started;
use crate::classify::NeverSent;
use crate::deadline;
use crate::warn_gate::gated_warn;
use crate::{BoxError, Error};

/// The response future of a [`Pool`]: boxed, since a pooled call's checkout, resends and
/// connects make a large state machine that only moves once.
pub type PoolFuture<T, E = Error> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// A pool of connections to one endpoint, made by a connector; a tower `Service` that sends
/// each request on a pooled connection. Clones share the pool.
///
/// Built with [`PoolBuilder`](super::PoolBuilder); see the [module docs](super).
pub struct Pool<C, T>
where
    C: Service<T>,
    C::Response: Connection,
{
    slots: Arc<Slots<C::Response>>,
    connector: C,
    target: T,
}

impl<C, T> Clone for Pool<C, T>
where
    C: Service<T> + Clone,
    C::Response: Connection,
    T: Clone,
{
    fn clone(&self) -> Self {
        Pool {
            slots: self.slots.clone(),
            connector: self.connector.clone(),
            target: self.target.clone(),
        }
    }
}

impl<C, T> fmt::Debug for Pool<C, T>
where
    C: Service<T>,
    C::Response: Connection,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("endpoint", &self.slots.endpoint)
            .finish_non_exhaustive()
    }
}

impl<C, T> Pool<C, T>
where
    C: Service<T> + Clone + Send + 'static,
    C::Response: Connection,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    T: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(config: PoolConfig, connector: C, target: T, endpoint: Arc<str>) -> Self {
        let pool = Pool {
            slots: Arc::new(Slots::new(config, endpoint)),
            connector,
            target,
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            pool.start_reaper();
        }
        pool
    }

    /// A snapshot of the pool's numbers.
    pub fn stats(&self) -> PoolStats {
        self.slots.stats()
    }

    /// The endpoint this pool connects to.
    pub fn endpoint(&self) -> &str {
        &self.slots.endpoint
    }

    /// Checks out a connection (or a stream on one) directly, waiting at most the checkout
    /// timeout (or `deadline`'s remaining time, if shorter). Dropping the checkout returns it.
    pub async fn checkout(
        &self,
        deadline: Option<deadline::Deadline>,
    ) -> Result<Checkout<C::Response>, Error> {
        self.start_reaper();
        let (bound, _) = bound(&self.slots.config, deadline);
        checkout(
            &self.slots,
            &self.connector,
            &self.target,
            bound,
            None,
            &Want::NO_HOST,
        )
        .await
    }

    /// Starts the background reaper once (again, if its runtime ended: [`Started`]); it holds
    /// only a weak reference and ends when the pool is dropped.
    fn start_reaper(&self) {
        let Some(started) = Started::claim(&self.slots, |s| &s.reaper_started) else {
            return;
        };
        let tick = reap_tick(&self.slots.config);
        let connector = self.connector.clone();
        let target = self.target.clone();
        tokio::spawn(reaper(started, tick, connector, target));
    }
}

/// The least time worth handing to a server: `grpc-timeout` and the timeout header are written
/// in whole milliseconds, and a request told it has 0 ms is work the server starts only to drop.
const LEAST_ON_THE_WIRE: Duration = Duration::from_millis(1);

/// The longest a checkout may wait, and the deadline that bounds it, if any.
///
/// The checkout timeout bounds it — unless the call's (or attempt's) deadline comes first. Then
/// the pool waits until 1 ms *past* the deadline: the timer of the layer that set it (the
/// deadline layer, the attempt layer) fires first and cuts the attempt, learning that it was
/// still queued in our pool (so the endpoint is not blamed) and reporting what really ran out —
/// the attempt's time or the call's — not a pool timeout.
fn bound(
    config: &PoolConfig,
    deadline: Option<deadline::Deadline>,
) -> (Duration, Option<deadline::Deadline>) {
    let deadline = match (deadline, deadline::current()) {
        (Some(a), Some(b)) => Some(a.earliest(b)),
        (a, b) => a.or(b),
    };
    match deadline {
        Some(d) if d.remaining() < config.checkout_timeout => {
            (d.remaining() + LEAST_ON_THE_WIRE, Some(d))
        }
        _ => (config.checkout_timeout, deadline),
    }
}

/// Held while a request waits in the pool — for one of its connections to come back or be
/// ready, or, its deadline (all but) passed, for the timer above to cut it: dropped in that
/// cut, it says the attempt is not at the endpoint (not its fault) and, unless it is a resend
/// (`.0` false), that it never left the client.
struct Unsent(bool);

impl Drop for Unsent {
    fn drop(&mut self) {
        crate::deadline::cut::cut_while_queued(self.0);
    }
}

/// Held while the pool connects for a request that never went out: dropped in a cut, it says
/// the request was never sent (the endpoint, which did not accept a connection in time, is
/// still to blame).
struct Connecting(bool);

impl Drop for Connecting {
    fn drop(&mut self) {
        if self.0 {
            crate::deadline::cut::cut_before_sending();
        }
    }
}

/// Checks out a connection within `bound`: a free one, a new one, or the first returned.
async fn checkout<C, T>(
    slots: &Arc<Slots<C::Response>>,
    connector: &C,
    target: &T,
    bound: Duration,
    fresh_since: Option<Instant>,
    want: &Want<'_>,
) -> Result<Checkout<C::Response>, Error>
where
    C: Service<T> + Clone,
    C::Response: Connection,
    C::Error: Into<BoxError>,
    T: Clone,
{
    let start = Instant::now();
    let until = start + bound;
    let mut announced = false;
    let mut waited = false;
    loop {
        // Registered before looking, so a return between the look and the wait is not lost.
        let mut notified = pin!(slots.notify.notified());
        notified.as_mut().enable();
        match slots.try_take(Instant::now(), fresh_since, want) {
            Take::Ready(checkout) => {
                slots.record_checkout(waited.then(|| start.elapsed()));
                return Ok(checkout);
            }
            Take::Connect(reservation) => {
                let _connecting = Connecting(fresh_since.is_none());
                // The connector learns whom it connects for (`connecting_for`): a TLS one with
                // no configured name verifies the connection for the request's host.
                let connect = super::connect_for(
                    want.host.map(Arc::from),
                    connector.clone().oneshot(target.clone()),
                );
                return match tokio::time::timeout_at(until, connect).await {
                    Ok(Ok(conn)) => match reservation.fill(conn, true) {
                        Some(checkout) => {
                            slots.record_checkout(Some(start.elapsed()));
                            Ok(checkout)
                        }
                        None => Err(timed_out(slots, start)),
                    },
                    Ok(Err(error)) => {
                        let error: BoxError = error.into();
                        // The request's own fault (a host no TLS connection can be verified
                        // for): not the endpoint's failure, and nothing for the other waiters.
                        if crate::classify::chain(error.as_ref()).any(super::is_own_refusal) {
                            drop(reservation);
                            return Err(Error::Inner(error));
                        }
                        tracing::debug!(endpoint = %slots.endpoint, %error, "pool connect failed");
                        // The room goes back before the others are told: the last connect in
                        // flight failing, with none open, is news for every waiter.
                        drop(reservation);
                        Err(connect_failed(slots, error, true))
                    }
                    Err(_) => {
                        // The endpoint did not complete a connect in the time the checkout had:
                        // its failure (a timeout, weighed by the breakers' floor), never sent —
                        // not our own congestion.
                        let waited = start.elapsed();
                        tracing::debug!(endpoint = %slots.endpoint, ?waited, "pool connect timed out");
                        let timed_out = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "connect to {} did not complete within {waited:?}",
                                slots.endpoint
                            ),
                        );
                        // Bounded by this caller's own time (its checkout timeout or deadline), so
                        // not news for the others, who have their own.
                        drop(reservation);
                        Err(connect_failed(slots, timed_out.into(), false))
                    }
                };
            }
            Take::Wait(failures) => {
                if !announced {
                    announced = true;
                    tracing::debug!(endpoint = %slots.endpoint, "pool exhausted: checkout waits");
                }
                waited = true;
                let _waiting = slots.waiting(fresh_since.is_none());
                if tokio::time::timeout_at(until, notified).await.is_err() {
                    return Err(timed_out(slots, start));
                }
                // A connect failed while this checkout waited and no connection is open: the
                // connect it waited for cannot come — its error now, not a timeout later.
                if let Some(error) = slots.connect_failed_since(failures) {
                    return Err(Error::Inner(Box::new(NeverSent::new(SharedConnectError(
                        error,
                    )))));
                }
            }
        }
    }
}

/// Records a failed connect — with `tell_waiters`, the endpoint's own failure, which every
/// checkout waiting for a connect learns of when no other connect is in flight and no
/// connection is open — and makes the caller's never-sent error.
fn connect_failed<Conn: Connection>(
    slots: &Slots<Conn>,
    error: BoxError,
    tell_waiters: bool,
) -> Error {
    let error = Arc::new(error);
    slots.connect_failed(error.clone(), tell_waiters);
    Error::Inner(Box::new(NeverSent::new(SharedConnectError(error))))
}

/// A connect's error, shared by every checkout that waited for that connect.
#[derive(Debug)]
struct SharedConnectError(Arc<BoxError>);

impl std::fmt::Display for SharedConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect failed")
    }
}

impl std::error::Error for SharedConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.0)
    }
}

fn timed_out<Conn: Connection>(slots: &Slots<Conn>, start: Instant) -> Error {
    slots.record_checkout_timeout();
    let waited = start.elapsed();
    gated_warn!(slots.warnings.checkout_timeout, endpoint = %slots.endpoint, ?waited, "pool checkout timed out");
    Error::PoolTimeout {
        endpoint: slots.endpoint.clone(),
        waited,
    }
}

impl<C, T, Req> Service<Req> for Pool<C, T>
where
    C: Service<T> + Clone + Send + Sync + 'static,
    C::Response: ConnectionService<Req>,
    <C::Response as Service<Req>>::Future: Send,
    <C::Response as Service<Req>>::Response: PoolResponse<C::Response>,
    <C::Response as Service<Req>>::Error: Send,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    T: Clone + Send + Sync + 'static,
    Req: PoolRequest + Send + 'static,
{
    type Response = <<C::Response as Service<Req>>::Response as PoolResponse<C::Response>>::Output;
    type Error = Error;
    type Future = PoolFuture<Self::Response>;

    /// Always ready: waiting for a connection happens in the call, bounded by the checkout
    /// timeout.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.start_reaper();
        let pool = self.clone();
        Box::pin(async move { pool.send(req).await })
    }
}

impl<C, T> Pool<C, T>
where
    C: Service<T> + Clone + Send + Sync + 'static,
    C::Response: Connection,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
    T: Clone + Send + Sync + 'static,
{
    async fn send<Req>(
        self,
        mut req: Req,
    ) -> Result<<<C::Response as Service<Req>>::Response as PoolResponse<C::Response>>::Output, Error>
    where
        C::Response: ConnectionService<Req>,
        <C::Response as Service<Req>>::Response: PoolResponse<C::Response>,
        Req: PoolRequest,
    {
        if !<C::Response as super::Connection>::SECURE && req.needs_tls() {
            gated_warn!(
                self.slots.warnings.plaintext,
                endpoint = %self.slots.endpoint,
                "https request refused: the pool's connections are plaintext"
            );
            return Err(Error::Inner(Box::new(super::PlaintextRefused::new(
                self.slots.endpoint.clone(),
            ))));
        }
        let start = Instant::now();
        let (bound, deadline) = bound(&self.slots.config, req.deadline());
        // Each pass either sends or finds a connection closed; a pool never has more than
        // max_size connections to find closed, plus one freshly opened, plus one resend after
        // a reused connection closed before answering.
        let mut last_unsent: Option<BoxError> = None;
        let mut fresh_since: Option<Instant> = None;
        for _ in 0..=self.slots.config.max_size + 2 {
            let left = bound.saturating_sub(start.elapsed());
            let want = Want { host: req.host() };
            let mut checkout = checkout(
                &self.slots,
                &self.connector,
                &self.target,
                left,
                fresh_since,
                &want,
            )
            .await?;
            let reused = checkout.is_reused_exclusive();
            let Some(conn) = checkout.conn_mut() else {
                checkout.mark_broken();
                continue;
            };
            // A request for a host this TLS connection was not verified for: refused before a
            // byte of it is written.
            if let Some(refusal) = super::refusal(&*conn, &req, &self.slots.endpoint) {
                gated_warn!(
                    self.slots.warnings.refused,
                    endpoint = %self.slots.endpoint,
                    error = %refusal,
                    "request refused"
                );
                return Err(Error::Inner(refusal));
            }
            let ready = {
                let _unsent = Unsent(fresh_since.is_none());
                tokio::time::timeout_at(start + bound, conn.ready()).await
            };
            let conn = match ready {
                Ok(Ok(conn)) => conn,
                Ok(Err(error)) => {
                    // Failed readiness: the connection is gone; the request was never sent.
                    checkout.mark_broken();
                    match C::Response::into_unsent(error) {
                        // The endpoint refused the connection itself (a TLS handshake): another
                        // connection to it would be refused too.
                        Err(error) if crate::classify::rejects_endpoint(error.as_ref()) => {
                            return Err(Error::from_inner(error));
                        }
                        unsent => last_unsent = unsent.err(),
                    }
                    continue;
                }
                Err(_) => return Err(timed_out(&self.slots, start)),
            };
            // A reused HTTP/1 connection may have been closed by the server as it sat idle: keep
            // a copy of a request safe to repeat, to send once more if it dies before answering.
            let copy = if fresh_since.is_none() && reused {
                req.resend_copy()
            } else {
                None
            };
            // Handed to the connection now: tell the server what is really left, after the
            // checkout, connect and handshake — unless less than a millisecond is: then the
            // request is not sent at all (a server told 0 ms would start work only to drop
            // it); it waits, unsent, for the timer above to cut it.
            if deadline.is_some_and(|d| d.remaining() < LEAST_ON_THE_WIRE) {
                drop(checkout);
                let _unsent = Unsent(fresh_since.is_none());
                tokio::time::sleep_until(start + bound).await;
                return Err(timed_out(&self.slots, start));
            }
            req.restamp();
            let sent = conn.call(req);
            checkout.set_sending(true);
            let outcome = sent.await;
            match outcome {
                Ok(res) => return Ok(res.hold(checkout)),
                Err(error) => match C::Response::into_unsent(error) {
                    Ok(back) => {
                        checkout.mark_broken();
                        self.slots.record_resend();
                        tracing::debug!(endpoint = %self.slots.endpoint, "connection closed before sending: resending on another");
                        req = back;
                    }
                    Err(error) => {
                        let closed = error.is::<super::ClosedBeforeResponse>();
                        if closed || crate::classify::is_go_away(error.as_ref()) {
                            checkout.mark_broken();
                        }
                        // A refused stream (HTTP/2) is about that stream alone: the connection
                        // stays. A GOAWAY closes it to new streams: it is not handed out again.
                        match copy {
                            // The copy is sent only if it can still replay the whole body (it
                            // may have outgrown its buffer as the first copy was sent).
                            Some(copy) if closed && copy.can_resend() => {
                                self.slots.record_resend_after_close();
                                tracing::debug!(
                                    endpoint = %self.slots.endpoint,
                                    "reused connection closed before the response: resending once on a fresh one"
                                );
                                fresh_since = Some(Instant::now());
                                req = copy;
                            }
                            _ => return Err(Error::from_inner(error)),
                        }
                    }
                },
            }
        }
        let error = last_unsent.unwrap_or_else(|| "every pooled connection was closed".into());
        Err(Error::Inner(Box::new(NeverSent::new(error))))
    }
}
