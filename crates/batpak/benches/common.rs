//! Shared set-up for the benchmarks (included with `#[path]`).
#![allow(dead_code)]

use batpak::prelude::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const KIND: EventKind = EventKind::custom(1, 1);

/// A ~120-byte JSON payload, as the targets assume.
pub fn payload(i: u64) -> Value {
    json!({
        "customer": "cust-000123",
        "order": i,
        "items": [{"sku": "tea-earl-grey", "qty": 2}],
        "total_cents": 1298,
        "note": "leave at the door"
    })
}

pub fn coords(n: usize) -> Vec<Coordinate> {
    (0..n)
        .map(|i| Coordinate::new(format!("order:{i}"), "tenant:bench").unwrap())
        .collect()
}

/// A store with `n` events spread over `entities` entities, written in relaxed mode.
pub fn build_store(dir: &Path, n: u64, entities: usize, segment_max_bytes: u64) -> Vec<u128> {
    let store = Store::open(
        StoreConfig::new(dir)
            .with_sync_every_n_events(10_000)
            .with_segment_max_bytes(segment_max_bytes),
    )
    .unwrap();
    let cs = coords(entities);
    let mut ids = Vec::with_capacity(n as usize);
    for i in 0..n {
        ids.push(
            store
                .append(&cs[i as usize % entities], KIND, &payload(i))
                .unwrap()
                .event_id,
        );
    }
    store.close().unwrap();
    ids
}

/// `threads` OS threads, each appending `per_thread` events (payload
/// `payload(thread)`, coordinates round-robin over `cs`) with the blocking
/// API; the wall time taken.
pub fn append_from_threads(
    store: &Arc<Store>,
    cs: &Arc<Vec<Coordinate>>,
    threads: u64,
    per_thread: u64,
) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, cs) = (store.clone(), cs.clone());
            std::thread::spawn(move || {
                let p = payload(t);
                for k in 0..per_thread {
                    let c = &cs[((k + t) % cs.len() as u64) as usize];
                    store.append(c, KIND, &p).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}
