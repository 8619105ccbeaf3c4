//! Delivery (SPEC §4.4–§4.6): guaranteed cursors, lossy subscriptions and
//! reactors, with real threads: what only the file store shows (reopening
//! a directory, durable-only delivery, threads ending with the store,
//! injected faults). The promises every backend keeps (order and
//! exactly-once under concurrent writers, region rules, reactors that
//! never skip a trigger) are checked by `batpak-conformance`, which runs
//! on the file store in 64 KiB segments.

mod common;

use batpak::prelude::*;
use batpak::store::{CountdownInjector, FaultAction, InjectionPoint};
use common::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_saved_position_resumes_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let region = Region::entity("order:");
    let (first_half, saved) = {
        let store = open(dir.path());
        for i in 0..40 {
            store
                .append(&coord(&format!("order:{}", i % 4), "s"), KIND_A, &i)
                .unwrap();
            store.append(&coord("noise", "s"), KIND_A, &i).unwrap();
        }
        let mut c = store.cursor_guaranteed(&region);
        let got: Vec<u128> = c.poll_batch(15).iter().map(|e| e.event_id).collect();
        let pos = c.position();
        store.close().unwrap();
        (got, pos)
    };
    let store = open(dir.path());
    for i in 40..50 {
        store
            .append(&coord(&format!("order:{}", i % 4), "s"), KIND_A, &i)
            .unwrap();
    }
    let mut c = store.cursor_from(&region, saved);
    let rest: Vec<u128> = c.poll_batch(1000).iter().map(|e| e.event_id).collect();
    let all: Vec<u128> = store.query(&region).iter().map(|e| e.event_id).collect();
    assert_eq!(first_half.len() + rest.len(), 50);
    assert_eq!(
        [first_half, rest].concat(),
        all,
        "nothing skipped, nothing repeated"
    );
    // from the beginning and past the end
    assert_eq!(store.cursor_from(&region, None).poll_batch(1000).len(), 50);
    assert!(store
        .cursor_from(&region, Some(u64::MAX - 1))
        .poll()
        .is_none());
}

#[test]
fn wait_next_sleeps_until_an_event_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let mut cursor = store.cursor_guaranteed(&Region::entity("late"));
    let t = Instant::now();
    assert!(
        cursor.wait_next(Duration::from_millis(50)).is_none(),
        "times out when nothing comes"
    );
    assert!(t.elapsed() >= Duration::from_millis(50));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            store.append(&coord("late", "s"), KIND_A, &1).unwrap()
        })
    };
    let t = Instant::now();
    let got = cursor
        .wait_next(Duration::from_secs(20))
        .expect("woken by the append");
    // Woken by the append (30 ms in), not by the 20 s timeout.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(got.event_id, writer.join().unwrap().event_id);
    // Closing the store ends a waiting cursor at once.
    let closer = {
        let store = store.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(store);
        })
    };
    drop(store);
    let t = Instant::now();
    assert!(cursor.wait_next(Duration::from_secs(20)).is_none());
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "close wakes waiting cursors"
    );
    closer.join().unwrap();
}

/// A timeout too long for an `Instant` (issue 10, item 8) means "no limit":
/// the cursor waits for the append or the close, and never panics.
#[test]
fn wait_next_with_an_unbounded_timeout_waits_for_the_event_or_the_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let mut cursor = store.cursor_guaranteed(&Region::entity("later"));
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.append(&coord("later", "s"), KIND_A, &1).unwrap())
    };
    let got = cursor
        .wait_next(Duration::MAX)
        .expect("woken by the append");
    assert_eq!(got.event_id, writer.join().unwrap().event_id);
    let closer = std::thread::spawn(move || drop(store));
    assert!(
        cursor.wait_next(Duration::MAX).is_none(),
        "the close ends the wait"
    );
    closer.join().unwrap();
}

