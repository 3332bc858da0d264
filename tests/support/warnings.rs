//! Counting `warn` events whose message mentions a phrase: tests that a warning fires (once),
//! or not at all.
//!
//! The counting subscriber is the process's *global* default, installed once, and a counter is
//! registered for the current thread. (A thread-local default installed by each test was
//! flaky: `tracing` caches each callsite's interest process-wide, and another test in the same
//! binary hitting the callsite first, on another thread, could leave it cached as "never"
//! while this test's subscriber was being installed — a warning went uncounted.) A test whose
//! thread installs another default (a span recorder) does not see warnings here meanwhile.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

thread_local! {
    /// The counters installed on this thread: (phrase, count).
    static COUNTERS: RefCell<Vec<(&'static str, Arc<AtomicUsize>)>> = const { RefCell::new(Vec::new()) };
}

/// Counts `warn` events (and worse) on the current thread whose message or fields contain a
/// phrase, until dropped.
pub struct WarnCounter {
    count: Arc<AtomicUsize>,
}

impl WarnCounter {
    /// Counts warnings mentioning `phrase` until the counter is dropped.
    pub fn install(phrase: &'static str) -> WarnCounter {
        static GLOBAL: Once = Once::new();
        GLOBAL.call_once(|| {
            tracing::subscriber::set_global_default(Counting)
                .expect("no other global subscriber in the test binaries");
        });
        let count = Arc::new(AtomicUsize::new(0));
        COUNTERS.with(|c| c.borrow_mut().push((phrase, count.clone())));
        WarnCounter { count }
    }

    /// Warnings seen so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for WarnCounter {
    fn drop(&mut self) {
        let _ = COUNTERS.try_with(|c| {
            c.borrow_mut()
                .retain(|(_, count)| !Arc::ptr_eq(count, &self.count));
        });
    }
}

struct Counting;

impl tracing::Subscriber for Counting {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let _ = COUNTERS.try_with(|counters| {
            let counters = counters.borrow();
            if counters.is_empty() {
                return;
            }
            let mut text = Text(String::new());
            event.record(&mut text);
            for (phrase, count) in counters.iter() {
                if text.0.contains(phrase) {
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
