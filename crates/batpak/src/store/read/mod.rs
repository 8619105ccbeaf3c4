//! The read path: `get`, `walk_ancestors` and the index-backed queries.
//!
//! Readers see only visible slots (durable ones in durable mode). Queries
//! build their entries under the index read lock (an entry's hash chain is
//! read from its frame then); `get` and `walk_ancestors` resolve the frame
//! under the lock and decode it after releasing it. This module never writes.

use crate::coordinate::{Coordinate, DagPosition, Region};
use crate::event::{Event, EventHeader, EventKind, HashChain, StoredEvent};
use crate::store::format::frame::decode_frame;
use crate::store::format::payload::decode_value;
use crate::store::format::record::{chain_in_frame, decode_event, EventRecord};
use crate::store::format::FormatError;
use crate::store::index::{DiskPos, Index, IndexEntry};
use crate::store::log::{FrameBytes, FrameCursor};
use crate::store::{Shared, StoreError};

/// An event's frame, resolved under the index lock (see [`Shared::locate`]).
pub(crate) struct Located {
    frame: FrameBytes,
    pos: DiskPos,
    coord: Coordinate,
}

impl Shared {
    /// Public entries for `slots`, with hash chains read from their frames.
    pub(crate) fn entries(&self, index: &Index, slots: &[u32]) -> Vec<IndexEntry> {
        let mut frames = FrameCursor::new(&self.log);
        slots
            .iter()
            .map(|&slot| {
                let mut e = index.entry(slot);
                let pos = e.disk_pos;
                let chain = frames
                    .frame(pos.segment_id, pos.offset, u64::from(pos.length))
                    .ok()
                    .and_then(chain_in_frame);
                match chain {
                    Some((prev_hash, event_hash)) => {
                        e.hash_chain = HashChain {
                            prev_hash,
                            event_hash,
                        }
                    }
                    None => tracing::warn!(
                        ?pos,
                        "index entry's frame is unreadable; hash chain left empty"
                    ),
                }
                e
            })
            .collect()
    }

    /// The frame of `slot`. Called with the index lock held: compaction
    /// moves events and swaps segment files under the index write lock, so
    /// a position is only meaningful until the lock is released, while the
    /// returned bytes stay valid (they keep their segment mapped).
    pub(crate) fn locate(&self, index: &Index, slot: u32) -> Result<Located, StoreError> {
        let pos = index.disk_pos(slot);
        Ok(Located {
            frame: self.log.read(pos.segment_id, pos.offset, pos.length)?,
            pos,
            coord: index.coordinate(slot),
        })
    }

