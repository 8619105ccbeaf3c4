//! # batpak-tokio
//!
//! An async front for any batpak backend: [`AsyncStore`] wraps a blocking
//! [`EventStore`] (the file store `batpak::store::Store`, or the
//! PostgreSQL backend's `PgStore`) so that tokio tasks can append, read,
//! and consume cursors and subscriptions as [`futures_core::Stream`]s
//! without blocking the runtime's worker threads.
//!
//! How (ADR 0029): the wrapper owns a small pool of dedicated OS threads
//! fed by one bounded channel. An async call boxes its work, queues it
//! (waiting asynchronously when the queue is full) and awaits a one-shot
//! reply; a pool thread runs it on the blocking store. No task is spawned
//! per call, and many tasks' appends reach the store at the same time, so
//! the file store's group commit still shares one fsync among them. Over
//! a durable file store, single appends skip the pool: an append lane
//! appends every queued one relaxed, covers them with one `sync`, then
//! answers them (ADR 0033), sparing each its two thread hand-offs. A
//! cursor stream gets one reader thread for its whole life (not one per
//! event), which forwards entries over a bounded channel (back-pressure)
//! and ends when the stream is dropped. A subscription stream needs no
//! thread: it reads the subscription's own channel asynchronously.
//!
//! This crate owns only that plumbing: it adds no store behaviour, and
//! every result is exactly what the wrapped store returned. Tokio stays
//! out of the core crate; this crate needs only tokio's one-shot channel,
//! so any runtime that can poll a future works.
//!
//! Shutdown: [`AsyncStore::close`] (or dropping the last handle) stops and
//! joins every thread the wrapper started before it closes (or drops) the
//! store, so no thread outlives the wrapper.
//!
//! ```
//! use batpak::prelude::*;
//! use batpak_tokio::AsyncStore;
//! # let dir = tempfile::tempdir().unwrap();
//! let rt = tokio::runtime::Builder::new_multi_thread().build()?;
//! rt.block_on(async {
//!     let store = AsyncStore::new(Store::open(StoreConfig::new(dir.path()))?)?;
//!     let order = Coordinate::new("order:1", "shop")?;
//!     let r = store.append(&order, EventKind::custom(1, 1), serde_json::json!({"qty": 2})).await?;
//!     assert_eq!(store.get(r.event_id).await?.event.payload["qty"], 2);
//!     store.close().await?;
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use batpak::coordinate::{Coordinate, Region};
use batpak::event::{EventKind, StoredEvent};
use batpak::store::{
    AppendOptions, AppendReceipt, BatchAppendItem, Durability, EventCursor, EventFeed, EventStore,
    IndexEntry, Notification, StoreError, StoreStats, Subscription,
};
use futures_core::Stream;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

/// Pool threads when the caller does not say: enough for 16 concurrent
/// appenders to reach the store together (each pool thread runs one call
/// at a time, so the pool bounds the group-commit group of the appends it
/// runs; single appends to a durable file store go to the append lane
/// instead, whose rounds cover up to 256 appends).
pub const DEFAULT_THREADS: usize = 16;

/// Calls queued for the pool before callers wait (asynchronously) for room.
const QUEUE_CAPACITY: usize = 1024;

/// Entries a cursor's reader thread reads ahead of its stream.
const STREAM_BUFFER: usize = 1024;

/// How long a reader thread waits for new events or for room in its
/// channel before it checks whether it should stop: the bound on how long
/// `close` waits for it.
const READER_CHECK: Duration = Duration::from_millis(20);

type Panic = Box<dyn Any + Send>;
type Job<S> = Box<dyn FnOnce(&S) + Send>;
/// A laned append's first step: append relaxed, and either answer at once
/// (an error, a panic) or return the step that answers once a sync covered
/// the event (its argument: whether the lane's sync succeeded).
type LaneJob<S> = Box<dyn FnOnce(&S) -> Option<Finish<S>> + Send>;
type Finish<S> = Box<dyn FnOnce(&S, bool) + Send>;

/// Threads that append for stores whose `sync` covers relaxed appends
/// (see [`AsyncStore::with_threads`]). One: while it syncs, the next
/// appends gather in its queue; a second lane measured slower, its rounds
/// splitting the group-commit groups (ADR 0033).
const LANES: usize = 1;

/// Most appends one lane covers with one sync.
const LANE_MAX: usize = 256;

