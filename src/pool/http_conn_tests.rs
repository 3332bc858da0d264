use super::*;

#[test]
fn http1_sends_the_origin_form_with_a_host() {
    let req = Request::get("http://example.test:8080/a?b=1")
        .body(())
        .unwrap();
    let req = origin_form(req, None);
    assert_eq!(req.uri(), "/a?b=1");
    assert_eq!(req.headers()[header::HOST], "example.test:8080");

    let fallback = Authority::from_static("127.0.0.1:9");
    let req = origin_form(Request::get("/x").body(()).unwrap(), Some(&fallback));
    assert_eq!(req.uri(), "/x");
    assert_eq!(req.headers()[header::HOST], "127.0.0.1:9");

    let req = Request::get("http://logical.test/")
        .header("host", "mine")
        .body(())
        .unwrap();
    assert_eq!(
        origin_form(req, Some(&fallback)).headers()[header::HOST],
        "mine"
    );
}

#[test]
fn http2_fills_scheme_and_authority() {
    let fallback = Authority::from_static("127.0.0.1:9");
    let req = absolute_form(
        Request::get("/x?y").body(()).unwrap(),
        Some(&fallback),
        false,
    );
    assert_eq!(req.uri(), "http://127.0.0.1:9/x?y");
    let req = Request::get("https://name.test/x").body(()).unwrap();
    assert_eq!(
        absolute_form(req, Some(&fallback), false).uri(),
        "https://name.test/x"
    );
}

#[test]
fn a_secure_http2_connection_fills_the_https_scheme() {
    let fallback = Authority::from_static("api.example.test");
    let req = absolute_form(Request::get("/v1").body(()).unwrap(), Some(&fallback), true);
    assert_eq!(req.uri(), "https://api.example.test/v1");
}

/// A stream that yields scripted reads.
#[cfg(feature = "tls")]
struct Script(std::collections::VecDeque<std::io::Result<&'static [u8]>>);

#[cfg(feature = "tls")]
impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Ready(match self.0.pop_front() {
            Some(Ok(bytes)) => {
                buf.put_slice(bytes);
                Ok(())
            }
            Some(Err(e)) => Err(e),
            None => Ok(()),
        })
    }
}

/// A handshake alert read before any application data is the server's refusal; the same alert
/// after the peer has sent data (a response, HTTP/2 SETTINGS) is not — what was sent may have
/// been processed.
#[cfg(feature = "tls")]
#[tokio::test]
async fn a_tls_refusal_counts_only_before_the_peer_sent_data() {
    use tokio::io::AsyncReadExt;
    let alert = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        )
    };
    let as_text = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "received fatal alert: AccessDenied",
        )
    };
    let other = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CloseNotify),
        )
    };
    type Reads = Vec<std::io::Result<&'static [u8]>>;
    let cases: [(&str, Reads, bool); 5] = [
        ("alert first", vec![Err(alert())], true),
        ("alert as rustls' text", vec![Err(as_text())], true),
        (
            "data, then the alert",
            vec![Ok(b"HTTP/1.1 200 OK\r\n"), Err(alert())],
            false,
        ),
        (
            "an alert no handshake refusal sends",
            vec![Err(other())],
            false,
        ),
        (
            "a reset",
            vec![Err(std::io::ErrorKind::ConnectionReset.into())],
            false,
        ),
    ];
    for (what, reads, refused) in cases {
        let state = Arc::new(ConnState::default());
        let mut watched = Watched {
            io: Script(reads.into()),
            state: state.clone(),
        };
        let mut buf = [0u8; 64];
        while let Ok(n) = watched.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        assert_eq!(state.refused.get().is_some(), refused, "{what}");
    }
}
