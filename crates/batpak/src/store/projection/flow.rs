//! `Store::project`: fold an entity's relevant events, using cached values
//! when they are fresh enough.

use super::{CacheMeta, Freshness, Memo, ProjectionCache};
use crate::event::{Event, EventSourced, Schema};
use crate::store::read::Reader;
use crate::store::{Store, StoreConfig, StoreError};
use std::sync::Arc;

/// The cache key of `T` for `entity`, for every backend's projection cache:
/// entity, a type name that does not
/// change between builds of the same code, the schema version and the
/// history epoch (bumped when compaction rewrites history), so a value is
/// never read back by another type, schema or history.
pub fn cache_key<T: EventSourced<serde_json::Value>>(entity: &str, epoch: u64) -> Vec<u8> {
    let name = std::any::type_name::<T>();
    let mut k = Vec::with_capacity(entity.len() + name.len() + 24);
    k.extend_from_slice(entity.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&T::schema_version().to_le_bytes());
    k.extend_from_slice(&epoch.to_le_bytes());
    k
}

/// What a backend knows when it projects an entity: the cached value and
/// its metadata (if any), the caller's freshness, the global sequence of
/// the entity's newest relevant event, the backend's clock, and whether a
/// cached value may be brought up to date by applying newer events.
pub struct FoldInputs<'a> {
    /// The cached bytes and their metadata.
    pub cached: Option<(&'a [u8], &'a CacheMeta)>,
    /// What the caller accepts.
    pub freshness: &'a Freshness,
    /// The newest relevant event's global sequence (the new watermark).
    pub latest: u64,
    /// Now, in microseconds since the Unix epoch, by the backend's clock.
    pub now_us: i64,
    /// Incremental projection is enabled (and `T` supports it).
    pub incremental: bool,
}

/// Every backend's projection decision, in one place: a cached value that
/// is up to date, or (`MaybeStale`) young enough, is returned as it is; an
/// older one is brought up to date by applying the newer events when
/// `incremental`; otherwise every relevant event is folded afresh. A cached
/// value that no longer decodes (its type changed) is a miss.
///
/// `events(after)` gives the relevant events with a global sequence in
/// `(after, latest]` (`None`: from the start), in order; `keep` caches a
/// value computed here under the watermark `latest`.
///
/// # Errors
/// Whatever `events` and `keep` return.
pub fn fold_cached<T>(
    inputs: FoldInputs<'_>,
    mut events: impl FnMut(Option<u64>) -> Result<Vec<Event<serde_json::Value>>, StoreError>,
    mut keep: impl FnMut(&T) -> Result<(), StoreError>,
) -> Result<Option<T>, StoreError>
where
    T: EventSourced<serde_json::Value> + serde::de::DeserializeOwned,
{
    let decode = |bytes: &[u8]| serde_json::from_slice::<T>(bytes).ok();
    if let Some((bytes, meta)) = inputs.cached {
        let fresh = meta.watermark == inputs.latest
            || match inputs.freshness {
                Freshness::MaybeStale { max_stale_ms } if *max_stale_ms > 0 => {
                    let age_us = inputs.now_us.saturating_sub(meta.cached_at_us);
                    u64::try_from(age_us).unwrap_or(0) <= max_stale_ms.saturating_mul(1000)
                }
                _ => false,
            };
        if fresh {
            if let Some(v) = decode(bytes) {
                return Ok(Some(v));
            }
        }
        if inputs.incremental && meta.watermark < inputs.latest {
            if let Some(mut state) = decode(bytes) {
                for event in events(Some(meta.watermark))? {
                    state.apply_event(&event);
                }
                keep(&state)?;
                return Ok(Some(state));
            }
        }
    }
    let state = T::from_events(&events(None)?);
    if let Some(s) = &state {
        keep(s)?;
    }
    Ok(state)
}

/// Whether `T` reads events of `kind` (no kinds listed: every kind).
pub(crate) fn relevant<T: EventSourced<serde_json::Value>>(kind: crate::event::EventKind) -> bool {
    let kinds = T::relevant_event_kinds();
    kinds.is_empty() || kinds.contains(&kind)
}

/// What `Store::project` folds into (its bounds, named once for the
/// internal steps).
pub(crate) trait Folded:
    EventSourced<serde_json::Value> + serde::Serialize + serde::de::DeserializeOwned + 'static
{
}

impl<T> Folded for T where
    T: EventSourced<serde_json::Value> + serde::Serialize + serde::de::DeserializeOwned + 'static
{
}

/// The projection layer's handle: reads, the schema that upcasts old
/// payloads, the two cache tiers, the history epoch and the configuration
/// (clock, incremental projection), and nothing of the write path or
/// maintenance.
pub(crate) struct Projector<'s> {
    pub(crate) reader: Reader<'s>,
    pub(crate) schema: Arc<Schema>,
    pub(crate) memo: &'s Memo,
    pub(crate) cache: &'s dyn ProjectionCache,
    pub(crate) epoch: u64,
    pub(crate) config: &'s StoreConfig,
}