/// Names of the threads this crate starts (at most 15 bytes: Linux keeps
/// no more of a thread's name).
const WORKER_THREAD: &str = "bp-tokio-worker";
const READER_THREAD: &str = "bp-tokio-cursor";
const LANE_THREAD: &str = "bp-tokio-lane";

/// An async handle on a blocking store `S`. Cheap to clone: every clone
/// shares one pool of threads and one store.
pub struct AsyncStore<S: EventStore + 'static> {
    inner: Arc<Inner<S>>,
}

impl<S: EventStore + 'static> Clone for AsyncStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S: EventStore + 'static> {
    /// `None` once shut down; dropping it lets the pool threads finish
    /// the queue and exit.
    jobs: Option<flume::Sender<Job<S>>>,
    /// Present when the store's `sync` covers relaxed appends: the lanes'
    /// queue (`None` once shut down, like `jobs`).
    lanes: Option<flume::Sender<LaneJob<S>>>,
    /// Taken by `close`; the pool threads hold their own clones.
    store: Option<Arc<S>>,
    workers: Vec<JoinHandle<()>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
    /// Tells reader threads to stop.
    stopping: Arc<AtomicBool>,
}

impl<S: EventStore + 'static> AsyncStore<S> {
    /// Wrap `store` with [`DEFAULT_THREADS`] pool threads.
    ///
    /// # Errors
    /// `Io` when a thread cannot be started.
    pub fn new(store: S) -> Result<Self, StoreError> {
        Self::with_threads(store, DEFAULT_THREADS)
    }

    /// Wrap `store` with `threads` pool threads (at least 1). Each runs one
    /// call at a time, so `threads` bounds how many pool calls reach the
    /// store at once, and with it how many of their appends one fsync can
    /// cover: make it at least the number of tasks expected to append
    /// concurrently (laned appends, below, are not bounded by it).
    ///
    /// When the store says its `sync` covers relaxed appends
    /// ([`EventStore::sync_covers_relaxed_appends`]: the file store with
    /// durable receipts), single appends that want the store's default or
    /// `Durable` go to one append lane instead (ADR 0033): it takes every
    /// append queued, appends each relaxed, makes them all durable with one
    /// `sync`, and only then answers each caller. Every receipt still
    /// means what it means on the blocking API (the event is durable and
    /// visible), and each append keeps its own CAS, idempotency and error;
    /// the lane only spares the thread hand-offs of one pool call per
    /// append.
    ///
    /// # Errors
    /// `Io` when a thread cannot be started (those already started are
    /// stopped again).
    pub fn with_threads(store: S, threads: usize) -> Result<Self, StoreError> {
        let store = Arc::new(store);
        let (tx, rx) = flume::bounded::<Job<S>>(QUEUE_CAPACITY);
        let (lane_tx, lane_rx) = flume::bounded::<LaneJob<S>>(QUEUE_CAPACITY);
        let laned = store.sync_covers_relaxed_appends();
        let mut inner = Inner {
            jobs: Some(tx),
            lanes: laned.then_some(lane_tx),
            store: Some(store.clone()),
            workers: Vec::new(),
            readers: Mutex::new(Vec::new()),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            let store = store.clone();
            let spawned = std::thread::Builder::new()
                .name(WORKER_THREAD.into())
                .spawn(move || {
                    // Ends when every sender is gone and the queue is empty.
                    while let Ok(job) = rx.recv() {
                        job(&store);
                    }
                });
            // On failure `inner` is dropped, which joins the threads so far.
            inner
                .workers
                .push(spawned.map_err(|e| io_error("start a pool thread", e))?);
        }
        for _ in 0..if laned { LANES } else { 0 } {
            let (rx, store) = (lane_rx.clone(), store.clone());
            let spawned = std::thread::Builder::new()
                .name(LANE_THREAD.into())
                .spawn(move || lane(&*store, &rx));
            inner
                .workers
                .push(spawned.map_err(|e| io_error("start an append lane", e))?);
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Run `f` on a pool thread with the blocking store, and await its
    /// result: the escape hatch for anything this wrapper does not offer
    /// (maintenance, backend-specific methods). A panic in `f` is resumed
    /// in the awaiting task.
    ///
    /// # Errors
    /// `WriterCrashed` if the pool is gone (it is only after shutdown).
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&S) -> R + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<R, Panic>>();
        let job: Job<S> = Box::new(move |store: &S| {
            // A panic is handed to the caller; the pool thread lives on.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| f(store)));
            let _ = reply.send(outcome);
        });
        let jobs = self.inner.jobs.as_ref().ok_or(StoreError::WriterCrashed)?;
        jobs.send_async(job)
            .await
            .map_err(|_| StoreError::WriterCrashed)?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(StoreError::WriterCrashed),
        }
    }

    /// [`EventStore::append`].
    ///
    /// # Errors
    /// As the store's `append`; `WriterCrashed` if the pool is gone.
    pub async fn append<T>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: T,
    ) -> Result<AppendReceipt, StoreError>
    where
        T: Serialize + Send + 'static,
    {
        self.append_with_options(coord, kind, payload, AppendOptions::new())
            .await
    }

    /// [`EventStore::append_with_options`].
    ///
    /// # Errors
    /// As the store's `append_with_options`.
    pub async fn append_with_options<T>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: T,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError>
    where
        T: Serialize + Send + 'static,
    {
        let coord = coord.clone();
        match &self.inner.lanes {
            Some(lanes) if opts.durability != Some(Durability::Relaxed) => {
                let job = move |s: &S| {
                    let relaxed = opts.with_durability(Durability::Relaxed);
                    s.append_with_options(&coord, kind, &payload, relaxed)
                };
                laned(lanes, job).await
            }
            _ => {
                self.run(move |s| s.append_with_options(&coord, kind, &payload, opts))
                    .await?
            }
        }
    }

    /// [`EventStore::append_reaction`].
    ///
    /// # Errors
    /// As the store's `append_reaction`.
    pub async fn append_reaction<T>(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: T,
        correlation_id: u128,
        causation_id: u128,
    ) -> Result<AppendReceipt, StoreError>
    where
        T: Serialize + Send + 'static,
    {
        let opts = AppendOptions::new()
            .with_correlation(correlation_id)
            .with_causation(causation_id);
        self.append_with_options(coord, kind, payload, opts).await
    }

    /// [`EventStore::append_batch`].
    ///
    /// # Errors
    /// As the store's `append_batch`.
    pub async fn append_batch(
        &self,
        items: Vec<BatchAppendItem>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        self.run(move |s| s.append_batch(items)).await?
    }

    /// [`EventStore::append_reaction_batch`].
    ///
    /// # Errors
    /// As the store's `append_reaction_batch`.
    pub async fn append_reaction_batch(
        &self,
        correlation_id: u128,
        causation_id: u128,
        items: Vec<BatchAppendItem>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        self.run(move |s| s.append_reaction_batch(correlation_id, causation_id, items))
            .await?
    }

    /// [`EventStore::get`].
    ///
    /// # Errors
    /// As the store's `get`.
    pub async fn get(&self, event_id: u128) -> Result<StoredEvent<Value>, StoreError> {
        self.run(move |s| s.get(event_id)).await?
    }

    /// [`EventStore::query`].
    ///
    /// # Errors
    /// As the store's `query`.
    pub async fn query(&self, region: &Region) -> Result<Vec<IndexEntry>, StoreError> {
        let region = region.clone();
        self.run(move |s| s.query(&region)).await?
    }

    /// [`EventStore::stream`].
    ///
    /// # Errors
    /// As the store's `stream`.
    pub async fn stream(&self, entity: &str) -> Result<Vec<IndexEntry>, StoreError> {
        let entity = entity.to_owned();
        self.run(move |s| s.stream(&entity)).await?
    }

    /// [`EventStore::by_correlation`].
    ///
    /// # Errors
    /// As the store's `by_correlation`.
    pub async fn by_correlation(
        &self,
        correlation_id: u128,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        self.run(move |s| s.by_correlation(correlation_id)).await?
    }

    /// [`EventStore::children`].
    ///
    /// # Errors
    /// As the store's `children`.
    pub async fn children(&self, event_id: u128) -> Result<Vec<IndexEntry>, StoreError> {
        self.run(move |s| s.children(event_id)).await?
    }

    /// [`EventStore::walk_ancestors`].
    ///
    /// # Errors
    /// As the store's `walk_ancestors`.
    pub async fn walk_ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Result<Vec<StoredEvent<Value>>, StoreError> {
        self.run(move |s| s.walk_ancestors(event_id, limit)).await?
    }

    /// [`EventStore::stats`].
    ///
    /// # Errors
    /// As the store's `stats`.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.run(EventStore::stats).await?
    }

    /// [`EventStore::sync`].
    ///
    /// # Errors
    /// As the store's `sync`.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.run(EventStore::sync).await?
    }

    /// Stop every thread this wrapper started (calls already queued run
    /// first; cursor streams end), then close the store with its own
    /// `close` on a thread of its own, so the runtime is not blocked.
    ///
    /// # Errors
    /// `Configuration` when other clones of this handle are still alive
    /// (the store stays open until the last one is dropped); otherwise as
    /// the store's `close`.
    pub async fn close(self) -> Result<(), StoreError> {
        let inner = Arc::try_unwrap(self.inner).map_err(|_| {
            StoreError::Configuration(
                "AsyncStore::close: other clones of this handle are still alive".into(),
            )
        })?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        // Joining threads and closing the store block: not on the runtime.
        let closer = std::thread::Builder::new()
            .name("bp-tokio-close".into())
            .spawn(move || {
                let _ = reply.send(inner.shut_down_and_close());
            })
            .map_err(|e| io_error("start the closing thread", e))?;
        let closed = answer.await.unwrap_or(Err(StoreError::WriterCrashed));
        // It has sent its answer and is ending: this join does not wait.
        let _ = closer.join();
        closed
    }
}

