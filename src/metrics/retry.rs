//! A retry layer's instruments, registered once per layer (per client route): the logical
//! calls and the attempts it saw, the retries it scheduled and why it stopped.

use metrics::{Counter, Histogram, counter, histogram};
use tokio::time::Instant;

use super::{
    ATTEMPTS, CALL_DURATION, CALLS, DEADLINE_EXCEEDED, DEADLINE_REMAINING, RETRY_SCHEDULED,
    RETRY_STOPPED,
};
use crate::classify::KIND_LABELS;
use crate::retry::RetryStop;

/// The `outcome` labels: every [`Kind`](crate::classify::Kind)'s, then `streamed` (the
/// response began and its verdict comes in the trailers, as a gRPC status usually does).
const OUTCOMES: usize = KIND_LABELS.len() + 1;

/// The label of outcome `index`.
fn outcome_label(index: usize) -> &'static str {
    KIND_LABELS.get(index).copied().unwrap_or("streamed")
}

/// When a logical call started (for `stanchion.client.call.duration`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallStart(Instant);

impl CallStart {
    pub(crate) fn now() -> CallStart {
        CallStart(Instant::now())
    }

    /// What was left of `deadline` at the start.
    pub(crate) fn remaining(&self, deadline: crate::deadline::Deadline) -> std::time::Duration {
        deadline.remaining_at(self.0)
    }
}

/// The handles of one retry layer's instruments.
#[derive(Debug)]
pub(crate) struct RetryMetrics {
    /// By kind: attempt, transparent, poll.
    scheduled: [Counter; 3],
    /// By reason, in `RetryStop::index` order.
    stopped: Vec<Counter>,
    /// Logical calls by outcome (`Kind::index` order, then `streamed`).
    calls: Vec<Counter>,
    /// Attempts by outcome, in the same order.
    attempts: Vec<Counter>,
    call_duration: Histogram,
    deadline_exceeded: Counter,
    deadline_remaining: Histogram,
}

impl RetryMetrics {
    /// Registers the instruments of the layer serving `route` (a configured pattern, or
    /// `default`) of the client named `client`.
    pub(crate) fn new(client: &str, route: &str) -> RetryMetrics {
        let with = |key: &'static str, value: &'static str| {
            [
                ("client", client.to_owned()),
                ("route", route.to_owned()),
                (key, value.to_owned()),
            ]
        };
        let only = || [("client", client.to_owned()), ("route", route.to_owned())];
        RetryMetrics {
            scheduled: ["attempt", "transparent", "poll"]
                .map(|kind| counter!(RETRY_SCHEDULED, &with("kind", kind))),
            stopped: crate::retry::STOP_LABELS
                .iter()
                .map(|reason| counter!(RETRY_STOPPED, &with("reason", reason)))
                .collect(),
            calls: (0..OUTCOMES)
                .map(|i| counter!(CALLS, &with("outcome", outcome_label(i))))
                .collect(),
            attempts: (0..OUTCOMES)
                .map(|i| counter!(ATTEMPTS, &with("outcome", outcome_label(i))))
                .collect(),
            call_duration: histogram!(CALL_DURATION, &only()),
            deadline_exceeded: counter!(DEADLINE_EXCEEDED, &only()),
            deadline_remaining: histogram!(DEADLINE_REMAINING, &only()),
        }
    }

    /// An attempt's outcome is known: `outcome` is a `Kind::index`, or `None` when the
    /// response began and its verdict is in the trailers.
    pub(crate) fn attempt(&self, outcome: Option<usize>) {
        self.attempts[outcome.unwrap_or(OUTCOMES - 1)].increment(1);
    }

    /// An attempt is about to be sent with `remaining` left of the call's deadline (only
    /// calls that carry one).
    pub(crate) fn sending(&self, remaining: Option<std::time::Duration>) {
        if let Some(remaining) = remaining {
            self.deadline_remaining.record(remaining.as_secs_f64());
        }
    }

    /// A call ended because its deadline ran out.
    pub(crate) fn deadline_exceeded(&self) {
        self.deadline_exceeded.increment(1);
    }

    /// A logical call ended (its response head, or its error, goes to the caller).
    pub(crate) fn call(&self, outcome: Option<usize>, started: CallStart) {
        self.calls[outcome.unwrap_or(OUTCOMES - 1)].increment(1);
        self.call_duration.record(started.0.elapsed().as_secs_f64());
    }

    /// A retry was scheduled: 0 an attempt, 1 a transparent resend, 2 a conflict poll.
    pub(crate) fn scheduled(&self, kind: usize) {
        self.scheduled[kind].increment(1);
    }

    /// A call ended without success, and this is why retrying stopped.
    pub(crate) fn stopped(&self, reason: &RetryStop) {
        self.stopped[reason.index()].increment(1);
    }
}
