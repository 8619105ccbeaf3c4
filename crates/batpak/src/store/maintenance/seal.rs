//! Footers: built from a sealed segment's frames and written after them, by
//! a background thread (`batpak-sealer`) so rotation never waits for them.
//!
//! Footers are optional (open scans a segment without one, and a writable
//! open queues it again), so closing does not wait for the whole queue:
//! the thread finishes the footer in hand and at most
//! `writer.shutdown_drain_limit` more, then ends, leaving the rest to the
//! next open. It never grows the active segment (that is `write::grower`'s
//! job, which must not wait behind the maintenance lock a footer needs).

use crate::store::config::SyncMode;
use crate::store::format::footer::{Footer, FooterEntry};
use crate::store::format::record::EventRecord;
use crate::store::format::scan::{End, FrameScan, Scanned};
use crate::store::format::segment::{segment_file_name, SEGMENT_HEADER_LEN};
use crate::store::log::{InjectionPoint, Log, SegmentIo};
use crate::store::{Shared, StoreError};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the sealer waits for the maintenance lock before it looks
/// again whether the store is closing.
const LOCK_PATIENCE: Duration = Duration::from_millis(20);

/// What [`seal_segment`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Sealed {
    /// Wrote the footer.
    Written,
    /// Nothing to do: the segment has its footer, or no longer exists.
    Already,
    /// Abandoned while the footer was being built; nothing written.
    Stopped,
}

/// Write the footer of sealed segment `id`. Does nothing if it already has
/// one. Refuses (and leaves the segment to be scanned at open) if any frame
/// is damaged: a footer describes intact frames only. Gives up, writing
/// nothing, as soon as it sees `abandon` raised.
pub(crate) fn seal_segment(log: &Log, id: u64, abandon: &AtomicBool) -> Result<Sealed, StoreError> {
    // Gone: a compaction merged it into a segment that has its footer.
    let Some(seg) = log.segment(id) else {
        return Ok(Sealed::Already);
    };
    let bytes = seg.bytes();
    let mut footer = FooterBuilder::default();
    // A footer describes intact frames only: any damage refuses it.
    let refuse = |at: usize, e: &dyn std::fmt::Display| {
        StoreError::corrupt(id, format!("sealing: frame at {at}: {e}"))
    };
    let mut pos = SEGMENT_HEADER_LEN;
    for item in FrameScan::new(bytes, SEGMENT_HEADER_LEN) {
        if abandon.load(Ordering::Relaxed) {
            return Ok(Sealed::Stopped);
        }
        match item {
            Scanned::Event {
                at,
                len,
                record: Ok(r),
            } => footer.push(at as u64, len, &r),
            Scanned::Event {
                at, record: Err(e), ..
            } => return Err(refuse(at, &e)),
            Scanned::Footer { .. } => return Ok(Sealed::Already),
            Scanned::Damaged { at, error, .. } => return Err(refuse(at, &error)),
            Scanned::End {
                at,
                how: End::Clean,
            } => pos = at,
            Scanned::End { at, how } => return Err(refuse(at, &how)),
        }
    }
    let bytes_out = footer.encode(id, pos as u64);
    seg.release_pages();
    // A separate handle: the segment may be mapped from a read-only descriptor.
    let path = log.dir().join(segment_file_name(id));
    let io = log.io();
    let file = io.open(&path, true)?;
    io.write_at(&file, &path, &bytes_out, pos as u64, None)?;
    io.sync(&file, &path, SyncMode::SyncData, None, None)?;
    seg.note_synced(pos as u64 + bytes_out.len() as u64);
    io.at(InjectionPoint::FooterWritten)?;
    Ok(Sealed::Written)
}

/// The footer of a segment, gathered frame by frame.
#[derive(Default)]
pub(crate) struct FooterBuilder<'a> {
    coords: Vec<(String, String)>,
    coord_ids: hashbrown::HashMap<(&'a str, &'a str), u32>,
    entries: Vec<FooterEntry>,
    /// Entry index of each entity's last event.
    last_of_entity: hashbrown::HashMap<&'a str, u32>,
}

impl<'a> FooterBuilder<'a> {
    /// Add the event frame at `offset`, `len` bytes long, holding `r`.
    pub(crate) fn push(&mut self, offset: u64, len: usize, r: &EventRecord<'a>) {
        let coords = &mut self.coords;
        let coord = *self
            .coord_ids
            .entry((r.entity, r.scope))
            .or_insert_with(|| {
                coords.push((r.entity.to_owned(), r.scope.to_owned()));
                coords.len() as u32 - 1
            });
        self.last_of_entity
            .insert(r.entity, self.entries.len() as u32);
        self.entries.push(FooterEntry {
            offset: offset as u32,
            length: len as u32,
            global_seq: r.global_seq,
            timestamp_us: r.timestamp_us,
            event_id: r.event_id,
            correlation_id: r.correlation_id,
            causation_id: r.causation_id,
            event_hash: r.event_hash,
            clock: r.clock,
            coord,
            kind: r.visible_kind(),
            hlc_counter: r.hlc_counter,
            flags: r.flags,
            batch_size: r.batch_size,
            batch_index: r.batch_index,
        });
    }

    /// The footer frame and trailer, to be written at `frames_end`. The last
    /// entry of each entity keeps its hash (what its next append chains onto).
    pub(crate) fn encode(self, segment_id: u64, frames_end: u64) -> Vec<u8> {
        let mut tails: Vec<u32> = self.last_of_entity.into_values().collect();
        tails.sort_unstable();
        Footer {
            segment_id,
            frames_end,
            coords: self.coords,
            entries: self.entries,
        }
        .encode(&tails)
    }
}

