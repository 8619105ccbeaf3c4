//! The checks. Each takes a fresh place of a [`Harness`] and panics when
//! the backend breaks the contract. They were the file store's behavioural
//! tests (store_basics, cas_idempotency, batches, gates), rewritten against
//! [`EventStore`] so that they cannot use anything only one backend has.

use crate::{Harness, Settings};
use batpak::guard::FnGate;
use batpak::pipeline::BypassReason;
use batpak::prelude::*;
use batpak::store::codec;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

const KIND_A: EventKind = EventKind::custom(1, 1);
const KIND_B: EventKind = EventKind::custom(2, 7);

fn coord(entity: &str, scope: &str) -> Coordinate {
    Coordinate::new(entity, scope).expect("valid coordinate")
}

fn open<H: Harness>(h: &H) -> H::Store {
    h.open(&Settings::default())
}

fn item(entity: &str, payload: serde_json::Value) -> BatchAppendItem {
    BatchAppendItem::new(
        coord(entity, "s"),
        KIND_A,
        &payload,
        AppendOptions::new(),
        CausationRef::None,
    )
    .expect("item")
}

fn payloads<S: EventStore>(store: &S, entries: &[IndexEntry]) -> Vec<serde_json::Value> {
    entries
        .iter()
        .map(|e| {
            store
                .get(e.event_id)
                .expect("listed event reads")
                .event
                .payload
        })
        .collect()
}

fn strictly_increasing(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}

/// Sequences of consecutive appends: strictly increasing everywhere, and
/// consecutive where the backend numbers densely.
fn assert_sequences<H: Harness>(seqs: &[u64], first: Option<u64>) {
    assert!(strictly_increasing(seqs), "{}: {seqs:?}", H::NAME);
    if H::DENSE_SEQUENCES {
        let start = first.unwrap_or(seqs[0]);
        let dense: Vec<u64> = (start..start + seqs.len() as u64).collect();
        assert_eq!(seqs, dense.as_slice(), "dense sequences");
    }
}

fn stream_clocks<S: EventStore>(store: &S, entity: &str) -> Vec<u32> {
    store
        .stream(entity)
        .expect("stream")
        .iter()
        .map(|e| e.clock)
        .collect()
}

fn assert_chain(entries: &[IndexEntry]) {
    assert!(entries.iter().enumerate().all(|(i, e)| e.clock == i as u32));
    if let Some(first) = entries.first() {
        assert_eq!(first.hash_chain.prev_hash, [0; 32]);
    }
    assert!(entries
        .windows(2)
        .all(|w| w[1].hash_chain.prev_hash == w[0].hash_chain.event_hash));
}

pub fn append_get_round_trip_and_header_fields<H: Harness>(h: &H) {
    let store = open(h);
    let c = coord("order:1", "tenant:a");
    let payload = json!({"qty": 2, "sku": "tea"});
    let r = store.append(&c, KIND_A, &payload).unwrap();
    if H::DENSE_SEQUENCES {
        assert_eq!(r.sequence, 0);
    }
    let ev = store.get(r.event_id).unwrap();
    assert_eq!(ev.coordinate, c);
    assert_eq!(ev.event.payload, payload);
    let h = &ev.event.header;
    assert_eq!(h.event_id, r.event_id);
    assert_eq!(h.correlation_id, r.event_id, "a root correlates to itself");
    assert_eq!(h.causation_id, None);
    assert_eq!(h.event_kind, KIND_A);
    assert_eq!(h.position.sequence, 0);
    assert_eq!((h.event_id >> 76) & 0xF, 7, "UUIDv7");
    let bytes = codec::encode_payload(&payload).unwrap();
    assert_eq!(h.content_hash, batpak::event::compute_hash(&bytes));
    assert_eq!(h.payload_size as usize, bytes.len());
    assert_ne!(h.timestamp_us, 0);
    assert!(ev.event.is_genesis());
    let stats = store.stats().unwrap();
    assert_eq!(stats.event_count, 1);
    assert_eq!(stats.global_sequence, r.sequence + 1, "one past the newest");
    let entry = &store.stream("order:1").unwrap()[0];
    assert_eq!(entry.global_sequence, r.sequence);
    assert_eq!(entry.disk_pos, r.disk_pos);
    assert_eq!(entry.wall_ms, h.position.wall_ms);
}

pub fn clocks_sequences_and_chain_per_entity<H: Harness>(h: &H) {
    let store = open(h);
    let a = coord("a", "s1");
    let a_other_scope = coord("a", "s2");
    let b = coord("b", "s1");
    let r0 = store.append(&a, KIND_A, &1).unwrap();
    let r1 = store.append(&b, KIND_A, &2).unwrap();
    let r2 = store.append(&a_other_scope, KIND_A, &3).unwrap();
    assert_sequences::<H>(&[r0.sequence, r1.sequence, r2.sequence], Some(0));
    let stream = store.stream("a").unwrap();
    assert_eq!(stream.len(), 2, "scope does not split an entity");
    assert_eq!(stream_clocks(&store, "a"), vec![0, 1]);
    assert_chain(&stream);
    assert_eq!(store.stream("b").unwrap()[0].clock, 0);
    let ev = store.get(r2.event_id).unwrap();
    assert_eq!(
        ev.event.hash_chain.unwrap().prev_hash,
        stream[0].hash_chain.event_hash
    );
}

pub fn identical_payloads_get_distinct_hashes<H: Harness>(h: &H) {
    let store = open(h);
    let c = coord("e", "s");
    let ids: Vec<u128> = (0..3)
        .map(|_| store.append(&c, KIND_A, &"same").unwrap().event_id)
        .collect();
    let s = store.stream("e").unwrap();
    assert_ne!(s[0].hash_chain.event_hash, s[1].hash_chain.event_hash);
    assert_ne!(s[1].hash_chain.event_hash, s[2].hash_chain.event_hash);
    let walk = store.walk_ancestors(ids[2], 10).unwrap();
    let walked: Vec<u128> = walk.iter().map(|e| e.event.header.event_id).collect();
    assert_eq!(walked, vec![ids[2], ids[1], ids[0]]);
    assert_eq!(store.walk_ancestors(ids[2], 2).unwrap().len(), 2);
    assert!(store.walk_ancestors(ids[2], 0).unwrap().is_empty());
    assert!(store.walk_ancestors(12345, 10).unwrap().is_empty());
}

