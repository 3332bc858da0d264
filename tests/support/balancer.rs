//! A minimal client-side balancer over a fixed list of loopback servers, with no breakers: the
//! retry tests count attempts, and ejection would change the counts.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use stanchion::BoxError;
use stanchion::classify::NeverSent;
use stanchion::retry::{AvoidEndpoint, ServedBy};

/// Round robin over `endpoints`, skipping the one a retry asks to avoid (unless it is the only
/// one).
pub struct TestBalancer<B> {
    client: Client<HttpConnector, B>,
    endpoints: Arc<Vec<SocketAddr>>,
    cursor: Arc<AtomicUsize>,
}

impl<B> Clone for TestBalancer<B> {
    fn clone(&self) -> Self {
        TestBalancer {
            client: self.client.clone(),
            endpoints: self.endpoints.clone(),
            cursor: self.cursor.clone(),
        }
    }
}

impl<B> TestBalancer<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub fn new(endpoints: Vec<SocketAddr>) -> Self {
        TestBalancer {
            client: Client::builder(TokioExecutor::new()).build_http(),
            endpoints: Arc::new(endpoints),
            cursor: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<B> tower::Service<Request<B>> for TestBalancer<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let avoid = req.extensions().get::<AvoidEndpoint>().map(|a| a.0);
        let n = self.endpoints.len();
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let endpoint = (0..n)
            .map(|k| self.endpoints[(start + k) % n])
            .find(|e| Some(*e) != avoid)
            .unwrap_or(self.endpoints[start % n]);
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        *req.uri_mut() = Uri::builder()
            .scheme("http")
            .authority(endpoint.to_string())
            .path_and_query(path)
            .build()
            .unwrap();
        let response = self.client.request(req);
        Box::pin(async move {
            match response.await {
                Ok(mut res) => {
                    res.extensions_mut().insert(ServedBy {
                        endpoint,
                        alternatives: n - 1,
                    });
                    Ok(res)
                }
                Err(err) if err.is_connect() => Err(NeverSent::new(err).into()),
                Err(err) => Err(err.into()),
            }
        })
    }
}
