//! What every test server shares: a loopback port, a fault plan, a recorder, and a task that
//! stops when the server is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::faults::{Fault, FaultPlan, Recorder};

/// The reason a request was not answered: hyper closes the HTTP/1 connection, or resets the
/// HTTP/2 stream, when the service fails.
#[derive(Debug)]
pub struct InjectedReset;

impl std::fmt::Display for InjectedReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected reset")
    }
}

impl std::error::Error for InjectedReset {}

/// A server's fault plan and what it recorded.
#[derive(Debug)]
pub struct ServerState {
    pub plan: FaultPlan,
    pub recorder: Recorder,
}

impl ServerState {
    /// Takes the next fault, reads and records the request as a real handler would, then plays
    /// the fault's latency, hang or reset. Returns the fault and the request body, to answer.
    pub async fn receive<B>(&self, req: http::Request<B>) -> Result<(Fault, Bytes), InjectedReset>
    where
        B: http_body::Body,
    {
        let fault = self.plan.next();
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        self.recorder.record(&parts, body.clone());
        if !fault.latency.is_zero() {
            tokio::time::sleep(fault.latency).await;
        }
        if fault.hang {
            std::future::pending::<Infallible>().await;
        }
        if fault.reset {
            return Err(InjectedReset);
        }
        Ok((fault, body))
    }
}

/// A server running on 127.0.0.1; it stops (connections included) when dropped.
pub struct Running {
    addr: SocketAddr,
    state: Arc<ServerState>,
    task: JoinHandle<()>,
}

impl Running {
    /// Binds an ephemeral loopback port and runs `serve` on it until dropped.
    pub async fn start<F, Fut>(plan: FaultPlan, serve: F) -> Running
    where
        F: FnOnce(TcpListener, Arc<ServerState>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        Running::serve(listener, plan, serve)
    }

    /// Runs `serve` on `listener` until dropped.
    pub fn serve<F, Fut>(listener: TcpListener, plan: FaultPlan, serve: F) -> Running
    where
        F: FnOnce(TcpListener, Arc<ServerState>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState {
            plan,
            recorder: Recorder::default(),
        });
        let task = tokio::spawn(serve(listener, state.clone()));
        Running { addr, state, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn recorder(&self) -> &Recorder {
        &self.state.recorder
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.state.recorder.count()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}
