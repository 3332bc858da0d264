//! A bulkhead's settings as data (feature `serde`): [`BulkheadBuilder`] reads and writes what
//! its methods set. Checked when the bulkhead (or the client) is built.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{AdaptiveLimit, BulkheadBuilder, Limits};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BulkheadData {
    /// The default partition's limits.
    limits: Limits,
    /// Partitions of their own, by name, in declaration order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partitions: Vec<Named>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_key: Option<PerKey>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adaptive: Option<AdaptiveLimit>,
    release_at_head: bool,
}

/// A named partition: its name and its limits (no `flatten`: it would let unknown fields
/// through).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
    limits: Limits,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PerKey {
    max: usize,
    limits: Limits,
}

impl From<&BulkheadBuilder> for BulkheadData {
    fn from(b: &BulkheadBuilder) -> Self {
        BulkheadData {
            limits: b.default,
            partitions: b
                .named
                .iter()
                .map(|(name, limits)| Named {
                    name: name.clone(),
                    limits: *limits,
                })
                .collect(),
            per_key: b.per_key.map(|(max, limits)| PerKey { max, limits }),
            adaptive: b.adaptive,
            release_at_head: !b.until_end,
        }
    }
}

impl Default for BulkheadData {
    fn default() -> Self {
        BulkheadData::from(&super::Bulkhead::builder())
    }
}

/// `{"limits": {"concurrency": 100, "queue": 50, "max_wait": "1s"}, "partitions": [{"name":
/// "health", "limits": {"concurrency": 2, "queue": 0, "max_wait": "0s"}}], "per_key": {"max":
/// 100, "limits": {…}}, "adaptive": {…}, "release_at_head": false}`.
impl Serialize for BulkheadBuilder {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        BulkheadData::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for BulkheadBuilder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let data = BulkheadData::deserialize(d)?;
        let mut b = super::Bulkhead::builder().limits(data.limits);
        for named in data.partitions {
            b = b.partition(named.name, named.limits);
        }
        if let Some(per_key) = data.per_key {
            b = b.per_key(per_key.max, per_key.limits);
        }
        if let Some(adaptive) = data.adaptive {
            b = b.adaptive(adaptive);
        }
        if data.release_at_head {
            b = b.release_at_head();
        }
        Ok(b)
    }
}
