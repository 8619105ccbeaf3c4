//! Store configuration: [`StoreConfig`] with its builders, defaults and validation.
//!
//! Owns only values and their checks; the store reads them at open.

use super::StoreError;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// How a sync reaches stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// `fsync`: data and all metadata.
    SyncAll,
    /// `fdatasync`: data and the metadata needed to read it back (the default).
    #[default]
    SyncData,
}

/// When appends reach stable storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// `fsync` or `fdatasync`.
    pub mode: SyncMode,
    /// 1 (the default): every receipt means the event is on stable storage.
    /// N > 1: receipts may precede the sync by up to N events or 100 ms; the
    /// event is always handed to the OS first, so only a power loss can take it.
    pub every_n_events: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            mode: SyncMode::SyncData,
            every_n_events: 1,
        }
    }
}

/// Limits for atomic batches and group commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most items in one batch (1..=4096, default 256).
    pub max_size: u32,
    /// Most payload bytes in one batch (1..=16 MiB, default 1 MiB).
    pub max_bytes: u32,
    /// Most waiting appends one sync may cover; 0 (the default) means no bound.
    pub group_commit_max_batch: u32,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_size: 256,
            max_bytes: 1024 * 1024,
            group_commit_max_batch: 0,
        }
    }
}

/// What happens after the writer panics (SPEC §5.5).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Recover once; a second panic stops the writer.
    #[default]
    Once,
    /// Recover up to `max_restarts` times within any `within_ms` window.
    Bounded {
        /// Restarts allowed inside the window.
        max_restarts: u32,
        /// Window length in milliseconds.
        within_ms: u64,
    },
}

/// The write path's tuning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriterConfig {
    /// Most appends on their way into the log at once (encoding or waiting
    /// for the writer lock); further callers block until one is written.
    /// Default 4096.
    pub channel_capacity: usize,
    /// Stack size for threads the store spawns; `None` uses the platform default.
    pub stack_size: Option<usize>,
    /// What to do after a writer panic.
    pub restart_policy: RestartPolicy,
    /// Most queued segment footers `close()` and `Drop` still write before
    /// they stop the background sealer (default 1024), after the one in
    /// hand; with 0 that one is dropped too if it is still being built.
    /// Footers only speed up opens; the next writable open queues the rest
    /// again. (There is no queue of appends to drain: every append is
    /// written by its caller before it returns.)
    pub shutdown_drain_limit: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            channel_capacity: 4096,
            stack_size: None,
            restart_policy: RestartPolicy::Once,
            shutdown_drain_limit: 1024,
        }
    }
}

/// Index layouts accepted for compatibility with the original crate. batpak
/// serves every value with one index design; the choice changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IndexLayout {
    /// Array of structs (default).
    #[default]
    AoS,
    /// Struct of arrays.
    SoA,
    /// Array of struct-of-arrays, 8 wide.
    AoSoA8,
    /// Array of struct-of-arrays, 16 wide.
    AoSoA16,
    /// Array of struct-of-arrays, 64 wide.
    AoSoA64,
    /// Struct of array-of-structs.
    SoAoS,
}

impl IndexLayout {
    /// The layout's name, as shown in diagnostics.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            IndexLayout::AoS => "AoS",
            IndexLayout::SoA => "SoA",
            IndexLayout::AoSoA8 => "AoSoA8",
            IndexLayout::AoSoA16 => "AoSoA16",
            IndexLayout::AoSoA64 => "AoSoA64",
            IndexLayout::SoAoS => "SoAoS",
        }
    }
}

/// Index and projection options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexConfig {
    /// Accepted for compatibility (see [`IndexLayout`]).
    pub layout: IndexLayout,
    /// Let `project` apply only new events to a cached value when the type allows it.
    pub incremental_projection: bool,
    /// Write an index checkpoint on `close()` for a fast next open.
    pub enable_checkpoint: bool,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            layout: IndexLayout::AoS,
            incremental_projection: false,
            enable_checkpoint: true,
        }
    }
}

