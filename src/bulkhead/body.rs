//! A response body that holds the call's bulkhead permit until the stream ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::BulkheadPermit;

pin_project! {
    /// A response body holding its call's [`BulkheadPermit`] until the stream ends, fails or
    /// is dropped: a call is not over, and its capacity not free, before its body is.
    #[derive(Debug)]
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        permit: Option<BulkheadPermit>,
    }
}

impl<B> GuardedBody<B> {
    pub(crate) fn new(inner: B, permit: Option<BulkheadPermit>) -> Self {
        GuardedBody { inner, permit }
    }
}

impl<B: Body> Body for GuardedBody<B> {
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
            this.permit.take();
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
