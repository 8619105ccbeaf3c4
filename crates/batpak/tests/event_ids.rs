//! Event ids the store generates name their slot in their low 32 bits (ADR
//! 0037), and a lookup by id reads that slot first. These tests hold the
//! ids to UUIDv7, to their order and to their causal links, and show that
//! a lookup finds the right event whatever an id's low bits say: keys that
//! name another event's slot, slots removed by compaction, survivors
//! renumbered by the next open. An import whose id the store already
//! holds (two stores' ids colliding) writes nothing.

mod common;

use batpak::prelude::*;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const KIND: EventKind = EventKind::custom(2, 7);

fn version(id: u128) -> u128 {
    (id >> 76) & 0xf
}

fn variant(id: u128) -> u128 {
    (id >> 62) & 0b11
}

fn low_bits(id: u128) -> u64 {
    u64::from(id as u32)
}

/// An idempotency key that names slot `slot` in its low bits.
fn key_naming(slot: u32, n: u128) -> u128 {
    (0x5eed_0000_0000_0000_0000_0000u128 + (n << 32)) | u128::from(slot)
}

fn item(c: &Coordinate, i: u64, causation: CausationRef) -> BatchAppendItem {
    BatchAppendItem::new(
        c.clone(),
        KIND,
        &json!({ "i": i }),
        AppendOptions::new(),
        causation,
    )
    .unwrap()
}

#[test]
fn generated_ids_are_v7_in_order_and_name_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c = coord("order:1", "shop");
    let mut receipts = Vec::new();
    for i in 0..5u64 {
        receipts.push(store.append(&c, KIND, &json!({ "i": i })).unwrap());
    }
    // A batch whose items name earlier items as their cause.
    receipts.extend(
        store
            .append_batch(vec![
                item(&c, 5, CausationRef::None),
                item(&c, 6, CausationRef::PriorItem(0)),
                item(&c, 7, CausationRef::PriorItem(1)),
            ])
            .unwrap(),
    );
    let key = key_naming(0, 1);
    let append_keyed = || {
        store
            .append_with_options(
                &c,
                KIND,
                &json!({ "i": 8 }),
                AppendOptions::new().with_idempotency(key),
            )
            .unwrap()
    };
    let keyed = append_keyed();
    assert_eq!(keyed.event_id, key, "a caller's id is kept as it is");

    for (n, r) in receipts.iter().enumerate() {
        assert_eq!(version(r.event_id), 7, "{:032x}", r.event_id);
        assert_eq!(variant(r.event_id), 0b10, "{:032x}", r.event_id);
        // Nothing was removed, so slot and global sequence agree.
        assert_eq!(low_bits(r.event_id), r.sequence);
        assert_eq!(r.sequence, n as u64);
        let got = store.get(r.event_id).unwrap();
        assert_eq!(got.event.header.event_id, r.event_id);
        assert_eq!(got.event.payload["i"], json!(n));
        if n < 5 {
            assert_eq!(got.event.header.correlation_id, r.event_id);
            assert_eq!(got.event.header.causation_id, None);
        }
    }
    // Ids made in one thread, one after another, keep increasing.
    assert!(receipts.windows(2).all(|w| w[0].event_id < w[1].event_id));
    // The batch's causal links point at the ids as written.
    let cause = |n: usize| {
        store
            .get(receipts[n].event_id)
            .unwrap()
            .event
            .header
            .causation_id
    };
    assert_eq!(cause(5), None);
    assert_eq!(cause(6), Some(receipts[5].event_id));
    assert_eq!(cause(7), Some(receipts[6].event_id));
    assert_eq!(
        store
            .children(receipts[5].event_id)
            .iter()
            .map(|e| e.event_id)
            .collect::<Vec<_>>(),
        vec![receipts[6].event_id]
    );
    // A retry of the keyed append answers with its receipt.
    let again = append_keyed();
    assert_eq!(again.event_id, key);
    assert_eq!(again.sequence, keyed.sequence);
}