pub fn queries_follow_region_rules<H: Harness>(h: &H) {
    let store = open(h);
    let k_cat3 = EventKind::custom(3, 1);
    store.append(&coord("order:1", "t1"), KIND_A, &0).unwrap();
    store.append(&coord("order:10", "t2"), KIND_B, &1).unwrap();
    store.append(&coord("order:1", "t2"), k_cat3, &2).unwrap();
    store.append(&coord("user:1", "t1"), KIND_A, &3).unwrap();
    store.append(&coord("order:1", "t1"), KIND_A, &4).unwrap();
    // An entity whose name continues past the prefix's last character.
    store.append(&coord("order;", "t1"), KIND_A, &5).unwrap();
    store.append(&coord("ordes", "t1"), KIND_A, &6).unwrap();
    store.append(&coord("ördér:1", "t1"), KIND_A, &7).unwrap();

    let payload_of = |entries: Vec<IndexEntry>| -> Vec<i64> {
        payloads(&store, &entries)
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        payload_of(store.query(&Region::all()).unwrap()),
        vec![0, 1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        payload_of(store.query(&Region::entity("order:1")).unwrap()),
        vec![0, 1, 2, 4],
        "prefix match"
    );
    assert_eq!(
        payload_of(store.query(&Region::entity("order")).unwrap()),
        vec![0, 1, 2, 4, 5]
    );
    assert_eq!(
        payload_of(store.query(&Region::entity("ö")).unwrap()),
        vec![7]
    );
    assert_eq!(
        payload_of(store.stream("order:1").unwrap()),
        vec![0, 2, 4],
        "exact match"
    );
    assert_eq!(
        payload_of(store.by_scope("t1").unwrap()),
        vec![0, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        payload_of(store.by_scope("t").unwrap()),
        Vec::<i64>::new(),
        "scope is exact"
    );
    assert_eq!(
        payload_of(store.by_fact(KIND_A).unwrap()),
        vec![0, 3, 4, 5, 6, 7]
    );
    assert_eq!(
        payload_of(store.query(&Region::all().with_fact_category(3)).unwrap()),
        vec![2]
    );
    assert_eq!(
        payload_of(
            store
                .query(&Region::all().with_fact(KindFilter::Any))
                .unwrap()
        )
        .len(),
        8
    );
    assert_eq!(
        payload_of(
            store
                .query(&Region::entity("order:").with_scope("t2"))
                .unwrap()
        ),
        vec![1, 2]
    );
    assert_eq!(
        payload_of(
            store
                .query(&Region::entity("order:1").with_clock_range((1, 2)))
                .unwrap()
        ),
        vec![2, 4]
    );
    assert_eq!(
        payload_of(
            store
                .query(
                    &Region::scope("t1")
                        .with_fact(KindFilter::Exact(KIND_A))
                        .with_clock_range((0, 0))
                )
                .unwrap()
        ),
        vec![0, 3, 5, 6, 7]
    );
    assert!(store.query(&Region::entity("nobody")).unwrap().is_empty());
    assert!(store.stream("order").unwrap().is_empty());
    let all = store.query(&Region::all()).unwrap();
    assert!(strictly_increasing(
        &all.iter().map(|e| e.global_sequence).collect::<Vec<_>>()
    ));
}

pub fn reactions_build_the_causal_graph<H: Harness>(h: &H) {
    let store = open(h);
    let c = coord("order:1", "t");
    let root = store.append(&c, KIND_A, &"placed").unwrap();
    let paid = store
        .append_reaction(
            &coord("payment:1", "t"),
            KIND_B,
            &"paid",
            root.event_id,
            root.event_id,
        )
        .unwrap();
    let shipped = store
        .append_reaction(
            &coord("ship:1", "t"),
            KIND_B,
            &"shipped",
            root.event_id,
            paid.event_id,
        )
        .unwrap();
    let unrelated = store.append(&c, KIND_A, &"other").unwrap();

    let ids = |v: Vec<IndexEntry>| v.iter().map(|e| e.event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.by_correlation(root.event_id).unwrap()),
        vec![root.event_id, paid.event_id, shipped.event_id]
    );
    assert_eq!(
        ids(store.children(root.event_id).unwrap()),
        vec![paid.event_id]
    );
    assert_eq!(
        ids(store.children(paid.event_id).unwrap()),
        vec![shipped.event_id]
    );
    assert!(store.children(unrelated.event_id).unwrap().is_empty());
    assert_eq!(
        ids(store.by_correlation(unrelated.event_id).unwrap()),
        vec![unrelated.event_id]
    );
    let e = store.get(shipped.event_id).unwrap().event.header;
    assert_eq!(
        (e.correlation_id, e.causation_id),
        (root.event_id, Some(paid.event_id))
    );
    let entry = &store.stream("ship:1").unwrap()[0];
    assert!(entry.is_correlated() && entry.is_caused_by(paid.event_id) && !entry.is_root_cause());
    // External ids (not events of this store) work as links too.
    let ext = store.append_reaction(&c, KIND_A, &1, 0xABCD, 0xEF).unwrap();
    assert_eq!(
        ids(store.by_correlation(0xABCD).unwrap()),
        vec![ext.event_id]
    );
    assert_eq!(ids(store.children(0xEF).unwrap()), vec![ext.event_id]);
}

pub fn options_set_ids_links_and_flags<H: Harness>(h: &H) {
    let store = open(h);
    let c = coord("e", "s");
    let opts = AppendOptions::new()
        .with_idempotency(42)
        .with_correlation(7)
        .with_causation(8)
        .with_flags(batpak::event::FLAG_REQUIRES_ACK | batpak::event::FLAG_REPLAY);
    let r = store.append_with_options(&c, KIND_A, &"x", opts).unwrap();
    assert_eq!(r.event_id, 42, "the idempotency key becomes the event id");
    let h = store.get(42).unwrap().event.header;
    assert_eq!((h.correlation_id, h.causation_id), (7, Some(8)));
    assert!(h.requires_ack() && h.is_replay() && !h.is_transactional());
    // A key at the top of the id space round-trips exactly.
    let top = u128::MAX - 1;
    store
        .append_with_options(&c, KIND_A, &"y", AppendOptions::new().with_idempotency(top))
        .unwrap();
    assert_eq!(store.get(top).unwrap().event.header.event_id, top);
}

pub fn payload_contract_is_serde_json_value<H: Harness>(h: &H) {
    #[derive(Serialize)]
    struct Odd {
        bytes: Bytes,
        map: BTreeMap<u32, &'static str>,
        f: f32,
        unit: (),
        e: Enum,
        big: u64,
        neg: i64,
    }
    #[derive(Serialize)]
    enum Enum {
        Tuple(u8, u8),
    }
    struct Bytes(Vec<u8>);
    impl Serialize for Bytes {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
    let p = Odd {
        bytes: Bytes(vec![1, 2, 255]),
        map: BTreeMap::from([(3, "x")]),
        f: 0.1,
        unit: (),
        e: Enum::Tuple(1, 2),
        big: u64::MAX,
        neg: i64::MIN,
    };
    let store = open(h);
    let r = store.append(&coord("e", "s"), KIND_A, &p).unwrap();
    let expected = serde_json::to_value(&p).unwrap();
    assert_eq!(store.get(r.event_id).unwrap().event.payload, expected);
    drop(store);
    let store = open(h);
    let back = store.get(r.event_id).unwrap().event.payload;
    assert_eq!(back, expected);
    assert_eq!(
        back["f"].as_f64().unwrap().to_bits(),
        f64::from(0.1f32).to_bits()
    );
    assert_eq!(back["map"]["3"], "x", "integer keys become strings");
    assert_eq!(back["big"].as_u64(), Some(u64::MAX));
    assert_eq!(back["neg"].as_i64(), Some(i64::MIN));
}

pub fn refused_payloads_and_kinds_write_nothing<H: Harness>(h: &H) {
    let store = h.open(&Settings {
        single_append_max_bytes: Some(1024),
        ..Settings::default()
    });
    let c = coord("e", "s");
    let before = store.stats().unwrap();
    // u128 beyond u64 cannot become a serde_json::Value.
    assert!(matches!(
        store.append(&c, KIND_A, &u128::MAX),
        Err(StoreError::Serialization(_))
    ));
    // A map with non-string keys that serde_json cannot turn into strings.
    let bad: BTreeMap<(u8, u8), u8> = BTreeMap::from([((1, 2), 3)]);
    assert!(matches!(
        store.append(&c, KIND_A, &bad),
        Err(StoreError::Serialization(_))
    ));
    // Too deep for the payload contract.
    let mut deep = json!(1);
    for _ in 0..200 {
        deep = json!([deep]);
    }
    assert!(matches!(
        store.append(&c, KIND_A, &deep),
        Err(StoreError::Serialization(_))
    ));
    assert!(matches!(
        store.append(&c, KIND_A, &"x".repeat(2000)),
        Err(StoreError::Configuration(m)) if m.contains("exceeds max 1024")
    ));
    for kind in [
        EventKind::SYSTEM_INIT,
        EventKind::SYSTEM_BATCH_COMMIT,
        EventKind::TOMBSTONE,
        EventKind::from_raw(0x0123),
    ] {
        assert!(
            matches!(store.append(&c, kind, &1), Err(StoreError::ReservedKind(k)) if k == kind)
        );
    }
    assert_eq!(
        store.stats().unwrap(),
        before,
        "nothing written, no sequence used"
    );
    assert!(store.stream("e").unwrap().is_empty());
    // Effects may be appended.
    store.append(&c, EventKind::EFFECT_ACK, &1).unwrap();
    drop(store);
    let store = open(h);
    assert_eq!(store.query(&Region::all()).unwrap().len(), 1);
}

pub fn unknown_ids_are_not_found<H: Harness>(h: &H) {
    let store = open(h);
    assert!(matches!(store.get(99), Err(StoreError::NotFound(99))));
    store.append(&coord("e", "s"), KIND_A, &1).unwrap();
    assert!(matches!(store.get(99), Err(StoreError::NotFound(99))));
    assert!(store.by_correlation(99).unwrap().is_empty());
    assert!(store.children(99).unwrap().is_empty());
}

pub fn reopen_preserves_everything<H: Harness>(h: &H) {
    let mut receipts = Vec::new();
    {
        let store = open(h);
        for i in 0..50u32 {
            let c = coord(&format!("e{}", i % 5), &format!("s{}", i % 3));
            receipts.push(
                store
                    .append(
                        &c,
                        if i % 2 == 0 { KIND_A } else { KIND_B },
                        &json!({ "i": i }),
                    )
                    .unwrap(),
            );
        }
        store.close().unwrap();
    }
    let before: Vec<IndexEntry>;
    let after_reopen;
    {
        let store = open(h);
        before = store.query(&Region::all()).unwrap();
        assert_eq!(before.len(), 50);
        for (i, r) in receipts.iter().enumerate() {
            let ev = store.get(r.event_id).unwrap();
            assert_eq!(ev.event.payload["i"], i as u64);
            assert_eq!(before[i].disk_pos, r.disk_pos);
            assert_eq!(before[i].global_sequence, r.sequence);
        }
        let r = store.append(&coord("e0", "s0"), KIND_A, &"after").unwrap();
        assert!(r.sequence > receipts[49].sequence, "sequences continue");
        if H::DENSE_SEQUENCES {
            assert_eq!(r.sequence, 50);
        }
        assert_eq!(store.stream("e0").unwrap().last().unwrap().clock, 10);
        assert_chain(&store.stream("e0").unwrap());
        after_reopen = r;
        store.close().unwrap();
    }
    let store = open(h);
    let all = store.query(&Region::all()).unwrap();
    assert_eq!(all[..50], before[..]);
    assert_eq!(all[50].event_id, after_reopen.event_id);
}

pub fn clock_never_goes_backwards_per_entity<H: Harness>(h: &H) {
    let now = Arc::new(AtomicI64::new(5_000_000));
    let clock_src = now.clone();
    let store = h.open(&Settings {
        clock: Some(Arc::new(move || clock_src.load(Ordering::SeqCst))),
        ..Settings::default()
    });
    let c = coord("e", "s");
    let a = store.append(&c, KIND_A, &1).unwrap();
    now.store(1_000_000, Ordering::SeqCst); // the clock jumps back
    let b = store.append(&c, KIND_A, &2).unwrap();
    let b2 = store.append(&c, KIND_A, &3).unwrap();
    let ha = store.get(a.event_id).unwrap().event.header;
    let hb = store.get(b.event_id).unwrap().event.header;
    let hb2 = store.get(b2.event_id).unwrap().event.header;
    assert_eq!(ha.timestamp_us, 5_000_000);
    assert!(hb.timestamp_us >= ha.timestamp_us);
    assert!(hb.position.wall_ms >= ha.position.wall_ms);
    assert_eq!(
        hb.position.counter, 1,
        "same millisecond: the HLC counter advances"
    );
    assert_eq!(hb2.position.counter, 2);
    // Another entity is not held back.
    let other = store.append(&coord("f", "s"), KIND_A, &1).unwrap();
    assert_eq!(
        store.get(other.event_id).unwrap().event.header.timestamp_us,
        1_000_000
    );
}

pub fn concurrent_appends_are_ordered<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..50 {
                    let r = s
                        .append(&coord(&format!("e{}", i % 3), "s"), KIND_A, &json!([t, i]))
                        .unwrap();
                    mine.push(r.sequence);
                }
                mine
            })
        })
        .collect();
    let mut per_thread = Vec::new();
    for t in threads {
        per_thread.push(t.join().unwrap());
    }
    for seqs in &per_thread {
        assert!(
            strictly_increasing(seqs),
            "one writer's appends are ordered"
        );
    }
    let all = store.query(&Region::all()).unwrap();
    assert_eq!(all.len(), 400);
    let seqs: Vec<u64> = all.iter().map(|e| e.global_sequence).collect();
    assert!(strictly_increasing(&seqs));
    if H::DENSE_SEQUENCES {
        assert_eq!(seqs, (0..400).collect::<Vec<_>>());
    }
    for e in 0..3 {
        let s = store.stream(&format!("e{e}")).unwrap();
        assert_chain(&s);
        assert!(
            strictly_increasing(&s.iter().map(|x| x.global_sequence).collect::<Vec<_>>()),
            "an entity's clock order is its global order"
        );
    }
}

