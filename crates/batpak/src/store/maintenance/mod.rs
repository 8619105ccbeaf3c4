//! Housekeeping that keeps the store fast to open: footers for sealed
//! segments (written in the background after a rotation) and the checkpoint
//! written by `close()`.
//!
//! This module reads segments and the index and writes only footers (after a
//! sealed segment's frames) and the checkpoint file; it never changes a frame.

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
