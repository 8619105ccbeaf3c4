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
//! the same mapping. Files only grow while mapped: growth uses `fallocate`, so
//! a full disk is an `ENOSPC` error from the grow call instead of a `SIGBUS`
//! on a page fault, and the only truncation (of a torn tail at open) happens
//! before the file is mapped.

mod dir;
pub(crate) mod rewrite;
mod segment;

pub(crate) use dir::{
    map_whole_file, sync_dir, write_atomically, write_atomically_with, DirLock, SegmentListing,
};
pub(crate) use segment::{ActiveSegment, Prealloc, Segment};

use crate::store::config::SyncMode;
use crate::store::format::segment::{segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::store::StoreError;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// All segments of a store, for readers; the writer owns the active one's tail.
pub(crate) struct Log {
    dir: PathBuf,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    sync_mode: SyncMode,
    segment_max_bytes: u64,
    prealloc: Prealloc,
}

impl Log {
    /// Test hook: do to the segment files what a power cut now would. Bytes
    /// not yet synced become zeros, files whose directory entry was never
    /// synced disappear. The caller has stopped every writer. Returns
    /// (bytes discarded, files removed).
    #[cfg(feature = "dangerous-test-hooks")]
    pub(crate) fn simulate_power_loss(&self) -> Result<(u64, usize), StoreError> {
        use std::os::unix::fs::FileExt;
        let mut discarded = 0;
        let mut removed = 0;
        for seg in self.segments.read().values() {
            let path = self.dir.join(segment_file_name(seg.id()));
            match seg.survives_power_loss() {
                None => {
                    std::fs::remove_file(&path)?;
                    removed += 1;
                }
                Some(synced) => {
                    let len = std::fs::metadata(&path)?.len();
                    if synced < len {
                        let f = std::fs::OpenOptions::new()
                            .read(true)
                            .write(true)
                            .open(&path)?;
                        let mut lost = vec![0u8; (len - synced) as usize];
                        f.read_exact_at(&mut lost, synced)?;
                        // Count written bytes, not preallocated zeros.
                        discarded += lost
                            .iter()
                            .rposition(|&b| b != 0)
                            .map_or(0, |p| p as u64 + 1);
                        lost.fill(0);
                        f.write_all_at(&lost, synced)?;
                        f.sync_all()?;
                    }
                }
            }
        }
        dir::sync_dir(&self.dir)?;
        Ok((discarded, removed))
    }

    pub(crate) fn new(
        dir: &Path,
        sync_mode: SyncMode,
        segment_max_bytes: u64,
        prealloc: Prealloc,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            segments: RwLock::new(BTreeMap::new()),
            sync_mode,
            segment_max_bytes,
            prealloc,
        }
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
        let active = ActiveSegment::reopen(path, id, write_pos, capacity, self.prealloc)?;
        self.register(active.segment().clone());
        Ok(active)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn sync_mode(&self) -> SyncMode {
        self.sync_mode
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

    /// Bytes of frames readable at `segment_id:offset`, `length` long.
    pub(crate) fn read(
        &self,
        segment_id: u64,
        offset: u64,
        length: u32,
    ) -> Result<FrameBytes, StoreError> {
        let seg = self
            .segment(segment_id)
            .ok_or_else(|| StoreError::corrupt(segment_id, "segment is not part of the store"))?;
        seg.check_range(offset, u64::from(length))?;
        Ok(FrameBytes {
            seg,
            offset,
            length,
        })
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

    /// Create segment `id`, durable (file and directory synced) before it is used.
    pub(crate) fn create_segment(
        &self,
        id: u64,
        min_frame_len: u64,
        now_us: i64,
    ) -> Result<ActiveSegment, StoreError> {
        self.create_segment_with(id, min_frame_len, now_us, || Ok(()))
    }

    /// [`Log::create_segment`], calling `created` after the file is created
    /// and synced, before the directory is (where tests inject crashes).
    fn create_segment_with(
        &self,
        id: u64,
        min_frame_len: u64,
        now_us: i64,
        created: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<ActiveSegment, StoreError> {
        let path = self.dir.join(segment_file_name(id));
        let header = SegmentHeader {
            segment_id: id,
            created_us: now_us,
        };
        let capacity = self.capacity_for(min_frame_len);
        let active =
            match ActiveSegment::create(&path, id, &header.encode(), capacity, self.prealloc) {
                Err(StoreError::Io(e))
                    if e.kind() == std::io::ErrorKind::AlreadyExists
                        && Self::holds_no_frame(&path) =>
                {
                    // Left by an earlier attempt that failed before using it.
                    std::fs::remove_file(&path)?;
                    ActiveSegment::create(&path, id, &header.encode(), capacity, self.prealloc)?
                }
                other => other?,
            };
        created()?;
        dir::sync_dir(&self.dir)?;
        active.segment().set_entry_synced(true);
        self.register(active.segment().clone());
        Ok(active)
    }

    /// A segment file with nothing but (at most) a header and zero fill.
    fn holds_no_frame(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| {
            crate::store::format::frame::all_zero(b.get(SEGMENT_HEADER_LEN..).unwrap_or_default())
        })
    }

    /// Finish `old` (sync it so everything in it is durable) and start segment
    /// `old.id() + 1` sized for a frame of `frame_len` bytes.
    pub(crate) fn rotate(
        &self,
        old: &mut ActiveSegment,
        frame_len: u64,
        now_us: i64,
        created: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<ActiveSegment, StoreError> {
        old.flush_pending()?;
        old.segment().sync(self.sync_mode)?;
        self.create_segment_with(old.segment().id() + 1, frame_len, now_us, created)
    }
}

/// A frame's bytes, kept alive by a reference to its segment.
pub(crate) struct FrameBytes {
    seg: Arc<Segment>,
    offset: u64,
    length: u32,
}

impl FrameBytes {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.seg.slice(self.offset, u64::from(self.length))
    }
}
