//! Reads never stall the writer, and never read the wrong frame: readers
//! read frames only after releasing the index lock (an append needs its
//! write side), from segments they pinned while holding it, so a compaction
//! that replaces segment files in between changes nothing they return; and
//! a read that a compaction interrupts between two of its steps starts
//! again, so its result is one consistent view.
//!
//! The tests hold a reader at the moment it reads frames with a fault
//! injector that blocks (`InjectionPoint::ReadingFrames`), then append or
//! compact while it waits.

mod common;

use batpak::prelude::*;
use batpak::store::{FaultAction, FaultInjector, InjectionPoint};
use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// Blocks readers that reach `ReadingFrames`: the next `n` passes after
/// [`Hold::arm`], each until its own [`Hold::release`].
#[derive(Default)]
struct Hold {
    armed: AtomicUsize,
    /// (readers held so far, releases so far)
    state: Mutex<(usize, usize)>,
    changed: Condvar,
}

impl FaultInjector for Hold {
    fn on(&self, point: InjectionPoint) -> FaultAction {
        let take = |n: usize| n.checked_sub(1);
        if point == InjectionPoint::ReadingFrames
            && self
                .armed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
                .is_ok()
        {
            let mut s = self.state.lock().unwrap();
            s.0 += 1;
            let me = s.0;
            self.changed.notify_all();
            let deadline = Instant::now() + LIMIT;
            // Bounded, so a test that fails never leaves a thread behind for good.
            while s.1 < me && Instant::now() < deadline {
                s = self.changed.wait_timeout(s, LIMIT).unwrap().0;
            }
        }
        FaultAction::Continue
    }
}

impl Hold {
    fn arm(&self, passes: usize) {
        self.armed.store(passes, Ordering::SeqCst);
    }

    /// Wait until `n` readers in all have been held.
    fn wait_held(&self, n: usize) {
        let deadline = Instant::now() + LIMIT;
        let mut s = self.state.lock().unwrap();
        while s.0 < n {
            assert!(Instant::now() < deadline, "no reader reached ReadingFrames");
            s = self.changed.wait_timeout(s, LIMIT).unwrap().0;
        }
    }

    /// Let the oldest held reader go.
    fn release(&self) {
        self.state.lock().unwrap().1 += 1;
        self.changed.notify_all();
    }
}

fn open_held(dir: &std::path::Path, segment: u64) -> (Arc<Store>, Arc<Hold>) {
    let hold = Arc::new(Hold::default());
    let mut cfg = StoreConfig::new(dir).with_segment_max_bytes(segment);
    cfg.fault_injector = Some(hold.clone());
    (Arc::new(Store::open(cfg).unwrap()), hold)
}

fn payload(i: u64) -> Value {
    json!({ "i": i, "pad": "a payload long enough to move frames when redacted" })
}

/// `n` events over `entities` entities, appended in batches (fast in durable
/// mode); every third event is caused by the one before it, all correlated
/// to the first.
fn fill(store: &Store, n: u64, entities: u64) -> Vec<AppendReceipt> {
    let mut out: Vec<AppendReceipt> = Vec::new();
    let mut i = 0;
    while i < n {
        let mut batch = Vec::new();
        for j in i..(i + 100).min(n) {
            let mut opts = AppendOptions::new();
            if let Some(first) = out.first() {
                opts = opts.with_correlation(first.event_id);
                if j % 3 == 0 {
                    if let Some(prev) = out.last() {
                        opts = opts.with_causation(prev.event_id);
                    }
                }
            }
            batch.push(
                BatchAppendItem::new(
                    coord(&format!("acct:{}", j % entities), "bank"),
                    KIND_A,
                    &payload(j),
                    opts,
                    CausationRef::None,
                )
                .unwrap(),
            );
        }
        let receipts = store.append_batch(batch).unwrap();
        i += receipts.len() as u64;
        out.extend(receipts);
    }
    out
}