impl<S: EventFeed> AsyncStore<S> {
    /// A guaranteed cursor over `region` (every event once, in order,
    /// including later ones) that starts after global sequence `after`
    /// (`None`: from the beginning), as a [`Stream`]. One reader thread
    /// serves it for its whole life, reading ahead at most a bounded
    /// number of entries; it stops when the stream is dropped or the
    /// wrapper shuts down.
    ///
    /// # Errors
    /// `Io` when the reader thread cannot be started.
    pub fn cursor_stream(
        &self,
        region: &Region,
        after: Option<u64>,
    ) -> Result<CursorStream, StoreError> {
        let store = self.inner.store.clone().ok_or(StoreError::WriterCrashed)?;
        let (tx, rx) = flume::bounded(STREAM_BUFFER);
        let stopping = self.inner.stopping.clone();
        let region = region.clone();
        let reader = std::thread::Builder::new()
            .name(READER_THREAD.into())
            .spawn(move || {
                let cursor = EventFeed::cursor_from(&*store, &region, after);
                // The cursor does not need the handle; `close` must be
                // able to take the store back once the pool is stopped.
                drop(store);
                forward(cursor, &tx, &stopping);
            })
            .map_err(|e| io_error("start a cursor reader thread", e))?;
        let mut readers = self.inner.readers.lock();
        readers.retain(|r| !r.is_finished());
        readers.push(reader);
        Ok(CursorStream {
            entries: rx.into_stream(),
            position: after,
        })
    }

