//! gRPC status codes, in headers (trailers-only responses) or trailers, and retry pushback.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};

use super::Classify;
use super::{Class, ClassifyEos, DEFAULT_MAX_DELAY_HINT, Kind, ServerHint, Verdict};

const GRPC_STATUS: &str = "grpc-status";
const GRPC_PUSHBACK: &str = "grpc-retry-pushback-ms";

/// A gRPC status code (independent of tonic, so gRPC responses classify with only `http`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl GrpcCode {
    const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The code for a numeric value; values outside 0..=16 are UNKNOWN, as the gRPC spec says.
    pub fn from_i32(value: i32) -> GrpcCode {
        usize::try_from(value)
            .ok()
            .and_then(|i| GrpcCode::ALL.get(i).copied())
            .unwrap_or(GrpcCode::Unknown)
    }

    /// Parses a `grpc-status` value; anything but a decimal code 0..=16 is UNKNOWN.
    pub fn from_header(value: &[u8]) -> GrpcCode {
        std::str::from_utf8(value)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<i32>().ok())
            .map_or(GrpcCode::Unknown, GrpcCode::from_i32)
    }

    /// The code a non-200 HTTP status maps to, per gRPC's "HTTP to gRPC status code mapping".
    pub fn from_http_status(status: StatusCode) -> GrpcCode {
        match status.as_u16() {
            400 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502 | 503 | 504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
        }
    }

    /// What kind of outcome this code is.
    pub fn kind(self) -> Kind {
        match self {
            GrpcCode::Ok => Kind::Success,
            GrpcCode::Cancelled => Kind::Cancelled,
            GrpcCode::DeadlineExceeded => Kind::Timeout,
            GrpcCode::ResourceExhausted => Kind::Overload,
            GrpcCode::Unavailable => Kind::Unavailable,
            GrpcCode::Unknown | GrpcCode::Internal | GrpcCode::DataLoss => Kind::ServerError,
            GrpcCode::InvalidArgument
            | GrpcCode::NotFound
            | GrpcCode::AlreadyExists
            | GrpcCode::PermissionDenied
            | GrpcCode::FailedPrecondition
            | GrpcCode::Aborted
            | GrpcCode::OutOfRange
            | GrpcCode::Unimplemented
            | GrpcCode::Unauthenticated => Kind::ClientError,
        }
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(feature = "tonic")]
impl From<tonic::Code> for GrpcCode {
    fn from(code: tonic::Code) -> GrpcCode {
        GrpcCode::from_i32(code as i32)
    }
}

#[cfg(feature = "tonic")]
impl From<GrpcCode> for tonic::Code {
    fn from(code: GrpcCode) -> tonic::Code {
        tonic::Code::from_i32(code as i32)
    }
}

/// A set of gRPC codes: a method's retryable codes, as in a gRPC A6 retry policy.
///
/// ```
/// use stanchion::classify::{GrpcCode, GrpcCodes};
///
/// let codes = GrpcCodes::from_iter([GrpcCode::Unavailable, GrpcCode::ResourceExhausted]);
/// assert!(codes.contains(GrpcCode::ResourceExhausted));
/// assert!(!codes.contains(GrpcCode::Internal));
/// assert_eq!(GrpcCodes::default(), GrpcCodes::from_iter([GrpcCode::Unavailable]));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcCodes(u32);

impl GrpcCodes {
    /// No codes.
    pub const NONE: GrpcCodes = GrpcCodes(0);

    /// The set with `code` added.
    pub const fn with(self, code: GrpcCode) -> GrpcCodes {
        GrpcCodes(self.0 | 1 << code as u32)
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: GrpcCode) -> bool {
        self.0 & (1 << code as u32) != 0
    }
}

/// UNAVAILABLE only: the one code that is safe to retry for any method (gRPC A6's example policy).
impl Default for GrpcCodes {
    fn default() -> Self {
        GrpcCodes::NONE.with(GrpcCode::Unavailable)
    }
}

impl FromIterator<GrpcCode> for GrpcCodes {
    fn from_iter<I: IntoIterator<Item = GrpcCode>>(iter: I) -> Self {
        iter.into_iter().fold(GrpcCodes::NONE, GrpcCodes::with)
    }
}

impl fmt::Debug for GrpcCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(GrpcCode::ALL.iter().filter(|c| self.contains(**c)))
            .finish()
    }
}

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