/// A clock returning microseconds since the Unix epoch.
pub type ClockFn = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Everything `Store::open` needs. Build with [`StoreConfig::new`] and the `with_*` methods.
///
/// ```
/// use batpak::prelude::*;
/// let cfg = StoreConfig::new("./data")
///     .with_segment_max_bytes(64 * 1024 * 1024)
///     .with_sync_every_n_events(1);
/// assert_eq!(cfg.sync.mode, SyncMode::SyncData);
/// ```
#[derive(Clone)]
pub struct StoreConfig {
    /// Directory holding segments and the lock file; created if absent.
    pub data_dir: PathBuf,
    /// Segment size at which the writer starts a new segment (1..=4 GiB - 1, default 256 MiB).
    pub segment_max_bytes: u64,
    /// Accepted for compatibility (default 64, must be non-zero); bounds
    /// nothing, because there is nothing to bound: a store keeps a
    /// descriptor only for its lock file and its active segment (sealed
    /// segments are read through their memory maps), however many
    /// segments it has.
    pub fd_budget: usize,
    /// Buffer of each lossy subscriber (default 8192).
    pub broadcast_capacity: usize,
    /// Largest encoded payload of one event (1..=64 MiB, default 16 MiB).
    pub single_append_max_bytes: u32,
    /// Batch limits.
    pub batch: BatchConfig,
    /// Write path tuning.
    pub writer: WriterConfig,
    /// Durability.
    pub sync: SyncConfig,
    /// Index options.
    pub index: IndexConfig,
    /// Clock for event timestamps (µs since the epoch); `None` = system time.
    pub clock: Option<ClockFn>,
    /// Bytes of event frames one segment written by compaction holds at
    /// most (its header and footer come on top): adjacent sealed segments
    /// are packed into one while their frames fit. `None` (the default)
    /// means 16 × `segment_max_bytes`, at most 1 GiB, but never less than
    /// `segment_max_bytes`. A segment is never split, so one that is already
    /// larger stays whole. Allowed: 1 ..= 4 GiB − 1.
    pub compaction_target_bytes: Option<u64>,
    /// Fault injection for tests; no builder. Present in every build, so
    /// the struct has one shape; only a build with feature
    /// `dangerous-test-hooks` has injectors to put here (without it the
    /// trait cannot be named or implemented, so this is always `None`).
    /// The injector decides what the test implementation of the store's
    /// I/O seam does at each point, and what kind of filesystem it is
    /// (ADR 0022).
    // Without the feature the trait is deliberately unnameable.
    #[allow(private_interfaces)]
    pub fault_injector: Option<Arc<dyn crate::store::fault::FaultInjector>>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("fd_budget", &self.fd_budget)
            .field("broadcast_capacity", &self.broadcast_capacity)
            .field("single_append_max_bytes", &self.single_append_max_bytes)
            .field("batch", &self.batch)
            .field("writer", &self.writer)
            .field("sync", &self.sync)
            .field("index", &self.index)
            .field("clock", &self.clock.as_ref().map(|_| "<fn>"))
            .field("compaction_target_bytes", &self.compaction_target_bytes)
            .finish()
    }
}

/// Largest `segment_max_bytes`: offsets inside a segment are 32-bit in the index.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
/// Largest `single_append_max_bytes`.
pub const MAX_SINGLE_APPEND_BYTES: u32 = 64 * 1024 * 1024;

