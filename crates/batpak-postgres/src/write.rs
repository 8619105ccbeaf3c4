//! The append path: plan clocks, times and hashes on the caller's thread
//! from the entity states it expects, then write everything with one call
//! of `append_events`, which checks keys and states under the entities'
//! locks. When another writer got there first, the call reports the
//! entity's actual state and writes nothing; the loop re-plans from it.
//! Writers of different entities never wait for each other.
//!
//! Expected states come from a per-store cache of entity tails (each append
//! leaves its entity's new tail there), so a process that keeps appending to
//! an entity pays one round trip per append; an entity it has not seen is
//! guessed empty, and a wrong guess costs one round trip that takes no lock.
//! After two lost races an append stops hoping: it calls `append_events`
//! inside its own transaction with the locks taken first, so the states it
//! is told about cannot move before its second call, and it wins.
//!
//! Why positions from transaction ids never let a reader pass an event that
//! will still commit below it, and why an entity's positions increase with
//! its clock: ADR 0014 and docs/postgres.md.

use crate::error::{classify_write, Failure};
use crate::read::position;
use crate::PgStore;
use batpak::store::codec::{self, ChainInput, EntityTime, PreparedEvent};
use batpak::store::{AppendReceipt, BatchStage, DiskPos, StoreError};
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

/// A whole append, planned against expected entity states.
struct Plan {
    events: Vec<Planned>,
    /// Per entity (in entity order): the state expected, the state after.
    entities: BTreeMap<String, (Option<Tail>, Tail)>,
}

/// A plan that cannot be sent: a CAS condition fails, or a clock overflows.
struct Refused {
    item: usize,
    entity: String,
    error: StoreError,
}

/// What `append_events` answered.
enum Outcome {
    /// Written; positions are `base + item index`.
    Written { base: u64 },
    /// Idempotency keys already taken: (key, entity, scope, kind, position).
    Keys(Vec<KeyRow>),
    /// Entities not in the expected state: their actual tails.
    Stale(Vec<(String, Option<Tail>)>),
}

/// How one attempt ended.
enum Sent {
    Written {
        base: u64,
        plan: Plan,
    },
    Keys(Vec<KeyRow>),
    Stale(Vec<(String, Option<Tail>)>),
    /// The plan failed a condition; `learned` are states read under locks.
    Refused {
        refused: Refused,
        learned: Vec<(String, Option<Tail>)>,
    },
}

/// Expected states by entity.
type States = HashMap<String, Option<Tail>>;

pub(crate) struct KeyRow {
    event_id: u128,
    entity: String,
    scope: String,
    kind: u16,
    position: u64,
}

fn backend(detail: &str) -> StoreError {
    StoreError::Backend(format!("append_events: {detail}").into())
}

fn tail_from(
    clock: Option<i64>,
    hash: Option<Vec<u8>>,
    ts: Option<i64>,
    hlc: Option<i32>,
) -> Result<Option<Tail>, StoreError> {
    let Some(clock) = clock else {
        return Ok(None);
    };
    let hash: [u8; 32] = hash
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| backend("entity hash is not 32 bytes"))?;
    Ok(Some(Tail {
        clock: u32::try_from(clock).map_err(|_| backend("entity clock out of range"))?,
        hash,
        time: EntityTime {
            timestamp_us: ts.ok_or_else(|| backend("entity time missing"))?,
            hlc_counter: hlc
                .and_then(|h| u16::try_from(h).ok())
                .ok_or_else(|| backend("entity HLC counter out of range"))?,
        },
    }))
}

fn outcome(rows: &[Row]) -> Result<Outcome, StoreError> {
    let get = |e: postgres::Error| backend(&e.to_string());
    let Some(first) = rows.first() else {
        return Err(backend("no result row"));
    };
    match first.try_get::<_, i32>(0).map_err(get)? {
        0 => {
            let base: i64 = first.try_get(9).map_err(get)?;
            Ok(Outcome::Written {
                base: position(base)?,
            })
        }
        1 => rows
            .iter()
            .map(|r| {
                let kind: i32 = r.try_get(4).map_err(get)?;
                Ok(KeyRow {
                    event_id: r.try_get::<_, Uuid>(1).map_err(get)?.as_u128(),
                    entity: r.try_get(2).map_err(get)?,
                    scope: r.try_get(3).map_err(get)?,
                    kind: u16::try_from(kind).map_err(|_| backend("kind out of range"))?,
                    position: position(r.try_get(9).map_err(get)?)?,
                })
            })
            .collect::<Result<_, _>>()
            .map(Outcome::Keys),
        2 => rows
            .iter()
            .map(|r| {
                let entity: String = r.try_get(2).map_err(get)?;
                let tail = tail_from(
                    r.try_get(5).map_err(get)?,
                    r.try_get(6).map_err(get)?,
                    r.try_get(7).map_err(get)?,
                    r.try_get(8).map_err(get)?,
                )?;
                Ok((entity, tail))
            })
            .collect::<Result<_, _>>()
            .map(Outcome::Stale),
        other => Err(backend(&format!("unknown outcome {other}"))),
    }
}

