//! The append path: plan clocks, times and hashes on the caller's thread
//! from the entity states it expects, then write everything with one
//! statement ([`crate::schema::APPEND`]) that checks idempotency keys, locks
//! the entities' rows in entity order, advances each only from the
//! expected state, and writes the events, or aborts whole. Writers of
//! different entities never wait for each other.
//!
//! Expected states come from a per-store cache of entity tails (each append
//! leaves its entity's new tail there), so a process that keeps appending to
//! an entity pays one round trip per append; an entity it has not seen is
//! guessed empty, and a wrong guess costs an aborted statement and a read.
//! After two lost races an append stops hoping: in its own transaction it
//! locks the rows first, reads their states, plans from them and writes;
//! nobody can move them in between, so it wins.
//!
//! Why positions from transaction ids never let a reader pass an event that
//! will still commit below it, and why an entity's positions increase with
//! its clock: ADR 0018 and docs/postgres.md.

use crate::error::{classify_write, Failure};
use crate::read::position;
use crate::PgStore;
use batpak::store::codec::{self, ChainInput, EntityTime, PreparedEvent};
use batpak::store::{AppendReceipt, BatchStage, DiskPos, Durability, StoreError};
use postgres::types::ToSql;
use postgres::Row;
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

/// An entity's newest event, as far as an append knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(crate) clock: u32,
    pub(crate) hash: [u8; 32],
    pub(crate) time: EntityTime,
}

/// Most entity tails a store remembers; past it the cache starts over
/// (a forgotten entity costs one extra round trip on its next append).
const TAIL_CACHE_MAX: usize = 65_536;

/// Why an append failed: which item, at which step.
pub(crate) struct AppendError {
    pub(crate) item: usize,
    pub(crate) stage: BatchStage,
    pub(crate) error: StoreError,
}

impl AppendError {
    fn at(item: usize, stage: BatchStage, error: StoreError) -> Self {
        Self { item, stage, error }
    }

    /// The error a batch call returns.
    pub(crate) fn into_batch_error(self) -> StoreError {
        match self.error {
            e @ StoreError::BatchFailed { .. } => e,
            e => StoreError::BatchFailed {
                item_index: self.item,
                stage: self.stage,
                source: Box::new(e),
            },
        }
    }
}

/// One event's row, planned.
struct Planned {
    clock: u32,
    time: EntityTime,
    prev_hash: [u8; 32],
    event_hash: [u8; 32],
}

/// An entity of a planned append: the state expected, the state after,
/// and the index of its last item (whose position its row will hold).
struct EntityPlan {
    expected: Option<Tail>,
    after: Tail,
    last_item: usize,
}

/// A whole append, planned against expected entity states.
struct Plan {
    events: Vec<Planned>,
    /// In entity order (the order rows are locked in).
    entities: BTreeMap<String, EntityPlan>,
}

/// A plan that cannot be sent: a CAS condition fails, or a clock overflows.
struct Refused {
    item: usize,
    entity: String,
    error: StoreError,
}

/// Expected states by entity (`None`: no event).
type States = HashMap<String, Option<Tail>>;

/// How one attempt ended.
enum Sent {
    /// Written; positions are `base + item index`.
    Written { base: u64, plan: Plan },
    /// Idempotency keys already taken; nothing written.
    Keys(Vec<KeyRow>),
    /// The plan failed a condition. `locked` are the states it was made
    /// from when they were read under the rows' locks (authoritative).
    Refused { refused: Refused, locked: States },
}

/// The event an idempotency key names.
pub(crate) struct KeyRow {
    event_id: u128,
    entity: String,
    scope: String,
    kind: u16,
    position: u64,
}

fn backend(detail: &str) -> StoreError {
    StoreError::Backend(format!("append: {detail}").into())
}

fn tail_from(row: &Row, at: usize) -> Result<Option<Tail>, StoreError> {
    let get = |e: postgres::Error| backend(&e.to_string());
    let Some(clock) = row.try_get::<_, Option<i64>>(at).map_err(get)? else {
        return Ok(None);
    };
    let hash: Vec<u8> = row.try_get(at + 1).map_err(get)?;
    let ts: i64 = row.try_get(at + 2).map_err(get)?;
    let hlc: i32 = row.try_get(at + 3).map_err(get)?;
    Ok(Some(Tail {
        clock: u32::try_from(clock).map_err(|_| backend("entity clock out of range"))?,
        hash: hash
            .try_into()
            .map_err(|_| backend("entity hash is not 32 bytes"))?,
        time: EntityTime {
            timestamp_us: ts,
            hlc_counter: u16::try_from(hlc)
                .map_err(|_| backend("entity HLC counter out of range"))?,
        },
    }))
}

