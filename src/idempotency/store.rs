//! The contract between the server layer and where records live: one atomic claim, lease
//! renewal, completion and release, each fenced by the claimant's lease token.

use std::future::Future;
use std::time::Duration;

use super::record::{Fingerprint, StoredResponse};
use crate::BoxError;

/// Identifies one claim of a key: only the holder of the token may renew, complete or release
/// the record, so an executor whose lease ran out cannot overwrite the one that took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseToken(pub u64);

impl LeaseToken {
    /// A fresh token from the operating system's random source.
    pub fn random() -> Result<LeaseToken, BoxError> {
        use rand::TryRng;
        let token = rand::rngs::SysRng
            .try_next_u64()
            .map_err(|e| format!("random source failed: {e}"))?;
        Ok(LeaseToken(token))
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// No live record: this claimant now holds the key, with a lease.
    Acquired,
    /// Another request with this key is running; its fingerprint.
    InFlight(Fingerprint),
    /// A request with this key finished; its response.
    Completed(Box<StoredResponse>),
}

/// Where idempotency records live: [`MemoryStore`](super::MemoryStore) for one instance,
/// [`RedisStore`](super::RedisStore) (feature `redis`) for several.
///
/// Records are addressed by an id the layer builds from the tenant scope and the key. Every
/// operation must be atomic with respect to the others on the same id.
pub trait IdempotencyStore: Clone + Send + Sync + 'static {
    /// Claims `id` for `token` with a lease of `lease`, unless a live record exists — in which
    /// case it is returned. One atomic step: of many concurrent claims, exactly one acquires.
    fn claim(
        &self,
        id: &str,
        fingerprint: Fingerprint,
        token: LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, BoxError>> + Send;

    /// Extends `token`'s lease on `id` to `lease` from now. `Ok(false)` if `token` no longer
    /// holds it (the lease ran out and the record is gone or was claimed again).
    fn renew(
        &self,
        id: &str,
        token: LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send;

    /// Replaces `token`'s in-flight record with the finished response, kept for `ttl`.
    /// `Ok(false)` if `token` no longer holds the record.
    fn complete(
        &self,
        id: &str,
        token: LeaseToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send;

    /// Deletes `token`'s in-flight record, so the key can run again (an outcome not worth
    /// storing, such as a 5xx). `Ok(false)` if `token` no longer holds it.
    fn release(
        &self,
        id: &str,
        token: LeaseToken,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send;
}
