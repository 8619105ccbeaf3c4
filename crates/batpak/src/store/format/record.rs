//! Event records: the body of an event frame (layout in the module above).

use super::frame::{seal_frame, FRAME_HEADER_LEN};
use super::{le, FormatError};
use crate::coordinate::MAX_COORDINATE_COMPONENT_LEN;

use super::RECORD_EVENT;
pub(crate) const EVENT_FIXED_LEN: usize = 192;
const LINK_HAS_CAUSATION: u8 = 0x01;
/// The payload was removed by a Tombstone compaction: the record keeps its
/// original kind, payload length and content hash (all hashed into the chain)
/// but no payload bytes.
const LINK_REDACTED: u8 = 0x02;

/// Offsets inside an event record.
pub(crate) mod off {
    pub(crate) const FLAGS: usize = 1;
    pub(crate) const KIND: usize = 2;
    pub(crate) const ENTITY_LEN: usize = 4;
    pub(crate) const SCOPE_LEN: usize = 6;
    pub(crate) const CLOCK: usize = 8;
    pub(crate) const PAYLOAD_LEN: usize = 12;
    pub(crate) const GLOBAL_SEQ: usize = 16;
    pub(crate) const TIMESTAMP: usize = 24;
    pub(crate) const HLC_COUNTER: usize = 32;
    pub(crate) const LINK_FLAGS: usize = 34;
    pub(crate) const BATCH_SIZE: usize = 36;
    pub(crate) const BATCH_INDEX: usize = 40;
    pub(crate) const PAYLOAD_VERSION: usize = 44;
    pub(crate) const EVENT_ID: usize = 48;
    pub(crate) const CORRELATION_ID: usize = 64;
    pub(crate) const CAUSATION_ID: usize = 80;
    pub(crate) const PREV_HASH: usize = 96;
    pub(crate) const EVENT_HASH: usize = 128;
    pub(crate) const CONTENT_HASH: usize = 160;
}

/// An event record, borrowed from the bytes it was decoded from (or to be encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRecord<'a> {
    pub(crate) flags: u8,
    pub(crate) kind: u16,
    pub(crate) clock: u32,
    pub(crate) global_seq: u64,
    pub(crate) timestamp_us: i64,
    pub(crate) hlc_counter: u16,
    pub(crate) batch_size: u32,
    pub(crate) batch_index: u32,
    pub(crate) event_id: u128,
    pub(crate) correlation_id: u128,
    pub(crate) causation_id: Option<u128>,
    pub(crate) prev_hash: [u8; 32],
    pub(crate) event_hash: [u8; 32],
    pub(crate) content_hash: [u8; 32],
    pub(crate) entity: &'a str,
    pub(crate) scope: &'a str,
    /// The payload's length as hashed: `payload.len()`, or the removed
    /// payload's length when `redacted`.
    pub(crate) payload_len: u32,
    /// The payload was removed (`payload` is empty); readers see a tombstone.
    pub(crate) redacted: bool,
    pub(crate) payload: &'a [u8],
    /// The payload's schema version as stored: 0 for an unversioned event
    /// (read as version 1; every record written before versions existed),
    /// else the version (at least 2). Hashed only when not 0 (ADR 0027).
    pub(crate) payload_version: u16,
}

/// Total frame length for an event with these variable parts.
pub(crate) fn event_frame_len(entity_len: usize, scope_len: usize, payload_len: usize) -> usize {
    FRAME_HEADER_LEN + EVENT_FIXED_LEN + entity_len + scope_len + payload_len
}

