//! The one path-prefix match every route table uses: whole segments, never half of one.
//!
//! A prefix `/v1/pay` must not cover `/v1/payments`: routes opt requests into idempotency keys,
//! retry policies and bulkhead partitions, and a prefix that spills into a neighbouring path
//! would give that path a policy nobody chose for it. So a prefix matches the path itself, or
//! the path continued by a `/`; a prefix that already ends in `/` (a gRPC service,
//! `/pkg.Service/`, or the root `/`) matches whatever follows it.

/// How well `prefix` covers `path`: `None` when it does not, else the prefix's length (a longer
/// match is a more specific one).
#[inline]
pub(crate) fn prefix_score(prefix: &str, path: &str) -> Option<usize> {
    let rest = path.strip_prefix(prefix)?;
    let whole_segments = prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/');
    whole_segments.then_some(prefix.len())
}

/// Whether `prefix` covers `path`, segment by segment.
#[inline]
pub(crate) fn covers(prefix: &str, path: &str) -> bool {
    prefix_score(prefix, path).is_some()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn whole_segments_only() {
        let cases: &[(&str, &str, Option<usize>)] = &[
            ("/v1/payments", "/v1/payments", Some(12)),
            ("/v1/payments", "/v1/payments/42", Some(12)),
            ("/v1/payments", "/v1/paymentsXYZ", None),
            ("/v1/pay", "/v1/payments", None),
            ("/v1/payments", "/v1", None),
            ("/v1/payments/", "/v1/payments/42", Some(13)),
            ("/v1/payments/", "/v1/payments", None),
            ("/", "/anything", Some(1)),
            ("/", "/", Some(1)),
            ("/pkg.Svc/", "/pkg.Svc/Method", Some(9)),
            ("/pkg.Svc/", "/pkg.SvcMore/Method", None),
        ];
        for &(prefix, path, expected) in cases {
            assert_eq!(prefix_score(prefix, path), expected, "{prefix} ~ {path}");
        }
    }

    proptest! {
        /// A match always ends at a segment boundary of the path.
        #[test]
        fn a_match_ends_at_a_boundary(prefix in "/[a-z/]{0,6}", path in "/[a-z/]{0,10}") {
            if let Some(n) = prefix_score(&prefix, &path) {
                prop_assert!(path.starts_with(&prefix));
                prop_assert!(prefix.ends_with('/') || n == path.len() || path.as_bytes()[n] == b'/');
            }
        }
    }
}
