//! Opening a store: rebuild the index and decide where the writer continues
//! (SPEC §5.1).
//!
//! Three sources, fastest first, each checked before it is trusted:
//! 1. the checkpoint written by the last `close()` (an image of the index,
//!    checked against the segments it covers), then whatever was written
//!    after it;
//! 2. the footer of each sealed segment (a compact table of its events,
//!    checked against its last frame);
//! 3. the frames themselves.
//!
//! Footers and frames feed the same assembly step, so both obey the same
//! rules: a batch whose frames are not all present is discarded as a whole;
//! a damaged region followed by good frames is skipped and reported, never
//! served; a torn tail of the newest segment is zeroed (never truncated: a
//! read-only process may have the file mapped, ADR 0013); global sequences
//! continue after the highest one used (including removed events').
//!
//! Recovery writes only to repair the newest segment's tail or to create the
//! first files of a new store; a read-only open modifies nothing. A writable
//! open syncs the newest segment and the directory before it returns, so
//! nothing it serves is only in the page cache (a process killed before its
//! fsync leaves such bytes behind).

mod removed;

pub(crate) use removed::{load_removed, load_removed_from, RemovedPredecessors};

use crate::event::EventKind;
use crate::store::format::checkpoint::{self, Checkpoint, CoveredSegment, CHECKPOINT_FILE};
use crate::store::format::footer::{self, Footer};
use crate::store::format::frame::{all_zero, decode_frame, FRAME_HEADER_LEN, MAX_BODY_LEN};
use crate::store::format::record::{decode_event, EventRecord};
use crate::store::format::removed::{RemovedRecord, REMOVED_FILE};
use crate::store::format::scan::{batch_step, End, FrameScan, Marks, Scanned, Take};
use crate::store::format::segment;
use crate::store::format::segment::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::store::index::{EntityTail, Index, NewRecord};
use crate::store::log::{
    map_whole_file, rewrite, ActiveSegment, Io, Log, Segment, SegmentIo, SegmentListing,
};
use crate::store::{StoreConfig, StoreError};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// How `open` rebuilt the index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenPath {
    /// The directory held no segments.
    #[default]
    NewStore,
    /// From the checkpoint, plus the events written after it.
    Checkpoint,
    /// From segment footers (and a scan of the newest segment).
    Footers,
    /// Every frame of every segment was scanned.
    FullScan,
}

/// A region of a segment that was skipped because it is damaged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DamagedRegion {
    /// Segment id.
    pub segment_id: u64,
    /// Offset of the first damaged byte.
    pub offset: u64,
    /// Length of the skipped region in bytes.
    pub length: u64,
    /// What was wrong.
    pub detail: String,
}

/// The newest segment's torn tail, cut off (zeroed) at open.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TruncatedTail {
    /// Segment id.
    pub segment_id: u64,
    /// New end of the segment's frames.
    pub offset: u64,
    /// Bytes that were discarded.
    pub length: u64,
}

/// What recovery found and did, reported by `Store::diagnostics()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// How the index was rebuilt.
    pub open_path: OpenPath,
    /// Why the checkpoint was not used, when one existed.
    pub checkpoint_rejected: Option<String>,
    /// Events taken from the checkpoint.
    pub events_from_checkpoint: u64,
    /// Segments indexed from their footers.
    pub segments_from_footers: usize,
    /// Sealed segments whose footer was missing or failed a check (scanned instead).
    pub footers_rejected: usize,
    /// Segments whose frames were scanned (wholly, or after the checkpoint).
    pub segments_scanned: usize,
    /// Events indexed from footers and frames (those loaded from the
    /// checkpoint are `events_from_checkpoint`).
    pub events_recovered: u64,
    /// Damaged regions skipped (never served).
    pub damaged: Vec<DamagedRegion>,
    /// A torn tail that was cut off (zeroed; or, read-only, ignored).
    pub truncated_tail: Option<TruncatedTail>,
    /// Events of incomplete batches that were discarded.
    pub discarded_batch_events: u64,
    /// Events whose `prev_hash` did not match the previous event of their
    /// entity (a predecessor was lost to damage).
    pub chain_breaks: u64,
    /// Events remembered as removed by compaction.
    pub removed_events: u64,
    /// A compaction interrupted after its commit point was finished.
    pub compaction_finished: bool,
    /// Time spent opening, in microseconds.
    pub elapsed_us: u64,
}

/// The result of recovery.
pub(crate) struct Recovered {
    pub(crate) index: Index,
    pub(crate) next_seq: u64,
    /// The segment the writer continues (`None` when read-only).
    pub(crate) active: Option<ActiveSegment>,
    /// Sealed segments that have no valid footer yet (writable opens write them).
    pub(crate) unsealed: Vec<u64>,
    /// Read-only opens: where `refresh` continues.
    pub(crate) follow: Option<Follow>,
    /// The history epoch (part of projection cache keys).
    pub(crate) epoch: u64,
    pub(crate) report: RecoveryReport,
}

/// An event's fields as found in a frame or a footer entry, except its strings.
#[derive(Clone, Copy)]
struct Meta {
    segment_id: u64,
    offset: u64,
    length: u32,
    event_id: u128,
    correlation_id: u128,
    causation_id: Option<u128>,
    kind: u16,
    timestamp_us: i64,
    hlc_counter: u16,
    clock: u32,
    /// Footers do not carry it.
    prev_hash: Option<[u8; 32]>,
    event_hash: [u8; 32],
    global_seq: u64,
    batch_size: u32,
    batch_index: u32,
}

impl Meta {
    fn marks(&self) -> Marks {
        Marks {
            size: self.batch_size,
            index: self.batch_index,
            global_seq: self.global_seq,
        }
    }
}

/// One event as found, borrowing its strings from the frame or footer.
#[derive(Clone, Copy)]
struct Found<'a> {
    m: Meta,
    entity: &'a str,
    scope: &'a str,
}

