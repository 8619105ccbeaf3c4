//! The checkpoint: an image of the index written on `close()`, so the next
//! open loads it instead of reading the segments. It names the segments it
//! covers (and how far), so `open` can check it against them cheaply, and
//! scans only what was written after it.
//!
//! ```text
//! file `checkpoint.bpk`, written atomically (temp file, fsync, rename, dir fsync)
//!  0  8  magic "BATPAKCP"
//!  8  2  version (1)
//! 10  2  reserved, zero
//! 12  4  CRC-32 of bytes 16..
//! 16  8  body length B (the file is 24 + B bytes)
//! 24     body, integers little-endian, strings as u16 length + UTF-8:
//!        u64 next global sequence
//!        u32 S, S segments: u64 id, u64 frames end, u64 last frame offset,
//!            u32 last frame length (0 = no frame), u32 reserved, u128 last event id
//!        u32 E, E entities: string name, u8 has-tail, then the tail (zeros when
//!            none): u32 clock, [32] hash, i64 timestamp, u16 HLC counter
//!        u32 C, C scopes: string name
//!        u32 K, K coordinates: u32 entity, u32 scope
//!        u32 X, X external ids: u128
//!        u32 Q, Q sequence runs: u32 first slot, u64 sequence
//!        u32 L, L links: u32 slot, u32 correlation ref, u32 causation ref
//!        u32 R, R records of 48 bytes: u128 id, u64 wall ms, u16 kind, u8 has-links,
//!            u8 reserved, u32 segment, u32 offset, u32 length, u32 coordinate, u32 clock
//! ```

use super::{le, FormatError};
use crate::store::index::{
    EntityImage, EntityTail, Index, IndexLoader, IndexTables, LinkImage, RecordImage,
};

pub(crate) const CHECKPOINT_FILE: &str = "checkpoint.bpk";
const MAGIC: &[u8; 8] = b"BATPAKCP";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 24;
const RECORD_LEN: usize = 48;

/// How far the checkpoint covers one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CoveredSegment {
    pub(crate) segment_id: u64,
    pub(crate) frames_end: u64,
    pub(crate) last_offset: u64,
    /// 0 when the segment holds no frame.
    pub(crate) last_length: u32,
    pub(crate) last_event_id: u128,
}

/// A decoded checkpoint.
pub(crate) struct Checkpoint {
    pub(crate) next_seq: u64,
    pub(crate) segments: Vec<CoveredSegment>,
    pub(crate) index: Index,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

/// Encode a checkpoint of `index`.
pub(crate) fn encode(next_seq: u64, segments: &[CoveredSegment], index: &Index) -> Vec<u8> {
    let t = index.tables();
    let mut b = Vec::with_capacity(HEADER_LEN + 64 + index.len() as usize * RECORD_LEN);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&[0; 14]);
    b.extend_from_slice(&next_seq.to_le_bytes());
    put_count(&mut b, segments.len());
    for s in segments {
        b.extend_from_slice(&s.segment_id.to_le_bytes());
        b.extend_from_slice(&s.frames_end.to_le_bytes());
        b.extend_from_slice(&s.last_offset.to_le_bytes());
        b.extend_from_slice(&s.last_length.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&s.last_event_id.to_le_bytes());
    }
    put_count(&mut b, t.entities.len());
    for e in &t.entities {
        put_str(&mut b, &e.name);
        let t = e.tail.unwrap_or(EntityTail {
            clock: 0,
            event_hash: [0; 32],
            timestamp_us: 0,
            hlc_counter: 0,
        });
        b.push(u8::from(e.tail.is_some()));
        b.extend_from_slice(&t.clock.to_le_bytes());
        b.extend_from_slice(&t.event_hash);
        b.extend_from_slice(&t.timestamp_us.to_le_bytes());
        b.extend_from_slice(&t.hlc_counter.to_le_bytes());
    }
    put_count(&mut b, t.scopes.len());
    for s in &t.scopes {
        put_str(&mut b, s);
    }
    put_count(&mut b, t.coords.len());
    for (e, s) in &t.coords {
        b.extend_from_slice(&e.to_le_bytes());
        b.extend_from_slice(&s.to_le_bytes());
    }
    put_count(&mut b, t.external_ids.len());
    for x in &t.external_ids {
        b.extend_from_slice(&x.to_le_bytes());
    }
    put_count(&mut b, t.seq_runs.len());
    for (slot, seq) in &t.seq_runs {
        b.extend_from_slice(&slot.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
    }
    put_count(&mut b, t.links.len());
    for l in &t.links {
        b.extend_from_slice(&l.slot.to_le_bytes());
        b.extend_from_slice(&l.corr.to_le_bytes());
        b.extend_from_slice(&l.cause.to_le_bytes());
    }
    put_count(&mut b, index.len() as usize);
    for r in index.record_images() {
        b.extend_from_slice(&r.event_id.to_le_bytes());
        b.extend_from_slice(&r.wall_ms.to_le_bytes());
        b.extend_from_slice(&r.kind.to_le_bytes());
        b.push(u8::from(r.has_links));
        b.push(0);
        b.extend_from_slice(&r.segment.to_le_bytes());
        b.extend_from_slice(&r.offset.to_le_bytes());
        b.extend_from_slice(&r.length.to_le_bytes());
        b.extend_from_slice(&r.coord.to_le_bytes());
        b.extend_from_slice(&r.clock.to_le_bytes());
    }
    let body_len = (b.len() - HEADER_LEN) as u64;
    b[16..24].copy_from_slice(&body_len.to_le_bytes());
    let crc = crc32fast::hash(&b[16..]);
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

/// A bounds-checked reader over the body.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(FormatError::Short {
                what,
                need: n,
                have: self.b.len() - self.at,
            })?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(le::u16_at(self.take(2, "checkpoint")?, 0))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(le::u32_at(self.take(4, "checkpoint")?, 0))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(le::u64_at(self.take(8, "checkpoint")?, 0))
    }
    fn u128(&mut self) -> Result<u128, FormatError> {
        Ok(le::u128_at(self.take(16, "checkpoint")?, 0))
    }
    fn string(&mut self) -> Result<String, FormatError> {
        let n = usize::from(self.u16()?);
        let bytes = self.take(n, "checkpoint string")?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| FormatError::invalid("checkpoint string", "not UTF-8"))
    }
    /// A count of items of at least `min_size` bytes each, bounded by what remains.
    fn count(&mut self, min_size: usize, what: &'static str) -> Result<usize, FormatError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size) > self.b.len() - self.at {
            return Err(FormatError::invalid(what, format!("{n} items do not fit")));
        }
        Ok(n)
    }
}

