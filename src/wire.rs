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

/// Whether a request is gRPC: its content type is `application/grpc` or `application/grpc+…`.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

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
