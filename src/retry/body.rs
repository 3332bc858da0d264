//! Request bodies that can be sent again: teed while they are sent, up to a limit.
//!
//! Why tee instead of buffering first: buffering a body before sending delays every request by the
//! time it takes to read the body, and needs memory for bodies that will never be retried. A
//! [`ReplayBody`] forwards each chunk as the transport reads it and keeps a copy, up to a limit
//! (default 64 KiB). A retry gets a fresh handle that replays the copied chunks, then goes on
//! reading the original body where the last attempt stopped. A body that outgrows the limit drops
//! its copy; from then on the request is committed and the retry layer will not repeat it
//! ([`RetryStop::BodyNotReplayable`](super::RetryStop::BodyNotReplayable)).
//!
//! Not the same mechanism as the idempotency server's body (`IdempotencyBody`), on purpose: that
//! one reads a body whole *before* anyone else sees it (a fingerprint needs every byte) and plays
//! it back to one reader. A replay body is read *while* it is sent, by several attempts that may
//! overlap (a retry can start while an earlier attempt still streams), so its copy is shared
//! between handles and grows only as far as the furthest reader.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use super::RetryBody;
use crate::error::BoxError;

/// The default replay limit: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// A request body that keeps a copy of what it sent, so a retry can send it again.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use stanchion::retry::{ReplayBody, RetryBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let first = ReplayBody::new(Full::new(Bytes::from("order #1")), 1024);
/// let second = first.try_clone_body().unwrap();
/// assert_eq!(first.collect().await.unwrap().to_bytes(), "order #1");
/// assert_eq!(second.collect().await.unwrap().to_bytes(), "order #1");
/// # }
/// ```
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// This handle's number among the copies (for the waiters' list).
    id: u64,
    /// Data chunks this handle has produced.
    position: usize,
    trailers_sent: bool,
    size_hint: SizeHint,
}

struct Shared<B> {
    /// The original body, until it ends.
    body: Option<B>,
    /// Every handle waiting at the frontier for the original body, woken together: the body
    /// keeps only the waker it was last polled with, and two attempts may read at once (a retry
    /// starting while an earlier attempt still streams). Made the first time a handle has to
    /// wait, so a body read at once pays nothing.
    waiting: Option<Arc<Waiters>>,
    /// Handles made so far (each copy gets the next number).
    handles: u64,
    /// Copies of the chunks read so far (emptied on overflow).
    chunks: Vec<Bytes>,
    /// Chunks read from the original so far.
    read: usize,
    copied: usize,
    limit: usize,
    /// The copy was dropped (over the limit) or the original failed: no full replay is possible.
    lost: bool,
    trailers: Option<HeaderMap>,
    ended: bool,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `limit` bytes for replays.
    pub fn new(body: B, limit: usize) -> Self {
        let size_hint = body.size_hint();
        // An empty body (a GET's) is over before it starts: say so, so the transport sends the
        // request head alone instead of polling for a body (on HTTP/1 that costs an extra write
        // cycle — about 10 µs per request on loopback, measured).
        let ended = body.is_end_stream();
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                body: (!ended).then_some(body),
                waiting: None,
                handles: 1,
                chunks: Vec::new(),
                read: 0,
                copied: 0,
                limit,
                lost: false,
                trailers: None,
                ended,
            })),
            id: 0,
            position: 0,
            trailers_sent: false,
            size_hint,
        }
    }
}

impl<B> ReplayBody<B> {
    fn lock(&self) -> MutexGuard<'_, Shared<B>> {
        // A panic while holding the lock leaves consistent data (every update is one assignment).
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<B> RetryBody for ReplayBody<B> {
    fn try_clone_body(&self) -> Option<Self> {
        let mut shared = self.lock();
        if shared.lost {
            return None;
        }
        let id = shared.handles;
        shared.handles += 1;
        drop(shared);
        Some(ReplayBody {
            shared: self.shared.clone(),
            id,
            position: 0,
            trailers_sent: false,
            size_hint: self.size_hint,
        })
    }

    fn is_replayable(&self) -> bool {
        !self.lock().lost
    }
}

/// The handles waiting for the original body to produce more, one entry each: a waker that wakes
/// them all.
#[derive(Default)]
struct Waiters(Mutex<Vec<(u64, Waker)>>);

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, Vec<(u64, Waker)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handle `id` waits, to be woken by `waker`.
    fn register(&self, id: u64, waker: &Waker) {
        let mut wakers = self.lock();
        match wakers.iter_mut().find(|(handle, _)| *handle == id) {
            Some((_, known)) if known.will_wake(waker) => {}
            Some((_, known)) => *known = waker.clone(),
            None => wakers.push((id, waker.clone())),
        }
    }

    fn wake_all(&self) {
        let wakers = std::mem::take(&mut *self.lock());
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// Handle `id` got what it waited for: it no longer waits; every other handle is woken
    /// (a task reading two copies is woken for the other).
    fn progressed(&self, id: u64) {
        let wakers = std::mem::take(&mut *self.lock());
        for (handle, waker) in wakers {
            if handle != id {
                waker.wake();
            }
        }
    }
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_all();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all();
    }
}