    /// A lossy subscription to events of `region` committed from now on
    /// (see [`EventFeed::subscribe_lossy`]), as a [`Stream`]. It needs no
    /// thread: it awaits the subscription's own channel. It ends when the
    /// store closes.
    ///
    /// # Errors
    /// As the store's `subscribe_lossy`.
    pub async fn subscribe(&self, region: &Region) -> Result<SubscriptionStream, StoreError> {
        let region = region.clone();
        let subscription = self.run(move |s| s.subscribe_lossy(&region)).await??;
        Ok(SubscriptionStream {
            notes: subscription.receiver().clone().into_stream(),
            subscription,
        })
    }
}

impl<S: EventStore + 'static> Inner<S> {
    /// Stop the pool and the readers and join them all.
    fn shut_down(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // The pool threads and lanes finish what is queued, then see their
        // channel close.
        self.jobs = None;
        self.lanes = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        for reader in self.readers.get_mut().drain(..) {
            let _ = reader.join();
        }
    }

    fn shut_down_and_close(mut self) -> Result<(), StoreError> {
        self.shut_down();
        let store = self.store.take().ok_or(StoreError::WriterCrashed)?;
        // Every thread holding a clone has been joined.
        match Arc::try_unwrap(store) {
            Ok(store) => store.close(),
            Err(_) => Err(StoreError::WriterCrashed),
        }
    }
}

