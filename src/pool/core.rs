//! The pool's shared state: its connections, the checkouts that hold them, and its numbers.
//!
//! One short `std::sync::Mutex` critical section per checkout and per return guards a small
//! vector of slots (at most `max_size`). It is never held across an await; waiting happens on a
//! `tokio::sync::Notify` (FIFO), registered before the state is inspected so no wake-up is lost.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Connection;
use super::checkout::{Checkout, Reservation, WaiterGuard};
use super::config::PoolConfig;
use super::stats::PoolStats;
use crate::metrics::{Closed, PoolMetrics};
use crate::rng::Jitter;

/// One connection and its bookkeeping.
struct Slot<Conn> {
    id: u64,
    /// `None` while an exclusive (HTTP/1) connection is checked out.
    conn: Option<Conn>,
    multiplexed: bool,
    in_flight: usize,
    served: u64,
    expires: Instant,
    idle_since: Instant,
    /// Takes no new requests; closed once its in-flight requests finish. Why, from the first
    /// reason it was retired for (the `reason` it is counted closed with).
    retired: Option<Closed>,
    /// The host it was verified for, when its connector takes the name from the request it
    /// connects for ([`Connection::names_from_requests`]): it carries requests for that host
    /// only. `None`: any request (no TLS, or a name the connector was configured with).
    name: Option<Arc<str>>,
}

impl<Conn> Slot<Conn> {
    fn is_retired(&self) -> bool {
        self.retired.is_some()
    }

    /// Retires the slot, keeping the first reason.
    fn retire(&mut self, why: Closed) {
        self.retired.get_or_insert(why);
    }
}

pub(super) struct State<Conn> {
    slots: Vec<Slot<Conn>>,
    pub(super) connecting: usize,
    next_id: u64,
    /// Whether this endpoint's connections are multiplexed, once one has been seen.
    multiplexed: Option<bool>,
    /// Connects that failed so far, and the last one's error: a checkout waiting for a
    /// connection when a connect fails and none is open gets that error.
    connect_failures: u64,
    last_connect_error: Option<Arc<crate::BoxError>>,
    /// Whether this endpoint's connections are verified for the host of the request that made
    /// each (learned from the first connection), and the name of the last such connection
    /// made: the reaper's warm connections are made for it.
    pub(super) keyed: bool,
    last_host: Option<Arc<str>>,
    /// The host each connect in flight is for, once connections are known to be keyed
    /// (`None`: not known, or a request naming no host): a checkout waits only for a connect
    /// that may carry it.
    pending: Vec<Option<Arc<str>>>,
}

/// What a checkout looks for: the host its request names (its URI's, else its `Host`
/// header's), if any. A connection verified for a name carries it only for that host (the pool
/// checks every host the request names before writing it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want<'a> {
    pub(crate) host: Option<&'a str>,
}

impl Want<'_> {
    /// A checkout with no request: as a request naming no host.
    pub(crate) const NO_HOST: Want<'static> = Want { host: None };

    /// Whether a connection verified for `name` may carry it: one for its host; for a request
    /// naming no host, one verified for the endpoint's own IP (`endpoint_ip`), as a connection
    /// made for it would be — never one for another host, which would fill in that host.
    fn fits(&self, name: &str, endpoint_ip: Option<std::net::IpAddr>) -> bool {
        match self.host {
            Some(host) => super::same_host(name, host),
            None => endpoint_ip.is_some_and(|ip| name.parse::<std::net::IpAddr>() == Ok(ip)),
        }
    }
}

/// The name a new connection is keyed by: its verified name when it names itself from
/// requests — failing closed: one that says so but names nothing is keyed by the host it was
/// made for (`pending`), or by a name no request has.
pub(super) fn keyed_name<Conn: Connection>(
    conn: &Conn,
    pending: &Option<Arc<str>>,
) -> Option<Arc<str>> {
    if !conn.names_from_requests() {
        return None;
    }
    Some(
        conn.verified_name()
            .map(Arc::from)
            .or_else(|| pending.clone())
            .unwrap_or_else(|| Arc::from("")),
    )
}

/// What a checkout attempt found.
pub(crate) enum Take<Conn: Connection> {
    /// A connection (or a stream on one).
    Ready(Checkout<Conn>),
    /// Room for a new connection, reserved for the caller.
    Connect(Reservation<Conn>),
    /// Nothing free and no room: wait for a return. Carries the count of failed connects at the
    /// look, to learn of one that fails during the wait.
    Wait(u64),
}

