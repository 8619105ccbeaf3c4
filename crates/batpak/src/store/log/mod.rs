//! The log: segment files in the data directory, how bytes get into them and
//! back out, and how they reach stable storage.
//!
//! This is the narrow boundary below the store: it moves opaque frame bytes
//! and knows segment ids and offsets, never events, entities or the index.
//! A second implementation (a database-backed log, tiered sealed segments)
//! would replace this module and nothing above it.
//!
//! Every segment is mapped once (`MAP_SHARED`) for its whole capacity. The
//! writer copies frames into the active segment's mapping, which hands them to
//! the OS page cache without a syscall per append; readers read frames through
//! the same mapping. Segment files never shrink, since another process (a
//! read-only handle) may map them: growth uses `fallocate`, so a full disk is
//! an `ENOSPC` error from the grow call instead of a `SIGBUS` on a page fault,
//! and a torn tail is zeroed at open, never truncated (ADR 0013). On
//! copy-on-write filesystems, where even a preallocated block needs new space
//! when it is written, and in durable mode, frames are written with `pwrite`
//! and the map is only read.
//!
//! Only the active segment keeps its file descriptor; every other segment
//! is read through its map alone (see `segment.rs`), so the number of open
//! descriptors does not grow with the number of segments.

mod dir;
pub(crate) mod io;
pub(crate) mod rewrite;
mod segment;

pub(crate) use dir::{
    create_dir_all_synced, map_whole_file, write_atomically, DirLock, SegmentListing,
};
pub(crate) use io::{InjectionPoint, Io, Prealloc, SegmentIo};
pub(crate) use segment::{ActiveSegment, FrameWrites, GrowthCounters, Segment, Writing};

