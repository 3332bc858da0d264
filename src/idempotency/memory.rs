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

use std::collections::{BTreeSet, HashMap};
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

#[derive(Debug)]
enum State {
    InFlight {
        token: LeaseToken,
        fingerprint: Fingerprint,
    },
    Done(Arc<StoredResponse>),
}

#[derive(Debug)]
struct Entry {
    state: State,
    expires: Instant,
    /// Order in the expiry index.
    seq: u64,
    /// Last stored or replayed (for a finished record: its place in its scope's LRU order).
    used: u64,
    scope: Arc<str>,
    bytes: usize,
}

/// One scope's (tenant's) share of the store.
#[derive(Debug, Default)]
struct Scope {
    records: usize,
    bytes: usize,
    /// Finished records, least recently used first: the scope's eviction order.
    finished: BTreeSet<(u64, Arc<str>)>,
    evicted: u64,
}

#[derive(Debug, Default)]
struct Records {
    map: HashMap<Arc<str>, Entry>,
    /// Every record by (expiry, sequence): the expiry order.
    by_expiry: BTreeSet<(Instant, u64, Arc<str>)>,
    scopes: HashMap<Arc<str>, Scope>,
    bytes: usize,
    next_seq: u64,
}

/// One scope's part in an eviction plan: its records and bytes as the plan goes, and its
/// least-recently-used order.
type Plan<'a> = (
    usize,
    usize,
    std::collections::btree_set::Iter<'a, (u64, Arc<str>)>,
);

/// Limits of one store.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    entries: usize,
    bytes: usize,
}

impl Records {
    fn tick(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.remove_keeping_scope(id)?;
        // A scope with no record left goes (its count of evictions with it: the store's total
        // keeps them), so the map of scopes is bounded by the records.
        if self
            .scopes
            .get(&entry.scope)
            .is_some_and(|s| s.records == 0)
        {
            self.scopes.remove(&entry.scope);
        }
        Some(entry)
    }

    fn remove_keeping_scope(&mut self, id: &str) -> Option<Entry> {
        let (key, entry) = self.map.remove_entry(id)?;
        self.by_expiry
            .remove(&(entry.expires, entry.seq, key.clone()));
        self.bytes -= entry.bytes;
        if let Some(scope) = self.scopes.get_mut(&entry.scope) {
            scope.records -= 1;
            scope.bytes -= entry.bytes;
            scope.finished.remove(&(entry.used, key));
        }
        Some(entry)
    }

    fn insert(&mut self, id: Arc<str>, scope: Arc<str>, state: State, expires: Instant) {
        // Replaced in place: its scope keeps its count of evictions.
        let replaced = self.remove_keeping_scope(&id);
        let bytes = record_bytes(&id, &state);
        let seq = self.tick();
        let done = matches!(state, State::Done(_));
        self.by_expiry.insert((expires, seq, id.clone()));
        self.bytes += bytes;
        let share = self.scopes.entry(scope.clone()).or_default();
        share.records += 1;
        share.bytes += bytes;
        if done {
            share.finished.insert((seq, id.clone()));
        }
        self.map.insert(
            id,
            Entry {
                state,
                expires,
                seq,
                used: seq,
                scope,
                bytes,
            },
        );
        // A record moving to another scope (an id of another shape) leaves none behind empty.
        if let Some(old) = replaced
            && self.scopes.get(&old.scope).is_some_and(|s| s.records == 0)
        {
            self.scopes.remove(&old.scope);
        }
    }

    /// Marks a finished record as just used (replayed): it moves to the back of its scope's
    /// eviction order.
    fn touch(&mut self, id: &str) {
        let used = self.tick();
        let Some((key, entry)) = self.map.get_key_value(id) else {
            return;
        };
        if !matches!(entry.state, State::Done(_)) {
            return;
        }
        let (key, scope, before) = (key.clone(), entry.scope.clone(), entry.used);
        if let Some(share) = self.scopes.get_mut(&scope) {
            share.finished.remove(&(before, key.clone()));
            share.finished.insert((used, key.clone()));
        }
        if let Some(entry) = self.map.get_mut(id) {
            entry.used = used;
        }
    }

