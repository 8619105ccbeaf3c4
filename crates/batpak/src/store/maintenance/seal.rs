//! Footers: built from a sealed segment's frames and written after them, by
//! a background thread so rotation never waits for them.

use crate::store::format::footer::{self, Footer, FooterEntry};
use crate::store::format::frame::{probe, Probe};
use crate::store::format::record::{decode_event, EventRecord};
use crate::store::format::segment::{segment_file_name, SEGMENT_HEADER_LEN};
use crate::store::log::{Log, Segment};
use crate::store::{Shared, StoreError};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Write the footer of sealed segment `id`. Does nothing if it already has
/// one. Refuses (and leaves the segment to be scanned at open) if any frame
/// is damaged: a footer describes intact frames only.
pub(crate) fn seal_segment(log: &Log, id: u64) -> Result<(), StoreError> {
    // Gone: a compaction merged it into a segment that has its footer.
    let Some(seg) = log.segment(id) else {
        return Ok(());
    };
    let bytes = seg.bytes();
    let mut footer = FooterBuilder::default();
    let mut pos = SEGMENT_HEADER_LEN;
    loop {
        match probe(bytes, pos) {
            Probe::End => break,
            Probe::Frame { body, .. } if footer::is_footer(body) => return Ok(()),
            Probe::Frame { body, len } => {
                let r = decode_event(body).map_err(|e| {
                    StoreError::corrupt(id, format!("sealing: frame at {pos}: {e}"))
                })?;
                footer.push(pos as u64, len, &r);
                pos += len;
            }
            Probe::Damaged(e) => {
                return Err(StoreError::corrupt(
                    id,
                    format!("sealing: frame at {pos}: {e}"),
                ))
            }
        }
    }
    let bytes_out = footer.encode(id, pos as u64);
    seg.release_pages();
    // A separate handle: the segment may be mapped from a read-only descriptor.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(log.dir().join(segment_file_name(id)))?;
    file.write_all_at(&bytes_out, pos as u64)?;
    file.sync_data()?;
    seg.note_synced(pos as u64 + bytes_out.len() as u64);
    Ok(())
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

/// Work for the background thread.
enum Job {
    /// Write the footer of this sealed segment.
    Seal(u64),
    /// Grow the active segment's file to this length ahead of the writer.
    Grow(Arc<Segment>, u64),
}

/// The queue of background work (footers of sealed segments, growing the
/// active segment ahead of the writer), drained by one thread.
#[derive(Default)]
pub(crate) struct Sealer {
    tx: parking_lot::Mutex<Option<flume::Sender<Job>>>,
}

impl Sealer {
    /// Start the thread with `backlog` already queued. It holds the shared
    /// state, not the `Store`, and ends once [`Sealer::finish`] closed the
    /// queue and the queued footers are written.
    pub(crate) fn spawn(shared: Arc<Shared>, backlog: Vec<u64>) -> std::io::Result<JoinHandle<()>> {
        let (tx, rx) = flume::unbounded::<Job>();
        for id in backlog {
            let _ = tx.send(Job::Seal(id));
        }
        *shared.sealer.tx.lock() = Some(tx);
        let mut builder = std::thread::Builder::new().name("batpak-sealer".into());
        if let Some(size) = shared.config.writer.stack_size {
            builder = builder.stack_size(size);
        }
        builder.spawn(move || {
            for job in rx.iter() {
                match job {
                    Job::Seal(id) => {
                        // Not while a compaction replaces sealed segments.
                        let _maintenance = shared.maintenance.lock();
                        let result = seal_segment(&shared.log, id)
                            .and_then(|()| shared.fault(crate::store::fault::InjectionPoint::FooterWritten));
                        if let Err(e) = result {
                            tracing::warn!(segment_id = id, error = %e, "batpak: footer not written; the segment will be scanned at open");
                        }
                    }
                    Job::Grow(segment, len) => {
                        // A failure (a full disk) shows up again, as an error
                        // of the append that needs the space.
                        if let Err(e) = segment.grow(len) {
                            tracing::debug!(segment_id = segment.id(), error = %e, "batpak: growing ahead failed");
                        }
                    }
                }
            }
        })
    }

    /// Queue a sealed segment for its footer.
    pub(crate) fn request(&self, id: u64) {
        if let Some(tx) = &*self.tx.lock() {
            let _ = tx.send(Job::Seal(id));
        }
    }

    /// Queue growing `segment` to `len` bytes.
    pub(crate) fn grow_ahead(&self, segment: Arc<Segment>, len: u64) {
        if let Some(tx) = &*self.tx.lock() {
            let _ = tx.send(Job::Grow(segment, len));
        }
    }

    /// Close the queue: the thread writes what is queued and ends.
    pub(crate) fn finish(&self) {
        self.tx.lock().take();
    }
}
