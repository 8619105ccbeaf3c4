//! Atomic batches: validation of the items, their ids and causal links, then
//! the shared append core with the batch marking (SPEC §3.9).
//!
//! The validation ([`prepare_batch`], [`prepare_event`]) is public through
//! `store::codec`, so that every backend refuses and resolves exactly what
//! the file store does.

use super::durability::InflightGuard;
use super::{Condition, Draft, Failure};
use crate::coordinate::Coordinate;
use crate::event::EventKind;
use crate::store::format::{chain, payload};
use crate::store::{
    AppendOptions, AppendReceipt, BatchAppendItem, BatchStage, CausationRef, Durability, Shared,
    StoreError,
};
use serde::Serialize;

fn failed(item_index: usize, stage: BatchStage, source: StoreError) -> StoreError {
    StoreError::BatchFailed {
        item_index,
        stage,
        source: Box::new(source),
    }
}

/// An event after the caller-side work of an append: validated, its
/// payload encoded and hashed, its id and causal links resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedEvent {
    /// Coordinate.
    pub coord: Coordinate,
    /// Kind (never a reserved one).
    pub kind: EventKind,
    /// The encoded payload (see `codec::encode_payload`).
    pub payload: Vec<u8>,
    /// `codec::content_hash` of `payload`.
    pub content_hash: [u8; 32],
    /// The event id: the idempotency key when one was given, else a fresh UUIDv7.
    pub event_id: u128,
    /// Correlation id; `None` means the event's own id.
    pub correlation_id: Option<u128>,
    /// Causation id.
    pub causation_id: Option<u128>,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// The CAS condition on the entity.
    pub condition: Condition,
    /// `event_id` is a caller's idempotency key (check it before writing).
    pub idempotent: bool,
    /// For an imported event: the clock, time and links it must keep.
    pub continuation: Option<Continuation>,
    /// The payload's schema version (1 for an unversioned payload; see
    /// `event::typed`). Hashed when it is not 1.
    pub payload_version: u16,
    /// The durability its call asked for (`AppendOptions::durability`).
    pub durability: Option<Durability>,
}

/// Where an imported event must sit in its entity's chain, as it was
/// exported: its clock, time, previous hash and own hash. An import keeps
/// them (the global sequence is the target's own) and refuses an event that
/// does not continue the entity's chain where the target has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Continuation {
    /// The event's clock.
    pub clock: u32,
    /// Its timestamp and HLC counter.
    pub time: crate::store::codec::EntityTime,
    /// Its entity's previous event hash (zeros for the first).
    pub prev_hash: [u8; 32],
    /// Its own event hash.
    pub event_hash: [u8; 32],
}

impl Continuation {
    /// Check that the event continues `entity`, whose newest event has
    /// clock, hash and time `tail` (`None`: no event), and that its fields
    /// hash to what it says (`computed`).
    ///
    /// # Errors
    /// `ChainMismatch` saying what differs.
    pub fn check(
        &self,
        entity: &str,
        tail: Option<(u32, [u8; 32], crate::store::codec::EntityTime)>,
        computed: [u8; 32],
    ) -> Result<(), StoreError> {
        let refuse = |detail: String| StoreError::ChainMismatch {
            entity: entity.to_owned(),
            clock: self.clock,
            detail,
        };
        match tail {
            None if self.clock != 0 => {
                return Err(refuse(format!(
                    "the entity has no events; clock {} needs its predecessors first",
                    self.clock
                )))
            }
            None if self.prev_hash != [0; 32] => {
                return Err(refuse("a first event with a previous hash".into()))
            }
            None => {}
            Some((clock, hash, time)) => {
                if clock.checked_add(1) != Some(self.clock) {
                    return Err(refuse(format!("the entity's newest clock is {clock}")));
                }
                if hash != self.prev_hash {
                    return Err(refuse(
                        "its previous hash is not the entity's newest".into(),
                    ));
                }
                if self.time.timestamp_us < time.timestamp_us {
                    return Err(refuse(
                        "its time is before the entity's newest event".into(),
                    ));
                }
            }
        }
        if computed != self.event_hash {
            return Err(refuse(
                "its fields and payload do not hash to its event hash".into(),
            ));
        }
        Ok(())
    }
}

