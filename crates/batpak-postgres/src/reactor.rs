//! Reactors on PostgreSQL: a thread that answers every event of a region
//! through a guaranteed cursor, with reactions keyed by their trigger
//! (`batpak::store::answer_trigger`, the file store's own code), under an
//! election so that of all the processes running a reactor of one name,
//! one acts at a time.
//!
//! - **Election**: the reactor holds a session-level advisory lock on a
//!   key derived from the schema and the name, on a connection of its own
//!   kept for as long as it leads. The lock dies with that session (the
//!   process exits or is killed, the connection drops), and a follower,
//!   which tries the lock every [`ELECTION_POLL`], takes over.
//! - **Exactly once in effect**: output `i` of trigger `t` is appended with
//!   the key `reaction_key(t, i)`, so answering a trigger again (after a
//!   takeover, a restart, or a leader that lost its connection and has not
//!   noticed yet) returns the original receipts and writes nothing.
//! - **Resuming**: the leader records a checkpoint in `reactors` (on its
//!   lock connection, after each trigger): every trigger of the region up to
//!   that position has been answered. A new leader resumes after it: no
//!   scan. A reactor with no checkpoint yet looks backwards from the newest
//!   trigger for the last one whose first reaction exists (as the file
//!   store does), reading only the triggers it would answer anyway.
//!
//! This module appends only through [`EventStore`] and writes only the
//! reactor's own checkpoint row.

use crate::feed::Feed;
use crate::pool::Conn;
use crate::read::{position, region_filter};
use crate::PgStore;
use batpak::coordinate::Region;
use batpak::event::Reactive;
use batpak::store::{answer_trigger, codec, StoreError};
use postgres::types::ToSql;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How often a follower tries to take the lead.
pub const ELECTION_POLL: Duration = Duration::from_millis(100);
/// How long an idle leader waits for a trigger before it checks that its
/// store and its lock connection are still there.
const IDLE_CHECK: Duration = Duration::from_millis(100);
/// How often an idle leader proves its lock connection alive.
const LEASE_CHECK: Duration = Duration::from_secs(1);
/// Retry delays for a trigger whose answer failed for a passing reason.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Triggers read per round trip when looking backwards for the last answer.
const RESUME_PAGE: i64 = 512;

