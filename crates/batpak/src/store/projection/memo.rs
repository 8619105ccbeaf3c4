//! The in-memory tier in front of a cache backend: recent projections as
//! encoded bytes, so a cached `Consistent` read costs a map lookup and one
//! decode instead of a backend round trip.

use super::CacheMeta;
use hashbrown::HashMap;
use parking_lot::Mutex;
use std::sync::Arc;

/// Entries kept before the oldest half is dropped.
const CAPACITY: usize = 4096;

#[derive(Default)]
pub(crate) struct Memo {
    entries: Mutex<MemoInner>,
}

/// A cached value, its metadata and when it was last used.
type Slot = (Arc<[u8]>, CacheMeta, u64);

#[derive(Default)]
struct MemoInner {
    map: HashMap<Vec<u8>, Slot>,
    tick: u64,
}

impl Memo {
    pub(crate) fn get(&self, key: &[u8]) -> Option<(Arc<[u8]>, CacheMeta)> {
        let mut m = self.entries.lock();
        m.tick += 1;
        let tick = m.tick;
        let e = m.map.get_mut(key)?;
        e.2 = tick;
        Some((e.0.clone(), e.1.clone()))
    }

    pub(crate) fn put(&self, key: &[u8], value: Arc<[u8]>, meta: CacheMeta) {
        let mut m = self.entries.lock();
        m.tick += 1;
        let tick = m.tick;
        if m.map.len() >= CAPACITY && !m.map.contains_key(key) {
            // Drop the least recently used half: rare, and cheap on average.
            let mut ticks: Vec<u64> = m.map.values().map(|e| e.2).collect();
            ticks.sort_unstable();
            let cut = ticks[ticks.len() / 2];
            m.map.retain(|_, e| e.2 > cut);
        }
        m.map.insert(key.to_vec(), (value, meta, tick));
    }
}
