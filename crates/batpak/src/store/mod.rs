//! The store: [`Store`] and everything it is built from.
//!
//! | module        | owns                                                        |
//! |---------------|-------------------------------------------------------------|
//! | `config`      | [`StoreConfig`] and its validation                          |
//! | `errors`      | [`StoreError`], [`BatchStage`]                              |
//! | `format`      | every byte on disk (segments, frames, records, payloads)    |
//! | `log`         | segment files, mapping, growth, sync: bytes in, bytes out   |
//! | `write`       | the append path, group commit, background sync              |
//! | `read`        | `get`, `walk_ancestors`, queries                            |
//! | `index`       | the in-memory index                                         |
//! | `recovery`    | rebuilding the index at open                                |
//! | `delivery`    | guaranteed cursors, lossy subscriptions, reactors, `EventFeed` |
//! | `projection`  | projections, their caches and watchers                      |
//! | `maintenance` | footers, checkpoint, compaction, snapshot, verify           |
//! | `fault`       | fault injection types; the test I/O seam (feature `dangerous-test-hooks`) |
//! | `stats`       | statistics and diagnostics                                  |
//! | `contract`    | [`EventStore`], the operations every backend shares         |
//! | `codec`       | the canonical payload and hash encodings, for other backends |
//! | `typed`       | the schema, typed appends and reads, lazy event iterators   |
//!
//! `Store` itself is a thin shell: it validates arguments, builds drafts and
//! delegates to the modules above through the shared state.

pub mod codec;
mod config;
mod contract;
mod delivery;
mod errors;
#[cfg(feature = "dangerous-test-hooks")]
pub mod fault;
// Without the feature: only the types `StoreConfig` names, unnameable
// outside the crate (so nothing can implement `FaultInjector`).
#[cfg(not(feature = "dangerous-test-hooks"))]
#[allow(dead_code, unreachable_pub)]
mod fault;
mod format;
/// The decoders' entry points for the fuzz crate; not part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use format::fuzzing;
mod huge_pages;
pub mod index;
mod log;
mod maintenance;
pub mod projection;
mod read;
pub mod recovery;
pub mod stats;
mod typed;
mod write;

pub use config::{
    BatchConfig, ClockFn, IndexConfig, IndexLayout, RestartPolicy, StoreConfig, SyncConfig,
    SyncMode, WriterConfig, MAX_SEGMENT_BYTES, MAX_SINGLE_APPEND_BYTES,
};
pub use contract::EventStore;
pub use delivery::{
    answer_trigger, Cursor, EventCursor, EventFeed, Notification, Subscription, SubscriptionFeed,
    SubscriptionOps, TypedCursor,
};
pub(crate) use errors::IoAt;
pub use errors::{BatchStage, IoContext, StoreError};
#[cfg(feature = "dangerous-test-hooks")]
pub use fault::{
    CopyOnWriteDisk, CountdownAction, CountdownInjector, FaultAction, FaultInjector,
    InjectionPoint, IoOp, NoFaults, PowerLoss, ProbabilisticInjector,
};
pub use index::{ClockKey, DiskPos, IndexEntry};
pub use maintenance::{
    CompactionConfig, CompactionStrategy, RetentionPredicate, VerifyProblem, VerifyProblemKind,
    VerifyReport,
};

/// Names kept where the original crate had them.
pub mod segment {
    pub use super::maintenance::CompactionResult;
}

/// The guaranteed cursor, where the original crate had it.
pub mod cursor {
    pub use super::delivery::Cursor;
}

/// The lossy subscription, where the original crate had it.
pub mod subscription {
    pub use super::delivery::{Subscription, SubscriptionOps};
}

/// The write path's public types, where the original crate had them.
pub mod writer {
    pub use super::config::RestartPolicy;
    pub use super::delivery::Notification;
}
pub use projection::{
    CacheCapabilities, CacheMeta, Freshness, NativeCache, NoCache, ProjectionCache,
    ProjectionWatcher,
};
pub use recovery::{DamagedRegion, OpenPath, RecoveryReport, TruncatedTail};
pub use stats::{StoreDiagnostics, StoreStats};
pub use typed::EventIter;
pub use write::{
    AppendOptions, AppendReceipt, BatchAppendItem, BypassRecord, CausationRef, Durability,
};