impl StoreConfig {
    /// Defaults for a store in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            segment_max_bytes: 256 * 1024 * 1024,
            fd_budget: 64,
            broadcast_capacity: 8192,
            single_append_max_bytes: 16 * 1024 * 1024,
            batch: BatchConfig::default(),
            writer: WriterConfig::default(),
            sync: SyncConfig::default(),
            index: IndexConfig::default(),
            clock: None,
            compaction_target_bytes: None,
            fault_injector: None,
        }
    }

    /// Set `segment_max_bytes`.
    #[must_use]
    pub fn with_segment_max_bytes(mut self, bytes: u64) -> Self {
        self.segment_max_bytes = bytes;
        self
    }
    /// Set `compaction_target_bytes`.
    #[must_use]
    pub fn with_compaction_target_bytes(mut self, bytes: u64) -> Self {
        self.compaction_target_bytes = Some(bytes);
        self
    }
    /// Set `sync.every_n_events`.
    #[must_use]
    pub fn with_sync_every_n_events(mut self, n: u32) -> Self {
        self.sync.every_n_events = n;
        self
    }
    /// Set `fd_budget`.
    #[must_use]
    pub fn with_fd_budget(mut self, n: usize) -> Self {
        self.fd_budget = n;
        self
    }
    /// Set `writer.channel_capacity`.
    #[must_use]
    pub fn with_writer_channel_capacity(mut self, n: usize) -> Self {
        self.writer.channel_capacity = n;
        self
    }
    /// Set `broadcast_capacity`.
    #[must_use]
    pub fn with_broadcast_capacity(mut self, n: usize) -> Self {
        self.broadcast_capacity = n;
        self
    }
    /// Set `single_append_max_bytes`.
    #[must_use]
    pub fn with_single_append_max_bytes(mut self, n: u32) -> Self {
        self.single_append_max_bytes = n;
        self
    }
    /// Set `writer.restart_policy`.
    #[must_use]
    pub fn with_restart_policy(mut self, p: RestartPolicy) -> Self {
        self.writer.restart_policy = p;
        self
    }
    /// Set `writer.shutdown_drain_limit`.
    #[must_use]
    pub fn with_shutdown_drain_limit(mut self, n: usize) -> Self {
        self.writer.shutdown_drain_limit = n;
        self
    }
    /// Set `writer.stack_size`.
    #[must_use]
    pub fn with_writer_stack_size(mut self, n: Option<usize>) -> Self {
        self.writer.stack_size = n;
        self
    }
    /// Set `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Option<ClockFn>) -> Self {
        self.clock = clock;
        self
    }
    /// Set `sync.mode`.
    #[must_use]
    pub fn with_sync_mode(mut self, mode: SyncMode) -> Self {
        self.sync.mode = mode;
        self
    }
    /// Set `batch.group_commit_max_batch`.
    #[must_use]
    pub fn with_group_commit_max_batch(mut self, n: u32) -> Self {
        self.batch.group_commit_max_batch = n;
        self
    }
    /// Set `index.layout`.
    #[must_use]
    pub fn with_index_layout(mut self, layout: IndexLayout) -> Self {
        self.index.layout = layout;
        self
    }
    /// Set `index.incremental_projection`.
    #[must_use]
    pub fn with_incremental_projection(mut self, on: bool) -> Self {
        self.index.incremental_projection = on;
        self
    }
    /// Set `index.enable_checkpoint`.
    #[must_use]
    pub fn with_enable_checkpoint(mut self, on: bool) -> Self {
        self.index.enable_checkpoint = on;
        self
    }
    /// Set `batch.max_size`.
    #[must_use]
    pub fn with_batch_max_size(mut self, n: u32) -> Self {
        self.batch.max_size = n;
        self
    }
    /// Set `batch.max_bytes`.
    #[must_use]
    pub fn with_batch_max_bytes(mut self, n: u32) -> Self {
        self.batch.max_bytes = n;
        self
    }

    /// Check every value; `Store::open` calls this.
    ///
    /// # Errors
    /// [`StoreError::Configuration`] naming the first bad value.
    pub fn validate(&self) -> Result<(), StoreError> {
        fn bad(msg: String) -> Result<(), StoreError> {
            Err(StoreError::Configuration(msg))
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir is empty".into());
        }
        if self.segment_max_bytes == 0 || self.segment_max_bytes > MAX_SEGMENT_BYTES {
            return bad(format!(
                "segment_max_bytes must be 1..={MAX_SEGMENT_BYTES}, got {}",
                self.segment_max_bytes
            ));
        }
        if let Some(t) = self.compaction_target_bytes {
            if !(1..=MAX_SEGMENT_BYTES).contains(&t) {
                return bad(format!(
                    "compaction_target_bytes must be 1..={MAX_SEGMENT_BYTES}, got {t}"
                ));
            }
        }
        if self.fd_budget == 0 {
            return bad("fd_budget must be at least 1".into());
        }
        if self.broadcast_capacity == 0 {
            return bad("broadcast_capacity must be at least 1".into());
        }
        if self.single_append_max_bytes == 0
            || self.single_append_max_bytes > MAX_SINGLE_APPEND_BYTES
        {
            return bad(format!(
                "single_append_max_bytes must be 1..={MAX_SINGLE_APPEND_BYTES}, got {}",
                self.single_append_max_bytes
            ));
        }
        if !(1..=4096).contains(&self.batch.max_size) {
            return bad(format!(
                "batch.max_size must be 1..=4096, got {}",
                self.batch.max_size
            ));
        }
        if !(1..=16 * 1024 * 1024).contains(&self.batch.max_bytes) {
            return bad(format!(
                "batch.max_bytes must be 1..=16 MiB, got {}",
                self.batch.max_bytes
            ));
        }
        if self.writer.channel_capacity == 0 {
            return bad("writer.channel_capacity must be at least 1".into());
        }
        if self.writer.stack_size == Some(0) {
            return bad("writer.stack_size must not be 0".into());
        }
        if let RestartPolicy::Bounded { within_ms: 0, .. } = self.writer.restart_policy {
            return bad("restart_policy Bounded needs within_ms > 0".into());
        }
        if self.sync.every_n_events == 0 {
            return bad("sync.every_n_events must be at least 1 (1 = durable receipts)".into());
        }
        Ok(())
    }

    /// True when every receipt means "on stable storage".
    pub(crate) fn durable_receipts(&self) -> bool {
        self.sync.every_n_events == 1
    }

    pub(crate) fn now_us(&self) -> i64 {
        match &self.clock {
            Some(c) => c(),
            None => now_us(),
        }
    }
}