use crate::store::config::SyncMode;
use crate::store::format::segment::{segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::store::StoreError;
use parking_lot::{RwLock, RwLockReadGuard};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// All segments of a store, for readers; the writer owns the active one's tail.
pub(crate) struct Log {
    dir: PathBuf,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    sync_mode: SyncMode,
    segment_max_bytes: u64,
    /// How the writer's segments get their bytes (through the I/O seam,
    /// where every byte goes).
    writing: Writing,
}

impl Log {
    pub(crate) fn new(
        dir: &Path,
        sync_mode: SyncMode,
        segment_max_bytes: u64,
        prealloc: Prealloc,
        writes: FrameWrites,
        io: Io,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            segments: RwLock::new(BTreeMap::new()),
            sync_mode,
            segment_max_bytes,
            writing: Writing {
                prealloc,
                writes,
                growth: Arc::default(),
                io,
            },
        }
    }

    /// The I/O seam every file operation of this store goes through.
    pub(crate) fn io(&self) -> &Io {
        &self.writing.io
    }

    /// Continue writing an existing segment whose frames end at `write_pos`.
    pub(crate) fn reopen_active(
        &self,
        path: &Path,
        id: u64,
        write_pos: u64,
        file_len: u64,
    ) -> Result<ActiveSegment, StoreError> {
        let capacity = self.segment_max_bytes.max(file_len);
        let active = ActiveSegment::reopen(path, id, write_pos, capacity, &self.writing)?;
        self.register(active.segment().clone());
        Ok(active)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn sync_mode(&self) -> SyncMode {
        self.sync_mode
    }

    pub(crate) fn growth(&self) -> &GrowthCounters {
        &self.writing.growth
    }

    /// Make a recovered segment readable.
    pub(crate) fn register(&self, seg: Arc<Segment>) {
        self.segments.write().insert(seg.id(), seg);
    }

    pub(crate) fn segment(&self, id: u64) -> Option<Arc<Segment>> {
        self.segments.read().get(&id).cloned()
    }

    pub(crate) fn segment_ids(&self) -> Vec<u64> {
        self.segments.read().keys().copied().collect()
    }

    pub(crate) fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// The readable segments, held for one read: a lookup by id and a
    /// prefetch take this lock once instead of once each.
    pub(crate) fn view(&self) -> SegmentsView<'_> {
        SegmentsView(self.segments.read())
    }

    /// Capacity of a new segment that must hold a frame of `frame_len` bytes.
    fn capacity_for(&self, frame_len: u64) -> u64 {
        (SEGMENT_HEADER_LEN as u64 + frame_len).max(self.segment_max_bytes)
    }

    /// Whether `frame_len` more bytes fit in `active` under `segment_max_bytes`.
    /// An empty segment accepts any frame (an oversized event gets a segment of its own).
    pub(crate) fn fits(&self, active: &ActiveSegment, frame_len: u64) -> bool {
        let end = active.write_pos() + frame_len;
        end <= active.capacity() && (active.is_empty() || end <= self.segment_max_bytes)
    }

    /// Create segment `id`, durable (file and directory synced) before it
    /// is used. Between the two syncs is [`InjectionPoint::SegmentCreated`].
    pub(crate) fn create_segment(
        &self,
        id: u64,
        min_frame_len: u64,
        now_us: i64,
    ) -> Result<ActiveSegment, StoreError> {
        let path = self.dir.join(segment_file_name(id));
        let header = SegmentHeader {
            segment_id: id,
            created_us: now_us,
        };
        let capacity = self.capacity_for(min_frame_len);
        let create = || ActiveSegment::create(&path, id, &header.encode(), capacity, &self.writing);
        let active = match create() {
            Err(StoreError::Io(e))
                if e.kind() == std::io::ErrorKind::AlreadyExists && Self::holds_no_frame(&path) =>
            {
                // Left by an earlier attempt that failed before using it.
                // Removed, never truncated: a reader may map it (ADR 0013).
                self.io().remove(&path, None)?;
                create()?
            }
            other => other?,
        };
        self.io()
            .sync_dir(&self.dir, Some(InjectionPoint::SegmentCreated))?;
        self.register(active.segment().clone());
        Ok(active)
    }

    /// A segment file with nothing but (at most) a header and zero fill.
    /// Read in bounded chunks: the file may be a whole preallocated segment.
    fn holds_no_frame(path: &Path) -> bool {
        use std::io::Read;
        let Ok(mut file) = std::fs::File::open(path) else {
            return false;
        };
        let mut chunk = vec![0u8; 64 * 1024];
        let mut skip = SEGMENT_HEADER_LEN;
        loop {
            match file.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => {
                    let past_header = chunk[..n].get(skip..).unwrap_or_default();
                    if !crate::store::format::frame::all_zero(past_header) {
                        return false;
                    }
                    skip = skip.saturating_sub(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Finish `old` (sync it so everything in it is durable) and start segment
    /// `old.id() + 1` sized for a frame of `frame_len` bytes. Once the new
    /// segment exists, `old` is sealed: its descriptor closes (it is read
    /// through its map from now on) as soon as the caller drops `old`.
    pub(crate) fn rotate(
        &self,
        old: &mut ActiveSegment,
        frame_len: u64,
        now_us: i64,
    ) -> Result<ActiveSegment, StoreError> {
        old.flush_pending()?;
        old.segment().sync(self.sync_mode)?;
        let new = self.create_segment(old.segment().id() + 1, frame_len, now_us)?;
        old.segment().close_descriptor();
        Ok(new)
    }
}

/// The log's segments, read-locked (see [`Log::view`]).
pub(crate) struct SegmentsView<'a>(RwLockReadGuard<'a, BTreeMap<u64, Arc<Segment>>>);

impl SegmentsView<'_> {
    /// Start loading the bytes of a frame that probably lies at
    /// `segment_id:offset` (a hint only: a range the segment does not hold
    /// is ignored).
    #[inline]
    pub(crate) fn prefetch(&self, segment_id: u64, offset: u64, length: u32) {
        if let Some(seg) = self.0.get(&segment_id) {
            seg.prefetch_frame(offset, length);
        }
    }

    /// Bytes of frames readable at `segment_id:offset`, `length` long.
    pub(crate) fn read(
        &self,
        segment_id: u64,
        offset: u64,
        length: u32,
    ) -> Result<FrameBytes, StoreError> {
        let seg = self
            .0
            .get(&segment_id)
            .ok_or_else(|| StoreError::corrupt(segment_id, "segment is not part of the store"))?;
        seg.check_range(offset, u64::from(length))?;
        Ok(FrameBytes {
            seg: seg.clone(),
            offset,
            length,
        })
    }
}

/// A frame's bytes, kept alive by a reference to its segment.
pub(crate) struct FrameBytes {
    seg: Arc<Segment>,
    offset: u64,
    length: u32,
}

impl FrameBytes {
    /// Start loading the frame's bytes (see [`Segment::prefetch_frame`]).
    #[inline]
    pub(crate) fn prefetch(&self) {
        self.seg.prefetch_frame(self.offset, self.length);
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.seg.slice(self.offset, u64::from(self.length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_no_frame_reads_the_whole_file_in_chunks() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s");
        let mut bytes = vec![0u8; 300 * 1024];
        bytes[..SEGMENT_HEADER_LEN].fill(0xAB);
        std::fs::write(&path, &bytes).unwrap();
        assert!(Log::holds_no_frame(&path), "a header and zero fill");
        // Something far past the first chunk.
        bytes[250_000] = 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(!Log::holds_no_frame(&path));
        // Right after the header.
        bytes[250_000] = 0;
        bytes[SEGMENT_HEADER_LEN] = 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(!Log::holds_no_frame(&path));
        std::fs::write(&path, &bytes[..10]).unwrap();
        assert!(Log::holds_no_frame(&path), "shorter than a header");
        assert!(!Log::holds_no_frame(&d.path().join("missing")));
    }
}
