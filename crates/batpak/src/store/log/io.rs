//! The I/O seam: every operation that puts bytes into segment files or
//! changes the data directory (create, write, grow, sync, rename, delete),
//! behind one narrow interface, [`SegmentIo`].
//!
//! [`OsIo`] is the operating system. A build with feature
//! `dangerous-test-hooks` uses the test implementation instead
//! (`fault::TestIo`), which passes each operation to the operating system
//! unless a test's injector says to fail it, tear it (write half), or halt
//! the store's disk there, and which remembers what was synced, so a test
//! can lose everything that was not (a power cut). Without the feature
//! [`Io`] *is* [`OsIo`]: its named steps ([`SegmentIo::at`]) are empty and
//! inline away, and no injection code is compiled (ADR 0022).
//!
//! Owns no state of the store: it is told which file (by descriptor and
//! path) and, where a test may aim at it, which named point an operation is.

use crate::store::config::SyncMode;
pub(crate) use crate::store::fault::InjectionPoint;
use crate::store::{IoAt, StoreConfig, StoreError};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// What every implementation of the seam does.
pub(crate) trait SegmentIo: Clone + Send + Sync + 'static {
    /// The seam of a store opened with `config` (writable or not).
    fn for_store(config: &StoreConfig, writable: bool) -> Self;

    /// Create `path`, which must not exist, for reading and writing.
    fn create_new(&self, path: &Path) -> Result<File, StoreError>;

    /// Open the existing file `path` for reading, and writing if `write`.
    fn open(&self, path: &Path, write: bool) -> Result<File, StoreError>;

    /// Write all of `buf` to `file` (at `path`) at `offset`. `point`: the
    /// named point a test knows this write as, if any.
    fn write_at(
        &self,
        file: &File,
        path: &Path,
        buf: &[u8],
        offset: u64,
        point: Option<InjectionPoint>,
    ) -> Result<(), StoreError>;

    /// The writer copied `bytes` into the memory map of `path` at `offset`
    /// (no system call: the page cache has them). A test may fail or tear
    /// such a write here; a failure asks the writer to take it back.
    fn wrote_mapped(&self, path: &Path, offset: u64, bytes: &mut [u8]) -> Result<(), StoreError>;

    /// Give `file` (at `path`) disk blocks for `offset..offset + len`,
    /// extending it: a full disk is an error here, never later.
    fn allocate(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        len: u64,
        how: Prealloc,
    ) -> Result<(), StoreError>;

    /// Make what was written to `file` (at `path`) durable. `before` and
    /// `after`: the named points just before the sync and just after it
    /// succeeded.
    fn sync(
        &self,
        file: &File,
        path: &Path,
        mode: SyncMode,
        before: Option<InjectionPoint>,
        after: Option<InjectionPoint>,
    ) -> Result<(), StoreError>;

    /// Make the entries of directory `dir` durable (files created, renamed
    /// or deleted in it). `point`: the named point just before.
    fn sync_dir(&self, dir: &Path, point: Option<InjectionPoint>) -> Result<(), StoreError>;

    /// Rename `from` to `to`. `point`: the named point just before.
    fn rename(
        &self,
        from: &Path,
        to: &Path,
        point: Option<InjectionPoint>,
    ) -> Result<(), StoreError>;

    /// Delete the file `path`. `point`: the named point just before.
    fn remove(&self, path: &Path, point: Option<InjectionPoint>) -> Result<(), StoreError>;

    /// A named step of the store's work that is not itself an I/O
    /// operation (an append's item is in the log, the index holds it, a
    /// thread started, ...): where a test may fail, panic or hold the
    /// caller. Does nothing in a real store.
    fn at(&self, point: InjectionPoint) -> Result<(), StoreError>;

    /// Whether `dir` is on a copy-on-write filesystem (see [`FrameWrites`]).
    ///
    /// [`FrameWrites`]: super::FrameWrites
    fn copy_on_write(&self, dir: &Path) -> bool;
}

/// The seam a store uses: the operating system, or (feature
/// `dangerous-test-hooks`) the test implementation in front of it.
#[cfg(not(feature = "dangerous-test-hooks"))]
pub(crate) type Io = OsIo;
#[cfg(feature = "dangerous-test-hooks")]
pub(crate) type Io = crate::store::fault::TestIo;