/// The advisory-lock key of reactor `name` in `schema` (FNV-1a 64 of both,
/// the same in every process).
fn lock_key(schema: &str, name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"batpak.reactor\0"
        .iter()
        .chain(schema.as_bytes())
        .chain(b"\0")
        .chain(name.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The name [`PgStore::react_loop`] gives a reactor: its type and its
/// region, so that the same reactor over the same region is one reactor
/// across processes, and two different ones never share a checkpoint.
pub fn default_reactor_name<R>(region: &Region) -> String {
    format!("{}@{region:?}", std::any::type_name::<R>())
}

impl PgStore {
    /// [`PgStore::react_loop_named`] under [`default_reactor_name`].
    ///
    /// # Errors
    /// As [`PgStore::react_loop_named`].
    pub fn react_loop<R>(
        self: &Arc<Self>,
        region: &Region,
        reactor: R,
    ) -> Result<std::thread::JoinHandle<()>, StoreError>
    where
        R: Reactive<serde_json::Value> + Send + 'static,
    {
        self.react_loop_named(&default_reactor_name::<R>(region), region, reactor)
    }

    /// Start a thread that answers every event of `region` with `reactor`'s
    /// outputs, appended as reactions (correlated to the trigger's
    /// correlation, caused by the trigger, keyed by `reaction_key(trigger,
    /// index)`), in position order, exactly once in effect. Of all the
    /// threads and processes running a reactor called `name` on this store,
    /// one acts at a time; the others wait and the first to notice takes
    /// over when it stops, resuming after the last trigger it answered.
    ///
    /// A trigger is never skipped: a passing failure (`Unavailable`) is
    /// retried; any other (the reactor's output cannot be stored) stops the
    /// thread, releasing the lead, so a restart resumes at that trigger.
    /// The thread holds no strong reference to the store between triggers
    /// and ends when the store is closed or dropped.
    ///
    /// # Errors
    /// `Io` if the thread cannot be spawned.
    pub fn react_loop_named<R>(
        self: &Arc<Self>,
        name: &str,
        region: &Region,
        reactor: R,
    ) -> Result<std::thread::JoinHandle<()>, StoreError>
    where
        R: Reactive<serde_json::Value> + Send + 'static,
    {
        let run = Reactor {
            store: Arc::downgrade(self),
            feed: self.feed.clone(),
            name: name.to_owned(),
            key: lock_key(&self.sql.schema, name),
            checkpoint_sql: format!(
                "INSERT INTO {s}.reactors (name, position) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE
                 SET position = greatest({s}.reactors.position, excluded.position),
                     updated_at = now()",
                s = self.sql.schema
            ),
            region: region.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("batpak-pg-reactor".into())
            .spawn(move || run.run(&reactor))?;
        Ok(handle)
    }

    /// Where reactor `name` resumes: after its checkpoint, or, without one,
    /// before the newest trigger of `region` whose first reaction exists
    /// (answering it again is harmless), or from the start.
    ///
    /// # Errors
    /// `Unavailable`, `Backend`.
    pub fn reactor_resume_point(
        &self,
        name: &str,
        region: &Region,
    ) -> Result<Option<u64>, StoreError> {
        if let Some(p) = self.reactor_checkpoint(name)? {
            return Ok(Some(p));
        }
        let (filter, params) = region_filter(region, 2);
        let sql = format!(
            "SELECT position, event_id FROM {}.events WHERE position < $1 AND {filter}
             ORDER BY position DESC LIMIT {RESUME_PAGE}",
            self.sql.schema
        );
        let mut before = i64::MAX;
        loop {
            let rows = self.db(|c| {
                let st = c.statement(&sql)?;
                let mut refs: Vec<&(dyn ToSql + Sync)> = vec![&before];
                refs.extend(params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)));
                c.client.query(&st, &refs)
            })?;
            let mut triggers: Vec<(i64, Uuid)> = Vec::with_capacity(rows.len());
            for row in &rows {
                let pos: i64 = row.try_get(0).map_err(backend)?;
                let id: Uuid = row.try_get(1).map_err(backend)?;
                triggers.push((pos, id));
            }
            let Some(&(oldest, _)) = triggers.last() else {
                return Ok(None);
            };
            let keys: Vec<Uuid> = triggers
                .iter()
                .map(|(_, id)| Uuid::from_u128(codec::reaction_key(id.as_u128(), 0)))
                .collect();
            let found = self.db(|c| {
                let st = c.statement(&format!(
                    "SELECT event_id FROM {}.events WHERE event_id = ANY ($1)",
                    self.sql.schema
                ))?;
                c.client.query(&st, &[&keys])
            })?;
            let answered: std::collections::HashSet<Uuid> = found
                .iter()
                .map(|r| r.try_get::<_, Uuid>(0).map_err(backend))
                .collect::<Result<_, _>>()?;
            if let Some(i) = keys.iter().position(|k| answered.contains(k)) {
                return Ok(position(triggers[i].0)?.checked_sub(1));
            }
            before = oldest;
        }
    }

    /// The checkpoint of reactor `name`: every trigger of its region up to
    /// this position has been answered.
    ///
    /// # Errors
    /// `Unavailable`, `Backend`.
    pub fn reactor_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let rows = self.db(|c| {
            let st = c.statement(&format!(
                "SELECT position FROM {}.reactors WHERE name = $1",
                self.sql.schema
            ))?;
            c.client.query(&st, &[&name])
        })?;
        match rows.first() {
            Some(r) => Ok(Some(position(r.try_get(0).map_err(backend)?)?)),
            None => Ok(None),
        }
    }
}

fn backend(e: postgres::Error) -> StoreError {
    StoreError::Backend(Box::new(crate::error::DbFailure(e)))
}

/// One reactor thread's state.
struct Reactor {
    store: Weak<PgStore>,
    feed: Arc<Feed>,
    name: String,
    key: i64,
    checkpoint_sql: String,
    region: Region,
}

/// Why a leader stopped leading.
enum Lead {
    /// The store is closed or dropped, or the reactor cannot go on: end.
    Stop,
    /// The lock connection failed: stand for election again.
    Lost,
}

impl Reactor {
    fn stopped(&self) -> bool {
        self.feed.is_closed() || self.store.strong_count() == 0
    }

    fn run<R: Reactive<serde_json::Value>>(&self, reactor: &R) {
        let mut backoff = RETRY_FIRST;
        while !self.stopped() {
            let Some(mut lock) = self.elect(&mut backoff) else {
                return;
            };
            backoff = RETRY_FIRST;
            tracing::info!(reactor = %self.name, "batpak: reactor leads");
            match self.lead(&mut lock, reactor) {
                Lead::Stop => return,
                Lead::Lost => {
                    tracing::warn!(reactor = %self.name, "batpak: reactor lost its lock connection; standing for election again");
                }
            }
        }
    }

