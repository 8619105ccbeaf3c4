//! Frames: `[marker][len][crc][body]`, and the scan that finds them again
//! after damage.

use super::{le, FormatError};

pub(crate) const FRAME_MARKER: u32 = 0xA1F7_7CBA;
const MARKER_BYTES: [u8; 4] = FRAME_MARKER.to_le_bytes();
pub(crate) const FRAME_HEADER_LEN: usize = 12;
/// Largest event body accepted by a decoder: the largest payload the config
/// allows (64 MiB) plus the fixed record part and two maximal coordinate
/// strings. Footer frames (a table of a whole segment) are bounded only by
/// the bytes present.
pub(crate) const MAX_BODY_LEN: usize = 64 * 1024 * 1024 + 4096;

/// CRC over the length field and the body, so a damaged length is caught too.
pub(crate) fn frame_crc(body_len: u32, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&body_len.to_le_bytes());
    h.update(body);
    h.finalize()
}

/// Fill in the 12-byte frame header in front of a body already written at
/// `frame[FRAME_HEADER_LEN..]`.
pub(crate) fn seal_frame(frame: &mut [u8]) {
    let body_len = (frame.len() - FRAME_HEADER_LEN) as u32;
    let crc = frame_crc(body_len, &frame[FRAME_HEADER_LEN..]);
    frame[0..4].copy_from_slice(&MARKER_BYTES);
    frame[4..8].copy_from_slice(&body_len.to_le_bytes());
    frame[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// What lies at an offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Probe<'a> {
    /// A whole frame with a good checksum.
    Frame { body: &'a [u8], len: usize },
    /// Only zero bytes from here to the end of the buffer: a clean end.
    End,
    /// Something that is not a valid frame.
    Damaged(FormatError),
}

/// Decode the frame starting at `buf[pos..]`.
pub(crate) fn probe(buf: &[u8], pos: usize) -> Probe<'_> {
    let rest = match buf.get(pos..) {
        Some(r) => r,
        None => return Probe::End,
    };
    if all_zero(rest) {
        return Probe::End;
    }
    match decode_frame(rest) {
        Ok((body, len)) => Probe::Frame { body, len },
        Err(e) => Probe::Damaged(e),
    }
}

/// Decode one frame at the start of `buf`: the body and the frame's total length.
pub(crate) fn decode_frame(buf: &[u8]) -> Result<(&[u8], usize), FormatError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(FormatError::Short {
            what: "frame header",
            need: FRAME_HEADER_LEN,
            have: buf.len(),
        });
    }
    if buf[0..4] != MARKER_BYTES {
        return Err(FormatError::BadMagic("frame"));
    }
    let body_len = le::u32_at(buf, 4);
    let body_len_usize = body_len as usize;
    let footer = buf.get(FRAME_HEADER_LEN) == Some(&super::RECORD_FOOTER);
    if body_len_usize == 0 || (body_len_usize > MAX_BODY_LEN && !footer) {
        return Err(FormatError::invalid("frame length", body_len.to_string()));
    }
    let total = FRAME_HEADER_LEN + body_len_usize;
    if buf.len() < total {
        return Err(FormatError::Short {
            what: "frame body",
            need: total,
            have: buf.len(),
        });
    }
    let body = &buf[FRAME_HEADER_LEN..total];
    if frame_crc(body_len, body) != le::u32_at(buf, 8) {
        return Err(FormatError::Checksum("frame"));
    }
    Ok((body, total))
}

/// What follows a damaged frame: where scanning can go on, or why it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterDamage {
    /// A valid frame starts here.
    Resume(usize),
    /// Nothing valid follows, and the damage is a footer frame cut short
    /// (by a crash or a full disk while it was written): no event is lost.
    TornFooter,
    /// Nothing valid follows: a torn tail.
    TornTail,
}

/// Classify the damage at `buf[pos..]` (every scan uses this one rule).
pub(crate) fn after_damage(buf: &[u8], pos: usize) -> AfterDamage {
    match next_valid_frame(buf, pos + 1) {
        Some(next) => AfterDamage::Resume(next),
        None if super::footer::starts_footer(&buf[pos..]) => AfterDamage::TornFooter,
        None => AfterDamage::TornTail,
    }
}