/// How a segment gets disk blocks ahead of the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prealloc {
    /// `fallocate`: instant, but the blocks start "unwritten", and the first
    /// write to each one costs a metadata commit in the next sync.
    Reserve,
    /// Write zeros and sync them once: the blocks are plain written blocks,
    /// so a later data sync has no metadata to commit (durable mode, where
    /// every append waits for a sync).
    Zeros,
}

pub(crate) static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The operating system.
#[derive(Clone, Debug, Default)]
pub(crate) struct OsIo;

impl SegmentIo for OsIo {
    fn for_store(_config: &StoreConfig, _writable: bool) -> Self {
        // No injector can exist in a build without the test hooks (nothing
        // implements `FaultInjector`): `config.fault_injector` is `None`.
        OsIo
    }

    fn create_new(&self, path: &Path) -> Result<File, StoreError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .at("create", path)
    }

    fn open(&self, path: &Path, write: bool) -> Result<File, StoreError> {
        OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .at("open", path)
    }

    #[inline]
    fn write_at(
        &self,
        file: &File,
        path: &Path,
        buf: &[u8],
        offset: u64,
        _point: Option<InjectionPoint>,
    ) -> Result<(), StoreError> {
        file.write_all_at(buf, offset).at("write", path)
    }

    #[inline(always)]
    fn wrote_mapped(&self, _: &Path, _: u64, _: &mut [u8]) -> Result<(), StoreError> {
        Ok(())
    }

    fn allocate(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        len: u64,
        how: Prealloc,
    ) -> Result<(), StoreError> {
        allocate(file, offset, len, how).at("allocate", path)
    }

    fn sync(
        &self,
        file: &File,
        path: &Path,
        mode: SyncMode,
        _before: Option<InjectionPoint>,
        _after: Option<InjectionPoint>,
    ) -> Result<(), StoreError> {
        match mode {
            SyncMode::SyncAll => file.sync_all(),
            SyncMode::SyncData => file.sync_data(),
        }
        .at("sync", path)
    }

    fn sync_dir(&self, dir: &Path, _point: Option<InjectionPoint>) -> Result<(), StoreError> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .at("sync directory", dir)
    }

    fn rename(
        &self,
        from: &Path,
        to: &Path,
        _point: Option<InjectionPoint>,
    ) -> Result<(), StoreError> {
        std::fs::rename(from, to).at("rename", from)
    }

    fn remove(&self, path: &Path, _point: Option<InjectionPoint>) -> Result<(), StoreError> {
        std::fs::remove_file(path).at("remove", path)
    }

    #[inline(always)]
    fn at(&self, _point: InjectionPoint) -> Result<(), StoreError> {
        Ok(())
    }

    fn copy_on_write(&self, dir: &Path) -> bool {
        super::dir::is_copy_on_write(dir)
    }
}

/// Give `file` real blocks for `off..off + len` (extending it), so later
/// writes cannot fail for lack of space (a full disk is reported here, as an
/// error from the call that needed the space).
fn allocate(file: &File, off: u64, len: u64, how: Prealloc) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    if how == Prealloc::Reserve {
        use std::os::fd::AsRawFd;
        let invalid = || std::io::Error::from(std::io::ErrorKind::InvalidInput);
        let (o, l) = (
            libc::off_t::try_from(off).map_err(|_| invalid())?,
            libc::off_t::try_from(len).map_err(|_| invalid())?,
        );
        // SAFETY: fallocate on a valid, open descriptor with in-range offsets;
        // it touches no memory of this process.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, o, l) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if !matches!(
            err.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
        ) {
            return Err(err);
        }
    }
    // Zero fill (asked for, or no fallocate on this filesystem).
    let mut at = off;
    while at < off + len {
        let n = (off + len - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    if how == Prealloc::Zeros {
        file.sync_data()?;
    }
    Ok(())
}

/// Results the seam's callers often want of an operation whose target may
/// already be gone (installation steps that are repeated after a crash).
pub(crate) fn ignore_missing(r: Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
