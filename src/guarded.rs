//! A response body that holds a guard — a bulkhead permit, a pool checkout — until the stream
//! ends: a call is not over, and the capacity it holds is not free, before its body is.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// A response body holding its call's guard (a [`BulkheadPermit`](crate::bulkhead::BulkheadPermit),
    /// a [`Checkout`](crate::pool::Checkout)) until the stream ends, fails or is dropped.
    #[derive(Debug)]
    pub struct GuardedBody<B, G = crate::bulkhead::BulkheadPermit> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> GuardedBody<B, G> {
    pub(crate) fn new(inner: B, guard: Option<G>) -> Self {
        GuardedBody { inner, guard }
    }
}

impl<B: Body, G> Body for GuardedBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let over = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(frame)) => frame.is_trailers(),
        };
        if over {
            this.guard.take();
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
