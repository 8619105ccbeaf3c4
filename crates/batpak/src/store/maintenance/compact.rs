//! Compaction (SPEC §5.4): rewrite sealed segments, packing them into fewer
//! files and removing (`Retention`) or redacting (`Tombstone`) the events a
//! predicate rejects, while appends continue in the active segment.
//!
//! The protocol that makes it crash-atomic is in `format::intent`; the file
//! mechanics are in `log::rewrite`. This module decides which segments are
//! rewritten and what happens to each frame, streams the survivors into the
//! new segments, and finally swaps the new segments and positions in under
//! the index write lock (the only moment readers wait). It never touches the
//! active segment.
//!
//! Packing (ADR 0016): outputs hold up to a target of event-frame bytes
//! ([`StoreConfig::compaction_target_bytes`](crate::store::StoreConfig::compaction_target_bytes)) and are cut only between
//! input segments. `Merge` rewrites only runs of adjacent sealed segments
//! that fit one output together; a segment that fits with neither
//! neighbour is left alone, so a second `Merge` does nothing. `Retention`
//! and `Tombstone` must apply their predicate to every sealed segment, so
//! they rewrite all of them, packing the survivors the same way. Each output
//! takes the id of the last input it packs, so segment ids stay in the order
//! of the events in them, and the newest sealed segment keeps its id (what a
//! read-only handle following the owner was reading).
//!
//! Survivors keep their event ids, global sequences, clocks and hashes, so
//! cursors, projection watermarks and hash chains stay valid. Removed events
//! are remembered in the removed-event record (their idempotency keys keep
//! answering, their sequences are never reused, and their entity's next
//! append still chains onto them).

use super::seal::FooterBuilder;
use super::Maintainer;
use crate::event::StoredEvent;
use crate::store::config::StoreConfig;
use crate::store::format::footer;
use crate::store::format::intent::{Intent, REMOVED_NEXT_FILE};
use crate::store::format::record::EventRecord;
use crate::store::format::removed::{self, RemovedEntry};
use crate::store::format::scan::{End, FrameScan, Scanned};
use crate::store::format::segment::{segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::store::index::{DiskPos, Fate};
use crate::store::log::rewrite::{self, SegmentWriter};
use crate::store::log::{InjectionPoint, Segment, SegmentIo};
use crate::store::read::stored_event;
use crate::store::recovery::load_removed;
use crate::store::{StoreError, MAX_SEGMENT_BYTES};
use std::sync::Arc;

/// Decides whether an event survives: `true` keeps it.
pub type RetentionPredicate = Box<dyn Fn(&StoredEvent<serde_json::Value>) -> bool + Send>;

/// What a compaction does besides merging.
#[non_exhaustive]
pub enum CompactionStrategy {
    /// Merge sealed segments; every event survives unchanged.
    Merge,
    /// Remove the events the predicate rejects (returns `false` for). Their
    /// ids and sequences stay reserved; the entity's chain continues.
    Retention(RetentionPredicate),
    /// Redact the events the predicate rejects: readers see kind
    /// `TOMBSTONE` and a null payload; the original kind, payload size and
    /// content hash stay in the (hashed) record, so the chain still verifies.
    Tombstone(RetentionPredicate),
}

impl std::fmt::Debug for CompactionStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CompactionStrategy::Merge => "Merge",
            CompactionStrategy::Retention(_) => "Retention(..)",
            CompactionStrategy::Tombstone(_) => "Tombstone(..)",
        })
    }
}

/// Settings of [`Store::compact`](crate::store::Store::compact).
#[derive(Debug)]
pub struct CompactionConfig {
    /// What happens to the events.
    pub strategy: CompactionStrategy,
    /// Compact only when at least this many sealed segments exist (default 2).
    pub min_segments: usize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            strategy: CompactionStrategy::Merge,
            min_segments: 2,
        }
    }
}

/// How many segments of `segment_max_bytes` the default target packs.
const DEFAULT_PACKING: u64 = 16;
/// Largest default target: a compacted segment's rewrite (by a later
/// `Retention`) and its memory map stay moderate.
const DEFAULT_TARGET_CAP: u64 = 1 << 30;

