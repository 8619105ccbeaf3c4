//! One segment file and its memory map.
//!
//! A segment keeps a file descriptor only while it can still be written:
//! the active segment holds one; a sealed segment, and any segment mapped
//! read-only, is read through its map alone (a mapping stays valid after its
//! descriptor is closed). Whoever needs the file of a sealed segment again
//! (footer writing, compaction, snapshot copies) opens it by path for as
//! long as it needs it. So a store holds a constant few descriptors however
//! many segments it has (ADR 0014).

use super::io::{Io, Prealloc, SegmentIo, ZEROS};
use crate::store::config::SyncMode;
use crate::store::format::segment::SEGMENT_HEADER_LEN;
use crate::store::StoreError;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// First allocation of a new segment, and the largest single growth step
/// (smaller when growth writes zeros, which the growing append waits for).
const MIN_GROW: u64 = 2 * 1024 * 1024;

/// Most bytes of a frame [`Segment::prefetch_frame`] asks for ahead (past
/// them the hardware prefetcher has caught up with the checksum).
pub(crate) const FRAME_PREFETCH_MAX: usize = 1024;
const MAX_GROW: u64 = 16 * 1024 * 1024;
const MAX_ZERO_GROW: u64 = 4 * 1024 * 1024;
/// Allocated bytes the background keeps ahead of the writer.
const GROW_AHEAD: u64 = 4 * 1024 * 1024;

/// How often the active segment's file had to grow, and where.
#[derive(Debug, Default)]
pub(crate) struct GrowthCounters {
    /// Grown by the background thread, ahead of the writer.
    ahead: AtomicU64,
    /// Grown by an append itself, under the writer lock, because the
    /// background had not got that far (or the frame is bigger than the
    /// first allocation of a new segment).
    on_append: AtomicU64,
}

impl GrowthCounters {
    pub(crate) fn note_ahead(&self) {
        self.ahead.fetch_add(1, Ordering::Relaxed);
    }

    /// (grown ahead, grown on an append).
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.ahead.load(Ordering::Relaxed),
            self.on_append.load(Ordering::Relaxed),
        )
    }
}

/// A segment file mapped for its whole capacity.
pub(crate) struct Segment {
    id: u64,
    /// Where the file is, for the rare sync of a segment whose descriptor is
    /// closed (see [`Segment::sync`]).
    path: PathBuf,
    /// The descriptor, while the segment can be written (the active
    /// segment); `None` once it is sealed, and for read-only maps. Shared
    /// (`Arc`) so a sync or growth step in progress keeps it open while
    /// [`Segment::close_descriptor`] lets go of it.
    file: parking_lot::Mutex<Option<Arc<File>>>,
    /// The file's (device, inode), to tell whether its name still names it.
    identity: (u64, u64),
    map: MmapRaw,
    /// Current file length. Only bytes below it are backed by the file, so no
    /// access may reach past it (that would fault); it only grows while mapped.
    file_len: AtomicU64,
    /// How growth gets blocks, and who is growing the file right now (the
    /// writer, or the background thread growing it ahead of the writer).
    prealloc: Prealloc,
    growth: parking_lot::Mutex<()>,
    /// Bytes handed to the file so far (what a sync starting now covers).
    handed_over: AtomicU64,
    /// Bytes known to be on stable storage.
    synced: AtomicU64,
    /// Where the file's bytes go (the I/O seam).
    io: Io,
}

