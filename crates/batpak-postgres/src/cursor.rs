//! Guaranteed cursors on PostgreSQL: [`PgCursor`], and the [`Pager`] that
//! reads a region in position order below the stable bound.
//!
//! A page is one statement that computes the stable bound
//! (`pg_snapshot_xmin(pg_current_snapshot()) << 20`, ADR 0018) and reads
//! the rows after the cursor's scan point and below the bound, from the
//! same snapshot, so nothing can ever appear behind the cursor. A cursor
//! holds no transaction between pages (one open would hold back every
//! cursor's bound, cluster-wide) and no connection: pages use the pool.
//!
//! Every region is read in position order from an index range:
//! - everything: `events_position_key`;
//! - one scope, one kind, one kind category: `(scope, position)`,
//!   `(kind, position)`, `((kind >> 12), position)`;
//! - anything else (an entity prefix, a clock range, two filters at once):
//!   windows of [`WINDOW_XIDS`] transactions of the position index (or of
//!   the most selective of the indexes above), each starting at the first
//!   event after the scan point, filtered. A window's work is bounded
//!   whatever the region, empty stretches are skipped in one index probe,
//!   and each row is visited once over the cursor's life.
//!
//! This module reads; it never writes. Waiting is [`crate::feed`]'s.

use crate::feed::Feed;
use crate::pool::Pool;
use crate::read::{entry_at, position};
use crate::schema::ENTRY_COLUMNS;
use batpak::coordinate::{KindFilter, Region};
use batpak::store::{EventCursor, IndexEntry, StoreError};
use postgres::types::ToSql;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Transactions per window of a filtered scan (positions are
/// `xid << 20 | index`). Each window holds at most this many appends.
pub(crate) const WINDOW_XIDS: i64 = 1 << 14;

/// Shortest wait before a cursor that knows of events it cannot read yet
/// (an older transaction holds the bound) looks again; it doubles up to
/// `poll_interval`. A batpak append that holds it back announces its own
/// commit, so this matters only for other transactions.
const HELD_BACK_FIRST: Duration = Duration::from_millis(5);

/// Shortest time between two reads of a waiting cursor: wake-ups within it
/// are served by one read, which bounds what a busy store's notifications
/// cost each cursor, for at most this much added latency.
const READ_GAP: Duration = Duration::from_millis(5);

type Param = Box<dyn ToSql + Sync + Send>;

/// A region's WHERE clause for cursor pages, with its parameters numbered
/// from `first`, and whether one index range serves it exactly (in position
/// order, without a filter): then pages need no window.
fn cursor_filter(region: &Region, first: usize) -> (String, Vec<Param>, bool) {
    let mut clauses: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    let mut param = |v: Param| {
        params.push(v);
        format!("${}", first + params.len() - 1)
    };
    let mut ranged = 0;
    let mut filtered = false;
    if let Some(prefix) = region.entity_prefix.as_deref().filter(|p| !p.is_empty()) {
        // Deliberately not an index range on (entity, ...): no index orders
        // a set of entities by position, so the window bounds the work.
        let n = i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX);
        let n = param(Box::new(n));
        let p = param(Box::new(prefix.to_owned()));
        clauses.push(format!("left(entity, {n}) = {p}"));
        filtered = true;
    }
    if let Some(scope) = region.scope.as_deref() {
        let p = param(Box::new(scope.to_owned()));
        clauses.push(format!("scope = {p}"));
        ranged += 1;
    }
    match region.fact {
        None | Some(KindFilter::Any) => {}
        Some(KindFilter::Exact(kind)) => {
            let p = param(Box::new(i32::from(kind.raw())));
            clauses.push(format!("kind = {p}"));
            ranged += 1;
        }
        Some(KindFilter::Category(c)) => {
            let p = param(Box::new(i32::from(c)));
            clauses.push(format!("(kind >> 12) = {p}"));
            ranged += 1;
        }
        // A filter this code does not know: rows are checked against
        // `Region::matches_event` after the read.
        Some(_) => filtered = true,
    }
    if let Some((lo, hi)) = region.clock_range {
        let a = param(Box::new(i64::from(lo)));
        let b = param(Box::new(i64::from(hi)));
        clauses.push(format!("clock BETWEEN {a} AND {b}"));
        filtered = true;
    }
    let exact = !filtered && ranged <= 1;
    let sql = if clauses.is_empty() {
        "TRUE".to_owned()
    } else {
        clauses.join(" AND ")
    };
    (sql, params, exact)
}