impl EventRecord<'_> {
    /// The kind readers and the index see: TOMBSTONE for a redacted event.
    pub(crate) fn visible_kind(&self) -> u16 {
        if self.redacted {
            crate::event::EventKind::TOMBSTONE.raw()
        } else {
            self.kind
        }
    }

    pub(crate) fn frame_len(&self) -> usize {
        event_frame_len(self.entity.len(), self.scope.len(), self.payload.len())
    }

    /// Encode the whole frame into `out`, which must be exactly [`Self::frame_len`] bytes.
    pub(crate) fn write_frame(&self, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.frame_len());
        debug_assert!(self.redacted || self.payload_len as usize == self.payload.len());
        debug_assert!(!self.redacted || self.payload.is_empty());
        let b = &mut out[FRAME_HEADER_LEN..];
        b[0] = RECORD_EVENT;
        b[off::FLAGS] = self.flags;
        b[off::KIND..off::KIND + 2].copy_from_slice(&self.kind.to_le_bytes());
        b[off::ENTITY_LEN..off::ENTITY_LEN + 2]
            .copy_from_slice(&(self.entity.len() as u16).to_le_bytes());
        b[off::SCOPE_LEN..off::SCOPE_LEN + 2]
            .copy_from_slice(&(self.scope.len() as u16).to_le_bytes());
        b[off::CLOCK..off::CLOCK + 4].copy_from_slice(&self.clock.to_le_bytes());
        b[off::PAYLOAD_LEN..off::PAYLOAD_LEN + 4].copy_from_slice(&self.payload_len.to_le_bytes());
        b[off::GLOBAL_SEQ..off::GLOBAL_SEQ + 8].copy_from_slice(&self.global_seq.to_le_bytes());
        b[off::TIMESTAMP..off::TIMESTAMP + 8].copy_from_slice(&self.timestamp_us.to_le_bytes());
        b[off::HLC_COUNTER..off::HLC_COUNTER + 2].copy_from_slice(&self.hlc_counter.to_le_bytes());
        b[off::LINK_FLAGS] = if self.causation_id.is_some() {
            LINK_HAS_CAUSATION
        } else {
            0
        } | if self.redacted { LINK_REDACTED } else { 0 };
        b[35] = 0;
        b[off::BATCH_SIZE..off::BATCH_SIZE + 4].copy_from_slice(&self.batch_size.to_le_bytes());
        b[off::BATCH_INDEX..off::BATCH_INDEX + 4].copy_from_slice(&self.batch_index.to_le_bytes());
        b[off::PAYLOAD_VERSION..off::PAYLOAD_VERSION + 2]
            .copy_from_slice(&self.payload_version.to_le_bytes());
        b[46..48].fill(0);
        b[off::EVENT_ID..off::EVENT_ID + 16].copy_from_slice(&self.event_id.to_le_bytes());
        b[off::CORRELATION_ID..off::CORRELATION_ID + 16]
            .copy_from_slice(&self.correlation_id.to_le_bytes());
        b[off::CAUSATION_ID..off::CAUSATION_ID + 16]
            .copy_from_slice(&self.causation_id.unwrap_or(0).to_le_bytes());
        b[off::PREV_HASH..off::PREV_HASH + 32].copy_from_slice(&self.prev_hash);
        b[off::EVENT_HASH..off::EVENT_HASH + 32].copy_from_slice(&self.event_hash);
        b[off::CONTENT_HASH..off::CONTENT_HASH + 32].copy_from_slice(&self.content_hash);
        let mut at = EVENT_FIXED_LEN;
        for part in [self.entity.as_bytes(), self.scope.as_bytes(), self.payload] {
            b[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        seal_frame(out);
    }

    /// Encode into a new buffer (tests and tools; the write path encodes in place).
    #[cfg(test)]
    pub(crate) fn to_frame(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.frame_len()];
        self.write_frame(&mut v);
        v
    }
}

/// Where a frame's hash chain (previous and own event hash) lies in it.
pub(crate) const CHAIN_START: usize = FRAME_HEADER_LEN + off::PREV_HASH;
pub(crate) const CHAIN_END: usize = FRAME_HEADER_LEN + off::EVENT_HASH + 32;

/// The `(prev_hash, event_hash)` of the event frame `frame` (a whole frame,
/// header included), read in place without checking the frame: for building
/// index entries from frames whose checksum was verified when they were indexed.
pub(crate) fn chain_in_frame(frame: &[u8]) -> Option<([u8; 32], [u8; 32])> {
    if frame.len() < CHAIN_END || frame[FRAME_HEADER_LEN] != RECORD_EVENT {
        return None;
    }
    Some((
        le::arr32_at(frame, CHAIN_START),
        le::arr32_at(frame, FRAME_HEADER_LEN + off::EVENT_HASH),
    ))
}