/// The event-frame bytes one output may hold (`StoreConfig::compaction_target_bytes`,
/// validated at open, or the default for segments of `segment_max_bytes`).
fn target(config: &StoreConfig) -> u64 {
    config.compaction_target_bytes.unwrap_or_else(|| {
        config
            .segment_max_bytes
            .saturating_mul(DEFAULT_PACKING)
            .min(DEFAULT_TARGET_CAP)
            .max(config.segment_max_bytes)
    })
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionResult {
    /// Segment files fewer than before.
    pub segments_removed: usize,
    /// Bytes of segment files freed, net of the files written.
    pub bytes_reclaimed: u64,
    /// Events removed (`Retention`).
    pub events_removed: u64,
    /// Events redacted (`Tombstone`) by this compaction.
    pub events_tombstoned: u64,
}

/// What happens to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Keep,
    Redact,
    Remove,
}

/// An indexed event of the inputs, on its way out.
struct Item<'a> {
    slot: u32,
    rec: EventRecord<'a>,
    frame: &'a [u8],
    action: Action,
}

/// Frames decided per index lookup (one read lock per chunk).
const LOOKUP_CHUNK: usize = 1024;

pub(crate) fn compact(
    maint: &Maintainer<'_>,
    config: &CompactionConfig,
) -> Result<CompactionResult, StoreError> {
    let writer = maint.writer.as_ref().ok_or(StoreError::ReadOnly)?;
    let target = target(maint.config);
    maint.durability.check()?;
    let _maintenance = maint.lock.lock();
    // Under the writer lock no append is half-done: every frame of a sealed
    // segment is now either indexed or the remains of a failed append.
    let active_id = writer.lock().active.segment().id();
    let runs = choose(maint, active_id, config, target);
    if runs.is_empty() {
        return Ok(CompactionResult::default());
    }
    let rewritten = rewrite_runs(maint, config, target, &runs)?;
    let before = bytes_on_disk(maint, &rewritten.inputs);
    let prepared = prepare(maint, rewritten)?;
    commit(maint, &prepared.intent)?;
    let new_segments = install(maint, &prepared.intent)?;
    swap_in(maint, &prepared, new_segments)?;
    Ok(CompactionResult {
        segments_removed: prepared.intent.deleted.len(),
        bytes_reclaimed: before.saturating_sub(prepared.output_bytes),
        events_removed: prepared.events_removed,
        events_tombstoned: prepared.tombstoned,
    })
}

/// The runs of sealed segments (below `active_id`) to rewrite, or none
/// when fewer than `config.min_segments` are sealed.
fn choose(
    maint: &Maintainer<'_>,
    active_id: u64,
    config: &CompactionConfig,
    target: u64,
) -> Vec<Vec<Arc<Segment>>> {
    let sealed: Vec<Arc<Segment>> = maint
        .log
        .segment_ids()
        .into_iter()
        .filter(|&id| id < active_id)
        .filter_map(|id| maint.log.segment(id))
        .collect();
    if sealed.is_empty() || sealed.len() < config.min_segments {
        return Vec::new();
    }
    plan(&sealed, &config.strategy, target)
}

/// What writing the outputs produced.
struct Rewritten {
    /// Every input rewritten, in order.
    inputs: Vec<Arc<Segment>>,
    /// Finished outputs: (id, file length), ids ascending.
    outputs: Vec<(u64, u64)>,
    fates: Vec<(u32, Fate)>,
    removed: Vec<RemovedEntry>,
    tombstoned: u64,
}

/// Write the outputs of every run under temporary names (deleted again if
/// anything fails).
fn rewrite_runs(
    maint: &Maintainer<'_>,
    config: &CompactionConfig,
    target: u64,
    runs: &[Vec<Arc<Segment>>],
) -> Result<Rewritten, StoreError> {
    let mut run = Run {
        maint,
        config,
        target,
        inputs: Vec::new(),
        outputs: Vec::new(),
        current: None,
        last_input: 0,
        footer: FooterBuilder::default(),
        fates: Vec::new(),
        removed: Vec::new(),
        tombstoned: 0,
        batch: Vec::new(),
        scratch: Vec::new(),
        created_us: 0,
    };
    if let Err(e) = runs.iter().try_for_each(|r| run.rewrite(r)) {
        run.abandon();
        return Err(e);
    }
    Ok(Rewritten {
        inputs: run.inputs,
        outputs: run.outputs,
        fates: run.fates,
        removed: run.removed,
        tombstoned: run.tombstoned,
    })
}

