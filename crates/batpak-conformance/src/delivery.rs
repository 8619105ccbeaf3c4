//! The delivery checks (SPEC §4.4–§4.6): guaranteed cursors, lossy
//! subscriptions, reactors and projection watchers, generic over
//! [`EventFeed`], so that both backends keep one meaning.
//!
//! They are timing-tolerant: nothing sleeps and hopes. A check waits for a
//! condition with a generous deadline, and asserts only what must hold
//! however slow the machine is (a wake-up comes well before a long
//! timeout; a timeout is never shorter than asked).

use crate::{Harness, Settings};
use batpak::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const KIND_A: EventKind = EventKind::custom(1, 1);
const KIND_B: EventKind = EventKind::custom(2, 7);

/// How long a check waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(60);

fn coord(entity: &str, scope: &str) -> Coordinate {
    Coordinate::new(entity, scope).expect("valid coordinate")
}

fn open<H: Harness>(h: &H) -> H::Store {
    h.open(&Settings::default())
}

/// Wait for `cond`, or fail naming `what`.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Deliver `n` events from `cursor`, waiting as long as it takes (within
/// [`PATIENCE`]).
fn deliver<C: EventCursor>(cursor: &mut C, n: usize) -> Vec<IndexEntry> {
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} events delivered",
            got.len()
        );
        if let Some(e) = cursor.wait_next(Duration::from_millis(200)).unwrap() {
            got.push(e);
        }
    }
    got
}

/// The store out of its `Arc` once its reactor has let go of it (it holds
/// a strong reference only while answering a trigger).
fn unwrap_store<S>(store: Arc<S>) -> S {
    let deadline = Instant::now() + PATIENCE;
    let mut store = store;
    loop {
        match Arc::try_unwrap(store) {
            Ok(s) => return s,
            Err(shared) => {
                assert!(
                    Instant::now() < deadline,
                    "a reactor keeps a strong reference while idle"
                );
                store = shared;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

fn join_within(handle: std::thread::JoinHandle<()>, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "{what} did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().expect("thread panicked");
}

pub fn cursor_delivers_every_event_once_in_order_under_concurrent_writers<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    let writers = 4;
    let per = 60;
    let mut cursor = EventFeed::cursor_guaranteed(&*store, &Region::entity("w"));
    let start = Arc::new(Barrier::new(writers + 1));
    let handles: Vec<_> = (0..writers)
        .map(|t| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..per {
                    if i % 10 == 0 {
                        let items = (0..3)
                            .map(|k| {
                                BatchAppendItem::new(
                                    coord(&format!("w{t}"), "s"),
                                    KIND_A,
                                    &json!([t, i, k]),
                                    AppendOptions::new(),
                                    CausationRef::None,
                                )
                                .unwrap()
                            })
                            .collect();
                        store.append_batch(items).unwrap();
                    } else {
                        store
                            .append(&coord(&format!("w{t}"), "s"), KIND_A, &json!([t, i]))
                            .unwrap();
                    }
                    // Noise the cursor must not deliver.
                    store.append(&coord("other", "s"), KIND_B, &i).unwrap();
                }
            })
        })
        .collect();
    start.wait();
    let expected = writers * (per + per / 10 * 2);
    let seen = deliver(&mut cursor, expected);
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        cursor.poll().unwrap().is_none(),
        "nothing beyond what was written"
    );
    assert!(
        seen.windows(2)
            .all(|w| w[0].global_sequence < w[1].global_sequence),
        "in order"
    );
    let ids: HashSet<u128> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), expected, "exactly once");
    let queried: Vec<u128> = store
        .query(&Region::entity("w"))
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(seen.iter().map(|e| e.event_id).collect::<Vec<_>>(), queried);
    assert_eq!(
        cursor.position(),
        Some(seen.last().unwrap().global_sequence)
    );
}

