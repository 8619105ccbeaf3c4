//! The compaction intent: the commit point of a compaction (SPEC §5.4).
//!
//! A compaction first writes its new segments under temporary names
//! (`compact-<id>.tmp`) and, when it removes or redacts events (the history
//! epoch changes), the next removed-event record (`removed.bpk.next`), all
//! synced. Writing this file (atomically:
//! temporary file, fsync, rename, directory fsync) commits it. Installing
//! follows: the checkpoint (which names old positions) is deleted, the new
//! record and segments are renamed into place, the replaced segments
//! deleted, and finally this file. A crash before the commit leaves the old
//! state (open deletes the temporary files); after it, open finishes the
//! installation from this file. Either way, never a mix.
//!
//! ```text
//! file `compact.intent`
//!  0  8  magic "BATPAKCI"
//!  8  2  version (1)
//! 10  2  flags: bit 0 = install `removed.bpk.next` as `removed.bpk`
//! 12  4  output count O (segments written under temporary names)
//! 16  4  deleted count D (segments removed without replacement)
//! 20  4  reserved, zero
//! 24  8*O  output segment ids, ascending
//!     8*D  deleted segment ids, ascending
//!  ...  4  CRC-32 of every byte before it
//! ```

use super::{le, FormatError};

pub(crate) const INTENT_FILE: &str = "compact.intent";
/// The next removed-event record, written before the commit point.
pub(crate) const REMOVED_NEXT_FILE: &str = "removed.bpk.next";
const MAGIC: &[u8; 8] = b"BATPAKCI";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 24;
const FLAG_REMOVED_RECORD: u16 = 1;

/// The temporary name of compacted segment `id` before it is installed.
pub(crate) fn output_file_name(id: u64) -> String {
    format!("compact-{id:020}.tmp")
}

/// Whether `name` is a temporary compaction file (left by an interrupted compaction).
pub(crate) fn is_temporary(name: &str) -> bool {
    (name.starts_with("compact-") && name.ends_with(".tmp")) || name == REMOVED_NEXT_FILE
}

/// A committed compaction still to be installed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Intent {
    /// Install `removed.bpk.next`.
    pub(crate) removed_record: bool,
    /// Segments that replace the segment of the same id.
    pub(crate) outputs: Vec<u64>,
    /// Segments to delete.
    pub(crate) deleted: Vec<u64>,
}

impl Intent {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(HEADER_LEN + 8 * (self.outputs.len() + self.deleted.len()) + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let flags = if self.removed_record {
            FLAG_REMOVED_RECORD
        } else {
            0
        };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&(self.outputs.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.deleted.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for id in self.outputs.iter().chain(&self.deleted) {
            out.extend_from_slice(&id.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < HEADER_LEN + 4 {
            return Err(FormatError::Short {
                what: "compaction intent",
                need: HEADER_LEN + 4,
                have: b.len(),
            });
        }
        if &b[0..8] != MAGIC {
            return Err(FormatError::BadMagic("compaction intent"));
        }
        let version = le::u16_at(b, 8);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let flags = le::u16_at(b, 10);
        if flags & !FLAG_REMOVED_RECORD != 0 || le::u32_at(b, 20) != 0 {
            return Err(FormatError::invalid(
                "compaction intent",
                "reserved bits set",
            ));
        }
        let outputs = le::u32_at(b, 12) as usize;
        let deleted = le::u32_at(b, 16) as usize;
        // Checked against the file's length before anything is allocated.
        let ids = outputs
            .checked_add(deleted)
            .filter(|n| {
                n.checked_mul(8).and_then(|l| l.checked_add(HEADER_LEN + 4)) == Some(b.len())
            })
            .ok_or_else(|| {
                FormatError::invalid(
                    "compaction intent length",
                    format!("{outputs} + {deleted} ids in a {}-byte file", b.len()),
                )
            })?;
        let end = b.len() - 4;
        if crc32fast::hash(&b[..end]) != le::u32_at(b, end) {
            return Err(FormatError::Checksum("compaction intent"));
        }
        let all: Vec<u64> = (0..ids)
            .map(|i| le::u64_at(b, HEADER_LEN + 8 * i))
            .collect();
        let (o, d) = all.split_at(outputs);
        let ascending = |v: &[u64]| v.windows(2).all(|w| w[0] < w[1]);
        if !ascending(o) || !ascending(d) || o.iter().any(|id| d.binary_search(id).is_ok()) {
            return Err(FormatError::invalid(
                "compaction intent",
                "segment ids not ascending or listed twice",
            ));
        }
        Ok(Self {
            removed_record: flags & FLAG_REMOVED_RECORD != 0,
            outputs: o.to_vec(),
            deleted: d.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Intent {
        Intent {
            removed_record: true,
            outputs: vec![1, 2],
            deleted: vec![3, 4, 5],
        }
    }

    #[test]
    fn round_trip_and_golden_bytes() {
        let bytes = sample().encode();
        assert_eq!(Intent::decode(&bytes).unwrap(), sample());
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            concat!(
                "42415450414b4349",
                "0100",
                "0100",
                "02000000",
                "03000000",
                "00000000",
                "0100000000000000",
                "0200000000000000",
                "0300000000000000",
                "0400000000000000",
                "0500000000000000",
                "7b23b160"
            )
        );
        let empty = Intent::default();
        assert_eq!(Intent::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn damage_is_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Intent::decode(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Intent::decode(&b).is_err(), "flip at {i}");
        }
        let mut huge = bytes.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Intent::decode(&huge).is_err());
    }

    #[test]
    fn temporary_names() {
        assert!(is_temporary(&output_file_name(7)));
        assert!(is_temporary(REMOVED_NEXT_FILE));
        assert!(!is_temporary("00000000000000000007.seg"));
        assert!(super::super::segment::parse_segment_file_name(&output_file_name(7)).is_none());
    }
}
