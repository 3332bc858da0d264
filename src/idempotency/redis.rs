//! Records on Redis, shared by every server instance: the claim is one Lua script (GET, or SET
//! with a PX lease — atomic, as every script is on Redis), and renewal, completion and release
//! are scripts that act only while the record still holds the caller's lease token.
//!
//! Values: an in-flight record is `L` + the 8-byte token + the 32-byte fingerprint; a finished
//! one is the stored response's binary form (tag `D`). Keys are `{prefix}{scope length}:{scope}:
//! {key}` (default prefix `stanchion:idempotency:`). Redis expires both on its own: the lease as
//! the in-flight record's PX, the TTL as the finished record's.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::record::{self, Fingerprint, StoredResponse};
use super::store::{Claim, IdempotencyStore, LeaseToken};
use crate::BoxError;

/// The default key prefix on Redis.
pub const DEFAULT_REDIS_PREFIX: &str = "stanchion:idempotency:";

const CLAIM: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

const RENEW: &str = r"
if string.sub(redis.call('GET', KEYS[1]) or '', 1, 9) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

const COMPLETE: &str = r"
if string.sub(redis.call('GET', KEYS[1]) or '', 1, 9) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

const RELEASE: &str = r"
if string.sub(redis.call('GET', KEYS[1]) or '', 1, 9) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

#[derive(Debug)]
struct Scripts {
    claim: Script,
    renew: Script,
    complete: Script,
    release: Script,
}

/// Idempotency records on Redis, for several server instances.
///
/// Built on the `redis` crate's [`ConnectionManager`] (one multiplexed connection, reconnected
/// on failure). When Redis cannot be reached the layer answers 503: it never runs a keyed
/// request it could not claim.
///
/// ```no_run
/// # async fn run() -> Result<(), stanchion::BoxError> {
/// use stanchion::idempotency::RedisStore;
///
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: std::sync::Arc<str>,
    scripts: std::sync::Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port/db`).
    pub async fn connect(url: &str) -> Result<RedisStore, BoxError> {
        let client = redis::Client::open(url)?;
        Ok(RedisStore::new(ConnectionManager::new(client).await?))
    }

    /// A store on an existing connection manager.
    pub fn new(connection: ConnectionManager) -> RedisStore {
        RedisStore {
            connection,
            prefix: DEFAULT_REDIS_PREFIX.into(),
            scripts: std::sync::Arc::new(Scripts {
                claim: Script::new(CLAIM),
                renew: Script::new(RENEW),
                complete: Script::new(COMPLETE),
                release: Script::new(RELEASE),
            }),
        }
    }

    /// Puts records under `prefix` instead of [`DEFAULT_REDIS_PREFIX`] (one prefix per
    /// service sharing a Redis).
    pub fn prefix(mut self, prefix: impl Into<String>) -> RedisStore {
        self.prefix = prefix.into().into();
        self
    }

    fn key(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }
}

fn in_flight(token: LeaseToken, fingerprint: Fingerprint) -> Vec<u8> {
    let mut value = Vec::with_capacity(41);
    value.push(b'L');
    value.extend_from_slice(&token.0.to_be_bytes());
    value.extend_from_slice(fingerprint.as_bytes());
    value
}

/// What renewal, completion and release compare against: the in-flight tag and the token (the
/// first 9 bytes of the in-flight value).
fn token_prefix(token: LeaseToken) -> Vec<u8> {
    let mut value = Vec::with_capacity(9);
    value.push(b'L');
    value.extend_from_slice(&token.0.to_be_bytes());
    value
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        id: &str,
        fingerprint: Fingerprint,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Claim, BoxError> {
        let mut connection = self.connection.clone();
        let held: Option<Vec<u8>> = self
            .scripts
            .claim
            .key(self.key(id))
            .arg(in_flight(token, fingerprint))
            .arg(millis(lease))
            .invoke_async(&mut connection)
            .await?;
        let Some(held) = held else {
            return Ok(Claim::Acquired);
        };
        match held.first() {
            Some(b'L') if held.len() == 41 => {
                let bytes: [u8; 32] = held[9..41].try_into()?;
                Ok(Claim::InFlight(Fingerprint::from_bytes(bytes)))
            }
            _ => Ok(Claim::Completed(Box::new(record::decode(&held)?))),
        }
    }

    async fn renew(&self, id: &str, token: LeaseToken, lease: Duration) -> Result<bool, BoxError> {
        let mut connection = self.connection.clone();
        let held: i64 = self
            .scripts
            .renew
            .key(self.key(id))
            .arg(token_prefix(token))
            .arg(millis(lease))
            .invoke_async(&mut connection)
            .await?;
        Ok(held == 1)
    }

    async fn complete(
        &self,
        id: &str,
        token: LeaseToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<bool, BoxError> {
        let mut connection = self.connection.clone();
        let held: i64 = self
            .scripts
            .complete
            .key(self.key(id))
            .arg(token_prefix(token))
            .arg(record::encode(response))
            .arg(millis(ttl))
            .invoke_async(&mut connection)
            .await?;
        Ok(held == 1)
    }

    async fn release(&self, id: &str, token: LeaseToken) -> Result<bool, BoxError> {
        let mut connection = self.connection.clone();
        let held: i64 = self
            .scripts
            .release
            .key(self.key(id))
            .arg(token_prefix(token))
            .invoke_async(&mut connection)
            .await?;
        Ok(held == 1)
    }
}
