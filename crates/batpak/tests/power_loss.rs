//! Power loss: the test hook discards every byte not yet synced (and new
//! files whose directory entry was not synced) while writers are busy; after
//! reopening, every event acknowledged as durable is there, including those
//! in freshly created segments, and nothing half-written appears.
//!
//! With `simulate_crash` first (a process killed, its page cache kept, the
//! next open told what it had not synced): everything a reopened store served
//! survives a power cut that follows.

mod common;

use batpak::prelude::*;
use batpak::store::{FaultAction, FaultInjector, InjectionPoint};
use common::*;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Appenders in `threads` threads until the power goes; returns what was
/// acknowledged (id, entity, payload n).
fn run_until_power_loss(
    cfg: StoreConfig,
    threads: usize,
    cut_after: usize,
    with_batches: bool,
) -> (Vec<(u128, String, u64)>, batpak::store::PowerLoss) {
    let store = Arc::new(Store::open(cfg).unwrap());
    let acked: Arc<Mutex<Vec<(u128, String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, acked, stop) = (store.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let entity = format!("t{t}:{}", n % 5);
                    let c = coord(&entity, "s");
                    let payload = json!({"n": n, "pad": "p".repeat(40 + (n % 7) as usize * 30)});
                    if with_batches && n.is_multiple_of(9) {
                        let items = (0..3)
                            .map(|k| {
                                BatchAppendItem::new(
                                    coord(&format!("t{t}:b"), "s"),
                                    KIND_B,
                                    &json!({"n": n + k, "pad": "b".repeat(70)}),
                                    AppendOptions::new(),
                                    CausationRef::None,
                                )
                                .unwrap()
                            })
                            .collect();
                        match store.append_batch(items) {
                            Ok(rs) => {
                                let mut a = acked.lock().unwrap();
                                for (k, r) in rs.iter().enumerate() {
                                    a.push((r.event_id, format!("t{t}:b"), n + k as u64));
                                }
                            }
                            Err(_) => return,
                        }
                        n += 3;
                        continue;
                    }
                    match store.append(&c, KIND_A, &payload) {
                        Ok(r) => acked.lock().unwrap().push((r.event_id, entity, n)),
                        Err(_) => return,
                    }
                    n += 1;
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < cut_after {
        std::thread::yield_now();
    }
    let report = store.simulate_power_loss().unwrap();
    stop.store(true, Ordering::Release);
    for h in handles {
        h.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    drop(store);
    (acked, report)
}

/// After reopening: the acknowledged events are all there with their
/// payloads, streams are gap-free and chained, batches whole.
fn check_survivors(dir: &std::path::Path, acked: &[(u128, String, u64)], must_have_all: bool) {
    let store = Store::open(StoreConfig::new(dir).with_segment_max_bytes(16 * 1024)).unwrap();
    let have: BTreeMap<u128, u64> = store
        .query(&Region::all())
        .iter()
        .map(|e| {
            let p = store.get(e.event_id).unwrap().event.payload;
            (e.event_id, p["n"].as_u64().unwrap())
        })
        .collect();
    if must_have_all {
        for (id, entity, n) in acked {
            assert_eq!(have.get(id), Some(n), "acknowledged event of {entity} lost");
        }
    }
    let entities: HashSet<String> = store
        .query(&Region::all())
        .iter()
        .map(|e| e.coord.entity().to_owned())
        .collect();
    for entity in &entities {
        let s = store.stream(entity);
        for (i, e) in s.iter().enumerate() {
            assert_eq!(e.clock as usize, i, "{entity}: a gap");
        }
        for w in s.windows(2) {
            assert_eq!(w[1].hash_chain.prev_hash, w[0].hash_chain.event_hash);
        }
    }
    // Batches of three are whole.
    for e in entities.iter().filter(|e| e.ends_with(":b")) {
        assert_eq!(store.stream(e).len() % 3, 0, "{e}: a partial batch");
    }
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    // And the store goes on.
    store
        .append(&coord("after", "s"), KIND_A, &json!({"n": 0}))
        .unwrap();
}

#[test]
fn durable_receipts_survive_a_power_cut_mid_write() {
    let mut discarded = 0;
    for round in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: the cut often lands just after a rotation.
        let cfg = StoreConfig::new(dir.path()).with_segment_max_bytes(16 * 1024);
        let (acked, report) = run_until_power_loss(cfg, 3, 150 + round * 70, round % 2 == 0);
        discarded += report.bytes_discarded;
        check_survivors(dir.path(), &acked, true);
    }
    eprintln!("durable: {discarded} unsynced bytes discarded over 6 cuts");
}

#[test]
fn relaxed_mode_keeps_a_consistent_prefix_and_everything_synced() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path())
        .with_segment_max_bytes(16 * 1024)
        .with_sync_every_n_events(1_000_000);
    let store = Store::open(cfg).unwrap();
    let mut synced = Vec::new();
    for n in 0..300u64 {
        let r = store
            .append(
                &coord(&format!("r:{}", n % 4), "s"),
                KIND_A,
                &json!({"n": n, "pad": "z".repeat(60)}),
            )
            .unwrap();
        synced.push((r.event_id, format!("r:{}", n % 4), n));
    }
    store.sync().unwrap();
    // Acknowledged but not synced: may be lost, must not be half there.
    for n in 300..600u64 {
        store
            .append(
                &coord(&format!("r:{}", n % 4), "s"),
                KIND_A,
                &json!({"n": n, "pad": "z".repeat(60)}),
            )
            .unwrap();
    }
    let report = store.simulate_power_loss().unwrap();
    assert!(
        report.bytes_discarded > 0 || report.files_removed > 0,
        "the unsynced tail was discarded: {report:?}"
    );
    assert!(matches!(
        store.append(&coord("x", "s"), KIND_A, &1),
        Err(StoreError::Poisoned(_))
    ));
    drop(store);
    check_survivors(dir.path(), &synced, true);
    let store = open(dir.path());
    let count = store.query(&Region::all()).len();
    assert!((300..=601).contains(&count), "{count}");
}

