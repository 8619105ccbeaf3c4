//! Reads: random `get` on sealed segments, entity stream scans, and opening
//! a store of 1M events by scanning its frames.

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;

fn random_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // 8 MiB segments: all but the last are sealed.
    let ids = build_store(dir.path(), 200_000, 1000, 8 * 1024 * 1024);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let sealed = &ids[..ids.len() * 9 / 10];
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(1));
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

fn stream_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // 100 entities of 2,000 events each.
    build_store(dir.path(), 200_000, 100, 256 * 1024 * 1024);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("stream_scan_2000", |b| b.iter(|| store.stream("order:42")));
    let n = store.query(&Region::all()).len() as u64;
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("query_all_200k", |b| b.iter(|| store.query(&Region::all())));
    g.finish();
}

fn open_1m(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), 1_000_000, 10_000, 256 * 1024 * 1024);
    let mut g = c.benchmark_group("open");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("open_1m_full_scan", |b| {
        b.iter_batched(
            || (),
            |()| {
                let s = Store::open(StoreConfig::new(dir.path())).unwrap();
                assert_eq!(s.stats().event_count, 1_000_000);
                s
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, random_get, stream_scan, open_1m);
criterion_main!(benches);
