//! A retry budget's instruments, registered once per budget (a client's budget is shared by
//! its routes), labelled with the budget's name.

use metrics::{Counter, Gauge, counter, gauge};

use super::{BUDGET_BALANCE, BUDGET_WITHDRAWALS};

/// The handles of one budget's instruments.
pub(crate) struct BudgetMetrics {
    balance: Gauge,
    granted: Counter,
    refused: Counter,
}

impl BudgetMetrics {
    /// Registers the instruments of the budget named `name`, whose balance starts at
    /// `balance` tokens.
    pub(crate) fn new(name: &str, balance: f64) -> BudgetMetrics {
        let result = |r: &'static str| [("budget", name.to_owned()), ("result", r.to_owned())];
        let metrics = BudgetMetrics {
            balance: gauge!(BUDGET_BALANCE, &[("budget", name.to_owned())]),
            granted: counter!(BUDGET_WITHDRAWALS, &result("granted")),
            refused: counter!(BUDGET_WITHDRAWALS, &result("refused")),
        };
        metrics.balance.set(balance);
        metrics
    }

    /// A retry asked for a token (`granted` or not); `balance` tokens are left.
    pub(crate) fn withdrawal(&self, granted: bool, balance: f64) {
        if granted {
            self.granted.increment(1);
        } else {
            self.refused.increment(1);
        }
        self.balance.set(balance);
    }
}

impl std::fmt::Debug for BudgetMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetMetrics").finish_non_exhaustive()
    }
}
