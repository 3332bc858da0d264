//! Background tasks started once per shared state: a balancer's re-resolution, a pool's reaper.
//!
//! Why a guard: such a task is started by the first call in a tokio runtime and lives in that
//! runtime. A client can outlive it — kept in a static across `#[tokio::test]`s, built in one
//! runtime and used in another — and when the runtime ends its tasks are dropped, even ones never
//! polled. A plain "started" flag would then stay set and the task would never run again. The
//! [`Started`] guard is moved into the task when it is spawned (as an argument, so it is dropped
//! with the task whether or not it ever ran) and clears the flag, so the next call — in
//! whichever runtime — starts it again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

/// Held by a running background task; clears its shared state's "started" flag when dropped.
pub(crate) struct Started<T> {
    weak: Weak<T>,
    flag: fn(&T) -> &AtomicBool,
}

impl<T> Started<T> {
    /// Claims the flag of `shared`: `Some` for the one caller that should start the task.
    pub(crate) fn claim(shared: &Arc<T>, flag: fn(&T) -> &AtomicBool) -> Option<Started<T>> {
        let started = flag(shared);
        if started.load(Ordering::Acquire) || started.swap(true, Ordering::AcqRel) {
            return None;
        }
        Some(Started {
            weak: Arc::downgrade(shared),
            flag,
        })
    }

    /// The shared state, held weakly: the task ends when it is gone.
    pub(crate) fn weak(&self) -> Weak<T> {
        self.weak.clone()
    }
}

impl<T> Drop for Started<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.weak.upgrade() {
            (self.flag)(&shared).store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Shared {
        started: AtomicBool,
    }

    #[test]
    fn one_claim_at_a_time_and_free_again_when_dropped() {
        let shared = Arc::new(Shared {
            started: AtomicBool::new(false),
        });
        let first = Started::claim(&shared, |s| &s.started);
        assert!(first.is_some());
        assert!(Started::claim(&shared, |s| &s.started).is_none());
        drop(first);
        assert!(Started::claim(&shared, |s| &s.started).is_some());
    }

    #[test]
    fn a_task_dropped_unpolled_with_its_runtime_frees_the_flag() {
        let shared = Arc::new(Shared {
            started: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let started = Started::claim(&shared, |s| &s.started).unwrap();
            tokio::spawn(async move {
                let _started = started;
                std::future::pending::<()>().await;
            });
        });
        assert!(shared.started.load(Ordering::Acquire));
        drop(runtime);
        assert!(!shared.started.load(Ordering::Acquire));
    }
}
