//! Loading and writing the removed-event record (`format::removed`).

use crate::store::format::removed::{self, RemovedRecord, REMOVED_FILE};
use crate::store::log::Io;
use crate::store::StoreError;
use std::path::Path;

/// The removed-event record of the store in `dir`. A store without segments
/// is new: its (empty) record is created when `writable`. A store with
/// segments must have a readable record: a missing or damaged one is an
/// error, never an empty record.
pub(crate) fn load_removed(
    io: &Io,
    dir: &Path,
    has_segments: bool,
    writable: bool,
) -> Result<RemovedRecord, StoreError> {
    load_removed_from(io, dir, &dir.join(REMOVED_FILE), has_segments, writable)
}

/// [`load_removed`] from `path` (a pending compaction's next record, for
/// read-only opens).
pub(crate) fn load_removed_from(
    io: &Io,
    dir: &Path,
    path: &Path,
    has_segments: bool,
    writable: bool,
) -> Result<RemovedRecord, StoreError> {
    let path = path.to_path_buf();
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
            let empty = RemovedRecord::default();
            if writable {
                write_removed(io, dir, &empty)?;
            }
            Ok(empty)
        }
        Err(e) => Err(damaged(format!("removed-event record unreadable: {e}"))),
    }
}

/// The removed events as predecessors: an event may follow one of its
/// entity's events that compaction removed (the gap is not a chain break).
/// Recovery and `verify` both judge links with this.
#[derive(Default)]
pub(crate) struct RemovedPredecessors {
    /// Per entity: (clock, hash) of its removed events, sorted by clock.
    by_entity: hashbrown::HashMap<Box<str>, Vec<(u32, [u8; 32])>>,
}

impl RemovedPredecessors {
    pub(crate) fn new(record: &RemovedRecord) -> Self {
        let mut by_entity: hashbrown::HashMap<Box<str>, Vec<(u32, [u8; 32])>> =
            hashbrown::HashMap::new();
        for e in &record.entries {
            by_entity
                .entry(e.entity.as_str().into())
                .or_default()
                .push((e.clock, e.event_hash));
        }
        for events in by_entity.values_mut() {
            events.sort_unstable_by_key(|&(clock, _)| clock);
        }
        Self { by_entity }
    }

    /// The hash of `entity`'s event just before `clock`, if compaction
    /// removed that event.
    pub(crate) fn before(&self, entity: &str, clock: u32) -> Option<[u8; 32]> {
        let prev = clock.checked_sub(1)?;
        let events = self.by_entity.get(entity)?;
        let i = events.binary_search_by_key(&prev, |&(c, _)| c).ok()?;
        Some(events[i].1)
    }
}

/// Replace the removed-event record atomically.
pub(crate) fn write_removed(io: &Io, dir: &Path, record: &RemovedRecord) -> Result<(), StoreError> {
    crate::store::log::write_atomically(
        io,
        dir,
        REMOVED_FILE,
        &removed::encode(record),
        [None, None],
    )
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
        let gone = crate::store::format::removed::RemovedEntry {
            event_id: 0xfeed,
            global_seq: 40,
            kind: kind.raw(),
            clock: 9,
            timestamp_us: 0,
            event_hash: [5; 32],
            entity: "order:1".into(),
            scope: "t".into(),
        };
        write_removed(
            &<Io as crate::store::log::SegmentIo>::for_store(&StoreConfig::new(dir.path()), true),
            dir.path(),
            &RemovedRecord {
                epoch: 1,
                entries: vec![gone],
            },
        )
        .unwrap();
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
        let next = store.append(&c, kind, &2).unwrap();
        assert_eq!(next.sequence, 41, "removed sequences are not reused");
        let stored = store.get(next.event_id).unwrap();
        assert_eq!(
            stored.event.header.position.sequence, 10,
            "the entity's clock continues after its removed newest event"
        );
        assert_eq!(
            stored.event.hash_chain.unwrap().prev_hash,
            [5; 32],
            "the chain continues from the removed event's hash"
        );
    }
}
