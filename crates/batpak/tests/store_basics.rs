//! What only the file store does: its bytes on disk, segments, the
//! directory lock, group commit. The behaviour both backends share is the
//! conformance suite (`crates/batpak-conformance`).

mod common;

use batpak::prelude::*;
use common::*;
use serde_json::json;

#[test]
fn content_hash_covers_the_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c = coord("order:1", "tenant:a");
    let r = store
        .append(&c, KIND_A, &json!({"qty": 2, "sku": "tea"}))
        .unwrap();
    assert_eq!(r.sequence, 0);
    let h = store.get(r.event_id).unwrap().event.header;
    let bytes = payload_bytes(&store, r);
    assert_eq!(h.content_hash, batpak::event::compute_hash(&bytes));
    // The original crate's module path names the same function.
    assert_eq!(h.content_hash, batpak::event::hash::compute_hash(&bytes));
    assert_eq!(
        bytes,
        batpak::store::codec::encode_payload(&json!({"qty": 2, "sku": "tea"})).unwrap(),
        "the codec's bytes are the bytes on disk"
    );
}

/// Code written against the original crate's module paths compiles and
/// gets the same types: the cursor, the subscription and the chain link.
#[test]
fn the_original_module_paths_name_the_same_types() {
    use batpak::event::hash::HashChain;
    use batpak::store::cursor::Cursor;
    use batpak::store::subscription::{Subscription, SubscriptionOps};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let c = coord("order:1", "tenant:a");
    let sub: Subscription = store.subscribe_lossy(&Region::entity("order:1"));
    let r = store.append(&c, KIND_A, &json!({"n": 1})).unwrap();
    let mut cursor: Cursor = store.cursor_guaranteed(&Region::entity("order:1"));
    assert_eq!(cursor.poll().map(|e| e.event_id), Some(r.event_id));
    let seen = sub
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("the subscription sees the append");
    assert_eq!(seen.event_id, r.event_id);
    let mut ops: SubscriptionOps = sub.ops().take(0);
    assert!(
        ops.recv().is_none(),
        "a subscription taken to 0 ends at once"
    );
    let chain: HashChain = store.get(r.event_id).unwrap().event.hash_chain.unwrap();
    assert_eq!(chain.prev_hash, [0; 32], "the first event of its entity");
}

/// Code written against the seed builds the configuration and option
/// structs by literal and matches the enums API.md lists without
/// `#[non_exhaustive]` with no wildcard arm; this test does not compile if
/// one of them gains that mark or a config struct gains a private field.
#[test]
fn seed_code_builds_structs_by_literal_and_matches_enums_exhaustively() {
    let dir = tempfile::tempdir().unwrap();
    let config_layout = IndexLayout::SoA;
    let config = StoreConfig {
        segment_max_bytes: 1 << 20,
        batch: BatchConfig {
            max_size: 8,
            max_bytes: 1 << 16,
            group_commit_max_batch: 0,
        },
        sync: SyncConfig {
            mode: SyncMode::SyncData,
            every_n_events: 1,
        },
        index: IndexConfig {
            layout: config_layout,
            incremental_projection: false,
            enable_checkpoint: true,
        },
        ..StoreConfig::new(dir.path())
    };
    let store = Store::open(config).unwrap();
    let c = coord("order:1", "tenant:a");
    let opts = AppendOptions {
        expect_empty: true,
        ..Default::default()
    };
    let first = store
        .append_with_options(&c, KIND_A, &json!({"n": 1}), opts)
        .unwrap();
    let item = BatchAppendItem {
        coord: c.clone(),
        kind: KIND_A,
        payload_bytes: batpak::store::codec::encode_payload(&json!({"n": 2})).unwrap(),
        options: AppendOptions::default(),
        causation: CausationRef::Absolute(first.event_id),
    };
    let err = store
        .append_batch(vec![item.clone(), bad_item(&c)])
        .expect_err("the second item is too large for the batch limit");
    let stage = match err {
        StoreError::BatchFailed { stage, .. } => stage,
        other => panic!("expected BatchFailed, got {other:?}"),
    };
    let named = match stage {
        BatchStage::Validation => "validation",
        BatchStage::Encoding => "encoding",
        BatchStage::Writing => "writing",
        BatchStage::Syncing => "syncing",
        BatchStage::Indexing => "indexing",
    };
    assert_eq!(named, "validation");
    // Each causation as a store resolves it, next to what it was resolved to.
    let refs = [
        CausationRef::None,
        CausationRef::Absolute(first.event_id),
        CausationRef::PriorItem(0),
    ];
    let items = refs
        .iter()
        .map(|&causation| BatchAppendItem {
            causation,
            ..item.clone()
        })
        .collect();
    let receipts = store.append_batch(items).unwrap();
    let expected: Vec<Option<u128>> = refs
        .iter()
        .map(|c| match c {
            CausationRef::None => None,
            CausationRef::Absolute(id) => Some(*id),
            CausationRef::PriorItem(i) => Some(receipts[*i].event_id),
        })
        .collect();
    let stored: Vec<Option<u128>> = receipts
        .iter()
        .map(|r| store.get(r.event_id).unwrap().event.header.causation_id)
        .collect();
    assert_eq!(stored, expected);
    // The configuration echoed back, read through exhaustive matches.
    let d = store.diagnostics();
    let mode = match d.sync_mode {
        SyncMode::SyncAll => "all",
        SyncMode::SyncData => "data",
    };
    let layout = match config_layout {
        IndexLayout::AoS => "AoS",
        IndexLayout::SoA => "SoA",
        IndexLayout::AoSoA8 => "AoSoA8",
        IndexLayout::AoSoA16 => "AoSoA16",
        IndexLayout::AoSoA64 => "AoSoA64",
        IndexLayout::SoAoS => "SoAoS",
    };
    assert_eq!((mode, layout), ("data", d.index_layout));
    assert_eq!(
        store.stream("order:1").len(),
        4,
        "the failed batch wrote nothing"
    );
}

/// A batch item whose payload exceeds the 64 KiB batch byte limit set above.
fn bad_item(c: &Coordinate) -> BatchAppendItem {
    BatchAppendItem {
        coord: c.clone(),
        kind: KIND_A,
        payload_bytes: batpak::store::codec::encode_payload(&json!({"big": "x".repeat(70_000)}))
            .unwrap(),
        options: AppendOptions::default(),
        causation: CausationRef::None,
    }
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
fn invalid_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = StoreConfig::new(dir.path()).with_sync_every_n_events(0);
    assert!(matches!(
        Store::open(bad),
        Err(StoreError::Configuration(_))
    ));
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
fn concurrent_appends_share_syncs() {
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
    assert_eq!(store.query(&Region::all()).len(), 400);
    let d = store.diagnostics();
    assert!(
        d.syncs < 400,
        "group commit shares syncs: {} syncs for 400 appends",
        d.syncs
    );
}