use crate::coordinate::{Coordinate, KindFilter, Region};
use crate::event::{EventKind, StoredEvent};
use index::Index;
use log::{DirLock, Log, SegmentIo};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use std::marker::PhantomData;
use std::sync::Arc;
use std::thread::JoinHandle;
use write::durability::Durability as Watermarks;
use write::{Flusher, Grower, Writer};

impl Shared {
    /// The read layer's handle: frames, index and visible watermark only.
    pub(crate) fn reader(&self) -> read::Reader<'_> {
        read::Reader::new(
            &self.log,
            &self.index,
            self.durability.visibility(),
            &self.compactions,
        )
    }

    /// The maintenance layer's handle.
    pub(crate) fn maintainer(&self) -> maintenance::Maintainer<'_> {
        maintenance::Maintainer {
            log: &self.log,
            index: &self.index,
            writer: self.writer.as_ref(),
            durability: &self.durability,
            lock: &self.maintenance,
            follow: &self.follow,
            epoch: &self.epoch,
            compactions: &self.compactions,
            config: &self.config,
            syncer: write::Syncer::new(self),
        }
    }

    /// The projection layer's handle.
    pub(crate) fn projector(&self) -> projection::Projector<'_> {
        projection::Projector {
            reader: self.reader(),
            schema: self.schema(),
            memo: &self.memo,
            cache: self.cache.as_ref(),
            epoch: self.history_epoch(),
            config: &self.config,
        }
    }

    /// Offer newly visible events to the lossy subscribers (whoever made
    /// events visible calls this, after releasing the writer lock).
    pub(crate) fn dispatch(&self) {
        self.subscribers.dispatch(self.reader());
    }

    /// The shared state of a read-only store over a recovered index; a
    /// writable open then adds its writer, flusher, cache and back-pressure.
    fn new(
        config: StoreConfig,
        log: Log,
        index: Index,
        recovery: RecoveryReport,
        epoch: u64,
    ) -> Self {
        Self {
            writer: None,
            restarts: write::Restarts::new(config.writer.restart_policy.clone()),
            durability: Watermarks::new(index.len(), 1),
            index: RwLock::new(index),
            recovery,
            sealer: maintenance::Sealer::default(),
            grower: Grower::default(),
            maintenance: Mutex::new(()),
            subscribers: delivery::Subscribers::default(),
            reactors: delivery::ReactorThreads::default(),
            memo: projection::Memo::default(),
            epoch: std::sync::atomic::AtomicU64::new(epoch),
            compactions: std::sync::atomic::AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            follow: Mutex::new(None),
            flusher: None,
            log,
            config,
            cache: Box::new(NoCache),
            schema: RwLock::new(Arc::default()),
        }
    }

    pub(crate) fn history_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the store handle has started closing (or was dropped).
    pub(crate) fn is_closing(&self) -> bool {
        // SeqCst, as the store in close: see `Durability::wait_for_visible`.
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Typestate marker for an open store.
pub struct Open;

/// Typestate marker for a cleanly closed store.
pub struct Closed;

/// State shared by the store handle and the threads it starts.
pub(crate) struct Shared {
    pub(crate) config: StoreConfig,
    pub(crate) log: Log,
    pub(crate) index: RwLock<Index>,
    /// `None` when opened read-only.
    pub(crate) writer: Option<Mutex<Writer>>,
    pub(crate) durability: Watermarks,
    /// Writer panics so far, against `writer.restart_policy`.
    pub(crate) restarts: write::Restarts,
    /// Present in writable stores: a background thread that syncs (in
    /// relaxed mode, and for relaxed calls in a durable store).
    pub(crate) flusher: Option<Flusher>,
    pub(crate) recovery: RecoveryReport,
    /// Sealed segments waiting for their footer.
    pub(crate) sealer: maintenance::Sealer,
    /// Growth of the active segment ahead of the writer.
    pub(crate) grower: Grower,
    /// Lossy subscribers.
    pub(crate) subscribers: delivery::Subscribers,
    /// Reactor threads still running: closing waits for them.
    pub(crate) reactors: delivery::ReactorThreads,
    /// Set when the store handle starts closing (`close` or `Drop`):
    /// waiting cursors end, reactor threads end, and appends from the
    /// threads the store started (a reactor holds no `Store`) are refused
    /// from then on, checked under the writer lock.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    /// Read-only stores: where `refresh` continues reading.
    pub(crate) follow: Mutex<Option<recovery::Follow>>,
    pub(crate) cache: Box<dyn ProjectionCache>,
    /// In-memory tier in front of `cache`.
    pub(crate) memo: projection::Memo,
    /// Part of every projection cache key; bumped when compaction rewrites history.
    pub(crate) epoch: std::sync::atomic::AtomicU64,
    /// `Index::compactions`, published under the index write lock so that
    /// readers which keep entries between calls (cursors, event iterators)
    /// can see without the lock that theirs may have gone stale.
    pub(crate) compactions: std::sync::atomic::AtomicU64,
    /// Held by compaction, snapshot, verify and footer writing: at most one
    /// of them reads or replaces sealed segments at a time.
    pub(crate) maintenance: Mutex<()>,
    /// Typed events and upcasters (see `typed`); replaced whole on change.
    pub(crate) schema: RwLock<Arc<crate::event::Schema>>,
}

/// An embedded event store. Every method blocks; the handle is `Send + Sync`
/// (share it with `Arc`).
///
/// ```
/// use batpak::prelude::*;
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(StoreConfig::new(dir.path()))?;
/// let coord = Coordinate::new("order:1", "tenant:a")?;
/// let receipt = store.append(&coord, EventKind::custom(1, 1), &serde_json::json!({"qty": 2}))?;
/// let event = store.get(receipt.event_id)?;
/// assert_eq!(event.event.payload["qty"], 2);
/// assert_eq!(store.stream("order:1").len(), 1);
/// store.close()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Store<State = Open> {
    shared: Arc<Shared>,
    flusher_thread: Option<JoinHandle<()>>,
    sealer_thread: Option<JoinHandle<()>>,
    grower_thread: Option<JoinHandle<()>>,
    lock: Option<DirLock>,
    closed: bool,
    _state: PhantomData<State>,
}

