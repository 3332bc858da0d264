//! A retry layer's instruments, registered once per layer (per client route).

use metrics::{Counter, counter};

use super::{RETRY_SCHEDULED, RETRY_STOPPED};
use crate::retry::RetryStop;

/// The handles of one retry layer's instruments.
#[derive(Debug)]
pub(crate) struct RetryMetrics {
    /// By kind: attempt, transparent, poll.
    scheduled: [Counter; 3],
    /// By reason, in `RetryStop::index` order.
    stopped: Vec<Counter>,
}

impl RetryMetrics {
    /// Registers the instruments of the layer serving `route` (a configured pattern, or
    /// `default`).
    pub(crate) fn new(route: &str) -> RetryMetrics {
        let with = |key: &'static str, value: &'static str| {
            [("route", route.to_owned()), (key, value.to_owned())]
        };
        RetryMetrics {
            scheduled: ["attempt", "transparent", "poll"]
                .map(|kind| counter!(RETRY_SCHEDULED, &with("kind", kind))),
            stopped: crate::retry::STOP_LABELS
                .iter()
                .map(|reason| counter!(RETRY_STOPPED, &with("reason", reason)))
                .collect(),
        }
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
