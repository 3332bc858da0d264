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
//! | `stanchion.retry.scheduled` | counter | `{retry}` | `client`, `route`, `kind` (`attempt`, `transparent`, `poll`) | retries a retry layer sent: attempts (each took a budget token), free resends of never-sent requests, polls of a keyed request still running |
//! | `stanchion.retry.stopped` | counter | `{call}` | `client`, `route`, `reason` ([`RetryStop::label`](crate::retry::RetryStop::label): `attempts_exhausted`, `budget_exhausted`, `not_safe_to_repeat`, `deadline_too_short`…) | calls that ended without success, by why retrying stopped — `budget_exhausted` is the retry budget's refusals |
//! | `stanchion.client.calls` | counter | `{call}` | `client`, `route`, `outcome` ([`Kind::label`](crate::classify::Kind::label), or `streamed`) | logical calls that passed the bulkhead, as their answer reached the caller (a bulkhead's refusals are `stanchion.bulkhead.rejected`): the class of the final response or error; `streamed` when the response began and its verdict is in the trailers (gRPC) |
//! | `stanchion.client.attempts` | counter | `{attempt}` | `client`, `route`, `outcome` (as above) | every response or error a retry layer saw: first attempts, retries, resends, polls |
//! | `stanchion.client.call.duration` | histogram | `s` | `client`, `route` | a logical call's time to its response head or final error, retries and backoff included |
//! | `stanchion.retry.budget.balance` | gauge (set) | `{retry}` | `budget` | retries the budget could grant, as of its last withdrawal |
//! | `stanchion.retry.budget.withdrawals` | counter | `{retry}` | `budget`, `result` (`granted`, `refused`) | retry tokens asked for |
//! | `stanchion.deadline.exceeded` | counter | `{call}` | `client`, `route` | calls that ended with `DeadlineExceeded` |
//! | `stanchion.deadline.remaining` | histogram | `s` | `client`, `route` | what was left of the call's deadline as each attempt was sent (calls that carry one) |
//! | `stanchion.breaker.state` | gauge (up-down) | `{breaker}` | `breaker`, `state` (`closed`, `open`, `half_open`, `forced_open`, `forced_closed`) | 1 per breaker in its current state |
//! | `stanchion.breaker.transitions` | counter | `{transition}` | `breaker`, `state` | state changes, by the state entered — `state="open"` on a balancer's breakers is an ejection |
//! | `stanchion.breaker.rejected` | counter | `{call}` | `breaker` | calls a breaker refused |
//! | `stanchion.balancer.panic` | counter | `{episode}` | `target` | panic-mode episodes (more endpoints ejected than allowed: calls go through open breakers) |
//! | `stanchion.resolver.resolutions` | counter | `{resolution}` | `target`, `result` (`ok`, `error`) | resolutions of the target |
//! | `stanchion.resolver.endpoints` | gauge (up-down) | `{endpoint}` | `target` | endpoints the balancer holds |
//! | `stanchion.resolver.stale` | counter | `{episode}` | `target` | episodes of failed resolution while the last known endpoints keep serving |
//! | `stanchion.resolver.given_up` | counter | `{episode}` | `target` | last known endpoints given up after the maximum staleness |
//! | `stanchion.bulkhead.in_flight` | gauge (up-down) | `{call}` | `partition` | calls admitted and not finished |
//! | `stanchion.bulkhead.queued` | gauge (up-down) | `{call}` | `partition` | calls waiting |
//! | `stanchion.bulkhead.limit` | gauge (up-down) | `{call}` | `partition` | the concurrency limit (the adaptive limit as it moves) |
//! | `stanchion.bulkhead.rejected` | counter | `{call}` | `partition`, `reason` (`full`, `timeout`) | calls refused: the queue was full, or the wait ran out |
//! | `stanchion.bulkhead.wait_time` | histogram | `s` | `partition` | how long queued calls waited before they were admitted |
//! | `stanchion.idempotency.requests` | counter | `{request}` | `outcome` (`claimed`, `replayed`, `in_flight`, `mismatch`, `missing_key`, `invalid_key`, `no_scope`, `body_too_large`, `body_unreadable`, `store_unavailable`) | keyed requests the idempotency server layer handled: claimed (the handler ran), replayed, or refused (409 while the first runs, 422 another request under the key, 400, 401, 413, 503 when the store failed the claim); requests passed through are not counted |
//! | `stanchion.idempotency.lease.renewals` | counter | `{renewal}` | — | lease renewals answered while handlers ran |
//! | `stanchion.idempotency.lease.slow_renewals` | counter | `{renewal}` | — | renewals still in flight when the lease's end passed — normally zero |
//! | `stanchion.idempotency.lease.lost` | counter | `{lease}` | — | leases lost while the handler ran (another request may have run the key) — normally zero |
//! | `stanchion.idempotency.store.errors` | counter | `{error}` | `operation` (`claim`, `renew`, `complete`, `release`) | store calls that failed — normally zero |
//!
//! `route` is the client route's configured pattern (`/v1/payments`, `/pkg.Service/Method`), or
//! `default` — never a raw path. `breaker` is the breaker's name: a balancer names each
//! endpoint's breaker after its address (`10.0.0.7:8080`). `target` is the resolver's name (the
//! DNS name; `unnamed` for a list of addresses). `partition` is a declared partition's name,
//! `default`, or `per_key` for all per-key partitions together (keys are never labels).
//! `budget` is [`RetryBudgetBuilder::name`](crate::retry::RetryBudgetBuilder::name).
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

