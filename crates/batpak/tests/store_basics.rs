//! Round trips through the public API, with reopen, on real files.

mod common;

use batpak::prelude::*;
use common::*;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

#[test]
fn append_get_round_trip_and_header_fields() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c = coord("order:1", "tenant:a");
    let r = store
        .append(&c, KIND_A, &json!({"qty": 2, "sku": "tea"}))
        .unwrap();
    assert_eq!(r.sequence, 0);
    let ev = store.get(r.event_id).unwrap();
    assert_eq!(ev.coordinate, c);
    assert_eq!(ev.event.payload, json!({"qty": 2, "sku": "tea"}));
    let h = &ev.event.header;
    assert_eq!(h.event_id, r.event_id);
    assert_eq!(h.correlation_id, r.event_id, "a root correlates to itself");
    assert_eq!(h.causation_id, None);
    assert_eq!(h.event_kind, KIND_A);
    assert_eq!(h.position.sequence, 0);
    assert_eq!((h.event_id >> 76) & 0xF, 7, "UUIDv7");
    assert_eq!(
        h.content_hash,
        batpak::event::compute_hash(&payload_bytes(&store, r))
    );
    assert_ne!(h.timestamp_us, 0);
    assert!(ev.event.is_genesis());
    assert_eq!(store.stats().event_count, 1);
    assert_eq!(store.stats().global_sequence, 1);
}

/// The stored payload bytes, read back from the segment file at the receipt's position.
fn payload_bytes(store: &Store, r: AppendReceipt) -> Vec<u8> {
    let d = store.diagnostics();
    let seg = std::fs::read(segment_files(&d.data_dir)[0].clone()).unwrap();
    let frame = &seg
        [r.disk_pos.offset as usize..(r.disk_pos.offset + u64::from(r.disk_pos.length)) as usize];
    let payload_len = u32::from_le_bytes(frame[24..28].try_into().unwrap()) as usize;
    frame[frame.len() - payload_len..].to_vec()
}

#[test]
fn clocks_sequences_and_chain_per_entity() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = coord("a", "s1");
    let a_other_scope = coord("a", "s2");
    let b = coord("b", "s1");
    let r0 = store.append(&a, KIND_A, &1).unwrap();
    let r1 = store.append(&b, KIND_A, &2).unwrap();
    let r2 = store.append(&a_other_scope, KIND_A, &3).unwrap();
    assert_eq!((r0.sequence, r1.sequence, r2.sequence), (0, 1, 2));
    let stream = store.stream("a");
    assert_eq!(stream.len(), 2, "scope does not split an entity");
    assert_eq!(
        stream.iter().map(|e| e.clock).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(
        stream[1].hash_chain.prev_hash,
        stream[0].hash_chain.event_hash
    );
    assert_eq!(stream[0].hash_chain.prev_hash, [0; 32]);
    assert_eq!(store.stream("b")[0].clock, 0);
    let ev = store.get(r2.event_id).unwrap();
    assert_eq!(
        ev.event.hash_chain.unwrap().prev_hash,
        stream[0].hash_chain.event_hash
    );
}

#[test]
fn identical_payloads_get_distinct_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c = coord("e", "s");
    let ids: Vec<u128> = (0..3)
        .map(|_| store.append(&c, KIND_A, &"same").unwrap().event_id)
        .collect();
    let s = store.stream("e");
    assert_ne!(s[0].hash_chain.event_hash, s[1].hash_chain.event_hash);
    assert_ne!(s[1].hash_chain.event_hash, s[2].hash_chain.event_hash);
    let walk = store.walk_ancestors(ids[2], 10);
    let walked: Vec<u128> = walk.iter().map(|e| e.event.header.event_id).collect();
    assert_eq!(walked, vec![ids[2], ids[1], ids[0]]);
    assert_eq!(store.walk_ancestors(ids[2], 2).len(), 2);
    assert!(store.walk_ancestors(12345, 10).is_empty());
}