fn redact_even() -> CompactionConfig {
    CompactionConfig {
        strategy: CompactionStrategy::Tombstone(Box::new(|e: &StoredEvent<Value>| {
            e.event.payload["i"].as_u64().is_none_or(|i| i % 2 == 1)
        })),
        min_segments: 1,
    }
}

/// Every entry's hash chain is the one `get` reads from the event's frame now.
fn assert_chains_match_get(store: &Store, entries: &[IndexEntry]) {
    for e in entries {
        let ev = store.get(e.event_id).expect("listed event reads");
        let chain = ev.event.hash_chain.expect("stored events carry a chain");
        assert_ne!(chain.event_hash, [0; 32]);
        assert_eq!(e.hash_chain, chain, "chain of {:?}", e.disk_pos);
    }
}

/// Every way of reading entries fills in each entry's own hash chain, read
/// from its frame, across read steps (1,024 slots) and segment boundaries
/// that fall anywhere inside a step, and across cursor windows split over
/// several `poll_batch` calls.
#[test]
fn every_read_carries_each_entrys_own_hash_chain() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments: a step of 1,024 entries spans several of them.
    let store = open_with(dir.path(), |c| c.with_segment_max_bytes(64 * 1024));
    let receipts = fill(&store, 3500, 7);
    assert!(store.diagnostics().segment_count > 10);
    let all = store.query(&Region::all());
    assert_eq!(all.len(), 3500);
    // Each step writes its entries in place after the ones before it: each
    // entry is the event appended at that position, with its own fields.
    for (e, r) in all.iter().zip(&receipts) {
        assert_eq!((e.event_id, e.global_sequence), (r.event_id, r.sequence));
        assert_eq!(e.disk_pos, r.disk_pos);
    }
    assert_chains_match_get(&store, &all);
    let stream = store.stream("acct:3");
    assert_eq!(stream.len(), 500);
    assert_chains_match_get(&store, &stream);
    assert_chains_match_get(&store, &store.by_scope("bank"));
    assert_chains_match_get(&store, &store.by_correlation(receipts[0].event_id));
    assert_chains_match_get(&store, &store.children(receipts[2].event_id));
    let mut cursor = store.cursor_guaranteed(&Region::entity("acct:"));
    let mut polled = Vec::new();
    loop {
        let batch = cursor.poll_batch(777);
        if batch.is_empty() {
            break;
        }
        polled.extend(batch);
        if let Some(e) = cursor.poll() {
            polled.push(e);
        }
    }
    assert_eq!(polled.len(), 3500);
    assert_eq!(cursor.position(), polled.last().map(|e| e.global_sequence));
    assert!(polled
        .windows(2)
        .all(|w| w[0].global_sequence < w[1].global_sequence));
    assert_chains_match_get(&store, &polled);
}

#[test]
fn a_reader_reading_frames_does_not_hold_up_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hold) = open_held(dir.path(), 64 * 1024);
    let receipts = fill(&store, 3000, 10);
    let first = receipts[0].event_id;
    // Events 300, 303, ... 399 are caused by event 299 (see `fill`).
    let cause = receipts[299].event_id;
    let last = receipts[receipts.len() - 1].event_id;
    type Read = Box<dyn Fn(&Store) -> usize + Send>;
    let reads: Vec<(&str, Read)> = vec![
        ("query", Box::new(|s| s.query(&Region::all()).len())),
        ("stream", Box::new(|s| s.stream("acct:3").len())),
        (
            "by_correlation",
            Box::new(move |s| s.by_correlation(first).len()),
        ),
        ("children", Box::new(move |s| s.children(cause).len())),
        ("get", Box::new(move |s| usize::from(s.get(last).is_ok()))),
        (
            "walk_ancestors",
            Box::new(move |s| s.walk_ancestors(last, 10).len()),
        ),
        (
            "cursor",
            Box::new(|s| {
                s.cursor_guaranteed(&Region::entity("acct:"))
                    .poll_batch(5000)
                    .len()
            }),
        ),
    ];
    for (held, (name, read)) in reads.into_iter().enumerate() {
        let expected = read(&store);
        assert!(expected > 0, "{name}");
        hold.arm(1);
        let reader = {
            let store = store.clone();
            std::thread::spawn(move || read(&store))
        };
        hold.wait_held(held + 1);
        // The reader is now between the index lock and its frames. A durable
        // append (index write lock, then group commit) must not wait for it.
        let appender = {
            let store = store.clone();
            std::thread::spawn(move || {
                store
                    .append(&coord("other", "bank"), KIND_B, &json!({"n": 1}))
                    .unwrap()
            })
        };
        join_within(appender, LIMIT, &format!("append beside a held {name}"));
        hold.release();
        let got = join_within(reader, LIMIT, name);
        // The append went to another entity and after the reader's view.
        assert_eq!(got, expected, "{name}");
    }
}