/// Rows of (entity, clock, hash, timestamp, HLC counter) as states.
fn tails(rows: &[Row]) -> Result<States, StoreError> {
    rows.iter()
        .map(|r| {
            let entity: String = r.try_get(0).map_err(|e| backend(&e.to_string()))?;
            Ok((entity, tail_from(r, 1)?))
        })
        .collect()
}

fn key_row(r: &Row, at: usize) -> Result<KeyRow, StoreError> {
    let get = |e: postgres::Error| backend(&e.to_string());
    let kind: i32 = r.try_get(at + 3).map_err(get)?;
    Ok(KeyRow {
        event_id: r.try_get::<_, Uuid>(at).map_err(get)?.as_u128(),
        entity: r.try_get(at + 1).map_err(get)?,
        scope: r.try_get(at + 2).map_err(get)?,
        kind: u16::try_from(kind).map_err(|_| backend("kind out of range"))?,
        position: position(r.try_get(at + 4).map_err(get)?)?,
    })
}

/// What the append statement returned. The general form: outcome 0 with
/// the first position, or outcome-1 rows naming the events that took its
/// keys (it aborts with BP001 when an entity was stale). The one-event
/// form: the position, or no row when the entity was stale.
fn answer(events: &[PreparedEvent], rows: &[Row], plan: Plan) -> Result<Sent, Failure> {
    let fatal = |e: postgres::Error| Failure::Fatal(backend(&e.to_string()));
    if single(events) {
        let Some(row) = rows.first() else {
            return Err(Failure::Stale);
        };
        return Ok(Sent::Written {
            base: position(row.try_get(0).map_err(fatal)?).map_err(Failure::Fatal)?,
            plan,
        });
    }
    let Some(first) = rows.first() else {
        return Err(Failure::Fatal(backend("no result row")));
    };
    match first.try_get::<_, i32>(0).map_err(fatal)? {
        0 => Ok(Sent::Written {
            base: position(first.try_get(5).map_err(fatal)?).map_err(Failure::Fatal)?,
            plan,
        }),
        1 => rows
            .iter()
            .map(|r| key_row(r, 1))
            .collect::<Result<_, _>>()
            .map(Sent::Keys)
            .map_err(Failure::Fatal),
        other => Err(Failure::Fatal(backend(&format!("unknown outcome {other}")))),
    }
}

/// A single event without an idempotency key: the one-event statement.
fn single(events: &[PreparedEvent]) -> bool {
    events.len() == 1 && !events[0].idempotent
}

/// Plan `events` (in order) on top of `base`: each item's condition is
/// checked against its entity as earlier items of the call left it.
fn plan(events: &[PreparedEvent], base: &States, now_us: i64) -> Result<Plan, Refused> {
    let mut entities: BTreeMap<String, EntityPlan> = BTreeMap::new();
    let mut planned = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        let entity = ev.coord.entity();
        let expected = base.get(entity).copied().flatten();
        let tail = entities.get(entity).map_or(expected, |p| Some(p.after));
        let refuse = |error| Refused {
            item: i,
            entity: entity.to_owned(),
            error,
        };
        let (clock, time, prev_hash) = match &ev.continuation {
            // An import keeps its clock, time and link; checked below.
            Some(c) => (c.clock, c.time, c.prev_hash),
            None => {
                ev.condition
                    .check(entity, tail.map(|t| t.clock))
                    .map_err(refuse)?;
                let clock = match tail {
                    Some(t) => t.clock.checked_add(1).ok_or_else(|| {
                        refuse(StoreError::ClockOverflow {
                            entity: entity.to_owned(),
                        })
                    })?,
                    None => 0,
                };
                (
                    clock,
                    codec::next_entity_time(now_us, tail.map(|t| t.time)),
                    tail.map_or([0; 32], |t| t.hash),
                )
            }
        };
        let event_hash = codec::event_hash_versioned(
            &prev_hash,
            &ChainInput {
                entity,
                scope: ev.coord.scope(),
                event_id: ev.event_id,
                correlation_id: ev.correlation_id.unwrap_or(ev.event_id),
                causation_id: ev.causation_id,
                kind: ev.kind,
                clock,
                timestamp_us: time.timestamp_us,
                flags: ev.flags,
                payload_len: ev.payload.len() as u32,
                content_hash: ev.content_hash,
            },
            ev.payload_version,
        );
        if let Some(c) = &ev.continuation {
            c.check(entity, tail.map(|t| (t.clock, t.hash, t.time)), event_hash)
                .map_err(refuse)?;
        }
        let after = Tail {
            clock,
            hash: event_hash,
            time,
        };
        entities
            .entry(entity.to_owned())
            .and_modify(|p| {
                p.after = after;
                p.last_item = i;
            })
            .or_insert(EntityPlan {
                expected,
                after,
                last_item: i,
            });
        planned.push(Planned {
            clock,
            time,
            prev_hash,
            event_hash,
        });
    }
    Ok(Plan {
        events: planned,
        entities,
    })
}

