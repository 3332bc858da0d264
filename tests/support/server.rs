//! What every test server shares: a loopback port, a fault plan, a recorder, and a task that
//! stops when the server is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::faults::{FaultPlan, Recorder};

/// A server's fault plan and what it recorded.
#[derive(Debug)]
pub struct ServerState {
    pub plan: FaultPlan,
    pub recorder: Recorder,
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