impl<'a> Found<'a> {
    fn from_record(segment_id: u64, offset: u64, length: u32, r: &EventRecord<'a>) -> Self {
        Self {
            m: Meta {
                segment_id,
                offset,
                length,
                event_id: r.event_id,
                correlation_id: r.correlation_id,
                causation_id: r.causation_id,
                kind: r.visible_kind(),
                timestamp_us: r.timestamp_us,
                hlc_counter: r.hlc_counter,
                clock: r.clock,
                prev_hash: Some(r.prev_hash),
                event_hash: r.event_hash,
                global_seq: r.global_seq,
                batch_size: r.batch_size,
                batch_index: r.batch_index,
            },
            entity: r.entity,
            scope: r.scope,
        }
    }

    fn to_owned(self) -> Owned {
        Owned {
            m: self.m,
            entity: self.entity.into(),
            scope: self.scope.into(),
        }
    }
}

/// A batch member waiting for the rest of its batch (strings owned, since
/// a batch may continue in the next segment).
struct Owned {
    m: Meta,
    entity: Box<str>,
    scope: Box<str>,
}

impl Owned {
    fn get(&self) -> Found<'_> {
        Found {
            m: self.m,
            entity: &self.entity,
            scope: &self.scope,
        }
    }
}

/// The assembly step shared by frames and footers.
struct Assembly {
    index: Index,
    report: RecoveryReport,
    /// Highest global sequence used so far, if any.
    max_seq: Option<u64>,
    batch: Vec<Owned>,
    /// Events compaction removed: an event whose predecessor was removed
    /// follows a gap, not a break.
    removed: RemovedPredecessors,
}

impl Assembly {
    fn damage(&mut self, segment_id: u64, offset: u64, length: u64, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::warn!(segment_id, offset, length, %detail, "batpak: skipping damaged region");
        self.report.damaged.push(DamagedRegion {
            segment_id,
            offset,
            length,
            detail,
        });
    }

    fn discard_batch(&mut self, why: &str) {
        if let Some(first) = self.batch.first() {
            tracing::warn!(
                segment_id = first.m.segment_id,
                offset = first.m.offset,
                events = self.batch.len(),
                why,
                "batpak: discarding incomplete batch"
            );
            self.report.discarded_batch_events += self.batch.len() as u64;
            self.batch.clear();
        }
    }

    /// Position (segment, offset) of the first frame of a pending batch.
    fn pending_batch_start(&self) -> Option<(u64, u64)> {
        self.batch.first().map(|b| (b.m.segment_id, b.m.offset))
    }

    /// Take one event, in log order: batches are assembled by the one
    /// batch rule (`format::scan::batch_step`), which `verify` follows too.
    fn take(&mut self, f: Found<'_>) {
        let m = f.m;
        let held = self.batch.last().map(|b| (self.batch.len(), b.m.marks()));
        let (discard, take) = batch_step(held, m.marks());
        if discard {
            self.discard_batch(if m.batch_size == 0 {
                "interrupted by a single event"
            } else {
                "interrupted by another batch"
            });
        }
        match take {
            Take::Now => self.index_one(f),
            Take::Hold => self.batch.push(f.to_owned()),
            Take::Complete => {
                for b in std::mem::take(&mut self.batch) {
                    self.index_one(b.get());
                }
                self.index_one(f);
            }
            Take::Orphan => {
                self.report.discarded_batch_events += 1;
                let (seg, off, len) = (m.segment_id, m.offset, u64::from(m.length));
                self.damage(seg, off, len, "batch member without the start of its batch");
            }
        }
    }

    fn index_one(&mut self, found: Found<'_>) {
        let f = found.m;
        let (seg, off, len) = (f.segment_id, f.offset, u64::from(f.length));
        if self.max_seq.is_some_and(|m| f.global_seq <= m) {
            self.damage(
                seg,
                off,
                len,
                format!("global sequence {} out of order", f.global_seq),
            );
            return;
        }
        if self.index.find_key(f.event_id).is_some() {
            self.damage(
                seg,
                off,
                len,
                format!("duplicate event id {:032x}", f.event_id),
            );
            return;
        }
        let tail = self.index.entity_tail(found.entity);
        if let Some(t) = tail.filter(|t| f.clock <= t.clock) {
            self.damage(
                seg,
                off,
                len,
                format!("entity clock {} not after {}", f.clock, t.clock),
            );
            return;
        }
        let linked = match tail {
            // A tail hash of zeros is not known yet (footers keep only each
            // entity's last hash per segment; see `fill_tail_hashes`).
            Some(t) => {
                t.clock + 1 == f.clock
                    && f.prev_hash
                        .is_none_or(|p| p == t.event_hash || t.event_hash == [0; 32])
            }
            None => f.clock == 0 && f.prev_hash.is_none_or(|p| p == [0; 32]),
        };
        // A gap compaction left (the predecessor was removed) is no break.
        if !linked && self.removed.before(found.entity, f.clock).is_none() {
            self.report.chain_breaks += 1;
        }
        let res = self.index.insert(&NewRecord {
            event_id: f.event_id,
            correlation_id: f.correlation_id,
            causation_id: f.causation_id,
            entity: found.entity,
            scope: found.scope,
            kind: EventKind::from_raw(f.kind),
            timestamp_us: f.timestamp_us,
            hlc_counter: f.hlc_counter,
            clock: f.clock,
            event_hash: f.event_hash,
            global_seq: f.global_seq,
            segment_id: f.segment_id,
            offset: f.offset,
            length: f.length,
        });
        match res {
            Ok(_) => {
                self.max_seq = Some(f.global_seq);
                self.report.events_recovered += 1;
            }
            Err(e) => self.damage(seg, off, len, e.to_string()),
        }
    }

