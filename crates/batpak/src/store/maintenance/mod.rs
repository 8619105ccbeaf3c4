//! Housekeeping beside the write path: footers for sealed segments (written
//! in the background after a rotation), the checkpoint written by `close()`,
//! compaction, snapshots and `verify`.
//!
//! Writes: footers (after a sealed segment's frames) and the checkpoint;
//! compaction's new segments, next removed-event record and intent (then
//! renames and deletions, through `log::rewrite`); snapshot copies beside
//! their destination. It never changes a frame in place, and never touches
//! the active segment.

mod checkpoint;
mod compact;
mod seal;
mod snapshot;
pub(crate) mod verify;

pub(crate) use checkpoint::write_checkpoint;
pub(crate) use compact::compact;
pub use compact::{CompactionConfig, CompactionResult, CompactionStrategy, RetentionPredicate};
pub(crate) use seal::Sealer;
pub(crate) use snapshot::snapshot;
pub use verify::{VerifyProblem, VerifyProblemKind, VerifyReport};
