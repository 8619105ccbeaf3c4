//! `Store::verify`: the full integrity check (every frame's CRC, every
//! entity's hash chain, footers and checkpoint against the frames).
//!
//! Owns the checks and the report types ([`VerifyReport`], [`VerifyProblem`],
//! [`VerifyProblemKind`]). It reads segment files, their footers, the
//! checkpoint and the removed-event record, decoding them only through
//! `format`. It must not repair, rewrite or remove anything, and must not
//! take the index lock or change the index. The one thing it touches outside
//! its own memory is the writer: briefly, under the writer lock, it learns
//! the committed position of the active segment and hands the frames the
//! writer buffered for its next group commit to the file (what that commit
//! does anyway), so that everything committed so far is in the file.
//!
//! Consistency while appends continue: the maintenance lock is held for the
//! whole run (no footer is written and no compaction replaces segments
//! meanwhile); the active segment is checked only up to the position taken
//! at the start, and segments created after that are not checked. Sealed
//! segments are mapped afresh, as the files are now (a footer may lie past
//! the capacity the log mapped a segment with). In a read-only store the
//! newest segment's owner may be writing its last frame: a damaged end of
//! that segment is not reported.
//!
//! What is not a problem: an absent checkpoint; frames appended after the
//! checkpoint; a sealed segment without a footer (yet), or with a footer
//! cut short at its end by a crash (the next writable open rewrites it); a
//! newest segment file that never held a header (its creation was cut
//! short; open removes it); the members of a
//! batch that never completed (left by a failed append, never indexed: they
//! are counted, and are no part of any chain); a `prev_hash` linking to an
//! event compaction removed (kept in the removed-event record). The link
//! after a damaged frame is not judged (the damage is reported once).
//!
//! Three threads share the work: one walks the frames in log order (CRC,
//! framing, decoding, footers, batches, chains, sequence order), one
//! recomputes the event and content hashes of the events the walk found
//! (the expensive part; the walker helps once its walk is done), and one
//! decodes the checkpoint and checks its records against the frames.