    /// Scan the frames of `seg` from `from`. Returns where its frames end,
    /// the length of a torn tail after them, and whether a footer ends them.
    ///
    /// `live`: another process may be writing the segment right now (a
    /// read-only look at its owner's newest segment). Then a damaged frame
    /// may be a frame still being written, or a torn tail its owner is
    /// zeroing, with valid frames already after it: the scan stops there
    /// and looks again later, rather than skip frames it would never see.
    fn scan(&mut self, seg: &Segment, from: u64, live: bool) -> ScanEnd {
        self.report.segments_scanned += 1;
        let bytes = seg.bytes();
        let id = seg.id();
        if from == SEGMENT_HEADER_LEN as u64 {
            if let Err(detail) = segment::check_header(bytes, id) {
                let len = SEGMENT_HEADER_LEN.min(bytes.len()) as u64;
                self.damage(id, 0, len, detail);
            }
        }
        let mut scan = FrameScan::new(bytes, from as usize);
        if live {
            scan = scan.stopping_at_damage();
        }
        for item in scan {
            match item {
                Scanned::Event {
                    at,
                    len,
                    record: Ok(rec),
                } => self.take(Found::from_record(id, at as u64, len as u32, &rec)),
                Scanned::Event {
                    at,
                    len,
                    record: Err(e),
                } => self.damage(
                    id,
                    at as u64,
                    len as u64,
                    format!("undecodable record: {e}"),
                ),
                Scanned::Footer { at, .. } => {
                    return ScanEnd {
                        end: at as u64,
                        torn: None,
                        torn_footer: false,
                        sealed: true,
                    }
                }
                Scanned::Damaged { at, resume, error } => self.damage(
                    id,
                    at as u64,
                    (resume - at) as u64,
                    format!("damaged frame: {error}"),
                ),
                Scanned::End { at, how } => {
                    return ScanEnd {
                        end: at as u64,
                        torn: how.is_torn().then(|| bytes.len().saturating_sub(at) as u64),
                        torn_footer: how == End::TornFooter,
                        sealed: false,
                    }
                }
            }
        }
        // A scan always ends with `End`.
        ScanEnd {
            end: bytes.len() as u64,
            torn: None,
            torn_footer: false,
            sealed: false,
        }
    }

    /// Index a sealed segment from its footer, if the footer passes its checks.
    fn take_footer(&mut self, seg: &Segment) -> Result<(), String> {
        let bytes = seg.bytes();
        match SegmentHeader::decode(bytes) {
            Ok(h) if h.segment_id == seg.id() => {}
            _ => return Err("segment header does not check".into()),
        }
        let at = footer::locate(bytes).ok_or("no footer trailer")? as usize;
        let f: Footer = footer::decode(bytes.get(at..).ok_or("footer offset beyond the file")?)
            .map_err(|e| e.to_string())?;
        if f.segment_id != seg.id() || f.frames_end != at as u64 {
            return Err(format!(
                "footer names segment {} ending at {}",
                f.segment_id, f.frames_end
            ));
        }
        // The cheap check against the frames: the last one listed is intact and is that event.
        if let Some(last) = f.entries.last() {
            let end = u64::from(last.offset) + u64::from(last.length);
            if end > f.frames_end {
                return Err("last entry lies beyond the frames".into());
            }
            let frame = &bytes[last.offset as usize..end as usize];
            let rec = event_in_frame(frame).map_err(|e| format!("last frame: {e}"))?;
            if rec.event_id != last.event_id || rec.global_seq != last.global_seq {
                return Err("last frame is not the footer's last event".into());
            }
        }
        // Every entry must describe a frame inside the segment's frames, in
        // file order (cheap, and a footer is never trusted beyond that).
        let mut next = SEGMENT_HEADER_LEN as u64;
        for e in &f.entries {
            let start = u64::from(e.offset);
            let end = start + u64::from(e.length);
            if start < next || end > f.frames_end || e.coord as usize >= f.coords.len() {
                return Err(format!(
                    "entry at offset {start} lies outside the frames or out of order"
                ));
            }
            next = end;
        }
        for e in &f.entries {
            let (entity, scope) = &f.coords[e.coord as usize];
            self.take(Found {
                m: Meta {
                    segment_id: f.segment_id,
                    offset: u64::from(e.offset),
                    length: e.length,
                    event_id: e.event_id,
                    correlation_id: e.correlation_id,
                    causation_id: e.causation_id,
                    kind: e.kind,
                    timestamp_us: e.timestamp_us,
                    hlc_counter: e.hlc_counter,
                    clock: e.clock,
                    prev_hash: None,
                    event_hash: e.event_hash,
                    global_seq: e.global_seq,
                    batch_size: e.batch_size,
                    batch_index: e.batch_index,
                },
                entity,
                scope,
            });
        }
        Ok(())
    }
}

/// Where a read-only store continues reading what its owner appends.
pub(crate) struct Follow {
    segment_id: u64,
    offset: u64,
    /// The segment ended in a footer: continue with the next one.
    sealed: bool,
    batch: Vec<Owned>,
    max_seq: Option<u64>,
    /// Compaction outputs this handle began reading past their first
    /// frames (it had read those from the segments they replaced): id and
    /// offset of the first frame it indexed.
    read_from: Vec<(u64, u64)>,
}

impl Follow {
    /// The segment and offset up to which frames have been read.
    pub(crate) fn position(&self) -> (u64, u64) {
        (self.segment_id, self.offset)
    }

    /// Where this handle began indexing segment `id`'s frames: after the
    /// header, unless `id` is a compaction output whose first frames it had
    /// read elsewhere.
    pub(crate) fn read_from(&self, id: u64) -> u64 {
        self.read_from
            .iter()
            .find(|(s, _)| *s == id)
            .map_or(SEGMENT_HEADER_LEN as u64, |(_, at)| *at)
    }
}