impl Segment {
    /// Map `file` (at `path`) for `capacity` bytes. A segment that will be
    /// written keeps the descriptor; a read-only one closes it once mapped.
    fn map(
        id: u64,
        path: &Path,
        file: File,
        capacity: u64,
        access: MapAccess,
        prealloc: Prealloc,
        io: &Io,
    ) -> Result<Self, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let (map_writable, keep_descriptor) = match access {
            MapAccess::Read => (false, false),
            MapAccess::Follow => (false, true),
            MapAccess::Write(writes) => (writes == FrameWrites::Mapped, true),
        };
        let meta = file.metadata()?;
        let file_len = meta.len();
        let capacity = capacity.max(file_len).max(1);
        let len = usize::try_from(capacity)
            .map_err(|_| StoreError::corrupt(id, "segment larger than the address space"))?;
        let mut opts = MmapOptions::new();
        opts.len(len);
        let map = if map_writable {
            opts.map_raw(&file)?
        } else {
            opts.map_raw_read_only(&file)?
        };
        // Where the filesystem caches the file in large folios, let them be
        // mapped whole: random reads then miss the TLB far less often.
        crate::store::huge_pages::advise(map.as_ptr(), map.len());
        Ok(Self {
            id,
            path: path.to_path_buf(),
            file: parking_lot::Mutex::new(keep_descriptor.then(|| Arc::new(file))),
            identity: (meta.dev(), meta.ino()),
            map,
            file_len: AtomicU64::new(file_len),
            prealloc,
            growth: parking_lot::Mutex::new(()),
            // A file found on disk is there (its creator, or recovery, made
            // it durable before it was used).
            handed_over: AtomicU64::new(file_len),
            synced: AtomicU64::new(file_len),
            io: io.clone(),
        })
    }

    /// Map an existing segment read-only, exactly its current length. No
    /// descriptor stays open.
    pub(crate) fn open_read_only(path: &Path, id: u64, io: &Io) -> Result<Self, StoreError> {
        let file = io.open(path, false)?;
        Self::map(id, path, file, 0, MapAccess::Read, Prealloc::Reserve, io)
    }

    /// Map the segment a read-only handle follows (its owner may still be
    /// writing it): like [`Segment::open_read_only`], but the descriptor
    /// stays open, so that if a compaction replaces the file under its name,
    /// the rest of this file can still be read ([`Segment::remap_read_only`]).
    /// A handle follows one segment at a time and closes the descriptor when
    /// it moves on.
    pub(crate) fn open_followed(path: &Path, id: u64, io: &Io) -> Result<Self, StoreError> {
        let file = io.open(path, false)?;
        Self::map(id, path, file, 0, MapAccess::Follow, Prealloc::Reserve, io)
    }

    /// The descriptor, if the segment still has one.
    fn descriptor(&self) -> Option<Arc<File>> {
        self.file.lock().clone()
    }

    /// The segment is sealed and synced: close its descriptor (once no
    /// sync or growth step still uses it). Reads go on through the map.
    pub(crate) fn close_descriptor(&self) {
        self.file.lock().take();
    }

    /// Whether the segment still holds a descriptor.
    #[cfg(test)]
    pub(crate) fn holds_descriptor(&self) -> bool {
        self.file.lock().is_some()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether `path` names the file this segment maps (compaction replaces
    /// a segment's file under the same name).
    pub(crate) fn is_file_at(&self, path: &Path) -> Result<bool, StoreError> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(path) {
            Ok(m) => Ok((m.dev(), m.ino()) == self.identity),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The same file mapped afresh, read-only, for its current length (it
    /// may have grown since; its name may now be another file's or gone).
    /// Needs the descriptor a followed segment keeps; the new map keeps none.
    pub(crate) fn remap_read_only(&self) -> Result<Self, StoreError> {
        let file = self.descriptor().ok_or_else(|| {
            StoreError::internal("a replaced segment was not followed with a descriptor")
        })?;
        Self::map(
            self.id,
            &self.path,
            file.try_clone()?,
            0,
            MapAccess::Read,
            Prealloc::Reserve,
            &self.io,
        )
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.file_len.load(Ordering::Acquire)
    }

    /// Refuse a range that is not backed by the file.
    pub(crate) fn check_range(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.file_len() && end <= self.map.len() as u64 => Ok(()),
            _ => Err(StoreError::corrupt(
                self.id,
                format!(
                    "range {offset}+{len} is beyond the end of the segment ({} bytes)",
                    self.file_len()
                ),
            )),
        }
    }

    /// The bytes `offset..offset + len`, which the caller checked with [`Self::check_range`].
    pub(crate) fn slice(&self, offset: u64, len: u64) -> &[u8] {
        debug_assert!(self.check_range(offset, len).is_ok());
        let end = offset
            .saturating_add(len)
            .min(self.file_len())
            .min(self.map.len() as u64);
        let start = offset.min(end);
        // SAFETY: `start..end` lies inside the mapping and below the file length,
        // so every byte is mapped and backed by the file. Bytes below a committed
        // frame end are never written again (the log is append-only and the
        // writer only writes past its write position), and readers learn of a
        // frame only after its writer released the index lock, so no write to
        // these bytes can race with this shared borrow.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(start as usize),
                (end - start) as usize,
            )
        }
    }

    /// Ask the CPU to start loading the hash chain of the frame at
    /// `offset` (`length` bytes long), which a read is about to take: a
    /// hint, which does nothing for a range the file does not back.
    #[inline]
    pub(crate) fn prefetch_chain(&self, offset: u64, length: u32) {
        use crate::store::format::frame::FRAME_HEADER_LEN;
        use crate::store::format::record::{CHAIN_END, CHAIN_START};
        if self.check_range(offset, u64::from(length)).is_err() || (length as usize) < CHAIN_END {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let base = self.map.as_ptr().wrapping_add(offset as usize);
            // The record type (checked before the chain is read) and the
            // chain: the three cache lines they can span.
            for at in [FRAME_HEADER_LEN, CHAIN_START, CHAIN_END - 1] {
                let p = base.wrapping_add(at).cast::<i8>();
                // SAFETY: a prefetch is only a hint to the cache: it reads
                // nothing architecturally and never faults, whatever the
                // address (here one inside the mapping, checked above).
                #[allow(unused_unsafe)]
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(p);
                }
            }
        }
    }

    /// Ask the CPU to start loading the first `length` bytes (at most
    /// [`FRAME_PREFETCH_MAX`]) at `offset`, which a read is about to check
    /// and decode: all their cache lines are requested at once instead of
    /// one miss after another as the checksum walks the frame.
    #[inline]
    pub(crate) fn prefetch_frame(&self, offset: u64, length: u32) {
        if self.check_range(offset, u64::from(length)).is_err() {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let base = self.map.as_ptr().wrapping_add(offset as usize);
            let len = (length as usize).min(FRAME_PREFETCH_MAX);
            // Every line of the frame's first `len` bytes, from the one
            // holding its first byte: stepping 64 bytes from the frame's
            // own start missed its last line whenever the frame did not
            // start on a line, and the checksum then waited for that line.
            let skew = base as usize % 64;
            for at in (0..len + skew).step_by(64) {
                // SAFETY: a prefetch is only a hint to the cache: it reads
                // nothing architecturally and never faults (the addresses
                // are inside the mapping's pages: the range was checked
                // above, and a line never crosses a page).
                #[allow(unused_unsafe)]
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(
                        base.wrapping_add(at).wrapping_sub(skew).cast::<i8>(),
                    );
                }
            }
        }
    }

    /// The whole file as bytes (used by scans).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.slice(0, self.file_len().min(self.map.len() as u64))
    }

    /// Drop this process's page mappings of the segment (the pages stay in
    /// the page cache and fault back in on the next read), so scanning a
    /// whole log at open does not leave it counted as resident memory.
    pub(crate) fn release_pages(&self) {
        // SAFETY: MADV_DONTNEED on a *shared file* mapping only unmaps pages
        // from this process; their contents stay in the page cache and file,
        // so any later read (including through slices handed out earlier)
        // faults the same bytes back in. Nothing is discarded.
        if let Err(e) = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        } {
            tracing::debug!(error = %e, "madvise(DONTNEED) failed; pages stay resident");
        }
    }

    /// Grow the file so that at least `end` bytes are backed by disk blocks
    /// (by at least one step, at most to the mapping's capacity). Bytes
    /// beyond the current length hold no data, so growing never touches
    /// anything written. Returns whether this call grew the file (`false`:
    /// someone else already had).
    pub(crate) fn grow(&self, end: u64) -> Result<bool, StoreError> {
        let _growing = self.growth.lock();
        let cur = self.file_len();
        if end <= cur {
            return Ok(false);
        }
        let Some(file) = self.descriptor() else {
            return Err(StoreError::internal(format!(
                "segment {} is sealed and does not grow",
                self.id
            )));
        };
        let max_step = match self.prealloc {
            Prealloc::Reserve => MAX_GROW,
            Prealloc::Zeros => MAX_ZERO_GROW,
        };
        let step = cur.clamp(MIN_GROW, max_step);
        let capacity = self.map.len() as u64;
        let new_len = end.max(cur + step).min(capacity);
        if new_len < end {
            return Err(StoreError::corrupt(
                self.id,
                "frame does not fit in the segment mapping",
            ));
        }
        self.io
            .allocate(&file, &self.path, cur, new_len - cur, self.prealloc)?;
        self.file_len.store(new_len, Ordering::Release);
        Ok(true)
    }

    /// The file's meaningful bytes end at `len`, all of them on disk (a
    /// new or reopened active segment; what follows is preallocation).
    fn reset_written_to(&self, len: u64) {
        self.handed_over.store(len, Ordering::Release);
        self.synced.store(len, Ordering::Release);
    }

    /// Bytes up to `end` reached the file (page cache).
    pub(crate) fn note_handed_over(&self, end: u64) {
        self.handed_over.fetch_max(end, Ordering::Release);
    }

    /// Bytes up to `end` are on stable storage (synced by someone else).
    pub(crate) fn note_synced(&self, end: u64) {
        self.synced.fetch_max(end, Ordering::Release);
    }

    /// Make everything written to this segment durable.
    pub(crate) fn sync(&self, mode: SyncMode) -> Result<(), StoreError> {
        let covered = self.handed_over.load(Ordering::Acquire);
        // On Linux fsync/fdatasync also write back pages dirtied through a
        // shared mapping; elsewhere msync is needed first.
        #[cfg(not(target_os = "linux"))]
        self.map.flush()?;
        let file = match self.descriptor() {
            Some(file) => file,
            // Sealed: it was synced whole before its descriptor closed, and
            // whoever wrote to it since (a footer) synced that itself.
            None if covered <= self.synced.load(Ordering::Acquire) => return Ok(()),
            // Not expected, but a sync must never pass over unsynced bytes:
            // a descriptor of the same file syncs its pages.
            None => Arc::new(self.io.open(&self.path, false)?),
        };
        self.io.sync(&file, &self.path, mode, None, None)?;
        self.note_synced(covered);
        Ok(())
    }
}