/// The inputs' lengths on disk (a footer the sealer appended after the
/// segment was mapped is not in its mapping's length).
fn bytes_on_disk(maint: &Maintainer<'_>, inputs: &[Arc<Segment>]) -> u64 {
    let dir = maint.log.dir();
    inputs
        .iter()
        .map(|s| {
            std::fs::metadata(dir.join(segment_file_name(s.id()))).map_or(s.file_len(), |m| m.len())
        })
        .sum()
}

/// A compaction ready to commit.
struct Prepared {
    intent: Intent,
    fates: Vec<(u32, Fate)>,
    /// The history epoch once it is installed.
    epoch: u64,
    output_bytes: u64,
    events_removed: u64,
    tombstoned: u64,
}

/// Write the next removed-event record (if events are removed or
/// redacted) and decide the intent. A failure deletes the temporaries.
fn prepare(maint: &Maintainer<'_>, rewritten: Rewritten) -> Result<Prepared, StoreError> {
    let io = maint.log.io();
    let dir = maint.log.dir();
    let Rewritten {
        inputs,
        outputs,
        fates,
        removed,
        tombstoned,
    } = rewritten;
    let events_removed = removed.len() as u64;
    let rewrites_history = events_removed > 0 || tombstoned > 0;
    let epoch = maint.history_epoch() + u64::from(rewrites_history);
    let written = (|| {
        if rewrites_history {
            let mut record = load_removed(io, dir, true, false)?;
            record.epoch = epoch;
            record.entries.extend(removed);
            rewrite::write_synced(io, dir, REMOVED_NEXT_FILE, &removed::encode(&record))?;
        }
        io.at(InjectionPoint::CompactionPrepared)
    })();
    if let Err(e) = written {
        let _ = rewrite::discard_temporaries(io, dir);
        return Err(e);
    }
    // Each output took the id of one of its inputs; the other inputs go.
    let output_ids: Vec<u64> = outputs.iter().map(|o| o.0).collect();
    let intent = Intent {
        removed_record: rewrites_history,
        deleted: inputs
            .iter()
            .map(|s| s.id())
            .filter(|id| output_ids.binary_search(id).is_err())
            .collect(),
        outputs: output_ids,
    };
    Ok(Prepared {
        intent,
        fates,
        epoch,
        output_bytes: outputs.iter().map(|o| o.1).sum(),
        events_removed,
        tombstoned,
    })
}

/// The commit point: the intent made durable.
fn commit(maint: &Maintainer<'_>, intent: &Intent) -> Result<(), StoreError> {
    let committed = rewrite::commit(maint.log.io(), maint.log.dir(), intent);
    if let Err(e) = &committed {
        // Whether the intent reached the disk is unknown: open decides (it
        // finishes the compaction if the file is there, else discards it).
        maint
            .durability
            .poison(format!("compaction commit failed: {}", e.display_chain()));
    }
    committed
}

/// Rename the new files into place and delete the old, then map the
/// outputs. Committed: a failure leaves the directory to be finished by
/// the next open, while this process still serves the old segments.
fn install(maint: &Maintainer<'_>, intent: &Intent) -> Result<Vec<Arc<Segment>>, StoreError> {
    let io = maint.log.io();
    let installed = io
        .at(InjectionPoint::CompactionCommitted)
        .and_then(|()| {
            rewrite::install(
                io,
                maint.log.dir(),
                intent,
                Some(InjectionPoint::CompactionInstalling),
            )
        })
        .and_then(|()| {
            intent
                .outputs
                .iter()
                .map(|&id| maint.log.open_installed(id))
                .collect::<Result<Vec<_>, _>>()
        });
    installed.inspect_err(|e| {
        maint.durability.poison(format!(
            "compaction committed but not installed ({}); reopen the store to finish it",
            e.display_chain()
        ));
    })
}

/// Under the index write lock (the only moment readers and appends wait):
/// the moved events' new positions, the removed events' dead slots, the
/// new segments, the new history epoch.
fn swap_in(
    maint: &Maintainer<'_>,
    prepared: &Prepared,
    new_segments: Vec<Arc<Segment>>,
) -> Result<(), StoreError> {
    let mut index = maint.index.write();
    if let Err(e) = index.apply_compaction(&prepared.fates) {
        maint.durability.poison(format!(
            "compaction could not update the index: {}",
            e.display_chain()
        ));
        return Err(e);
    }
    // Published under the write lock, so readers holding the read lock
    // see the count that matches the index.
    maint
        .compactions
        .store(index.compactions(), std::sync::atomic::Ordering::Release);
    maint
        .log
        .replace_segments(new_segments, &prepared.intent.deleted);
    maint
        .epoch
        .store(prepared.epoch, std::sync::atomic::Ordering::Release);
    Ok(())
}

