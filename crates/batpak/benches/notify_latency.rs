//! Append-to-notification latency: 10 subscribers, relaxed sync, one
//! appender paced at 1,000 events/s; p50 and p99 of the slowest subscriber.
//! Run: `cargo bench --bench notify_latency`.

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 10;
const EVENTS: usize = 5_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store =
        Arc::new(Store::open(StoreConfig::new(dir.path()).with_sync_every_n_events(1000)).unwrap());
    let origin = Instant::now();
    let ready = Arc::new(Barrier::new(SUBSCRIBERS + 1));
    // Each subscriber records, per event, when it received it.
    let threads: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            let sub = store.subscribe_lossy(&Region::all());
            let ready = ready.clone();
            std::thread::spawn(move || {
                ready.wait();
                let mut got = vec![0u64; EVENTS];
                for _ in 0..EVENTS {
                    let n = sub.recv().expect("notification");
                    got[n.sequence as usize] = origin.elapsed().as_nanos() as u64;
                }
                (got, sub.dropped())
            })
        })
        .collect();
    ready.wait();
    let c = coords(1)[0].clone();
    let p = payload(1);
    let mut sent = vec![0u64; EVENTS];
    let start = Instant::now();
    for (i, at) in sent.iter_mut().enumerate() {
        let due = start + Duration::from_micros(1000 * i as u64);
        while Instant::now() < due {
            std::thread::sleep(due - Instant::now());
        }
        *at = origin.elapsed().as_nanos() as u64;
        store.append(&c, KIND, &p).unwrap();
    }
    let results: Vec<(Vec<u64>, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut slowest: Vec<u64> = (0..EVENTS)
        .map(|i| {
            results
                .iter()
                .map(|(got, _)| got[i].saturating_sub(sent[i]))
                .max()
                .unwrap_or(0)
        })
        .collect();
    slowest.sort_unstable();
    let pct = |p: f64| slowest[((EVENTS as f64 * p) as usize).min(EVENTS - 1)] as f64 / 1000.0;
    let dropped: u64 = results.iter().map(|r| r.1).sum();
    println!(
        "append-to-notification, {SUBSCRIBERS} subscribers, relaxed, 1,000 events/s: slowest subscriber p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs (dropped {dropped})",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
