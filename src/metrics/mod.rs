//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): every
//! instrument the crate records, by name, kind, unit and labels. The crate installs no
//! recorder and no exporter — the application does (Prometheus, OpenTelemetry, StatsD…).
//!
//! **Install the recorder before building clients and pools.** Each pool registers its
//! instruments once, when it is built (so that recording a call allocates nothing); handles
//! registered before a recorder is installed stay no-ops. [`describe`] registers every
//! instrument's unit and description with the installed recorder.
//!
//! Names follow OpenTelemetry's semantic conventions **v1.37.0** where they define an
//! instrument (`http.client.open_connections`, with `http.connection.state`; the attributes
//! `server.address`, `server.port`) — still experimental there, so they may be renamed; the
//! pool's own instruments mirror the conventions' database connection-pool family
//! (`db.client.connection.*`: wait time, timeouts, pending requests, max) under
//! `stanchion.pool.*`, since HTTP has none. Labels are bounded: an endpoint's address and port
//! on per-endpoint instruments only, and reasons from fixed lists.
//!
//! | instrument | kind | unit | labels | what |
//! |---|---|---|---|---|
//! | `http.client.open_connections` | gauge (up-down) | `{connection}` | `server.address`, `server.port`, `http.connection.state` (`active`, `idle`) | open connections, published every reaper tick (at most 1 s) |
//! | `stanchion.pool.connection.max` | gauge (up-down) | `{connection}` | `server.address`, `server.port` | the pools' `max_size` |
//! | `stanchion.pool.pending_requests` | gauge (up-down) | `{request}` | `server.address`, `server.port` | checkouts waiting for a connection, every tick |
//! | `stanchion.pool.connection.wait_time` | histogram | `s` | `server.address`, `server.port` | each successful checkout's wait (0 when a connection was free) |
//! | `stanchion.pool.connection.timeouts` | counter | `{timeout}` | `server.address`, `server.port` | checkouts that ended in `PoolTimeout` — normally zero |
//! | `stanchion.pool.connection.created` | counter | `{connection}` | `server.address`, `server.port` | connections opened (the creation rate) |
//! | `stanchion.pool.connection.closed` | counter | `{connection}` | `server.address`, `server.port`, `reason` (`idle`, `expired`, `broken`, `retired`) | connections closed, by why |
//! | `stanchion.pool.connect_failures` | counter | `{failure}` | `server.address`, `server.port` | connects that failed or timed out — normally zero |
//! | `stanchion.pool.resends` | counter | `{request}` | `server.address`, `server.port`, `reason` (`unsent`, `closed_before_response`) | requests the pool sent again on another connection |
//!
//! | `stanchion.retry.scheduled` | counter | `{retry}` | `route`, `kind` (`attempt`, `transparent`, `poll`) | retries a retry layer sent: attempts (each took a budget token), free resends of never-sent requests, polls of a keyed request still running |
//! | `stanchion.retry.stopped` | counter | `{call}` | `route`, `reason` ([`RetryStop::label`](crate::retry::RetryStop::label): `attempts_exhausted`, `budget_exhausted`, `not_safe_to_repeat`, `deadline_too_short`…) | calls that ended without success, by why retrying stopped — `budget_exhausted` is the retry budget's refusals |
//!
//! `route` is the client route's configured pattern (`/v1/payments`, `/pkg.Service/Method`), or
//! `default` — never a raw path.
//!
//! The gauges are up-down counts: each pool adds what it holds, changes it by the difference
//! each tick, and takes it away when dropped — pools that share an endpoint's labels (two
//! clients to one backend, a pool draining beside its replacement) add up. Utilisation, to alert
//! on above 0.8 for a minute, is `http.client.open_connections{http.connection.state="active"}`
//! over `stanchion.pool.connection.max`.
//!
//! `reason` for closed connections (the first reason the connection was retired for):
//! `idle` — unused past the idle timeout; `expired` — past its (jittered) lifetime; `broken` —
//! closed by the peer, failed, told to go away (GOAWAY), or given back broken; `retired` — served
//! `max_requests_per_connection`.

mod pool;
mod retry;

pub(crate) use self::pool::{Closed, PoolMetrics};
pub(crate) use self::retry::RetryMetrics;

/// `http.client.open_connections`.
pub const OPEN_CONNECTIONS: &str = "http.client.open_connections";
/// `stanchion.pool.connection.max`.
pub const POOL_MAX: &str = "stanchion.pool.connection.max";
/// `stanchion.pool.pending_requests`.
pub const POOL_PENDING: &str = "stanchion.pool.pending_requests";
/// `stanchion.pool.connection.wait_time`.
pub const POOL_WAIT_TIME: &str = "stanchion.pool.connection.wait_time";
/// `stanchion.pool.connection.timeouts`.
pub const POOL_TIMEOUTS: &str = "stanchion.pool.connection.timeouts";
/// `stanchion.pool.connection.created`.
pub const POOL_CREATED: &str = "stanchion.pool.connection.created";
/// `stanchion.pool.connection.closed`.
pub const POOL_CLOSED: &str = "stanchion.pool.connection.closed";
/// `stanchion.pool.connect_failures`.
pub const POOL_CONNECT_FAILURES: &str = "stanchion.pool.connect_failures";
/// `stanchion.pool.resends`.
pub const POOL_RESENDS: &str = "stanchion.pool.resends";

/// `stanchion.retry.scheduled`.
pub const RETRY_SCHEDULED: &str = "stanchion.retry.scheduled";
/// `stanchion.retry.stopped`.
pub const RETRY_STOPPED: &str = "stanchion.retry.stopped";

/// Registers every instrument's unit and description with the installed recorder (call it
/// once, after installing the recorder; exporters that print units or help text use them).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        OPEN_CONNECTIONS,
        Unit::Count,
        "Outbound HTTP connections a pool holds, active or idle."
    );
    describe_gauge!(
        POOL_MAX,
        Unit::Count,
        "The pool's maximum number of connections."
    );
    describe_gauge!(
        POOL_PENDING,
        Unit::Count,
        "Checkouts waiting for a connection."
    );
    describe_histogram!(
        POOL_WAIT_TIME,
        Unit::Seconds,
        "How long each successful checkout waited for a connection."
    );
    describe_counter!(
        POOL_TIMEOUTS,
        Unit::Count,
        "Checkouts that timed out (PoolTimeout)."
    );
    describe_counter!(POOL_CREATED, Unit::Count, "Connections opened.");
    describe_counter!(POOL_CLOSED, Unit::Count, "Connections closed, by reason.");
    describe_counter!(
        POOL_CONNECT_FAILURES,
        Unit::Count,
        "Connects that failed or timed out."
    );
    describe_counter!(
        RETRY_SCHEDULED,
        Unit::Count,
        "Retries sent, by kind (attempt, transparent resend, conflict poll)."
    );
    describe_counter!(
        RETRY_STOPPED,
        Unit::Count,
        "Calls that ended without success, by why retrying stopped."
    );
    describe_counter!(
        POOL_RESENDS,
        Unit::Count,
        "Requests the pool sent again on another connection, by reason."
    );
}