impl Store {
    /// Fold `entity`'s events into a `T`.
    ///
    /// `Consistent` never returns a value older than the entity's newest
    /// event of a kind `T` reads; `MaybeStale { max_stale_ms }` may return a
    /// cached value younger than `max_stale_ms` by the store's clock (0
    /// behaves like `Consistent`). With `incremental_projection` enabled and
    /// `T::supports_incremental_apply()`, a cached value is brought up to
    /// date by applying only the newer events.
    ///
    /// # Errors
    /// `Serialization` if a cached or computed value cannot be (de)serialized,
    /// read errors of the events.
    pub fn project<T>(&self, entity: &str, freshness: &Freshness) -> Result<Option<T>, StoreError>
    where
        T: EventSourced<serde_json::Value>
            + serde::Serialize
            + serde::de::DeserializeOwned
            + 'static,
    {
        let projector = self.shared.projector();
        match projector.latest_relevant::<T>(entity) {
            Some(latest) => projector.project_at(entity, freshness, latest),
            None => Ok(T::from_events(&[])),
        }
    }
}

impl Projector<'_> {
    /// Slots of `entity`'s events that `T` reads with a global sequence in
    /// `(after, upto]`, in clock order. `upto` is the `latest_relevant`
    /// the caller saw, so an event committed meanwhile is neither folded in
    /// under an older watermark nor applied twice later.
    fn relevant_slots<T: EventSourced<serde_json::Value>>(
        &self,
        entity: &str,
        after: Option<u64>,
        upto: u64,
    ) -> Vec<u32> {
        let index = self.reader.index();
        let slots = index.entity_slots(entity);
        // Slot order is sequence order: the newer events are a suffix.
        let end = slots.partition_point(|&s| index.global_seq(s) <= upto);
        let start = after.map_or(0, |a| {
            slots[..end].partition_point(|&s| index.global_seq(s) <= a)
        });
        slots[start..end]
            .iter()
            .copied()
            .filter(|&s| relevant::<T>(index.coordinate_parts(s).2))
            .collect()
    }

    /// Global sequence of `entity`'s newest event that `T` reads.
    pub(crate) fn latest_relevant<T: EventSourced<serde_json::Value>>(
        &self,
        entity: &str,
    ) -> Option<u64> {
        let index = self.reader.index();
        let visible = self.reader.visible();
        let slots = index.entity_slots(entity);
        let n = slots.partition_point(|&s| s < visible);
        slots[..n]
            .iter()
            .rev()
            .find(|&&s| relevant::<T>(index.coordinate_parts(s).2))
            .map(|&s| index.global_seq(s))
    }

    /// Read the events at `slots`, in order.
    fn read_events(&self, slots: &[u32]) -> Result<Vec<Event<serde_json::Value>>, StoreError> {
        let located = {
            let index = self.reader.index();
            slots
                .iter()
                .map(|&s| self.reader.locate(&index, s))
                .collect::<Result<Vec<_>, _>>()?
        };
        self.reader.reading_frames();
        // Projections fold today's shapes: old payloads are upcast.
        located
            .into_iter()
            .map(|l| {
                self.reader
                    .read_located(l, |rec, coord| {
                        crate::store::typed::decode_upcast(&self.schema, rec, coord)
                    })
                    .map(|e| e.event)
            })
            .collect()
    }

    fn cached(&self, key: &[u8]) -> Option<(Arc<[u8]>, CacheMeta)> {
        if let Some(hit) = self.memo.get(key) {
            return Some(hit);
        }
        match self.cache.get(key) {
            Ok(Some((bytes, meta))) => {
                let bytes: Arc<[u8]> = bytes.into();
                self.memo.put(key, bytes.clone(), meta.clone());
                Some((bytes, meta))
            }
            Ok(None) => None,
            Err(e) => {
                // A cache that fails is only a miss.
                tracing::warn!(error = %e.display_chain(), "batpak: projection cache read failed");
                None
            }
        }
    }

    fn store_cached<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        watermark: u64,
    ) -> Result<(), StoreError> {
        let bytes: Arc<[u8]> = serde_json::to_vec(value)
            .map_err(StoreError::serialization)?
            .into();
        let meta = CacheMeta {
            watermark,
            cached_at_us: self.config.now_us(),
        };
        self.memo.put(key, bytes.clone(), meta.clone());
        if let Err(e) = self.cache.put(key, &bytes, meta) {
            tracing::warn!(error = %e.display_chain(), "batpak: projection cache write failed");
        }
        Ok(())
    }

    /// [`Store::project`] for an entity whose newest relevant event has
    /// global sequence `latest` (the caller looked it up).
    pub(crate) fn project_at<T: Folded>(
        &self,
        entity: &str,
        freshness: &Freshness,
        latest: u64,
    ) -> Result<Option<T>, StoreError> {
        let key = cache_key::<T>(entity, self.epoch);
        let cached = self.cached(&key);
        let inputs = FoldInputs {
            cached: cached.as_ref().map(|(bytes, meta)| (&bytes[..], meta)),
            freshness,
            latest,
            now_us: self.config.now_us(),
            incremental: self.config.index.incremental_projection
                && T::supports_incremental_apply(),
        };
        fold_cached(
            inputs,
            |after| self.read_events(&self.relevant_slots::<T>(entity, after, latest)),
            |value: &T| self.store_cached(&key, value, latest),
        )
    }
}