mod balance;
mod breaker;
mod budget;
mod bulkhead;
mod idempotency;
mod pool;
mod retry;

pub(crate) use self::balance::BalancerMetrics;
pub(crate) use self::breaker::BreakerMetrics;
pub(crate) use self::budget::BudgetMetrics;
pub(crate) use self::bulkhead::{PER_KEY, PartitionMetrics};
pub use self::idempotency::{
    IDEMPOTENCY_LEASE_LOST, IDEMPOTENCY_LEASE_RENEWALS, IDEMPOTENCY_LEASE_SLOW_RENEWALS,
    IDEMPOTENCY_REQUESTS, IDEMPOTENCY_STORE_ERRORS,
};
#[cfg(feature = "http")]
pub(crate) use self::idempotency::{IdempotencyMetrics, IdempotencyOutcome, StoreOperation};
pub(crate) use self::pool::{Closed, PoolMetrics};
pub(crate) use self::retry::{CallStart, RetryMetrics};

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

/// `stanchion.client.calls`.
pub const CALLS: &str = "stanchion.client.calls";
/// `stanchion.client.attempts`.
pub const ATTEMPTS: &str = "stanchion.client.attempts";
/// `stanchion.client.call.duration`.
pub const CALL_DURATION: &str = "stanchion.client.call.duration";

/// `stanchion.retry.budget.balance`.
pub const BUDGET_BALANCE: &str = "stanchion.retry.budget.balance";
/// `stanchion.retry.budget.withdrawals`.
pub const BUDGET_WITHDRAWALS: &str = "stanchion.retry.budget.withdrawals";

/// `stanchion.deadline.exceeded`.
pub const DEADLINE_EXCEEDED: &str = "stanchion.deadline.exceeded";
/// `stanchion.deadline.remaining`.
pub const DEADLINE_REMAINING: &str = "stanchion.deadline.remaining";

/// `stanchion.breaker.state`.
pub const BREAKER_STATE: &str = "stanchion.breaker.state";
/// `stanchion.breaker.transitions`.
pub const BREAKER_TRANSITIONS: &str = "stanchion.breaker.transitions";
/// `stanchion.breaker.rejected`.
pub const BREAKER_REJECTED: &str = "stanchion.breaker.rejected";

/// `stanchion.bulkhead.in_flight`.
pub const BULKHEAD_IN_FLIGHT: &str = "stanchion.bulkhead.in_flight";
/// `stanchion.bulkhead.queued`.
pub const BULKHEAD_QUEUED: &str = "stanchion.bulkhead.queued";
/// `stanchion.bulkhead.limit`.
pub const BULKHEAD_LIMIT: &str = "stanchion.bulkhead.limit";
/// `stanchion.bulkhead.rejected`.
pub const BULKHEAD_REJECTED: &str = "stanchion.bulkhead.rejected";
/// `stanchion.bulkhead.wait_time`.
pub const BULKHEAD_WAIT_TIME: &str = "stanchion.bulkhead.wait_time";

