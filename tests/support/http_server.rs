//! A hyper test server: HTTP/1 and HTTP/2 (prior knowledge) on one loopback port.
//!
//! It counts the TCP connections it accepts and holds open, and can close connections that sit
//! idle (HTTP/1: closed; HTTP/2: GOAWAY, then closed), as servers' keep-alive timeouts do.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::faults::FaultPlan;
use super::server::{InjectedReset, Running, ServerState};

/// A running hyper server; it stops (connections included) when dropped.
pub struct HttpServer {
    running: Running,
    connections: Arc<Connections>,
}

/// TCP connections seen by a server.
#[derive(Debug, Default)]
pub struct Connections {
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
}

impl HttpServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port.
    pub async fn start(plan: FaultPlan) -> HttpServer {
        HttpServer::start_with(plan, None).await
    }

    /// Starts a server that closes connections idle for `idle_close` (a server keep-alive
    /// timeout).
    pub async fn start_with(plan: FaultPlan, idle_close: Option<Duration>) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        HttpServer::serve(listener, plan, idle_close)
    }

    /// Two servers on the same port, one on 127.0.0.1 and one on ::1: two endpoints that DNS
    /// can tell apart with an A and an AAAA record.
    pub async fn start_pair(plans: [FaultPlan; 2]) -> [HttpServer; 2] {
        let [v4_plan, v6_plan] = plans;
        for _ in 0..50 {
            let v4 = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let port = v4.local_addr().unwrap().port();
            if let Ok(v6) = TcpListener::bind(("::1", port)).await {
                return [
                    HttpServer::serve(v4, v4_plan, None),
                    HttpServer::serve(v6, v6_plan, None),
                ];
            }
        }
        panic!("no port free on both 127.0.0.1 and ::1");
    }

    fn serve(listener: TcpListener, plan: FaultPlan, idle_close: Option<Duration>) -> HttpServer {
        let connections = Arc::new(Connections::default());
        let counted = connections.clone();
        let running = Running::serve(listener, plan, move |listener, state| {
            accept_loop(listener, state, counted, idle_close)
        });
        HttpServer {
            running,
            connections,
        }
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.connections.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open(&self) -> usize {
        self.connections.open.load(Ordering::SeqCst)
    }

    /// The most TCP connections open at once.
    pub fn max_open(&self) -> usize {
        self.connections.max_open.load(Ordering::SeqCst)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn uri(&self, path: &str) -> http::Uri {
        format!("http://{}{}", self.addr(), path).parse().unwrap()
    }
}

impl std::ops::Deref for HttpServer {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.running
    }
}

/// Requests in flight on one connection and when it was last busy.
struct Activity {
    in_flight: AtomicUsize,
    last: std::sync::Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        *self.last.lock().unwrap() = Instant::now();
    }
}

/// Decrements the open-connection gauge when a connection task ends (or is aborted).
struct OpenGuard(Arc<Connections>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<ServerState>,
    counted: Arc<Connections>,
    idle_close: Option<Duration>,
) {
    // Dropping the set (when the task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let conn_id = counted.accepted.fetch_add(1, Ordering::SeqCst);
        let open = counted.open.fetch_add(1, Ordering::SeqCst) + 1;
        counted.max_open.fetch_max(open, Ordering::SeqCst);
        let guard = OpenGuard(counted.clone());
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let _guard = guard;
            let activity = Arc::new(Activity {
                in_flight: AtomicUsize::new(0),
                last: std::sync::Mutex::new(Instant::now()),
            });
            let seen = activity.clone();
            let svc = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(super::faults::ConnId(conn_id));
                let state = state.clone();
                let seen = seen.clone();
                seen.in_flight.fetch_add(1, Ordering::SeqCst);
                async move {
                    let res = handle(state, req).await;
                    seen.touch();
                    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
                    res
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), svc));
            let Some(idle) = idle_close else {
                let _ = conn.await;
                return;
            };
            loop {
                let due = *activity.last.lock().unwrap() + idle;
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = tokio::time::sleep_until(due) => {
                        let quiet = *activity.last.lock().unwrap() + idle <= Instant::now();
                        let busy = activity.in_flight.load(Ordering::SeqCst) > 0;
                        if quiet && !busy {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                            return;
                        }
                        if busy {
                            // Idle time starts when the last request ends.
                            activity.touch();
                        }
                    }
                }
            }
        });
    }
}

/// A response body: whole, or a first chunk and then nothing, ever (a stalled body), or chunks
/// coming one at a time.
pub enum TestBody {
    Full(Full<Bytes>),
    Stalled {
        sent: bool,
    },
    Trickle {
        left: u32,
        every: Duration,
        wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    },
}

impl http_body::Body for TestBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            TestBody::Full(full) => std::pin::Pin::new(full).poll_frame(cx),
            TestBody::Stalled { sent } => {
                if std::mem::replace(sent, true) {
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                        b"partial",
                    )))))
                }
            }
            TestBody::Trickle { left, every, wait } => {
                if *left == 0 {
                    return std::task::Poll::Ready(None);
                }
                let sleep = wait.get_or_insert_with(|| Box::pin(tokio::time::sleep(*every)));
                std::task::ready!(sleep.as_mut().poll(cx));
                *wait = None;
                *left -= 1;
                std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
                    b"chunk",
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TestBody::Full(full) => full.is_end_stream(),
            TestBody::Stalled { .. } => false,
            TestBody::Trickle { left, .. } => *left == 0,
        }
    }
}

async fn handle(
    state: Arc<ServerState>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, InjectedReset> {
    let (fault, _) = state.receive(req).await?;
    let status = fault.status.unwrap_or(200);
    let mut res = Response::builder().status(status);
    if let Some(value) = &fault.retry_after {
        res = res.header(RETRY_AFTER, value.as_str());
    }
    if fault.stall_body {
        return Ok(res.body(TestBody::Stalled { sent: false }).unwrap());
    }
    if let Some((left, every)) = fault.trickle {
        return Ok(res
            .body(TestBody::Trickle {
                left,
                every,
                wait: None,
            })
            .unwrap());
    }
    let body = if status < 400 {
        "ok"
    } else {
        "injected failure"
    };
    Ok(res
        .body(TestBody::Full(Full::new(Bytes::from_static(
            body.as_bytes(),
        ))))
        .unwrap())
}
