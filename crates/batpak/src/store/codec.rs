//! The canonical encodings of an event, for backends other than the file
//! store (the PostgreSQL backend, importers, verifiers).
//!
//! Every backend must store an event so that its payload reads back as
//! exactly `serde_json::to_value(&payload)` and its hash chain is the same
//! bytes the file store would compute (SPEC §3.2, §3.11): then events move
//! between backends with their hashes intact, and one `verify` rule checks
//! both. This module is that rule, published: the payload codec
//! (MessagePack of the `serde_json::Value`), the content and event hashes,
//! the per-entity timestamp rule, the size limits, and the validation of an
//! append or a batch before it is written ([`prepare_event`],
//! [`prepare_batch`], [`Condition`]), and how a stored payload becomes a
//! typed event ([`decode_typed_payload`]).
//!
//! It owns no encoding of its own: every function calls the private code
//! the file store itself runs (`format::payload`, `format::chain`,
//! `write::encode_payload`), so the two cannot drift apart. It never
//! touches files, the index or the log.

pub use crate::store::typed::decode_typed_payload;
pub use crate::store::write::{
    prepare_batch, prepare_event, prepare_imports, AppendLimits, Condition, Continuation,
    PreparedEvent,
};

use crate::coordinate::Coordinate;
use crate::event::{EventKind, StoredEvent};
use crate::store::format::{chain, payload, record::EventRecord};
use crate::store::StoreError;
use serde::Serialize;

/// The idempotency key of output `index` of the reaction to the event
/// `trigger`: every backend's reactors append reactions under these keys
/// (see [`crate::store::answer_trigger`]), so re-answering a trigger, in
/// any process, never writes its reactions twice. Pinned: changing it would
/// re-run every reaction ever written.
#[must_use]
pub fn reaction_key(trigger: u128, index: usize) -> u128 {
    crate::store::delivery::reaction_key(trigger, index)
}

/// Deepest nesting of arrays and maps a payload may have; deeper payloads
/// are refused with `Serialization` (the limit `serde_json` parses to).
pub const MAX_PAYLOAD_DEPTH: usize = payload::MAX_DEPTH;

/// Largest encoded payload any backend accepts for one event
/// (`single_append_max_bytes` may be set up to this).
pub const MAX_SINGLE_APPEND_BYTES: u32 = crate::store::config::MAX_SINGLE_APPEND_BYTES;

/// The default `single_append_max_bytes` (16 MiB).
pub const DEFAULT_SINGLE_APPEND_MAX_BYTES: u32 = 16 * 1024 * 1024;

/// Encode a payload the way every append does: the MessagePack of
/// `serde_json::to_value(payload)`.
///
/// # Errors
/// `Serialization` when `serde_json::to_value` fails or the value nests
/// deeper than [`MAX_PAYLOAD_DEPTH`].
pub fn encode_payload(payload: &impl Serialize) -> Result<Vec<u8>, StoreError> {
    crate::store::write::encode_payload(payload)
}

/// Decode stored payload bytes back into the `serde_json::Value` readers get.
/// Never panics and never allocates more than the input can justify.
///
/// # Errors
/// `Serialization` when the bytes are not a complete, valid payload.
pub fn decode_payload(bytes: &[u8]) -> Result<serde_json::Value, StoreError> {
    Ok(payload::decode_value(bytes)?)
}

/// Check that `bytes` are a valid encoded payload without building it (for
/// payloads that arrive already encoded, such as `BatchAppendItem::payload_bytes`).
///
/// # Errors
/// `Serialization` when the bytes are not a complete, valid payload.
pub fn validate_payload(bytes: &[u8]) -> Result<(), StoreError> {
    Ok(payload::validate(bytes)?)
}

/// `content_hash`: blake3 of the encoded payload bytes (all zeros without
/// the `blake3` feature).
#[must_use]
pub fn content_hash(payload: &[u8]) -> [u8; 32] {
    chain::content_hash(payload)
}

/// Everything an event's hash covers besides the previous hash: its
/// coordinate, ids, kind, clock, timestamp, flags, payload length and
/// content hash (the payload itself only through the last two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainInput<'a> {
    /// Entity.
    pub entity: &'a str,
    /// Scope.
    pub scope: &'a str,
    /// Event id.
    pub event_id: u128,
    /// Correlation id.
    pub correlation_id: u128,
    /// Causation id.
    pub causation_id: Option<u128>,
    /// Kind (the kind the event was appended with).
    pub kind: EventKind,
    /// Entity clock.
    pub clock: u32,
    /// Timestamp, microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Length of the encoded payload.
    pub payload_len: u32,
    /// [`content_hash`] of the encoded payload.
    pub content_hash: [u8; 32],
}

impl<'a> ChainInput<'a> {
    /// The fields of a stored event, as read back. (An event the file store
    /// redacted reads back with kind `TOMBSTONE`, not the kind it was
    /// hashed with, so its hash cannot be recomputed from what readers see.)
    #[must_use]
    pub fn of<P>(event: &'a StoredEvent<P>) -> Self {
        let h = &event.event.header;
        Self {
            entity: event.coordinate.entity(),
            scope: event.coordinate.scope(),
            event_id: h.event_id,
            correlation_id: h.correlation_id,
            causation_id: h.causation_id,
            kind: h.event_kind,
            clock: h.position.sequence,
            timestamp_us: h.timestamp_us,
            flags: h.flags,
            payload_len: h.payload_size,
            content_hash: h.content_hash,
        }
    }

