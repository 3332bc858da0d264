//! Configuration as data (feature `serde`): how the settings' values are written, shared by
//! every layer's serde impls.
//!
//! Why a module of its own: a pool, a breaker, a bulkhead, a backoff and a retry budget are each
//! (de)serialized next to their builder (`data.rs` in their directories, which can read their
//! private settings); [`ClientConfig`](crate::client::ClientConfig) puts them together. What
//! they share — a duration as `250ms` / `30s` / `5m`, a set of gRPC codes as their names — is
//! written once, here.

pub(crate) mod duration;

/// How a setting that can be turned off is written when it is: `"off"`.
pub(crate) const OFF: &str = "off";

/// A setting that can be turned off (`bulkhead`): `"off"` (or `null`) is none, none is written
/// `"off"` (a format without nulls, TOML, would drop a `null` and bring the default back), and
/// anything else is the setting's own map.
pub(crate) mod switch {
    use std::marker::PhantomData;

    use serde::de::{MapAccess, Visitor, value::MapAccessDeserializer};

    use super::*;

    #[allow(clippy::ref_option)]
    pub(crate) fn serialize<T: Serialize, S: Serializer>(
        value: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => value.serialize(s),
            None => s.serialize_str(OFF),
        }
    }

    pub(crate) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        d.deserialize_any(Switch(PhantomData))
    }

    struct Switch<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Switch<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "its settings, or \"{OFF}\"")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            if text == OFF {
                Ok(None)
            } else {
                Err(E::custom(format!(
                    "{text:?} is neither its settings nor \"{OFF}\""
                )))
            }
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Self::Value, M::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
    }
}

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::classify::{GrpcCode, GrpcCodes};

/// One gRPC code, written as its name (`UNAVAILABLE`); read from a name in any case or a
/// number 0 to 16, as the gRPC service config accepts codes.
pub(crate) fn code_from(value: &serde_json::Value) -> Result<GrpcCode, String> {
    match value {
        serde_json::Value::String(name) => {
            GrpcCode::from_name(name).ok_or_else(|| format!("{name:?} is not a gRPC status code"))
        }
        serde_json::Value::Number(n) => match n.as_u64() {
            Some(v @ 0..=16) => Ok(GrpcCode::from_i32(v as i32)),
            _ => Err(format!("{n} is not a gRPC status code (0 to 16)")),
        },
        other => Err(format!("{other} is not a gRPC status code")),
    }
}

/// A set of gRPC codes as a list of names (`["UNAVAILABLE", "ABORTED"]`).
pub(crate) mod codes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(codes: &GrpcCodes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(codes.iter().map(GrpcCode::name))
    }
}

/// An optional set of gRPC codes (absent or `null`: not set).
pub(crate) mod opt_codes {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        codes: &Option<GrpcCodes>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match codes {
            Some(codes) => super::codes::serialize(codes, s),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<GrpcCodes>, D::Error> {
        let values = Option::<Vec<serde_json::Value>>::deserialize(d)?;
        values
            .map(|values| {
                values
                    .iter()
                    .map(|v| code_from(v).map_err(D::Error::custom))
                    .collect()
            })
            .transpose()
    }
}

/// A header name, as text (checked when read).
pub(crate) mod header {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        name: &http::HeaderName,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        name.as_str().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<http::HeaderName, D::Error> {
        let text = String::deserialize(d)?;
        http::HeaderName::from_bytes(text.as_bytes())
            .map_err(|_| D::Error::custom(format!("{text:?} is not a header name")))
    }
}

/// An optional header name.
pub(crate) mod opt_header {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        name: &Option<http::HeaderName>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        name.as_ref().map(http::HeaderName::as_str).serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<http::HeaderName>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                http::HeaderName::from_bytes(text.as_bytes())
                    .map_err(|_| D::Error::custom(format!("{text:?} is not a header name")))
            })
            .transpose()
    }
}
