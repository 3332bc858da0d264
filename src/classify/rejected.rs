//! [`EndpointRejected`]: the endpoint proved unfit for the request before it was sent.

use crate::BoxError;
use crate::retry::ServedBy;

/// Marks an error that says the *endpoint* is unfit for the request, found before anything was
/// sent: its TLS certificate failed verification (untrusted, wrong name, expired), it refused
/// the handshake with a fatal alert (our client certificate), it shares no protocol with the
/// client (no `h2` by ALPN for a gRPC connector).
///
/// [`classify_error`](super::classify_error) finds it anywhere in the source chain and reports
/// a never-sent transport failure that [needs another endpoint](super::Class::needs_other_endpoint):
/// it counts against the endpoint (a certificate left wrong on one of three endpoints after a
/// rotation ejects that one), and the retry layer sends the request again only to a *different*
/// endpoint — with one endpoint, or none other usable, it is not retried at all (the same
/// endpoint would reject it again). Which endpoint it came from is told by the crate's balancer
/// (with `served_by` on, the default); with none (a bare pool, `served_by(false)`) it is never
/// retried. The crate's TLS connector wraps its certificate and alert failures in it; wrap yours
/// the same way.
#[derive(Debug, thiserror::Error)]
#[error("endpoint rejected")]
pub struct EndpointRejected {
    #[source]
    source: BoxError,
}

impl EndpointRejected {
    /// Wraps the error that shows the endpoint unfit.
    pub fn new(source: impl Into<BoxError>) -> Self {
        EndpointRejected {
            source: source.into(),
        }
    }
}

/// Put around an [`EndpointRejected`] error by a balancer: which endpoint it came from and how
/// many others were usable, for the retry layer's "only elsewhere".
#[derive(Debug, thiserror::Error)]
#[error("at endpoint {}", served_by.endpoint)]
pub(crate) struct RejectedAt {
    pub(crate) served_by: ServedBy,
    #[source]
    pub(crate) source: BoxError,
}

/// Whether `err` (or anything in its chain) is an [`EndpointRejected`].
pub(crate) fn rejects_endpoint(err: &(dyn std::error::Error + 'static)) -> bool {
    super::chain(err).any(|e| e.is::<EndpointRejected>())
}

/// The endpoint a balancer said an [`EndpointRejected`] came from.
pub(crate) fn rejected_at(err: &(dyn std::error::Error + 'static)) -> Option<ServedBy> {
    super::chain(err).find_map(|e| e.downcast_ref::<RejectedAt>().map(|r| r.served_by))
}