/// Decode and rebuild the index. Checks the checksum and every internal
/// reference; checking against the segments is the caller's job.
pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, FormatError> {
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Short {
            what: "checkpoint header",
            need: HEADER_LEN,
            have: bytes.len(),
        });
    }
    if &bytes[0..8] != MAGIC {
        return Err(FormatError::BadMagic("checkpoint"));
    }
    let version = le::u16_at(bytes, 8);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    if le::u64_at(bytes, 16) != (bytes.len() - HEADER_LEN) as u64 {
        return Err(FormatError::invalid(
            "checkpoint length",
            "does not match the file",
        ));
    }
    if crc32fast::hash(&bytes[16..]) != le::u32_at(bytes, 12) {
        return Err(FormatError::Checksum("checkpoint"));
    }
    let mut c = Cursor {
        b: bytes,
        at: HEADER_LEN,
    };
    let next_seq = c.u64()?;
    let n = c.count(48, "checkpoint segments")?;
    let mut segments = Vec::with_capacity(n);
    for _ in 0..n {
        let segment_id = c.u64()?;
        let frames_end = c.u64()?;
        let last_offset = c.u64()?;
        let last_length = c.u32()?;
        c.u32()?;
        let last_event_id = c.u128()?;
        segments.push(CoveredSegment {
            segment_id,
            frames_end,
            last_offset,
            last_length,
            last_event_id,
        });
    }
    let mut t = IndexTables::default();
    let n = c.count(2 + 1 + 4 + 32 + 8 + 2, "checkpoint entities")?;
    t.entities.reserve(n);
    for _ in 0..n {
        let name = c.string()?;
        let has_tail = c.take(1, "entity tail")?[0];
        let clock = c.u32()?;
        let event_hash = le::arr32_at(c.take(32, "entity tail")?, 0);
        let timestamp_us = c.u64()? as i64;
        let hlc_counter = c.u16()?;
        if has_tail > 1 {
            return Err(FormatError::invalid("checkpoint entity", "tail flag"));
        }
        t.entities.push(EntityImage {
            name,
            tail: (has_tail == 1).then_some(EntityTail {
                clock,
                event_hash,
                timestamp_us,
                hlc_counter,
            }),
        });
    }
    let n = c.count(2, "checkpoint scopes")?;
    t.scopes.reserve(n);
    for _ in 0..n {
        t.scopes.push(c.string()?);
    }
    // Names become coordinates handed to readers: they must be valid ones.
    let valid = |entity: &str, scope: &str| {
        crate::coordinate::validate(entity, scope)
            .map_err(|e| FormatError::invalid("checkpoint coordinate", e.to_string()))
    };
    for e in &t.entities {
        valid(&e.name, "s")?;
    }
    for s in &t.scopes {
        valid("e", s)?;
    }
    let n = c.count(8, "checkpoint coordinates")?;
    t.coords.reserve(n);
    for _ in 0..n {
        t.coords.push((c.u32()?, c.u32()?));
    }
    let n = c.count(16, "checkpoint external ids")?;
    t.external_ids.reserve(n);
    for _ in 0..n {
        t.external_ids.push(c.u128()?);
    }
    let n = c.count(12, "checkpoint sequence runs")?;
    t.seq_runs.reserve(n);
    for _ in 0..n {
        t.seq_runs.push((c.u32()?, c.u64()?));
    }
    let n = c.count(12, "checkpoint links")?;
    t.links.reserve(n);
    for _ in 0..n {
        t.links.push(LinkImage {
            slot: c.u32()?,
            corr: c.u32()?,
            cause: c.u32()?,
        });
    }
    let n = c.count(RECORD_LEN, "checkpoint records")?;
    let records = c.take(n * RECORD_LEN, "checkpoint records")?;
    if c.at != bytes.len() {
        return Err(FormatError::invalid(
            "checkpoint",
            "bytes after the records",
        ));
    }
    let invalid = |e: String| FormatError::invalid("checkpoint index", e);
    let mut loader = IndexLoader::new(t).map_err(invalid)?;
    for r in records.chunks_exact(RECORD_LEN) {
        if r[27] != 0 || r[26] > 1 {
            return Err(FormatError::invalid(
                "checkpoint record",
                "reserved bits set",
            ));
        }
        loader
            .push(RecordImage {
                event_id: le::u128_at(r, 0),
                wall_ms: le::u64_at(r, 16),
                kind: le::u16_at(r, 24),
                has_links: r[26] == 1,
                segment: le::u32_at(r, 28),
                offset: le::u32_at(r, 32),
                length: le::u32_at(r, 36),
                coord: le::u32_at(r, 40),
                clock: le::u32_at(r, 44),
            })
            .map_err(invalid)?;
    }
    let index = loader.finish().map_err(invalid)?;
    Ok(Checkpoint {
        next_seq,
        segments,
        index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use crate::store::index::NewRecord;
    use proptest::prelude::*;

    fn sample_index() -> Index {
        let mut idx = Index::new();
        for i in 0..10u32 {
            idx.insert(&NewRecord {
                event_id: 500 + u128::from(i),
                correlation_id: if i > 0 { 500 } else { 500 + u128::from(i) },
                causation_id: (i == 3).then_some(12345),
                entity: if i % 2 == 0 { "a" } else { "b" },
                scope: "s",
                kind: EventKind::custom(1, 1),
                timestamp_us: 7_000_000,
                hlc_counter: 0,
                clock: i / 2,
                event_hash: [1; 32],
                global_seq: u64::from(i),
                segment_id: 1,
                offset: 64 + 200 * u64::from(i),
                length: 200,
            })
            .unwrap();
        }
        idx
    }

    fn segments() -> Vec<CoveredSegment> {
        vec![CoveredSegment {
            segment_id: 1,
            frames_end: 2064,
            last_offset: 1864,
            last_length: 200,
            last_event_id: 509,
        }]
    }

    #[test]
    fn round_trip() {
        let idx = sample_index();
        let bytes = encode(10, &segments(), &idx);
        let cp = decode(&bytes).unwrap();
        assert_eq!(cp.next_seq, 10);
        assert_eq!(cp.segments, segments());
        for s in 0..idx.len() {
            assert_eq!(cp.index.entry(s), idx.entry(s));
        }
        assert_eq!(&bytes[..10], b"BATPAKCP\x01\x00");
    }

    #[test]
    fn any_damage_is_detected() {
        let bytes = encode(10, &segments(), &sample_index());
        for i in (0..bytes.len()).step_by(3) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x04;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes).is_ok();
        }

        /// A forged checkpoint with a valid checksum but a garbage body is
        /// refused without panicking.
        #[test]
        fn forged_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..400)) {
            let mut b = Vec::new();
            b.extend_from_slice(MAGIC);
            b.extend_from_slice(&VERSION.to_le_bytes());
            b.extend_from_slice(&[0; 14]);
            b.extend_from_slice(&body);
            let len = (b.len() - HEADER_LEN) as u64;
            b[16..24].copy_from_slice(&len.to_le_bytes());
            let crc = crc32fast::hash(&b[16..]);
            b[12..16].copy_from_slice(&crc.to_le_bytes());
            let _ = decode(&b).is_ok();
        }
    }
}
