#![allow(dead_code)]
//! Helpers shared by the integration tests.

use batpak::prelude::*;
use std::path::Path;

pub fn coord(entity: &str, scope: &str) -> Coordinate {
    Coordinate::new(entity, scope).expect("valid coordinate")
}

pub const KIND_A: EventKind = EventKind::custom(1, 1);
pub const KIND_B: EventKind = EventKind::custom(2, 7);

pub fn open(dir: &Path) -> Store {
    Store::open(StoreConfig::new(dir)).expect("open store")
}

pub fn open_with(dir: &Path, f: impl FnOnce(StoreConfig) -> StoreConfig) -> Store {
    Store::open(f(StoreConfig::new(dir))).expect("open store")
}

/// Segment files of a store directory, sorted by name.
pub fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Names of every file in a directory.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Remove the checkpoint, so the next open cannot use it.
pub fn remove_checkpoint(dir: &Path) {
    let _ = std::fs::remove_file(dir.join("checkpoint.bpk"));
}

/// Erase every segment footer (zero it and its trailer), so the next open
/// has to scan the frames.
pub fn strip_footers(dir: &Path) -> usize {
    let mut stripped = 0;
    for path in segment_files(dir) {
        let mut bytes = std::fs::read(&path).unwrap();
        let Some(last) = bytes.iter().rposition(|&b| b != 0) else {
            continue;
        };
        if last + 1 < 16 || &bytes[last + 1 - 8..=last] != b"BPKFOOT1" {
            continue;
        }
        let t = last + 1 - 16;
        let footer_at = u64::from_le_bytes(bytes[t..t + 8].try_into().unwrap()) as usize;
        bytes[footer_at..].fill(0);
        std::fs::write(&path, &bytes).unwrap();
        stripped += 1;
    }
    stripped
}

/// Everything a reader can observe of a store, for comparing two opens.
pub fn observe(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for e in store.query(&Region::all()) {
        let ev = store.get(e.event_id).unwrap();
        out.push(format!("{e:?} {}", serde_json::to_string(&ev).unwrap()));
    }
    out.push(format!("{:?}", store.stats()));
    out
}

/// Join `handle`, failing (instead of hanging) if the thread has not ended
/// within `limit`.
pub fn join_within<T>(
    handle: std::thread::JoinHandle<T>,
    limit: std::time::Duration,
    what: &str,
) -> T {
    let deadline = std::time::Instant::now() + limit;
    while !handle.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: thread still running after {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    handle.join().expect("thread panicked")
}

/// The payloads of `entries`, read back through `get`, in order.
pub fn payloads(store: &Store, entries: &[IndexEntry]) -> Vec<serde_json::Value> {
    entries
        .iter()
        .map(|e| {
            store
                .get(e.event_id)
                .expect("listed event reads")
                .event
                .payload
        })
        .collect()
}
