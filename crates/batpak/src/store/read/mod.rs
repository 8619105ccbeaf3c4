//! The read path: `get`, `walk_ancestors` and the index-backed queries.
//!
//! Readers see only visible slots (durable ones in durable mode), and never
//! read a frame while holding the index lock: appends need that lock's
//! write side, so anything slow under it stalls every writer. Under the
//! lock a reader picks slots, builds their entries from memory, and pins
//! each frame's segment (an `Arc<Segment>`: compaction moves events and
//! replaces segment files under the index write lock, so a position means
//! something only under the lock, but a pinned segment stays mapped with
//! the bytes the position named, even after its file was replaced). The
//! frames (hash chains, payloads) are read after the lock is released.
//!
//! Large reads go in steps of at most [`STEP`] slots, taking the lock anew
//! for each; if a compaction changed the index between two steps, the read
//! starts again, so a result is always one consistent view. This module
//! never writes.

use crate::coordinate::{Coordinate, DagPosition, Region};
use crate::event::{Event, EventHeader, EventKind, HashChain, StoredEvent};
use crate::store::fault::InjectionPoint;
use crate::store::format::frame::decode_frame;
use crate::store::format::payload::decode_value;
use crate::store::format::record::{chain_in_frame, decode_event, EventRecord};
use crate::store::format::FormatError;
use crate::store::index::{DiskPos, Index, IndexEntry, SlotQuery};
use crate::store::log::{FrameBytes, Segment};
use crate::store::{Shared, StoreError};
use std::sync::Arc;

/// Most slots one step of a read examines, and so most entries it builds,
/// under one hold of the index read lock: bounds how long an append can
/// wait behind a reader: tens of microseconds (35–50 µs on average in an
/// instrumented run of `benches/read_stall.rs` on a 2-core VM).
pub(crate) const STEP: u32 = 1024;

/// Stepped reads that saw a compaction between two steps and start again;
/// after this many, the read takes the lock once for the whole selection.
const STEPPED_ATTEMPTS: usize = 2;

/// An event's frame, resolved under the index lock (see [`Shared::locate`]).
pub(crate) struct Located {
    frame: FrameBytes,
    pos: DiskPos,
    coord: Coordinate,
}

/// Entries built under the index lock whose hash chains are still to be
/// read from their frames: each run of entries in one segment holds that
/// segment, resolved while their positions were meaningful.
pub(crate) struct Unchained {
    /// (first entry of the run, segment id, the segment if the log has it).
    runs: Vec<(usize, u64, Option<Arc<Segment>>)>,
}

impl Unchained {
    /// Read the hash chains, without any lock. `entries` is the vector the
    /// entries were pushed to by [`Shared::pin_entries`].
    pub(crate) fn read_chains(self, entries: &mut [IndexEntry]) {
        let end = entries.len();
        for (i, (start, segment_id, seg)) in self.runs.iter().enumerate() {
            let stop = self.runs.get(i + 1).map_or(end, |r| r.0);
            let Some(run) = entries.get_mut(*start..stop) else {
                continue;
            };
            for e in run {
                let pos = e.disk_pos;
                let chain = seg.as_ref().and_then(|seg| {
                    let len = u64::from(pos.length);
                    seg.check_range(pos.offset, len).ok()?;
                    chain_in_frame(seg.slice(pos.offset, len))
                });
                match chain {
                    Some((prev_hash, event_hash)) => {
                        e.hash_chain = HashChain {
                            prev_hash,
                            event_hash,
                        }
                    }
                    None => tracing::warn!(
                        segment_id,
                        ?pos,
                        "index entry's frame is unreadable; hash chain left empty"
                    ),
                }
            }
        }
    }
}

/// Where a read takes its slots from, one step at a time.
enum Selection<'r> {
    /// A region's matches in `next..end`, a window of [`STEP`] slots per step.
    Region {
        region: &'r Region,
        next: u32,
        end: u32,
    },
    /// A list picked in the first step (cheap to copy), [`STEP`] per step.
    Slots { slots: Vec<u32>, next: usize },
}

impl Selection<'_> {
    /// Append the next step's slots to `out`; `false` when none are left.
    fn step(&mut self, index: &Index, out: &mut Vec<u32>) -> bool {
        match self {
            Selection::Region { region, next, end } => {
                let to = (*end).min(next.saturating_add(STEP));
                SlotQuery::range(index, region, *next, to).collect_into(out);
                *next = to;
                *next < *end
            }
            Selection::Slots { slots, next } => {
                let to = slots.len().min(*next + STEP as usize);
                out.extend_from_slice(&slots[*next..to]);
                *next = to;
                *next < slots.len()
            }
        }
    }
}

