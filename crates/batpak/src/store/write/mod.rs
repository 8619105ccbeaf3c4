//! The write path: validating and encoding an append on the caller's thread,
//! the short serialised section that assigns clock, sequence and hash and
//! copies the frame into the log, and the wait for durability.
//!
//! There is no writer thread. The writer lock *is* the single serialised
//! write path: at most one append is inside it. Handing each append to a
//! thread and waiting for the reply would cost a cross-CPU wake-up per
//! append (see ADR 0002). Back-pressure is `Durability::begin_append`, which
//! bounds the appenders in flight (`writer.channel_capacity`).
//!
//! This module appends and answers no queries. It reads a frame back only
//! where the index does not hold what it needs: the original kind of a
//! redacted event an idempotency key names, and (`gated`) the hash of a
//! committed event.

mod batch;
pub(crate) mod durability;
mod flusher;
mod gated;
mod grower;
mod options;
mod restart;

pub use batch::{
    prepare_batch, prepare_event, prepare_imports, AppendLimits, Continuation, PreparedEvent,
};
pub(crate) use flusher::Flusher;
pub(crate) use gated::bypass_batch;
pub use gated::BypassRecord;
pub(crate) use grower::Grower;
pub use options::{AppendOptions, AppendReceipt, BatchAppendItem, CausationRef, Durability};
use restart::Mark;
pub(crate) use restart::Restarts;

use crate::coordinate::Coordinate;
use crate::event::EventKind;
use crate::store::format::chain;
use crate::store::format::payload::{encode_value, PayloadError};
use crate::store::format::payload_ser;
use crate::store::format::record::{CoordCheck, EventRecord};
use crate::store::format::segment::SEGMENT_HEADER_LEN;
use crate::store::index::{DiskPos, EntityTail, Index, NewRecord, MAX_SLOTS};
use crate::store::log::{ActiveSegment, InjectionPoint, SegmentIo};
use crate::store::{BatchStage, Shared, StoreError};
use durability::InflightGuard;
use parking_lot::{RwLockUpgradableReadGuard, RwLockWriteGuard};
use serde::Serialize;

/// The writer's state, behind the writer lock.
pub(crate) struct Writer {
    pub(crate) active: ActiveSegment,
    /// Next global sequence to assign.
    pub(crate) next_seq: u64,
    /// Slots written to the log and the index.
    pub(crate) written: u32,
    /// Appends since the last sync request (relaxed mode).
    unsynced: u32,
}

impl Writer {
    pub(crate) fn new(active: ActiveSegment, next_seq: u64, written: u32) -> Self {
        Self {
            active,
            next_seq,
            written,
            unsynced: 0,
        }
    }
}

/// Encode a payload the one way every append does: `serde_json::to_value`,
/// stored as MessagePack (SPEC §3.11). Usually written directly, without
/// building the `Value` tree; payloads the direct path is not sure about go
/// through `to_value`, which also reports what cannot be stored.
pub(crate) fn encode_payload(payload: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(160);
    if payload_ser::encode(payload, &mut out).is_ok() {
        return Ok(out);
    }
    let value = serde_json::to_value(payload).map_err(StoreError::serialization)?;
    encode_value(&value, &mut out).map_err(StoreError::serialization)?;
    Ok(out)
}

impl From<PayloadError> for StoreError {
    fn from(e: PayloadError) -> Self {
        StoreError::serialization(e)
    }
}

/// The condition an append places on its entity's current state (SPEC §3.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// No condition.
    None,
    /// The newest event has this clock (`with_cas`).
    Clock(u32),
    /// No event yet (`with_cas_empty`).
    Empty,
}

impl Condition {
    /// The condition `opts` asks for.
    #[must_use]
    pub fn from_options(opts: &AppendOptions) -> Self {
        match (opts.expect_empty, opts.expected_sequence) {
            (true, _) => Condition::Empty,
            (false, Some(n)) => Condition::Clock(n),
            (false, None) => Condition::None,
        }
    }

