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

/// Erase every footer so the next open scans the frames (test helper logic:
/// the trailer's first 8 bytes locate the footer).
fn strip_footers(dir: &std::path::Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let Some(last) = bytes.iter().rposition(|&b| b != 0) else {
            continue;
        };
        if last < 16 || &bytes[last + 1 - 8..=last] != b"BPKFOOT1" {
            continue;
        }
        let t = last + 1 - 16;
        let at = u64::from_le_bytes(bytes[t..t + 8].try_into().unwrap()) as usize;
        bytes[at..].fill(0);
        std::fs::write(&path, &bytes).unwrap();
    }
}

/// Open a store of `n` events by each path. `BATPAK_BENCH_10M=1` adds 10M events.
fn open_paths(c: &mut Criterion) {
    let mut sizes = vec![1_000_000u64];
    if std::env::var_os("BATPAK_BENCH_10M").is_some() {
        sizes.push(10_000_000);
    }
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        build_store(dir.path(), n, 10_000, 256 * 1024 * 1024);
        let label = if n >= 10_000_000 { "10m" } else { "1m" };
        let mut g = c.benchmark_group("open");
        g.sample_size(10)
            .measurement_time(Duration::from_secs(if n >= 10_000_000 { 60 } else { 15 }));
        g.throughput(Throughput::Elements(n));
        let open = |expect: &str| {
            let s = Store::open(StoreConfig::new(dir.path())).unwrap();
            assert_eq!(s.stats().event_count as u64, n);
            assert_eq!(format!("{:?}", s.diagnostics().recovery.open_path), expect);
            s
        };
        // Dropping (not closing) the store leaves the files as they are.
        g.bench_function(format!("open_{label}_checkpoint"), |b| {
            b.iter_batched(|| (), |()| open("Checkpoint"), BatchSize::PerIteration)
        });
        std::fs::remove_file(dir.path().join("checkpoint.bpk")).unwrap();
        g.bench_function(format!("open_{label}_footers"), |b| {
            b.iter_batched(|| (), |()| open("Footers"), BatchSize::PerIteration)
        });
        g.bench_function(format!("open_{label}_full_scan"), |b| {
            b.iter_batched(
                || strip_footers(dir.path()),
                |()| open("FullScan"),
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, random_get, stream_scan, open_paths);
criterion_main!(benches);