#[test]
fn queries_follow_region_rules() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let k_cat3 = EventKind::custom(3, 1);
    store.append(&coord("order:1", "t1"), KIND_A, &0).unwrap();
    store.append(&coord("order:10", "t2"), KIND_B, &1).unwrap();
    store.append(&coord("order:1", "t2"), k_cat3, &2).unwrap();
    store.append(&coord("user:1", "t1"), KIND_A, &3).unwrap();
    store.append(&coord("order:1", "t1"), KIND_A, &4).unwrap();

    let payload_of = |entries: Vec<IndexEntry>| -> Vec<i64> {
        payloads(&store, &entries)
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect()
    };
    assert_eq!(payload_of(store.query(&Region::all())), vec![0, 1, 2, 3, 4]);
    assert_eq!(
        payload_of(store.query(&Region::entity("order:1"))),
        vec![0, 1, 2, 4],
        "prefix match"
    );
    assert_eq!(
        payload_of(store.stream("order:1")),
        vec![0, 2, 4],
        "exact match"
    );
    assert_eq!(payload_of(store.by_scope("t1")), vec![0, 3, 4]);
    assert_eq!(
        payload_of(store.by_scope("t")),
        Vec::<i64>::new(),
        "scope is exact"
    );
    assert_eq!(payload_of(store.by_fact(KIND_A)), vec![0, 3, 4]);
    assert_eq!(
        payload_of(store.query(&Region::all().with_fact_category(3))),
        vec![2]
    );
    assert_eq!(
        payload_of(store.query(&Region::entity("order:").with_scope("t2"))),
        vec![1, 2]
    );
    assert_eq!(
        payload_of(store.query(&Region::entity("order:1").with_clock_range((1, 2)))),
        vec![2, 4]
    );
    assert_eq!(
        payload_of(
            store.query(
                &Region::scope("t1")
                    .with_fact(KindFilter::Exact(KIND_A))
                    .with_clock_range((0, 0))
            )
        ),
        vec![0, 3]
    );
    assert!(store.query(&Region::entity("nobody")).is_empty());
    assert!(store.stream("order").is_empty());
    let all = store.query(&Region::all());
    assert!(all
        .windows(2)
        .all(|w| w[0].global_sequence < w[1].global_sequence));
}

#[test]
fn reactions_build_the_causal_graph() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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

    let corr: Vec<u128> = store
        .by_correlation(root.event_id)
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(corr, vec![root.event_id, paid.event_id, shipped.event_id]);
    let kids: Vec<u128> = store
        .children(root.event_id)
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(kids, vec![paid.event_id]);
    let kids: Vec<u128> = store
        .children(paid.event_id)
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(kids, vec![shipped.event_id]);
    assert!(store.children(unrelated.event_id).is_empty());
    let e = store.get(shipped.event_id).unwrap().event.header;
    assert_eq!(
        (e.correlation_id, e.causation_id),
        (root.event_id, Some(paid.event_id))
    );
    let entry = &store.stream("ship:1")[0];
    assert!(entry.is_correlated() && entry.is_caused_by(paid.event_id) && !entry.is_root_cause());
    // External ids (not events of this store) work as links too.
    let ext = store.append_reaction(&c, KIND_A, &1, 0xABCD, 0xEF).unwrap();
    assert_eq!(store.by_correlation(0xABCD)[0].event_id, ext.event_id);
    assert_eq!(store.children(0xEF)[0].event_id, ext.event_id);
}

#[test]
fn options_set_ids_links_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
}

#[test]
fn payload_contract_is_serde_json_value() {
    #[derive(Serialize)]
    struct Odd {
        bytes: serde_bytes_like::Bytes,
        map: BTreeMap<u32, &'static str>,
        f: f32,
        unit: (),
        e: Enum,
    }
    #[derive(Serialize)]
    enum Enum {
        Tuple(u8, u8),
    }
    mod serde_bytes_like {
        pub struct Bytes(pub Vec<u8>);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }
    let p = Odd {
        bytes: serde_bytes_like::Bytes(vec![1, 2, 255]),
        map: BTreeMap::from([(3, "x")]),
        f: 0.1,
        unit: (),
        e: Enum::Tuple(1, 2),
    };
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let r = store.append(&coord("e", "s"), KIND_A, &p).unwrap();
    let expected = serde_json::to_value(&p).unwrap();
    assert_eq!(store.get(r.event_id).unwrap().event.payload, expected);
    drop(store);
    let store = open(dir.path());
    let back = store.get(r.event_id).unwrap().event.payload;
    assert_eq!(back, expected);
    assert_eq!(
        back["f"].as_f64().unwrap().to_bits(),
        f64::from(0.1f32).to_bits()
    );
    assert_eq!(back["map"]["3"], "x", "integer keys become strings");
}

#[test]
fn refused_payloads_and_kinds_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| c.with_single_append_max_bytes(1024));
    let c = coord("e", "s");
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
        Err(StoreError::PayloadTooLarge { max: 1024, .. })
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
    assert_eq!(store.stats().event_count, 0);
    assert_eq!(store.stats().global_sequence, 0, "no sequence burned");
    // Effects may be appended.
    store.append(&c, EventKind::EFFECT_ACK, &1).unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.query(&Region::all()).len(), 1);
}

#[test]
fn not_found_and_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(matches!(store.get(99), Err(StoreError::NotFound(99))));
    drop(store);
    let bad = StoreConfig::new(dir.path()).with_sync_every_n_events(0);
    assert!(matches!(
        Store::open(bad),
        Err(StoreError::Configuration(_))
    ));
}