/// The writer's handle on the segment it appends to.
///
/// Two ways in: [`ActiveSegment::append`] copies a frame straight into the
/// shared mapping (handed to the OS at once: relaxed mode), and
/// [`ActiveSegment::append_buffered`] collects frames for one `pwrite` per
/// group commit (durable mode, where nothing is visible before its sync
/// anyway, and where data written with `pwrite` syncs much faster than pages
/// dirtied through a mapping).
pub(crate) struct ActiveSegment {
    seg: Arc<Segment>,
    /// How frames reach the file; with `Pwrite` the map is read-only.
    writes: FrameWrites,
    /// The segment's descriptor (the active segment always has one).
    file: Arc<File>,
    /// Where growth on the append path is counted.
    growth: Arc<GrowthCounters>,
    write_pos: u64,
    /// Frames appended with `append_buffered` and not yet written to the file;
    /// they start at `write_pos - pending.len()`.
    pending: Vec<u8>,
    /// File length up to which background growth was already asked for.
    growth_asked: u64,
}

/// How a log's writable segments get their bytes: the same for every
/// segment the writer creates or continues.
#[derive(Clone)]
pub(crate) struct Writing {
    pub(crate) prealloc: Prealloc,
    pub(crate) writes: FrameWrites,
    /// Where growth on the append path is counted.
    pub(crate) growth: Arc<GrowthCounters>,
    pub(crate) io: Io,
}

