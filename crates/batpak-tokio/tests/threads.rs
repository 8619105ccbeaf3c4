//! No thread outlives the wrapper: after `close`, after dropping the last
//! handle, and after dropping a cursor stream. One test in its own binary,
//! because it counts the process's threads by name.

use batpak::prelude::*;
use batpak_tokio::AsyncStore;
use futures_util::StreamExt;
use std::time::{Duration, Instant};

fn wrapper_threads() -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
            let name = name.trim().to_owned();
            if name.starts_with("bp-tokio") {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// Thread exit is asynchronous to `join` returning only in the kernel's
/// bookkeeping; give `/proc` a moment, but fail if it never settles.
fn eventually_threads(expected: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = wrapper_threads();
        if now.len() == expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: threads {now:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn no_thread_outlives_the_wrapper_or_its_streams() {
    if !std::path::Path::new("/proc/self/task").exists() {
        eprintln!("no /proc: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        assert_eq!(wrapper_threads(), Vec::<String>::new());
        let store = AsyncStore::with_threads(Store::open(StoreConfig::new(dir.path())).unwrap(), 3)
            .unwrap();
        // Three pool threads and the append lane (a durable file store).
        eventually_threads(4, "three pool threads and the lane");
        let c = Coordinate::new("t:1", "s").unwrap();
        store.append(&c, EventKind::custom(1, 1), 1).await.unwrap();

        let mut first = store.cursor_stream(&Region::all(), None).unwrap();
        first.next().await.unwrap().unwrap();
        let _second = store.cursor_stream(&Region::all(), None).unwrap();
        eventually_threads(6, "one reader per stream");
        drop(first);
        eventually_threads(5, "a dropped stream's reader stops");

        // `_second` is still alive: close stops its reader too.
        store.close().await.unwrap();
        assert_eq!(
            wrapper_threads(),
            Vec::<String>::new(),
            "close joined every thread"
        );

        let store = AsyncStore::with_threads(Store::open(StoreConfig::new(dir.path())).unwrap(), 2)
            .unwrap();
        let _stream = store.cursor_stream(&Region::all(), None).unwrap();
        eventually_threads(4, "pool, lane and reader");
        drop(store);
        assert_eq!(
            wrapper_threads(),
            Vec::<String>::new(),
            "dropping the last handle joined them"
        );
    });
    let reopened = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(reopened.stats().event_count, 1);
}
