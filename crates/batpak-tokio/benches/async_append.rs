//! Durable append throughput: 16 tokio tasks through `AsyncStore` against
//! 16 OS threads on the blocking API, same store configuration (durable
//! receipts, group commit). Prints the async/sync ratio measured in this run.

#[path = "../../batpak/benches/common.rs"]
mod common;

use batpak::prelude::*;
use batpak_tokio::AsyncStore;
use common::{append_from_threads, payload, KIND};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CONCURRENCY: u64 = 16;

fn coords() -> Arc<Vec<Coordinate>> {
    Arc::new(common::coords(100))
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

/// 16 tokio tasks, `per_worker` appends each through the wrapper; the time
/// taken.
fn async_round(
    rt: &tokio::runtime::Runtime,
    store: &AsyncStore<Store>,
    cs: &Arc<Vec<Coordinate>>,
    per_worker: u64,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|t| {
                let (store, cs) = (store.clone(), cs.clone());
                tokio::spawn(async move {
                    // The API takes the payload by value: one clone per
                    // append, as a caller handing it over pays.
                    let p = payload(t);
                    for k in 0..per_worker {
                        let c = &cs[((k + t) % cs.len() as u64) as usize];
                        store.append(c, KIND, p.clone()).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    })
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
            let took = append_from_threads(&store, &cs, CONCURRENCY, iters);
            sync_rate.add(iters * CONCURRENCY, took);
            took
        })
    });
    drop(store);

    let async_rate = Rate::new();
    let dir = tempfile::tempdir().unwrap();
    // As many runtime threads as this machine's cores would give; the
    // store's calls run on the wrapper's own threads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let store = AsyncStore::new(Store::open(StoreConfig::new(dir.path())).unwrap()).unwrap();
    g.bench_function("durable_16_tasks_async_store", |b| {
        b.iter_custom(|iters| {
            let took = async_round(&rt, &store, &cs, iters);
            async_rate.add(iters * CONCURRENCY, took);
            took
        })
    });
    g.finish();
    rt.block_on(store.close()).unwrap();
    eprintln!(
        "criterion runs, every sample: sync API, 16 threads {:.0} appends/s; \
         AsyncStore, 16 tasks {:.0} appends/s; ratio {:.2}",
        sync_rate.per_sec(),
        async_rate.per_sec(),
        async_rate.per_sec() / sync_rate.per_sec()
    );
    interleaved(&rt, &cs);
}

/// The ratio with both sides measured in alternating rounds, so that a
/// shared, noisy machine's load changes hit both alike: the figure to quote.
fn interleaved(rt: &tokio::runtime::Runtime, cs: &Arc<Vec<Coordinate>>) {
    const ROUNDS: usize = 12;
    const PER_WORKER: u64 = 200;
    let sync_dir = tempfile::tempdir().unwrap();
    let async_dir = tempfile::tempdir().unwrap();
    let sync_store = Arc::new(Store::open(StoreConfig::new(sync_dir.path())).unwrap());
    let async_store =
        AsyncStore::new(Store::open(StoreConfig::new(async_dir.path())).unwrap()).unwrap();
    let (sync_rate, async_rate) = (Rate::new(), Rate::new());
    for _ in 0..ROUNDS {
        let took = append_from_threads(&sync_store, cs, CONCURRENCY, PER_WORKER);
        sync_rate.add(PER_WORKER * CONCURRENCY, took);
        let took = async_round(rt, &async_store, cs, PER_WORKER);
        async_rate.add(PER_WORKER * CONCURRENCY, took);
    }
    let syncs = |d: batpak::store::StoreDiagnostics| d.event_count as f64 / d.syncs.max(1) as f64;
    let sync_group = syncs(sync_store.diagnostics());
    let async_group = syncs(rt.block_on(async_store.run(|s| s.diagnostics())).unwrap());
    rt.block_on(async_store.close()).unwrap();
    eprintln!(
        "interleaved, {ROUNDS} rounds of {} appends each: sync API, 16 threads {:.0} appends/s \
         ({sync_group:.1} per fsync); AsyncStore, 16 tasks {:.0} appends/s ({async_group:.1} \
         per fsync); ratio {:.2}",
        PER_WORKER * CONCURRENCY,
        sync_rate.per_sec(),
        async_rate.per_sec(),
        async_rate.per_sec() / sync_rate.per_sec()
    );
}

criterion_group!(benches, durable_16);
criterion_main!(benches);