impl ActiveSegment {
    /// Create a new segment file with `header`, allocated and synced.
    pub(crate) fn create(
        path: &Path,
        id: u64,
        header: &[u8],
        capacity: u64,
        how: &Writing,
    ) -> Result<Self, StoreError> {
        let io = &how.io;
        let file = io.create_new(path)?;
        let initial = capacity.min(MIN_GROW.max(header.len() as u64));
        io.allocate(&file, path, 0, initial, how.prealloc)?;
        let seg = Segment::map(
            id,
            path,
            file,
            capacity,
            MapAccess::Write(how.writes),
            how.prealloc,
            io,
        )?;
        // Read the first byte through the map (advised for huge pages)
        // before anything writes the file: the page cache then holds the
        // start of the file in one large folio where the filesystem allows
        // it, instead of the small one a write of the header would create.
        let _ = seg.slice(0, 1).first().map(|b| std::hint::black_box(*b));
        let file = seg
            .descriptor()
            .ok_or_else(|| StoreError::internal("a new segment without a descriptor"))?;
        io.write_at(&file, path, header, 0, None)?;
        io.sync(&file, path, SyncMode::SyncAll, None, None)?;
        seg.reset_written_to(header.len() as u64);
        Self::new(seg, header.len() as u64, how)
    }

