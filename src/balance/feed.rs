//! The endpoint change feed as a stream: [`Changes`] (addresses inserted and removed) and
//! [`Discovered`] (the same, with each endpoint's stack, as tower's `Discover`).
//!
//! A broadcast channel of changes loses changes for a reader that falls behind. A feed here
//! keeps the set it has reported instead, and on each wake-up reports the difference between
//! that and the balancer's set now: a slow reader loses nothing that still matters — it gets
//! the net change, and its reported set always converges to the balancer's. An address removed
//! and re-added while it was not reading is not reported by [`Changes`] (the address set is the
//! same); [`Discovered`] reports it again as an insertion when the endpoint's stack was
//! replaced (re-added after the drain window: a new pool), which tower's balancers take as a
//! replacement of the stack under that key. Wake-ups come from the balancer's resolution
//! counter (every applied answer, pushed or resolved); a feed holds the balancer weakly, ends
//! when the balancer is dropped, and starts the balancer's re-resolution when first polled (a
//! balancer used only through a feed still follows its resolver).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use tokio::sync::watch;

use super::endpoints::Endpoint;
use super::resolve::Change;
use super::shared::Shared;

/// What a feed reports next.
enum Pending<S> {
    Insert(Arc<Endpoint<S>>),
    Remove(SocketAddr),
}

type Wait = Pin<Box<dyn Future<Output = bool> + Send>>;

/// The shared machinery: the set reported so far, and the differences not yet reported.
struct Feed<S, C> {
    shared: Weak<Shared<S, C>>,
    resolutions: watch::Receiver<u64>,
    /// What was reported: each address, and the endpoint (its stack) reported for it.
    reported: Vec<(SocketAddr, Weak<Endpoint<S>>)>,
    /// Whether an endpoint whose stack was replaced is reported again ([`Discovered`]).
    replacements: bool,
    pending: VecDeque<Pending<S>>,
    /// The balancer's set must be compared with `reported` before waiting again.
    dirty: bool,
    wait: Option<Wait>,
}

impl<S, C> Feed<S, C>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    /// A feed that has reported `reported` (the set now, for a feed of changes from now on;
    /// nothing, for a feed that first reports every endpoint).
    fn new(shared: &Arc<Shared<S, C>>, from_now: bool) -> Self {
        let mut resolutions = shared.resolutions.subscribe();
        resolutions.borrow_and_update();
        let reported = if from_now {
            let snapshot = shared.snapshot.load();
            snapshot
                .endpoints
                .iter()
                .map(|e| (e.addr, Arc::downgrade(e)))
                .collect()
        } else {
            Vec::new()
        };
        Feed {
            shared: Arc::downgrade(shared),
            resolutions,
            reported,
            replacements: !from_now,
            pending: VecDeque::new(),
            dirty: !from_now,
            wait: None,
        }
    }

    /// Queues the differences between what was reported and the set now: insertions in
    /// resolution order, then removals.
    fn reconcile(&mut self, shared: &Shared<S, C>) {
        self.resolutions.borrow_and_update();
        let snapshot = shared.snapshot.load();
        for endpoint in &snapshot.endpoints {
            match self.reported.iter_mut().find(|(a, _)| *a == endpoint.addr) {
                None => {
                    self.reported
                        .push((endpoint.addr, Arc::downgrade(endpoint)));
                    self.pending.push_back(Pending::Insert(endpoint.clone()));
                }
                // The same address with a new stack (back after the drain window).
                Some((_, was))
                    if self.replacements && !Weak::ptr_eq(was, &Arc::downgrade(endpoint)) =>
                {
                    *was = Arc::downgrade(endpoint);
                    self.pending.push_back(Pending::Insert(endpoint.clone()));
                }
                Some(_) => {}
            }
        }
        let now = &snapshot.endpoints;
        let pending = &mut self.pending;
        self.reported.retain(|(addr, _)| {
            let kept = now.iter().any(|e| e.addr == *addr);
            if !kept {
                pending.push_back(Pending::Remove(*addr));
            }
            kept
        });
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Pending<S>>> {
        loop {
            if let Some(next) = self.pending.pop_front() {
                return Poll::Ready(Some(next));
            }
            let Some(shared) = self.shared.upgrade() else {
                return Poll::Ready(None);
            };
            super::start_refresh_in_runtime(&shared);
            if self.dirty {
                self.dirty = false;
                self.reconcile(&shared);
                continue;
            }
            drop(shared);
            let wait = self.wait.get_or_insert_with(|| {
                let mut resolutions = self.resolutions.clone();
                Box::pin(async move { resolutions.changed().await.is_ok() })
            });
            let alive = std::task::ready!(wait.as_mut().poll(cx));
            self.wait = None;
            if !alive {
                return Poll::Ready(None);
            }
            self.dirty = true;
        }
    }
}

/// The balancer's endpoint changes from the moment it was made: a [`futures_core::Stream`] of
/// [`Change`]s that loses none for a slow reader — it reports the difference between what it
/// has reported and the set now (an address removed and back while nobody read is not
/// reported). Ends when the balancer is dropped. [`Balancer::changes`](super::Balancer::changes).
pub struct Changes<S, C> {
    feed: Feed<S, C>,
}

impl<S, C> Changes<S, C>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    pub(super) fn new(shared: &Arc<Shared<S, C>>) -> Self {
        Changes {
            feed: Feed::new(shared, true),
        }
    }

    /// The next change; `None` once the balancer is gone.
    pub async fn next(&mut self) -> Option<Change> {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        self.feed.poll_next(cx).map(|next| {
            next.map(|pending| match pending {
                Pending::Insert(endpoint) => Change::Insert(endpoint.addr),
                Pending::Remove(addr) => Change::Remove(addr),
            })
        })
    }
}

impl<S, C> futures_core::Stream for Changes<S, C>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    type Item = Change;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        self.get_mut().poll_change(cx)
    }
}

impl<S, C> std::fmt::Debug for Changes<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes")
            .field("reported", &self.feed.reported.len())
            .finish_non_exhaustive()
    }
}

/// The balancer's endpoints as tower's [`Discover`](tower::discover::Discover): every endpoint
/// known when it is made is inserted first, then the changes, each insertion with a clone of
/// the endpoint's stack (its pool, say). Feed it to a tower balancer (`tower::balance::p2c`)
/// to balance over what the crate's resolvers find. A stream of
/// `Result<tower::discover::Change<SocketAddr, S>, Infallible>`; like [`Changes`], it loses
/// nothing for a slow reader and ends when the balancer is dropped.
/// [`Balancer::discover`](super::Balancer::discover).
pub struct Discovered<S, C> {
    feed: Feed<S, C>,
}

impl<S, C> Discovered<S, C>
where
    S: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    pub(super) fn new(shared: &Arc<Shared<S, C>>) -> Self {
        Discovered {
            feed: Feed::new(shared, false),
        }
    }
}

impl<S, C> futures_core::Stream for Discovered<S, C>
where
    S: Clone + Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    type Item = Result<tower::discover::Change<SocketAddr, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().feed.poll_next(cx).map(|next| {
            next.map(|pending| {
                Ok(match pending {
                    Pending::Insert(endpoint) => {
                        tower::discover::Change::Insert(endpoint.addr, endpoint.service.clone())
                    }
                    Pending::Remove(addr) => tower::discover::Change::Remove(addr),
                })
            })
        })
    }
}

impl<S, C> std::fmt::Debug for Discovered<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovered")
            .field("reported", &self.feed.reported.len())
            .finish_non_exhaustive()
    }
}
