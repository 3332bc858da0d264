//! Cancellation safety: a harness polls calls a random number of times (time moving on between
//! polls) and then drops them; afterwards nothing is leaked — no bulkhead permit or queue place,
//! no half-open probe slot, no pool checkout, no balancer in-flight count — and the next call
//! goes through. Properties over random drop points, under paused time.

mod support;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use proptest::prelude::*;
use stanchion::balance::Policy;
use stanchion::breaker::{BreakerState, CircuitBreaker, CircuitBreakerLayer};
use stanchion::bulkhead::{Bulkhead, BulkheadLayer, Limits, NoKey};
use stanchion::classify::HttpClassifier;
use stanchion::client::{Client, Target};
use stanchion::pool::{HttpConnector, PoolBuilder};
use stanchion::retry::ReplayBody;
use tower::{Layer, ServiceExt};

use support::faults::{Fault, FaultPlan};
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);

/// Polls `fut` up to `polls` times, moving paused time on by `step` after each pending poll,
/// then drops it (unless it finished first).
async fn poll_then_drop<F: Future>(fut: F, polls: usize, step: Duration) -> Option<F::Output> {
    let mut fut = pin!(fut);
    for _ in 0..polls {
        let polled = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
        if let Poll::Ready(out) = polled {
            return Some(out);
        }
        tokio::time::advance(step).await;
    }
    None
}

fn paused() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// An endpoint that answers after `latency`.
fn slow(
    latency: Duration,
) -> impl tower::Service<
    Request<ReplayBody<Empty<Bytes>>>,
    Response = Response<Empty<Bytes>>,
    Error = std::convert::Infallible,
    Future: Send,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::service_fn(move |_req: Request<ReplayBody<Empty<Bytes>>>| async move {
        tokio::time::sleep(latency).await;
        Ok(Response::new(Empty::new()))
    })
}

