//! Projections (SPEC §4.7): freshness, caches, incremental apply, watchers.

mod common;

use batpak::prelude::*;
use common::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;

const ADDED: EventKind = EventKind::custom(3, 1);
const NOTE: EventKind = EventKind::custom(3, 2);

static FULL_FOLDS: AtomicUsize = AtomicUsize::new(0);
static APPLIED: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Total {
    sum: i64,
    events: u32,
}

impl EventSourced<serde_json::Value> for Total {
    fn from_events(events: &[Event<serde_json::Value>]) -> Option<Self> {
        FULL_FOLDS.fetch_add(1, Ordering::SeqCst);
        if events.is_empty() {
            return None;
        }
        let mut t = Total { sum: 0, events: 0 };
        for e in events {
            t.apply_event(e);
        }
        APPLIED.fetch_sub(events.len(), Ordering::SeqCst);
        Some(t)
    }
    fn apply_event(&mut self, event: &Event<serde_json::Value>) {
        APPLIED.fetch_add(1, Ordering::SeqCst);
        self.sum += event.payload["n"].as_i64().unwrap_or(0);
        self.events += 1;
    }
    fn relevant_event_kinds() -> &'static [EventKind] {
        &[ADDED]
    }
    fn supports_incremental_apply() -> bool {
        true
    }
}

/// The same fold under a new schema version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TotalV2(Total);

impl EventSourced<serde_json::Value> for TotalV2 {
    fn from_events(events: &[Event<serde_json::Value>]) -> Option<Self> {
        Total::from_events(events).map(TotalV2)
    }
    fn apply_event(&mut self, event: &Event<serde_json::Value>) {
        self.0.apply_event(event);
    }
    fn relevant_event_kinds() -> &'static [EventKind] {
        Total::relevant_event_kinds()
    }
    fn schema_version() -> u64 {
        2
    }
}

fn add(store: &Store, entity: &str, n: i64) {
    store
        .append(&coord(entity, "s"), ADDED, &json!({ "n": n }))
        .unwrap();
}

// The counters above are global: these tests run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn consistent_projection_is_never_stale_and_uses_the_cache() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_native_cache(
        StoreConfig::new(dir.path().join("data")),
        dir.path().join("cache"),
    )
    .unwrap();
    assert_eq!(
        store
            .project::<Total>("acct", &Freshness::Consistent)
            .unwrap(),
        None
    );
    for n in 1..=10 {
        add(&store, "acct", n);
    }
    store
        .append(&coord("acct", "s"), NOTE, &"irrelevant")
        .unwrap();
    add(&store, "other", 1000);
    let t = store
        .project::<Total>("acct", &Freshness::Consistent)
        .unwrap()
        .unwrap();
    assert_eq!(
        t,
        Total {
            sum: 55,
            events: 10
        }
    );
    // A cached read folds nothing.
    let folds = FULL_FOLDS.load(Ordering::SeqCst);
    assert_eq!(
        store
            .project::<Total>("acct", &Freshness::Consistent)
            .unwrap()
            .unwrap(),
        t
    );
    assert_eq!(FULL_FOLDS.load(Ordering::SeqCst), folds);
    // An irrelevant event does not invalidate it either.
    store.append(&coord("acct", "s"), NOTE, &"more").unwrap();
    assert_eq!(
        store
            .project::<Total>("acct", &Freshness::Consistent)
            .unwrap()
            .unwrap(),
        t
    );
    assert_eq!(FULL_FOLDS.load(Ordering::SeqCst), folds);
    // A relevant one does.
    add(&store, "acct", 5);
    assert_eq!(
        store
            .project::<Total>("acct", &Freshness::Consistent)
            .unwrap()
            .unwrap()
            .sum,
        60
    );
    // Another schema version never reads this type's cached value.
    assert_eq!(
        store
            .project::<TotalV2>("acct", &Freshness::Consistent)
            .unwrap()
            .unwrap()
            .0
            .sum,
        60
    );
}

#[test]
fn incremental_apply_replays_only_new_events() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| c.with_incremental_projection(true));
    for n in 0..100 {
        add(&store, "acct", n);
    }
    store
        .project::<Total>("acct", &Freshness::Consistent)
        .unwrap();
    let (folds, applied) = (
        FULL_FOLDS.load(Ordering::SeqCst),
        APPLIED.load(Ordering::SeqCst),
    );
    for n in 0..5 {
        add(&store, "acct", n);
    }
    let t = store
        .project::<Total>("acct", &Freshness::Consistent)
        .unwrap()
        .unwrap();
    assert_eq!(
        t,
        Total {
            sum: 4950 + 10,
            events: 105
        }
    );
    assert_eq!(FULL_FOLDS.load(Ordering::SeqCst), folds, "no full fold");
    assert_eq!(
        APPLIED.load(Ordering::SeqCst) - applied,
        5,
        "exactly the new events applied"
    );
    // Without the option the same store folds everything again.
    drop(store);
    let store = open(dir.path());
    add(&store, "acct", 1);
    let folds = FULL_FOLDS.load(Ordering::SeqCst);
    assert_eq!(
        store
            .project::<Total>("acct", &Freshness::Consistent)
            .unwrap()
            .unwrap()
            .events,
        106
    );
    assert_eq!(FULL_FOLDS.load(Ordering::SeqCst), folds + 1);
}

