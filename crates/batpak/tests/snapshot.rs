//! Snapshots: a consistent copy at one commit point, taken while appends
//! continue, that opens as a store with exactly the events committed before
//! it; bad destinations are refused; a failed snapshot leaves nothing behind.

mod common;

use batpak::prelude::*;
use batpak::store::{CountdownInjector, FaultAction, InjectionPoint};
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::new(dir).with_segment_max_bytes(8192)
}

fn sequences(store: &Store) -> Vec<u64> {
    store
        .query(&Region::all())
        .iter()
        .map(|e| e.global_sequence)
        .collect()
}

#[test]
fn snapshot_while_appending_holds_a_prefix_including_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(config(dir.path())).unwrap());
    let acked: Arc<Mutex<Vec<(u128, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Acquire) || i < 50 {
                    let c = coord(&format!("w{t}:{}", i % 4), "s");
                    if i.is_multiple_of(10) {
                        let items = (0..4)
                            .map(|k| {
                                BatchAppendItem::new(
                                    c.clone(),
                                    KIND_B,
                                    &json!({"t": t, "i": i, "k": k}),
                                    AppendOptions::new(),
                                    CausationRef::None,
                                )
                                .unwrap()
                            })
                            .collect();
                        for r in store.append_batch(items).unwrap() {
                            acked.lock().unwrap().push((r.event_id, r.sequence));
                        }
                    } else {
                        let r = store
                            .append(&c, KIND_A, &json!({"t": t, "i": i, "pad": "p".repeat(50)}))
                            .unwrap();
                        acked.lock().unwrap().push((r.event_id, r.sequence));
                    }
                    i += 1;
                }
            })
        })
        .collect();
    // Take snapshots while both threads append.
    let mut snaps = Vec::new();
    for n in 0..3 {
        while acked.lock().unwrap().len() < 100 * (n + 1) {
            std::thread::yield_now();
        }
        let acked_before: Vec<(u128, u64)> = acked.lock().unwrap().clone();
        let dest = out.path().join(format!("snap{n}"));
        store.snapshot(&dest).unwrap();
        snaps.push((dest, acked_before));
    }
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().unwrap();
    }
    let all = sequences(&store);
    for (dest, acked_before) in snaps {
        let snap = Store::open(config(&dest)).unwrap();
        let seqs = sequences(&snap);
        // Exactly a prefix of the live store's history...
        assert_eq!(seqs[..], all[..seqs.len()], "a prefix, no holes");
        // ...that includes every event acknowledged before the call.
        let have: BTreeSet<u128> = snap
            .query(&Region::all())
            .iter()
            .map(|e| e.event_id)
            .collect();
        for (id, _) in &acked_before {
            assert!(
                have.contains(id),
                "acknowledged event missing from the snapshot"
            );
        }
        // Batches are whole: every batch has 4 members of one (t, i).
        let mut batches = std::collections::BTreeMap::<(u64, u64), usize>::new();
        for e in snap.by_fact(KIND_B) {
            let p = snap.get(e.event_id).unwrap().event.payload;
            *batches
                .entry((p["t"].as_u64().unwrap(), p["i"].as_u64().unwrap()))
                .or_default() += 1;
        }
        assert!(batches.values().all(|&n| n == 4), "{batches:?}");
        assert!(snap.verify().unwrap().is_clean());
        // The snapshot is a live store: it takes appends with fresh sequences.
        let r = snap.append(&coord("after", "s"), KIND_A, &1).unwrap();
        assert_eq!(r.sequence, seqs.last().unwrap() + 1);
        snap.close().unwrap();
    }
}