/// A replayed body could not produce its bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The original body failed.
    #[error("request body failed")]
    Body(#[source] BoxError),
    /// Chunks this handle still had to send were dropped from the replay buffer.
    #[error("request body cannot be replayed: it outgrew the replay buffer")]
    Lost,
}

/// A replayable body at the reqwest edge: requests stay `http::Request` through the stack and
/// become reqwest requests in [`ReqwestConnection`](crate::pool::ReqwestConnection).
#[cfg(feature = "reqwest")]
impl<B> From<ReplayBody<B>> for reqwest::Body
where
    B: Body + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn from(body: ReplayBody<B>) -> reqwest::Body {
        reqwest::Body::wrap(body)
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ReplayError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReplayError>>> {
        let this = self.get_mut();
        let shared = &mut *this.shared.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            // Behind the frontier: replay the copy.
            if this.position < shared.read {
                let Some(chunk) = shared.chunks.get(this.position).cloned() else {
                    return Poll::Ready(Some(Err(ReplayError::Lost)));
                };
                this.position += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if shared.ended {
                if !this.trailers_sent {
                    this.trailers_sent = true;
                    if let Some(trailers) = shared.trailers.clone() {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                }
                return Poll::Ready(None);
            }
            let Some(body) = shared.body.as_mut() else {
                // Not ended, and no body left to read: the original failed. A copy that reached
                // this point must not end as if complete (a truncated body sent as whole).
                return Poll::Ready(Some(Err(ReplayError::Lost)));
            };
            // Registered before the poll, so a wake between the poll and the registration is
            // not lost; the body is polled with a waker that wakes every waiting handle.
            let waiting = shared.waiting.get_or_insert_with(Arc::default).clone();
            waiting.register(this.id, cx.waker());
            let waker = Waker::from(waiting.clone());
            let polled = Pin::new(body).poll_frame(&mut Context::from_waker(&waker));
            if polled.is_ready() {
                // The frontier moves (or the body ends): every other handle that waited has
                // something to do — this task's too, if it reads another copy.
                waiting.progressed(this.id);
            }
            match ready!(polled) {
                None => {
                    shared.ended = true;
                    shared.body = None;
                }
                Some(Err(err)) => {
                    // Never polled again: every copy fails from here on.
                    shared.lost = true;
                    shared.body = None;
                    return Poll::Ready(Some(Err(ReplayError::Body(err.into()))));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        let chunk = data.copy_to_bytes(data.remaining());
                        shared.read += 1;
                        this.position += 1;
                        if !shared.lost {
                            if shared.copied + chunk.len() <= shared.limit {
                                shared.copied += chunk.len();
                                shared.chunks.push(chunk.clone());
                            } else {
                                tracing::debug!(
                                    limit = shared.limit,
                                    "request body outgrew the replay buffer; it will not be retried"
                                );
                                shared.lost = true;
                                shared.chunks = Vec::new();
                            }
                        }
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            shared.trailers = Some(trailers.clone());
                            shared.ended = true;
                            shared.body = None;
                            this.trailers_sent = true;
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        // A frame of a kind this body does not know: skip it.
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        shared.ended
            && self.position >= shared.read
            && (self.trailers_sent || shared.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.lock();
        f.debug_struct("ReplayBody")
            .field("position", &self.position)
            .field("copied", &shared.copied)
            .field("limit", &shared.limit)
            .field("replayable", &!shared.lost)
            .finish()
    }
}

/// Wraps request bodies in [`ReplayBody`] so the retry layer below can send them again.
///
/// ```
/// use stanchion::retry::ReplayBodyLayer;
///
/// let layer = ReplayBodyLayer::new(16 * 1024);
/// assert_eq!(ReplayBodyLayer::default().limit(), 64 * 1024);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ReplayBodyLayer {
    limit: usize,
}

impl ReplayBodyLayer {
    /// Keeps up to `limit` bytes of each body for replays.
    pub fn new(limit: usize) -> Self {
        ReplayBodyLayer { limit }
    }

    /// The replay limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// 64 KiB.
impl Default for ReplayBodyLayer {
    fn default() -> Self {
        ReplayBodyLayer::new(DEFAULT_REPLAY_LIMIT)
    }
}

impl<S> Layer<S> for ReplayBodyLayer {
    type Service = ReplayBodyService<S>;

    fn layer(&self, inner: S) -> ReplayBodyService<S> {
        ReplayBodyService {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`ReplayBodyLayer`].
#[derive(Debug, Clone)]
pub struct ReplayBodyService<S> {
    inner: S,
    limit: usize,
}

impl<S, B> Service<Request<B>> for ReplayBodyService<S>
where
    S: Service<Request<ReplayBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        let limit = self.limit;
        self.inner
            .call(req.map(|body| ReplayBody::new(body, limit)))
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