#[test]
fn maybe_stale_returns_young_cached_values() {
    let _serial = serial();
    let now = Arc::new(AtomicI64::new(1_000_000_000));
    let clock = now.clone();
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| {
        c.with_clock(Some(Arc::new(move || clock.load(Ordering::SeqCst))))
    });
    add(&store, "acct", 1);
    assert_eq!(
        store
            .project::<Total>("acct", &Freshness::Consistent)
            .unwrap()
            .unwrap()
            .sum,
        1
    );
    add(&store, "acct", 2);
    now.fetch_add(500_000, Ordering::SeqCst); // 500 ms later
    let stale = Freshness::MaybeStale { max_stale_ms: 1000 };
    assert_eq!(
        store.project::<Total>("acct", &stale).unwrap().unwrap().sum,
        1,
        "young enough: cached"
    );
    now.fetch_add(600_000, Ordering::SeqCst); // 1.1 s after caching
    assert_eq!(
        store.project::<Total>("acct", &stale).unwrap().unwrap().sum,
        3,
        "too old: refreshed"
    );
    // Old but up to date: returned as it is, with no fold at all.
    now.fetch_add(5_000_000, Ordering::SeqCst);
    let (folds, applied) = (
        FULL_FOLDS.load(Ordering::SeqCst),
        APPLIED.load(Ordering::SeqCst),
    );
    assert_eq!(
        store.project::<Total>("acct", &stale).unwrap().unwrap().sum,
        3
    );
    assert_eq!(FULL_FOLDS.load(Ordering::SeqCst), folds, "no refold");
    assert_eq!(APPLIED.load(Ordering::SeqCst), applied, "nothing applied");
    add(&store, "acct", 4);
    assert_eq!(
        store
            .project::<Total>("acct", &Freshness::MaybeStale { max_stale_ms: 0 })
            .unwrap()
            .unwrap()
            .sum,
        7,
        "0 behaves like Consistent"
    );
}

#[test]
fn native_cache_survives_restarts_and_damage_is_a_miss() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (data, cache) = (dir.path().join("data"), dir.path().join("cache"));
    {
        let store = Store::open_with_native_cache(StoreConfig::new(&data), &cache).unwrap();
        for n in 0..20 {
            add(&store, "acct", n);
        }
        store
            .project::<Total>("acct", &Freshness::Consistent)
            .unwrap();
        store.close().unwrap();
    }
    let folds = FULL_FOLDS.load(Ordering::SeqCst);
    {
        let store = Store::open_with_native_cache(StoreConfig::new(&data), &cache).unwrap();
        assert_eq!(
            store
                .project::<Total>("acct", &Freshness::Consistent)
                .unwrap()
                .unwrap()
                .sum,
            190
        );
        assert_eq!(
            FULL_FOLDS.load(Ordering::SeqCst),
            folds,
            "served from the file cache"
        );
        store.close().unwrap();
    }
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let store = Store::open_with_native_cache(StoreConfig::new(&data), &cache).unwrap();
    assert_eq!(
        store
            .project::<Total>("acct", &Freshness::Consistent)
            .unwrap()
            .unwrap()
            .sum,
        190
    );
    assert_eq!(
        FULL_FOLDS.load(Ordering::SeqCst),
        folds + 1,
        "a damaged entry is a miss, not an error"
    );
}

#[test]
fn watchers_converge_after_drops_and_end_with_the_store() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_with(dir.path(), |c| c.with_broadcast_capacity(1)));
    let mut watcher = store.watch_projection::<Total>("acct", Freshness::Consistent);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for n in 1..=50 {
                add(&store, "acct", n);
                add(&store, "acct-other", n);
            }
        })
    };
    let mut last = None;
    while last.as_ref().is_none_or(|t: &Total| t.events < 50) {
        last = watcher.recv().unwrap();
    }
    writer.join().unwrap();
    assert_eq!(
        last.unwrap(),
        Total {
            sum: 1275,
            events: 50
        },
        "converged to the final state"
    );
    // Whether it is already waiting or not, the watcher ends with the store.
    let ender = std::thread::spawn(move || watcher.recv());
    drop(store);
    assert!(
        ender.join().unwrap().unwrap().is_none(),
        "ends when the store goes"
    );
}

#[test]
fn a_watcher_whose_relevant_notifications_were_all_dropped_still_converges() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_with(dir.path(), |c| c.with_broadcast_capacity(1)));
    let mut watcher = store.watch_projection::<Total>("acct", Freshness::Consistent);
    // The one buffered notification is for another entity under the same
    // prefix; every notification for "acct" is dropped.
    add(&store, "acct-other", 1);
    for n in 1..=5 {
        add(&store, "acct", n);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(watcher.recv().map(|t| t.map(|t| (t.sum, t.events))));
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the watcher noticed the dropped change");
    assert_eq!(got.unwrap(), Some((15, 5)));
}
