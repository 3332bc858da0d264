use super::*;

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder()
        .consecutive_failures(1)
        .build()
        .unwrap()
}

/// A trip races a reset followed by another trip: whatever generation the circuit ends
/// open in, its published end is the one its own trip computed — a trip descheduled between
/// its swap and its publication never overwrites a newer period's end (which, left
/// unpublished or mismatched, could hold the circuit open for good or skip a period).
#[test]
fn loom_a_late_trip_never_publishes_over_a_newer_period() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let b = breaker();
        let first = b.inner().state.load(Ordering::Acquire);
        let t1 = {
            let b = b.clone();
            loom::thread::spawn(move || {
                let until = 1_000_000_000_000;
                b.inner()
                    .open_until_at(first, until)
                    .then(|| (generation(first) + 1, until))
            })
        };
        let t2 = {
            let b = b.clone();
            loom::thread::spawn(move || {
                b.reset();
                let word = b.inner().state.load(Ordering::Acquire);
                let until = 2_000_000_000_000;
                (kind(word) == CLOSED && b.inner().open_until_at(word, until))
                    .then(|| (generation(word) + 1, until))
            })
        };
        let opened: Vec<(u64, u64)> = [t1.join().unwrap(), t2.join().unwrap()]
            .into_iter()
            .flatten()
            .collect();
        let inner = b.inner();
        let word = inner.state.load(Ordering::Acquire);
        if kind(word) == OPEN {
            let (_, until) = opened
                .iter()
                .find(|(g, _)| *g == generation(word))
                .expect("an open state was opened by a trip");
            assert_eq!(inner.open_until_of(word), Some(*until));
        }
    });
}

/// Two trips race from the same closed state with different ends, a third thread reads:
/// exactly one opens the circuit, and the end anyone sees is the winner's — never the
/// loser's (which, stored before the compare-and-swap, could win before).
#[test]
fn loom_racing_trips_publish_the_winners_end() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let b = breaker();
        let word = b.inner().state.load(Ordering::Acquire);
        let trip = |until: u64| {
            let b = b.clone();
            loom::thread::spawn(move || b.inner().open_until_at(word, until).then_some(until))
        };
        let (one, two) = (trip(1_000_000_000_000), trip(2_000_000_000_000));
        let reader = {
            let b = b.clone();
            loom::thread::spawn(move || {
                let inner = b.inner();
                let word = inner.state.load(Ordering::Acquire);
                (kind(word) == OPEN)
                    .then(|| inner.open_until_of(word))
                    .flatten()
            })
        };
        let winners: Vec<u64> = [one.join().unwrap(), two.join().unwrap()]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(winners.len(), 1, "exactly one trip opens the circuit");
        let inner = b.inner();
        let word = inner.state.load(Ordering::Acquire);
        assert_eq!(inner.open_until_of(word), Some(winners[0]));
        if let Some(seen) = reader.join().unwrap() {
            assert_eq!(seen, winners[0], "a reader saw the loser's end");
        }
    });
}