pub fn cursors_follow_region_rules<H: Harness>(h: &H) {
    let store = open(h);
    for i in 0..40u32 {
        let kind = match i % 3 {
            0 => KIND_B,
            1 => KIND_A,
            _ => EventKind::custom(1, 9),
        };
        store
            .append(
                &coord(&format!("e{}", i % 2), if i % 5 == 0 { "s2" } else { "s1" }),
                kind,
                &i,
            )
            .unwrap();
    }
    for region in [
        Region::all(),
        Region::entity("e1"),
        Region::scope("s2"),
        Region::all().with_fact(KindFilter::Exact(KIND_B)),
        Region::all().with_fact_category(1),
        Region::entity("e0").with_clock_range((3, 7)),
        Region::entity("e")
            .with_scope("s1")
            .with_fact(KindFilter::Exact(KIND_A)),
    ] {
        let want: Vec<u128> = store
            .query(&region)
            .unwrap()
            .iter()
            .map(|e| e.event_id)
            .collect();
        let mut c = EventFeed::cursor_guaranteed(&store, &region);
        let got: Vec<u128> = deliver(&mut c, want.len())
            .iter()
            .map(|e| e.event_id)
            .collect();
        assert_eq!(got, want, "{region:?}");
        assert!(c.poll().unwrap().is_none(), "{region:?}");
        assert_eq!(c.region(), &region);
    }
}

pub fn a_saved_position_resumes_in_a_new_handle<H: Harness>(h: &H) {
    let region = Region::entity("order:");
    let (first_half, saved) = {
        let store = open(h);
        for i in 0..40 {
            store
                .append(&coord(&format!("order:{}", i % 4), "s"), KIND_A, &i)
                .unwrap();
            store.append(&coord("noise", "s"), KIND_A, &i).unwrap();
        }
        let mut c = EventFeed::cursor_guaranteed(&store, &region);
        let got: Vec<u128> = deliver(&mut c, 15).iter().map(|e| e.event_id).collect();
        let pos = c.position();
        store.close().unwrap();
        (got, pos)
    };
    let store = open(h);
    for i in 40..50 {
        store
            .append(&coord(&format!("order:{}", i % 4), "s"), KIND_A, &i)
            .unwrap();
    }
    let mut c = EventFeed::cursor_from(&store, &region, saved);
    let rest: Vec<u128> = deliver(&mut c, 35).iter().map(|e| e.event_id).collect();
    assert!(c.poll().unwrap().is_none());
    let all: Vec<u128> = store
        .query(&region)
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(
        [first_half, rest].concat(),
        all,
        "nothing skipped, nothing repeated"
    );
    let mut from_start = EventFeed::cursor_from(&store, &region, None);
    assert_eq!(deliver(&mut from_start, 50).len(), 50);
    assert!(EventFeed::cursor_from(&store, &region, Some(u64::MAX - 1))
        .poll()
        .unwrap()
        .is_none());
}

pub fn wait_next_wakes_on_an_append_and_times_out<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    let mut cursor = EventFeed::cursor_guaranteed(&*store, &Region::entity("late"));
    let t = Instant::now();
    assert!(
        cursor
            .wait_next(Duration::from_millis(50))
            .unwrap()
            .is_none(),
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
        .wait_next(PATIENCE)
        .unwrap()
        .expect("woken by the append");
    // Woken by the append (30 ms in), long before the timeout.
    assert!(t.elapsed() < PATIENCE / 2, "{:?}", t.elapsed());
    assert_eq!(got.event_id, writer.join().unwrap().event_id);
    // An unbounded wait ends with the event or the store.
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || store.append(&coord("late", "s"), KIND_A, &2).unwrap())
    };
    let got = cursor
        .wait_next(Duration::MAX)
        .unwrap()
        .expect("the append");
    assert_eq!(got.event_id, writer.join().unwrap().event_id);
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        drop(store);
    });
    let t = Instant::now();
    assert!(cursor.wait_next(Duration::MAX).unwrap().is_none());
    assert!(t.elapsed() < PATIENCE / 2, "the close ends the wait");
    closer.join().unwrap();
}

