//! Opening a store: rebuild the index from the segments and decide where the
//! writer continues (SPEC §5.1).
//!
//! Every frame is scanned and checked. A torn tail (bytes after the last good
//! frame of the newest segment that are not all zero) is truncated; a damaged
//! region followed by good frames is skipped and reported, never served, and
//! the frames after it are kept. A batch whose frames are not all present is
//! discarded as a whole. Global sequences continue after the highest one seen.
//!
//! Recovery reads files and writes only to repair the newest segment's tail;
//! a read-only open modifies nothing.

use crate::event::EventKind;
use crate::store::format::frame::{next_valid_frame, probe, Probe};
use crate::store::format::record::{decode_event, EventRecord};
use crate::store::format::segment::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::store::index::{Index, NewRecord};
use crate::store::log::{ActiveSegment, Log, Segment, SegmentListing};
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
    /// Every frame of every segment was scanned.
    FullScan,
}

/// A region of a segment that was skipped because it is damaged.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// The newest segment's torn tail, cut off at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TruncatedTail {
    /// Segment id.
    pub segment_id: u64,
    /// New end of the segment's frames.
    pub offset: u64,
    /// Bytes that were discarded (not counting zero fill).
    pub length: u64,
}

/// What recovery found and did, reported by `Store::diagnostics()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// How the index was rebuilt.
    pub open_path: OpenPath,
    /// Segments read.
    pub segments_scanned: usize,
    /// Events indexed.
    pub events_recovered: u64,
    /// Damaged regions skipped (never served).
    pub damaged: Vec<DamagedRegion>,
    /// A torn tail that was truncated (or, read-only, ignored).
    pub truncated_tail: Option<TruncatedTail>,
    /// Events of incomplete batches that were discarded.
    pub discarded_batch_events: u64,
    /// Events whose `prev_hash` did not match the previous event of their
    /// entity (a predecessor was lost to damage).
    pub chain_breaks: u64,
    /// Time spent opening, in microseconds.
    pub elapsed_us: u64,
}

/// The result of recovery.
pub(crate) struct Recovered {
    pub(crate) index: Index,
    pub(crate) next_seq: u64,
    /// The segment the writer continues (`None` when read-only).
    pub(crate) active: Option<ActiveSegment>,
    pub(crate) report: RecoveryReport,
}

/// A decoded frame waiting to be indexed (batch members wait for their batch).
struct Pending {
    segment_id: u64,
    offset: u64,
    length: u32,
    rec: OwnedRecord,
}

/// The parts of an event record the index needs, owned.
struct OwnedRecord {
    event_id: u128,
    correlation_id: u128,
    causation_id: Option<u128>,
    entity: Box<str>,
    scope: Box<str>,
    kind: u16,
    timestamp_us: i64,
    hlc_counter: u16,
    clock: u32,
    prev_hash: [u8; 32],
    event_hash: [u8; 32],
    global_seq: u64,
    batch_size: u32,
    batch_index: u32,
}

impl OwnedRecord {
    fn from(rec: &EventRecord<'_>) -> Self {
        Self {
            event_id: rec.event_id,
            correlation_id: rec.correlation_id,
            causation_id: rec.causation_id,
            entity: rec.entity.into(),
            scope: rec.scope.into(),
            kind: rec.kind,
            timestamp_us: rec.timestamp_us,
            hlc_counter: rec.hlc_counter,
            clock: rec.clock,
            prev_hash: rec.prev_hash,
            event_hash: rec.event_hash,
            global_seq: rec.global_seq,
            batch_size: rec.batch_size,
            batch_index: rec.batch_index,
        }
    }
}

struct Scan {
    index: Index,
    report: RecoveryReport,
    /// Highest global sequence indexed, if any.
    max_seq: Option<u64>,
    /// Frames of the batch being assembled.
    batch: Vec<Pending>,
}