/// The page statement for `region` in `schema`: returns the bound and the
/// window's end on every row (one row with null columns when nothing
/// matched), then the entries. `$1` scan point, `$2` limit, and for a
/// windowed region `$3` the window's width; whether it is windowed.
fn page_sql(schema: &str, region: &Region) -> (String, Vec<Param>, bool) {
    let exact = cursor_filter(region, 3).2;
    let (filter, params, _) = cursor_filter(region, if exact { 3 } else { 4 });
    let bound = "WITH b AS MATERIALIZED (
             SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint << 20 AS bound)";
    let sql = if exact {
        format!(
            "{bound}
             SELECT b.bound, b.bound AS upto, e.* FROM b LEFT JOIN LATERAL (
                 SELECT {ENTRY_COLUMNS} FROM {schema}.events
                 WHERE position > $1 AND position < b.bound AND {filter}
                 ORDER BY position LIMIT $2) e ON true"
        )
    } else {
        format!(
            "{bound},
             w AS MATERIALIZED (
                 SELECT b.bound, least(b.bound, coalesce(
                     (SELECT position FROM {schema}.events
                      WHERE position > $1 AND position < b.bound
                      ORDER BY position LIMIT 1), b.bound) + $3) AS upto
                 FROM b)
             SELECT w.bound, w.upto, e.* FROM w LEFT JOIN LATERAL (
                 SELECT {ENTRY_COLUMNS} FROM {schema}.events
                 WHERE position > $1 AND position < w.upto AND {filter}
                 ORDER BY position LIMIT $2) e ON true"
        )
    };
    (sql, params, !exact)
}

/// Reads a region page by page in position order, below the stable bound,
/// from a scan point that only moves forward. No transaction, no held
/// connection between pages.
pub(crate) struct Pager {
    pool: Pool,
    sql: String,
    params: Vec<Param>,
    windowed: bool,
    /// A window's width in positions.
    window: i64,
    region: Region,
    /// Every position up to this one has been examined (-1: none).
    scan: i64,
    buffer: VecDeque<IndexEntry>,
    page: i64,
    /// The bound of the last page read (0 before the first).
    stable_below: u64,
    /// When the last page was read.
    read_at: Option<Instant>,
}

