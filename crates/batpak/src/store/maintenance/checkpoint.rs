//! Writing the checkpoint on `close()`.

use super::Maintainer;
use crate::store::format::checkpoint::{encode, CoveredSegment, CHECKPOINT_FILE};
use crate::store::format::segment::SEGMENT_HEADER_LEN;
use crate::store::log::{write_atomically, InjectionPoint};
use crate::store::StoreError;

/// Write a checkpoint of everything written so far. The caller has synced
/// the log: the checkpoint never covers an event that is not durable.
pub(crate) fn write_checkpoint(maint: &Maintainer<'_>) -> Result<(), StoreError> {
    let Some(writer) = maint.writer.as_ref() else {
        return Ok(());
    };
    let w = writer.lock();
    let live = maint.index.read();
    // After a compaction the index holds dead slots; the checkpoint stores
    // the survivors, numbered as the next open would number them.
    let renumbered;
    let index: &crate::store::index::Index = if live.dead_count() > 0 {
        renumbered = live.without_dead()?;
        &renumbered
    } else {
        &live
    };
    let active_id = w.active.segment().id();
    // The last indexed event of every segment: what `open` checks the
    // checkpoint against.
    let mut last = std::collections::BTreeMap::new();
    for slot in 0..index.len() {
        let pos = index.disk_pos(slot);
        last.insert(pos.segment_id, (pos, index.event_id(slot)));
    }
    let segments: Vec<CoveredSegment> = maint
        .log
        .segment_ids()
        .into_iter()
        .filter(|&id| id <= active_id)
        .map(|id| {
            let (pos, event_id) = last.get(&id).copied().unwrap_or_default();
            let frames_end = if id == active_id {
                w.active.write_pos()
            } else if pos.length > 0 {
                pos.offset + u64::from(pos.length)
            } else {
                SEGMENT_HEADER_LEN as u64
            };
            CoveredSegment {
                segment_id: id,
                frames_end,
                last_offset: pos.offset,
                last_length: pos.length,
                last_event_id: event_id,
            }
        })
        .collect();
    let bytes = encode(w.next_seq, &segments, index);
    drop(live);
    write_atomically(
        maint.log.io(),
        maint.log.dir(),
        CHECKPOINT_FILE,
        &bytes,
        [
            Some(InjectionPoint::CheckpointWritten),
            Some(InjectionPoint::CheckpointRenamed),
        ],
    )?;
    drop(w);
    Ok(())
}
