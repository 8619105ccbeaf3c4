//! The one walk over a segment's frames, and the one rule for batches.
//!
//! Every reader of whole segments (recovery, a read-only handle following
//! its owner, footer writing, compaction and `verify`) walks them with
//! [`FrameScan`], and recovery and `verify` assemble batches with
//! [`batch_step`], so they cannot disagree about what is a frame, what is
//! damage, where the frames end, or which batches are complete. What each
//! does with damage (skip and report it, refuse to write a footer, drop it,
//! list it as a problem) is its own policy, written where it acts.
//!
//! Owns no state beyond a position in the bytes it is given; reads nothing
//! but them.

use super::footer;
use super::frame::{after_damage, probe, AfterDamage, Probe};
use super::record::{decode_event, EventRecord};
use super::FormatError;

/// What a [`FrameScan`] found at a position.
// Items live for one step of a scan; boxing the record would allocate per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Scanned<'a> {
    /// An event frame at `at`, `len` bytes long (its checksum holds), and
    /// its record, or why the record does not decode.
    Event {
        at: usize,
        len: usize,
        record: Result<EventRecord<'a>, FormatError>,
    },
    /// A footer frame at `at`, `len` bytes long.
    Footer { at: usize, len: usize },
    /// Bytes from `at` to `resume` that are not a frame; a valid frame
    /// starts at `resume`.
    Damaged {
        at: usize,
        resume: usize,
        error: FormatError,
    },
    /// The frames end at `at`; nothing follows this item.
    End { at: usize, how: End },
}

/// How the frames of a scan end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    /// Zeros (or nothing) from the end on.
    Clean,
    /// Bytes that are not a frame, with no valid frame after them: a footer
    /// frame cut short (by a crash or a full disk while it was written).
    /// No event is lost.
    TornFooter,
    /// Bytes that are not a frame, with no valid frame after them.
    TornTail(FormatError),
    /// Bytes that are not a frame, not looked past: the scan was asked to
    /// stop at damage, as in a segment its owner may be writing right now
    /// (a frame half written is damage only until it is finished).
    Unsettled(FormatError),
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Clean => f.write_str("the end of the frames"),
            End::TornFooter => f.write_str("a footer cut short"),
            End::TornTail(e) => write!(f, "{e}; no valid frame follows"),
            End::Unsettled(e) => write!(f, "{e}"),
        }
    }
}

impl End {
    /// Whether the end is not clean (bytes that are not frames remain).
    pub(crate) fn is_torn(&self) -> bool {
        !matches!(self, End::Clean)
    }
}

/// The frames of a segment's bytes from a position on, in order: each
/// event or footer frame, each damaged region (after which the scan
/// resynchronises on the next valid frame), then the end.
pub(crate) struct FrameScan<'a> {
    bytes: &'a [u8],
    pos: usize,
    stop_at_damage: bool,
    done: bool,
}

impl<'a> FrameScan<'a> {
    /// Scan `bytes` from offset `from`.
    pub(crate) fn new(bytes: &'a [u8], from: usize) -> Self {
        Self {
            bytes,
            pos: from,
            stop_at_damage: false,
            done: false,
        }
    }

    /// End at the first damage ([`End::Unsettled`]) instead of looking past it.
    pub(crate) fn stopping_at_damage(mut self) -> Self {
        self.stop_at_damage = true;
        self
    }

    fn end(&mut self, how: End) -> Scanned<'a> {
        self.done = true;
        Scanned::End { at: self.pos, how }
    }
}

impl<'a> Iterator for FrameScan<'a> {
    type Item = Scanned<'a>;

    fn next(&mut self) -> Option<Scanned<'a>> {
        if self.done {
            return None;
        }
        let at = self.pos;
        Some(match probe(self.bytes, at) {
            Probe::End => self.end(End::Clean),
            Probe::Frame { body, len } => {
                self.pos += len;
                if footer::is_footer(body) {
                    Scanned::Footer { at, len }
                } else {
                    Scanned::Event {
                        at,
                        len,
                        record: decode_event(body),
                    }
                }
            }
            Probe::Damaged(error) if self.stop_at_damage => self.end(End::Unsettled(error)),
            Probe::Damaged(error) => match after_damage(self.bytes, at) {
                AfterDamage::Resume(resume) => {
                    self.pos = resume;
                    Scanned::Damaged { at, resume, error }
                }
                AfterDamage::TornFooter => self.end(End::TornFooter),
                AfterDamage::TornTail => self.end(End::TornTail(error)),
            },
        })
    }
}

/// An event's batch marks, as the batch rule reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Marks {
    /// Events in its batch (0: not part of a batch).
    pub(crate) size: u32,
    /// Its index in its batch.
    pub(crate) index: u32,
    pub(crate) global_seq: u64,
}

impl Marks {
    pub(crate) fn of(r: &EventRecord<'_>) -> Self {
        Self {
            size: r.batch_size,
            index: r.batch_index,
            global_seq: r.global_seq,
        }
    }
}

/// What to do with the event just read (see [`batch_step`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// It stands alone (a single event, or a batch of one): take it now.
    Now,
    /// Hold it: its batch is not complete yet.
    Hold,
    /// It completes its batch: take every held member, in order, then it.
    Complete,
    /// A batch member whose batch's start is not there: never taken.
    Orphan,
}