impl Store<Open> {
    /// Open (or create) the store in `config.data_dir`, rebuilding the index
    /// from the segments. Uses [`NoCache`] for projections.
    ///
    /// # Errors
    /// `Configuration` for invalid settings, `Locked` when another store holds
    /// the directory, `Io` when it cannot be created or read.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        Self::open_with_cache(config, Box::new(NoCache))
    }

    /// Open the store in `config.data_dir` for reading only, without taking
    /// its lock and without modifying any file, so a store can be inspected
    /// while its owner runs. Every write returns `ReadOnly`; call
    /// [`Store::refresh`] to see what the owner appended since.
    ///
    /// # Errors
    /// `Configuration`, `Io` when the directory cannot be read,
    /// `RecordDamaged` for a missing or damaged removed-event record.
    pub fn open_read_only(config: StoreConfig) -> Result<Self, StoreError> {
        config.validate()?;
        if !config.data_dir.is_dir() {
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is not a store directory", config.data_dir.display()),
            )));
        }
        let log = Log::new(
            &config.data_dir,
            config.sync.mode,
            config.segment_max_bytes,
            log::Prealloc::Reserve,
            log::FrameWrites::Pwrite,
            log::Io::for_store(&config, false),
        );
        let recovered = recovery::recover(&log, &config, false)?;
        let mut shared = Shared::new(
            config,
            log,
            recovered.index,
            recovered.report,
            recovered.epoch,
        );
        shared.follow = Mutex::new(recovered.follow);
        let shared = Arc::new(shared);
        Ok(Self {
            shared,
            flusher_thread: None,
            sealer_thread: None,
            grower_thread: None,
            lock: None,
            closed: false,
            _state: PhantomData,
        })
    }

    /// Read-only stores: index what the owner appended since the last look
    /// (or since open), making it visible to queries, cursors and
    /// subscribers. Returns how many events were added. A writable store
    /// always sees its own appends; there this returns 0.
    ///
    /// # Errors
    /// `Io` when the directory cannot be read.
    pub fn refresh(&self) -> Result<u64, StoreError> {
        let mut follow = self.shared.follow.lock();
        let Some(follow) = follow.as_mut() else {
            return Ok(0);
        };
        let added = {
            let mut index = self.shared.index.write();
            recovery::follow_up(&self.shared.log, &mut index, follow)?
        };
        if added > 0 {
            let len = self.shared.index.read().len();
            self.shared.durability.publish(len);
            self.shared.dispatch();
        }
        Ok(added)
    }

    /// Open with the file-backed [`NativeCache`] in `cache_path`.
    ///
    /// # Errors
    /// `CacheFailed` if the cache directory cannot be used, else as [`Store::open`].
    pub fn open_with_native_cache(
        config: StoreConfig,
        cache_path: impl AsRef<std::path::Path>,
    ) -> Result<Self, StoreError> {
        let cache = NativeCache::open(cache_path)?;
        Self::open_with_cache(config, Box::new(cache))
    }

    /// Open with a custom projection cache backend.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with_cache(
        config: StoreConfig,
        cache: Box<dyn ProjectionCache>,
    ) -> Result<Self, StoreError> {
        config.validate()?;
        // A new directory's entry is synced in its parent: the first durable
        // receipts must not vanish with the directory in a power cut.
        log::create_dir_all_synced(&config.data_dir)?;
        let lock = DirLock::acquire(&config.data_dir)?;
        let prealloc = if config.durable_receipts() {
            log::Prealloc::Zeros
        } else {
            log::Prealloc::Reserve
        };
        let io = log::Io::for_store(&config, true);
        // Relaxed mode copies frames into the map, except where a write to
        // a preallocated block may need new space (a full disk would fault).
        let writes = if config.durable_receipts() || io.copy_on_write(&config.data_dir) {
            log::FrameWrites::Pwrite
        } else {
            log::FrameWrites::Mapped
        };
        let log = Log::new(
            &config.data_dir,
            config.sync.mode,
            config.segment_max_bytes,
            prealloc,
            writes,
            io,
        );
        let recovered = recovery::recover(&log, &config, true)?;
        let written = recovered.index.len();
        let active = recovered.active.ok_or_else(|| {
            StoreError::internal("a writable recovery produced no active segment")
        })?;
        // Durable stores need it too, for calls that ask for `Relaxed`.
        let flusher = Some(Flusher::default());
        let max_inflight = u32::try_from(config.writer.channel_capacity).unwrap_or(u32::MAX);
        let mut shared = Shared::new(
            config,
            log,
            recovered.index,
            recovered.report,
            recovered.epoch,
        );
        shared.writer = Some(Mutex::new(Writer::new(active, recovered.next_seq, written)));
        shared.durability = Watermarks::new(written, max_inflight);
        shared.flusher = flusher;
        shared.cache = cache;
        let mut store = Self {
            shared: Arc::new(shared),
            flusher_thread: None,
            sealer_thread: None,
            grower_thread: None,
            lock: Some(lock),
            closed: false,
            _state: PhantomData,
        };
        // From here on a failure drops `store`, and its `Drop` stops and
        // joins the threads started so far before the lock is released.
        let io = store.shared.log.io().clone();
        let started = || io.at(log::InjectionPoint::StoreThreadStarted);
        if store.shared.flusher.is_some() {
            store.flusher_thread = Some(Flusher::spawn(store.shared.clone())?);
            started()?;
        }
        store.grower_thread = Some(Grower::spawn(store.shared.clone())?);
        started()?;
        store.sealer_thread = Some(maintenance::Sealer::spawn(
            store.shared.clone(),
            recovered.unsealed,
        )?);
        started()?;
        Ok(store)
    }

    /// Append a root event: a fresh UUIDv7 id, correlated to itself, no causation.
    ///
    /// # Errors
    /// `ReservedKind`, `Serialization` (the payload cannot become a JSON value),
    /// `Configuration` (payload over `single_append_max_bytes`), `Io`, `Poisoned`, `ReadOnly`.
    pub fn append(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
    ) -> Result<AppendReceipt, StoreError> {
        self.append_with_options(coord, kind, payload, AppendOptions::new())
    }

    /// Append a reaction: an event caused by `causation_id` in the causal tree `correlation_id`.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn append_reaction(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        correlation_id: u128,
        causation_id: u128,
    ) -> Result<AppendReceipt, StoreError> {
        let opts = AppendOptions::new()
            .with_correlation(correlation_id)
            .with_causation(causation_id);
        self.append_with_options(coord, kind, payload, opts)
    }

    /// Append with a CAS condition, an idempotency key, causal links or flags.
    /// The idempotency check comes first, then the condition; both are atomic
    /// with the write (SPEC §3.7, §3.8).
    ///
    /// # Errors
    /// As [`Store::append`], plus `SequenceMismatch`, `StreamIsEmpty`,
    /// `StreamNotEmpty` and `IdempotencyConflict`.
    pub fn append_with_options(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        self.shared.append_one(coord, kind, payload, 1, opts)
    }

    /// Append a typestate transition: its kind and payload, as [`Store::append`].
    /// The store does not track which state an entity is in; the types did
    /// the checking before this call.
    ///
    /// # Errors
    /// As [`Store::append`].
    pub fn apply_transition<From, To, P: Serialize>(
        &self,
        coord: &Coordinate,
        transition: crate::typestate::transition::Transition<From, To, P>,
    ) -> Result<AppendReceipt, StoreError> {
        let kind = transition.kind();
        self.append(coord, kind, &transition.into_payload())
    }

    /// Append `items` atomically: all become visible together or none, and
    /// after a crash all are present or none. One sync covers the batch.
    /// Each item's CAS condition is checked against its entity as it is just
    /// before that item; idempotency keys make a retried batch return the
    /// original receipts.
    ///
    /// # Errors
    /// `BatchFailed { item_index, stage, source }`; nothing of the batch is written.
    pub fn append_batch(
        &self,
        items: Vec<BatchAppendItem>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        let inflight = self.shared.durability.begin_append();
        self.shared.append_batch(items, None, inflight)
    }

    /// Like [`Store::append_batch`], with every item correlated to
    /// `correlation_id` and items whose causation is `CausationRef::None`
    /// caused by `causation_id`.
    ///
    /// # Errors
    /// As [`Store::append_batch`].
    pub fn append_reaction_batch(
        &self,
        correlation_id: u128,
        causation_id: u128,
        items: Vec<BatchAppendItem>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        let inflight = self.shared.durability.begin_append();
        self.shared
            .append_batch(items, Some((correlation_id, causation_id)), inflight)
    }

    /// The event with this id.
    ///
    /// # Errors
    /// `NotFound` for an unknown or not yet visible id; `CrcMismatch` or
    /// `CorruptSegment` when its frame is damaged.
    pub fn get(&self, event_id: u128) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        self.shared.reader().get(event_id)
    }

    /// Index entries matching `region`, in global-sequence order.
    #[must_use]
    pub fn query(&self, region: &Region) -> Vec<IndexEntry> {
        self.shared.reader().query(region)
    }

    /// The event and then its predecessors in its entity's hash chain, newest
    /// first, at most `limit` events. Empty for an unknown id.
    pub fn walk_ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Vec<StoredEvent<serde_json::Value>> {
        self.shared.reader().walk_ancestors(event_id, limit)
    }

    /// Every event of exactly this entity (any scope), in clock order.
    #[must_use]
    pub fn stream(&self, entity: &str) -> Vec<IndexEntry> {
        self.shared.reader().stream(entity)
    }

    /// Every event in exactly this scope, in global-sequence order.
    #[must_use]
    pub fn by_scope(&self, scope: &str) -> Vec<IndexEntry> {
        self.query(&Region::scope(scope))
    }

    /// Every event of this kind, in global-sequence order.
    #[must_use]
    pub fn by_fact(&self, kind: EventKind) -> Vec<IndexEntry> {
        self.query(&Region::all().with_fact(KindFilter::Exact(kind)))
    }

    /// Every event whose correlation id is `correlation_id` (including the
    /// root itself), in global-sequence order.
    #[must_use]
    pub fn by_correlation(&self, correlation_id: u128) -> Vec<IndexEntry> {
        self.shared.reader().by_correlation(correlation_id)
    }

    /// Every event whose causation id is `event_id`, in global-sequence order.
    #[must_use]
    pub fn children(&self, event_id: u128) -> Vec<IndexEntry> {
        self.shared.reader().children(event_id)
    }

    /// A guaranteed cursor over `region` from the beginning of history:
    /// every matching committed event exactly once, in global-sequence
    /// order, including events committed later.
    pub fn cursor_guaranteed(&self, region: &Region) -> Cursor {
        Cursor::new(read::Follower::new(self.shared.clone()), region, None)
    }

    /// A guaranteed cursor over `region` that starts after global sequence
    /// `after` (`None`: from the beginning), to resume from a saved
    /// [`Cursor::position`].
    pub fn cursor_from(&self, region: &Region, after: Option<u64>) -> Cursor {
        Cursor::new(read::Follower::new(self.shared.clone()), region, after)
    }

    /// A lossy subscription to events of `region` committed from now on.
    /// `clock_range` is ignored (notifications carry no clock).
    pub fn subscribe_lossy(&self, region: &Region) -> Subscription {
        let shared = &self.shared;
        shared
            .subscribers
            .subscribe(shared.reader(), region, shared.config.broadcast_capacity)
    }

    /// Make everything acknowledged so far durable.
    ///
    /// # Errors
    /// `Poisoned` after an earlier I/O failure, or the sync's own failure.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.shared.sync_all_written()?;
        // Relaxed events of a durable store became visible here: the lossy
        // subscribers hear of them now, not at the next append.
        self.shared.dispatch();
        Ok(())
    }

    /// Test hook (feature `dangerous-test-hooks`): make the writer panic now,
    /// as if a write had panicked before changing anything. The panic is
    /// caught and counted against `writer.restart_policy` exactly as one
    /// inside an append is: within the budget the writer restarts and the
    /// next append works; past it every later write, and `close`, return
    /// `WriterCrashed`. Returns once the panic was counted.
    ///
    /// # Errors
    /// `WriterCrashed` (or `Poisoned`) when the writer had already stopped,
    /// `ReadOnly` on a read-only handle.
    #[cfg(feature = "dangerous-test-hooks")]
    #[doc(hidden)]
    pub fn panic_writer_for_test(&self) -> Result<(), StoreError> {
        self.shared.panic_writer_for_test()
    }

    /// Test hook (feature `dangerous-test-hooks`): do what a power cut now
    /// would. The store stops writing (`Poisoned`); bytes of segment files
    /// not yet synced become zeros and new segment files whose directory
    /// entry was not synced are removed. Drop the store and reopen it to see
    /// what survived: every event acknowledged as durable must have.
    ///
    /// # Errors
    /// `ReadOnly`, or `Io` when the files cannot be rewritten.
    #[cfg(feature = "dangerous-test-hooks")]
    pub fn simulate_power_loss(&self) -> Result<PowerLoss, StoreError> {
        let writer = self.shared.writer.as_ref().ok_or(StoreError::ReadOnly)?;
        self.shared.durability.poison("simulated power loss".into());
        let _maintenance = self.shared.maintenance.lock();
        // No flush can follow (it needs this lock and an unpoisoned store).
        // An fsync already running is cut short by the cut: it re-checks the
        // store before acknowledging anything, and finds it stopped.
        let _writer = writer.lock();
        self.shared.log.io().power_loss()
    }

    /// Test hook (feature `dangerous-test-hooks`): do to this store what
    /// `SIGKILL` now would. The store stops writing (`Poisoned`) and is not
    /// to be used again (drop it); whatever it wrote stays in the files, as
    /// the page cache keeps it. The next writable open of the same directory
    /// in this process inherits what was not synced at this moment, so that
    /// a later [`Store::simulate_power_loss`] discards it unless that open
    /// made it durable: together they test "killed, reopened, then the
    /// power went".
    ///
    /// Unlike a real kill, a thread already inside a write or a segment
    /// creation (parked there by a test) finishes that step; whatever it
    /// writes or syncs afterwards still counts as unsynced, so the model
    /// never keeps more than the kill left.
    ///
    /// # Errors
    /// `ReadOnly`, or `Io` when the directory cannot be listed.
    #[cfg(feature = "dangerous-test-hooks")]
    pub fn simulate_crash(&self) -> Result<(), StoreError> {
        if self.shared.writer.is_none() {
            return Err(StoreError::ReadOnly);
        }
        // From here no append starts, no group is written and no sync
        // acknowledges anything: each re-checks the store first. The writer
        // lock is not taken: a test may hold a writer parked mid-rotation.
        self.shared.durability.poison("simulated crash".into());
        self.shared.log.io().record_crash(self.shared.log.dir())
    }

    /// Write a consistent copy of the store to `dest` while appends
    /// continue: it opens as a store holding exactly the events committed
    /// when the snapshot was taken (their ids, sequences, chains, and the
    /// keys of events compaction removed). The copy is assembled beside
    /// `dest` and renamed into place once synced, so `dest` never holds a
    /// partial snapshot. Works on read-only handles too (it copies what the
    /// handle sees).
    ///
    /// # Errors
    /// `Io` (kind `InvalidInput`) when `dest` is a symbolic link, a file, or
    /// a directory that is not empty; `Io` when copying fails; `Poisoned`
    /// when the store cannot make its events durable first.
    pub fn snapshot(&self, dest: &std::path::Path) -> Result<(), StoreError> {
        maintenance::snapshot(&self.shared.maintainer(), dest)
    }

    /// Compact the sealed segments (never the active one): merge them and,
    /// by `config.strategy`, remove or redact the events a predicate
    /// rejects. Survivors keep their ids, global sequences and hash chain;
    /// removed events' idempotency keys keep answering with their original
    /// receipts. Appends continue meanwhile; readers wait only while the new
    /// positions are swapped into the index. A crash at any point leaves the
    /// old state or the new one (see `docs/adr`).
    ///
    /// Does nothing (an all-zero result) when fewer than
    /// `config.min_segments` sealed segments exist.
    ///
    /// # Errors
    /// `ReadOnly`, `Poisoned`, `Io` when reading or writing segment files
    /// fails (before the commit point nothing changed; after it the store
    /// stops writing and the next open finishes the compaction),
    /// `Serialization` if a payload handed to the predicate cannot be read.
    pub fn compact(
        &self,
        config: &CompactionConfig,
    ) -> Result<segment::CompactionResult, StoreError> {
        maintenance::compact(&self.shared.maintainer(), config)
    }

    /// Check the integrity of everything committed: every frame's checksum,
    /// every entity's hash chain, and the footers and checkpoint against the
    /// frames they describe. Damage is reported, not repaired; appends may
    /// continue meanwhile.
    ///
    /// # Errors
    /// `Io` when a file cannot be read at all (damage inside a file is a
    /// [`VerifyProblem`], not an error).
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        maintenance::verify::verify(&self.shared.maintainer())
    }

    /// Sync, stop the store's threads and release the directory.
    ///
    /// # Errors
    /// `Poisoned` if the writer stopped after an I/O failure (nothing
    /// acknowledged as durable was lost, but later writes were refused).
    pub fn close(mut self) -> Result<Closed, StoreError> {
        self.closed = true;
        self.stop_threads();
        if self.shared.durability.is_crashed() {
            // Writes stopped, but what was acknowledged is consistent on
            // disk and in the index: make it durable, then report the crash.
            self.shared.sync_after_crash();
            self.lock = None;
            return Err(StoreError::WriterCrashed);
        }
        let mut result = self
            .shared
            .durability
            .check()
            .and_then(|()| self.shared.sync_all_written());
        if result.is_ok() && self.shared.config.index.enable_checkpoint {
            result = maintenance::write_checkpoint(&self.shared.maintainer());
        }
        // Cached projections are only a speed-up: a failure is a warning.
        if let Err(e) = self.shared.cache.sync() {
            tracing::warn!(error = %e.display_chain(), "batpak: projection cache sync at close failed");
        }
        self.lock = None;
        result.map(|()| Closed)
    }

    /// Headline counters.
    pub fn stats(&self) -> StoreStats {
        let next_seq = self.next_global_sequence();
        // Slots removed by a compaction since open are all below the
        // visible watermark (only sealed segments are compacted).
        let dead = self.shared.index.read().dead_count();
        StoreStats {
            event_count: self.shared.durability.visible().saturating_sub(dead) as usize,
            global_sequence: next_seq,
        }
    }

    fn next_global_sequence(&self) -> u64 {
        match &self.shared.writer {
            Some(w) => w.lock().next_seq,
            None => {
                let index = self.shared.index.read();
                index
                    .len()
                    .checked_sub(1)
                    .map_or(0, |s| index.global_seq(s) + 1)
            }
        }
    }

    /// Detailed figures and what recovery found.
    pub fn diagnostics(&self) -> StoreDiagnostics {
        let s = &self.shared;
        let global_sequence = self.next_global_sequence();
        let index = s.index.read();
        let visible = s.durability.visible();
        let heap = index.heap_bytes();
        let cfg = &s.config;
        let (grown_ahead, grown_on_append) = s.log.growth().get();
        StoreDiagnostics {
            event_count: visible.saturating_sub(index.dead_count()) as usize,
            global_sequence,
            visible_sequence: visible
                .checked_sub(1)
                .map_or(0, |v| index.global_seq(v) + 1),
            data_dir: cfg.data_dir.clone(),
            segment_max_bytes: cfg.segment_max_bytes,
            fd_budget: cfg.fd_budget,
            restart_policy: cfg.writer.restart_policy.clone(),
            index_layout: cfg.index.layout.name(),
            tile_count: 0,
            segment_count: s.log.segment_count(),
            entity_count: index.entity_count(),
            pending_events: (index.len() - visible.min(index.len())) as usize,
            index_heap_bytes: heap,
            index_bytes_per_event: if index.len() == 0 {
                0.0
            } else {
                heap as f64 / f64::from(index.len())
            },
            durable_receipts: cfg.durable_receipts(),
            subscribers: s.subscribers.len(),
            syncs: s.durability.sync_count(),
            sync_mode: cfg.sync.mode,
            poisoned: s.durability.check().err().map(|e| e.to_string()),
            writer_restarts: s.restarts.count(),
            read_only: s.writer.is_none(),
            footers_pending: s.sealer.pending(),
            grown_ahead,
            grown_on_append,
            recovery: s.recovery.clone(),
        }
    }
}