/// Index the frames appended since the last look (read-only stores).
/// Returns how many events were added to `index`.
pub(crate) fn follow_up(
    log: &Log,
    index: &mut Index,
    follow: &mut Follow,
) -> Result<u64, StoreError> {
    let listing = SegmentListing::read(log.dir())?;
    // A batch still open at the last look is read again from its first
    // frame: if its writer died, the owner's next open zeroes the batch and
    // writes new frames from where it began, which a look continuing after
    // the batch's last frame would miss.
    if let Some(first) = follow.batch.first() {
        follow.segment_id = first.m.segment_id;
        follow.offset = first.m.offset;
        follow.sealed = false;
        follow.batch.clear();
    }
    let mut asm = Assembly {
        index: std::mem::take(index),
        report: RecoveryReport::default(),
        max_seq: follow.max_seq,
        batch: Vec::new(),
        removed: RemovedPredecessors::default(),
    };
    let newest = listing.segments.last().map(|s| s.0);
    let result = (|| {
        let first = follow.segment_id;
        finish_if_replaced(log, &listing, &mut asm, follow)?;
        for (id, path) in listing.segments.iter().filter(|(id, _)| *id >= first) {
            if *id > follow.segment_id {
                // Moving on: the segment left behind is sealed, and read
                // through its map alone from now on.
                if let Some(prev) = log.segment(follow.segment_id) {
                    prev.close_descriptor();
                }
                follow.segment_id = *id;
                follow.offset = SEGMENT_HEADER_LEN as u64;
                follow.sealed = false;
            } else if follow.sealed {
                continue;
            }
            // Map the file as it is now (it may have grown since). A file
            // shorter than a header is being created; one that vanished
            // was a creation cut short, which the owner is redoing.
            let open = if Some(*id) == newest {
                Segment::open_followed
            } else {
                Segment::open_read_only
            };
            let seg = match open(path, *id, log.io()) {
                Ok(seg) if seg.file_len() >= SEGMENT_HEADER_LEN as u64 => seg,
                Ok(_) => break,
                Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            if follow.offset == SEGMENT_HEADER_LEN as u64 {
                follow.offset = first_unseen(seg.bytes(), asm.max_seq);
                if follow.offset > SEGMENT_HEADER_LEN as u64 {
                    follow.read_from.push((*id, follow.offset));
                }
            }
            let end = asm.scan(&seg, follow.offset, Some(*id) == newest);
            seg.release_pages();
            log.register(Arc::new(seg));
            follow.offset = end.end;
            follow.sealed = end.sealed;
            // A damaged or half-written frame in the newest segment may
            // still be being written: look again next time. (Damage there
            // is passed once the owner has moved on to a newer segment.)
        }
        Ok::<(), StoreError>(())
    })();
    let added = asm.report.events_recovered;
    follow.max_seq = asm.max_seq;
    follow.batch = std::mem::take(&mut asm.batch);
    *index = asm.index;
    result.map(|()| added)
}

/// The owner may have compacted the segment this handle was reading since
/// the last look: replaced its file (the output of a merge took its id) or
/// deleted it. Compaction only takes sealed segments, so the file this
/// handle mapped is complete: read the rest of it through the handle's own
/// descriptor, so the positions already indexed and the new ones name the
/// same bytes. Later segments are then read from the directory; an output
/// among them may repeat frames read here (see [`first_unseen`]).
fn finish_if_replaced(
    log: &Log,
    listing: &SegmentListing,
    asm: &mut Assembly,
    follow: &mut Follow,
) -> Result<(), StoreError> {
    if follow.sealed {
        return Ok(());
    }
    let Some(mine) = log.segment(follow.segment_id) else {
        return Ok(());
    };
    let path = listing
        .segments
        .iter()
        .find(|(id, _)| *id == follow.segment_id)
        .map(|(_, p)| p);
    if let Some(path) = path {
        if mine.is_file_at(path)? {
            return Ok(());
        }
    }
    if follow.offset == SEGMENT_HEADER_LEN as u64 && never_written(mine.bytes()) {
        // Not a compaction (which takes only sealed segments, with frames):
        // the owner died creating this segment, and its next open deleted
        // the file and created the segment again. Nothing was read from the
        // old file; the caller reads the new one from its start.
        return Ok(());
    }
    let seg = mine.remap_read_only()?;
    // Sealed (compaction takes only sealed segments): damage is damage.
    let end = asm.scan(&seg, follow.offset, false);
    seg.release_pages();
    log.register(Arc::new(seg));
    follow.offset = end.end;
    // Nothing is written to a replaced file again (whether or not the
    // sealer got to write its footer).
    follow.sealed = true;
    Ok(())
}

/// Where the frames of a segment this handle has not read before start
/// being new to it: a compaction output packs the frames of the segments
/// it replaced, and this handle may have indexed some of them already
/// (their sequences are at most `max_seq`). Frames are in sequence order.
fn first_unseen(bytes: &[u8], max_seq: Option<u64>) -> u64 {
    let start = SEGMENT_HEADER_LEN;
    let Some(max_seq) = max_seq else {
        return start as u64;
    };
    for item in FrameScan::new(bytes, start) {
        match item {
            Scanned::Event {
                record: Ok(rec), ..
            } if rec.global_seq <= max_seq => {}
            Scanned::Event { at, .. }
            | Scanned::Footer { at, .. }
            | Scanned::Damaged { at, .. }
            | Scanned::End { at, .. } => return at as u64,
        }
    }
    start as u64
}

struct ScanEnd {
    end: u64,
    torn: Option<u64>,
    /// The torn bytes are a footer cut short (not damage).
    torn_footer: bool,
    sealed: bool,
}

/// Read the hash of every entity tail that the footers did not keep from
/// its frame, so the entity's next append links to it.
fn fill_tail_hashes(index: &mut Index, log: &Log) {
    for (entity, slot) in index.tails_without_hash() {
        let pos = index.disk_pos(slot);
        let hash = log
            .view()
            .read(pos.segment_id, pos.offset, pos.length)
            .ok()
            .and_then(|f| crate::store::format::record::chain_in_frame(f.bytes()));
        match hash {
            Some((_, event_hash)) => index.set_tail_hash(entity, event_hash),
            None => tracing::warn!(?pos, "batpak: an entity's newest frame is unreadable; its next append starts a new chain"),
        }
    }
}

/// A segment file that never held a frame: shorter than a header, or a
/// header never written over its preallocated zeros (a crash or a full disk
/// while creating it).
/// `bytes` is the whole file; a normal header ends the check at once.
fn never_written(bytes: &[u8]) -> bool {
    bytes.len() < SEGMENT_HEADER_LEN || crate::store::format::frame::all_zero(bytes)
}

/// Load the checkpoint if it exists and agrees with the segments on disk.
fn load_checkpoint(
    dir: &Path,
    listing: &SegmentListing,
    report: &mut RecoveryReport,
) -> Option<Checkpoint> {
    let bytes = match map_whole_file(&dir.join(CHECKPOINT_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            report.checkpoint_rejected = Some(format!("unreadable: {e}"));
            return None;
        }
    };
    let reject = |report: &mut RecoveryReport, why: String| {
        tracing::warn!(%why, "batpak: checkpoint not used; rebuilding from the segments");
        report.checkpoint_rejected = Some(why);
        None
    };
    let cp = match checkpoint::decode(&bytes) {
        Ok(cp) => cp,
        Err(e) => return reject(report, e.to_string()),
    };
    let Some(last_covered) = cp.segments.last().map(|s| s.segment_id) else {
        return reject(report, "covers no segment".into());
    };
    let on_disk: Vec<u64> = listing
        .segments
        .iter()
        .map(|s| s.0)
        .take_while(|&id| id <= last_covered)
        .collect();
    let covered: Vec<u64> = cp.segments.iter().map(|s| s.segment_id).collect();
    if on_disk != covered {
        return reject(
            report,
            format!("covers segments {covered:?}, the directory has {on_disk:?}"),
        );
    }
    // The covered ids equal the listing's first ids (checked above).
    for (s, (_, path)) in cp.segments.iter().zip(&listing.segments) {
        let check = || -> Result<(), String> {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let len = file.metadata().map_err(|e| e.to_string())?.len();
            if len < s.frames_end {
                return Err(format!(
                    "is {len} bytes, the checkpoint covers {}",
                    s.frames_end
                ));
            }
            check_last_frame(s, len, |offset, length| {
                let mut frame = vec![0u8; length];
                file.read_exact_at(&mut frame, offset)
                    .map_err(|e| e.to_string())?;
                Ok(std::borrow::Cow::Owned(frame))
            })
        };
        if let Err(why) = check() {
            return reject(report, format!("segment {}: {why}", s.segment_id));
        }
    }
    Some(cp)
}

/// The event in `frame`, which must be exactly one whole event frame.
pub(crate) fn event_in_frame(frame: &[u8]) -> Result<EventRecord<'_>, String> {
    let (body, len) = decode_frame(frame).map_err(|e| format!("no valid frame there: {e}"))?;
    if len != frame.len() {
        return Err(format!("the frame there is {len} bytes"));
    }
    decode_event(body).map_err(|e| format!("the frame there does not decode: {e}"))
}

