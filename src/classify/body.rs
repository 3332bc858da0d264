//! The second phase, driven by the body: report an outcome when the response stream really ends.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::{Class, ClassifyEos, Verdict, classify_error};
use crate::error::BoxError;

pin_project! {
    /// A response body that reports the call's [`Class`] once, when the stream ends.
    ///
    /// Why at the end: a gRPC status usually arrives in the trailers, after the body, and a call
    /// is not over — for a breaker's slow-call timing, or a bulkhead's permit — until its body
    /// is. The body calls `on_end` exactly once:
    ///
    /// - at the end of the stream, with the head's verdict, or the trailers' when the head deferred
    ///   to them ([`Verdict::AtEndOfStream`]);
    /// - when the stream fails, with the class of the error (a failure);
    /// - when the body is dropped before its end: with the head's verdict if the head decided,
    ///   or `None` if only the trailers could have — the caller lost interest, which is not the
    ///   dependency's fault — unless a timer cut it (the call's deadline ran out while the body
    ///   was still coming): then as a timeout.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use stanchion::classify::{Classify, ClassifiedBody, HttpClassifier, Kind};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let res = http::Response::builder().status(503).body(Full::new(Bytes::from("busy"))).unwrap();
    /// let verdict = HttpClassifier::new().classify_response(&res);
    /// let seen = Arc::new(Mutex::new(None));
    /// let record = seen.clone();
    /// let res = res.map(|body| {
    ///     ClassifiedBody::new(body, verdict, move |class| *record.lock().unwrap() = class)
    /// });
    /// assert!(seen.lock().unwrap().is_none()); // not over yet
    /// res.into_body().collect().await.unwrap();
    /// assert_eq!(seen.lock().unwrap().unwrap().kind(), Kind::Unavailable);
    /// # }
    /// ```
    pub struct ClassifiedBody<B, E, F>
    where
        F: OnEnd,
    {
        #[pin]
        inner: B,
        state: Option<Pending<E, F>>,
    }

    impl<B, E, F> PinnedDrop for ClassifiedBody<B, E, F>
    where
        F: OnEnd,
    {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().state.take() {
                let class = if crate::deadline::cut::blames_endpoint() {
                    // Cut by a timer (the call's deadline) while the endpoint was still
                    // sending the body: the endpoint was too slow.
                    Some(Class::new(super::Kind::Timeout))
                } else {
                    match pending.verdict {
                        Verdict::Done(class) => Some(class),
                        Verdict::AtEndOfStream(_) => None,
                    }
                };
                pending.on_end.on_end(class);
            }
        }
    }
}

impl<B: std::fmt::Debug, E, F: OnEnd> std::fmt::Debug for ClassifiedBody<B, E, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClassifiedBody")
            .field("inner", &self.inner)
            .field("reported", &self.state.is_none())
            .finish()
    }
}

/// Receives a call's final class (`None`: cancelled before the outcome was known). Closures
/// `FnOnce(Option<Class>)` are `OnEnd`s.
pub trait OnEnd {
    /// Takes the final class.
    fn on_end(self, class: Option<Class>);
}

impl<F: FnOnce(Option<Class>)> OnEnd for F {
    fn on_end(self, class: Option<Class>) {
        self(class)
    }
}

/// What is still to be reported.
struct Pending<E, F> {
    verdict: Verdict<E>,
    on_end: F,
}

impl<B, E, F> ClassifiedBody<B, E, F>
where
    F: OnEnd,
{
    /// Wraps `body`, whose response head got `verdict`; `on_end` gets the final class.
    pub fn new(body: B, verdict: Verdict<E>, on_end: F) -> Self {
        ClassifiedBody {
            inner: body,
            state: Some(Pending { verdict, on_end }),
        }
    }
}

