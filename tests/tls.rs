//! TLS on the hyper path, against real TLS servers on 127.0.0.1 whose certificates are made
//! here with rcgen (a CA, leaves for names and IPs, an expired one, another CA's, client
//! certificates): ALPN, verification failures and what the client does with them, mTLS, the
//! name a connection is verified for, tonic and reqwest over TLS, and a connection over a
//! stream of the caller's own.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{RootCertStore, ServerConfig};
use stanchion::client::{Client, Target};
use stanchion::pool::{
    Handshake, HostNotServed, HttpConnection, HttpConnector, PoolBuilder, Secured,
    ServerNameMismatch, TlsConfig, TlsError, TlsErrorKind,
};
use stanchion::retry::Backoff;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

type Body = Full<Bytes>;

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der()).unwrap();
        roots
    }

    /// A leaf for DNS `names` and `ips`, valid now, or expired (2000–2001) if `expired`.
    fn leaf(&self, names: &[&str], ips: &[&str], expired: bool) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        for ip in ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone()],
            key: key.serialize_der(),
        }
    }
}

/// A certificate chain and its private key (PKCS#8).
#[derive(Clone)]
struct Leaf {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a TLS test server offers.
struct ServerSetup {
    leaf: Leaf,
    alpn: Vec<&'static [u8]>,
    /// Client certificates required, signed by this CA.
    client_ca: Option<RootCertStore>,
}

impl ServerSetup {
    fn new(leaf: Leaf) -> ServerSetup {
        ServerSetup {
            leaf,
            alpn: vec![b"h2", b"http/1.1"],
            client_ca: None,
        }
    }
}

/// A TLS server on 127.0.0.1 (HTTP/1.1 and HTTP/2 on one port, the protocol by ALPN or the
/// preface): counts TCP connections accepted and requests served; answers `ok <version>`, or
/// echoes a gRPC call.
struct TlsServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    hosts: Arc<Mutex<Vec<String>>>,
    /// The SNI of each handshake that completed (`None`: none sent).
    snis: Arc<Mutex<Vec<Option<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    async fn start(setup: ServerSetup) -> TlsServer {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match setup.client_ca {
            Some(roots) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(setup.leaf.chain.clone(), setup.leaf.key())
            .unwrap();
        config.alpn_protocols = setup.alpn.iter().map(|p| p.to_vec()).collect();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let hosts = Arc::new(Mutex::new(Vec::new()));
        let snis = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (accepted, requests, hosts) = (accepted.clone(), requests.clone(), hosts.clone());
            let snis = snis.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let acceptor = acceptor.clone();
                    let (requests, hosts) = (requests.clone(), hosts.clone());
                    let snis = snis.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let sni = tls.get_ref().1.server_name().map(str::to_owned);
                        snis.lock().unwrap().push(sni);
                        let service = hyper::service::service_fn(move |req| {
                            let (requests, hosts) = (requests.clone(), hosts.clone());
                            async move { answer(req, &requests, &hosts).await }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            })
        };
        TlsServer {
            addr,
            accepted,
            requests,
            hosts,
            snis,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    requests: &AtomicUsize,
    hosts: &Mutex<Vec<String>>,
) -> Result<Response<support::grpc_server::FramesBody>, std::convert::Infallible> {
    requests.fetch_add(1, Ordering::SeqCst);
    let host = req
        .uri()
        .host()
        .map(str::to_owned)
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    // `Host` carries the port (HTTP/1); `:authority`'s host does not (HTTP/2).
    let host = host.split(':').next().unwrap_or_default().to_owned();
    hosts.lock().unwrap().push(host);
    let version = req.version();
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if grpc {
        // Echo the request's frame back: EchoRequest and EchoReply are the same message.
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = support::grpc_server::FramesBody::new([
            http_body::Frame::data(body),
            http_body::Frame::trailers(trailers),
        ]);
        return Ok(Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .unwrap());
    }
    let text = if body.is_empty() {
        format!("ok {version:?}")
    } else {
        format!("ok {version:?}: {}", String::from_utf8_lossy(&body))
    };
    Ok(Response::new(support::grpc_server::FramesBody::new([
        http_body::Frame::data(Bytes::from(text)),
    ])))
}

/// Trusts `ca` and verifies connections for `localhost`.
fn localhost(ca: &Ca) -> TlsConfig {
    TlsConfig::with_roots(ca.roots())
        .server_name("localhost")
        .unwrap()
}

/// A client over `addrs` with a fast backoff, resolved.
async fn https_client(
    addrs: impl IntoIterator<Item = SocketAddr>,
    connector: HttpConnector<Body, Secured>,
) -> stanchion::client::HttpClient<Body, Secured> {
    let client = Client::http(Target::addrs(addrs))
        .backoff(fast())
        .build(connector)
        .unwrap();
    client.resolved().await;
    client
}

/// A pool over `server` with no configured server name (each connection verified for its
/// request's host), trusting `ca`.
fn named_pool(
    ca: &Ca,
    server: &TlsServer,
    pool: PoolBuilder,
    connector: HttpConnector<Full<Bytes>>,
) -> stanchion::pool::Pool<HttpConnector<Full<Bytes>, Secured>, SocketAddr> {
    pool.build(
        connector.tls(TlsConfig::with_roots(ca.roots())),
        server.addr,
    )
    .unwrap()
}

fn fast() -> Backoff {
    Backoff::new(Duration::from_millis(1), Duration::from_millis(5)).unwrap()
}

fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

async fn text(res: Response<impl http_body::Body<Error: std::fmt::Debug>>) -> String {
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// HTTP/1.1 and HTTP/2 by ALPN through the whole client (retries, deadline, pool): `auto()`
/// speaks what the server picks; `http1()` offers only HTTP/1.1; `http2()` only h2. Path-only
/// requests get the verified name as their authority, and `https` as their scheme.
#[tokio::test]
async fn https_through_the_client_speaks_the_protocol_alpn_picked() {
    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["localhost"], &[], false);
    let both = TlsServer::start(ServerSetup::new(leaf.clone())).await;
    let h1_only = TlsServer::start(ServerSetup {
        alpn: vec![b"http/1.1"],
        ..ServerSetup::new(leaf.clone())
    })
    .await;
    let tls = localhost(&ca);
    let cases = [
        (HttpConnector::<Body>::auto(), &both, "HTTP/2.0"),
        (HttpConnector::<Body>::auto(), &h1_only, "HTTP/1.1"),
        (HttpConnector::<Body>::http1(), &both, "HTTP/1.1"),
        (HttpConnector::<Body>::http2(), &both, "HTTP/2.0"),
    ];
    for (connector, server, expected) in cases {
        let version = connector.version();
        let client = Client::http(Target::addrs([server.addr]))
            .deadline(Duration::from_secs(5))
            .backoff(fast())
            .build(connector.tls(tls.clone()))
            .unwrap();
        client.resolved().await;
        let uri = format!("https://localhost:{}/v1/charges", server.addr.port());
        for _ in 0..3 {
            let res = client.clone().oneshot(get(&uri)).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(text(res).await, format!("ok {expected}"), "{version:?}");
        }
        // A path-only request: the verified name is its authority.
        let res = client.clone().oneshot(get("/health")).await.unwrap();
        assert_eq!(text(res).await, format!("ok {expected}"));
        assert_eq!(
            server.hosts.lock().unwrap().last().map(String::as_str),
            Some("localhost")
        );
    }
    // The pool kept its connections: one per client (four clients, two servers).
    assert_eq!(both.accepted() + h1_only.accepted(), 4);
}

/// Every way a server's certificate can fail: one handshake per endpoint (never retried on the
/// same endpoint, nothing sent), the kind in the error's message, rustls' error in its source.
#[tokio::test]
async fn a_certificate_failure_is_one_attempt_with_its_cause() {
    let ca = Ca::new("trusted CA");
    let other_ca = Ca::new("someone else's CA");
    let cases = [
        (
            "another CA",
            other_ca.leaf(&["localhost"], &[], false),
            TlsErrorKind::CertificateNotTrusted,
            "certificate not trusted",
        ),
        (
            "expired",
            ca.leaf(&["localhost"], &[], true),
            TlsErrorKind::CertificateExpired,
            "certificate expired",
        ),
        (
            "another name",
            ca.leaf(&["other.example"], &[], false),
            TlsErrorKind::CertificateWrongName,
            "certificate not valid for the server name",
        ),
    ];
    for (what, leaf, kind, message) in cases {
        let server = TlsServer::start(ServerSetup::new(leaf)).await;
        let client = https_client(
            [server.addr],
            HttpConnector::<Body>::auto().tls(localhost(&ca)),
        )
        .await;
        let uri = format!("https://localhost:{}/", server.addr.port());
        let err = client.oneshot(get(&uri)).await.unwrap_err();
        let report = err.report().to_string();
        assert!(
            report.contains(&format!("TLS: {message}")),
            "{what}: {report}"
        );
        let tls_error = support_chain(&err)
            .find_map(|e| e.downcast_ref::<TlsError>())
            .unwrap_or_else(|| panic!("{what}: no TlsError in {report}"));
        assert_eq!(tls_error.kind(), kind, "{what}");
        assert!(
            std::error::Error::source(tls_error)
                .is_some_and(|s| s.downcast_ref::<rustls::Error>().is_some()),
            "{what}: rustls' error is the source"
        );
        assert_eq!(server.accepted(), 1, "{what}: retried on the same endpoint");
        assert_eq!(server.requests(), 0, "{what}");
    }
}

fn support_chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// Without a configured server name, each connection is verified for the host of the request
/// it was made for — a DNS name sent as SNI, an IP literal verified against the IP SANs with no
/// SNI — and the pool keys connections by that name: requests for one host reuse its
/// connection, never another host's. With a server name, that name is verified and sent, and a
/// request for another host on its connections is refused before it is written, once, not
/// retried.
#[tokio::test]
async fn a_connection_is_used_only_for_the_name_it_was_verified_for() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(ServerSetup::new(ca.leaf(
        &["localhost", "api.test"],
        &["127.0.0.1"],
        false,
    )))
    .await;
    let port = server.addr.port();
    // No server name: the request's host.
    let pool = named_pool(&ca, &server, PoolBuilder::new(), HttpConnector::http1());
    for uri in [
        format!("https://127.0.0.1:{port}/"),
        format!("https://localhost:{port}/"),
        format!("https://127.0.0.1:{port}/"),
        format!("https://LOCALHOST.:{port}/"),
        "https://api.test/".to_owned(),
        format!("https://localhost:{port}/"),
    ] {
        let res = pool.clone().oneshot(get(&uri)).await.unwrap();
        assert_eq!(text(res).await, "ok HTTP/1.1", "{uri}");
    }
    assert_eq!(server.requests(), 6);
    // One connection per name, each reused for its own host only.
    assert_eq!(server.accepted(), 3);
    let mut snis = server.snis.lock().unwrap().clone();
    snis.sort();
    // An IP literal sends no SNI (RFC 6066 §3); names go as SNI.
    assert_eq!(
        snis,
        [
            None,
            Some("api.test".to_owned()),
            Some("localhost".to_owned())
        ]
    );
    // A host the certificate does not name fails that handshake, with the cause.
    let err = pool
        .clone()
        .oneshot(get(&format!("https://other.test:{port}/")))
        .await
        .unwrap_err();
    let kind = support_chain(&err).find_map(|e| e.downcast_ref::<TlsError>().map(TlsError::kind));
    assert_eq!(
        kind,
        Some(TlsErrorKind::CertificateWrongName),
        "{}",
        err.report()
    );
    // The other hosts' connections are untouched.
    let res = pool
        .clone()
        .oneshot(get(&format!("https://api.test:{port}/")))
        .await
        .unwrap();
    assert_eq!(text(res).await, "ok HTTP/1.1");
    assert_eq!(server.accepted(), 4, "api.test's connection was reused");

    // A pool of one connection, hosts alternating: an idle connection for another host is
    // closed to make room, and every call goes through.
    let small = named_pool(
        &ca,
        &server,
        PoolBuilder::new().max_size(1),
        HttpConnector::auto(),
    );
    let before = server.accepted();
    for uri in [
        "https://localhost/",
        "https://api.test/",
        "https://localhost/",
    ] {
        let res = small.clone().oneshot(get(uri)).await.unwrap();
        assert_eq!(text(res).await, "ok HTTP/2.0", "{uri}");
    }
    assert_eq!(server.accepted() - before, 3);
    assert!(small.stats().open <= 1, "{:?}", small.stats());

    // Through the client: refused once, not retried, neither a failure nor a success.
    let client = https_client(
        [server.addr],
        HttpConnector::<Body>::auto().tls(localhost(&ca)),
    )
    .await;
    client
        .clone()
        .oneshot(get(&format!("https://LOCALHOST.:{port}/")))
        .await
        .expect("names compare without case or a trailing dot");
    let before = server.requests();
    let err = client
        .oneshot(get(&format!("https://api.example:{port}/")))
        .await
        .unwrap_err();
    assert!(
        err.report().to_string().contains("verified for"),
        "{}",
        err.report()
    );
    assert_eq!(server.requests(), before);
    // Verified for the name: the name is the SNI.
    assert_eq!(
        server.snis.lock().unwrap().last(),
        Some(&Some("localhost".to_owned()))
    );
    // Nothing in this test binary installed a process-wide crypto provider.
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
}

/// Mutual TLS: a client certificate from the CA the server trusts is accepted; without one, the
/// server's fatal alert fails the call once, naming the refusal.
#[tokio::test]
async fn mutual_tls_accepted_and_refused() {
    for connector in [
        HttpConnector::<Body>::auto(),
        HttpConnector::<Body>::http1(),
    ] {
        mutual_tls(connector).await;
    }
}

async fn mutual_tls(connector: HttpConnector<Body>) {
    let version = connector.version();
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = TlsServer::start(ServerSetup {
        client_ca: Some(client_ca.roots()),
        ..ServerSetup::new(ca.leaf(&["localhost"], &[], false))
    })
    .await;
    let uri = format!("https://localhost:{}/", server.addr.port());
    let client_cert = client_ca.leaf(&["client.example"], &[], false);
    let with_cert =
        TlsConfig::with_client_auth(ca.roots(), client_cert.chain.clone(), client_cert.key())
            .unwrap()
            .server_name("localhost")
            .unwrap();
    let client = https_client([server.addr], connector.clone().tls(with_cert)).await;
    let res = client.oneshot(get(&uri)).await.unwrap();
    assert_eq!(res.status(), 200, "{version:?}");

    let accepted = server.accepted();
    let client = https_client([server.addr], connector.tls(localhost(&ca))).await;
    let err = client.oneshot(get(&uri)).await.unwrap_err();
    let report = err.report().to_string();
    // TLS 1.3: the client learns of the refusal from the first send after its side of the
    // handshake; the alert is one only a handshake sends, so nothing was accepted: one
    // connection, not retried on the same endpoint, the refusal named.
    assert!(
        report.contains("TLS: the server refused the handshake"),
        "{version:?}: {report}"
    );
    assert_eq!(
        server.requests(),
        1,
        "{version:?}: only the call with a certificate was served"
    );
    assert_eq!(server.accepted() - accepted, 1, "{version:?}: {report}");
}

/// A certificate left wrong on one of three endpoints after a rotation: every call succeeds on
/// the others (each rejection is retried elsewhere at once), and the bad endpoint is ejected —
/// it sees a few handshakes, not a third of the calls.
#[tokio::test]
async fn a_bad_certificate_on_one_endpoint_is_retried_elsewhere_and_ejected() {
    let ca = Ca::new("trusted CA");
    let stale = Ca::new("the old CA");
    let good = ca.leaf(&["localhost"], &[], false);
    let servers = [
        TlsServer::start(ServerSetup::new(good.clone())).await,
        TlsServer::start(ServerSetup::new(stale.leaf(&["localhost"], &[], false))).await,
        TlsServer::start(ServerSetup::new(good)).await,
    ];
    let client = https_client(
        servers.iter().map(|s| s.addr),
        HttpConnector::<Body>::http1().tls(localhost(&ca)),
    )
    .await;
    for i in 0..60 {
        let uri = "/v1/charges";
        let res = client
            .clone()
            .oneshot(get(uri))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {}", e.report()));
        assert_eq!(res.status(), 200);
    }
    assert_eq!(servers[1].requests(), 0);
    assert!(
        servers[1].accepted() <= 5,
        "the endpoint with the bad certificate was not ejected: {} handshakes",
        servers[1].accepted()
    );
    assert_eq!(servers[0].requests() + servers[2].requests(), 60);
}

/// A server that accepts TCP but never answers the handshake: the handshake timeout ends the
/// connect, as a connect failure (never sent, a timeout), well before the checkout timeout.
#[tokio::test(start_paused = true)]
async fn a_stalled_handshake_times_out_as_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let ca = Ca::new("test CA");
    let tls = localhost(&ca).handshake_timeout(Duration::from_millis(300));
    let pool = PoolBuilder::new()
        .checkout_timeout(Duration::from_secs(5))
        .build(HttpConnector::<Full<Bytes>>::http1().tls(tls), addr)
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = pool
        .oneshot(get(&format!("https://localhost:{}/", addr.port())))
        .await
        .unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(1),
        "{took:?}"
    );
    let class = stanchion::classify::classify_error(&err);
    assert!(class.is_never_sent(), "{}", err.report());
    assert_eq!(class.kind(), stanchion::classify::Kind::Timeout);
    assert!(
        err.report()
            .to_string()
            .contains("TLS: handshake timed out"),
        "{}",
        err.report()
    );

    // A call whose deadline is shorter than the handshake timeout: the deadline cuts the
    // handshake (it is part of the checkout), and the call ends at its deadline.
    let client = Client::http(Target::addrs([addr]))
        .deadline(Duration::from_millis(120))
        .build(HttpConnector::<Full<Bytes>>::http1().tls(localhost(&ca)))
        .unwrap();
    client.resolved().await;
    let start = tokio::time::Instant::now();
    let err = client
        .oneshot(get(&format!("https://localhost:{}/", addr.port())))
        .await
        .unwrap_err();
    assert!(
        matches!(err, stanchion::Error::DeadlineExceeded { .. }),
        "{}",
        err.report()
    );
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    hold.abort();
}