impl PgStore {
    /// Append `events` atomically (one event for a single append).
    pub(crate) fn write(
        &self,
        events: &[PreparedEvent],
    ) -> Result<Vec<AppendReceipt>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let last = events.len() - 1;
        let mut names: Vec<&str> = events.iter().map(|e| e.coord.entity()).collect();
        names.sort_unstable();
        names.dedup();
        // States read from the database during this call: a condition that
        // fails against one of them fails for real.
        let mut fresh: States = HashMap::new();
        let mut lost = 0u32;
        let mut last_race = "none";
        for attempt in 0..self.config.max_attempts {
            let base: States = {
                let cache = self.tails.lock();
                names
                    .iter()
                    .map(|&n| {
                        let known = match fresh.get(n) {
                            Some(t) => *t,
                            None => cache.get(n).copied(),
                        };
                        (n.to_owned(), known)
                    })
                    .collect()
            };
            match self.attempt(events, &names, &base, lost >= 2) {
                Ok(Sent::Written { base, plan }) => {
                    self.feed.committed(base + last as u64);
                    self.remember(
                        plan.entities
                            .iter()
                            .map(|(k, p)| (k.as_str(), Some(p.after))),
                    );
                    return Ok(events
                        .iter()
                        .enumerate()
                        .map(|(i, e)| AppendReceipt {
                            event_id: e.event_id,
                            sequence: base + i as u64,
                            disk_pos: DiskPos::default(),
                        })
                        .collect());
                }
                Ok(Sent::Keys(rows)) => return retried(events, &rows),
                Ok(Sent::Refused { refused, locked }) => {
                    self.remember(locked.iter().map(|(k, v)| (k.as_str(), *v)));
                    fresh.extend(locked);
                    if !fresh.contains_key(refused.entity.as_str()) {
                        // Refused against a cached or guessed state: learn
                        // the real ones, then decide.
                        self.learn(&names, &mut fresh)
                            .map_err(|e| AppendError::at(0, BatchStage::Validation, e))?;
                        continue;
                    }
                    // A key already used answers before any condition.
                    if events.iter().any(|e| e.idempotent) {
                        let keys = self
                            .lookup_keys(events)
                            .map_err(|e| AppendError::at(0, BatchStage::Validation, e))?;
                        if !keys.is_empty() {
                            return retried(events, &keys);
                        }
                    }
                    return Err(AppendError::at(
                        refused.item,
                        BatchStage::Validation,
                        refused.error,
                    ));
                }
                Err(Failure::Stale) => {
                    // Another writer moved an entity first (or created it):
                    // read where they are now and plan again.
                    lost += 1;
                    last_race = "an entity moved meanwhile";
                    self.learn(&names, &mut fresh)
                        .map_err(|e| AppendError::at(last, BatchStage::Writing, e))?;
                }
                Err(Failure::Race(why)) => {
                    // A key committed meanwhile, or the server gave up a
                    // transaction: nothing known is current.
                    lost += 1;
                    last_race = why;
                    fresh.clear();
                    self.forget(&names);
                    backoff(attempt);
                }
                Err(Failure::Fatal(e)) => {
                    self.forget(&names);
                    return Err(AppendError::at(last, BatchStage::Writing, e));
                }
            }
        }
        Err(AppendError::at(
            last,
            BatchStage::Writing,
            StoreError::Unavailable(
                format!(
                    "gave up after {} attempts lost to concurrent writers (last: {last_race})",
                    self.config.max_attempts
                )
                .into(),
            ),
        ))
    }

    /// One attempt. Optimistic: plan from `base`, run the append statement
    /// alone (one round trip). `locked`: in a transaction, lock the rows and
    /// read their states first, plan from those, run the statement, commit.
    /// With the test hook the statement also runs in a transaction, and the
    /// hook runs before COMMIT.
    fn attempt(
        &self,
        events: &[PreparedEvent],
        names: &[&str],
        base: &States,
        locked: bool,
    ) -> Result<Sent, Failure> {
        let now_us = self.config.now_us();
        #[cfg(feature = "test-support")]
        let hook = self.config.before_commit.clone();
        #[cfg(not(feature = "test-support"))]
        let hook: Option<std::sync::Arc<dyn Fn() + Send + Sync>> = None;
        if !locked {
            // Planned before a connection is taken: a plan refused against a
            // cached state costs no round trip.
            let plan = match plan(events, base, now_us) {
                Ok(p) => p,
                Err(refused) => {
                    return Ok(Sent::Refused {
                        refused,
                        locked: States::new(),
                    })
                }
            };
            if hook.is_none() && !relaxed(events) {
                let result = self.with_conn(|c| self.run(c, events, &plan));
                return match result {
                    Ok(rows) => answer(events, &rows, plan),
                    Err(e) => Err(failure(e)),
                };
            }
            return self.in_transaction(events, names, Some(plan), now_us, hook.as_deref());
        }
        self.in_transaction(events, names, None, now_us, hook.as_deref())
    }

    /// Run the append in a transaction: with `plan`, as planned; without,
    /// after locking the rows and planning from what they hold. In the
    /// second case the events are positioned by a subtransaction's id taken
    /// once every row is locked ([`crate::schema::CLAIM_LATE_ID`]), so no
    /// competitor can have moved a locked row above it: an append that lost
    /// races cannot lose again, except to a writer creating one of its
    /// entities at the same moment.
    fn in_transaction(
        &self,
        events: &[PreparedEvent],
        names: &[&str],
        plan: Option<Plan>,
        now_us: i64,
        hook: Option<&(dyn Fn() + Send + Sync)>,
    ) -> Result<Sent, Failure> {
        let result = self.with_conn(|c| {
            let lock = c.statement(&self.sql.lock_tails)?;
            let one = c.statement(&self.sql.append_one)?;
            let general = c.statement(&self.sql.append)?;
            let claim = c.statement(&self.sql.claim_late_id)?;
            let one_at = c.statement(&self.sql.append_one_at)?;
            let general_at = c.statement(&self.sql.append_at)?;
            let mut tx = c.client.transaction()?;
            if relaxed(events) {
                // This transaction's COMMIT returns before its WAL is
                // flushed (ADR 0030); the server's default is untouched.
                tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            }
            let (plan, late_base) = match plan {
                Some(p) => (p, None),
                None => {
                    let rows = tx.query(&lock, &[&names])?;
                    let mut states = match tails(&rows) {
                        Ok(s) => s,
                        Err(e) => return Ok(Err(Failure::Fatal(e))),
                    };
                    let first_locked = rows.first().map(|r| r.try_get::<_, String>(0));
                    for n in names {
                        states.entry((*n).to_owned()).or_insert(None);
                    }
                    let plan = match self::plan(events, &states, now_us) {
                        Ok(p) => p,
                        Err(refused) => {
                            return Ok(Ok(Sent::Refused {
                                refused,
                                locked: states,
                            }))
                        }
                    };
                    let late_base = match first_locked {
                        Some(entity) => {
                            tx.execute("SAVEPOINT batpak_late_id", &[])?;
                            let r = tx.query_one(&claim, &[&entity?])?;
                            Some(late_id(r.try_get(1)?, r.try_get(0)?))
                        }
                        // Nothing to lock: every entity is new.
                        None => None,
                    };
                    (plan, late_base)
                }
            };
            let rows = match (late_base, single(events)) {
                (None, true) => tx.query(&one, &one_params(&events[0], &plan).refs())?,
                (None, false) => tx.query(&general, &params(events, &plan).refs())?,
                (Some(base), true) => {
                    let p = one_params(&events[0], &plan);
                    let mut refs = p.refs().to_vec();
                    refs.push(&base);
                    tx.query(&one_at, &refs)?
                }
                (Some(base), false) => {
                    let p = params(events, &plan);
                    let mut refs = p.refs().to_vec();
                    refs.push(&base);
                    tx.query(&general_at, &refs)?
                }
            };
            let sent = match answer(events, &rows, plan) {
                Ok(s) => s,
                Err(Failure::Stale) => {
                    // Nothing was written; the transaction ends here.
                    tx.rollback()?;
                    return Ok(Err(Failure::Stale));
                }
                Err(e) => return Ok(Err(e)),
            };
            if let (Sent::Written { .. }, Some(hook)) = (&sent, hook) {
                hook();
            }
            tx.commit()?;
            Ok(Ok(sent))
        });
        match result {
            Ok(r) => r,
            Err(e) => Err(failure(e)),
        }
    }

    /// Run the append statement for `plan` on `c`: the one-event form for a
    /// single event without a key, else the general one.
    fn run(
        &self,
        c: &mut crate::pool::Conn,
        events: &[PreparedEvent],
        plan: &Plan,
    ) -> Result<Vec<Row>, postgres::Error> {
        if single(events) {
            let st = c.statement(&self.sql.append_one)?;
            c.client.query(&st, &one_params(&events[0], plan).refs())
        } else {
            let st = c.statement(&self.sql.append)?;
            c.client.query(&st, &params(events, plan).refs())
        }
    }

    /// Read the states of `names` into `fresh` (and the cache).
    fn learn(&self, names: &[&str], fresh: &mut States) -> Result<(), StoreError> {
        let rows = self.db(|c| {
            let st = c.statement(&self.sql.tails)?;
            c.client.query(&st, &[&names])
        })?;
        let mut states = tails(&rows)?;
        for n in names {
            states.entry((*n).to_owned()).or_insert(None);
        }
        self.remember(states.iter().map(|(k, v)| (k.as_str(), *v)));
        fresh.extend(states);
        Ok(())
    }

    fn remember<'a>(&self, tails: impl Iterator<Item = (&'a str, Option<Tail>)>) {
        let mut cache = self.tails.lock();
        for (entity, tail) in tails {
            match tail {
                Some(t) => {
                    if cache.len() >= TAIL_CACHE_MAX && !cache.contains_key(entity) {
                        cache.clear();
                    }
                    cache.insert(entity.to_owned(), t);
                }
                None => {
                    cache.remove(entity);
                }
            }
        }
    }

    fn forget(&self, names: &[&str]) {
        let mut cache = self.tails.lock();
        for n in names {
            cache.remove(*n);
        }
    }

    fn lookup_keys(&self, events: &[PreparedEvent]) -> Result<Vec<KeyRow>, StoreError> {
        let keys: Vec<Uuid> = events
            .iter()
            .filter(|e| e.idempotent)
            .map(|e| Uuid::from_u128(e.event_id))
            .collect();
        let rows = self.db(|c| {
            let st = c.statement(&self.sql.keys)?;
            c.client.query(&st, &[&keys])
        })?;
        rows.iter().map(|r| key_row(r, 0)).collect()
    }
}