#[derive(Default)]
struct Counters {
    checkouts: AtomicU64,
    waited: AtomicU64,
    wait_nanos: AtomicU64,
    wait_max_nanos: AtomicU64,
    created: AtomicU64,
    closed: AtomicU64,
    checkout_timeouts: AtomicU64,
    connect_failures: AtomicU64,
    resent: AtomicU64,
    resent_after_close: AtomicU64,
    waiters: AtomicUsize,
}

/// The state shared by a pool's clones, its checkouts and its reaper.
pub(crate) struct Slots<Conn> {
    pub(crate) config: PoolConfig,
    pub(crate) endpoint: Arc<str>,
    state: Mutex<State<Conn>>,
    pub(crate) notify: Notify,
    jitter: Jitter,
    counters: Counters,
    /// The pool's instruments (feature `metrics`; nothing without it).
    metrics: PoolMetrics,
    pub(crate) reaper_started: AtomicBool,
    /// The endpoint's IP, when its name is a socket address: a request naming no host takes
    /// only connections verified for it.
    endpoint_ip: Option<std::net::IpAddr>,
    endpoint_ip_text: Option<Arc<str>>,
    /// One WARN a second for refusals that repeat on every call (checkout timeouts, refused
    /// requests); the rest at DEBUG.
    pub(crate) warnings: PoolWarnings,
}

