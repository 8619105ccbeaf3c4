//! Atomic batches (SPEC §3.9) and the durable idempotency record (§3.8).

mod common;

use batpak::prelude::*;
use batpak::store::OpenPath;
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn item(entity: &str, payload: serde_json::Value) -> BatchAppendItem {
    BatchAppendItem::new(
        coord(entity, "s"),
        KIND_A,
        &payload,
        AppendOptions::new(),
        CausationRef::None,
    )
    .unwrap()
}

#[test]
fn a_batch_appends_in_order_with_chains_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = store.append(&coord("a", "s"), KIND_A, &"first").unwrap();
    let mut items: Vec<_> = (0..5)
        .map(|i| item(if i % 2 == 0 { "a" } else { "b" }, json!({ "i": i })))
        .collect();
    items[3].options = AppendOptions::new().with_flags(batpak::event::FLAG_TRANSACTIONAL);
    let rs = store.append_batch(items).unwrap();
    assert_eq!(
        rs.iter().map(|r| r.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "consecutive sequences"
    );
    let a = store.stream("a");
    assert_eq!(
        a.iter().map(|e| e.clock).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert!(
        a.windows(2)
            .all(|w| w[1].hash_chain.prev_hash == w[0].hash_chain.event_hash),
        "chain continues across items"
    );
    assert_eq!(a[0].event_id, before.event_id);
    let b = store.stream("b");
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
    assert!(store.append_batch(Vec::new()).unwrap().is_empty());
}

#[test]
fn causal_links_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    assert_eq!(store.by_correlation(trigger.event_id).len(), 4);
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

#[test]
fn invalid_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| {
        c.with_batch_max_size(4)
            .with_batch_max_bytes(200)
            .with_single_append_max_bytes(100)
    });
    store.append(&coord("a", "s"), KIND_A, &"seed").unwrap();

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
        assert_batch_failed(store.append_batch(too_many), 4, BatchStage::Validation),
        StoreError::BatchLimit { limit: "size", .. }
    ));

    let too_big: Vec<_> = (0..3).map(|_| item("a", json!("x".repeat(90)))).collect();
    assert!(matches!(
        assert_batch_failed(store.append_batch(too_big), 2, BatchStage::Validation),
        StoreError::BatchLimit { limit: "bytes", .. }
    ));

    let one_huge = vec![item("a", json!(1)), item("a", json!("y".repeat(150)))];
    assert!(matches!(
        assert_batch_failed(store.append_batch(one_huge), 1, BatchStage::Validation),
        StoreError::PayloadTooLarge { .. }
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

    assert_eq!(store.stats().event_count, 1, "nothing was written");
    assert_eq!(store.stats().global_sequence, 1, "no sequence was used");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.query(&Region::all()).len(), 1);
}

#[test]
fn per_item_cas_makes_a_multi_stream_conditional_append() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
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
    assert_eq!(store.stats().event_count, 5, "failed batches wrote nothing");
    assert!(store.stream("new").is_empty());
}

#[test]
fn retried_batches_return_their_receipts() {
    let dir = tempfile::tempdir().unwrap();
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
        let store = open(dir.path());
        let r = store.append_batch(keyed(&[1, 2, 3])).unwrap();
        assert_eq!(
            store.append_batch(keyed(&[1, 2, 3])).unwrap(),
            r,
            "retry in the same session"
        );
        r
    };
    let store = open(dir.path());
    assert_eq!(
        store.append_batch(keyed(&[1, 2, 3])).unwrap(),
        first,
        "retry after a restart"
    );
    assert_eq!(store.stats().event_count, 3);
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
        store.stats().event_count,
        3,
        "nothing written by the failed retries"
    );
}