    /// Check the condition against `entity` whose newest event has clock
    /// `newest` (`None`: no event).
    ///
    /// # Errors
    /// `StreamNotEmpty`, `StreamIsEmpty` or `SequenceMismatch`.
    pub fn check(self, entity: &str, newest: Option<u32>) -> Result<(), StoreError> {
        match (self, newest) {
            (Condition::None, _) | (Condition::Empty, None) => Ok(()),
            (Condition::Empty, Some(actual)) => Err(StoreError::StreamNotEmpty {
                entity: entity.to_owned(),
                actual,
            }),
            (Condition::Clock(n), None) => Err(StoreError::StreamIsEmpty {
                entity: entity.to_owned(),
                expected: n,
            }),
            (Condition::Clock(n), Some(actual)) if actual == n => Ok(()),
            (Condition::Clock(n), Some(actual)) => Err(StoreError::SequenceMismatch {
                entity: entity.to_owned(),
                expected: n,
                actual,
            }),
        }
    }
}

/// An append after its caller-side work (validation, encoding, ids).
pub(crate) struct Draft<'a> {
    pub(crate) coord: &'a Coordinate,
    pub(crate) kind: EventKind,
    /// blake3 of `payload`, computed before the writer lock is taken.
    pub(crate) content_hash: [u8; 32],
    pub(crate) payload: Vec<u8>,
    pub(crate) event_id: u128,
    /// `None`: correlate to the event itself.
    pub(crate) correlation_id: Option<u128>,
    pub(crate) causation_id: Option<u128>,
    pub(crate) flags: u8,
    pub(crate) condition: Condition,
    /// The event id is an idempotency key.
    pub(crate) idempotent: bool,
    /// An imported event's clock, time and hashes, kept as they are.
    pub(crate) continuation: Option<Continuation>,
    /// The payload's schema version (1: unversioned).
    pub(crate) payload_version: u16,
    /// What its call asked for (`AppendOptions::durability`).
    pub(crate) durability: Option<Durability>,
}

/// A payload version as a record stores it: 0 for version 1 (so events
/// without a version, old and new, share one encoding and one hash).
pub(crate) fn stored_version(version: u16) -> u16 {
    if version <= 1 {
        0
    } else {
        version
    }
}

/// Why an append (or one item of a batch) failed, and at which step.
pub(crate) struct Failure {
    pub(crate) item: usize,
    pub(crate) stage: BatchStage,
    pub(crate) error: StoreError,
}

impl Failure {
    fn at(item: usize, stage: BatchStage, error: StoreError) -> Self {
        Self { item, stage, error }
    }

    /// The error a batch call returns.
    pub(crate) fn into_batch_error(self) -> StoreError {
        match self.error {
            // Already describes the batch (or is a fault the test asked for).
            e @ (StoreError::BatchFailed { .. }
            | StoreError::FaultInjected(_)
            | StoreError::ReadOnly) => e,
            e => StoreError::BatchFailed {
                item_index: self.item,
                stage: self.stage,
                source: Box::new(e),
            },
        }
    }
}

/// What the serialised part of an append did.
/// A retried item: its index in the call, its original receipt, and the
/// slot to wait for (if not yet visible) before answering.
type Retry = (usize, AppendReceipt, Option<u32>);

enum Locked {
    /// Every item's key was used before: their receipts, and the slot to
    /// wait for before answering.
    Retries(Vec<Retry>),
    /// Written and indexed; `target` is the slot count to wait for.
    Written {
        receipts: Vec<AppendReceipt>,
        target: u32,
    },
}

/// What a stored idempotency key says about a retry of `draft`.
enum KeyLookup {
    /// The key is unused.
    New,
    /// The key's event is this one: its receipt and the slot to wait for.
    Retry(AppendReceipt, Option<u32>),
}

impl Shared {
    /// One event at `payload_version` (1: unversioned), as
    /// [`Store::append_with_options`] appends it. The reactor thread
    /// appends through this, so it holds no `Store`.
    pub(crate) fn append_one(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        payload_version: u16,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        let inflight = self.durability.begin_append();
        let mut draft = batch::draft_event(
            coord,
            kind,
            payload,
            opts,
            self.config.single_append_max_bytes,
        )?;
        draft.payload_version = payload_version.max(1);
        let receipts = self
            .append_drafts(&[draft], false, inflight)
            .map_err(|f| f.error)?;
        receipts.into_iter().next().ok_or(StoreError::WriterCrashed)
    }

