//! The data directory: its lock, its listing, and directory fsync.

use super::io::{InjectionPoint, Io, SegmentIo};
use crate::store::format::segment::parse_segment_file_name;
use crate::store::{IoAt, StoreError};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

pub(crate) const LOCK_FILE: &str = "LOCK";
/// How long a busy lock is retried before `open` reports `Locked`.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);

/// An exclusive `flock` on `<dir>/LOCK`, held for the store's lifetime.
/// `flock` locks belong to the open file description, so a second open in the
/// same process is refused just like one from another process.
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .at("open the lock file", &dir.join(LOCK_FILE))?;
        // A process that forks (to spawn a program) shares our lock until
        // the child's exec closes its copy of the descriptor; a store closed
        // and reopened during that instant would see its own lock. So a busy
        // lock is retried for a moment before it counts as held.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(TryLockError::WouldBlock) => return Err(StoreError::Locked(dir.to_path_buf())),
                Err(TryLockError::Error(e)) => {
                    return Err(StoreError::io("lock", dir.join(LOCK_FILE), e))
                }
            }
        }
    }
}

/// The segment files of a directory, ordered by numeric id.
pub(crate) struct SegmentListing {
    pub(crate) segments: Vec<(u64, PathBuf)>,
}

impl SegmentListing {
    pub(crate) fn read(dir: &Path) -> Result<Self, StoreError> {
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir).at("list directory", dir)? {
            let entry = entry.at("list directory", dir)?;
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(parse_segment_file_name) {
                if entry.file_type().at("stat", &entry.path())?.is_file() {
                    segments.push((id, entry.path()));
                }
            }
        }
        segments.sort_unstable_by_key(|(id, _)| *id);
        Ok(Self { segments })
    }
}

/// Replace `dir/name` with `bytes` atomically: write a temporary file, sync
/// it, rename it over the target and sync the directory. A crash leaves the
/// old file or the new one. `points`: the named points a test knows the
/// rename and the directory sync as.
pub(crate) fn write_atomically(
    io: &Io,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    points: [Option<InjectionPoint>; 2],
) -> Result<(), StoreError> {
    let tmp_name = format!("{name}.tmp");
    let tmp = dir.join(&tmp_name);
    if let Err(e) = write_synced(io, dir, &tmp_name, bytes) {
        // A full disk: leave no partial temporary file behind.
        let _ = io.remove(&tmp, None);
        return Err(e);
    }
    io.rename(&tmp, &dir.join(name), points[0])?;
    io.sync_dir(dir, points[1])
}

/// Create (or replace) `dir/name` with `bytes` and sync the file (not the
/// directory: callers that need the name durable sync it, or rename first).
pub(crate) fn write_synced(
    io: &Io,
    dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let path = dir.join(name);
    super::io::ignore_missing(io.remove(&path, None))?;
    let file = io.create_new(&path)?;
    io.write_at(&file, &path, bytes, 0, None)?;
    io.sync(
        &file,
        &path,
        crate::store::config::SyncMode::SyncAll,
        None,
        None,
    )
}

/// Map a whole file read-only. Only for files batpak replaces by rename and
/// never truncates in place (the checkpoint), so the map stays valid even if
/// a newer version is renamed over the file meanwhile.
pub(crate) fn map_whole_file(path: &Path) -> std::io::Result<memmap2::Mmap> {
    let file = File::open(path)?;
    // SAFETY: the mapped file is only ever replaced by `rename`, which leaves
    // this inode (and so the mapping) intact; it is never truncated or written
    // in place, so the bytes cannot change or vanish under the mapping.
    unsafe { memmap2::Mmap::map(&file) }
}

/// fsync a directory so that entries created, renamed or removed in it are
/// durable (before a store's I/O seam exists; afterwards it goes through
/// the seam).
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("sync directory", dir)?;
    Ok(())
}

/// Create `dir` and its missing ancestors like `create_dir_all`, and make
/// them durable: the parent of every directory created here is synced,
/// outermost first, so a power cut cannot take the store's directory (and
/// the receipts of its first appends) away. Returns the directories whose
/// parents were synced, outermost first.
pub(crate) fn create_dir_all_synced(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    create_dir_all_with(dir, sync_dir)
}

