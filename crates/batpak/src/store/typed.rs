//! The file store's typed and streaming surface: its [`Schema`], typed
//! appends, `get_as`, and the lazy event iterators ([`EventIter`]).
//!
//! This module owns how a stored payload becomes a `T` on this backend
//! (straight from MessagePack when no upcast is needed, through a
//! `serde_json::Value` and the schema's upcasters otherwise) and how the
//! iterators step through the index. It writes nothing but what
//! `Store::append_with_options` writes, plus the payload version.
//!
//! Iterators take the index read lock once per step of at most
//! [`STEP`](crate::store::read::STEP) events, resolve those events' frames
//! under it (pinning their segments), and decode each frame only when it
//! is reached, after the lock is released. Slots never move (compaction
//! leaves removed events' slots dead), so stepping by slot yields every
//! event of the selection at most once, and events removed by a compaction
//! running meanwhile may be missing. A frame that cannot be read is an
//! `Err` item; the iteration continues with the next event.

use crate::coordinate::{Coordinate, KindFilter, Region};
use crate::event::typed::shape;
use crate::event::{
    EventKind, Schema, StoredEvent, TypedError, TypedEvent, Upcaster, VersionedEvent,
};
use crate::store::format::payload::decode_value;
use crate::store::format::payload_de::decode_direct;
use crate::store::format::record::EventRecord;
use crate::store::index::SlotQuery;
use crate::store::read::Reader;
use crate::store::read::{payload_version, stored_event, stored_event_with, Located, STEP};
use crate::store::{AppendOptions, AppendReceipt, Shared, Store, StoreError};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::Arc;

impl Shared {
    /// The schema as it is now (registrations after this call are not in it).
    pub(crate) fn schema(&self) -> Arc<Schema> {
        self.schema.read().clone()
    }

    /// Apply `change` to a copy of the schema and install it if it succeeds.
    pub(crate) fn update_schema(
        &self,
        change: &mut dyn FnMut(&mut Schema) -> Result<(), TypedError>,
    ) -> Result<(), StoreError> {
        let mut current = self.schema.write();
        let mut next = (**current).clone();
        change(&mut next)?;
        *current = Arc::new(next);
        Ok(())
    }
}

/// Decode the record as `T`: kind and version checked, upcast when the
/// stored version is older, straight from the bytes when it is current.
pub(crate) fn decode_typed<T: TypedEvent>(
    schema: &Schema,
    rec: &EventRecord<'_>,
    coord: Coordinate,
) -> Result<StoredEvent<T>, StoreError> {
    let payload = decode_typed_payload::<T>(
        schema,
        rec.event_id,
        EventKind::from_raw(rec.visible_kind()),
        payload_version(rec),
        rec.payload,
    )?;
    Ok(stored_event_with(rec, coord, payload))
}

/// Decode a stored payload (the bytes `codec::encode_payload` wrote) as
/// `T`, for every backend's typed reads: kind and version checked against
/// the schema, straight from the bytes when the payload is at `T::VERSION`,
/// through a `serde_json::Value` and the schema's upcasters when it is
/// older.
///
/// # Errors
/// `Typed(KindClaimedTwice | KindMismatch | VersionTooNew | NoUpcaster |
/// UpcastFailed | ShapeMismatch)`; `Serialization` for bytes that are not
/// a payload.
pub fn decode_typed_payload<T: TypedEvent>(
    schema: &Schema,
    event_id: u128,
    kind: EventKind,
    version: u16,
    bytes: &[u8],
) -> Result<T, StoreError> {
    schema.admit::<T>(event_id, kind, version)?;
    let value = if version == T::VERSION {
        match decode_direct::<T>(bytes) {
            Ok(t) => return Ok(t),
            // The `Value` path decides (and names the error).
            Err(_) => decode_value(bytes)?,
        }
    } else {
        schema.upcast_to::<T>(event_id, version, decode_value(bytes)?)?
    };
    Ok(serde_json::from_value(value).map_err(|e| shape::<T>(event_id, e))?)
}

fn decode_untyped(
    _: &Schema,
    rec: &EventRecord<'_>,
    coord: Coordinate,
) -> Result<StoredEvent<Value>, StoreError> {
    stored_event(rec, coord)
}

fn decode_versioned(
    _: &Schema,
    rec: &EventRecord<'_>,
    coord: Coordinate,
) -> Result<VersionedEvent, StoreError> {
    Ok(VersionedEvent {
        event: stored_event(rec, coord)?,
        payload_version: payload_version(rec),
    })
}

/// The event as a projection folds it: its payload upcast to the version
/// the schema registers for its kind.
pub(crate) fn decode_upcast(
    schema: &Schema,
    rec: &EventRecord<'_>,
    coord: Coordinate,
) -> Result<StoredEvent<Value>, StoreError> {
    let mut ev = stored_event(rec, coord)?;
    if !rec.redacted {
        let payload = std::mem::take(&mut ev.event.payload);
        let (payload, _) = schema.upcast(
            rec.event_id,
            ev.event.header.event_kind,
            payload_version(rec),
            payload,
        )?;
        ev.event.payload = payload;
    }
    Ok(ev)
}

