//! A response future that may have been refused before it started.
//!
//! Several layers decide in `call` that a request will not go on — an open breaker, a full
//! bulkhead queue, an invalid idempotency key — and must still return their future type, since
//! a rejection is an error *from the response future*, never from `poll_ready` (tower's
//! `Buffer` treats a `poll_ready` error as permanent). [`Rejectable`] is that future once: the
//! layer's own future, or the error it settled on.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::error::{BoxError, Error};

pin_project! {
    /// A layer's response future, or the error it refused the call with.
    #[project = RejectableProj]
    pub(crate) enum Rejectable<F> {
        /// The call goes on.
        Running { #[pin] future: F },
        /// The call was refused; the error is handed out on the first poll.
        Rejected { error: Option<Error> },
    }
}

impl<F> Rejectable<F> {
    /// The call goes on with `future`.
    #[inline]
    pub(crate) fn running(future: F) -> Self {
        Rejectable::Running { future }
    }

    /// The call was refused with `error`.
    #[inline]
    pub(crate) fn rejected(error: Error) -> Self {
        Rejectable::Rejected { error: Some(error) }
    }
}

impl<F, T, E> Future for Rejectable<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RejectableProj::Running { future } => {
                Poll::Ready(ready!(future.poll(cx)).map_err(Error::from_inner))
            }
            RejectableProj::Rejected { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion")))
            }
        }
    }
}
