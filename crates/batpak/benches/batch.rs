//! Durable batch appends of 1, 16 and 256 events (~120-byte payloads), one
//! caller, building the items included.

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

fn batches(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let cs = coords(100);
    let mut g = c.benchmark_group("batch_durable");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for size in [1usize, 16, 256] {
        g.throughput(Throughput::Elements(size as u64));
        let mut n = 0u64;
        g.bench_function(format!("size_{size}"), |b| {
            b.iter(|| {
                let items: Vec<BatchAppendItem> = (0..size)
                    .map(|i| {
                        n += 1;
                        BatchAppendItem::new(
                            cs[i % 100].clone(),
                            KIND,
                            &payload(n),
                            AppendOptions::new(),
                            CausationRef::None,
                        )
                        .unwrap()
                    })
                    .collect();
                store.append_batch(items).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, batches);
criterion_main!(benches);
