//! Durations as text: `250ms`, `30s`, `5m`, `1h 30m` (humantime's format, nanoseconds exact).
//! Numbers are refused: a bare `30` could be seconds or milliseconds.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};

/// Writes `d` as humantime text (`30s`, `1m 30s`, `250ms`).
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// Reads humantime text.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(D::Error::custom)
}

/// Parses humantime text, with a message that says what is expected.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write it with a unit: 250ms, 30s, 5m, 1h")
    })
}

/// An optional duration: `null` (or absent, where the field's default is none) is none.
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| parse(&text).map_err(D::Error::custom))
            .transpose()
    }
}

/// A duration that can be turned off: `"off"` (or `null`) is none, and none is written
/// `"off"` — not `null`, which formats without nulls (TOML) drop, so the setting would come
/// back as its default.
pub(crate) mod off {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_str(crate::config::OFF),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) if text == crate::config::OFF => Ok(None),
            Some(text) => parse(&text)
                .map(Some)
                .map_err(|e| D::Error::custom(format!("{e}, or \"{}\"", crate::config::OFF))),
        }
    }
}

/// A route's duration setting, three ways: absent (`None`: the client's), `"off"` or `null`
/// (`Some(None)`: none of the route's own; written `"off"`), or a duration. Use with
/// `default` and `skip_serializing_if = "Option::is_none"`.
pub(crate) mod setting {
    use super::*;

    #[allow(clippy::ref_option, clippy::option_option)]
    pub(crate) fn serialize<S: Serializer>(
        d: &Option<Option<Duration>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(inner) => super::off::serialize(inner, s),
            None => s.serialize_none(),
        }
    }

    #[allow(clippy::option_option)]
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Duration>>, D::Error> {
        super::off::deserialize(d).map(Some)
    }
}
