use super::*;

#[test]
fn a_count_window_keeps_the_last_n_calls() {
    let w = CountWindow::new(10);
    for i in 0..25 {
        w.record(0, i % 5 == 0, i % 2 == 0);
    }
    // Calls 15..25: failures at 15 and 20; slow at the even ones.
    assert_eq!(
        w.tally(),
        Tally {
            calls: 10,
            failures: 2,
            slow: 5,
            consecutive_failures: 0
        }
    );
    w.reset();
    assert_eq!(w.tally(), Tally::default());
}

#[test]
fn a_bucket_counts_past_two_million_calls_without_phantom_failures() {
    let w = TimeWindow::new(1_000_000_000, 1);
    let calls = (1u64 << 21) + 5;
    for _ in 0..calls {
        w.record(0, false, false, 0);
    }
    w.record(0, true, true, 0);
    let tally = w.tally(0);
    assert_eq!(
        (tally.calls, tally.failures, tally.slow),
        (calls + 1, 1, 1),
        "counts overflowed into each other"
    );
}

/// A stripe (a thread) that stopped calling ages out once the window has turned seven times
/// elsewhere — never before 4`n` calls were recorded elsewhere, even when every other stripe
/// starts one call short of a turn — and a stripe that calls now and then keeps counting.
#[test]
fn a_stale_stripe_ages_out_of_the_count_window() {
    let n = 10u64;
    for mid_ring in [false, true] {
        let w = CountWindow::new(n as u32);
        if mid_ring {
            // Stripes 1–3 one call short of a turn.
            for stripe in 1..4 {
                for _ in 0..n - 1 {
                    w.record(stripe, false, false);
                }
            }
        }
        for _ in 0..5 {
            w.record(0, true, false);
        }
        // 4n − 1 calls elsewhere: stripe 0 still counts, however the turns fall.
        for i in 0..4 * n - 1 {
            w.record(1 + (i as usize % 3), false, false);
        }
        assert_eq!(
            w.tally().failures,
            5,
            "mid ring {mid_ring}: aged out too soon"
        );
        // Long after: aged out.
        for _ in 0..8 * n {
            w.record(1, false, false);
        }
        assert_eq!(w.tally().failures, 0, "mid ring {mid_ring}: never aged out");
        // It records again: it counts again, its ring as it was (old outcomes included).
        w.record(0, false, false);
        assert_eq!(w.tally().failures, 5);
    }
    // A stripe that records once every few turns of another keeps counting.
    let w = CountWindow::new(n as u32);
    for round in 0..20 {
        w.record(2, true, false);
        for _ in 0..3 * n {
            w.record(3, false, false);
        }
        assert!(w.tally().failures > 0, "round {round}");
    }
}

#[test]
fn a_count_window_ring_holds_across_the_cursor_wrapping_past_u32() {
    let w = CountWindow::new(7);
    // As after 2³² − 11 calls on one stripe; a `u32` cursor wrapped 11 calls later and, 7
    // not dividing 2³², the ring jumped back and overwrote calls still in the window.
    w.stripes[0]
        .cursor
        .store(u64::from(u32::MAX) - 10, Ordering::Relaxed);
    let calls = [[false; 7].as_slice(), &[true; 4], &[false; 3]].concat();
    for failure in calls {
        w.record(0, failure, false);
    }
    // The last 7 calls: 4 failures, then 3 successes.
    let tally = w.tally();
    assert_eq!((tally.calls, tally.failures), (7, 4));
}

#[test]
fn a_time_window_forgets_old_buckets() {
    let w = TimeWindow::new(1_000, 10);
    for t in 0..5 {
        w.record(0, true, false, t * 1_000);
    }
    assert_eq!(w.tally(4_000).calls, 5);
    assert_eq!(w.tally(4_000).failures, 5);
    // At t = 12 000, slices 0, 1 and 2 have left the window.
    w.record(1, false, true, 12_000);
    let tally = w.tally(12_000);
    assert_eq!((tally.calls, tally.failures, tally.slow), (3, 2, 1));
    w.reset();
    assert_eq!(w.tally(12_000), Tally::default());
}

#[test]
fn packed_counts_survive_concurrent_records() {
    let w = CountWindow::new(1000);
    std::thread::scope(|s| {
        for t in 0..4 {
            let w = &w;
            s.spawn(move || {
                for i in 0..10_000 {
                    w.record(t, (i + t) % 3 == 0, i % 7 == 0);
                }
            });
        }
    });
    // Threads that finished early have aged out; this checks the counts, so count them all.
    let turn = w.turns.load(Ordering::Relaxed);
    for stripe in w.stripes.iter() {
        stripe.seen_turn.store(turn, Ordering::Relaxed);
    }
    let tally = w.tally();
    assert_eq!(tally.calls, 4000, "four stripes, each full");
    // Every slot's outcome is counted exactly once.
    let from_slots: u64 = w
        .stripes
        .iter()
        .flat_map(|s| s.slots.iter())
        .map(|slot| u64::from(slot.load(Ordering::Relaxed) & FAILED != 0))
        .sum();
    assert_eq!(tally.failures, from_slots);
    let present: u64 = w
        .stripes
        .iter()
        .flat_map(|s| s.slots.iter())
        .map(|slot| u64::from(slot.load(Ordering::Relaxed) & PRESENT != 0))
        .sum();
    assert_eq!(tally.calls, present);
}
