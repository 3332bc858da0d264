//! Idempotency keys: one key per logical request, the same on every attempt, so a retried POST
//! is not a second payment.
//!
//! The client half, [`IdempotencyKeyLayer`], gives requests that are not idempotent by method
//! (POST, PATCH) a key on the routes you opt in — minted as a UUIDv4 from the operating system's
//! CSPRNG, or the caller's own, validated — sends it as `Idempotency-Key` (a quoted
//! Structured-Field string, as draft-ietf-httpapi-idempotency-key-header defines; gRPC metadata
//! `idempotency-key` under tonic), and marks the request safe to retry. With the retry layer
//! below it, a `409 Conflict` (the first attempt is still running) is retried after backoff;
//! `422` (the key was used with another payload) and `400` are final.
//!
//! The server half, [`IdempotencyLayer`], executes each key once: the first request claims the
//! key with a lease (renewed while its handler runs), runs, and stores its response for the TTL;
//! repeats get it replayed, `409` while the first still runs, `422` if they are a different
//! request (method, path or body). Records live in a [`MemoryStore`] (one instance, bounded) or a
//! `RedisStore` (feature `redis`, shared by instances), behind the [`IdempotencyStore`] trait.
//! A cancelled handler's record is never released early: it may have half-run its side effect.
//!
//! ```
//! use stanchion::idempotency::IdempotencyKey;
//!
//! let key = IdempotencyKey::mint()?;
//! assert_eq!(key.as_str().len(), 36); // a UUIDv4
//! let bare = IdempotencyKey::from_header(&http::HeaderValue::from_static("order-7"))?;
//! assert_eq!(bare.to_header(), "\"order-7\"");
//! # Ok::<(), stanchion::Error>(())
//! ```

mod body;
mod client;
mod key;
mod memory;
mod record;
#[cfg(feature = "redis")]
mod redis;
mod server;
mod store;

pub use self::body::IdempotencyBody;
pub use self::client::{DEFAULT_KEY_HEADER, IdempotencyKeyLayer, IdempotencyKeyService, KeyFuture};
pub use self::key::{IdempotencyKey, KeyFormat, MAX_KEY_LEN};
pub use self::memory::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES, MemoryStore, MemoryStoreStats, RECORD_OVERHEAD,
    ScopeStats,
};
pub use self::record::{Fingerprint, StoredResponse};
#[cfg(feature = "redis")]
pub use self::redis::{DEFAULT_REDIS_PREFIX, RedisStore};
pub use self::server::{
    BODY_OMITTED_HEADER, DEFAULT_LEASE, DEFAULT_MAX_REQUEST_BODY, DEFAULT_MAX_RESPONSE_BODY,
    DEFAULT_RECORD_TTL, IdempotencyFuture, IdempotencyLayer, IdempotencyLayerBuilder,
    IdempotencyService, IdempotencyStats, REPLAYED_HEADER,
};
pub use self::store::{Claim, IdempotencyStore, LeaseToken};
