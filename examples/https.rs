//! An HTTPS API on the hyper path: `Client::http` over `HttpConnector::auto().tls(..)`.
//!
//! Makes a certificate authority and a certificate for `api.example.test` (rcgen, in memory),
//! starts a TLS server on 127.0.0.1 offering HTTP/2 and HTTP/1.1 by ALPN, and POSTs to
//! `https://api.example.test/v1/charges` through the client: the connection is verified for that
//! name (SNI sent), ALPN picks HTTP/2, the deadline and retries apply as on any connection. Then
//! it shows the two refusals: the same request through a plaintext connector is refused before
//! a byte is written, and a server whose certificate the client does not trust fails with the
//! cause in the message, without being retried on the same endpoint.
//!
//! ```text
//! cargo run --features tls --example https
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use stanchion::client::{Client, Target};
use stanchion::pool::{HttpConnector, TlsConfig};
use tokio::net::TcpListener;
use tower::ServiceExt;

const NAME: &str = "api.example.test";

/// A certificate authority and a server certificate for [`NAME`] it signed.
struct Certificates {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

fn certificates(ca_name: &str) -> Result<Certificates, stanchion::BoxError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec![NAME.to_owned()])?.signed_by(&key, &issuer)?;
    Ok(Certificates {
        ca: issuer.der().clone(),
        chain: vec![leaf.der().clone()],
        key: key.serialize_der(),
    })
}

/// A TLS server on 127.0.0.1 answering each request with its protocol version and body size.
async fn serve(certs: &Certificates) -> Result<SocketAddr, stanchion::BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            certs.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certs.key.clone())),
        )?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let version = req.version();
                        let body = req.into_body().collect().await?.to_bytes();
                        let text = format!("{version:?}, {} bytes received", body.len());
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(text))))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn charge() -> Result<Request<Full<Bytes>>, http::Error> {
    Request::post(format!("https://{NAME}/v1/charges"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"amount": 1200, "currency": "eur"}"#,
        )))
}

#[tokio::main]
async fn main() -> Result<(), stanchion::BoxError> {
    let certs = certificates("example CA")?;
    let addr = serve(&certs).await?;
    println!("TLS server for {NAME} at {addr}");

    // The client: trust the example CA, verify the endpoint as NAME (the endpoints are IP
    // addresses, as DNS would give them), HTTP/2 or HTTP/1.1 by ALPN.
    let mut roots = RootCertStore::empty();
    roots.add(certs.ca.clone())?;
    let tls = TlsConfig::with_roots(roots).server_name(NAME)?;
    let client = Client::http(Target::addrs([addr]))
        .deadline(Duration::from_secs(2))
        .build(HttpConnector::<Full<Bytes>>::auto().tls(tls))?;
    let res = client.clone().oneshot(charge()?).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!(
        "POST https://{NAME}/v1/charges -> {status}: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(status.is_success());

    // A plaintext connector never writes an https request.
    let plaintext =
        Client::http(Target::addrs([addr])).build(HttpConnector::<Full<Bytes>>::http1())?;
    let err = plaintext
        .oneshot(charge()?)
        .await
        .expect_err("sent in plaintext");
    println!("through a plaintext connector: {}", err.report());

    // A client that does not trust the server's certificate: one attempt, the cause named.
    let other_ca = certificates("another CA")?;
    let mut other_roots = RootCertStore::empty();
    other_roots.add(other_ca.ca)?;
    let untrusting = Client::http(Target::addrs([addr])).build(
        HttpConnector::<Full<Bytes>>::auto()
            .tls(TlsConfig::with_roots(other_roots).server_name(NAME)?),
    )?;
    let err = untrusting.oneshot(charge()?).await.expect_err("trusted");
    println!("with another CA's roots: {}", err.report());
    Ok(())
}
