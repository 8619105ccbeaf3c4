//! Payload versions, the schema and the lazy event iterators of the
//! PostgreSQL backend (ADRs 0026–0028).
//!
//! This module owns how rows become events (versioned, or typed straight
//! from their bytes) page by page: keyset
//! pagination (`position > last` for a region, `clock > last` for an
//! entity), one statement of at most [`PAGE`] rows at a time, no cursor or
//! transaction held between pages. Every event committed before the first
//! page is yielded exactly once, in order; events committed later may or
//! may not be. It writes nothing.

use crate::read::{entry, in_region, region_filter};
use crate::schema::VERSIONED_COLUMNS;
use crate::PgStore;
use batpak::coordinate::Region;
use batpak::event::EventKind;
use batpak::store::StoreError;
use postgres::types::ToSql;
use postgres::Row;
use std::collections::VecDeque;

/// Rows one page reads.
pub(crate) const PAGE: i64 = 256;

enum Keyset {
    Region {
        region: Region,
        after: i64,
    },
    Entity {
        entity: String,
        /// Only events of this kind (the others are skipped).
        kind: Option<EventKind>,
        after: i64,
    },
}

/// Turns a row of [`VERSIONED_COLUMNS`] into an item.
type Decode<'s, I> = Box<dyn Fn(&Row) -> Result<I, StoreError> + 's>;

/// Events read lazily a page at a time, each row decoded by `decode`
/// once it is known to belong (region and kind are checked on the row's
/// entry first). A page that cannot be read is an `Err` item and ends the
/// iteration; a row that does not decode is an `Err` item and the
/// iteration continues.
pub(crate) struct PgEvents<'s, I> {
    store: &'s PgStore,
    keyset: Keyset,
    decode: Decode<'s, I>,
    buffer: VecDeque<Result<I, StoreError>>,
    done: bool,
}

impl<'s, I> PgEvents<'s, I> {
    pub(crate) fn region(store: &'s PgStore, region: &Region, decode: Decode<'s, I>) -> Self {
        let keyset = Keyset::Region {
            region: region.clone(),
            after: -1,
        };
        Self::new(store, keyset, decode)
    }

    pub(crate) fn entity(
        store: &'s PgStore,
        entity: &str,
        kind: Option<EventKind>,
        decode: Decode<'s, I>,
    ) -> Self {
        let keyset = Keyset::Entity {
            entity: entity.to_owned(),
            kind,
            after: -1,
        };
        Self::new(store, keyset, decode)
    }

    fn new(store: &'s PgStore, keyset: Keyset, decode: Decode<'s, I>) -> Self {
        Self {
            store,
            keyset,
            decode,
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
            Keyset::Entity { entity, after, .. } => {
                let sql = format!(
                    "SELECT {VERSIONED_COLUMNS} FROM {s}.events
                     WHERE entity = $1 AND clock > $2 ORDER BY clock LIMIT {PAGE}"
                );
                self.store.rows(&sql, &[entity, after])
            }
        }
    }
}

impl<I> Iterator for PgEvents<'_, I> {
    type Item = Result<I, StoreError>;

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
                let (key_column, belongs): (usize, &dyn Fn(&batpak::store::IndexEntry) -> bool) =
                    match &self.keyset {
                        // The core's own region rule, as `query` applies it.
                        Keyset::Region { region, .. } => (0, &|e| in_region(region, e)),
                        Keyset::Entity { kind, .. } => (4, &|e| kind.is_none_or(|k| e.kind == k)),
                    };
                let key = row.try_get::<_, i64>(key_column).ok();
                let item = match entry(row) {
                    Ok(e) if !belongs(&e) => None,
                    Ok(_) => Some((self.decode)(row)),
                    Err(e) => Some(Err(e)),
                };
                if let Some(item) = item {
                    self.buffer.push_back(item);
                }
                if let Some(key) = key {
                    match &mut self.keyset {
                        Keyset::Region { after, .. } | Keyset::Entity { after, .. } => *after = key,
                    }
                }
            }
        }
    }
}