impl<State> Store<State> {
    /// Mark the store closing and end its threads: first the reactors
    /// (see below), then the background threads, each asked to stop before
    /// any is waited for, so each wait is bounded by the step that thread
    /// is in: a sync, one growth step, or the footer in hand plus at most
    /// `writer.shutdown_drain_limit` queued ones.
    fn stop_threads(&mut self) {
        let shared = &self.shared;
        // First the appends of threads that hold no `Store` (reactors): one
        // that has the writer lock finishes its write; later ones see the
        // flag under the lock and write nothing, so nothing is written
        // after the close's final sync and checkpoint, or once the
        // directory lock is released.
        shared
            .closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Waiting cursors (idle reactors among them) wake and end.
        shared.durability.wake_visibility_waiters();
        if let Some(writer) = &shared.writer {
            drop(writer.lock());
        }
        // SPEC: close joins every thread the store started. A busy
        // reactor finishes the trigger in hand (its append is refused).
        shared.reactors.wait_ended(shared);
        shared
            .sealer
            .stop(shared.config.writer.shutdown_drain_limit);
        shared.grower.stop();
        if let Some(f) = &shared.flusher {
            f.stop();
        }
        // Every append has finished or been refused: subscriptions end.
        shared.subscribers.clear();
        for thread in [
            self.flusher_thread.take(),
            self.grower_thread.take(),
            self.sealer_thread.take(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = thread.join();
        }
    }
}

/// Dropping a store without `close()` stops its threads and syncs what it can
/// (best effort); everything acknowledged as durable already is.
impl<State> Drop for Store<State> {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.stop_threads();
        if self.shared.durability.is_crashed() {
            self.shared.sync_after_crash();
        } else if !self.shared.durability.is_poisoned() {
            if let Err(e) = self.shared.sync_all_written() {
                tracing::warn!(error = %e.display_chain(), "batpak: sync on drop failed");
            }
        }
    }
}