type Decode<I> = fn(&Schema, &EventRecord<'_>, Coordinate) -> Result<I, StoreError>;

enum Source {
    /// Slots `next..end` matching the region (`end`: the visible watermark
    /// at the first step).
    Region {
        region: Region,
        next: u32,
        end: Option<u32>,
    },
    /// The entity's slots after `after`, below `end`, of `kind` if given.
    Entity {
        entity: String,
        kind: Option<EventKind>,
        after: Option<u32>,
        end: Option<u32>,
    },
}

/// A lazy iterator over stored events (see the module docs): the file
/// store's `events`, `events_as`, `stream_events`, `stream_events_as` and
/// `events_versioned`. Holds no lock between calls to `next`.
pub struct EventIter<'s, I> {
    reader: Reader<'s>,
    schema: Arc<Schema>,
    source: Source,
    decode: Decode<I>,
    /// Located frames of the current step, with their slots.
    pending: VecDeque<(u32, Result<Located, StoreError>)>,
    /// `Reader::compactions` when `pending` was located.
    pending_at: u64,
    slots: Vec<u32>,
    exhausted: bool,
}

impl<'s, I> EventIter<'s, I> {
    fn new(reader: Reader<'s>, schema: Arc<Schema>, source: Source, decode: Decode<I>) -> Self {
        Self {
            reader,
            schema,
            source,
            decode,
            pending: VecDeque::new(),
            pending_at: 0,
            slots: Vec::new(),
            exhausted: false,
        }
    }

    /// Forget located frames a compaction may have removed or redacted
    /// since, and go on from the first of them with the index as it is now.
    fn forget_stale_pending(&mut self) {
        let Some(&(first, _)) = self.pending.front() else {
            return;
        };
        if self.reader.compactions() == self.pending_at {
            return;
        }
        self.pending.clear();
        self.exhausted = false;
        match &mut self.source {
            Source::Region { next, .. } => *next = first,
            Source::Entity { after, .. } => *after = first.checked_sub(1),
        }
    }

    /// Resolve the next step's frames under the index lock.
    fn refill(&mut self) {
        let index = self.reader.index();
        self.pending_at = self.reader.compactions();
        let visible = self.reader.visible();
        self.slots.clear();
        match &mut self.source {
            Source::Region { region, next, end } => {
                let end = *end.get_or_insert(visible);
                let to = end.min(next.saturating_add(STEP));
                SlotQuery::range(&index, region, *next, to).collect_into(&mut self.slots);
                *next = to;
                self.exhausted = *next >= end;
            }
            Source::Entity {
                entity,
                kind,
                after,
                end,
            } => {
                let end = *end.get_or_insert(visible);
                let list = index.entity_slots(entity);
                let start = after.map_or(0, |a| list.partition_point(|&s| s <= a));
                let mut taken = 0;
                for &slot in list[start..].iter().take_while(|&&s| s < end) {
                    if taken == STEP as usize {
                        break;
                    }
                    taken += 1;
                    *after = Some(slot);
                    if kind.is_none_or(|k| index.coordinate_parts(slot).2 == k) {
                        self.slots.push(slot);
                    }
                }
                self.exhausted = taken < STEP as usize;
            }
        }
        for &slot in &self.slots {
            self.pending
                .push_back((slot, self.reader.locate(&index, slot)));
        }
        drop(index);
        self.reader.reading_frames();
    }
}

impl<I> Iterator for EventIter<'_, I> {
    type Item = Result<I, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.forget_stale_pending();
            if let Some((_, located)) = self.pending.pop_front() {
                let schema = &self.schema;
                let decode = self.decode;
                return Some(located.and_then(|l| {
                    self.reader
                        .read_located(l, |rec, coord| decode(schema, rec, coord))
                }));
            }
            if self.exhausted {
                return None;
            }
            self.refill();
        }
    }
}

impl Store {
    /// The schema (typed events and upcasters) reads apply now.
    pub fn schema(&self) -> Arc<Schema> {
        self.shared.schema()
    }

    /// Replace the schema.
    pub fn set_schema(&self, schema: Schema) {
        *self.shared.schema.write() = Arc::new(schema);
    }

    /// Register `T` for `T::KIND` (see [`Schema::register`]).
    ///
    /// # Errors
    /// `Typed(KindClaimedTwice)` naming both types when another type holds the kind.
    pub fn register<T: TypedEvent>(&self) -> Result<(), StoreError> {
        self.shared
            .update_schema(&mut |s| s.register::<T>().map(drop))
    }

