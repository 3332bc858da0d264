//! Bulkheads: bounded work, bounded waits, partitions, and no leaked permits.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, Empty};
use proptest::prelude::*;
use stanchion::Error;
use stanchion::bulkhead::{
    AdaptiveLimit, Bulkhead, BulkheadLayer, BulkheadPermit, BulkheadResponse, DEFAULT_PARTITION,
    HeaderKey, Limits, NoKey,
};
use stanchion::deadline::{Deadline, DeadlineCarrier};
use tokio::time::{Instant, advance, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

use support::faults::{Fault, FaultPlan};
use support::grpc_server::FramesBody;
use support::http_server::HttpServer;

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

/// A request that takes `ms` to serve.
#[derive(Debug, Clone, Copy, Default)]
struct Job {
    ms: u64,
    deadline: Option<Deadline>,
}

impl DeadlineCarrier for Job {
    fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Deadline) {
        self.deadline = Some(deadline);
    }
}

#[derive(Debug)]
struct Done;

impl BulkheadResponse for Done {
    type Output = Done;

    fn hold(self, permit: BulkheadPermit, _: bool) -> Done {
        drop(permit);
        Done
    }
}

fn worker() -> impl Service<Job, Response = Done, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|job: Job| async move {
        sleep(Duration::from_millis(job.ms)).await;
        Ok::<_, Infallible>(Done)
    })
}

fn limits(concurrency: usize, queue: usize, max_wait: Duration) -> Limits {
    Limits {
        concurrency,
        queue,
        max_wait,
    }
}

fn bulkhead(concurrency: usize, queue: usize, max_wait: Duration) -> Bulkhead {
    Bulkhead::builder()
        .limits(limits(concurrency, queue, max_wait))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_at_once_and_a_long_wait_times_out() {
    let b = bulkhead(1, 1, SEC);
    let svc = BulkheadLayer::new(b.clone(), NoKey).layer(worker());
    let start = Instant::now();
    let running = tokio::spawn(svc.clone().oneshot(Job {
        ms: 10_000,
        ..Job::default()
    }));
    let queued = tokio::spawn(svc.clone().oneshot(Job {
        ms: 1,
        ..Job::default()
    }));
    tokio::task::yield_now().await;
    let stats = b.default_stats();
    assert_eq!((stats.in_flight, stats.queued), (1, 1));

    let err = svc.clone().oneshot(Job::default()).await.unwrap_err();
    assert!(
        matches!(&err, Error::BulkheadFull { limit: 1, queue: 1, partition, .. } if &**partition == DEFAULT_PARTITION),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "rejected at once");

    let err = queued.await.unwrap().unwrap_err();
    assert!(
        matches!(err, Error::BulkheadTimeout { waited, .. } if waited == SEC),
        "{err:?}"
    );
    assert_eq!(start.elapsed(), SEC);
    let stats = b.default_stats();
    assert_eq!((stats.rejected, stats.timed_out, stats.queued), (1, 1, 0));
    running.abort();
}

#[tokio::test(start_paused = true)]
async fn the_wait_is_capped_by_the_deadline() {
    let b = bulkhead(1, 10, 5 * SEC);
    let svc = BulkheadLayer::new(b.clone(), NoKey).layer(worker());
    let _running = tokio::spawn(svc.clone().oneshot(Job {
        ms: 10_000,
        ..Job::default()
    }));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let job = Job {
        ms: 1,
        deadline: Some(Deadline::after(300 * MS)),
    };
    let err = svc.clone().oneshot(job).await.unwrap_err();
    assert!(matches!(err, Error::BulkheadTimeout { .. }), "{err:?}");
    assert_eq!(start.elapsed(), 300 * MS);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_order_and_a_dropped_waiter_frees_its_place() {
    let b = bulkhead(1, 2, 10 * SEC);
    let svc = BulkheadLayer::new(b.clone(), NoKey).layer(worker());
    let first = tokio::spawn(svc.clone().oneshot(Job {
        ms: 100,
        ..Job::default()
    }));
    tokio::task::yield_now().await;
    let dropped = tokio::spawn(svc.clone().oneshot(Job {
        ms: 100,
        ..Job::default()
    }));
    let second = tokio::spawn(svc.clone().oneshot(Job {
        ms: 100,
        ..Job::default()
    }));
    tokio::task::yield_now().await;
    assert_eq!(b.default_stats().queued, 2);
    // The queue is full, until a waiter gives up.
    assert!(matches!(
        svc.clone().oneshot(Job::default()).await,
        Err(Error::BulkheadFull { .. })
    ));
    dropped.abort();
    let _ = dropped.await;
    assert_eq!(b.default_stats().queued, 1);
    let third = tokio::spawn(svc.clone().oneshot(Job {
        ms: 100,
        ..Job::default()
    }));
    let start = Instant::now();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), 200 * MS, "the second waiter went next");
    third.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), 300 * MS);
    let stats = b.default_stats();
    assert_eq!((stats.in_flight, stats.queued, stats.waited), (0, 0, 2));
}

