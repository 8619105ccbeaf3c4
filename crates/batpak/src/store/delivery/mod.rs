//! Delivery of committed events to consumers: guaranteed cursors (pull,
//! every event exactly once, in order), lossy subscriptions (push, never
//! blocking the writer) and reactors (a cursor whose answers are appended
//! with idempotency keys derived from their trigger).
//!
//! Consumers see only visible slots, so never an event that is not durable
//! (durable mode) or half a batch. This module reads the index and never
//! writes to the log; reactors append through the public `Store` API.

mod cursor;
mod feed;
mod reactor;
mod subscription;

pub use cursor::Cursor;
pub use feed::{answer_trigger, EventCursor, EventFeed, TypedCursor};
pub(crate) use reactor::{reaction_key, ReactorThreads};
pub use subscription::{Notification, Subscription, SubscriptionFeed, SubscriptionOps};

use crate::coordinate::Region;
use crate::store::read::Reader;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// The lossy subscribers of a store and how far they have been served.
#[derive(Default)]
pub(crate) struct Subscribers {
    list: RwLock<Vec<SubscriptionFeed>>,
    count: AtomicU32,
    /// Slots below this were offered to every subscriber present at the time.
    dispatched: AtomicU32,
    /// Set by every publisher; whoever holds `dispatching` serves it.
    pending: AtomicBool,
    dispatching: Mutex<()>,
}

impl Subscribers {
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire) as usize
    }

    /// Drop every subscriber (their receivers then see the channel close).
    pub(crate) fn clear(&self) {
        self.list.write().clear();
        self.count.store(0, Ordering::Release);
    }
}

impl Subscribers {
    /// Offer newly visible events to the lossy subscribers. Called by whoever
    /// made events visible, after releasing the writer lock; never blocks on
    /// a subscriber (a full buffer counts a drop for that subscriber only).
    pub(crate) fn dispatch(&self, reader: Reader<'_>) {
        let subs = self;
        if subs.count.load(Ordering::Acquire) == 0 {
            return;
        }
        subs.pending.store(true, Ordering::Release);
        loop {
            let Some(_serving) = subs.dispatching.try_lock() else {
                // The holder re-checks `pending` before it lets go.
                return;
            };
            while subs.pending.swap(false, Ordering::AcqRel) {
                self.offer_new_events(reader);
            }
            drop(_serving);
            if !subs.pending.load(Ordering::Acquire) {
                return;
            }
        }
    }

    /// Send notifications for slots `dispatched..visible`; the caller holds
    /// `dispatching`.
    fn offer_new_events(&self, reader: Reader<'_>) {
        let subs = self;
        let from = subs.dispatched.load(Ordering::Acquire);
        let to = reader.visible();
        if from >= to {
            return;
        }
        let mut gone = false;
        {
            let index = reader.index();
            let list = subs.list.read();
            for slot in from..to {
                let mut note: Option<Notification> = None;
                let (entity, scope, kind) = index.coordinate_parts(slot);
                for s in list.iter() {
                    if !s.region().matches_event(entity, scope, kind) {
                        continue;
                    }
                    let n = note.get_or_insert_with(|| Notification::from_index(&index, slot));
                    gone |= !s.offer(n.clone());
                }
            }
        }
        subs.dispatched.store(to, Ordering::Release);
        if gone {
            let mut list = subs.list.write();
            list.retain(|s| !s.is_gone());
            subs.count.store(list.len() as u32, Ordering::Release);
        }
    }

    /// Register a lossy subscriber for events made visible from now on,
    /// with room for `capacity` notifications.
    pub(crate) fn subscribe(
        &self,
        reader: Reader<'_>,
        region: &Region,
        capacity: usize,
    ) -> Subscription {
        let (feed, subscription) = Subscription::channel(region, capacity);
        let subs = self;
        let _serving = subs.dispatching.lock();
        // Serve the subscribers already present up to now, so the new one
        // starts exactly at the current visible point.
        if subs.count.load(Ordering::Acquire) > 0 {
            self.offer_new_events(reader);
        } else {
            subs.dispatched.store(reader.visible(), Ordering::Release);
        }
        let mut list = subs.list.write();
        list.push(feed);
        subs.count.store(list.len() as u32, Ordering::Release);
        subscription
    }
}