    /// Connect and wait for the lock; `None` once the store is gone.
    fn elect(&self, backoff: &mut Duration) -> Option<Conn> {
        loop {
            if self.stopped() {
                return None;
            }
            let mut conn = match self.feed.dedicated("reactor") {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, reactor = %self.name, "batpak: reactor cannot connect");
                    if !self.feed.nap(*backoff) {
                        return None;
                    }
                    *backoff = (*backoff * 2).min(RETRY_MAX);
                    continue;
                }
            };
            loop {
                if self.stopped() {
                    return None;
                }
                let won = conn
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&self.key])
                    .and_then(|r| r.try_get::<_, bool>(0));
                match won {
                    Ok(true) => {
                        // Checkpoints need not wait for the disk: a lost
                        // one only means answering a few triggers again.
                        if conn
                            .client
                            .batch_execute("SET synchronous_commit TO off")
                            .is_err()
                        {
                            break;
                        }
                        return Some(conn);
                    }
                    Ok(false) => {
                        if !self.feed.nap(ELECTION_POLL) {
                            return None;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }

    /// Answer triggers while holding the lock on `lock`.
    fn lead<R: Reactive<serde_json::Value>>(&self, lock: &mut Conn, reactor: &R) -> Lead {
        let resume = loop {
            let Some(store) = self.store.upgrade() else {
                return Lead::Stop;
            };
            match store.reactor_resume_point(&self.name, &self.region) {
                Ok(r) => break r,
                Err(e) => {
                    drop(store);
                    tracing::warn!(error = %e.display_chain(), reactor = %self.name, "batpak: reactor cannot find where to resume; retrying");
                    if !self.feed.nap(RETRY_MAX) {
                        return Lead::Stop;
                    }
                }
            }
        };
        let mut cursor = crate::cursor::PgCursor::new(self.feed.clone(), &self.region, resume);
        let mut proven = Instant::now();
        let mut backoff = RETRY_FIRST;
        loop {
            if lock.client.is_closed() {
                return Lead::Lost;
            }
            let entry = match cursor.wait_next(IDLE_CHECK) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    if self.stopped() {
                        return Lead::Stop;
                    }
                    if proven.elapsed() >= LEASE_CHECK {
                        if lock.client.batch_execute("").is_err() {
                            return Lead::Lost;
                        }
                        proven = Instant::now();
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e.display_chain(), reactor = %self.name, "batpak: reactor read failed; retrying");
                    if !self.feed.nap(backoff) {
                        return Lead::Stop;
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue;
                }
            };
            backoff = RETRY_FIRST;
            // A trigger is never skipped: a passing failure is retried, a
            // lasting one stops the reactor (a restart resumes there).
            let mut retry = RETRY_FIRST;
            loop {
                let Some(store) = self.store.upgrade() else {
                    return Lead::Stop;
                };
                let trigger = || format!("{:032x}", entry.event_id);
                match answer_trigger(&*store, reactor, entry.event_id) {
                    Ok(()) | Err(StoreError::NotFound(_)) => break,
                    Err(e) if e.is_retryable() => {
                        drop(store);
                        if self.stopped() {
                            return Lead::Stop;
                        }
                        tracing::warn!(error = %e.display_chain(), trigger = %trigger(), "batpak reactor retries a trigger");
                        std::thread::sleep(retry);
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                    Err(e) => {
                        tracing::error!(error = %e.display_chain(), trigger = %trigger(), reactor = %self.name, "batpak reactor stopped: it cannot answer this trigger");
                        return Lead::Stop;
                    }
                }
            }
            let Ok(at) = i64::try_from(entry.global_sequence) else {
                return Lead::Stop;
            };
            let written = lock
                .statement(&self.checkpoint_sql)
                .and_then(|st| lock.client.execute(&st, &[&self.name, &at]));
            if written.is_err() {
                return Lead::Lost;
            }
            proven = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_depend_on_schema_and_name() {
        assert_eq!(lock_key("a", "r"), lock_key("a", "r"));
        assert_ne!(lock_key("a", "r"), lock_key("b", "r"));
        assert_ne!(lock_key("a", "r"), lock_key("a", "s"));
        assert_ne!(lock_key("ab", "c"), lock_key("a", "bc"));
    }
}