    /// A named step of the write path (see [`SegmentIo::at`]): nothing in
    /// a real store, where a test may act in a test build.
    #[inline]
    fn step(&self, point: InjectionPoint) -> Result<(), StoreError> {
        self.log.io().at(point)
    }

    /// Check `draft`'s idempotency key (if any) against the stored events.
    fn lookup_key(&self, index: &Index, draft: &Draft<'_>) -> Result<KeyLookup, StoreError> {
        // A generated id repeats a stored one only if its millisecond, its
        // counter (reseeded from 41 random bits each millisecond) and its
        // slot bits all do (ADR 0037): too unlikely to pay a lookup for.
        // Only caller-chosen keys are looked up.
        if !draft.idempotent {
            return Ok(KeyLookup::New);
        }
        let Some(hit) = index.find_key(draft.event_id) else {
            return Ok(KeyLookup::New);
        };
        // A redacted event's index entry says TOMBSTONE; its frame keeps the
        // original kind, which is what a retry of its append names.
        let kind = if hit.kind == EventKind::TOMBSTONE && hit.slot.is_some() {
            self.log
                .view()
                .read(
                    hit.disk_pos.segment_id,
                    hit.disk_pos.offset,
                    hit.disk_pos.length,
                )
                .and_then(|f| {
                    let check = CoordCheck::Equal {
                        entity: hit.entity,
                        scope: hit.scope,
                    };
                    crate::store::read::decode_at(f.bytes(), hit.disk_pos, check).map(|r| r.kind)
                })
                .map_or(hit.kind, EventKind::from_raw)
        } else {
            hit.kind
        };
        if hit.entity != draft.coord.entity()
            || hit.scope != draft.coord.scope()
            || kind != draft.kind
        {
            return Err(StoreError::IdempotencyConflict {
                key: draft.event_id,
            });
        }
        let receipt = AppendReceipt {
            event_id: draft.event_id,
            sequence: hit.global_seq,
            disk_pos: hit.disk_pos,
        };
        Ok(KeyLookup::Retry(receipt, hit.slot))
    }

