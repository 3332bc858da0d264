//! What the server half keeps per key: the request's fingerprint, and once the first request
//! has finished, its response — with a compact binary form for stores outside the process.

use std::fmt;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::BoxError;

/// What identifies "the same request" for one key: SHA-256 over the method, the path and query,
/// and the body. A repeat whose fingerprint differs is answered `422`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a request: its method, path (with query) and body bytes.
    pub fn of(method: &http::Method, path_and_query: &str, body: &[u8]) -> Fingerprint {
        let mut hash = Sha256::new();
        // Lengths first, so no two (method, path, body) triples share an input.
        for part in [method.as_str().as_bytes(), path_and_query.as_bytes()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part);
        }
        hash.update(body);
        Fingerprint(hash.finalize().into())
    }

    /// The fingerprint's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fingerprint from its 32 bytes (as a store kept them).
    pub fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// A finished request's response, as stored for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// The fingerprint of the request that produced it.
    pub fingerprint: Fingerprint,
    /// The status code.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body (empty when `body_omitted`).
    pub body: Bytes,
    /// The trailers (gRPC status travels here), if the response had any.
    pub trailers: Option<HeaderMap>,
    /// The body was larger than the layer's limit and was not kept: a replay says so in a
    /// header instead of pretending the body was empty.
    pub body_omitted: bool,
}

/// A record's identity in a store: the tenant scope and the key, length-prefixed so that no
/// two (scope, key) pairs share an identity however either is spelt.
pub(crate) fn record_id(prefix: &str, scope: &str, key: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + scope.len() + key.len() + 8);
    id.push_str(prefix);
    id.push_str(&scope.len().to_string());
    id.push(':');
    id.push_str(scope);
    id.push(':');
    id.push_str(key);
    id
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const TAG_DONE: u8 = b'D';
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const FORMAT_VERSION: u8 = 1;

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
/// The binary form of a stored response (for Redis): a tag, a version, then length-prefixed
/// fields. Decoding checks every length, so a damaged value is an error, never a panic.
pub(crate) fn encode(response: &StoredResponse) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + response.body.len());
    out.push(TAG_DONE);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(response.fingerprint.as_bytes());
    out.extend_from_slice(&response.status.as_u16().to_be_bytes());
    out.push(u8::from(response.body_omitted));
    put_headers(&mut out, &response.headers);
    put_bytes(&mut out, &response.body);
    match &response.trailers {
        None => out.push(0),
        Some(trailers) => {
            out.push(1);
            put_headers(&mut out, trailers);
        }
    }
    out
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
/// Reads what [`encode`] wrote.
pub(crate) fn decode(bytes: &[u8]) -> Result<StoredResponse, BoxError> {
    let mut r = Reader(bytes);
    if r.take(1)? != [TAG_DONE] {
        return Err("not a stored idempotency response".into());
    }
    if r.take(1)? != [FORMAT_VERSION] {
        return Err("a stored idempotency response in an unknown format version".into());
    }
    let fingerprint = Fingerprint::from_bytes(r.take(32)?.try_into()?);
    let status = StatusCode::from_u16(u16::from_be_bytes(r.take(2)?.try_into()?))?;
    let body_omitted = r.take(1)?[0] != 0;
    let headers = r.headers()?;
    let body = Bytes::copy_from_slice(r.bytes()?);
    let trailers = match r.take(1)?[0] {
        0 => None,
        _ => Some(r.headers()?),
    };
    if !r.0.is_empty() {
        return Err("trailing bytes after a stored idempotency response".into());
    }
    Ok(StoredResponse {
        fingerprint,
        status,
        headers,
        body,
        trailers,
        body_omitted,
    })
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn put_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        put_bytes(out, name.as_str().as_bytes());
        put_bytes(out, value.as_bytes());
    }
}

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct Reader<'a>(&'a [u8]);

