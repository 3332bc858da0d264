//! The records of a [`MemoryStore`](super::MemoryStore) and their eviction: expired first, then
//! the least recently used finished record of the scope using the most of the store, planned
//! before anything is evicted.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

use super::RECORD_OVERHEAD;
use crate::idempotency::record::{Fingerprint, StoredResponse};
use crate::idempotency::store::LeaseToken;

#[derive(Debug)]
pub(super) enum State {
    InFlight {
        token: LeaseToken,
        fingerprint: Fingerprint,
    },
    Done(Arc<StoredResponse>),
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) state: State,
    pub(super) expires: Instant,
    /// Order in the expiry index.
    pub(super) seq: u64,
    /// Last stored or replayed (for a finished record: its place in its scope's LRU order).
    pub(super) used: u64,
    pub(super) scope: Arc<str>,
    pub(super) bytes: usize,
}

/// One scope's (tenant's) share of the store.
#[derive(Debug, Default)]
pub(super) struct Scope {
    pub(super) records: usize,
    pub(super) bytes: usize,
    /// Finished records, least recently used first: the scope's eviction order.
    pub(super) finished: BTreeSet<(u64, Arc<str>)>,
    pub(super) evicted: u64,
}

#[derive(Debug, Default)]
pub(super) struct Records {
    pub(super) map: HashMap<Arc<str>, Entry>,
    /// Every record by (expiry, sequence): the expiry order.
    pub(super) by_expiry: BTreeSet<(Instant, u64, Arc<str>)>,
    pub(super) scopes: HashMap<Arc<str>, Scope>,
    pub(super) bytes: usize,
    pub(super) next_seq: u64,
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
pub(super) struct Bounds {
    pub(super) entries: usize,
    pub(super) bytes: usize,
}

impl Records {
    pub(super) fn tick(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
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

    pub(super) fn remove_keeping_scope(&mut self, id: &str) -> Option<Entry> {
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

    pub(super) fn insert(&mut self, id: Arc<str>, scope: Arc<str>, state: State, expires: Instant) {
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
    pub(super) fn touch(&mut self, id: &str) {
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
    pub(super) fn sweep(&mut self, now: Instant) {
        while let Some((expires, _, id)) = self.by_expiry.first().cloned() {
            if expires > now {
                break;
            }
            self.remove(&id);
        }
    }

    /// How much of the store `records` and `bytes` use: the larger of their share of the
    /// entries and of the bytes, both scaled to one denominator so they compare exactly.
    pub(super) fn usage(bounds: Bounds, records: usize, bytes: usize) -> u128 {
        (records as u128 * bounds.bytes as u128).max(bytes as u128 * bounds.entries as u128)
    }

    /// Makes room for `extra_entries` more records and `extra_bytes` more bytes, charged to
    /// `claimant`: drops expired records, then finished records of the scope using the most of
    /// the store — never of a scope using less than the claimant will (its use fixed before
    /// anything is evicted) — least recently used first. The evictions are planned first and made
    /// only if they make enough room: `false`, with nothing evicted, if they would not.
    pub(super) fn make_room(
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

    pub(super) fn live(&self, id: &str, now: Instant) -> Option<&Entry> {
        self.map.get(id).filter(|e| e.expires > now)
    }
}

/// What a record is counted as: its response's body, headers and trailers, its id, and
/// [`RECORD_OVERHEAD`].
pub(super) fn record_bytes(id: &str, state: &State) -> usize {
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
pub(super) fn scope_of(id: &str) -> &str {
    let Some((len, rest)) = id.split_once(':') else {
        return "";
    };
    len.parse::<usize>()
        .ok()
        .and_then(|n| rest.get(..n))
        .filter(|scope| rest.as_bytes().get(scope.len()) == Some(&b':'))
        .unwrap_or("")
}
