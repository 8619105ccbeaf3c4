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
//!
//! Everything here is a method of [`Reader`], the read layer's handle: the
//! log (to resolve positions to mapped frames), the index lock and the
//! visible watermark, and nothing else of the store. A reader cannot take
//! the writer lock, move the watermark, or reach maintenance: the type
//! does not hold them.

use crate::coordinate::{Coordinate, DagPosition, Region};
use crate::event::{Event, EventHeader, EventKind, HashChain, StoredEvent};
use crate::store::format::frame::decode_frame;
use crate::store::format::payload::decode_value_into;
use crate::store::format::record::{chain_in_frame, decode_event_checked, CoordCheck, EventRecord};
use crate::store::format::FormatError;
use crate::store::index::{DiskPos, Index, IndexEntry, SlotQuery};
use crate::store::log::{FrameBytes, InjectionPoint, Log, Segment, SegmentIo, SegmentsView};
use crate::store::write::durability::Visibility;
use crate::store::StoreError;
use parking_lot::{RwLock, RwLockReadGuard};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Most slots one step of a read examines, and so most entries it builds,
/// under one hold of the index read lock: bounds how long an append can
/// wait behind a reader: tens of microseconds (35–50 µs on average in an
/// instrumented run of `benches/read_stall.rs` on a 2-core VM).
pub(crate) const STEP: u32 = 1024;

/// Stepped reads that saw a compaction between two steps and start again;
/// after this many, the read takes the lock once for the whole selection.
const STEPPED_ATTEMPTS: usize = 2;

/// An event's frame, resolved under the index lock (see [`Reader::locate`]).
pub(crate) struct Located {
    pub(crate) frame: FrameBytes,
    pub(crate) pos: DiskPos,
    pub(crate) coord: Coordinate,
}

/// Entries built under the index lock whose hash chains are still to be
/// read from their frames: each run of entries in one segment holds that
/// segment, resolved while their positions were meaningful.
pub(crate) struct Unchained {
    /// (first entry of the run, segment id, the segment if the log has it).
    runs: Vec<(usize, u64, Option<Arc<Segment>>)>,
}

/// How many slots ahead [`Reader::pin_entries`] asks for the index records
/// it will read.
const RECORDS_AHEAD: usize = 8;

/// How many entries ahead [`Unchained::read_chains`] asks for the frames
/// it will read: enough misses in flight to hide most of the memory
/// latency of frames scattered through a segment, few enough that the
/// lines are still cached when they are read.
const PREFETCH_AHEAD: usize = 12;

impl Unchained {
    /// Read the hash chains, without any lock. `entries` are the entries
    /// [`Reader::pin_entries`] pushed, exactly.
    pub(crate) fn read_chains(self, entries: &mut [IndexEntry]) {
        let end = entries.len();
        for (i, (start, segment_id, seg)) in self.runs.iter().enumerate() {
            let stop = self.runs.get(i + 1).map_or(end, |r| r.0);
            let Some(run) = entries.get_mut(*start..stop) else {
                continue;
            };
            let Some(seg) = seg else {
                tracing::warn!(
                    segment_id,
                    "index entries name a segment the log does not hold; hash chains left empty"
                );
                continue;
            };
            for e in run.iter().take(PREFETCH_AHEAD) {
                seg.prefetch_chain(e.disk_pos.offset, e.disk_pos.length);
            }
            for j in 0..run.len() {
                if let Some(ahead) = run.get(j + PREFETCH_AHEAD) {
                    seg.prefetch_chain(ahead.disk_pos.offset, ahead.disk_pos.length);
                }
                let e = &mut run[j];
                let pos = e.disk_pos;
                let len = u64::from(pos.length);
                let chain = seg
                    .check_range(pos.offset, len)
                    .ok()
                    .and_then(|()| chain_in_frame(seg.slice(pos.offset, len)));
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
    /// A list picked in the first step.
    Slots { slots: Vec<u32> },
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
            // Picked whole under one hold: copying 4-byte slots is cheap
            // (the entries are built a step at a time).
            Selection::Slots { slots } => {
                if out.is_empty() {
                    std::mem::swap(out, slots);
                } else {
                    out.append(slots);
                }
                false
            }
        }
    }
}

/// The read layer's owned handle, for consumers that outlive one call
/// (cursors, reactor and watcher threads): the store's shared state behind
/// a field private to this module, so a holder gets a [`Reader`] and the
/// closed flag and cannot reach the writer, maintenance or the config.
#[derive(Clone)]
pub(crate) struct Follower {
    shared: Arc<crate::store::Shared>,
}

impl Follower {
    pub(crate) fn new(shared: Arc<crate::store::Shared>) -> Self {
        Self { shared }
    }

