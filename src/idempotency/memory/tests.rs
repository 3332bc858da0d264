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
        if other != claimant && held(other).0 < *r && Records::usage(bounds, *r, *b) < claimant_use
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
