//! gRPC status codes, in headers (trailers-only responses) or trailers, and retry pushback.

use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};

use super::transport::grpc_code_of_error;
use super::{
    Class, Classify, ClassifyEos, DEFAULT_MAX_DELAY_HINT, GrpcCode, Kind, ServerHint, Verdict,
    classify_error,
};

const GRPC_STATUS: &str = "grpc-status";
const GRPC_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// Parses `grpc-retry-pushback-ms`: `Some(delay)` for a non-negative integer of milliseconds,
/// `None` — the server asks not to retry at all — for a negative or unparsable value (gRPC A6).
///
/// ```
/// use std::time::Duration;
/// use stanchion::classify::parse_pushback;
///
/// assert_eq!(parse_pushback(b"250"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_pushback(b"-1"), None);
/// assert_eq!(parse_pushback(b"soon"), None);
/// ```
pub fn parse_pushback(value: &[u8]) -> Option<Duration> {
    crate::wire::parse_decimal(value).map(Duration::from_millis)
}

/// Classifies gRPC responses by their status code, and errors by the code gRPC gives them.
///
/// The status comes from the headers of a trailers-only response, from the trailers otherwise,
/// or — for a non-200 HTTP status, e.g. from a proxy — from gRPC's HTTP-to-gRPC mapping. A stream
/// that ends without a `grpc-status` is INTERNAL. The kind of each code: OK success; CANCELLED
/// cancelled; DEADLINE_EXCEEDED timeout; RESOURCE_EXHAUSTED overload; UNAVAILABLE unavailable;
/// UNKNOWN, INTERNAL, DATA_LOSS server error; the rest are the caller's own errors.
///
/// An error gets the code gRPC's HTTP/2 protocol document gives it ([`grpc_code_of_error`]): a
/// `REFUSED_STREAM` is UNAVAILABLE, a `CANCEL` reset CANCELLED, a lost connection UNAVAILABLE,
/// a per-try timeout DEADLINE_EXCEEDED… Every class it makes carries its code
/// ([`Class::grpc_code`]); *whether* to retry is the retry policy's decision, by the method's
/// retryable codes (gRPC A6), never the classifier's. `grpc-retry-pushback-ms` becomes a
/// [`ServerHint`]: a delay (capped at 30 s by default) or, when negative or unparsable,
/// [`ServerHint::DoNotRetry`].
#[derive(Debug, Clone, Copy)]
pub struct GrpcClassifier {
    max_delay_hint: Duration,
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClassifier {
    /// A classifier capping pushback at 30 s.
    pub fn new() -> Self {
        GrpcClassifier {
            max_delay_hint: DEFAULT_MAX_DELAY_HINT,
        }
    }

    /// Caps pushback delays at `cap` (default 30 s).
    pub fn max_delay_hint(mut self, cap: Duration) -> Self {
        self.max_delay_hint = cap;
        self
    }

    /// Classifies a code, reading pushback from `metadata` (headers or trailers).
    pub fn classify_code(&self, code: GrpcCode, metadata: &HeaderMap) -> Class {
        let kind = code.kind();
        if kind == Kind::Success {
            return Class::success().with_grpc_code(code);
        }
        let hint = match metadata.get(GRPC_PUSHBACK) {
            None => ServerHint::None,
            Some(v) => parse_pushback(v.as_bytes()).map_or(ServerHint::DoNotRetry, |d| {
                ServerHint::RetryAfter(d.min(self.max_delay_hint))
            }),
        };
        Class::new(kind).with_grpc_code(code).with_hint(hint)
    }

    /// Classifies an error: the facts [`classify_error`] finds, with the gRPC code of the
    /// error; a transport error whose code is CANCELLED or RESOURCE_EXHAUSTED (a `CANCEL` or
    /// `ENHANCE_YOUR_CALM` reset) takes that code's kind.
    pub fn classify_grpc_error(&self, err: &(dyn std::error::Error + 'static)) -> Class {
        let class = classify_error(err);
        let code = grpc_code_of_error(err);
        let class = match (class.kind(), code) {
            (Kind::Transport, GrpcCode::Cancelled | GrpcCode::ResourceExhausted) => {
                Class::new(code.kind()).with_never_sent(class.is_never_sent())
            }
            _ => class,
        };
        class.with_grpc_code(code)
    }
}

impl<B> Classify<Response<B>> for GrpcClassifier {
    type Eos = GrpcEos;

    fn classify_response(&self, res: &Response<B>) -> Verdict<GrpcEos> {
        let headers = res.headers();
        if let Some(status) = headers.get(GRPC_STATUS) {
            return Verdict::Done(
                self.classify_code(GrpcCode::from_header(status.as_bytes()), headers),
            );
        }
        if res.status() != StatusCode::OK {
            // A proxy's answer: the code gRPC maps the status to, and that code's kind — but a
            // 429 is shedding (overload), though gRPC reports it as UNAVAILABLE. A proxy says
            // when to come back with `Retry-After`, if not with gRPC's pushback.
            let status = res.status().as_u16();
            let code = GrpcCode::from_http_status(res.status());
            let mut class = self.classify_code(code, headers).with_status(status);
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                class = Class::new(Kind::Overload)
                    .with_grpc_code(code)
                    .with_status(status)
                    .with_hint(class.hint());
            }
            if class.hint() == ServerHint::None
                && let Some(after) = headers.get(http::header::RETRY_AFTER).and_then(|v| {
                    super::retry_after::parse_retry_after(
                        v.as_bytes(),
                        std::time::SystemTime::now(),
                    )
                })
            {
                class = class.with_hint(ServerHint::RetryAfter(after.min(self.max_delay_hint)));
            }
            return Verdict::Done(class);
        }
        Verdict::AtEndOfStream(GrpcEos { classifier: *self })
    }

    fn classify_error(&self, err: &(dyn std::error::Error + 'static)) -> Class {
        self.classify_grpc_error(err)
    }
}

/// The second phase of [`GrpcClassifier`]: the status in the trailers.
#[derive(Debug, Clone, Copy)]
pub struct GrpcEos {
    classifier: GrpcClassifier,
}

impl ClassifyEos<HeaderMap> for GrpcEos {
    fn classify_eos(self, trailers: Option<&HeaderMap>) -> Class {
        let empty = HeaderMap::new();
        let trailers = trailers.unwrap_or(&empty);
        let code = trailers
            .get(GRPC_STATUS)
            .map_or(GrpcCode::Internal, |v| GrpcCode::from_header(v.as_bytes()));
        self.classifier.classify_code(code, trailers)
    }

    fn classify_error(self, err: &(dyn std::error::Error + 'static)) -> Class {
        self.classifier.classify_grpc_error(err)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn code_table() {
        use Kind::*;
        let cases: &[(&str, GrpcCode, Kind)] = &[
            ("0", GrpcCode::Ok, Success),
            ("1", GrpcCode::Cancelled, Cancelled),
            ("2", GrpcCode::Unknown, ServerError),
            ("3", GrpcCode::InvalidArgument, ClientError),
            ("4", GrpcCode::DeadlineExceeded, Timeout),
            ("5", GrpcCode::NotFound, ClientError),
            ("8", GrpcCode::ResourceExhausted, Overload),
            ("10", GrpcCode::Aborted, ClientError),
            ("13", GrpcCode::Internal, ServerError),
            ("14", GrpcCode::Unavailable, Unavailable),
            ("15", GrpcCode::DataLoss, ServerError),
            ("16", GrpcCode::Unauthenticated, ClientError),
            ("17", GrpcCode::Unknown, ServerError),
            ("-1", GrpcCode::Unknown, ServerError),
            ("ok", GrpcCode::Unknown, ServerError),
            ("014", GrpcCode::Unknown, ServerError),
        ];
        for &(value, code, kind) in cases {
            assert_eq!(GrpcCode::from_header(value.as_bytes()), code, "{value}");
            let class = GrpcClassifier::new().classify_code(code, &HeaderMap::new());
            assert_eq!(class.kind(), kind, "{value}");
            assert_eq!(class.grpc_code(), Some(code), "{value}");
        }
    }

    #[test]
    fn pushback_table() {
        let cases: &[(&str, ServerHint)] = &[
            ("0", ServerHint::RetryAfter(Duration::ZERO)),
            ("1500", ServerHint::RetryAfter(Duration::from_millis(1500))),
            ("600000", ServerHint::RetryAfter(Duration::from_secs(30))),
            ("-1", ServerHint::DoNotRetry),
            ("abc", ServerHint::DoNotRetry),
            ("1.5", ServerHint::DoNotRetry),
            ("", ServerHint::DoNotRetry),
        ];
        for &(value, hint) in cases {
            let md = headers(&[(GRPC_PUSHBACK, value)]);
            let class = GrpcClassifier::new().classify_code(GrpcCode::Unavailable, &md);
            assert_eq!(class.hint(), hint, "{value:?}");
        }
    }

    #[test]
    fn trailers_only_head_and_http_status_decide_early() {
        let trailers_only = Response::builder()
            .header(GRPC_STATUS, "8")
            .header(GRPC_PUSHBACK, "100")
            .body(())
            .unwrap();
        let Verdict::Done(class) = GrpcClassifier::new().classify_response(&trailers_only) else {
            panic!("a trailers-only response decides on its head");
        };
        assert_eq!(class.kind(), Kind::Overload);
        assert_eq!(
            class.hint(),
            ServerHint::RetryAfter(Duration::from_millis(100))
        );

        let proxy_503 = Response::builder().status(503).body(()).unwrap();
        let Verdict::Done(class) = GrpcClassifier::new().classify_response(&proxy_503) else {
            panic!("a non-200 response decides on its head");
        };
        assert_eq!(class.kind(), Kind::Unavailable);
        assert_eq!(class.grpc_code(), Some(GrpcCode::Unavailable));

        // Every status a proxy may answer with: the kind is that of the code gRPC maps it to,
        // except a 429 — shedding, whatever gRPC calls it.
        for status in 100..=999u16 {
            if status == 200 {
                continue;
            }
            let res = Response::builder()
                .status(status)
                .header(http::header::RETRY_AFTER, "2")
                .body(())
                .unwrap();
            let Verdict::Done(class) = GrpcClassifier::new().classify_response(&res) else {
                panic!("a non-200 response decides on its head");
            };
            let code = GrpcCode::from_http_status(StatusCode::from_u16(status).unwrap());
            let kind = if status == 429 {
                Kind::Overload
            } else {
                code.kind()
            };
            assert_eq!(class.kind(), kind, "{status}");
            assert_eq!(class.grpc_code(), Some(code), "{status}");
            assert_eq!(class.status(), Some(status), "{status}");
            assert_eq!(class.hint(), ServerHint::RetryAfter(Duration::from_secs(2)));
        }
        let proxy_400 = Response::builder().status(400).body(()).unwrap();
        let Verdict::Done(class) = GrpcClassifier::new().classify_response(&proxy_400) else {
            panic!("a non-200 response decides on its head");
        };
        assert_eq!(class.grpc_code(), Some(GrpcCode::Internal));
        assert_eq!(class.kind(), Kind::ServerError);
    }

    #[test]
    fn status_in_trailers_decides_at_end_of_stream() {
        let res = Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let Verdict::AtEndOfStream(eos) = GrpcClassifier::new().classify_response(&res) else {
            panic!("a 200 without grpc-status defers to the trailers");
        };
        let ok = eos.classify_eos(Some(&headers(&[(GRPC_STATUS, "0")])));
        assert_eq!(ok, Class::success().with_grpc_code(GrpcCode::Ok));
        let unavailable = eos.classify_eos(Some(&headers(&[(GRPC_STATUS, "14")])));
        assert_eq!(unavailable.kind(), Kind::Unavailable);
        assert_eq!(unavailable.grpc_code(), Some(GrpcCode::Unavailable));
        let missing = eos.classify_eos(None);
        assert_eq!(missing.kind(), Kind::ServerError);
        let no_status = eos.classify_eos(Some(&headers(&[("x-other", "1")])));
        assert_eq!(no_status.kind(), Kind::ServerError);
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn tonic_codes_convert_both_ways() {
        for code in GrpcCode::ALL {
            let tonic_code = tonic::Code::from(code);
            assert_eq!(tonic_code as i32, code as i32);
            assert_eq!(GrpcCode::from(tonic_code), code);
        }
    }

    proptest! {
        #[test]
        fn pushback_round_trips(ms in any::<u64>()) {
            prop_assert_eq!(parse_pushback(ms.to_string().as_bytes()), Some(Duration::from_millis(ms)));
        }

        #[test]
        fn negative_pushback_means_do_not_retry(ms in 1u64..) {
            prop_assert_eq!(parse_pushback(format!("-{ms}").as_bytes()), None);
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = parse_pushback(&bytes);
            let _ = GrpcCode::from_header(&bytes);
        }
    }
}