impl Pager {
    pub(crate) fn new(feed: &Feed, region: &Region, after: Option<u64>, page: usize) -> Self {
        let (text, params, windowed) = page_sql(&feed.sql.schema, region);
        Self {
            pool: feed.pool.clone(),
            window: feed.window_xids << 20,
            sql: text,
            params,
            windowed,
            region: region.clone(),
            // A position past any stored one simply finds nothing.
            scan: after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX)),
            buffer: VecDeque::new(),
            page: i64::try_from(page.max(1)).unwrap_or(i64::MAX),
            stable_below: 0,
            read_at: None,
        }
    }

    /// Read pages until one holds a matching event or everything below the
    /// bound has been examined; false if nothing new is stable yet.
    fn refill(&mut self) -> Result<bool, StoreError> {
        while self.buffer.is_empty() {
            let rows = crate::read_with(&self.pool, |c| {
                let st = c.statement(&self.sql)?;
                let mut refs: Vec<&(dyn ToSql + Sync)> = vec![&self.scan, &self.page];
                if self.windowed {
                    refs.push(&self.window);
                }
                refs.extend(
                    self.params
                        .iter()
                        .map(|p| p.as_ref() as &(dyn ToSql + Sync)),
                );
                c.client.query(&st, &refs)
            })?;
            let Some(first) = rows.first() else {
                return Err(StoreError::Backend("cursor page returned no row".into()));
            };
            let bound: i64 = first
                .try_get(0)
                .map_err(|e| StoreError::Backend(Box::new(crate::error::DbFailure(e))))?;
            let upto: i64 = first
                .try_get(1)
                .map_err(|e| StoreError::Backend(Box::new(crate::error::DbFailure(e))))?;
            self.stable_below = position(bound)?;
            self.read_at = Some(Instant::now());
            let mut read = 0i64;
            let mut last = self.scan;
            for row in &rows {
                let present: Option<i64> = row
                    .try_get(2)
                    .map_err(|e| StoreError::Backend(Box::new(crate::error::DbFailure(e))))?;
                let Some(pos) = present else { continue };
                read += 1;
                last = last.max(pos);
                let e = entry_at(row, 2)?;
                // The core's own region rule has the last word.
                if self
                    .region
                    .matches_event(e.coord.entity(), e.coord.scope(), e.kind)
                    && self.region.matches_clock(e.clock)
                {
                    self.buffer.push_back(e);
                }
            }
            // A full page ends at its last row; a short one examined its
            // whole window (nothing can appear below the bound later).
            let examined = if read == self.page { last } else { upto - 1 };
            self.scan = self.scan.max(examined);
            if read < self.page && upto >= bound {
                break;
            }
        }
        Ok(!self.buffer.is_empty())
    }

    /// The next matching event, or `None` if none is stable yet.
    pub(crate) fn next(&mut self) -> Result<Option<IndexEntry>, StoreError> {
        if self.buffer.is_empty() && !self.refill()? {
            return Ok(None);
        }
        Ok(self.buffer.pop_front())
    }

    /// Everything buffered or on the next page (possibly nothing).
    pub(crate) fn next_page(&mut self) -> Result<Vec<IndexEntry>, StoreError> {
        if self.buffer.is_empty() && !self.refill()? {
            return Ok(Vec::new());
        }
        Ok(self.buffer.drain(..).collect())
    }

    pub(crate) fn stable_below(&self) -> u64 {
        self.stable_below
    }

    /// `EXPLAIN` of the next page's statement, as the server would run it.
    #[cfg(feature = "test-support")]
    pub(crate) fn explain(&self) -> Result<String, StoreError> {
        let rows = crate::read_with(&self.pool, |c| {
            let st = c.statement(&format!("EXPLAIN (COSTS OFF) {}", self.sql))?;
            let mut refs: Vec<&(dyn ToSql + Sync)> = vec![&self.scan, &self.page];
            if self.windowed {
                refs.push(&self.window);
            }
            refs.extend(
                self.params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync)),
            );
            c.client.query(&st, &refs)
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| r.try_get::<_, String>(0).ok())
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// A guaranteed cursor over a PostgreSQL store: every committed event of
/// its region exactly once, in position order, including events committed
/// later by any process, and never one that could still commit below a
/// position already delivered (ADR 0018, ADR 0020). Resume it anywhere from
/// [`PgCursor::position`] with [`crate::PgStore::cursor_from`].
///
/// The same methods as the file store's [`batpak::store::Cursor`]; reads
/// return `Result` (a failed read leaves the cursor's place unchanged, so
/// the call can be repeated, on a reconnected pool).
pub struct PgCursor {
    pager: Pager,
    feed: Arc<Feed>,
    position: Option<u64>,
}

impl PgCursor {
    pub(crate) fn new(feed: Arc<Feed>, region: &Region, after: Option<u64>) -> Self {
        Self {
            pager: Pager::new(&feed, region, after, feed.page_size),
            feed,
            position: after,
        }
    }

    /// The next matching event, or `None` if none is stable yet.
    ///
    /// # Errors
    /// `Unavailable` (retryable) or `Backend`; the cursor's place is unchanged.
    pub fn poll(&mut self) -> Result<Option<IndexEntry>, StoreError> {
        let e = self.pager.next()?;
        if let Some(e) = &e {
            self.position = Some(e.global_sequence);
        }
        Ok(e)
    }