/// Polls `fut` once, from the test's own task.
async fn poll_once<F: std::future::Future + Unpin>(fut: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *fut).poll(cx))).await
}

/// A waiter handed the permit a finished call gave back is admitted, even before it runs: it no
/// longer holds a place in the queue, so a new call queues instead of being refused. (Before, it
/// counted as waiting until its task ran, and a call arriving in between found the queue full —
/// the demo refused up to 44 of 300 calls with 8 callers for 6 + 4 places.)
#[tokio::test(start_paused = true)]
async fn a_waiter_handed_a_permit_frees_its_place_in_the_queue_at_once() {
    // The `queued` gauge (feature `metrics`) says what the stats say at every step.
    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let seen = support::seen::Seen::new(&recorder);
    #[cfg(feature = "metrics")]
    let _installed = metrics::set_default_local_recorder(&recorder);
    let gauge_agrees = |stats: stanchion::bulkhead::PartitionStats| {
        #[cfg(feature = "metrics")]
        {
            seen.refresh();
            let gauge = seen
                .gauge(
                    "stanchion.bulkhead.queued",
                    &[("partition", DEFAULT_PARTITION)],
                )
                .unwrap_or(0.0);
            assert_eq!(gauge, stats.queued as f64, "{stats:?}");
        }
        stats
    };
    let b = bulkhead(1, 1, 10 * SEC);
    let svc = BulkheadLayer::new(b.clone(), NoKey).layer(worker());
    let job = |ms| Job {
        ms,
        ..Job::default()
    };
    let mut first = Box::pin(svc.clone().oneshot(job(100)));
    let mut second = Box::pin(svc.clone().oneshot(job(100)));
    assert!(poll_once(&mut first).await.is_pending());
    assert!(poll_once(&mut second).await.is_pending());
    assert_eq!(gauge_agrees(b.default_stats()).queued, 1);
    sleep(100 * MS).await;
    // The first call ends: its permit goes to the second, which has not run since.
    assert!(poll_once(&mut first).await.is_ready());
    let stats = gauge_agrees(b.default_stats());
    assert_eq!((stats.in_flight, stats.queued), (1, 0));
    // A third call finds the queue empty: it waits, it is not refused.
    let mut third = Box::pin(svc.clone().oneshot(job(0)));
    assert!(poll_once(&mut third).await.is_pending());
    assert_eq!(gauge_agrees(b.default_stats()).queued, 1);
    // And a fourth finds it full.
    assert!(matches!(
        svc.clone().oneshot(job(0)).await,
        Err(Error::BulkheadFull { .. })
    ));
    let start = Instant::now();
    second.await.unwrap();
    third.await.unwrap();
    assert_eq!(
        start.elapsed(),
        100 * MS,
        "the second ran its 100 ms, then the third"
    );
    let stats = gauge_agrees(b.default_stats());
    assert_eq!((stats.in_flight, stats.queued, stats.rejected), (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_streaming_response_holds_its_permit_until_the_body_ends() {
    let b = bulkhead(2, 0, SEC);
    let streaming = service_fn(|_req: Request<()>| async {
        let frames = ["a", "b", "c"].map(|s| Frame::data(Bytes::from(s)));
        Ok::<_, Infallible>(http::Response::new(FramesBody::new(frames)))
    });
    let svc = BulkheadLayer::new(b.clone(), NoKey).layer(streaming);
    let in_flight = || b.default_stats().in_flight;

    let mut body = svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .unwrap()
        .into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(in_flight(), 1, "still streaming");
    while body.frame().await.is_some() {}
    assert_eq!(in_flight(), 0, "the stream ended");

    let body = svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .unwrap()
        .into_body();
    assert_eq!(in_flight(), 1);
    drop(body);
    assert_eq!(in_flight(), 0, "dropped early");
}

#[tokio::test]
async fn a_saturated_partition_does_not_delay_another() {
    let slow = HttpServer::start(FaultPlan::always(Fault::ok().latency(SEC))).await;
    let fast = HttpServer::start(FaultPlan::healthy()).await;
    let b = Bulkhead::builder()
        .partition("reports", limits(2, 0, SEC))
        .build()
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let svc = BulkheadLayer::new(b.clone(), HeaderKey::new("x-partition")).layer(client);
    let reports = || {
        Request::get(slow.uri("/report"))
            .header("x-partition", "reports")
            .body(Empty::new())
            .unwrap()
    };
    let saturating: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot(reports())))
        .collect();
    while b.stats("reports").unwrap().in_flight < 2 {
        tokio::task::yield_now().await;
    }
    let err = svc.clone().oneshot(reports()).await.unwrap_err();
    assert!(matches!(err, Error::BulkheadFull { .. }), "{err:?}");
    for _ in 0..20 {
        let req = Request::get(fast.uri("/")).body(Empty::new()).unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        res.into_body().collect().await.unwrap();
    }
    let default = b.default_stats();
    assert_eq!(
        (default.waited, default.rejected, default.timed_out),
        (0, 0, 0)
    );
    assert_eq!(b.stats("reports").unwrap().in_flight, 2, "still saturated");
    for call in saturating {
        let res = call.await.unwrap().unwrap();
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(b.stats("reports").unwrap().in_flight, 0);
}

#[tokio::test]
async fn distinct_keys_past_the_bound_share_the_default_partition() {
    let b = Bulkhead::builder()
        .per_key(4, limits(1, 0, SEC))
        .build()
        .unwrap();
    let ok = service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
    });
    let svc = BulkheadLayer::new(b.clone(), HeaderKey::new("x-tenant")).layer(ok);
    for tenant in 0..100 {
        let req = Request::builder()
            .header("x-tenant", format!("tenant-{tenant}"))
            .body(())
            .unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }
    let partitions = b.all_stats();
    assert_eq!(partitions.len(), 1 + 4, "the default and four tenants");
    assert!(partitions.iter().all(|p| p.in_flight == 0));
}

