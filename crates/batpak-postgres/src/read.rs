//! The read path: rows to [`IndexEntry`] and [`StoredEvent`], region
//! queries, the causal graph, ancestor walks, statistics, and the stable
//! read that never passes an event still to commit below it.
//!
//! Reads run in single statements (autocommit, READ COMMITTED): each sees
//! everything committed before it started. This module never writes.

use crate::schema::ENTRY_COLUMNS;
use crate::PgStore;
use batpak::coordinate::{Coordinate, DagPosition, KindFilter, Region};
use batpak::event::{
    Event, EventHeader, EventKind, HashChain, Schema, StoredEvent, TypedEvent, VersionedEvent,
};
use batpak::store::{codec, DiskPos, IndexEntry, StoreError, StoreStats};
use postgres::types::ToSql;
use postgres::Row;
use uuid::Uuid;

/// A row that does not hold what the schema promises: the database was
/// changed by something other than batpak.
fn damaged(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored event has an invalid {what}: {detail}").into())
}

fn damaged_payload(event_id: u128, err: impl std::fmt::Display) -> StoreError {
    damaged("payload", format!("event {event_id:032x}: {err}"))
}

fn col<'a, T: postgres::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i).map_err(|e| damaged("column", e))
}

fn hash(row: &Row, i: usize, what: &str) -> Result<[u8; 32], StoreError> {
    let bytes: &[u8] = col(row, i)?;
    bytes.try_into().map_err(|_| damaged(what, bytes.len()))
}

pub(crate) fn position(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| damaged("position", v))
}

/// An index entry from a row whose first columns are [`ENTRY_COLUMNS`].
pub(crate) fn entry(row: &Row) -> Result<IndexEntry, StoreError> {
    entry_at(row, 0)
}

/// An index entry from a row whose [`ENTRY_COLUMNS`] start at column `at`.
pub(crate) fn entry_at(row: &Row, at: usize) -> Result<IndexEntry, StoreError> {
    let clock: i64 = col(row, at + 4)?;
    let kind: i32 = col(row, at + 5)?;
    let timestamp_us: i64 = col(row, at + 6)?;
    let coord = Coordinate::new(col::<&str>(row, at + 2)?, col::<&str>(row, at + 3)?)
        .map_err(|e| damaged("coordinate", e))?;
    Ok(IndexEntry {
        event_id: col::<Uuid>(row, at + 1)?.as_u128(),
        correlation_id: col::<Uuid>(row, at + 7)?.as_u128(),
        causation_id: col::<Option<Uuid>>(row, at + 8)?.map(|u| u.as_u128()),
        coord,
        kind: EventKind::from_raw(u16::try_from(kind).map_err(|_| damaged("kind", kind))?),
        wall_ms: u64::try_from(timestamp_us).unwrap_or(0) / 1000,
        clock: u32::try_from(clock).map_err(|_| damaged("clock", clock))?,
        hash_chain: HashChain {
            prev_hash: hash(row, at + 9, "previous hash")?,
            event_hash: hash(row, at + 10, "event hash")?,
        },
        disk_pos: DiskPos::default(),
        global_sequence: position(col(row, at)?)?,
    })
}

/// A stored event from a row of [`EVENT_COLUMNS`].
pub(crate) fn event(row: &Row) -> Result<StoredEvent<serde_json::Value>, StoreError> {
    event_with(row, |e, payload| {
        codec::decode_payload(payload).map_err(|err| damaged_payload(e.event_id, err))
    })
}

/// A stored event from a row of [`VERSIONED_COLUMNS`], its payload decoded
/// as `T` (straight from the bytes at `T`'s version, upcast when older).
pub(crate) fn typed<T: TypedEvent>(
    row: &Row,
    schema: &Schema,
) -> Result<StoredEvent<T>, StoreError> {
    let version = version_of(col(row, 15)?);
    event_with(row, |e, payload| {
        // As `event` and the file store: bytes that do not decode are
        // damage; typed errors (kind, shape, version) pass as they are.
        codec::decode_typed_payload::<T>(schema, e.event_id, e.kind, version, payload).map_err(
            |err| match err {
                StoreError::Serialization(inner) => damaged_payload(e.event_id, inner),
                other => other,
            },
        )
    })
}

