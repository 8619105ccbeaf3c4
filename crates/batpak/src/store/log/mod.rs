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
pub(crate) mod rewrite;
mod segment;

pub(crate) use dir::{
    create_dir_all_synced, is_copy_on_write, map_whole_file, sync_dir, write_atomically,
    write_atomically_with, DirLock, SegmentListing,
};
pub(crate) use segment::{ActiveSegment, FrameWrites, GrowthCounters, Prealloc, Segment};

use crate::store::config::SyncMode;
use crate::store::format::segment::{segment_file_name, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::store::{IoAt, StoreError};
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
    /// How the writer puts frames into the active segment.
    writes: FrameWrites,
    /// Test hook: what the crashed store that used this directory before
    /// had not synced (see `Store::simulate_crash`), by segment id.
    #[cfg(feature = "dangerous-test-hooks")]
    crashed: parking_lot::Mutex<std::collections::BTreeMap<u64, Option<u64>>>,
    /// Growth of active segments: ahead of the writer, or on its path.
    growth: Arc<GrowthCounters>,
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

    /// Test hook: what a power cut after a crash now would leave of each
    /// segment file in the directory, as a crashed process leaves it for
    /// the next one: synced lengths, and `None` for a file whose directory
    /// entry may not be durable (a segment file this log never registered
    /// is one being created). The caller has stopped every writer.
    #[cfg(feature = "dangerous-test-hooks")]
    pub(crate) fn unsynced_at_crash(&self) -> Result<BTreeMap<u64, Option<u64>>, StoreError> {
        let segments = self.segments.read();
        let mut ledger: BTreeMap<u64, Option<u64>> = segments
            .iter()
            .map(|(id, seg)| (*id, seg.survives_power_loss()))
            .collect();
        for (id, _) in SegmentListing::read(&self.dir)?.segments {
            ledger.entry(id).or_insert(None);
        }
        Ok(ledger)
    }

    /// Test hook: start from what a crashed process left unsynced (the
    /// files it left are on disk, but not necessarily durable).
    #[cfg(feature = "dangerous-test-hooks")]
    pub(crate) fn inherit_unsynced(&self, ledger: BTreeMap<u64, Option<u64>>) {
        *self.crashed.lock() = ledger;
    }

    /// A segment file found at open: under the test hook, it is only as
    /// durable as the crashed process that wrote it left it.
    pub(crate) fn inherit_crash(&self, seg: &Segment) {
        #[cfg(feature = "dangerous-test-hooks")]
        if let Some(left) = self.crashed.lock().get(&seg.id()) {
            seg.inherit_unsynced(*left);
        }
        #[cfg(not(feature = "dangerous-test-hooks"))]
        let _ = seg;
    }

    /// The directory was synced: every segment's entry is durable.
    pub(crate) fn note_entries_synced(&self) {
        for seg in self.segments.read().values() {
            seg.set_entry_synced(true);
        }
    }

    pub(crate) fn new(
        dir: &Path,
        sync_mode: SyncMode,
        segment_max_bytes: u64,
        prealloc: Prealloc,
        writes: FrameWrites,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            segments: RwLock::new(BTreeMap::new()),
            sync_mode,
            segment_max_bytes,
            prealloc,
            writes,
            #[cfg(feature = "dangerous-test-hooks")]
            crashed: parking_lot::Mutex::new(BTreeMap::new()),
            growth: Arc::default(),
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
        let active = ActiveSegment::reopen(
            path,
            id,
            write_pos,
            capacity,
            self.prealloc,
            self.writes,
            self.growth.clone(),
        )?;
        self.inherit_crash(active.segment());
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
        &self.growth
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
        let create = || {
            ActiveSegment::create(
                &path,
                id,
                &header.encode(),
                capacity,
                self.prealloc,
                self.writes,
                self.growth.clone(),
            )
        };
        let active = match create() {
            Err(StoreError::Io(e))
                if e.kind() == std::io::ErrorKind::AlreadyExists && Self::holds_no_frame(&path) =>
            {
                // Left by an earlier attempt that failed before using it.
                // Removed, never truncated: a reader may map it (ADR 0013).
                std::fs::remove_file(&path).at("remove unused segment", &path)?;
                create()?
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
        created: impl FnOnce() -> Result<(), StoreError>,
    ) -> Result<ActiveSegment, StoreError> {
        old.flush_pending()?;
        old.segment().sync(self.sync_mode)?;
        let new = self.create_segment_with(old.segment().id() + 1, frame_len, now_us, created)?;
        old.segment().close_descriptor();
        Ok(new)
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