    fn new(seg: Segment, write_pos: u64, how: &Writing) -> Result<Self, StoreError> {
        let file = seg
            .descriptor()
            .ok_or_else(|| StoreError::internal("a writable segment without a descriptor"))?;
        Ok(Self {
            seg: Arc::new(seg),
            writes: how.writes,
            file,
            growth: how.growth.clone(),
            write_pos,
            pending: Vec::new(),
            growth_asked: 0,
        })
    }

    /// Continue writing an existing segment whose frames end at `write_pos`.
    pub(crate) fn reopen(
        path: &Path,
        id: u64,
        write_pos: u64,
        capacity: u64,
        how: &Writing,
    ) -> Result<Self, StoreError> {
        let file = how.io.open(path, true)?;
        let seg = Segment::map(
            id,
            path,
            file,
            capacity,
            MapAccess::Write(how.writes),
            how.prealloc,
            &how.io,
        )?;
        // Past the frames the file holds only zeros (preallocation, or a
        // torn tail zeroed): the bytes that matter are the frames. They are
        // in the file; recovery syncs them before anyone reads them.
        seg.reset_written_to(write_pos);
        Self::new(seg, write_pos, how)
    }

    pub(crate) fn segment(&self) -> &Arc<Segment> {
        &self.seg
    }

    pub(crate) fn write_pos(&self) -> u64 {
        self.write_pos
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.seg.map.len() as u64
    }