pub fn cas_rules<H: Harness>(h: &H) {
    let store = open(h);
    let c = coord("acct:1", "s");
    // with_cas(0) on an empty stream must fail: two writers can never both "create" it.
    assert!(matches!(
        store.append_with_options(&c, KIND_A, &1, AppendOptions::new().with_cas(0)),
        Err(StoreError::StreamIsEmpty { expected: 0, .. })
    ));
    store
        .append_with_options(&c, KIND_A, &1, AppendOptions::new().with_cas_empty())
        .unwrap();
    assert!(matches!(
        store.append_with_options(&c, KIND_A, &1, AppendOptions::new().with_cas_empty()),
        Err(StoreError::StreamNotEmpty { actual: 0, .. })
    ));
    store
        .append_with_options(&c, KIND_A, &2, AppendOptions::new().with_cas(0))
        .unwrap();
    let before = store.stats().unwrap();
    match store.append_with_options(&c, KIND_A, &3, AppendOptions::new().with_cas(0)) {
        Err(StoreError::SequenceMismatch {
            entity,
            expected,
            actual,
        }) => {
            assert_eq!((entity.as_str(), expected, actual), ("acct:1", 0, 1));
        }
        other => panic!("expected SequenceMismatch, got {other:?}"),
    }
    assert!(matches!(
        store.append_with_options(&c, KIND_A, &3, AppendOptions::new().with_cas(7)),
        Err(StoreError::SequenceMismatch {
            expected: 7,
            actual: 1,
            ..
        })
    ));
    assert_eq!(
        store.stream("acct:1").unwrap().len(),
        2,
        "failed CAS writes nothing"
    );
    assert_eq!(
        store.stats().unwrap(),
        before,
        "failed CAS burns no sequence"
    );
}