/// gRPC over TLS through `Client::grpc`: h2 by ALPN; a server that does not pick h2 fails the
/// call clearly, once.
#[tokio::test]
async fn grpc_over_tls_needs_h2_by_alpn() {
    use stanchion_echo_proto::EchoRequest;
    use stanchion_echo_proto::echo_client::EchoClient;

    let ca = Ca::new("test CA");
    let leaf = ca.leaf(&["localhost"], &[], false);
    let server = TlsServer::start(ServerSetup::new(leaf.clone())).await;
    let tls = localhost(&ca);
    let client = Client::grpc(Target::addrs([server.addr]))
        .build(HttpConnector::<tonic::body::Body>::http2().tls(tls.clone()))
        .unwrap();
    client.resolved().await;
    let reply = EchoClient::new(client.into_tonic())
        .call(EchoRequest {
            message: "over tls".into(),
        })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().message, "over tls");

    let h1_only = TlsServer::start(ServerSetup {
        alpn: vec![b"http/1.1"],
        ..ServerSetup::new(leaf)
    })
    .await;
    let client = Client::grpc(Target::addrs([h1_only.addr]))
        .build(HttpConnector::<tonic::body::Body>::http2().tls(tls))
        .unwrap();
    client.resolved().await;
    let status = EchoClient::new(client.into_tonic())
        .call(EchoRequest {
            message: "over tls".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(h1_only.accepted(), 1, "retried on the same endpoint");
    assert_eq!(h1_only.requests(), 0);
}

/// reqwest over TLS through `ReqwestConnector`, its rustls config built with an explicit
/// provider (no process-wide default is installed anywhere in this test binary).
#[tokio::test]
async fn reqwest_over_tls_through_the_connector() {
    use stanchion::pool::ReqwestConnector;

    let ca = Ca::new("test CA");
    let server = TlsServer::start(ServerSetup::new(ca.leaf(&["localhost"], &[], false))).await;
    let roots = ca.roots();
    let connector = ReqwestConnector::new("localhost")
        .configure(move || support::reqwest_builder_trusting(roots.clone()));
    let pool = PoolBuilder::new().build(connector, server.addr).unwrap();
    let uri = format!("https://localhost:{}/", server.addr.port());
    let req = Request::get(&uri).body(String::new()).unwrap();
    let res = pool.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.requests(), 1);
}

