//! `Retry-After` parsing with an injectable wall clock.
//!
//! `Retry-After` (RFC 9110 §10.2.3) is either delta-seconds or an HTTP-date. An HTTP-date is a
//! wall-clock instant, so turning it into a delay needs "now" — from a [`WallClock`], so that
//! tests pass a [`FixedClock`] and get exact answers.

use std::time::{Duration, SystemTime};

/// A source of wall-clock time, for turning HTTP-dates into delays.
pub trait WallClock {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A wall clock stopped at one instant, for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedClock(pub SystemTime);

impl WallClock for FixedClock {
    fn now(&self) -> SystemTime {
        self.0
    }
}

/// Parses a `Retry-After` value into a delay from `now`.
///
/// Accepts delta-seconds (`120`) and the three HTTP-date formats (IMF-fixdate, RFC 850, asctime).
/// A date in the past means "now" (zero). Surrounding whitespace is ignored. Anything else —
/// signs, fractions, garbage, non-ASCII — is malformed and gives `None`; a malformed hint is
/// ignored, never an error. Delays are not capped here; [`HttpClassifier`](super::HttpClassifier)
/// caps them.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use stanchion::classify::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
/// assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after(b"Wed, 21 Oct 2015 07:30:00 GMT", now),
///     Some(Duration::from_secs(120))
/// );
/// assert_eq!(parse_retry_after(b"-1", now), None);
/// ```
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    // Delta-seconds; absurd values saturate instead of being rejected (the cap applies later).
    if let Some(secs) = crate::wire::parse_decimal(value) {
        return Some(Duration::from_secs(secs));
    }
    let value = std::str::from_utf8(value).ok()?.trim();
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    use super::*;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_445_412_480)
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"0", Some(0)),
            (b"5", Some(5)),
            (b" 7 ", Some(7)),
            (b"0030", Some(30)),
            (b"99999999999999999999999", Some(u64::MAX)),
            (b"Wed, 21 Oct 2015 07:28:10 GMT", Some(10)),
            (b"Wednesday, 21-Oct-15 07:28:10 GMT", Some(10)),
            (b"Wed Oct 21 07:28:10 2015", Some(10)),
            (b"Wed, 21 Oct 2015 07:00:00 GMT", Some(0)),
            (b"", None),
            (b"   ", None),
            (b"-5", None),
            (b"+5", None),
            (b"1.5", None),
            (b"5s", None),
            (b"soon", None),
            (b"Wed, 32 Oct 2015 07:28:10 GMT", None),
            (b"\xff\xfe", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_retry_after(input, now()),
                expected.map(Duration::from_secs),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    proptest! {
        #[test]
        fn delta_seconds_round_trip(secs in any::<u64>()) {
            prop_assert_eq!(
                parse_retry_after(secs.to_string().as_bytes(), now()),
                Some(Duration::from_secs(secs))
            );
        }

        #[test]
        fn http_dates_round_trip(secs in 0u64..=10 * 365 * 24 * 3600) {
            let date = httpdate::fmt_http_date(now() + Duration::from_secs(secs));
            prop_assert_eq!(
                parse_retry_after(date.as_bytes(), now()),
                Some(Duration::from_secs(secs))
            );
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_retry_after(&bytes, now());
        }

        #[test]
        fn never_panics_on_date_like_text(text in "[A-Za-z]{3}, [0-9]{1,3} [A-Za-z]{3} [0-9]{1,6} [0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3} GMT") {
            let _ = parse_retry_after(text.as_bytes(), now());
        }
    }
}
