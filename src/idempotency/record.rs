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
        // Each header takes at least 8 bytes, so a damaged count cannot reserve much.
        let mut headers = HeaderMap::with_capacity(count.min(self.0.len() / 8));
        for _ in 0..count {
            let name = HeaderName::from_bytes(self.bytes()?)?;
            let value = HeaderValue::from_bytes(self.bytes()?)?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

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

    proptest! {
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
