//! # batpak-postgres
//!
//! A PostgreSQL backend for batpak: one event store that many processes on
//! many hosts append to and read at once, with the same API and meaning as
//! the embedded file store ([`batpak::store::Store`]) through the shared
//! [`EventStore`] trait.
//!
//! ```no_run
//! use batpak::prelude::*;
//! use batpak_postgres::{PgConfig, PgStore};
//!
//! let store = PgStore::open(PgConfig::new("postgres://app@db/events").with_schema("orders"))?;
//! let order = Coordinate::new("order:42", "tenant:acme")?;
//! let placed = store.append(&order, EventKind::custom(1, 1), &serde_json::json!({"sku": "tea"}))?;
//! store.append_with_options(&order, EventKind::custom(1, 2), &"paid",
//!                           AppendOptions::new().with_cas(0))?;
//! assert_eq!(store.stream("order:42")?.len(), 2);
//! assert_eq!(store.get(placed.event_id)?.event.payload["sku"], "tea");
//! store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! What differs from the file store, deliberately (docs/postgres.md):
//! global sequences (`AppendReceipt::sequence`, `IndexEntry::global_sequence`)
//! are *positions* derived from the writing transaction's id: strictly
//! increasing in commit order per entity and per writer, sparse rather than
//! dense, and safe to resume from only through [`PgStore::read_stable`];
//! `disk_pos` is all zeros; reads return `Result`.
//!
//! | module    | owns                                                        |
//! |-----------|-------------------------------------------------------------|
//! | `config`  | [`PgConfig`] and its validation                             |
//! | `pool`    | the r2d2 pool, session settings, prepared statements        |
//! | `schema`  | tables, indexes, the append function, migrations            |
//! | `write`   | the append path: planning, the append loop, retries         |
//! | `read`    | reads, region queries, the stable read                      |
//! | `cursor`  | guaranteed cursors: pages below the stable bound            |
//! | `feed`    | wake-ups (NOTIFY, LISTEN, fallback polling), subscriptions  |
//! | `reactor` | reactors: election, checkpoints, trigger answering          |
//! | `project` | projections through an optional projection cache            |
//! | `verify`  | checking every chain                                        |
//! | `error`   | mapping database failures to `StoreError`                   |
//! | `testing` | a throwaway cluster for tests (feature `test-support`)      |

#![warn(missing_docs)]

mod config;
mod cursor;
mod error;
mod feed;
mod pool;
mod project;
mod reactor;
mod read;
mod schema;
#[cfg(feature = "test-support")]
pub mod testing;
mod typed;
mod verify;
mod write;

#[cfg(feature = "test-support")]
pub use config::BeforeCommitHook;
pub use config::{PgConfig, DEFAULT_SCHEMA};
pub use cursor::PgCursor;
pub use reactor::{default_reactor_name, ELECTION_POLL};
pub use read::StableRead;
pub use schema::SCHEMA_VERSION;
pub use verify::{PgProblem, PgProblemKind, PgVerifyReport};

use batpak::coordinate::{Coordinate, KindFilter, Region};
use batpak::event::{
    EventKind, EventSourced, Reactive, Schema, StoredEvent, TypedError, TypedEvent, VersionedEvent,
};
use batpak::store::codec;
use batpak::store::{
    AppendOptions, AppendReceipt, BatchAppendItem, EventFeed, EventStore, Freshness, IndexEntry,
    ProjectionCache, StoreError, StoreStats, Subscription,
};
use feed::Feed;
use parking_lot::{Mutex, RwLock};
use pool::{Conn, Pool};
use schema::Sql;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use write::Tail;

/// An event store in a PostgreSQL schema. Every method blocks; the handle is
/// `Send + Sync` (share it with `Arc`) and holds a pool of connections.
/// Any number of handles, in any number of processes and hosts, may use the
/// same schema at once.
pub struct PgStore {
    pool: Pool,
    config: PgConfig,
    sql: Arc<Sql>,
    /// Newest known state of entities this handle appended to (write.rs).
    tails: Mutex<HashMap<String, Tail>>,
    schema_was: u32,
    /// Delivery: wake-ups, subscriptions, the delivery threads (feed.rs).
    feed: Arc<Feed>,
    /// Where projections are cached, if anywhere (project.rs).
    cache: Option<Box<dyn ProjectionCache>>,
    /// Typed events and upcasters (`EventStore::register`); replaced whole.
    types: RwLock<Arc<Schema>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Waiting cursors return, subscriptions end, threads exit.
        self.feed.close();
    }
}

