//! The atomics of the lock-free state machines, swappable for loom's.
//!
//! Why: the breaker's state word, the retry budget's cells, the bulkhead's permits and the
//! balancer's pick are small lock-free state machines whose races a stress test finds only
//! sometimes. Built with `--cfg stanchion_loom`, the modules that use these atomics run under
//! loom's model checker, which explores every interleaving of a few threads (`loom_*` tests;
//! see docs/reliability.md). In a normal build these are the standard library's atomics.

#[cfg(stanchion_loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(stanchion_loom)]
pub(crate) use loom::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, fence};
#[cfg(not(stanchion_loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(stanchion_loom))]
pub(crate) use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, fence};