/// Bytes of event frames in `seg` (where its footer starts), or an upper
/// bound when it has no footer yet. Only plans the packing: nothing relies
/// on it being exact.
fn frame_bytes(seg: &Segment) -> u64 {
    let bytes = seg.bytes();
    let end = footer::content_end(bytes);
    let frames_end = footer::locate_before(bytes, end)
        .filter(|&at| at <= end as u64)
        .unwrap_or(end as u64);
    seg.release_pages();
    frames_end.saturating_sub(SEGMENT_HEADER_LEN as u64)
}

/// The runs of adjacent sealed segments to rewrite, in order. `Retention`
/// and `Tombstone` visit every sealed segment. `Merge` packs greedily:
/// adjacent segments join one group while their frames fit `target`
/// together, and a group of one has nothing to merge with, so it is left
/// alone. A merged group's frames are exactly its inputs' (less any remains
/// of failed appends), so each neighbour of a merged segment still does not
/// fit beside it: a second `Merge` finds only groups of one.
fn plan(
    sealed: &[Arc<Segment>],
    strategy: &CompactionStrategy,
    target: u64,
) -> Vec<Vec<Arc<Segment>>> {
    if !matches!(strategy, CompactionStrategy::Merge) {
        return vec![sealed.to_vec()];
    }
    let mut runs = Vec::new();
    let mut group: Vec<Arc<Segment>> = Vec::new();
    let mut group_bytes = 0u64;
    for seg in sealed {
        let bytes = frame_bytes(seg);
        if !group.is_empty() && group_bytes.saturating_add(bytes) > target {
            if group.len() > 1 {
                runs.push(std::mem::take(&mut group));
            }
            group.clear();
            group_bytes = 0;
        }
        group.push(seg.clone());
        group_bytes = group_bytes.saturating_add(bytes);
    }
    if group.len() > 1 {
        runs.push(group);
    }
    runs
}

/// One compaction's state while it writes.
struct Run<'s, 'a> {
    maint: &'s Maintainer<'s>,
    config: &'s CompactionConfig,
    /// Event-frame bytes an output may hold before it is cut.
    target: u64,
    /// Every input rewritten so far, in order.
    inputs: Vec<Arc<Segment>>,
    /// Finished outputs: (id, file length), ids ascending.
    outputs: Vec<(u64, u64)>,
    current: Option<Output>,
    /// Id of the input being read (or last read).
    last_input: u64,
    footer: FooterBuilder<'a>,
    fates: Vec<(u32, Fate)>,
    removed: Vec<RemovedEntry>,
    tombstoned: u64,
    /// Members of a batch seen so far (a batch is decided whole).
    batch: Vec<Item<'a>>,
    scratch: Vec<u8>,
    /// Creation time of the input being read.
    created_us: i64,
}

/// The output being written.
struct Output {
    writer: SegmentWriter,
    /// Where its events' fates start in `Run::fates` (their positions get
    /// the output's id when it is finished).
    first_fate: usize,
}