#[test]
fn threads_racing_for_permits_never_exceed_the_limit_or_strand_one() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const LIMIT: usize = 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let b = bulkhead(LIMIT, 1_000, 10 * SEC);
    let inside = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let svc = {
        let (inside, peak) = (inside.clone(), peak.clone());
        BulkheadLayer::new(b.clone(), NoKey).layer(service_fn(move |_job: Job| {
            let (inside, peak) = (inside.clone(), peak.clone());
            async move {
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Done)
            }
        }))
    };
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let svc = svc.clone();
            tasks.spawn(async move {
                for _ in 0..500 {
                    svc.clone().oneshot(Job::default()).await.unwrap();
                }
            });
        }
        while let Some(task) = tasks.join_next().await {
            task.unwrap();
        }
    });
    assert!(
        peak.load(Ordering::SeqCst) <= LIMIT,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    let stats = b.default_stats();
    assert_eq!(
        (stats.in_flight, stats.queued),
        (0, 0),
        "every permit came back"
    );
    assert!(stats.waited > 0, "the waiting path was exercised");
}

/// Fault 1 of the races issue: 8 OS threads × 8 tasks on one adaptive partition (ceiling 64,
/// initial 32, ×0.9), one call in five answering 503. Afterwards nothing is in flight, the
/// free permits are the limit (none leaked, none made up), and the partition still admits.
#[test]
fn concurrent_overload_signals_leak_no_permit() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    for round in 0..3 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(8)
            .enable_time()
            .build()
            .unwrap();
        let b = Bulkhead::builder()
            .limits(limits(64, 10_000, 60 * SEC))
            .adaptive(AdaptiveLimit {
                initial: 32,
                min: 1,
                backoff: 0.9,
                slow_call: None,
            })
            .build()
            .unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        let svc = {
            let n = n.clone();
            BulkheadLayer::new(b.clone(), NoKey).layer(service_fn(move |_: Request<()>| {
                let overload = n.fetch_add(1, Ordering::Relaxed).is_multiple_of(5);
                async move {
                    tokio::task::yield_now().await;
                    let status = if overload { 503 } else { 200 };
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Empty::<Bytes>::new())
                            .unwrap(),
                    )
                }
            }))
        };
        rt.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let svc = svc.clone();
                tasks.spawn(async move {
                    for _ in 0..300 {
                        drop(svc.clone().oneshot(Request::new(())).await.unwrap());
                    }
                });
            }
            while let Some(task) = tasks.join_next().await {
                task.unwrap();
            }
        });
        let stats = b.default_stats();
        assert_eq!(
            (stats.in_flight, stats.queued),
            (0, 0),
            "round {round}: {stats:?}"
        );
        assert!(stats.limit >= 1, "round {round}: {stats:?}");
        // Still admits: as many calls at once as its limit.
        rt.block_on(async {
            let calls: Vec<_> = (0..stats.limit)
                .map(|_| tokio::spawn(svc.clone().oneshot(Request::new(()))))
                .collect();
            for call in calls {
                call.await.unwrap().unwrap();
            }
        });
    }
}

