//! The read path: `get`, `walk_ancestors` and the index-backed queries.
//!
//! Readers see only visible slots (durable ones in durable mode). They take
//! the index read lock just long enough to find positions and build entries,
//! then read frames from the log's mappings without any lock. This module
//! never writes.

use crate::coordinate::{Coordinate, DagPosition, Region};
use crate::event::{Event, EventHeader, EventKind, HashChain, StoredEvent};
use crate::store::format::frame::decode_frame;
use crate::store::format::payload::decode_value;
use crate::store::format::record::{decode_event, EventRecord};
use crate::store::format::FormatError;
use crate::store::index::{DiskPos, IndexEntry};
use crate::store::{Shared, StoreError};

impl Shared {
    /// Read and check the frame at `pos` and turn it into a stored event.
    pub(crate) fn read_event(
        &self,
        pos: DiskPos,
        coord: Coordinate,
    ) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        let frame = self.log.read(pos.segment_id, pos.offset, pos.length)?;
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
        let (pos, coord) = {
            let index = self.index.read();
            let slot = index
                .slot_of(event_id)
                .filter(|&s| s < self.durability.visible())
                .ok_or(StoreError::NotFound(event_id))?;
            (index.disk_pos(slot), index.coordinate(slot))
        };
        let ev = self.read_event(pos, coord)?;
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
        index.entries(&slots)
    }

    pub(crate) fn stream(&self, entity: &str) -> Vec<IndexEntry> {
        let index = self.index.read();
        let visible = self.durability.visible();
        let slots = index.entity_slots(entity);
        let n = slots.partition_point(|&s| s < visible);
        index.entries(&slots[..n])
    }

    pub(crate) fn by_correlation(&self, correlation_id: u128) -> Vec<IndexEntry> {
        let index = self.index.read();
        let visible = self.durability.visible();
        let mut slots = index.correlation_slots(correlation_id);
        slots.retain(|&s| s < visible);
        index.entries(&slots)
    }

    pub(crate) fn children(&self, event_id: u128) -> Vec<IndexEntry> {
        let index = self.index.read();
        let visible = self.durability.visible();
        let slots = index.causation_slots(event_id);
        let n = slots.partition_point(|&s| s < visible);
        index.entries(&slots[..n])
    }

    /// The event, then its predecessors in its entity's chain, newest first.
    pub(crate) fn walk_ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Vec<StoredEvent<serde_json::Value>> {
        let mut out = Vec::new();
        let visible = self.durability.visible();
        let mut next = {
            let index = self.index.read();
            index
                .slot_of(event_id)
                .filter(|&s| s < visible)
                .map(|s| (s, index.disk_pos(s), index.coordinate(s)))
        };
        while let Some((slot, pos, coord)) = next.take() {
            if out.len() >= limit {
                break;
            }
            let ev = match self.read_event(pos, coord) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "walk_ancestors stopped at an unreadable event");
                    break;
                }
            };
            let prev_hash = ev.event.hash_chain.map_or([0; 32], |c| c.prev_hash);
            out.push(ev);
            let index = self.index.read();
            next = index.chain_predecessor(slot).and_then(|p| {
                // Follow the hash link; without blake3 every hash is zero and
                // the walk follows clock order instead.
                let linked =
                    cfg!(not(feature = "blake3")) || index.hash_chain(slot).prev_hash == prev_hash;
                (linked && prev_hash_known(prev_hash))
                    .then(|| (p, index.disk_pos(p), index.coordinate(p)))
            });
        }
        out
    }
}

/// A zero `prev_hash` marks the first event of an entity (with blake3 on).
fn prev_hash_known(prev_hash: [u8; 32]) -> bool {
    cfg!(not(feature = "blake3")) || prev_hash != [0; 32]
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
    let payload = decode_value(rec.payload)?;
    let wall_ms = u64::try_from(rec.timestamp_us).unwrap_or(0) / 1000;
    let header = EventHeader {
        event_id: rec.event_id,
        correlation_id: rec.correlation_id,
        causation_id: rec.causation_id,
        timestamp_us: rec.timestamp_us,
        position: DagPosition::child_at(rec.clock, wall_ms, rec.hlc_counter),
        payload_size: rec.payload.len() as u32,
        event_kind: EventKind::from_raw(rec.kind),
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
