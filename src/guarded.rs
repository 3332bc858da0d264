//! A response body that holds a guard — a bulkhead permit, a pool checkout — until the stream
//! ends: a call is not over, and the capacity it holds is not free, before its body is.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// What a guard learns from the body it rides on.
pub trait BodyGuard {
    /// The body reached its end (its last frame, or it was empty): the call is complete.
    fn body_ended(&mut self) {}
}

impl BodyGuard for crate::bulkhead::BulkheadPermit {}

pin_project! {
    /// A response body holding its call's guard (a [`BulkheadPermit`](crate::bulkhead::BulkheadPermit),
    /// a [`Checkout`](crate::pool::Checkout)) until the stream ends, fails or is dropped. The
    /// guard learns whether the body was read to its end: a pool connection given back before
    /// that is mid-exchange, and is closed.
    #[derive(Debug)]
    pub struct GuardedBody<B, G = crate::bulkhead::BulkheadPermit> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B: Body, G: BodyGuard> GuardedBody<B, G> {
    pub(crate) fn new(inner: B, mut guard: Option<G>) -> Self {
        if inner.is_end_stream()
            && let Some(guard) = guard.as_mut()
        {
            // Empty: the exchange is complete even if nobody reads the body.
            guard.body_ended();
        }
        GuardedBody { inner, guard }
    }
}

impl<B: Body, G: BodyGuard> Body for GuardedBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let over = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(frame)) => frame.is_trailers(),
        };
        if over {
            if let Some(mut guard) = this.guard.take()
                && !matches!(frame, Some(Err(_)))
            {
                guard.body_ended();
            }
        } else if this.inner.is_end_stream()
            && let Some(mut guard) = this.guard.take()
        {
            // The last frame: the caller may not poll again.
            guard.body_ended();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