#[test]
fn lossy_subscribers_drop_alone_and_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| c.with_broadcast_capacity(2));
    let tiny = store.subscribe_lossy(&Region::entity("e"));
    let other_scope = store.subscribe_lossy(&Region::scope("elsewhere"));
    for i in 0..10 {
        store.append(&coord("e", "s"), KIND_A, &i).unwrap();
    }
    // The writer never waited: all ten are stored.
    assert_eq!(store.stats().event_count, 10);
    let got: Vec<u64> = std::iter::from_fn(|| tiny.receiver().try_recv().ok())
        .map(|n| n.sequence)
        .collect();
    assert_eq!(got, vec![0, 1], "the buffer kept the first two");
    assert_eq!(tiny.dropped(), 8);
    assert_eq!(other_scope.dropped(), 0, "drops are per subscriber");
    assert!(other_scope.receiver().try_recv().is_err());
    // A reader keeping up loses nothing.
    let keeper = store.subscribe_lossy(&Region::all());
    for i in 0..2 {
        let r = store.append(&coord("f", "elsewhere"), KIND_B, &i).unwrap();
        let n = keeper.recv().unwrap();
        assert_eq!(
            (n.event_id, n.kind, n.coord.entity()),
            (r.event_id, KIND_B, "f")
        );
        assert_eq!(other_scope.recv().unwrap().event_id, r.event_id);
    }
    assert_eq!(store.diagnostics().subscribers, 3);
    drop(tiny);
    drop(other_scope);
    store.append(&coord("e", "s"), KIND_A, &"after").unwrap();
    store
        .append(&coord("f", "elsewhere"), KIND_A, &"after")
        .unwrap();
    assert_eq!(
        store.diagnostics().subscribers,
        1,
        "dropped subscribers are removed"
    );
    let mut ops = keeper.ops().filter(|n| n.coord.entity() == "f").take(1);
    assert_eq!(ops.recv().unwrap().coord.entity(), "f");
    assert!(ops.recv().is_none(), "take(1)");
    store.close().unwrap();
}

#[test]
fn subscribers_never_see_what_did_not_become_durable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
        InjectionPoint::Sync,
        2,
        FaultAction::Fail,
    )));
    let store = Store::open(cfg).unwrap();
    let sub = store.subscribe_lossy(&Region::all());
    let mut cursor = store.cursor_guaranteed(&Region::all());
    let ok = store.append(&coord("e", "s"), KIND_A, &1).unwrap();
    assert!(
        store.append(&coord("e", "s"), KIND_A, &2).is_err(),
        "its sync failed"
    );
    assert_eq!(
        sub.recv_timeout(Duration::from_secs(5)).unwrap().event_id,
        ok.event_id
    );
    assert!(
        sub.recv_timeout(Duration::from_millis(100)).is_none(),
        "the unsynced event was never announced"
    );
    assert_eq!(cursor.poll_batch(10).len(), 1);
}

#[test]
fn a_batch_is_announced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let sub = store.subscribe_lossy(&Region::all());
    let items = (0..5)
        .map(|i| {
            BatchAppendItem::new(
                coord("b", "s"),
                KIND_A,
                &i,
                AppendOptions::new(),
                CausationRef::None,
            )
            .unwrap()
        })
        .collect();
    let receipts = store.append_batch(items).unwrap();
    let got: Vec<u128> = std::iter::from_fn(|| sub.receiver().try_recv().ok())
        .map(|n| n.event_id)
        .collect();
    assert_eq!(got, receipts.iter().map(|r| r.event_id).collect::<Vec<_>>());
}

struct Auditor;

impl Reactive<serde_json::Value> for Auditor {
    fn react(
        &self,
        event: &Event<serde_json::Value>,
    ) -> Vec<(Coordinate, EventKind, serde_json::Value)> {
        let n = event.payload["n"].as_u64().unwrap_or(0);
        let mut out = vec![(coord("audit", "s"), KIND_B, json!({ "of": n }))];
        if n.is_multiple_of(10) {
            out.push((coord("audit", "s"), KIND_B, json!({ "milestone": n })));
        }
        out
    }
}

#[test]
fn a_reactor_thread_ends_when_the_store_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let handle = store.react_loop(&Region::all(), Auditor).unwrap();
    drop(store);
    join_within(
        handle,
        Duration::from_secs(10),
        "reactor after the store was dropped",
    );
}

