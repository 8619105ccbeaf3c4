//! Runtime statistics and diagnostics snapshots.

use crate::store::config::{RestartPolicy, SyncMode};
use crate::store::recovery::RecoveryReport;
use std::path::PathBuf;

/// Headline counters.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct StoreStats {
    /// Events readers can see.
    pub event_count: usize,
    /// The next global sequence to be assigned.
    pub global_sequence: u64,
}

/// Everything the store can tell about itself.
#[derive(Clone, Debug)]
#[must_use]
#[non_exhaustive]
pub struct StoreDiagnostics {
    /// Events readers can see.
    pub event_count: usize,
    /// The next global sequence to be assigned.
    pub global_sequence: u64,
    /// One past the global sequence of the newest visible event (0 when empty).
    pub visible_sequence: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Configured segment size.
    pub segment_max_bytes: u64,
    /// Configured descriptor budget (accepted for compatibility; the store
    /// holds a constant few descriptors, see `StoreConfig::fd_budget`).
    pub fd_budget: usize,
    /// Configured restart policy.
    pub restart_policy: RestartPolicy,
    /// Configured (compatibility-only) index layout name.
    pub index_layout: &'static str,
    /// Kept for compatibility: always 0 (batpak's index has no tiles).
    pub tile_count: usize,
    /// Segment files.
    pub segment_count: usize,
    /// Distinct entities.
    pub entity_count: usize,
    /// Events written but not yet visible (waiting for their sync).
    pub pending_events: usize,
    /// Heap bytes held by the index.
    pub index_heap_bytes: usize,
    /// `index_heap_bytes` per indexed slot (slots include events not yet
    /// visible and those a compaction removed since open).
    pub index_bytes_per_event: f64,
    /// Whether every receipt means "on stable storage".
    pub durable_receipts: bool,
    /// Lossy subscribers currently registered.
    pub subscribers: usize,
    /// Group-commit syncs performed since open.
    pub syncs: u64,
    /// Configured sync mode.
    pub sync_mode: SyncMode,
    /// Why the writer stopped, if it did.
    pub poisoned: Option<String>,
    /// Writer panics recovered from (within the restart policy's window).
    pub writer_restarts: usize,
    /// Opened with `open_read_only`.
    pub read_only: bool,
    /// Sealed segments waiting for their footer (queued by rotations, and
    /// at open for those found without one); 0 once the sealer caught up.
    pub footers_pending: usize,
    /// Times the background thread grew the active segment's file ahead
    /// of the writer since open.
    pub grown_ahead: u64,
    /// Times an append had to grow the active segment's file itself, under
    /// the writer lock, since open: the background had not got that far,
    /// or a frame was larger than a new segment's first allocation (1 MiB).
    /// Expected to stay near 0.
    pub grown_on_append: u64,
    /// What `open` found and did.
    pub recovery: RecoveryReport,
}
