use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Position of an event in its entity's history: a hybrid logical clock
/// (`wall_ms`, `counter`) plus a (depth, lane, sequence) place in a DAG.
/// The store sets `sequence` to the entity clock and leaves depth and lane at 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[repr(C)]
pub struct DagPosition {
    /// Wall-clock milliseconds (never decreasing within an entity).
    pub wall_ms: u64,
    /// Disambiguates events of one entity within the same millisecond.
    pub counter: u16,
    /// Depth in the DAG (0 for the main line).
    pub depth: u32,
    /// Lane at that depth (0 for the main line).
    pub lane: u32,
    /// The entity clock: 0-based position in the entity's stream.
    pub sequence: u32,
}

impl DagPosition {
    /// A position without wall-clock time.
    #[must_use]
    pub const fn new(depth: u32, lane: u32, sequence: u32) -> Self {
        Self::with_hlc(0, 0, depth, lane, sequence)
    }

    /// A position with every field given.
    #[must_use]
    pub const fn with_hlc(
        wall_ms: u64,
        counter: u16,
        depth: u32,
        lane: u32,
        sequence: u32,
    ) -> Self {
        Self {
            wall_ms,
            counter,
            depth,
            lane,
            sequence,
        }
    }

    /// The origin: everything zero.
    #[must_use]
    pub const fn root() -> Self {
        Self::new(0, 0, 0)
    }

    /// Main-line position `sequence`.
    #[must_use]
    pub const fn child(sequence: u32) -> Self {
        Self::new(0, 0, sequence)
    }

    /// Main-line position `sequence` at the given time.
    #[must_use]
    pub const fn child_at(sequence: u32, wall_ms: u64, counter: u16) -> Self {
        Self::with_hlc(wall_ms, counter, 0, 0, sequence)
    }

    /// The first position of a new lane one level below `parent_depth`.
    #[must_use]
    pub const fn fork(parent_depth: u32, new_lane: u32) -> Self {
        Self::new(parent_depth.saturating_add(1), new_lane, 0)
    }

    /// Depth, lane and sequence all zero (time is ignored).
    #[must_use]
    pub const fn is_root(&self) -> bool {
        self.depth == 0 && self.lane == 0 && self.sequence == 0
    }

    /// Same lane and depth, strictly smaller sequence.
    #[must_use]
    pub const fn is_ancestor_of(&self, other: &DagPosition) -> bool {
        self.depth == other.depth && self.lane == other.lane && self.sequence < other.sequence
    }
}

impl PartialOrd for DagPosition {
    /// Positions compare only within one lane and depth; there they order by
    /// sequence, then by time, so the order agrees with `==`.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        if self.depth != other.depth || self.lane != other.lane {
            return None;
        }
        Some(
            self.sequence
                .cmp(&other.sequence)
                .then(self.wall_ms.cmp(&other.wall_ms))
                .then(self.counter.cmp(&other.counter)),
        )
    }
}

impl fmt::Display for DagPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}@{}.{}",
            self.depth, self.lane, self.sequence, self.wall_ms, self.counter
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_and_predicates() {
        assert!(DagPosition::root().is_root());
        assert!(DagPosition::with_hlc(99, 1, 0, 0, 0).is_root());
        assert!(!DagPosition::child(1).is_root());
        assert!(DagPosition::child(1).is_ancestor_of(&DagPosition::child(2)));
        assert!(!DagPosition::child(2).is_ancestor_of(&DagPosition::child(2)));
        let f = DagPosition::fork(3, 7);
        assert_eq!((f.depth, f.lane, f.sequence), (4, 7, 0));
        assert!(!DagPosition::child(0).is_ancestor_of(&f));
        assert_eq!(DagPosition::child_at(5, 10, 2).to_string(), "0:0:5@10.2");
    }

    #[test]
    fn partial_ord_is_consistent_with_eq() {
        let a = DagPosition::child_at(1, 10, 0);
        let b = DagPosition::child_at(1, 11, 0);
        assert_ne!(a, b);
        assert_ne!(a.partial_cmp(&b), Some(Ordering::Equal));
        assert_eq!(a.partial_cmp(&a), Some(Ordering::Equal));
        assert!(DagPosition::child(1) < DagPosition::child(2));
        assert_eq!(
            DagPosition::child(1).partial_cmp(&DagPosition::fork(0, 1)),
            None
        );
    }
}