    /// No frame written yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.write_pos <= SEGMENT_HEADER_LEN as u64
    }

    /// Make sure `end` bytes are backed by disk blocks, growing the file on
    /// this thread if the background growth has not got that far.
    fn ensure_allocated(&mut self, end: u64) -> Result<(), StoreError> {
        if end <= self.seg.file_len() {
            return Ok(());
        }
        if self.seg.grow(end)? {
            self.growth.on_append.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// When fewer than [`GROW_AHEAD`] allocated bytes remain ahead of the
    /// write position, the length the file should grow to (once per
    /// request): growing ahead on another thread keeps the cost of
    /// allocating (zero-filling, in durable mode) off the append path.
    pub(crate) fn growth_wanted(&mut self) -> Option<u64> {
        let have = self.seg.file_len();
        let capacity = self.capacity();
        if have >= capacity
            || have.saturating_sub(self.write_pos) >= GROW_AHEAD
            || self.growth_asked > have
        {
            return None;
        }
        let target = (self.write_pos + 2 * GROW_AHEAD).min(capacity);
        self.growth_asked = target;
        Some(target)
    }

    /// Reserve `len` bytes at the write position, let `fill` write the whole
    /// frame into them, and return the frame's offset. Nothing is committed if
    /// allocation fails; the caller publishes the frame (index) afterwards.
    pub(crate) fn append(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u64, StoreError> {
        debug_assert!(
            self.pending.is_empty(),
            "mixing buffered and mapped appends"
        );
        if self.writes == FrameWrites::Pwrite {
            // Handed to the file at once all the same, by `pwrite`: a full
            // disk is then an error from this call, never a fault.
            let offset = self.append_buffered(len, fill)?;
            if let Err(e) = self.flush_pending() {
                self.pending.clear();
                self.write_pos = offset;
                return Err(e);
            }
            return Ok(offset);
        }
        let offset = self.write_pos;
        let end = offset + len as u64;
        self.ensure_allocated(end)?;
        // SAFETY: `offset..end` is inside the mapping (ensure_allocated checked
        // it against the capacity) and backed by the file (allocated above).
        // Only the writer, which holds `&mut self`, touches bytes at or past
        // `write_pos`, and no reader knows of them until they are published,
        // so this exclusive borrow aliases nothing.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(self.seg.map.as_mut_ptr().add(offset as usize), len)
        };
        fill(buf);
        // (A test may fail or tear the copy; then the frame was not written.)
        self.seg.io.wrote_mapped(&self.seg.path, offset, buf)?;
        self.write_pos = end;
        self.seg.note_handed_over(end);
        Ok(offset)
    }
}

impl ActiveSegment {
    /// Like [`ActiveSegment::append`], but the frame waits in memory until
    /// [`ActiveSegment::flush_pending`] writes every waiting frame at once.
    pub(crate) fn append_buffered(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<u64, StoreError> {
        let offset = self.write_pos;
        let end = offset + len as u64;
        if end > self.capacity() {
            return Err(StoreError::corrupt(
                self.seg.id,
                "frame does not fit in the segment mapping",
            ));
        }
        self.ensure_allocated(end)?;
        let start = self.pending.len();
        self.pending.resize(start + len, 0);
        fill(&mut self.pending[start..]);
        self.write_pos = end;
        Ok(offset)
    }

    /// Take back everything written from `pos` on: buffered bytes are dropped,
    /// bytes already in the file are zeroed and the zeros synced, so the
    /// frames can reappear neither now nor after a crash.
    pub(crate) fn roll_back_to(&mut self, pos: u64, mode: SyncMode) -> Result<(), StoreError> {
        let pos = pos.max(SEGMENT_HEADER_LEN as u64).min(self.write_pos);
        let buffered_from = self.write_pos - self.pending.len() as u64;
        if pos >= buffered_from {
            self.pending.truncate((pos - buffered_from) as usize);
            self.write_pos = pos;
            return Ok(());
        }
        self.pending.clear();
        let len = (buffered_from - pos) as usize;
        if self.writes == FrameWrites::Pwrite {
            // The map is read-only here; zeros go the way the frames went.
            let mut at = pos;
            while at < buffered_from {
                let n = (buffered_from - at).min(ZEROS.len() as u64) as usize;
                self.seg
                    .io
                    .write_at(&self.file, &self.seg.path, &ZEROS[..n], at, None)?;
                at += n as u64;
            }
            self.write_pos = pos;
            return self.seg.sync(mode);
        }
        // SAFETY: `pos..buffered_from` lies below the write position, inside
        // the mapping and the allocated file (it was written before). Only
        // the writer (`&mut self`) writes here, and none of these frames was
        // published to readers (the append that wrote them failed).
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(self.seg.map.as_mut_ptr().add(pos as usize), len)
        };
        bytes.fill(0);
        self.write_pos = pos;
        self.seg.sync(mode)
    }

    /// Write every buffered frame to the file with one `pwrite`. On failure
    /// the frames stay buffered (and the caller poisons the store).
    pub(crate) fn flush_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self.write_pos - self.pending.len() as u64;
        self.seg
            .io
            .write_at(&self.file, &self.seg.path, &self.pending, at, None)?;
        self.pending.clear();
        self.seg.note_handed_over(self.write_pos);
        Ok(())
    }
}

/// How a segment is mapped: for reading only (no descriptor kept, or one
/// kept while a read-only handle follows it), or as the writer's segment (descriptor kept; the map itself writable only when
/// frames are copied into it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapAccess {
    Read,
    /// Read-only, keeping the descriptor (the segment a follower reads).
    Follow,
    Write(FrameWrites),
}