/// Plan `events` (in order) on top of `base`: each item's condition is
/// checked against its entity as earlier items of the call left it.
fn plan(events: &[PreparedEvent], base: &States, now_us: i64) -> Result<Plan, Refused> {
    let mut entities: BTreeMap<String, (Option<Tail>, Tail)> = BTreeMap::new();
    let mut planned = Vec::with_capacity(events.len());
    for (i, ev) in events.iter().enumerate() {
        let entity = ev.coord.entity();
        let expected = base.get(entity).copied().flatten();
        let tail = entities.get(entity).map_or(expected, |(_, now)| Some(*now));
        let refuse = |error| Refused {
            item: i,
            entity: entity.to_owned(),
            error,
        };
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
        let time = codec::next_entity_time(now_us, tail.map(|t| t.time));
        let prev_hash = tail.map_or([0; 32], |t| t.hash);
        let event_hash = codec::event_hash(
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
        );
        let after = Tail {
            clock,
            hash: event_hash,
            time,
        };
        entities
            .entry(entity.to_owned())
            .and_modify(|(_, now)| *now = after)
            .or_insert((expected, after));
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
        let mut stale_rounds = 0u32;
        let mut last_race = None;
        for attempt in 0..self.config.max_attempts {
            if let Some(why) = last_race {
                tracing::debug!(attempt, why, "batpak: append lost a race; retrying");
                backoff(attempt);
            }
            last_race = None;
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
            let locked = stale_rounds >= 2;
            match self.attempt(events, base, locked) {
                Ok(Sent::Written { base, plan }) => {
                    self.remember(
                        plan.entities
                            .iter()
                            .map(|(k, (_, after))| (k.as_str(), Some(*after))),
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
                Ok(Sent::Stale(actual)) => {
                    stale_rounds += 1;
                    self.remember(actual.iter().map(|(k, v)| (k.as_str(), *v)));
                    fresh.extend(actual);
                }
                Ok(Sent::Refused { refused, learned }) => {
                    self.remember(learned.iter().map(|(k, v)| (k.as_str(), *v)));
                    fresh.extend(learned);
                    if !fresh.contains_key(refused.entity.as_str()) {
                        // Refused against a cached or guessed state: learn
                        // the real ones, then decide.
                        let tails = self
                            .read_tails(&names)
                            .map_err(|e| AppendError::at(0, BatchStage::Validation, e))?;
                        for &n in &names {
                            fresh.insert(n.to_owned(), tails.get(n).copied());
                        }
                        self.remember(tails.iter().map(|(k, v)| (k.as_str(), Some(*v))));
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
                Err(Failure::Race(why)) => {
                    // Another writer committed first on a key, or the server
                    // gave up a transaction: nothing known is current.
                    last_race = Some(why);
                    fresh.clear();
                    self.forget(&names);
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
                    "gave up after {} attempts lost to concurrent writers (last: {})",
                    self.config.max_attempts,
                    last_race.unwrap_or("a stale entity state")
                )
                .into(),
            ),
        ))
    }

    /// One attempt: plan against `base` and call `append_events`, alone in
    /// one round trip, or (`locked`, or with the test hook) in a
    /// transaction, where a stale answer is re-planned under the held locks.
    fn attempt(
        &self,
        events: &[PreparedEvent],
        base: States,
        locked: bool,
    ) -> Result<Sent, Failure> {
        let now_us = self.config.now_us();
        let first = match plan(events, &base, now_us) {
            Ok(p) => p,
            Err(refused) => {
                return Ok(Sent::Refused {
                    refused,
                    learned: Vec::new(),
                })
            }
        };
        let sql = &self.sql.append;
        #[cfg(feature = "test-support")]
        let hook = self.config.before_commit.clone();
        #[cfg(not(feature = "test-support"))]
        let hook: Option<std::sync::Arc<dyn Fn() + Send + Sync>> = None;
        let result = self.with_conn(|c| {
            let st = c.statement(sql)?;
            if !locked && hook.is_none() {
                let rows = c.client.query(&st, &params(false, events, &first).refs())?;
                return Ok(outcome(&rows).map(|o| match o {
                    Outcome::Written { base } => Sent::Written { base, plan: first },
                    Outcome::Keys(k) => Sent::Keys(k),
                    Outcome::Stale(s) => Sent::Stale(s),
                }));
            }
            let mut tx = c.client.transaction()?;
            let mut plan = first;
            let mut base = base;
            let mut learned = Vec::new();
            for round in 0..2 {
                let rows = tx.query(&st, &params(locked, events, &plan).refs())?;
                let answer = match outcome(&rows) {
                    Ok(a) => a,
                    Err(e) => return Ok(Err(e)),
                };
                match answer {
                    Outcome::Written { base } => {
                        if let Some(hook) = &hook {
                            hook();
                        }
                        tx.commit()?;
                        return Ok(Ok(Sent::Written { base, plan }));
                    }
                    Outcome::Keys(k) => return Ok(Ok(Sent::Keys(k))),
                    Outcome::Stale(actual) if !locked || round > 0 => {
                        // Not holding locks (or someone wrote without
                        // them): start over with what we learned.
                        return Ok(Ok(Sent::Stale(actual)));
                    }
                    Outcome::Stale(actual) => {
                        // The locks are held: these states cannot move.
                        for (k, v) in &actual {
                            base.insert(k.clone(), *v);
                        }
                        learned.extend(actual);
                        match self::plan(events, &base, now_us) {
                            Ok(p) => plan = p,
                            Err(refused) => return Ok(Ok(Sent::Refused { refused, learned })),
                        }
                    }
                }
            }
            Ok(Ok(Sent::Stale(learned)))
        });
        match result {
            Ok(Ok(sent)) => Ok(sent),
            Ok(Err(e)) => Err(Failure::Fatal(e)),
            Err(crate::WithConn::Pool(e)) => Err(Failure::Fatal(e)),
            Err(crate::WithConn::Db(e)) => Err(classify_write(e)),
        }
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

    fn read_tails(&self, names: &[&str]) -> Result<HashMap<String, Tail>, StoreError> {
        let sql = self.sql.tails.clone();
        let rows = self.db(|c| {
            let st = c.statement(&sql)?;
            c.client.query(&st, &[&names])
        })?;
        let mut out = HashMap::new();
        for r in &rows {
            let get = |e: postgres::Error| backend(&e.to_string());
            let entity: String = r.try_get(0).map_err(get)?;
            if let Some(t) = tail_from(
                r.try_get(1).map_err(get)?,
                r.try_get(2).map_err(get)?,
                r.try_get(3).map_err(get)?,
                r.try_get(4).map_err(get)?,
            )? {
                out.insert(entity, t);
            }
        }
        Ok(out)
    }

    fn lookup_keys(&self, events: &[PreparedEvent]) -> Result<Vec<KeyRow>, StoreError> {
        let keys: Vec<Uuid> = events
            .iter()
            .filter(|e| e.idempotent)
            .map(|e| Uuid::from_u128(e.event_id))
            .collect();
        let sql = self.sql.keys.clone();
        let rows = self.db(|c| {
            let st = c.statement(&sql)?;
            c.client.query(&st, &[&keys])
        })?;
        rows.iter()
            .map(|r| {
                let get = |e: postgres::Error| backend(&e.to_string());
                let kind: i32 = r.try_get(3).map_err(get)?;
                Ok(KeyRow {
                    event_id: r.try_get::<_, Uuid>(0).map_err(get)?.as_u128(),
                    entity: r.try_get(1).map_err(get)?,
                    scope: r.try_get(2).map_err(get)?,
                    kind: u16::try_from(kind).map_err(|_| backend("kind out of range"))?,
                    position: position(r.try_get(4).map_err(get)?)?,
                })
            })
            .collect()
    }
}

/// The 22 parameters of `append_events`, owned.
struct Params<'a> {
    lock_first: bool,
    keys: Vec<Uuid>,
    entities: Vec<&'a str>,
    expected: Vec<i64>,
    new_clock: Vec<i64>,
    new_hash: Vec<&'a [u8]>,
    new_ts: Vec<i64>,
    new_hlc: Vec<i32>,
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
}

impl Params<'_> {
    fn refs(&self) -> [&(dyn ToSql + Sync); 22] {
        [
            &self.lock_first,
            &self.keys,
            &self.entities,
            &self.expected,
            &self.new_clock,
            &self.new_hash,
            &self.new_ts,
            &self.new_hlc,
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
        ]
    }
}

fn params<'a>(lock_first: bool, events: &'a [PreparedEvent], plan: &'a Plan) -> Params<'a> {
    let after = || plan.entities.values().map(|(_, a)| a);
    Params {
        lock_first,
        keys: events
            .iter()
            .filter(|e| e.idempotent)
            .map(|e| Uuid::from_u128(e.event_id))
            .collect(),
        entities: plan.entities.keys().map(String::as_str).collect(),
        expected: plan
            .entities
            .values()
            .map(|(before, _)| before.map_or(-1, |t| i64::from(t.clock)))
            .collect(),
        new_clock: after().map(|a| i64::from(a.clock)).collect(),
        new_hash: after().map(|a| a.hash.as_slice()).collect(),
        new_ts: after().map(|a| a.time.timestamp_us).collect(),
        new_hlc: after().map(|a| i32::from(a.time.hlc_counter)).collect(),
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
    }
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