pub fn cas_races_have_exactly_one_winner_per_round<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    let c = coord("counter", "s");
    let threads = 6;
    let rounds = 25u32;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, c, barrier) = (store.clone(), c.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut wins = Vec::new();
                for round in 0..rounds {
                    barrier.wait();
                    let opts = if round == 0 {
                        AppendOptions::new().with_cas_empty()
                    } else {
                        AppendOptions::new().with_cas(round - 1)
                    };
                    match store.append_with_options(&c, KIND_A, &(t, round), opts) {
                        Ok(_) => wins.push(round),
                        Err(
                            StoreError::SequenceMismatch { .. } | StoreError::StreamNotEmpty { .. },
                        ) => {}
                        Err(e) => panic!("unexpected error {e}"),
                    }
                    barrier.wait();
                }
                wins
            })
        })
        .collect();
    let mut all_wins: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all_wins.sort_unstable();
    assert_eq!(
        all_wins,
        (0..rounds).collect::<Vec<_>>(),
        "exactly one winner per round"
    );
    let stream = store.stream("counter").unwrap();
    assert_eq!(stream.len(), rounds as usize);
    assert_chain(&stream);
}

pub fn idempotent_retry_returns_the_original_receipt<H: Harness>(h: &H) {
    let store = open(h);
    let c = coord("order:1", "s");
    let key = 0xfeed_u128;
    let first = store
        .append_with_options(
            &c,
            KIND_A,
            &"v1",
            AppendOptions::new().with_idempotency(key).with_cas_empty(),
        )
        .unwrap();
    store.append(&c, KIND_A, &"later").unwrap();
    // The retry's CAS no longer holds, but the key is checked first.
    let retry = store
        .append_with_options(
            &c,
            KIND_A,
            &"v1",
            AppendOptions::new().with_idempotency(key).with_cas_empty(),
        )
        .unwrap();
    assert_eq!(retry, first);
    assert_eq!(
        store.stream("order:1").unwrap().len(),
        2,
        "the retry wrote nothing"
    );
    // Same key, other coordinate or kind: a conflict, nothing written.
    assert!(matches!(
        store.append_with_options(&coord("order:2", "s"), KIND_A, &"v1", AppendOptions::new().with_idempotency(key)),
        Err(StoreError::IdempotencyConflict { key: k }) if k == key
    ));
    assert!(matches!(
        store.append_with_options(
            &coord("order:1", "other"),
            KIND_A,
            &"v1",
            AppendOptions::new().with_idempotency(key)
        ),
        Err(StoreError::IdempotencyConflict { .. })
    ));
    assert!(matches!(
        store.append_with_options(
            &c,
            KIND_B,
            &"v1",
            AppendOptions::new().with_idempotency(key)
        ),
        Err(StoreError::IdempotencyConflict { .. })
    ));
    assert_eq!(store.stats().unwrap().event_count, 2);
}

pub fn idempotency_survives_restart<H: Harness>(h: &H) {
    let c = coord("order:1", "s");
    let first = {
        let store = open(h);
        let r = store
            .append_with_options(&c, KIND_A, &1, AppendOptions::new().with_idempotency(77))
            .unwrap();
        drop(store); // no close: the receipt was durable already
        r
    };
    let store = open(h);
    let retry = store
        .append_with_options(&c, KIND_A, &1, AppendOptions::new().with_idempotency(77))
        .unwrap();
    assert_eq!(retry, first);
    assert_eq!(store.stats().unwrap().event_count, 1);
    assert!(matches!(
        store.append_with_options(
            &coord("x", "s"),
            KIND_A,
            &1,
            AppendOptions::new().with_idempotency(77)
        ),
        Err(StoreError::IdempotencyConflict { .. })
    ));
}

pub fn concurrent_retries_of_one_key_write_once<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                store
                    .append_with_options(
                        &coord("e", "s"),
                        KIND_A,
                        &"once",
                        AppendOptions::new().with_idempotency(5),
                    )
                    .unwrap()
            })
        })
        .collect();
    let receipts: Vec<AppendReceipt> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(receipts.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(store.stats().unwrap().event_count, 1);
}

