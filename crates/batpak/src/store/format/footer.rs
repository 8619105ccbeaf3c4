//! Segment footers: a compact table of a sealed segment's events, written
//! after its last frame, so `open` can index the segment without reading
//! every frame. Never trusted over the frames: a footer that fails any check
//! is ignored and the segment is scanned.
//!
//! ```text
//! sealed segment: [header][frames ...][footer frame][trailer][zero fill]
//!
//! footer frame: an ordinary frame (marker, length, CRC; its length may
//! exceed an event frame's limit) whose body is
//!   0  1  record type = 2
//!   1  1  footer version (1)
//!   2  2  reserved, zero
//!   4  4  coordinate count C
//!   8  4  entry count N
//!  12  4  tail count T
//!  16  8  segment id
//!  24  8  frames end: offset of this footer frame (= end of the event frames)
//!  32     C coordinates: u16 entity length, u16 scope length, entity, scope
//!         N entries of ENTRY_LEN (96) bytes:
//!           0 4 frame offset       4 4 frame length     8 8 global sequence
//!          16 8 timestamp µs      24 16 event id       40 16 correlation id
//!          56 16 causation id     72 4 clock           76 4 coordinate index
//!          80 2 kind              82 2 HLC counter     84 1 event flags
//!          85 1 link flags (bit 0: has causation)      86 2 reserved
//!          88 4 batch size        92 4 batch index
//!         T tails of 36 bytes: u32 entry index, [32] event hash — the last
//!           event of each entity in this segment (what the next append of
//!           that entity chains onto; other hashes stay in the frames)
//!
//! trailer (16 bytes, the last non-zero bytes of the file):
//!   0 8 footer frame offset    8 8 magic "BPKFOOT1"
//! ```
//!
//! The entries are exactly the event frames a scan of the segment finds (in
//! file order, with their batch marks), so loading a footer feeds recovery
//! the same records a scan would.

use super::frame::{decode_frame, seal_frame, FRAME_HEADER_LEN};
use super::{le, FormatError};
use crate::coordinate::MAX_COORDINATE_COMPONENT_LEN;

use super::RECORD_FOOTER;
const VERSION: u8 = 1;
const FIXED: usize = 32;
pub(crate) const ENTRY_LEN: usize = 96;
const TAIL_LEN: usize = 36;
pub(crate) const TRAILER_LEN: usize = 16;
const TRAILER_MAGIC: &[u8; 8] = b"BPKFOOT1";

/// One event of a footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FooterEntry {
    pub(crate) offset: u32,
    pub(crate) length: u32,
    pub(crate) global_seq: u64,
    pub(crate) timestamp_us: i64,
    pub(crate) event_id: u128,
    pub(crate) correlation_id: u128,
    pub(crate) causation_id: Option<u128>,
    /// Known for the last event of each entity in the segment; zero otherwise.
    pub(crate) event_hash: [u8; 32],
    pub(crate) clock: u32,
    pub(crate) coord: u32,
    pub(crate) kind: u16,
    pub(crate) hlc_counter: u16,
    pub(crate) flags: u8,
    pub(crate) batch_size: u32,
    pub(crate) batch_index: u32,
}

/// A decoded footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Footer {
    pub(crate) segment_id: u64,
    pub(crate) frames_end: u64,
    pub(crate) coords: Vec<(String, String)>,
    pub(crate) entries: Vec<FooterEntry>,
}

