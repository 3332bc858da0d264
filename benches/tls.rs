//! HTTP/1.1 over TLS on loopback: stanchion's pool with its rustls connector against hyper-util's
//! legacy `Client` with hyper-rustls, same rustls config (ring), same server, same run.
//!
//! - `handshake_and_first_request`: a fresh client per iteration — TCP connect, a full TLS 1.3
//!   handshake (resumption off), one request, its body read.
//! - `pooled_request`: one request on a warm, pooled TLS connection.
//!
//! Each on a two-worker and on a current-thread tokio runtime. The server is hyper HTTP/1 over
//! tokio-rustls in this process, with a certificate for
//! 127.0.0.1 made by rcgen at start-up; both clients verify it as an IP address (no SNI).
//! Results: `docs/performance.md`.

#[path = "common/loopback.rs"]
#[allow(dead_code)] // only its runtimes: the server here speaks TLS
mod loopback;

use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use stanchion::pool::{HttpConnector, Pool, PoolBuilder, Secured, TlsConfig};
use tower::ServiceExt;

type TlsPool = Pool<HttpConnector<Full<Bytes>, Secured>, SocketAddr>;
type RustlsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for 127.0.0.1, and a client config trusting it.
fn certificate() -> (
    CertificateDer<'static>,
    PrivateKeyDer<'static>,
    rustls::ClientConfig,
) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap().der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every fresh connection does a full handshake: no session resumption (a cloned config
    // shares its session cache, so one client's tickets would speed up the other's).
    client.resumption = rustls::client::Resumption::disabled();
    (cert, key, client)
}

/// Starts an HTTP/1.1-over-TLS server answering "ok" on the current runtime.
async fn start_tls_server(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
) -> SocketAddr {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

fn stanchion_pool(config: &rustls::ClientConfig, addr: SocketAddr) -> TlsPool {
    let tls = TlsConfig::from_client_config(config.clone());
    PoolBuilder::new()
        .build(HttpConnector::http1().tls(tls), addr)
        .unwrap()
}

fn rustls_client(config: &rustls::ClientConfig) -> RustlsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.clone())
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn via_pool(pool: TlsPool, uri: &str) {
    let req = Request::get(uri).body(Full::default()).unwrap();
    let res = pool.oneshot(req).await.unwrap();
    black_box(res.into_body().collect().await.unwrap());
}

async fn via_hyper_rustls(client: &RustlsClient, uri: &str) {
    let req = Request::get(uri).body(Full::default()).unwrap();
    let res = client.request(req).await.unwrap();
    black_box(res.into_body().collect().await.unwrap());
}

fn tls_http1(c: &mut Criterion) {
    for flavor in ["multi_thread", "current_thread"] {
        tls_http1_on(c, flavor);
    }
}

fn tls_http1_on(c: &mut Criterion, flavor: &str) {
    let (cert, key, config) = certificate();
    let rt = loopback::runtime(flavor);
    let addr = rt.block_on(start_tls_server(cert, key));
    let uri = format!("https://127.0.0.1:{}/", addr.port());

    let mut group = c.benchmark_group(format!("tls_handshake_and_first_request_{flavor}"));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("hyper_rustls_client", |b| {
        b.iter(|| {
            rt.block_on(async {
                let client = rustls_client(&config);
                via_hyper_rustls(&client, &uri).await;
            })
        })
    });
    group.bench_function("stanchion_pool", |b| {
        b.iter(|| {
            rt.block_on(async {
                let pool = stanchion_pool(&config, addr);
                via_pool(pool, &uri).await;
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group(format!("tls_pooled_request_{flavor}"));
    group.measurement_time(Duration::from_secs(5));
    let client = rustls_client(&config);
    group.bench_function("hyper_rustls_client", |b| {
        b.iter(|| rt.block_on(via_hyper_rustls(&client, &uri)))
    });
    let pool = rt.block_on(async { stanchion_pool(&config, addr) });
    group.bench_function("stanchion_pool", |b| {
        b.iter(|| rt.block_on(via_pool(pool.clone(), &uri)))
    });
    group.finish();
}

criterion_group!(benches, tls_http1);
criterion_main!(benches);
