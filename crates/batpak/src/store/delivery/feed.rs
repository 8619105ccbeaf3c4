//! [`EventFeed`] and [`EventCursor`]: delivery as a contract every backend
//! keeps with the same meaning, so that consumers, reactors and watchers are
//! written once and run on the file store ([`Store`]) or on a database
//! backend (the `batpak-postgres` crate's `PgStore`).
//!
//! This module owns the two traits, their implementation for [`Store`]
//! (forwarding to its inherent methods, whose signatures do not change), and
//! the trigger answering that every backend's reactors share
//! ([`answer_trigger`], with [`crate::store::codec::reaction_key`]). It adds
//! no behaviour to the file store.
//!
//! Through the traits, reads return `Result` (a database read can fail); the
//! file store's inherent cursor methods stay infallible.

use crate::coordinate::{Coordinate, Region};
use crate::event::{EventKind, EventSourced, Reactive, StoredEvent, TypedEvent};
use crate::store::projection::{relevant, ProjectionWatcher};
use crate::store::{
    AppendOptions, Cursor, EventStore, Freshness, IndexEntry, Store, StoreError, Subscription,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// A guaranteed cursor: every committed event of its region exactly once,
/// in global-sequence order, including events committed after it was
/// created; resumable from [`EventCursor::position`] in another handle or
/// process. Reading never skips an event that can still commit below a
/// position already delivered.
pub trait EventCursor: Send {
    /// The next matching event, or `None` if there is none yet.
    ///
    /// # Errors
    /// The backend's read failures; the cursor's place is unchanged, so the
    /// call can simply be repeated.
    fn poll(&mut self) -> Result<Option<IndexEntry>, StoreError>;

    /// Up to `max` next matching events (possibly none). Events already
    /// taken when a read fails are returned; the failure then comes with the
    /// next call.
    ///
    /// # Errors
    /// As [`EventCursor::poll`], when no event could be returned.
    fn poll_batch(&mut self, max: usize) -> Result<Vec<IndexEntry>, StoreError> {
        let mut out = Vec::with_capacity(max.min(1024));
        while out.len() < max {
            match self.poll() {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// The next matching event, waiting up to `timeout` for one to be
    /// committed (by any writer the backend can hear of); `None` on timeout
    /// or once the store has closed. `Duration::MAX` waits without limit.
    ///
    /// # Errors
    /// As [`EventCursor::poll`].
    fn wait_next(&mut self, timeout: Duration) -> Result<Option<IndexEntry>, StoreError>;

    /// Global sequence of the last event delivered (or the `after` the
    /// cursor was created with); `None` before the first.
    fn position(&self) -> Option<u64>;

    /// The region this cursor reads.
    fn region(&self) -> &Region;
}

/// A store that delivers committed events to consumers: guaranteed cursors,
/// lossy subscriptions, reactors and projection watchers (SPEC §4.4–§4.6).
///
/// ```
/// use batpak::prelude::*;
/// use batpak::store::{EventCursor, EventFeed};
///
/// /// Every order event from `after` on, in order: runs on either backend.
/// fn orders_after<S: EventFeed>(store: &S, after: Option<u64>) -> Result<Vec<u128>, StoreError> {
///     let mut cursor = EventFeed::cursor_from(store, &Region::entity("order:"), after);
///     Ok(cursor.poll_batch(1000)?.iter().map(|e| e.event_id).collect())
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(StoreConfig::new(dir.path()))?;
/// let placed = store.append(&Coordinate::new("order:1", "shop")?, EventKind::custom(1, 1), &"placed")?;
/// assert_eq!(orders_after(&store, None)?, vec![placed.event_id]);
/// assert!(orders_after(&store, Some(placed.sequence))?.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait EventFeed: EventStore + Sized + 'static {
    /// The backend's guaranteed cursor.
    type Cursor: EventCursor + 'static;

    /// A guaranteed cursor over `region` from the beginning of history.
    fn cursor_guaranteed(&self, region: &Region) -> Self::Cursor {
        self.cursor_from(region, None)
    }

    /// A guaranteed cursor over `region` that starts after global sequence
    /// `after` (`None`: from the beginning), to resume from a saved
    /// [`EventCursor::position`].
    fn cursor_from(&self, region: &Region, after: Option<u64>) -> Self::Cursor;

    /// A lossy subscription to events of `region` committed from now on:
    /// a bounded buffer per subscriber; when it is full, notifications are
    /// dropped and counted ([`Subscription::dropped`]), and no writer ever
    /// waits for a subscriber. It ends when the store closes.
    ///
    /// # Errors
    /// The backend's failure to establish "now" (a database read).
    fn subscribe_lossy(&self, region: &Region) -> Result<Subscription, StoreError>;

    /// Start a thread that answers every event of `region` with the
    /// reactor's outputs, appended as reactions (correlated to the
    /// trigger's correlation, caused by it) with idempotency keys derived
    /// from the trigger ([`crate::store::codec::reaction_key`]), so a
    /// restart neither duplicates nor skips a reaction. It resumes after
    /// the last trigger already answered and holds no strong reference to
    /// the store between triggers; it ends when the store closes or is
    /// dropped.
    ///
    /// # Errors
    /// `Io` if the thread cannot be spawned; the backend's read failures
    /// while finding where to resume.
    fn react_loop<R>(
        self: &Arc<Self>,
        region: &Region,
        reactor: R,
    ) -> Result<std::thread::JoinHandle<()>, StoreError>
    where
        R: Reactive<Value> + Send + 'static;

    /// The global sequence of `entity`'s newest event of a kind `T` reads
    /// (`None`: there is none). With [`EventFeed::project_through`], what
    /// a projection watcher needs to emit each change once.
    ///
    /// # Errors
    /// Read failures of the backend.
    fn newest_relevant<T>(&self, entity: &str) -> Result<Option<u64>, StoreError>
    where
        T: EventSourced<Value> + 'static,
    {
        Ok(self
            .stream(entity)?
            .iter()
            .rev()
            .find(|e| relevant::<T>(e.kind))
            .map(|e| e.global_sequence))
    }

    /// `T` folded from `entity`'s relevant events up to and including
    /// global sequence `through` (the value [`EventFeed::newest_relevant`]
    /// returned), so that an event committed meanwhile is not folded in
    /// under an older watermark. The default folds every relevant event
    /// present now; backends override it to stop exactly at `through`.
    ///
    /// # Errors
    /// As [`EventStore::project`].
    fn project_through<T>(
        &self,
        entity: &str,
        freshness: &Freshness,
        through: u64,
    ) -> Result<Option<T>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + 'static,
    {
        let _ = through;
        self.project(entity, freshness)
    }

    /// A guaranteed cursor over the events of kind `T::KIND` in `region`
    /// (its fact filter is replaced by `T::KIND`) after `after`, yielding
    /// each decoded as `T` (upcast like [`EventStore::get_as`]).
    fn cursor_as<T: TypedEvent>(
        &self,
        region: &Region,
        after: Option<u64>,
    ) -> TypedCursor<'_, Self, T> {
        let region = region
            .clone()
            .with_fact(crate::coordinate::KindFilter::Exact(T::KIND));
        TypedCursor {
            cursor: self.cursor_from(&region, after),
            store: self,
            _type: std::marker::PhantomData,
        }
    }

    /// Watch the projection `T` of `entity`: see [`ProjectionWatcher`].
    ///
    /// # Errors
    /// As [`EventFeed::subscribe_lossy`].
    fn watch_projection<T>(
        self: &Arc<Self>,
        entity: &str,
        freshness: Freshness,
    ) -> Result<ProjectionWatcher<T, Self>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + Send + 'static,
    {
        let subscription = self.subscribe_lossy(&Region::entity(entity))?;
        Ok(ProjectionWatcher::new(
            self,
            entity,
            freshness,
            subscription,
        ))
    }
}

/// Run `reactor` on the trigger `trigger` and append each output `i` with
/// the idempotency key `reaction_key(trigger, i)`, correlated to the
/// trigger's correlation id and caused by the trigger: what every backend's
/// reactor does for one trigger, so that the reactions are the same events
/// whichever backend (or process) answers, and answering twice writes once.
///
/// # Errors
/// `NotFound` if the trigger does not exist; the appends' errors.
pub fn answer_trigger<S, R>(store: &S, reactor: &R, trigger: u128) -> Result<(), StoreError>
where
    S: EventStore + ?Sized,
    R: Reactive<Value> + ?Sized,
{
    answer_with(
        |id| store.get(id),
        |coord, kind, payload, opts| store.append_with_options(coord, kind, payload, opts),
        reactor,
        trigger,
    )
}

/// [`answer_trigger`] over a reading and an appending function (the file
/// store's reactor thread appends through the store's internals, holding
/// no `Store`).
pub(crate) fn answer_with<R>(
    get: impl FnOnce(u128) -> Result<StoredEvent<Value>, StoreError>,
    mut append: impl FnMut(
        &Coordinate,
        EventKind,
        &Value,
        AppendOptions,
    ) -> Result<crate::store::AppendReceipt, StoreError>,
    reactor: &R,
    trigger: u128,
) -> Result<(), StoreError>
where
    R: Reactive<Value> + ?Sized,
{
    let event = get(trigger)?;
    let correlation = event.event.header.correlation_id;
    for (i, (coord, kind, payload)) in reactor.react(&event.event).into_iter().enumerate() {
        let opts = AppendOptions::new()
            .with_idempotency(super::reactor::reaction_key(trigger, i))
            .with_correlation(correlation)
            .with_causation(trigger);
        append(&coord, kind, &payload, opts)?;
    }
    Ok(())
}

impl EventCursor for Cursor {
    fn poll(&mut self) -> Result<Option<IndexEntry>, StoreError> {
        Ok(Cursor::poll(self))
    }

    fn poll_batch(&mut self, max: usize) -> Result<Vec<IndexEntry>, StoreError> {
        Ok(Cursor::poll_batch(self, max))
    }

    fn wait_next(&mut self, timeout: Duration) -> Result<Option<IndexEntry>, StoreError> {
        Ok(Cursor::wait_next(self, timeout))
    }

    fn position(&self) -> Option<u64> {
        Cursor::position(self)
    }

    fn region(&self) -> &Region {
        Cursor::region(self)
    }
}

/// The file store keeps its inherent methods (and their infallible
/// results); this forwards to them.
impl EventFeed for Store {
    type Cursor = Cursor;

    fn cursor_guaranteed(&self, region: &Region) -> Cursor {
        Store::cursor_guaranteed(self, region)
    }

    fn cursor_from(&self, region: &Region, after: Option<u64>) -> Cursor {
        Store::cursor_from(self, region, after)
    }

    fn subscribe_lossy(&self, region: &Region) -> Result<Subscription, StoreError> {
        Ok(Store::subscribe_lossy(self, region))
    }

    fn react_loop<R>(
        self: &Arc<Self>,
        region: &Region,
        reactor: R,
    ) -> Result<std::thread::JoinHandle<()>, StoreError>
    where
        R: Reactive<Value> + Send + 'static,
    {
        Store::react_loop(self, region, reactor)
    }

    fn newest_relevant<T>(&self, entity: &str) -> Result<Option<u64>, StoreError>
    where
        T: EventSourced<Value> + 'static,
    {
        Ok(self.shared.projector().latest_relevant::<T>(entity))
    }

    fn project_through<T>(
        &self,
        entity: &str,
        freshness: &Freshness,
        through: u64,
    ) -> Result<Option<T>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + 'static,
    {
        self.shared
            .projector()
            .project_at(entity, freshness, through)
    }

    fn watch_projection<T>(
        self: &Arc<Self>,
        entity: &str,
        freshness: Freshness,
    ) -> Result<ProjectionWatcher<T, Self>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + Send + 'static,
    {
        Ok(Store::watch_projection(self, entity, freshness))
    }
}

/// A guaranteed cursor that decodes each event as `T` (see
/// [`EventFeed::cursor_as`]). As an [`Iterator`] it yields the events
/// deliverable now (what [`EventCursor::poll`] gives: on PostgreSQL, only
/// events below the stable bound, which a transaction still running may
/// hold back) and ends (`None`) when none is; iterate again later for
/// newer ones, or wait with [`TypedCursor::wait_next`]. A read failure
/// is an `Err` item, after which the cursor's place is unchanged.
pub struct TypedCursor<'s, S: EventFeed, T> {
    cursor: S::Cursor,
    store: &'s S,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<S: EventFeed, T: TypedEvent> TypedCursor<'_, S, T> {
    /// The next event, waiting up to `timeout` for one (as [`EventCursor::wait_next`]).
    ///
    /// # Errors
    /// The cursor's and `get_as`'s errors.
    pub fn wait_next(&mut self, timeout: Duration) -> Result<Option<StoredEvent<T>>, StoreError> {
        match self.cursor.wait_next(timeout)? {
            Some(e) => self.store.get_as::<T>(e.event_id).map(Some),
            None => Ok(None),
        }
    }

    /// Global sequence of the last event delivered (see [`EventCursor::position`]).
    pub fn position(&self) -> Option<u64> {
        self.cursor.position()
    }
}

impl<S: EventFeed, T: TypedEvent> Iterator for TypedCursor<'_, S, T> {
    type Item = Result<StoredEvent<T>, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.cursor.poll() {
            Ok(Some(e)) => Some(self.store.get_as::<T>(e.event_id)),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
