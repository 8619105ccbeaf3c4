//! Atomic batches (SPEC §3.9) and the durable idempotency record (§3.8):
//! what only the file store does (sync modes, segments, checkpoint,
//! footers, the removed-event record). The batch behaviour both backends
//! share is the conformance suite (`crates/batpak-conformance`).

mod common;

use batpak::prelude::*;
use batpak::store::OpenPath;
use common::*;
use serde_json::json;

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
