//! Where a slot's frame probably lies: the disk position of every
//! [`EVERY`]th slot, and between two of them a straight line.
//!
//! Owns only these guesses. A lookup by id learns the slot from the id
//! table and then needs two more cache misses in a row: the record (for the
//! frame's position) and the frame. With a guess the frame can start loading
//! while the record does. A guess is only ever a prefetch address: nothing
//! reads through it, so a wrong or stale guess (frames of very different
//! sizes, a compaction that moved or removed the sampled slot) costs one
//! wasted prefetch and never a wrong result. Half a byte per event.

/// One position is kept for every this many slots.
pub(super) const EVERY: u32 = 16;

/// A likely frame: segment, offset and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameGuess {
    pub(crate) segment: u32,
    pub(crate) offset: u32,
    pub(crate) length: u32,
}

/// The sampled positions, `(segment, offset)` of slots 0, EVERY, 2 * EVERY, ...
#[derive(Default)]
pub(super) struct FrameHints {
    samples: Vec<(u32, u32)>,
}

impl FrameHints {
    /// Record where a new (or moved) record's frame lies.
    #[inline]
    pub(super) fn note(&mut self, slot: u32, segment: u32, offset: u32) {
        if !slot.is_multiple_of(EVERY) {
            return;
        }
        let k = (slot / EVERY) as usize;
        match k.cmp(&self.samples.len()) {
            std::cmp::Ordering::Less => self.samples[k] = (segment, offset),
            std::cmp::Ordering::Equal => self.samples.push((segment, offset)),
            // Slots arrive in order; a gap would be a caller bug, and a
            // missing sample only means no guess.
            std::cmp::Ordering::Greater => {}
        }
    }

    /// Forget the samples of slots `len..` (a write rolled back).
    pub(super) fn truncate(&mut self, len: u32) {
        self.samples.truncate(len.div_ceil(EVERY) as usize);
    }

    /// Where the frame of `slot` probably lies, when the samples around it
    /// lie in one segment in file order.
    #[inline]
    pub(super) fn guess(&self, slot: u32) -> Option<FrameGuess> {
        let k = (slot / EVERY) as usize;
        let at = slot % EVERY;
        let &(segment, offset) = self.samples.get(k)?;
        // The slope of this block, or of the block before it for the
        // newest block (which has no sample after it yet).
        let (from, to) = match self.samples.get(k + 1) {
            Some(&next) => ((segment, offset), next),
            None => (*self.samples.get(k.checked_sub(1)?)?, (segment, offset)),
        };
        if from.0 != segment || to.0 != segment || to.1 <= from.1 {
            return None;
        }
        let length = (to.1 - from.1) / EVERY;
        Some(FrameGuess {
            segment,
            offset: offset.checked_add(at.checked_mul(length)?)?,
            length,
        })
    }

    /// Memory held, in bytes.
    pub(super) fn bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<(u32, u32)>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of 100 bytes from offset 64 of segment 1: `n` slots noted.
    fn evenly(n: u32) -> FrameHints {
        let mut h = FrameHints::default();
        for slot in 0..n {
            h.note(slot, 1, 64 + slot * 100);
        }
        h
    }

    #[test]
    fn frames_of_one_size_are_guessed_exactly() {
        let h = evenly(100);
        for slot in 0..100 {
            assert_eq!(
                h.guess(slot),
                Some(FrameGuess {
                    segment: 1,
                    offset: 64 + slot * 100,
                    length: 100,
                }),
                "slot {slot}"
            );
        }
        assert_eq!(h.samples.len(), 7, "one sample per {EVERY} slots");
    }

    #[test]
    fn no_guess_without_two_samples_in_one_segment() {
        // One sample only: no slope.
        assert_eq!(evenly(10).guess(3), None);
        assert_eq!(FrameHints::default().guess(0), None);
        // A block whose ends lie in different segments.
        let mut h = evenly(EVERY);
        h.note(EVERY, 2, 64);
        h.note(2 * EVERY, 2, 64 + 1600);
        assert_eq!(h.guess(3), None, "block 0 ends in segment 2");
        assert_eq!(h.guess(EVERY + 1).map(|g| g.segment), Some(2));
        // Samples out of file order (a compaction moved one back).
        let mut h = evenly(3 * EVERY);
        h.note(EVERY, 1, 10);
        let slope = (64 + 2 * EVERY * 100 - 10) / EVERY;
        assert_eq!(h.guess(EVERY + 2).map(|g| g.offset), Some(10 + 2 * slope));
        h.note(2 * EVERY, 1, 5);
        assert_eq!(h.guess(EVERY + 2), None);
    }

    #[test]
    fn a_moved_sample_is_updated_and_a_rollback_forgets_samples() {
        let mut h = evenly(4 * EVERY);
        // Compaction moved slots 16.. to segment 3 from offset 64.
        for slot in EVERY..4 * EVERY {
            h.note(slot, 3, 64 + (slot - EVERY) * 90);
        }
        assert_eq!(
            h.guess(EVERY + 5),
            Some(FrameGuess {
                segment: 3,
                offset: 64 + 5 * 90,
                length: 90,
            })
        );
        h.truncate(EVERY + 1);
        assert_eq!(h.samples.len(), 2);
        h.truncate(EVERY);
        assert_eq!(h.samples.len(), 1);
        // Slots noted again after the rollback land where they belong.
        h.note(EVERY, 4, 64);
        assert_eq!(h.samples, vec![(1, 64), (4, 64)]);
    }

    #[test]
    fn guesses_near_the_end_of_the_offset_range_do_not_overflow() {
        let mut h = FrameHints::default();
        h.note(0, 1, u32::MAX - 2 * EVERY);
        h.note(EVERY, 1, u32::MAX - EVERY);
        h.note(2 * EVERY, 1, u32::MAX);
        assert_eq!(
            h.guess(2 * EVERY),
            Some(FrameGuess {
                segment: 1,
                offset: u32::MAX,
                length: 1,
            })
        );
        assert_eq!(h.guess(2 * EVERY + 3), None, "past u32::MAX");
    }
}