use super::Maintainer;
use crate::store::format::checkpoint::{self, CoveredSegment, CHECKPOINT_FILE};
use crate::store::format::footer::{self, Footer, FooterEntry, TRAILER_LEN};
use crate::store::format::frame::all_zero;
use crate::store::format::intent::Intent;
use crate::store::format::record::{decode_event, EventRecord};
use crate::store::format::removed::{self, REMOVED_FILE};
use crate::store::format::scan::{batch_step, End, FrameScan, Marks, Scanned, Take};
use crate::store::format::segment::{self, segment_file_name, SEGMENT_HEADER_LEN};
use crate::store::format::{chain, FormatError};
use crate::store::log::{map_whole_file, rewrite, Segment, SegmentListing};
use crate::store::recovery::{check_last_frame, event_in_frame, RemovedPredecessors};
use crate::store::StoreError;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What kind of damage a [`VerifyProblem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyProblemKind {
    /// A segment's header is damaged or names another segment.
    SegmentHeader,
    /// A frame's checksum does not match its bytes.
    FrameChecksum,
    /// A frame's framing (marker or length) is damaged.
    FrameDamaged,
    /// A frame checks but its record cannot be decoded.
    RecordUndecodable,
    /// An event's stored hash is not the hash of its contents.
    EventHash,
    /// An event's payload is not the payload its content hash was taken of.
    ContentHash,
    /// An event's `prev_hash` (or clock) does not link to its entity's
    /// previous event.
    ChainBroken,
    /// An event's global sequence is not after the previous event's.
    SequenceOrder,
    /// A segment footer disagrees with the frames it describes.
    Footer,
    /// The checkpoint disagrees with the frames it describes.
    Checkpoint,
    /// The removed-event record is damaged.
    RemovedRecord,
}

/// One problem found by [`Store::verify`](crate::store::Store::verify).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyProblem {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset of the damage in `file`: the start of the damaged frame
    /// (or region), of the footer frame, or of the checkpoint entry.
    pub offset: u64,
    /// What is wrong.
    pub kind: VerifyProblemKind,
    /// A human-readable description.
    pub detail: String,
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}: {:?}: {}",
            self.file.display(),
            self.offset,
            self.kind,
            self.detail
        )
    }
}

/// The result of [`Store::verify`](crate::store::Store::verify).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments_checked: usize,
    /// Event frames checked.
    pub events_checked: u64,
    /// Bytes of segments read (headers, frames and footers; not the zero
    /// fill after them).
    pub bytes_checked: u64,
    /// Events of batches whose frames are not all present (left behind by an
    /// append that failed part-way; never served). They are checked like
    /// any frame but are not part of any entity's chain. Not a problem.
    pub incomplete_batch_events: u64,
    /// Every problem found, in file and offset order.
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// No problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems found.
    pub fn problems(&self) -> &[VerifyProblem] {
        &self.problems
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} segments, {} events, {} bytes checked: ",
            self.segments_checked, self.events_checked, self.bytes_checked
        )?;
        if self.is_clean() {
            return write!(f, "clean");
        }
        writeln!(f, "{} problems", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Most disagreements listed one by one for a single footer or checkpoint;
/// the rest are summed up in one more problem.
const MAX_LISTED: u64 = 32;

/// Events per unit of hashing work handed between the threads.
const HASH_CHUNK: usize = 2048;

/// Check everything committed when the call starts.
pub(crate) fn verify(maint: &Maintainer<'_>) -> Result<VerifyReport, StoreError> {
    let _maintenance = maint.lock.lock();
    // The writer's committed position, taken once: appends after it are not checked.
    let active = match maint.writer {
        Some(writer) => {
            let mut w = writer.lock();
            // Frames of a poisoned store's failed group commit stay where
            // they are (in memory): the file is checked as it is.
            if !maint.durability.is_poisoned() {
                w.active.flush_pending()?;
            }
            Some((w.active.segment().id(), w.active.write_pos()))
        }
        None => None,
    };
    let dir = maint.log.dir();
    // A read-only handle reads a compaction its owner committed but has not
    // installed yet as finished, as its open did: the files the intent
    // replaces or deletes, and the checkpoint it deletes, are not the
    // store's any more. (A writable store installs it at open.)
    let pending = match maint.writer {
        Some(_) => None,
        None => rewrite::pending_intent(dir)?,
    };
    let targets = collect_targets(maint, dir, active, pending.as_ref())?;
    let removed_path = pending.as_ref().map_or_else(
        || dir.join(REMOVED_FILE),
        |intent| rewrite::pending_removed_path(dir, intent),
    );
    let removed = load_removed(removed_path, &targets)?;
    let pending = pending.is_some();
    let (walk, hash_problems, checkpoint) = std::thread::scope(|s| {
        let targets = &targets;
        // The checkpoint's records are checked beside the walk.
        let checkpoint = std::thread::Builder::new()
            .name("batpak-verify-checkpoint".into())
            .spawn_scoped(s, move || check_checkpoint(dir, targets, pending));
        let (tx, rx) = flume::bounded::<HashJob<'_>>(8);
        let hasher = {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name("batpak-verify".into())
                .spawn_scoped(s, move || hash_jobs(targets, &rx))
        };
        if let Err(e) = &hasher {
            // No second thread: the walk hashes as it goes.
            tracing::debug!(error = %e, "batpak: verify hashes on one thread");
        }
        let mut walk = Walk::new(targets, removed.links, hasher.is_ok().then_some(tx));
        for ti in 0..targets.len() {
            walk.segment(ti);
        }
        walk.end_of_log();
        // The walk is done: help with the hashing still queued.
        walk.hash_tx = None;
        let mut problems = hash_jobs(targets, &rx);
        if let Ok(h) = hasher {
            problems.extend(join(h));
        }
        let checkpoint = match checkpoint {
            Ok(h) => join(h),
            Err(_) => check_checkpoint(dir, targets, pending),
        };
        (walk, problems, checkpoint)
    });
    let mut walk = walk;
    walk.problems.extend(removed.problems);
    walk.problems.extend(hash_problems);
    walk.finish_checkpoint(checkpoint?);
    let mut problems = walk.problems;
    problems.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
    Ok(VerifyReport {
        segments_checked: targets.len(),
        events_checked: walk.events_checked,
        bytes_checked: walk.bytes_checked,
        incomplete_batch_events: walk.incomplete_batch_events,
        problems,
    })
}

/// The result of a scoped thread (its panic goes on in this one).
fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A segment file to check.
struct Target {
    id: u64,
    path: PathBuf,
    seg: Arc<Segment>,
    /// The active segment of a writable store: the writer's committed
    /// position when the run started. Nothing at or past it is checked,
    /// and the segment has no footer.
    active_end: Option<u64>,
    /// The newest segment of a read-only store: its owner may be writing
    /// its last frame, so a damaged end is not reported.
    tail_in_flux: bool,
}

impl Target {
    /// The bytes to check.
    fn bytes(&self) -> &[u8] {
        match self.active_end {
            None => self.seg.bytes(),
            Some(end) => {
                let end = end.min(self.seg.file_len());
                match self.seg.check_range(0, end) {
                    Ok(()) => self.seg.slice(0, end),
                    Err(_) => &[],
                }
            }
        }
    }
}

/// Every segment of the store: those registered in the log (of a writable
/// store) and every segment file in the directory (up to the active segment
/// of a writable store).
fn collect_targets(
    maint: &Maintainer<'_>,
    dir: &Path,
    active: Option<(u64, u64)>,
    pending: Option<&Intent>,
) -> Result<Vec<Target>, StoreError> {
    let mut ids: BTreeMap<u64, Option<PathBuf>> = BTreeMap::new();
    // A read-only handle checks the files as they are: the owner may have
    // compacted away segments the handle still maps.
    if maint.writer.is_some() {
        for id in maint.log.segment_ids() {
            ids.insert(id, None);
        }
    }
    for (id, path) in SegmentListing::read(dir)?.segments {
        ids.insert(id, Some(path));
    }
    if let Some(intent) = pending {
        ids = ids
            .into_keys()
            .filter_map(|id| Some((id, Some(rewrite::pending_segment_path(dir, intent, id)?))))
            .collect();
    }
    let mut targets = Vec::with_capacity(ids.len());
    for (id, path) in ids {
        if active.is_some_and(|(active_id, _)| id > active_id) {
            continue; // created after the run started
        }
        let path = path.unwrap_or_else(|| dir.join(segment_file_name(id)));
        let active_end = active.and_then(|(active_id, pos)| (active_id == id).then_some(pos));
        // A sealed segment is read as the file is now: the log's mapping
        // may be shorter than the file (a footer is written after the
        // frames, possibly past the capacity the segment was mapped with).
        let seg = match (active_end, maint.log.segment(id)) {
            (Some(_), Some(seg)) => seg,
            (_, registered) => match Segment::open_read_only(&path, id, maint.log.io()) {
                Ok(seg) => Arc::new(seg),
                Err(e) => registered.ok_or(e)?,
            },
        };
        targets.push(Target {
            id,
            path,
            seg,
            active_end,
            tail_in_flux: false,
        });
    }
    if active.is_none() {
        if let Some(newest) = targets.last_mut() {
            newest.tail_in_flux = true;
        }
    }
    Ok(targets)
}

struct LoadedRemoved {
    links: RemovedPredecessors,
    problems: Vec<VerifyProblem>,
}

fn load_removed(path: PathBuf, targets: &[Target]) -> Result<LoadedRemoved, StoreError> {
    let mut out = LoadedRemoved {
        links: RemovedPredecessors::default(),
        problems: Vec::new(),
    };
    let problem = |detail: String| VerifyProblem {
        file: path.clone(),
        offset: 0,
        kind: VerifyProblemKind::RemovedRecord,
        detail,
    };
    match std::fs::read(&path) {
        Ok(bytes) => match removed::decode(&bytes) {
            Ok(record) => out.links = RemovedPredecessors::new(&record),
            Err(e) => out
                .problems
                .push(problem(format!("removed-event record: {e}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !targets.is_empty() {
                out.problems
                    .push(problem("removed-event record is missing".into()));
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(out)
}

/// Events whose hashes are to be recomputed: records decoded by the walk
/// (borrowing the segments' bytes), with their frame offsets, all in one target.
struct HashJob<'t> {
    target: usize,
    events: Vec<(u32, EventRecord<'t>)>,
}

/// Recompute the hashes of the events in the jobs received until the
/// channel is empty and closed.
fn hash_jobs(targets: &[Target], rx: &flume::Receiver<HashJob<'_>>) -> Vec<VerifyProblem> {
    let mut problems = Vec::new();
    for job in rx.iter() {
        if let Some(t) = targets.get(job.target) {
            for (offset, rec) in &job.events {
                check_hashes(t, u64::from(*offset), rec, &mut problems);
            }
        }
    }
    problems
}

/// The stored event hash and content hash against the record's contents.
fn check_hashes(t: &Target, offset: u64, rec: &EventRecord<'_>, out: &mut Vec<VerifyProblem>) {
    if !cfg!(feature = "blake3") {
        return;
    }
    if chain::event_hash(&rec.prev_hash, rec) != rec.event_hash {
        out.push(VerifyProblem {
            file: t.path.clone(),
            offset,
            kind: VerifyProblemKind::EventHash,
            detail: format!(
                "event {:032x}: the stored event hash is not the hash of the event",
                rec.event_id
            ),
        });
    }
    if !rec.redacted && chain::content_hash(rec.payload) != rec.content_hash {
        out.push(VerifyProblem {
            file: t.path.clone(),
            offset,
            kind: VerifyProblemKind::ContentHash,
            detail: format!(
                "event {:032x}: the payload does not match its content hash",
                rec.event_id
            ),
        });
    }
}

/// An entity's newest event so far, in log order.
#[derive(Clone, Copy)]
struct Tail {
    hash: [u8; 32],
    clock: u32,
    /// False when the newest event is not known for sure (it was in a
    /// damaged frame or an incomplete batch): the next link is not judged.
    known: bool,
}

/// The walk over every frame, in log order.
struct Walk<'t> {
    targets: &'t [Target],
    removed: RemovedPredecessors,
    problems: Vec<VerifyProblem>,
    tails: hashbrown::HashMap<Box<str>, Tail>,
    /// Members of the batch being assembled: (target, frame offset, record).
    batch: Vec<(usize, usize, EventRecord<'t>)>,
    last_seq: Option<u64>,
    /// Where each target's checked frames end.
    frames_end: Vec<u64>,
    /// Each target's damaged regions (reported already): `start..end`.
    damaged: Vec<Vec<(u64, u64)>>,
    hash_tx: Option<flume::Sender<HashJob<'t>>>,
    hash_job: Vec<(u32, EventRecord<'t>)>,
    events_checked: u64,
    bytes_checked: u64,
    incomplete_batch_events: u64,
}

/// What the footer of the segment being walked promises.
struct FooterCheck<'f> {
    footer: &'f Footer,
    /// Offset of the footer frame.
    at: u64,
    /// Next entry expected.
    next: usize,
    /// Whether each entry is the last of its entity in the segment (its
    /// hash must be kept).
    is_tail: Vec<bool>,
    /// Disagreements found.
    found: u64,
}

impl<'t> Walk<'t> {
    fn new(
        targets: &'t [Target],
        removed: RemovedPredecessors,
        hash_tx: Option<flume::Sender<HashJob<'t>>>,
    ) -> Self {
        Self {
            targets,
            removed,
            problems: Vec::new(),
            tails: hashbrown::HashMap::new(),
            batch: Vec::new(),
            last_seq: None,
            frames_end: vec![SEGMENT_HEADER_LEN as u64; targets.len()],
            damaged: vec![Vec::new(); targets.len()],
            hash_tx,
            hash_job: Vec::with_capacity(HASH_CHUNK),
            events_checked: 0,
            bytes_checked: 0,
            incomplete_batch_events: 0,
        }
    }

    fn problem(&mut self, file: &Path, offset: u64, kind: VerifyProblemKind, detail: String) {
        self.problems.push(VerifyProblem {
            file: file.to_path_buf(),
            offset,
            kind,
            detail,
        });
    }

    /// Queue an event for hashing.
    fn queue_hash(&mut self, ti: usize, offset: usize, rec: &EventRecord<'t>) {
        self.hash_job.push((offset as u32, rec.clone()));
        if self.hash_job.len() >= HASH_CHUNK {
            self.flush_hash_job(ti);
        }
    }

    fn flush_hash_job(&mut self, ti: usize) {
        if self.hash_job.is_empty() {
            return;
        }
        let Some(tx) = &self.hash_tx else {
            let t = &self.targets[ti];
            for (offset, rec) in &self.hash_job {
                check_hashes(t, u64::from(*offset), rec, &mut self.problems);
            }
            self.hash_job.clear();
            return;
        };
        let events = std::mem::replace(&mut self.hash_job, Vec::with_capacity(HASH_CHUNK));
        // The receiving end lives as long as the walk: sending cannot fail.
        let _ = tx.send(HashJob { target: ti, events });
    }

    /// Check one segment file.
    fn segment(&mut self, ti: usize) {
        let t: &'t Target = &self.targets[ti];
        let bytes = t.bytes();
        // The newest file of a store whose owner crashed (or ran out of
        // space) while creating it: it never held a frame (open removes it).
        let newest = ti + 1 == self.targets.len();
        if newest && t.active_end.is_none() && crate::store::format::frame::all_zero(bytes) {
            return;
        }
        if let Err(detail) = segment::check_header(bytes, t.id) {
            self.problem(&t.path, 0, VerifyProblemKind::SegmentHeader, detail);
        }
        // Where the frames end: at the footer of a sealed segment.
        let (limit, footer) = if t.active_end.is_some() {
            (bytes.len(), None)
        } else {
            self.locate_footer(t, bytes)
        };
        self.bytes_checked += bytes.len().min(SEGMENT_HEADER_LEN) as u64;
        let mut check = footer.as_ref().map(|(at, f)| FooterCheck::new(f, *at));
        let end = self.frames(ti, &bytes[..limit], check.as_mut());
        self.flush_hash_job(ti);
        self.frames_end[ti] = end as u64;
        if let Some(check) = check.as_mut() {
            self.finish_footer(ti, check, end);
        }
    }

    /// Find and decode the footer of a sealed segment. Returns where its
    /// frames end (the footer, or the end of the file) and the footer if it
    /// decodes.
    fn locate_footer(&mut self, t: &Target, bytes: &[u8]) -> (usize, Option<(u64, Footer)>) {
        let content_end = footer::content_end(bytes);
        let Some(at) = footer::locate_before(bytes, content_end) else {
            return (bytes.len(), None);
        };
        let trailer = content_end.saturating_sub(TRAILER_LEN);
        let Some(at_usize) = usize::try_from(at)
            .ok()
            .filter(|&a| a >= SEGMENT_HEADER_LEN && a < trailer)
        else {
            self.problem(
                &t.path,
                trailer as u64,
                VerifyProblemKind::Footer,
                format!("the footer trailer points at offset {at}, outside the segment's frames"),
            );
            return (trailer, None);
        };
        self.bytes_checked += (content_end - at_usize) as u64;
        let region = &bytes[at_usize..trailer];
        let decoded = footer::decode_with_len(region);
        let f = match decoded {
            Ok((f, len)) => {
                if len != region.len() {
                    self.problem(
                        &t.path,
                        at,
                        VerifyProblemKind::Footer,
                        format!(
                            "{} bytes between the footer frame and its trailer",
                            region.len() - len
                        ),
                    );
                }
                f
            }
            Err(e) => {
                self.problem(
                    &t.path,
                    at,
                    VerifyProblemKind::Footer,
                    format!("footer does not decode: {e}"),
                );
                return (at_usize, None);
            }
        };
        if f.segment_id != t.id || f.frames_end != at {
            self.problem(
                &t.path,
                at,
                VerifyProblemKind::Footer,
                format!(
                    "footer names segment {} with frames ending at {}",
                    f.segment_id, f.frames_end
                ),
            );
        }
        (at_usize, Some((at, f)))
    }

    /// Walk the frames of `buf` (a segment up to where its frames must end).
    /// Returns where they end.
    fn frames(
        &mut self,
        ti: usize,
        buf: &'t [u8],
        mut check: Option<&mut FooterCheck<'_>>,
    ) -> usize {
        let t = &self.targets[ti];
        let first = SEGMENT_HEADER_LEN.min(buf.len());
        let clamp = |at: usize| at.clamp(first, buf.len());
        let mut end = first;
        for item in FrameScan::new(buf, SEGMENT_HEADER_LEN) {
            match item {
                Scanned::Footer { at, len } => {
                    let detail = if check.is_some() {
                        format!("a second footer frame ({len} bytes) among the frames")
                    } else if t.active_end.is_some() {
                        format!("a footer frame ({len} bytes) in the active segment")
                    } else {
                        format!("a footer frame ({len} bytes) without its trailer")
                    };
                    self.problem(&t.path, at as u64, VerifyProblemKind::Footer, detail);
                    if check.is_none() {
                        return clamp(at);
                    }
                    end = at + len;
                }
                Scanned::Event { at, len, record } => {
                    self.bytes_checked += len as u64;
                    self.events_checked += 1;
                    match record {
                        Ok(rec) => {
                            if let Some(c) = check.as_deref_mut() {
                                c.frame(self, ti, at, len, Some(&rec));
                            }
                            self.queue_hash(ti, at, &rec);
                            self.take(ti, at, &rec);
                        }
                        Err(e) => {
                            self.problem(
                                &t.path,
                                at as u64,
                                VerifyProblemKind::RecordUndecodable,
                                format!("frame of {len} bytes: {e}"),
                            );
                            self.damaged[ti].push((at as u64, (at + len) as u64));
                            if let Some(c) = check.as_deref_mut() {
                                c.frame(self, ti, at, len, None);
                            }
                        }
                    }
                    end = at + len;
                }
                Scanned::Damaged { at, resume, error } => {
                    self.damaged_region(ti, buf, at, resume, &error, true);
                    end = resume;
                }
                // A footer cut short by a crash or a full disk: no frame is
                // lost, open ignores it and the next writable open writes
                // it again.
                Scanned::End {
                    at,
                    how: End::Clean | End::TornFooter,
                } => return clamp(at),
                // A frame being written (or cut by a crash) at the end of a
                // segment its owner may be writing.
                Scanned::End {
                    at,
                    how: End::TornTail(_) | End::Unsettled(_),
                } if t.tail_in_flux => return clamp(at),
                Scanned::End {
                    at,
                    how: End::TornTail(error) | End::Unsettled(error),
                } => {
                    self.damaged_region(ti, buf, at, buf.len(), &error, false);
                    return buf.len();
                }
            }
        }
        clamp(end)
    }

    /// Report the damaged region `at..to` of target `ti` (`resumes`: a
    /// valid frame follows it).
    fn damaged_region(
        &mut self,
        ti: usize,
        buf: &'t [u8],
        at: usize,
        to: usize,
        error: &FormatError,
        resumes: bool,
    ) {
        let t = &self.targets[ti];
        let kind = match error {
            FormatError::Checksum(_) => VerifyProblemKind::FrameChecksum,
            _ => VerifyProblemKind::FrameDamaged,
        };
        let skipped = to - at;
        self.bytes_checked += skipped as u64;
        let detail = if resumes {
            format!("{error}; {skipped} bytes skipped to the next valid frame")
        } else {
            format!("{error}; no valid frame in the {skipped} bytes to the end")
        };
        self.problem(&t.path, at as u64, kind, detail);
        self.damaged[ti].push((at as u64, to as u64));
        // The chain of the damaged event's entity cannot be followed
        // through it; if its record still reads, say which entity that is
        // rather than report its next link. (Damage does not decide whether
        // a batch completes: the frames after it do, as at open.)
        if let Some(r) = damaged_record(buf, at, to) {
            self.unknown_tail(r.entity, r.clock);
        }
    }

    /// Entries of the footer not matched by a frame, and where the frames end.
    fn finish_footer(&mut self, ti: usize, check: &mut FooterCheck<'_>, end: usize) {
        let t = &self.targets[ti];
        let entries = &check.footer.entries;
        while let Some(e) = entries.get(check.next) {
            let i = check.next;
            check.next += 1;
            check.missing_frame(self, ti, t, i, e);
        }
        if end as u64 != check.at {
            let detail = format!("the frames end at {end}, the footer is at {}", check.at);
            check.disagree(self, t, detail);
        }
        if check.found > MAX_LISTED {
            let detail = format!(
                "{} more disagreements with the frames not listed",
                check.found - MAX_LISTED
            );
            self.problem(&t.path, check.at, VerifyProblemKind::Footer, detail);
        }
    }

    /// Take one decodable event, in log order: batches are assembled first,
    /// by the batch rule recovery follows (`format::scan::batch_step`), so
    /// members of a batch that never completed are not part of any chain,
    /// as recovery never indexes them.
    fn take(&mut self, ti: usize, pos: usize, rec: &EventRecord<'t>) {
        let held = self
            .batch
            .last()
            .map(|(_, _, last)| (self.batch.len(), Marks::of(last)));
        let (discard, take) = batch_step(held, Marks::of(rec));
        if discard {
            self.discard_batch();
        }
        match take {
            Take::Now => self.apply(ti, pos, rec),
            Take::Hold => self.batch.push((ti, pos, rec.clone())),
            Take::Complete => {
                let mut members = std::mem::take(&mut self.batch);
                for (mti, mpos, r) in &members {
                    self.apply(*mti, *mpos, r);
                }
                members.clear();
                self.batch = members;
                self.apply(ti, pos, rec);
            }
            Take::Orphan => {
                // A member without the start of its batch.
                self.incomplete_batch_events += 1;
                self.unknown_tail(rec.entity, rec.clock);
            }
        }
    }

    /// Drop the batch being assembled: it never completed. Its members are
    /// not part of the chain; the next link of their entities is not judged
    /// (it follows the batch if the batch was damaged, or what came before
    /// it if the batch's append failed).
    fn discard_batch(&mut self) {
        self.incomplete_batch_events += self.batch.len() as u64;
        let mut members = std::mem::take(&mut self.batch);
        for (_, _, r) in &members {
            self.unknown_tail(r.entity, r.clock);
        }
        members.clear();
        self.batch = members;
    }

    /// The newest event of `entity` is not known for sure.
    fn unknown_tail(&mut self, entity: &str, clock: u32) {
        let tail = Tail {
            hash: [0; 32],
            clock,
            known: false,
        };
        match self.tails.get_mut(entity) {
            Some(t) => *t = tail,
            None => {
                self.tails.insert(entity.into(), tail);
            }
        }
    }

    /// The end of the log: a batch still open never completed.
    fn end_of_log(&mut self) {
        self.discard_batch();
    }

    /// Check an event's place in the log and in its entity's chain.
    fn apply(&mut self, ti: usize, pos: usize, r: &EventRecord<'_>) {
        let t = &self.targets[ti];
        if let Some(last) = self.last_seq {
            if r.global_seq <= last {
                self.problem(
                    &t.path,
                    pos as u64,
                    VerifyProblemKind::SequenceOrder,
                    format!(
                        "event {:032x}: global sequence {} is not after {last}",
                        r.event_id, r.global_seq
                    ),
                );
            }
        }
        self.last_seq = Some(self.last_seq.map_or(r.global_seq, |l| l.max(r.global_seq)));
        let removed = &self.removed;
        let broken = match self.tails.get_mut(r.entity) {
            Some(tail) => {
                let ok = !tail.known
                    || (r.prev_hash == tail.hash && Some(r.clock) == tail.clock.checked_add(1))
                    || (r.clock > tail.clock
                        && (removed.before(r.entity, r.clock) == Some(r.prev_hash)));
                let prev = *tail;
                *tail = Tail {
                    hash: r.event_hash,
                    clock: r.clock,
                    known: true,
                };
                (!ok).then(|| {
                    format!(
                        "event {:032x} of {:?} (clock {}): prev_hash {} does not link to the entity's previous event (clock {}, hash {})",
                        r.event_id,
                        r.entity,
                        r.clock,
                        short_hex(&r.prev_hash),
                        prev.clock,
                        short_hex(&prev.hash)
                    )
                })
            }
            None => {
                let ok = (r.prev_hash == [0; 32] && r.clock == 0)
                    || (removed.before(r.entity, r.clock) == Some(r.prev_hash));
                self.tails.insert(
                    r.entity.into(),
                    Tail {
                        hash: r.event_hash,
                        clock: r.clock,
                        known: true,
                    },
                );
                (!ok).then(|| {
                    format!(
                        "event {:032x} of {:?} (clock {}): the entity's first event, but prev_hash is {}",
                        r.event_id,
                        r.entity,
                        r.clock,
                        short_hex(&r.prev_hash)
                    )
                })
            }
        };
        if let Some(detail) = broken {
            self.problem(&t.path, pos as u64, VerifyProblemKind::ChainBroken, detail);
        }
    }

    /// Whether `start..end` of target `ti` overlaps a damaged region.
    fn in_damage(&self, ti: usize, start: u64, end: u64) -> bool {
        self.damaged[ti].iter().any(|&(s, e)| start < e && s < end)
    }

    /// Check the checkpoint's covered segments against the frames, and add
    /// what was found about its records (except about damaged frames,
    /// reported as such already).
    fn finish_checkpoint(&mut self, found: LoadedCheckpoint) {
        let f = match found {
            LoadedCheckpoint::Absent => return,
            LoadedCheckpoint::Undecodable(p) => {
                self.problems.push(p);
                return;
            }
            LoadedCheckpoint::Found(f) => f,
        };
        let path = f.path;
        let mut found = 0u64;
        let mut disagree = |walk: &mut Self, offset: u64, detail: String| {
            found += 1;
            if found <= MAX_LISTED {
                walk.problem(&path, offset, VerifyProblemKind::Checkpoint, detail);
            }
        };
        let targets = self.targets;
        for (i, s) in f.segments.iter().enumerate() {
            let at = SEGMENTS_AT + 48 * i as u64;
            let Some(ti) = find_target(targets, s.segment_id) else {
                let detail = format!("covers segment {}, which is not in the store", s.segment_id);
                disagree(self, at, detail);
                continue;
            };
            let end = self.frames_end[ti];
            if s.frames_end > end {
                let detail = format!(
                    "covers segment {} up to {}, its frames end at {end}",
                    s.segment_id, s.frames_end
                );
                disagree(self, at, detail);
            }
            let last_end = s.last_offset.saturating_add(u64::from(s.last_length));
            if s.last_length > 0 && !self.in_damage(ti, s.last_offset, last_end) {
                let bytes = targets[ti].bytes();
                let holds = check_last_frame(s, end, |offset, length| {
                    usize::try_from(offset)
                        .ok()
                        .and_then(|o| bytes.get(o..o.checked_add(length)?))
                        .map(std::borrow::Cow::Borrowed)
                        .ok_or_else(|| "beyond the end of the segment".to_owned())
                });
                if let Err(why) = holds {
                    let detail = format!(
                        "segment {} ({} bytes of frames, last frame event {:032x}): {why}",
                        s.segment_id, s.frames_end, s.last_event_id
                    );
                    disagree(self, at, detail);
                }
            }
        }
        if let Some(last) = f.segments.last().map(|s| s.segment_id) {
            for t in targets.iter().filter(|t| t.id <= last) {
                if !f.segments.iter().any(|s| s.segment_id == t.id) {
                    disagree(self, 0, format!("does not cover segment {}", t.id));
                }
            }
        }
        for (frame, p) in f.records {
            if frame.is_some_and(|(ti, start, end)| self.in_damage(ti, start, end)) {
                continue;
            }
            disagree(self, p.offset, p.detail);
        }
        let more = found.saturating_sub(MAX_LISTED) + f.more;
        if more > 0 {
            let detail = format!("{more} more disagreements with the frames not listed");
            self.problem(&path, 0, VerifyProblemKind::Checkpoint, detail);
        }
    }
}

/// Offset of the first covered-segment entry in the checkpoint file: the
/// 24-byte header, the next sequence (8) and the segment count (4).
const SEGMENTS_AT: u64 = 36;
/// Record disagreements kept for the report (before those about damaged
/// frames are dropped); the rest are only counted.
const MAX_KEPT: usize = 4096;

/// The checkpoint as found.
enum LoadedCheckpoint {
    Absent,
    Undecodable(VerifyProblem),
    Found(CheckpointFindings),
}

/// What the checkpoint's records say about the frames.
struct CheckpointFindings {
    path: PathBuf,
    segments: Vec<CoveredSegment>,
    /// Records that disagree with the frames, with the target and frame
    /// range they point at (when that target exists).
    records: Vec<(Option<FrameRange>, VerifyProblem)>,
    /// Disagreements beyond those kept in `records`.
    more: u64,
}

/// A frame of a target: (target index, start, end).
type FrameRange = (usize, u64, u64);

fn find_target(targets: &[Target], id: u64) -> Option<usize> {
    targets.binary_search_by_key(&id, |t| t.id).ok()
}

/// Decode the checkpoint, if there is one, and check each record against
/// the frame it points at. Runs beside the walk.
/// `pending`: a compaction is committed, so the checkpoint is about to be
/// deleted and does not describe the store.
fn check_checkpoint(
    dir: &Path,
    targets: &[Target],
    pending: bool,
) -> Result<LoadedCheckpoint, StoreError> {
    if pending {
        return Ok(LoadedCheckpoint::Absent);
    }
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = match map_whole_file(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LoadedCheckpoint::Absent),
        Err(e) => return Err(e.into()),
    };
    let cp = match checkpoint::decode(&bytes) {
        Ok(cp) => cp,
        Err(e) => {
            return Ok(LoadedCheckpoint::Undecodable(VerifyProblem {
                file: path,
                offset: 0,
                kind: VerifyProblemKind::Checkpoint,
                detail: format!("checkpoint does not decode: {e}"),
            }))
        }
    };
    let mut records = Vec::new();
    let mut more = 0u64;
    // Records: 48 bytes each at the end of the file.
    let n = cp.index.len();
    let records_at = (bytes.len() as u64).saturating_sub(48 * u64::from(n));
    let mut cached: Option<usize> = None;
    for slot in 0..n {
        let pos = cp.index.disk_pos(slot);
        let id = cp.index.event_id(slot);
        let (entity, scope, kind) = cp.index.coordinate_parts(slot);
        let ti = match cached.filter(|&i| targets[i].id == pos.segment_id) {
            Some(i) => Some(i),
            None => find_target(targets, pos.segment_id),
        };
        cached = ti;
        let result = match ti {
            None => Err("its segment is not in the store".to_owned()),
            Some(ti) => event_at(targets[ti].bytes(), pos.offset, pos.length).and_then(
                |(fid, fkind, fentity, fscope)| {
                    let mut diffs = Vec::new();
                    if fid != id {
                        diffs.push(format!("the frame holds event {fid:032x}"));
                    }
                    if fkind != kind.raw() {
                        diffs.push(format!("kind {fkind:#06x} in the frame"));
                    }
                    if fentity != entity || fscope != scope {
                        diffs.push(format!("coordinate {fentity:?}/{fscope:?} in the frame"));
                    }
                    if diffs.is_empty() {
                        Ok(())
                    } else {
                        Err(diffs.join(", "))
                    }
                },
            ),
        };
        let Err(why) = result else {
            continue;
        };
        if records.len() >= MAX_KEPT {
            more += 1;
            continue;
        }
        let frame = ti.map(|ti| (ti, pos.offset, pos.offset + u64::from(pos.length)));
        records.push((
            frame,
            VerifyProblem {
                file: path.clone(),
                offset: records_at + 48 * u64::from(slot),
                kind: VerifyProblemKind::Checkpoint,
                detail: format!(
                    "record {slot} (event {id:032x}, kind {:#06x}) at segment {} offset {} ({} bytes): {why}",
                    kind.raw(),
                    pos.segment_id,
                    pos.offset,
                    pos.length
                ),
            },
        ));
    }
    Ok(LoadedCheckpoint::Found(CheckpointFindings {
        path,
        segments: cp.segments,
        records,
        more,
    }))
}

/// The record of a damaged frame at `pos`, if its length field agrees with
/// where the damage ends (`end`: the next valid frame) and its body decodes.
/// Not to be trusted: only to tell which entity's chain it interrupts.
fn damaged_record(buf: &[u8], pos: usize, end: usize) -> Option<EventRecord<'_>> {
    let len = buf.get(pos + 4..pos + 8)?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let body_end = pos.checked_add(12)?.checked_add(len)?;
    if body_end > end || !all_zero(buf.get(body_end..end)?) {
        return None;
    }
    decode_event(buf.get(pos + 12..body_end)?).ok()
}

/// The event id, visible kind, entity and scope of the event frame of
/// exactly `length` bytes at `offset`.
fn event_at(bytes: &[u8], offset: u64, length: u32) -> Result<(u128, u16, &str, &str), String> {
    let frame = usize::try_from(offset)
        .ok()
        .and_then(|o| bytes.get(o..o.checked_add(length as usize)?))
        .ok_or("beyond the end of the segment")?;
    let r = event_in_frame(frame)?;
    Ok((r.event_id, r.visible_kind(), r.entity, r.scope))
}

impl<'f> FooterCheck<'f> {
    fn new(footer: &'f Footer, at: u64) -> Self {
        let mut last: hashbrown::HashMap<&str, usize> = hashbrown::HashMap::new();
        for (i, e) in footer.entries.iter().enumerate() {
            if let Some((entity, _)) = footer.coords.get(e.coord as usize) {
                last.insert(entity.as_str(), i);
            }
        }
        let mut is_tail = vec![false; footer.entries.len()];
        for i in last.into_values() {
            is_tail[i] = true;
        }
        Self {
            footer,
            at,
            next: 0,
            is_tail,
            found: 0,
        }
    }

    /// Entry `i` names a frame the walk did not find: a problem, unless
    /// it lies in a damaged region (reported already).
    fn missing_frame(
        &mut self,
        walk: &mut Walk<'_>,
        ti: usize,
        t: &Target,
        i: usize,
        e: &crate::store::format::footer::FooterEntry,
    ) {
        let (start, end) = (
            u64::from(e.offset),
            u64::from(e.offset) + u64::from(e.length),
        );
        if walk.in_damage(ti, start, end) {
            return;
        }
        let detail = format!(
            "entry {i} lists a frame at {} ({} bytes) that the segment does not hold",
            e.offset, e.length
        );
        self.disagree(walk, t, detail);
    }

    fn disagree(&mut self, walk: &mut Walk<'_>, t: &Target, detail: String) {
        self.found += 1;
        if self.found <= MAX_LISTED {
            walk.problem(&t.path, self.at, VerifyProblemKind::Footer, detail);
        }
    }

    /// The next frame of target `ti`, at `pos`: it must be the footer's
    /// next entry.
    fn frame(
        &mut self,
        walk: &mut Walk<'_>,
        ti: usize,
        pos: usize,
        len: usize,
        rec: Option<&EventRecord<'_>>,
    ) {
        let t = &walk.targets[ti];
        let entries = &self.footer.entries;
        // Entries before this frame: their frames are missing, unless they
        // lie in the damaged region just skipped (reported already).
        while let Some(e) = entries.get(self.next).filter(|e| (e.offset as usize) < pos) {
            let i = self.next;
            self.next += 1;
            self.missing_frame(walk, ti, t, i, e);
        }
        match entries.get(self.next).filter(|e| e.offset as usize == pos) {
            Some(e) => {
                let i = self.next;
                self.next += 1;
                if let Some(r) = rec {
                    let diffs = entry_diffs(e, &self.footer.coords, len, r, self.is_tail[i]);
                    if !diffs.is_empty() {
                        let detail = format!(
                            "entry {i} disagrees with the frame at {pos}: {}",
                            diffs.join(", ")
                        );
                        self.disagree(walk, t, detail);
                    }
                }
            }
            None => {
                let detail = format!("the frame at {pos} ({len} bytes) is not listed");
                self.disagree(walk, t, detail);
            }
        }
    }
}

/// The fields in which a footer entry disagrees with its frame.
fn entry_diffs(
    e: &FooterEntry,
    coords: &[(String, String)],
    len: usize,
    r: &EventRecord<'_>,
    is_tail: bool,
) -> Vec<&'static str> {
    let mut d = Vec::new();
    if e.length as usize != len {
        d.push("length");
    }
    if e.event_id != r.event_id {
        d.push("event id");
    }
    if e.global_seq != r.global_seq {
        d.push("global sequence");
    }
    if e.timestamp_us != r.timestamp_us {
        d.push("timestamp");
    }
    if e.correlation_id != r.correlation_id {
        d.push("correlation id");
    }
    if e.causation_id != r.causation_id {
        d.push("causation id");
    }
    if e.clock != r.clock {
        d.push("clock");
    }
    if e.kind != r.visible_kind() {
        d.push("kind");
    }
    if e.hlc_counter != r.hlc_counter {
        d.push("HLC counter");
    }
    if e.flags != r.flags {
        d.push("flags");
    }
    if e.batch_size != r.batch_size || e.batch_index != r.batch_index {
        d.push("batch marks");
    }
    match coords.get(e.coord as usize) {
        Some((entity, scope)) if entity == r.entity && scope == r.scope => {}
        _ => d.push("coordinate"),
    }
    if e.event_hash != [0; 32] && e.event_hash != r.event_hash {
        d.push("event hash");
    }
    if is_tail && e.event_hash == [0; 32] && r.event_hash != [0; 32] {
        d.push("the entity's last event hash is not kept");
    }
    d
}

fn short_hex(h: &[u8; 32]) -> String {
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    //! Chains forged with the crate's own encoders: links that no public
    //! API can produce.

    use super::*;
    use crate::store::format::record::EventRecord;
    use crate::store::format::removed::{RemovedEntry, RemovedRecord};
    use crate::store::{Store, StoreConfig};

    const PAYLOAD: &[u8] = b"\x92\x01\x02";

    /// An event of `entity` at `clock`, linked to `prev`, with a correct own hash.
    fn event(entity: &str, clock: u32, seq: u64, prev: [u8; 32]) -> EventRecord<'_> {
        let mut r = EventRecord {
            flags: 0,
            kind: 0x1001,
            clock,
            global_seq: seq,
            timestamp_us: 1_700_000_000_000_000 + seq as i64,
            hlc_counter: 0,
            batch_size: 0,
            batch_index: 0,
            event_id: 0x5000 + u128::from(seq),
            correlation_id: 0x5000 + u128::from(seq),
            causation_id: None,
            prev_hash: prev,
            event_hash: [0; 32],
            content_hash: chain::content_hash(PAYLOAD),
            entity,
            scope: "s",
            payload_len: PAYLOAD.len() as u32,
            redacted: false,
            payload: PAYLOAD,
            payload_version: 0,
        };
        r.event_hash = chain::event_hash(&prev, &r);
        r
    }

    /// A one-segment store holding `records` and the removed-event record
    /// `removed`; returns the offset of each frame.
    fn store_of(
        dir: &Path,
        records: &[EventRecord<'_>],
        removed_entries: Vec<RemovedEntry>,
    ) -> Vec<u64> {
        let mut file = segment::SegmentHeader {
            segment_id: 1,
            created_us: 0,
        }
        .encode()
        .to_vec();
        let mut offsets = Vec::new();
        for r in records {
            offsets.push(file.len() as u64);
            let at = file.len();
            file.resize(at + r.frame_len(), 0);
            r.write_frame(&mut file[at..]);
        }
        file.resize(file.len() + 1000, 0);
        std::fs::write(dir.join(segment_file_name(1)), &file).unwrap();
        let removed = RemovedRecord {
            epoch: u64::from(!removed_entries.is_empty()),
            entries: removed_entries,
        };
        std::fs::write(dir.join(REMOVED_FILE), removed::encode(&removed)).unwrap();
        offsets
    }

    fn verify_dir(dir: &Path) -> VerifyReport {
        let store = Store::open_read_only(StoreConfig::new(dir)).unwrap();
        store.verify().unwrap()
    }

    fn kinds(report: &VerifyReport) -> Vec<(VerifyProblemKind, u64)> {
        report
            .problems()
            .iter()
            .map(|p| (p.kind, p.offset))
            .collect()
    }

    #[test]
    fn a_broken_link_with_a_valid_own_hash_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let e0 = event("a", 0, 0, [0; 32]);
        let e1 = event("a", 1, 1, e0.event_hash);
        let other = event("b", 0, 2, [0; 32]);
        // Links to an event that never existed, hash computed over that link.
        let e2 = event("a", 2, 3, [7; 32]);
        let e3 = event("a", 3, 4, e2.event_hash);
        // A wrong clock with the right link.
        let e4 = event("a", 9, 5, e3.event_hash);
        // A first event that claims a predecessor.
        let c0 = event("c", 0, 6, [9; 32]);
        let at = store_of(dir.path(), &[e0, e1, other, e2, e3, e4, c0], vec![]);
        let report = verify_dir(dir.path());
        assert_eq!(
            kinds(&report),
            vec![
                (VerifyProblemKind::ChainBroken, at[3]),
                (VerifyProblemKind::ChainBroken, at[5]),
                (VerifyProblemKind::ChainBroken, at[6]),
            ],
            "{report}"
        );
        assert!(report.problems()[0].file.ends_with(segment_file_name(1)));
        assert!(report.problems()[0].detail.contains("\"a\""), "{report}");
    }

    #[test]
    fn a_link_to_a_removed_event_of_the_same_entity_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let gone = event("a", 4, 4, [3; 32]);
        let removed = |entity: &str| RemovedEntry {
            event_id: gone.event_id,
            global_seq: 4,
            kind: gone.kind,
            clock: 4,
            timestamp_us: gone.timestamp_us,
            event_hash: gone.event_hash,
            entity: entity.into(),
            scope: "s".into(),
        };
        let e5 = event("a", 5, 5, gone.event_hash);
        let e6 = event("a", 6, 6, e5.event_hash);
        store_of(dir.path(), &[e5.clone(), e6.clone()], vec![removed("a")]);
        let report = verify_dir(dir.path());
        assert!(report.is_clean(), "{report}");
        // The same hash removed from another entity is no link for this one.
        let dir = tempfile::tempdir().unwrap();
        let at = store_of(dir.path(), &[e5, e6], vec![removed("z")]);
        let report = verify_dir(dir.path());
        assert_eq!(
            kinds(&report),
            vec![(VerifyProblemKind::ChainBroken, at[0])],
            "{report}"
        );
    }

    #[test]
    fn a_redacted_record_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let e0 = event("a", 0, 0, [0; 32]);
        let mut e1 = event("a", 1, 1, e0.event_hash);
        e1.redacted = true;
        e1.payload = b"";
        let e2 = event("a", 2, 2, e1.event_hash);
        let at = store_of(dir.path(), &[e0, e1.clone(), e2], vec![]);
        let report = verify_dir(dir.path());
        assert!(report.is_clean(), "{report}");
        // Its hash still covers what it kept (here: the clock).
        let dir = tempfile::tempdir().unwrap();
        let mut forged = e1;
        forged.hlc_counter = 0;
        forged.clock = 7;
        store_of(dir.path(), &[forged], vec![]);
        let report = verify_dir(dir.path());
        assert!(
            report
                .problems()
                .iter()
                .any(|p| p.kind == VerifyProblemKind::EventHash && p.offset == at[0]),
            "{report}"
        );
    }

    #[test]
    fn an_incomplete_batch_is_not_part_of_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let e0 = event("a", 0, 0, [0; 32]);
        // A batch of two whose second frame never made it (a failed append).
        let mut b0 = event("a", 1, 1, e0.event_hash);
        b0.batch_size = 2;
        b0.event_hash = chain::event_hash(&b0.prev_hash, &b0);
        // The next append continues from e0, as the index does.
        let e1 = event("a", 1, 2, e0.event_hash);
        // A complete batch: both members chain.
        let mut c0 = event("a", 2, 3, e1.event_hash);
        c0.batch_size = 2;
        let mut c1 = event("b", 0, 4, [0; 32]);
        c1.batch_size = 2;
        c1.batch_index = 1;
        let e2 = event("a", 3, 5, c0.event_hash);
        store_of(dir.path(), &[e0, b0, e1, c0, c1, e2], vec![]);
        let report = verify_dir(dir.path());
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.incomplete_batch_events, 1);
        assert_eq!(report.events_checked, 6);
    }

    /// Damage between two members of a batch does not decide whether the
    /// batch completes (the frames after it do): open serves this batch,
    /// and `verify` counts none of its members as incomplete, even though
    /// the damaged frame's record still reads.
    #[test]
    fn damage_between_batch_members_is_judged_as_open_judges_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut b0 = event("a", 0, 0, [0; 32]);
        b0.batch_size = 2;
        b0.event_hash = chain::event_hash(&b0.prev_hash, &b0);
        let stray = event("z", 0, 1, [0; 32]);
        let mut b1 = event("b", 0, 2, [0; 32]);
        b1.batch_size = 2;
        b1.batch_index = 1;
        b1.event_hash = chain::event_hash(&b1.prev_hash, &b1);
        let at = store_of(dir.path(), &[b0, stray, b1], vec![]);
        // Break the stray frame's checksum only (its record still decodes).
        let path = dir.path().join(segment_file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at[1] as usize + 8] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        // (Writable: a read-only open stops at damage in the newest
        // segment, which its owner may be writing.)
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let served: Vec<u64> = store
            .query(&crate::coordinate::Region::all())
            .iter()
            .map(|e| e.global_sequence)
            .collect();
        assert_eq!(served, vec![0, 2], "open serves the batch");
        assert_eq!(store.diagnostics().recovery.discarded_batch_events, 0);
        let report = store.verify().unwrap();
        assert_eq!(report.incomplete_batch_events, 0, "{report}");
        assert_eq!(
            kinds(&report),
            vec![(VerifyProblemKind::FrameChecksum, at[1])],
            "{report}"
        );
    }

    #[test]
    fn sequences_must_increase() {
        let dir = tempfile::tempdir().unwrap();
        let e0 = event("a", 0, 5, [0; 32]);
        let b0 = event("b", 0, 5, [0; 32]);
        let at = store_of(dir.path(), &[e0, b0], vec![]);
        let report = verify_dir(dir.path());
        assert_eq!(
            kinds(&report),
            vec![(VerifyProblemKind::SequenceOrder, at[1])],
            "{report}"
        );
    }
}