/// System time in microseconds since the Unix epoch.
pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_durable() {
        let c = StoreConfig::new("/tmp/x");
        assert_eq!(c.sync.every_n_events, 1);
        assert_eq!(c.sync.mode, SyncMode::SyncData);
        assert_eq!(c.batch.group_commit_max_batch, 0);
        assert_eq!(c.segment_max_bytes, 256 * 1024 * 1024);
        assert!(c.index.enable_checkpoint);
        assert!(c.validate().is_ok());
        assert!(format!("{c:?}").contains("data_dir"));
    }

    #[test]
    fn invalid_values_are_refused() {
        let base = || StoreConfig::new("/tmp/x");
        let cases = [
            base().with_segment_max_bytes(0),
            base().with_segment_max_bytes(MAX_SEGMENT_BYTES + 1),
            base().with_fd_budget(0),
            base().with_broadcast_capacity(0),
            base().with_single_append_max_bytes(0),
            base().with_single_append_max_bytes(MAX_SINGLE_APPEND_BYTES + 1),
            base().with_batch_max_size(0),
            base().with_batch_max_size(4097),
            base().with_batch_max_bytes(0),
            base().with_writer_channel_capacity(0),
            base().with_sync_every_n_events(0),
            base().with_writer_stack_size(Some(0)),
            StoreConfig::new(""),
        ];
        for c in cases {
            assert!(
                matches!(c.validate(), Err(StoreError::Configuration(_))),
                "{c:?}"
            );
        }
    }
}