/// How a decoder checks a record's coordinate strings.
#[derive(Clone, Copy)]
pub(crate) enum CoordCheck<'c> {
    /// Check them against the rules of `Coordinate::new` (frames read for
    /// the first time: recovery, verify, fuzzing).
    Validate,
    /// They must be exactly these strings, which were validated when
    /// indexed (reads of indexed events): a frame that names another
    /// coordinate than its index entry is refused, and the rules need not
    /// be checked again.
    Equal { entity: &'c str, scope: &'c str },
}

impl<'c> CoordCheck<'c> {
    /// Equal to `coord`'s strings.
    pub(crate) fn of(coord: &'c crate::coordinate::Coordinate) -> Self {
        Self::Equal {
            entity: coord.entity(),
            scope: coord.scope(),
        }
    }
}

/// Decode an event record from a frame body (the checksum was checked by the frame decoder).
pub(crate) fn decode_event(body: &[u8]) -> Result<EventRecord<'_>, FormatError> {
    decode_event_checked(body, CoordCheck::Validate)
}

/// [`decode_event`], checking the coordinate strings as `check` says.
pub(crate) fn decode_event_checked<'a>(
    body: &'a [u8],
    check: CoordCheck<'_>,
) -> Result<EventRecord<'a>, FormatError> {
    if body.len() < EVENT_FIXED_LEN {
        return Err(FormatError::Short {
            what: "event record",
            need: EVENT_FIXED_LEN,
            have: body.len(),
        });
    }
    if body[0] != RECORD_EVENT {
        return Err(FormatError::invalid("record type", body[0].to_string()));
    }
    let link = body[off::LINK_FLAGS];
    if link & !(LINK_HAS_CAUSATION | LINK_REDACTED) != 0
        || body[35] != 0
        || le::u16_at(body, 46) != 0
        || le::u16_at(body, off::PAYLOAD_VERSION) == 1
    {
        return Err(FormatError::invalid("reserved bits", "not zero"));
    }
    let entity_len = usize::from(le::u16_at(body, off::ENTITY_LEN));
    let scope_len = usize::from(le::u16_at(body, off::SCOPE_LEN));
    let payload_len = le::u32_at(body, off::PAYLOAD_LEN);
    let redacted = link & LINK_REDACTED != 0;
    let stored_payload = if redacted { 0 } else { payload_len as usize };
    if entity_len == 0 || entity_len > MAX_COORDINATE_COMPONENT_LEN {
        return Err(FormatError::invalid(
            "entity length",
            entity_len.to_string(),
        ));
    }
    if scope_len == 0 || scope_len > MAX_COORDINATE_COMPONENT_LEN {
        return Err(FormatError::invalid("scope length", scope_len.to_string()));
    }
    let need = EVENT_FIXED_LEN + entity_len + scope_len + stored_payload;
    if body.len() != need {
        return Err(FormatError::invalid(
            "event record length",
            format!("fields need {need} bytes, body has {}", body.len()),
        ));
    }
    let e_end = EVENT_FIXED_LEN + entity_len;
    let s_end = e_end + scope_len;
    let (entity, scope) =
        coordinate_strings(&body[EVENT_FIXED_LEN..e_end], &body[e_end..s_end], check)?;
    let batch_size = le::u32_at(body, off::BATCH_SIZE);
    let batch_index = le::u32_at(body, off::BATCH_INDEX);
    if batch_size != 0 && batch_index >= batch_size {
        return Err(FormatError::invalid(
            "batch index",
            format!("{batch_index} of {batch_size}"),
        ));
    }
    Ok(EventRecord {
        flags: body[off::FLAGS],
        kind: le::u16_at(body, off::KIND),
        clock: le::u32_at(body, off::CLOCK),
        global_seq: le::u64_at(body, off::GLOBAL_SEQ),
        timestamp_us: le::u64_at(body, off::TIMESTAMP) as i64,
        hlc_counter: le::u16_at(body, off::HLC_COUNTER),
        batch_size,
        batch_index,
        event_id: le::u128_at(body, off::EVENT_ID),
        correlation_id: le::u128_at(body, off::CORRELATION_ID),
        causation_id: (link & LINK_HAS_CAUSATION != 0)
            .then(|| le::u128_at(body, off::CAUSATION_ID)),
        prev_hash: le::arr32_at(body, off::PREV_HASH),
        event_hash: le::arr32_at(body, off::EVENT_HASH),
        content_hash: le::arr32_at(body, off::CONTENT_HASH),
        entity,
        scope,
        payload_len,
        redacted,
        payload: &body[s_end..],
        payload_version: le::u16_at(body, off::PAYLOAD_VERSION),
    })
}