/// `stanchion.resolver.resolutions`.
pub const RESOLVER_RESOLUTIONS: &str = "stanchion.resolver.resolutions";
/// `stanchion.resolver.endpoints`.
pub const RESOLVER_ENDPOINTS: &str = "stanchion.resolver.endpoints";
/// `stanchion.resolver.stale`.
pub const RESOLVER_STALE: &str = "stanchion.resolver.stale";
/// `stanchion.resolver.given_up`.
pub const RESOLVER_GIVEN_UP: &str = "stanchion.resolver.given_up";
/// `stanchion.balancer.panic`.
pub const BALANCER_PANIC: &str = "stanchion.balancer.panic";

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
    describe_counter!(CALLS, Unit::Count, "Logical calls, by route and outcome.");
    describe_counter!(
        ATTEMPTS,
        Unit::Count,
        "Attempts (requests sent, retries included), by route and outcome."
    );
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "How long logical calls took to their response head or final error, retries included."
    );
    describe_gauge!(
        BUDGET_BALANCE,
        Unit::Count,
        "Retries a retry budget could grant, as of its last withdrawal."
    );
    describe_counter!(
        BUDGET_WITHDRAWALS,
        Unit::Count,
        "Retry tokens asked of a retry budget, by result (granted, refused)."
    );
    describe_counter!(
        DEADLINE_EXCEEDED,
        Unit::Count,
        "Calls that ended because their deadline ran out, by route."
    );
    describe_histogram!(
        DEADLINE_REMAINING,
        Unit::Seconds,
        "What was left of the call's deadline as each attempt was sent, by route."
    );
    describe_gauge!(
        BREAKER_STATE,
        Unit::Count,
        "Circuit breakers in each state (1 per breaker, in its current state)."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        Unit::Count,
        "Circuit breaker state changes, by the state entered."
    );
    describe_counter!(
        BREAKER_REJECTED,
        Unit::Count,
        "Calls a circuit breaker refused (open, or half-open with its probes taken)."
    );
    describe_gauge!(
        BULKHEAD_IN_FLIGHT,
        Unit::Count,
        "Calls a bulkhead partition admitted that have not finished."
    );
    describe_gauge!(
        BULKHEAD_QUEUED,
        Unit::Count,
        "Calls waiting in a bulkhead partition's queue."
    );
    describe_gauge!(
        BULKHEAD_LIMIT,
        Unit::Count,
        "A bulkhead partition's concurrency limit (the adaptive limit's current value)."
    );
    describe_counter!(
        BULKHEAD_REJECTED,
        Unit::Count,
        "Calls a bulkhead refused, by reason (full, timeout)."
    );
    describe_histogram!(
        BULKHEAD_WAIT_TIME,
        Unit::Seconds,
        "How long queued calls waited before a bulkhead admitted them."
    );
    describe_counter!(
        RESOLVER_RESOLUTIONS,
        Unit::Count,
        "Resolutions of a target, by result (ok, error)."
    );
    describe_gauge!(
        RESOLVER_ENDPOINTS,
        Unit::Count,
        "Endpoints a balancer holds from its last resolution."
    );
    describe_counter!(
        RESOLVER_STALE,
        Unit::Count,
        "Episodes of resolution failing while the last known endpoints keep serving."
    );
    describe_counter!(
        RESOLVER_GIVEN_UP,
        Unit::Count,
        "Times the last known endpoints were given up after the maximum staleness."
    );
    describe_counter!(
        BALANCER_PANIC,
        Unit::Count,
        "Panic-mode episodes: too many endpoints ejected, calls go through open breakers."
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
    describe_counter!(
        IDEMPOTENCY_REQUESTS,
        Unit::Count,
        "Keyed requests the idempotency server layer claimed, replayed or refused, by outcome."
    );
    describe_counter!(
        IDEMPOTENCY_LEASE_RENEWALS,
        Unit::Count,
        "Idempotency lease renewals that came back (kept, lost or failed) while handlers ran."
    );
    describe_counter!(
        IDEMPOTENCY_LEASE_SLOW_RENEWALS,
        Unit::Count,
        "Idempotency lease renewals still in flight when the lease's end passed."
    );
    describe_counter!(
        IDEMPOTENCY_LEASE_LOST,
        Unit::Count,
        "Idempotency leases lost while the handler ran: another request may run the key."
    );
    describe_counter!(
        IDEMPOTENCY_STORE_ERRORS,
        Unit::Count,
        "Idempotency store calls that failed, by operation."
    );
}