pub fn a_batch_appends_in_order_with_chains_and_flags<H: Harness>(h: &H) {
    let store = open(h);
    let before = store.append(&coord("a", "s"), KIND_A, &"first").unwrap();
    let mut items: Vec<_> = (0..5)
        .map(|i| item(if i % 2 == 0 { "a" } else { "b" }, json!({ "i": i })))
        .collect();
    items[3].options = AppendOptions::new().with_flags(batpak::event::FLAG_TRANSACTIONAL);
    let rs = store.append_batch(items).unwrap();
    let seqs: Vec<u64> = rs.iter().map(|r| r.sequence).collect();
    assert!(seqs[0] > before.sequence);
    assert_sequences::<H>(&seqs, Some(before.sequence + 1));
    let a = store.stream("a").unwrap();
    assert_eq!(
        a.iter().map(|e| e.clock).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_chain(&a);
    assert_eq!(a[0].event_id, before.event_id);
    let b = store.stream("b").unwrap();
    assert_eq!(b.iter().map(|e| e.clock).collect::<Vec<_>>(), vec![0, 1]);
    for (i, r) in rs.iter().enumerate() {
        let ev = store.get(r.event_id).unwrap();
        assert_eq!(
            ev.event.payload,
            json!({ "i": i }),
            "items are encoded like single appends"
        );
        assert_eq!(ev.event.header.is_transactional(), i == 3, "flags are kept");
        assert_eq!(ev.event.header.correlation_id, r.event_id);
    }
    let listed: Vec<u64> = store
        .query(&Region::all())
        .unwrap()
        .iter()
        .map(|e| e.global_sequence)
        .collect();
    let mut expected = vec![before.sequence];
    expected.extend(&seqs);
    assert_eq!(
        listed, expected,
        "queries list the batch at its receipts' sequences"
    );
    assert!(store.append_batch(Vec::new()).unwrap().is_empty());
}

pub fn causal_links_in_batches<H: Harness>(h: &H) {
    let store = open(h);
    let trigger = store.append(&coord("t", "s"), KIND_A, &"trigger").unwrap();
    let mut items = vec![
        item("x", json!(0)),
        item("x", json!(1)),
        item("y", json!(2)),
    ];
    items[1].causation = CausationRef::PriorItem(0);
    items[2].causation = CausationRef::Absolute(0xabc);
    let rs = store
        .append_reaction_batch(trigger.event_id, trigger.event_id, items)
        .unwrap();
    let h: Vec<_> = rs
        .iter()
        .map(|r| store.get(r.event_id).unwrap().event.header)
        .collect();
    assert!(h.iter().all(|h| h.correlation_id == trigger.event_id));
    assert_eq!(
        h[0].causation_id,
        Some(trigger.event_id),
        "None takes the batch's causation"
    );
    assert_eq!(
        h[1].causation_id,
        Some(rs[0].event_id),
        "PriorItem names the earlier item"
    );
    assert_eq!(h[2].causation_id, Some(0xabc));
    assert_eq!(store.by_correlation(trigger.event_id).unwrap().len(), 4);
    // Plain batches honour per-item options.
    let mut plain = vec![item("z", json!(1))];
    plain[0].options = AppendOptions::new().with_correlation(77).with_causation(78);
    let r = store.append_batch(plain).unwrap();
    let h = store.get(r[0].event_id).unwrap().event.header;
    assert_eq!((h.correlation_id, h.causation_id), (77, Some(78)));
}

fn assert_batch_failed(
    r: Result<Vec<AppendReceipt>, StoreError>,
    index: usize,
    stage: BatchStage,
) -> StoreError {
    match r {
        Err(StoreError::BatchFailed {
            item_index,
            stage: s,
            source,
        }) => {
            assert_eq!((item_index, s), (index, stage), "{source}");
            *source
        }
        other => panic!("expected BatchFailed at {index}, got {other:?}"),
    }
}

pub fn invalid_batches_write_nothing<H: Harness>(h: &H) {
    let store = h.open(&Settings {
        batch_max_size: Some(4),
        batch_max_bytes: Some(200),
        single_append_max_bytes: Some(100),
        ..Settings::default()
    });
    store.append(&coord("a", "s"), KIND_A, &"seed").unwrap();
    let before = store.stats().unwrap();

    let mut forward = vec![item("a", json!(1)), item("a", json!(2))];
    forward[0].causation = CausationRef::PriorItem(1);
    assert!(matches!(
        assert_batch_failed(store.append_batch(forward), 0, BatchStage::Validation),
        StoreError::InvalidBatch(_)
    ));

    let mut self_ref = vec![item("a", json!(1))];
    self_ref[0].causation = CausationRef::PriorItem(0);
    assert_batch_failed(store.append_batch(self_ref), 0, BatchStage::Validation);

    let too_many: Vec<_> = (0..5).map(|i| item("a", json!(i))).collect();
    assert!(matches!(
        assert_batch_failed(store.append_batch(too_many), 0, BatchStage::Validation),
        StoreError::Configuration(m) if m.starts_with("batch size 5")
    ));

    let too_big: Vec<_> = (0..3).map(|_| item("a", json!("x".repeat(90)))).collect();
    assert!(matches!(
        assert_batch_failed(store.append_batch(too_big), 0, BatchStage::Validation),
        StoreError::Configuration(m) if m.starts_with("batch bytes")
    ));

    let one_huge = vec![item("a", json!(1)), item("a", json!("y".repeat(150)))];
    assert!(matches!(
        assert_batch_failed(store.append_batch(one_huge), 1, BatchStage::Validation),
        StoreError::Configuration(m) if m.starts_with("single append bytes")
    ));

    let mut reserved = vec![item("a", json!(1)), item("a", json!(2))];
    reserved[1].kind = EventKind::SYSTEM_CHECKPOINT;
    assert!(matches!(
        assert_batch_failed(store.append_batch(reserved), 1, BatchStage::Validation),
        StoreError::ReservedKind(_)
    ));

    let mut garbage = vec![item("a", json!(1)), item("a", json!(2))];
    garbage[1].payload_bytes = vec![0xc1, 0xff];
    assert!(matches!(
        assert_batch_failed(store.append_batch(garbage), 1, BatchStage::Encoding),
        StoreError::Serialization(_)
    ));

    let mut dup = vec![item("a", json!(1)), item("b", json!(2))];
    dup[0].options = AppendOptions::new().with_idempotency(9);
    dup[1].options = AppendOptions::new().with_idempotency(9);
    assert_batch_failed(store.append_batch(dup), 1, BatchStage::Validation);

    let mut cas = vec![item("a", json!(1)), item("a", json!(2))];
    cas[1].options = AppendOptions::new().with_cas(0);
    assert!(matches!(
        assert_batch_failed(store.append_batch(cas), 1, BatchStage::Validation),
        StoreError::SequenceMismatch {
            expected: 0,
            actual: 1,
            ..
        }
    ));

    assert_eq!(
        store.stats().unwrap(),
        before,
        "nothing was written, no sequence used"
    );
    drop(store);
    let store = open(h);
    assert_eq!(store.query(&Region::all()).unwrap().len(), 1);
}

pub fn per_item_cas_makes_a_multi_stream_conditional_append<H: Harness>(h: &H) {
    let store = open(h);
    store.append(&coord("acct:1", "s"), KIND_A, &100).unwrap();
    store.append(&coord("acct:2", "s"), KIND_A, &0).unwrap();
    let transfer = |from_clock: u32, to_clock: u32| {
        let mut items = vec![
            item("acct:1", json!(-10)),
            item("acct:2", json!(10)),
            item("acct:1", json!("fee")),
        ];
        items[0].options = AppendOptions::new().with_cas(from_clock);
        items[1].options = AppendOptions::new().with_cas(to_clock);
        // Evaluated against the entity as it is just before this item.
        items[2].options = AppendOptions::new().with_cas(from_clock + 1);
        items
    };
    let ok = store.append_batch(transfer(0, 0)).unwrap();
    assert_eq!(ok.len(), 3);
    let stale = store.append_batch(transfer(2, 0));
    assert!(matches!(
        assert_batch_failed(stale, 1, BatchStage::Validation),
        StoreError::SequenceMismatch {
            expected: 0,
            actual: 1,
            ..
        }
    ));
    let mut create = vec![item("new", json!(1)), item("new", json!(2))];
    create[0].options = AppendOptions::new().with_cas_empty();
    create[1].options = AppendOptions::new().with_cas_empty();
    assert!(matches!(
        assert_batch_failed(store.append_batch(create), 1, BatchStage::Validation),
        StoreError::StreamNotEmpty { .. }
    ));
    assert_eq!(
        store.stats().unwrap().event_count,
        5,
        "failed batches wrote nothing"
    );
    assert!(store.stream("new").unwrap().is_empty());
    assert_chain(&store.stream("acct:1").unwrap());
}

pub fn retried_batches_return_their_receipts<H: Harness>(h: &H) {
    let keyed = |keys: &[u128]| -> Vec<BatchAppendItem> {
        keys.iter()
            .map(|&k| {
                let mut it = item("order", json!({ "k": k as u64 }));
                it.options = AppendOptions::new().with_idempotency(k);
                it
            })
            .collect()
    };
    let first = {
        let store = open(h);
        let r = store.append_batch(keyed(&[1, 2, 3])).unwrap();
        assert_eq!(
            store.append_batch(keyed(&[1, 2, 3])).unwrap(),
            r,
            "retry in the same session"
        );
        r
    };
    let store = open(h);
    assert_eq!(
        store.append_batch(keyed(&[1, 2, 3])).unwrap(),
        first,
        "retry after a restart"
    );
    assert_eq!(store.stats().unwrap().event_count, 3);
    let partial = store.append_batch(keyed(&[3, 4]));
    assert!(matches!(
        assert_batch_failed(partial, 1, BatchStage::Validation),
        StoreError::InvalidBatch(_)
    ));
    let mut other_kind = keyed(&[1]);
    other_kind[0].kind = KIND_B;
    assert!(matches!(
        assert_batch_failed(store.append_batch(other_kind), 0, BatchStage::Validation),
        StoreError::IdempotencyConflict { key: 1 }
    ));
    assert_eq!(
        store.stats().unwrap().event_count,
        3,
        "nothing written by the failed retries"
    );
}

pub fn readers_see_a_batch_all_at_once<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(2));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (store, stop, start, reads) =
            (store.clone(), stop.clone(), start.clone(), reads.clone());
        std::thread::spawn(move || {
            start.wait();
            // Reads that landed while batches were still arriving.
            let mut mid_run = 0usize;
            loop {
                let n = store.query(&Region::all()).unwrap().len();
                assert_eq!(n % 7, 0, "saw part of a batch: {n} events");
                assert_eq!(store.stream("e").unwrap().len() % 7, 0);
                mid_run += usize::from(n > 0 && n < 280);
                reads.fetch_add(1, Ordering::AcqRel);
                if stop.load(Ordering::Acquire) {
                    return mid_run;
                }
            }
        })
    };
    start.wait();
    for round in 0..40 {
        let items = (0..7).map(|i| item("e", json!([round, i]))).collect();
        store.append_batch(items).unwrap();
        // Let the reader look at least once between batches, so its reads
        // interleave with the writes even when these are fast.
        let seen = reads.load(Ordering::Acquire);
        while reads.load(Ordering::Acquire) < seen + 2 {
            std::thread::yield_now();
        }
    }
    stop.store(true, Ordering::Release);
    assert!(reader.join().unwrap() > 0, "no read overlapped the batches");
    assert_eq!(store.query(&Region::all()).unwrap().len(), 280);
}