impl<'a> Run<'_, 'a> {
    /// Rewrite one run of adjacent sealed segments. Outputs are cut only
    /// between inputs, before an input whose frames would take the current
    /// output past the target, and each is named after the last input read
    /// into it: so outputs take distinct input ids, in order.
    fn rewrite(&mut self, run: &'a [Arc<Segment>]) -> Result<(), StoreError> {
        for seg in run {
            if let Some(out) = &self.current {
                let frames = out.writer.len() - SEGMENT_HEADER_LEN as u64;
                if frames.saturating_add(frame_bytes(seg)) > self.target {
                    self.finish_output()?;
                }
            }
            self.inputs.push(seg.clone());
            self.last_input = seg.id();
            self.read_input(seg)?;
        }
        // A batch still open continues after this run (in a segment left
        // alone, or the active one, which is not compacted): its members
        // keep their batch marks, so none may go.
        self.flush_batch(true)?;
        self.finish_output()
    }

    /// Decide and write every indexed event of `seg`.
    fn read_input(&mut self, seg: &'a Arc<Segment>) -> Result<(), StoreError> {
        // An output keeps the creation time of the input it starts in.
        self.created_us = SegmentHeader::decode(seg.bytes())
            .map_or_else(|_| self.maint.config.now_us(), |h| h.created_us);
        let mut chunk: Vec<(u64, &'a [u8], EventRecord<'a>)> = Vec::with_capacity(LOOKUP_CHUNK);
        let bytes: &'a [u8] = seg.bytes();
        // Only indexed events are rewritten (`decide`); what recovery never
        // served (damage, undecodable frames) is dropped. The footer is
        // rewritten anyway.
        for item in FrameScan::new(bytes, SEGMENT_HEADER_LEN) {
            match item {
                Scanned::Event {
                    at,
                    len,
                    record: Ok(rec),
                } => {
                    chunk.push((at as u64, &bytes[at..at + len], rec));
                    if chunk.len() == LOOKUP_CHUNK {
                        self.decide(seg.id(), &mut chunk)?;
                    }
                }
                Scanned::Event {
                    at, record: Err(e), ..
                } => tracing::warn!(
                    segment_id = seg.id(),
                    offset = at,
                    error = %e,
                    "batpak: compaction drops an undecodable frame"
                ),
                Scanned::Damaged { at, error, .. }
                | Scanned::End {
                    at,
                    how: End::TornTail(error) | End::Unsettled(error),
                } => tracing::warn!(
                    segment_id = seg.id(),
                    offset = at,
                    error = %error,
                    "batpak: compaction drops a damaged region (recovery never served it)"
                ),
                Scanned::Footer { .. } | Scanned::End { .. } => break,
            }
        }
        self.decide(seg.id(), &mut chunk)?;
        seg.release_pages();
        Ok(())
    }

    /// Look `chunk` up in the index, decide each event's fate and write it.
    fn decide(
        &mut self,
        segment_id: u64,
        chunk: &mut Vec<(u64, &'a [u8], EventRecord<'a>)>,
    ) -> Result<(), StoreError> {
        let predicate = match &self.config.strategy {
            super::CompactionStrategy::Merge => None,
            super::CompactionStrategy::Retention(p) | super::CompactionStrategy::Tombstone(p) => {
                Some(p)
            }
        };
        let mut looked_up = Vec::with_capacity(chunk.len());
        {
            let index = self.maint.index.read();
            for (offset, _, rec) in chunk.iter() {
                // The frame must be the indexed copy of its event: remains of
                // a failed append (possibly sharing an id with its retry) are not.
                let slot = index.slot_of(rec.event_id).filter(|&s| {
                    let p = index.disk_pos(s);
                    p.segment_id == segment_id && p.offset == *offset
                });
                let coord = match (slot, predicate) {
                    (Some(s), Some(_)) => Some(index.coordinate(s)),
                    _ => None,
                };
                looked_up.push((slot, coord));
            }
        }
        for ((_, frame, rec), (slot, coord)) in chunk.drain(..).zip(looked_up) {
            let Some(slot) = slot else {
                continue;
            };
            let keep = match (predicate, coord) {
                (Some(p), Some(coord)) => p(&stored_event(&rec, coord)?),
                _ => true,
            };
            let action = match (&self.config.strategy, keep) {
                (_, true) => Action::Keep,
                (super::CompactionStrategy::Tombstone(_), false) if rec.redacted => Action::Keep,
                (super::CompactionStrategy::Tombstone(_), false) => Action::Redact,
                (_, false) => Action::Remove,
            };
            let item = Item {
                slot,
                rec,
                frame,
                action,
            };
            if item.rec.batch_size == 0 {
                self.flush_batch(true)?;
                self.emit(item, false)?;
                continue;
            }
            if item.rec.batch_index == 0 {
                self.flush_batch(true)?;
            }
            let last = item.rec.batch_index + 1 == item.rec.batch_size;
            self.batch.push(item);
            if last {
                self.flush_batch(false)?;
            }
        }
        Ok(())
    }

    /// Write the pending batch. A whole batch whose members were removed is
    /// renumbered to its survivors; an unfinished one (`open`) keeps its marks,
    /// so its removals become redactions.
    fn flush_batch(&mut self, open: bool) -> Result<(), StoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut members = std::mem::take(&mut self.batch);
        if open {
            for m in &mut members {
                if m.action == Action::Remove {
                    m.action = Action::Redact;
                }
            }
        }
        let survivors = members
            .iter()
            .filter(|m| m.action != Action::Remove)
            .count() as u32;
        let renumber = !open && survivors != members.len() as u32;
        let mut index = 0;
        for mut m in members {
            if renumber && m.action != Action::Remove {
                m.rec.batch_size = survivors;
                m.rec.batch_index = index;
                index += 1;
            }
            self.emit(m, renumber)?;
        }
        Ok(())
    }

    /// Write one event to the current output (or record its removal).
    fn emit(&mut self, item: Item<'a>, reencode: bool) -> Result<(), StoreError> {
        let Item {
            slot,
            mut rec,
            frame,
            action,
        } = item;
        if action == Action::Remove {
            self.removed.push(RemovedEntry {
                event_id: rec.event_id,
                global_seq: rec.global_seq,
                kind: rec.kind,
                clock: rec.clock,
                timestamp_us: rec.timestamp_us,
                event_hash: rec.event_hash,
                entity: rec.entity.to_owned(),
                scope: rec.scope.to_owned(),
            });
            self.fates.push((
                slot,
                Fate::Removed {
                    kind: crate::event::EventKind::from_raw(rec.kind),
                },
            ));
            return Ok(());
        }
        let redact = action == Action::Redact;
        if redact {
            rec.redacted = true;
            rec.payload = &[];
            self.tombstoned += 1;
        }
        let encoded = redact || reencode;
        if encoded {
            self.scratch.clear();
            self.scratch.resize(rec.frame_len(), 0);
            rec.write_frame(&mut self.scratch);
        }
        let len = if encoded {
            self.scratch.len()
        } else {
            frame.len()
        } as u64;
        self.make_room(len)?;
        let out = self
            .current
            .as_mut()
            .ok_or_else(|| StoreError::internal("compaction has no output to write to"))?;
        let offset = out
            .writer
            .write(if encoded { &self.scratch } else { frame })?;
        self.footer.push(offset, len as usize, &rec);
        self.fates.push((
            slot,
            Fate::Moved {
                // The output's id is settled when it is finished.
                pos: DiskPos {
                    segment_id: 0,
                    offset,
                    length: len as u32,
                },
                redacted: redact,
            },
        ));
        Ok(())
    }

    /// Make sure there is an output that can take `len` more bytes (an
    /// output is only cut between inputs, in `rewrite`).
    fn make_room(&mut self, len: u64) -> Result<(), StoreError> {
        if let Some(out) = &self.current {
            if out.writer.len() + len > MAX_SEGMENT_BYTES {
                return Err(StoreError::CapacityExhausted(format!(
                    "a compacted segment would exceed {MAX_SEGMENT_BYTES} bytes; lower compaction_target_bytes"
                )));
            }
            return Ok(());
        }
        self.current = Some(Output {
            writer: SegmentWriter::create(
                self.maint.log.io(),
                self.maint.log.dir(),
                self.last_input,
                self.created_us,
            )?,
            first_fate: self.fates.len(),
        });
        Ok(())
    }

    /// Footer, sync, done: the output takes the id of the last input read
    /// into it.
    fn finish_output(&mut self) -> Result<(), StoreError> {
        let Some(mut out) = self.current.take() else {
            return Ok(());
        };
        let id = self.last_input;
        let footer = std::mem::take(&mut self.footer).encode(id, out.writer.len());
        out.writer.write(&footer)?;
        let len = out.writer.finish_as(id)?;
        for (_, fate) in &mut self.fates[out.first_fate..] {
            if let Fate::Moved { pos, .. } = fate {
                pos.segment_id = id;
            }
        }
        self.outputs.push((id, len));
        self.maint
            .log
            .io()
            .at(InjectionPoint::CompactionSegmentWritten)
    }

    /// Delete everything written (the compaction failed before its commit).
    fn abandon(&mut self) {
        // Closed first (its buffer flushes on drop), then deleted with the rest.
        drop(self.current.take());
        if let Err(e) = rewrite::discard_temporaries(self.maint.log.io(), self.maint.log.dir()) {
            tracing::warn!(error = %e.display_chain(), "batpak: could not delete an abandoned compaction's files; the next open will");
        }
    }
}
