//! Projection watchers: re-project an entity whenever it changes, on any
//! backend that delivers events ([`EventFeed`]).

use super::Freshness;
use crate::coordinate::Region;
use crate::event::EventSourced;
use crate::store::{EventFeed, Store, StoreError, Subscription};
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often an idle watcher checks whether dropped notifications hid a change.
const RECHECK: Duration = Duration::from_millis(50);

/// Emits the projection of one entity each time a relevant event for it is
/// committed. Pull-based: each [`ProjectionWatcher::recv`] blocks until the
/// entity changes, re-projects and returns the new value. It always
/// projects the latest state, so notifications dropped by a full buffer only
/// merge updates, never lose one. It holds no strong reference to the store
/// and ends (`Ok(None)`) when the store is closed or dropped.
///
/// `S` is the backend (the file store by default; any [`EventFeed`]).
pub struct ProjectionWatcher<T, S = Store> {
    store: Weak<S>,
    entity: String,
    freshness: Freshness,
    subscription: Subscription,
    /// Watermark of the last value returned.
    last: Option<u64>,
    /// Dropped notifications already accounted for.
    seen_dropped: u64,
    _value: PhantomData<fn() -> T>,
}

impl<T, S> ProjectionWatcher<T, S>
where
    T: EventSourced<serde_json::Value> + serde::Serialize + serde::de::DeserializeOwned + 'static,
    S: EventFeed,
{
    /// A watcher of `entity` fed by `subscription` (a lossy subscription to
    /// at least the entity's events).
    pub(crate) fn new(
        store: &Arc<S>,
        entity: &str,
        freshness: Freshness,
        subscription: Subscription,
    ) -> Self {
        Self {
            store: Arc::downgrade(store),
            entity: entity.to_owned(),
            freshness,
            subscription,
            last: None,
            seen_dropped: 0,
            _value: PhantomData,
        }
    }

    /// Block until a relevant event for the entity is committed, then return
    /// the entity's projection. `Ok(None)` once the store is gone (or if the
    /// projection itself is `None`).
    ///
    /// # Errors
    /// The projection's own errors (reading events, decoding cached values).
    pub fn recv(&mut self) -> Result<Option<T>, StoreError> {
        loop {
            // While idle, look again now and then: if notifications were
            // dropped (a full buffer), the change they announced is found
            // from the store instead, so the watcher converges anyway.
            let mut relevant = match self.subscription.receiver().recv_timeout(RECHECK) {
                Ok(first) => self.concerns(&first),
                Err(flume::RecvTimeoutError::Disconnected) => return Ok(None),
                Err(flume::RecvTimeoutError::Timeout) => {
                    let dropped = self.subscription.dropped();
                    let missed = dropped > self.seen_dropped;
                    self.seen_dropped = dropped;
                    if self.store.strong_count() == 0 {
                        return Ok(None);
                    }
                    missed
                }
            };
            // Everything queued meanwhile is covered by one re-projection.
            while let Ok(n) = self.subscription.receiver().try_recv() {
                relevant |= self.concerns(&n);
            }
            if !relevant {
                continue;
            }
            let Some(store) = self.store.upgrade() else {
                return Ok(None);
            };
            let latest = store.newest_relevant::<T>(&self.entity)?;
            let Some(seq) = latest.filter(|_| latest != self.last) else {
                continue;
            };
            let value = store.project_through::<T>(&self.entity, &self.freshness, seq)?;
            self.last = latest;
            return Ok(value);
        }
    }

    /// The underlying lossy subscription.
    pub fn subscription(&self) -> &Subscription {
        &self.subscription
    }

    fn concerns(&self, n: &crate::store::Notification) -> bool {
        n.coord.entity() == self.entity && super::flow::relevant::<T>(n.kind)
    }
}

impl Store {
    /// Watch the projection `T` of `entity`: see [`ProjectionWatcher`].
    pub fn watch_projection<T>(
        self: &Arc<Self>,
        entity: &str,
        freshness: Freshness,
    ) -> ProjectionWatcher<T>
    where
        T: EventSourced<serde_json::Value>
            + serde::Serialize
            + serde::de::DeserializeOwned
            + Send
            + 'static,
    {
        let subscription = self.subscribe_lossy(&Region::entity(entity));
        ProjectionWatcher::new(self, entity, freshness, subscription)
    }
}