    /// The shared core of single and batch appends: under the writer lock,
    /// check keys and conditions, assign clocks, sequences and hashes, copy
    /// the frames into the log, index them; then wait for durability. With
    /// `batch`, the frames are marked as one atomic batch (recovery keeps all
    /// of them or none) and become visible together.
    pub(crate) fn append_drafts(
        &self,
        drafts: &[Draft<'_>],
        batch: bool,
        inflight: InflightGuard<'_>,
    ) -> Result<Vec<AppendReceipt>, Failure> {
        let validation = |item, e| Failure::at(item, BatchStage::Validation, e);
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| validation(0, StoreError::ReadOnly))?;
        let now_us = self.config.now_us();
        let batch_size = if batch {
            u32::try_from(drafts.len())
                .map_err(|_| validation(0, StoreError::InvalidBatch("too many items".into())))?
        } else {
            0
        };

        // This call's receipt: after the fsync, or after the write.
        let durable = match Durability::strongest(drafts.iter().map(|d| d.durability)) {
            Some(Durability::Durable) => true,
            Some(Durability::Relaxed) => false,
            None => self.config.durable_receipts(),
        };
        let mut w = writer.lock();
        if self.is_closing() {
            return Err(Failure::at(
                0,
                BatchStage::Writing,
                StoreError::WriterCrashed,
            ));
        }
        let before = Mark::of(&w);
        let locked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.write_locked(&mut w, before, drafts, now_us, batch_size, durable)
        }));
        let locked = match locked {
            Ok(result) => result?,
            Err(panic) => return Err(self.restart_after_panic(&mut w, before, panic)),
        };
        drop(w);
        drop(inflight);
        let (receipts, target) = match locked {
            Locked::Retries(retries) => {
                let wait_for = retries.iter().filter_map(|r| r.2).max();
                if let Some(slot) = wait_for {
                    self.wait_visible(slot + 1).map_err(|e| validation(0, e))?;
                }
                return Ok(retries.into_iter().map(|r| r.1).collect());
            }
            Locked::Written { receipts, target } => (receipts, target),
        };
        if durable {
            let last = receipts.len().saturating_sub(1);
            // In a durable store, durable means visible; in a relaxed one
            // the event is visible already and the fsync is waited for.
            let synced = if self.config.durable_receipts() {
                self.wait_visible(target)
            } else {
                self.wait_durable(target)
            };
            synced.map_err(|e| Failure::at(last, BatchStage::Syncing, e))?;
        }
        self.dispatch();
        Ok(receipts)
    }

    /// The serialised part of an append, under the writer lock, in its
    /// steps: idempotency keys ([`Shared::find_retries`]), conditions and
    /// planning ([`Shared::plan`]), frames ([`Shared::write_frames`]), index
    /// ([`Shared::index_records`]), and publication ([`Shared::written`]).
    fn write_locked(
        &self,
        w: &mut Writer,
        before: Mark,
        drafts: &[Draft<'_>],
        now_us: i64,
        batch_size: u32,
        durable: bool,
    ) -> Result<Locked, Failure> {
        let validation = |item, e| Failure::at(item, BatchStage::Validation, e);
        self.durability.check().map_err(|e| validation(0, e))?;
        let index = self.index.upgradable_read();

        // Idempotency first: a retry returns the original receipts even when
        // its conditions no longer hold.
        if let Some(retries) = self.find_retries(&index, drafts)? {
            return Ok(Locked::Retries(retries));
        }
        let base = index.len();
        if u64::from(base) + drafts.len() as u64 > u64::from(MAX_SLOTS) {
            return Err(validation(
                0,
                StoreError::CapacityExhausted(format!("{MAX_SLOTS} events")),
            ));
        }
        let records = self.plan(&index, w.next_seq, drafts, now_us, batch_size)?;
        self.step(InjectionPoint::BatchValidated)
            .map_err(|e| validation(0, e))?;

        // Copy the frames into the log. If that fails part-way, the frames
        // already copied are taken back (see `roll_back`); nothing is indexed.
        let receipts = match self.write_frames(w, &records, now_us) {
            Ok(r) => r,
            Err(failure) => {
                self.roll_back(w, &before);
                return Err(failure);
            }
        };
        if let Some(len) = w.active.growth_wanted() {
            self.grower.request(w.active.segment().clone(), len);
        }
        self.index_records(
            RwLockUpgradableReadGuard::upgrade(index),
            &records,
            &receipts,
        )?;
        self.written(w, base, records.len(), durable)?;
        Ok(Locked::Written {
            receipts,
            target: w.written,
        })
    }

    /// The original receipts if every draft's idempotency key was used
    /// before (a retry); `None` if none was. A batch is retried whole or
    /// not at all: some used and some new is an error.
    fn find_retries(
        &self,
        index: &Index,
        drafts: &[Draft<'_>],
    ) -> Result<Option<Vec<Retry>>, Failure> {
        let validation = |item, e| Failure::at(item, BatchStage::Validation, e);
        let mut retries = Vec::new();
        for (i, d) in drafts.iter().enumerate() {
            match self.lookup_key(index, d).map_err(|e| validation(i, e))? {
                KeyLookup::New => {}
                KeyLookup::Retry(receipt, slot) => retries.push((i, receipt, slot)),
            }
        }
        if retries.is_empty() {
            return Ok(None);
        }
        if retries.len() != drafts.len() {
            let first_new = (0..drafts.len())
                .find(|i| retries.iter().all(|r| r.0 != *i))
                .unwrap_or(0);
            return Err(validation(
                first_new,
                StoreError::InvalidBatch(format!(
                    "{} of {} idempotency keys were already used: a batch is retried whole or not at all",
                    retries.len(),
                    drafts.len()
                )),
            ));
        }
        Ok(Some(retries))
    }

    /// Insert the written `records` into the index (each at the position
    /// its receipt names). The undo log stays until the next write begins:
    /// a panic after this point (before the call returns) still rolls back
    /// through it.
    fn index_records(
        &self,
        mut index: RwLockWriteGuard<'_, Index>,
        records: &[EventRecord<'_>],
        receipts: &[AppendReceipt],
    ) -> Result<(), Failure> {
        index.begin_undo();
        for (i, (rec, receipt)) in records.iter().zip(receipts).enumerate() {
            let pos = receipt.disk_pos;
            let inserted = index.insert(&NewRecord {
                event_id: rec.event_id,
                correlation_id: rec.correlation_id,
                causation_id: rec.causation_id,
                entity: rec.entity,
                scope: rec.scope,
                kind: EventKind::from_raw(rec.kind),
                timestamp_us: rec.timestamp_us,
                hlc_counter: rec.hlc_counter,
                clock: rec.clock,
                event_hash: rec.event_hash,
                global_seq: rec.global_seq,
                segment_id: pos.segment_id,
                offset: pos.offset,
                length: pos.length,
            });
            if let Err(e) = inserted {
                // The frames are in the log but not all in the index: stop
                // writing rather than let the two disagree. Reopening
                // rebuilds both.
                self.durability.poison(format!(
                    "index insert failed after write: {}",
                    e.display_chain()
                ));
                return Err(Failure::at(i, BatchStage::Indexing, e));
            }
        }
        Ok(())
    }

    /// `count` events from slot `base` on are written and indexed: count
    /// them, and in relaxed mode make them visible and kick the flusher
    /// every `every_n_events`. `durable`: whether this call's receipt waits
    /// for the fsync (a relaxed call in a durable store hands its frames to
    /// the operating system here instead).
    fn written(
        &self,
        w: &mut Writer,
        base: u32,
        count: usize,
        durable: bool,
    ) -> Result<(), Failure> {
        let last = count.saturating_sub(1);
        w.next_seq += count as u64;
        w.written = base + count as u32;
        self.durability.note_written(w.written);
        if let Err(e) = self.step(InjectionPoint::Indexed) {
            // Nothing real fails here; an injected failure stands for "the
            // writer died with indexed, unpublished events": stop writing.
            self.durability.poison(e.display_chain().to_string());
            return Err(Failure::at(last, BatchStage::Indexing, e));
        }
        if !self.config.durable_receipts() {
            self.durability.publish(w.written);
            w.unsynced += count as u32;
            if w.unsynced >= self.config.sync.every_n_events {
                w.unsynced = 0;
                if let Some(f) = &self.flusher {
                    f.kick();
                }
            }
        } else if !durable {
            // A relaxed call in a durable store: its receipt means "handed
            // to the operating system", so its frames leave the write
            // buffer now. It becomes visible when the sync started here
            // covers it (durable-mode visibility, SPEC §5).
            if let Err(e) = w.active.flush_pending() {
                self.durability.poison(format!(
                    "could not write a relaxed append: {}",
                    e.display_chain()
                ));
                return Err(Failure::at(last, BatchStage::Writing, e));
            }
            if let Some(f) = &self.flusher {
                f.kick();
            }
        }
        Ok(())
    }

    /// Copy `records` into the log, rotating segments as they fill.
    fn write_frames(
        &self,
        w: &mut Writer,
        records: &[EventRecord<'_>],
        now_us: i64,
    ) -> Result<Vec<AppendReceipt>, Failure> {
        let durable = self.config.durable_receipts();
        let mut receipts = Vec::with_capacity(records.len());
        for (i, rec) in records.iter().enumerate() {
            let frame_len = rec.frame_len();
            if !self.log.fits(&w.active, frame_len as u64) {
                self.rotate(w, frame_len as u64, now_us)
                    .map_err(|e| Failure::at(i, BatchStage::Syncing, e))?;
            }
            let segment_id = w.active.segment().id();
            let written = if durable {
                w.active
                    .append_buffered(frame_len, |buf| rec.write_frame(buf))
            } else {
                w.active.append(frame_len, |buf| rec.write_frame(buf))
            };
            let offset = written.map_err(|e| Failure::at(i, BatchStage::Writing, e))?;
            receipts.push(AppendReceipt {
                event_id: rec.event_id,
                sequence: rec.global_seq,
                disk_pos: DiskPos {
                    segment_id,
                    offset,
                    length: frame_len as u32,
                },
            });
            self.step(InjectionPoint::ItemWritten(i))
                .map_err(|e| Failure::at(i, BatchStage::Writing, e))?;
        }
        self.step(InjectionPoint::FramesWritten)
            .map_err(|e| Failure::at(records.len().saturating_sub(1), BatchStage::Writing, e))?;
        Ok(receipts)
    }

    /// Take back the frames of a failed append from the active segment, so
    /// that a failed batch never reappears after a restart. Frames that a
    /// rotation already moved into an earlier segment stay there, but as an
    /// incomplete batch, which recovery discards. If even that fails, the
    /// writer stops (`Poisoned`).
    fn roll_back(&self, w: &mut Writer, before: &Mark) {
        let from = if w.active.segment().id() == before.segment_id {
            before.write_pos
        } else {
            SEGMENT_HEADER_LEN as u64
        };
        if let Err(e) = w.active.roll_back_to(from, self.log.sync_mode()) {
            self.durability.poison(format!(
                "could not take back a failed append: {}",
                e.display_chain()
            ));
        }
    }

    /// Give each draft its clock, time, sequence and hash, checking its
    /// condition against its entity as it is just before it (earlier items
    /// of the same call included).
    fn plan<'d>(
        &self,
        index: &Index,
        next_seq: u64,
        drafts: &'d [Draft<'d>],
        now_us: i64,
        batch_size: u32,
    ) -> Result<Vec<EventRecord<'d>>, Failure> {
        // An entity's tail as earlier items of this call left it: found
        // among the records planned so far (a map for large batches).
        let mut overlay_map: hashbrown::HashMap<&str, EntityTail> = hashbrown::HashMap::new();
        let use_map = drafts.len() > 16;
        let mut records = Vec::with_capacity(drafts.len());
        let mut ids = FinalIds::new(drafts.len());
        for (i, d) in drafts.iter().enumerate() {
            let entity = d.coord.entity();
            let local = if use_map {
                overlay_map.get(entity).copied()
            } else {
                records
                    .iter()
                    .rev()
                    .find(|r: &&EventRecord<'_>| r.entity == entity)
                    .map(tail_of)
            };
            let tail = local.or_else(|| index.entity_tail(entity));
            let at = Placement {
                global_seq: next_seq + i as u64,
                batch_size,
                index: i,
                ids: ids.of(d, index.len() + i as u32),
            };
            let rec = match &d.continuation {
                Some(c) => imported_record(d, c, entity, tail, at)?,
                None => {
                    d.condition
                        .check(entity, tail.map(|t| t.clock))
                        .map_err(|e| Failure::at(i, BatchStage::Validation, e))?;
                    let clock = match &tail {
                        Some(t) => t.clock.checked_add(1).ok_or_else(|| {
                            Failure::at(
                                i,
                                BatchStage::Validation,
                                StoreError::ClockOverflow {
                                    entity: entity.to_owned(),
                                },
                            )
                        })?,
                        None => 0,
                    };
                    // Per entity, time never goes backwards; events in the
                    // same millisecond are told apart by the HLC counter.
                    let time = crate::store::codec::next_entity_time(now_us, tail.map(time_of));
                    let prev_hash = tail.map_or([0; 32], |t| t.event_hash);
                    chained_record(d, entity, clock, time, prev_hash, at)
                }
            };
            if use_map {
                overlay_map.insert(entity, tail_of(&rec));
            }
            records.push(rec);
        }
        Ok(records)
    }

    /// Seal the active segment and start the next one. Everything written so
    /// far is durable afterwards (rotation syncs the old segment).
    fn rotate(&self, w: &mut Writer, frame_len: u64, now_us: i64) -> Result<(), StoreError> {
        let next_id = w.active.segment().id() + 1;
        if next_id > u64::from(u32::MAX) {
            return Err(StoreError::CapacityExhausted(format!(
                "segment id {next_id}"
            )));
        }
        self.step(InjectionPoint::BeforeRotate)?;
        let new = self
            .log
            .rotate(&mut w.active, frame_len, now_us)
            .inspect_err(|e| {
                tracing::warn!(error = %e.display_chain(), "segment rotation failed");
            })?;
        let sealed = w.active.segment().id();
        w.active = new;
        self.sealer.request(sealed);
        // Everything indexed before this call was in the segment just synced.
        self.durability
            .mark_synced(w.written, self.config.durable_receipts());
        Ok(())
    }

    /// Block until slots below `target` are visible to readers (durable in
    /// durable mode), syncing as the group-commit leader if needed.
    pub(crate) fn wait_visible(&self, target: u32) -> Result<(), StoreError> {
        if self.durability.visible() >= target {
            return Ok(());
        }
        self.wait_durable(target)
    }

    /// Block until slots below `target` are on stable storage.
    pub(crate) fn wait_durable(&self, target: u32) -> Result<(), StoreError> {
        let Some(writer) = self.writer.as_ref() else {
            return Ok(());
        };
        let max_batch = self.config.batch.group_commit_max_batch;
        let sync_once = |already: u32| -> Result<u32, StoreError> {
            // The group's frames go to the file in one write under the
            // writer lock (so a rotation's sync always covers them); the
            // fsync itself runs without it.
            let (segment, written) = {
                let mut w = writer.lock();
                // Stopped meanwhile: nothing more reaches the file.
                self.durability.check()?;
                self.step(InjectionPoint::BeforeFlush)?;
                w.active.flush_pending()?;
                (w.active.segment().clone(), w.written)
            };
            self.step(InjectionPoint::BeforeSync)?;
            segment.sync(self.log.sync_mode())?;
            // Stopped while syncing (the power-loss hook cut the files
            // under this fsync): what it covered cannot be acknowledged.
            self.durability.check()?;
            self.step(InjectionPoint::Sync)?;
            Ok(if max_batch == 0 {
                written
            } else {
                written.min(already.saturating_add(max_batch))
            })
        };
        self.durability
            .wait_durable(target, self.config.durable_receipts(), |already| {
                // A panicking leader syncs nothing; within the restart budget
                // the next round (this caller or another) tries again.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sync_once(already)))
                    .unwrap_or_else(|panic| {
                        match self.count_restart(restart::panic_message(panic.as_ref())) {
                            StoreError::WriterCrashed => Err(StoreError::WriterCrashed),
                            _ => Ok(already),
                        }
                    })
            })
    }

    /// Make everything written so far durable.
    pub(crate) fn sync_all_written(&self) -> Result<(), StoreError> {
        let Some(writer) = self.writer.as_ref() else {
            return Ok(());
        };
        self.durability.check()?;
        let written = writer.lock().written;
        self.wait_durable(written)
    }
}

/// What another layer may ask of the write path: make everything written so
/// far durable. The shared state is private to this module, so a holder
/// (maintenance, before a snapshot copies segments) cannot append, rotate
/// or publish.
#[derive(Clone, Copy)]
pub(crate) struct Syncer<'s>(&'s Shared);

