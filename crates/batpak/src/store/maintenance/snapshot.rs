//! `Store::snapshot`: a consistent copy of the store, taken while appends
//! continue (SPEC §5.3).
//!
//! The copy is cut at one commit point: under the writer lock (so no append
//! is half-written) the active segment's write position is noted; everything
//! before it is synced and copied, nothing after it. Sealed segments are
//! copied whole; compaction and footer writing are held off meanwhile. The
//! copy is assembled in a temporary sibling directory and renamed into place
//! once complete and synced, so `dest` never holds half a snapshot.
//!
//! Reads the store's files; writes only the destination and its staging
//! directory beside it.

use super::Maintainer;
use crate::store::config::SyncMode;
use crate::store::format::footer;
use crate::store::format::removed::REMOVED_FILE;
use crate::store::format::segment::{segment_file_name, SEGMENT_HEADER_LEN};
use crate::store::log::rewrite::write_synced;
use crate::store::log::{InjectionPoint, Segment, SegmentIo};
use crate::store::StoreError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a snapshot copies of one segment.
struct Part {
    segment: Arc<Segment>,
    /// Copy only this many bytes (the active segment); `None` = the whole file.
    upto: Option<u64>,
    /// Copy the frames from here on (after the header): a read-only handle
    /// that followed its owner across a compaction began reading an output
    /// past the frames it had read from the segments that output replaced,
    /// and copies each frame once.
    from: u64,
}

pub(crate) fn snapshot(maint: &Maintainer<'_>, dest: &Path) -> Result<(), StoreError> {
    check_destination(dest)?;
    let _maintenance = maint.lock.lock();
    let parts = commit_point(maint)?;
    let staging = staging_dir(dest)?;
    let io = maint.log.io();
    let copied = (|| {
        std::fs::create_dir(&staging)?;
        let writable = maint.writer.is_some();
        for part in &parts {
            let name = segment_file_name(part.segment.id());
            let to = staging.join(&name);
            match part.upto {
                // A sealed segment of a store we own: its file is stable
                // while we hold the maintenance lock, so the kernel copies it.
                None if writable => {
                    std::fs::copy(maint.log.dir().join(&name), &to)?;
                    io.sync(&File::open(&to)?, &to, SyncMode::SyncAll, None, None)?;
                }
                // Otherwise the bytes this handle maps are the ones it serves.
                // Of the newest segment only the committed range is touched:
                // its writer may be writing past it through the same map.
                upto => {
                    let seg = &part.segment;
                    let end = upto.map_or(seg.file_len(), |u| u.min(seg.file_len()));
                    seg.check_range(0, end)?;
                    let bytes = seg.slice(0, end);
                    let end = bytes.len();
                    let from = part.from as usize;
                    if from > SEGMENT_HEADER_LEN && from <= end {
                        // The header, then the frames this handle indexed
                        // from this file; not the footer (its offsets name
                        // the frames left out), so the copy's open scans it.
                        let frames_end =
                            footer::locate(bytes).map_or(end, |at| (at as usize).clamp(from, end));
                        let mut copy = bytes[..SEGMENT_HEADER_LEN].to_vec();
                        copy.extend_from_slice(&bytes[from..frames_end]);
                        write_synced(io, &staging, &name, &copy)?;
                    } else {
                        write_synced(io, &staging, &name, bytes)?;
                    }
                }
            }
        }
        maint.log.io().at(InjectionPoint::SnapshotCopied)?;
        // The removed-event record: ids and sequences compaction removed.
        let removed = std::fs::read(maint.log.dir().join(REMOVED_FILE))?;
        if !writable {
            // A read-only handle copies the segments it mapped; if the owner
            // has compacted history since, the record on disk no longer
            // matches them.
            let on_disk = crate::store::format::removed::decode(&removed)
                .map(|r| r.epoch)
                .unwrap_or(u64::MAX);
            if on_disk != maint.history_epoch() {
                return Err(StoreError::Io(std::io::Error::other(
                    "the store's history was compacted after this read-only handle opened it; reopen the handle to snapshot it",
                )));
            }
        }
        write_synced(io, &staging, REMOVED_FILE, &removed)?;
        io.sync_dir(&staging, None)?;
        // An empty `dest` is replaced by the rename; a missing one created.
        std::fs::rename(&staging, dest)?;
        io.sync_dir(&parent_of(dest), None)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    copied
}

/// Refuse a symlink, a file, or a directory that is not empty.
fn check_destination(dest: &Path) -> Result<(), StoreError> {
    let refuse = |why: &str| {
        Err(StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("snapshot destination {}: {why}", dest.display()),
        )))
    };
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.file_type().is_symlink() => refuse("is a symbolic link"),
        Ok(m) if !m.is_dir() => refuse("exists and is not a directory"),
        Ok(_) => {
            if std::fs::read_dir(dest)?.next().is_some() {
                refuse("exists and is not empty")
            } else {
                Ok(())
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A fresh directory next to `dest` to assemble the copy in.
fn staging_dir(dest: &Path) -> Result<PathBuf, StoreError> {
    let name = dest.file_name().ok_or_else(|| {
        StoreError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("snapshot destination {} has no name", dest.display()),
        ))
    })?;
    let staging = parent_of(dest).join(format!(
        ".{}.snapshot-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if staging.exists() {
        // Left by an earlier attempt of this process that failed.
        std::fs::remove_dir_all(&staging)?;
    }
    Ok(staging)
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The segments to copy and where the copy stops, fixed at one instant.
fn commit_point(maint: &Maintainer<'_>) -> Result<Vec<Part>, StoreError> {
    let (newest, end) = match maint.writer {
        Some(writer) => {
            let w = writer.lock();
            (w.active.segment().id(), w.active.write_pos())
        }
        None => match maint.follow.lock().as_ref() {
            Some(f) => f.position(),
            None => (u64::MAX, 0),
        },
    };
    // Everything up to that point becomes durable before it is copied.
    maint.syncer.sync_all_written()?;
    let follow = maint.follow.lock();
    Ok(maint
        .log
        .segment_ids()
        .into_iter()
        .filter(|&id| id <= newest)
        .filter_map(|id| maint.log.segment(id))
        .map(|segment| Part {
            upto: (segment.id() == newest).then_some(end),
            from: follow
                .as_ref()
                .map_or(SEGMENT_HEADER_LEN as u64, |f| f.read_from(segment.id())),
            segment,
        })
        .collect())
}