/// The batch rule: given the members held so far (their number and the
/// last one's marks) and the next event in log order, whether the held
/// members must be discarded first (their batch was interrupted: it never
/// completed), and what to do with the event.
///
/// A batch is complete when its members follow each other in log order,
/// from index 0 to `size - 1`, with increasing global sequences
/// (consecutive unless a compaction removed members and renumbered the
/// survivors' marks). Anything else interrupts it. At the end of the log,
/// members still held never completed either.
pub(crate) fn batch_step(held: Option<(usize, Marks)>, m: Marks) -> (bool, Take) {
    let held_count = held.map_or(0, |(n, _)| n);
    if m.size == 0 {
        return (held_count > 0, Take::Now);
    }
    let continues =
        held.is_some_and(|(_, last)| last.size == m.size && last.global_seq < m.global_seq);
    let mut discard = false;
    if m.index as usize != held_count || (held_count > 0 && !continues) {
        discard = held_count > 0;
        if m.index != 0 {
            return (discard, Take::Orphan);
        }
    }
    let held_after = if discard { 0 } else { held_count };
    let complete = m.index + 1 == m.size;
    let take = match (complete, held_after) {
        (true, 0) => Take::Now,
        (true, _) => Take::Complete,
        (false, _) => Take::Hold,
    };
    (discard, take)
}

#[cfg(test)]
mod tests {
    use super::super::frame::{seal_frame, FRAME_HEADER_LEN};
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; FRAME_HEADER_LEN + body.len()];
        f[FRAME_HEADER_LEN..].copy_from_slice(body);
        seal_frame(&mut f);
        f
    }

    fn kinds(scan: FrameScan<'_>) -> Vec<String> {
        scan.map(|s| match s {
            Scanned::Event { at, record, .. } => format!("event@{at}:{}", record.is_ok()),
            Scanned::Footer { at, .. } => format!("footer@{at}"),
            Scanned::Damaged { at, resume, .. } => format!("damaged@{at}..{resume}"),
            Scanned::End { at, how } => format!("end@{at}:{how:?}").chars().take(20).collect(),
        })
        .collect()
    }

    #[test]
    fn frames_damage_and_ends_are_classified_once() {
        let a = frame(b"\x01not a record");
        let footer = frame(&[super::super::RECORD_FOOTER, 1, 0, 0]);
        let mut bytes = a.clone();
        bytes.extend_from_slice(&[0xEE; 7]);
        bytes.extend_from_slice(&a);
        bytes.extend_from_slice(&footer);
        bytes.extend_from_slice(&[0; 32]);
        let n = a.len();
        assert_eq!(
            kinds(FrameScan::new(&bytes, 0)),
            vec![
                format!("event@0:false"),
                format!("damaged@{n}..{}", n + 7),
                format!("event@{}:false", n + 7),
                format!("footer@{}", 2 * n + 7),
                format!("end@{}:Clean", 2 * n + 7 + footer.len()),
            ]
        );
        // Stopping at damage: the damage ends the scan, unsettled.
        let stopped = kinds(FrameScan::new(&bytes, 0).stopping_at_damage());
        assert_eq!(stopped.len(), 2);
        assert!(stopped[1].starts_with(&format!("end@{n}:Unsettled")));
        // A frame cut short at the end: a torn tail; a footer cut short: a torn footer.
        let cut = &bytes[..n + 7 + n - 3];
        let last = kinds(FrameScan::new(cut, n + 7)).pop().unwrap();
        assert!(
            last.starts_with(&format!("end@{}:TornTail", n + 7)),
            "{last}"
        );
        let torn_footer = &footer[..footer.len() - 2];
        assert_eq!(
            kinds(FrameScan::new(torn_footer, 0)),
            vec!["end@0:TornFooter".to_string()]
        );
        assert_eq!(FrameScan::new(&bytes, bytes.len() + 9).count(), 1);
    }

    fn m(size: u32, index: u32, global_seq: u64) -> Marks {
        Marks {
            size,
            index,
            global_seq,
        }
    }

    #[test]
    fn batches_complete_only_whole_and_in_order() {
        // A single event, a batch of one.
        assert_eq!(batch_step(None, m(0, 0, 1)), (false, Take::Now));
        assert_eq!(batch_step(None, m(1, 0, 1)), (false, Take::Now));
        // A batch of three, member by member.
        assert_eq!(batch_step(None, m(3, 0, 5)), (false, Take::Hold));
        assert_eq!(
            batch_step(Some((1, m(3, 0, 5))), m(3, 1, 6)),
            (false, Take::Hold)
        );
        assert_eq!(
            batch_step(Some((2, m(3, 1, 6))), m(3, 2, 7)),
            (false, Take::Complete)
        );
        // Gaps in sequences (a compaction removed members) still continue.
        assert_eq!(
            batch_step(Some((1, m(2, 0, 5))), m(2, 1, 9)),
            (false, Take::Complete)
        );
        // Interrupted by a single event, or by the start of another batch.
        assert_eq!(
            batch_step(Some((1, m(3, 0, 5))), m(0, 0, 6)),
            (true, Take::Now)
        );
        assert_eq!(
            batch_step(Some((1, m(3, 0, 5))), m(2, 0, 6)),
            (true, Take::Hold)
        );
        // A member out of place: its batch's start is missing.
        assert_eq!(batch_step(None, m(3, 1, 6)), (false, Take::Orphan));
        assert_eq!(
            batch_step(Some((1, m(3, 0, 5))), m(3, 2, 6)),
            (true, Take::Orphan)
        );
        // Same index but sequences going back, or another size: interrupted.
        assert_eq!(
            batch_step(Some((1, m(3, 0, 5))), m(3, 1, 4)),
            (true, Take::Orphan)
        );
        assert_eq!(
            batch_step(Some((1, m(3, 0, 5))), m(4, 1, 6)),
            (true, Take::Orphan)
        );
    }
}
