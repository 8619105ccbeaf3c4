//! The writer's restart policy: a panic inside the writer undoes the failing
//! call (which gets `WriterPanicked`), other callers carry on, nothing
//! acknowledged is lost; past the budget every write and `close` report
//! `WriterCrashed` without hanging.

mod common;

use batpak::prelude::*;
use batpak::store::{FaultAction, FaultInjector, InjectionPoint};
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Panics at `point` on the passes listed in `on` (1-based).
struct PanicOn {
    point: InjectionPoint,
    on: Vec<u64>,
    seen: AtomicU64,
}

impl PanicOn {
    fn new(point: InjectionPoint, on: &[u64]) -> Arc<Self> {
        Arc::new(Self {
            point,
            on: on.to_vec(),
            seen: AtomicU64::new(0),
        })
    }
}

impl FaultInjector for PanicOn {
    fn on(&self, point: InjectionPoint) -> FaultAction {
        if point != self.point {
            return FaultAction::Continue;
        }
        let n = self.seen.fetch_add(1, Ordering::AcqRel) + 1;
        if self.on.contains(&n) {
            FaultAction::Panic
        } else {
            FaultAction::Continue
        }
    }
}

fn config(dir: &std::path::Path, injector: Arc<dyn FaultInjector>) -> StoreConfig {
    let mut c = StoreConfig::new(dir).with_segment_max_bytes(2048);
    c.fault_injector = Some(injector);
    c
}

fn panicked(e: &StoreError) -> bool {
    match e {
        StoreError::WriterPanicked(_) => true,
        StoreError::BatchFailed { source, .. } => panicked(source),
        _ => false,
    }
}

fn crashed(e: &StoreError) -> bool {
    match e {
        StoreError::WriterCrashed => true,
        StoreError::BatchFailed { source, .. } => crashed(source),
        _ => false,
    }
}

/// The entity's payloads, which these tests make plain numbers.
fn numbers_of(store: &Store, entity: &str) -> Vec<i64> {
    payloads(store, &store.stream(entity))
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect()
}

/// Each entity's stream: clocks 0..n, linked hashes, unique sequences.
fn check_consistent(store: &Store) {
    let all = store.query(&Region::all());
    let seqs: Vec<u64> = all.iter().map(|e| e.global_sequence).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "sequences increase");
    let entities: HashSet<String> = all.iter().map(|e| e.coord.entity().to_owned()).collect();
    for entity in entities {
        let s = store.stream(&entity);
        for (i, e) in s.iter().enumerate() {
            assert_eq!(e.clock as usize, i, "{entity}: clocks without gaps");
        }
        for w in s.windows(2) {
            assert_eq!(
                w[1].hash_chain.prev_hash, w[0].hash_chain.event_hash,
                "{entity}: chain"
            );
        }
    }
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn a_panic_at_each_writer_step_undoes_only_that_call() {
    use InjectionPoint::*;
    for point in [BatchValidated, ItemWritten(0), FramesWritten, Indexed] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path(), PanicOn::new(point, &[3]))).unwrap();
        let c = coord("acct", "s");
        let mut acked = Vec::new();
        for i in 0..6u64 {
            match store.append(&c, KIND_A, &json!({"i": i})) {
                Ok(r) => acked.push((i, r)),
                Err(e) => {
                    assert!(panicked(&e), "{point:?}: {e}");
                    assert_eq!(i, 2, "{point:?}: only the third append panics");
                }
            }
        }
        assert_eq!(acked.len(), 5);
        // The failed call left nothing: sequences and clocks run on.
        let seqs: Vec<u64> = acked.iter().map(|(_, r)| r.sequence).collect();
        assert_eq!(seqs, vec![0, 1, 2, 3, 4], "{point:?}");
        let is: Vec<u64> = payloads(&store, &store.stream("acct"))
            .iter()
            .map(|p| p["i"].as_u64().unwrap())
            .collect();
        assert_eq!(is, vec![0, 1, 3, 4, 5], "{point:?}");
        check_consistent(&store);
        assert_eq!(store.diagnostics().writer_restarts, 1);
        store.close().unwrap();
        let store = Store::open(StoreConfig::new(dir.path()).with_segment_max_bytes(2048)).unwrap();
        assert_eq!(
            store.stream("acct").len(),
            5,
            "{point:?}: the same after reopening"
        );
        check_consistent(&store);
    }
}

