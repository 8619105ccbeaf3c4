//! Segment file header and naming.

use super::{le, FormatError, FORMAT_VERSION};

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"BATPAKSG";
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";

/// The fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) segment_id: u64,
    pub(crate) created_us: i64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.created_us.to_le_bytes());
        let crc = crc32fast::hash(&b[0..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err(FormatError::Short {
                what: "segment header",
                need: SEGMENT_HEADER_LEN,
                have: b.len(),
            });
        }
        if &b[0..8] != SEGMENT_MAGIC {
            return Err(FormatError::BadMagic("segment"));
        }
        if crc32fast::hash(&b[0..60]) != le::u32_at(b, 60) {
            return Err(FormatError::Checksum("segment header"));
        }
        let version = le::u16_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        if usize::from(le::u16_at(b, 10)) != SEGMENT_HEADER_LEN {
            return Err(FormatError::invalid(
                "segment header length",
                le::u16_at(b, 10).to_string(),
            ));
        }
        Ok(Self {
            segment_id: le::u64_at(b, 16),
            created_us: le::u64_at(b, 24) as i64,
        })
    }
}

/// `00000000000000000042.seg`
/// Check that `bytes` (a segment file) start with a header naming segment
/// `id`; else say what is wrong (what recovery and `verify` both report).
pub(crate) fn check_header(bytes: &[u8], id: u64) -> Result<SegmentHeader, String> {
    match SegmentHeader::decode(bytes) {
        Ok(h) if h.segment_id == id => Ok(h),
        Ok(h) => Err(format!("header names segment {}", h.segment_id)),
        Err(e) => Err(format!("segment header: {e}")),
    }
}

pub(crate) fn segment_file_name(segment_id: u64) -> String {
    format!("{segment_id:020}{SEGMENT_SUFFIX}")
}

/// The segment id in a file name written by [`segment_file_name`]; `None` for other files.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_golden_bytes() {
        let h = SegmentHeader {
            segment_id: 7,
            created_us: 1_700_000_000_000_000,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        // Golden: an accidental layout change must fail here.
        assert_eq!(&b[0..16], b"BATPAKSG\x01\x00\x40\x00\x00\x00\x00\x00");
        assert_eq!(&b[16..24], &7u64.to_le_bytes());
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(hex, GOLDEN_HEADER);
    }

    const GOLDEN_HEADER: &str = concat!(
        "42415450414b53470100400000000000070000000000000000401e18240a0600",
        "00000000000000000000000000000000000000000000000000000000ad4bfb9e"
    );

    #[test]
    fn damaged_headers_are_refused() {
        let b = SegmentHeader {
            segment_id: 1,
            created_us: 0,
        }
        .encode();
        assert!(matches!(
            SegmentHeader::decode(&b[..10]),
            Err(FormatError::Short { .. })
        ));
        let mut bad = b;
        bad[0] = b'X';
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(FormatError::BadMagic("segment"))
        );
        let mut bad = b;
        bad[20] ^= 1;
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(FormatError::Checksum("segment header"))
        );
    }

    #[test]
    fn names_are_numeric() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.seg"), None);
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
    }
}
