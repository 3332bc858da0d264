//! Small parsers for header values that several layers read.

/// Parses a non-negative decimal integer, surrounded by optional whitespace. Values too large for a
/// `u64` saturate (callers cap them); anything else — signs, fractions, garbage — is `None`.
pub(crate) fn parse_decimal(value: &[u8]) -> Option<u64> {
    let text = value.trim_ascii();
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(text.iter().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// `grpc-previous-rpc-attempts` (gRFC A6): on a retried request, the attempts before it; on the
/// response a retried call returns, the attempts before the one that answered.
#[cfg(feature = "http")]
pub(crate) const GRPC_PREVIOUS_ATTEMPTS: http::HeaderName =
    http::HeaderName::from_static("grpc-previous-rpc-attempts");

/// Whether a message is gRPC: its content type is `application/grpc`, alone or followed by `+`
/// (a codec: `application/grpc+proto`) or `;` (parameters), as gRPC over HTTP/2 defines it.
///
/// gRPC-Web (`application/grpc-web…`) is *not* gRPC here: it runs over HTTP/1.1 through a proxy,
/// carries its status in the body rather than in trailers, and its retries are the browser
/// client's business — so it is treated as plain HTTP (retried by method, judged by status).
/// Neither is a look-alike such as `application/grpcfoo`.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| is_grpc_content_type(ct.as_bytes()))
}

fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

#[cfg(test)]
mod tests {
    use super::{is_grpc_content_type, parse_decimal};

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
            "application/grpc;charset=utf-8",
            "Application/GRPC",
        ] {
            assert!(is_grpc_content_type(yes.as_bytes()), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpcXYZ",
            "application/grp",
            "application/json",
            "",
        ] {
            assert!(!is_grpc_content_type(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b" 42\t", Some(42)),
            (b"007", Some(7)),
            (b"18446744073709551615", Some(u64::MAX)),
            (b"99999999999999999999999", Some(u64::MAX)),
            (b"", None),
            (b" ", None),
            (b"-1", None),
            (b"+1", None),
            (b"1.0", None),
            (b"1 2", None),
            (b"\xff", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_decimal(input), *expected, "{input:?}");
        }
    }
}