/// Check what a checkpoint says about the last frame of a segment it
/// covers against that frame: it lies inside the frames the checkpoint
/// covers and inside `limit` (the bytes the segment has), and it is one
/// whole frame holding the event named. `read(offset, length)` gives the
/// frame's bytes (called only once the range is checked, so nothing is
/// allocated from an untrusted length). Open and `verify` both check a
/// checkpoint with this, so they accept and refuse the same ones.
pub(crate) fn check_last_frame<'b>(
    s: &CoveredSegment,
    limit: u64,
    read: impl FnOnce(u64, usize) -> Result<std::borrow::Cow<'b, [u8]>, String>,
) -> Result<(), String> {
    if s.last_length == 0 {
        return Ok(());
    }
    let last_end = s.last_offset.checked_add(u64::from(s.last_length));
    if s.last_length as usize > FRAME_HEADER_LEN + MAX_BODY_LEN
        || last_end.is_none_or(|end| end > s.frames_end || end > limit)
    {
        return Err(format!(
            "last frame {}+{} lies outside the {} bytes of frames covered ({limit} there)",
            s.last_offset, s.last_length, s.frames_end
        ));
    }
    let frame = read(s.last_offset, s.last_length as usize)?;
    let rec = event_in_frame(&frame).map_err(|e| format!("last frame: {e}"))?;
    if rec.event_id != s.last_event_id {
        return Err(format!("last frame holds event {:032x}", rec.event_id));
    }
    Ok(())
}

/// Rebuild the index from the files in `log`'s directory and register the
/// segments. The steps, in order (see docs/architecture.md, "Open and
/// recovery"): settle an interrupted compaction ([`settle_compaction`]),
/// load the removed-event record and the checkpoint, read each segment
/// ([`Recovery::segment`]), then join the removed events and make what
/// will be served durable ([`Recovery::finish`]).
pub(crate) fn recover(
    log: &Log,
    config: &StoreConfig,
    writable: bool,
) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let dir = log.dir();
    let mut report = RecoveryReport::default();
    let settled = settle_compaction(log, writable, &mut report)?;
    let removed = load_removed_from(
        log.io(),
        dir,
        &settled.removed_path,
        !settled.listing.segments.is_empty(),
        writable,
    )?;
    let checkpoint = if settled.pending && !writable {
        None
    } else {
        load_checkpoint(dir, &settled.listing, &mut report)
    };
    let has_segments = !settled.listing.segments.is_empty();
    let mut recovery = Recovery::start(log, config, writable, report, &removed, checkpoint);
    if recovery.asm.report.open_path != OpenPath::Checkpoint && has_segments {
        recovery.asm.report.open_path = OpenPath::FullScan;
    }
    let count = settled.listing.segments.len();
    for (i, (id, path)) in settled.listing.segments.iter().enumerate() {
        recovery.segment(i, *id, path, i + 1 == count)?;
    }
    recovery.finish(&removed, started)
}

