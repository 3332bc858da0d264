//! Idempotency keys: minted (UUIDv4 from the operating system's CSPRNG, laid out by `uuid`), validated, and written
//! as a Structured Field string, as draft-ietf-httpapi-idempotency-key-header defines.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use rand::TryRng;

use crate::Error;

/// The longest key accepted: 255 characters.
pub const MAX_KEY_LEN: usize = 255;

/// How a minted key is written on the wire.
///
/// Deployed payment APIs (Stripe, Adyen, …) treat `Idempotency-Key` as an opaque string and
/// would store the quotes of a structured-field string as part of the key: **bare** is the
/// default. The IETF draft (draft-ietf-httpapi-idempotency-key-header) defines the value as an
/// sf-string: **quoted**, as an option. A key the caller put in the header is sent as given,
/// either way; the server layer reads both forms as the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum KeyFormat {
    /// `Idempotency-Key: 8e0f…` (the default).
    #[default]
    Bare,
    /// `Idempotency-Key: "8e0f…"` (an sf-string, per the draft).
    Quoted,
}

/// One idempotency key, the same on every attempt of a logical request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// A fresh random key: a UUIDv4 (RFC 9562) from the operating system's CSPRNG.
    pub fn mint() -> Result<Self, Error> {
        let mut bytes = [0u8; 16];
        rand::rngs::SysRng.try_fill_bytes(&mut bytes).map_err(|_| {
            Error::InvalidIdempotencyKey {
                reason: "the operating system's random source failed",
            }
        })?;
        // Sets the version (4) and variant (RFC 9562) bits.
        let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        Ok(IdempotencyKey(
            uuid.hyphenated().encode_lower(&mut text).into(),
        ))
    }

    /// A key from its text: 1 to 255 printable ASCII characters (the sf-string set).
    pub fn new(key: &str) -> Result<Self, Error> {
        if key.is_empty() {
            return Err(Error::InvalidIdempotencyKey {
                reason: "the key is empty",
            });
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidIdempotencyKey {
                reason: "the key is longer than 255 characters",
            });
        }
        if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err(Error::InvalidIdempotencyKey {
                reason: "the key has characters outside printable ASCII",
            });
        }
        Ok(IdempotencyKey(key.into()))
    }

    /// Reads a key from a header value: an sf-string (`"…"`, with `\"` and `\\` escapes) or,
    /// as Stripe sends them, the bare key.
    pub fn from_header(value: &HeaderValue) -> Result<Self, Error> {
        let bytes = value.as_bytes();
        let Some(inner) = bytes.strip_prefix(b"\"") else {
            let text = std::str::from_utf8(bytes).map_err(|_| Error::InvalidIdempotencyKey {
                reason: "the key has characters outside printable ASCII",
            })?;
            return IdempotencyKey::new(text.trim());
        };
        let mut key = String::with_capacity(inner.len());
        let mut chars = inner.iter().copied();
        loop {
            match chars.next() {
                None => {
                    return Err(Error::InvalidIdempotencyKey {
                        reason: "the quoted key has no closing quote",
                    });
                }
                Some(b'"') => break,
                Some(b'\\') => match chars.next() {
                    Some(c @ (b'"' | b'\\')) => key.push(c as char),
                    _ => {
                        return Err(Error::InvalidIdempotencyKey {
                            reason: "the quoted key has an invalid escape",
                        });
                    }
                },
                Some(c) if (0x20..=0x7e).contains(&c) => key.push(c as char),
                Some(_) => {
                    return Err(Error::InvalidIdempotencyKey {
                        reason: "the key has characters outside printable ASCII",
                    });
                }
            }
        }
        if chars.next().is_some() {
            return Err(Error::InvalidIdempotencyKey {
                reason: "the quoted key has text after its closing quote",
            });
        }
        IdempotencyKey::new(&key)
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a header value in `format`: bare (what deployed APIs take), or an
    /// sf-string.
    /// A key that would not read back as itself when bare — it starts with `"` (it would be
    /// read as an sf-string) or has leading or trailing spaces (servers trim them) — is written
    /// quoted whatever the format.
    pub fn to_header_as(&self, format: KeyFormat) -> HeaderValue {
        let ambiguous = self.0.starts_with('"') || self.0.trim() != &*self.0;
        match format {
            KeyFormat::Bare if !ambiguous => match HeaderValue::from_str(&self.0) {
                Ok(value) => value,
                // Printable ASCII only, checked when the key was made: not reached.
                Err(_) => self.to_header(),
            },
            _ => self.to_header(),
        }
    }

    /// The key as an sf-string header value: quoted, with `"` and `\` escaped.
    pub fn to_header(&self) -> HeaderValue {
        let mut quoted = String::with_capacity(self.0.len() + 2);
        quoted.push('"');
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        quoted.push('"');
        // Printable ASCII only, checked when the key was made.
        HeaderValue::from_str(&quoted).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minted_keys_are_uuid_v4_and_differ() {
        let a = IdempotencyKey::mint().unwrap();
        let b = IdempotencyKey::mint().unwrap();
        assert_ne!(a, b);
        let s = a.as_str();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4", "version nibble: {s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "variant: {s}");
        assert_eq!(a.to_header(), format!("\"{s}\"").as_str());
    }

    #[test]
    fn keys_are_written_bare_or_quoted_and_read_back_alike() {
        let key = IdempotencyKey::new("order-7").unwrap();
        assert_eq!(key.to_header_as(KeyFormat::Bare), "order-7");
        assert_eq!(key.to_header_as(KeyFormat::Quoted), "\"order-7\"");
        for format in [KeyFormat::Bare, KeyFormat::Quoted] {
            assert_eq!(
                IdempotencyKey::from_header(&key.to_header_as(format)).unwrap(),
                key
            );
        }
        // Keys that would not read back as themselves bare are quoted.
        for odd in ["\"k\"", " k", "k ", "\"", "a\"b"] {
            let key = IdempotencyKey::new(odd).unwrap();
            let written = key.to_header_as(KeyFormat::Bare);
            assert_eq!(
                IdempotencyKey::from_header(&written).unwrap(),
                key,
                "{odd:?}"
            );
        }
    }

    #[test]
    fn header_values_quoted_or_bare() {
        let parse = |v: &'static str| IdempotencyKey::from_header(&HeaderValue::from_static(v));
        assert_eq!(parse("\"abc-123\"").unwrap().as_str(), "abc-123");
        assert_eq!(parse("abc-123").unwrap().as_str(), "abc-123");
        assert_eq!(parse("\"a\\\"b\\\\c\"").unwrap().as_str(), "a\"b\\c");
        for bad in ["\"", "\"abc", "\"a\"b", "\"a\\x\"", "", "\"\""] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let long = "k".repeat(256);
        assert!(IdempotencyKey::new(&long).is_err());
        assert!(IdempotencyKey::new(&long[..255]).is_ok());
    }

    proptest! {
        #[test]
        fn any_header_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(value) = HeaderValue::from_bytes(&bytes)
                && let Ok(key) = IdempotencyKey::from_header(&value)
            {
                // What parses round-trips through the quoted form.
                prop_assert_eq!(IdempotencyKey::from_header(&key.to_header()).unwrap(), key);
            }
        }

        #[test]
        fn valid_keys_round_trip(key in "[ -~]{1,255}") {
            let key = IdempotencyKey::new(&key).unwrap();
            prop_assert_eq!(IdempotencyKey::from_header(&key.to_header()).unwrap(), key.clone());
            // Written bare (or quoted where bare would not read back), read back the same.
            let bare = key.to_header_as(KeyFormat::Bare);
            prop_assert_eq!(IdempotencyKey::from_header(&bare).unwrap(), key);
        }
    }
}
