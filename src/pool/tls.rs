//! TLS for [`HttpConnector`](super::HttpConnector): rustls configuration, the server name a
//! connection is verified for, and what a failed handshake means.
//!
//! Why these choices:
//! - **The crypto provider is chosen per configuration** (`ClientConfig::builder_with_provider`
//!   with rustls' `ring` provider), never read from or installed as the process-wide default: a
//!   library that installs a default breaks programs that install their own, and one that reads
//!   it panics in programs that installed none. `ring` is the provider tonic's `tls-ring`
//!   feature uses and needs no C toolchain beyond what `ring` builds; bring a config built with
//!   another provider (aws-lc-rs, for FIPS) through [`TlsConfig::from_client_config`].
//! - **A connection is verified for one name** and the pool never sends a request for another
//!   host on it ([`ServerNameMismatch`](super::ServerNameMismatch)): pools are per endpoint
//!   address, and the name is the configured server name or, without one, the host of the
//!   request the connection is made for — the pool keys such connections by it — so pooled
//!   connections are keyed by (server name, address); every request on a TLS connector's
//!   connections goes over TLS, `http://` ones included.
//! - **A failed handshake says what failed** ([`TlsError`]): a certificate the client does not
//!   trust, one for another name, expired, a fatal alert from the server (it refused our client
//!   certificate), no common protocol. Those say the *endpoint* is unfit for this client:
//!   [`EndpointRejected`](crate::classify::EndpointRejected) — never sent, counted against the
//!   endpoint, retried only on another one. An I/O error or timeout during the handshake is a
//!   connect failure like any other.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use crate::error::ConfigError;

/// Default TLS handshake timeout: 10 s, as Go's `http.DefaultTransport` (`TLSHandshakeTimeout`).
/// The pool's checkout timeout and the call's deadline bound it too (the handshake is part of
/// the checkout).
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS settings for an [`HttpConnector`](super::HttpConnector): a rustls [`ClientConfig`]
/// (trust roots, client certificate for mTLS, provider), the server name to verify, and the
/// handshake timeout. Cheap to clone.
///
/// ```
/// # fn run(ca_der: Vec<u8>) -> Result<(), stanchion::BoxError> {
/// use stanchion::pool::{HttpConnector, TlsConfig};
///
/// let mut roots = rustls::RootCertStore::empty();
/// roots.add(rustls::pki_types::CertificateDer::from(ca_der))?;
/// let tls = TlsConfig::with_roots(roots).server_name("api.example.com")?;
/// let connector = HttpConnector::<http_body_util::Full<bytes::Bytes>>::auto().tls(tls);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(super) config: Arc<ClientConfig>,
    pub(super) server_name: Option<ServerName<'static>>,
    pub(super) handshake_timeout: Duration,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .field("handshake_timeout", &self.handshake_timeout)
            .field(
                "client_auth",
                &self.config.client_auth_cert_resolver.has_certs(),
            )
            .finish_non_exhaustive()
    }
}

/// rustls' `ring` provider, chosen explicitly (see the [module docs](self)).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

