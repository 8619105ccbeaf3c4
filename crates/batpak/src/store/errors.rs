//! Every error the store returns: [`StoreError`], [`BatchStage`] and
//! [`IoContext`].
//!
//! Each variant's `Display` describes its own layer only; the cause, if
//! any, is its `source()`. So a chain printer (anyhow's `{:#}`, or a loop
//! over `source()`) prints every cause once: "batch failed at item 2
//! during Writing: IO error: write segment /data/000003.seg: No space
//! left on device (os error 28)".

use crate::coordinate::CoordinateError;
use crate::event::EventKind;
use std::path::{Path, PathBuf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which step of a batch append failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchStage {
    /// Limits, CAS, idempotency or causation references were checked.
    Validation,
    /// An item was encoded.
    Encoding,
    /// The batch was written to the log.
    Writing,
    /// The batch was made durable.
    Syncing,
    /// The batch was added to the index.
    Indexing,
}

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// An operating-system I/O error. Raised by the store's own file
    /// operations, it carries an [`IoContext`] (the operation and the
    /// path; see [`StoreError::io_context`]) inside the `std::io::Error`,
    /// whose `kind()` is the original one.
    #[error("IO error")]
    Io(#[from] std::io::Error),
    /// An invalid coordinate.
    #[error("coordinate error")]
    Coordinate(#[from] CoordinateError),
    /// A payload or stored value could not be (de)serialized.
    #[error("serialization error")]
    Serialization(#[source] BoxError),
    /// A frame's checksum did not match when it was read.
    #[error("CRC mismatch in segment {segment_id} at offset {offset}")]
    CrcMismatch {
        /// Segment id.
        segment_id: u64,
        /// Offset of the frame.
        offset: u64,
    },
    /// A segment (or record in it) is damaged or of an unknown format.
    #[error("corrupt segment {segment_id}: {detail}")]
    CorruptSegment {
        /// Segment id.
        segment_id: u64,
        /// What is wrong.
        detail: String,
    },
    /// No visible event has this id.
    #[error("event {0:032x} not found")]
    NotFound(u128),
    /// `with_cas(expected)` but the entity's newest event has another clock.
    #[error("CAS failed for {entity}: expected seq {expected}, got {actual}")]
    SequenceMismatch {
        /// Entity.
        entity: String,
        /// The clock the caller expected.
        expected: u32,
        /// The entity's newest clock.
        actual: u32,
    },
    /// `with_cas(n)` on an entity with no events.
    #[error("CAS failed for {entity}: expected seq {expected}, but the stream is empty")]
    StreamIsEmpty {
        /// Entity.
        entity: String,
        /// The clock the caller expected.
        expected: u32,
    },
    /// `with_cas_empty()` on an entity that has events.
    #[error("CAS failed for {entity}: expected an empty stream, newest seq is {actual}")]
    StreamNotEmpty {
        /// Entity.
        entity: String,
        /// The entity's newest clock.
        actual: u32,
    },
    /// The writer panicked while handling this call. The call had no effect
    /// (what it wrote was taken back) and the writer was restarted, within
    /// the store's `RestartPolicy`; other calls were not affected.
    #[error("the writer panicked during this call ({0}); the call had no effect and the writer restarted")]
    WriterPanicked(String),
    /// The writer stopped after a panic beyond its restart budget.
    #[error("writer thread crashed")]
    WriterCrashed,
    /// A projection cache backend failed.
    #[error("cache error")]
    CacheFailed(#[source] BoxError),
    /// A configuration value is out of range, or a call exceeds a
    /// configured limit (a payload over `single_append_max_bytes`, a batch
    /// over `batch.max_size` or `batch.max_bytes`), as in the original crate.
    #[error("invalid config: {0}")]
    Configuration(String),
    /// Kept for compatibility; batpak never requires idempotency keys.
    #[error("group commit (batch > 1) requires an idempotency key on every append")]
    IdempotencyRequired,
    /// A batch append failed; nothing of it was written.
    #[error("batch failed at item {item_index} during {stage:?}")]
    BatchFailed {
        /// Index of the item that failed.
        item_index: usize,
        /// Step that failed.
        stage: BatchStage,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// The idempotency key is already the id of an event at another coordinate or of another kind.
    #[error("idempotency key {key:032x} was already used for a different event")]
    IdempotencyConflict {
        /// The key.
        key: u128,
    },
    /// Category 0 kinds are reserved for the store.
    #[error("event kind {0} is reserved for the store")]
    ReservedKind(EventKind),
    /// Another store (in this or another process) holds the directory.
    #[error("data directory {} is locked by another store", .0.display())]
    Locked(PathBuf),
    /// The store was opened read-only.
    #[error("store is open read-only")]
    ReadOnly,
    /// The writer stopped after an I/O failure; reopen the store to recover.
    #[error("writer stopped after an I/O failure ({0}); reopen the store to recover")]
    Poisoned(String),
    /// The entity already has `u32::MAX + 1` events.
    #[error("entity {entity} has reached the maximum clock")]
    ClockOverflow {
        /// Entity.
        entity: String,
    },
    /// A store file other than a segment (removed-event record, checkpoint
    /// metadata) is missing or damaged; the store refuses to guess.
    #[error("{}: {detail}", path.display())]
    RecordDamaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A batch is malformed: a causation reference to a later item, a
    /// repeated idempotency key, or keys of which only some were used before.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// An internal invariant of the store failed: a defect in batpak, not
    /// bad input or damaged files. The operation had no effect where that
    /// can be known; the message says what did not hold.
    #[error("internal error (a defect in batpak): {0}")]
    Internal(String),
    /// The index is full (2^31 events in one open store).
    #[error("index capacity exhausted: {0}")]
    CapacityExhausted(String),
    /// A test fault fired (only with the `dangerous-test-hooks` feature).
    #[error("fault injected: {0}")]
    FaultInjected(String),
    /// A database backend could not be reached, lost the connection, or
    /// refused the work for now (shutting down, out of resources, a
    /// serialization failure or deadlock that kept recurring). Retryable
    /// ([`StoreError::is_retryable`]). For a write the outcome is unknown:
    /// it may have committed just before the connection was lost, so retry
    /// writes with an idempotency key, which answers with the original
    /// receipt if the first attempt did commit.
    #[error("backend unavailable")]
    Unavailable(#[source] BoxError),
    /// A database backend failed in a way a retry will not fix (a refused
    /// permission, a statement it rejected, stored data that does not
    /// decode).
    #[error("backend failed")]
    Backend(#[source] BoxError),
    /// An imported event does not continue its entity's chain where the
    /// store has it: another clock, another previous hash, an earlier time,
    /// or a hash that its own fields do not produce.
    #[error("imported event of {entity} at clock {clock} does not continue its chain: {detail}")]
    ChainMismatch {
        /// Entity.
        entity: String,
        /// The imported event's clock.
        clock: u32,
        /// What does not match.
        detail: String,
    },
    /// The backend's schema was written by a newer version of batpak than
    /// this one; this code refuses to read or write it.
    #[error(
        "schema version {found} is newer than this batpak supports ({supported}); upgrade batpak"
    )]
    SchemaTooNew {
        /// The schema version found.
        found: u32,
        /// The newest version this code knows.
        supported: u32,
    },
    /// A typed read, typed append or schema registration was refused
    /// (kind or shape mismatch, a payload version newer than the code, a
    /// missing upcaster, two types claiming one kind).
    #[error(transparent)]
    Typed(#[from] crate::event::TypedError),
}

/// What the store was doing, and on which file, when an I/O error
/// occurred: the payload of the `std::io::Error` in a [`StoreError::Io`]
/// raised by the store's own file operations. Its `source()` is the
/// operating system's error.
#[derive(Debug)]
pub struct IoContext {
    operation: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

impl IoContext {
    /// What was being done ("open segment", "sync segment", ...).
    #[must_use]
    pub fn operation(&self) -> &'static str {
        self.operation
    }
    /// The file or directory it was done to.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The operating system's error.
    #[must_use]
    pub fn io_error(&self) -> &std::io::Error {
        &self.source
    }
}

impl std::fmt::Display for IoContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.operation, self.path.display())
    }
}

impl std::error::Error for IoContext {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

struct Chain<'a>(&'a StoreError);

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::error::Error;
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

/// Attach the operation and path to an I/O result (see [`IoContext`]).
pub(crate) trait IoAt<T> {
    fn at(self, operation: &'static str, path: &Path) -> Result<T, StoreError>;
}

impl<T> IoAt<T> for std::io::Result<T> {
    fn at(self, operation: &'static str, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::io(operation, path, e))
    }
}

impl StoreError {
    /// An [`StoreError::Io`] that says what was done to which file; its
    /// `kind()` is `source`'s.
    #[must_use]
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let kind = source.kind();
        StoreError::Io(std::io::Error::new(
            kind,
            IoContext {
                operation,
                path: path.into(),
                source,
            },
        ))
    }

    /// This error and its causes, each once, joined by ": " (what
    /// anyhow's `{:#}` prints), for logs and messages that keep one string.
    #[must_use]
    pub fn display_chain(&self) -> impl std::fmt::Display + '_ {
        Chain(self)
    }

    /// The operation and path of an I/O error (also inside `BatchFailed`),
    /// when the store recorded them.
    #[must_use]
    pub fn io_context(&self) -> Option<&IoContext> {
        match self {
            StoreError::Io(e) => e.get_ref()?.downcast_ref::<IoContext>(),
            StoreError::BatchFailed { source, .. } => source.io_context(),
            _ => None,
        }
    }

    /// True when repeating the same call unchanged may succeed:
    ///
    /// - `Unavailable`: a database backend could not be reached or refused
    ///   the work for now (retry writes with an idempotency key: the first
    ///   attempt may have committed);
    /// - `WriterPanicked`: the writer panicked during this call, took it
    ///   back and restarted;
    /// - `BatchFailed`: when its cause is.
    ///
    /// Everything else is not: a CAS failure (`SequenceMismatch`,
    /// `StreamIsEmpty`, `StreamNotEmpty`) needs a re-read and a decision;
    /// invalid input (`Coordinate`, `Serialization`, `ReservedKind`,
    /// `InvalidBatch`, `IdempotencyConflict`, `ChainMismatch`,
    /// `Configuration`, which also covers payloads and batches over their
    /// limits) fails the same way again;
    /// `Poisoned` and `WriterCrashed` stop the writer until the store is
    /// reopened; `Io` needs its cause fixed first (a failed append was
    /// taken back, so after freeing a full disk the same call may then
    /// succeed; see [`StoreError::io_context`]); damage (`CrcMismatch`,
    /// `CorruptSegment`, `RecordDamaged`) stays; `Locked`, `ReadOnly`,
    /// `SchemaTooNew` and `CapacityExhausted` need another store or
    /// another build.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::WriterPanicked(_) => true,
            StoreError::BatchFailed { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn serialization(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Serialization(Box::new(e))
    }

    /// An internal invariant failed (see [`StoreError::Internal`]).
    pub(crate) fn internal(detail: impl ToString) -> Self {
        StoreError::Internal(detail.to_string())
    }

    pub(crate) fn corrupt(segment_id: u64, detail: impl ToString) -> Self {
        StoreError::CorruptSegment {
            segment_id,
            detail: detail.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn sources_are_exposed() {
        let inner = StoreError::NotFound(1);
        let e = StoreError::BatchFailed {
            item_index: 2,
            stage: BatchStage::Validation,
            source: Box::new(inner),
        };
        assert!(e.source().unwrap().to_string().contains("not found"));
        let io = StoreError::from(std::io::Error::other("disk"));
        assert!(io.source().is_some());
        assert_eq!(
            StoreError::NotFound(0xab).to_string(),
            "event 000000000000000000000000000000ab not found"
        );
    }

    #[test]
    fn only_unavailable_backends_and_restarted_writers_are_retryable() {
        let lost = StoreError::Unavailable(Box::new(std::io::Error::other("connection reset")));
        assert!(lost.is_retryable());
        assert!(lost.source().unwrap().to_string().contains("reset"));
        let batch = StoreError::BatchFailed {
            item_index: 0,
            stage: BatchStage::Writing,
            source: Box::new(lost),
        };
        assert!(batch.is_retryable());
        assert!(StoreError::WriterPanicked("x".into()).is_retryable());
        assert!(!StoreError::Backend(Box::new(std::io::Error::other("denied"))).is_retryable());
        assert!(!StoreError::SequenceMismatch {
            entity: "e".into(),
            expected: 1,
            actual: 2
        }
        .is_retryable());
        assert!(!StoreError::SchemaTooNew {
            found: 9,
            supported: 1
        }
        .is_retryable());
    }
}