impl Scan {
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
        if self.batch.is_empty() {
            return;
        }
        let first = &self.batch[0];
        tracing::warn!(
            segment_id = first.segment_id,
            offset = first.offset,
            events = self.batch.len(),
            why,
            "batpak: discarding incomplete batch"
        );
        self.report.discarded_batch_events += self.batch.len() as u64;
        self.batch.clear();
    }

    /// Take one decoded event frame.
    fn frame(&mut self, p: Pending) {
        let r = &p.rec;
        if r.batch_size == 0 {
            self.discard_batch("interrupted by a single event");
            self.index_one(p);
            return;
        }
        let expected_index = self.batch.len() as u32;
        let continues = self.batch.first().is_some_and(|f| {
            f.rec.batch_size == r.batch_size
                && f.rec.global_seq + u64::from(expected_index) == r.global_seq
        });
        if r.batch_index != expected_index || (expected_index > 0 && !continues) {
            self.discard_batch("interrupted by another batch");
            if r.batch_index != 0 {
                let (seg, off, len) = (p.segment_id, p.offset, u64::from(p.length));
                self.report.discarded_batch_events += 1;
                self.damage(seg, off, len, "batch member without the start of its batch");
                return;
            }
        }
        let complete = r.batch_index + 1 == r.batch_size;
        self.batch.push(p);
        if complete {
            for p in std::mem::take(&mut self.batch) {
                self.index_one(p);
            }
        }
    }

    fn index_one(&mut self, p: Pending) {
        let r = &p.rec;
        if self.max_seq.is_some_and(|m| r.global_seq <= m) {
            self.damage(
                p.segment_id,
                p.offset,
                u64::from(p.length),
                format!("global sequence {} out of order", r.global_seq),
            );
            return;
        }
        if self.index.slot_of(r.event_id).is_some() {
            self.damage(
                p.segment_id,
                p.offset,
                u64::from(p.length),
                format!("duplicate event id {:032x}", r.event_id),
            );
            return;
        }
        match self.index.entity_tail(&r.entity) {
            Some(tail) if r.clock <= tail.clock => {
                self.damage(
                    p.segment_id,
                    p.offset,
                    u64::from(p.length),
                    format!("entity clock {} not after {}", r.clock, tail.clock),
                );
                return;
            }
            Some(tail) if tail.event_hash != r.prev_hash || tail.clock + 1 != r.clock => {
                self.report.chain_breaks += 1;
            }
            None if r.clock != 0 || r.prev_hash != [0; 32] => self.report.chain_breaks += 1,
            _ => {}
        }
        let res = self.index.insert(&NewRecord {
            event_id: r.event_id,
            correlation_id: r.correlation_id,
            causation_id: r.causation_id,
            entity: &r.entity,
            scope: &r.scope,
            kind: EventKind::from_raw(r.kind),
            timestamp_us: r.timestamp_us,
            hlc_counter: r.hlc_counter,
            clock: r.clock,
            event_hash: r.event_hash,
            global_seq: r.global_seq,
            segment_id: p.segment_id,
            offset: p.offset,
            length: p.length,
        });
        match res {
            Ok(_) => {
                self.max_seq = Some(r.global_seq);
                self.report.events_recovered += 1;
            }
            Err(e) => self.damage(p.segment_id, p.offset, u64::from(p.length), e.to_string()),
        }
    }

    /// Scan one segment's frames; returns the offset where its frames end and
    /// whether non-zero bytes follow (a torn tail).
    fn segment(&mut self, seg: &Segment) -> (u64, Option<u64>) {
        let bytes = seg.bytes();
        let id = seg.id();
        let mut pos = SEGMENT_HEADER_LEN;
        match SegmentHeader::decode(bytes) {
            Ok(h) if h.segment_id == id => {}
            Ok(h) => self.damage(
                id,
                0,
                SEGMENT_HEADER_LEN as u64,
                format!("header names segment {}", h.segment_id),
            ),
            Err(e) => self.damage(
                id,
                0,
                SEGMENT_HEADER_LEN.min(bytes.len()) as u64,
                format!("segment header: {e}"),
            ),
        }
        loop {
            match probe(bytes, pos) {
                Probe::End => return (pos as u64, None),
                Probe::Frame { body, len } => {
                    match decode_event(body) {
                        Ok(rec) => self.frame(Pending {
                            segment_id: id,
                            offset: pos as u64,
                            length: len as u32,
                            rec: OwnedRecord::from(&rec),
                        }),
                        Err(e) => self.damage(
                            id,
                            pos as u64,
                            len as u64,
                            format!("undecodable record: {e}"),
                        ),
                    }
                    pos += len;
                }
                Probe::Damaged(e) => match next_valid_frame(bytes, pos + 1) {
                    Some(next) => {
                        self.damage(
                            id,
                            pos as u64,
                            (next - pos) as u64,
                            format!("damaged frame: {e}"),
                        );
                        pos = next;
                    }
                    None => {
                        let torn = bytes.len() - pos;
                        return (pos as u64, Some(torn as u64));
                    }
                },
            }
        }
    }
}