#[test]
fn new_segments_survive_a_cut_because_creation_syncs_the_directory() {
    // Relaxed mode with one event per segment: every append creates a
    // segment; the cut removes none of them (creation syncs the directory),
    // and rotation syncs the segment it leaves, so at most the newest event
    // (never synced) is lost.
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path())
        .with_segment_max_bytes(256)
        .with_sync_every_n_events(1_000_000);
    let store = Store::open(cfg).unwrap();
    for n in 0..40u64 {
        store
            .append(
                &coord("seg", "s"),
                KIND_A,
                &json!({"n": n, "pad": "q".repeat(200)}),
            )
            .unwrap();
    }
    let report = store.simulate_power_loss().unwrap();
    assert_eq!(
        report.files_removed, 0,
        "segment creation syncs the directory"
    );
    drop(store);
    let store = open(dir.path());
    // Rotation syncs the segment it leaves: all but the newest event are durable.
    assert!((39..=40).contains(&store.stream("seg").len()));
}

/// Once armed, parks the next thread passing `point` until released. At
/// `BeforeSync`: a sync leader between its write and its fsync, the moment a
/// power cut hurts a durable store most.
struct Park {
    point: InjectionPoint,
    armed: AtomicBool,
    /// (a thread is parked, released)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Park {
    fn at(point: InjectionPoint) -> Arc<Self> {
        Arc::new(Self {
            point,
            armed: AtomicBool::new(false),
            state: Mutex::new((false, false)),
            cv: Condvar::new(),
        })
    }