/// Prepare events to import (a store's export): each keeps its id (also
/// its idempotency key, so an event already present is answered with its
/// receipt), kind, flags, links, payload, payload version, clock, time and
/// hashes.
///
/// # Errors
/// `BatchFailed { item_index, stage: Validation | Encoding, source }`: over
/// the batch limits, a reserved kind, an oversized payload, a repeated id,
/// an event without its hash chain.
pub fn prepare_imports(
    events: Vec<crate::event::VersionedEvent>,
    limits: &AppendLimits,
) -> Result<Vec<PreparedEvent>, StoreError> {
    let mut budget = BatchBudget::new(events.len(), limits)?;
    let mut prepared: Vec<PreparedEvent> = Vec::with_capacity(events.len());
    for (i, versioned) in events.into_iter().enumerate() {
        let ev = versioned.event;
        let h = &ev.event.header;
        let chain = ev.event.hash_chain.ok_or_else(|| {
            failed(
                i,
                BatchStage::Validation,
                StoreError::InvalidBatch("an imported event needs its hash chain".into()),
            )
        })?;
        let payload = super::encode_payload(&ev.event.payload)
            .map_err(|e| failed(i, BatchStage::Encoding, e))?;
        budget.admit(i, h.event_kind, payload.len())?;
        if prepared.iter().any(|p| p.event_id == h.event_id) {
            let e = StoreError::InvalidBatch(format!("event {:032x} appears twice", h.event_id));
            return Err(failed(i, BatchStage::Validation, e));
        }
        prepared.push(PreparedEvent {
            content_hash: chain::content_hash(&payload),
            payload,
            kind: h.event_kind,
            event_id: h.event_id,
            correlation_id: Some(h.correlation_id),
            causation_id: h.causation_id,
            flags: h.flags,
            condition: Condition::None,
            idempotent: true,
            continuation: Some(Continuation {
                clock: h.position.sequence,
                time: crate::store::codec::EntityTime {
                    timestamp_us: h.timestamp_us,
                    hlc_counter: h.position.counter,
                },
                prev_hash: chain.prev_hash,
                event_hash: chain.event_hash,
            }),
            coord: ev.coordinate,
            // The event hash covers the version: a wrong one fails the
            // chain check instead of importing a misread event.
            payload_version: versioned.payload_version.max(1),
            durability: None,
        });
    }
    Ok(prepared)
}

/// The limits an append is checked against (a backend's configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendLimits {
    /// Largest encoded payload of one event.
    pub single_append_max_bytes: u32,
    /// Most items in one batch.
    pub batch_max_size: u32,
    /// Most payload bytes in one batch.
    pub batch_max_bytes: u32,
}

/// A batch's limits, checked item by item in order: the batch's size up
/// front, then each item's kind and payload and the running payload total.
/// An item's own kind or payload fails at that item; the batch-wide limits
/// fail at item 0, as in the original crate.
struct BatchBudget<'l> {
    limits: &'l AppendLimits,
    bytes: u64,
}

impl<'l> BatchBudget<'l> {
    fn new(items: usize, limits: &'l AppendLimits) -> Result<Self, StoreError> {
        if items > limits.batch_max_size as usize {
            // As the original crate: a batch-wide limit is item 0's failure.
            let e = StoreError::Configuration(format!(
                "batch size {items} exceeds max {}",
                limits.batch_max_size
            ));
            return Err(failed(0, BatchStage::Validation, e));
        }
        Ok(Self { limits, bytes: 0 })
    }

    /// Item `index`, of `kind` with a payload of `payload_len` bytes.
    fn admit(
        &mut self,
        index: usize,
        kind: EventKind,
        payload_len: usize,
    ) -> Result<(), StoreError> {
        self.bytes += payload_len as u64;
        let max = u64::from(self.limits.batch_max_bytes);
        if self.bytes > max {
            // A batch-wide limit, reported as item 0's failure (as the
            // original crate does); the message names the item that crossed it.
            let e = StoreError::Configuration(format!(
                "batch bytes exceed max {max}: {} bytes up to item {index}",
                self.bytes
            ));
            return Err(failed(0, BatchStage::Validation, e));
        }
        check_event(kind, payload_len, self.limits.single_append_max_bytes)
            .map_err(|e| failed(index, BatchStage::Validation, e))
    }
}

/// Refuse kinds and payloads no backend may write (SPEC §3.10, §3.14).
pub(crate) fn check_event(kind: EventKind, payload_len: usize, max: u32) -> Result<(), StoreError> {
    if kind.is_system() {
        return Err(StoreError::ReservedKind(kind));
    }
    if payload_len > max as usize {
        // `Configuration`, with the original crate's message.
        return Err(StoreError::Configuration(format!(
            "single append bytes {payload_len} exceeds max {max}"
        )));
    }
    Ok(())
}

