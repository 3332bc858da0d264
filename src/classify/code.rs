//! gRPC status codes and sets of them, independent of tonic (and of the `http` feature), so
//! that every outcome — a response's status, or a transport error mapped the way gRPC's HTTP/2
//! protocol document maps it — can say which gRPC code it is.

use std::fmt;

use super::Kind;

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
    pub(crate) const ALL: [GrpcCode; 17] = [
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

    /// The code's canonical name, as gRPC writes it: `UNAVAILABLE`, `DEADLINE_EXCEEDED`.
    pub const fn name(self) -> &'static str {
        match self {
            GrpcCode::Ok => "OK",
            GrpcCode::Cancelled => "CANCELLED",
            GrpcCode::Unknown => "UNKNOWN",
            GrpcCode::InvalidArgument => "INVALID_ARGUMENT",
            GrpcCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            GrpcCode::NotFound => "NOT_FOUND",
            GrpcCode::AlreadyExists => "ALREADY_EXISTS",
            GrpcCode::PermissionDenied => "PERMISSION_DENIED",
            GrpcCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            GrpcCode::FailedPrecondition => "FAILED_PRECONDITION",
            GrpcCode::Aborted => "ABORTED",
            GrpcCode::OutOfRange => "OUT_OF_RANGE",
            GrpcCode::Unimplemented => "UNIMPLEMENTED",
            GrpcCode::Internal => "INTERNAL",
            GrpcCode::Unavailable => "UNAVAILABLE",
            GrpcCode::DataLoss => "DATA_LOSS",
            GrpcCode::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code named `name`, in any case (`UNAVAILABLE`, `unavailable`), as the gRPC service
    /// config accepts names; `None` for a name that is no code.
    pub fn from_name(name: &str) -> Option<GrpcCode> {
        GrpcCode::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

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
    #[cfg(feature = "http")]
    pub fn from_http_status(status: http::StatusCode) -> GrpcCode {
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

    /// The codes in the set, in numeric order.
    pub fn iter(self) -> impl Iterator<Item = GrpcCode> {
        GrpcCode::ALL.into_iter().filter(move |c| self.contains(*c))
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
