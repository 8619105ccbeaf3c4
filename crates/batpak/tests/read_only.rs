//! `Store::open_read_only`: no lock, no file modified, writes refused, and
//! `refresh` follows what the owner appends.

mod common;

use batpak::prelude::*;
use batpak::store::OpenPath;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// Name and contents of every file in the directory.
fn snapshot_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn reads_beside_the_owner_and_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open_with(dir.path(), |c| c.with_segment_max_bytes(4096));
    for i in 0..30 {
        owner
            .append(
                &coord("e", "s"),
                KIND_A,
                &json!({ "i": i, "p": "x".repeat(50) }),
            )
            .unwrap();
    }
    let reader = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(reader.query(&Region::all()).len(), 30);
    assert!(reader.diagnostics().read_only);
    let first = reader.query(&Region::all())[0].event_id;
    assert_eq!(reader.get(first).unwrap().event.payload["i"], 0);
    // Writes are refused.
    assert!(matches!(
        reader.append(&coord("e", "s"), KIND_A, &1),
        Err(StoreError::ReadOnly)
    ));
    let item = BatchAppendItem::new(
        coord("e", "s"),
        KIND_A,
        &1,
        AppendOptions::new(),
        CausationRef::None,
    )
    .unwrap();
    assert!(matches!(
        reader.append_batch(vec![item]),
        Err(StoreError::ReadOnly)
    ));
    // The owner keeps appending (across segments, and a batch).
    let mut cursor = reader.cursor_guaranteed(&Region::entity("e"));
    assert_eq!(cursor.poll_batch(100).len(), 30);
    for i in 30..60 {
        owner
            .append(
                &coord("e", "s"),
                KIND_A,
                &json!({ "i": i, "p": "x".repeat(50) }),
            )
            .unwrap();
    }
    let items = (0..4)
        .map(|i| {
            BatchAppendItem::new(
                coord("e", "s"),
                KIND_B,
                &i,
                AppendOptions::new(),
                CausationRef::None,
            )
            .unwrap()
        })
        .collect();
    owner.append_batch(items).unwrap();
    assert!(cursor.poll().is_none(), "not seen before a refresh");
    assert_eq!(reader.refresh().unwrap(), 34);
    assert_eq!(cursor.poll_batch(100).len(), 34);
    assert_eq!(reader.query(&Region::all()), owner.query(&Region::all()));
    assert_eq!(reader.refresh().unwrap(), 0);
    drop(reader);
    owner.close().unwrap();
}

#[test]
fn modifies_nothing_even_with_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let last = {
        let store = open_with(dir.path(), |c| {
            c.with_segment_max_bytes(2048).with_enable_checkpoint(false)
        });
        let mut r = None;
        for i in 0..40 {
            r = Some(
                store
                    .append(
                        &coord("e", "s"),
                        KIND_A,
                        &json!({ "i": i, "p": "y".repeat(40) }),
                    )
                    .unwrap(),
            );
        }
        store.close().unwrap();
        r.unwrap()
    };
    // Leave a torn frame after the last one.
    let path = dir
        .path()
        .join(format!("{:020}.seg", last.disk_pos.segment_id));
    let mut bytes = std::fs::read(&path).unwrap();
    let end = (last.disk_pos.offset + u64::from(last.disk_pos.length)) as usize;
    let torn: Vec<u8> = bytes[last.disk_pos.offset as usize..end][..30].to_vec();
    bytes[end..end + 30].copy_from_slice(&torn);
    std::fs::write(&path, &bytes).unwrap();
    let before = snapshot_files(dir.path());
    {
        let reader = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
        assert_eq!(reader.query(&Region::all()).len(), 40);
        reader.refresh().unwrap();
        reader.close().unwrap();
    }
    assert_eq!(
        snapshot_files(dir.path()),
        before,
        "a read-only open changed a file"
    );
    assert!(Store::open_read_only(StoreConfig::new(dir.path().join("missing"))).is_err());
}

