//! A tonic gRPC test server with a hand-written service, so no `protoc` is needed.
//!
//! It serves `/stanchion.test.Echo/Call` (and answers any other path the same way): the reply
//! echoes the request's message. The gRPC status goes in the trailers, or in the headers of a
//! trailers-only response, as the fault says.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use prost::Message;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};

use super::faults::{Fault, FaultPlan};
use super::server::{InjectedReset, Running, ServerState};

/// The request and reply message, written by hand instead of generated.
#[derive(Clone, PartialEq, Message)]
pub struct Echo {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The method the helpers call.
pub const ECHO_PATH: &str = "/stanchion.test.Echo/Call";

/// A running tonic server; it stops when dropped.
pub struct GrpcServer(Running);

impl GrpcServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port.
    pub async fn start(plan: FaultPlan) -> GrpcServer {
        GrpcServer(
            Running::start(plan, |listener, state| async move {
                let _ = tonic::transport::Server::builder()
                    .serve_with_incoming(EchoService { state }, TcpIncoming::from(listener))
                    .await;
            })
            .await,
        )
    }

    /// A lazily connecting tonic channel to this server.
    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr()))
            .unwrap()
            .connect_lazy()
    }
}

impl std::ops::Deref for GrpcServer {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.0
    }
}

#[derive(Clone)]
struct EchoService {
    state: Arc<ServerState>,
}

impl tower::Service<Request<tonic::body::Body>> for EchoService {
    type Response = Response<FramesBody>;
    type Error = InjectedReset;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, InjectedReset>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InjectedReset>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let (fault, request) = state.receive(req).await?;
            let message = request
                .get(5..)
                .and_then(|m| Echo::decode(m).ok())
                .map(|e| e.message)
                .unwrap_or_default();
            Ok(respond(&fault, message))
        })
    }
}

fn respond(fault: &Fault, message: String) -> Response<FramesBody> {
    let mut res = Response::builder()
        .status(fault.status.unwrap_or(200))
        .header("content-type", "application/grpc");
    let code = fault.grpc_code.unwrap_or(0);
    let mut status = HeaderMap::new();
    status.insert("grpc-status", HeaderValue::from(code));
    if code != 0 {
        status.insert("grpc-message", HeaderValue::from_static("injected failure"));
    }
    if let Some(pushback) = &fault.pushback {
        status.insert("grpc-retry-pushback-ms", pushback.parse().unwrap());
    }
    if fault.status.is_some_and(|s| s != 200) && fault.grpc_code.is_none() {
        // Like a proxy's error: an HTTP status, no gRPC status, no body.
        return res.body(FramesBody::default()).unwrap();
    }
    if fault.grpc_in_headers {
        // Trailers-only: the status rides in the headers and there is no body.
        res.headers_mut().unwrap().extend(status);
        return res.body(FramesBody::default()).unwrap();
    }
    let mut frames = VecDeque::new();
    if code == 0 {
        frames.push_back(Frame::data(encode_frame(&Echo { message })));
    }
    if fault.reset_after_headers {
        return res
            .body(FramesBody {
                frames,
                fail_at_end: true,
                pause: None,
            })
            .unwrap();
    }
    frames.push_back(Frame::trailers(status));
    res.body(FramesBody::new(frames)).unwrap()
}

/// A gRPC length-prefixed message: a compression flag, a 4-byte length, the message.
pub fn encode_frame(message: &Echo) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap());
    message.encode(&mut buf).unwrap();
    buf.freeze()
}

/// A response body made of prepared frames (data, then trailers), yielded one at a time;
/// optionally failing 10 ms after them (the server then resets the stream, after the client
/// has had the headers).
#[derive(Default)]
pub struct FramesBody {
    frames: VecDeque<Frame<Bytes>>,
    fail_at_end: bool,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FramesBody {
    pub fn new(frames: impl IntoIterator<Item = Frame<Bytes>>) -> Self {
        FramesBody {
            frames: frames.into_iter().collect(),
            fail_at_end: false,
            pause: None,
        }
    }
}

impl http_body::Body for FramesBody {
    type Data = Bytes;
    type Error = InjectedReset;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InjectedReset>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if self.fail_at_end {
            let pause = self.pause.get_or_insert_with(|| {
                Box::pin(tokio::time::sleep(std::time::Duration::from_millis(10)))
            });
            std::task::ready!(pause.as_mut().poll(cx));
            self.fail_at_end = false;
            return Poll::Ready(Some(Err(InjectedReset)));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && !self.fail_at_end
    }
}

/// A raw gRPC request for `/stanchion.test.Echo/Call`, as tonic's client would build it.
pub fn raw_request(message: &str) -> Request<tonic::body::Body> {
    let body = http_body_util::Full::new(encode_frame(&Echo {
        message: message.to_owned(),
    }));
    Request::builder()
        .method("POST")
        .uri(ECHO_PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(body))
        .unwrap()
}

/// Calls Echo through any tonic transport (a `Channel`, or a stack around one).
pub async fn echo<S>(transport: S, message: &str) -> Result<tonic::Response<Echo>, tonic::Status>
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<stanchion::BoxError>,
    S::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<stanchion::BoxError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(transport);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::from_error(e.into()))?;
    grpc.unary(
        tonic::Request::new(Echo {
            message: message.to_owned(),
        }),
        http::uri::PathAndQuery::from_static(ECHO_PATH),
        tonic_prost::ProstCodec::default(),
    )
    .await
}
