//! The compact per-event record and the chunked arena that holds them.

use super::DiskPos;
use crate::event::EventKind;

/// 84 bytes per event, 4-byte aligned (no padding). The public `IndexEntry`
/// (with its coordinate strings and 128-bit correlation and causation ids)
/// is rebuilt from this on the way out.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct Record {
    id: [u8; 16],
    pub(super) event_hash: [u8; 32],
    /// Low 32 bits of wall-clock milliseconds.
    wall_lo: u32,
    /// High 16 bits of the 48-bit milliseconds, then the kind in the top 16 bits.
    wall_hi_kind: u32,
    segment: u32,
    offset: u32,
    length: u32,
    pub(super) coord: u32,
    pub(super) clock: u32,
    /// Correlation: `NO_REF` = the event itself, else a slot or external reference.
    pub(super) corr: u32,
    /// Causation: `NO_REF` = none, else a slot or external reference.
    pub(super) cause: u32,
}

const _: () = assert!(std::mem::size_of::<Record>() == 84);

impl Record {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: u128,
        event_hash: [u8; 32],
        wall_ms: u64,
        kind: EventKind,
        segment: u32,
        offset: u32,
        length: u32,
        coord: u32,
        clock: u32,
        corr: u32,
        cause: u32,
    ) -> Self {
        let wall_ms = wall_ms.min((1 << 48) - 1);
        Self {
            id: id.to_le_bytes(),
            event_hash,
            wall_lo: wall_ms as u32,
            wall_hi_kind: ((wall_ms >> 32) as u32) | (u32::from(kind.raw()) << 16),
            segment,
            offset,
            length,
            coord,
            clock,
            corr,
            cause,
        }
    }

    #[inline]
    pub(super) fn event_id(&self) -> u128 {
        u128::from_le_bytes(self.id)
    }

    pub(super) fn wall_ms(&self) -> u64 {
        u64::from(self.wall_lo) | (u64::from(self.wall_hi_kind & 0xffff) << 32)
    }

    pub(super) fn kind(&self) -> EventKind {
        EventKind::from_raw((self.wall_hi_kind >> 16) as u16)
    }

    pub(super) fn disk_pos(&self) -> DiskPos {
        DiskPos {
            segment_id: u64::from(self.segment),
            offset: u64::from(self.offset),
            length: self.length,
        }
    }
}

const CHUNK_SHIFT: u32 = 16;
const CHUNK: usize = 1 << CHUNK_SHIFT;

/// Records in fixed-size chunks: growth never copies existing records (no
/// pause while holding the index lock) and wastes at most one chunk.
#[derive(Default)]
pub(super) struct RecordArena {
    chunks: Vec<Vec<Record>>,
    len: u32,
}

impl RecordArena {
    pub(super) fn len(&self) -> u32 {
        self.len
    }

    #[inline]
    pub(super) fn get(&self, slot: u32) -> &Record {
        &self.chunks[(slot >> CHUNK_SHIFT) as usize][slot as usize & (CHUNK - 1)]
    }

    pub(super) fn push(&mut self, rec: Record) {
        match self.chunks.last_mut() {
            Some(c) if c.len() < CHUNK => c.push(rec),
            _ => {
                let mut c = Vec::with_capacity(CHUNK);
                c.push(rec);
                self.chunks.push(c);
            }
        }
        self.len += 1;
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.chunks.capacity() * std::mem::size_of::<Vec<Record>>()
            + self
                .chunks
                .iter()
                .map(|c| c.capacity() * std::mem::size_of::<Record>())
                .sum::<usize>()
    }
}