/// What a follower can see of its owner's newest segment mid-write: a frame
/// not yet (wholly) in the file with a later frame already there (frames
/// copied in one go, or a torn tail being zeroed). Skipping it as damage
/// would lose the frame for good once it is complete; the follower waits
/// for it instead. In a segment the owner has moved on from, damage is
/// final and passed over.
#[test]
fn a_frame_still_being_written_is_waited_for_not_skipped() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let owner = open_with(dir.path(), |c| c.with_enable_checkpoint(false));
    let rs: Vec<AppendReceipt> = (0..5)
        .map(|i| {
            owner
                .append(&coord("e", "s"), KIND_A, &json!({ "i": i }))
                .unwrap()
        })
        .collect();
    owner.close().unwrap();
    let pos = rs[3].disk_pos;
    let path = dir.path().join(format!("{:020}.seg", pos.segment_id));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut frame = vec![0u8; pos.length as usize];
    file.read_exact_at(&mut frame, pos.offset).unwrap();
    // The fourth frame is not in the file yet; the fifth is.
    file.write_all_at(&vec![0u8; frame.len()], pos.offset)
        .unwrap();

    let reader = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
    let ids =
        |s: &Store| -> Vec<u128> { s.query(&Region::all()).iter().map(|e| e.event_id).collect() };
    let first_three: Vec<u128> = rs[..3].iter().map(|r| r.event_id).collect();
    assert_eq!(ids(&reader), first_three, "nothing past the gap yet");
    assert!(reader.diagnostics().recovery.damaged.is_empty());
    assert_eq!(reader.refresh().unwrap(), 0);
    // The frame arrives.
    file.write_all_at(&frame, pos.offset).unwrap();
    assert_eq!(reader.refresh().unwrap(), 2);
    let all: Vec<u128> = rs.iter().map(|r| r.event_id).collect();
    assert_eq!(ids(&reader), all);
    drop(reader);

    // Once the owner has moved on to a newer segment, the gap is damage.
    file.write_all_at(&vec![0u8; frame.len()], pos.offset)
        .unwrap();
    let owner = open_with(dir.path(), |c| {
        c.with_enable_checkpoint(false).with_segment_max_bytes(4096)
    });
    while owner
        .append(&coord("f", "s"), KIND_A, &json!({ "pad": "x".repeat(500) }))
        .unwrap()
        .disk_pos
        .segment_id
        == pos.segment_id
    {}
    let reader = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
    let seen = reader.stream("e");
    assert_eq!(seen.len(), 4, "the events after the damage are read");
    assert_eq!(reader.diagnostics().recovery.damaged.len(), 1);
    drop(reader);
    owner.close().unwrap();
}

/// The owner was killed while creating a segment (the file exists, all
/// zeros, no header yet); a follower mapped that empty file. The owner's
/// next open deletes it and creates the segment afresh under the same
/// name. The follower must read the new file from its start, not take the
/// replacement for a compaction of a segment it had finished (which would
/// skip every event the owner then writes there).
#[test]
fn a_follower_reads_a_segment_its_owner_created_again_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(dir.path());
    for i in 0..5 {
        owner
            .append(&coord("e", "s"), KIND_A, &json!({ "i": i }))
            .unwrap();
    }
    owner.close().unwrap();
    // A creation cut short: preallocated zeros, no header.
    let next = dir.path().join(format!("{:020}.seg", 2));
    std::fs::write(&next, vec![0u8; 256 * 1024]).unwrap();

    let follower = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
    assert_eq!(
        follower.refresh().unwrap(),
        0,
        "an empty segment holds nothing"
    );
    assert_eq!(follower.query(&Region::all()).len(), 5);

    // The owner's next open starts segment 2 afresh and writes to it.
    let owner = open(dir.path());
    assert!(owner.diagnostics().recovery.open_path != OpenPath::NewStore);
    let mut cursor = follower.cursor_guaranteed(&Region::all());
    assert_eq!(cursor.poll_batch(100).len(), 5);
    for i in 5..12 {
        let r = owner
            .append(&coord("e", "s"), KIND_A, &json!({ "i": i }))
            .unwrap();
        assert_eq!(r.disk_pos.segment_id, 2, "written to the new segment 2");
    }
    owner.close().unwrap();
    assert_eq!(
        follower.refresh().unwrap(),
        7,
        "the follower reads the new file"
    );
    assert_eq!(follower.query(&Region::all()).len(), 12);
    assert_eq!(cursor.poll_batch(100).len(), 7);
}