/// Validate and encode a single append, as `Store::append_with_options` does.
///
/// # Errors
/// `ReservedKind`, `Serialization`, `Configuration` (payload too large).
pub fn prepare_event(
    coord: &Coordinate,
    kind: EventKind,
    payload: &impl Serialize,
    opts: AppendOptions,
    limits: &AppendLimits,
) -> Result<PreparedEvent, StoreError> {
    draft_event(coord, kind, payload, opts, limits.single_append_max_bytes)
        .map(Draft::into_prepared)
}

/// The draft of a single append (the file store appends it as it is; other
/// backends get it as a [`PreparedEvent`]). A reserved kind is refused
/// before the payload is encoded.
pub(crate) fn draft_event<'a>(
    coord: &'a Coordinate,
    kind: EventKind,
    payload: &impl Serialize,
    opts: AppendOptions,
    max_payload_bytes: u32,
) -> Result<Draft<'a>, StoreError> {
    if kind.is_system() {
        return Err(StoreError::ReservedKind(kind));
    }
    let payload = super::encode_payload(payload)?;
    check_event(kind, payload.len(), max_payload_bytes)?;
    Ok(Draft {
        coord,
        kind,
        content_hash: chain::content_hash(&payload),
        payload,
        event_id: opts
            .idempotency_key
            .unwrap_or_else(crate::id::generate_v7_id),
        correlation_id: opts.correlation_id,
        causation_id: opts.causation_id,
        flags: opts.flags,
        condition: Condition::from_options(&opts),
        idempotent: opts.idempotency_key.is_some(),
        continuation: None,
        payload_version: 1,
        durability: opts.durability,
    })
}

impl Draft<'_> {
    /// This draft as a backend-neutral prepared event (the coordinate copied).
    fn into_prepared(self) -> PreparedEvent {
        let Draft {
            coord,
            kind,
            content_hash,
            payload,
            event_id,
            correlation_id,
            causation_id,
            flags,
            condition,
            idempotent,
            continuation,
            payload_version,
            durability,
        } = self;
        PreparedEvent {
            coord: coord.clone(),
            kind,
            payload,
            content_hash,
            event_id,
            correlation_id,
            causation_id,
            flags,
            condition,
            idempotent,
            continuation,
            payload_version,
            durability,
        }
    }
}

/// Validate the items of a batch and resolve their ids and causal links, as
/// `Store::append_batch` does. `reaction` = `(correlation, causation)` for
/// `append_reaction_batch`: every item's correlation, and the causation of
/// items whose `CausationRef` is `None`. An empty batch gives no events.
///
/// # Errors
/// `BatchFailed { item_index, stage: Validation | Encoding, source }` for a
/// batch over its limits, a reserved kind, an oversized or undecodable
/// payload, a repeated idempotency key or a causation reference to an item
/// that is not earlier.
pub fn prepare_batch(
    items: Vec<BatchAppendItem>,
    reaction: Option<(u128, u128)>,
    limits: &AppendLimits,
) -> Result<Vec<PreparedEvent>, StoreError> {
    let mut budget = BatchBudget::new(items.len(), limits)?;
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        budget.admit(i, item.kind, item.payload_bytes.len())?;
        payload::validate(&item.payload_bytes)
            .map_err(|e| failed(i, BatchStage::Encoding, e.into()))?;
        let id = match item.options.idempotency_key {
            Some(key) => {
                if items[..i]
                    .iter()
                    .any(|o| o.options.idempotency_key == Some(key))
                {
                    let e = StoreError::InvalidBatch(format!(
                        "idempotency key {key:032x} appears twice"
                    ));
                    return Err(failed(i, BatchStage::Validation, e));
                }
                key
            }
            None => crate::id::generate_v7_id(),
        };
        ids.push(id);
    }
    let mut prepared = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let causation_id = match item.causation {
            CausationRef::Absolute(id) => Some(id),
            CausationRef::PriorItem(j) if j < i => Some(ids[j]),
            CausationRef::PriorItem(j) => {
                let e = StoreError::InvalidBatch(format!(
                    "item {i} names item {j} as its cause; only earlier items can be"
                ));
                return Err(failed(i, BatchStage::Validation, e));
            }
            CausationRef::None => reaction.map(|r| r.1).or(item.options.causation_id),
        };
        prepared.push(PreparedEvent {
            content_hash: chain::content_hash(&item.payload_bytes),
            payload: item.payload_bytes,
            coord: item.coord,
            kind: item.kind,
            event_id: ids[i],
            correlation_id: reaction.map(|r| r.0).or(item.options.correlation_id),
            causation_id,
            flags: item.options.flags,
            condition: Condition::from_options(&item.options),
            idempotent: item.options.idempotency_key.is_some(),
            continuation: None,
            payload_version: 1,
            durability: item.options.durability,
        });
    }
    Ok(prepared)
}

