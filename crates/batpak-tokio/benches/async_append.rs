//! Durable append throughput: 16 tokio tasks through `AsyncStore` against
//! 16 OS threads on the blocking API, same store configuration (durable
//! receipts, group commit). Prints the async/sync ratio measured in this run.

use batpak::prelude::*;
use batpak_tokio::AsyncStore;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONCURRENCY: u64 = 16;
const KIND: EventKind = EventKind::custom(1, 1);

fn coords() -> Arc<Vec<Coordinate>> {
    Arc::new(
        (0..100)
            .map(|i| Coordinate::new(format!("bench:{i}"), "tenant:bench").unwrap())
            .collect(),
    )
}

fn payload(t: u64) -> serde_json::Value {
    serde_json::json!({"task": t, "pad": "x".repeat(200)})
}

/// Events per second over every iteration a benchmark ran.
struct Rate {
    events: Cell<u64>,
    time: Cell<Duration>,
}

impl Rate {
    fn new() -> Self {
        Self {
            events: Cell::new(0),
            time: Cell::new(Duration::ZERO),
        }
    }
    fn add(&self, events: u64, time: Duration) {
        self.events.set(self.events.get() + events);
        self.time.set(self.time.get() + time);
    }
    fn per_sec(&self) -> f64 {
        self.events.get() as f64 / self.time.get().as_secs_f64().max(1e-9)
    }
}

fn durable_16(c: &mut Criterion) {
    let mut g = c.benchmark_group("async_append");
    g.sample_size(10);
    g.throughput(Throughput::Elements(CONCURRENCY));
    let cs = coords();

    let sync_rate = Rate::new();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).unwrap());
    g.bench_function("durable_16_threads_sync_api", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let handles: Vec<_> = (0..CONCURRENCY)
                .map(|t| {
                    let (store, cs) = (store.clone(), cs.clone());
                    std::thread::spawn(move || {
                        let p = payload(t);
                        for k in 0..iters {
                            store
                                .append(&cs[((k + t) % 100) as usize], KIND, &p)
                                .unwrap();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let took = start.elapsed();
            sync_rate.add(iters * CONCURRENCY, took);
            took
        })
    });
    drop(store);

    let async_rate = Rate::new();
    let dir = tempfile::tempdir().unwrap();
    // As many runtime threads as this machine's cores would give; the
    // store's calls run on the wrapper's own pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let store = AsyncStore::new(Store::open(StoreConfig::new(dir.path())).unwrap()).unwrap();
    g.bench_function("durable_16_tasks_async_store", |b| {
        b.iter_custom(|iters| {
            let took = rt.block_on(async {
                let start = Instant::now();
                let tasks: Vec<_> = (0..CONCURRENCY)
                    .map(|t| {
                        let (store, cs) = (store.clone(), cs.clone());
                        tokio::spawn(async move {
                            for k in 0..iters {
                                let c = &cs[((k + t) % 100) as usize];
                                store.append(c, KIND, payload(t)).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            });
            async_rate.add(iters * CONCURRENCY, took);
            took
        })
    });
    g.finish();
    rt.block_on(store.close()).unwrap();
    eprintln!(
        "durable appends/s: sync API, 16 threads {:.0}; AsyncStore, 16 tasks {:.0}; ratio {:.2}",
        sync_rate.per_sec(),
        async_rate.per_sec(),
        async_rate.per_sec() / sync_rate.per_sec()
    );
}

criterion_group!(benches, durable_16);
criterion_main!(benches);