impl TlsConfig {
    /// Trusts the certificates in `roots` (TLS 1.2 and 1.3, the `ring` provider, no client
    /// certificate).
    pub fn with_roots(roots: RootCertStore) -> TlsConfig {
        TlsConfig::from_client_config(
            builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// Trusts `roots` and presents `cert_chain` (leaf first) with its private `key` to servers
    /// that ask for a client certificate (mutual TLS).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `client_auth` when rustls cannot use the key (an unsupported
    /// algorithm, a key that does not match the certificate).
    pub fn with_client_auth(
        roots: RootCertStore,
        cert_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
        key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<TlsConfig, ConfigError> {
        let config = builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(cert_chain, key)
            .map_err(|e| ConfigError::new("client_auth", e.to_string()))?;
        Ok(TlsConfig::from_client_config(config))
    }

    /// Trusts Mozilla's root store, compiled in (feature `tls-webpki-roots`).
    #[cfg(feature = "tls-webpki-roots")]
    pub fn webpki_roots() -> TlsConfig {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        TlsConfig::with_roots(roots)
    }

    /// Trusts the platform's certificate store, read now (feature `tls-native-roots`;
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `roots` when no certificate could be loaded. Certificates the
    /// store holds that rustls cannot parse are skipped.
    #[cfg(feature = "tls-native-roots")]
    pub fn native_roots() -> Result<TlsConfig, ConfigError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or_else(|| "the store is empty".to_owned(), |e| e.to_string());
            return Err(ConfigError::new(
                "roots",
                format!("no trusted certificate found in the platform's store: {why}"),
            ));
        }
        Ok(TlsConfig::with_roots(roots))
    }

    /// Your own rustls configuration (roots, verifier, client certificate, provider — e.g.
    /// aws-lc-rs). Its ALPN protocols are replaced by the connector's (`h2` and/or
    /// `http/1.1`).
    pub fn from_client_config(config: ClientConfig) -> TlsConfig {
        TlsConfig {
            config: Arc::new(config),
            server_name: None,
            handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        }
    }

    /// The name to send (SNI) and to verify the server's certificate for, whatever host the
    /// requests name (`api.example.com`, when the endpoints are IP addresses from DNS). Every
    /// request sent on the connections must be for this host: a request whose URI (or `Host`)
    /// names another is refused before it is written
    /// ([`ServerNameMismatch`](super::ServerNameMismatch)).
    ///
    /// Without one (the default), each connection is verified for the host of the request it
    /// is made for ([`connecting_for`](super::connecting_for)): a DNS name is sent as SNI, an
    /// IP-literal host sends no SNI and is verified against the certificate's IP SANs, and a
    /// request that names no host gets the endpoint's IP. The pool keys such connections by
    /// that name: a connection verified for one host never carries a request for another.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `server_name` if `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<TlsConfig, ConfigError> {
        let trimmed = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
        let parsed = ServerName::try_from(trimmed.unwrap_or(name).to_owned())
            .map_err(|e| ConfigError::new("server_name", format!("{name:?}: {e}")))?;
        self.server_name = Some(parsed);
        Ok(self)
    }

    /// The TLS handshake timeout (default [`DEFAULT_TLS_HANDSHAKE_TIMEOUT`]; zero: none of its
    /// own). Charged to the checkout timeout and the call's deadline like the TCP connect.
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsConfig {
        self.handshake_timeout = timeout;
        self
    }

    /// The configuration with `alpn` offered.
    pub(super) fn with_alpn(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// The name a connection to `addr` for a request naming `host` is verified for: the
    /// configured server name; else the request's host (a DNS name, sent as SNI; an IP literal,
    /// verified against the certificate's IP SANs with no SNI); else — no host — the endpoint's
    /// IP. `true` with it unless the name was configured: the pool keys the connection by it.
    /// A host that is no valid server name is refused.
    pub(super) fn name_for(
        &self,
        addr: SocketAddr,
        host: Option<&str>,
    ) -> Result<(ServerName<'static>, bool), super::HostNotServed> {
        if let Some(name) = &self.server_name {
            return Ok((name.clone(), false));
        }
        match host {
            // Keyed too: a path-only request (or a warm connection made before any request)
            // gets an IP-named connection that named requests never take.
            None => Ok((ServerName::IpAddress(addr.ip().into()), true)),
            Some(host) => {
                // Brackets only around an IPv6 literal; one trailing dot (a DNS root).
                let bare = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                    Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
                    Some(_) => host,
                    None => host.strip_suffix('.').unwrap_or(host),
                };
                ServerName::try_from(bare.to_owned())
                    .map(|name| (name, true))
                    .map_err(|_| {
                        super::HostNotServed::new(
                            addr,
                            host,
                            "it is no DNS name or IP address a certificate can be verified for",
                            None,
                        )
                    })
            }
        }
    }
}