/// How the writer hands frames to the active segment's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameWrites {
    /// Copied into the shared map (relaxed mode): no syscall per append.
    /// Only where the blocks allocated ahead are all a write needs, so that
    /// a page fault never needs disk space.
    Mapped,
    /// Written with `pwrite`; the map is read-only (durable mode, which
    /// buffers frames for one write per group commit, and copy-on-write
    /// filesystems, where writing a preallocated block allocates a new one
    /// and a full disk would fault a mapped write with `SIGBUS`).
    Pwrite,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    /// The seam of a store in `dir` with no faults (the test disk model
    /// follows what reaches it).
    fn io(dir: &Path) -> Io {
        #[allow(unused_mut)]
        let mut cfg = StoreConfig::new(dir);
        #[cfg(feature = "dangerous-test-hooks")]
        {
            cfg.fault_injector = Some(Arc::new(crate::store::fault::NoFaults));
        }
        Io::for_store(&cfg, true)
    }

    fn writing(io: &Io, growth: Arc<GrowthCounters>) -> Writing {
        Writing {
            prealloc: Prealloc::Reserve,
            writes: FrameWrites::Mapped,
            growth,
            io: io.clone(),
        }
    }

    fn create(dir: &Path, id: u64, capacity: u64, growth: Arc<GrowthCounters>) -> ActiveSegment {
        ActiveSegment::create(
            &dir.join(format!("{id:020}.seg")),
            id,
            &[7u8; SEGMENT_HEADER_LEN],
            capacity,
            &writing(&io(dir), growth),
        )
        .unwrap()
    }

    /// A prefetch is a hint: in range, at the end, past the end or with
    /// an absurd length it neither faults nor changes what is read.
    #[test]
    fn prefetching_a_frame_is_harmless_anywhere() {
        let d = tempfile::tempdir().unwrap();
        let mut a = create(d.path(), 1, 4 * MIN_GROW, Arc::default());
        a.append(300, |b| b.fill(9)).unwrap();
        let seg = a.segment();
        let h = SEGMENT_HEADER_LEN as u64;
        for (offset, len) in [
            (h, 300),
            (h, 5000),
            (seg.file_len(), 64),
            (u64::MAX - 8, 64),
            (0, u32::MAX),
        ] {
            seg.prefetch_frame(offset, len);
        }
        assert!(seg.slice(h, 300).iter().all(|&b| b == 9));
    }

    /// Every way a frame reaches a segment file goes through the seam: the
    /// test disk knows what was written (through the map or buffered and
    /// written) and synced, and a power cut keeps exactly the synced bytes.
    #[cfg(feature = "dangerous-test-hooks")]
    #[test]
    fn writes_go_through_the_seam_and_only_synced_bytes_survive_a_cut() {
        let d = tempfile::tempdir().unwrap();
        let io = io(d.path());
        let header = [7u8; SEGMENT_HEADER_LEN];
        let h = SEGMENT_HEADER_LEN as u64;
        let path = |id: u64| d.path().join(format!("{id:020}.seg"));
        let new = |id: u64| {
            ActiveSegment::create(
                &path(id),
                id,
                &header,
                4 * MIN_GROW,
                &writing(&io, Arc::default()),
            )
            .unwrap()
        };
        let mut a = new(1);
        a.append(100, |b| b.fill(1)).unwrap();
        a.segment().sync(SyncMode::SyncData).unwrap();
        a.append(100, |b| b.fill(2)).unwrap();
        let mut b = new(2);
        b.append_buffered(50, |x| x.fill(3)).unwrap();
        b.segment().sync(SyncMode::SyncData).unwrap();
        b.flush_pending().unwrap();
        io.sync_dir(d.path(), None).unwrap();
        let mut c = new(3);
        c.append(10, |x| x.fill(4)).unwrap();
        c.segment().sync(SyncMode::SyncData).unwrap();
        let cut = io.power_loss().unwrap();
        assert_eq!(cut.files_removed, 1, "3's entry was never synced");
        assert!(!path(3).exists());
        // 100 bytes of `a` written through the map after its sync, 50 of
        // `b` written after its sync (they were buffered when it ran).
        assert_eq!(cut.bytes_discarded, 150);
        let a_bytes = std::fs::read(path(1)).unwrap();
        assert!(a_bytes[h as usize..][..100].iter().all(|&x| x == 1));
        assert!(a_bytes[h as usize + 100..].iter().all(|&x| x == 0));
        let b_bytes = std::fs::read(path(2)).unwrap();
        assert!(b_bytes[h as usize..].iter().all(|&x| x == 0));
    }

    #[test]
    fn append_grow_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let mut a = create(d.path(), 1, 8 * MIN_GROW, Arc::default());
        assert!(a.is_empty());
        assert_eq!(a.segment().file_len(), MIN_GROW);
        let mut offsets = Vec::new();
        // Cross several growth steps.
        for i in 0..40u8 {
            offsets.push(a.append(100_000, |b| b.fill(i)).unwrap());
        }
        assert!(a.segment().file_len() >= a.write_pos());
        for (i, off) in offsets.iter().enumerate() {
            let s = a.segment();
            s.check_range(*off, 100_000).unwrap();
            assert!(s.slice(*off, 100_000).iter().all(|&b| b == i as u8));
        }
        assert!(a.segment().check_range(a.capacity(), 1).is_err());
        assert!(a.segment().check_range(u64::MAX, 1).is_err());
        a.segment().sync(SyncMode::SyncData).unwrap();
        // Data written through the mapping is in the file.
        let on_disk = std::fs::read(d.path().join(format!("{:020}.seg", 1))).unwrap();
        assert_eq!(on_disk[offsets[3] as usize], 3);
        // A frame past the capacity is refused, not written.
        assert!(a
            .append((8 * MIN_GROW) as usize, |_| panic!("must not be called"))
            .is_err());
    }

    #[test]
    fn read_only_map_matches_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s");
        std::fs::write(&path, b"hello world").unwrap();
        let s = Segment::open_read_only(&path, 9, &io(d.path())).unwrap();
        assert!(!s.holds_descriptor(), "a read-only map keeps no descriptor");
        assert_eq!(s.bytes(), b"hello world");
        assert_eq!(s.id(), 9);
        // Nothing was written through it: a sync has nothing to do.
        s.sync(SyncMode::SyncData).unwrap();
    }

    /// A sealed segment is read through its map after its descriptor is
    /// closed, and a sync that finds bytes not yet synced opens the file by
    /// path instead of passing over them.
    #[cfg(feature = "dangerous-test-hooks")]
    #[test]
    fn closed_descriptor_reads_through_map_and_syncs_by_path() {
        let d = tempfile::tempdir().unwrap();
        let io = io(d.path());
        let path = d.path().join(format!("{:020}.seg", 1));
        let mut a = ActiveSegment::create(
            &path,
            1,
            &[7u8; SEGMENT_HEADER_LEN],
            4 * MIN_GROW,
            &writing(&io, Arc::default()),
        )
        .unwrap();
        io.sync_dir(d.path(), None).unwrap();
        let off = a.append(100, |b| b.fill(5)).unwrap();
        let seg = a.segment().clone();
        drop(a);
        seg.close_descriptor();
        assert!(!seg.holds_descriptor());
        assert!(seg.slice(off, 100).iter().all(|&b| b == 5));
        seg.sync(SyncMode::SyncData).unwrap();
        assert_eq!(
            io.power_loss().unwrap().bytes_discarded,
            0,
            "synced by path"
        );
        assert!(std::fs::read(&path).unwrap()[off as usize..][..100]
            .iter()
            .all(|&b| b == 5));
        assert!(
            seg.grow(seg.file_len() + 1).is_err(),
            "a sealed segment does not grow"
        );
    }

    /// Growth an append had to do itself is counted; growth done before it
    /// (as the background thread does) is not.
    #[test]
    fn growth_on_the_append_path_is_counted() {
        let d = tempfile::tempdir().unwrap();
        let growth = Arc::new(GrowthCounters::default());
        let mut a = create(d.path(), 1, 32 * MIN_GROW, growth.clone());
        a.append(1000, |b| b.fill(1)).unwrap();
        assert_eq!(growth.get(), (0, 0), "inside the first allocation");
        let target = a.growth_wanted().unwrap();
        assert!(a.segment().grow(target).unwrap());
        growth.note_ahead();
        while a.write_pos() + 100_000 <= target {
            a.append(100_000, |b| b.fill(2)).unwrap();
        }
        assert_eq!(
            growth.get(),
            (1, 0),
            "grown ahead: the appends did not grow"
        );
        a.append(100_000, |b| b.fill(3)).unwrap();
        assert_eq!(growth.get(), (1, 1), "past the growth: the append grew");
    }
}
