//! The server layer's body, for requests and responses alike: passed through untouched (no key
//! on the request), or read into memory up to a limit — to fingerprint a request, to store a
//! response — and then played back, followed by whatever part was not read.
//!
//! Not the retry layer's `ReplayBody`, on purpose: that one tees a body *while* it is sent, for
//! several attempts that may read it at once. This one reads up to its limit *before* anything
//! runs (a fingerprint, a stored response need every byte), then serves exactly one reader.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        // Passed through as the inner service or the client sent it.
        Passthrough {
            #[pin]
            body: B,
        },
        // Read into memory (a keyed request, a response to store, a replay, a rejection):
        // the chunks to play back, the error the body failed with after them, the unread
        // remainder of a body larger than the limit, and the trailers, played back last.
        Buffered {
            chunks: VecDeque<Bytes>,
            error: Option<BoxError>,
            rest: Option<Pin<Box<B>>>,
            trailers: Option<HeaderMap>,
        },
    }
}

pin_project! {
    /// A body the idempotency server layer passed through untouched, or read into memory (to
    /// fingerprint a request, to store a response) and plays back, followed by any unread rest.
    pub struct IdempotencyBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

impl<B> IdempotencyBody<B> {
    pub(crate) fn passthrough(body: B) -> Self {
        IdempotencyBody {
            inner: Inner::Passthrough { body },
        }
    }

    fn buffered(
        chunks: VecDeque<Bytes>,
        error: Option<BoxError>,
        rest: Option<Pin<Box<B>>>,
        trailers: Option<HeaderMap>,
    ) -> Self {
        IdempotencyBody {
            inner: Inner::Buffered {
                chunks,
                error,
                rest,
                trailers,
            },
        }
    }

    pub(crate) fn full(body: Bytes, trailers: Option<HeaderMap>) -> Self {
        let mut chunks = VecDeque::new();
        if !body.is_empty() {
            chunks.push_back(body);
        }
        IdempotencyBody::buffered(chunks, None, None, trailers)
    }

    pub(crate) fn empty() -> Self {
        IdempotencyBody::full(Bytes::new(), None)
    }
}

impl<B> std::fmt::Debug for IdempotencyBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Passthrough { .. } => f.write_str("IdempotencyBody::Passthrough"),
            Inner::Buffered { chunks, .. } => f
                .debug_struct("IdempotencyBody::Buffered")
                .field("chunks", &chunks.len())
                .finish_non_exhaustive(),
        }
    }
}

impl<B> Body for IdempotencyBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Passthrough { body } => body.poll_frame(cx).map_err(Into::into),
            InnerProj::Buffered {
                chunks,
                error,
                rest,
                trailers,
            } => {
                if let Some(chunk) = chunks.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if let Some(error) = error.take() {
                    return Poll::Ready(Some(Err(error)));
                }
                if let Some(body) = rest {
                    match ready!(body.as_mut().poll_frame(cx)) {
                        Some(frame) => return Poll::Ready(Some(frame.map_err(Into::into))),
                        None => *rest = None,
                    }
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Passthrough { body } => body.is_end_stream(),
            Inner::Buffered {
                chunks,
                error,
                rest,
                trailers,
            } => chunks.is_empty() && error.is_none() && rest.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Passthrough { body } => body.size_hint(),
            Inner::Buffered { chunks, rest, .. } => {
                let buffered: u64 = chunks.iter().map(|c| c.len() as u64).sum();
                match rest {
                    None => SizeHint::with_exact(buffered),
                    Some(rest) => {
                        let rest = rest.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(buffered + rest.lower());
                        if let Some(upper) = rest.upper() {
                            hint.set_upper(buffered + upper);
                        }
                        hint
                    }
                }
            }
        }
    }
}

/// A body read into memory, up to a limit.
pub(crate) enum Collected<B> {
    /// All of it.
    Complete {
        body: Bytes,
        trailers: Option<HeaderMap>,
    },
    /// More than the limit: what was read, and the rest still to stream.
    TooLarge {
        chunks: VecDeque<Bytes>,
        rest: Pin<Box<B>>,
    },
    /// The body failed after `chunks`.
    Failed {
        chunks: VecDeque<Bytes>,
        error: BoxError,
    },
}

impl<B> Collected<B> {
    /// The body again, as it was read (and the rest of it).
    pub(crate) fn into_body(self) -> IdempotencyBody<B> {
        match self {
            Collected::Complete { body, trailers } => IdempotencyBody::full(body, trailers),
            Collected::TooLarge { chunks, rest } => {
                IdempotencyBody::buffered(chunks, None, Some(rest), None)
            }
            Collected::Failed { chunks, error } => {
                IdempotencyBody::buffered(chunks, Some(error), None, None)
            }
        }
    }
}

/// Reads `body` into memory while it stays within `limit` bytes.
pub(crate) async fn collect<B>(body: B, limit: usize) -> Collected<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = Box::pin(body);
    let mut chunks = VecDeque::new();
    let mut read = 0usize;
    let mut trailers: Option<HeaderMap> = None;
    loop {
        if read > limit {
            return Collected::TooLarge { chunks, rest: body };
        }
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        match frame {
            None => break,
            Some(Err(error)) => {
                return Collected::Failed {
                    chunks,
                    error: error.into(),
                };
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    read = read.saturating_add(data.len());
                    if !data.is_empty() {
                        chunks.push_back(data);
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        match &mut trailers {
                            Some(held) => held.extend(t),
                            None => trailers = Some(t),
                        }
                    }
                }
            },
        }
    }
    let body = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop_front().unwrap_or_default(),
        _ => {
            let mut all = BytesMut::with_capacity(read);
            for chunk in chunks {
                all.extend_from_slice(&chunk);
            }
            all.freeze()
        }
    };
    Collected::Complete { body, trailers }
}