impl Footer {
    /// The footer frame followed by the trailer, for a footer placed at
    /// `self.frames_end`. `tails` lists, for each entity, the index of its
    /// last entry; their hashes are kept.
    pub(crate) fn encode(&self, tails: &[u32]) -> Vec<u8> {
        let coord_bytes: usize = self.coords.iter().map(|(e, s)| 4 + e.len() + s.len()).sum();
        let body_len =
            FIXED + coord_bytes + self.entries.len() * ENTRY_LEN + tails.len() * TAIL_LEN;
        let mut out = vec![0u8; FRAME_HEADER_LEN + body_len + TRAILER_LEN];
        {
            let b = &mut out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + body_len];
            b[0] = RECORD_FOOTER;
            b[1] = VERSION;
            b[4..8].copy_from_slice(&(self.coords.len() as u32).to_le_bytes());
            b[8..12].copy_from_slice(&(self.entries.len() as u32).to_le_bytes());
            b[12..16].copy_from_slice(&(tails.len() as u32).to_le_bytes());
            b[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
            b[24..32].copy_from_slice(&self.frames_end.to_le_bytes());
            let mut at = FIXED;
            for (e, s) in &self.coords {
                b[at..at + 2].copy_from_slice(&(e.len() as u16).to_le_bytes());
                b[at + 2..at + 4].copy_from_slice(&(s.len() as u16).to_le_bytes());
                at += 4;
                b[at..at + e.len()].copy_from_slice(e.as_bytes());
                at += e.len();
                b[at..at + s.len()].copy_from_slice(s.as_bytes());
                at += s.len();
            }
            for x in &self.entries {
                let r = &mut b[at..at + ENTRY_LEN];
                r[0..4].copy_from_slice(&x.offset.to_le_bytes());
                r[4..8].copy_from_slice(&x.length.to_le_bytes());
                r[8..16].copy_from_slice(&x.global_seq.to_le_bytes());
                r[16..24].copy_from_slice(&x.timestamp_us.to_le_bytes());
                r[24..40].copy_from_slice(&x.event_id.to_le_bytes());
                r[40..56].copy_from_slice(&x.correlation_id.to_le_bytes());
                r[56..72].copy_from_slice(&x.causation_id.unwrap_or(0).to_le_bytes());
                r[72..76].copy_from_slice(&x.clock.to_le_bytes());
                r[76..80].copy_from_slice(&x.coord.to_le_bytes());
                r[80..82].copy_from_slice(&x.kind.to_le_bytes());
                r[82..84].copy_from_slice(&x.hlc_counter.to_le_bytes());
                r[84] = x.flags;
                r[85] = u8::from(x.causation_id.is_some());
                r[88..92].copy_from_slice(&x.batch_size.to_le_bytes());
                r[92..96].copy_from_slice(&x.batch_index.to_le_bytes());
                at += ENTRY_LEN;
            }
            for &t in tails {
                b[at..at + 4].copy_from_slice(&t.to_le_bytes());
                b[at + 4..at + 36].copy_from_slice(&self.entries[t as usize].event_hash);
                at += TAIL_LEN;
            }
        }
        let frame_end = FRAME_HEADER_LEN + body_len;
        seal_frame(&mut out[..frame_end]);
        out[frame_end..frame_end + 8].copy_from_slice(&self.frames_end.to_le_bytes());
        out[frame_end + 8..].copy_from_slice(TRAILER_MAGIC);
        out
    }
}

/// Where a segment's footer frame starts, from its trailer: `file` is the
/// whole segment; the trailer is the last non-zero bytes.
pub(crate) fn locate(file: &[u8]) -> Option<u64> {
    locate_before(file, content_end(file))
}

/// Where `file`'s content ends: the zero fill after it is skipped, a block
/// at a time.
pub(crate) fn content_end(file: &[u8]) -> usize {
    let mut end = file.len();
    while end > 0 {
        let start = end.saturating_sub(4096);
        match file[start..end].iter().rposition(|&b| b != 0) {
            Some(p) => return start + p + 1,
            None => end = start,
        }
    }
    0
}

/// [`locate`] for a file whose content ends at `end` (see [`content_end`]).
pub(crate) fn locate_before(file: &[u8], end: usize) -> Option<u64> {
    let t = file.get(end.checked_sub(TRAILER_LEN)?..end)?;
    (&t[8..16] == TRAILER_MAGIC).then(|| le::u64_at(t, 0))
}

/// Whether `buf` begins with the header of a footer frame (whatever
/// follows: a footer cut short by a crash still starts like one).
pub(crate) fn starts_footer(buf: &[u8]) -> bool {
    buf.len() > FRAME_HEADER_LEN
        && buf[0..4] == super::frame::FRAME_MARKER.to_le_bytes()
        && buf[FRAME_HEADER_LEN] == RECORD_FOOTER
}

/// Whether a frame body is a footer (a scan stops at it).
pub(crate) fn is_footer(body: &[u8]) -> bool {
    body.first() == Some(&RECORD_FOOTER)
}

/// Decode the footer frame at the start of `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<Footer, FormatError> {
    decode_with_len(bytes).map(|(f, _)| f)
}