/// A stored event from a row of [`EVENT_COLUMNS`], its payload decoded by
/// `decode` (given the row's entry and the payload bytes).
fn event_with<P>(
    row: &Row,
    decode: impl FnOnce(&IndexEntry, &[u8]) -> Result<P, StoreError>,
) -> Result<StoredEvent<P>, StoreError> {
    let e = entry(row)?;
    let flags: i16 = col(row, 11)?;
    let hlc: i32 = col(row, 12)?;
    let payload: &[u8] = col(row, 14)?;
    let timestamp_us: i64 = col(row, 6)?;
    let header = EventHeader {
        event_id: e.event_id,
        correlation_id: e.correlation_id,
        causation_id: e.causation_id,
        timestamp_us,
        position: DagPosition::child_at(
            e.clock,
            e.wall_ms,
            u16::try_from(hlc).map_err(|_| damaged("HLC counter", hlc))?,
        ),
        payload_size: u32::try_from(payload.len()).map_err(|_| damaged("payload", "size"))?,
        event_kind: e.kind,
        flags: u8::try_from(flags).map_err(|_| damaged("flags", flags))?,
        content_hash: hash(row, 13, "content hash")?,
    };
    let value = decode(&e, payload)?;
    Ok(StoredEvent {
        coordinate: e.coord,
        event: Event::new(header, value).with_hash_chain(e.hash_chain),
    })
}

/// A payload version from its `smallint` column (the bits `write` stored).
pub(crate) fn version_of(raw: i16) -> u16 {
    (raw as u16).max(1)
}

/// A stored event and its payload version from a row of [`VERSIONED_COLUMNS`].
pub(crate) fn versioned(row: &Row) -> Result<VersionedEvent, StoreError> {
    Ok(VersionedEvent {
        event: event(row)?,
        payload_version: version_of(col(row, 15)?),
    })
}

/// The core's own region rule, applied to what the SQL filter returned, so
/// the two backends cannot disagree on what a region holds.
pub(crate) fn in_region(region: &Region, e: &IndexEntry) -> bool {
    region.matches_event(e.coord.entity(), e.coord.scope(), e.kind) && region.matches_clock(e.clock)
}

fn entries(rows: &[Row]) -> Result<Vec<IndexEntry>, StoreError> {
    rows.iter().map(entry).collect()
}

/// The smallest string greater than every string starting with `prefix`
/// in byte (C collation) order, or `None` when there is none. UTF-8 keeps
/// code point order under byte comparison, so incrementing the last
/// character that can be incremented is enough.
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The WHERE clause of a region and its parameters, numbered from `first`.
pub(crate) fn region_filter(
    region: &Region,
    first: usize,
) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let param = |v: Box<dyn ToSql + Sync + Send>, params: &mut Vec<_>| {
        params.push(v);
        format!("${}", first + params.len() - 1)
    };
    if let Some(prefix) = region.entity_prefix.as_deref() {
        if !prefix.is_empty() {
            let p = param(Box::new(prefix.to_owned()), &mut params);
            clauses.push(format!("entity >= {p}"));
            if let Some(upper) = prefix_upper_bound(prefix) {
                let p = param(Box::new(upper), &mut params);
                clauses.push(format!("entity < {p}"));
            }
        }
    }
    if let Some(scope) = region.scope.as_deref() {
        let p = param(Box::new(scope.to_owned()), &mut params);
        clauses.push(format!("scope = {p}"));
    }
    match region.fact {
        Some(KindFilter::Exact(kind)) => {
            let p = param(Box::new(i32::from(kind.raw())), &mut params);
            clauses.push(format!("kind = {p}"));
        }
        Some(KindFilter::Category(c)) => {
            let lo = i32::from(c) << 12;
            let a = param(Box::new(lo), &mut params);
            let b = param(Box::new(lo | 0xfff), &mut params);
            clauses.push(format!("kind BETWEEN {a} AND {b}"));
        }
        // Any, or a filter this code does not know: the rows are checked
        // against `Region::matches_event` after the query either way.
        _ => {}
    }
    if let Some((lo, hi)) = region.clock_range {
        let a = param(Box::new(i64::from(lo)), &mut params);
        let b = param(Box::new(i64::from(hi)), &mut params);
        clauses.push(format!("clock BETWEEN {a} AND {b}"));
    }
    let sql = if clauses.is_empty() {
        "TRUE".to_owned()
    } else {
        clauses.join(" AND ")
    };
    (sql, params)
}

/// The current stable bound: every transaction that can still write below
/// it has ended (ADR 0018).
pub(crate) fn stable_bound(pool: &crate::pool::Pool) -> Result<u64, StoreError> {
    let rows = crate::read_with(pool, |c| {
        let st =
            c.statement("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20")?;
        c.client.query(&st, &[])
    })?;
    let row = rows.first().ok_or_else(|| damaged("bound", "no row"))?;
    position(col(row, 0)?)
}

/// Where a lossy subscription starts: after `after`, skipping `committed`.
pub(crate) struct SubscriptionStart {
    pub(crate) after: Option<u64>,
    pub(crate) committed: Vec<u64>,
}

