//! The default store: records in this process, bounded in number and in bytes, shared fairly
//! among tenants.
//!
//! Memory stays bounded under any load: at most `max_entries` records and `max_bytes` of them
//! (each record's body, headers and trailers plus a fixed overhead). When a bound is reached:
//!
//! 1. expired records go first;
//! 2. then a finished record of the **scope (tenant) using the most** of the store — the larger
//!    of its share of the entries and its share of the bytes, the claimant's new record counted
//!    (ties go to the scope whose name sorts first) — and within that scope the **least recently
//!    used** (stored or replayed). One tenant filling the store therefore evicts its own records,
//!    not another tenant's: each scope keeps at least an equal share of the store. The choice is
//!    deterministic, counted per scope and in all ([`MemoryStore::stats`]).
//! 3. Records in flight are never evicted while their lease lives — they act as locks; a claim
//!    that finds the store full of them fails, and the layer answers 503.
//!
//! A response too large to fit even after every finished record is evicted is not stored: its
//! key is released (a retry runs again) and the layer logs the store's error.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::record::{Fingerprint, StoredResponse};
use super::store::{Claim, IdempotencyStore, LeaseToken};
use crate::BoxError;
use crate::error::ConfigError;

/// The default bound on records in a [`MemoryStore`]: 10 000.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

/// The default bound on the bytes of a [`MemoryStore`]'s records: 64 MiB.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a record costs beyond its bytes (the entry, its indexes, the key): counted per record,
/// so a store of empty responses is bounded too.
pub const RECORD_OVERHEAD: usize = 256;

mod records;

use self::records::{Bounds, Records, State, record_bytes, scope_of};

#[derive(Debug)]
struct Shared {
    records: Mutex<Records>,
    bounds: Bounds,
    evicted: AtomicU64,
}

/// What a [`MemoryStore`] holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryStoreStats {
    /// Records held (in flight and finished, expired ones not yet swept included).
    pub records: usize,
    /// Records in flight (claimed, not finished).
    pub in_flight: usize,
    /// Bytes the records are counted as (see [`RECORD_OVERHEAD`]).
    pub bytes: usize,
    /// Scopes (tenants) with records.
    pub scopes: usize,
    /// Finished records evicted before their TTL to stay within the bounds, in all.
    pub evicted_early: u64,
}

/// One scope's (tenant's) part of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScopeStats {
    /// Records of the scope held now.
    pub records: usize,
    /// Bytes they are counted as.
    pub bytes: usize,
    /// The scope's finished records evicted before their TTL.
    pub evicted_early: u64,
}

