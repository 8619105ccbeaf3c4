//! `Store::verify` over a store of 150k events (~200-byte payloads) in
//! 16 MiB segments (sealed ones with footers, plus a checkpoint), measured
//! in bytes of segments checked per second. Target: >= 300 MB/s.

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use std::time::{Duration, Instant};

const EVENTS: u64 = 150_000;
const ENTITIES: usize = 1000;

/// A ~200-byte JSON payload.
fn payload_200(i: u64) -> serde_json::Value {
    json!({
        "customer": "cust-000123",
        "order": i,
        "items": [{"sku": "tea-earl-grey", "qty": 2}, {"sku": "biscuits-shortbread", "qty": 1}],
        "total_cents": 1298,
        "note": "leave at the door, ring twice, the dog is friendly but loud",
        "channel": "web"
    })
}

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(
            StoreConfig::new(dir.path())
                .with_sync_every_n_events(10_000)
                .with_segment_max_bytes(16 * 1024 * 1024),
        )
        .unwrap();
        let cs = coords(ENTITIES);
        for i in 0..EVENTS {
            store
                .append(&cs[i as usize % ENTITIES], KIND, &payload_200(i))
                .unwrap();
        }
        store.close().unwrap();
    }
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let first = store.verify().unwrap();
    assert!(first.is_clean(), "{first}");
    assert_eq!(first.events_checked, EVENTS);
    let bytes = first.bytes_checked;
    // One timed run outside criterion, for a plain MB/s figure.
    let started = Instant::now();
    let runs = 5;
    for _ in 0..runs {
        store.verify().unwrap();
    }
    let secs = started.elapsed().as_secs_f64() / f64::from(runs);
    eprintln!(
        "verify: {} segments, {} events, {:.1} MB in {:.1} ms = {:.0} MB/s",
        first.segments_checked,
        first.events_checked,
        bytes as f64 / 1e6,
        secs * 1e3,
        bytes as f64 / 1e6 / secs
    );
    let mut g = c.benchmark_group("verify");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("verify_150k", |b| b.iter(|| store.verify().unwrap()));
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