/// The directory as recovery reads it, once an interrupted compaction is
/// settled.
struct Settled {
    /// A compaction intent was found.
    pending: bool,
    listing: SegmentListing,
    /// Where the removed-event record to load is.
    removed_path: std::path::PathBuf,
}

/// A compaction interrupted after its commit point is finished first; one
/// interrupted before it leaves only temporary files, deleted here. A
/// read-only open changes nothing: it reads the directory as the finished
/// compaction will leave it.
fn settle_compaction(
    log: &Log,
    writable: bool,
    report: &mut RecoveryReport,
) -> Result<Settled, StoreError> {
    let dir = log.dir();
    let pending = rewrite::pending_intent(dir)?;
    let mut removed_path = dir.join(REMOVED_FILE);
    let mut listing = SegmentListing::read(dir)?;
    match (&pending, writable) {
        (Some(intent), true) => {
            rewrite::install(log.io(), dir, intent, None)?;
            report.compaction_finished = true;
            listing = SegmentListing::read(dir)?;
        }
        (None, true) => rewrite::discard_temporaries(log.io(), dir)?,
        (Some(intent), false) => {
            listing.segments = listing
                .segments
                .into_iter()
                .filter_map(|(id, _)| Some((id, rewrite::pending_segment_path(dir, intent, id)?)))
                .collect();
            removed_path = rewrite::pending_removed_path(dir, intent);
        }
        (None, false) => {}
    }
    Ok(Settled {
        pending: pending.is_some(),
        listing,
        removed_path,
    })
}

/// The state of an open while it reads the segments, oldest first.
struct Recovery<'l> {
    log: &'l Log,
    config: &'l StoreConfig,
    writable: bool,
    asm: Assembly,
    /// (segment id, offset) where the frames after the checkpoint begin.
    resume: Option<(u64, u64)>,
    /// Where the frames of each segment the checkpoint covers end, in the
    /// listing's order (the checkpoint was checked to cover its first ids).
    covered_ends: Vec<u64>,
    /// The segment the writer continues.
    active: Option<ActiveSegment>,
    /// Read-only opens: where `refresh` continues.
    follow: Option<Follow>,
    /// Sealed segments without a footer.
    unsealed: Vec<u64>,
}

impl<'l> Recovery<'l> {
    /// Start from the checkpoint's index, if there is one.
    fn start(
        log: &'l Log,
        config: &'l StoreConfig,
        writable: bool,
        report: RecoveryReport,
        removed: &RemovedRecord,
        checkpoint: Option<Checkpoint>,
    ) -> Self {
        let mut asm = Assembly {
            index: Index::new(),
            report,
            max_seq: None,
            batch: Vec::new(),
            removed: RemovedPredecessors::new(removed),
        };
        let mut resume = None;
        let mut covered_ends = Vec::new();
        if let Some(cp) = checkpoint {
            covered_ends = cp.segments.iter().map(|s| s.frames_end).collect();
            asm.report.open_path = OpenPath::Checkpoint;
            asm.report.events_from_checkpoint = u64::from(cp.index.len());
            asm.max_seq = cp.next_seq.checked_sub(1);
            resume = cp.segments.last().map(|s| (s.segment_id, s.frames_end));
            asm.index = cp.index;
        }
        asm.report.removed_events = removed.entries.len() as u64;
        Self {
            log,
            config,
            writable,
            asm,
            resume,
            covered_ends,
            active: None,
            follow: None,
            unsealed: Vec::new(),
        }
    }

    /// Read segment `id` (the `i`-th listed; `newest` if the last): from
    /// the checkpoint, its footer, or its frames.
    fn segment(&mut self, i: usize, id: u64, path: &Path, newest: bool) -> Result<(), StoreError> {
        let log = self.log;
        // A read-only handle keeps the descriptor of the newest segment,
        // which it follows (see `finish_if_replaced`).
        let seg = if newest && !self.writable {
            Segment::open_followed(path, id, log.io())?
        } else {
            Segment::open_read_only(path, id, log.io())?
        };
        if newest && never_written(seg.bytes()) {
            drop(seg);
            return self.never_written(id, path);
        }
        if self.resume.is_some_and(|(last, _)| id < last) {
            self.covered(i, id, seg);
            return Ok(());
        }
        let start = match self.resume {
            Some((last, end)) if id == last => end,
            _ => SEGMENT_HEADER_LEN as u64,
        };
        if !newest && start == SEGMENT_HEADER_LEN as u64 && self.took_footer(&seg) {
            self.asm.report.segments_from_footers += 1;
            seg.release_pages();
            log.register(Arc::new(seg));
            return Ok(());
        }
        let end = self.asm.scan(&seg, start, newest && !self.writable);
        seg.release_pages();
        if !newest {
            return self.sealed(id, path, seg, &end);
        }
        if !self.writable {
            // Read-only: nothing is cut or written. A batch still open may
            // yet be completed by the store's owner; `refresh` continues
            // from here.
            self.follow = Some(Follow {
                segment_id: id,
                offset: end.end,
                sealed: end.sealed,
                batch: std::mem::take(&mut self.asm.batch),
                max_seq: None,
                read_from: Vec::new(),
            });
            log.register(Arc::new(seg));
            return Ok(());
        }
        self.continue_newest(id, path, seg, &end)
    }