/// Batches from several threads over overlapping entities, in different
/// orders: none is lost, every clock sequence stays dense, every chain links.
pub fn concurrent_batches_on_shared_entities_stay_dense<H: Harness>(h: &H) {
    let store = Arc::new(open(h));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                for round in 0..20 {
                    let names = if (t + round) % 2 == 0 {
                        ["p", "q", "r"]
                    } else {
                        ["r", "q", "p"]
                    };
                    let items = names.iter().map(|e| item(e, json!([t, round]))).collect();
                    n += store.append_batch(items).unwrap().len();
                }
                n
            })
        })
        .collect();
    let written: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(written, 240);
    assert_eq!(store.stats().unwrap().event_count, 240);
    for e in ["p", "q", "r"] {
        let s = store.stream(e).unwrap();
        assert_eq!(s.len(), 80);
        assert_chain(&s);
    }
}

struct Incident;

impl BypassReason for Incident {
    fn name(&self) -> &'static str {
        "incident"
    }
    fn justification(&self) -> &'static str {
        "on-call fix for INC-42"
    }
}

fn pipeline() -> Pipeline<u64> {
    let gates = GateSet::new().with_gate(FnGate::new("limit", |amount: &u64| {
        if *amount <= 100 {
            Ok(())
        } else {
            Err(Denial::new("limit", "amount over 100")
                .with_code("LIMIT")
                .with_context("amount", amount.to_string()))
        }
    }));
    Pipeline::new(gates)
}