#[test]
fn ids_whose_low_bits_name_another_event_are_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c = coord("order:2", "shop");
    let mut expected: BTreeMap<u128, u64> = BTreeMap::new();
    for i in 0..40u64 {
        let id = if i % 4 == 3 {
            // Names an earlier event's slot, its own slot, or a slot
            // that does not exist yet (and later will hold another event).
            let named = [0, i as u32, i as u32 + 10][(i as usize / 4) % 3];
            let key = key_naming(named, u128::from(i));
            let r = store
                .append_with_options(
                    &c,
                    KIND,
                    &json!({ "i": i }),
                    AppendOptions::new().with_idempotency(key),
                )
                .unwrap();
            assert_eq!(r.event_id, key);
            key
        } else {
            store.append(&c, KIND, &json!({ "i": i })).unwrap().event_id
        };
        expected.insert(id, i);
    }
    for (&id, &i) in &expected {
        let got = store.get(id).unwrap();
        assert_eq!(got.event.header.event_id, id);
        assert_eq!(got.event.payload["i"], json!(i), "{id:032x}");
    }
    // Ids never appended, naming slots that hold events, are not found.
    for slot in [0u32, 5, 39] {
        let stranger = key_naming(slot, 999);
        assert!(matches!(
            store.get(stranger),
            Err(StoreError::NotFound(id)) if id == stranger
        ));
    }
}

#[test]
fn compaction_and_reopen_keep_every_lookup_right() {
    let dir = tempfile::tempdir().unwrap();
    let small = |d: &std::path::Path| StoreConfig::new(d).with_segment_max_bytes(4096);
    let store = Store::open(small(dir.path())).unwrap();
    let mut ids = Vec::new();
    for i in 0..300u64 {
        let c = coord(&format!("acct:{}", i % 7), "bank");
        ids.push(store.append(&c, KIND, &json!({ "i": i })).unwrap().event_id);
    }
    let config = CompactionConfig {
        strategy: CompactionStrategy::Retention(Box::new(|e: &StoredEvent<Value>| {
            e.event.payload["i"].as_u64().is_some_and(|i| i % 3 != 0)
        })),
        min_segments: 1,
    };
    let removed = store.compact(&config).unwrap().events_removed;
    assert!(removed > 50, "removed {removed}");
    let check = |store: &Store, stage: &str| {
        let mut found = 0;
        for (i, &id) in ids.iter().enumerate() {
            match store.get(id) {
                Ok(e) => {
                    assert_eq!(e.event.header.event_id, id, "{stage}");
                    assert_eq!(e.event.payload["i"], json!(i), "{stage}");
                    found += 1;
                }
                Err(StoreError::NotFound(_)) => {
                    assert_eq!(i % 3, 0, "{stage}: only rejected events go");
                }
                Err(e) => panic!("{stage}: {e}"),
            }
        }
        found
    };
    // While open, removed slots keep their records: the hint must skip them.
    let survivors = check(&store, "after compaction");
    assert_eq!(survivors as u64, 300 - removed);
    // Reopened, the survivors are numbered afresh: most hints are stale.
    store.close().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    assert_eq!(check(&store, "after reopen"), survivors);
    // New events name their new slots, right behind the survivors.
    let c = coord("acct:0", "bank");
    let r = store.append(&c, KIND, &json!({ "i": 1000 })).unwrap();
    assert_eq!(low_bits(r.event_id), survivors as u64);
    assert_eq!(
        store.get(r.event_id).unwrap().event.payload["i"],
        json!(1000)
    );
}

/// ADR 0037's answer to two stores whose ids collide: an imported event
/// whose id this store already holds writes nothing. With the stored
/// event's coordinate and kind it is taken for a retry; elsewhere it is
/// refused.
#[test]
fn an_import_that_meets_a_stored_id_writes_nothing() {
    let (here_dir, there_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (here, there) = (open(here_dir.path()), open(there_dir.path()));
    let key = key_naming(0, 7);
    let keyed = AppendOptions::new().with_idempotency(key);
    let mine = here
        .append_with_options(&coord("acct:1", "bank"), KIND, &json!("mine"), keyed)
        .unwrap();
    let theirs = there
        .append_with_options(&coord("acct:2", "bank"), KIND, &json!("theirs"), keyed)
        .unwrap();
    let exported = there.get(theirs.event_id).unwrap();

    let refused = here.import_events(vec![exported]);
    assert!(
        matches!(refused, Err(StoreError::IdempotencyConflict { .. })),
        "{refused:?}"
    );
    assert_eq!(here.stats().event_count, 1);
    assert_eq!(here.get(key).unwrap().event.payload, json!("mine"));
    assert!(here.stream("acct:2").is_empty());

    let again = here.import_events(vec![here.get(key).unwrap()]).unwrap();
    assert_eq!(again, vec![mine]);
    assert_eq!(here.stats().event_count, 1);
}
