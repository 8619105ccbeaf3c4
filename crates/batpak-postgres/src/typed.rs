//! Payload versions, the schema and the lazy event iterators of the
//! PostgreSQL backend (ADRs 0026–0028).
//!
//! This module owns how rows become versioned events page by page: keyset
//! pagination (`position > last` for a region, `clock > last` for an
//! entity), one statement of at most [`PAGE`] rows at a time, no cursor or
//! transaction held between pages. Every event committed before the first
//! page is yielded exactly once, in order; events committed later may or
//! may not be. It writes nothing.

use crate::read::{region_filter, versioned};
use crate::schema::VERSIONED_COLUMNS;
use crate::PgStore;
use batpak::coordinate::Region;
use batpak::event::VersionedEvent;
use batpak::store::StoreError;
use postgres::types::ToSql;
use postgres::Row;
use std::collections::VecDeque;

/// Rows one page reads.
pub(crate) const PAGE: i64 = 256;

enum Keyset {
    Region { region: Region, after: i64 },
    Entity { entity: String, after: i64 },
}

/// Versioned events read lazily a page at a time. A page that cannot be
/// read is an `Err` item and ends the iteration; a row that does not
/// decode is an `Err` item and the iteration continues.
pub(crate) struct PgEvents<'s> {
    store: &'s PgStore,
    keyset: Keyset,
    buffer: VecDeque<Result<VersionedEvent, StoreError>>,
    done: bool,
}

impl<'s> PgEvents<'s> {
    pub(crate) fn region(store: &'s PgStore, region: &Region) -> Self {
        Self::new(
            store,
            Keyset::Region {
                region: region.clone(),
                after: -1,
            },
        )
    }

    pub(crate) fn entity(store: &'s PgStore, entity: &str) -> Self {
        Self::new(
            store,
            Keyset::Entity {
                entity: entity.to_owned(),
                after: -1,
            },
        )
    }

    fn new(store: &'s PgStore, keyset: Keyset) -> Self {
        Self {
            store,
            keyset,
            buffer: VecDeque::new(),
            done: false,
        }
    }

    fn page(&mut self) -> Result<Vec<Row>, StoreError> {
        let s = &self.store.sql.schema;
        match &self.keyset {
            Keyset::Region { region, after } => {
                let (filter, params) = region_filter(region, 1);
                let n = params.len() + 1;
                let sql = format!(
                    "SELECT {VERSIONED_COLUMNS} FROM {s}.events
                     WHERE {filter} AND position > ${n} ORDER BY position LIMIT {PAGE}"
                );
                let mut refs: Vec<&(dyn ToSql + Sync)> = params
                    .iter()
                    .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                    .collect();
                refs.push(after);
                self.store.rows(&sql, &refs)
            }
            Keyset::Entity { entity, after } => {
                let sql = format!(
                    "SELECT {VERSIONED_COLUMNS} FROM {s}.events
                     WHERE entity = $1 AND clock > $2 ORDER BY clock LIMIT {PAGE}"
                );
                self.store.rows(&sql, &[entity, after])
            }
        }
    }
}

impl Iterator for PgEvents<'_> {
    type Item = Result<VersionedEvent, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.buffer.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            let rows = match self.page() {
                Ok(rows) => rows,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.done = (rows.len() as i64) < PAGE;
            for row in &rows {
                // The key advances past every row read, decodable or not.
                match &mut self.keyset {
                    Keyset::Region { region, after } => {
                        if let Ok(p) = row.try_get::<_, i64>(0) {
                            *after = p;
                        }
                        let item = versioned(row);
                        // The core's own region rule, as `query` applies it.
                        if item.as_ref().is_ok_and(|v| {
                            let e = &v.event;
                            let h = &e.event.header;
                            !(region.matches_event(
                                e.coordinate.entity(),
                                e.coordinate.scope(),
                                h.event_kind,
                            ) && region.matches_clock(h.position.sequence))
                        }) {
                            continue;
                        }
                        self.buffer.push_back(item);
                    }
                    Keyset::Entity { after, .. } => {
                        if let Ok(c) = row.try_get::<_, i64>(4) {
                            *after = c;
                        }
                        self.buffer.push_back(versioned(row));
                    }
                }
            }
        }
    }
}