/// A connection over a stream of the caller's own (here an in-memory pipe to a hyper server),
/// declared secured: it carries https requests through a pool's connection type.
#[tokio::test]
async fn a_connection_over_any_stream() {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let requests = Arc::new(AtomicUsize::new(0));
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let served = {
        let (requests, hosts) = (requests.clone(), hosts.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (requests, hosts) = (requests.clone(), hosts.clone());
                async move { answer(req, &requests, &hosts).await }
            });
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server_io), service)
                .await
        })
    };
    let mut conn: HttpConnection<Full<Bytes>, Secured> = Handshake::http2()
        .authority("pipe.example".parse().unwrap())
        .secure(Some("pipe.example"))
        .handshake(client_io)
        .await
        .unwrap();
    let res = conn
        .ready()
        .await
        .unwrap()
        .call(get("/over-a-pipe"))
        .await
        .unwrap();
    assert_eq!(text(res).await, "ok HTTP/2.0");
    assert_eq!(hosts.lock().unwrap().as_slice(), ["pipe.example"]);
    drop(conn);
    let _ = served.await;
}

/// reqwest with `rustls-no-provider` and no process-wide provider panics in `build()`; the
/// connector turns that into a configuration error that ends the call, and says what to do.
#[tokio::test]
async fn a_reqwest_client_without_a_provider_is_a_configuration_error_not_a_panic() {
    use stanchion::pool::ReqwestConnector;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pool = PoolBuilder::new()
        .build(ReqwestConnector::new("localhost"), addr)
        .unwrap();
    let req = Request::get(format!("http://localhost:{}/", addr.port()))
        .body(String::new())
        .unwrap();
    let err = pool.oneshot(req).await.unwrap_err();
    let report = err.report().to_string();
    assert!(
        support_chain(&err).any(|e| matches!(
            e.downcast_ref::<stanchion::Error>(),
            Some(stanchion::Error::Config(_))
        )),
        "{report}"
    );
    assert!(report.contains("tls_backend_preconfigured"), "{report}");
}