    /// The newest segment never held a frame: a crash (or a full disk)
    /// while creating it. A writable open starts it afresh; a read-only
    /// one waits for its owner to write it.
    fn never_written(&mut self, id: u64, path: &Path) -> Result<(), StoreError> {
        if self.writable {
            self.log.io().remove(path, None)?;
            self.active = Some(self.log.create_segment(id, 0, self.config.now_us())?);
        } else {
            self.follow = Some(Follow {
                segment_id: id,
                offset: SEGMENT_HEADER_LEN as u64,
                sealed: false,
                batch: std::mem::take(&mut self.asm.batch),
                max_seq: None,
                read_from: Vec::new(),
            });
        }
        Ok(())
    }

    /// A segment the checkpoint covers whole: its events are in the index
    /// already. A close may have left its footer to a later open (footers
    /// only speed up opens without a checkpoint): queue it again.
    fn covered(&mut self, i: usize, id: u64, seg: Segment) {
        let footer_at = self
            .covered_ends
            .get(i)
            .and_then(|&e| usize::try_from(e).ok());
        let has_footer = footer_at
            .and_then(|at| seg.bytes().get(at..))
            .is_some_and(footer::starts_footer);
        if self.writable && !has_footer {
            self.unsealed.push(id);
        }
        self.log.register(Arc::new(seg));
    }

    /// Take a sealed segment's events from its footer, if the footer passes
    /// its checks (else it is scanned).
    fn took_footer(&mut self, seg: &Segment) -> bool {
        match self.asm.take_footer(seg) {
            Ok(()) => true,
            Err(why) => {
                tracing::debug!(segment_id = seg.id(), %why, "batpak: footer not used; scanning");
                self.asm.report.footers_rejected += 1;
                false
            }
        }
    }

    /// A sealed segment whose frames were scanned.
    fn sealed(
        &mut self,
        id: u64,
        path: &Path,
        seg: Segment,
        end: &ScanEnd,
    ) -> Result<(), StoreError> {
        if let Some(len) = end.torn {
            if end.torn_footer {
                // A footer cut short by a crash: not damage (footers only
                // speed up opens). Zero it so the segment ends cleanly; the
                // sealer writes it again.
                if self.writable {
                    zero_from(self.log.io(), path, end.end)?;
                }
            } else {
                self.asm
                    .damage(id, end.end, len, "damaged end of a sealed segment");
            }
        }
        if !end.sealed {
            self.unsealed.push(id);
        }
        self.log.register(Arc::new(seg));
        Ok(())
    }

    /// The newest segment of a writable open: cut off a torn tail and a
    /// batch still open at its end (it never committed, and later appends
    /// must never follow half a batch), then continue writing it, or a new
    /// segment after it if it was sealed.
    fn continue_newest(
        &mut self,
        id: u64,
        path: &Path,
        seg: Segment,
        end: &ScanEnd,
    ) -> Result<(), StoreError> {
        let log = self.log;
        let mut frames_end = end.end;
        let mut cut = end.torn;
        if let Some((seg_id, off)) = self.asm.pending_batch_start() {
            let from = if seg_id == id {
                off
            } else {
                SEGMENT_HEADER_LEN as u64
            };
            if from < frames_end {
                cut = Some(cut.unwrap_or(0) + (frames_end - from));
                frames_end = from;
            }
        }
        self.asm
            .discard_batch("not committed before the end of the log");
        if let Some(len) = cut {
            tracing::warn!(
                segment_id = id,
                offset = frames_end,
                bytes = len,
                "batpak: torn tail"
            );
            self.asm.report.truncated_tail = Some(TruncatedTail {
                segment_id: id,
                offset: frames_end,
                length: len,
            });
        }
        let file_len = seg.file_len();
        if end.sealed {
            // Sealed (the crash came after its footer, before the next
            // segment existed): the next append starts a new segment. Its
            // frames may be in the page cache only: sync them first. The
            // segment was mapped read-only without a descriptor, and its
            // bookkeeping assumes what it found is on disk, so sync the file
            // itself.
            sync_file(log.io(), path, log.sync_mode())?;
            log.register(Arc::new(seg));
            self.active = Some(log.create_segment(id + 1, 0, self.config.now_us())?);
            return Ok(());
        }
        drop(seg);
        if cut.is_some() {
            // Zeroed, not truncated: another process may map this file, and
            // a file shrinking under a map faults its reader (SIGBUS).
            zero_from(log.io(), path, frames_end)?;
        }
        let reopened = log.reopen_active(path, id, frames_end, file_len)?;
        // The frames recovered here may never have been synced (a process
        // killed between its write and its fsync): make them durable before
        // anyone reads them, or a power cut could take back what was served
        // and give its sequences to other events.
        reopened.segment().sync(log.sync_mode())?;
        self.active = Some(reopened);
        Ok(())
    }

