//! The compact per-event record and the chunked arena that holds them.

use super::DiskPos;
use crate::event::EventKind;

/// 44 bytes per event, 4-byte aligned (no padding). The public `IndexEntry`
/// (with its coordinate strings, 128-bit correlation and causation ids and
/// hash chain) is rebuilt from this on the way out. Causal links live apart
/// (most events are roots and have none); hashes stay in the frames on disk.
#[derive(Clone, Copy)]
#[repr(C)]
pub(super) struct Record {
    id: [u8; 16],
    /// Low 32 bits of wall-clock milliseconds.
    wall_lo: u32,
    /// High 16 bits of the 48-bit milliseconds, then the kind in the top 16 bits.
    wall_hi_kind: u32,
    segment: u32,
    offset: u32,
    length: u32,
    /// Coordinate id, with [`HAS_LINKS`] set when the event has a causal link entry.
    coord_and_flag: u32,
    pub(super) clock: u32,
}

/// Set in `coord_and_flag` when the event's correlation or causation is
/// recorded in the index's link list.
const HAS_LINKS: u32 = 1 << 31;
/// Coordinate ids stay below this.
pub(super) const MAX_COORDS: u32 = HAS_LINKS;

const _: () = assert!(std::mem::size_of::<Record>() == 44);

impl Record {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: u128,
        wall_ms: u64,
        kind: EventKind,
        segment: u32,
        offset: u32,
        length: u32,
        coord: u32,
        clock: u32,
        has_links: bool,
    ) -> Self {
        let wall_ms = wall_ms.min((1 << 48) - 1);
        Self {
            id: id.to_le_bytes(),
            wall_lo: wall_ms as u32,
            wall_hi_kind: ((wall_ms >> 32) as u32) | (u32::from(kind.raw()) << 16),
            segment,
            offset,
            length,
            coord_and_flag: coord | if has_links { HAS_LINKS } else { 0 },
            clock,
        }
    }

    #[inline]
    pub(super) fn coord(&self) -> u32 {
        self.coord_and_flag & !HAS_LINKS
    }

    #[inline]
    pub(super) fn has_links(&self) -> bool {
        self.coord_and_flag & HAS_LINKS != 0
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

    pub(super) fn set_kind(&mut self, kind: EventKind) {
        self.wall_hi_kind = (self.wall_hi_kind & 0xffff) | (u32::from(kind.raw()) << 16);
    }

    pub(super) fn set_disk_pos(&mut self, segment: u32, offset: u32, length: u32) {
        self.segment = segment;
        self.offset = offset;
        self.length = length;
    }

    pub(super) fn disk_pos(&self) -> DiskPos {
        DiskPos {
            segment_id: u64::from(self.segment),
            offset: u64::from(self.offset),
            length: self.length,
        }
    }
}

const CHUNK_SHIFT: u32 = 18;
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

    /// Ask the CPU to start loading the record of `slot` (which exists).
    #[inline]
    pub(super) fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = std::ptr::from_ref(self.get(slot)).cast::<i8>();
            // Both ends: most records straddle two cache lines.
            for at in [0, std::mem::size_of::<Record>() - 1] {
                // SAFETY: a prefetch is only a hint to the cache: it reads
                // nothing architecturally and never faults (here the address
                // is inside a live record).
                #[allow(unused_unsafe)]
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at));
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    #[inline]
    pub(super) fn get(&self, slot: u32) -> &Record {
        &self.chunks[(slot >> CHUNK_SHIFT) as usize][slot as usize & (CHUNK - 1)]
    }

    #[inline]
    pub(super) fn get_mut(&mut self, slot: u32) -> &mut Record {
        &mut self.chunks[(slot >> CHUNK_SHIFT) as usize][slot as usize & (CHUNK - 1)]
    }

    pub(super) fn push(&mut self, rec: Record) {
        match self.chunks.last_mut() {
            // The first chunk grows normally, so a small store stays small;
            // later chunks are allocated whole and never move.
            Some(c) if c.len() < CHUNK => {
                if c.len() == c.capacity() {
                    // The first chunk grows by doubling; once large, into
                    // memory advised for huge pages before it is touched
                    // (reads of random records would otherwise miss the
                    // TLB on nearly every one).
                    let want = (c.capacity() * 2).clamp(64, CHUNK);
                    let mut grown = crate::store::huge_pages::vec_with_capacity(want);
                    grown.extend_from_slice(c);
                    *c = grown;
                }
                c.push(rec);
            }
            _ => {
                let mut c = if self.chunks.is_empty() {
                    Vec::with_capacity(64)
                } else {
                    big_chunk()
                };
                c.push(rec);
                self.chunks.push(c);
            }
        }
        self.len += 1;
    }

    /// Drop the records at or past `len`.
    pub(super) fn truncate(&mut self, len: u32) {
        if len >= self.len {
            return;
        }
        let chunks = (len as usize).div_ceil(CHUNK);
        self.chunks.truncate(chunks);
        if let Some(last) = self.chunks.last_mut() {
            let in_last = len as usize - (chunks - 1) * CHUNK;
            last.truncate(in_last);
        }
        self.len = len;
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

/// A whole chunk, its memory marked for transparent huge pages: touching
/// 11 MiB in 4 KiB pages costs thousands of page faults (each an expensive
/// trap on a virtual machine); in 2 MiB pages, a handful.
fn big_chunk() -> Vec<Record> {
    crate::store::huge_pages::vec_with_capacity(CHUNK)
}