/// Queue a laned append (`append` runs it relaxed) and await its answer,
/// which comes once a lane's sync covered the event.
async fn laned<S: EventStore + 'static>(
    lanes: &flume::Sender<LaneJob<S>>,
    append: impl FnOnce(&S) -> Result<AppendReceipt, StoreError> + Send + 'static,
) -> Result<AppendReceipt, StoreError> {
    type Answer = Result<Result<AppendReceipt, StoreError>, Panic>;
    let (reply, answer) = tokio::sync::oneshot::channel::<Answer>();
    let job: LaneJob<S> = Box::new(move |s: &S| {
        let appended = std::panic::catch_unwind(AssertUnwindSafe(|| append(s)));
        match appended {
            Ok(Ok(receipt)) => Some(Box::new(move |s: &S, synced: bool| {
                let answer = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    answer_after_round(s, receipt, synced)
                }));
                let _ = reply.send(answer);
            })),
            Ok(Err(e)) => {
                let _ = reply.send(Ok(Err(e)));
                None
            }
            Err(panic) => {
                let _ = reply.send(Err(panic));
                None
            }
        }
    });
    lanes
        .send_async(job)
        .await
        .map_err(|_| StoreError::WriterCrashed)?;
    match answer.await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(StoreError::WriterCrashed),
    }
}

/// The answer for an appended event once its lane round's sync ran: the
/// receipt when the sync succeeded, or when it failed but the event is
/// durable after all (another sync covered it before the failure; such a
/// store shows relaxed events only once they are durable, see
/// [`EventStore::sync_covers_relaxed_appends`]); else this caller's own
/// sync attempt (its error, or its receipt if that succeeds).
fn answer_after_round<S: EventStore>(
    store: &S,
    receipt: AppendReceipt,
    synced: bool,
) -> Result<AppendReceipt, StoreError> {
    if synced || store.get(receipt.event_id).is_ok() {
        return Ok(receipt);
    }
    store.sync().map(|()| receipt)
}

/// An append lane: take every queued append (up to [`LANE_MAX`]), run each
/// (relaxed), cover them with one `sync`, then answer them.
fn lane<S: EventStore>(store: &S, jobs: &flume::Receiver<LaneJob<S>>) {
    // Ends when every sender is gone and the queue is empty.
    while let Ok(first) = jobs.recv() {
        let mut waiting: Vec<Finish<S>> = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            waiting.extend(job(store));
            next = if waiting.len() < LANE_MAX {
                jobs.try_recv().ok()
            } else {
                None
            };
        }
        if waiting.is_empty() {
            continue;
        }
        let synced =
            std::panic::catch_unwind(AssertUnwindSafe(|| store.sync().is_ok())).unwrap_or(false);
        for finish in waiting {
            finish(store, synced);
        }
    }
}

impl<S: EventStore + 'static> Drop for Inner<S> {
    fn drop(&mut self) {
        // The last handle went without `close`: still no thread outlives
        // the wrapper. The store is dropped (its own `Drop` releases it) on
        // a thread of its own too, as every other call of the store runs
        // off the runtime: a backend's `Drop` blocks (the file store syncs
        // and joins its threads), and a blocking client may refuse to run
        // on a runtime thread at all (the synchronous PostgreSQL client
        // refuses to connect there). This thread still waits for it.
        if self.store.is_none() && self.workers.is_empty() {
            // `close` did it all.
            return;
        }
        let this = Mutex::new(self);
        let stop = || {
            let mut inner = this.lock();
            inner.shut_down();
            drop(inner.store.take());
        };
        std::thread::scope(|scope| {
            let spawned = std::thread::Builder::new()
                .name("bp-tokio-close".into())
                .spawn_scoped(scope, stop);
            match spawned {
                // A real join: the thread is gone, not just done.
                Ok(thread) => {
                    let _ = thread.join();
                }
                // No thread to spare: do it here rather than not at all.
                Err(_) => stop(),
            }
        });
    }
}