    /// Drops every expired record (not counted as evictions).
    fn sweep(&mut self, now: Instant) {
        while let Some((expires, _, id)) = self.by_expiry.first().cloned() {
            if expires > now {
                break;
            }
            self.remove(&id);
        }
    }

    /// How much of the store `records` and `bytes` use: the larger of their share of the
    /// entries and of the bytes, both scaled to one denominator so they compare exactly.
    fn usage(bounds: Bounds, records: usize, bytes: usize) -> u128 {
        (records as u128 * bounds.bytes as u128).max(bytes as u128 * bounds.entries as u128)
    }

    /// Makes room for `extra_entries` more records and `extra_bytes` more bytes, charged to
    /// `claimant`: drops expired records, then finished records of the scope using the most of
    /// the store — never of a scope using less than the claimant will (its use fixed before
    /// anything is evicted) — least recently used first. The evictions are planned first and made
    /// only if they make enough room: `false`, with nothing evicted, if they would not.
    fn make_room(
        &mut self,
        bounds: Bounds,
        claimant: &str,
        extra_entries: usize,
        extra_bytes: usize,
        now: Instant,
        evicted: &AtomicU64,
    ) -> bool {
        self.sweep(now);
        let fits = |records: usize, bytes: usize| {
            records + extra_entries <= bounds.entries && bytes + extra_bytes <= bounds.bytes
        };
        if fits(self.map.len(), self.bytes) {
            return true;
        }
        let claimant_use = {
            let share = self.scopes.get(claimant);
            Self::usage(
                bounds,
                share.map_or(0, |s| s.records) + extra_entries,
                share.map_or(0, |s| s.bytes) + extra_bytes,
            )
        };
        // The plan: a heap of the scopes that may lose records, by use (ties to the name that
        // sorts first), each with its least-recently-used order. O((scopes + evictions) ·
        // log scopes).
        let mut heap = std::collections::BinaryHeap::new();
        let mut plans: Vec<Plan<'_>> = Vec::new();
        for (name, share) in &self.scopes {
            if share.finished.is_empty() {
                continue;
            }
            let usage = if **name == *claimant {
                claimant_use
            } else {
                Self::usage(bounds, share.records, share.bytes)
            };
            if usage < claimant_use {
                continue;
            }
            heap.push((usage, std::cmp::Reverse(name.clone()), plans.len()));
            plans.push((share.records, share.bytes, share.finished.iter()));
        }
        let (mut records, mut bytes) = (self.map.len(), self.bytes);
        let mut victims: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        while !fits(records, bytes) {
            let Some((_, std::cmp::Reverse(scope), i)) = heap.pop() else {
                return false;
            };
            let (scope_records, scope_bytes, order) = &mut plans[i];
            let Some((_, id)) = order.next() else {
                continue;
            };
            let size = self.map.get(id).map_or(0, |e| e.bytes);
            records -= 1;
            bytes -= size;
            *scope_records -= 1;
            *scope_bytes -= size;
            victims.push((scope.clone(), id.clone()));
            let usage = if *scope == *claimant {
                claimant_use
            } else {
                Self::usage(bounds, *scope_records, *scope_bytes)
            };
            if usage >= claimant_use {
                heap.push((usage, std::cmp::Reverse(scope), i));
            }
        }
        drop(plans);
        for (scope, id) in victims {
            if let Some(share) = self.scopes.get_mut(&scope) {
                share.evicted += 1;
            }
            evicted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(scope = %scope, record = %id, "idempotency record evicted before its TTL");
            self.remove_keeping_scope(&id);
            // A scope left with no record goes — but the claimant's, about to hold one, keeps
            // its count of evictions.
            if *scope != *claimant && self.scopes.get(&scope).is_some_and(|s| s.records == 0) {
                self.scopes.remove(&scope);
            }
        }
        true
    }

    fn live(&self, id: &str, now: Instant) -> Option<&Entry> {
        self.map.get(id).filter(|e| e.expires > now)
    }
}

/// What a record is counted as: its response's body, headers and trailers, its id, and
/// [`RECORD_OVERHEAD`].
fn record_bytes(id: &str, state: &State) -> usize {
    let headers = |map: &http::HeaderMap| {
        map.iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 16)
            .sum::<usize>()
    };
    let response = match state {
        State::InFlight { .. } => 0,
        State::Done(stored) => {
            stored.body.len()
                + headers(&stored.headers)
                + stored.trailers.as_ref().map_or(0, headers)
        }
    };
    RECORD_OVERHEAD + id.len() + response
}