/// At most this many positions committed above the stable bound are
/// remembered for a new subscriber; past it (the bound held back for long)
/// the subscriber starts after the newest committed event instead, and may
/// miss a late commit below it, as a lossy subscriber may.
const MAX_REMEMBERED: i64 = 100_000;

/// Where a subscription that hears events "committed from now on" starts:
/// from the stable bound (nothing can commit below it later), skipping the
/// events at or above it that have already committed, read in the same
/// snapshot as the bound.
pub(crate) fn subscription_start(
    pool: &crate::pool::Pool,
    schema: &str,
) -> Result<SubscriptionStart, StoreError> {
    let sql = format!(
        "SELECT b.bound, ARRAY(SELECT position FROM {schema}.events \
                               WHERE position >= b.bound ORDER BY position LIMIT $1), \
                (SELECT max(position) FROM {schema}.events) \
         FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20 AS bound) b"
    );
    let rows = crate::read_with(pool, |c| {
        let st = c.statement(&sql)?;
        c.client.query(&st, &[&MAX_REMEMBERED])
    })?;
    let row = rows
        .first()
        .ok_or_else(|| damaged("subscription start", "no row"))?;
    let bound = position(col(row, 0)?)?;
    let committed: Vec<i64> = col(row, 1)?;
    let newest: Option<i64> = col(row, 2)?;
    if committed.len() as i64 >= MAX_REMEMBERED {
        return Ok(SubscriptionStart {
            after: newest.map(position).transpose()?,
            committed: Vec::new(),
        });
    }
    Ok(SubscriptionStart {
        after: bound.checked_sub(1),
        committed: committed
            .into_iter()
            .map(position)
            .collect::<Result<_, _>>()?,
    })
}

/// What [`PgStore::read_stable`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StableRead {
    /// Matching entries with `after < position < stable_below`, in position
    /// order, at most the limit asked for.
    pub entries: Vec<IndexEntry>,
    /// Every event that will ever have a position below this has already
    /// committed (or never will): nothing can later appear below it. A
    /// reader that read everything below it may resume from `stable_below - 1`.
    pub stable_below: u64,
}

