use super::*;

/// Two calls at once on an adaptive partition, one signalling overload (the limit shrinks)
/// and one success at full use (it grows): once both are over, the free permits are exactly
/// the limit — none leaked, none made up. Before, the change was read back from a second
/// load of the limit, which could hold the other call's change too.
#[test]
fn loom_adaptive_signals_move_permits_by_exactly_the_change() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let partition = std::sync::Arc::new(Partition::new(
            "p".into(),
            Limits {
                concurrency: 4,
                queue: 0,
                max_wait: Duration::from_secs(1),
            },
            Some(AdaptiveLimit {
                initial: 2,
                min: 1,
                backoff: 0.5,
                slow_call: None,
            }),
            std::sync::Arc::new(crate::metrics::PartitionMetrics::new("p")),
        ));
        let call = |signal: Signal| {
            let partition = partition.clone();
            loom::thread::spawn(move || {
                if let Some(at_full_use) = partition.try_acquire() {
                    partition.adapt(signal, at_full_use || signal == Signal::Success, 0);
                    partition.release();
                }
            })
        };
        let (a, b) = (call(Signal::Overload), call(Signal::Success));
        a.join().unwrap();
        b.join().unwrap();
        let limit = partition.limit.load(Ordering::SeqCst);
        assert!((1..=4).contains(&limit), "limit {limit}");
        assert_eq!(
            partition.free.load(Ordering::SeqCst),
            limit as isize,
            "free permits differ from the limit with nothing in flight"
        );
    });
}