impl<Conn> fmt::Debug for Slots<Conn> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slots")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl<Conn> Slots<Conn> {
    pub(crate) fn new(config: PoolConfig, endpoint: Arc<str>) -> Self {
        let jitter = config.seed.map_or_else(Jitter::new, Jitter::seeded);
        let metrics = PoolMetrics::new(&endpoint, config.max_size);
        let endpoint_ip = endpoint
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip());
        Slots {
            warnings: PoolWarnings::default(),
            config,
            endpoint,
            state: Mutex::new(State {
                slots: Vec::new(),
                connecting: 0,
                next_id: 0,
                multiplexed: None,
                connect_failures: 0,
                last_connect_error: None,
                keyed: false,
                last_host: None,
                pending: Vec::new(),
            }),
            notify: Notify::new(),
            jitter,
            counters: Counters::default(),
            metrics,
            reaper_started: AtomicBool::new(false),
            endpoint_ip,
            endpoint_ip_text: endpoint_ip.map(|ip| Arc::from(ip.to_string())),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State<Conn>> {
        // No critical section can panic half-way, so a poisoned lock still holds a sound state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This connection's lifetime: uniform in `[max × (1 − jitter), max]`.
    fn lifetime(&self) -> Duration {
        let max = self.config.max_lifetime;
        let low = max.mul_f64(1.0 - self.config.lifetime_jitter);
        self.jitter.between(low, max)
    }

    /// Counts a checkout; `waited` is how long it took when it had to wait (for a return or a
    /// new connection), `None` when a connection was free at once.
    pub(crate) fn record_checkout(&self, waited: Option<Duration>) {
        let c = &self.counters;
        c.checkouts.fetch_add(1, Ordering::Relaxed);
        self.metrics.checkout(waited.unwrap_or_default());
        if let Some(waited) = waited {
            let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
            c.waited.fetch_add(1, Ordering::Relaxed);
            crate::clock::add_nanos(&c.wait_nanos, waited);
            c.wait_max_nanos.fetch_max(nanos, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_checkout_timeout(&self) {
        self.metrics.checkout_timeout();
        self.counters
            .checkout_timeouts
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_connect_failure(&self) {
        self.metrics.connect_failure();
        self.counters
            .connect_failures
            .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_resend(&self) {
        self.metrics.resent(false);
        self.counters.resent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_resend_after_close(&self) {
        self.metrics.resent(true);
        self.counters
            .resent_after_close
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a caller waiting for a return until the guard drops.
    /// Counts a waiting checkout until the guard drops; `unsent`: its request never went out
    /// (not a resend).
    pub(crate) fn waiting(&self, unsent: bool) -> WaiterGuard<'_> {
        self.counters.waiters.fetch_add(1, Ordering::Relaxed);
        WaiterGuard(&self.counters.waiters, unsent)
    }
}

impl<Conn: Connection> Slots<Conn> {
    /// Takes a free connection or stream, or reserves room for a new connection.
    /// `fresh_since`: take no exclusive connection that has sat idle since before then (a
    /// resend after a connection died idle must not meet another that died the same way).
    /// `want`: the request's host, and whether a connection verified for a name may carry it —
    /// a connection named from requests is taken only for its own host; with no room, an idle
    /// one for another host is closed to make room.
    pub(crate) fn try_take(
        self: &Arc<Self>,
        now: Instant,
        fresh_since: Option<Instant>,
        want: &Want<'_>,
    ) -> Take<Conn> {
        let mut state = self.lock();
        self.prune(&mut state, now);
        let endpoint_ip = self.endpoint_ip;
        let fits = |s: &Slot<Conn>| {
            s.name
                .as_deref()
                .is_none_or(|name| want.fits(name, endpoint_ip))
        };
        let max_streams = self.config.max_streams;
        // A stream on a multiplexed connection first (oldest first, so streams pack onto few
        // connections), then the newest idle exclusive connection (older ones go idle and close).
        let found = state
            .slots
            .iter()
            .position(|s| {
                s.multiplexed
                    && !s.is_retired()
                    && s.conn.is_some()
                    && s.in_flight < max_streams
                    && fits(s)
            })
            .or_else(|| {
                state.slots.iter().rposition(|s| {
                    !s.multiplexed
                        && !s.is_retired()
                        && s.conn.is_some()
                        && s.in_flight == 0
                        && fresh_since.is_none_or(|since| s.idle_since >= since)
                        && fits(s)
                })
            });
        if let Some(index) = found {
            let slot = &mut state.slots[index];
            let conn = if slot.multiplexed {
                slot.conn.as_ref().and_then(Connection::share)
            } else {
                slot.conn.take()
            };
            if let Some(conn) = conn {
                // It sat idle in the pool — after a request, or since the reaper opened it for
                // `min_idle` — so the server may have closed it meanwhile.
                let reused = true;
                slot.in_flight += 1;
                slot.served += 1;
                if self
                    .config
                    .max_requests
                    .is_some_and(|max| slot.served >= max)
                {
                    slot.retire(Closed::Retired);
                }
                return Take::Ready(Checkout {
                    slots: self.clone(),
                    id: slot.id,
                    conn: Some(conn),
                    exclusive: !slot.multiplexed,
                    reused,
                    broken: false,
                    sending: false,
                });
            }
            // A multiplexed connection that cannot share any more (closed, told to go away) is
            // done.
            slot.retire(Closed::Broken);
        }
        if state.connecting > 0 && state.multiplexed != Some(false) {
            // A connection on its way may carry this call too (HTTP/2, or not known yet): wait
            // for it rather than open one connection per caller, unless it is already spoken
            // for. If that connect fails, every waiter gets its error at once
            // (`connect_failed`). On HTTP/1 each caller connects itself, up to
            // `max_connecting`.
            // With connections keyed by host, only a connect for a host that fits counts.
            let coming = if state.keyed {
                state
                    .pending
                    .iter()
                    .filter(|h| h.as_deref().is_none_or(|h| want.fits(h, endpoint_ip)))
                    .count()
            } else {
                state.connecting
            };
            let waiting = self.counters.waiters.load(Ordering::Relaxed);
            if waiting < coming * max_streams {
                return Take::Wait(state.connect_failures);
            }
        }
        let mut open = state.slots.len() + state.connecting;
        if open >= self.config.max_size
            && state.connecting < self.config.max_connecting
            && let Some(idle) = state
                .slots
                .iter()
                .position(|s| s.in_flight == 0 && s.name.is_some() && !fits(s))
        {
            // Full, and an idle connection is for another host: it makes room.
            state.slots.swap_remove(idle);
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
            self.metrics.closed(Closed::Idle);
            open -= 1;
        }
        if open < self.config.max_size && state.connecting < self.config.max_connecting {
            state.connecting += 1;
            // Keyed: the host it connects for — a request naming none, the endpoint's IP (as
            // the connection will be named). `None` only while keying is not known yet.
            let host = if state.keyed {
                want.host
                    .map(Arc::from)
                    .or_else(|| self.endpoint_ip_text.clone())
            } else {
                None
            };
            state.pending.push(host.clone());
            return Take::Connect(Reservation {
                slots: Some(self.clone()),
                host,
            });
        }
        Take::Wait(state.connect_failures)
    }

    /// A connect in flight ended (its reservation filled or given back).
    pub(super) fn end_pending(state: &mut State<Conn>, host: &Option<Arc<str>>) {
        state.connecting -= 1;
        if let Some(i) = state.pending.iter().position(|h| h == host) {
            state.pending.swap_remove(i);
        }
    }

    /// Records a failed connect (its reservation already given back). With `tell_waiters` — the
    /// endpoint's own failure, not one caller's time running out — and no other connect in
    /// flight and no connection open, every waiting checkout is woken to take the error (they
    /// were waiting for a connect that cannot come); otherwise one, to connect in its place.
    pub(crate) fn connect_failed(&self, error: Arc<crate::BoxError>, tell_waiters: bool) {
        self.record_connect_failure();
        let mut state = self.lock();
        let everyone = tell_waiters && state.connecting == 0 && state.slots.is_empty();
        if everyone {
            state.connect_failures += 1;
            state.last_connect_error = Some(error);
        }
        drop(state);
        if everyone {
            self.notify.notify_waiters();
        } else {
            self.notify.notify_one();
        }
    }

    /// The error of a connect that failed for every waiter since the count `seen`, if one did
    /// and still no connect is in flight and no connection is open.
    pub(crate) fn connect_failed_since(&self, seen: u64) -> Option<Arc<crate::BoxError>> {
        let state = self.lock();
        if state.connect_failures > seen && state.connecting == 0 && state.slots.is_empty() {
            state.last_connect_error.clone()
        } else {
            None
        }
    }

    /// Drops connections that are closed, idle too long or past their lifetime (once idle), and
    /// retires those that may take no new requests.
    fn prune(&self, state: &mut State<Conn>, now: Instant) {
        let idle_timeout = self.config.idle_timeout;
        let before = state.slots.len();
        let metrics = &self.metrics;
        state.slots.retain_mut(|slot| {
            if slot.conn.as_ref().is_some_and(|c| c.is_closed()) {
                slot.retire(Closed::Broken);
            }
            if now >= slot.expires {
                slot.retire(Closed::Expired);
            }
            let idle_too_long = now.saturating_duration_since(slot.idle_since) >= idle_timeout;
            let drop = slot.in_flight == 0 && (slot.is_retired() || idle_too_long);
            if drop {
                metrics.closed(slot.retired.unwrap_or(Closed::Idle));
            }
            !drop
        });
        let dropped = before - state.slots.len();
        if dropped > 0 {
            self.counters
                .closed
                .fetch_add(dropped as u64, Ordering::Relaxed);
            tracing::trace!(endpoint = %self.endpoint, dropped, "pool closed connections");
        }
    }

    /// Adds a new connection. With `take` the caller gets it (or a stream on it) checked out;
    /// otherwise it waits idle (the reaper's warm connections).
    /// `shared` and `name` are [`Connection::share`]'s and the name it is keyed by
    /// ([`keyed_name`]), asked before (connector code that may panic runs before the pool's
    /// books change).
    pub(super) fn insert(
        self: &Arc<Self>,
        conn: Conn,
        shared: Option<Conn>,
        name: Option<Arc<str>>,
        take: bool,
        pending: &Option<Arc<str>>,
    ) -> Option<Checkout<Conn>> {
        let now = Instant::now();
        let multiplexed = shared.is_some();
        let mut state = self.lock();
        Self::end_pending(&mut state, pending);
        if let Some(name) = &name {
            state.keyed = true;
            // Warm connections follow the last host a connection was made for (one that
            // failed to connect never gets here).
            if state.last_host.as_deref() != Some(&**name) {
                state.last_host = Some(name.clone());
            }
        }
        let learned = state.multiplexed.replace(multiplexed) != Some(multiplexed);
        let id = state.next_id;
        state.next_id += 1;
        let mut slot = Slot {
            id,
            conn: Some(conn),
            multiplexed,
            in_flight: 0,
            served: 0,
            expires: now + self.lifetime(),
            idle_since: now,
            retired: None,
            name: name.clone(),
        };
        let checkout = take.then(|| {
            slot.in_flight = 1;
            slot.served = 1;
            if self.config.max_requests == Some(1) {
                slot.retire(Closed::Retired);
            }
            let conn = if multiplexed {
                shared
            } else {
                slot.conn.take()
            };
            Checkout {
                slots: self.clone(),
                id,
                conn,
                exclusive: !multiplexed,
                reused: false,
                broken: false,
                sending: false,
            }
        });
        state.slots.push(slot);
        drop(state);
        self.counters.created.fetch_add(1, Ordering::Relaxed);
        self.metrics.created();
        tracing::debug!(endpoint = %self.endpoint, id, multiplexed, "pool opened a connection");
        if multiplexed || !take || learned || name.is_some() {
            // Room for others, or news about what connections are, or a connection only some
            // waiters can use (keyed by host): every waiter looks again.
            self.notify.notify_waiters();
        } else {
            // A connect slot is free again: one waiter may connect.
            self.notify.notify_one();
        }
        checkout
    }

    /// Gives a checkout's connection (or stream) back.
    pub(super) fn give_back(&self, id: u64, conn: Option<Conn>, broken: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        let mut closed = None;
        if let Some(index) = state.slots.iter().position(|s| s.id == id) {
            let slot = &mut state.slots[index];
            slot.in_flight -= 1;
            if broken {
                slot.retire(Closed::Broken);
            }
            if let Some(conn) = conn {
                if conn.is_closed() {
                    slot.retire(Closed::Broken);
                } else if !slot.multiplexed {
                    slot.conn = Some(conn);
                }
            }
            if slot.in_flight == 0 {
                slot.idle_since = now;
                if now >= slot.expires {
                    slot.retire(Closed::Expired);
                }
                if let Some(why) = slot.retired {
                    state.slots.swap_remove(index);
                    closed = Some(why);
                }
            }
        }
        let keyed = state.keyed;
        drop(state);
        if let Some(why) = closed {
            self.counters.closed.fetch_add(1, Ordering::Relaxed);
            self.metrics.closed(why);
        }
        // Keyed by host, the first waiter may be unable to use what came back: every waiter
        // looks again (each registered before looking, so none sleeps through its turn).
        if keyed {
            self.notify.notify_waiters();
        } else {
            self.notify.notify_one();
        }
    }

    /// The reaper's pass: closes idle, expired and broken connections and reserves room for
    /// the connections `min_idle` still asks for (when `refill`; the reaper backs off after
    /// failed connects).
    pub(crate) fn reap(self: &Arc<Self>, refill: bool) -> Vec<Reservation<Conn>> {
        let mut state = self.lock();
        self.prune(&mut state, Instant::now());
        // Idle connections that can carry the warm host's requests (with keyed connections,
        // those verified for it).
        let warm = state.last_host.clone().filter(|_| state.keyed);
        let idle = state
            .slots
            .iter()
            .filter(|s| s.in_flight == 0 && !s.is_retired())
            .filter(|s| match (&s.name, &warm) {
                (Some(name), Some(host)) => super::same_host(name, host),
                _ => true,
            })
            .count();
        let active = state.slots.iter().filter(|s| s.in_flight > 0).count();
        self.metrics.gauges(
            active,
            state.slots.len() - active,
            self.counters.waiters.load(Ordering::Relaxed),
        );
        let mut wanted = if refill {
            self.config.min_idle.saturating_sub(idle + state.connecting)
        } else {
            0
        };
        let mut reserved = Vec::new();
        while wanted > 0
            && state.slots.len() + state.connecting < self.config.max_size
            && state.connecting < self.config.max_connecting
        {
            state.connecting += 1;
            state.pending.push(warm.clone());
            wanted -= 1;
            reserved.push(Reservation {
                slots: Some(self.clone()),
                host: warm.clone(),
            });
        }
        reserved
    }

    /// A snapshot of the pool's numbers.
    pub(crate) fn stats(&self) -> PoolStats {
        let state = self.lock();
        let open = state.slots.len();
        let in_use = state.slots.iter().filter(|s| s.in_flight > 0).count();
        let in_flight = state.slots.iter().map(|s| s.in_flight).sum();
        let connecting = state.connecting;
        drop(state);
        let c = &self.counters;
        PoolStats {
            endpoint: self.endpoint.clone(),
            max_size: self.config.max_size,
            open,
            in_use,
            idle: open - in_use,
            in_flight,
            connecting,
            waiters: c.waiters.load(Ordering::Relaxed),
            checkouts: c.checkouts.load(Ordering::Relaxed),
            waited_checkouts: c.waited.load(Ordering::Relaxed),
            total_wait: Duration::from_nanos(c.wait_nanos.load(Ordering::Relaxed)),
            max_wait: Duration::from_nanos(c.wait_max_nanos.load(Ordering::Relaxed)),
            created: c.created.load(Ordering::Relaxed),
            closed: c.closed.load(Ordering::Relaxed),
            checkout_timeouts: c.checkout_timeouts.load(Ordering::Relaxed),
            connect_failures: c.connect_failures.load(Ordering::Relaxed),
            resent: c.resent.load(Ordering::Relaxed),
            resent_after_close: c.resent_after_close.load(Ordering::Relaxed),
        }
    }
}

/// A pool's WARN gates, one per kind of event (see `crate::warn_gate`).
#[derive(Debug, Default)]
pub(crate) struct PoolWarnings {
    pub(crate) checkout_timeout: crate::warn_gate::WarnGate,
    pub(crate) plaintext: crate::warn_gate::WarnGate,
    pub(crate) refused: crate::warn_gate::WarnGate,
}