impl<'s> Syncer<'s> {
    pub(crate) fn new(shared: &'s Shared) -> Self {
        Self(shared)
    }

    /// See [`Shared::sync_all_written`].
    pub(crate) fn sync_all_written(self) -> Result<(), StoreError> {
        self.0.sync_all_written()
    }
}

/// Where a record goes: its global sequence, its place in its batch, and
/// the ids it is written with.
#[derive(Clone, Copy)]
struct Placement {
    global_seq: u64,
    batch_size: u32,
    index: usize,
    ids: EventIds,
}

/// A record's own id, correlation and causation as written.
#[derive(Clone, Copy)]
struct EventIds {
    event: u128,
    correlation: u128,
    causation: Option<u128>,
}

/// The ids drafts are written with. A draft whose id the store generated
/// gets its slot in the id's low bits (`id::with_slot_hint`, ADR 0037),
/// which only the writer knows; a caller's id (an idempotency key, an
/// imported event) is kept as it is. A later draft of the same call that
/// names a renamed draft as its correlation or cause (a batch's
/// `CausationRef::PriorItem`) is pointed at the new id.
struct FinalIds {
    /// `(generated, written)` of the drafts renamed so far.
    renamed: Vec<(u128, u128)>,
    /// The same pairs for calls with many drafts.
    renamed_map: Option<hashbrown::HashMap<u128, u128>>,
}