/// The body of a cursor's reader thread: forward entries until the stream
/// is dropped or the wrapper stops.
fn forward<C: EventCursor>(
    mut cursor: C,
    tx: &flume::Sender<Result<IndexEntry, StoreError>>,
    stopping: &AtomicBool,
) {
    let stop = || stopping.load(Ordering::Acquire) || tx.is_disconnected();
    while !stop() {
        let items = match cursor.poll_batch(STREAM_BUFFER) {
            Ok(batch) if !batch.is_empty() => batch.into_iter().map(Ok).collect(),
            Ok(_) => match cursor.wait_next(READER_CHECK) {
                Ok(Some(entry)) => vec![Ok(entry)],
                Ok(None) => continue,
                Err(e) => vec![Err(e)],
            },
            Err(e) => vec![Err(e)],
        };
        let failed = items.last().is_some_and(Result::is_err);
        for item in items {
            if !send(tx, item, &stop) {
                return;
            }
        }
        if failed {
            // The cursor's place is unchanged: try again, but not in a
            // tight loop against a backend that is down.
            std::thread::sleep(READER_CHECK);
        }
    }
}

/// Send with back-pressure, giving up when told to stop.
fn send<T>(tx: &flume::Sender<T>, mut item: T, stop: &impl Fn() -> bool) -> bool {
    loop {
        match tx.send_timeout(item, READER_CHECK) {
            Ok(()) => return true,
            Err(flume::SendTimeoutError::Timeout(back)) if !stop() => item = back,
            Err(_) => return false,
        }
    }
}

fn io_error(op: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(std::io::Error::new(e.kind(), format!("{op}: {e}")))
}

/// A guaranteed cursor as a [`Stream`] of index entries (see
/// [`AsyncStore::cursor_stream`]). An error item leaves the cursor's place
/// unchanged; the stream goes on after it.
pub struct CursorStream {
    entries: flume::r#async::RecvStream<'static, Result<IndexEntry, StoreError>>,
    position: Option<u64>,
}

impl CursorStream {
    /// Global sequence of the last entry this stream yielded (or the
    /// `after` it was created with): save it to resume with
    /// [`AsyncStore::cursor_stream`]. Entries read ahead but not yet
    /// yielded do not count.
    #[must_use]
    pub fn position(&self) -> Option<u64> {
        self.position
    }
}

impl Stream for CursorStream {
    type Item = Result<IndexEntry, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.entries).poll_next(cx);
        if let Poll::Ready(Some(Ok(entry))) = &polled {
            self.position = Some(entry.global_sequence);
        }
        polled
    }
}

/// A lossy subscription as a [`Stream`] of notifications (see
/// [`AsyncStore::subscribe`]).
pub struct SubscriptionStream {
    notes: flume::r#async::RecvStream<'static, Notification>,
    subscription: Subscription,
}

impl SubscriptionStream {
    /// Notifications dropped so far because this subscriber's buffer was full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.subscription.dropped()
    }
}

impl Stream for SubscriptionStream {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        Pin::new(&mut self.notes).poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::answer_after_round;
    use batpak::prelude::*;
    use batpak::store::{FaultAction, FaultInjector, InjectionPoint};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Fails every fsync once armed.
    #[derive(Default)]
    struct FailingSyncs(AtomicBool);

    impl FaultInjector for FailingSyncs {
        fn on(&self, point: InjectionPoint) -> FaultAction {
            if point == InjectionPoint::Sync && self.0.load(Ordering::Acquire) {
                FaultAction::Fail
            } else {
                FaultAction::Continue
            }
        }
    }

    #[test]
    fn after_a_failed_sync_a_durable_event_keeps_its_receipt_and_an_unsynced_one_errs() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(FailingSyncs::default());
        let mut cfg = StoreConfig::new(dir.path());
        cfg.fault_injector = Some(faults.clone());
        let store = Store::open(cfg).unwrap();
        assert!(store.sync_covers_relaxed_appends());
        let c = Coordinate::new("order:1", "t").unwrap();
        let kind = EventKind::custom(1, 1);
        let durable = store.append(&c, kind, &1).unwrap();
        faults.0.store(true, Ordering::Release);
        let relaxed = store
            .append_with_options(
                &c,
                kind,
                &2,
                AppendOptions::new().with_durability(Durability::Relaxed),
            )
            .unwrap();
        assert!(store.sync().is_err(), "the armed fsync fails");
        // The lane's answers after that failed round.
        let kept = answer_after_round(&store, durable, false).unwrap();
        assert_eq!(kept.event_id, durable.event_id);
        assert!(answer_after_round(&store, relaxed, false).is_err());
        assert!(store.get(relaxed.event_id).is_err(), "never shown unsynced");
    }
}