    /// Check a located frame and turn it into a stored event.
    pub(crate) fn read_event(
        &self,
        located: Located,
    ) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        let Located { frame, pos, coord } = located;
        let rec = decode_at(frame.bytes(), pos)?;
        stored_event(&rec, coord).map_err(|e| match e {
            StoreError::Serialization(inner) => StoreError::corrupt(
                pos.segment_id,
                format!("payload at offset {}: {inner}", pos.offset),
            ),
            other => other,
        })
    }

    pub(crate) fn get(&self, event_id: u128) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        let located = {
            let index = self.index.read();
            let slot = index
                .slot_of(event_id)
                .filter(|&s| s < self.durability.visible())
                .ok_or(StoreError::NotFound(event_id))?;
            self.locate(&index, slot)?
        };
        let pos = located.pos;
        let ev = self.read_event(located)?;
        if ev.event.header.event_id != event_id {
            return Err(StoreError::corrupt(
                pos.segment_id,
                format!("frame at offset {} holds another event", pos.offset),
            ));
        }
        Ok(ev)
    }

    pub(crate) fn query(&self, region: &Region) -> Vec<IndexEntry> {
        let index = self.index.read();
        let slots = index.query_slots(region, self.durability.visible());
        self.entries(&index, &slots)
    }

    pub(crate) fn stream(&self, entity: &str) -> Vec<IndexEntry> {
        let index = self.index.read();
        let visible = self.durability.visible();
        let slots = index.entity_slots(entity);
        let n = slots.partition_point(|&s| s < visible);
        self.entries(&index, &slots[..n])
    }

    pub(crate) fn by_correlation(&self, correlation_id: u128) -> Vec<IndexEntry> {
        let index = self.index.read();
        let visible = self.durability.visible();
        let mut slots = index.correlation_slots(correlation_id);
        slots.retain(|&s| s < visible);
        self.entries(&index, &slots)
    }

    pub(crate) fn children(&self, event_id: u128) -> Vec<IndexEntry> {
        let index = self.index.read();
        let visible = self.durability.visible();
        let slots = index.causation_slots(event_id);
        let n = slots.partition_point(|&s| s < visible);
        self.entries(&index, &slots[..n])
    }

    /// The event, then its predecessors in its entity's chain, newest first:
    /// the index's clock order, each step checked against the `prev_hash`
    /// link under blake3. The walk stops at a predecessor whose hash does
    /// not match the link (it was removed) or that cannot be read.
    pub(crate) fn walk_ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Vec<StoredEvent<serde_json::Value>> {
        let mut out: Vec<StoredEvent<serde_json::Value>> = Vec::new();
        let visible = self.durability.visible();
        let locate = |index: &Index, s: u32| self.locate(index, s).map(|l| (s, l));
        let mut next = {
            let index = self.index.read();
            index
                .slot_of(event_id)
                .filter(|&s| s < visible)
                .map(|s| locate(&index, s))
        };
        if limit == 0 {
            return out;
        }
        while let Some(found) = next.take() {
            let (slot, ev) = match found.and_then(|(slot, l)| Ok((slot, self.read_event(l)?))) {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(error = %e, "walk_ancestors stopped at an unreadable event");
                    break;
                }
            };
            if let Some(newer) = out.last() {
                let link = newer.event.hash_chain.map_or([0; 32], |c| c.prev_hash);
                let hash = ev.event.hash_chain.map_or([0; 32], |c| c.event_hash);
                if cfg!(feature = "blake3") && link != hash {
                    break;
                }
            }
            let is_first = cfg!(feature = "blake3")
                && ev.event.hash_chain.is_some_and(|c| c.prev_hash == [0; 32]);
            out.push(ev);
            if is_first || out.len() >= limit {
                break;
            }
            let index = self.index.read();
            next = index.predecessor(slot).map(|p| locate(&index, p));
        }
        out
    }
}

/// Decode the event frame in `bytes` (exactly one frame) at `pos`.
pub(crate) fn decode_at(bytes: &[u8], pos: DiskPos) -> Result<EventRecord<'_>, StoreError> {
    let (body, _) = decode_frame(bytes).map_err(|e| match e {
        FormatError::Checksum(_) => StoreError::CrcMismatch {
            segment_id: pos.segment_id,
            offset: pos.offset,
        },
        other => StoreError::corrupt(
            pos.segment_id,
            format!("frame at offset {}: {other}", pos.offset),
        ),
    })?;
    decode_event(body).map_err(|e| {
        StoreError::corrupt(
            pos.segment_id,
            format!("record at offset {}: {e}", pos.offset),
        )
    })
}

/// Turn a decoded record into the public event type.
pub(crate) fn stored_event(
    rec: &EventRecord<'_>,
    coord: Coordinate,
) -> Result<StoredEvent<serde_json::Value>, StoreError> {
    // A redacted event keeps its original kind and content hash on disk (for
    // the chain); readers see a tombstone with no payload.
    let payload = if rec.redacted {
        serde_json::Value::Null
    } else {
        decode_value(rec.payload)?
    };
    let wall_ms = u64::try_from(rec.timestamp_us).unwrap_or(0) / 1000;
    let header = EventHeader {
        event_id: rec.event_id,
        correlation_id: rec.correlation_id,
        causation_id: rec.causation_id,
        timestamp_us: rec.timestamp_us,
        position: DagPosition::child_at(rec.clock, wall_ms, rec.hlc_counter),
        payload_size: rec.payload.len() as u32,
        event_kind: EventKind::from_raw(rec.visible_kind()),
        flags: rec.flags,
        content_hash: rec.content_hash,
    };
    Ok(StoredEvent {
        coordinate: coord,
        event: Event::new(header, payload).with_hash_chain(HashChain {
            prev_hash: rec.prev_hash,
            event_hash: rec.event_hash,
        }),
    })
}
