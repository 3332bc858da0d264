//! The fault-injecting test servers do what their plans say.

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

async fn statuses(server: &HttpServer, n: usize) -> Vec<u16> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut out = Vec::new();
    for i in 0..n {
        let req = Request::get(server.uri(&format!("/{i}")))
            .header("idempotency-key", format!("\"k{i}\""))
            .body(Empty::new())
            .unwrap();
        out.push(client.clone().oneshot(req).await.unwrap().status().as_u16());
    }
    out
}

#[tokio::test]
async fn scripts_play_in_order_then_fall_back() {
    let plan = FaultPlan::always(Fault::status(500)).with_script([
        Fault::status(503),
        Fault::status(429),
        Fault::ok(),
    ]);
    let server = HttpServer::start(plan).await;
    assert_eq!(statuses(&server, 5).await, [503, 429, 200, 500, 500]);
    let recorded = server.recorder().requests();
    assert_eq!(recorded.len(), 5);
    assert_eq!(recorded[3].path, "/3");
    assert_eq!(recorded[3].header("idempotency-key"), Some("\"k3\""));
}

#[tokio::test]
async fn seeded_plans_repeat_and_follow_their_probability() {
    let run = |seed| async move {
        let server = HttpServer::start(FaultPlan::seeded(seed, 0.3, Fault::status(503))).await;
        statuses(&server, 200).await
    };
    let first = run(7).await;
    assert_eq!(first, run(7).await, "the same seed gives the same faults");
    assert_ne!(first, run(8).await, "another seed gives other faults");
    let failures = first.iter().filter(|s| **s == 503).count();
    // 200 draws at p = 0.3: mean 60, standard deviation 6.5; this seed is fixed.
    assert!((30..=90).contains(&failures), "{failures} failures");
    assert!(first.iter().all(|s| *s == 503 || *s == 200));
}
