use crate::coordinate::Coordinate;
use crate::event::{EventKind, HashChain};

/// Where a frame lives: segment, byte offset of the frame start, frame length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DiskPos {
    /// Segment id.
    pub segment_id: u64,
    /// Offset of the frame's first byte in the segment file.
    pub offset: u64,
    /// Length of the whole frame in bytes.
    pub length: u32,
}

/// An event's index entry: everything but the payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// Event id.
    pub event_id: u128,
    /// Correlation id (the event's own id for a root).
    pub correlation_id: u128,
    /// Causation id.
    pub causation_id: Option<u128>,
    /// Coordinate.
    pub coord: Coordinate,
    /// Kind.
    pub kind: EventKind,
    /// Wall-clock milliseconds of the event.
    pub wall_ms: u64,
    /// Entity clock.
    pub clock: u32,
    /// Hash-chain link.
    pub hash_chain: HashChain,
    /// Location of the frame.
    pub disk_pos: DiskPos,
    /// Store-wide position.
    pub global_sequence: u64,
}

impl IndexEntry {
    /// The correlation id differs from the event id (the event joined someone else's tree).
    #[must_use]
    pub fn is_correlated(&self) -> bool {
        self.event_id != self.correlation_id
    }

    /// This event's causation is `event_id`.
    #[must_use]
    pub fn is_caused_by(&self, event_id: u128) -> bool {
        self.causation_id == Some(event_id)
    }

    /// No causation.
    #[must_use]
    pub fn is_root_cause(&self) -> bool {
        self.causation_id.is_none()
    }
}

/// Sort key of a stream: wall-clock time, then clock, then id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockKey {
    /// Wall-clock milliseconds.
    pub wall_ms: u64,
    /// Entity clock.
    pub clock: u32,
    /// Event id.
    pub uuid: u128,
}