/// The scope (tenant) of a record id the layer built (`{len}:{scope}:{key}`); the empty scope
/// for an id of another shape.
fn scope_of(id: &str) -> &str {
    let Some((len, rest)) = id.split_once(':') else {
        return "";
    };
    len.parse::<usize>()
        .ok()
        .and_then(|n| rest.get(..n))
        .filter(|scope| rest.as_bytes().get(scope.len()) == Some(&b':'))
        .unwrap_or("")
}

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
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    const SEC: Duration = Duration::from_secs(1);

    fn fp(n: u8) -> Fingerprint {
        Fingerprint::from_bytes([n; 32])
    }

    fn done(n: u8) -> StoredResponse {
        StoredResponse {
            fingerprint: fp(n),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(vec![n]),
            trailers: None,
            body_omitted: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_claim_wins_and_the_lease_is_fenced_by_its_token() {
        let store = MemoryStore::new();
        let (a, b) = (LeaseToken(1), LeaseToken(2));
        assert_eq!(
            store.claim("k", fp(1), a, SEC).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(
            store.claim("k", fp(1), b, SEC).await.unwrap(),
            Claim::InFlight(fp(1))
        );
        assert!(!store.renew("k", b, SEC).await.unwrap(), "b never held it");
        assert!(!store.complete("k", b, &done(1), SEC).await.unwrap());
        assert!(store.renew("k", a, 2 * SEC).await.unwrap());
        tokio::time::advance(SEC + SEC / 2).await;
        assert_eq!(
            store.claim("k", fp(1), b, SEC).await.unwrap(),
            Claim::InFlight(fp(1)),
            "the renewed lease still holds"
        );
        tokio::time::advance(SEC).await;
        assert_eq!(
            store.claim("k", fp(1), b, SEC).await.unwrap(),
            Claim::Acquired,
            "the lease ran out: b takes over"
        );
        assert!(
            !store.complete("k", a, &done(1), SEC).await.unwrap(),
            "a lost it"
        );
        assert!(store.complete("k", b, &done(2), 10 * SEC).await.unwrap());
        assert_eq!(
            store.claim("k", fp(1), a, SEC).await.unwrap(),
            Claim::Completed(Box::new(done(2)))
        );
        tokio::time::advance(10 * SEC).await;
        assert_eq!(
            store.claim("k", fp(1), a, SEC).await.unwrap(),
            Claim::Acquired
        );
        assert!(store.release("k", a).await.unwrap());
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_bound_holds_evicting_finished_records_first() {
        let store = MemoryStore::with_max_entries(3).unwrap();
        let t = LeaseToken(9);
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            store.claim(id, fp(i as u8), t, SEC).await.unwrap();
        }
        // Full of live in-flight records: a fourth claim fails rather than evict one.
        assert!(store.claim("d", fp(3), t, SEC).await.is_err());
        store.complete("b", t, &done(1), 100 * SEC).await.unwrap();
        assert_eq!(
            store.claim("d", fp(3), t, SEC).await.unwrap(),
            Claim::Acquired
        );
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.evicted_early(),
            1,
            "b went early, the in-flight ones stayed"
        );
        assert_eq!(
            store.claim("a", fp(0), LeaseToken(1), SEC).await.unwrap(),
            Claim::InFlight(fp(0))
        );
        // Expired records make room without counting as early evictions.
        tokio::time::advance(2 * SEC).await;
        for id in ["e", "f", "g"] {
            assert_eq!(
                store.claim(id, fp(0), t, SEC).await.unwrap(),
                Claim::Acquired
            );
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.evicted_early(), 1);
    }

    fn id(scope: &str, key: &str) -> String {
        super::super::record::record_id("", scope, key)
    }

    fn sized(n: u8, body: usize) -> StoredResponse {
        StoredResponse {
            body: Bytes::from(vec![n; body]),
            ..done(n)
        }
    }

    async fn store_one(store: &MemoryStore, id: &str, body: usize) -> bool {
        let t = LeaseToken(7);
        match store.claim(id, fp(0), t, SEC).await.unwrap() {
            Claim::Acquired => store
                .complete(id, t, &sized(1, body), 1000 * SEC)
                .await
                .unwrap(),
            _ => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_lease_and_ttl_do_not_panic() {
        let store = MemoryStore::new();
        let t = LeaseToken(1);
        assert_eq!(
            store.claim("k", fp(0), t, Duration::MAX).await.unwrap(),
            Claim::Acquired
        );
        assert!(store.renew("k", t, Duration::MAX).await.unwrap());
        assert!(
            store
                .complete("k", t, &done(0), Duration::MAX)
                .await
                .unwrap()
        );
        assert!(matches!(
            store.claim("k", fp(0), t, SEC).await.unwrap(),
            Claim::Completed(_)
        ));
    }

    #[test]
    fn scopes_are_read_back_from_the_layers_ids() {
        for scope in ["", "acme", "a:b", "12:x", "ünï"] {
            assert_eq!(scope_of(&id(scope, "k:1")), scope);
        }
        for odd in ["", "k", "x:y", "99:short", "3:abcd"] {
            assert_eq!(scope_of(odd), "", "{odd:?}");
        }
    }

    /// Fault 3 of the issue at the store: tenant B's finished record survives tenant A filling
    /// the store; A's own least recently used record goes instead.
    #[tokio::test(start_paused = true)]
    async fn one_scope_filling_the_store_evicts_its_own_records() {
        let store = MemoryStore::with_max_entries(2).unwrap();
        assert!(store_one(&store, &id("b", "b-1"), 10).await);
        assert!(store_one(&store, &id("a", "a-1"), 10).await);
        assert!(store_one(&store, &id("a", "a-2"), 10).await);
        assert_eq!(
            store
                .claim(&id("b", "b-1"), fp(0), LeaseToken(1), SEC)
                .await
                .unwrap(),
            Claim::Completed(Box::new(sized(1, 10))),
            "B's record is still there"
        );
        let a = store.scope_stats("a").unwrap();
        assert_eq!((a.records, a.evicted_early), (1, 1));
        assert_eq!(store.scope_stats("b").unwrap().evicted_early, 0);
        assert_eq!(store.stats().evicted_early, 1);
    }

    /// The claimant's use is fixed when its claim comes: evicting its own records first does not
    /// make it light enough to take a lighter scope's.
    #[tokio::test(start_paused = true)]
    async fn a_heavier_claimant_never_takes_a_lighter_scopes_record() {
        let store = MemoryStore::with_limits(11, 16 * 1024).unwrap();
        for key in 0..4 {
            assert!(store_one(&store, &id("s0", &key.to_string()), 0).await);
        }
        for scope in ["s1", "s2"] {
            for key in 0..2 {
                assert!(store_one(&store, &id(scope, &key.to_string()), 3000).await);
            }
        }
        let before = store.scope_stats("s1").unwrap().records;
        store_one(&store, &id("s0", "big"), 3000).await;
        assert_eq!(store.scope_stats("s1").unwrap().records, before);
        assert_eq!(store.scope_stats("s2").unwrap().records, 2);
    }

    /// Within its scope, the least recently *used* goes: a replay keeps a record.
    #[tokio::test(start_paused = true)]
    async fn within_a_scope_the_least_recently_used_goes() {
        let store = MemoryStore::with_max_entries(3).unwrap();
        for key in ["1", "2", "3"] {
            assert!(store_one(&store, &id("a", key), 1).await);
        }
        // "1" is replayed: "2" is now the least recently used.
        store
            .claim(&id("a", "1"), fp(0), LeaseToken(1), SEC)
            .await
            .unwrap();
        assert!(store_one(&store, &id("a", "4"), 1).await);
        let kept = |key: &'static str| {
            let store = store.clone();
            async move {
                matches!(
                    store
                        .claim(&id("a", key), fp(0), LeaseToken(2), SEC)
                        .await
                        .unwrap(),
                    Claim::Completed(_)
                )
            }
        };
        assert!(kept("1").await && kept("3").await && kept("4").await);
    }

    /// 1 MiB responses in a 4 MiB store: never more than 4 MiB counted, whatever the number of
    /// entries allowed; a response larger than the whole store is not stored and its key is let
    /// go (a retry runs again), with an error for the layer to log.
    #[tokio::test(start_paused = true)]
    async fn the_byte_bound_holds_with_large_responses() {
        const MIB: usize = 1024 * 1024;
        let store = MemoryStore::with_limits(10_000, 4 * MIB).unwrap();
        for i in 0..20 {
            assert!(store_one(&store, &id("a", &i.to_string()), MIB).await);
            let stats = store.stats();
            assert!(stats.bytes <= 4 * MIB, "{stats:?}");
        }
        assert_eq!(
            store.stats().records,
            3,
            "three 1 MiB records and their overhead fit"
        );
        let t = LeaseToken(3);
        let big = id("a", "big");
        store.claim(&big, fp(0), t, SEC).await.unwrap();
        assert!(
            store
                .complete(&big, t, &sized(1, 5 * MIB), SEC)
                .await
                .is_err()
        );
        assert_eq!(
            store.claim(&big, fp(0), t, SEC).await.unwrap(),
            Claim::Acquired,
            "the key was let go"
        );
        assert!(MemoryStore::with_limits(10, 100).is_err());
    }

    /// Checks the fairness promise around one store operation: a scope other than
    /// `claimant` lost a record only if it used at least as much of the store as the claimant
    /// did, with what the operation adds (`records`, `bytes`) counted.
    fn fair(
        store: &MemoryStore,
        bounds: Bounds,
        claimant: &str,
        records: usize,
        bytes: usize,
        op: impl FnOnce(),
    ) -> Result<(), String> {
        let held = |s: &str| {
            store
                .scope_stats(s)
                .map_or((0, 0), |st| (st.records, st.bytes))
        };
        let before: Vec<(String, (usize, usize))> = (0..4)
            .map(|s| format!("s{s}"))
            .map(|s| (s.clone(), held(&s)))
            .collect();
        let mine = held(claimant);
        let claimant_use = Records::usage(bounds, mine.0 + records, mine.1 + bytes);
        op();
        for (other, (r, b)) in &before {
            if other != claimant
                && held(other).0 < *r
                && Records::usage(bounds, *r, *b) < claimant_use
            {
                return Err(format!(
                    "{other} ({r} records, {b} bytes) lost one to {claimant}"
                ));
            }
        }
        Ok(())
    }

    proptest::proptest! {
        /// Against any sequence of claims and completions by several scopes: the bounds always
        /// hold, in-flight records are never evicted, and — at every claim and every completion
        /// — a scope loses a record only to a claimant using no less of the store than it does.
        #[test]
        fn bounds_and_fair_shares_hold_for_any_sequence(
            ops in proptest::collection::vec((0u8..4, 0usize..3000, proptest::bool::ANY), 1..200),
            max_entries in 2usize..12,
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let max_bytes = 16 * 1024;
                let bounds = Bounds { entries: max_entries, bytes: max_bytes };
                let store = MemoryStore::with_limits(max_entries, max_bytes).unwrap();
                let mut in_flight: Vec<String> = Vec::new();
                for (n, (scope, body, finish)) in ops.into_iter().enumerate() {
                    let scope = format!("s{scope}");
                    let key = id(&scope, &n.to_string());
                    let t = LeaseToken(n as u64);
                    let mut claimed = false;
                    fair(&store, bounds, &scope, 1, RECORD_OVERHEAD + key.len(), || {
                        claimed = store.claim_now(&key, fp(0), t, SEC * 1000).is_ok();
                    })
                    .map_err(proptest::test_runner::TestCaseError::fail)?;
                    if !claimed {
                        continue;
                    }
                    if finish {
                        fair(&store, bounds, &scope, 0, body, || {
                            let _ = store.complete_now(&key, t, &sized(1, body), SEC * 1000);
                        })
                        .map_err(proptest::test_runner::TestCaseError::fail)?;
                    } else {
                        in_flight.push(key.clone());
                    }
                    let stats = store.stats();
                    proptest::prop_assert!(stats.records <= max_entries, "{stats:?}");
                    proptest::prop_assert!(stats.bytes <= max_bytes, "{stats:?}");
                    // No in-flight record was evicted.
                    for held in &in_flight {
                        let found = store.claim(held, fp(0), LeaseToken(u64::MAX), SEC).await.unwrap();
                        proptest::prop_assert_eq!(found, Claim::InFlight(fp(0)));
                    }
                }
                Ok(())
            })?;
        }
    }
}
