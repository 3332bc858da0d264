//! A `tracing` subscriber that records every span — name, parent, fields, whether it closed —
//! for tests of the span tree. Install it for a test's thread with
//! `tracing::subscriber::set_default(spans.clone())` (a current-thread runtime runs the calls
//! there).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use tracing_core::span::Current;

/// One span as recorded.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub id: u64,
    pub name: &'static str,
    pub parent: Option<u64>,
    pub fields: BTreeMap<String, String>,
    pub closed: bool,
    /// When the span was opened and closed (tokio's clock: paused time in the tests).
    pub opened: tokio::time::Instant,
    pub closed_at: Option<tokio::time::Instant>,
}

impl SpanRecord {
    /// A field's value as text (strings without quotes).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    spans: Vec<SpanRecord>,
    metadata: HashMap<u64, &'static Metadata<'static>>,
    refs: HashMap<u64, usize>,
    stack: Vec<u64>,
}

/// The recording subscriber; clones share what it recorded.
#[derive(Clone, Default)]
pub struct Spans {
    state: Arc<Mutex<State>>,
}

impl Spans {
    /// Every span recorded so far, in creation order.
    pub fn all(&self) -> Vec<SpanRecord> {
        self.state.lock().unwrap().spans.clone()
    }

    /// The spans named `name`.
    pub fn named(&self, name: &str) -> Vec<SpanRecord> {
        self.all().into_iter().filter(|s| s.name == name).collect()
    }
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut state = self.state.lock().unwrap();
        let id = state.spans.len() as u64 + 1;
        let parent = match attrs.parent() {
            Some(parent) => Some(parent.into_u64()),
            None if attrs.is_contextual() => state.stack.last().copied(),
            None => None,
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        state.spans.push(SpanRecord {
            id,
            name: attrs.metadata().name(),
            parent,
            fields,
            closed: false,
            opened: tokio::time::Instant::now(),
            closed_at: None,
        });
        state.metadata.insert(id, attrs.metadata());
        state.refs.insert(id, 1);
        Id::from_u64(id)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut state = self.state.lock().unwrap();
        let index = span.into_u64() as usize - 1;
        values.record(&mut Fields(&mut state.spans[index].fields));
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, span: &Id) {
        self.state.lock().unwrap().stack.push(span.into_u64());
    }

    fn exit(&self, span: &Id) {
        let mut state = self.state.lock().unwrap();
        if let Some(at) = state.stack.iter().rposition(|&id| id == span.into_u64()) {
            state.stack.remove(at);
        }
    }

    fn clone_span(&self, span: &Id) -> Id {
        *self
            .state
            .lock()
            .unwrap()
            .refs
            .entry(span.into_u64())
            .or_default() += 1;
        span.clone()
    }

    fn try_close(&self, span: Id) -> bool {
        let mut state = self.state.lock().unwrap();
        let id = span.into_u64();
        let refs = state.refs.entry(id).or_default();
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            state.spans[id as usize - 1].closed = true;
            state.spans[id as usize - 1].closed_at = Some(tokio::time::Instant::now());
            return true;
        }
        false
    }

    fn current_span(&self) -> Current {
        let state = self.state.lock().unwrap();
        match state.stack.last() {
            Some(id) => Current::new(Id::from_u64(*id), state.metadata[id]),
            None => Current::none(),
        }
    }
}
