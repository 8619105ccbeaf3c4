//! Loading and writing the removed-event record (`format::removed`).

use crate::store::format::removed::{self, RemovedEntry, REMOVED_FILE};
use crate::store::StoreError;
use std::path::Path;

/// The removed-event record of the store in `dir`. A store without segments
/// is new: its (empty) record is created when `writable`. A store with
/// segments must have a readable record: a missing or damaged one is an
/// error, never an empty record.
pub(crate) fn load_removed(
    dir: &Path,
    has_segments: bool,
    writable: bool,
) -> Result<Vec<RemovedEntry>, StoreError> {
    let path = dir.join(REMOVED_FILE);
    let damaged = |detail: String| StoreError::RecordDamaged {
        path: path.clone(),
        detail,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            removed::decode(&bytes).map_err(|e| damaged(format!("removed-event record: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if has_segments {
                return Err(damaged(
                    "removed-event record is missing; the idempotency keys of compacted events cannot be checked".into(),
                ));
            }
            if writable {
                write_removed(dir, &[])?;
            }
            Ok(Vec::new())
        }
        Err(e) => Err(damaged(format!("removed-event record unreadable: {e}"))),
    }
}

/// Replace the removed-event record atomically.
#[cfg_attr(not(test), allow(dead_code))] // written by compaction
pub(crate) fn write_removed(dir: &Path, entries: &[RemovedEntry]) -> Result<(), StoreError> {
    crate::store::log::write_atomically(dir, REMOVED_FILE, &removed::encode(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    /// A key whose event compaction removed keeps returning its original
    /// receipt (id and sequence, position zeroed), other uses of it conflict,
    /// and its sequence number is never handed out again.
    #[test]
    fn removed_keys_keep_working() {
        let dir = tempfile::tempdir().unwrap();
        let c = Coordinate::new("order:1", "t").unwrap();
        let kind = EventKind::custom(1, 1);
        {
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            store.append(&c, kind, &1).unwrap();
            store.close().unwrap();
        }
        let gone = RemovedEntry {
            event_id: 0xfeed,
            global_seq: 40,
            kind: kind.raw(),
            entity: "order:1".into(),
            scope: "t".into(),
        };
        write_removed(dir.path(), &[gone]).unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(store.diagnostics().recovery.removed_events, 1);
        let retry = store
            .append_with_options(
                &c,
                kind,
                &"again",
                AppendOptions::new().with_idempotency(0xfeed),
            )
            .unwrap();
        assert_eq!((retry.event_id, retry.sequence), (0xfeed, 40));
        assert_eq!(retry.disk_pos, DiskPos::default());
        assert!(matches!(
            store.append_with_options(
                &Coordinate::new("x", "t").unwrap(),
                kind,
                &1,
                AppendOptions::new().with_idempotency(0xfeed)
            ),
            Err(StoreError::IdempotencyConflict { .. })
        ));
        assert_eq!(store.stats().event_count, 1, "the retry wrote nothing");
        assert_eq!(
            store.append(&c, kind, &2).unwrap().sequence,
            41,
            "removed sequences are not reused"
        );
    }
}