/// Classifies gRPC responses by their status code.
///
/// The status comes from the headers of a trailers-only response, from the trailers otherwise,
/// or — for a non-200 HTTP status, e.g. from a proxy — from gRPC's HTTP-to-gRPC mapping. A stream
/// that ends without a `grpc-status` is INTERNAL. The kind of each code: OK success; CANCELLED
/// cancelled; DEADLINE_EXCEEDED timeout; RESOURCE_EXHAUSTED overload; UNAVAILABLE unavailable;
/// UNKNOWN, INTERNAL, DATA_LOSS server error; the rest are the caller's own errors.
///
/// Every gRPC call is a POST, so which codes are retryable is a per-method policy (gRPC A6): the
/// [`retryable_codes`](Self::retryable_codes), default UNAVAILABLE only. `grpc-retry-pushback-ms`
/// becomes a [`ServerHint`]: a delay (capped at 30 s by default) or, when negative or unparsable,
/// [`ServerHint::DoNotRetry`].
#[derive(Debug, Clone, Copy)]
pub struct GrpcClassifier {
    retryable: GrpcCodes,
    max_delay_hint: Duration,
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClassifier {
    /// Retries UNAVAILABLE only; caps pushback at 30 s.
    pub fn new() -> Self {
        GrpcClassifier {
            retryable: GrpcCodes::default(),
            max_delay_hint: DEFAULT_MAX_DELAY_HINT,
        }
    }

    /// The codes worth retrying for this method.
    pub fn retryable_codes(mut self, codes: GrpcCodes) -> Self {
        self.retryable = codes;
        self
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
            return Class::success();
        }
        let hint = match metadata.get(GRPC_PUSHBACK) {
            None => ServerHint::None,
            Some(v) => parse_pushback(v.as_bytes()).map_or(ServerHint::DoNotRetry, |d| {
                ServerHint::RetryAfter(d.min(self.max_delay_hint))
            }),
        };
        Class::new(kind)
            .with_retryable(self.retryable.contains(code))
            .with_hint(hint)
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
            return Verdict::Done(
                self.classify_code(GrpcCode::from_http_status(res.status()), headers),
            );
        }
        Verdict::AtEndOfStream(GrpcEos { classifier: *self })
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
        let cases: &[(&str, GrpcCode, Kind, bool)] = &[
            ("0", GrpcCode::Ok, Success, false),
            ("1", GrpcCode::Cancelled, Cancelled, false),
            ("2", GrpcCode::Unknown, ServerError, false),
            ("3", GrpcCode::InvalidArgument, ClientError, false),
            ("4", GrpcCode::DeadlineExceeded, Timeout, false),
            ("5", GrpcCode::NotFound, ClientError, false),
            ("8", GrpcCode::ResourceExhausted, Overload, false),
            ("10", GrpcCode::Aborted, ClientError, false),
            ("13", GrpcCode::Internal, ServerError, false),
            ("14", GrpcCode::Unavailable, Unavailable, true),
            ("15", GrpcCode::DataLoss, ServerError, false),
            ("16", GrpcCode::Unauthenticated, ClientError, false),
            ("17", GrpcCode::Unknown, ServerError, false),
            ("-1", GrpcCode::Unknown, ServerError, false),
            ("ok", GrpcCode::Unknown, ServerError, false),
            ("014", GrpcCode::Unknown, ServerError, false),
        ];
        for &(value, code, kind, retryable) in cases {
            assert_eq!(GrpcCode::from_header(value.as_bytes()), code, "{value}");
            let class = GrpcClassifier::new().classify_code(code, &HeaderMap::new());
            assert_eq!(class.kind(), kind, "{value}");
            assert_eq!(class.is_retryable(), retryable, "{value}");
        }
    }

    #[test]
    fn retryable_codes_are_per_policy() {
        let policy = GrpcClassifier::new().retryable_codes(GrpcCodes::from_iter([
            GrpcCode::Unavailable,
            GrpcCode::ResourceExhausted,
            GrpcCode::Internal,
        ]));
        for code in [
            GrpcCode::Unavailable,
            GrpcCode::ResourceExhausted,
            GrpcCode::Internal,
        ] {
            assert!(policy.classify_code(code, &HeaderMap::new()).is_retryable());
        }
        assert!(
            !policy
                .classify_code(GrpcCode::DataLoss, &HeaderMap::new())
                .is_retryable()
        );
        // OK is never "retryable", whatever the policy says.
        let odd = GrpcClassifier::new().retryable_codes(GrpcCodes::NONE.with(GrpcCode::Ok));
        assert!(
            !odd.classify_code(GrpcCode::Ok, &HeaderMap::new())
                .is_retryable()
        );
    }

    #[test]
    fn pushback_table() {
        let cases: &[(&str, ServerHint, bool)] = &[
            ("0", ServerHint::RetryAfter(Duration::ZERO), true),
            (
                "1500",
                ServerHint::RetryAfter(Duration::from_millis(1500)),
                true,
            ),
            (
                "600000",
                ServerHint::RetryAfter(Duration::from_secs(30)),
                true,
            ),
            ("-1", ServerHint::DoNotRetry, false),
            ("abc", ServerHint::DoNotRetry, false),
            ("1.5", ServerHint::DoNotRetry, false),
            ("", ServerHint::DoNotRetry, false),
        ];
        for &(value, hint, retryable) in cases {
            let md = headers(&[(GRPC_PUSHBACK, value)]);
            let class = GrpcClassifier::new().classify_code(GrpcCode::Unavailable, &md);
            assert_eq!(class.hint(), hint, "{value:?}");
            assert_eq!(class.is_retryable(), retryable, "{value:?}");
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
        assert!(class.is_retryable());

        let proxy_404 = Response::builder().status(404).body(()).unwrap();
        let Verdict::Done(class) = GrpcClassifier::new().classify_response(&proxy_404) else {
            panic!("a non-200 response decides on its head");
        };
        assert_eq!(class.kind(), Kind::ClientError);
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
        assert_eq!(ok, Class::success());
        let unavailable = eos.classify_eos(Some(&headers(&[(GRPC_STATUS, "14")])));
        assert_eq!(unavailable.kind(), Kind::Unavailable);
        assert!(unavailable.is_retryable());
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