/// An HTTP service that answers after `x-ms` milliseconds with status `x-status` (default 200).
fn scripted()
-> impl Service<Request<()>, Response = http::Response<Empty<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send {
    service_fn(|req: Request<()>| async move {
        let header = |name: &str, default: u64| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(default)
        };
        sleep(Duration::from_millis(header("x-ms", 1))).await;
        let status = header("x-status", 200) as u16;
        Ok::<_, Infallible>(
            http::Response::builder()
                .status(status)
                .body(Empty::new())
                .unwrap(),
        )
    })
}

fn scripted_request(ms: u64, status: u16) -> Request<()> {
    Request::builder()
        .header("x-ms", ms)
        .header("x-status", status)
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_grows_at_full_use_and_shrinks_on_overload() {
    let b = Bulkhead::builder()
        .limits(limits(6, 100, 60 * SEC))
        .adaptive(AdaptiveLimit {
            initial: 4,
            min: 2,
            backoff: 0.5,
            slow_call: Some(SEC),
        })
        .build()
        .unwrap();
    let svc = BulkheadLayer::new(b.clone(), NoKey).layer(scripted());
    let limit = || b.default_stats().limit;
    let run = |calls: Vec<Request<()>>| {
        let svc = svc.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            for req in calls {
                set.spawn(svc.clone().oneshot(req));
            }
            while let Some(done) = set.join_next().await {
                drop(done.unwrap().unwrap());
            }
        }
    };
    assert_eq!(limit(), 4);
    // One at a time, the partition is never at its limit: no growth.
    for _ in 0..5 {
        run(vec![scripted_request(1, 200)]).await;
    }
    assert_eq!(limit(), 4);
    // Four at once: the fourth took the last permit, and its success grows the limit.
    run((0..4).map(|_| scripted_request(10, 200)).collect()).await;
    assert_eq!(limit(), 5);
    // Growth stops at the partition's concurrency.
    for _ in 0..5 {
        let n = limit();
        run((0..n).map(|_| scripted_request(10, 200)).collect()).await;
    }
    assert_eq!(limit(), 6);
    // Overload halves it, down to the minimum.
    run(vec![scripted_request(1, 503)]).await;
    assert_eq!(limit(), 3);
    run(vec![scripted_request(1, 429)]).await;
    assert_eq!(limit(), 2);
    run(vec![scripted_request(1, 503)]).await;
    assert_eq!(limit(), 2);
    // A slow success counts as overload too.
    run((0..2).map(|_| scripted_request(10, 200)).collect()).await;
    assert_eq!(limit(), 3);
    run(vec![scripted_request(2_000, 200)]).await;
    assert_eq!(limit(), 2);
}

