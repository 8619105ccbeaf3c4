//! Lossy subscriptions: a bounded channel per subscriber.

use crate::coordinate::{Coordinate, Region};
use crate::event::EventKind;
use crate::store::index::Index;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A pushed notice of a committed event (no payload: read it with `get`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Event id.
    pub event_id: u128,
    /// Correlation id.
    pub correlation_id: u128,
    /// Causation id.
    pub causation_id: Option<u128>,
    /// Coordinate.
    pub coord: Coordinate,
    /// Kind.
    pub kind: EventKind,
    /// Global sequence.
    pub sequence: u64,
}

impl Notification {
    pub(crate) fn from_index(index: &Index, slot: u32) -> Self {
        let e = index.entry(slot);
        Self {
            event_id: e.event_id,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            coord: e.coord,
            kind: e.kind,
            sequence: e.global_sequence,
        }
    }
}

/// The sending half of one lossy subscription, kept by the backend that
/// feeds it: offering never blocks; a notification that finds the buffer
/// full is dropped and counted in the subscriber's [`Subscription::dropped`].
/// Made with [`Subscription::channel`] (a backend other than the file store
/// uses it; the file store feeds its subscribers the same way).
#[derive(Debug)]
pub struct SubscriptionFeed {
    tx: flume::Sender<Notification>,
    region: Region,
    dropped: Arc<AtomicU64>,
}

impl SubscriptionFeed {
    /// The region the subscriber asked for.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Offer `n` without waiting: false once the subscriber is gone (its
    /// [`Subscription`] was dropped); a full buffer counts a drop.
    pub fn offer(&self, n: Notification) -> bool {
        match self.tx.try_send(n) {
            Ok(()) => true,
            Err(flume::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(flume::TrySendError::Disconnected(_)) => false,
        }
    }

    /// The subscriber dropped its [`Subscription`].
    pub fn is_gone(&self) -> bool {
        self.tx.is_disconnected()
    }
}

/// A lossy, push-based stream of notifications for a region. When its buffer
/// (`broadcast_capacity`) is full, new notifications for it are dropped and
/// counted; the writer never waits for it. It ends (`recv` gives `None`)
/// when the store closes.
pub struct Subscription {
    rx: flume::Receiver<Notification>,
    region: Region,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    pub(crate) fn new(
        rx: flume::Receiver<Notification>,
        region: Region,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            rx,
            region,
            dropped,
        }
    }

    /// A subscription to `region` with a buffer of `capacity`
    /// notifications (at least 1), and the half that feeds it. Dropping the
    /// feed ends the subscription (`recv` gives `None`).
    pub fn channel(region: &Region, capacity: usize) -> (SubscriptionFeed, Subscription) {
        let (tx, rx) = flume::bounded(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let feed = SubscriptionFeed {
            tx,
            region: region.clone(),
            dropped: dropped.clone(),
        };
        (feed, Subscription::new(rx, region.clone(), dropped))
    }

    /// The next notification, blocking; `None` once the store has closed.
    pub fn recv(&self) -> Option<Notification> {
        self.rx.recv().ok()
    }

    /// The next notification if one arrives within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Notification> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The channel itself, for `select` or async use (`recv_async`).
    pub fn receiver(&self) -> &flume::Receiver<Notification> {
        &self.rx
    }

    /// The region this subscription watches.
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Notifications dropped for this subscriber because its buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Filter, map and limit the stream.
    pub fn ops(self) -> SubscriptionOps {
        SubscriptionOps {
            sub: self,
            filters: Vec::new(),
            remaining: None,
        }
    }
}

type Stage = Box<dyn Fn(&Notification) -> Option<Notification> + Send>;

/// A subscription with filters, maps and a limit applied as it is read.
pub struct SubscriptionOps {
    sub: Subscription,
    filters: Vec<Stage>,
    remaining: Option<usize>,
}

impl SubscriptionOps {
    /// Keep only notifications for which `f` is true.
    #[must_use]
    pub fn filter<F: Fn(&Notification) -> bool + Send + 'static>(mut self, f: F) -> Self {
        self.filters
            .push(Box::new(move |n| f(n).then(|| n.clone())));
        self
    }

    /// Transform notifications; `None` drops one.
    #[must_use]
    pub fn map<F: Fn(&Notification) -> Option<Notification> + Send + 'static>(
        mut self,
        f: F,
    ) -> Self {
        self.filters.push(Box::new(f));
        self
    }

    /// Stop after `n` more notifications.
    #[must_use]
    pub fn take(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }

    /// The next notification that passes every stage; `None` when the limit
    /// is reached or the store has closed.
    pub fn recv(&mut self) -> Option<Notification> {
        if self.remaining == Some(0) {
            return None;
        }
        loop {
            let mut n = self.sub.recv()?;
            let mut kept = true;
            for stage in &self.filters {
                match stage(&n) {
                    Some(next) => n = next,
                    None => {
                        kept = false;
                        break;
                    }
                }
            }
            if kept {
                if let Some(r) = &mut self.remaining {
                    *r -= 1;
                }
                return Some(n);
            }
        }
    }

    /// The underlying subscription's drop count.
    pub fn dropped(&self) -> u64 {
        self.sub.dropped()
    }
}