/// [`decode`], also returning the footer frame's length.
pub(crate) fn decode_with_len(bytes: &[u8]) -> Result<(Footer, usize), FormatError> {
    let (b, frame_len) = decode_frame(bytes)?;
    if b.len() < FIXED || b[0] != RECORD_FOOTER {
        return Err(FormatError::invalid("footer", "not a footer record"));
    }
    if b[1] != VERSION {
        return Err(FormatError::UnsupportedVersion(u16::from(b[1])));
    }
    let ncoords = le::u32_at(b, 4) as usize;
    let nentries = le::u32_at(b, 8) as usize;
    // Bound the allocations by what the body can hold.
    if ncoords > b.len() / 6 || nentries > b.len() / ENTRY_LEN {
        return Err(FormatError::invalid(
            "footer counts",
            format!("{ncoords} coordinates, {nentries} entries"),
        ));
    }
    let mut coords = Vec::with_capacity(ncoords);
    let mut at = FIXED;
    for _ in 0..ncoords {
        if at + 4 > b.len() {
            return Err(FormatError::Short {
                what: "footer coordinate",
                need: 4,
                have: b.len() - at,
            });
        }
        let (el, sl) = (
            usize::from(le::u16_at(b, at)),
            usize::from(le::u16_at(b, at + 2)),
        );
        at += 4;
        if el > MAX_COORDINATE_COMPONENT_LEN
            || sl > MAX_COORDINATE_COMPONENT_LEN
            || at + el + sl > b.len()
        {
            return Err(FormatError::invalid(
                "footer coordinate",
                format!("{el}/{sl} bytes"),
            ));
        }
        let text = |r: std::ops::Range<usize>| {
            std::str::from_utf8(&b[r])
                .map(str::to_owned)
                .map_err(|_| FormatError::invalid("footer coordinate", "not UTF-8"))
        };
        let e = text(at..at + el)?;
        let s = text(at + el..at + el + sl)?;
        crate::coordinate::validate(&e, &s)
            .map_err(|err| FormatError::invalid("footer coordinate", err.to_string()))?;
        coords.push((e, s));
        at += el + sl;
    }
    let ntails = le::u32_at(b, 12) as usize;
    if b.len() - at != nentries * ENTRY_LEN + ntails * TAIL_LEN {
        return Err(FormatError::invalid(
            "footer length",
            format!("{} bytes for {nentries} entries", b.len() - at),
        ));
    }
    let mut entries = Vec::with_capacity(nentries);
    let tails_at = at + nentries * ENTRY_LEN;
    for r in b[at..tails_at].chunks_exact(ENTRY_LEN) {
        let coord = le::u32_at(r, 76);
        if coord as usize >= coords.len() || r[85] & !1 != 0 {
            return Err(FormatError::invalid(
                "footer entry",
                format!("coordinate {coord}"),
            ));
        }
        entries.push(FooterEntry {
            offset: le::u32_at(r, 0),
            length: le::u32_at(r, 4),
            global_seq: le::u64_at(r, 8),
            timestamp_us: le::u64_at(r, 16) as i64,
            event_id: le::u128_at(r, 24),
            correlation_id: le::u128_at(r, 40),
            causation_id: (r[85] & 1 != 0).then(|| le::u128_at(r, 56)),
            event_hash: [0; 32],
            clock: le::u32_at(r, 72),
            coord,
            kind: le::u16_at(r, 80),
            hlc_counter: le::u16_at(r, 82),
            flags: r[84],
            batch_size: le::u32_at(r, 88),
            batch_index: le::u32_at(r, 92),
        });
    }
    for t in b[tails_at..].chunks_exact(TAIL_LEN) {
        let i = le::u32_at(t, 0) as usize;
        let entry = entries
            .get_mut(i)
            .ok_or_else(|| FormatError::invalid("footer tail", format!("entry {i}")))?;
        entry.event_hash = le::arr32_at(t, 4);
    }
    Ok((
        Footer {
            segment_id: le::u64_at(b, 16),
            frames_end: le::u64_at(b, 24),
            coords,
            entries,
        },
        frame_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Footer {
        Footer {
            segment_id: 3,
            frames_end: 4096,
            coords: vec![
                ("order:1".into(), "t".into()),
                ("order:2".into(), "t".into()),
            ],
            entries: (0..3)
                .map(|i| FooterEntry {
                    offset: 64 + i * 300,
                    length: 300,
                    global_seq: 10 + u64::from(i),
                    timestamp_us: 1_700_000_000_000_000,
                    event_id: u128::from(i) << 64 | 7,
                    correlation_id: 5,
                    causation_id: if i == 1 { Some(9) } else { None },
                    event_hash: if i == 2 { [9; 32] } else { [0; 32] },
                    clock: i,
                    coord: i % 2,
                    kind: 0x1001,
                    hlc_counter: 1,
                    flags: 8,
                    batch_size: 2,
                    batch_index: i % 2,
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_and_locate() {
        let f = sample();
        let bytes = f.encode(&[2]);
        assert_eq!(decode(&bytes).unwrap(), f);
        let mut file = vec![7u8; 4096];
        file.extend_from_slice(&bytes);
        file.extend_from_slice(&[0; 10_000]);
        assert_eq!(locate(&file), Some(4096));
        assert_eq!(locate(&[0u8; 100]), None);
        assert_eq!(locate(&file[..file.len() - 10_001]), None);
    }

    #[test]
    fn damage_is_detected() {
        let bytes = sample().encode(&[2]);
        let frame_len = bytes.len() - TRAILER_LEN;
        for i in 0..frame_len {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
            let _ = locate(&bytes);
        }

        #[test]
        fn valid_crc_with_garbage_body_never_panics(body in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut f = vec![0u8; FRAME_HEADER_LEN];
            f.push(RECORD_FOOTER);
            f.extend_from_slice(&body);
            seal_frame(&mut f);
            let _ = decode(&f);
        }
    }
}