#[test]
fn frames_pinned_before_a_compaction_are_the_frames_read() {
    let dir = tempfile::tempdir().unwrap();
    let (store, hold) = open_held(dir.path(), 8 * 1024);
    // Fewer events than one read step: the read pins every frame at once.
    fill(&store, 600, 6);
    hold.arm(1);
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || store.query(&Region::all()))
    };
    hold.wait_held(1);
    // Redacting every other event rewrites the sealed segments (packed into
    // fewer files, which take over their inputs' ids) with the frames at new
    // positions; the held reader's positions now name other bytes of those
    // files, or files that are gone.
    let compacted = store.compact(&redact_even()).unwrap();
    assert!(compacted.events_tombstoned > 0);
    hold.release();
    let before = join_within(reader, LIMIT, "held query");
    let after = store.query(&Region::all());
    assert_eq!(before.len(), after.len());
    let moved = before.iter().zip(&after).filter(|(b, a)| {
        assert_eq!(b.event_id, a.event_id);
        b.disk_pos.offset != a.disk_pos.offset
    });
    assert!(
        moved.count() > 100,
        "the compaction must move frames under the held reader"
    );
    let reused = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| {
            b.disk_pos.segment_id == a.disk_pos.segment_id && b.disk_pos.offset != a.disk_pos.offset
        })
        .count();
    assert!(
        reused > 0,
        "some frames must move within a segment id the compaction reused"
    );
    // The held read is the view from before the compaction, chains and all.
    assert!(before.iter().all(|e| e.kind == KIND_A));
    assert!(after.iter().any(|e| e.kind == EventKind::TOMBSTONE));
    assert_chains_match_get(&store, &before);
    assert_chains_match_get(&store, &after);
}

/// Redact the events whose payload `i` is a multiple of `every`.
fn redact_multiples(every: u64) -> CompactionConfig {
    CompactionConfig {
        strategy: CompactionStrategy::Tombstone(Box::new(move |e: &StoredEvent<Value>| {
            e.event.payload["i"].as_u64().is_none_or(|i| i % every != 0)
        })),
        min_segments: 1,
    }
}

#[test]
fn a_read_that_a_compaction_interrupts_starts_again() {
    type Read = fn(&Store) -> Vec<IndexEntry>;
    let reads: [(&str, Read); 2] = [
        ("query", |s| s.query(&Region::all())),
        ("stream", |s| s.stream("acct:0")),
    ];
    // A compaction between the first two steps of one try, or of each of
    // the stepped tries (then the read selects under one hold).
    for interruptions in [1, 2] {
        for (name, read) in reads {
            let what = format!("{name}, {interruptions} interruption(s)");
            let dir = tempfile::tempdir().unwrap();
            let (store, hold) = open_held(dir.path(), 64 * 1024);
            // Several read steps (1,024 slots each), for the query and the stream.
            fill(&store, 5000, 2);
            hold.arm(interruptions);
            let reader = {
                let store = store.clone();
                std::thread::spawn(move || read(&store))
            };
            for n in 1..=interruptions {
                hold.wait_held(n);
                let compacted = store.compact(&redact_multiples(n as u64 + 1)).unwrap();
                assert!(compacted.events_tombstoned > 0, "{what}");
                hold.release();
            }
            let got = join_within(reader, LIMIT, &what);
            // Not the first step's entries from before a compaction and the
            // rest from after: one view, the one after the last.
            let now = read(&store);
            assert!(now.iter().any(|e| e.kind == EventKind::TOMBSTONE));
            assert_eq!(got.len(), now.len(), "{what}");
            if let Some((i, (g, n))) = got.iter().zip(&now).enumerate().find(|(_, (g, n))| g != n) {
                panic!("{what}: entry {i} is from another view: {g:?} vs {n:?}");
            }
            assert_chains_match_get(&store, &got);
        }
    }
}

