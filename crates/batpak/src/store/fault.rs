//! Faults for tests: the points where a test can act ([`InjectionPoint`]),
//! what it can do there ([`FaultAction`]), who decides ([`FaultInjector`]),
//! and, with feature `dangerous-test-hooks`, the test implementation of the
//! I/O seam (`log::io`) that acts on those decisions and models what a
//! disk keeps through a crash or a power cut.
//!
//! Production code never calls an injector: it calls the seam
//! (`log::Io`), which in a build without the feature is
//! the operating system alone. Without the feature this module defines only
//! the types `StoreConfig` names, and no type implements [`FaultInjector`],
//! so `StoreConfig::fault_injector` can only be `None` and a release build
//! carries no injection code (ADR 0022).

/// A place in the store's work where a test can act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InjectionPoint {
    /// A batch passed validation; nothing is written yet.
    BatchValidated,
    /// Item `n` of a batch (or a single append, item 0) was copied into the log.
    ItemWritten(usize),
    /// Every frame of an append is in the log; the index is not updated yet.
    FramesWritten,
    /// The index holds the new events; they are not visible or synced yet.
    Indexed,
    /// A group-commit leader is about to write the buffered frames.
    BeforeFlush,
    /// The buffered frames are written; the fsync has not run.
    BeforeSync,
    /// The fsync returned successfully (return `Fail` to simulate `EIO`).
    Sync,
    /// A segment is full and about to be synced and sealed.
    BeforeRotate,
    /// The sealer wrote a sealed segment's footer (the next segment already
    /// exists: footers are written after rotation, in the background).
    FooterWritten,
    /// A new segment file was created and synced; the directory is not synced yet.
    SegmentCreated,
    /// The checkpoint's temporary file is written and synced.
    CheckpointWritten,
    /// The checkpoint was renamed into place; the directory is not synced yet.
    CheckpointRenamed,
    /// Compaction: a new segment is written and synced.
    CompactionSegmentWritten,
    /// Compaction: the next removed-event record is written; not committed yet.
    CompactionPrepared,
    /// Compaction: right after the commit point (the intent is durable).
    CompactionCommitted,
    /// Compaction: before each step of installing the new files.
    CompactionInstalling,
    /// Snapshot: the segment files are copied; the rest is not.
    SnapshotCopied,
    /// A writable open started one of its threads (in this order: the
    /// flusher, in relaxed mode only; the grower; the sealer). `Fail` makes
    /// the open fail right there, as a later start-up step failing would.
    StoreThreadStarted,
    /// A reader picked its events and pinned their frames under the index
    /// lock, released the lock, and is about to read the frames. Only
    /// `Panic` and `Crash` act here (a read has no error to return); an
    /// injector may also block, to hold a reader at this point.
    ReadingFrames,
    /// An operation on a segment file or the data directory, whatever it
    /// is for, just before it happens: every one passes here (besides the
    /// named point, if it has one).
    Io(IoOp),
}

/// The operations of the I/O seam.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IoOp {
    /// A segment file is created.
    Create,
    /// Bytes are written to a file (`Tear` writes half of them).
    Write,
    /// The writer copied frames into a segment's memory map (`Tear` zeroes
    /// the second half of them).
    WriteMapped,
    /// A segment file grows (blocks reserved, or zeros written).
    Allocate,
    /// A file is synced.
    Sync,
    /// The data directory is synced.
    SyncDir,
    /// A file is renamed.
    Rename,
    /// A file is deleted.
    Remove,
}

/// What to do at an injection point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultAction {
    /// Carry on normally.
    Continue,
    /// Return `StoreError::FaultInjected` from the operation.
    Fail,
    /// Panic on the calling thread.
    Panic,
    /// Abort the process immediately (no destructors, no flushing): a crash.
    Crash,
    /// The store's process dies here, as far as its files are concerned:
    /// this operation does not happen, and it and every later operation of
    /// the store fail without touching the files (whatever the store then
    /// does, its files keep what they held at this moment, as a killed
    /// process leaves them to the page cache). What was not synced yet is
    /// what `Store::simulate_power_loss` then discards.
    Halt,
    /// Like `Halt`, but a write at this point happens in part first: its
    /// first half reaches the file (a torn write). Elsewhere, as `Halt`.
    Tear,
}

/// Name kept from the original crate's API.
pub type CountdownAction = FaultAction;

/// Decides what happens at each injection point, and what the test disk is.
///
/// Without feature `dangerous-test-hooks` no type implements this trait
/// (nor can one: the module is private), so a store built that way never
/// consults an injector.
pub trait FaultInjector: Send + Sync {
    /// Called every time the store passes `point`.
    fn on(&self, point: InjectionPoint) -> FaultAction;

    /// Whether the test disk behaves as a copy-on-write filesystem, where
    /// relaxed mode writes frames with `pwrite` instead of through the
    /// memory map (`None`: as the real filesystem is).
    fn copy_on_write(&self) -> Option<bool> {
        None
    }
}

#[cfg(feature = "dangerous-test-hooks")]
mod testing;
#[cfg(feature = "dangerous-test-hooks")]
pub(crate) use testing::TestIo;
#[cfg(feature = "dangerous-test-hooks")]
pub use testing::{CopyOnWriteDisk, CountdownInjector, NoFaults, PowerLoss, ProbabilisticInjector};