impl PgStore {
    pub(crate) fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.db(|c| {
            let st = c.statement(sql)?;
            c.client.query(&st, params)
        })
    }

    pub(crate) fn get_versioned_event(&self, event_id: u128) -> Result<VersionedEvent, StoreError> {
        let rows = self.rows(&self.sql.get_versioned, &[&Uuid::from_u128(event_id)])?;
        match rows.first() {
            Some(row) => versioned(row),
            None => Err(StoreError::NotFound(event_id)),
        }
    }

    pub(crate) fn get_typed_event<T: TypedEvent>(
        &self,
        event_id: u128,
    ) -> Result<StoredEvent<T>, StoreError> {
        let rows = self.rows(&self.sql.get_versioned, &[&Uuid::from_u128(event_id)])?;
        match rows.first() {
            Some(row) => typed::<T>(row, &batpak::store::EventStore::schema(self)),
            None => Err(StoreError::NotFound(event_id)),
        }
    }

    pub(crate) fn get_event(
        &self,
        event_id: u128,
    ) -> Result<StoredEvent<serde_json::Value>, StoreError> {
        let rows = self.rows(&self.sql.get, &[&Uuid::from_u128(event_id)])?;
        match rows.first() {
            Some(row) => event(row),
            None => Err(StoreError::NotFound(event_id)),
        }
    }

    pub(crate) fn query_region(&self, region: &Region) -> Result<Vec<IndexEntry>, StoreError> {
        let (filter, params) = region_filter(region, 1);
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM {}.events WHERE {filter} ORDER BY position",
            self.sql.schema
        );
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        Ok(entries(&self.rows(&sql, &refs)?)?
            .into_iter()
            .filter(|e| in_region(region, e))
            .collect())
    }

    pub(crate) fn stream_entries(&self, entity: &str) -> Result<Vec<IndexEntry>, StoreError> {
        entries(&self.rows(&self.sql.stream, &[&entity])?)
    }

    pub(crate) fn correlated(&self, correlation_id: u128) -> Result<Vec<IndexEntry>, StoreError> {
        entries(&self.rows(
            &self.sql.by_correlation,
            &[&Uuid::from_u128(correlation_id)],
        )?)
    }

    pub(crate) fn caused_by(&self, event_id: u128) -> Result<Vec<IndexEntry>, StoreError> {
        entries(&self.rows(&self.sql.children, &[&Uuid::from_u128(event_id)])?)
    }

    /// The event and its predecessors in its entity's chain, newest first,
    /// following `prev_hash` links; stops where a link does not match.
    pub(crate) fn ancestors(
        &self,
        event_id: u128,
        limit: usize,
    ) -> Result<Vec<StoredEvent<serde_json::Value>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let first = match self.get_event(event_id) {
            Ok(ev) => ev,
            Err(StoreError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let entity = first.coordinate.entity().to_owned();
        let clock = i64::from(first.event.header.position.sequence);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.rows(&self.sql.walk, &[&entity, &clock, &limit])?;
        let mut out: Vec<StoredEvent<serde_json::Value>> = Vec::with_capacity(rows.len());
        for row in &rows {
            let ev = event(row)?;
            if let Some(newer) = out.last() {
                let link = newer.event.hash_chain.map_or([0; 32], |c| c.prev_hash);
                let hash = ev.event.hash_chain.map_or([0; 32], |c| c.event_hash);
                if link != hash {
                    break;
                }
            }
            out.push(ev);
        }
        Ok(out)
    }

    pub(crate) fn counts(&self) -> Result<StoreStats, StoreError> {
        let rows = self.rows(&self.sql.stats, &[])?;
        let row = rows
            .first()
            .ok_or_else(|| damaged("statistics", "no row"))?;
        let events: i64 = col(row, 0)?;
        let next: i64 = col(row, 1)?;
        Ok(StoreStats {
            event_count: usize::try_from(events).map_err(|_| damaged("event count", events))?,
            global_sequence: position(next)?,
        })
    }

    /// Entries of `region` with `after < position < stable_below`, in
    /// position order, at most `limit`, where `stable_below` is derived from
    /// the oldest transaction still running anywhere in the cluster: every
    /// transaction older than it has ended, and every later one gets a
    /// larger id, so no event can ever commit below that bound (ADR 0018).
    /// A reader that resumes after the last position it was given never
    /// misses an event, without timeouts. Events of transactions still
    /// running (and of any long transaction in the cluster) wait.
    ///
    /// # Errors
    /// `Unavailable`, `Backend`.
    pub fn read_stable(
        &self,
        region: &Region,
        after: Option<u64>,
        limit: usize,
    ) -> Result<StableRead, StoreError> {
        let (filter, params) = region_filter(region, 3);
        // One statement: the bound and the rows come from one snapshot.
        let sql = format!(
            "WITH b AS MATERIALIZED (
                 SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20 AS bound)
             SELECT b.bound, e.* FROM b LEFT JOIN LATERAL (
                 SELECT {ENTRY_COLUMNS} FROM {schema}.events
                 WHERE position > $1 AND position < b.bound AND {filter}
                 ORDER BY position LIMIT $2) e ON true",
            schema = self.sql.schema
        );
        let after = match after {
            Some(a) => i64::try_from(a).map_err(|_| {
                StoreError::Configuration(format!("position {a} is beyond any stored one"))
            })?,
            None => -1,
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut refs: Vec<&(dyn ToSql + Sync)> = vec![&after, &limit];
        refs.extend(params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)));
        let rows = self.rows(&sql, &refs)?;
        let first = rows.first().ok_or_else(|| damaged("bound", "no row"))?;
        let stable_below = position(col(first, 0)?)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            if col::<Option<i64>>(row, 1)?.is_none() {
                continue;
            }
            let e = entry_at(row, 1)?;
            if in_region(region, &e) {
                entries.push(e);
            }
        }
        Ok(StableRead {
            entries,
            stable_below,
        })
    }

    /// The current stable bound alone (see [`PgStore::read_stable`]).
    ///
    /// # Errors
    /// `Unavailable`, `Backend`.
    pub fn stable_position(&self) -> Result<u64, StoreError> {
        stable_bound(&self.pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds_cover_exactly_the_prefix() {
        assert_eq!(prefix_upper_bound("order:").as_deref(), Some("order;"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_upper_bound("\u{10FFFF}"), None);
        assert_eq!(
            prefix_upper_bound("x\u{D7FF}").as_deref(),
            Some("x\u{E000}")
        );
        let upper = prefix_upper_bound("order:1").unwrap();
        for inside in ["order:1", "order:10", "order:1\u{10FFFF}zz"] {
            assert!(inside >= "order:1" && inside < upper.as_str(), "{inside}");
        }
        for outside in ["order:", "order:2", "order;"] {
            assert!(
                !(outside >= "order:1" && outside < upper.as_str()),
                "{outside}"
            );
        }
    }

    #[test]
    fn region_filters_number_their_parameters() {
        let (sql, params) = region_filter(
            &Region::entity("o")
                .with_scope("t")
                .with_fact_category(3)
                .with_clock_range((1, 2)),
            3,
        );
        assert_eq!(
            sql,
            "entity >= $3 AND entity < $4 AND scope = $5 AND kind BETWEEN $6 AND $7 \
             AND clock BETWEEN $8 AND $9"
        );
        assert_eq!(params.len(), 7);
        assert_eq!(region_filter(&Region::all(), 1).0, "TRUE");
    }
}
