//! A tonic-generated client running on the stanchion stack.
//!
//! Starts three local gRPC servers of the `stanchion.test.Echo` service (generated from
//! `proto/echo.proto` with a vendored protoc), one of which answers every call UNAVAILABLE, and
//! calls them through `Client::grpc`: per-call round robin over the three, the failing one
//! ejected by its breaker, UNAVAILABLE retried on another server, a deadline per call written on
//! the wire as `grpc-timeout`, and a per-method policy that gives one method a tighter budget.
//!
//! ```text
//! cargo run --example tonic --features tonic
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stanchion::client::{Client, Route, RoutePolicy, Target};
use stanchion::pool::HttpConnector;
use stanchion_echo_proto::echo_client::EchoClient;
use stanchion_echo_proto::echo_server::{Echo, EchoServer};
use stanchion_echo_proto::{EchoReply, EchoRequest};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// One server: echoes, or fails every call with UNAVAILABLE; counts its calls and remembers the
/// last `grpc-timeout` it was given.
struct Server {
    failing: bool,
    calls: Arc<AtomicUsize>,
    last_timeout: Arc<std::sync::Mutex<Option<String>>>,
}

#[tonic::async_trait]
impl Echo for Server {
    async fn call(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *self.last_timeout.lock().unwrap_or_else(|e| e.into_inner()) = timeout;
        if self.failing {
            return Err(Status::unavailable("this instance is draining"));
        }
        let message = request.into_inner().message;
        if message == "slow" {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(Response::new(EchoReply { message }))
    }
}

struct Started {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    last_timeout: Arc<std::sync::Mutex<Option<String>>>,
}

async fn start(failing: bool) -> Result<Started, Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicUsize::new(0));
    let last_timeout = Arc::new(std::sync::Mutex::new(None));
    let service = EchoServer::new(Server {
        failing,
        calls: calls.clone(),
        last_timeout: last_timeout.clone(),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .serve_with_incoming(service, TcpIncoming::from(listener)),
    );
    Ok(Started {
        addr,
        calls,
        last_timeout,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let servers = [start(false).await?, start(true).await?, start(false).await?];
    for (i, s) in servers.iter().enumerate() {
        let role = if i == 1 {
            "fails every call (UNAVAILABLE)"
        } else {
            "healthy"
        };
        println!("server {i} at {}: {role}", s.addr);
    }

    // The whole stack in one expression: 2 s per call, 500 ms per attempt, and a tighter
    // budget for one method.
    let client = Client::grpc(Target::addrs(servers.iter().map(|s| s.addr)))
        .deadline(Duration::from_secs(2))
        .per_try_timeout(Duration::from_millis(500))
        .route(
            Route::grpc_method("stanchion.test.Echo", "Call"),
            RoutePolicy::new().deadline(Duration::from_millis(300)),
        )
        .build(HttpConnector::<tonic::body::Body>::http2())?;
    client.resolved().await;
    let mut echo = EchoClient::new(client.clone().into_tonic());

    let mut answered = 0;
    for i in 0..30 {
        let reply = echo
            .call(EchoRequest {
                message: format!("hello {i}"),
            })
            .await?;
        assert_eq!(reply.into_inner().message, format!("hello {i}"));
        answered += 1;
    }
    println!("\n{answered} of 30 calls answered");
    for (i, s) in servers.iter().enumerate() {
        println!("  server {i}: {} calls", s.calls.load(Ordering::Relaxed));
    }
    for endpoint in client.balancer().endpoints() {
        println!(
            "  endpoint {}: breaker {:?}, usable: {}",
            endpoint.addr, endpoint.state, endpoint.usable
        );
    }
    let timeout = servers[0]
        .last_timeout
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    println!(
        "grpc-timeout on the wire: {}",
        timeout.as_deref().unwrap_or("none")
    );

    // The method's route allows 300 ms; the server takes 500 ms.
    match echo
        .call(EchoRequest {
            message: "slow".into(),
        })
        .await
    {
        Ok(_) => println!("the slow call was answered (unexpected)"),
        Err(status) => println!("slow call: {:?} ({})", status.code(), status.message()),
    }
    Ok(())
}
