//! The removed-event record: what compaction leaves of each event it removes
//! (id, global sequence, kind, coordinate), so idempotency keys of removed
//! events keep returning their original receipts and their sequence numbers
//! are never reused (SPEC §3.8).
//!
//! ```text
//! file `removed.bpk`, written whole and atomically (temp file, fsync, rename)
//!  0  8  magic "BATPAKRM"
//!  8  2  version (1)
//! 10  6  reserved, zero
//! 16  8  entry count N
//! 24  8  body length B (bytes of entries)
//! 32  8  history epoch (bumped by every compaction that removes or redacts)
//! 40  B  entries, each:
//!          16  event id
//!           8  global sequence
//!           2  kind
//!           2  entity length E, 2  scope length S
//!           4  entity clock
//!           8  timestamp, µs
//!          32  event hash
//!           E  entity, S  scope
//! 40+B 4 CRC-32 of bytes 0..40+B
//! ```
//!
//! Clock, time and hash let the entity's next append continue its chain
//! even when its newest events were removed.
//!
//! The file exists in every store (empty until a compaction removes events):
//! a missing or damaged file is an error at open, never an empty record.

use super::{le, FormatError};
use crate::coordinate::MAX_COORDINATE_COMPONENT_LEN;

pub(crate) const REMOVED_FILE: &str = "removed.bpk";
const MAGIC: &[u8; 8] = b"BATPAKRM";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 40;
const ENTRY_FIXED: usize = 16 + 8 + 2 + 2 + 2 + 4 + 8 + 32;

/// One removed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RemovedEntry {
    pub(crate) event_id: u128,
    pub(crate) global_seq: u64,
    pub(crate) kind: u16,
    pub(crate) clock: u32,
    pub(crate) timestamp_us: i64,
    pub(crate) event_hash: [u8; 32],
    pub(crate) entity: String,
    pub(crate) scope: String,
}

/// The record: the history epoch and the removed events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RemovedRecord {
    pub(crate) epoch: u64,
    pub(crate) entries: Vec<RemovedEntry>,
}

pub(crate) fn encode(record: &RemovedRecord) -> Vec<u8> {
    let entries = &record.entries;
    let mut body = Vec::with_capacity(entries.len() * 64);
    for e in entries {
        body.extend_from_slice(&e.event_id.to_le_bytes());
        body.extend_from_slice(&e.global_seq.to_le_bytes());
        body.extend_from_slice(&e.kind.to_le_bytes());
        body.extend_from_slice(&(e.entity.len() as u16).to_le_bytes());
        body.extend_from_slice(&(e.scope.len() as u16).to_le_bytes());
        body.extend_from_slice(&e.clock.to_le_bytes());
        body.extend_from_slice(&e.timestamp_us.to_le_bytes());
        body.extend_from_slice(&e.event_hash);
        body.extend_from_slice(e.entity.as_bytes());
        body.extend_from_slice(e.scope.as_bytes());
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[0; 6]);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&record.epoch.to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

pub(crate) fn decode(b: &[u8]) -> Result<RemovedRecord, FormatError> {
    if b.len() < HEADER_LEN + 4 {
        return Err(FormatError::Short {
            what: "removed-event record",
            need: HEADER_LEN + 4,
            have: b.len(),
        });
    }
    if &b[0..8] != MAGIC {
        return Err(FormatError::BadMagic("removed-event record"));
    }
    let version = le::u16_at(b, 8);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let count = le::u64_at(b, 16);
    let body_len = le::u64_at(b, 24);
    let end = usize::try_from(body_len)
        .ok()
        .and_then(|l| l.checked_add(HEADER_LEN))
        .filter(|&e| Some(e) == b.len().checked_sub(4))
        .ok_or_else(|| {
            FormatError::invalid(
                "removed-event record length",
                format!("{body_len} body bytes in a {}-byte file", b.len()),
            )
        })?;
    if crc32fast::hash(&b[..end]) != le::u32_at(b, end) {
        return Err(FormatError::Checksum("removed-event record"));
    }
    // Each entry takes at least ENTRY_FIXED + 2 bytes, which bounds the allocation.
    if count > (body_len / (ENTRY_FIXED as u64 + 2)) {
        return Err(FormatError::invalid(
            "removed-event count",
            count.to_string(),
        ));
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut at = HEADER_LEN;
    for _ in 0..count {
        if at + ENTRY_FIXED > end {
            return Err(FormatError::Short {
                what: "removed-event entry",
                need: ENTRY_FIXED,
                have: end - at,
            });
        }
        let elen = usize::from(le::u16_at(b, at + 26));
        let slen = usize::from(le::u16_at(b, at + 28));
        if elen == 0
            || slen == 0
            || elen > MAX_COORDINATE_COMPONENT_LEN
            || slen > MAX_COORDINATE_COMPONENT_LEN
        {
            return Err(FormatError::invalid(
                "removed-event coordinate",
                format!("{elen}/{slen} bytes"),
            ));
        }
        let s = at + ENTRY_FIXED;
        if s + elen + slen > end {
            return Err(FormatError::Short {
                what: "removed-event coordinate",
                need: elen + slen,
                have: end - s,
            });
        }
        let text = |r: std::ops::Range<usize>| {
            std::str::from_utf8(&b[r])
                .map(str::to_owned)
                .map_err(|_| FormatError::invalid("removed-event coordinate", "not UTF-8"))
        };
        entries.push(RemovedEntry {
            event_id: le::u128_at(b, at),
            global_seq: le::u64_at(b, at + 16),
            kind: le::u16_at(b, at + 24),
            clock: le::u32_at(b, at + 30),
            timestamp_us: le::u64_at(b, at + 34) as i64,
            event_hash: le::arr32_at(b, at + 42),
            entity: text(s..s + elen)?,
            scope: text(s + elen..s + elen + slen)?,
        });
        at = s + elen + slen;
    }
    if at != end {
        return Err(FormatError::invalid(
            "removed-event record",
            format!("{} bytes after the last entry", end - at),
        ));
    }
    Ok(RemovedRecord {
        epoch: le::u64_at(b, 32),
        entries,
    })
}

#[cfg(test)]
mod tests {

    /// A body length near `u64::MAX` must be refused, not overflow (this
    /// panicked in debug builds).
    #[test]
    fn a_huge_body_length_is_refused() {
        for delta in 40..=44u64 {
            let mut b = encode(&RemovedRecord::default());
            b[24..32].copy_from_slice(&(u64::MAX - delta).to_le_bytes());
            assert!(decode(&b).is_err());
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn sample() -> RemovedRecord {
        let entry = |event_id, global_seq, kind, entity: &str, scope: String| RemovedEntry {
            event_id,
            global_seq,
            kind,
            clock: 3,
            timestamp_us: -5,
            event_hash: [7; 32],
            entity: entity.into(),
            scope,
        };
        RemovedRecord {
            epoch: 4,
            entries: vec![
                entry(1, 10, 0x1001, "order:1", "t".into()),
                entry(u128::MAX, u64::MAX, 2, "é", "s".repeat(1024)),
            ],
        }
    }

    #[test]
    fn round_trip_and_empty() {
        assert_eq!(decode(&encode(&sample())).unwrap(), sample());
        let empty = RemovedRecord::default();
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
        assert_eq!(encode(&empty).len(), 44);
        assert_eq!(&encode(&empty)[..10], b"BATPAKRM\x01\x00");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let good = encode(&sample());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
        assert!(decode(&good[..good.len() - 1]).is_err());
        assert!(decode(b"").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
