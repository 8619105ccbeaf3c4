//! `PgStore::verify`: every entity's chain, recomputed from the rows, in one
//! consistent snapshot (a read-only REPEATABLE READ transaction) while
//! appends continue. Reads in pages through a portal, so memory stays
//! bounded by one page and one entity's tail. Never writes.

use crate::schema::EVENT_COLUMNS;
use crate::PgStore;
use batpak::store::codec::{self, ChainInput};
use batpak::store::StoreError;
use postgres::Row;
use std::fmt;

/// Rows fetched per round trip.
const PAGE: i32 = 2000;

/// What is wrong with a stored event or entity.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgProblemKind {
    /// The entity's clocks are not 0, 1, 2, ...: this clock was expected.
    ClockGap {
        /// The clock that should have come next.
        expected: u32,
    },
    /// `prev_hash` is not the previous event's `event_hash`.
    BrokenLink,
    /// `event_hash` is not the hash of the event's fields on its `prev_hash`.
    EventHashMismatch,
    /// `content_hash` is not the blake3 of the payload bytes.
    ContentHashMismatch,
    /// The payload bytes do not decode.
    PayloadUnreadable(String),
    /// A column holds a value no event can have.
    InvalidRow(String),
    /// The entity's timestamp went backwards.
    TimeWentBack,
    /// The entity's positions do not increase with its clock.
    PositionOrder,
    /// The entity's row in `streams` does not name its newest event (or the
    /// entity has events but no row, or a row but no events).
    StreamRowMismatch(String),
}

/// One problem found by [`PgStore::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgProblem {
    /// The entity.
    pub entity: String,
    /// The event, when the problem is one event's.
    pub event_id: Option<u128>,
    /// The event's clock as stored.
    pub clock: Option<u32>,
    /// What is wrong.
    pub kind: PgProblemKind,
}

impl fmt::Display for PgProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entity {:?}", self.entity)?;
        if let Some(clock) = self.clock {
            write!(f, " clock {clock}")?;
        }
        if let Some(id) = self.event_id {
            write!(f, " event {id:032x}")?;
        }
        write!(f, ": {:?}", self.kind)
    }
}

/// What [`PgStore::verify`] checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgVerifyReport {
    /// Events read.
    pub events_checked: u64,
    /// Entities read.
    pub entities_checked: u64,
    /// Everything wrong, in entity and clock order.
    pub problems: Vec<PgProblem>,
}

impl PgVerifyReport {
    /// No problem found.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// The problems found.
    #[must_use]
    pub fn problems(&self) -> &[PgProblem] {
        &self.problems
    }
}