    /// After the segments: discard a batch left open, fill entity tails'
    /// hashes, join the removed events, and (writable) make sure there is
    /// an active segment and every directory entry served is durable.
    fn finish(
        mut self,
        removed: &RemovedRecord,
        started: Instant,
    ) -> Result<Recovered, StoreError> {
        let log = self.log;
        let asm = &mut self.asm;
        asm.discard_batch("not committed before the end of the log");
        if cfg!(feature = "blake3") {
            fill_tail_hashes(&mut asm.index, log);
        }
        // Removed events join after the scan: their clocks may be newer than
        // the survivors' (an entity's next append continues after them).
        for r in &removed.entries {
            let tail = EntityTail {
                clock: r.clock,
                event_hash: r.event_hash,
                timestamp_us: r.timestamp_us,
                hlc_counter: 0,
            };
            asm.index.insert_removed(
                r.event_id,
                &r.entity,
                &r.scope,
                EventKind::from_raw(r.kind),
                r.global_seq,
                tail,
            );
            asm.max_seq = asm.max_seq.max(Some(r.global_seq));
        }
        if self.writable {
            if self.active.is_none() {
                self.active = Some(log.create_segment(1, 0, self.config.now_us())?);
            }
            // Files a crashed process created may have directory entries
            // that were never synced; this open is about to serve (and
            // append to) them.
            log.io().sync_dir(log.dir(), None)?;
        }
        let mut asm = self.asm;
        if asm.report.open_path == OpenPath::FullScan && asm.report.segments_from_footers > 0 {
            asm.report.open_path = OpenPath::Footers;
        }
        asm.report.elapsed_us = started.elapsed().as_micros() as u64;
        Ok(Recovered {
            epoch: removed.epoch,
            follow: self.follow.map(|f| Follow {
                max_seq: asm.max_seq,
                ..f
            }),
            next_seq: asm.max_seq.map_or(0, |m| m + 1),
            index: asm.index,
            active: self.active,
            unsealed: self.unsealed,
            report: asm.report,
        })
    }
}

/// How much of a file [`zero_from`] reads or writes at a time.
const ZERO_CHUNK: usize = 64 * 1024;

/// Make a file's contents durable, whatever this process knows of them.
fn sync_file(io: &Io, path: &Path, mode: crate::store::config::SyncMode) -> Result<(), StoreError> {
    let f = io.open(path, false)?;
    io.sync(&f, path, mode, None, None)
}

/// Overwrite a file with zeros from `from` to its end, durably, without
/// changing its length: a file never shrinks, since another process may
/// map it (ADR 0013). Used on a torn tail and on a torn footer, bytes past
/// the last frame that no reader reads. Works in bounded chunks and writes
/// only chunks that hold something other than zeros (the rest of a
/// preallocated file usually does not). Returns the bytes overwritten.
fn zero_from(io: &Io, path: &Path, from: u64) -> Result<u64, StoreError> {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
    let f = io.open(path, true)?;
    let len = f.metadata()?.len();
    let mut chunk = vec![0u8; ZERO_CHUNK];
    let mut at = from;
    let mut zeroed = 0;
    while at < len {
        let n = (len - at).min(ZERO_CHUNK as u64) as usize;
        f.read_exact_at(&mut chunk[..n], at)?;
        if !all_zero(&chunk[..n]) {
            io.write_at(&f, path, &ZEROS[..n], at, None)?;
            zeroed += n as u64;
        }
        at += n as u64;
    }
    if zeroed > 0 {
        io.sync(
            &f,
            path,
            crate::store::config::SyncMode::SyncData,
            None,
            None,
        )?;
    }
    Ok(zeroed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[test]
    fn zero_from_zeroes_in_place_and_writes_only_chunks_with_data() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s");
        let mut bytes = vec![0u8; 256 * 1024];
        bytes[..5].fill(7);
        bytes[10..20].fill(9);
        bytes[200_000] = 1;
        std::fs::write(&path, &bytes).unwrap();
        let io = Io::for_store(&StoreConfig::new(d.path()), true);
        let zeroed = zero_from(&io, &path, 5).unwrap();
        // The first chunk (holding bytes 10..20) and the last (200 000);
        // the two all-zero chunks between them are left alone.
        let chunk = ZERO_CHUNK as u64;
        assert_eq!(zeroed, chunk + (256 * 1024 - (5 + 3 * chunk)));
        let after = std::fs::read(&path).unwrap();
        assert_eq!(after.len(), bytes.len(), "the file keeps its length");
        assert_eq!(&after[..5], &[7; 5]);
        assert!(after[5..].iter().all(|&b| b == 0));
        assert_eq!(zero_from(&io, &path, 5).unwrap(), 0, "nothing left to zero");
        assert_eq!(zero_from(&io, &path, 1 << 30).unwrap(), 0, "past the end");
    }

    #[test]
    fn a_checkpointed_last_frame_beyond_the_file_is_refused_before_reading() {
        let d = tempfile::tempdir().unwrap();
        let c = Coordinate::new("e", "s").unwrap();
        let store = Store::open(StoreConfig::new(d.path())).unwrap();
        for i in 0..3 {
            store.append(&c, EventKind::custom(1, 1), &i).unwrap();
        }
        store.close().unwrap();
        let path = d.path().join(CHECKPOINT_FILE);
        let cp = checkpoint::decode(&std::fs::read(&path).unwrap()).unwrap();
        let listing = SegmentListing::read(d.path()).unwrap();
        // As written, the checkpoint is used.
        assert!(load_checkpoint(d.path(), &listing, &mut RecoveryReport::default()).is_some());
        for (offset, length) in [(64, u32::MAX), (u64::MAX - 10, 100), (1 << 40, 100)] {
            let mut segments = cp.segments.clone();
            segments[0].last_offset = offset;
            segments[0].last_length = length;
            let bytes = checkpoint::encode(cp.next_seq, &segments, &cp.index);
            std::fs::write(&path, bytes).unwrap();
            let mut report = RecoveryReport::default();
            assert!(load_checkpoint(d.path(), &listing, &mut report).is_none());
            let why = report.checkpoint_rejected.unwrap();
            assert!(why.contains("lies outside"), "{offset}+{length}: {why}");
        }
        // The frame itself is still checked when it fits.
        let mut segments = cp.segments.clone();
        segments[0].last_offset += 1;
        std::fs::write(&path, checkpoint::encode(cp.next_seq, &segments, &cp.index)).unwrap();
        let mut report = RecoveryReport::default();
        assert!(load_checkpoint(d.path(), &listing, &mut report).is_none());
        // And the store opens from its segments.
        let store = Store::open(StoreConfig::new(d.path())).unwrap();
        assert_eq!(store.stream("e").len(), 3);
    }
}