/// What [`PgStore::describe`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgInfo {
    /// The store's schema.
    pub schema: String,
    /// Its schema version.
    pub schema_version: u32,
    /// Events stored.
    pub event_count: u64,
    /// Entities with at least one event.
    pub entity_count: u64,
    /// One past the highest position.
    pub next_position: u64,
    /// Every event below this position has committed or never will.
    pub stable_position: u64,
    /// Bytes of the tables and their indexes.
    pub table_bytes: u64,
}

/// A failed use of a pooled connection: no connection, or a database error.
pub(crate) enum WithConn {
    Pool(StoreError),
    Db(postgres::Error),
}

impl PgStore {
    /// Connect, and create the schema or migrate it to [`SCHEMA_VERSION`].
    ///
    /// # Errors
    /// `Configuration` for invalid settings or connection string,
    /// `Unavailable` when the server cannot be reached within
    /// `connect_timeout`, `SchemaTooNew` when a newer batpak wrote the
    /// schema, `Backend` when the server refuses (permissions, ...).
    pub fn open(config: PgConfig) -> Result<Self, StoreError> {
        config.validate()?;
        let pool = pool::build(&config)?;
        let schema_was = {
            let mut conn = pool.get().map_err(error::pool_error)?;
            schema::migrate(&mut conn.client, &config.schema)?
        };
        Self::assemble(config, pool, schema_was)
    }

    /// [`PgStore::open`] with a projection cache: `project` and projection
    /// watchers keep folded values in `cache` and honour [`Freshness`] as
    /// the file store does (watermarks are positions).
    ///
    /// # Errors
    /// As [`PgStore::open`].
    pub fn open_with_cache(
        config: PgConfig,
        cache: impl ProjectionCache,
    ) -> Result<Self, StoreError> {
        let mut store = Self::open(config)?;
        store.cache = Some(Box::new(cache));
        Ok(store)
    }

    fn assemble(config: PgConfig, pool: Pool, schema_was: u32) -> Result<Self, StoreError> {
        let sql = Arc::new(Sql::new(&config.schema));
        let feed = Feed::new(&config, pool.clone(), sql.clone())?;
        Ok(Self {
            sql,
            pool,
            config,
            tails: Mutex::new(HashMap::new()),
            schema_was,
            types: RwLock::new(Arc::default()),
            feed,
            cache: None,
        })
    }

