//! The default store: records in this process, bounded in number, evicted by expiry.
//!
//! Memory stays bounded under any load: at most `max_entries` records, each holding a response
//! no larger than the layer's body limit. When the store is full, expired records go first, then
//! finished records, earliest expiry first (so a very busy store keeps keys for less than the
//! TTL — size it for your key rate × TTL). Records in flight are never evicted while their lease
//! lives; a claim that finds the store full of them fails, and the layer answers 503.

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
    seq: u64,
}

#[derive(Debug, Default)]
struct Records {
    map: HashMap<Arc<str>, Entry>,
    /// Every record by (expiry, sequence): the eviction order.
    by_expiry: BTreeSet<(Instant, u64, Arc<str>)>,
    next_seq: u64,
}

impl Records {
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let (key, entry) = self.map.remove_entry(id)?;
        self.by_expiry.remove(&(entry.expires, entry.seq, key));
        Some(entry)
    }

    fn insert(&mut self, id: Arc<str>, state: State, expires: Instant) {
        self.remove(&id);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_expiry.insert((expires, seq, id.clone()));
        self.map.insert(
            id,
            Entry {
                state,
                expires,
                seq,
            },
        );
    }

    /// Makes room for one record: drops expired ones, then the finished record that expires
    /// first. `false` if every record is in flight with a live lease.
    fn make_room(&mut self, max: usize, now: Instant, evicted: &AtomicU64) -> bool {
        while self.map.len() >= max {
            let victim = self
                .by_expiry
                .iter()
                .find(|(expires, _, id)| {
                    *expires <= now
                        || matches!(self.map.get(id).map(|e| &e.state), Some(State::Done(_)))
                })
                .map(|(_, _, id)| id.clone());
            let Some(id) = victim else { return false };
            if let Some(entry) = self.remove(&id)
                && entry.expires > now
            {
                evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    fn live(&self, id: &str, now: Instant) -> Option<&Entry> {
        self.map.get(id).filter(|e| e.expires > now)
    }
}

#[derive(Debug)]
struct Shared {
    records: Mutex<Records>,
    max_entries: usize,
    evicted: AtomicU64,
}

/// Idempotency records in this process (the default store): bounded, expiring.
///
/// Clones share the records. For several server instances use
/// [`RedisStore`](super::RedisStore).
///
/// ```
/// use stanchion::idempotency::MemoryStore;
///
/// let store = MemoryStore::with_max_entries(50_000)?;
/// assert_eq!(store.max_entries(), 50_000);
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
    /// A store of at most [`DEFAULT_MAX_ENTRIES`] records.
    pub fn new() -> MemoryStore {
        MemoryStore::build(DEFAULT_MAX_ENTRIES)
    }

    /// A store of at most `max_entries` records (at least 1).
    pub fn with_max_entries(max_entries: usize) -> Result<MemoryStore, ConfigError> {
        if max_entries == 0 {
            return Err(ConfigError::new("max_entries", "must be at least 1"));
        }
        Ok(MemoryStore::build(max_entries))
    }

    fn build(max_entries: usize) -> MemoryStore {
        MemoryStore {
            shared: Arc::new(Shared {
                records: Mutex::new(Records::default()),
                max_entries,
                evicted: AtomicU64::new(0),
            }),
        }
    }

    /// The bound on records.
    pub fn max_entries(&self) -> usize {
        self.shared.max_entries
    }

    /// Records held now (live or expired but not yet swept).
    pub fn len(&self) -> usize {
        self.records().map.len()
    }

    /// Whether the store holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finished records evicted before their TTL to stay within the bound.
    pub fn evicted_early(&self) -> u64 {
        self.shared.evicted.load(Ordering::Relaxed)
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
            return Ok(match &entry.state {
                State::InFlight { fingerprint, .. } => Claim::InFlight(*fingerprint),
                State::Done(response) => {
                    Claim::Completed(Box::new(StoredResponse::clone(response)))
                }
            });
        }
        records.remove(id);
        if !records.make_room(self.shared.max_entries, now, &self.shared.evicted) {
            return Err(format!(
                "the in-memory idempotency store is full: {} requests are in flight",
                self.shared.max_entries
            )
            .into());
        }
        records.insert(
            id.into(),
            State::InFlight { token, fingerprint },
            now + lease,
        );
        Ok(Claim::Acquired)
    }

    /// Applies `f` to `token`'s live in-flight record; `false` if `token` does not hold one.
    fn with_held(&self, id: &str, token: LeaseToken, f: impl FnOnce(&mut Records)) -> bool {
        let now = Instant::now();
        let mut records = self.records();
        let held = matches!(
            records.live(id, now).map(|e| &e.state),
            Some(State::InFlight { token: t, .. }) if *t == token
        );
        if held {
            f(&mut records);
        }
        held
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
        let held = self.with_held(id, token, |records| {
            if let Some(entry) = records.remove(id) {
                records.insert(id.into(), entry.state, Instant::now() + lease);
            }
        });
        std::future::ready(Ok(held))
    }

    fn complete(
        &self,
        id: &str,
        token: LeaseToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let held = self.with_held(id, token, |records| {
            let state = State::Done(Arc::new(response.clone()));
            records.insert(id.into(), state, Instant::now() + ttl);
        });
        std::future::ready(Ok(held))
    }

    fn release(
        &self,
        id: &str,
        token: LeaseToken,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let held = self.with_held(id, token, |records| {
            records.remove(id);
        });
        std::future::ready(Ok(held))
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
}
