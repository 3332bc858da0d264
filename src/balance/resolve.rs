//! Where endpoints come from: a resolver returns the current set of addresses (and how long the
//! answer stays true); the balancer re-resolves and applies the differences.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::BoxError;

/// A resolver's answer: every address, and how long it may be trusted (a DNS TTL).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// The addresses, in any order (duplicates are ignored).
    pub addrs: Vec<SocketAddr>,
    /// How long the answer stays valid, if the source says.
    pub ttl: Option<Duration>,
}

/// The future a [`Resolve`] returns.
pub type ResolveFuture = Pin<Box<dyn Future<Output = Result<Resolved, BoxError>> + Send>>;

/// Resolves a logical name into every address that serves it.
///
/// Implemented by [`StaticResolver`] (a list you can change) and, with feature `dns`, by
/// [`DnsResolver`](super::DnsResolver).
///
/// What the balancer does with the outcome:
///
/// | outcome | what happens |
/// |---|---|
/// | `Ok` with addresses | applied: new endpoints added, missing ones drained (kept for the drain window, so one that comes back resumes its breaker and pool) |
/// | `Ok` with no addresses | an instruction: every endpoint is drained at once; calls fail with `NoEndpoints` |
/// | `Err` while endpoints are known | a resolver error: the last known endpoints keep serving, the episode is logged once and counted, resolution retries with backoff; after the maximum staleness they are given up |
/// | `Err` before any endpoint is known | calls fail with `NoEndpoints`; resolution retries with backoff |
///
/// A resolver for a name should report "no such name" and "no records" as errors (a name
/// that had addresses and lost them during a rollout is a failure, not an instruction), and an
/// empty answer only when it means it.
pub trait Resolve: Send + Sync + 'static {
    /// The current addresses.
    fn resolve(&self) -> ResolveFuture;

    /// The name resolved, if there is one (a DNS name): logs name it, and a name that resolves
    /// to a single address gets a warning (nothing to balance). `None` for a list of addresses.
    fn name(&self) -> Option<&str> {
        None
    }

    /// Called once by every balancer built over this resolver, with the handle through which
    /// a resolver that learns of changes itself (a list you set, a watch on a registry) hands
    /// the balancer a new answer at once, instead of at the next refresh. The default ignores
    /// it: the balancer asks at every refresh, and [`Balancer::refresh_now`](super::Balancer::refresh_now)
    /// asks at once.
    ///
    /// A push applies the answer before it returns, on the pushing thread: it builds the new
    /// endpoints' stacks and calls [`name`](Self::name). Do not push while holding a lock that
    /// `name`, `resolve` or the endpoint maker takes ([`StaticResolver`] holds only its own list's
    /// lock, which none of them takes).
    fn attach(&self, updates: Updates) {
        let _ = updates;
    }
}

/// A boxed resolver is a resolver: every method forwards (a provided method left out here
/// would silently fall back to its default — `attach` once did).
impl Resolve for Box<dyn Resolve> {
    fn resolve(&self) -> ResolveFuture {
        (**self).resolve()
    }

    fn name(&self) -> Option<&str> {
        (**self).name()
    }

    fn attach(&self, updates: Updates) {
        (**self).attach(updates);
    }
}

/// A shared resolver is a resolver (a client's clusters share its target's): every method
/// forwards, `attach` once per balancer it feeds.
impl Resolve for std::sync::Arc<dyn Resolve> {
    fn resolve(&self) -> ResolveFuture {
        (**self).resolve()
    }

    fn name(&self) -> Option<&str> {
        (**self).name()
    }

    fn attach(&self, updates: Updates) {
        (**self).attach(updates);
    }
}

/// A balancer's inbox for answers a resolver pushes (see [`Resolve::attach`]); cheap to clone.
#[derive(Clone)]
pub struct Updates {
    apply: Arc<dyn Fn(Vec<SocketAddr>) -> bool + Send + Sync>,
    alive: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl Updates {
    pub(crate) fn new(
        apply: impl Fn(Vec<SocketAddr>) -> bool + Send + Sync + 'static,
        alive: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        Updates {
            apply: Arc::new(apply),
            alive: Arc::new(alive),
        }
    }

    /// Whether the balancer still exists (a resolver may drop the handles of those gone).
    pub fn is_alive(&self) -> bool {
        (self.alive)()
    }

    /// Applies `addrs` now, as an answer of the resolver's (an empty list drains every
    /// endpoint, as an empty answer does): before `push` returns, new calls see the new set.
    /// `false` once the balancer is gone: drop the handle then.
    pub fn push(&self, addrs: Vec<SocketAddr>) -> bool {
        (self.apply)(addrs)
    }
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

/// A fixed list of addresses, which [`set`](Self::set) can replace (clones share the list).
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    state: Arc<Mutex<StaticState>>,
}

#[derive(Debug, Default)]
struct StaticState {
    addrs: Vec<SocketAddr>,
    /// The balancers built over this list (or a clone of it).
    attached: Vec<Updates>,
}

impl StaticResolver {
    /// A resolver that always answers `addrs`.
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        StaticResolver {
            state: Arc::new(Mutex::new(StaticState {
                addrs: addrs.into_iter().collect(),
                attached: Vec::new(),
            })),
        }
    }

    /// Replaces the list, at once: when `set` returns, every balancer built over this resolver
    /// (or a clone of it) has applied the new list, and the next call sees it. Concurrent
    /// `set`s apply in one order everywhere, the last one's list winning.
    pub fn set(&self, addrs: impl IntoIterator<Item = SocketAddr>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.addrs = addrs.into_iter().collect();
        let StaticState { addrs, attached } = &mut *state;
        attached.retain(|balancer| balancer.push(addrs.clone()));
    }
}

impl Resolve for StaticResolver {
    fn resolve(&self) -> ResolveFuture {
        let addrs = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .addrs
            .clone();
        Box::pin(async move { Ok(Resolved { addrs, ttl: None }) })
    }

    fn attach(&self, updates: Updates) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // Balancers built and dropped since the last `set` leave no handle behind.
        state.attached.retain(Updates::is_alive);
        state.attached.push(updates);
    }
}

/// One change to the endpoint set, as tower's `Discover` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A newly resolved endpoint, which now takes calls.
    Insert(SocketAddr),
    /// An endpoint no longer resolved: it takes no new calls; calls in flight finish.
    Remove(SocketAddr),
}

/// The changes that turn `old` into `new` (insertions in `new`'s order, then removals).
pub fn changes(old: &[SocketAddr], new: &[SocketAddr]) -> Vec<Change> {
    let inserted = new
        .iter()
        .filter(|a| !old.contains(a))
        .map(|a| Change::Insert(*a));
    let removed = old
        .iter()
        .filter(|a| !new.contains(a))
        .map(|a| Change::Remove(*a));
    inserted.chain(removed).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_list_insertions_then_removals() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        assert_eq!(
            changes(&[a, b], &[b, c]),
            [Change::Insert(c), Change::Remove(a)]
        );
        assert_eq!(changes(&[a], &[a]), []);
        assert_eq!(changes(&[], &[a]), [Change::Insert(a)]);
    }
}