    /// Up to `max` next matching events (possibly none). Events already
    /// taken when a read fails are returned; the failure comes next call.
    ///
    /// # Errors
    /// As [`PgCursor::poll`], when no event could be returned.
    pub fn poll_batch(&mut self, max: usize) -> Result<Vec<IndexEntry>, StoreError> {
        EventCursor::poll_batch(self, max)
    }

    /// The next matching event, waiting up to `timeout` for one to commit
    /// in any process; `None` on timeout or once the store has closed.
    /// `Duration::MAX` waits without limit. It sleeps until a commit is
    /// announced (by this handle, or by `NOTIFY` from another process), and
    /// reads at least every `poll_interval` whatever it hears; when it
    /// knows of a commit it cannot read yet (an older transaction holds the
    /// bound back) it looks again after 1, 2, 4, ... ms.
    ///
    /// # Errors
    /// As [`PgCursor::poll`].
    pub fn wait_next(&mut self, timeout: Duration) -> Result<Option<IndexEntry>, StoreError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut held_back = HELD_BACK_FIRST;
        // Whoever waits once will wait again: hear other processes from now on.
        self.feed.listen();
        loop {
            let seen = self.feed.generation();
            if let Some(e) = self.poll()? {
                return Ok(Some(e));
            }
            if self.feed.is_closed() {
                return Ok(None);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            let nap = if self.feed.announced() >= self.pager.stable_below() {
                let n = held_back;
                held_back = (held_back * 2).min(self.feed.poll_interval);
                n
            } else {
                self.feed.poll_interval
            };
            let until = now
                .checked_add(nap)
                .map(|t| deadline.map_or(t, |d| d.min(t)));
            self.feed.wait(seen, until.or(deadline));
            // Woken right after a read: let more commits gather first.
            if let Some(gap) = self
                .pager
                .read_at
                .and_then(|at| READ_GAP.checked_sub(at.elapsed()))
            {
                let left = deadline.map_or(gap, |d| d.saturating_duration_since(Instant::now()));
                std::thread::sleep(gap.min(left));
            }
        }
    }

    /// Position of the last event delivered (or the `after` the cursor was
    /// created with); `None` before the first.
    #[must_use]
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The region this cursor reads.
    #[must_use]
    pub fn region(&self) -> &Region {
        &self.pager.region
    }

    /// `EXPLAIN` of this cursor's next page (feature `test-support`).
    ///
    /// # Errors
    /// `Unavailable`, `Backend`.
    #[cfg(feature = "test-support")]
    pub fn explain_next_page(&self) -> Result<String, StoreError> {
        self.pager.explain()
    }

    /// The stable bound of the last page read: every event below it that
    /// matches the region has been delivered or is buffered.
    #[must_use]
    pub fn stable_below(&self) -> u64 {
        self.pager.stable_below()
    }
}

impl EventCursor for PgCursor {
    fn poll(&mut self) -> Result<Option<IndexEntry>, StoreError> {
        PgCursor::poll(self)
    }

    fn wait_next(&mut self, timeout: Duration) -> Result<Option<IndexEntry>, StoreError> {
        PgCursor::wait_next(self, timeout)
    }

    fn position(&self) -> Option<u64> {
        self.position
    }

    fn region(&self) -> &Region {
        &self.pager.region
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_index_regions_read_without_windows() {
        let exact = |r: &Region| cursor_filter(r, 4).2;
        assert!(exact(&Region::all()));
        assert!(exact(&Region::scope("s")));
        assert!(exact(&Region::all().with_fact(KindFilter::Exact(
            batpak::event::EventKind::custom(1, 1)
        ))));
        assert!(exact(&Region::all().with_fact_category(3)));
        assert!(exact(&Region::entity("")));
        assert!(!exact(&Region::entity("order:")));
        assert!(!exact(&Region::scope("s").with_fact_category(3)));
        assert!(!exact(&Region::all().with_clock_range((1, 2))));
        let (sql, params, _) = cursor_filter(&Region::entity("ö:").with_scope("t"), 4);
        assert_eq!(sql, "left(entity, $4) = $5 AND scope = $6");
        assert_eq!(params.len(), 3);
    }
}