#[test]
fn reopen_preserves_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut receipts = Vec::new();
    {
        let store = open(dir.path());
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
    {
        let store = open(dir.path());
        before = store.query(&Region::all());
        assert_eq!(before.len(), 50);
        for (i, r) in receipts.iter().enumerate() {
            let ev = store.get(r.event_id).unwrap();
            assert_eq!(ev.event.payload["i"], i as u64);
            assert_eq!(before[i].disk_pos, r.disk_pos);
            assert_eq!(before[i].global_sequence, r.sequence);
        }
        let r = store.append(&coord("e0", "s0"), KIND_A, &"after").unwrap();
        assert_eq!(r.sequence, 50, "sequences continue");
        assert_eq!(store.stream("e0").last().unwrap().clock, 10);
        store.close().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.query(&Region::all())[..50], before[..]);
}

#[test]
fn rotation_and_oversized_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| c.with_segment_max_bytes(4096));
    let c = coord("e", "s");
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            store
                .append(&c, KIND_A, &json!({"i": i, "pad": "x".repeat(100)}))
                .unwrap(),
        );
    }
    let big = store.append(&c, KIND_A, &"y".repeat(20_000)).unwrap();
    let after = store.append(&c, KIND_A, &"small").unwrap();
    assert!(store.diagnostics().segment_count > 5);
    assert_ne!(big.disk_pos.segment_id, after.disk_pos.segment_id);
    assert_ne!(
        big.disk_pos.segment_id,
        ids.last().unwrap().disk_pos.segment_id
    );
    assert_eq!(
        store
            .get(big.event_id)
            .unwrap()
            .event
            .payload
            .as_str()
            .unwrap()
            .len(),
        20_000
    );
    let segs = segment_files(dir.path());
    drop(store);
    let store = open_with(dir.path(), |c| c.with_segment_max_bytes(4096));
    for (i, r) in ids.iter().enumerate() {
        assert_eq!(store.get(r.event_id).unwrap().event.payload["i"], i as u64);
    }
    assert_eq!(store.stream("e").len(), 62);
    assert_eq!(segment_files(dir.path()), segs, "reopen creates no segment");
}

#[test]
fn segments_are_ordered_numerically() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| c.with_segment_max_bytes(300));
    // Each event gets its own segment: more than 10 segments exercises 9 < 10.
    for i in 0..25 {
        store.append(&coord("e", "s"), KIND_A, &i).unwrap();
    }
    drop(store);
    let store = open(dir.path());
    let values: Vec<i64> = payloads(&store, &store.stream("e"))
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    assert_eq!(values, (0..25).collect::<Vec<_>>());
    assert!(store.diagnostics().segment_count >= 25);
}

#[test]
fn file_count_is_constant_across_idle_open_close() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.append(&coord("e", "s"), KIND_A, &1).unwrap();
        store.close().unwrap();
    }
    let files = file_names(dir.path());
    for _ in 0..5 {
        open(dir.path()).close().unwrap();
        drop(open(dir.path()));
    }
    assert_eq!(file_names(dir.path()), files);
    // An empty store too.
    let empty = tempfile::tempdir().unwrap();
    open(empty.path()).close().unwrap();
    let files = file_names(empty.path());
    for _ in 0..3 {
        open(empty.path()).close().unwrap();
    }
    assert_eq!(file_names(empty.path()), files);
}

#[test]
fn second_open_is_locked_until_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    match Store::open(StoreConfig::new(dir.path())) {
        Err(StoreError::Locked(p)) => assert_eq!(p, dir.path()),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    store.close().unwrap();
    let again = open(dir.path());
    drop(again);
    let _third = open(dir.path());
}

#[test]
fn clock_never_goes_backwards_per_entity() {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;
    let now = Arc::new(AtomicI64::new(5_000_000));
    let clock_src = now.clone();
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| {
        c.with_clock(Some(Arc::new(move || clock_src.load(Ordering::SeqCst))))
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

#[test]
fn store_is_send_sync_and_concurrent_appends_are_ordered() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    s.append(&coord(&format!("e{}", i % 3), "s"), KIND_A, &json!([t, i]))
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = store.query(&Region::all());
    assert_eq!(all.len(), 400);
    let seqs: Vec<u64> = all.iter().map(|e| e.global_sequence).collect();
    assert_eq!(seqs, (0..400).collect::<Vec<_>>());
    for e in 0..3 {
        let s = store.stream(&format!("e{e}"));
        assert!(s.iter().enumerate().all(|(i, x)| x.clock == i as u32));
        assert!(s
            .windows(2)
            .all(|w| w[1].hash_chain.prev_hash == w[0].hash_chain.event_hash));
    }
    let d = store.diagnostics();
    assert!(
        d.syncs < 400,
        "group commit shares syncs: {} syncs for 400 appends",
        d.syncs
    );
}
