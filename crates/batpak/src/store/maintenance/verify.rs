//! `Store::verify`: the full integrity check (every frame's CRC, every
//! entity's hash chain, footers and checkpoint against the frames).
//!
//! Reads files only; never repairs or changes anything.

use crate::store::{Shared, StoreError};
use std::fmt;
use std::path::PathBuf;

/// What kind of damage a [`VerifyProblem`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VerifyProblemKind {
    /// A segment's header is damaged or names another segment.
    SegmentHeader,
    /// A frame's checksum does not match its bytes.
    FrameChecksum,
    /// A frame's framing (marker or length) is damaged.
    FrameDamaged,
    /// A frame checks but its record cannot be decoded.
    RecordUndecodable,
    /// An event's stored hash is not the hash of its contents.
    EventHash,
    /// An event's `prev_hash` does not link to its entity's previous event.
    ChainBroken,
    /// A segment footer disagrees with the frames it describes.
    Footer,
    /// The checkpoint disagrees with the frames it describes.
    Checkpoint,
    /// The removed-event record is damaged.
    RemovedRecord,
}

/// One problem found by [`Store::verify`](crate::store::Store::verify).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyProblem {
    /// The damaged file.
    pub file: PathBuf,
    /// Byte offset of the damage in `file`.
    pub offset: u64,
    /// What is wrong.
    pub kind: VerifyProblemKind,
    /// A human-readable description.
    pub detail: String,
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}: {:?}: {}",
            self.file.display(),
            self.offset,
            self.kind,
            self.detail
        )
    }
}

/// The result of [`Store::verify`](crate::store::Store::verify).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments_checked: usize,
    /// Event frames checked.
    pub events_checked: u64,
    /// Bytes of frames read.
    pub bytes_checked: u64,
    /// Every problem found, in file and offset order.
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    /// No problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems found.
    pub fn problems(&self) -> &[VerifyProblem] {
        &self.problems
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} segments, {} events, {} bytes checked: ",
            self.segments_checked, self.events_checked, self.bytes_checked
        )?;
        if self.is_clean() {
            return write!(f, "clean");
        }
        writeln!(f, "{} problems", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Check everything committed when the call starts.
pub(crate) fn verify(shared: &Shared) -> Result<VerifyReport, StoreError> {
    let _ = shared;
    Err(StoreError::Configuration(
        "verify: not implemented yet".into(),
    ))
}