/// The name a [`ServerName`] is written as (a DNS name, or an IP address without brackets).
pub(super) fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// What went wrong in a TLS handshake, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The server's certificate chains to no trusted root (unknown issuer, self-signed).
    CertificateNotTrusted,
    /// The certificate is not valid for the server name (or IP) the client verified.
    CertificateWrongName,
    /// The certificate has expired, or is not valid yet.
    CertificateExpired,
    /// The certificate was revoked, or is otherwise invalid (bad signature, bad encoding).
    CertificateInvalid,
    /// The server sent a fatal alert: it refused the handshake (often: our client certificate
    /// is missing or not trusted).
    AlertReceived,
    /// No protocol in common: TLS versions or cipher suites, or the server did not pick `h2`
    /// by ALPN for an HTTP/2-only connector (a gRPC server behind a proxy that speaks HTTP/1).
    NoCommonProtocol,
    /// The handshake did not finish within the handshake timeout.
    TimedOut,
    /// The connection failed during the handshake (reset, closed): a connect failure.
    Io,
    /// Anything else rustls reported (a peer that misbehaved, a malformed message, a local
    /// failure such as no random bytes or a custom verifier's error): a connect failure, not a
    /// verdict on the endpoint.
    Other,
}

impl TlsErrorKind {
    /// Whether this failure says the endpoint is unfit for this client (its identity or its
    /// protocols), as opposed to a connection that failed: certificate failures, fatal alerts,
    /// no common protocol. Such failures are retried only on another endpoint.
    pub fn rejects_endpoint(self) -> bool {
        matches!(
            self,
            TlsErrorKind::CertificateNotTrusted
                | TlsErrorKind::CertificateWrongName
                | TlsErrorKind::CertificateExpired
                | TlsErrorKind::CertificateInvalid
                | TlsErrorKind::AlertReceived
                | TlsErrorKind::NoCommonProtocol
        )
    }

    fn describe(self) -> &'static str {
        match self {
            TlsErrorKind::CertificateNotTrusted => "certificate not trusted",
            TlsErrorKind::CertificateWrongName => "certificate not valid for the server name",
            TlsErrorKind::CertificateExpired => "certificate expired or not yet valid",
            TlsErrorKind::CertificateInvalid => "certificate invalid",
            TlsErrorKind::AlertReceived => "the server refused the handshake (fatal alert)",
            TlsErrorKind::NoCommonProtocol => "no protocol in common with the server",
            TlsErrorKind::TimedOut => "handshake timed out",
            TlsErrorKind::Io => "connection failed during the handshake",
            TlsErrorKind::Other => "handshake failed",
        }
    }
}

/// A failed TLS handshake: the [kind](TlsErrorKind) in the message ("TLS: certificate not
/// trusted"), rustls' (or the I/O) error in `source()`.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {}{}", kind.describe(), peer(endpoint, name))]
pub struct TlsError {
    kind: TlsErrorKind,
    endpoint: Option<SocketAddr>,
    name: Option<String>,
    #[source]
    source: Option<crate::BoxError>,
}

impl TlsError {
    /// What failed.
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }

    /// The endpoint the handshake was with, if known.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.endpoint
    }

    /// The server name the certificate was verified for, if known.
    pub fn server_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A refusal that arrived after the client's side of the handshake (TLS 1.3 client
    /// certificates), as the error of the first send.
    pub(super) fn after_handshake(kind: TlsErrorKind, source: crate::BoxError) -> TlsError {
        TlsError {
            kind,
            endpoint: None,
            name: None,
            source: Some(source),
        }
    }

    pub(super) fn new(
        kind: TlsErrorKind,
        endpoint: SocketAddr,
        name: String,
        source: Option<crate::BoxError>,
    ) -> TlsError {
        TlsError {
            kind,
            endpoint: Some(endpoint),
            name: Some(name),
            source,
        }
    }

    /// Classifies an I/O error out of tokio-rustls: a rustls error inside is the handshake's
    /// verdict; anything else is the connection failing.
    pub(super) fn from_io(error: std::io::Error, endpoint: SocketAddr, name: String) -> TlsError {
        let kind = match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => kind_of(tls),
            None => TlsErrorKind::Io,
        };
        // An OS error has no inner error: keep the `io::Error` itself (its kind — a timeout, a
        // reset — is what classification reads).
        let source: crate::BoxError = if error.get_ref().is_some() {
            error.into_inner().unwrap_or_else(|| "I/O error".into())
        } else {
            Box::new(error)
        };
        TlsError::new(kind, endpoint, name, Some(source))
    }
}