/// Idempotency records in this process (the default store): bounded in entries and bytes,
/// shared fairly among scopes, expiring.
///
/// When a bound is reached, expired records go first; then a finished record of the scope
/// (tenant) using the most of the store — the larger of its share of the records and of the
/// bytes, the claimant's new record counted; ties to the name that sorts first — and within it
/// the least recently used (stored or replayed). A scope never loses a record to a claim of a
/// scope using more of the store than it does. Records in flight are never evicted while their
/// lease lives; a claim that finds nothing it may evict fails (the layer answers 503). A
/// response too large to fit is not stored and its key is released.
///
/// Clones share the records. For several server instances use
/// [`RedisStore`](super::RedisStore).
///
/// ```
/// use stanchion::idempotency::MemoryStore;
///
/// let store = MemoryStore::with_limits(50_000, 256 * 1024 * 1024)?;
/// assert_eq!((store.max_entries(), store.max_bytes()), (50_000, 256 * 1024 * 1024));
/// assert!(MemoryStore::with_max_entries(0).is_err());
/// # Ok::<(), stanchion::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A store of at most [`DEFAULT_MAX_ENTRIES`] records and [`DEFAULT_MAX_BYTES`].
    pub fn new() -> MemoryStore {
        MemoryStore::build(DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)
    }

    /// A store of at most `max_entries` records (at least 1) and [`DEFAULT_MAX_BYTES`].
    pub fn with_max_entries(max_entries: usize) -> Result<MemoryStore, ConfigError> {
        MemoryStore::with_limits(max_entries, DEFAULT_MAX_BYTES)
    }

    /// A store of at most `max_entries` records (at least 1) and `max_bytes` (at least
    /// [`RECORD_OVERHEAD`] × 4: room for a few records).
    pub fn with_limits(max_entries: usize, max_bytes: usize) -> Result<MemoryStore, ConfigError> {
        if max_entries == 0 {
            return Err(ConfigError::new("max_entries", "must be at least 1"));
        }
        if max_bytes < 4 * RECORD_OVERHEAD {
            return Err(ConfigError::new(
                "max_bytes",
                format!("{max_bytes} bytes is less than {}", 4 * RECORD_OVERHEAD),
            ));
        }
        Ok(MemoryStore::build(max_entries, max_bytes))
    }

    fn build(entries: usize, bytes: usize) -> MemoryStore {
        MemoryStore {
            shared: Arc::new(Shared {
                records: Mutex::new(Records::default()),
                bounds: Bounds { entries, bytes },
                evicted: AtomicU64::new(0),
            }),
        }
    }

    /// The bound on records.
    pub fn max_entries(&self) -> usize {
        self.shared.bounds.entries
    }

    /// The bound on bytes.
    pub fn max_bytes(&self) -> usize {
        self.shared.bounds.bytes
    }

    /// Records held now (live or expired but not yet swept).
    pub fn len(&self) -> usize {
        self.records().map.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finished records evicted before their TTL to stay within the bounds.
    pub fn evicted_early(&self) -> u64 {
        self.shared.evicted.load(Ordering::Relaxed)
    }

    /// What the store holds now.
    pub fn stats(&self) -> MemoryStoreStats {
        let records = self.records();
        MemoryStoreStats {
            records: records.map.len(),
            in_flight: records
                .map
                .values()
                .filter(|e| matches!(e.state, State::InFlight { .. }))
                .count(),
            bytes: records.bytes,
            scopes: records.scopes.values().filter(|s| s.records > 0).count(),
            evicted_early: self.evicted_early(),
        }
    }

    /// What one scope (tenant, as the layer's `scope` function names it; `""` without one)
    /// holds now, and how many of its records were evicted early while it held any; `None` if
    /// it holds none.
    pub fn scope_stats(&self, scope: &str) -> Option<ScopeStats> {
        let records = self.records();
        records.scopes.get(scope).map(|s| ScopeStats {
            records: s.records,
            bytes: s.bytes,
            evicted_early: s.evicted,
        })
    }

    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters more than losing the store, so keep serving.
        self.shared
            .records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn claim_now(
        &self,
        id: &str,
        fingerprint: Fingerprint,
        token: LeaseToken,
        lease: Duration,
    ) -> Result<Claim, BoxError> {
        let now = Instant::now();
        let mut records = self.records();
        if let Some(entry) = records.live(id, now) {
            let claim = match &entry.state {
                State::InFlight { fingerprint, .. } => Claim::InFlight(*fingerprint),
                State::Done(response) => {
                    Claim::Completed(Box::new(StoredResponse::clone(response)))
                }
            };
            records.touch(id);
            return Ok(claim);
        }
        records.remove(id);
        let scope = scope_of(id);
        let extra = RECORD_OVERHEAD + id.len();
        let bounds = self.shared.bounds;
        if !records.make_room(bounds, scope, 1, extra, now, &self.shared.evicted) {
            return Err(format!(
                "the in-memory idempotency store is full: of its {} records, none may make \
                 room (in flight, or of scopes using less of the store than this one)",
                records.map.len()
            )
            .into());
        }
        records.insert(
            id.into(),
            scope.into(),
            State::InFlight { token, fingerprint },
            crate::clock::after(now, lease),
        );
        Ok(Claim::Acquired)
    }

    /// Applies `f` to `token`'s live in-flight record; `false` if `token` does not hold one.
    /// `now` is the one instant the check and `f` both use.
    fn with_held<T>(
        &self,
        id: &str,
        token: LeaseToken,
        f: impl FnOnce(&mut Records, Instant) -> T,
    ) -> Option<T> {
        let now = Instant::now();
        let mut records = self.records();
        let held = matches!(
            records.live(id, now).map(|e| &e.state),
            Some(State::InFlight { token: t, .. }) if *t == token
        );
        held.then(|| f(&mut records, now))
    }

    fn complete_now(
        &self,
        id: &str,
        token: LeaseToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<bool, BoxError> {
        let state = State::Done(Arc::new(response.clone()));
        let bytes = record_bytes(id, &state);
        let bounds = self.shared.bounds;
        let evicted = &self.shared.evicted;
        let stored = self.with_held(id, token, |records, now| {
            let scope: Arc<str> = records
                .map
                .get(id)
                .map_or_else(|| "".into(), |e| e.scope.clone());
            let held = records.map.get(id).map_or(0, |e| e.bytes);
            let extra = bytes.saturating_sub(held);
            if !records.make_room(bounds, &scope, 0, extra, now, evicted) {
                // It cannot fit: let the key go rather than hold it until the lease ends.
                records.remove(id);
                return false;
            }
            records.insert(id.into(), scope, state, crate::clock::after(now, ttl));
            true
        });
        match stored {
            None => Ok(false),
            Some(true) => Ok(true),
            Some(false) => Err(format!(
                "a response counted as {bytes} bytes does not fit in the in-memory idempotency \
                 store ({} bytes, the rest in flight): not stored",
                bounds.bytes
            )
            .into()),
        }
    }
}

impl IdempotencyStore for MemoryStore {
    fn claim(
        &self,
        id: &str,
        fingerprint: Fingerprint,
        token: LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, BoxError>> + Send {
        std::future::ready(self.claim_now(id, fingerprint, token, lease))
    }

    fn renew(
        &self,
        id: &str,
        token: LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let held = self.with_held(id, token, |records, now| {
            if let Some(entry) = records.remove_keeping_scope(id) {
                let until = crate::clock::after(now, lease);
                records.insert(id.into(), entry.scope, entry.state, until);
            }
        });
        std::future::ready(Ok(held.is_some()))
    }

    fn complete(
        &self,
        id: &str,
        token: LeaseToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        std::future::ready(self.complete_now(id, token, response, ttl))
    }

    fn release(
        &self,
        id: &str,
        token: LeaseToken,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let held = self.with_held(id, token, |records, _| {
            records.remove(id);
        });
        std::future::ready(Ok(held.is_some()))
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