/// The queue of sealed segments waiting for their footer, drained by the
/// `batpak-sealer` thread.
#[derive(Default)]
pub(crate) struct Sealer {
    tx: parking_lot::Mutex<Option<flume::Sender<u64>>>,
    /// Raised when the store closes.
    stop: AtomicBool,
    /// Queued footers the thread may still start once stopped.
    drain_left: AtomicUsize,
    /// Raised with a drain limit of 0: drop even the footer being built.
    abandon: AtomicBool,
    /// Segments queued or being sealed.
    pending: AtomicUsize,
}

impl Sealer {
    /// Start the thread with `backlog` (sealed segments found without a
    /// footer at open) already queued. It holds the shared state, not the
    /// `Store`, and ends once [`Sealer::stop`] is called (after at most the
    /// drain it allows).
    pub(crate) fn spawn(shared: Arc<Shared>, backlog: Vec<u64>) -> std::io::Result<JoinHandle<()>> {
        let (tx, rx) = flume::unbounded::<u64>();
        shared
            .sealer
            .pending
            .fetch_add(backlog.len(), Ordering::AcqRel);
        for id in backlog {
            let _ = tx.send(id);
        }
        *shared.sealer.tx.lock() = Some(tx);
        let mut builder = std::thread::Builder::new().name("batpak-sealer".into());
        if let Some(size) = shared.config.writer.stack_size {
            builder = builder.stack_size(size);
        }
        builder.spawn(move || {
            let footers = Footers {
                log: &shared.log,
                maintenance: &shared.maintenance,
                sealer: &shared.sealer,
            };
            run(&footers, &rx);
        })
    }

    /// Queue a sealed segment for its footer.
    pub(crate) fn request(&self, id: u64) {
        if let Some(tx) = &*self.tx.lock() {
            self.pending.fetch_add(1, Ordering::AcqRel);
            if tx.send(id).is_err() {
                self.pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Stop taking work: the thread finishes the footer in hand (drops it,
    /// if `drain_limit` is 0, unless it is already being written), writes
    /// at most `drain_limit` more from its queue, and ends. Segments still
    /// queued keep no footer until the next open queues them again.
    pub(crate) fn stop(&self, drain_limit: usize) {
        self.drain_left.store(drain_limit, Ordering::Release);
        self.abandon.store(drain_limit == 0, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        // Wakes the thread if it waits for work.
        self.tx.lock().take();
    }

    /// Segments queued or being sealed (0 once the thread has caught up).
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Whether the thread may start another footer (always, until stopped;
    /// then as long as the drain allows).
    fn may_start(&self) -> bool {
        !self.stopping()
            || self
                .drain_left
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
    }
}

/// What the sealer thread may touch: the log (to read a sealed segment and
/// write its footer), the maintenance lock, and its own queue. Not the
/// index, the writer or the readers' watermark.
struct Footers<'s> {
    log: &'s Log,
    maintenance: &'s parking_lot::Mutex<()>,
    sealer: &'s Sealer,
}

fn run(footers: &Footers<'_>, rx: &flume::Receiver<u64>) {
    let sealer = footers.sealer;
    for id in rx.iter() {
        if !sealer.may_start() {
            return;
        }
        // Not while a compaction replaces sealed segments. Nobody else can
        // hold the lock once the store is closing (compaction, snapshot and
        // verify need the `Store`), but never wait for it past that point.
        let _maintenance = loop {
            if let Some(guard) = footers.maintenance.try_lock_for(LOCK_PATIENCE) {
                break guard;
            }
            if sealer.stopping() {
                return;
            }
        };
        let result = seal_segment(footers.log, id, &sealer.abandon);
        sealer.pending.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok(Sealed::Stopped) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(segment_id = id, error = %e.display_chain(), "batpak: footer not written; the segment will be scanned at open");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::format::footer;
    use crate::store::log::Prealloc;

    /// An abandoned footer is not written; the same segment is sealed once
    /// the flag is down, and only once.
    #[test]
    fn an_abandoned_footer_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let log = Log::new(
            d.path(),
            SyncMode::SyncData,
            4096,
            Prealloc::Reserve,
            crate::store::log::FrameWrites::Mapped,
            crate::store::log::Io::for_store(&crate::store::StoreConfig::new(d.path()), true),
        );
        let active = log.create_segment(1, 0, 0).unwrap();
        drop(active);
        let path = d.path().join(segment_file_name(1));
        let footer_at = |path: &std::path::Path| footer::locate(&std::fs::read(path).unwrap());
        assert_eq!(
            seal_segment(&log, 1, &AtomicBool::new(true)).unwrap(),
            Sealed::Stopped
        );
        assert_eq!(footer_at(&path), None, "nothing written");
        assert_eq!(
            seal_segment(&log, 1, &AtomicBool::new(false)).unwrap(),
            Sealed::Written
        );
        assert_eq!(footer_at(&path), Some(SEGMENT_HEADER_LEN as u64));
        assert_eq!(
            seal_segment(&log, 1, &AtomicBool::new(false)).unwrap(),
            Sealed::Already
        );
        assert_eq!(
            seal_segment(&log, 2, &AtomicBool::new(false)).unwrap(),
            Sealed::Already,
            "a segment that is gone needs nothing"
        );
    }
}