#[test]
fn readers_see_a_batch_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    for relaxed in [false, true] {
        let sub = dir.path().join(format!("relaxed-{relaxed}"));
        let store = Arc::new(open_with(&sub, |c| {
            if relaxed {
                c.with_sync_every_n_events(100)
            } else {
                c
            }
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Arc::new(std::sync::Barrier::new(2));
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader = {
            let (store, stop, start, reads) =
                (store.clone(), stop.clone(), start.clone(), reads.clone());
            std::thread::spawn(move || {
                start.wait();
                // Reads that landed while batches were still arriving.
                let mut mid_run = 0usize;
                loop {
                    let n = store.query(&Region::all()).len();
                    assert_eq!(n % 7, 0, "saw part of a batch: {n} events");
                    assert_eq!(store.stream("e").len() % 7, 0);
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
            // Let the reader look at least once between batches, so its
            // reads interleave with the writes even when these are fast.
            let seen = reads.load(Ordering::Acquire);
            while reads.load(Ordering::Acquire) < seen + 2 {
                std::thread::yield_now();
            }
        }
        stop.store(true, Ordering::Release);
        assert!(reader.join().unwrap() > 0, "no read overlapped the batches");
        assert_eq!(store.query(&Region::all()).len(), 280);
    }
}

#[test]
fn batches_spanning_segments_reopen_the_same_every_way() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: StoreConfig| c.with_segment_max_bytes(1500);
    let expected;
    {
        let store = open_with(dir.path(), cfg);
        for round in 0..6 {
            let items = (0..9)
                .map(|i| {
                    item(
                        &format!("e{}", i % 4),
                        json!({ "round": round, "i": i, "pad": "p".repeat(40) }),
                    )
                })
                .collect();
            store.append_batch(items).unwrap();
            store.append(&coord("single", "s"), KIND_B, &round).unwrap();
        }
        assert!(
            store.diagnostics().segment_count >= 6,
            "batches span segments"
        );
        expected = observe(&store);
        store.close().unwrap();
    }
    let reopen = |path: OpenPath| {
        let store = open_with(dir.path(), cfg);
        assert_eq!(
            store.diagnostics().recovery.open_path,
            path,
            "{:?}",
            store.diagnostics().recovery
        );
        assert_eq!(observe(&store), expected);
        store.close().unwrap();
    };
    reopen(OpenPath::Checkpoint);
    remove_checkpoint(dir.path());
    reopen(OpenPath::Footers);
    remove_checkpoint(dir.path());
    assert!(strip_footers(dir.path()) >= 5);
    reopen(OpenPath::FullScan);
    // The scan-only open above re-queued footers for the sealed segments.
    remove_checkpoint(dir.path());
    reopen(OpenPath::Footers);
}

#[test]
fn damaged_checkpoint_or_footer_falls_back_to_the_frames() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: StoreConfig| c.with_segment_max_bytes(2000);
    let expected = {
        let store = open_with(dir.path(), cfg);
        for i in 0..60 {
            store
                .append(
                    &coord(&format!("e{}", i % 5), "s"),
                    KIND_A,
                    &json!({"i": i, "p": "q".repeat(30)}),
                )
                .unwrap();
        }
        let e = observe(&store);
        store.close().unwrap();
        e
    };
    // A flipped byte in the checkpoint.
    let cp = dir.path().join("checkpoint.bpk");
    let mut bytes = std::fs::read(&cp).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&cp, &bytes).unwrap();
    let store = open_with(dir.path(), cfg);
    let d = store.diagnostics();
    assert_eq!(d.recovery.open_path, OpenPath::Footers);
    assert!(d
        .recovery
        .checkpoint_rejected
        .as_deref()
        .unwrap()
        .contains("checksum"));
    assert_eq!(observe(&store), expected);
    store.close().unwrap();

    // A checkpoint that names a segment that is no longer what it covered.
    let segs = segment_files(dir.path());
    let first = &segs[0];
    let mut seg = std::fs::read(first).unwrap();
    let at = seg.iter().rposition(|&b| b != 0).unwrap();
    seg[at - 20] ^= 0x01; // inside the footer: its CRC fails
    std::fs::write(first, &seg).unwrap();
    remove_checkpoint(dir.path());
    let store = open_with(dir.path(), cfg);
    let d = store.diagnostics();
    assert_eq!(d.recovery.footers_rejected, 1, "{:?}", d.recovery);
    assert!(d.recovery.segments_from_footers >= 1);
    assert_eq!(observe(&store), expected);
    store.close().unwrap();

    // Truncated checkpoint.
    let bytes = std::fs::read(&cp).unwrap();
    std::fs::write(&cp, &bytes[..bytes.len() / 3]).unwrap();
    let store = open_with(dir.path(), cfg);
    assert_ne!(store.diagnostics().recovery.open_path, OpenPath::Checkpoint);
    assert_eq!(observe(&store), expected);
}

#[test]
fn checkpoint_is_validated_against_the_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |c: StoreConfig| c.with_segment_max_bytes(2000);
    {
        let store = open_with(dir.path(), cfg);
        for i in 0..40 {
            store
                .append(
                    &coord("e", "s"),
                    KIND_A,
                    &json!({"i": i, "p": "q".repeat(30)}),
                )
                .unwrap();
        }
        store.close().unwrap();
    }
    // Rewrite the last covered frame's event id: the checkpoint must notice.
    let store = open_with(dir.path(), cfg);
    let last = store.query(&Region::all()).pop().unwrap();
    let expected = observe(&store);
    drop(store); // no new checkpoint
    let path = dir
        .path()
        .join(format!("{:020}.seg", last.disk_pos.segment_id));
    let mut seg = std::fs::read(&path).unwrap();
    let body = last.disk_pos.offset as usize + 12;
    seg[body + 48] ^= 0xff; // first byte of the event id: the frame CRC fails too
    std::fs::write(&path, &seg).unwrap();
    let store = open_with(dir.path(), cfg);
    let d = store.diagnostics();
    assert_ne!(
        d.recovery.open_path,
        OpenPath::Checkpoint,
        "{:?}",
        d.recovery
    );
    assert!(d.recovery.checkpoint_rejected.is_some());
    assert_eq!(
        observe(&store).len(),
        expected.len() - 1,
        "the damaged event is not served"
    );
}

#[test]
fn removed_event_record_must_exist_and_be_intact() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path())
        .append(&coord("e", "s"), KIND_A, &1)
        .unwrap();
    let record = dir.path().join("removed.bpk");
    let good = std::fs::read(&record).unwrap();
    std::fs::remove_file(&record).unwrap();
    match Store::open(StoreConfig::new(dir.path())) {
        Err(StoreError::RecordDamaged { path, detail }) => {
            assert_eq!(path, record);
            assert!(detail.contains("missing"), "{detail}");
        }
        other => panic!("expected RecordDamaged, got {:?}", other.map(|_| ())),
    }
    let mut bad = good.clone();
    bad[20] ^= 1;
    std::fs::write(&record, &bad).unwrap();
    assert!(matches!(
        Store::open(StoreConfig::new(dir.path())),
        Err(StoreError::RecordDamaged { .. })
    ));
    std::fs::write(&record, &good).unwrap();
    assert_eq!(open(dir.path()).stats().event_count, 1);
}