pub fn a_receipt_commits_with_the_real_sequence_and_hash<H: Harness>(h: &H) {
    let store = open(h);
    store
        .append(&coord("acct", "s"), KIND_A, &"opened")
        .unwrap();
    let p = pipeline();
    let receipt = p
        .evaluate(&50, Proposal::new(json!({ "pay": 50 })))
        .unwrap();
    assert_eq!(receipt.gates_passed(), ["limit"]);
    let committed = store
        .append_committed(&coord("acct", "s"), KIND_A, receipt)
        .unwrap();
    let entry = store.stream("acct").unwrap().pop().unwrap();
    assert_eq!(
        (committed.event_id, committed.sequence),
        (entry.event_id, entry.global_sequence)
    );
    assert_eq!(committed.hash, entry.hash_chain.event_hash);
    assert_ne!(committed.hash, [0; 32]);
    assert_eq!(
        store.get(committed.event_id).unwrap().event.payload,
        committed.payload
    );
    let denied = p
        .evaluate(&500, Proposal::new(json!({ "pay": 500 })))
        .unwrap_err();
    assert_eq!((denied.gate, denied.code.as_str()), ("limit", "LIMIT"));
    assert_eq!(
        store.stream("acct").unwrap().len(),
        2,
        "a denial writes nothing"
    );
}

pub fn bypasses_are_flagged_and_audited_atomically<H: Harness>(h: &H) {
    let store = open(h);
    let receipt = Pipeline::<u64>::bypass(Proposal::new(json!({ "pay": 500 })), &Incident);
    let committed = store
        .append_bypassed(&coord("acct", "s"), KIND_A, receipt)
        .unwrap();
    let header = store.get(committed.event_id).unwrap().event.header;
    assert!(header.is_bypass());
    let audit_entry = store.stream("batpak:bypass").unwrap().pop().unwrap();
    assert!(
        audit_entry.global_sequence > committed.sequence,
        "the event, then its audit record"
    );
    assert_eq!(
        store.stats().unwrap().global_sequence,
        audit_entry.global_sequence + 1
    );
    let audit = store.bypasses().unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].reason, "incident");
    assert_eq!(audit[0].justification, "on-call fix for INC-42");
    assert_eq!(audit[0].event, format!("{:032x}", committed.event_id));
    assert_eq!(audit[0].entity, "acct");
    let children = store.children(committed.event_id).unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].kind, EventKind::EFFECT_BYPASS);
    // Ordinary commits are not on the audit.
    let receipt = pipeline()
        .evaluate(&1, Proposal::new(json!({ "pay": 1 })))
        .unwrap();
    let plain = store
        .append_committed(&coord("acct", "s"), KIND_A, receipt)
        .unwrap();
    assert!(!store.get(plain.event_id).unwrap().event.header.is_bypass());
    drop(store);
    assert_eq!(
        open(h).bypasses().unwrap().len(),
        1,
        "the audit survives a restart"
    );
}

const ADDED: EventKind = EventKind::custom(3, 1);
const NOTE: EventKind = EventKind::custom(3, 2);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Total {
    sum: i64,
    events: u32,
}

impl EventSourced<serde_json::Value> for Total {
    fn from_events(events: &[Event<serde_json::Value>]) -> Option<Self> {
        if events.is_empty() {
            return None;
        }
        let mut t = Total { sum: 0, events: 0 };
        for e in events {
            t.apply_event(e);
        }
        Some(t)
    }
    fn apply_event(&mut self, event: &Event<serde_json::Value>) {
        self.sum += event.payload["n"].as_i64().unwrap_or(0);
        self.events += 1;
    }
    fn relevant_event_kinds() -> &'static [EventKind] {
        &[ADDED]
    }
}

pub fn projections_fold_relevant_events<H: Harness>(h: &H) {
    let store = open(h);
    let consistent = Freshness::Consistent;
    assert_eq!(store.project::<Total>("cart", &consistent).unwrap(), None);
    for n in [5, 7] {
        store
            .append(&coord("cart", "s"), ADDED, &json!({ "n": n }))
            .unwrap();
    }
    store
        .append(&coord("cart", "s"), NOTE, &json!({ "n": 1000 }))
        .unwrap();
    store
        .append(&coord("other", "s"), ADDED, &json!({ "n": 1 }))
        .unwrap();
    assert_eq!(
        store.project::<Total>("cart", &consistent).unwrap(),
        Some(Total { sum: 12, events: 2 }),
        "only the entity's relevant kinds"
    );
    store
        .append(&coord("cart", "s"), ADDED, &json!({ "n": 3 }))
        .unwrap();
    assert_eq!(
        store.project::<Total>("cart", &consistent).unwrap(),
        Some(Total { sum: 15, events: 3 }),
        "never older than the newest relevant event"
    );
}

/// Every stored hash is the codec's: a backend stores chains that any other
/// backend (and `verify`) recomputes to the same bytes.
pub fn hashes_are_the_codecs<H: Harness>(h: &H) {
    let store = open(h);
    let mut items = vec![
        item("h", json!({"a": [1, 2.5, "x"]})),
        item("h", json!(null)),
        item("i", json!("z")),
    ];
    items[1].options = AppendOptions::new()
        .with_flags(batpak::event::FLAG_REQUIRES_ACK)
        .with_correlation(9);
    items[1].causation = CausationRef::Absolute(10);
    store.append_batch(items).unwrap();
    store
        .append(&coord("h", "other-scope"), KIND_B, &[1u8, 2])
        .unwrap();
    for entity in ["h", "i"] {
        let mut prev = [0u8; 32];
        for e in store.stream(entity).unwrap() {
            let ev = store.get(e.event_id).unwrap();
            let chain = ev.event.hash_chain.unwrap();
            assert_eq!(chain.prev_hash, prev);
            let bytes = codec::encode_payload(&ev.event.payload).unwrap();
            assert_eq!(codec::content_hash(&bytes), ev.event.header.content_hash);
            assert_eq!(
                codec::event_hash(&prev, &codec::ChainInput::of(&ev)),
                chain.event_hash
            );
            assert_eq!(e.hash_chain, chain);
            prev = chain.event_hash;
        }
    }
}

/// Every event of `store` in global order, with payloads.
fn export<S: EventStore>(store: &S) -> Vec<StoredEvent<serde_json::Value>> {
    store
        .query(&Region::all())
        .unwrap()
        .iter()
        .map(|e| store.get(e.event_id).unwrap())
        .collect()
}

