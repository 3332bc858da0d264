//! What a stored response keeps of the original's headers, and how a replay is framed.

use http::{HeaderMap, HeaderValue, Response};

use super::{BODY_OMITTED_HEADER, REPLAYED_HEADER};
use crate::idempotency::body::IdempotencyBody;
use crate::idempotency::record::StoredResponse;

/// The headers worth storing: the response's own, without the hop-by-hop ones that describe
/// this connection's framing (a replay is framed anew).
pub(super) fn end_to_end_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for hop in [
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
        http::header::TE,
        http::header::TRAILER,
    ] {
        kept.remove(hop);
    }
    kept.remove("keep-alive");
    kept
}

pub(super) fn replay<B>(stored: StoredResponse) -> Response<IdempotencyBody<B>> {
    let mut response = Response::new(IdempotencyBody::full(stored.body, stored.trailers));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    let headers = response.headers_mut();
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    if stored.body_omitted {
        headers.remove(http::header::CONTENT_LENGTH);
        headers.insert(BODY_OMITTED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_headers_drop_the_connections_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("connection", HeaderValue::from_static("keep-alive"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        let kept = end_to_end_headers(&headers);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept["content-type"], "application/json");
    }
}
