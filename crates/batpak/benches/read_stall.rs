//! Do reads stall the writer? Append latency on one thread, paced at 1,000
//! appends/s (relaxed sync), first alone, then while a second thread runs
//! `query(&Region::all())` over a 1M-event store in a loop.
//!
//! A latency distribution is the figure here, not a mean, so this is a
//! plain `main` like `notify_latency` rather than a criterion group.
//! `call` is the time inside `append`; `from schedule` counts from when the
//! paced append was due, so an append that waited behind a slow one shows
//! the wait (no coordinated omission).
//!
//! Run: `cargo bench --bench read_stall`. `BATPAK_STALL_SECS` sets the
//! length of each phase (default 5), `BATPAK_STALL_EVENTS` the store size
//! (default 1,000,000).

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RATE_PER_SEC: u64 = 1000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// Append at a steady pace for `secs`; returns (call latencies, latencies
/// from the due time), in nanoseconds.
fn paced_appends(store: &Store, secs: u64) -> (Vec<u64>, Vec<u64>) {
    let cs = coords(100);
    let p = payload(7);
    let n = secs * RATE_PER_SEC;
    let mut call = Vec::with_capacity(n as usize);
    let mut scheduled = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let due = start + Duration::from_micros(i * 1_000_000 / RATE_PER_SEC);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        let t = Instant::now();
        store.append(&cs[i as usize % 100], KIND, &p).unwrap();
        let done = Instant::now();
        call.push((done - t).as_nanos() as u64);
        scheduled.push((done - due).as_nanos() as u64);
    }
    (call, scheduled)
}

fn report(label: &str, (mut call, mut scheduled): (Vec<u64>, Vec<u64>), extra: &str) {
    call.sort_unstable();
    scheduled.sort_unstable();
    println!(
        "read_stall/{label}: {} appends; call p50 {} p99 {} max {}; from schedule p50 {} p99 {} max {}{extra}",
        call.len(),
        fmt_ns(pct(&call, 0.50)),
        fmt_ns(pct(&call, 0.99)),
        fmt_ns(pct(&call, 1.0)),
        fmt_ns(pct(&scheduled, 0.50)),
        fmt_ns(pct(&scheduled, 0.99)),
        fmt_ns(pct(&scheduled, 1.0)),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_u64("BATPAK_STALL_SECS", 5);
    let events = env_u64("BATPAK_STALL_EVENTS", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    build_store(dir.path(), events, 10_000, 64 * 1024 * 1024);
    let store =
        Arc::new(Store::open(StoreConfig::new(dir.path()).with_sync_every_n_events(1000)).unwrap());
    // One query first, so the reader's frames are in the page cache and
    // every query in the loop below costs the same.
    let t = Instant::now();
    let n = store.query(&Region::all()).len();
    println!(
        "read_stall: store of {n} events; first query_all {}",
        fmt_ns(t.elapsed().as_nanos() as u64)
    );

    report("idle", paced_appends(&store, secs), "");

    let stop = Arc::new(AtomicBool::new(false));
    let queries = Arc::new(AtomicU64::new(0));
    let query_ns = Arc::new(AtomicU64::new(0));
    let reader = {
        let (store, stop, queries, query_ns) = (
            store.clone(),
            stop.clone(),
            queries.clone(),
            query_ns.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let got = store.query(&Region::all());
                query_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                queries.fetch_add(1, Ordering::Relaxed);
                drop(got);
            }
        })
    };
    let lat = paced_appends(&store, secs);
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let q = queries.load(Ordering::Relaxed).max(1);
    report(
        "query_all_1m",
        lat,
        &format!(
            "; {q} queries, mean {}",
            fmt_ns(query_ns.load(Ordering::Relaxed) / q)
        ),
    );
}