fn failure(e: crate::WithConn) -> Failure {
    match e {
        crate::WithConn::Pool(e) => Failure::Fatal(e),
        crate::WithConn::Db(e) => classify_write(e),
    }
}

/// The 22 parameters of the append statement.
struct Params<'a> {
    keys: Vec<Uuid>,
    entities: Vec<&'a str>,
    expected: Vec<i64>,
    new_clock: Vec<i64>,
    new_hash: Vec<&'a [u8]>,
    new_ts: Vec<i64>,
    new_hlc: Vec<i32>,
    last_item: Vec<i64>,
    ids: Vec<Uuid>,
    entity: Vec<&'a str>,
    scope: Vec<&'a str>,
    clock: Vec<i64>,
    kind: Vec<i32>,
    flags: Vec<i16>,
    ts: Vec<i64>,
    hlc: Vec<i32>,
    corr: Vec<Uuid>,
    cause: Vec<Option<Uuid>>,
    prev: Vec<&'a [u8]>,
    hash: Vec<&'a [u8]>,
    content: Vec<&'a [u8]>,
    payload: Vec<&'a [u8]>,
    version: Vec<i16>,
}

impl Params<'_> {
    fn refs(&self) -> [&(dyn ToSql + Sync); 23] {
        [
            &self.keys,
            &self.entities,
            &self.expected,
            &self.new_clock,
            &self.new_hash,
            &self.new_ts,
            &self.new_hlc,
            &self.last_item,
            &self.ids,
            &self.entity,
            &self.scope,
            &self.clock,
            &self.kind,
            &self.flags,
            &self.ts,
            &self.hlc,
            &self.corr,
            &self.cause,
            &self.prev,
            &self.hash,
            &self.content,
            &self.payload,
            &self.version,
        ]
    }
}