impl Shared {
    /// A reader released the index lock and is about to read frames (where
    /// tests hold readers; see [`InjectionPoint::ReadingFrames`]).
    pub(crate) fn reading_frames(&self) {
        // A read has no error to return: only a panic or a crash acts.
        let _ = self.fault(InjectionPoint::ReadingFrames);
    }

    /// Under the index lock: push the entries of `slots` to `entries` and
    /// pin their frames' segments. Call [`Unchained::read_chains`] on the
    /// same vector once the lock is released.
    pub(crate) fn pin_entries(
        &self,
        index: &Index,
        slots: &[u32],
        entries: &mut Vec<IndexEntry>,
    ) -> Unchained {
        let mut runs: Vec<(usize, u64, Option<Arc<Segment>>)> = Vec::new();
        entries.reserve(slots.len());
        for &slot in slots {
            let e = index.entry(slot);
            let id = e.disk_pos.segment_id;
            if runs.last().is_none_or(|r| r.1 != id) {
                runs.push((entries.len(), id, self.log.segment(id)));
            }
            entries.push(e);
        }
        Unchained { runs }
    }

    /// The entries of the slots `select` picks (given the index and the
    /// visible watermark), with their hash chains, read in steps so the
    /// index lock is never held for long (see the module docs).
    fn read_entries<'r>(&self, select: impl Fn(&Index, u32) -> Selection<'r>) -> Vec<IndexEntry> {
        let mut entries = Vec::new();
        // One step's slots and entries. Reused, so after the first step
        // nothing is allocated or first touched (a fresh page faults) under
        // the lock: the result grows, and is copied into, after it.
        let mut slots = Vec::with_capacity(STEP as usize);
        let mut step = Vec::new();
        for _ in 0..STEPPED_ATTEMPTS {
            entries.clear();
            let mut state: Option<(Selection<'r>, u64)> = None;
            loop {
                let index = self.index.read();
                let (selection, compactions) = match &mut state {
                    Some(s) => s,
                    None => state.insert((
                        select(&index, self.durability.visible()),
                        index.compactions(),
                    )),
                };
                if index.compactions() != *compactions {
                    break;
                }
                slots.clear();
                let more = selection.step(&index, &mut slots);
                let unchained = self.pin_entries(&index, &slots, &mut step);
                drop(index);
                self.reading_frames();
                unchained.read_chains(&mut step);
                if entries.is_empty() && !more {
                    return step;
                }
                entries.append(&mut step);
                if !more {
                    return entries;
                }
            }
        }
        // Compactions kept changing the index between steps: select and pin
        // everything under one hold (the frames are still read after it).
        entries.clear();
        slots.clear();
        let unchained = {
            let index = self.index.read();
            let mut selection = select(&index, self.durability.visible());
            while selection.step(&index, &mut slots) {}
            self.pin_entries(&index, &slots, &mut entries)
        };
        self.reading_frames();
        unchained.read_chains(&mut entries);
        entries
    }

    /// The frame of `slot`. Called with the index lock held: compaction
    /// moves events and swaps segment files under the index write lock, so
    /// a position is only meaningful until the lock is released, while the
    /// returned bytes stay valid (they keep their segment mapped).
    pub(crate) fn locate(&self, index: &Index, slot: u32) -> Result<Located, StoreError> {
        let pos = index.disk_pos(slot);
        Ok(Located {
            frame: self.log.read(pos.segment_id, pos.offset, pos.length)?,
            pos,
            coord: index.coordinate(slot),
        })
    }

    /// Check a located frame and turn it into a stored event.
    pub(crate) fn read_event(
        &self,
        located: Located,
    ) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        let Located { frame, pos, coord } = located;
        let rec = decode_at(frame.bytes(), pos)?;
        stored_event(&rec, coord).map_err(|e| match e {
            StoreError::Serialization(inner) => StoreError::corrupt(
                pos.segment_id,
                format!("payload at offset {}: {inner}", pos.offset),
            ),
            other => other,
        })
    }

    pub(crate) fn get(&self, event_id: u128) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        let located = {
            let index = self.index.read();
            let slot = index
                .slot_of(event_id)
                .filter(|&s| s < self.durability.visible())
                .ok_or(StoreError::NotFound(event_id))?;
            self.locate(&index, slot)?
        };
        self.reading_frames();
        let pos = located.pos;
        let ev = self.read_event(located)?;
        if ev.event.header.event_id != event_id {
            return Err(StoreError::corrupt(
                pos.segment_id,
                format!("frame at offset {} holds another event", pos.offset),
            ));
        }
        Ok(ev)
    }

    pub(crate) fn query(&self, region: &Region) -> Vec<IndexEntry> {
        self.read_entries(|_, visible| Selection::Region {
            region,
            next: 0,
            end: visible,
        })
    }

    pub(crate) fn stream(&self, entity: &str) -> Vec<IndexEntry> {
        self.read_entries(|index, visible| {
            let slots = index.entity_slots(entity);
            let n = slots.partition_point(|&s| s < visible);
            Selection::Slots {
                slots: slots[..n].to_vec(),
                next: 0,
            }
        })
    }

    pub(crate) fn by_correlation(&self, correlation_id: u128) -> Vec<IndexEntry> {
        self.read_entries(|index, visible| {
            let mut slots = index.correlation_slots(correlation_id);
            slots.retain(|&s| s < visible);
            Selection::Slots { slots, next: 0 }
        })
    }

    pub(crate) fn children(&self, event_id: u128) -> Vec<IndexEntry> {
        self.read_entries(|index, visible| {
            let slots = index.causation_slots(event_id);
            let n = slots.partition_point(|&s| s < visible);
            Selection::Slots {
                slots: slots[..n].to_vec(),
                next: 0,
            }
        })
    }

    /// The entry of the event `event_id`, visible or not (the write path's
    /// own just-written events), with its hash chain.
    pub(crate) fn entry_of(&self, event_id: u128) -> Option<IndexEntry> {
        self.read_entries(|index, _| Selection::Slots {
            slots: index.slot_of(event_id).into_iter().collect(),
            next: 0,
        })
        .pop()
    }

    /// The event, then its predecessors in its entity's chain, newest first:
    /// the index's clock order, each step checked against the `prev_hash`
    /// link under blake3. The walk stops at a predecessor whose hash does
    /// not match the link (it was removed) or that cannot be read.
    pub(crate) fn walk_ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Vec<StoredEvent<serde_json::Value>> {
        let mut out: Vec<StoredEvent<serde_json::Value>> = Vec::new();
        let visible = self.durability.visible();
        let locate = |index: &Index, s: u32| self.locate(index, s).map(|l| (s, l));
        let mut next = {
            let index = self.index.read();
            index
                .slot_of(event_id)
                .filter(|&s| s < visible)
                .map(|s| locate(&index, s))
        };
        if limit == 0 {
            return out;
        }
        while let Some(found) = next.take() {
            self.reading_frames();
            let (slot, ev) = match found.and_then(|(slot, l)| Ok((slot, self.read_event(l)?))) {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(error = %e.display_chain(), "walk_ancestors stopped at an unreadable event");
                    break;
                }
            };
            if let Some(newer) = out.last() {
                let link = newer.event.hash_chain.map_or([0; 32], |c| c.prev_hash);
                let hash = ev.event.hash_chain.map_or([0; 32], |c| c.event_hash);
                if cfg!(feature = "blake3") && link != hash {
                    break;
                }
            }
            let is_first = cfg!(feature = "blake3")
                && ev.event.hash_chain.is_some_and(|c| c.prev_hash == [0; 32]);
            out.push(ev);
            if is_first || out.len() >= limit {
                break;
            }
            let index = self.index.read();
            next = index.predecessor(slot).map(|p| locate(&index, p));
        }
        out
    }
}

