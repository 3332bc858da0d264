//! What metrics-util's debugging recorder has seen, added up across snapshots (the tests of
//! the `metrics` feature).

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// What a debugging recorder has seen so far. Its snapshots drain what they read (counters,
/// histograms, and gauges too, to zero), so a test takes one per checkpoint ([`Seen::refresh`])
/// and adds them up: the crate's gauges only move up and down, so a gauge's snapshots are its
/// changes.
pub struct Seen {
    pub snapshotter: Snapshotter,
    values: std::sync::Mutex<HashMap<Slot, Value>>,
}

/// An instrument's name and its sorted labels.
pub type Slot = (String, Vec<(String, String)>);

/// A recorded value, added up across snapshots.
#[derive(Debug, Clone)]
pub enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram(Vec<f64>),
}

impl Seen {
    pub fn new(recorder: &DebuggingRecorder) -> Seen {
        Seen {
            snapshotter: recorder.snapshotter(),
            values: Default::default(),
        }
    }

    /// Takes a snapshot into what has been seen.
    pub fn refresh(&self) {
        let mut values = self.values.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut have: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            have.sort();
            let slot = (key.name().to_owned(), have);
            let value = match value {
                DebugValue::Counter(n) => Value::Counter(n),
                DebugValue::Gauge(g) => Value::Gauge(g.into_inner()),
                DebugValue::Histogram(h) => {
                    Value::Histogram(h.into_iter().map(|v| v.into_inner()).collect())
                }
            };
            let merged = match (values.remove(&slot), value) {
                (Some(Value::Counter(a)), Value::Counter(b)) => Value::Counter(a + b),
                (Some(Value::Gauge(a)), Value::Gauge(b)) => Value::Gauge(a + b),
                (Some(Value::Histogram(mut a)), Value::Histogram(b)) => {
                    a.extend(b);
                    Value::Histogram(a)
                }
                (_, value) => value,
            };
            values.insert(slot, merged);
        }
    }

    /// The value of instrument `name` with exactly `labels` as of the last refresh.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        let values = self.values.lock().unwrap();
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wanted.sort();
        values.get(&(name.to_owned(), wanted)).cloned()
    }

    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(name, labels) {
            Some(Value::Counter(n)) => n,
            None => 0,
            Some(other) => panic!("{name} is not a counter: {other:?}"),
        }
    }

    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.value(name, labels) {
            Some(Value::Gauge(g)) => Some(g),
            None => None,
            Some(other) => panic!("{name} is not a gauge: {other:?}"),
        }
    }

    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.value(name, labels) {
            Some(Value::Histogram(h)) => h,
            None => Vec::new(),
            Some(other) => panic!("{name} is not a histogram: {other:?}"),
        }
    }
}
