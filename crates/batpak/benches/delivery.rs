//! Delivery: cursor scans, subscription fan-out, projections.

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

fn cursor_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), 1_000_000, 1000, 256 * 1024 * 1024);
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let mut g = c.benchmark_group("cursor");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("scan_1m", |b| {
        b.iter(|| {
            let mut cursor = store.cursor_guaranteed(&Region::all());
            let mut n = 0;
            loop {
                let batch = cursor.poll_batch(4096);
                if batch.is_empty() {
                    break;
                }
                n += batch.len();
            }
            assert_eq!(n, 1_000_000);
        })
    });
    g.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut g = c.benchmark_group("fan_out");
    g.throughput(Throughput::Elements(1));
    for subscribers in [1usize, 10, 100] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            StoreConfig::new(dir.path())
                .with_sync_every_n_events(1000)
                .with_broadcast_capacity(1 << 20),
        )
        .unwrap();
        let subs: Vec<Subscription> = (0..subscribers)
            .map(|_| store.subscribe_lossy(&Region::all()))
            .collect();
        let cs = coords(100);
        let p = payload(1);
        g.bench_function(format!("append_relaxed_{subscribers}_subscribers"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for i in 0..iters {
                    store.append(&cs[i as usize % 100], KIND, &p).unwrap();
                }
                let t = start.elapsed();
                for s in &subs {
                    while s.receiver().try_recv().is_ok() {}
                    assert_eq!(s.dropped(), 0);
                }
                t
            })
        });
    }
    g.finish();
}

#[derive(Serialize, Deserialize)]
struct Totals {
    orders: u64,
    cents: i64,
}

impl EventSourced<serde_json::Value> for Totals {
    fn from_events(events: &[Event<serde_json::Value>]) -> Option<Self> {
        let mut t = Totals {
            orders: 0,
            cents: 0,
        };
        for e in events {
            t.apply_event(e);
        }
        Some(t)
    }
    fn apply_event(&mut self, event: &Event<serde_json::Value>) {
        self.orders += 1;
        self.cents += event.payload["total_cents"].as_i64().unwrap_or(0);
    }
    fn relevant_event_kinds() -> &'static [EventKind] {
        &[]
    }
    fn supports_incremental_apply() -> bool {
        true
    }
}

fn projections(c: &mut Criterion) {
    let mut g = c.benchmark_group("project_1000_events");
    for incremental in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            StoreConfig::new(dir.path())
                .with_sync_every_n_events(1000)
                .with_incremental_projection(incremental),
        )
        .unwrap();
        let entity = Coordinate::new("account:1", "tenant:bench").unwrap();
        for i in 0..1000 {
            store.append(&entity, KIND, &payload(i)).unwrap();
        }
        if !incremental {
            // Cold: a new event before every projection forces a full fold.
            g.bench_function("cold_full_fold", |b| {
                b.iter_batched(
                    || store.append(&entity, KIND, &payload(0)).unwrap(),
                    |_| {
                        store
                            .project::<Totals>("account:1", &Freshness::Consistent)
                            .unwrap()
                    },
                    BatchSize::PerIteration,
                )
            });
            store
                .project::<Totals>("account:1", &Freshness::Consistent)
                .unwrap();
            g.bench_function("cached_consistent_hit", |b| {
                b.iter(|| {
                    store
                        .project::<Totals>("account:1", &Freshness::Consistent)
                        .unwrap()
                })
            });
        } else {
            store
                .project::<Totals>("account:1", &Freshness::Consistent)
                .unwrap();
            g.bench_function("incremental_5_new_events", |b| {
                b.iter_batched(
                    || {
                        for i in 0..5 {
                            store.append(&entity, KIND, &payload(i)).unwrap();
                        }
                    },
                    |()| {
                        store
                            .project::<Totals>("account:1", &Freshness::Consistent)
                            .unwrap()
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, cursor_scan, fan_out, projections);
criterion_main!(benches);