/// Every host a request names must be the verified one: a `Host` header that disagrees with
/// the URI, or one that cannot be read, is refused before it is written (HTTP/1 sends `Host`).
#[tokio::test]
async fn a_host_header_naming_another_host_is_refused() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(ServerSetup::new(ca.leaf(&["localhost"], &[], false))).await;
    let tls = localhost(&ca);
    let pool = PoolBuilder::new()
        .build(HttpConnector::<Full<Bytes>>::http1().tls(tls), server.addr)
        .unwrap();
    let uri = format!("https://localhost:{}/", server.addr.port());
    let with_host = |host: http::HeaderValue| {
        let mut req = get(&uri);
        req.headers_mut().insert("host", host);
        req
    };
    let ok = pool
        .clone()
        .oneshot(with_host("localhost:1".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for host in [
        http::HeaderValue::from_static("other.example"),
        http::HeaderValue::from_bytes(b"\xfflocalhost").unwrap(),
        http::HeaderValue::from_static("[::1]:443"),
    ] {
        let err = pool
            .clone()
            .oneshot(with_host(host.clone()))
            .await
            .unwrap_err();
        assert!(
            support_chain(&err).any(|e| e.is::<ServerNameMismatch>()),
            "{host:?}: {}",
            err.report()
        );
    }
    assert_eq!(server.requests(), 1);
}

/// Two of three endpoints left with an old certificate: a call never goes back to an endpoint
/// that rejected it (not A → B → A), so every call reaches the good one, and each bad endpoint
/// sees at most one handshake per call until the breakers eject them.
#[tokio::test]
async fn a_call_never_returns_to_an_endpoint_that_rejected_it() {
    let ca = Ca::new("trusted CA");
    let stale = Ca::new("the old CA");
    let servers = [
        TlsServer::start(ServerSetup::new(stale.leaf(&["localhost"], &[], false))).await,
        TlsServer::start(ServerSetup::new(stale.leaf(&["localhost"], &[], false))).await,
        TlsServer::start(ServerSetup::new(ca.leaf(&["localhost"], &[], false))).await,
    ];
    let client = https_client(
        servers.iter().map(|s| s.addr),
        HttpConnector::<Body>::http1().tls(localhost(&ca)),
    )
    .await;
    for i in 0..30 {
        let before = [servers[0].accepted(), servers[1].accepted()];
        let res = client
            .clone()
            .oneshot(get("/v1/charges"))
            .await
            .unwrap_or_else(|e| panic!("call {i}: {}", e.report()));
        assert_eq!(res.status(), 200);
        for (bad, before) in before.into_iter().enumerate() {
            assert!(
                servers[bad].accepted() - before <= 1,
                "call {i} went back to bad endpoint {bad}"
            );
        }
    }
    assert_eq!(servers[2].requests(), 30);
}

/// A `reqwest::Request` built with reqwest's builder (`.json()`) goes through the whole client
/// and comes back as a `reqwest::Response` (`.error_for_status()`, `.text()`), over TLS.
#[tokio::test]
async fn a_reqwest_request_round_trips_through_the_client() {
    use stanchion::pool::ReqwestConnector;

    let ca = Ca::new("test CA");
    let server = TlsServer::start(ServerSetup::new(ca.leaf(&["localhost"], &[], false))).await;
    let roots = ca.roots();
    let client = Client::http(Target::addrs([server.addr]))
        .backoff(fast())
        .build(
            ReqwestConnector::new("localhost")
                .configure(move || support::reqwest_builder_trusting(roots.clone())),
        )
        .unwrap();
    client.resolved().await;
    let builder = support::reqwest_builder().build().unwrap();
    let req = builder
        .post(format!(
            "https://localhost:{}/v1/charges",
            server.addr.port()
        ))
        .json(&serde_json::json!({ "amount": 5 }))
        .build()
        .unwrap();
    let res = client
        .send_reqwest(req)
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    assert_eq!(res.text().await.unwrap(), r#"ok HTTP/1.1: {"amount":5}"#);
    assert_eq!(server.requests(), 1);
}

/// A TLS 1.3 refusal of our client certificate that reaches the connection before the request
/// is written (here: the connector hands the connection over 100 ms after its handshake): the
/// pool does not hand the request to new connections to the same endpoint, and the refusal is
/// named — not a plain "connection closed" after a loop of refused reconnects.
#[tokio::test]
async fn a_refusal_seen_before_the_request_is_written_ends_at_once() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let server = TlsServer::start(ServerSetup {
        client_ca: Some(client_ca.roots()),
        ..ServerSetup::new(ca.leaf(&["localhost"], &[], false))
    })
    .await;
    for connector in [
        HttpConnector::<Full<Bytes>>::http1(),
        HttpConnector::<Full<Bytes>>::auto(),
    ] {
        let accepted = server.accepted();
        let connector = connector.tls(localhost(&ca));
        let slow_handover = tower::service_fn(move |addr: SocketAddr| {
            let connector = connector.clone();
            async move {
                let conn = connector.oneshot(addr).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, stanchion::BoxError>(conn)
            }
        });
        let pool = PoolBuilder::new()
            .build(slow_handover, server.addr)
            .unwrap();
        let err = pool
            .oneshot(get(&format!("https://localhost:{}/", server.addr.port())))
            .await
            .unwrap_err();
        let report = err.report().to_string();
        assert!(
            report.contains("TLS: the server refused the handshake"),
            "{report}"
        );
        assert!(
            support_chain(&err).any(|e| e.is::<stanchion::classify::EndpointRejected>()),
            "{report}"
        );
        assert_eq!(server.accepted() - accepted, 1, "reconnected: {report}");
    }
    assert_eq!(server.requests(), 0);
}

/// Warm connections (`min_idle`) follow the requests' host when the connections are named from
/// requests: after a request for `api.test`, the reaper's new connections are verified for it
/// (its SNI), and requests for that host find them ready. Connections warmed before any request
/// are verified for the endpoint's IP and never carry a request naming a host.
#[tokio::test]
async fn warm_connections_are_made_for_the_last_host() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(ServerSetup::new(ca.leaf(
        &["api.test"],
        &["127.0.0.1"],
        false,
    )))
    .await;
    let pool = named_pool(
        &ca,
        &server,
        PoolBuilder::new()
            .min_idle(2)
            .max_size(4)
            .idle_timeout(Duration::from_millis(400)),
        HttpConnector::http1(),
    );
    // Before any request the reaper warms connections for the endpoint's IP (no SNI).
    for _ in 0..100 {
        if pool.stats().idle >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(pool.stats().idle >= 2, "{:?}", pool.stats());
    let res = pool
        .clone()
        .oneshot(get("https://api.test/"))
        .await
        .unwrap();
    assert_eq!(text(res).await, "ok HTTP/1.1");
    // The IP-named warm connections were not used for it, and the reaper now warms for it.
    let named = || {
        server
            .snis
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.as_deref() == Some("api.test"))
            .count()
    };
    for _ in 0..200 {
        if named() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(named() >= 2, "{:?}", server.snis.lock().unwrap());
    assert_eq!(server.requests(), 1);
}

/// A request's host is its own business: a host the endpoint's certificate does not name, or
/// one no certificate can name, is the caller's mistake (`HostNotServed`) — refused, not
/// retried, never counted against the endpoint (ten of them leave it serving other hosts); the
/// second is refused before connecting. A request naming no host takes only a connection
/// verified for the endpoint's IP, never one made for another host.
#[tokio::test]
async fn a_host_the_endpoint_does_not_serve_is_the_callers_mistake() {
    let ca = Ca::new("test CA");
    let server = TlsServer::start(ServerSetup::new(ca.leaf(
        &["api.test"],
        &["127.0.0.1"],
        false,
    )))
    .await;
    let client = https_client(
        [server.addr],
        HttpConnector::<Body>::http1().tls(TlsConfig::with_roots(ca.roots())),
    )
    .await;
    for _ in 0..10 {
        let accepted = server.accepted();
        let err = client
            .clone()
            .oneshot(get("https://other.test/"))
            .await
            .unwrap_err();
        assert!(
            support_chain(&err).any(|e| e.is::<HostNotServed>()),
            "{}",
            err.report()
        );
        assert_eq!(server.accepted(), accepted + 1, "retried: {}", err.report());
    }
    // Not the endpoint's failure: its breaker saw none of them.
    let breaker = client.balancer().breaker(server.addr).unwrap();
    assert_eq!(breaker.state(), stanchion::breaker::BreakerState::Closed);
    let res = client
        .clone()
        .oneshot(get("https://api.test/"))
        .await
        .unwrap();
    assert_eq!(text(res).await, "ok HTTP/1.1");
    // No certificate can name `a..b`: refused before connecting.
    let accepted = server.accepted();
    let err = client
        .clone()
        .oneshot(get("https://a..b/"))
        .await
        .unwrap_err();
    assert!(
        support_chain(&err).any(|e| e.is::<HostNotServed>()),
        "{}",
        err.report()
    );
    assert_eq!(server.accepted(), accepted);

    // A path-only request: not on api.test's connection, but on one verified for the IP.
    let pool = named_pool(&ca, &server, PoolBuilder::new(), HttpConnector::http1());
    let res = pool
        .clone()
        .oneshot(get("https://api.test/"))
        .await
        .unwrap();
    assert_eq!(text(res).await, "ok HTTP/1.1");
    let before = server.accepted();
    let res = pool.clone().oneshot(get("/")).await.unwrap();
    assert_eq!(text(res).await, "ok HTTP/1.1");
    assert_eq!(server.accepted(), before + 1);
    assert_eq!(server.snis.lock().unwrap().last(), Some(&None));
    assert_eq!(
        server.hosts.lock().unwrap().last().map(String::as_str),
        Some("127.0.0.1")
    );
}
