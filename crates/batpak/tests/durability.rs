//! Per-call durability (`AppendOptions::with_durability`, ADR 0030): a
//! `Durable` call in a relaxed store is acknowledged only once synced, so
//! it survives a power cut; a `Relaxed` call in a durable store is
//! acknowledged once written, stays invisible until a sync covers it, and
//! can be lost to a power cut before that sync.

mod common;

use batpak::prelude::*;
use batpak::store::{FaultAction, FaultInjector, InjectionPoint};
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

fn durable() -> AppendOptions {
    AppendOptions::new().with_durability(Durability::Durable)
}

fn relaxed() -> AppendOptions {
    AppendOptions::new().with_durability(Durability::Relaxed)
}

fn item(entity: &str, n: u32, options: AppendOptions) -> BatchAppendItem {
    BatchAppendItem::new(coord(entity, "s"), KIND_A, &n, options, CausationRef::None).unwrap()
}

#[test]
fn a_batch_takes_the_strongest_request_of_its_items() {
    use Durability::{Durable, Relaxed};
    assert_eq!(Durability::strongest([None, None]), None);
    assert_eq!(Durability::strongest([None, Some(Relaxed)]), Some(Relaxed));
    assert_eq!(
        Durability::strongest([Some(Relaxed), Some(Durable), None]),
        Some(Durable)
    );
    assert_eq!(Durability::strongest(std::iter::empty()), None);
    assert_eq!(
        AppendOptions::new().durability,
        None,
        "the default is the store's"
    );
}

#[test]
fn durable_calls_in_a_relaxed_store_survive_a_power_cut() {
    // Each round cuts the power right after the durable calls returned,
    // long before the relaxed store's own background sync (every 1000
    // events or 50 ms idle) would have run: only the calls' own fsyncs
    // can have saved them.
    for round in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = StoreConfig::new(dir.path()).with_sync_every_n_events(1000);
        let store = Store::open(cfg.clone()).unwrap();
        for n in 0..3 {
            store.append(&coord("relaxed", "s"), KIND_A, &n).unwrap();
        }
        let single = store
            .append_with_options(&coord("single", "s"), KIND_A, &1, durable())
            .unwrap();
        let batch = store
            .append_batch(vec![
                item("batch", 1, AppendOptions::new()),
                item("batch", 2, durable()),
            ])
            .unwrap();
        store.simulate_power_loss().unwrap();
        drop(store);
        let reopened = Store::open(cfg).unwrap();
        for id in [single.event_id, batch[0].event_id, batch[1].event_id] {
            assert!(
                reopened.get(id).is_ok(),
                "round {round}: durable receipt lost"
            );
        }
        // The fsync covered everything written before it.
        assert_eq!(reopened.stream("relaxed").len(), 3, "round {round}");
    }
}

/// Parks the first thread that reaches `BeforeSync` after it is armed.
struct Park {
    armed: AtomicBool,
    /// (a thread is parked, released)
    state: Mutex<(bool, bool)>,
    cv: Condvar,
}

impl Park {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            armed: AtomicBool::new(false),
            state: Mutex::new((false, false)),
            cv: Condvar::new(),
        })
    }

    fn wait_parked(&self) {
        let s = self.state.lock().unwrap();
        let (s, _) = self
            .cv
            .wait_timeout_while(s, Duration::from_secs(30), |s| !s.0)
            .unwrap();
        assert!(s.0, "nobody reached BeforeSync");
    }

    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

impl FaultInjector for Park {
    fn on(&self, point: InjectionPoint) -> FaultAction {
        if point == InjectionPoint::BeforeSync && self.armed.swap(false, Ordering::AcqRel) {
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

/// A durable store whose next sync parks; a relaxed append on another
/// thread. Returns the store, the parking hook and the receipt, which must
/// arrive while the sync is still parked.
fn relaxed_append_with_sync_parked(
    dir: &std::path::Path,
) -> (Arc<Store>, Arc<Park>, AppendReceipt, Subscription) {
    let park = Park::new();
    let mut cfg = StoreConfig::new(dir);
    cfg.fault_injector = Some(park.clone());
    let store = Arc::new(Store::open(cfg).unwrap());
    store.append(&coord("before", "s"), KIND_A, &0).unwrap();
    let subscription = store.subscribe_lossy(&Region::entity("relaxed"));
    park.armed.store(true, Ordering::Release);
    let (tx, rx) = std::sync::mpsc::channel();
    let appender = store.clone();
    std::thread::spawn(move || {
        let r = appender.append_with_options(&coord("relaxed", "s"), KIND_A, &1, relaxed());
        let _ = tx.send(r);
    });
    let receipt = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the receipt did not wait for the fsync")
        .unwrap();
    park.wait_parked();
    // Written, acknowledged, not synced: no reader sees it (SPEC §5).
    assert!(matches!(
        store.get(receipt.event_id),
        Err(StoreError::NotFound(_))
    ));
    assert!(store.stream("relaxed").is_empty());
    assert!(subscription
        .recv_timeout(Duration::from_millis(1))
        .is_none());
    (store, park, receipt, subscription)
}

#[test]
fn a_relaxed_call_in_a_durable_store_is_acknowledged_before_its_sync_and_seen_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let (store, park, receipt, subscription) = relaxed_append_with_sync_parked(dir.path());
    park.release();
    store.sync().unwrap();
    assert_eq!(store.get(receipt.event_id).unwrap().event.payload, 1);
    let note = subscription
        .recv_timeout(Duration::from_secs(10))
        .expect("the background sync offered it to subscribers");
    assert_eq!(note.event_id, receipt.event_id);
}

#[test]
fn a_relaxed_call_in_a_durable_store_can_be_lost_to_a_power_cut_before_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (store, park, receipt, _subscription) = relaxed_append_with_sync_parked(dir.path());
    let cut = store.simulate_power_loss().unwrap();
    assert!(
        cut.bytes_discarded > 0,
        "the relaxed event was unsynced: {cut:?}"
    );
    park.release();
    drop(store);
    let reopened = Store::open(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(
        reopened.stream("before").len(),
        1,
        "the durable append survived"
    );
    assert!(
        reopened.get(receipt.event_id).is_err(),
        "nobody ever saw the relaxed event, and the cut took it"
    );
}
