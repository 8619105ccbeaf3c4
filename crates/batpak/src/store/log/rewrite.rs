//! Replacing sealed segments (compaction): new segments are written whole
//! under temporary names, then installed by rename once the compaction's
//! intent is durable (see `format::intent` for the protocol).
//!
//! Only file mechanics live here; which frames go where is the caller's
//! business.

use super::dir::write_atomically;
pub(crate) use super::dir::write_synced;
use super::io::{ignore_missing, InjectionPoint, Io, SegmentIo};
use super::{Log, Segment};
use crate::store::config::SyncMode;
use crate::store::format::checkpoint::CHECKPOINT_FILE;
use crate::store::format::intent::{
    is_temporary, output_file_name, Intent, INTENT_FILE, REMOVED_NEXT_FILE,
};
use crate::store::format::removed::REMOVED_FILE;
use crate::store::format::segment::{segment_file_name, SegmentHeader};
use crate::store::StoreError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes a [`SegmentWriter`] gathers before it writes them.
const WRITE_BUFFER: usize = 1 << 20;

/// A segment being written whole under a temporary name. Its id is settled
/// only when it is finished (compaction names an output after the last
/// input it packs, which it knows only then): until then the file is named
/// after, and its header names, the id it was created with.
pub(crate) struct SegmentWriter {
    io: Io,
    dir: PathBuf,
    created_as: u64,
    created_us: i64,
    file: File,
    path: PathBuf,
    /// Bytes not written to the file yet; they start at `len - buf.len()`.
    buf: Vec<u8>,
    len: u64,
}

impl SegmentWriter {
    /// Start a segment file named (for now) after segment `id`.
    pub(crate) fn create(
        io: &Io,
        dir: &Path,
        id: u64,
        created_us: i64,
    ) -> Result<Self, StoreError> {
        let path = dir.join(output_file_name(id));
        // Left by an earlier attempt that was not cleaned up: not installed.
        ignore_missing(io.remove(&path, None))?;
        let file = io.create_new(&path)?;
        let mut w = Self {
            io: io.clone(),
            dir: dir.to_path_buf(),
            created_as: id,
            created_us,
            file,
            path,
            buf: Vec::with_capacity(WRITE_BUFFER),
            len: 0,
        };
        w.write(
            &SegmentHeader {
                segment_id: id,
                created_us,
            }
            .encode(),
        )?;
        Ok(w)
    }