/// The record's entity and scope, checked as `check` says.
fn coordinate_strings<'a>(
    entity: &'a [u8],
    scope: &'a [u8],
    check: CoordCheck<'_>,
) -> Result<(&'a str, &'a str), FormatError> {
    match check {
        CoordCheck::Equal {
            entity: want_entity,
            scope: want_scope,
        } => {
            if entity != want_entity.as_bytes() || scope != want_scope.as_bytes() {
                return Err(FormatError::invalid(
                    "coordinate",
                    format!(
                        "the frame names {}@{}, its index entry {want_entity}@{want_scope}",
                        String::from_utf8_lossy(entity),
                        String::from_utf8_lossy(scope)
                    ),
                ));
            }
            // SAFETY: `entity` and `scope` are byte for byte the bytes of
            // two `&str`s, so they are valid UTF-8. Checking again cost
            // about 2% of a random `get`.
            unsafe {
                Ok((
                    std::str::from_utf8_unchecked(entity),
                    std::str::from_utf8_unchecked(scope),
                ))
            }
        }
        CoordCheck::Validate => {
            let (entity, scope) = utf8(entity, scope)?;
            crate::coordinate::validate(entity, scope)
                .map_err(|e| FormatError::invalid("coordinate", e.to_string()))?;
            Ok((entity, scope))
        }
    }
}