    /// Register the upcaster of `T`'s payloads from version `from` to
    /// `from + 1` (see [`Schema::upcaster`]).
    ///
    /// # Errors
    /// As [`Store::register`]; `Typed(InvalidRegistration)` for `from` not in `1..T::VERSION`.
    pub fn register_upcaster<T: TypedEvent>(
        &self,
        from: u16,
        upcaster: Upcaster,
    ) -> Result<(), StoreError> {
        self.shared
            .update_schema(&mut |s| s.upcaster::<T>(from, upcaster).map(drop))
    }

    /// Append `event` with kind `T::KIND`, recording payload version
    /// `T::VERSION`.
    ///
    /// # Errors
    /// As [`Store::append`]; `Typed(KindClaimedTwice)` when the schema gives
    /// the kind to another type.
    pub fn append_typed<T: TypedEvent>(
        &self,
        coord: &Coordinate,
        event: &T,
    ) -> Result<AppendReceipt, StoreError> {
        self.append_typed_with_options(coord, event, AppendOptions::new())
    }

    /// [`Store::append_typed`] with options (CAS, idempotency, links, flags).
    ///
    /// # Errors
    /// As [`Store::append_with_options`] and [`Store::append_typed`].
    pub fn append_typed_with_options<T: TypedEvent>(
        &self,
        coord: &Coordinate,
        event: &T,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        self.shared.schema().check::<T>()?;
        self.append_versioned(coord, T::KIND, event, T::VERSION, opts)
    }

    /// Append with an explicit payload version (1: unversioned).
    ///
    /// # Errors
    /// As [`Store::append_with_options`].
    pub fn append_versioned(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl serde::Serialize,
        payload_version: u16,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        self.shared
            .append_one(coord, kind, payload, payload_version, opts)
    }

    /// The event with this id and the version its payload was written at.
    ///
    /// # Errors
    /// As [`Store::get`].
    pub fn get_versioned(&self, event_id: u128) -> Result<VersionedEvent, StoreError> {
        self.shared.reader().get_with(event_id, |rec, coord| {
            decode_versioned(&Schema::new(), rec, coord)
        })
    }

    /// The event with this id, its payload decoded as `T` (upcast from an
    /// older stored version by the registered upcasters).
    ///
    /// # Errors
    /// As [`Store::get`]; `Typed(KindMismatch | ShapeMismatch |
    /// VersionTooNew | NoUpcaster | UpcastFailed | KindClaimedTwice)`.
    pub fn get_as<T: TypedEvent>(&self, event_id: u128) -> Result<StoredEvent<T>, StoreError> {
        let schema = self.shared.schema();
        self.shared.reader().get_with(event_id, |rec, coord| {
            decode_typed::<T>(&schema, rec, coord)
        })
    }

    fn event_iter<I>(&self, source: Source, decode: Decode<I>) -> EventIter<'_, I> {
        EventIter::new(self.shared.reader(), self.shared.schema(), source, decode)
    }

    /// Every event matching `region`, in global-sequence order, read lazily
    /// (payloads as stored). Events committed after the first step are not
    /// included.
    pub fn events(&self, region: &Region) -> EventIter<'_, StoredEvent<Value>> {
        self.event_iter(region_source(region.clone()), decode_untyped)
    }

    /// [`Store::events`] with each payload's version.
    pub fn events_versioned(&self, region: &Region) -> EventIter<'_, VersionedEvent> {
        self.event_iter(region_source(region.clone()), decode_versioned)
    }

    /// The events of kind `T::KIND` matching `region`, decoded as `T`
    /// (upcast as [`Store::get_as`]), lazily, in global-sequence order.
    pub fn events_as<T: TypedEvent>(&self, region: &Region) -> EventIter<'_, StoredEvent<T>> {
        let region = region.clone().with_fact(KindFilter::Exact(T::KIND));
        self.event_iter(region_source(region), decode_typed::<T>)
    }

    /// Every event of exactly this entity, in clock order, read lazily.
    pub fn stream_events(&self, entity: &str) -> EventIter<'_, StoredEvent<Value>> {
        self.event_iter(entity_source(entity, None), decode_untyped)
    }

    /// The entity's events of kind `T::KIND`, decoded as `T`, in clock
    /// order, read lazily (events of other kinds are skipped).
    pub fn stream_events_as<T: TypedEvent>(&self, entity: &str) -> EventIter<'_, StoredEvent<T>> {
        self.event_iter(entity_source(entity, Some(T::KIND)), decode_typed::<T>)
    }

    /// The entity's events with their payload versions, lazily, in clock order.
    pub fn stream_events_versioned(&self, entity: &str) -> EventIter<'_, VersionedEvent> {
        self.event_iter(entity_source(entity, None), decode_versioned)
    }
}

fn region_source(region: Region) -> Source {
    Source::Region {
        region,
        next: 0,
        end: None,
    }
}

fn entity_source(entity: &str, kind: Option<EventKind>) -> Source {
    Source::Entity {
        entity: entity.to_owned(),
        kind,
        after: None,
        end: None,
    }
}
