//! Read-path throughput (issue 14, item 4): entity stream scans, a region
//! query over everything, a guaranteed cursor over everything, and random
//! `get`, on one store of 200,000 events (~120-byte payloads) over 100
//! entities in 8 MiB segments (all but the last sealed). Public API only,
//! so the same file measures any version of the store.
//!
//! `cargo bench -p batpak --bench read_scan -- --warm-up-time 1 --measurement-time 3`

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const EVENTS: u64 = 200_000;
const ENTITIES: usize = 100;

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ids = build_store(dir.path(), EVENTS, ENTITIES, 8 * 1024 * 1024);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut g = c.benchmark_group("read_scan");

    // Every entity's stream once per iteration: 200k entries.
    let names: Vec<String> = (0..ENTITIES).map(|i| format!("order:{i}")).collect();
    assert_eq!(
        store.stream(&names[42]).len() as u64,
        EVENTS / ENTITIES as u64
    );
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("stream_all_entities_200k", |b| {
        b.iter(|| {
            let mut n = 0;
            for name in &names {
                n += black_box(store.stream(name)).len();
            }
            n
        })
    });

    g.bench_function("query_all_200k", |b| {
        b.iter(|| black_box(store.query(&Region::all())).len())
    });

    g.bench_function("cursor_all_200k", |b| {
        b.iter(|| {
            let mut cursor = store.cursor_guaranteed(&Region::all());
            let mut n = 0;
            loop {
                let batch = cursor.poll_batch(4096);
                if batch.is_empty() {
                    break;
                }
                n += black_box(batch).len();
            }
            assert_eq!(n as u64, EVENTS);
            n
        })
    });

    g.throughput(Throughput::Elements(1));
    let sealed = &ids[..ids.len() * 9 / 10];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("get_random_sealed", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            store
                .get(sealed[(x % sealed.len() as u64) as usize])
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, reads);
criterion_main!(benches);