    /// Bytes written so far (the offset of the next frame).
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Append `bytes`; returns the offset they start at.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<u64, StoreError> {
        if self.buf.len() + bytes.len() > WRITE_BUFFER {
            self.flush()?;
        }
        let at = self.len;
        if bytes.len() > WRITE_BUFFER {
            self.io.write_at(&self.file, &self.path, bytes, at, None)?;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(at)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if !self.buf.is_empty() {
            let at = self.len - self.buf.len() as u64;
            self.io
                .write_at(&self.file, &self.path, &self.buf, at, None)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Settle the segment's id (its header and temporary name), flush and
    /// sync the file; returns its length.
    pub(crate) fn finish_as(mut self, id: u64) -> Result<u64, StoreError> {
        self.flush()?;
        if id != self.created_as {
            let header = SegmentHeader {
                segment_id: id,
                created_us: self.created_us,
            };
            self.io
                .write_at(&self.file, &self.path, &header.encode(), 0, None)?;
        }
        self.io
            .sync(&self.file, &self.path, SyncMode::SyncAll, None, None)?;
        if id != self.created_as {
            // Made durable with the directory when the intent is written.
            self.io
                .rename(&self.path, &self.dir.join(output_file_name(id)), None)?;
        }
        Ok(self.len)
    }
}

/// Delete what an uncommitted compaction left behind.
pub(crate) fn discard_temporaries(io: &Io, dir: &Path) -> Result<(), StoreError> {
    let mut removed = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_str().is_some_and(is_temporary) {
            io.remove(&entry.path(), None)?;
            removed = true;
        }
    }
    if removed {
        io.sync_dir(dir, None)?;
    }
    Ok(())
}

/// The committed but not yet installed compaction of `dir`, if any.
pub(crate) fn pending_intent(dir: &Path) -> Result<Option<Intent>, StoreError> {
    let path = dir.join(INTENT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Intent::decode(&bytes)
            .map(Some)
            .map_err(|e| StoreError::RecordDamaged {
                path,
                detail: format!("compaction intent: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Where segment `id` lives while `intent` is pending: its replacement if
/// that was not renamed into place yet, else its own file; `None` if the
/// compaction deletes it. (For read-only opens, which must not install.)
pub(crate) fn pending_segment_path(dir: &Path, intent: &Intent, id: u64) -> Option<PathBuf> {
    if intent.deleted.contains(&id) {
        return None;
    }
    let tmp = dir.join(output_file_name(id));
    if intent.outputs.contains(&id) && tmp.exists() {
        return Some(tmp);
    }
    Some(dir.join(segment_file_name(id)))
}

/// Where the removed-event record lives while `intent` is pending.
pub(crate) fn pending_removed_path(dir: &Path, intent: &Intent) -> PathBuf {
    let next = dir.join(REMOVED_NEXT_FILE);
    if intent.removed_record && next.exists() {
        next
    } else {
        dir.join(REMOVED_FILE)
    }
}

/// Commit: make `intent` durable. From here on the compaction happens even
/// if the process dies (open finishes it).
pub(crate) fn commit(io: &Io, dir: &Path, intent: &Intent) -> Result<(), StoreError> {
    write_atomically(io, dir, INTENT_FILE, &intent.encode(), [None, None])
}

/// Install a committed compaction. Every step can be repeated, so a crash
/// part-way is finished by running this again. `point`: the named point a
/// test knows each step as (compaction's own install; an open finishing
/// one names none).
pub(crate) fn install(
    io: &Io,
    dir: &Path,
    intent: &Intent,
    point: Option<InjectionPoint>,
) -> Result<(), StoreError> {
    let rename_if_present = |from: &Path, to: &Path| ignore_missing(io.rename(from, to, point));
    let remove_if_present = |path: &Path| ignore_missing(io.remove(path, point));
    // The checkpoint names the old positions: it goes first.
    remove_if_present(&dir.join(CHECKPOINT_FILE))?;
    if intent.removed_record {
        rename_if_present(&dir.join(REMOVED_NEXT_FILE), &dir.join(REMOVED_FILE))?;
    }
    for &id in &intent.outputs {
        rename_if_present(
            &dir.join(output_file_name(id)),
            &dir.join(segment_file_name(id)),
        )?;
    }
    for &id in &intent.deleted {
        remove_if_present(&dir.join(segment_file_name(id)))?;
    }
    io.sync_dir(dir, None)?;
    remove_if_present(&dir.join(INTENT_FILE))?;
    io.sync_dir(dir, None)
}

impl Log {
    /// Swap installed replacements into the registry and forget deleted
    /// segments. Readers holding the old segments keep reading them (their
    /// mappings outlive the rename); the caller holds the index write lock,
    /// so no reader can pair a new position with an old segment.
    pub(crate) fn replace_segments(&self, outputs: Vec<Arc<Segment>>, deleted: &[u64]) {
        let mut map = self.segments.write();
        for id in deleted {
            map.remove(id);
        }
        for seg in outputs {
            map.insert(seg.id(), seg);
        }
    }

    /// Map installed segment `id` for reading.
    pub(crate) fn open_installed(&self, id: u64) -> Result<Arc<Segment>, StoreError> {
        Ok(Arc::new(Segment::open_read_only(
            &self.dir.join(segment_file_name(id)),
            id,
            self.io(),
        )?))
    }
}
