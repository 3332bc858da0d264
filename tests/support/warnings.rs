//! Counting `warn` events whose message mentions a phrase: tests that a warning fires (once),
//! or not at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A `tracing` subscriber, installed for the current thread, that counts `warn` events (and
/// worse) whose message contains a phrase, and remembers their messages and fields.
pub struct WarnCounter {
    count: Arc<AtomicUsize>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl WarnCounter {
    /// Counts warnings mentioning `phrase` until the counter is dropped.
    pub fn install(phrase: &'static str) -> WarnCounter {
        let count = Arc::new(AtomicUsize::new(0));
        let guard = tracing::subscriber::set_default(Counting {
            phrase,
            count: count.clone(),
        });
        WarnCounter {
            count,
            _guard: guard,
        }
    }

    /// Warnings seen so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

struct Counting {
    phrase: &'static str,
    count: Arc<AtomicUsize>,
}

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
        let mut text = Text(String::new());
        event.record(&mut text);
        if text.0.contains(self.phrase) {
            self.count.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
