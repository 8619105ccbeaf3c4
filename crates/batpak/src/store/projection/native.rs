//! `NativeCache`: projected values as files in a directory, one per key,
//! written atomically (temporary file, rename) and checksummed, so a value
//! survives restarts and a damaged one reads as a miss.
//!
//! ```text
//! file <32 hex digits of the key's FNV-1a-128 hash>.bpc
//!  0 4 magic "BPKC"   4 4 version 1   8 8 watermark   16 8 cached at (µs)
//! 24 4 key length K  28 4 value length V  32 K key  32+K V value
//! 32+K+V 4 CRC-32 of everything before
//! ```
//! Writes are not synced (a lost entry is only a miss).

use super::{CacheCapabilities, CacheMeta, ProjectionCache};
use crate::store::StoreError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const MAGIC: &[u8; 4] = b"BPKC";
const VERSION: u32 = 1;
const HEADER: usize = 32;
const SUFFIX: &str = ".bpc";

/// A file-backed projection cache.
#[derive(Debug)]
pub struct NativeCache {
    root: PathBuf,
    tmp_counter: AtomicU64,
    /// Entries written since the last `sync` (puts do not fsync; `sync`
    /// does). A set: one file per key, however often it is rewritten.
    unsynced: parking_lot::Mutex<hashbrown::HashSet<PathBuf>>,
}

/// Temporary files older than this were left by a process that crashed
/// mid-put (a live put renames its file within moments).
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(60);

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::CacheFailed(Box::new(e))
}

/// FNV-1a, 128-bit: names files after keys of any length.
pub(crate) fn key_hash(bytes: &[u8]) -> u128 {
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for &b in bytes {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
    }
    h
}

/// Delete `.tmp-*` files that a crashed put left behind.
fn remove_stale_temporaries(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".tmp-"))
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl NativeCache {
    /// Use (and create) the directory `path`. A symlink is refused, so the
    /// cache cannot be pointed at files it does not own.
    ///
    /// # Errors
    /// `CacheFailed` if `path` is a symlink or cannot be created.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let root = path.as_ref().to_path_buf();
        if std::fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("cache path {} is a symlink", root.display()),
            )));
        }
        std::fs::create_dir_all(&root).map_err(failed)?;
        remove_stale_temporaries(&root);
        Ok(Self {
            root,
            tmp_counter: AtomicU64::new(0),
            unsynced: parking_lot::Mutex::new(hashbrown::HashSet::new()),
        })
    }

    fn file_for(&self, key: &[u8]) -> PathBuf {
        self.root.join(format!("{:032x}{SUFFIX}", key_hash(key)))
    }

    /// Decode an entry; `None` for anything damaged or for another key.
    fn decode(bytes: &[u8], key: &[u8]) -> Option<(Vec<u8>, CacheMeta)> {
        if bytes.len() < HEADER + 4 || &bytes[0..4] != MAGIC {
            return None;
        }
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let u64_at = |at: usize| {
            let b = bytes.get(at..at + 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Some(u64::from_le_bytes(a))
        };
        if u32_at(4)? != VERSION {
            return None;
        }
        let klen = u32_at(24)? as usize;
        let vlen = u32_at(28)? as usize;
        let end = HEADER.checked_add(klen)?.checked_add(vlen)?;
        if end + 4 != bytes.len() || crc32fast::hash(&bytes[..end]) != u32_at(end)? {
            return None;
        }
        if &bytes[HEADER..HEADER + klen] != key {
            return None;
        }
        let meta = CacheMeta {
            watermark: u64_at(8)?,
            cached_at_us: u64_at(16)? as i64,
        };
        Some((bytes[HEADER + klen..end].to_vec(), meta))
    }

    fn entry_key(bytes: &[u8]) -> Option<&[u8]> {
        let klen = bytes
            .get(24..28)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))? as usize;
        bytes.get(HEADER..HEADER.checked_add(klen)?)
    }
}

impl ProjectionCache for NativeCache {
    fn capabilities(&self) -> CacheCapabilities {
        CacheCapabilities::none()
    }

    fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, CacheMeta)>, StoreError> {
        match std::fs::read(self.file_for(key)) {
            Ok(bytes) => Ok(Self::decode(&bytes, key)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(failed(e)),
        }
    }

    fn put(&self, key: &[u8], value: &[u8], meta: CacheMeta) -> Result<(), StoreError> {
        let too_big = || {
            failed(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "cache entry over 4 GiB",
            ))
        };
        let klen = u32::try_from(key.len()).map_err(|_| too_big())?;
        let vlen = u32::try_from(value.len()).map_err(|_| too_big())?;
        let mut b = Vec::with_capacity(HEADER + key.len() + value.len() + 4);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&meta.watermark.to_le_bytes());
        b.extend_from_slice(&meta.cached_at_us.to_le_bytes());
        b.extend_from_slice(&klen.to_le_bytes());
        b.extend_from_slice(&vlen.to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(value);
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join(format!(".tmp-{}-{n}", std::process::id()));
        std::fs::write(&tmp, &b).map_err(failed)?;
        let path = self.file_for(key);
        std::fs::rename(&tmp, &path).map_err(failed)?;
        self.unsynced.lock().insert(path);
        Ok(())
    }

    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64, StoreError> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.root).map_err(failed)? {
            let path = entry.map_err(failed)?.path();
            if path.extension().is_none_or(|e| e != "bpc") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if Self::entry_key(&bytes).is_some_and(|k| k.starts_with(prefix))
                && std::fs::remove_file(&path).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn sync(&self) -> Result<(), StoreError> {
        let written = std::mem::take(&mut *self.unsynced.lock());
        for path in &written {
            match std::fs::File::open(path) {
                Ok(f) => f.sync_data().map_err(failed)?,
                // Replaced or deleted since: nothing of ours to sync.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed(e)),
            }
        }
        std::fs::File::open(&self.root)
            .and_then(|d| d.sync_all())
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_survive_reopen_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let meta = CacheMeta {
            watermark: 7,
            cached_at_us: 99,
        };
        {
            let c = NativeCache::open(dir.path().join("c")).unwrap();
            c.put(b"k1", b"value", meta.clone()).unwrap();
            c.put(b"k2", b"other", meta.clone()).unwrap();
            assert_eq!(
                c.get(b"k1").unwrap(),
                Some((b"value".to_vec(), meta.clone()))
            );
            assert_eq!(c.get(b"nope").unwrap(), None);
        }
        let c = NativeCache::open(dir.path().join("c")).unwrap();
        assert_eq!(c.get(b"k1").unwrap().unwrap().0, b"value");
        // Damage every byte in turn: always a miss, never an error or a wrong value.
        let file = c.file_for(b"k1");
        let good = std::fs::read(&file).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(&file, &bad).unwrap();
            assert_eq!(c.get(b"k1").unwrap(), None, "flip at {i}");
        }
        std::fs::write(&file, &good[..10]).unwrap();
        assert_eq!(c.get(b"k1").unwrap(), None);
        assert_eq!(
            c.delete_prefix(b"k").unwrap(),
            1,
            "k2 (k1 is damaged and unreadable as a key)"
        );
        c.sync().unwrap();
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(dir.path(), dir.path().join("link")).unwrap();
        assert!(matches!(
            NativeCache::open(dir.path().join("link")),
            Err(StoreError::CacheFailed(_))
        ));
    }
}
