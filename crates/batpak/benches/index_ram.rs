//! RAM per indexed event: heap bytes the index holds, measured by a counting
//! allocator around `Store::open` of stores with 1M events (and 10M with
//! `BATPAK_RAM_10M=1`). Run: `cargo bench --bench index_ram`.

#[path = "common.rs"]
mod common;

use batpak::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Resident set size of this process, in bytes (Linux).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn measure(n: u64, entities: usize) {
    let dir = tempfile::tempdir().unwrap();
    common::build_store(dir.path(), n, entities, 256 * 1024 * 1024);
    // Baseline: an empty store open in the same process.
    let empty = tempfile::tempdir().unwrap();
    let empty_store = Store::open(StoreConfig::new(empty.path())).unwrap();
    let (heap0, rss0) = (LIVE.load(Ordering::SeqCst), rss());
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let (heap1, rss1) = (LIVE.load(Ordering::SeqCst), rss());
    let d = store.diagnostics();
    println!(
        "{n:>10} events, {entities:>6} entities: heap {:.1} B/event, RSS {:.1} B/event above an empty store \
         (index's own count {:.1}), open {} ms",
        (heap1 - heap0) as f64 / n as f64,
        rss1.saturating_sub(rss0) as f64 / n as f64,
        d.index_bytes_per_event,
        d.recovery.elapsed_us / 1000
    );
    drop(store);
    drop(empty_store);
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    measure(1_000_000, 1_000);
    measure(1_000_000, 100_000);
    if std::env::var_os("BATPAK_RAM_10M").is_some() {
        measure(10_000_000, 10_000);
    }
}
