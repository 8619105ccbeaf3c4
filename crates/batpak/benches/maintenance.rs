//! Compaction throughput (MB/s of input) for each strategy, and a snapshot
//! of a 1M-event store (`BATPAK_BENCH_SNAPSHOT_EVENTS` overrides the size).
//!
//! Compaction rewrites the store, so each iteration runs on a fresh copy of
//! a prepared directory (the copy is not timed).

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::path::Path;
use std::time::{Duration, Instant};

const SEGMENT: u64 = 8 * 1024 * 1024;

fn copy_dir(from: &Path, to: &Path) {
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        if f.file_name() != "LOCK" {
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

fn segment_sizes(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap())
        .filter(|f| f.path().extension().is_some_and(|e| e == "seg"))
        .map(|f| (f.path(), f.metadata().unwrap().len()))
        .collect();
    v.sort();
    v
}

fn segment_bytes(dir: &Path) -> u64 {
    segment_sizes(dir).iter().map(|s| s.1).sum()
}

/// Bytes of every segment but the newest (names sort numerically: fixed width).
fn sealed_bytes(dir: &Path) -> u64 {
    let sizes = segment_sizes(dir);
    sizes[..sizes.len().saturating_sub(1)]
        .iter()
        .map(|s| s.1)
        .sum()
}

fn strategy(name: &str) -> CompactionStrategy {
    match name {
        "merge" => CompactionStrategy::Merge,
        // Keep 90%: the predicate reads every payload.
        "retention" => {
            CompactionStrategy::Retention(Box::new(|e: &StoredEvent<serde_json::Value>| {
                e.event.payload["order"]
                    .as_u64()
                    .is_some_and(|o| o % 10 != 0)
            }))
        }
        _ => CompactionStrategy::Tombstone(Box::new(|e: &StoredEvent<serde_json::Value>| {
            e.event.payload["order"]
                .as_u64()
                .is_some_and(|o| o % 10 != 0)
        })),
    }
}

fn compaction(c: &mut Criterion) {
    let n: u64 = std::env::var("BATPAK_BENCH_COMPACT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let prepared = tempfile::tempdir().unwrap();
    build_store(prepared.path(), n, 1000, SEGMENT);
    // Compaction reads the sealed segments; the newest (active) one is not
    // part of its input, so it is not counted.
    let bytes = sealed_bytes(prepared.path());
    let mut g = c.benchmark_group("compaction");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(bytes));
    for name in ["merge", "retention", "tombstone"] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().unwrap();
                    copy_dir(prepared.path(), dir.path());
                    let store = Store::open(
                        StoreConfig::new(dir.path()).with_segment_max_bytes(2 * SEGMENT),
                    )
                    .unwrap();
                    (dir, store)
                },
                |(dir, store)| {
                    let cfg = CompactionConfig {
                        strategy: strategy(name),
                        min_segments: 1,
                        ..Default::default()
                    };
                    let r = store.compact(&cfg).unwrap();
                    assert!(
                        r.segments_removed > 0 || r.events_removed > 0 || r.events_tombstoned > 0,
                        "{name}: {r:?}"
                    );
                    (dir, store, r)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    eprintln!("compaction input: {n} events, {:.1} MB", bytes as f64 / 1e6);
}

fn snapshot(c: &mut Criterion) {
    let n: u64 = std::env::var("BATPAK_BENCH_SNAPSHOT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let built = Instant::now();
    build_store(dir.path(), n, 10_000, 64 * 1024 * 1024);
    eprintln!("snapshot source: {n} events built in {:?}", built.elapsed());
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let bytes = segment_bytes(dir.path());
    let out = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Bytes(bytes));
    let mut i = 0u64;
    g.bench_function(format!("{n}_events"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                i += 1;
                let dest = out.path().join(format!("s{i}"));
                let t = Instant::now();
                store.snapshot(&dest).unwrap();
                total += t.elapsed();
                std::fs::remove_dir_all(&dest).unwrap();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, compaction, snapshot);
criterion_main!(benches);