#[test]
fn a_batch_that_panics_while_rotating_segments_is_undone_whole() {
    let dir = tempfile::tempdir().unwrap();
    // The 2nd batch panics after its 7th item; items are big enough that the
    // batch crosses into a new segment first.
    let store = Store::open(config(
        dir.path(),
        PanicOn::new(InjectionPoint::ItemWritten(6), &[2]),
    ))
    .unwrap();
    let batch = |tag: u64| -> Vec<BatchAppendItem> {
        (0..8u64)
            .map(|k| {
                BatchAppendItem::new(
                    coord(&format!("b:{}", k % 3), "s"),
                    KIND_B,
                    &json!({"tag": tag, "k": k, "pad": "x".repeat(120)}),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect()
    };
    store.append_batch(batch(1)).unwrap();
    let segments = segment_files(dir.path()).len();
    let e = store.append_batch(batch(2)).unwrap_err();
    assert!(panicked(&e), "{e}");
    assert!(
        segment_files(dir.path()).len() > segments,
        "the panicking batch crossed into a new segment"
    );
    store.append_batch(batch(3)).unwrap();
    let tags: Vec<u64> = payloads(&store, &store.by_fact(KIND_B))
        .iter()
        .map(|p| p["tag"].as_u64().unwrap())
        .collect();
    assert_eq!(tags, [vec![1; 8], vec![3; 8]].concat());
    check_consistent(&store);
    store.close().unwrap();
    let store = Store::open(StoreConfig::new(dir.path()).with_segment_max_bytes(2048)).unwrap();
    assert_eq!(
        store.by_fact(KIND_B).len(),
        16,
        "the undone batch stays gone"
    );
    check_consistent(&store);
}

#[test]
fn past_the_budget_every_write_and_close_report_writer_crashed() {
    let dir = tempfile::tempdir().unwrap();
    // Once (the default): the first panic is survived, the second is not.
    let store = Store::open(config(
        dir.path(),
        PanicOn::new(InjectionPoint::FramesWritten, &[2, 4]),
    ))
    .unwrap();
    let c = coord("a", "s");
    store.append(&c, KIND_A, &1).unwrap();
    assert!(panicked(&store.append(&c, KIND_A, &2).unwrap_err()));
    store.append(&c, KIND_A, &3).unwrap();
    let e = store.append(&c, KIND_A, &4).unwrap_err();
    assert!(crashed(&e), "{e}");
    for _ in 0..3 {
        assert!(crashed(&store.append(&c, KIND_A, &5).unwrap_err()));
    }
    assert!(matches!(store.sync(), Err(StoreError::WriterCrashed)));
    // Reads keep working.
    assert_eq!(store.stream("a").len(), 2);
    assert!(store.diagnostics().poisoned.is_some());
    assert!(matches!(store.close(), Err(StoreError::WriterCrashed)));
    // Nothing acknowledged was lost.
    let store = open(dir.path());
    assert_eq!(numbers_of(&store, "a"), vec![1, 3]);
}

#[test]
fn bounded_allows_max_restarts_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        dir.path(),
        PanicOn::new(InjectionPoint::Indexed, &[1, 2, 3, 4]),
    )
    .with_restart_policy(RestartPolicy::Bounded {
        max_restarts: 3,
        within_ms: 60_000,
    });
    cfg.sync.every_n_events = 1;
    let store = Store::open(cfg).unwrap();
    let c = coord("a", "s");
    for _ in 0..3 {
        assert!(panicked(&store.append(&c, KIND_A, &0).unwrap_err()));
    }
    assert!(crashed(&store.append(&c, KIND_A, &0).unwrap_err()));
    assert!(matches!(store.close(), Err(StoreError::WriterCrashed)));

    // A window that has passed forgives: restarts spaced wider than it never
    // exhaust a budget of one.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        PanicOn::new(InjectionPoint::Indexed, &[1, 3, 5]),
    )
    .with_restart_policy(RestartPolicy::Bounded {
        max_restarts: 1,
        within_ms: 1,
    });
    let store = Store::open(cfg).unwrap();
    for i in 0..6 {
        // Let the 1 ms window pass between panics.
        std::thread::sleep(std::time::Duration::from_millis(3));
        match store.append(&c, KIND_A, &i) {
            Ok(_) => assert!(i % 2 == 1),
            Err(e) => assert!(panicked(&e) && i % 2 == 0, "{e}"),
        }
    }
    assert_eq!(store.stream("a").len(), 3);
    store.close().unwrap();
}