/// Events moved to another store keep everything but their global
/// sequence; a second import writes nothing; an event that does not continue
/// its entity's chain (a gap, a changed payload) is refused whole.
pub fn imports_keep_ids_clocks_times_and_hashes<H: Harness>(h: &H) {
    // The harness made `h`, so it runs here and must make more places.
    let other = H::new().expect("a second place for a store");
    let source = open(h);
    let root = source
        .append(&coord("order:1", "t1"), KIND_A, &json!({"sku": "tea"}))
        .unwrap();
    source
        .append_reaction(
            &coord("pay:1", "t1"),
            KIND_B,
            &"paid",
            root.event_id,
            root.event_id,
        )
        .unwrap();
    let mut items = vec![item("order:1", json!(1)), item("order:2", json!(2.5))];
    items[1].options = AppendOptions::new().with_flags(batpak::event::FLAG_TRANSACTIONAL);
    items[1].causation = CausationRef::PriorItem(0);
    source.append_batch(items).unwrap();
    for i in 0..5 {
        source
            .append(&coord("order:1", "t2"), KIND_A, &json!({ "i": i }))
            .unwrap();
    }
    let exported = export(&source);
    assert_eq!(exported.len(), 9);

    let target = open(&other);
    let first: Vec<AppendReceipt> = exported
        .chunks(4)
        .flat_map(|chunk| target.import_events(chunk.to_vec()).unwrap())
        .collect();
    let imported = export(&target);
    assert_eq!(
        imported, exported,
        "ids, clocks, times, links, flags, payloads, hashes"
    );
    assert!(strictly_increasing(
        &first.iter().map(|r| r.sequence).collect::<Vec<_>>()
    ));
    for e in ["order:1", "order:2", "pay:1"] {
        let (a, b) = (source.stream(e).unwrap(), target.stream(e).unwrap());
        let strip = |v: Vec<IndexEntry>| {
            v.into_iter()
                .map(|e| (e.event_id, e.clock, e.hash_chain, e.wall_ms, e.coord))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(a), strip(b));
    }
    // Again, in other chunks: nothing new.
    let again: Vec<AppendReceipt> = exported
        .chunks(3)
        .flat_map(|chunk| target.import_events(chunk.to_vec()).unwrap())
        .collect();
    assert_eq!(again, first);
    assert_eq!(target.stats().unwrap().event_count, 9);
    // Appends continue the imported chains.
    let next = target
        .append(&coord("order:1", "t1"), KIND_A, &"next")
        .unwrap();
    let next = target.get(next.event_id).unwrap();
    assert_eq!(next.event.header.position.sequence, 7);
    assert_eq!(
        next.event.hash_chain.unwrap().prev_hash,
        exported
            .last()
            .unwrap()
            .event
            .hash_chain
            .unwrap()
            .event_hash
    );

    // A third store: a gap, or a changed payload, is refused and writes nothing.
    let third = H::new().expect("a third place for a store");
    let fresh = open(&third);
    let at = |entity: &str, clock: u32| {
        exported
            .iter()
            .find(|e| e.coordinate.entity() == entity && e.event.header.position.sequence == clock)
            .cloned()
            .unwrap()
    };
    let gap = fresh.import_events(vec![at("order:1", 0), at("order:1", 2)]);
    assert!(
        matches!(&gap, Err(StoreError::BatchFailed { item_index: 1, source, .. })
            if matches!(**source, StoreError::ChainMismatch { clock: 2, .. })),
        "{gap:?}"
    );
    let mut changed = exported[0].clone();
    changed.event.payload = json!({"sku": "coffee"});
    assert!(matches!(
        fresh.import_events(vec![changed]),
        Err(StoreError::ChainMismatch { clock: 0, .. })
    ));
    let mut late = exported[0].clone();
    late.event.header.position.sequence = 3;
    assert!(matches!(
        fresh.import_events(vec![late]),
        Err(StoreError::ChainMismatch { .. })
    ));
    assert_eq!(fresh.stats().unwrap().event_count, 0);
    fresh.import_events(vec![exported[0].clone()]).unwrap();
    assert_eq!(fresh.stats().unwrap().event_count, 1);
}

/// Per-call durability (`AppendOptions::with_durability`): `Durable` and
/// `Relaxed` appends and batches keep every other rule (CAS, idempotency,
/// order, links); a durable receipt is readable at once, a relaxed one at
/// the latest after `sync()`, and both are there after a clean reopen.
pub fn per_call_durability_keeps_every_other_rule<H: Harness>(h: &H) {
    let durable = AppendOptions::new().with_durability(Durability::Durable);
    let relaxed = AppendOptions::new().with_durability(Durability::Relaxed);
    let c = coord("durability", "s");
    let ids = {
        let store = open(h);
        let first = store
            .append_with_options(&c, KIND_A, &json!(0), durable.with_cas_empty())
            .unwrap();
        assert_eq!(store.get(first.event_id).unwrap().event.payload, json!(0));
        let second = store
            .append_with_options(
                &c,
                KIND_A,
                &json!(1),
                relaxed.with_cas(0).with_idempotency(77),
            )
            .unwrap();
        let retried = store
            .append_with_options(
                &c,
                KIND_A,
                &json!(1),
                relaxed.with_cas(0).with_idempotency(77),
            )
            .unwrap();
        assert_eq!(
            retried, second,
            "an idempotent retry returns the original receipt"
        );
        let refused = store.append_with_options(&c, KIND_A, &json!(9), relaxed.with_cas(0));
        assert!(
            matches!(refused, Err(StoreError::SequenceMismatch { .. })),
            "{refused:?}"
        );
        let mut batch = vec![item("durability", json!(2)), item("durability", json!(3))];
        batch[0].options = relaxed;
        let relaxed_batch = store.append_batch(batch).unwrap();
        let mut batch = vec![item("durability", json!(4)), item("durability", json!(5))];
        batch[1].options = durable;
        batch[0].options = relaxed;
        let durable_batch = store.append_batch(batch).unwrap();
        for r in &durable_batch {
            assert!(
                store.get(r.event_id).is_ok(),
                "a durable batch is readable at once"
            );
        }
        store.sync().unwrap();
        assert_eq!(stream_clocks(&store, "durability"), vec![0, 1, 2, 3, 4, 5]);
        assert_chain(&store.stream("durability").unwrap());
        let ids: Vec<u128> = [first, second]
            .iter()
            .chain(&relaxed_batch)
            .chain(&durable_batch)
            .map(|r| r.event_id)
            .collect();
        store.close().unwrap();
        ids
    };
    let store = open(h);
    let got: Vec<u128> = store
        .stream("durability")
        .unwrap()
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(got, ids, "everything is there after a clean reopen");
}
