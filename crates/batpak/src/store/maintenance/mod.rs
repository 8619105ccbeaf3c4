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

use crate::store::index::Index;
use crate::store::log::Log;
use crate::store::recovery::Follow;
use crate::store::write::durability::Durability;
use crate::store::write::{Syncer, Writer};
use crate::store::StoreConfig;
use parking_lot::{Mutex, RwLock};
use std::sync::atomic::AtomicU64;

pub(crate) use checkpoint::write_checkpoint;
pub(crate) use compact::compact;
pub use compact::{CompactionConfig, CompactionResult, CompactionStrategy, RetentionPredicate};
pub(crate) use seal::Sealer;
pub(crate) use snapshot::snapshot;
pub use verify::{VerifyProblem, VerifyProblemKind, VerifyReport};

/// The maintenance layer's handle: what compaction, snapshots, `verify` and
/// the checkpoint use, and nothing else of the store (not the subscribers,
/// the projection caches, the schema, the flusher or the writer's restart
/// state). The writer lock is here to note where the active segment ends
/// and to hold appends off while the index swaps; the durability state to
/// refuse a poisoned store and to poison it when a swap fails half-way;
/// `syncer` to make what was written durable before a snapshot copies it.
pub(crate) struct Maintainer<'s> {
    pub(crate) log: &'s Log,
    pub(crate) index: &'s RwLock<Index>,
    /// `None` in a read-only store.
    pub(crate) writer: Option<&'s Mutex<Writer>>,
    pub(crate) durability: &'s Durability,
    /// At most one of compaction, snapshot, verify and footer writing at a time.
    pub(crate) lock: &'s Mutex<()>,
    /// Read-only stores: where `refresh` continues reading.
    pub(crate) follow: &'s Mutex<Option<Follow>>,
    /// The history epoch (bumped when compaction rewrites history).
    pub(crate) epoch: &'s AtomicU64,
    /// The lock-free copy of `Index::compactions` (`Shared::compactions`).
    pub(crate) compactions: &'s AtomicU64,
    pub(crate) config: &'s StoreConfig,
    pub(crate) syncer: Syncer<'s>,
}

impl Maintainer<'_> {
    pub(crate) fn history_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }
}