/// Decode the event frame in `bytes` (exactly one frame) at `pos`.
pub(crate) fn decode_at(bytes: &[u8], pos: DiskPos) -> Result<EventRecord<'_>, StoreError> {
    let (body, _) = decode_frame(bytes).map_err(|e| match e {
        FormatError::Checksum(_) => StoreError::CrcMismatch {
            segment_id: pos.segment_id,
            offset: pos.offset,
        },
        other => StoreError::corrupt(
            pos.segment_id,
            format!("frame at offset {}: {other}", pos.offset),
        ),
    })?;
    decode_event(body).map_err(|e| {
        StoreError::corrupt(
            pos.segment_id,
            format!("record at offset {}: {e}", pos.offset),
        )
    })
}

/// Turn a decoded record into the public event type.
pub(crate) fn stored_event(
    rec: &EventRecord<'_>,
    coord: Coordinate,
) -> Result<StoredEvent<serde_json::Value>, StoreError> {
    // A redacted event keeps its original kind and content hash on disk (for
    // the chain); readers see a tombstone with no payload.
    let payload = if rec.redacted {
        serde_json::Value::Null
    } else {
        decode_value(rec.payload)?
    };
    let wall_ms = u64::try_from(rec.timestamp_us).unwrap_or(0) / 1000;
    let header = EventHeader {
        event_id: rec.event_id,
        correlation_id: rec.correlation_id,
        causation_id: rec.causation_id,
        timestamp_us: rec.timestamp_us,
        position: DagPosition::child_at(rec.clock, wall_ms, rec.hlc_counter),
        payload_size: rec.payload.len() as u32,
        event_kind: EventKind::from_raw(rec.visible_kind()),
        flags: rec.flags,
        content_hash: rec.content_hash,
    };
    Ok(StoredEvent {
        coordinate: coord,
        event: Event::new(header, payload).with_hash_chain(HashChain {
            prev_hash: rec.prev_hash,
            event_hash: rec.event_hash,
        }),
    })
}