/// The offset of the next valid frame after `from`, if any: how a scan
/// resynchronises after a damaged frame.
pub(crate) fn next_valid_frame(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + FRAME_HEADER_LEN <= buf.len() {
        let window = &buf[at..];
        let hit = find_marker(window)?;
        let cand = at + hit;
        if decode_frame(&buf[cand..]).is_ok() {
            return Some(cand);
        }
        at = cand + 1;
    }
    None
}

fn find_marker(hay: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 4 <= hay.len() {
        // Fast skip over zero fill, the common case after the last frame.
        if hay[i] == 0 {
            let skip = hay[i..].iter().position(|&b| b != 0)?;
            i += skip;
            continue;
        }
        if hay[i..i + 4] == MARKER_BYTES {
            return Some(i);
        }
        i += 1;
    }
    None
}

pub(crate) fn all_zero(b: &[u8]) -> bool {
    // OR-folding fixed-size blocks (no early exit inside a block) vectorises well.
    let mut blocks = b.chunks_exact(64);
    blocks.all(|c| c.iter().fold(0u8, |acc, &x| acc | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_classified_once_for_every_scan() {
        let event = frame(b"\x01body");
        let mut footer = frame(&[super::super::RECORD_FOOTER, 1, 0, 0]);
        // Damage followed by a valid frame: resume there.
        let mut buf = vec![0xEEu8; 10];
        buf.extend_from_slice(&event);
        assert_eq!(after_damage(&buf, 0), AfterDamage::Resume(10));
        // A footer frame cut short at the end: a torn footer.
        footer.truncate(footer.len() - 2);
        assert_eq!(after_damage(&footer, 0), AfterDamage::TornFooter);
        // Anything else cut short: a torn tail.
        let cut = &event[..event.len() - 2];
        assert_eq!(after_damage(cut, 0), AfterDamage::TornTail);
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; FRAME_HEADER_LEN + body.len()];
        f[FRAME_HEADER_LEN..].copy_from_slice(body);
        seal_frame(&mut f);
        f
    }

    #[test]
    fn round_trip_and_golden_header() {
        let f = frame(b"\x01hello");
        assert_eq!(&f[0..8], &[0xBA, 0x7C, 0xF7, 0xA1, 6, 0, 0, 0]);
        assert_eq!(decode_frame(&f).unwrap(), (&b"\x01hello"[..], 18));
        assert_eq!(
            probe(&f, 0),
            Probe::Frame {
                body: b"\x01hello",
                len: 18
            }
        );
    }

    #[test]
    fn damage_is_detected() {
        let f = frame(b"\x01hello");
        for i in 0..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x40;
            assert!(decode_frame(&bad).is_err(), "flip at {i} undetected");
        }
        assert!(matches!(
            decode_frame(&f[..10]),
            Err(FormatError::Short { .. })
        ));
        assert!(matches!(
            decode_frame(&f[..15]),
            Err(FormatError::Short { .. })
        ));
        let mut huge = f.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_frame(&huge),
            Err(FormatError::Invalid { .. })
        ));
    }

    #[test]
    fn zero_fill_is_a_clean_end() {
        let mut buf = frame(b"\x01a");
        let first = buf.len();
        buf.extend_from_slice(&[0u8; 100]);
        assert_eq!(probe(&buf, first), Probe::End);
        assert_eq!(probe(&buf, buf.len()), Probe::End);
        assert_eq!(probe(&buf, buf.len() + 5), Probe::End);
    }

    #[test]
    fn resynchronises_after_damage() {
        let a = frame(b"\x01first");
        let b = frame(b"\x01second");
        let mut buf = a.clone();
        buf.extend_from_slice(&b);
        buf[5] ^= 0xff; // damage a's length
        assert!(matches!(probe(&buf, 0), Probe::Damaged(_)));
        assert_eq!(next_valid_frame(&buf, 1), Some(a.len()));
        // Garbage that contains the marker but no valid frame is skipped.
        let mut junk = MARKER_BYTES.to_vec();
        junk.extend_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9, 9]);
        junk.extend_from_slice(&b);
        assert_eq!(next_valid_frame(&junk, 0), Some(13));
        assert_eq!(next_valid_frame(&[0u8; 64], 0), None);
    }
}