    /// A reader for one call.
    pub(crate) fn reader(&self) -> Reader<'_> {
        self.shared.reader()
    }

    /// Whether the store has started closing: waiting consumers end (the
    /// store's own reactors must end before `close` returns, and nothing
    /// new becomes visible from then on).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.is_closing()
    }
}

/// The read layer's handle (see the module docs): borrowed from the
/// store's shared state for one read.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'s> {
    log: &'s Log,
    index: &'s RwLock<Index>,
    visibility: Visibility<'s>,
    compactions: &'s AtomicU64,
}

impl<'s> Reader<'s> {
    pub(crate) fn new(
        log: &'s Log,
        index: &'s RwLock<Index>,
        visibility: Visibility<'s>,
        compactions: &'s AtomicU64,
    ) -> Self {
        Self {
            log,
            index,
            visibility,
            compactions,
        }
    }

    /// Compactions applied to the index so far (`Shared::compactions`;
    /// stable while the index read lock is held). What a reader keeps
    /// between calls, read before it changed, may name removed events or
    /// old kinds and positions.
    #[inline]
    pub(crate) fn compactions(&self) -> u64 {
        self.compactions.load(Ordering::Acquire)
    }

    /// The index, for reading: pick slots under it, hold it briefly, and
    /// never read frames while holding it (see the module docs).
    pub(crate) fn index(&self) -> RwLockReadGuard<'s, Index> {
        self.index.read()
    }

    /// Slots below this are visible.
    #[inline]
    pub(crate) fn visible(&self) -> u32 {
        self.visibility.visible()
    }

    /// Sleep until slots at or above `seen` become visible, or the store
    /// wakes its waiters; false when `deadline` passes or `stop` holds
    /// (see [`Durability::wait_for_visible`](crate::store::write::durability::Durability::wait_for_visible)).
    pub(crate) fn wait_for_visible(
        &self,
        seen: u32,
        deadline: Option<Instant>,
        stop: impl Fn() -> bool,
    ) -> bool {
        self.visibility.wait_for_visible(seen, deadline, stop)
    }

    /// A reader released the index lock and is about to read frames (where
    /// tests hold readers; see [`InjectionPoint::ReadingFrames`]).
    pub(crate) fn reading_frames(&self) {
        // A read has no error to return: only a panic or a crash acts.
        let _ = self.log.io().at(InjectionPoint::ReadingFrames);
    }

    /// Under the index lock: push the entries of `slots` to `entries` and
    /// pin their frames' segments. Call [`Unchained::read_chains`] on the
    /// entries pushed (`entries[len before..]`) once the lock is released.
    pub(crate) fn pin_entries(
        &self,
        index: &Index,
        slots: &[u32],
        entries: &mut Vec<IndexEntry>,
    ) -> Unchained {
        let mut runs: Vec<(usize, u64, Option<Arc<Segment>>)> = Vec::new();
        entries.reserve(slots.len());
        let start = entries.len();
        // Each entry is built where it ends up, in the reserved room: built
        // and then pushed (or collected through `extend`), its 192 bytes
        // were copied twice, by calls to `memcpy` (~10% of a region query).
        // The records of slots a few ahead are asked for first: an entity's
        // slots are scattered through the index, and each would otherwise
        // be a cache miss taken in turn.
        let room = &mut entries.spare_capacity_mut()[..slots.len()];
        for (i, (&slot, place)) in slots.iter().zip(room).enumerate() {
            if let Some(&ahead) = slots.get(i + RECORDS_AHEAD) {
                index.prefetch_record(ahead);
            }
            let id = place.write(index.entry(slot)).disk_pos.segment_id;
            if runs.last().is_none_or(|r| r.1 != id) {
                runs.push((i, id, self.log.segment(id)));
            }
        }
        // SAFETY: the loop wrote every one of the `slots.len()` places after
        // `start` (`room` is exactly that long, and `zip` stops at the
        // shorter of two equally long sequences). Should anything in the
        // loop panic, the length stays at `start`: the entries written so
        // far are leaked, never read or dropped uninitialised.
        unsafe { entries.set_len(start + slots.len()) };
        Unchained { runs }
    }

    /// The entries of the slots `select` picks (given the index and the
    /// visible watermark), with their hash chains, read in steps so the
    /// index lock is never held for long (see the module docs).
    ///
    /// First the slots are gathered (4 bytes each, a step per hold), so the
    /// result is allocated once at its final size; then each step builds
    /// its entries in place under the lock and reads their chains after it.
    /// The memory a step will write is touched before the lock is taken, so
    /// no page faults while it is held.
    fn read_entries<'r>(&self, select: impl Fn(&Index, u32) -> Selection<'r>) -> Vec<IndexEntry> {
        let mut slots = Vec::new();
        for _ in 0..STEPPED_ATTEMPTS {
            slots.clear();
            let compactions = {
                let mut selection = None;
                let mut compactions = None;
                loop {
                    let index = self.index.read();
                    let seen = *compactions.get_or_insert(index.compactions());
                    if seen != index.compactions() {
                        break None;
                    }
                    let selection = selection.get_or_insert_with(|| select(&index, self.visible()));
                    if !selection.step(&index, &mut slots) {
                        break Some(seen);
                    }
                }
            };
            let Some(compactions) = compactions else {
                continue;
            };
            if let Some(entries) = self.entries_of(&slots, compactions) {
                return entries;
            }
        }
        // Compactions kept changing the index between steps: select and pin
        // everything under one hold (the frames are still read after it).
        slots.clear();
        let mut entries = Vec::new();
        let unchained = {
            let index = self.index.read();
            let mut selection = select(&index, self.visible());
            while selection.step(&index, &mut slots) {}
            self.pin_entries(&index, &slots, &mut entries)
        };
        self.reading_frames();
        unchained.read_chains(&mut entries);
        entries
    }

    /// The entries of `slots`, a step at a time, as long as the index has
    /// seen `compactions` compactions (`None` once it has seen another).
    fn entries_of(&self, slots: &[u32], compactions: u64) -> Option<Vec<IndexEntry>> {
        let mut entries = crate::store::huge_pages::vec_with_capacity(slots.len());
        for step in slots.chunks(STEP as usize) {
            let start = entries.len();
            prefault(&mut entries, step.len());
            let unchained = {
                let index = self.index.read();
                if index.compactions() != compactions {
                    return None;
                }
                self.pin_entries(&index, step, &mut entries)
            };
            self.reading_frames();
            unchained.read_chains(&mut entries[start..]);
        }
        Some(entries)
    }

    /// The frame of `slot`. Called with the index lock held: compaction
    /// moves events and swaps segment files under the index write lock, so
    /// a position is only meaningful until the lock is released, while the
    /// returned bytes stay valid (they keep their segment mapped).
    pub(crate) fn locate(&self, index: &Index, slot: u32) -> Result<Located, StoreError> {
        self.locate_in(index, &self.log.view(), slot)
    }

    /// [`Self::locate`] with the log's segments already in hand.
    fn locate_in(
        &self,
        index: &Index,
        segments: &SegmentsView<'_>,
        slot: u32,
    ) -> Result<Located, StoreError> {
        let pos = index.disk_pos(slot);
        let frame = segments.read(pos.segment_id, pos.offset, pos.length)?;
        // The frame is read right after the lock is released: its lines
        // load meanwhile.
        frame.prefetch();
        Ok(Located {
            frame,
            pos,
            coord: index.coordinate(slot),
        })
    }

    /// Check a located frame and turn it into a stored event.
    pub(crate) fn read_event(
        &self,
        located: Located,
    ) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        self.read_located(located, stored_event)
    }

    /// Check a located frame and hand its record to `decode`, mapping a
    /// payload that does not decode to `CorruptSegment` (typed errors pass).
    pub(crate) fn read_located<P>(
        &self,
        located: Located,
        decode: impl FnOnce(&EventRecord<'_>, Coordinate) -> Result<P, StoreError>,
    ) -> Result<P, StoreError> {
        let Located { frame, pos, coord } = located;
        let rec = decode_at(frame.bytes(), pos, CoordCheck::of(&coord))?;
        decode(&rec, coord).map_err(|e| match e {
            StoreError::Serialization(inner) => StoreError::corrupt(
                pos.segment_id,
                format!("payload at offset {}: {inner}", pos.offset),
            ),
            other => other,
        })
    }

    /// The located frame of the visible event `event_id`.
    pub(crate) fn locate_id(&self, event_id: u128) -> Result<Located, StoreError> {
        let located = {
            let index = self.index.read();
            let segments = self.log.view();
            let slot = index
                .slot_of_prefetching(event_id, |guess| {
                    segments.prefetch(
                        u64::from(guess.segment),
                        u64::from(guess.offset),
                        guess.length,
                    );
                })
                .filter(|&s| s < self.visible())
                .ok_or(StoreError::NotFound(event_id))?;
            self.locate_in(&index, &segments, slot)?
        };
        self.reading_frames();
        Ok(located)
    }

    /// The event `event_id`, decoded by `decode`, checked to be that event.
    pub(crate) fn get_with<P>(
        &self,
        event_id: u128,
        decode: impl FnOnce(&EventRecord<'_>, Coordinate) -> Result<P, StoreError>,
    ) -> Result<P, StoreError> {
        let located = self.locate_id(event_id)?;
        let pos = located.pos;
        self.read_located(located, |rec, coord| {
            if rec.event_id != event_id {
                return Err(StoreError::corrupt(
                    pos.segment_id,
                    format!("frame at offset {} holds another event", pos.offset),
                ));
            }
            decode(rec, coord)
        })
    }

    pub(crate) fn get(&self, event_id: u128) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        self.get_with(event_id, stored_event)
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
            }
        })
    }

    pub(crate) fn by_correlation(&self, correlation_id: u128) -> Vec<IndexEntry> {
        self.read_entries(|index, visible| {
            let mut slots = index.correlation_slots(correlation_id);
            slots.retain(|&s| s < visible);
            Selection::Slots { slots }
        })
    }

    pub(crate) fn children(&self, event_id: u128) -> Vec<IndexEntry> {
        self.read_entries(|index, visible| {
            let slots = index.causation_slots(event_id);
            let n = slots.partition_point(|&s| s < visible);
            Selection::Slots {
                slots: slots[..n].to_vec(),
            }
        })
    }

    /// The entry of the event `event_id`, visible or not (the write path's
    /// own just-written events), with its hash chain.
    pub(crate) fn entry_of(&self, event_id: u128) -> Option<IndexEntry> {
        self.read_entries(|index, _| Selection::Slots {
            slots: index.slot_of(event_id).into_iter().collect(),
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
        let visible = self.visible();
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

/// Touch the memory the next `n` entries pushed to `entries` will take
/// (within its capacity), one write per page, so that building them under
/// the index lock does not fault fresh pages in while the lock is held.
pub(crate) fn prefault(entries: &mut Vec<IndexEntry>, n: usize) {
    const PAGE: usize = 4096;
    let per_page = (PAGE / std::mem::size_of::<IndexEntry>()).max(1);
    let spare = entries.spare_capacity_mut();
    let n = n.min(spare.len());
    if n == 0 {
        return;
    }
    let filler = filler_entry();
    for slot in spare[..n].iter_mut().step_by(per_page) {
        slot.write(filler.clone());
    }
}

/// A placeholder entry (its coordinate interned, so writing copies of it
/// anywhere costs no reference count and needs no drop).
fn filler_entry() -> IndexEntry {
    static FILLER: std::sync::LazyLock<Coordinate> = std::sync::LazyLock::new(|| {
        use crate::coordinate::interned::{intern, intern_pair};
        Coordinate::from_interned(intern_pair(intern("-"), intern("-")))
    });
    IndexEntry {
        event_id: 0,
        correlation_id: 0,
        causation_id: None,
        coord: FILLER.clone(),
        kind: EventKind::DATA,
        wall_ms: 0,
        clock: 0,
        hash_chain: HashChain::default(),
        disk_pos: DiskPos::default(),
        global_sequence: 0,
    }
}

/// Decode the indexed event frame in `bytes` (exactly one frame) at
/// `pos`, its coordinate checked as `check` says.
pub(crate) fn decode_at<'a>(
    bytes: &'a [u8],
    pos: DiskPos,
    check: CoordCheck<'_>,
) -> Result<EventRecord<'a>, StoreError> {
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
    decode_event_checked(body, check).map_err(|e| {
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
    // the chain); readers see a tombstone with no payload. The payload is
    // decoded last, straight into its place: moved through intermediate
    // results, the value's mixed-width head was copied by loads that wait
    // on the stores that wrote it.
    let mut event = stored_event_with(rec, coord, serde_json::Value::Null);
    if !rec.redacted {
        decode_value_into(rec.payload, &mut event.event.payload)?;
    }
    Ok(event)
}

/// The payload version of a decoded record (0 on disk means 1).
pub(crate) fn payload_version(rec: &EventRecord<'_>) -> u16 {
    rec.payload_version.max(1)
}

/// The public event of a decoded record, with a payload decoded by the caller.
pub(crate) fn stored_event_with<P>(
    rec: &EventRecord<'_>,
    coord: Coordinate,
    payload: P,
) -> StoredEvent<P> {
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
    StoredEvent {
        coordinate: coord,
        event: Event::new(header, payload).with_hash_chain(HashChain {
            prev_hash: rec.prev_hash,
            event_hash: rec.event_hash,
        }),
    }
}
