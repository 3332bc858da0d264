//! A hyper test server: HTTP/1 and HTTP/2 (prior knowledge) on one loopback port.

use std::sync::Arc;

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

use super::faults::FaultPlan;
use super::server::{InjectedReset, Running, ServerState};

/// A running hyper server; it stops (connections included) when dropped.
pub struct HttpServer(Running);

impl HttpServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port.
    pub async fn start(plan: FaultPlan) -> HttpServer {
        HttpServer(Running::start(plan, accept_loop).await)
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn uri(&self, path: &str) -> http::Uri {
        format!("http://{}{}", self.addr(), path).parse().unwrap()
    }
}

impl std::ops::Deref for HttpServer {
    type Target = Running;

    fn deref(&self) -> &Running {
        &self.0
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<ServerState>) {
    // Dropping the set (when the task is aborted) aborts every connection.
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let state = state.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req| handle(state.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    state: Arc<ServerState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, InjectedReset> {
    let (fault, _) = state.receive(req).await?;
    let status = fault.status.unwrap_or(200);
    let mut res = Response::builder().status(status);
    if let Some(value) = &fault.retry_after {
        res = res.header(RETRY_AFTER, value.as_str());
    }
    let body = if status < 400 {
        "ok"
    } else {
        "injected failure"
    };
    Ok(res
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap())
}