/// A payload version as its `smallint` column holds it: the same 16 bits
/// (`read::version_of` casts back), so every `u16` round-trips.
fn version_column(version: u16) -> i16 {
    version.max(1) as i16
}

fn params<'a>(events: &'a [PreparedEvent], plan: &'a Plan) -> Params<'a> {
    let entities = || plan.entities.values();
    Params {
        keys: events
            .iter()
            .filter(|e| e.idempotent)
            .map(|e| Uuid::from_u128(e.event_id))
            .collect(),
        entities: plan.entities.keys().map(String::as_str).collect(),
        expected: entities()
            .map(|p| p.expected.map_or(-1, |t| i64::from(t.clock)))
            .collect(),
        new_clock: entities().map(|p| i64::from(p.after.clock)).collect(),
        new_hash: entities().map(|p| p.after.hash.as_slice()).collect(),
        new_ts: entities().map(|p| p.after.time.timestamp_us).collect(),
        new_hlc: entities()
            .map(|p| i32::from(p.after.time.hlc_counter))
            .collect(),
        last_item: entities().map(|p| p.last_item as i64).collect(),
        ids: events.iter().map(|e| Uuid::from_u128(e.event_id)).collect(),
        entity: events.iter().map(|e| e.coord.entity()).collect(),
        scope: events.iter().map(|e| e.coord.scope()).collect(),
        clock: plan.events.iter().map(|p| i64::from(p.clock)).collect(),
        kind: events.iter().map(|e| i32::from(e.kind.raw())).collect(),
        flags: events.iter().map(|e| i16::from(e.flags)).collect(),
        ts: plan.events.iter().map(|p| p.time.timestamp_us).collect(),
        hlc: plan
            .events
            .iter()
            .map(|p| i32::from(p.time.hlc_counter))
            .collect(),
        corr: events
            .iter()
            .map(|e| Uuid::from_u128(e.correlation_id.unwrap_or(e.event_id)))
            .collect(),
        cause: events
            .iter()
            .map(|e| e.causation_id.map(Uuid::from_u128))
            .collect(),
        prev: plan.events.iter().map(|p| p.prev_hash.as_slice()).collect(),
        hash: plan
            .events
            .iter()
            .map(|p| p.event_hash.as_slice())
            .collect(),
        content: events.iter().map(|e| e.content_hash.as_slice()).collect(),
        payload: events.iter().map(|e| e.payload.as_slice()).collect(),
        version: events
            .iter()
            .map(|e| version_column(e.payload_version))
            .collect(),
    }
}

