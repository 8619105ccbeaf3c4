//! [`EventStore`]: the operations every backend offers with the same
//! meaning, so that application code, projections and the policy pipeline
//! can be written once and run on the embedded file store ([`Store`]) or on
//! a database backend (the `batpak-postgres` crate's `PgStore`).
//!
//! This module owns the trait, its default methods (built only from the
//! trait's own operations) and its implementation for [`Store`], which
//! forwards to `Store`'s inherent methods. It adds no behaviour to the file
//! store and touches none of its internals.
//!
//! The behavioural contract is the one SPEC §3 and §4 give for `Store`, with
//! these deliberate differences, which a backend documents:
//! - global sequences increase strictly in commit order, but only the file
//!   store numbers them densely from 0 (`stats().global_sequence` is "one
//!   past the newest", whatever the numbering);
//! - `AppendReceipt::disk_pos` and `IndexEntry::disk_pos` are all zero where
//!   the backend has no file positions;
//! - reads return `Result`, because a database read can fail.

use crate::coordinate::{Coordinate, KindFilter, Region};
use crate::event::{
    EventKind, EventSourced, Schema, StoredEvent, TypedError, TypedEvent, Upcaster, VersionedEvent,
};
use crate::guard::Receipt;
use crate::pipeline::{BypassReceipt, Committed};
use crate::store::{
    AppendOptions, AppendReceipt, BatchAppendItem, BypassRecord, Freshness, IndexEntry, Store,
    StoreError, StoreStats,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// An event store backend: appends with CAS and idempotency, atomic
/// batches, and the reads of the index and the causal graph.
///
/// Written generically, code runs on any backend:
///
/// ```
/// use batpak::prelude::*;
///
/// fn open_order<S: EventStore>(store: &S, id: u32) -> Result<u32, StoreError> {
///     let coord = Coordinate::new(format!("order:{id}"), "tenant:a")?;
///     store.append_with_options(&coord, EventKind::custom(1, 1), &"opened",
///                               AppendOptions::new().with_cas_empty())?;
///     Ok(store.stream(coord.entity())?.len() as u32)
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(StoreConfig::new(dir.path()))?;
/// assert_eq!(open_order(&store, 7)?, 1);
/// EventStore::close(store)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait EventStore: Send + Sync {
    /// Append with a CAS condition, an idempotency key, causal links or
    /// flags (SPEC §3.1, §3.7, §3.8): the key is checked first, then the
    /// condition, both atomically with the write.
    ///
    /// # Errors
    /// `ReservedKind`, `Serialization`, `Configuration` (payload too large), `SequenceMismatch`,
    /// `StreamIsEmpty`, `StreamNotEmpty`, `IdempotencyConflict`, and the
    /// backend's own failures (`Io`, `Poisoned`, `Unavailable`, ...).
    fn append_with_options(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError>;

    /// Append a root event: a fresh UUIDv7 id, correlated to itself.
    ///
    /// # Errors
    /// As [`EventStore::append_with_options`].
    fn append(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
    ) -> Result<AppendReceipt, StoreError> {
        self.append_with_options(coord, kind, payload, AppendOptions::new())
    }

    /// Append an event caused by `causation_id` in the causal tree `correlation_id`.
    ///
    /// # Errors
    /// As [`EventStore::append_with_options`].
    fn append_reaction(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        correlation_id: u128,
        causation_id: u128,
    ) -> Result<AppendReceipt, StoreError> {
        let opts = AppendOptions::new()
            .with_correlation(correlation_id)
            .with_causation(causation_id);
        self.append_with_options(coord, kind, payload, opts)
    }

    /// Append `items` atomically (SPEC §3.9): all become visible together or
    /// none; per-item CAS against the entity as it is just before the item;
    /// a retried batch returns its original receipts.
    ///
    /// # Errors
    /// `BatchFailed { item_index, stage, source }`; nothing is written.
    fn append_batch(&self, items: Vec<BatchAppendItem>) -> Result<Vec<AppendReceipt>, StoreError>;

    /// [`EventStore::append_batch`] with every item correlated to
    /// `correlation_id`, and items whose causation is `CausationRef::None`
    /// caused by `causation_id`.
    ///
    /// # Errors
    /// As [`EventStore::append_batch`].
    fn append_reaction_batch(
        &self,
        correlation_id: u128,
        causation_id: u128,
        items: Vec<BatchAppendItem>,
    ) -> Result<Vec<AppendReceipt>, StoreError>;

    /// Import events exported from a store of either backend, atomically,
    /// keeping each one's id, kind, flags, links, payload, clock, timestamp
    /// and hashes (the global sequence is this store's). Each must continue
    /// its entity's chain exactly where this store has it; an id already
    /// present with the same coordinate and kind answers with its receipt.
    ///
    /// # Errors
    /// `ChainMismatch`, `IdempotencyConflict`, `InvalidBatch` (only some ids
    /// present), the batch limits, and the backend's write failures; for
    /// more than one event, wrapped in `BatchFailed` with the item's index.
    fn import_events(
        &self,
        events: Vec<StoredEvent<Value>>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        self.import_versioned_events(events.into_iter().map(VersionedEvent::from).collect())
    }

    /// As [`EventStore::import_events`], for events that carry their payload
    /// version (an export read with [`EventStore::events_versioned`]): each
    /// keeps its version, which its event hash covers, so an event written at
    /// version 2 or later imports with its hash intact. `import_events` is
    /// this call with every event at version 1.
    ///
    /// # Errors
    /// As [`EventStore::import_events`].
    fn import_versioned_events(
        &self,
        events: Vec<VersionedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreError>;

    /// The event with this id.
    ///
    /// # Errors
    /// `NotFound` for an unknown id; read failures of the backend.
    fn get(&self, event_id: u128) -> Result<StoredEvent<Value>, StoreError>;

    /// Entries matching `region`, in global-sequence order (entity is a
    /// prefix, scope exact, fact by kind or category, clock range inclusive).
    ///
    /// # Errors
    /// Read failures of the backend.
    fn query(&self, region: &Region) -> Result<Vec<IndexEntry>, StoreError>;

    /// Every event of exactly this entity (any scope), in clock order.
    ///
    /// # Errors
    /// Read failures of the backend.
    fn stream(&self, entity: &str) -> Result<Vec<IndexEntry>, StoreError>;

    /// Every event in exactly this scope, in global-sequence order.
    ///
    /// # Errors
    /// Read failures of the backend.
    fn by_scope(&self, scope: &str) -> Result<Vec<IndexEntry>, StoreError> {
        self.query(&Region::scope(scope))
    }

    /// Every event of this kind, in global-sequence order.
    ///
    /// # Errors
    /// Read failures of the backend.
    fn by_fact(&self, kind: EventKind) -> Result<Vec<IndexEntry>, StoreError> {
        self.query(&Region::all().with_fact(KindFilter::Exact(kind)))
    }

    /// Every event correlated to `correlation_id` (the root included), in
    /// global-sequence order.
    ///
    /// # Errors
    /// Read failures of the backend.
    fn by_correlation(&self, correlation_id: u128) -> Result<Vec<IndexEntry>, StoreError>;

    /// Every event caused by `event_id`, in global-sequence order.
    ///
    /// # Errors
    /// Read failures of the backend.
    fn children(&self, event_id: u128) -> Result<Vec<IndexEntry>, StoreError>;

    /// The event, then its predecessors in its entity's hash chain, newest
    /// first, at most `limit`; empty for an unknown id. The walk stops where
    /// a link does not match.
    ///
    /// # Errors
    /// Read failures of the backend (the file store logs them and stops).
    fn walk_ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Result<Vec<StoredEvent<Value>>, StoreError>;

    /// Event count, and one past the newest global sequence.
    ///
    /// # Errors
    /// Read failures of the backend.
    fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Make everything acknowledged so far durable (a no-op where every
    /// receipt already means durable).
    ///
    /// # Errors
    /// The backend's sync failure.
    fn sync(&self) -> Result<(), StoreError>;

    /// Whether this store's default is durable receipts and an append made
    /// with `Durability::Relaxed` is, once a later [`EventStore::sync`]
    /// returns, as durable and as visible as one made with that default.
    /// When true, a caller holding many independent appends may make them
    /// relaxed and cover them all with one `sync` before it hands out any
    /// receipt (what `batpak-tokio` does to spare a thread hand-off per
    /// append); when false (the default) it must not. A store that says
    /// true also shows no relaxed event to readers before it is durable, so
    /// a caller whose `sync` failed may read an event back to learn that
    /// it was made durable anyway.
    fn sync_covers_relaxed_appends(&self) -> bool {
        false
    }

    /// Release the store: sync, stop its threads or connections.
    ///
    /// # Errors
    /// As the backend's own `close`.
    fn close(self) -> Result<(), StoreError>
    where
        Self: Sized;

    /// Fold `entity`'s events of the kinds `T` reads into a `T`. The
    /// default reads them all on every call; backends with a projection
    /// cache (the file store) honour `freshness` with it.
    ///
    /// # Errors
    /// Read failures, `Serialization` for a cached value that cannot be decoded.
    fn project<T>(&self, entity: &str, freshness: &Freshness) -> Result<Option<T>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + 'static,
    {
        let _ = freshness;
        let kinds = T::relevant_event_kinds();
        let schema = self.schema();
        let mut events = Vec::new();
        for entry in self.stream(entity)? {
            if kinds.is_empty() || kinds.contains(&entry.kind) {
                let v = self.get_versioned(entry.event_id)?;
                let mut event = v.event.event;
                if entry.kind != EventKind::TOMBSTONE {
                    let payload = std::mem::take(&mut event.payload);
                    event.payload = schema
                        .upcast(entry.event_id, entry.kind, v.payload_version, payload)?
                        .0;
                }
                events.push(event);
            }
        }
        Ok(T::from_events(&events))
    }

    /// The schema (typed events and upcasters) this backend's reads apply.
    /// The default is an empty one, for backends without a schema.
    fn schema(&self) -> Arc<Schema> {
        Arc::default()
    }

    /// Change the schema atomically: `change` edits a copy, installed only
    /// if it succeeds.
    ///
    /// # Errors
    /// What `change` returns; `Typed(Unsupported)` for a backend without a schema.
    fn update_schema(
        &self,
        change: &mut dyn FnMut(&mut Schema) -> Result<(), TypedError>,
    ) -> Result<(), StoreError> {
        let _ = change;
        Err(TypedError::Unsupported("a schema").into())
    }

    /// Register `T` for `T::KIND` (see [`Schema::register`]).
    ///
    /// # Errors
    /// `Typed(KindClaimedTwice)` naming both types when another type holds the kind.
    fn register<T: TypedEvent>(&self) -> Result<(), StoreError> {
        self.update_schema(&mut |s| s.register::<T>().map(drop))
    }

    /// Register `T`'s upcaster from payload version `from` to `from + 1`.
    ///
    /// # Errors
    /// As [`EventStore::register`]; `Typed(InvalidRegistration)`.
    fn register_upcaster<T: TypedEvent>(
        &self,
        from: u16,
        upcaster: Upcaster,
    ) -> Result<(), StoreError> {
        self.update_schema(&mut |s| s.upcaster::<T>(from, upcaster).map(drop))
    }

    /// Append with an explicit payload version (1: unversioned). The default
    /// stores only version 1 and refuses others.
    ///
    /// # Errors
    /// As [`EventStore::append_with_options`]; `Typed(Unsupported)`.
    fn append_versioned(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        payload_version: u16,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        if payload_version > 1 {
            return Err(TypedError::Unsupported("payload versions").into());
        }
        self.append_with_options(coord, kind, payload, opts)
    }

    /// Append `event` with kind `T::KIND` and payload version `T::VERSION`.
    ///
    /// # Errors
    /// As [`EventStore::append_versioned`]; `Typed(KindClaimedTwice)`.
    fn append_typed<T: TypedEvent>(
        &self,
        coord: &Coordinate,
        event: &T,
    ) -> Result<AppendReceipt, StoreError> {
        self.append_typed_with_options(coord, event, AppendOptions::new())
    }

    /// [`EventStore::append_typed`] with options (CAS, idempotency, links).
    ///
    /// # Errors
    /// As [`EventStore::append_typed`].
    fn append_typed_with_options<T: TypedEvent>(
        &self,
        coord: &Coordinate,
        event: &T,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        self.schema().check::<T>()?;
        self.append_versioned(coord, T::KIND, event, T::VERSION, opts)
    }

    /// The event with its payload version. The default reads every event as
    /// version 1 (right for a backend that stores only version 1).
    ///
    /// # Errors
    /// As [`EventStore::get`].
    fn get_versioned(&self, event_id: u128) -> Result<VersionedEvent, StoreError> {
        Ok(VersionedEvent {
            event: self.get(event_id)?,
            payload_version: 1,
        })
    }

    /// The event decoded as `T`, upcast from an older payload version.
    ///
    /// # Errors
    /// As [`EventStore::get`]; `Typed(KindMismatch | ShapeMismatch |
    /// VersionTooNew | NoUpcaster | UpcastFailed | KindClaimedTwice)`.
    fn get_as<T: TypedEvent>(&self, event_id: u128) -> Result<StoredEvent<T>, StoreError> {
        Ok(self.schema().decode::<T>(self.get_versioned(event_id)?)?)
    }

    /// Every event matching `region` with its payload version, lazily, in
    /// global-sequence order; a read failure is an `Err` item. The default
    /// reads the entries first, then each event as it is reached.
    fn events_versioned<'a>(
        &'a self,
        region: &Region,
    ) -> Box<dyn Iterator<Item = Result<VersionedEvent, StoreError>> + 'a> {
        each_event(self, self.query(region))
    }

    /// Every event of exactly this entity with its payload version, lazily,
    /// in clock order (as [`EventStore::events_versioned`]).
    fn stream_events_versioned<'a>(
        &'a self,
        entity: &str,
    ) -> Box<dyn Iterator<Item = Result<VersionedEvent, StoreError>> + 'a> {
        each_event(self, self.stream(entity))
    }

    /// Every event matching `region`, payloads as stored, lazily.
    fn events<'a>(
        &'a self,
        region: &Region,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent<Value>, StoreError>> + 'a> {
        Box::new(self.events_versioned(region).map(|r| r.map(|v| v.event)))
    }

    /// Every event of this entity, payloads as stored, lazily, in clock order.
    fn stream_events<'a>(
        &'a self,
        entity: &str,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent<Value>, StoreError>> + 'a> {
        Box::new(
            self.stream_events_versioned(entity)
                .map(|r| r.map(|v| v.event)),
        )
    }

    /// The events of kind `T::KIND` matching `region` (its fact filter is
    /// replaced by `T::KIND`), decoded as `T`, lazily.
    fn events_as<'a, T: TypedEvent>(
        &'a self,
        region: &Region,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent<T>, StoreError>> + 'a> {
        let schema = self.schema();
        let region = region.clone().with_fact(KindFilter::Exact(T::KIND));
        Box::new(
            self.events_versioned(&region)
                .map(move |r| Ok(schema.decode::<T>(r?)?)),
        )
    }

    /// The entity's events of kind `T::KIND`, decoded as `T`, lazily, in
    /// clock order (other kinds are skipped).
    fn stream_events_as<'a, T: TypedEvent>(
        &'a self,
        entity: &str,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent<T>, StoreError>> + 'a> {
        let schema = self.schema();
        Box::new(
            self.stream_events_versioned(entity)
                .filter(|r| {
                    r.as_ref()
                        .map_or(true, |v| v.event.event.header.event_kind == T::KIND)
                })
                .map(move |r| Ok(schema.decode::<T>(r?)?)),
        )
    }

    /// Append the payload of a gate [`Receipt`] and return it as
    /// [`Committed`] with the event's id, global sequence and hash.
    ///
    /// # Errors
    /// As [`EventStore::append`].
    fn append_committed<T: Serialize>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        receipt: Receipt<T>,
    ) -> Result<Committed<T>, StoreError> {
        let (payload, _gates) = receipt.into_parts();
        let r = self.append(coord, kind, &payload)?;
        Ok(Committed {
            payload,
            event_id: r.event_id,
            sequence: r.sequence,
            hash: committed_hash(self, r.event_id)?,
        })
    }

    /// Append the payload of a [`BypassReceipt`] flagged `FLAG_BYPASS`,
    /// atomically with its `EFFECT_BYPASS` audit record on entity
    /// `batpak:bypass` (see `Store::append_bypassed`).
    ///
    /// # Errors
    /// As [`EventStore::append_batch`].
    fn append_bypassed<T: Serialize>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        receipt: BypassReceipt<T>,
    ) -> Result<Committed<T>, StoreError> {
        let (payload, items) = crate::store::write::bypass_batch(coord, kind, receipt)?;
        let r = self.append_batch(items)?.first().copied().ok_or_else(|| {
            StoreError::InvalidBatch("the bypass batch returned no receipt".into())
        })?;
        Ok(Committed {
            payload,
            event_id: r.event_id,
            sequence: r.sequence,
            hash: committed_hash(self, r.event_id)?,
        })
    }

    /// Every bypass on record, oldest first.
    ///
    /// # Errors
    /// Read failures, `Serialization` for an audit record that does not decode.
    fn bypasses(&self) -> Result<Vec<BypassRecord>, StoreError> {
        self.by_fact(EventKind::EFFECT_BYPASS)?
            .iter()
            .map(|e| {
                let ev = self.get(e.event_id)?;
                serde_json::from_value(ev.event.payload).map_err(StoreError::serialization)
            })
            .collect()
    }
}

