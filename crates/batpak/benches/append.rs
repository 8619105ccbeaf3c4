//! Append throughput: relaxed, durable with 1 and 16 threads, and the bare
//! write+fdatasync loop that bounds durable appends on this machine.

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

fn relaxed(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(1));
    // As on btrfs, ZFS or bcachefs: each frame written with `pwrite`
    // instead of copied into the map.
    for (name, copy_on_write) in [
        ("relaxed_1_thread", false),
        ("relaxed_1_thread_copy_on_write", true),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = StoreConfig::new(dir.path()).with_sync_every_n_events(1000);
        if copy_on_write {
            cfg.fault_injector = Some(Arc::new(batpak::store::CopyOnWriteDisk::new()));
        }
        let store = Store::open(cfg).unwrap();
        let cs = coords(100);
        let p = payload(1);
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                store.append(&cs[i % 100], KIND, &p).unwrap()
            })
        });
    }
    g.finish();
}

fn durable(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));

    // The reference: what one thread gets from write(2) + fdatasync per event.
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("ref")).unwrap();
    let frame = vec![b'x'; 330];
    g.bench_function("reference_write_fdatasync", |b| {
        b.iter(|| {
            f.write_all(&frame).unwrap();
            f.sync_data().unwrap();
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).unwrap());
    let cs = Arc::new(coords(100));
    let p = payload(1);
    let mut i = 0usize;
    g.bench_function("durable_1_thread", |b| {
        b.iter(|| {
            i += 1;
            store.append(&cs[i % 100], KIND, &p).unwrap()
        })
    });

    const THREADS: u64 = 16;
    g.throughput(Throughput::Elements(THREADS));
    g.bench_function("durable_16_threads", |b| {
        b.iter_custom(|iters| append_from_threads(&store, &cs, THREADS, iters))
    });
    g.finish();
    let d = store.diagnostics();
    eprintln!(
        "durable: {} events, {} syncs ({:.1} events per sync)",
        d.event_count,
        d.syncs,
        d.event_count as f64 / d.syncs.max(1) as f64
    );
}

criterion_group!(benches, relaxed, durable);
criterion_main!(benches);