/// The 16 parameters of the one-event statement.
struct OneParams<'a> {
    entity: &'a str,
    expected: i64,
    clock: i64,
    hash: &'a [u8],
    ts: i64,
    hlc: i32,
    id: Uuid,
    scope: &'a str,
    kind: i32,
    flags: i16,
    corr: Uuid,
    cause: Option<Uuid>,
    prev: &'a [u8],
    content: &'a [u8],
    payload: &'a [u8],
    version: i16,
}

impl OneParams<'_> {
    fn refs(&self) -> [&(dyn ToSql + Sync); 16] {
        [
            &self.entity,
            &self.expected,
            &self.clock,
            &self.hash,
            &self.ts,
            &self.hlc,
            &self.id,
            &self.scope,
            &self.kind,
            &self.flags,
            &self.corr,
            &self.cause,
            &self.prev,
            &self.content,
            &self.payload,
            &self.version,
        ]
    }
}

fn one_params<'a>(e: &'a PreparedEvent, plan: &'a Plan) -> OneParams<'a> {
    let p = &plan.events[0];
    let expected = plan
        .entities
        .values()
        .next()
        .and_then(|ep| ep.expected)
        .map_or(-1, |t| i64::from(t.clock));
    OneParams {
        entity: e.coord.entity(),
        expected,
        clock: i64::from(p.clock),
        hash: &p.event_hash,
        ts: p.time.timestamp_us,
        hlc: i32::from(p.time.hlc_counter),
        id: Uuid::from_u128(e.event_id),
        scope: e.coord.scope(),
        kind: i32::from(e.kind.raw()),
        flags: i16::from(e.flags),
        corr: Uuid::from_u128(e.correlation_id.unwrap_or(e.event_id)),
        cause: e.causation_id.map(Uuid::from_u128),
        prev: &p.prev_hash,
        content: &e.content_hash,
        payload: &e.payload,
        version: version_column(e.payload_version),
    }
}