    /// Open the store in `config.schema` only if it exists there, without
    /// creating or migrating anything: for tools that inspect a store.
    /// `Ok(None)` when the schema holds no batpak store.
    ///
    /// # Errors
    /// As [`PgStore::open`]; `SchemaTooNew` for a newer schema, and
    /// `Configuration` for an older one (open it once with
    /// [`PgStore::open`] to migrate it).
    pub fn open_existing(config: PgConfig) -> Result<Option<Self>, StoreError> {
        config.validate()?;
        let pool = pool::build(&config)?;
        let found = {
            let mut conn = pool.get().map_err(error::pool_error)?;
            match schema::version(&mut conn.client, &config.schema)? {
                None => return Ok(None),
                Some(v) => v,
            }
        };
        if found > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            return Err(StoreError::Configuration(format!(
                "the store in schema {} is at version {found}; open it for writing once to \
                 migrate it to {SCHEMA_VERSION}",
                config.schema
            )));
        }
        Self::assemble(config, pool, found).map(Some)
    }

    /// Counters for tools: events, entities, the next position and the
    /// stable bound (see [`PgStore::read_stable`]).
    ///
    /// # Errors
    /// `Unavailable`, `Backend`.
    pub fn describe(&self) -> Result<PgInfo, StoreError> {
        let s = &self.sql.schema;
        let sql = format!(
            "SELECT coalesce(sum(clock + 1), 0)::bigint, count(*),
                    (SELECT coalesce(max(position) + 1, 0) FROM {s}.events),
                    pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20,
                    (SELECT coalesce(max(version), 0) FROM {s}.schema_version),
                    pg_total_relation_size('{s}.events') + pg_total_relation_size('{s}.streams')
             FROM {s}.streams"
        );
        let row = self.db(|c| c.client.query_one(&sql, &[]))?;
        let num = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = row
                .try_get(i)
                .map_err(|e| StoreError::Backend(Box::new(error::DbFailure(e))))?;
            u64::try_from(v).map_err(|_| StoreError::Backend(format!("negative count {v}").into()))
        };
        let version: i32 = row
            .try_get(4)
            .map_err(|e| StoreError::Backend(Box::new(error::DbFailure(e))))?;
        Ok(PgInfo {
            schema: s.clone(),
            schema_version: u32::try_from(version).unwrap_or(0),
            event_count: num(0)?,
            entity_count: num(1)?,
            next_position: num(2)?,
            stable_position: num(3)?,
            table_bytes: num(5)?,
        })
    }

    /// The schema version found at open (0: the schema was created then).
    pub fn schema_version_at_open(&self) -> u32 {
        self.schema_was
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &PgConfig {
        &self.config
    }

    /// Run `f` on a pooled connection.
    pub(crate) fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, WithConn> {
        with_conn(&self.pool, f)
    }

    /// Run a read `f`; a connection found dead when used is replaced once
    /// (reads change nothing, so repeating one is safe).
    pub(crate) fn db<T>(
        &self,
        f: impl FnMut(&mut Conn) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        read_with(&self.pool, f)
    }

    /// Check every entity's chain: clocks dense from 0, every `prev_hash`
    /// the previous event's hash, every event hash and content hash
    /// recomputed, every payload readable, positions increasing with the
    /// clock, and each entity's row in `streams` at its newest event. Reads
    /// one consistent snapshot while appends continue.
    ///
    /// # Errors
    /// `Unavailable` or `Backend` when the database cannot be read (damage
    /// is a [`PgProblem`] in the report, not an error).
    pub fn verify(&self) -> Result<PgVerifyReport, StoreError> {
        verify::verify(self)
    }
}

/// Run `f` on a connection of `pool`; a connection the error shows dead is
/// marked broken, so the pool never hands it out again.
pub(crate) fn with_conn<T>(
    pool: &Pool,
    f: impl FnOnce(&mut Conn) -> Result<T, postgres::Error>,
) -> Result<T, WithConn> {
    let mut conn = pool
        .get()
        .map_err(|e| WithConn::Pool(error::pool_error(e)))?;
    let result = f(&mut conn);
    match &result {
        Ok(_) => conn.touch(),
        Err(e) if error::ends_session(e) => conn.broken = true,
        Err(_) => {}
    }
    result.map_err(WithConn::Db)
}

/// Run a read `f` on a connection of `pool`. A connection found dead when
/// used is dropped from the pool and the read repeated on another (reads
/// change nothing, so repeating one is safe), as many times as the pool has
/// connections, so a server that ended every session (a restart, a
/// failover, an administrator) costs reconnecting, not an error.
pub(crate) fn read_with<T>(
    pool: &Pool,
    mut f: impl FnMut(&mut Conn) -> Result<T, postgres::Error>,
) -> Result<T, StoreError> {
    let attempts = pool.max_size().saturating_add(1);
    let mut tried = 0;
    loop {
        tried += 1;
        match with_conn(pool, &mut f) {
            Ok(v) => return Ok(v),
            Err(WithConn::Db(e)) if error::ends_session(&e) && tried < attempts => continue,
            Err(WithConn::Pool(e)) => return Err(e),
            Err(WithConn::Db(e)) => return Err(error::store_error(e)),
        }
    }
}