    /// The fields of an event about to be appended at `coord`.
    #[must_use]
    pub fn with_coordinate(mut self, coord: &'a Coordinate) -> Self {
        self.entity = coord.entity();
        self.scope = coord.scope();
        self
    }
}

/// `event_hash`: the hash of `input` chained onto `prev_hash` (all zeros for
/// an entity's first event), byte for byte what the file store computes
/// (all zeros without the `blake3` feature).
#[must_use]
pub fn event_hash(prev_hash: &[u8; 32], input: &ChainInput<'_>) -> [u8; 32] {
    event_hash_versioned(prev_hash, input, 1)
}

/// [`event_hash`] of an event whose payload has schema version
/// `payload_version` (1: unversioned, hashed exactly as [`event_hash`]).
#[must_use]
pub fn event_hash_versioned(
    prev_hash: &[u8; 32],
    input: &ChainInput<'_>,
    payload_version: u16,
) -> [u8; 32] {
    let rec = EventRecord {
        flags: input.flags,
        kind: input.kind.raw(),
        clock: input.clock,
        // Not hashed: where the event sits in one backend's log.
        global_seq: 0,
        timestamp_us: input.timestamp_us,
        hlc_counter: 0,
        batch_size: 0,
        batch_index: 0,
        event_id: input.event_id,
        correlation_id: input.correlation_id,
        causation_id: input.causation_id,
        prev_hash: [0; 32],
        event_hash: [0; 32],
        content_hash: input.content_hash,
        entity: input.entity,
        scope: input.scope,
        payload_len: input.payload_len,
        redacted: false,
        payload: &[],
        payload_version: crate::store::write::stored_version(payload_version),
    };
    chain::event_hash(prev_hash, &rec)
}

/// An entity's time after its newest event: the timestamp (µs) and the HLC
/// counter that tells events of the same millisecond apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntityTime {
    /// Microseconds since the Unix epoch.
    pub timestamp_us: i64,
    /// Events of the entity earlier in the same millisecond.
    pub hlc_counter: u16,
}

/// The time of an entity's next event, given the store clock's `now_us`
/// and the entity's newest event (`None` for its first): per entity, time
/// never goes backwards, and an event in the same millisecond as its
/// predecessor gets the next HLC counter.
#[must_use]
pub fn next_entity_time(now_us: i64, previous: Option<EntityTime>) -> EntityTime {
    match previous {
        None => EntityTime {
            timestamp_us: now_us,
            hlc_counter: 0,
        },
        Some(prev) => {
            let ts = now_us.max(prev.timestamp_us);
            let same_ms = ts.div_euclid(1000) == prev.timestamp_us.div_euclid(1000);
            EntityTime {
                timestamp_us: ts,
                hlc_counter: if same_ms {
                    prev.hlc_counter.saturating_add(1)
                } else {
                    0
                },
            }
        }
    }
}

#[cfg(all(test, feature = "blake3"))]
mod tests {
    use super::*;
    use crate::store::format::record::tests::sample;

    #[test]
    fn event_hash_is_the_file_stores() {
        let rec = sample(b"\x92\x01\x02");
        let input = ChainInput {
            entity: rec.entity,
            scope: rec.scope,
            event_id: rec.event_id,
            correlation_id: rec.correlation_id,
            causation_id: rec.causation_id,
            kind: EventKind::from_raw(rec.kind),
            clock: rec.clock,
            timestamp_us: rec.timestamp_us,
            flags: rec.flags,
            payload_len: rec.payload_len,
            content_hash: rec.content_hash,
        };
        let prev = [7u8; 32];
        assert_eq!(event_hash(&prev, &input), chain::event_hash(&prev, &rec));
        let mut other = input;
        other.clock += 1;
        assert_ne!(event_hash(&prev, &other), event_hash(&prev, &input));
    }

    #[test]
    fn payloads_round_trip_and_bad_bytes_are_errors() {
        let v = serde_json::json!({"a": [1, -2, 0.5, "x", null, true]});
        let bytes = encode_payload(&v).unwrap();
        validate_payload(&bytes).unwrap();
        assert_eq!(decode_payload(&bytes).unwrap(), v);
        assert_eq!(content_hash(&bytes), *blake3::hash(&bytes).as_bytes());
        assert!(matches!(
            decode_payload(&[0xc1]),
            Err(StoreError::Serialization(_))
        ));
        assert!(validate_payload(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn entity_time_never_goes_backwards() {
        let first = next_entity_time(5_000_500, None);
        assert_eq!((first.timestamp_us, first.hlc_counter), (5_000_500, 0));
        let back = next_entity_time(1_000_000, Some(first));
        assert_eq!((back.timestamp_us, back.hlc_counter), (5_000_500, 1));
        let later = next_entity_time(5_002_000, Some(back));
        assert_eq!((later.timestamp_us, later.hlc_counter), (5_002_000, 0));
    }
}
