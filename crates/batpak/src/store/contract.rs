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
use crate::event::{EventKind, EventSourced, StoredEvent};
use crate::guard::Receipt;
use crate::pipeline::{BypassReceipt, Committed};
use crate::store::{
    AppendOptions, AppendReceipt, BatchAppendItem, BypassRecord, Freshness, IndexEntry, Store,
    StoreError, StoreStats,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

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
    /// `ReservedKind`, `Serialization`, `PayloadTooLarge`, `SequenceMismatch`,
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
        let mut events = Vec::new();
        for entry in self.stream(entity)? {
            if kinds.is_empty() || kinds.contains(&entry.kind) {
                events.push(self.get(entry.event_id)?.event);
            }
        }
        Ok(T::from_events(&events))
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

    fn import_events(
        &self,
        events: Vec<StoredEvent<Value>>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        Store::import_events(self, events)
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
}