impl EventStore for PgStore {
    fn append_with_options(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        let event = codec::prepare_event(coord, kind, payload, opts, &self.config.limits())?;
        let receipts = self
            .write(std::slice::from_ref(&event))
            .map_err(|e| e.error)?;
        receipts
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Backend("append returned no receipt".into()))
    }

    fn append_batch(&self, items: Vec<BatchAppendItem>) -> Result<Vec<AppendReceipt>, StoreError> {
        let events = codec::prepare_batch(items, None, &self.config.limits())?;
        self.write(&events)
            .map_err(write::AppendError::into_batch_error)
    }

    fn append_reaction_batch(
        &self,
        correlation_id: u128,
        causation_id: u128,
        items: Vec<BatchAppendItem>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        let events = codec::prepare_batch(
            items,
            Some((correlation_id, causation_id)),
            &self.config.limits(),
        )?;
        self.write(&events)
            .map_err(write::AppendError::into_batch_error)
    }

    fn import_versioned_events(
        &self,
        events: Vec<VersionedEvent>,
    ) -> Result<Vec<AppendReceipt>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let events = codec::prepare_imports(events, &self.config.limits())?;
        let batch = events.len() > 1;
        self.write(&events)
            .map_err(|e| if batch { e.into_batch_error() } else { e.error })
    }

    fn get(&self, event_id: u128) -> Result<StoredEvent<Value>, StoreError> {
        self.get_event(event_id)
    }

    fn query(&self, region: &Region) -> Result<Vec<IndexEntry>, StoreError> {
        self.query_region(region)
    }

    fn stream(&self, entity: &str) -> Result<Vec<IndexEntry>, StoreError> {
        self.stream_entries(entity)
    }

    fn by_correlation(&self, correlation_id: u128) -> Result<Vec<IndexEntry>, StoreError> {
        self.correlated(correlation_id)
    }

    fn children(&self, event_id: u128) -> Result<Vec<IndexEntry>, StoreError> {
        self.caused_by(event_id)
    }

    fn walk_ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Result<Vec<StoredEvent<Value>>, StoreError> {
        self.ancestors(event_id, limit)
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.counts()
    }

    /// Every receipt already means the commit is durable on the server.
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn close(self) -> Result<(), StoreError> {
        // The delivery threads stop; dropping the pool closes its
        // connections; nothing is pending.
        self.feed.close_and_join();
        drop(self);
        Ok(())
    }

    /// The entity's relevant events up to its newest one, through the
    /// projection cache when the store has one (see project.rs).
    fn schema(&self) -> Arc<Schema> {
        self.types.read().clone()
    }

    fn update_schema(
        &self,
        change: &mut dyn FnMut(&mut Schema) -> Result<(), TypedError>,
    ) -> Result<(), StoreError> {
        let mut current = self.types.write();
        let mut next = (**current).clone();
        change(&mut next)?;
        *current = Arc::new(next);
        Ok(())
    }

    fn append_versioned(
        &self,
        coord: &Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        payload_version: u16,
        opts: AppendOptions,
    ) -> Result<AppendReceipt, StoreError> {
        let mut event = codec::prepare_event(coord, kind, payload, opts, &self.config.limits())?;
        event.payload_version = payload_version.max(1);
        let receipts = self
            .write(std::slice::from_ref(&event))
            .map_err(|e| e.error)?;
        receipts
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Backend("append returned no receipt".into()))
    }

    fn get_versioned(&self, event_id: u128) -> Result<VersionedEvent, StoreError> {
        self.get_versioned_event(event_id)
    }

    fn get_as<T: TypedEvent>(&self, event_id: u128) -> Result<StoredEvent<T>, StoreError> {
        self.get_typed_event(event_id)
    }

    fn events_as<'a, T: TypedEvent>(
        &'a self,
        region: &Region,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent<T>, StoreError>> + 'a> {
        let schema = self.schema();
        let region = region.clone().with_fact(KindFilter::Exact(T::KIND));
        let decode = Box::new(move |row: &postgres::Row| read::typed::<T>(row, &schema));
        Box::new(typed::PgEvents::region(self, &region, decode))
    }

    fn stream_events_as<'a, T: TypedEvent>(
        &'a self,
        entity: &str,
    ) -> Box<dyn Iterator<Item = Result<StoredEvent<T>, StoreError>> + 'a> {
        let schema = self.schema();
        let decode = Box::new(move |row: &postgres::Row| read::typed::<T>(row, &schema));
        Box::new(typed::PgEvents::entity(self, entity, Some(T::KIND), decode))
    }

    fn events_versioned<'a>(
        &'a self,
        region: &Region,
    ) -> Box<dyn Iterator<Item = Result<VersionedEvent, StoreError>> + 'a> {
        Box::new(typed::PgEvents::region(
            self,
            region,
            Box::new(read::versioned),
        ))
    }

    fn stream_events_versioned<'a>(
        &'a self,
        entity: &str,
    ) -> Box<dyn Iterator<Item = Result<VersionedEvent, StoreError>> + 'a> {
        Box::new(typed::PgEvents::entity(
            self,
            entity,
            None,
            Box::new(read::versioned),
        ))
    }

    fn project<T>(&self, entity: &str, freshness: &Freshness) -> Result<Option<T>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + 'static,
    {
        match self.newest_relevant_position::<T>(entity)? {
            Some(latest) => self.project_through_position(entity, freshness, latest),
            None => Ok(T::from_events(&[])),
        }
    }
}