#[cfg_attr(not(feature = "redis"), allow(dead_code))]
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BoxError> {
        if self.0.len() < n {
            return Err("a stored idempotency response is truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn len(&mut self) -> Result<usize, BoxError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into()?) as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], BoxError> {
        let n = self.len()?;
        self.take(n)
    }

    fn headers(&mut self) -> Result<HeaderMap, BoxError> {
        let count = self.len()?;
        // Checked against the bytes present before anything is reserved: a header takes at
        // least 9 (two 4-byte lengths and a name of at least one byte), so a lying count
        // allocates nothing beyond the input.
        if count > self.0.len() / MIN_HEADER_BYTES {
            return Err(format!(
                "a stored idempotency response claims {count} headers in {} bytes",
                self.0.len()
            )
            .into());
        }
        // Reserved up to a modest size; past it the map grows, fallibly.
        let mut headers = HeaderMap::try_with_capacity(count.min(RESERVE_HEADERS)).map_err(|_| {
            format!(
                "a stored idempotency response has {count} headers: more than a header map holds"
            )
        })?;
        for _ in 0..count {
            let name = HeaderName::from_bytes(self.bytes()?)?;
            let value = HeaderValue::from_bytes(self.bytes()?)?;
            headers.try_append(name, value).map_err(|_| {
                format!("a stored idempotency response has {count} headers: more than a header map holds")
            })?;
        }
        Ok(headers)
    }
}

/// The most headers reserved up front when decoding (more grow the map as they are read).
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const RESERVE_HEADERS: usize = 1024;

/// The fewest bytes one encoded header takes: two 4-byte lengths and a one-byte name.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
const MIN_HEADER_BYTES: usize = 9;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        StoredResponse {
            fingerprint: Fingerprint::of(&http::Method::POST, "/pay?x=1", b"{}"),
            status: StatusCode::CREATED,
            headers,
            body: Bytes::from_static(b"{\"id\":7}"),
            trailers: Some(trailers),
            body_omitted: false,
        }
    }

    #[test]
    fn a_stored_response_round_trips() {
        let response = sample();
        assert_eq!(decode(&encode(&response)).unwrap(), response);
        let bare = StoredResponse {
            trailers: None,
            body_omitted: true,
            body: Bytes::new(),
            ..sample()
        };
        assert_eq!(decode(&encode(&bare)).unwrap(), bare);
    }

    #[test]
    fn fingerprints_separate_method_path_and_body() {
        let base = Fingerprint::of(&http::Method::POST, "/a", b"b");
        assert_eq!(base, Fingerprint::of(&http::Method::POST, "/a", b"b"));
        assert_ne!(base, Fingerprint::of(&http::Method::PATCH, "/a", b"b"));
        assert_ne!(base, Fingerprint::of(&http::Method::POST, "/ab", b""));
        assert_ne!(base, Fingerprint::of(&http::Method::POST, "/a", b"c"));
    }

    #[test]
    fn record_ids_do_not_collide_across_scopes() {
        assert_ne!(record_id("p:", "a:b", "c"), record_id("p:", "a", "b:c"));
    }

    /// A value with `count` headers claimed and `present` of them there, then `tail`.
    fn with_headers(count: u32, present: u32, tail: &[u8]) -> Vec<u8> {
        let mut value = encode(&StoredResponse {
            trailers: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            ..sample()
        });
        // Cut after the fixed head (37 bytes): the header count comes next.
        value.truncate(37);
        value.extend_from_slice(&count.to_be_bytes());
        for i in 0..present {
            put_bytes(&mut value, format!("h{i}").as_bytes());
            put_bytes(&mut value, b"v");
        }
        value.extend_from_slice(tail);
        value
    }

    const NO_BODY_NO_TRAILERS: [u8; 5] = [0, 0, 0, 0, 0];

    #[test]
    fn header_counts_at_the_header_maps_limit() {
        // A header map holds 24,576 distinct names (its index table is capped at 32,768 slots,
        // three quarters full): past that, an error — never the panic of `with_capacity` or
        // `append`.
        for (count, fits) in [
            (24_575, true),
            (24_576, true),
            (24_577, false),
            (32_769, false),
        ] {
            match decode(&with_headers(count, count, &NO_BODY_NO_TRAILERS)) {
                Ok(response) => {
                    assert!(fits, "{count}");
                    assert_eq!(response.headers.len(), count as usize);
                }
                Err(err) => {
                    assert!(!fits, "{count}: {err}");
                    assert!(
                        err.to_string().contains("more than a header map holds"),
                        "{err}"
                    );
                }
            }
        }
        // One name repeated holds any number of values (the bytes present bound it).
        for count in [32_767u32, 32_768, 32_769] {
            let mut value = with_headers(0, 0, &[]);
            value.truncate(37);
            value.extend_from_slice(&count.to_be_bytes());
            for _ in 0..count {
                put_bytes(&mut value, b"set-cookie");
                put_bytes(&mut value, b"v");
            }
            value.extend_from_slice(&NO_BODY_NO_TRAILERS);
            let response = decode(&value).unwrap();
            assert_eq!(response.headers.len(), count as usize);
        }
    }

    proptest! {
        /// A count or a length larger than the bytes behind it is an error, found before
        /// anything is reserved for it.
        #[test]
        fn lying_counts_and_lengths_are_errors(
            count in prop_oneof![Just(u32::MAX), Just(32_768u32), Just(32_769), 1u32..100_000],
            present in 0u32..50,
            body_len in prop_oneof![Just(u32::MAX), 1u32..1_000_000],
        ) {
            prop_assume!(present < count);
            let mut tail = body_len.to_be_bytes().to_vec();
            tail.push(0);
            prop_assert!(decode(&with_headers(count, present, &tail)).is_err());
            // A body length past the end, with every header present.
            prop_assert!(decode(&with_headers(present, present, &tail)).is_err());
        }

        #[test]
        fn damaged_values_are_errors_not_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn truncations_of_a_real_value_are_errors(cut in 0usize..100) {
            let full = encode(&sample());
            let cut = cut.min(full.len() - 1);
            prop_assert!(decode(&full[..cut]).is_err());
        }
    }
}