#[test]
fn other_callers_carry_on_while_one_panics() {
    let dir = tempfile::tempdir().unwrap();
    let panics: Vec<u64> = (1..=8).map(|k| k * 37).collect();
    let cfg = config(
        dir.path(),
        PanicOn::new(InjectionPoint::FramesWritten, &panics),
    )
    .with_restart_policy(RestartPolicy::Bounded {
        max_restarts: 100,
        within_ms: 60_000,
    });
    let store = Arc::new(Store::open(cfg).unwrap());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, acked, failed) = (store.clone(), acked.clone(), failed.clone());
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    let c = coord(&format!("t{t}"), "s");
                    match store.append(&c, KIND_A, &json!({"t": t, "i": i})) {
                        Ok(r) => acked.lock().unwrap().push(r.event_id),
                        Err(e) => {
                            assert!(panicked(&e), "{e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    assert_eq!(failed, 8, "exactly the injected panics failed");
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len() as u64, 400 - failed);
    check_consistent(&store);
    let store = Arc::into_inner(store).unwrap();
    store.close().unwrap();
    let store = open(dir.path());
    let have: HashSet<u128> = store
        .query(&Region::all())
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(have.len(), acked.len(), "failed calls left nothing");
    assert!(acked.iter().all(|id| have.contains(id)));
}

#[test]
fn a_panicking_sync_leader_is_retried() {
    for point in [
        InjectionPoint::BeforeFlush,
        InjectionPoint::BeforeSync,
        InjectionPoint::Sync,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path(), PanicOn::new(point, &[2]))).unwrap();
        let c = coord("a", "s");
        for i in 0..4 {
            // The sync of the second append panics; its retry makes it durable.
            store.append(&c, KIND_A, &i).unwrap();
        }
        assert_eq!(store.diagnostics().writer_restarts, 1, "{point:?}");
        store.close().unwrap();
        assert_eq!(open(dir.path()).stream("a").len(), 4);
    }
}

/// The original crate's hook: `panic_writer_for_test` panics the writer
/// between calls. Under `Once` the first is survived (appends go on), the
/// second stops writes; the hook then reports `WriterCrashed` itself, and
/// everything acknowledged survives a reopen.
#[test]
fn panic_writer_for_test_counts_against_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c = coord("a", "s");
    store.append(&c, KIND_A, &1).unwrap();
    store.panic_writer_for_test().unwrap();
    assert_eq!(store.diagnostics().writer_restarts, 1);
    store.append(&c, KIND_A, &2).unwrap();
    store.panic_writer_for_test().unwrap();
    assert!(crashed(&store.append(&c, KIND_A, &3).unwrap_err()));
    assert!(matches!(
        store.panic_writer_for_test(),
        Err(StoreError::WriterCrashed)
    ));
    assert_eq!(store.stream("a").len(), 2, "reads keep working");
    assert!(matches!(store.close(), Err(StoreError::WriterCrashed)));
    let store = open(dir.path());
    assert_eq!(numbers_of(&store, "a"), vec![1, 2]);
    check_consistent(&store);
    assert!(matches!(
        Store::open_read_only(StoreConfig::new(dir.path()))
            .unwrap()
            .panic_writer_for_test(),
        Err(StoreError::ReadOnly)
    ));
}