#[test]
fn reads_racing_many_compactions_stay_consistent() {
    const ROUNDS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_with(dir.path(), |c| {
        c.with_segment_max_bytes(32 * 1024)
    }));
    let receipts = fill(&store, 4000, 4);
    // Nothing is appended from here on: the active segment (never
    // compacted) keeps the same events.
    let start = store.query(&Region::all());
    let active = start.iter().map(|e| e.disk_pos.segment_id).max().unwrap();
    let sealed: std::collections::HashMap<u128, u64> = start
        .iter()
        .filter(|e| e.disk_pos.segment_id != active)
        .map(|e| {
            let i = store.get(e.event_id).unwrap().event.payload["i"]
                .as_u64()
                .unwrap();
            (e.event_id, i % ROUNDS)
        })
        .collect();
    assert!(sealed.len() > 3000);
    let sealed = Arc::new(sealed);
    let done = Arc::new(AtomicBool::new(false));
    // Round r redacts the sealed events of class r (payload i % ROUNDS == r).
    let compactor = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            for round in 0..ROUNDS {
                let config = CompactionConfig {
                    strategy: CompactionStrategy::Tombstone(Box::new(
                        move |e: &StoredEvent<Value>| {
                            e.event.payload["i"]
                                .as_u64()
                                .is_none_or(|i| i % ROUNDS != round)
                        },
                    )),
                    min_segments: 1,
                };
                store.compact(&config).unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (store, done, sealed) = (store.clone(), done.clone(), sealed.clone());
            let entity = receipts[r].event_id;
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) || reads == 0 {
                    let entries = if r == 0 {
                        store.query(&Region::all())
                    } else {
                        let e = store.get(entity).unwrap().coordinate;
                        store.stream(e.entity())
                    };
                    check_view(&store, &sealed, ROUNDS, &entries);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    join_within(compactor, Duration::from_secs(120), "compactions");
    for r in readers {
        assert!(join_within(r, Duration::from_secs(120), "reader") > 0);
    }
    let end = store.query(&Region::all());
    check_view(&store, &sealed, ROUNDS, &end);
    assert!(end
        .iter()
        .filter(|e| sealed.contains_key(&e.event_id))
        .all(|e| e.kind == EventKind::TOMBSTONE));
}

/// One consistent view of `rounds` redaction rounds: the classes redacted
/// are those of the rounds done so far, each wholly; and every chain is
/// the one in the event's frame.
fn check_view(
    store: &Store,
    sealed: &std::collections::HashMap<u128, u64>,
    rounds: u64,
    entries: &[IndexEntry],
) {
    let mut redacted = vec![0usize; rounds as usize];
    let mut total = vec![0usize; rounds as usize];
    for e in entries {
        if let Some(&class) = sealed.get(&e.event_id) {
            total[class as usize] += 1;
            redacted[class as usize] += usize::from(e.kind == EventKind::TOMBSTONE);
        }
    }
    let rounds_done = redacted.iter().rposition(|&r| r > 0).map_or(0, |c| c + 1);
    for c in 0..rounds as usize {
        let want = if c < rounds_done { total[c] } else { 0 };
        assert_eq!(
            redacted[c], want,
            "class {c} half redacted: {redacted:?} of {total:?}"
        );
    }
    assert_chains_match_get(store, entries);
}