fn committed_hash<S: EventStore + ?Sized>(
    store: &S,
    event_id: u128,
) -> Result<[u8; 32], StoreError> {
    Ok(store
        .get(event_id)?
        .event
        .hash_chain
        .map_or([0; 32], |c| c.event_hash))
}

/// The file store keeps its inherent methods (and their infallible reads);
/// this forwards to them.
impl EventStore for Store {
    fn append_with_options(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        Store::append_with_options(self, coord, kind, payload, opts)
    }

    fn append_batch(&self, items: Vec<BatchAppendItem>) -> Result<Vec<AppendReceipt>, StoreError> {
        Store::append_batch(self, items)
    }

    fn append_reaction_batch(
        &self,
        correlation_id: u128,
        causation_id: u128,
        items: Vec<BatchAppendItem>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        Store::append_reaction_batch(self, correlation_id, causation_id, items)
    }

    fn import_versioned_events(
        &self,
        events: Vec<VersionedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        Store::import_versioned_events(self, events)
    }

    fn get(&self, event_id: u128) -> Result<StoredEvent<Value>, StoreError> {
        Store::get(self, event_id)
    }

    fn query(&self, region: &Region) -> Result<Vec<IndexEntry>, StoreError> {
        Ok(Store::query(self, region))
    }

    fn stream(&self, entity: &str) -> Result<Vec<IndexEntry>, StoreError> {
        Ok(Store::stream(self, entity))
    }