impl<B, E, F> ClassifiedBody<B, E, F>
where
    E: ClassifyEos<HeaderMap>,
    F: OnEnd,
{
    /// Reports the end once.
    fn finish(
        state: &mut Option<Pending<E, F>>,
        trailers: Option<&HeaderMap>,
        error: Option<&(dyn std::error::Error + 'static)>,
    ) {
        let Some(pending) = state.take() else { return };
        let class = match (error, pending.verdict) {
            (Some(err), Verdict::AtEndOfStream(eos)) => eos.classify_error(err),
            (Some(err), Verdict::Done(_)) => classify_error(err),
            (None, Verdict::Done(class)) => class,
            (None, Verdict::AtEndOfStream(eos)) => eos.classify_eos(trailers),
        };
        pending.on_end.on_end(Some(class));
    }
}

impl<B, E, F> Body for ClassifiedBody<B, E, F>
where
    B: Body,
    B::Error: Into<BoxError>,
    E: ClassifyEos<HeaderMap>,
    F: OnEnd,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            None => {
                Self::finish(this.state, None, None);
                Poll::Ready(None)
            }
            Some(Err(err)) => {
                let err = err.into();
                Self::finish(this.state, None, Some(err.as_ref()));
                Poll::Ready(Some(Err(err)))
            }
            Some(Ok(frame)) => {
                if let Some(trailers) = frame.trailers_ref() {
                    Self::finish(this.state, Some(trailers), None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::BodyExt;

    use super::*;
    use crate::classify::{Classify, GrpcClassifier, HttpClassifier, Kind};

    /// A body of prepared frames, optionally failing at the end.
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        fail: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(match self.frames.pop_front() {
                Some(frame) => Some(Ok(frame)),
                None if self.fail => {
                    self.fail = false;
                    Some(Err(std::io::ErrorKind::ConnectionReset.into()))
                }
                None => None,
            })
        }
    }

    fn grpc_body(status: Option<&str>, fail: bool) -> Frames {
        let mut frames = VecDeque::from([Frame::data(Bytes::from_static(b"\0\0\0\0\0"))]);
        if let Some(code) = status {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", code.parse().unwrap());
            frames.push_back(Frame::trailers(trailers));
        }
        Frames { frames, fail }
    }

    type Seen = Arc<Mutex<Vec<Option<Class>>>>;

    fn recorder() -> (Seen, impl FnOnce(Option<Class>) + Clone) {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        (seen, move |class| record.lock().unwrap().push(class))
    }

    fn grpc_head() -> http::Response<()> {
        http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    }

    #[tokio::test]
    async fn a_status_in_the_trailers_is_reported_at_the_end() {
        let (seen, record) = recorder();
        let verdict = GrpcClassifier::new().classify_response(&grpc_head());
        let body = ClassifiedBody::new(grpc_body(Some("14"), false), verdict, record);
        let collected = body.collect().await.unwrap();
        assert!(collected.trailers().is_some());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "reported exactly once");
        let class = seen[0].unwrap();
        assert_eq!(class.kind(), Kind::Unavailable);
        assert_eq!(
            class.grpc_code(),
            Some(crate::classify::GrpcCode::Unavailable)
        );
    }

    #[tokio::test]
    async fn a_stream_without_trailers_or_broken_is_a_failure() {
        let (seen, record) = recorder();
        let verdict = GrpcClassifier::new().classify_response(&grpc_head());
        let body = ClassifiedBody::new(grpc_body(None, false), verdict, record);
        body.collect().await.unwrap();
        assert_eq!(seen.lock().unwrap()[0].unwrap().kind(), Kind::ServerError);

        let (seen, record) = recorder();
        let head = http::Response::new(());
        let verdict = HttpClassifier::new().classify_response(&head);
        let body = ClassifiedBody::new(grpc_body(None, true), verdict, record);
        assert!(body.collect().await.is_err());
        let class = seen.lock().unwrap()[0].unwrap();
        assert_eq!(class.kind(), Kind::Transport);
        assert!(class.is_failure());
    }

    #[tokio::test]
    async fn a_dropped_body_reports_what_the_head_knew() {
        // The head decided (a 503): dropping the body early still reports it.
        let (seen, record) = recorder();
        let head = http::Response::builder().status(503).body(()).unwrap();
        let verdict = HttpClassifier::new().classify_response(&head);
        let mut body = ClassifiedBody::new(grpc_body(None, false), verdict, record);
        body.frame().await.unwrap().unwrap();
        assert!(
            seen.lock().unwrap().is_empty(),
            "not over while the body is read"
        );
        drop(body);
        assert_eq!(seen.lock().unwrap()[0].unwrap().kind(), Kind::Unavailable);

        // Only the trailers could decide: dropping early is a cancellation, reported as None.
        let (seen, record) = recorder();
        let verdict = GrpcClassifier::new().classify_response(&grpc_head());
        drop(ClassifiedBody::new(
            grpc_body(Some("14"), false),
            verdict,
            record,
        ));
        assert_eq!(*seen.lock().unwrap(), vec![None]);
    }
}
