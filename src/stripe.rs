//! Per-thread stripes for counters that every call touches.
//!
//! A counter bumped by every call on every thread (the retry budget's deposits, the breaker's
//! outcome window) makes the threads fight over one cache line. Striping gives each thread its
//! own copy to write, and readers sum the copies. Threads get stripes round-robin on first use,
//! so a handful of busy worker threads land on distinct stripes.

use std::sync::atomic::{AtomicUsize, Ordering};

/// This thread's stripe among `stripes` (assigned round-robin when the thread first asks).
#[inline]
pub(crate) fn index(stripes: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i) % stripes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_stripe_and_threads_spread() {
        let mine = index(4);
        assert_eq!(mine, index(4));
        assert!(mine < 4);
        let others: Vec<usize> = (0..4)
            .map(|_| std::thread::spawn(|| index(1 << 20)).join().unwrap())
            .collect();
        let mut distinct = others.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), others.len(), "new threads take new stripes");
    }
}
