//! The idempotency server layer's instruments, read back with metrics-util's debugging recorder
//! installed for the test's thread while the layer is built (only then: the handles are
//! registered once, at build, and the requests record through them): a scripted scenario
//! against a real hyper server on 127.0.0.1, exact values and label sets.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::DebuggingRecorder;
use stanchion::BoxError;
use stanchion::idempotency::{
    Claim, Fingerprint, IdempotencyLayer, IdempotencyStore, LeaseToken, MemoryStore, StoredResponse,
};
use stanchion::metrics;
use stanchion::pool::{HttpConnector, Pool, PoolBuilder};
use tower::ServiceExt;

use support::ledger_server::{Ledger, LedgerServer};
use support::seen::Seen;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

const OUTCOMES: [&str; 10] = [
    "claimed",
    "replayed",
    "in_flight",
    "mismatch",
    "missing_key",
    "invalid_key",
    "no_scope",
    "body_too_large",
    "body_unreadable",
    "store_unavailable",
];
const OPERATIONS: [&str; 4] = ["claim", "renew", "complete", "release"];

type Raw = Pool<HttpConnector<Full<Bytes>>, SocketAddr>;

/// A plain HTTP/2 client (built outside the recorder: its pool records nothing here).
fn raw(server: &LedgerServer) -> Raw {
    PoolBuilder::new()
        .build(HttpConnector::http2(), server.addr())
        .unwrap()
}

fn pay(path: &str, key: Option<&str>, body: &str, work: Duration) -> Request<Full<Bytes>> {
    let mut req = Request::post(path)
        .header("x-work-ms", work.as_millis().to_string())
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    if let Some(key) = key {
        req.headers_mut()
            .insert("idempotency-key", key.parse().unwrap());
    }
    req
}

/// The status, whether it was a replay, and the body.
async fn send(client: &Raw, req: Request<Full<Bytes>>) -> (StatusCode, bool, String) {
    let res = client.clone().oneshot(req).await.expect("an answer");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("a body").to_bytes();
    (
        parts.status,
        parts.headers.contains_key("idempotency-replayed"),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Every `stanchion.idempotency.*` instrument registered so far, with its sorted labels (read
/// before anything is recorded: the snapshot drains what it reads).
fn registered(seen: &Seen) -> Vec<(String, Vec<(String, String)>)> {
    let mut slots: Vec<_> = seen
        .snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, _)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            (key.name().to_owned(), labels)
        })
        .filter(|(name, _)| name.starts_with("stanchion.idempotency."))
        .collect();
    slots.sort();
    slots
}

/// What the family registers at build: one counter per outcome, per failing store operation,
/// and the three lease counters without labels.
fn expected_slots() -> Vec<(String, Vec<(String, String)>)> {
    let labelled = |name: &str, key: &str, value: &str| {
        (name.to_owned(), vec![(key.to_owned(), value.to_owned())])
    };
    let mut slots: Vec<_> = OUTCOMES
        .iter()
        .map(|o| labelled(metrics::IDEMPOTENCY_REQUESTS, "outcome", o))
        .chain(
            OPERATIONS
                .iter()
                .map(|o| labelled(metrics::IDEMPOTENCY_STORE_ERRORS, "operation", o)),
        )
        .chain(
            [
                metrics::IDEMPOTENCY_LEASE_RENEWALS,
                metrics::IDEMPOTENCY_LEASE_SLOW_RENEWALS,
                metrics::IDEMPOTENCY_LEASE_LOST,
            ]
            .map(|name| (name.to_owned(), Vec::new())),
        )
        .collect();
    slots.sort();
    slots
}

/// Asserts every outcome's count: `want` lists the non-zero ones.
fn assert_outcomes(seen: &Seen, want: &[(&str, u64)]) {
    seen.refresh();
    for outcome in OUTCOMES {
        let expected = want
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n);
        let got = seen.counter(metrics::IDEMPOTENCY_REQUESTS, &[("outcome", outcome)]);
        assert_eq!(got, expected, "requests{{outcome={outcome}}}");
    }
}

/// Asserts every store operation's error count: `want` lists the non-zero ones.
fn assert_store_errors(seen: &Seen, want: &[(&str, u64)]) {
    seen.refresh();
    for operation in OPERATIONS {
        let expected = want
            .iter()
            .find(|(o, _)| *o == operation)
            .map_or(0, |(_, n)| *n);
        let got = seen.counter(
            metrics::IDEMPOTENCY_STORE_ERRORS,
            &[("operation", operation)],
        );
        assert_eq!(got, expected, "store.errors{{operation={operation}}}");
    }
}

