//! Projections on PostgreSQL: fold an entity's relevant events into a value,
//! through a [`ProjectionCache`] when the store has one
//! ([`crate::PgStore::open_with_cache`]), with the file store's meaning of
//! [`Freshness`]: `Consistent` is never older than the entity's newest
//! relevant event, `MaybeStale` may return a cached value young enough, and
//! a value whose type supports it is brought up to date by applying only
//! the newer events. Cache keys are the file store's
//! (`batpak::store::projection::cache_key`, history epoch 0: this backend
//! never rewrites history); watermarks are positions.
//!
//! A cache failure is only a miss. This module reads events and the cache;
//! it never writes events.

use crate::read::position;
use crate::PgStore;
use batpak::event::{Event, EventSourced};
use batpak::store::projection::{cache_key, fold_cached, FoldInputs};
use batpak::store::{CacheMeta, Freshness, StoreError};
use postgres::types::ToSql;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn kinds<T: EventSourced<Value>>() -> Vec<i32> {
    T::relevant_event_kinds()
        .iter()
        .map(|k| i32::from(k.raw()))
        .collect()
}

impl PgStore {
    /// Position of `entity`'s newest event of a kind `T` reads.
    pub(crate) fn newest_relevant_position<T: EventSourced<Value>>(
        &self,
        entity: &str,
    ) -> Result<Option<u64>, StoreError> {
        let kinds = kinds::<T>();
        let s = &self.sql.schema;
        let rows = if kinds.is_empty() {
            // The entity's row names its newest event.
            self.db(|c| {
                let st = c.statement(&format!(
                    "SELECT position FROM {s}.streams WHERE entity = $1"
                ))?;
                c.client.query(&st, &[&entity])
            })?
        } else {
            // Newest first along (entity, clock): stops at the first match.
            self.db(|c| {
                let st = c.statement(&format!(
                    "SELECT position FROM {s}.events WHERE entity = $1 AND kind = ANY ($2)
                     ORDER BY clock DESC LIMIT 1"
                ))?;
                c.client.query(&st, &[&entity, &kinds])
            })?
        };
        match rows.first() {
            Some(r) => {
                let p: i64 = r
                    .try_get(0)
                    .map_err(|e| StoreError::Backend(Box::new(crate::error::DbFailure(e))))?;
                Ok(Some(position(p)?))
            }
            None => Ok(None),
        }
    }

    /// `entity`'s events of the kinds `T` reads with `after < position <=
    /// through`, in clock order.
    fn relevant_events<T: EventSourced<Value>>(
        &self,
        entity: &str,
        after: Option<u64>,
        through: u64,
    ) -> Result<Vec<Event<Value>>, StoreError> {
        let kinds = kinds::<T>();
        let after = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
        let through = i64::try_from(through).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {cols} FROM {s}.events
             WHERE entity = $1 AND position > $2 AND position <= $3
               AND (cardinality($4::integer[]) = 0 OR kind = ANY ($4))
             ORDER BY clock",
            cols = crate::schema::VERSIONED_COLUMNS,
            s = self.sql.schema
        );
        let rows = self.db(|c| {
            let st = c.statement(&sql)?;
            let params: [&(dyn ToSql + Sync); 4] = [&entity, &after, &through, &kinds];
            c.client.query(&st, &params)
        })?;
        // Projections fold today's shapes: old payloads are upcast.
        let schema = batpak::store::EventStore::schema(self);
        rows.iter()
            .map(|r| {
                let v = crate::read::versioned(r)?;
                let mut ev = v.event.event;
                let payload = std::mem::take(&mut ev.payload);
                ev.payload = schema
                    .upcast(
                        ev.header.event_id,
                        ev.header.event_kind,
                        v.payload_version,
                        payload,
                    )?
                    .0;
                Ok(ev)
            })
            .collect()
    }

    /// `T` for `entity` up to the relevant event at `through`, using and
    /// refreshing the cache.
    pub(crate) fn project_through_position<T>(
        &self,
        entity: &str,
        freshness: &Freshness,
        through: u64,
    ) -> Result<Option<T>, StoreError>
    where
        T: EventSourced<Value> + Serialize + DeserializeOwned + 'static,
    {
        let key = cache_key::<T>(entity, 0);
        // No cache, or one that fails, is a miss (and `store_cached` then
        // keeps nothing).
        let cached = self.cache.as_deref().and_then(|cache| match cache.get(&key) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e.display_chain(), "batpak: projection cache read failed");
                None
            }
        });
        let inputs = FoldInputs {
            cached: cached.as_ref().map(|(bytes, meta)| (&bytes[..], meta)),
            freshness,
            latest: through,
            now_us: self.config.now_us(),
            incremental: T::supports_incremental_apply(),
        };
        fold_cached(
            inputs,
            |after| self.relevant_events::<T>(entity, after, through),
            |value: &T| self.store_cached(&key, value, through),
        )
    }

    fn store_cached<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        watermark: u64,
    ) -> Result<(), StoreError> {
        let Some(cache) = self.cache.as_deref() else {
            return Ok(());
        };
        let bytes =
            serde_json::to_vec(value).map_err(|e| StoreError::Serialization(Box::new(e)))?;
        let meta = CacheMeta {
            watermark,
            cached_at_us: self.config.now_us(),
        };
        if let Err(e) = cache.put(key, &bytes, meta) {
            tracing::warn!(error = %e.display_chain(), "batpak: projection cache write failed");
        }
        Ok(())
    }
}