/// Rebuild the index from the segments in `log`'s directory and register them.
pub(crate) fn recover(
    log: &Log,
    config: &StoreConfig,
    writable: bool,
) -> Result<Recovered, StoreError> {
    let started = Instant::now();
    let listing = SegmentListing::read(log.dir())?;
    let mut scan = Scan {
        index: Index::new(),
        report: RecoveryReport::default(),
        max_seq: None,
        batch: Vec::new(),
    };
    let mut active = None;
    let count = listing.segments.len();
    if count > 0 {
        scan.report.open_path = OpenPath::FullScan;
    }
    for (i, (id, path)) in listing.segments.iter().enumerate() {
        let newest = i + 1 == count;
        let seg = Segment::open_read_only(path, *id)?;
        scan.report.segments_scanned += 1;
        if newest && writable && seg.file_len() < SEGMENT_HEADER_LEN as u64 {
            // Crashed while creating the segment: it never held a frame.
            drop(seg);
            std::fs::remove_file(path)?;
            active = Some(log.create_segment(*id, 0, config.now_us())?);
            continue;
        }
        let (end, torn) = scan.segment(&seg);
        seg.release_pages();
        if !newest {
            if let Some(len) = torn {
                scan.damage(*id, end, len, "damaged end of a sealed segment");
            }
            log.register(Arc::new(seg));
            continue;
        }
        // The newest segment: a batch still open at its end never committed.
        let batch_start = scan.batch.first().map(|p| (p.segment_id, p.offset));
        let batch_len = scan.batch.len();
        scan.discard_batch("not committed before the end of the log");
        let mut end = end;
        let mut cut = torn;
        if let Some((seg_id, off)) = batch_start.filter(|_| batch_len > 0) {
            // Cut the uncommitted batch's frames in this segment too, so that
            // later appends never follow half a batch.
            let from = if seg_id == *id {
                off
            } else {
                SEGMENT_HEADER_LEN as u64
            };
            if from < end {
                cut = Some(cut.unwrap_or(0) + (end - from));
                end = from;
            }
        }
        let file_len = seg.file_len();
        if let Some(len) = cut {
            tracing::warn!(
                segment_id = *id,
                offset = end,
                bytes = len,
                "batpak: torn tail"
            );
            scan.report.truncated_tail = Some(TruncatedTail {
                segment_id: *id,
                offset: end,
                length: len,
            });
        }
        if !writable {
            log.register(Arc::new(seg));
            continue;
        }
        drop(seg);
        if cut.is_some() {
            truncate(path, end)?;
        }
        active = Some(log.reopen_active(path, *id, end, file_len)?);
    }
    if writable && active.is_none() {
        active = Some(log.create_segment(1, 0, config.now_us())?);
    }
    scan.report.elapsed_us = started.elapsed().as_micros() as u64;
    let next_seq = scan.max_seq.map_or(0, |m| m + 1);
    Ok(Recovered {
        index: scan.index,
        next_seq,
        active,
        report: scan.report,
    })
}

/// Cut a segment file at `len` and make that durable. Runs before the file is mapped.
fn truncate(path: &Path, len: u64) -> Result<(), StoreError> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()?;
    Ok(())
}