#[tokio::test(start_paused = true)]
async fn after_shrinking_calls_in_flight_finish_before_new_ones_start() {
    let b = Bulkhead::builder()
        .limits(limits(10, 100, 60 * SEC))
        .adaptive(AdaptiveLimit {
            initial: 4,
            min: 1,
            backoff: 0.5,
            slow_call: None,
        })
        .build()
        .unwrap();
    let svc = BulkheadLayer::new(b.clone(), NoKey).layer(scripted());
    let start = Instant::now();
    // (Each response is dropped as it arrives: a response holds its permit until then.)
    let long: Vec<_> = [10_000, 20_000, 30_000]
        .into_iter()
        .map(|ms| {
            let call = svc.clone().oneshot(scripted_request(ms, 200));
            tokio::spawn(async move { drop(call.await.unwrap()) })
        })
        .collect();
    // The fourth permit: an overloaded answer shrinks the limit from 4 to 2.
    drop(svc.clone().oneshot(scripted_request(1, 503)).await.unwrap());
    assert_eq!(b.default_stats().limit, 2);
    assert_eq!(b.default_stats().in_flight, 3);
    // A new call waits until in-flight is below the new limit: after the second long call.
    drop(svc.clone().oneshot(scripted_request(1, 200)).await.unwrap());
    assert_eq!(start.elapsed(), Duration::from_millis(20_001));
    for call in long {
        call.await.unwrap();
    }
    let stats = b.default_stats();
    assert_eq!((stats.in_flight, stats.queued), (0, 0));
}

#[test]
fn invalid_settings_are_errors() {
    let cases = [
        (
            Bulkhead::builder().limits(limits(0, 1, SEC)),
            "limits.concurrency",
        ),
        (
            Bulkhead::builder().limits(limits(1, 2_000_000, SEC)),
            "limits.queue",
        ),
        (
            Bulkhead::builder().limits(limits(1, 1, 7200 * SEC)),
            "limits.max_wait",
        ),
        (
            Bulkhead::builder().partition("p", limits(0, 1, SEC)),
            "partitions[0].limits.concurrency",
        ),
        (
            Bulkhead::builder().per_key(10, limits(1, 1, 7200 * SEC)),
            "per_key.limits.max_wait",
        ),
        (
            Bulkhead::builder().partition("", Limits::default()),
            "partitions[0].name",
        ),
        (
            Bulkhead::builder().partition(DEFAULT_PARTITION, Limits::default()),
            "partitions[0].name",
        ),
        (
            Bulkhead::builder()
                .partition("a", Limits::default())
                .partition("a", Limits::default()),
            "partitions[1].name",
        ),
        (
            Bulkhead::builder().per_key(20_000, Limits::default()),
            "per_key.max",
        ),
    ];
    // Paths are the shape the settings are written in as data (docs/configuration.md).
    for (builder, path) in cases {
        assert_eq!(builder.build().unwrap_err().path(), path);
    }
    let defaults = Limits::default();
    assert_eq!(defaults, limits(100, 50, SEC));
}

#[derive(Debug, Clone)]
enum Op {
    Start(u64),
    Advance(u64),
    Cancel(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u64..200).prop_map(Op::Start),
        (0u64..100).prop_map(Op::Advance),
        any::<usize>().prop_map(Op::Cancel),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn limits_hold_and_no_permit_leaks(
        concurrency in 1usize..4,
        queue in 0usize..4,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let b = bulkhead(concurrency, queue, Duration::from_millis(150));
            let svc = BulkheadLayer::new(b.clone(), NoKey).layer(worker());
            let mut calls = Vec::new();
            for op in ops {
                match op {
                    Op::Start(ms) => calls.push(tokio::spawn(svc.clone().oneshot(Job { ms, ..Job::default() }))),
                    Op::Advance(ms) => advance(Duration::from_millis(ms)).await,
                    Op::Cancel(i) if !calls.is_empty() => {
                        let i = i % calls.len();
                        calls[i].abort();
                    }
                    Op::Cancel(_) => {}
                }
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                let stats = b.default_stats();
                prop_assert!(stats.in_flight <= concurrency, "{stats:?}");
                prop_assert!(stats.queued <= queue, "{stats:?}");
            }
            // Let everything finish or give up: every permit and queue place comes back.
            advance(Duration::from_secs(1)).await;
            for call in calls {
                let _ = call.await;
            }
            let stats = b.default_stats();
            prop_assert_eq!((stats.in_flight, stats.queued), (0, 0));
            Ok(())
        })?;
    }
}