fn create_dir_all_with(
    dir: &Path,
    mut sync: impl FnMut(&Path) -> Result<(), StoreError>,
) -> Result<Vec<PathBuf>, StoreError> {
    // The directories that do not exist yet, innermost first.
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(d) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(d.to_path_buf()),
            Err(e) => return Err(StoreError::io("stat directory", d, e)),
        }
        at = d.parent();
    }
    std::fs::create_dir_all(dir).at("create directory", dir)?;
    missing.reverse();
    for d in &missing {
        // (Another process may have created some of them meanwhile; syncing
        // their parents anyway costs little.)
        match d.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => sync(parent)?,
            None => sync(Path::new("."))?,
        }
    }
    Ok(missing)
}

/// Whether `dir` is on a copy-on-write filesystem (btrfs, ZFS, bcachefs),
/// where a write to an allocated block may need new space: a full disk then
/// fails a write through a memory map with `SIGBUS` (see [`FrameWrites`]).
///
/// [`FrameWrites`]: super::FrameWrites
pub(super) fn is_copy_on_write(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        const BTRFS: u32 = 0x9123_683e;
        const ZFS: u32 = 0x2fc1_2fc1;
        const BCACHEFS: u32 = 0xca45_1a4e;
        use std::os::unix::ffi::OsStrExt;
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: statfs reads a NUL-terminated path and writes one `statfs`
        // struct into memory we own and zeroed.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above; `path` and `st` outlive the call.
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
            return false;
        }
        // `f_type`'s integer type differs between targets; the magic
        // numbers are 32-bit.
        #[allow(clippy::unnecessary_cast, clippy::cast_possible_truncation)]
        let magic = st.f_type as u32;
        matches!(magic, BTRFS | ZFS | BCACHEFS)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_within_one_process() {
        let d = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(d.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(d.path()),
            Err(StoreError::Locked(_))
        ));
        drop(first);
        assert!(DirLock::acquire(d.path()).is_ok());
    }

    #[test]
    fn creating_a_directory_syncs_the_parent_of_each_one_created() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("a").join("b").join("c");
        let mut synced = Vec::new();
        let created = create_dir_all_with(&target, |p| {
            synced.push(p.to_path_buf());
            sync_dir(p)
        })
        .unwrap();
        assert!(target.is_dir());
        let a = d.path().join("a");
        assert_eq!(created, vec![a.clone(), a.join("b"), target.clone()]);
        // Outermost first: a parent's entry is durable before its child's.
        assert_eq!(synced, vec![d.path().to_path_buf(), a.clone(), a.join("b")]);
        // Nothing created, nothing synced.
        synced.clear();
        let created = create_dir_all_with(&target, |p| {
            synced.push(p.to_path_buf());
            Ok(())
        })
        .unwrap();
        assert!(created.is_empty() && synced.is_empty());
    }

    #[test]
    fn copy_on_write_detection_agrees_with_the_mount_table() {
        // The filesystem type of the longest mount point above the
        // directory, as the kernel lists it, against `statfs`.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().canonicalize().unwrap();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let fs_type = mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() > 2 && dir.starts_with(f[1])).then(|| (f[1].len(), f[2].to_owned()))
            })
            .max()
            .map(|(_, t)| t);
        if let Some(t) = fs_type {
            let cow = matches!(t.as_str(), "btrfs" | "zfs" | "bcachefs");
            assert_eq!(is_copy_on_write(&dir), cow, "{} is on {t}", dir.display());
        }
        assert!(!is_copy_on_write(Path::new("/nonexistent/batpak")));
    }

    #[test]
    fn listing_orders_numerically_and_ignores_strangers() {
        let d = tempfile::tempdir().unwrap();
        for name in [
            "00000000000000000010.seg",
            "00000000000000000009.seg",
            "00000000000000000100.seg",
            "notes.txt",
            "9.seg",
        ] {
            std::fs::write(d.path().join(name), b"").unwrap();
        }
        let ids: Vec<u64> = SegmentListing::read(d.path())
            .unwrap()
            .segments
            .iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(ids, vec![9, 10, 100]);
    }
}
