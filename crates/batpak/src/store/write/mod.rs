//! The write path: validating and encoding an append on the caller's thread,
//! the short serialised section that assigns clock, sequence and hash and
//! copies the frame into the log, and the wait for durability.
//!
//! There is no writer thread. The writer lock *is* the single serialised
//! write path and its back-pressure: at most one append is inside it, every
//! other caller blocks on it holding one encoded event. Handing each append
//! to a thread and waiting for the reply would cost a cross-CPU wake-up per
//! append (see ADR 0002).
//!
//! This module must not read frames back or answer queries; it only appends.

pub(crate) mod durability;
mod flusher;
mod options;

pub(crate) use flusher::Flusher;
pub use options::{AppendOptions, AppendReceipt, BatchAppendItem, CausationRef};

use crate::coordinate::Coordinate;
use crate::event::EventKind;
use crate::store::format::chain;
use crate::store::format::payload::{encode_value, PayloadError};
use crate::store::format::record::EventRecord;
use crate::store::index::{EntityTail, Index, NewRecord, MAX_SLOTS};
use crate::store::log::ActiveSegment;
use crate::store::{Shared, StoreError};
use durability::InflightGuard;
use parking_lot::RwLockUpgradableReadGuard;
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
/// stored as MessagePack (SPEC §3.11).
pub(crate) fn encode_payload(payload: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    let value = serde_json::to_value(payload).map_err(StoreError::serialization)?;
    let mut out = Vec::with_capacity(128);
    encode_value(&value, &mut out).map_err(StoreError::serialization)?;
    Ok(out)
}

impl From<PayloadError> for StoreError {
    fn from(e: PayloadError) -> Self {
        StoreError::serialization(e)
    }
}

/// The condition an append places on its entity's current state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    None,
    /// The newest event has this clock.
    Clock(u32),
    /// No event yet.
    Empty,
}

impl Condition {
    pub(crate) fn from_options(opts: &AppendOptions) -> Self {
        match (opts.expect_empty, opts.expected_sequence) {
            (true, _) => Condition::Empty,
            (false, Some(n)) => Condition::Clock(n),
            (false, None) => Condition::None,
        }
    }

    fn check(self, entity: &str, tail: Option<&EntityTail>) -> Result<(), StoreError> {
        match (self, tail) {
            (Condition::None, _) | (Condition::Empty, None) => Ok(()),
            (Condition::Empty, Some(t)) => Err(StoreError::StreamNotEmpty {
                entity: entity.to_owned(),
                actual: t.clock,
            }),
            (Condition::Clock(n), None) => Err(StoreError::StreamIsEmpty {
                entity: entity.to_owned(),
                expected: n,
            }),
            (Condition::Clock(n), Some(t)) if t.clock == n => Ok(()),
            (Condition::Clock(n), Some(t)) => Err(StoreError::SequenceMismatch {
                entity: entity.to_owned(),
                expected: n,
                actual: t.clock,
            }),
        }
    }
}

/// An append after its caller-side work (validation, encoding, hashing).
pub(crate) struct Draft<'a> {
    pub(crate) coord: &'a Coordinate,
    pub(crate) kind: EventKind,
    pub(crate) payload: Vec<u8>,
    pub(crate) event_id: u128,
    /// `None`: correlate to the event itself.
    pub(crate) correlation_id: Option<u128>,
    pub(crate) causation_id: Option<u128>,
    pub(crate) flags: u8,
    pub(crate) condition: Condition,
    /// The event id is an idempotency key.
    pub(crate) idempotent: bool,
}

impl Shared {
    /// Refuse kinds and payloads the store must not write (SPEC §3.10, §3.14).
    pub(crate) fn validate_event(
        &self,
        kind: EventKind,
        payload_len: usize,
    ) -> Result<(), StoreError> {
        if kind.is_system() {
            return Err(StoreError::ReservedKind(kind));
        }
        let max = self.config.single_append_max_bytes as usize;
        if payload_len > max {
            return Err(StoreError::PayloadTooLarge {
                size: payload_len,
                max,
            });
        }
        Ok(())
    }

    fn receipt_for(&self, index: &Index, slot: u32) -> AppendReceipt {
        AppendReceipt {
            event_id: index.event_id(slot),
            sequence: index.global_seq(slot),
            disk_pos: index.disk_pos(slot),
        }
    }

