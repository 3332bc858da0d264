//! The `grpc-timeout` header: `TimeoutValue TimeoutUnit`, at most 8 ASCII digits followed by one
//! of `H` (hours), `M` (minutes), `S` (seconds), `m` (ms), `u` (µs), `n` (ns), as the gRPC over
//! HTTP/2 spec defines it.

use std::time::Duration;

const MAX_VALUE: u128 = 99_999_999;

/// Units from finest to coarsest, with their length in nanoseconds.
const UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];

/// Parses a `grpc-timeout` value; `None` if it is not 1–8 digits and a valid unit.
///
/// ```
/// use std::time::Duration;
/// use stanchion::deadline::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(b"1500m"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_grpc_timeout(b"2H"), Some(Duration::from_secs(7200)));
/// assert_eq!(parse_grpc_timeout(b"123456789S"), None); // nine digits
/// assert_eq!(parse_grpc_timeout(b"10s"), None); // `s` is not a unit; `S` is
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let value = value.trim_ascii();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = crate::wire::parse_decimal(digits)?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The value and unit that encode `timeout`: the finest unit in which it fits in 8 digits,
/// rounded down, so the encoded timeout is never longer than `timeout`.
fn encode(timeout: Duration) -> (u64, u8) {
    let nanos = timeout.as_nanos();
    for (unit, len) in UNITS {
        let value = nanos / len;
        if value <= MAX_VALUE {
            // Fits in 8 digits, so in a u64.
            return (value as u64, unit);
        }
    }
    (MAX_VALUE as u64, b'H')
}

/// Formats `timeout` as a `grpc-timeout` value, rounding down to the finest unit that fits in
/// 8 digits (relative error below 10⁻⁵; never longer than `timeout`).
///
/// ```
/// use std::time::Duration;
/// use stanchion::deadline::format_grpc_timeout;
///
/// assert_eq!(format_grpc_timeout(Duration::from_millis(50)), "50000000n");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(2)), "2000000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(30)), "30000000u");
/// ```
pub fn format_grpc_timeout(timeout: Duration) -> String {
    let (value, unit) = encode(timeout);
    format!("{value}{}", unit as char)
}

/// `timeout` as a header value, without going through a `String`.
pub(crate) fn grpc_timeout_header(timeout: Duration) -> http::HeaderValue {
    let (mut value, unit) = encode(timeout);
    let mut buf = [0u8; 9];
    let mut start = 8;
    buf[8] = unit;
    loop {
        start -= 1;
        buf[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&buf[start..]).expect("digits and a unit letter are valid")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u8], Option<Duration>)] = &[
            (b"0n", Some(Duration::ZERO)),
            (b"1n", Some(Duration::from_nanos(1))),
            (b"10u", Some(Duration::from_micros(10))),
            (b"250m", Some(Duration::from_millis(250))),
            (b"3S", Some(Duration::from_secs(3))),
            (b"5M", Some(Duration::from_secs(300))),
            (b"99999999H", Some(Duration::from_secs(99_999_999 * 3600))),
            (b" 7S ", Some(Duration::from_secs(7))),
            (b"00000001S", Some(Duration::from_secs(1))),
            (b"", None),
            (b"S", None),
            (b"5", None),
            (b"5x", None),
            (b"5s", None),
            (b"-5S", None),
            (b"+5S", None),
            (b"5 S", None),
            (b"1.5S", None),
            (b"123456789m", None),
            (b"\xffS", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_grpc_timeout(input), *expected, "{input:?}");
        }
    }

    #[test]
    fn header_and_string_agree() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(7),
            Duration::from_millis(1234),
            Duration::from_secs(86_400 * 400),
            Duration::MAX,
        ] {
            assert_eq!(grpc_timeout_header(d), format_grpc_timeout(d).as_str());
        }
        assert_eq!(format_grpc_timeout(Duration::MAX), "99999999H");
    }

    proptest! {
        #[test]
        fn wire_values_round_trip(value in 0u64..=99_999_999, unit in prop::sample::select(vec!['n', 'u', 'm', 'S', 'M', 'H'])) {
            let parsed = parse_grpc_timeout(format!("{value}{unit}").as_bytes()).unwrap();
            let formatted = format_grpc_timeout(parsed);
            prop_assert!(formatted.len() <= 9);
            prop_assert_eq!(parse_grpc_timeout(formatted.as_bytes()), Some(parsed));
        }

        #[test]
        fn durations_round_trip_never_longer(secs in 0u64..=99_999_999 * 3600, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let back = parse_grpc_timeout(format_grpc_timeout(d).as_bytes()).unwrap();
            prop_assert!(back <= d);
            prop_assert!((d - back) * 100_000 <= d, "{:?} -> {:?}", d, back);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = parse_grpc_timeout(&bytes);
        }
    }
}