pub fn lossy_subscribers_drop_alone_and_hear_batches_whole<H: Harness>(h: &H) {
    let store = h.open(&Settings {
        broadcast_capacity: Some(2),
        ..Settings::default()
    });
    let before = store.append(&coord("e", "s"), KIND_A, &"before").unwrap();
    let tiny = store.subscribe_lossy(&Region::entity("e")).unwrap();
    let other_scope = store.subscribe_lossy(&Region::scope("elsewhere")).unwrap();
    let written: Vec<u64> = (0..10)
        .map(|i| store.append(&coord("e", "s"), KIND_A, &i).unwrap().sequence)
        .collect();
    // The writers never waited; the slow subscriber lost what its buffer
    // could not hold, and only it.
    eventually("the drops to be counted", || tiny.dropped() == 8);
    let got: Vec<u64> = std::iter::from_fn(|| tiny.receiver().try_recv().ok())
        .map(|n| n.sequence)
        .collect();
    assert_eq!(got, written[..2].to_vec(), "the buffer kept the first two");
    assert!(
        !got.contains(&before.sequence),
        "committed before subscribing"
    );
    assert_eq!(other_scope.dropped(), 0, "drops are per subscriber");
    assert!(other_scope.receiver().try_recv().is_err());
    // A subscriber that keeps up hears a batch whole, in order.
    let items = (0..2)
        .map(|i| {
            BatchAppendItem::new(
                coord("b", "elsewhere"),
                KIND_B,
                &i,
                AppendOptions::new(),
                CausationRef::None,
            )
            .unwrap()
        })
        .collect();
    let receipts = store.append_batch(items).unwrap();
    let heard: Vec<(u128, EventKind, String)> = (0..2)
        .map(|_| {
            let n = other_scope
                .recv_timeout(PATIENCE)
                .expect("the batch is announced");
            (n.event_id, n.kind, n.coord.entity().to_owned())
        })
        .collect();
    assert_eq!(
        heard,
        receipts
            .iter()
            .map(|r| (r.event_id, KIND_B, "b".to_owned()))
            .collect::<Vec<_>>()
    );
    let mut ops = other_scope
        .ops()
        .filter(|n| n.coord.entity() == "f")
        .take(1);
    store.append(&coord("g", "elsewhere"), KIND_A, &1).unwrap();
    store.append(&coord("f", "elsewhere"), KIND_A, &2).unwrap();
    assert_eq!(ops.recv().unwrap().coord.entity(), "f");
    assert!(ops.recv().is_none(), "take(1)");
    store.close().unwrap();
    // The subscription ended with the store.
    let deadline = Instant::now() + PATIENCE;
    while tiny.recv_timeout(Duration::from_millis(50)).is_some() {
        assert!(Instant::now() < deadline);
    }
    assert!(tiny.recv().is_none());
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

/// Wait until `entity` holds `n` events, then check it holds no more.
fn wait_for_events<S: EventStore>(store: &S, entity: &str, n: usize) -> Vec<IndexEntry> {
    eventually("the reactions", || store.stream(entity).unwrap().len() >= n);
    let got = store.stream(entity).unwrap();
    assert_eq!(got.len(), n, "no more reactions than triggers call for");
    got
}

pub fn reactors_answer_every_trigger_once_and_resume_after_a_restart<H: Harness>(h: &H) {
    let triggers = 60u64;
    let expected = (triggers + triggers / 10) as usize;
    {
        let store = Arc::new(open(h));
        let handle = store
            .react_loop(&Region::entity("order:"), Auditor)
            .unwrap();
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for n in (t..triggers).step_by(2) {
                        store
                            .append(
                                &coord(&format!("order:{n}"), "s"),
                                KIND_A,
                                &json!({ "n": n }),
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let r = wait_for_events(&*store, "audit", expected);
        for e in &r {
            let trigger = store.get(e.causation_id.unwrap()).unwrap();
            assert!(trigger.coordinate.entity().starts_with("order:"));
            assert_eq!(e.correlation_id, trigger.event.header.correlation_id);
            let trigger_id = trigger.event.header.event_id;
            assert!(
                (0..2).any(|i| batpak::store::codec::reaction_key(trigger_id, i) == e.event_id),
                "keyed by its trigger"
            );
        }
        let causes: HashSet<u128> = r.iter().map(|e| e.causation_id.unwrap()).collect();
        assert_eq!(causes.len(), triggers as usize, "every trigger answered");
        // Answered in trigger order.
        let order: Vec<u64> = r
            .iter()
            .map(|e| store.get(e.causation_id.unwrap()).unwrap())
            .map(|t| t.event.payload["n"].as_u64().unwrap())
            .collect();
        let by_position: Vec<u64> = store
            .query(&Region::entity("order:"))
            .unwrap()
            .iter()
            .flat_map(|e| {
                let n = store.get(e.event_id).unwrap().event.payload["n"]
                    .as_u64()
                    .unwrap();
                std::iter::repeat_n(n, if n.is_multiple_of(10) { 2 } else { 1 })
            })
            .collect();
        assert_eq!(order, by_position);
        let store = unwrap_store(store);
        store.close().unwrap();
        join_within(handle, "the reactor after the close");
    }
    // A restart neither duplicates nor skips.
    let store = Arc::new(open(h));
    let handle = store
        .react_loop(&Region::entity("order:"), Auditor)
        .unwrap();
    store
        .append(&coord("order:new", "s"), KIND_A, &json!({ "n": 1000 }))
        .unwrap();
    wait_for_events(&*store, "audit", expected + 2);
    drop(store);
    join_within(handle, "the reactor after the store was dropped");
}

/// Answers every trigger, except that trigger `bad` gets an output the store
/// refuses (a reserved kind) when `refuse` is set.
struct Picky {
    bad: u64,
    refuse: bool,
}

impl Reactive<serde_json::Value> for Picky {
    fn react(
        &self,
        event: &Event<serde_json::Value>,
    ) -> Vec<(Coordinate, EventKind, serde_json::Value)> {
        let n = event.payload["n"].as_u64().unwrap_or(0);
        let kind = if self.refuse && n == self.bad {
            EventKind::TOMBSTONE
        } else {
            KIND_B
        };
        vec![(coord("audit", "s"), kind, json!({ "of": n }))]
    }
}

fn answered<S: EventStore>(store: &S) -> Vec<u64> {
    store
        .stream("audit")
        .unwrap()
        .iter()
        .map(|e| {
            store.get(e.event_id).unwrap().event.payload["of"]
                .as_u64()
                .unwrap()
        })
        .collect()
}

pub fn a_reactor_never_skips_a_trigger_it_cannot_answer<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    for n in 0..10u64 {
        store
            .append(
                &coord(&format!("order:{n}"), "s"),
                KIND_A,
                &json!({ "n": n }),
            )
            .unwrap();
    }
    // Trigger 4's output is refused: the reactor stops there (its thread
    // ends on its own) instead of answering 5.. without it.
    let handle = store
        .react_loop(
            &Region::entity("order:"),
            Picky {
                bad: 4,
                refuse: true,
            },
        )
        .unwrap();
    join_within(handle, "the reactor that cannot answer");
    assert_eq!(answered(&*store), vec![0, 1, 2, 3]);
    // Fixed and restarted, it resumes at trigger 4: nothing skipped, nothing twice.
    let handle = store
        .react_loop(
            &Region::entity("order:"),
            Picky {
                bad: 4,
                refuse: false,
            },
        )
        .unwrap();
    wait_for_events(&*store, "audit", 10);
    assert_eq!(answered(&*store), (0..10).collect::<Vec<_>>());
    let store = unwrap_store(store);
    store.close().unwrap();
    join_within(handle, "the reactor");
}

const ADDED: EventKind = EventKind::custom(3, 1);
const NOTE: EventKind = EventKind::custom(3, 2);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sum {
    sum: i64,
}

impl EventSourced<serde_json::Value> for Sum {
    fn from_events(events: &[Event<serde_json::Value>]) -> Option<Self> {
        let mut s = Sum { sum: 0 };
        for e in events {
            s.apply_event(e);
        }
        (!events.is_empty()).then_some(s)
    }
    fn apply_event(&mut self, event: &Event<serde_json::Value>) {
        self.sum += event.payload["n"].as_i64().unwrap_or(0);
    }
    fn relevant_event_kinds() -> &'static [EventKind] {
        &[ADDED]
    }
}

pub fn watchers_emit_each_change_and_end_with_the_store<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    let mut watcher = store
        .watch_projection::<Sum>("acct:1", Freshness::Consistent)
        .unwrap();
    let c = coord("acct:1", "s");
    store.append(&c, ADDED, &json!({ "n": 5 })).unwrap();
    assert_eq!(watcher.recv().unwrap(), Some(Sum { sum: 5 }));
    // Irrelevant kinds and other entities (even one the prefix matches) do
    // not count as changes; the next value is the next relevant change.
    store.append(&c, NOTE, &json!({ "n": 100 })).unwrap();
    store
        .append(&coord("acct:10", "s"), ADDED, &json!({ "n": 100 }))
        .unwrap();
    store.append(&c, ADDED, &json!({ "n": 2 })).unwrap();
    assert_eq!(watcher.recv().unwrap(), Some(Sum { sum: 7 }));
    // Changes that pile up are merged: the watcher converges on the latest.
    for _ in 0..20 {
        store.append(&c, ADDED, &json!({ "n": 1 })).unwrap();
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = watcher.recv().unwrap().unwrap();
        if v.sum == 27 {
            break;
        }
        assert!(v.sum < 27 && Instant::now() < deadline, "{v:?}");
    }
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        drop(store);
    });
    assert_eq!(watcher.recv().unwrap(), None, "ends with the store");
    closer.join().unwrap();
}