    /// Append one event: the whole single-append path.
    /// `inflight` marks the caller as about to write; it is released once the
    /// frame is in the log, before waiting for durability.
    pub(crate) fn append_draft(
        &self,
        draft: Draft<'_>,
        inflight: InflightGuard<'_>,
    ) -> Result<AppendReceipt, StoreError> {
        self.validate_event(draft.kind, draft.payload.len())?;
        let writer = self.writer.as_ref().ok_or(StoreError::ReadOnly)?;
        let content_hash = chain::content_hash(&draft.payload);
        let now_us = self.config.now_us();
        let entity = draft.coord.entity();

        let mut w = writer.lock();
        self.durability.check()?;
        let index = self.index.upgradable_read();

        if draft.idempotent {
            if let Some(slot) = index.slot_of(draft.event_id) {
                if index.coordinate(slot) != *draft.coord || index.kind(slot) != draft.kind {
                    return Err(StoreError::IdempotencyConflict {
                        key: draft.event_id,
                    });
                }
                let receipt = self.receipt_for(&index, slot);
                drop(index);
                drop(w);
                drop(inflight);
                self.wait_visible(slot + 1)?;
                return Ok(receipt);
            }
        } else if index.slot_of(draft.event_id).is_some() {
            // A fresh v7 id colliding with a stored one is astronomically
            // unlikely; refuse rather than make two events share an id.
            return Err(StoreError::IdempotencyConflict {
                key: draft.event_id,
            });
        }

        let tail = index.entity_tail(entity);
        draft.condition.check(entity, tail.as_ref())?;
        let clock = match &tail {
            Some(t) => t
                .clock
                .checked_add(1)
                .ok_or_else(|| StoreError::ClockOverflow {
                    entity: entity.to_owned(),
                })?,
            None => 0,
        };
        if index.len() >= MAX_SLOTS {
            return Err(StoreError::CapacityExhausted(format!("{MAX_SLOTS} events")));
        }
        // Per entity, time never goes backwards; events in the same
        // millisecond are told apart by the HLC counter.
        let (timestamp_us, hlc_counter) = match &tail {
            Some(t) => {
                let ts = now_us.max(t.timestamp_us);
                let same_ms = ts.div_euclid(1000) == t.timestamp_us.div_euclid(1000);
                (
                    ts,
                    if same_ms {
                        t.hlc_counter.saturating_add(1)
                    } else {
                        0
                    },
                )
            }
            None => (now_us, 0),
        };
        let prev_hash = tail.map_or([0; 32], |t| t.event_hash);
        let mut rec = EventRecord {
            flags: draft.flags,
            kind: draft.kind.raw(),
            clock,
            global_seq: w.next_seq,
            timestamp_us,
            hlc_counter,
            batch_size: 0,
            batch_index: 0,
            event_id: draft.event_id,
            correlation_id: draft.correlation_id.unwrap_or(draft.event_id),
            causation_id: draft.causation_id,
            prev_hash,
            event_hash: [0; 32],
            content_hash,
            entity,
            scope: draft.coord.scope(),
            payload: &draft.payload,
        };
        rec.event_hash = chain::event_hash(&prev_hash, &rec);
        let frame_len = rec.frame_len();

        if !self.log.fits(&w.active, frame_len as u64) {
            self.rotate(&mut w, frame_len as u64, index.len(), now_us)?;
        }
        let segment_id = w.active.segment().id();
        let durable = self.config.durable_receipts();
        let offset = if durable {
            w.active
                .append_buffered(frame_len, |buf| rec.write_frame(buf))?
        } else {
            w.active.append(frame_len, |buf| rec.write_frame(buf))?
        };

        let mut index = RwLockUpgradableReadGuard::upgrade(index);
        let inserted = index.insert(&NewRecord {
            event_id: rec.event_id,
            correlation_id: rec.correlation_id,
            causation_id: rec.causation_id,
            entity,
            scope: rec.scope,
            kind: draft.kind,
            timestamp_us,
            hlc_counter,
            clock,
            event_hash: rec.event_hash,
            global_seq: rec.global_seq,
            segment_id,
            offset,
            length: frame_len as u32,
        });
        let slot = match inserted {
            Ok(slot) => slot,
            Err(e) => {
                // The frame is in the log but not in the index: stop writing
                // rather than let the two disagree. Reopening rebuilds both.
                self.durability
                    .poison(format!("index insert failed after write: {e}"));
                return Err(e);
            }
        };
        drop(index);
        let receipt = AppendReceipt {
            event_id: rec.event_id,
            sequence: rec.global_seq,
            disk_pos: crate::store::index::DiskPos {
                segment_id,
                offset,
                length: frame_len as u32,
            },
        };
        w.next_seq += 1;
        w.written = slot + 1;
        self.durability.note_written(w.written);
        if !durable {
            self.durability.publish(w.written);
            w.unsynced += 1;
            if w.unsynced >= self.config.sync.every_n_events {
                w.unsynced = 0;
                if let Some(f) = &self.flusher {
                    f.kick();
                }
            }
        }
        drop(w);
        drop(inflight);
        if durable {
            self.wait_visible(slot + 1)?;
        }
        Ok(receipt)
    }

    /// Seal the active segment and start the next one. Everything written so
    /// far is durable afterwards (rotation syncs the old segment).
    fn rotate(
        &self,
        w: &mut Writer,
        frame_len: u64,
        written: u32,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let next_id = w.active.segment().id() + 1;
        if next_id > u64::from(u32::MAX) {
            return Err(StoreError::CapacityExhausted(format!(
                "segment id {next_id}"
            )));
        }
        let new = self
            .log
            .rotate(&mut w.active, frame_len, now_us)
            .inspect_err(|e| {
                tracing::warn!(error = %e, "segment rotation failed");
            })?;
        w.active = new;
        self.durability
            .mark_synced(written, self.config.durable_receipts());
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
        self.durability
            .wait_durable(target, self.config.durable_receipts(), |already| {
                // The group's frames go to the file in one write under the
                // writer lock (so a rotation's sync always covers them); the
                // fsync itself runs without it.
                let (segment, written) = {
                    let mut w = writer.lock();
                    w.active.flush_pending()?;
                    (w.active.segment().clone(), w.written)
                };
                segment.sync(self.log.sync_mode())?;
                Ok(if max_batch == 0 {
                    written
                } else {
                    written.min(already.saturating_add(max_batch))
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