impl fmt::Display for PgVerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events in {} entities checked: ",
            self.events_checked, self.entities_checked
        )?;
        if self.is_clean() {
            return f.write_str("clean");
        }
        writeln!(f, "{} problems", self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// The entity being walked.
struct Walk {
    entity: String,
    next_clock: u32,
    last_hash: [u8; 32],
    last_ts: i64,
    last_position: i64,
    /// Its `streams` row: clock and hash (`None`: no row).
    row: Option<(i64, Vec<u8>)>,
}

impl Walk {
    fn finish(self, report: &mut PgVerifyReport) {
        let newest = self.next_clock.checked_sub(1);
        let ok = match &self.row {
            Some((clock, hash)) => {
                newest.map(i64::from) == Some(*clock) && hash.as_slice() == self.last_hash
            }
            None => false,
        };
        if !ok {
            report.problems.push(PgProblem {
                entity: self.entity,
                event_id: None,
                clock: newest,
                kind: PgProblemKind::StreamRowMismatch(match self.row {
                    Some((clock, _)) => format!("streams row says newest clock {clock}"),
                    None => "no streams row".into(),
                }),
            });
        }
    }
}

pub(crate) fn verify(store: &PgStore) -> Result<PgVerifyReport, StoreError> {
    let s = &store.sql.schema;
    let columns = EVENT_COLUMNS
        .split(',')
        .map(|c| format!("e.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns}, st.clock, st.event_hash, e.payload_version
         FROM {s}.events e LEFT JOIN {s}.streams st ON st.entity = e.entity
         ORDER BY e.entity, e.clock"
    );
    let orphans = format!(
        "SELECT entity FROM {s}.streams st
         WHERE NOT EXISTS (SELECT 1 FROM {s}.events e WHERE e.entity = st.entity)
         ORDER BY entity"
    );
    store.db(|c| {
        let mut report = PgVerifyReport::default();
        let mut tx = c
            .client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?;
        let st = tx.prepare(&sql)?;
        let portal = tx.bind(&st, &[])?;
        let mut walk: Option<Walk> = None;
        loop {
            let rows = tx.query_portal(&portal, PAGE)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                check_row(row, &mut walk, &mut report);
            }
        }
        if let Some(w) = walk.take() {
            w.finish(&mut report);
        }
        for row in tx.query(&orphans, &[])? {
            report.problems.push(PgProblem {
                entity: row.try_get(0).unwrap_or_default(),
                event_id: None,
                clock: None,
                kind: PgProblemKind::StreamRowMismatch("a streams row without events".into()),
            });
        }
        tx.commit()?;
        Ok(report)
    })
}

fn check_row(row: &Row, walk: &mut Option<Walk>, report: &mut PgVerifyReport) {
    let entity: String = row.try_get(2).unwrap_or_default();
    if walk.as_ref().is_none_or(|w| w.entity != entity) {
        if let Some(done) = walk.take() {
            done.finish(report);
        }
        report.entities_checked += 1;
        let stream_row = match (
            row.try_get::<_, Option<i64>>(15),
            row.try_get::<_, Option<Vec<u8>>>(16),
        ) {
            (Ok(Some(c)), Ok(Some(h))) => Some((c, h)),
            _ => None,
        };
        *walk = Some(Walk {
            entity: entity.clone(),
            next_clock: 0,
            last_hash: [0; 32],
            last_ts: i64::MIN,
            last_position: -1,
            row: stream_row,
        });
    }
    report.events_checked += 1;
    let Some(w) = walk.as_mut() else {
        return;
    };
    let raw_clock: i64 = row.try_get(4).unwrap_or(-1);
    let problem = |kind, event_id: Option<u128>, clock: Option<u32>| PgProblem {
        entity: entity.clone(),
        event_id,
        clock,
        kind,
    };
    let ev = match crate::read::event(row) {
        Ok(ev) => ev,
        Err(e) => {
            let id = row.try_get::<_, uuid::Uuid>(1).ok().map(|u| u.as_u128());
            // The whole chain: the cause says what is wrong with the row.
            let text = e.display_chain().to_string();
            let kind = if text.contains("payload") {
                PgProblemKind::PayloadUnreadable(text)
            } else {
                PgProblemKind::InvalidRow(text)
            };
            report
                .problems
                .push(problem(kind, id, u32::try_from(raw_clock).ok()));
            // Keep walking from what the row says, so one bad row is one problem.
            w.next_clock = u32::try_from(raw_clock + 1).unwrap_or(w.next_clock);
            if let Ok(h) = row.try_get::<_, &[u8]>(10) {
                if let Ok(h) = <[u8; 32]>::try_from(h) {
                    w.last_hash = h;
                }
            }
            return;
        }
    };
    let h = &ev.event.header;
    let chain = ev.event.hash_chain.unwrap_or_default();
    let id = Some(h.event_id);
    let clock = Some(h.position.sequence);
    if h.position.sequence != w.next_clock {
        report.problems.push(problem(
            PgProblemKind::ClockGap {
                expected: w.next_clock,
            },
            id,
            clock,
        ));
    }
    if chain.prev_hash != w.last_hash {
        report
            .problems
            .push(problem(PgProblemKind::BrokenLink, id, clock));
    }
    let version = crate::read::version_of(row.try_get(17).unwrap_or(1));
    if codec::event_hash_versioned(&chain.prev_hash, &ChainInput::of(&ev), version)
        != chain.event_hash
    {
        report
            .problems
            .push(problem(PgProblemKind::EventHashMismatch, id, clock));
    }
    let payload: &[u8] = row.try_get(14).unwrap_or_default();
    if codec::content_hash(payload) != h.content_hash {
        report
            .problems
            .push(problem(PgProblemKind::ContentHashMismatch, id, clock));
    }
    if h.timestamp_us < w.last_ts {
        report
            .problems
            .push(problem(PgProblemKind::TimeWentBack, id, clock));
    }
    let pos: i64 = row.try_get(0).unwrap_or(-1);
    if pos <= w.last_position {
        report
            .problems
            .push(problem(PgProblemKind::PositionOrder, id, clock));
    }
    w.next_clock = h.position.sequence.saturating_add(1);
    w.last_hash = chain.event_hash;
    w.last_ts = h.timestamp_us;
    w.last_position = pos;
}
