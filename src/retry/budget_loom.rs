use super::*;

/// An hour's window (6-minute slices): the models read the real clock, which must not cross
/// a slice between the interleavings loom explores.
fn budget(ratio: f64, floor: u32) -> RetryBudget {
    RetryBudget::builder()
        .ratio(ratio)
        .min_per_second(floor)
        .window(Duration::from_secs(3600))
        .build()
        .unwrap()
}

/// Two withdrawals race for the one token a budget holds (five requests at 0.2): at most
/// one is granted, and what is counted is what was granted — reserve, then check. (A
/// withdrawal reads every cell of the window, so two racers are what the model explores in
/// full.)
#[test]
fn loom_racing_withdrawals_never_overdraw() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let b = budget(0.2, 0);
        for _ in 0..5 {
            b.deposit();
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                loom::thread::spawn(move || b.try_withdraw())
            })
            .collect();
        let granted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|g| *g)
            .count();
        assert!(granted <= 1, "{granted} granted from one token");
        assert_eq!(b.stats().withdrawals as usize, granted);
    });
}

/// Deposits racing withdrawals: a withdrawal is granted only against what was deposited
/// (five requests at 0.2 make one token; there is no reserve).
#[test]
fn loom_withdrawals_racing_deposits_take_only_what_was_deposited() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let b = budget(0.2, 0);
        let depositor = {
            let b = b.clone();
            loom::thread::spawn(move || {
                for _ in 0..5 {
                    b.deposit();
                }
            })
        };
        let withdrawers: Vec<_> = (0..2)
            .map(|_| {
                let b = b.clone();
                loom::thread::spawn(move || b.try_withdraw())
            })
            .collect();
        depositor.join().unwrap();
        let granted = withdrawers
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|g| *g)
            .count();
        assert!(granted <= 1, "{granted} granted from one token's deposits");
        assert_eq!(b.stats().withdrawals as usize, granted);
    });
}

/// A throttling budget: two failed attempts and a success race on the token count — every
/// update lands (no lost compare-and-swap), and the count is clamped to the bucket.
#[test]
fn loom_racing_throttle_updates_are_exact() {
    loom::model(|| {
        let b = RetryBudget::throttling(2.0, 0.5).build().unwrap();
        let fail = |b: &RetryBudget| {
            let b = b.clone();
            loom::thread::spawn(move || b.failed())
        };
        let (f1, f2) = (fail(&b), fail(&b));
        b.succeeded();
        f1.join().unwrap();
        f2.join().unwrap();
        let tokens = b.stats().tokens.unwrap();
        // 2 - 1 - 1 + 0.5 in any order, clamped at 2 (a success first is lost to the cap)
        // and at 0 (a success last lands on 0).
        assert!(tokens == 0.0 || tokens == 0.5, "{tokens}");
        assert!(!b.try_withdraw());
    });
}
