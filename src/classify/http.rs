//! HTTP status codes and `Retry-After`.

use std::time::Duration;

use http::{Response, StatusCode, header::RETRY_AFTER};

use super::retry_after::{SystemClock, WallClock, parse_retry_after};
use super::{Class, Classify, DEFAULT_MAX_DELAY_HINT, Kind, NoEos, ServerHint, Verdict};

/// Classifies HTTP responses by status code; reads `Retry-After` on any answer but a success.
///
/// | status | kind |
/// |---|---|
/// | 1xx, 2xx, 3xx | success |
/// | 408 Request Timeout | timeout |
/// | 429 Too Many Requests | overload |
/// | other 4xx | client error (not a failure) |
/// | 503 Service Unavailable | unavailable |
/// | 504 Gateway Timeout | timeout |
/// | other 5xx (500, 501, 502, …) | server error |
///
/// Every class carries its status ([`Class::status`]); which statuses are worth retrying, and
/// whether repeating the request is safe (the method, an idempotency key), is the retry
/// policy's decision ([`RetryLayerBuilder::retryable_statuses`](crate::retry::RetryLayerBuilder::retryable_statuses)).
/// A `Retry-After` on any answer but a success (a 503, a 429, a keyed request's 409) becomes
/// [`ServerHint::RetryAfter`], capped at [`max_delay_hint`](Self::max_delay_hint) (default 30 s);
/// a malformed one is ignored. The whole verdict is in the head.
#[derive(Debug, Clone, Copy)]
pub struct HttpClassifier<C = SystemClock> {
    clock: C,
    max_delay_hint: Duration,
}

impl HttpClassifier {
    /// A classifier with the system clock and a 30 s hint cap.
    pub fn new() -> Self {
        HttpClassifier {
            clock: SystemClock,
            max_delay_hint: DEFAULT_MAX_DELAY_HINT,
        }
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: WallClock> HttpClassifier<C> {
    /// Uses `clock` to turn HTTP-date `Retry-After` values into delays.
    pub fn with_clock<C2: WallClock>(self, clock: C2) -> HttpClassifier<C2> {
        HttpClassifier {
            clock,
            max_delay_hint: self.max_delay_hint,
        }
    }

    /// Caps server delay hints at `cap` (default 30 s).
    pub fn max_delay_hint(mut self, cap: Duration) -> Self {
        self.max_delay_hint = cap;
        self
    }

    /// Classifies a status code and the response headers.
    pub fn classify_status(&self, status: StatusCode, headers: &http::HeaderMap) -> Class {
        let code = status.as_u16();
        let kind = kind_of_status(code);
        if kind == Kind::Success {
            return Class::new(kind).with_status(code);
        }
        let hint = headers
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v.as_bytes(), self.clock.now()))
            .map_or(ServerHint::None, |d| {
                ServerHint::RetryAfter(d.min(self.max_delay_hint))
            });
        Class::new(kind).with_status(code).with_hint(hint)
    }
}

/// The kind of outcome an HTTP status is (the table on [`HttpClassifier`]).
pub(crate) fn kind_of_status(status: u16) -> Kind {
    match status {
        100..=399 => Kind::Success,
        408 => Kind::Timeout,
        429 => Kind::Overload,
        400..=499 => Kind::ClientError,
        503 => Kind::Unavailable,
        504 => Kind::Timeout,
        _ => Kind::ServerError,
    }
}

impl<C: WallClock, B> Classify<Response<B>> for HttpClassifier<C> {
    type Eos = NoEos;

    fn classify_response(&self, res: &Response<B>) -> Verdict<NoEos> {
        Verdict::Done(self.classify_status(res.status(), res.headers()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::classify::FixedClock;

    fn classify(status: u16, retry_after: Option<&str>) -> Class {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let mut res = Response::builder().status(status);
        if let Some(v) = retry_after {
            res = res.header(RETRY_AFTER, v);
        }
        match HttpClassifier::new()
            .with_clock(FixedClock(now))
            .classify_response(&res.body(()).unwrap())
        {
            Verdict::Done(class) => class,
            Verdict::AtEndOfStream(never) => match never {},
        }
    }

    #[test]
    fn status_table() {
        use Kind::*;
        let cases: &[(u16, Kind)] = &[
            (200, Success),
            (204, Success),
            (301, Success),
            (400, ClientError),
            (401, ClientError),
            (404, ClientError),
            (409, ClientError),
            (422, ClientError),
            (408, Timeout),
            (429, Overload),
            (500, ServerError),
            (501, ServerError),
            (502, ServerError),
            (503, Unavailable),
            (504, Timeout),
            (505, ServerError),
            (507, ServerError),
            (599, ServerError),
        ];
        for &(status, kind) in cases {
            let class = classify(status, None);
            assert_eq!(class.kind(), kind, "{status}");
            assert_eq!(class.status(), Some(status), "{status}");
            assert_eq!(class.grpc_code(), None, "{status}");
            assert_eq!(class.hint(), ServerHint::None, "{status}");
            assert!(!class.is_never_sent(), "{status}");
        }
    }

    #[test]
    fn retry_after_hints() {
        let cases: &[(u16, &str, ServerHint)] = &[
            (503, "3", ServerHint::RetryAfter(Duration::from_secs(3))),
            (429, "0", ServerHint::RetryAfter(Duration::ZERO)),
            (
                429,
                "Wed, 21 Oct 2015 07:28:05 GMT",
                ServerHint::RetryAfter(Duration::from_secs(5)),
            ),
            // Capped at 30 s.
            (503, "3600", ServerHint::RetryAfter(Duration::from_secs(30))),
            (
                503,
                "Thu, 22 Oct 2015 07:28:00 GMT",
                ServerHint::RetryAfter(Duration::from_secs(30)),
            ),
            // Malformed: ignored.
            (503, "-1", ServerHint::None),
            (503, "later", ServerHint::None),
            // Successes carry no hint.
            (200, "5", ServerHint::None),
        ];
        for &(status, value, hint) in cases {
            assert_eq!(
                classify(status, Some(value)).hint(),
                hint,
                "{status} {value}"
            );
        }
    }

    #[test]
    fn hint_cap_is_configurable() {
        let res = Response::builder()
            .status(503)
            .header(RETRY_AFTER, "90")
            .body(())
            .unwrap();
        let classifier = HttpClassifier::new()
            .with_clock(FixedClock(SystemTime::now()))
            .max_delay_hint(Duration::from_secs(60));
        assert_eq!(
            classifier
                .classify_status(res.status(), res.headers())
                .hint(),
            ServerHint::RetryAfter(Duration::from_secs(60))
        );
    }
}
