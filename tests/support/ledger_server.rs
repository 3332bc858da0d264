//! A hyper server whose handler makes "payments" behind stanchion's `IdempotencyLayer`, and
//! counts them: the side effect that must happen once per key.
//!
//! The handler reads the body, waits `x-work-ms` milliseconds (default 0), then records the
//! payment and answers `201` with `payment #N: BODY`. While `fail_next` is above zero it
//! answers `503` instead, before paying.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use stanchion::idempotency::{IdempotencyBody, IdempotencyLayer, IdempotencyStore};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower::{Layer, Service, ServiceExt};

/// What the handlers of one or more servers did.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Handlers started.
    pub started: AtomicUsize,
    /// Payments made (handlers that ran to the end).
    pub paid: AtomicUsize,
    /// Answer this many requests with 503 before paying.
    pub fail_next: AtomicUsize,
    /// The idempotency-key header of every request the handler saw.
    pub keys: Mutex<Vec<Option<String>>>,
}

impl Ledger {
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    pub fn paid(&self) -> usize {
        self.paid.load(Ordering::SeqCst)
    }
}

/// The handler, as a tower service.
pub fn handler<B>(
    ledger: Arc<Ledger>,
) -> impl Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
{
    tower::service_fn(move |req: Request<B>| {
        let ledger = ledger.clone();
        async move {
            ledger.started.fetch_add(1, Ordering::SeqCst);
            let key = req
                .headers()
                .get("idempotency-key")
                .map(|v| v.to_str().unwrap_or("?").to_owned());
            ledger.keys.lock().unwrap().push(key);
            // A handler's own answer other than 201 (e.g. 409 "already exists").
            let answer = req
                .headers()
                .get("x-answer-status")
                .and_then(|v| StatusCode::from_bytes(v.as_bytes()).ok());
            let work = req
                .headers()
                .get("x-work-ms")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map_or(Duration::ZERO, Duration::from_millis);
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let failing = ledger
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                let mut res = Response::new(Full::new(Bytes::from_static(b"try again")));
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                return Ok(res);
            }
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            if let Some(status) = answer {
                let mut res = Response::new(Full::new(Bytes::from_static(b"already exists")));
                *res.status_mut() = status;
                return Ok(res);
            }
            let n = ledger.paid.fetch_add(1, Ordering::SeqCst) + 1;
            let text = format!("payment #{n}: {}", String::from_utf8_lossy(&body));
            let mut res = Response::new(Full::new(Bytes::from(text)));
            *res.status_mut() = StatusCode::CREATED;
            res.headers_mut()
                .insert("x-payment", n.to_string().parse().unwrap());
            Ok(res)
        }
    })
}

/// A hyper server (HTTP/1 and HTTP/2) running `layer` around the ledger's handler.
pub struct LedgerServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl LedgerServer {
    pub async fn start<St: IdempotencyStore>(
        layer: IdempotencyLayer<St>,
        ledger: Arc<Ledger>,
    ) -> LedgerServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = layer.layer(handler::<IdempotencyBody<Incoming>>(ledger));
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let service = service.clone();
                connections.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        service.clone().oneshot(req)
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        LedgerServer { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn uri(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for LedgerServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tonic server with `layer` in front of a gRPC handler that counts its calls, works `work`,
/// and answers `paid #N: MESSAGE` with the status in the trailers.
pub async fn grpc_ledger<St: IdempotencyStore>(
    layer: IdempotencyLayer<St>,
    paid: Arc<AtomicUsize>,
    work: Duration,
) -> (SocketAddr, JoinHandle<()>) {
    use super::grpc_server::{Echo, FramesBody, encode_frame};
    use prost::Message;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = tower::service_fn(move |req: Request<IdempotencyBody<tonic::body::Body>>| {
        let paid = paid.clone();
        async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let asked = Echo::decode(&body[5..]).unwrap().message;
            tokio::time::sleep(work).await;
            let n = paid.fetch_add(1, Ordering::SeqCst) + 1;
            let reply = Echo {
                message: format!("paid #{n}: {asked}"),
            };
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let body = FramesBody::new([
                http_body::Frame::data(encode_frame(&reply)),
                http_body::Frame::trailers(trailers),
            ]);
            let res = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(body)
                .unwrap();
            Ok::<_, Infallible>(res)
        }
    });
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .layer(layer)
            .serve_with_incoming(
                handler,
                tonic::transport::server::TcpIncoming::from(listener),
            )
            .await;
    });
    (addr, task)
}
