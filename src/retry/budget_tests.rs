use super::*;

fn budget(ratio: f64, floor: u32, window_secs: u64) -> RetryBudget {
    RetryBudget::builder()
        .ratio(ratio)
        .min_per_second(floor)
        .window(Duration::from_secs(window_secs))
        .build()
        .unwrap()
}

fn grants(budget: &RetryBudget, tries: usize) -> usize {
    (0..tries).filter(|_| budget.try_withdraw()).count()
}

#[tokio::test(start_paused = true)]
async fn fractional_ratios_are_exact() {
    for (ratio, requests, expected) in [(0.6, 10, 6), (0.2, 100, 20), (0.333, 1000, 333)] {
        let b = budget(ratio, 0, 10);
        for _ in 0..requests {
            b.deposit();
        }
        assert_eq!(grants(&b, requests * 2), expected, "ratio {ratio}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_floor_allows_retries_without_traffic() {
    let b = budget(0.2, 10, 10);
    assert_eq!(grants(&b, 500), 100);
    assert_eq!(b.stats().refused, 400);
    assert_eq!(b.stats().withdrawals, 100);
    assert_eq!(b.stats().balance, 0.0);
}

#[tokio::test(start_paused = true)]
async fn tokens_expire_with_the_window() {
    let b = budget(1.0, 0, 10);
    for _ in 0..5 {
        b.deposit();
    }
    assert_eq!(b.balance(), 5.0);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(grants(&b, 2), 2);
    assert_eq!(b.balance(), 3.0);
    // The deposits' slice leaves the window after 10 s; the withdrawals' a little later.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(b.balance(), -2.0);
    assert_eq!(grants(&b, 1), 0);
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(b.balance(), 0.0);
    b.deposit();
    assert_eq!(grants(&b, 2), 1);
}

#[tokio::test(start_paused = true)]
async fn deposits_between_clock_reads_never_count_late() {
    let b = budget(1.0, 0, 10);
    // Idle for longer than the window: the stripes still remember slice 0.
    tokio::time::advance(Duration::from_secs(15)).await;
    b.deposit();
    // That deposit counted in slice 0, which has left the window: no credit, never extra.
    assert_eq!(b.stats().deposits, 0);
    // Reading the clock (any withdrawal or stats call) brings the stripes up to date.
    for _ in 0..4 {
        b.deposit();
    }
    assert_eq!(b.stats().deposits, 4);
    assert_eq!(grants(&b, 10), 4);
}

#[tokio::test(start_paused = true)]
async fn a_saturated_cell_never_overflows_into_its_tag_and_never_grants() {
    let stripe = Stripe::default();
    assert_eq!(stripe.add(7, COUNT_MASK), Some((7, COUNT_MASK)));
    assert_eq!(stripe.add(7, 1), None, "saturated: nothing added");
    assert_eq!(stripe.window_sum(7), COUNT_MASK);
    // A newer slice resets the cell.
    assert_eq!(stripe.add(17, 1), Some((17, 1)));
    assert_eq!(stripe.window_sum(17), 1);
    // An undo only takes from the slice it names.
    assert!(!stripe.undo(7));
    assert!(stripe.undo(17));
    assert!(!stripe.undo(17), "nothing left to take");

    // A budget whose withdrawal cell is saturated refuses, whatever its balance.
    let b = budget(10.0, 1_000_000, 3600);
    let Mode::Ratio(inner) = &b.mode else {
        unreachable!("a ratio budget")
    };
    let epoch = epoch_of(inner);
    inner.withdrawals.add(epoch, COUNT_MASK).unwrap();
    assert!(!b.try_withdraw());
    assert_eq!(b.stats().withdrawals, COUNT_MASK);
}

#[test]
fn invalid_settings_are_errors() {
    let cases = [
        (RetryBudget::builder().ratio(-0.1), "ratio"),
        (RetryBudget::builder().ratio(f64::NAN), "ratio"),
        (RetryBudget::builder().ratio(11.0), "ratio"),
        (
            RetryBudget::builder().min_per_second(2_000_000),
            "min_per_second",
        ),
        (RetryBudget::builder().window(Duration::ZERO), "window"),
        (
            RetryBudget::builder().window(Duration::from_millis(500)),
            "window",
        ),
        (
            RetryBudget::builder().window(Duration::from_secs(7200)),
            "window",
        ),
    ];
    for (builder, field) in cases {
        assert_eq!(builder.build().unwrap_err().field(), field);
    }
    let defaults = RetryBudget::default();
    assert_eq!(defaults.ratio(), 0.2);
    assert_eq!(defaults.min_per_second(), 10);
    assert_eq!(defaults.window(), Duration::from_secs(10));
}

#[test]
fn concurrent_withdrawals_never_overdraw() {
    const THREADS: usize = 4;
    const REQUESTS: usize = 20_000;
    for round in 0..5 {
        let b = budget(0.25, 2, 10);
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let b = b.clone();
                    s.spawn(move || {
                        let mut granted = 0;
                        for i in 0..REQUESTS {
                            b.deposit();
                            // Every thread asks for far more retries than it may have.
                            if (i + t + round) % 2 == 0 && b.try_withdraw() {
                                granted += 1;
                            }
                            if b.try_withdraw() {
                                granted += 1;
                            }
                        }
                        granted
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        let bound = (0.25 * (THREADS * REQUESTS) as f64) as usize + 2 * 10;
        assert!(granted <= bound, "granted {granted} > bound {bound}");
        // Contention may refuse a few retries the budget had, but not many.
        assert!(
            granted >= bound * 9 / 10,
            "granted only {granted} of {bound}"
        );
        let stats = b.stats();
        assert_eq!(stats.withdrawals as usize, granted);
        assert_eq!(stats.deposits as usize, THREADS * REQUESTS);
        assert!(stats.balance < 1.0);
    }
}