/// SPEC: threads the store starts hold no strong reference to it, so
/// `Arc::try_unwrap` then `close()` work while a reactor is answering. Each
/// round unwraps and closes right after appending triggers, mid-answer; a
/// restart then answers what was left, each trigger exactly once.
#[test]
fn a_store_unwraps_and_closes_while_its_reactor_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (rounds, per_round) = (12u64, 25u64);
    for round in 0..rounds {
        let store = Arc::new(open(dir.path()));
        let handle = store
            .react_loop(&Region::entity("order:"), Auditor)
            .unwrap();
        for k in 0..per_round {
            let n = round * per_round + k;
            store
                .append(
                    &coord(&format!("order:{n}"), "s"),
                    KIND_A,
                    &json!({ "n": n }),
                )
                .unwrap();
        }
        // Wait for the reactor to be mid-stream (at least one answer), so
        // the unwrap races its appends.
        let mut audit = store.cursor_guaranteed(&Region::entity("audit"));
        assert!(audit.wait_next(Duration::from_secs(30)).is_some());
        let store = Arc::try_unwrap(store)
            .unwrap_or_else(|_| panic!("round {round}: the reactor holds a strong reference"));
        store.close().unwrap();
        join_within(handle, Duration::from_secs(10), "reactor after close");
    }
    let triggers = rounds * per_round;
    let expected = (triggers + triggers.div_ceil(10)) as usize;
    let store = Arc::new(open(dir.path()));
    let handle = store
        .react_loop(&Region::entity("order:"), Auditor)
        .unwrap();
    let mut audit = store.cursor_guaranteed(&Region::entity("audit"));
    let mut seen = 0;
    while seen < expected {
        assert!(
            audit.wait_next(Duration::from_secs(30)).is_some(),
            "only {seen} of {expected} reactions"
        );
        seen += 1;
    }
    let reactions = store.stream("audit");
    assert_eq!(reactions.len(), expected, "no trigger answered twice");
    let causes: std::collections::HashSet<u128> =
        reactions.iter().map(|e| e.causation_id.unwrap()).collect();
    assert_eq!(causes.len() as u64, triggers, "every trigger answered");
    drop(store);
    join_within(handle, Duration::from_secs(10), "reactor after drop");
}

/// Answers like [`Auditor`], but first says it has a trigger in hand and
/// waits for a go-ahead, so a test can close the store mid-answer.
struct HeldAuditor {
    entered: std::sync::mpsc::Sender<()>,
    go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Reactive<serde_json::Value> for HeldAuditor {
    fn react(
        &self,
        event: &Event<serde_json::Value>,
    ) -> Vec<(Coordinate, EventKind, serde_json::Value)> {
        let _ = self.entered.send(());
        let _ = self
            .go
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
        Auditor.react(event)
    }
}

/// A reactor that holds a trigger when its store closes: `close` waits for
/// it (SPEC §5.2: close joins every thread the store started), its append
/// is refused, so nothing is written after the close, and the trigger is
/// answered once after a restart.
#[test]
fn a_reactor_writes_nothing_after_its_store_closed() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let store = Arc::new(open(dir.path()));
    let reactor = HeldAuditor {
        entered: entered_tx,
        go: std::sync::Mutex::new(go_rx),
    };
    let handle = store
        .react_loop(&Region::entity("order:"), reactor)
        .unwrap();
    let trigger = store
        .append(&coord("order:1", "s"), KIND_A, &json!({ "n": 1 }))
        .unwrap();
    entered
        .recv_timeout(Duration::from_secs(30))
        .expect("the reactor takes the trigger");
    let store =
        Arc::try_unwrap(store).unwrap_or_else(|_| panic!("the reactor holds a strong reference"));
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let closer = std::thread::spawn(move || {
        let result = store.close().map(drop);
        // Checked as close returns: the reactor thread has ended.
        closed_tx.send(handle.is_finished()).unwrap();
        result
    });
    // The reactor is held inside `react`, so close cannot have returned
    // (were it not to wait, it would return within a millisecond or so).
    assert!(
        closed.recv_timeout(Duration::from_millis(300)).is_err(),
        "close returned while its reactor was still answering"
    );
    go.send(()).unwrap();
    let finished = closed
        .recv_timeout(Duration::from_secs(30))
        .expect("close returns once the reactor ended");
    assert!(finished, "close returned before joining the reactor");
    closer.join().unwrap().unwrap();

    let store = Arc::new(open(dir.path()));
    assert!(
        store.stream("audit").is_empty(),
        "nothing was written after the close"
    );
    let handle = store
        .react_loop(&Region::entity("order:"), Auditor)
        .unwrap();
    let mut audit = store.cursor_guaranteed(&Region::entity("audit"));
    let reaction = audit
        .wait_next(Duration::from_secs(30))
        .expect("the restart answers the trigger");
    assert_eq!(reaction.causation_id, Some(trigger.event_id));
    assert_eq!(store.stream("audit").len(), 1, "answered once");
    drop(store);
    join_within(handle, Duration::from_secs(10), "reactor after drop");
}