    /// Wait until a thread is parked.
    fn wait_parked(&self) {
        let s = self.state.lock().unwrap();
        let (s, timeout) = self
            .cv
            .wait_timeout_while(s, Duration::from_secs(30), |s| !s.0)
            .unwrap();
        assert!(
            !timeout.timed_out() && s.0,
            "nobody reached {:?}",
            self.point
        );
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl FaultInjector for Park {
    fn on(&self, point: InjectionPoint) -> FaultAction {
        if point == self.point && self.armed.swap(false, Ordering::AcqRel) {
            let mut s = self.state.lock().unwrap();
            s.0 = true;
            self.cv.notify_all();
            let (s, _) = self
                .cv
                .wait_timeout_while(s, Duration::from_secs(30), |s| !s.1)
                .unwrap();
            drop(s);
        }
        FaultAction::Continue
    }
}

#[test]
fn a_cut_between_the_write_and_its_fsync_loses_only_unacknowledged_events() {
    let dir = tempfile::tempdir().unwrap();
    let park = Park::at(InjectionPoint::BeforeSync);
    let mut cfg = StoreConfig::new(dir.path()).with_segment_max_bytes(64 * 1024);
    cfg.fault_injector = Some(park.clone());
    let store = Arc::new(Store::open(cfg).unwrap());
    let acked: Arc<Mutex<Vec<(u128, String, u64)>>> = Arc::default();
    let threads: Vec<_> = (0..3)
        .map(|t| {
            let (store, acked) = (store.clone(), acked.clone());
            std::thread::spawn(move || {
                for n in 0u64.. {
                    let entity = format!("t{t}");
                    match store.append(
                        &coord(&entity, "s"),
                        KIND_A,
                        &json!({"n": n, "pad": "w".repeat(80)}),
                    ) {
                        Ok(r) => acked.lock().unwrap().push((r.event_id, entity, n)),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    while acked.lock().unwrap().len() < 100 {
        std::thread::yield_now();
    }
    park.armed.store(true, Ordering::Release);
    park.wait_parked();
    // A leader has written its group to the file and not synced it yet.
    let report = store.simulate_power_loss().unwrap();
    assert!(
        report.bytes_discarded > 0,
        "the written, unsynced group was discarded: {report:?}"
    );
    park.release();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    drop(store);
    // The parked group was never acknowledged, and everything acknowledged is there.
    check_survivors(dir.path(), &acked, true);
}

/// Ids of every event a store serves, in order.
fn served(store: &Store) -> Vec<u128> {
    store
        .query(&Region::all())
        .iter()
        .map(|e| e.event_id)
        .collect()
}

/// Reopen after a (simulated) crash, note what the store serves, cut the
/// power, reopen: everything served must still be there.
fn served_after_crash_survives_a_cut(dir: &std::path::Path, expect_at_least: usize) {
    let reopened = open(dir);
    let seen = served(&reopened);
    assert!(
        seen.len() >= expect_at_least,
        "the reopen serves {} events, expected {expect_at_least}",
        seen.len()
    );
    let cut = reopened.simulate_power_loss().unwrap();
    drop(reopened);
    let after = open(dir);
    let now = served(&after);
    let lost: Vec<_> = seen.iter().filter(|id| !now.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} events served after the crash vanished in the power cut ({cut:?})",
        lost.len(),
        seen.len()
    );
    assert_eq!(now, seen, "the power cut changed what the store holds");
    assert!(after.verify().unwrap().is_clean());
    // The sequences of what was served are never given out again.
    let next = after
        .append(&coord("after", "s"), KIND_A, &json!({"n": 0}))
        .unwrap();
    let max = after
        .query(&Region::all())
        .iter()
        .filter(|e| e.event_id != next.event_id)
        .map(|e| e.global_sequence)
        .max();
    assert!(max.is_none_or(|m| next.sequence > m));
}

#[test]
fn killed_before_its_fsync_then_reopened_then_cut_keeps_what_the_reopen_served() {
    // Durable mode: a leader writes its group and is killed before its
    // fsync. The kernel keeps the bytes, so the reopen finds and serves
    // them; it must make them durable before it does.
    let dir = tempfile::tempdir().unwrap();
    let park = Park::at(InjectionPoint::BeforeSync);
    let mut cfg = StoreConfig::new(dir.path());
    cfg.fault_injector = Some(park.clone());
    let store = Arc::new(Store::open(cfg).unwrap());
    for n in 0..20u64 {
        store
            .append(&coord("k", "s"), KIND_A, &json!({"n": n}))
            .unwrap();
    }
    park.armed.store(true, Ordering::Release);
    let appender = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.append(
                &coord("k", "s"),
                KIND_A,
                &json!({"n": 20, "pad": "u".repeat(300)}),
            )
        })
    };
    park.wait_parked();
    store.simulate_crash().unwrap();
    park.release();
    assert!(
        appender.join().unwrap().is_err(),
        "the crashed store acknowledged nothing more"
    );
    drop(store);
    served_after_crash_survives_a_cut(dir.path(), 21);
}

#[test]
fn killed_in_relaxed_mode_then_reopened_then_cut_keeps_what_the_reopen_served() {
    // Relaxed mode: events handed to the OS and never synced, the process
    // killed, the store reopened (serving them), then the power goes.
    let dir = tempfile::tempdir().unwrap();
    let cfg = StoreConfig::new(dir.path())
        .with_segment_max_bytes(16 * 1024)
        .with_sync_every_n_events(1_000_000);
    let store = Store::open(cfg).unwrap();
    for n in 0..200u64 {
        store
            .append(
                &coord(&format!("r:{}", n % 3), "s"),
                KIND_A,
                &json!({"n": n, "pad": "z".repeat(60)}),
            )
            .unwrap();
        if n == 100 {
            store.sync().unwrap();
        }
    }
    store.simulate_crash().unwrap();
    drop(store);
    served_after_crash_survives_a_cut(dir.path(), 200);
}

#[test]
fn killed_after_creating_a_segment_then_reopened_keeps_receipts_in_it() {
    // Killed after a new segment file was created and synced but before its
    // directory entry was: the reopen continues writing in that file, so it
    // must make the entry durable before it acknowledges anything there.
    let dir = tempfile::tempdir().unwrap();
    let park = Park::at(InjectionPoint::SegmentCreated);
    let mut cfg = StoreConfig::new(dir.path()).with_segment_max_bytes(4096);
    cfg.fault_injector = Some(park.clone());
    let store = Arc::new(Store::open(cfg).unwrap());
    park.armed.store(true, Ordering::Release);
    let appender = {
        let store = store.clone();
        std::thread::spawn(move || {
            for n in 0u64.. {
                let r = store.append(
                    &coord("c", "s"),
                    KIND_A,
                    &json!({"n": n, "pad": "c".repeat(500)}),
                );
                if r.is_err() {
                    return n;
                }
            }
            unreachable!()
        })
    };
    park.wait_parked();
    store.simulate_crash().unwrap();
    park.release();
    let acked = appender.join().unwrap();
    drop(store);
    assert_eq!(common::segment_files(dir.path()).len(), 2);
    // The reopen appends into the new segment, durably.
    let reopened = open(dir.path());
    let r = reopened
        .append(&coord("c", "s"), KIND_A, &json!({"n": acked}))
        .unwrap();
    assert_eq!(
        r.disk_pos.segment_id, 2,
        "the reopen writes the new segment"
    );
    let cut = reopened.simulate_power_loss().unwrap();
    drop(reopened);
    let after = open(dir.path());
    assert!(
        after.get(r.event_id).is_ok(),
        "a durable receipt vanished with its segment's directory entry ({cut:?})"
    );
    assert_eq!(after.stream("c").len() as u64, acked + 1);
}
