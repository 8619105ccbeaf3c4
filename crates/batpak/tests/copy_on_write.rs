//! Copy-on-write filesystems (btrfs, ZFS, bcachefs; issue 10, item 3): a
//! write to a block allocated ahead may still need new space there, so a
//! full disk could fault a write through a memory map with `SIGBUS`. On
//! those filesystems relaxed mode writes frames with `pwrite` and maps
//! segments read-only, as durable mode always does. A test disk that
//! says it is copy-on-write (`CopyOnWriteDisk`) takes that path on any
//! filesystem; a segment
//! mapped read-only turns any write through the map into a crash of the
//! test, so every test here also proves no such write is left.

mod common;

use batpak::prelude::*;
use batpak::store::{CopyOnWriteDisk, CountdownInjector, FaultAction, InjectionPoint};
use common::*;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn relaxed(dir: &Path, cow: bool) -> StoreConfig {
    let mut cfg = StoreConfig::new(dir)
        .with_segment_max_bytes(8 * 1024)
        .with_sync_every_n_events(1_000_000);
    if cow {
        cfg.fault_injector = Some(Arc::new(CopyOnWriteDisk::new()));
    }
    cfg
}

/// The permissions of this process's mappings of segment files in `dir`
/// (the `rw-s` / `r--s` column of `/proc/self/maps`).
fn segment_map_permissions(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir) && l.ends_with(".seg"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect()
}

fn append_some(store: &Store, from: u64, n: u64) -> Vec<AppendReceipt> {
    (from..from + n)
        .map(|i| {
            store
                .append(
                    &coord(&format!("e{}", i % 3), "s"),
                    KIND_A,
                    &json!({"n": i, "pad": "c".repeat(200)}),
                )
                .unwrap()
        })
        .collect()
}

#[test]
fn on_copy_on_write_no_segment_is_mapped_for_writing() {
    for (name, cow, durable, writable_expected) in [
        ("relaxed", false, false, true),
        ("relaxed on copy-on-write", true, false, false),
        ("durable", false, true, false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = relaxed(dir.path(), cow);
        if durable {
            cfg = cfg.with_sync_every_n_events(1);
        }
        let store = Store::open(cfg.clone()).unwrap();
        let receipts = append_some(&store, 0, 120);
        assert!(
            receipts.last().unwrap().disk_pos.segment_id > 2,
            "{name}: rotated"
        );
        let perms = segment_map_permissions(dir.path());
        assert!(!perms.is_empty(), "{name}: segments are mapped");
        let writable = perms.iter().any(|p| p.contains('w'));
        assert_eq!(
            writable, writable_expected,
            "{name}: mappings {perms:?} (relaxed mode copies frames into a writable map \
             only where that cannot fault)"
        );
        // Visible at once in relaxed mode (no sync yet), read back from the map.
        for r in &receipts {
            store.get(r.event_id).unwrap();
        }
        assert_eq!(store.query(&Region::all()).len(), 120);
        let before = observe(&store);
        store.close().unwrap();
        let store = Store::open(cfg).unwrap();
        assert_eq!(observe(&store), before, "{name}: reopen");
        assert!(store.verify().unwrap().is_clean());
    }
}

#[test]
fn on_copy_on_write_a_failed_batch_is_taken_back_with_pwrite() {
    // A batch failing part-way has its frames zeroed in the file (in
    // relaxed mode they reached it at once); with the map read-only, the
    // zeros go through `pwrite` too.
    for point in [
        InjectionPoint::ItemWritten(0),
        InjectionPoint::ItemWritten(3),
        InjectionPoint::FramesWritten,
        InjectionPoint::BeforeRotate,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(relaxed(dir.path(), true)).unwrap();
        let before = append_some(&store, 0, 30);
        drop(store);
        let injector = Arc::new(CountdownInjector::new(point, 1, FaultAction::Fail));
        let mut cfg = relaxed(dir.path(), true);
        cfg.fault_injector = Some(Arc::new(CopyOnWriteDisk::with(injector.clone())));
        let store = Store::open(cfg).unwrap();
        let items = (0..6)
            .map(|i| {
                BatchAppendItem::new(
                    coord("batch", "s"),
                    KIND_B,
                    &json!({"i": i, "pad": "b".repeat(1500)}),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect();
        assert!(store.append_batch(items).is_err(), "{point:?}");
        assert!(injector.fired(), "{point:?} reached");
        let after = append_some(&store, 30, 5);
        drop(store);
        let store = Store::open(relaxed(dir.path(), true)).unwrap();
        assert!(
            store.stream("batch").is_empty(),
            "{point:?}: the failed batch reappeared"
        );
        for r in before.iter().chain(&after) {
            store.get(r.event_id).unwrap();
        }
        assert!(store.verify().unwrap().is_clean(), "{point:?}");
    }
}

#[test]
fn on_copy_on_write_a_power_cut_keeps_what_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(relaxed(dir.path(), true)).unwrap();
    let synced = append_some(&store, 0, 60);
    store.sync().unwrap();
    append_some(&store, 60, 60);
    let cut = store.simulate_power_loss().unwrap();
    assert!(cut.bytes_discarded > 0, "{cut:?}");
    drop(store);
    let store = Store::open(relaxed(dir.path(), true)).unwrap();
    for r in &synced {
        store.get(r.event_id).unwrap();
    }
    let held = store.query(&Region::all()).len();
    assert!((60..120).contains(&held), "{held}");
    assert!(store.verify().unwrap().is_clean());
}