#[test]
fn snapshot_keeps_removed_keys_and_compacted_history() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for i in 0..200u128 {
        store
            .append_with_options(
                &coord("k", "s"),
                KIND_A,
                &json!({"i": i as u64, "pad": "q".repeat(80)}),
                AppendOptions::new().with_idempotency(500 + i),
            )
            .unwrap();
    }
    let cfg = CompactionConfig {
        strategy: CompactionStrategy::Retention(Box::new(|e| {
            e.event.payload["i"].as_u64().unwrap() >= 50
        })),
        min_segments: 1,
        ..Default::default()
    };
    assert!(store.compact(&cfg).unwrap().events_removed > 0);
    let dest = out.path().join("snap");
    store.snapshot(&dest).unwrap();
    let snap = Store::open(config(&dest)).unwrap();
    assert_eq!(sequences(&snap), sequences(&store));
    // The key of a removed event still answers in the copy.
    let retry = snap
        .append_with_options(
            &coord("k", "s"),
            KIND_A,
            &json!({"i": 0}),
            AppendOptions::new().with_idempotency(500),
        )
        .unwrap();
    assert_eq!(retry.sequence, 0);
    assert_eq!(snap.stats().event_count, store.stats().event_count);
}

#[test]
fn bad_destinations_are_refused_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    store.append(&coord("a", "s"), KIND_A, &1).unwrap();

    let full = out.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), b"mine").unwrap();
    let refused = |r: Result<(), StoreError>| matches!(r, Err(StoreError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput);
    assert!(refused(store.snapshot(&full)));
    assert_eq!(std::fs::read(full.join("keep.txt")).unwrap(), b"mine");

    let target = out.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let link = out.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(refused(store.snapshot(&link)));
    assert!(std::fs::read_dir(&target).unwrap().next().is_none());

    let file = out.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(refused(store.snapshot(&file)));

    // An existing empty directory is fine.
    let empty = out.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    store.snapshot(&empty).unwrap();
    assert_eq!(Store::open(config(&empty)).unwrap().stats().event_count, 1);
}

#[test]
fn a_failed_snapshot_leaves_no_partial_copy() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
        InjectionPoint::SnapshotCopied,
        1,
        FaultAction::Fail,
    )));
    let store = Store::open(cfg).unwrap();
    for i in 0..100 {
        store
            .append(
                &coord("a", "s"),
                KIND_A,
                &json!({"i": i, "pad": "r".repeat(100)}),
            )
            .unwrap();
    }
    let dest = out.path().join("snap");
    assert!(store.snapshot(&dest).is_err());
    assert!(!dest.exists());
    assert_eq!(
        file_names(out.path()),
        Vec::<String>::new(),
        "staging removed"
    );
    // The store is unaffected and the next snapshot works.
    store.snapshot(&dest).unwrap();
    assert_eq!(Store::open(config(&dest)).unwrap().stats().event_count, 100);
}

#[test]
fn read_only_handles_snapshot_what_they_see() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for i in 0..150 {
        store
            .append(
                &coord("a", "s"),
                KIND_A,
                &json!({"i": i, "pad": "r".repeat(100)}),
            )
            .unwrap();
    }
    let ro = Store::open_read_only(config(dir.path())).unwrap();
    for i in 0..10 {
        store
            .append(&coord("a", "s"), KIND_A, &json!({"i": 150 + i}))
            .unwrap();
    }
    let dest = out.path().join("snap");
    ro.snapshot(&dest).unwrap();
    let snap = Store::open(config(&dest)).unwrap();
    assert_eq!(sequences(&snap), sequences(&ro));
    assert_eq!(snap.stats().event_count, 150);
}

#[test]
fn a_read_only_handle_older_than_a_compaction_refuses_to_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).unwrap();
    for i in 0..150 {
        store
            .append(
                &coord("a", "s"),
                KIND_A,
                &json!({"i": i, "pad": "r".repeat(100)}),
            )
            .unwrap();
    }
    let ro = Store::open_read_only(config(dir.path())).unwrap();
    let cfg = CompactionConfig {
        strategy: CompactionStrategy::Retention(Box::new(|e| {
            e.event.payload["i"].as_u64().unwrap() % 2 == 0
        })),
        min_segments: 1,
        ..Default::default()
    };
    assert!(store.compact(&cfg).unwrap().events_removed > 0);
    let dest = out.path().join("stale");
    assert!(matches!(ro.snapshot(&dest), Err(StoreError::Io(_))));
    assert!(!dest.exists());
    // A fresh handle snapshots the compacted history.
    let ro = Store::open_read_only(config(dir.path())).unwrap();
    ro.snapshot(&dest).unwrap();
    let snap = Store::open(config(&dest)).unwrap();
    assert_eq!(sequences(&snap), sequences(&store));
}