/// `(renewals, slow renewals, leases lost)`.
fn leases(seen: &Seen) -> (u64, u64, u64) {
    seen.refresh();
    (
        seen.counter(metrics::IDEMPOTENCY_LEASE_RENEWALS, &[]),
        seen.counter(metrics::IDEMPOTENCY_LEASE_SLOW_RENEWALS, &[]),
        seen.counter(metrics::IDEMPOTENCY_LEASE_LOST, &[]),
    )
}

/// Claimed, replayed, 409 while the first runs, 422 for another request under the key (while
/// it runs and after), a malformed key, a missing one — each counted once under its outcome;
/// requests outside the layer's routes are not counted. The first run's lease is renewed
/// twice (a 300 ms lease, renewed every 100 ms, around a 250 ms handler).
#[tokio::test(start_paused = true)]
async fn keyed_requests_are_counted_by_outcome() {
    let recorder = DebuggingRecorder::new();
    let seen = Seen::new(&recorder);
    let layer = ::metrics::with_local_recorder(&recorder, || {
        IdempotencyLayer::builder(MemoryStore::new())
            .route("/payments")
            .require_key(true)
            .lease(300 * MS)
            .build()
            .unwrap()
    });
    assert_eq!(
        registered(&seen),
        expected_slots(),
        "registered once, at build, with exactly these label sets"
    );
    let ledger = Arc::new(Ledger::default());
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);

    // The first request claims the key and runs for 250 ms.
    let first = tokio::spawn({
        let client = client.clone();
        async move { send(&client, pay("/payments", Some("k-1"), "a", 250 * MS)).await }
    });
    tokio::time::sleep(10 * MS).await;
    assert_outcomes(&seen, &[("claimed", 1)]);
    // While it runs: the same request is 409, another one under its key 422.
    let (status, _, _) = send(&client, pay("/payments", Some("k-1"), "a", MS)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _, _) = send(&client, pay("/payments", Some("k-1"), "b", MS)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_outcomes(&seen, &[("claimed", 1), ("in_flight", 1), ("mismatch", 1)]);

    let (status, replayed, body) = first.await.unwrap();
    assert_eq!((status, replayed), (StatusCode::CREATED, false));
    assert_eq!(body, "payment #1: a");
    assert_eq!(leases(&seen), (2, 0, 0), "two renewals, kept");

    // Finished: the same request is replayed, another one under its key is 422.
    let (status, replayed, body) = send(&client, pay("/payments", Some("k-1"), "a", MS)).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, true));
    assert_eq!(body, "payment #1: a");
    let (status, _, _) = send(&client, pay("/payments", Some("k-1"), "b", MS)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A malformed key, and a POST without one (required here): 400 each.
    let (status, _, _) = send(&client, pay("/payments", Some("\"unterminated"), "a", MS)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = send(&client, pay("/payments", None, "a", MS)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Outside the layer's routes: passed through, not counted.
    let (status, _, _) = send(&client, pay("/orders", Some("o-1"), "a", MS)).await;
    assert_eq!(status, StatusCode::CREATED);

    assert_outcomes(
        &seen,
        &[
            ("claimed", 1),
            ("replayed", 1),
            ("in_flight", 1),
            ("mismatch", 2),
            ("invalid_key", 1),
            ("missing_key", 1),
        ],
    );
    assert_eq!(leases(&seen), (2, 0, 0));
    assert_store_errors(&seen, &[]);
    assert_eq!(
        ledger.paid(),
        2,
        "k-1 once, and the request outside the routes"
    );
}

/// What [`Flaky`] does for one store operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// What the memory store says.
    Pass,
    /// An error.
    Fail,
    /// `Ok(false)`: the token no longer holds the record.
    NotHeld,
    /// The memory store's answer, after 1 s.
    Slow,
}

/// A memory store whose operations fail, lose the record or go slow as the test says:
/// `[claim, renew, complete, release]`.
#[derive(Clone)]
struct Flaky {
    inner: MemoryStore,
    modes: Arc<Mutex<[Mode; 4]>>,
}

impl Flaky {
    fn mode(&self, operation: usize) -> Mode {
        self.modes.lock().unwrap()[operation]
    }

    fn set(&self, modes: [Mode; 4]) {
        *self.modes.lock().unwrap() = modes;
    }
}

fn failed(operation: &str) -> BoxError {
    format!("the test's store failed {operation}").into()
}

impl IdempotencyStore for Flaky {
    fn claim(
        &self,
        id: &str,
        fingerprint: Fingerprint,
        token: LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, BoxError>> + Send {
        let (inner, id, mode) = (self.inner.clone(), id.to_owned(), self.mode(0));
        async move {
            match mode {
                Mode::Fail => Err(failed("claim")),
                _ => inner.claim(&id, fingerprint, token, lease).await,
            }
        }
    }

    fn renew(
        &self,
        id: &str,
        token: LeaseToken,
        lease: Duration,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let (inner, id, mode) = (self.inner.clone(), id.to_owned(), self.mode(1));
        async move {
            match mode {
                Mode::Fail => Err(failed("renew")),
                Mode::NotHeld => Ok(false),
                Mode::Slow => {
                    tokio::time::sleep(SEC).await;
                    inner.renew(&id, token, lease).await
                }
                Mode::Pass => inner.renew(&id, token, lease).await,
            }
        }
    }

    fn complete(
        &self,
        id: &str,
        token: LeaseToken,
        response: &StoredResponse,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let (inner, id, mode) = (self.inner.clone(), id.to_owned(), self.mode(2));
        let response = response.clone();
        async move {
            match mode {
                Mode::Fail => Err(failed("complete")),
                Mode::NotHeld => Ok(false),
                _ => inner.complete(&id, token, &response, ttl).await,
            }
        }
    }

    fn release(
        &self,
        id: &str,
        token: LeaseToken,
    ) -> impl Future<Output = Result<bool, BoxError>> + Send {
        let (inner, id, mode) = (self.inner.clone(), id.to_owned(), self.mode(3));
        async move {
            match mode {
                Mode::Fail => Err(failed("release")),
                _ => inner.release(&id, token).await,
            }
        }
    }
}

/// Each store call that fails is counted under its operation (a failed claim is also a `503`
/// counted as `store_unavailable`); leases the store no longer holds — at a renewal or at
/// completion — are counted lost; a renewal still in flight at the lease's end, slow.
#[tokio::test(start_paused = true)]
async fn store_failures_and_lost_leases_are_counted() {
    use Mode::{Fail, NotHeld, Pass, Slow};
    let recorder = DebuggingRecorder::new();
    let seen = Seen::new(&recorder);
    let store = Flaky {
        inner: MemoryStore::new(),
        modes: Arc::new(Mutex::new([Pass; 4])),
    };
    let layer = ::metrics::with_local_recorder(&recorder, || {
        IdempotencyLayer::builder(store.clone())
            .lease(300 * MS)
            .build()
            .unwrap()
    });
    let ledger = Arc::new(Ledger::default());
    let server = LedgerServer::start(layer, ledger.clone()).await;
    let client = raw(&server);

    // The claim fails: 503, and nothing runs.
    store.set([Fail, Pass, Pass, Pass]);
    let (status, _, _) = send(&client, pay("/payments", Some("k-a"), "a", MS)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ledger.started(), 0);
    assert_outcomes(&seen, &[("store_unavailable", 1)]);
    assert_store_errors(&seen, &[("claim", 1)]);

    // Renewals (at 100 and 200 ms of a 250 ms handler) and the completion fail: the handler's
    // answer still reaches its client; the lease did not run out (300 ms), so none is lost.
    store.set([Pass, Fail, Fail, Pass]);
    let (status, _, _) = send(&client, pay("/payments", Some("k-b"), "b", 250 * MS)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_store_errors(&seen, &[("claim", 1), ("renew", 2), ("complete", 1)]);
    assert_eq!(leases(&seen), (2, 0, 0), "failed renewals came back too");

    // A 503 from the handler is not stored: the record is released, and that fails.
    store.set([Pass, Pass, Pass, Fail]);
    ledger.fail_next.store(1, Ordering::SeqCst);
    let (status, _, _) = send(&client, pay("/payments", Some("k-c"), "c", MS)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_store_errors(
        &seen,
        &[("claim", 1), ("renew", 2), ("complete", 1), ("release", 1)],
    );

    // The renewal (at 100 ms of a 150 ms handler) finds the record no longer held: lost.
    store.set([Pass, NotHeld, Pass, Pass]);
    let (status, _, _) = send(&client, pay("/payments", Some("k-d"), "d", 150 * MS)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(leases(&seen), (3, 0, 1));

    // The renewal (sent at 100 ms) takes 1 s: still in flight at the lease's end (300 ms) —
    // slow; the 350 ms handler's completion then finds the lease gone — lost.
    store.set([Pass, Slow, Pass, Pass]);
    let (status, _, _) = send(&client, pay("/payments", Some("k-e"), "e", 350 * MS)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(leases(&seen), (3, 1, 2), "the slow renewal never came back");

    // The completion is told the record is no longer held: lost.
    store.set([Pass, Pass, NotHeld, Pass]);
    let (status, _, _) = send(&client, pay("/payments", Some("k-f"), "f", MS)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(leases(&seen), (3, 1, 3));

    assert_outcomes(&seen, &[("store_unavailable", 1), ("claimed", 5)]);
    assert_store_errors(
        &seen,
        &[("claim", 1), ("renew", 2), ("complete", 1), ("release", 1)],
    );
    assert_eq!(ledger.started(), 5);
}
