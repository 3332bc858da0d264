//! The open period: how long an opening lasts, and its end published by the one trip that opened
//! the circuit (a sequence lock: trips are rare and serialize; readers never wait).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Inner, OPEN, generation, pack};

impl Inner {
    /// When the open period of state `word` ends, once the trip that opened it has published
    /// it.
    pub(super) fn open_until_of(&self, word: u64) -> Option<u64> {
        // A sequence-lock read: both fields from one publication, or none.
        let before = self.open_sequence.load(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        let published = self.open_generation.load(Ordering::Relaxed);
        let until = self.open_until.load(Ordering::Relaxed);
        crate::sync::fence(Ordering::Acquire);
        let after = self.open_sequence.load(Ordering::Relaxed);
        (before == after && published == generation(word)).then_some(until)
    }

    /// Publishes the end of the open period of generation `generation`, won by this trip's
    /// compare-and-swap — unless the state has moved past it already (a trip descheduled
    /// between its swap and this must not overwrite a newer period's end): `false` then. Trips
    /// are rare: they serialize on a lock; readers never take it.
    pub(super) fn publish_open_until(&self, generation_opened: u64, until: u64) -> bool {
        let _writing = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if generation(self.state.load(Ordering::Acquire)) != generation_opened {
            return false;
        }
        let sequence = self.open_sequence.load(Ordering::Relaxed);
        self.open_sequence.store(sequence + 1, Ordering::Relaxed);
        crate::sync::fence(Ordering::Release);
        self.open_until.store(until, Ordering::Relaxed);
        self.open_generation
            .store(generation_opened, Ordering::Relaxed);
        self.open_sequence.store(sequence + 2, Ordering::Release);
        true
    }

    /// The longest an opening can last (its growth's cap, or the open duration).
    pub(super) fn longest_open(&self) -> Duration {
        self.config
            .open_growth
            .map_or(self.config.open_duration, |(_, max)| max)
    }

    /// How long the next opening lasts: grown by the openings since the last close, jittered.
    pub(super) fn next_open_duration(&self) -> Duration {
        let base = self.config.open_duration;
        let mut duration = match self.config.open_growth {
            Some((multiplier, max)) => {
                let openings = self.openings.load(Ordering::Relaxed).min(64) as i32;
                base.mul_f64(multiplier.powi(openings).min(1e6)).min(max)
            }
            None => base,
        };
        if self.config.open_jitter > 0.0 {
            let cut = duration.mul_f64(self.config.open_jitter);
            duration -= self.jitter.between(Duration::ZERO, cut);
        }
        duration
    }

    /// Opens the circuit from state `word`.
    pub(super) fn trip(&self, word: u64) {
        let duration = self.next_open_duration();
        let until = self
            .now_nanos()
            .saturating_add(duration.as_nanos().min(u128::from(u64::MAX)) as u64);
        self.open_until_at(word, until);
    }

    /// Opens the circuit from state `word` until `until`; `true` if this call opened it (of
    /// racing trips, one wins the state's compare-and-swap, and only its end is published).
    pub(super) fn open_until_at(&self, word: u64, until: u64) -> bool {
        let opened =
            self.transition_until(word, pack(OPEN, generation(word) + 1, 0, 0), Some(until));
        if opened {
            self.openings.fetch_add(1, Ordering::Relaxed);
            self.window.reset();
        }
        opened
    }
}