impl FinalIds {
    fn new(drafts: usize) -> Self {
        Self {
            renamed: Vec::new(),
            renamed_map: (drafts > 16).then(hashbrown::HashMap::new),
        }
    }

    /// The ids of draft `d`, written at `slot`.
    fn of(&mut self, d: &Draft<'_>, slot: u32) -> EventIds {
        let renamed = |id: u128| -> u128 {
            let found = match &self.renamed_map {
                Some(map) => map.get(&id).copied(),
                None => self.renamed.iter().find(|r| r.0 == id).map(|r| r.1),
            };
            found.unwrap_or(id)
        };
        let correlation = d.correlation_id.map(renamed);
        let causation = d.causation_id.map(renamed);
        let event = if d.idempotent || d.continuation.is_some() {
            d.event_id
        } else {
            let event = crate::id::with_slot_hint(d.event_id, slot);
            match &mut self.renamed_map {
                Some(map) => {
                    map.insert(d.event_id, event);
                }
                None => self.renamed.push((d.event_id, event)),
            }
            event
        };
        EventIds {
            event,
            correlation: correlation.unwrap_or(event),
            causation,
        }
    }
}

/// The record of draft `d` as the `clock`th event of `entity`, linked to
/// `prev_hash`, with its event hash.
fn chained_record<'d>(
    d: &'d Draft<'d>,
    entity: &'d str,
    clock: u32,
    time: crate::store::codec::EntityTime,
    prev_hash: [u8; 32],
    at: Placement,
) -> EventRecord<'d> {
    let mut rec = EventRecord {
        flags: d.flags,
        kind: d.kind.raw(),
        clock,
        global_seq: at.global_seq,
        timestamp_us: time.timestamp_us,
        hlc_counter: time.hlc_counter,
        batch_size: at.batch_size,
        batch_index: if at.batch_size > 0 {
            at.index as u32
        } else {
            0
        },
        event_id: at.ids.event,
        correlation_id: at.ids.correlation,
        causation_id: at.ids.causation,
        prev_hash,
        event_hash: [0; 32],
        content_hash: d.content_hash,
        entity,
        scope: d.coord.scope(),
        payload_len: d.payload.len() as u32,
        redacted: false,
        payload: &d.payload,
        payload_version: stored_version(d.payload_version),
    };
    rec.event_hash = chain::event_hash(&prev_hash, &rec);
    rec
}

/// The entity's tail once `rec` is written.
fn tail_of(rec: &EventRecord<'_>) -> EntityTail {
    EntityTail {
        clock: rec.clock,
        event_hash: rec.event_hash,
        timestamp_us: rec.timestamp_us,
        hlc_counter: rec.hlc_counter,
    }
}

fn time_of(tail: EntityTail) -> crate::store::codec::EntityTime {
    crate::store::codec::EntityTime {
        timestamp_us: tail.timestamp_us,
        hlc_counter: tail.hlc_counter,
    }
}

/// The record of an imported event: its own clock, time and hashes, checked
/// against its entity's tail (`Continuation::check`).
fn imported_record<'d>(
    d: &'d Draft<'d>,
    c: &Continuation,
    entity: &'d str,
    tail: Option<EntityTail>,
    at: Placement,
) -> Result<EventRecord<'d>, Failure> {
    let rec = chained_record(d, entity, c.clock, c.time, c.prev_hash, at);
    let tail = tail.map(|t| (t.clock, t.event_hash, time_of(t)));
    c.check(entity, tail, rec.event_hash)
        .map_err(|e| Failure::at(at.index, BatchStage::Validation, e))?;
    Ok(rec)
}
