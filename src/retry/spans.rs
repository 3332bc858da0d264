//! The spans of a call, opened by the retry layer: one `stanchion.call` span per logical call
//! and a child `stanchion.attempt` span per request it sends (first attempt, retries,
//! transparent resends, conflict polls), both of OpenTelemetry's client kind (`otel.kind`).
//!
//! The attempt span is entered while the layers below send the attempt, so whatever runs there
//! — the balancer, the pool, a propagator injecting `traceparent` (see
//! [`AttemptLayer::on_send`](crate::deadline::AttemptLayer::on_send)) — sees it as the current
//! span: each attempt carries its own trace context.
//!
//! With no subscriber, or one that filters INFO spans out, the spans are disabled: nothing is
//! allocated and nothing recorded (`tests/alloc.rs`; the cost is in docs/performance.md).

use std::net::SocketAddr;

use tracing::Span;
use tracing::field::{Empty, display};

use crate::classify::Kind;

/// Opens attempt number `number` (1 for the first; resends count) of `kind` (`first`,
/// `attempt`, `transparent`, `poll`) under `call`. `http.request.resend_count` is set only on
/// resends, as OpenTelemetry's HTTP conventions ask.
pub(super) fn attempt(call: &Span, number: u32, kind: &'static str) -> Span {
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
pub(super) fn attempt_done(span: Span, outcome: &'static str, endpoint: Option<SocketAddr>) {
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
pub(super) fn call_done(span: &Span, sent: u32, outcome: &'static str) {
    if span.is_disabled() {
        return;
    }
    span.record("attempts", sent);
    span.record("outcome", outcome);
}