    fn by_correlation(&self, correlation_id: u128) -> Result<Vec<IndexEntry>, StoreError> {
        Ok(Store::by_correlation(self, correlation_id))
    }

    fn children(&self, event_id: u128) -> Result<Vec<IndexEntry>, StoreError> {
        Ok(Store::children(self, event_id))
    }

    fn walk_ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Result<Vec<StoredEvent<Value>>, StoreError> {
        Ok(Store::walk_ancestors(self, event_id, limit))
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        Ok(Store::stats(self))
    }

    fn sync(&self) -> Result<(), StoreError> {
        Store::sync(self)
    }

    fn sync_covers_relaxed_appends(&self) -> bool {
        self.shared.config.durable_receipts()
    }

    fn close(self) -> Result<(), StoreError> {
        Store::close(self).map(|_closed| ())
    }

    fn project<T>(&self, entity: &str, freshness: &Freshness) -> Result<Option<T>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + 'static,
    {
        Store::project(self, entity, freshness)
    }

    fn append_committed<T: Serialize>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        receipt: Receipt<T>,
    ) -> Result<Committed<T>, StoreError> {
        Store::append_committed(self, coord, kind, receipt)
    }

    fn append_bypassed<T: Serialize>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        receipt: BypassReceipt<T>,
    ) -> Result<Committed<T>, StoreError> {
        Store::append_bypassed(self, coord, kind, receipt)
    }

    fn bypasses(&self) -> Result<Vec<BypassRecord>, StoreError> {
        Store::bypasses(self)
    }

    fn schema(&self) -> Arc<Schema> {
        Store::schema(self)
    }

    fn update_schema(
        &self,
        change: &mut dyn FnMut(&mut Schema) -> Result<(), TypedError>,
    ) -> Result<(), StoreError> {
        self.shared.update_schema(change)
    }

    fn append_versioned(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        payload_version: u16,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        Store::append_versioned(self, coord, kind, payload, payload_version, opts)
    }

    fn get_versioned(&self, event_id: u128) -> Result<VersionedEvent, StoreError> {
        Store::get_versioned(self, event_id)
    }

    fn get_as<T: TypedEvent>(&self, event_id: u128) -> Result<StoredEvent<T>, StoreError> {
        Store::get_as(self, event_id)
    }

    fn events_versioned<'a>(
        &'a self,
        region: &Region,
    ) -> Box<dyn Iterator<Item = Result<VersionedEvent, StoreError>> + 'a> {
        Box::new(Store::events_versioned(self, region))
    }

    fn stream_events_versioned<'a>(
        &'a self,
        entity: &str,
    ) -> Box<dyn Iterator<Item = Result<VersionedEvent, StoreError>> + 'a> {
        Box::new(Store::stream_events_versioned(self, entity))
    }

    fn events_as<'a, T: TypedEvent>(
        &'a self,
        region: &Region,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent<T>, StoreError>> + 'a> {
        Box::new(Store::events_as(self, region))
    }

    fn stream_events_as<'a, T: TypedEvent>(
        &'a self,
        entity: &str,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent<T>, StoreError>> + 'a> {
        Box::new(Store::stream_events_as(self, entity))
    }
}

/// Each listed entry's event, read as it is reached; a listing failure is
/// the only item.
fn each_event<'a, S: EventStore + ?Sized>(
    store: &'a S,
    entries: Result<Vec<IndexEntry>, StoreError>,
) -> Box<dyn Iterator<Item = Result<VersionedEvent, StoreError>> + 'a> {
    match entries {
        Ok(entries) => Box::new(
            entries
                .into_iter()
                .map(move |e| store.get_versioned(e.event_id)),
        ),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}
