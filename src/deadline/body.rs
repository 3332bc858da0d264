//! The deadline over the response body: a call is not over before its body is.
//!
//! The deadline layer's future ends when the response *head* arrives; a server can then stall
//! the body, or trickle it, and keep the caller reading past its budget. [`DeadlineBody`] bounds
//! the rest: a read that would wait past the deadline ends with
//! [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded) — the body's error type is
//! [`Error`], so a caller tells it from a transport error by matching — and the body below is
//! dropped at that moment, so the bulkhead permit, breaker probe slot and pool checkout it holds
//! are released then, not when the caller gets round to dropping the response. The drop is a
//! *cut*: the endpoint's breaker counts the stalled body as a timeout (subject to its floor), and
//! an HTTP/1 connection left mid-body is closed, never reused.
//!
//! Data already received is handed over even if the deadline has just passed; only a read that
//! has to wait is bounded. The timer is made the first time the body is pending (one small
//! allocation then), so a body read at once costs no timer.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};

use super::Deadline;
use crate::error::{BoxError, Error};

pin_project! {
    /// A response body bounded by the call's deadline (see the [module docs](self)).
    pub struct DeadlineBody<B> {
        #[pin]
        inner: Option<B>,
        at: Instant,
        budget: std::time::Duration,
        // Boxed: the body stays `Unpin` when its inner body is, and only a body that has to
        // wait pays for a timer.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> DeadlineBody<B> {
    /// `body`, which must end by `deadline`.
    pub fn new(body: B, deadline: Deadline) -> Self {
        DeadlineBody {
            inner: Some(body),
            at: deadline.instant(),
            budget: deadline.budget(),
            timer: None,
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for DeadlineBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineBody")
            .field("inner", &self.inner)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Error>>> {
        let mut this = self.project();
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            // Cut at the deadline: the error was returned; the stream is over.
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Error::from_inner)));
        }
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(sleep_until(*this.at)));
        ready!(timer.as_mut().poll(cx));
        // The deadline passed while the body was still coming: drop what is below now (its
        // permits and connection go back), as a cut the endpoint is blamed for.
        let mut inner = this.inner;
        super::cut::cutting(|| inner.set(None));
        tracing::debug!(budget = ?this.budget, "deadline exceeded while reading the body");
        Poll::Ready(Some(Err(Error::DeadlineExceeded {
            budget: *this.budget,
        })))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B> super::DeadlineResponse for http::Response<B> {
    type Output = http::Response<DeadlineBody<B>>;

    fn bound(self, deadline: Deadline) -> Self::Output {
        self.map(|body| DeadlineBody::new(body, deadline))
    }
}