fn utf8<'a>(entity: &'a [u8], scope: &'a [u8]) -> Result<(&'a str, &'a str), FormatError> {
    let entity =
        std::str::from_utf8(entity).map_err(|_| FormatError::invalid("entity", "not UTF-8"))?;
    let scope =
        std::str::from_utf8(scope).map_err(|_| FormatError::invalid("scope", "not UTF-8"))?;
    Ok((entity, scope))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::frame::decode_frame;
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample<'a>(payload: &'a [u8]) -> EventRecord<'a> {
        EventRecord {
            flags: 0x09,
            kind: 0x1002,
            clock: 3,
            global_seq: 77,
            timestamp_us: 1_700_000_000_123_456,
            hlc_counter: 2,
            batch_size: 0,
            batch_index: 0,
            event_id: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            correlation_id: 5,
            causation_id: Some(6),
            prev_hash: [0x99; 32],
            event_hash: [0xAA; 32],
            content_hash: [0xBB; 32],
            entity: "order:1",
            scope: "tenant",
            payload_len: payload.len() as u32,
            redacted: false,
            payload,
            payload_version: 0,
        }
    }

    #[test]
    fn payload_version_round_trips_and_has_one_encoding() {
        let mut rec = sample(b"\xc0");
        rec.payload_version = 3;
        let frame = rec.to_frame();
        let body = decode_frame(&frame).unwrap().0;
        assert_eq!(body[off::PAYLOAD_VERSION..off::PAYLOAD_VERSION + 2], [3, 0]);
        assert_eq!(decode_event(body).unwrap(), rec);
        // Version 1 is written as 0 ("unversioned"); a stored 1 is refused,
        // so every event has exactly one encoding (and one hash).
        let mut one = body.to_vec();
        one[off::PAYLOAD_VERSION] = 1;
        assert!(decode_event(&one).is_err());
        let mut high = body.to_vec();
        high[46] = 1;
        assert!(decode_event(&high).is_err());
    }

    #[test]
    fn a_read_checks_the_frame_names_the_indexed_coordinate() {
        let rec = sample(b"\x81\xa1a\x01");
        let frame = rec.to_frame();
        let body = decode_frame(&frame).unwrap().0;
        let same = CoordCheck::Equal {
            entity: "order:1",
            scope: "tenant",
        };
        assert_eq!(decode_event_checked(body, same).unwrap(), rec);
        for (entity, scope) in [
            ("order:2", "tenant"),
            ("order:1", "tenant2"),
            ("order:", "1tenant"),
        ] {
            let other = CoordCheck::Equal { entity, scope };
            let err = decode_event_checked(body, other).unwrap_err().to_string();
            assert!(err.contains("order:1@tenant"), "{err}");
        }
        // Equal strings are taken as UTF-8 unchecked (`coordinate_strings`);
        // bytes that are not UTF-8 never equal an indexed (valid) string.
        let mut bad = body.to_vec();
        bad[EVENT_FIXED_LEN] = 0xff;
        assert!(decode_event_checked(&bad, same).is_err());
        assert!(decode_event(&bad).is_err());
    }

    #[test]
    fn round_trip() {
        let rec = sample(b"\x81\xa1a\x01");
        let frame = rec.to_frame();
        let (body, len) = decode_frame(&frame).unwrap();
        assert_eq!(len, frame.len());
        assert_eq!(decode_event(body).unwrap(), rec);
        let mut root = sample(b"\xc0");
        root.causation_id = None;
        let frame = root.to_frame();
        assert_eq!(decode_event(decode_frame(&frame).unwrap().0).unwrap(), root);
    }

    #[test]
    fn golden_bytes() {
        // A change to the event layout must change FORMAT_VERSION; this pins the bytes.
        let frame = sample(b"\xc0").to_frame();
        let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_EVENT_FRAME);
    }

    const GOLDEN_EVENT_FRAME: &str = concat!(
        "ba7cf7a1ce00000048d65dce", // marker, body length 206, CRC
        "010902100700060003000000010000004d000000000000004022201824",
        "0a060002000100000000000000000000000000100f0e0d0c0b0a09080706050403020105",
        "000000000000000000000000000000060000000000000000000000000000009999999999",
        "999999999999999999999999999999999999999999999999999999aaaaaaaaaaaaaaaaaaaa",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb6f726465723a3174656e616e74c0"
    );

    #[test]
    fn redacted_record_keeps_kind_length_and_hash_but_no_payload() {
        let full = sample(b"\x92\x01\x02");
        let mut gone = full.clone();
        gone.redacted = true;
        gone.payload = b"";
        let frame = gone.to_frame();
        assert_eq!(frame.len(), full.frame_len() - 3);
        let back = decode_event(decode_frame(&frame).unwrap().0).unwrap();
        assert_eq!(back, gone);
        assert_eq!((back.kind, back.payload_len), (full.kind, 3));
        assert_eq!(
            back.visible_kind(),
            crate::event::EventKind::TOMBSTONE.raw()
        );
        assert_eq!(full.visible_kind(), full.kind);
    }

    #[test]
    fn inconsistent_lengths_are_refused() {
        let frame = sample(b"\xc0").to_frame();
        let body = &frame[FRAME_HEADER_LEN..];
        assert!(decode_event(&body[..body.len() - 1]).is_err());
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode_event(&longer).is_err());
        let mut bad = body.to_vec();
        bad[off::ENTITY_LEN] = 0;
        bad[off::ENTITY_LEN + 1] = 0;
        assert!(decode_event(&bad).is_err());
        let mut bad = body.to_vec();
        bad[off::LINK_FLAGS] = 0x80;
        assert!(decode_event(&bad).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_event(&bytes);
        }

        #[test]
        fn mutated_records_never_panic(pos in 0usize..200, val in any::<u8>()) {
            let frame = sample(b"\x92\x01\x02").to_frame();
            let mut body = frame[FRAME_HEADER_LEN..].to_vec();
            let p = pos % body.len();
            body[p] = val;
            let _ = decode_event(&body);
        }
    }
}