fn peer(endpoint: &Option<SocketAddr>, name: &Option<String>) -> String {
    match (endpoint, name) {
        (Some(endpoint), Some(name)) => format!(" (handshake with {endpoint} as {name:?})"),
        (Some(endpoint), None) => format!(" (handshake with {endpoint})"),
        _ => String::new(),
    }
}

/// The alert in an error read from a TLS stream, if it is one a server sends when it refuses the
/// handshake (our certificate, its signature, the parameters): under TLS 1.3 such a refusal
/// arrives after our side of the handshake is done. Asked only while the peer has sent no
/// application data, when it means the server accepted none of what we sent.
pub(super) fn refusal_in(io: &std::io::Error) -> Option<TlsErrorKind> {
    let inner = io.get_ref()?;
    let alert = match inner.downcast_ref::<rustls::Error>() {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        Some(_) => return None,
        // rustls' reader hands a received alert over as text (its `Display`: "received fatal
        // alert: CertificateRequired"); only the names below are looked for.
        None => alert_named(&inner.to_string())?,
    };
    use AlertDescription as A;
    match alert {
        A::CertificateRequired
        | A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied
        | A::DecryptError
        | A::DecodeError
        | A::IllegalParameter
        | A::InsufficientSecurity => Some(TlsErrorKind::AlertReceived),
        A::HandshakeFailure | A::NoApplicationProtocol | A::ProtocolVersion => {
            Some(TlsErrorKind::NoCommonProtocol)
        }
        _ => None,
    }
}

/// The handshake alert a rustls error message names, among those [`handshake_alert`] knows.
fn alert_named(message: &str) -> Option<AlertDescription> {
    use AlertDescription as A;
    let name = message.strip_prefix("received fatal alert: ")?;
    [
        A::CertificateRequired,
        A::BadCertificate,
        A::UnsupportedCertificate,
        A::CertificateRevoked,
        A::CertificateExpired,
        A::CertificateUnknown,
        A::UnknownCA,
        A::AccessDenied,
        A::DecryptError,
        A::DecodeError,
        A::IllegalParameter,
        A::InsufficientSecurity,
        A::HandshakeFailure,
        A::NoApplicationProtocol,
        A::ProtocolVersion,
    ]
    .into_iter()
    .find(|alert| format!("{alert:?}") == name)
}

/// The kind of a rustls error.
pub(super) fn kind_of(error: &rustls::Error) -> TlsErrorKind {
    use CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => TlsErrorKind::CertificateNotTrusted,
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                TlsErrorKind::CertificateWrongName
            }
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => TlsErrorKind::CertificateExpired,
            _ => TlsErrorKind::CertificateInvalid,
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::NoApplicationProtocol
            | AlertDescription::ProtocolVersion
            | AlertDescription::HandshakeFailure => TlsErrorKind::NoCommonProtocol,
            _ => TlsErrorKind::AlertReceived,
        },
        rustls::Error::PeerIncompatible(_) => TlsErrorKind::NoCommonProtocol,
        rustls::Error::NoCertificatesPresented => TlsErrorKind::CertificateInvalid,
        _ => TlsErrorKind::Other,
    }
}