impl Shared {
    /// Append `items` atomically. `reaction` = `(correlation, causation)` for
    /// `append_reaction_batch`: every item's correlation, and the causation
    /// of items whose `CausationRef` is `None`.
    pub(crate) fn append_batch(
        &self,
        items: Vec<BatchAppendItem>,
        reaction: Option<(u128, u128)>,
        inflight: InflightGuard<'_>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let limits = AppendLimits {
            single_append_max_bytes: self.config.single_append_max_bytes,
            batch_max_size: self.config.batch.max_size,
            batch_max_bytes: self.config.batch.max_bytes,
        };
        let mut prepared = prepare_batch(items, reaction, &limits)?;
        let drafts = drafts_of(&mut prepared);
        self.append_drafts(&drafts, true, inflight)
            .map_err(Failure::into_batch_error)
    }
}

/// The drafts of prepared events, taking their payloads.
pub(crate) fn drafts_of(prepared: &mut [PreparedEvent]) -> Vec<Draft<'_>> {
    prepared
        .iter_mut()
        .map(|p| {
            let PreparedEvent {
                coord,
                kind,
                payload,
                content_hash,
                event_id,
                correlation_id,
                causation_id,
                flags,
                condition,
                idempotent,
                continuation,
                payload_version,
                durability,
            } = p;
            Draft {
                coord,
                kind: *kind,
                content_hash: *content_hash,
                payload: std::mem::take(payload),
                event_id: *event_id,
                correlation_id: *correlation_id,
                causation_id: *causation_id,
                flags: *flags,
                condition: *condition,
                idempotent: *idempotent,
                continuation: *continuation,
                payload_version: *payload_version,
                durability: *durability,
            }
        })
        .collect()
}

impl crate::store::Store {
    /// Import events exported from a store of either backend, atomically
    /// (all or none), keeping each one's id, kind, flags, links, payload,
    /// clock, timestamp and hashes; the global sequence is this store's.
    /// Each event must continue its entity's chain exactly where this store
    /// has it (after the earlier events of the call). An event whose id is
    /// already here with the same coordinate and kind is answered with its
    /// receipt, so importing twice writes nothing twice; a call in which
    /// only some ids are present fails (`InvalidBatch`) and writes nothing.
    ///
    /// # Errors
    /// `ChainMismatch` (the event does not continue its entity),
    /// `IdempotencyConflict`, `InvalidBatch`, the limits of `append_batch`,
    /// and the store's write failures; for more than one event, wrapped in
    /// `BatchFailed` with the item's index.
    pub fn import_events(
        &self,
        events: Vec<crate::event::StoredEvent<serde_json::Value>>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        self.import_versioned_events(
            events
                .into_iter()
                .map(crate::event::VersionedEvent::from)
                .collect(),
        )
    }

    /// As [`crate::store::Store::import_events`], for events that carry their payload
    /// version (read with `Store::events_versioned`): each keeps it, and its
    /// event hash, which covers the version, is checked with it.
    ///
    /// # Errors
    /// As [`crate::store::Store::import_events`].
    pub fn import_versioned_events(
        &self,
        events: Vec<crate::event::VersionedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let inflight = self.shared.durability.begin_append();
        let config = &self.shared.config;
        let limits = AppendLimits {
            single_append_max_bytes: config.single_append_max_bytes,
            batch_max_size: config.batch.max_size,
            batch_max_bytes: config.batch.max_bytes,
        };
        let mut prepared = prepare_imports(events, &limits)?;
        let batch = prepared.len() > 1;
        let drafts = drafts_of(&mut prepared);
        self.shared
            .append_drafts(&drafts, batch, inflight)
            .map_err(|f| if batch { f.into_batch_error() } else { f.error })
    }
}
