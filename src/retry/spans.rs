//! The spans of a call, opened by the retry layer: one `stanchion.call` span per logical call
//! and a child `stanchion.attempt` span per request it sends (first attempt, retries,
//! transparent resends, conflict polls). Attempts are OpenTelemetry client spans (each is one
//! request on the wire); the call span is `internal`, so tools that count client spans count
//! requests sent, not requests twice. An attempt span opens when its request goes out, after
//! its backoff: its duration is the request's. The call span is current while the retry layer
//! decides, so its events ("retry scheduled", "retrying stopped") belong to it.
//!
//! The attempt span is entered while the layers below send the attempt, so whatever runs there
//! — the balancer, the pool, a propagator injecting `traceparent` (see
//! [`AttemptLayer::on_send`](crate::deadline::AttemptLayer::on_send)) — sees it as the current
//! span: each attempt carries its own trace context.
//!
//! With no subscriber, or one that filters INFO spans out, the call span is disabled and nothing
//! more happens: no attempt span, nothing allocated or recorded, one word in the call's future
//! (`tests/alloc.rs`; the cost is in docs/performance.md). With one, the spans live in a box of
//! their own, so the future stays small for everyone else.

use std::net::SocketAddr;

use tracing::Span;
use tracing::field::{Empty, display};

use crate::classify::Kind;
use crate::deadline::Deadline;

/// A call's span, its attempt in flight, and the requests sent so far.
#[derive(Debug)]
pub(crate) struct CallSpans {
    pub(super) call: Span,
    pub(super) attempt: Span,
    /// Requests sent, transparent resends and polls included.
    sent: u32,
    /// The kind of the request decided and not yet sent (it waits out its backoff).
    next: &'static str,
}

impl CallSpans {
    /// Opens the call's span and its first attempt's, if a subscriber wants them.
    pub(super) fn open(route: &str, deadline: Option<Deadline>) -> Option<Box<CallSpans>> {
        let call = tracing::info_span!(
            "stanchion.call",
            otel.kind = "internal",
            route,
            deadline_ms = Empty,
            attempts = Empty,
            outcome = Empty,
        );
        if call.is_disabled() {
            return None;
        }
        if let Some(deadline) = deadline {
            call.record("deadline_ms", deadline.remaining().as_millis() as u64);
        }
        let attempt = attempt(&call, 1, "first");
        Some(Box::new(CallSpans {
            call,
            attempt,
            sent: 1,
            next: "attempt",
        }))
    }

    /// Closes the attempt in flight with its outcome and endpoint.
    pub(super) fn attempt_done(&mut self, outcome: &'static str, endpoint: Option<SocketAddr>) {
        let span = std::mem::replace(&mut self.attempt, Span::none());
        attempt_done(span, outcome, endpoint);
    }

    /// The next request is decided, of `kind`; its span opens when it is sent.
    pub(super) fn next_attempt(&mut self, kind: &'static str) {
        self.next = kind;
    }

    /// The decided request goes out now: its attempt span opens.
    pub(super) fn sending(&mut self) {
        self.sent += 1;
        self.attempt = attempt(&self.call, self.sent, self.next);
    }

    /// Records the call's end.
    pub(super) fn call_done(&self, outcome: &'static str) {
        call_done(&self.call, self.sent, outcome);
    }
}

/// Opens attempt number `number` (1 for the first; resends count) of `kind` (`first`,
/// `attempt`, `transparent`, `poll`) under `call`. `http.request.resend_count` is set only on
/// resends, as OpenTelemetry's HTTP conventions ask.
fn attempt(call: &Span, number: u32, kind: &'static str) -> Span {
    let span = tracing::info_span!(
        parent: call,
        "stanchion.attempt",
        otel.kind = "client",
        attempt = number,
        kind,
        server.address = Empty,
        server.port = Empty,
        outcome = Empty,
        http.request.resend_count = Empty,
    );
    if number > 1 && !span.is_disabled() {
        span.record("http.request.resend_count", number - 1);
    }
    span
}

/// The `outcome` of an attempt or call: the class's label, or `streamed` when the verdict is in
/// the trailers (`settled` false).
pub(super) fn outcome_label(settled: bool, kind: Kind) -> &'static str {
    if settled { kind.label() } else { "streamed" }
}

/// Closes an attempt's span with its outcome and the endpoint that served it, if known.
fn attempt_done(span: Span, outcome: &'static str, endpoint: Option<SocketAddr>) {
    if span.is_disabled() {
        return;
    }
    span.record("outcome", outcome);
    if let Some(endpoint) = endpoint {
        span.record("server.address", display(endpoint.ip()));
        span.record("server.port", endpoint.port());
    }
}

/// Records the end of a call on its span: requests sent and the outcome.
fn call_done(span: &Span, sent: u32, outcome: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.record("attempts", sent);
    span.record("outcome", outcome);
}
