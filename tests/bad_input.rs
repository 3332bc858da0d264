//! Bad input never panics: every parser over arbitrary bytes, every builder over random
//! settings (including zero, huge, NaN and infinite values) ends in a value or a `ConfigError`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use stanchion::balance::{Balancer, StaticResolver};
use stanchion::breaker::CircuitBreaker;
use stanchion::bulkhead::{AdaptiveLimit, Bulkhead, Limits};
use stanchion::classify::{GrpcCode, GrpcCodes, HttpClassifier, parse_pushback, parse_retry_after};
use stanchion::client::{Client, Route, RoutePolicy, Target};
use stanchion::deadline::{AttemptLayer, DeadlineLayer, parse_grpc_timeout};
use stanchion::idempotency::{IdempotencyKey, IdempotencyLayer, MemoryStore};
use stanchion::pool::{HttpConnector, PoolBuilder};
use stanchion::retry::{Backoff, RetryBudget, RetryLayer};

/// Durations from zero to absurd: nanoseconds, seconds, and the largest there is.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        any::<u64>().prop_map(Duration::from_nanos),
        (0u64..100_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_secs),
    ]
}

/// Ratios and shares: in range, out of range, negative, NaN and infinities.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0f64..=1.0,
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..20, any::<u32>()]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..20, any::<usize>()]
}

fn limits() -> impl Strategy<Value = Limits> {
    (size(), size(), duration()).prop_map(|(concurrency, queue, max_wait)| Limits {
        concurrency,
        queue,
        max_wait,
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..80)
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn header_parsers_never_panic(value in bytes()) {
        let _ = parse_retry_after(&value, now());
        let _ = parse_grpc_timeout(&value);
        let _ = parse_pushback(&value);
        if let Ok(header) = http::HeaderValue::from_bytes(&value) {
            let _ = IdempotencyKey::from_header(&header);
        }
    }

    #[test]
    fn what_the_parsers_accept_is_bounded(value in bytes()) {
        if let Some(delay) = parse_pushback(&value) {
            prop_assert!(delay <= Duration::from_millis(u64::MAX));
        }
        if let Some(timeout) = parse_grpc_timeout(&value) {
            // At most 8 digits of hours.
            prop_assert!(timeout <= Duration::from_secs(99_999_999 * 3600));
        }
    }

    #[test]
    fn layer_constructors_never_panic(d in duration()) {
        let _ = DeadlineLayer::new(d);
        let _ = AttemptLayer::new(d);
    }

    #[test]
    fn retry_builders_never_panic(
        base in duration(), cap in duration(), attempts in count(),
        ratio in float(), floor in count(), window in duration(),
    ) {
        let backoff = Backoff::new(base, cap);
        let budget = RetryBudget::builder().ratio(ratio).min_per_second(floor).window(window).build();
        let mut retry = RetryLayer::builder(HttpClassifier::new()).max_attempts(attempts);
        if let Ok(backoff) = backoff {
            // A valid backoff's delays stay within its cap, for any retry number.
            for retry_number in [0, 1, 5, 31, 64, u32::MAX] {
                prop_assert!(backoff.delay(retry_number, None) <= backoff.cap());
            }
            retry = retry.backoff(backoff);
        }
        if let Ok(budget) = budget {
            retry = retry.budget(budget);
        }
        let _ = retry.build();
    }

    #[test]
    fn breaker_builders_never_panic(
        window in count(), buckets in count(), span in duration(), failures in count(),
        rate in float(), slow in duration(), slow_rate in float(), minimum in count(),
        open in duration(), growth in float(), max_open in duration(), jitter in float(),
        probes in count(), which in 0u8..3,
    ) {
        let builder = match which {
            0 => CircuitBreaker::builder().count_window(window),
            1 => CircuitBreaker::builder().time_window(span, buckets),
            _ => CircuitBreaker::builder().consecutive_failures(failures),
        };
        let _ = builder
            .failure_rate(rate)
            .slow_calls(slow, slow_rate)
            .minimum_calls(minimum)
            .open_duration(open)
            .growing_open_duration(growth, max_open)
            .open_jitter(jitter)
            .half_open_probes(probes)
            .build();
    }

    #[test]
    fn bulkhead_builders_never_panic(
        default in limits(), named in limits(), name in "[a-z]{0,6}", per_key in size(),
        keyed in limits(), initial in size(), min in size(), backoff in float(), slow in duration(),
    ) {
        let _ = Bulkhead::builder()
            .limits(default)
            .partition(name, named)
            .per_key(per_key, keyed)
            .adaptive(AdaptiveLimit { initial, min, backoff, slow_call: Some(slow) })
            .build();
    }

    #[test]
    fn pool_builders_never_panic(
        max in size(), idle in size(), checkout in duration(), idle_for in duration(),
        lifetime in duration(), jitter in float(), requests in any::<u64>(), streams in size(),
        connecting in size(),
    ) {
        let _ = PoolBuilder::new()
            .max_size(max)
            .min_idle(idle)
            .checkout_timeout(checkout)
            .idle_timeout(idle_for)
            .max_lifetime(lifetime)
            .lifetime_jitter(jitter)
            .max_requests_per_connection(requests)
            .max_streams_per_connection(streams)
            .max_connecting(connecting)
            .settings();
    }

    #[test]
    fn idempotency_server_builders_never_panic(
        ttl in duration(), lease in duration(), request in size(), response in size(),
        entries in size(), route in "[ -~]{0,12}",
    ) {
        let _ = MemoryStore::with_max_entries(entries);
        let _ = IdempotencyLayer::builder(MemoryStore::new())
            .ttl(ttl)
            .lease(lease)
            .max_request_body(request)
            .max_response_body(response)
            .route(route)
            .build();
    }

    #[test]
    fn balancer_and_client_builders_never_panic(
        share in float(), refresh in duration(), deadline in duration(), per_try in duration(),
        attempts in count(), route in "[ -~]{0,12}", route_deadline in duration(),
        route_attempts in count(), partition in "[a-z]{0,4}", replay in size(), grpc in any::<bool>(),
    ) {
        let addrs = vec!["127.0.0.1:1".parse().unwrap()];
        let _ = Balancer::builder(StaticResolver::new(addrs.clone()), |_| (), HttpClassifier::new())
            .max_ejection(share)
            .panic_threshold(1.0 - share)
            .refresh_interval(refresh)
            .build();
        let policy = RoutePolicy::new()
            .deadline(route_deadline)
            .max_attempts(route_attempts)
            .partition(partition);
        if grpc {
            let _ = Client::grpc(Target::addrs(addrs))
                .deadline(deadline)
                .per_try_timeout(per_try)
                .max_attempts(attempts)
                .max_ejection(share)
                .panic_threshold(share)
                .refresh_interval(refresh)
                .replay_limit(replay)
                .retryable_codes(GrpcCodes::NONE.with(GrpcCode::Aborted))
                .route(Route::grpc_method(&route, "M"), policy.clone())
                .route(Route::grpc_service(&route), policy)
                .build(HttpConnector::<tonic::body::Body>::http2());
        } else {
            let _ = Client::http(Target::addrs(addrs))
                .deadline(deadline)
                .per_try_timeout(per_try)
                .max_attempts(attempts)
                .max_ejection(share)
                .panic_threshold(share)
                .refresh_interval(refresh)
                .replay_limit(replay)
                .route(Route::path_prefix(route), policy)
                .build(HttpConnector::<http_body_util::Empty<bytes::Bytes>>::http1());
        }
    }
}