impl PgStore {
    /// A guaranteed cursor over `region` from the beginning of history
    /// (see [`PgCursor`]).
    pub fn cursor_guaranteed(&self, region: &Region) -> PgCursor {
        self.cursor_from(region, None)
    }

    /// A guaranteed cursor over `region` that starts after position `after`
    /// (`None`: from the beginning), to resume from a saved
    /// [`PgCursor::position`], in this process or any other.
    pub fn cursor_from(&self, region: &Region, after: Option<u64>) -> PgCursor {
        PgCursor::new(self.feed.clone(), region, after)
    }

    /// A lossy subscription to events of `region` that commit from now on,
    /// in any process (see [`Subscription`]): the listener thread reads new
    /// stable events once for all subscribers of this handle and offers
    /// each to every subscriber whose region it matches, never waiting; a
    /// full buffer (`broadcast_capacity`) drops and counts. It ends when the
    /// store closes.
    ///
    /// # Errors
    /// `Unavailable`, `Backend` (reading the stable bound that "now" is).
    pub fn subscribe_lossy(&self, region: &Region) -> Result<Subscription, StoreError> {
        self.feed.subscribe(region)
    }

    /// Lossy subscribers registered on this handle.
    pub fn subscriber_count(&self) -> usize {
        self.feed.subscribers()
    }

    /// Whether this handle's listening connection is up, so that commits of
    /// other processes wake its cursors at once (otherwise they are found
    /// within `poll_interval`). Started by the first cursor that waits or
    /// the first subscription.
    pub fn is_listening(&self) -> bool {
        self.feed.is_listening()
    }
}

impl EventFeed for PgStore {
    type Cursor = PgCursor;

    fn cursor_from(&self, region: &Region, after: Option<u64>) -> PgCursor {
        PgStore::cursor_from(self, region, after)
    }

    fn subscribe_lossy(&self, region: &Region) -> Result<Subscription, StoreError> {
        PgStore::subscribe_lossy(self, region)
    }

    fn react_loop<R>(
        self: &Arc<Self>,
        region: &Region,
        reactor: R,
    ) -> Result<std::thread::JoinHandle<()>, StoreError>
    where
        R: Reactive<Value> + Send + 'static,
    {
        PgStore::react_loop(self, region, reactor)
    }

    fn newest_relevant<T>(&self, entity: &str) -> Result<Option<u64>, StoreError>
    where
        T: EventSourced<Value> + 'static,
    {
        self.newest_relevant_position::<T>(entity)
    }

    fn project_through<T>(
        &self,
        entity: &str,
        freshness: &Freshness,
        through: u64,
    ) -> Result<Option<T>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + 'static,
    {
        self.project_through_position(entity, freshness, through)
    }
}