fn get() -> Request<Empty<Bytes>> {
    Request::get("/").body(Empty::new()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Bulkhead permits and queue places come back whatever the drop point.
    #[test]
    fn bulkhead_permits_and_queue_places_are_never_leaked(
        calls in 1usize..8, polls in proptest::collection::vec(0usize..6, 8), step in 0u64..30,
    ) {
        paused().block_on(async {
            let bulkhead = Bulkhead::builder()
                .limits(Limits { concurrency: 2, queue: 3, max_wait: Duration::from_millis(40) })
                .build()
                .unwrap();
            let svc = BulkheadLayer::new(bulkhead.clone(), NoKey).layer(tower::service_fn(
                |_req: Request<()>| async {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
                },
            ));
            // Start them together, drop each at its own point.
            let mut set = tokio::task::JoinSet::new();
            for i in 0..calls {
                let (svc, polls) = (svc.clone(), polls[i]);
                set.spawn(async move {
                    if let Some(Ok(res)) = poll_then_drop(svc.oneshot(Request::new(())), polls, Duration::from_millis(step)).await {
                        // A finished call's permit is held by its body until read or dropped.
                        drop(res);
                    }
                });
            }
            while set.join_next().await.is_some() {}
            let stats = bulkhead.stats("default").unwrap();
            prop_assert_eq!((stats.in_flight, stats.queued), (0, 0));
            // And the whole limit is usable again.
            let a = svc.clone().oneshot(Request::new(()));
            let b = svc.clone().oneshot(Request::new(()));
            let (a, b) = tokio::join!(a, b);
            prop_assert!(a.is_ok() && b.is_ok());
            Ok(())
        })?;
    }

    /// A half-open breaker's probe slots come back when a probe is dropped (a cancellation is not
    /// an outcome), so the next calls can probe.
    #[test]
    fn half_open_probe_slots_are_never_leaked(polls in 0usize..6, step in 0u64..20, probes in 1u32..4) {
        paused().block_on(async {
            let breaker = CircuitBreaker::builder()
                .consecutive_failures(1)
                .open_duration(Duration::from_secs(1))
                .half_open_probes(probes)
                .build()
                .unwrap();
            let svc = CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new())
                .layer(slow(Duration::from_millis(50)));
            // Open it the ordinary way: one failure.
            let failing = CircuitBreakerLayer::new(breaker.clone(), HttpClassifier::new()).layer(
                tower::service_fn(|_req: Request<ReplayBody<Empty<Bytes>>>| async {
                    Ok::<_, std::convert::Infallible>(
                        Response::builder().status(500).body(Empty::<Bytes>::new()).unwrap(),
                    )
                }),
            );
            let res = failing.oneshot(Request::new(ReplayBody::new(Empty::new(), 0))).await.unwrap();
            res.into_body().collect().await.unwrap();
            prop_assert_eq!(breaker.state(), BreakerState::Open);
            tokio::time::advance(Duration::from_secs(1)).await;
            let req = || Request::new(ReplayBody::new(Empty::<Bytes>::new(), 0));
            for _ in 0..probes {
                let _ = poll_then_drop(svc.clone().oneshot(req()), polls, Duration::from_millis(step)).await;
            }
            // Every slot is free again: `probes` calls at once are all admitted.
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..probes {
                let svc = svc.clone();
                set.spawn(async move { svc.oneshot(req()).await.map(|r| r.status()) });
            }
            while let Some(done) = set.join_next().await {
                let status = done.unwrap();
                prop_assert!(status.is_ok(), "a probe slot was leaked: {status:?}");
            }
            Ok(())
        })?;
    }

    /// The whole client stack over in-process endpoints: whatever the drop point, the bulkhead is
    /// empty afterwards, the least-request counts are back to zero, no breaker counted the
    /// cancellations as failures, and the next calls go through.
    #[test]
    fn the_client_stack_leaks_nothing_when_calls_are_dropped(
        polls in proptest::collection::vec(0usize..8, 6), step in 0u64..40,
    ) {
        paused().block_on(async {
            let addrs: Vec<std::net::SocketAddr> =
                vec!["127.0.0.1:9001".parse().unwrap(), "127.0.0.1:9002".parse().unwrap()];
            let client = Client::http(Target::addrs(addrs))
                .deadline(Duration::from_millis(200))
                .per_try_timeout(Duration::from_millis(80))
                .concurrency(Limits { concurrency: 3, queue: 2, max_wait: Duration::from_millis(30) })
                .balance(Policy::LeastRequest)
                .build_with(|_| slow(Duration::from_millis(20)))
                .unwrap();
            client.resolved().await;
            let mut set = tokio::task::JoinSet::new();
            for p in polls {
                let client = client.clone();
                set.spawn(async move {
                    if let Some(Ok(res)) = poll_then_drop(client.oneshot(get()), p, Duration::from_millis(step)).await {
                        let _ = res.into_body().collect().await;
                    }
                });
            }
            while set.join_next().await.is_some() {}
            let stats = client.bulkhead().unwrap().stats("default").unwrap();
            prop_assert_eq!((stats.in_flight, stats.queued), (0, 0));
            for endpoint in client.balancer().endpoints() {
                prop_assert_eq!(endpoint.in_flight, 0);
                prop_assert_eq!(endpoint.state, BreakerState::Closed);
            }
            for _ in 0..3 {
                let res = client.clone().oneshot(get()).await;
                prop_assert!(res.is_ok(), "{:?}", res.err());
            }
            Ok(())
        })?;
    }
}

/// Pool checkouts come back when a call is dropped while waiting for a connection or for the
/// answer (a real HTTP/1 server on loopback that answers after 200 ms).
#[test]
fn pool_checkouts_are_never_leaked() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = HttpServer::start(FaultPlan::always(
            Fault::ok().latency(Duration::from_millis(200)),
        ))
        .await;
        let pool = PoolBuilder::new()
            .max_size(1)
            .build(HttpConnector::<Full<Bytes>>::http1(), server.addr())
            .unwrap();
        let req = || Request::get("/").body(Full::new(Bytes::new())).unwrap();
        for (polls, pause) in [(1, 0), (2, 5), (3, 30), (5, 60), (8, 10)] {
            // One call holds the only connection; another waits for it; both are dropped.
            let holder = tokio::spawn(pool.clone().oneshot(req()));
            tokio::time::sleep(Duration::from_millis(pause)).await;
            // Boxed, so that dropping it really drops the future (a `pin!` would keep it alive
            // to the end of the scope).
            let mut waiter = Box::pin(pool.clone().oneshot(req()));
            for _ in 0..polls {
                let _ = std::future::poll_fn(|cx| Poll::Ready(waiter.as_mut().poll(cx))).await;
                tokio::time::sleep(MS).await;
            }
            drop(waiter);
            holder.abort();
            let _ = holder.await;
            // Everything is back: nothing in use, nobody waiting.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let stats = pool.stats();
            assert_eq!(
                (stats.in_use, stats.waiters, stats.in_flight),
                (0, 0, 0),
                "{stats:?}"
            );
        }
        // And the pool still serves.
        let res = pool.clone().oneshot(req()).await.unwrap();
        assert_eq!(res.status(), 200);
    });
}
