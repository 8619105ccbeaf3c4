//! Projections: folding an entity's events into a value (`Store::project`)
//! and the caches that keep folded values between calls.
//!
//! Owns the cache traits, the backends (`NoCache`, `NativeCache`), the
//! in-memory tier in front of them, the projection flow and watchers. It
//! reads events through the store's read path and never writes to the log.

mod flow;
mod memo;
mod native;
mod watch;

pub(crate) use flow::relevant;
pub(crate) use flow::Projector;
pub use flow::{cache_key, fold_cached, FoldInputs};
pub(crate) use memo::Memo;
pub(crate) use native::key_hash;
pub use native::NativeCache;
pub use watch::ProjectionWatcher;

use crate::store::StoreError;
use serde::{Deserialize, Serialize};

/// How fresh a projection must be.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Freshness {
    /// Never older than the entity's latest relevant event.
    Consistent,
    /// A cached value younger than `max_stale_ms` may be returned as is.
    MaybeStale {
        /// Largest acceptable age of a cached value, in milliseconds.
        max_stale_ms: u64,
    },
}

/// Metadata stored with a cached projection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    /// Global sequence of the newest event folded into the value.
    pub watermark: u64,
    /// When the value was cached (µs since the epoch, store clock).
    pub cached_at_us: i64,
}

/// What a cache backend can do beyond get and put.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCapabilities {
    /// The backend acts on `prefetch` hints.
    pub supports_prefetch: bool,
}

impl CacheCapabilities {
    /// No optional capabilities.
    #[must_use]
    pub const fn none() -> Self {
        Self {
            supports_prefetch: false,
        }
    }

    /// Prefetch hints are used.
    #[must_use]
    pub const fn prefetch_hints() -> Self {
        Self {
            supports_prefetch: true,
        }
    }
}

/// A key-value store for projected values.
pub trait ProjectionCache: Send + Sync + 'static {
    /// Optional capabilities.
    fn capabilities(&self) -> CacheCapabilities;
    /// The cached value and its metadata, if present.
    ///
    /// # Errors
    /// Backend failures (the store treats them as a miss).
    fn get(&self, key: &[u8]) -> Result<Option<(Vec<u8>, CacheMeta)>, StoreError>;
    /// Store a value.
    ///
    /// # Errors
    /// Backend failures (logged by the store).
    fn put(&self, key: &[u8], value: &[u8], meta: CacheMeta) -> Result<(), StoreError>;
    /// Remove every key starting with `prefix`; returns how many were removed.
    ///
    /// # Errors
    /// Backend failures.
    fn delete_prefix(&self, prefix: &[u8]) -> Result<u64, StoreError>;
    /// Make puts durable (optional; a lost entry is only a miss).
    ///
    /// # Errors
    /// Backend failures.
    fn sync(&self) -> Result<(), StoreError>;
    /// A hint that `key` will be read soon.
    ///
    /// # Errors
    /// Backend failures.
    fn prefetch(&self, _key: &[u8], _predicted_meta: CacheMeta) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A cache that stores nothing: every projection folds from the events.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCache;

impl ProjectionCache for NoCache {
    fn capabilities(&self) -> CacheCapabilities {
        CacheCapabilities::none()
    }
    fn get(&self, _key: &[u8]) -> Result<Option<(Vec<u8>, CacheMeta)>, StoreError> {
        Ok(None)
    }
    fn put(&self, _key: &[u8], _value: &[u8], _meta: CacheMeta) -> Result<(), StoreError> {
        Ok(())
    }
    fn delete_prefix(&self, _prefix: &[u8]) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