/// The call asked for `Durability::Relaxed` (a batch: the strongest
/// request of its items, see `Durability::strongest`). Such a commit takes
/// a transaction of its own, where `synchronous_commit` is turned off.
fn relaxed(events: &[PreparedEvent]) -> bool {
    Durability::strongest(events.iter().map(|e| e.durability)) == Some(Durability::Relaxed)
}

/// The 64-bit id of a subtransaction, from its 32-bit id (`sub`) and its
/// top-level transaction's 64-bit, epoch-extended id (`top`): a
/// subtransaction's id is assigned after its parent's, so it is the first
/// id at or after `top` whose low 32 bits are `sub`.
fn late_id(top: i64, sub: i64) -> i64 {
    let low = top & 0xffff_ffff;
    top + ((sub - low) & 0xffff_ffff)
}

/// The answer to a call whose idempotency keys were found: the original
/// receipts when every item's key names an event with its coordinate and
/// kind; `IdempotencyConflict` at the first item whose key names another
/// event; `InvalidBatch` when only some items were appended before (a
/// batch is retried whole or not at all).
fn retried(events: &[PreparedEvent], found: &[KeyRow]) -> Result<Vec<AppendReceipt>, AppendError> {
    let validation = |i, e| AppendError::at(i, BatchStage::Validation, e);
    let mut receipts = Vec::with_capacity(events.len());
    let mut first_new = None;
    for (i, ev) in events.iter().enumerate() {
        let hit = ev
            .idempotent
            .then(|| found.iter().find(|k| k.event_id == ev.event_id))
            .flatten();
        match hit {
            Some(k) => {
                if k.entity != ev.coord.entity()
                    || k.scope != ev.coord.scope()
                    || k.kind != ev.kind.raw()
                {
                    return Err(validation(
                        i,
                        StoreError::IdempotencyConflict { key: ev.event_id },
                    ));
                }
                receipts.push(AppendReceipt {
                    event_id: ev.event_id,
                    sequence: k.position,
                    disk_pos: DiskPos::default(),
                });
            }
            None => {
                first_new.get_or_insert(i);
            }
        }
    }
    match first_new {
        None => Ok(receipts),
        Some(i) => Err(validation(
            i,
            StoreError::InvalidBatch(format!(
                "{} of {} idempotency keys were already used: a batch is retried whole or not at all",
                receipts.len(),
                events.len()
            )),
        )),
    }
}

/// Wait a little before the next attempt, longer after each lost race, with
/// jitter so that writers that collided once do not collide again.
fn backoff(attempt: u32) {
    let cap_us = 50u64.saturating_mul(1 << attempt.min(10)).min(20_000);
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    );
    std::thread::sleep(std::time::Duration::from_micros(jitter % cap_us.max(1)));
}

#[cfg(test)]
mod tests {
    use super::late_id;

    #[test]
    fn a_subtransaction_id_is_extended_from_its_parent() {
        let epoch = 3i64 << 32;
        // Same epoch.
        assert_eq!(late_id(epoch + 1000, 1005), epoch + 1005);
        assert_eq!(late_id(epoch + 1000, 1000), epoch + 1000);
        // The 32-bit counter wrapped between parent and child.
        assert_eq!(
            late_id(epoch + 0xffff_fff0, 5),
            (4i64 << 32) + 5,
            "the child is in the next epoch"
        );
    }
}
