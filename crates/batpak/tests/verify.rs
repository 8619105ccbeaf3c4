//! `Store::verify`: a clean store verifies clean; damage to frames, hashes,
//! footers, the checkpoint and the removed-event record is reported with
//! its file, offset and kind; appends may continue while it runs.

mod common;

use batpak::prelude::*;
use batpak::store::{VerifyProblem, VerifyProblemKind, VerifyReport};
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Small segments: a few hundred events fill many of them.
const SEGMENT_BYTES: u64 = 8 * 1024;

fn item(entity: &str, i: usize) -> BatchAppendItem {
    BatchAppendItem::new(
        coord(entity, "s"),
        KIND_B,
        &json!({ "batch": i }),
        AppendOptions::new(),
        CausationRef::None,
    )
    .unwrap()
}

/// Single events over a few entities, batches in between, and a few events
/// of entities of their own (`solo:N`, one event each).
fn fill(store: &Store, singles: usize) -> Vec<AppendReceipt> {
    let mut receipts = Vec::new();
    for i in 0..singles {
        let entity = format!("order:{}", i % 7);
        let payload = json!({ "i": i, "note": "some payload text to give frames a size" });
        receipts.push(
            store
                .append(&coord(&entity, "s"), KIND_A, &payload)
                .unwrap(),
        );
        if i % 25 == 24 {
            let items = (0..4)
                .map(|k| item(&format!("order:{}", (i + k) % 7), k))
                .collect();
            receipts.extend(store.append_batch(items).unwrap());
        }
        if i.is_multiple_of(40) {
            let solo = coord(&format!("solo:{i}"), "s");
            receipts.push(store.append(&solo, KIND_A, &json!({ "solo": i })).unwrap());
        }
    }
    receipts
}

/// A closed store in small segments (sealed ones with footers, a checkpoint).
fn build(dir: &Path) -> Vec<AppendReceipt> {
    let store = open_with(dir, |c| c.with_segment_max_bytes(SEGMENT_BYTES));
    let receipts = fill(&store, 400);
    store.close().unwrap();
    receipts
}

fn reopen(dir: &Path) -> Store {
    open_with(dir, |c| c.with_segment_max_bytes(SEGMENT_BYTES))
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// A receipt of a `solo:` event in a sealed segment (not the newest one).
fn sealed_solo(receipts: &[AppendReceipt], store_dir: &Path, nth: usize) -> AppendReceipt {
    let newest = segment_files(store_dir).len() as u64;
    let store = reopen(store_dir);
    let solos: Vec<_> = receipts
        .iter()
        .filter(|r| r.disk_pos.segment_id + 1 < newest)
        .filter(|r| {
            let e = store.get(r.event_id).unwrap();
            e.event.header.position.sequence == 0 && store.stream(&entity_of(&store, r)).len() == 1
        })
        .copied()
        .collect();
    store.close().unwrap();
    solos[nth]
}

fn entity_of(store: &Store, r: &AppendReceipt) -> String {
    store
        .query(&Region::all())
        .into_iter()
        .find(|e| e.event_id == r.event_id)
        .map(|e| e.coord.entity().to_owned())
        .unwrap()
}

fn modify(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, &bytes).unwrap();
}

/// Recompute the CRC of the frame at `at` (CRC-32 over the length field, then the body).
fn reseal(bytes: &mut [u8], at: usize) {
    let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[at + 4..at + 8]);
    h.update(&bytes[at + 12..at + 12 + len]);
    bytes[at + 8..at + 12].copy_from_slice(&h.finalize().to_le_bytes());
}

/// Offset of a sealed segment's footer frame, from its trailer.
fn footer_offset(bytes: &[u8]) -> usize {
    let last = bytes.iter().rposition(|&b| b != 0).unwrap();
    assert_eq!(
        &bytes[last + 1 - 8..=last],
        b"BPKFOOT1",
        "segment has a footer"
    );
    let t = last + 1 - 16;
    u64::from_le_bytes(bytes[t..t + 8].try_into().unwrap()) as usize
}

fn kinds(report: &VerifyReport) -> Vec<VerifyProblemKind> {
    report.problems().iter().map(|p| p.kind).collect()
}

fn find<'r>(
    report: &'r VerifyReport,
    kind: VerifyProblemKind,
    file: &Path,
    offset: u64,
) -> Option<&'r VerifyProblem> {
    report
        .problems()
        .iter()
        .find(|p| p.kind == kind && p.file == file && p.offset == offset)
}

#[test]
fn a_clean_store_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let receipts = build(dir.path());
    let segments = segment_files(dir.path()).len();
    assert!(segments >= 5, "{segments} segments");
    assert!(dir.path().join("checkpoint.bpk").exists());
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.events_checked, receipts.len() as u64);
    assert_eq!(report.segments_checked, segments);
    assert_eq!(report.incomplete_batch_events, 0);
    assert!(report.bytes_checked > receipts.len() as u64 * 200);
    assert!(report.to_string().ends_with("clean"), "{report}");
    // More appends after reopening (a new segment or two): still clean.
    fill(&store, 60);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    store.close().unwrap();
    // Without a checkpoint, read-only: the same.
    remove_checkpoint(dir.path());
    let ro = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
    let report = ro.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.events_checked, receipts.len() as u64 + 60 + 8 + 2);
}

#[test]
fn a_store_that_was_never_closed_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_with(dir.path(), |c| {
        c.with_segment_max_bytes(SEGMENT_BYTES)
            .with_sync_every_n_events(50)
    });
    let receipts = fill(&store, 300);
    // Footers are still being written in the background, the newest frames
    // are not synced yet: all committed frames are checked anyway.
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.events_checked, receipts.len() as u64);
    drop(store);
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.events_checked, receipts.len() as u64);
}

#[test]
fn a_flipped_payload_byte_is_a_checksum_problem_at_its_frame() {
    let dir = tempfile::tempdir().unwrap();
    let receipts = build(dir.path());
    let victim = sealed_solo(&receipts, dir.path(), 1);
    let pos = victim.disk_pos;
    let path = segment_path(dir.path(), pos.segment_id);
    modify(&path, |b| {
        b[(pos.offset + u64::from(pos.length) - 3) as usize] ^= 0x10;
    });
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert_eq!(
        kinds(&report),
        vec![VerifyProblemKind::FrameChecksum],
        "{report}"
    );
    let p = &report.problems()[0];
    assert_eq!((&p.file, p.offset), (&path, pos.offset), "{report}");
    assert_eq!(report.events_checked, receipts.len() as u64 - 1);
    // Debug and Display name the file, the offset and the kind.
    let shown = p.to_string();
    assert!(shown.contains(&format!("{:020}.seg@{}", pos.segment_id, pos.offset)));
    assert!(shown.contains("FrameChecksum"), "{shown}");
    assert!(format!("{report:?}").contains("FrameChecksum"));
    assert!(report.to_string().contains("1 problems"), "{report}");
}

#[test]
fn a_damaged_length_is_reported_and_later_frames_are_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let receipts = build(dir.path());
    let a = sealed_solo(&receipts, dir.path(), 0);
    // A later frame of the same segment, also damaged.
    let b = *receipts
        .iter()
        .rev()
        .find(|r| r.disk_pos.segment_id == a.disk_pos.segment_id)
        .unwrap();
    assert!(b.disk_pos.offset > a.disk_pos.offset);
    let path = segment_path(dir.path(), a.disk_pos.segment_id);
    modify(&path, |bytes| {
        let at = a.disk_pos.offset as usize;
        bytes[at + 4..at + 8].copy_from_slice(&0x7fff_0000u32.to_le_bytes());
        let at = (b.disk_pos.offset + u64::from(b.disk_pos.length) - 2) as usize;
        bytes[at] ^= 0x01;
    });
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    let damaged = find(
        &report,
        VerifyProblemKind::FrameDamaged,
        &path,
        a.disk_pos.offset,
    );
    assert!(damaged.is_some(), "{report}");
    let later = find(
        &report,
        VerifyProblemKind::FrameChecksum,
        &path,
        b.disk_pos.offset,
    );
    assert!(later.is_some(), "{report}");
    // Nothing else but the chain link after the last damaged frame (when it
    // was not its entity's last event).
    for p in report.problems() {
        assert!(
            p.offset == a.disk_pos.offset
                || p.offset == b.disk_pos.offset
                || p.kind == VerifyProblemKind::ChainBroken,
            "{report}"
        );
    }
    assert_eq!(report.events_checked, receipts.len() as u64 - 2);
}

#[test]
fn a_forged_event_hash_with_a_valid_crc_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let receipts = build(dir.path());
    let victim = sealed_solo(&receipts, dir.path(), 2);
    let pos = victim.disk_pos;
    let path = segment_path(dir.path(), pos.segment_id);
    modify(&path, |b| {
        let at = pos.offset as usize;
        b[at + 12 + 128] ^= 0x01; // the stored event hash
        reseal(b, at);
    });
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert!(
        find(&report, VerifyProblemKind::EventHash, &path, pos.offset).is_some(),
        "{report}"
    );
    // The footer keeps the hash of each entity's last event (this one):
    // it now disagrees with the frame too.
    for p in report.problems() {
        assert!(
            matches!(
                p.kind,
                VerifyProblemKind::EventHash | VerifyProblemKind::Footer
            ),
            "{report}"
        );
    }
}

#[test]
fn a_forged_payload_with_a_valid_crc_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let receipts = build(dir.path());
    let victim = sealed_solo(&receipts, dir.path(), 3);
    let pos = victim.disk_pos;
    let path = segment_path(dir.path(), pos.segment_id);
    modify(&path, |b| {
        let at = pos.offset as usize;
        b[at + pos.length as usize - 1] ^= 0x01;
        reseal(b, at);
    });
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert_eq!(
        kinds(&report),
        vec![VerifyProblemKind::ContentHash],
        "{report}"
    );
    assert_eq!(report.problems()[0].offset, pos.offset);
}

#[test]
fn a_damaged_footer_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = segment_path(dir.path(), 2);
    let mut at = 0;
    modify(&path, |b| {
        at = footer_offset(b);
        b[at + 12 + 40] ^= 0x04;
    });
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert_eq!(kinds(&report), vec![VerifyProblemKind::Footer], "{report}");
    assert_eq!(
        (&report.problems()[0].file, report.problems()[0].offset),
        (&path, at as u64)
    );
}

#[test]
fn a_footer_that_disagrees_with_its_frames_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = segment_path(dir.path(), 3);
    let mut at = 0;
    modify(&path, |b| {
        at = footer_offset(b);
        // The first entry's global sequence (body: 32 fixed bytes, then the
        // coordinates; entries follow). Find the coordinate bytes' end from
        // the counts and lengths, then change the entry and reseal.
        let body = at + 12;
        let ncoords = u32::from_le_bytes(b[body + 4..body + 8].try_into().unwrap()) as usize;
        let mut p = body + 32;
        for _ in 0..ncoords {
            let el = u16::from_le_bytes(b[p..p + 2].try_into().unwrap()) as usize;
            let sl = u16::from_le_bytes(b[p + 2..p + 4].try_into().unwrap()) as usize;
            p += 4 + el + sl;
        }
        b[p + 8] ^= 0x01;
        reseal(b, at);
    });
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert_eq!(kinds(&report), vec![VerifyProblemKind::Footer], "{report}");
    assert!(
        report.problems()[0].detail.contains("global sequence"),
        "{report}"
    );
    assert_eq!(report.problems()[0].offset, at as u64);
}

#[test]
fn a_damaged_checkpoint_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = dir.path().join("checkpoint.bpk");
    modify(&path, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x20;
    });
    let store = reopen(dir.path());
    assert!(store.diagnostics().recovery.checkpoint_rejected.is_some());
    let report = store.verify().unwrap();
    assert_eq!(
        kinds(&report),
        vec![VerifyProblemKind::Checkpoint],
        "{report}"
    );
    assert_eq!(report.problems()[0].file, path);
}

#[test]
fn a_damaged_removed_event_record_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append(&coord("a", "s"), KIND_A, &1).unwrap();
    let path = dir.path().join("removed.bpk");
    modify(&path, |b| b[20] ^= 0x01);
    let report = store.verify().unwrap();
    assert_eq!(
        kinds(&report),
        vec![VerifyProblemKind::RemovedRecord],
        "{report}"
    );
    assert_eq!(report.problems()[0].file, path);
}

#[test]
fn a_damaged_segment_header_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    build(dir.path());
    let path = segment_path(dir.path(), 2);
    modify(&path, |b| b[30] ^= 0x01);
    let store = reopen(dir.path());
    let report = store.verify().unwrap();
    assert_eq!(
        kinds(&report),
        vec![VerifyProblemKind::SegmentHeader],
        "{report}"
    );
    assert_eq!(
        (&report.problems()[0].file, report.problems()[0].offset),
        (&path, 0)
    );
}

fn verify_while_appending(relaxed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open_with(dir.path(), |c| {
        let c = c.with_segment_max_bytes(16 * 1024);
        if relaxed {
            c.with_sync_every_n_events(20)
        } else {
            c
        }
    }));
    // The writer appends (singles and batches, rotating segments, footers
    // written behind it) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (store, stop, acked) = (store.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || {
            let mut written = 0u64;
            while !stop.load(Ordering::Acquire) || written < 300 {
                written += fill(&store, 30).len() as u64;
                acked.store(written, Ordering::Release);
            }
            written
        })
    };
    let mut last_checked = 0;
    for run in 0..8u64 {
        // Each run starts after the writer got further than everything the
        // previous run checked: it checks more.
        while acked.load(Ordering::Acquire) < (run + 1) * 60
            || acked.load(Ordering::Acquire) <= last_checked
        {
            std::thread::yield_now();
        }
        let before = acked.load(Ordering::Acquire);
        let report = store.verify().unwrap();
        assert!(report.is_clean(), "run {run}: {report}");
        assert!(
            report.events_checked >= before && report.events_checked > last_checked,
            "run {run}: checked {} of at least {before} acknowledged (previous run {last_checked})",
            report.events_checked
        );
        last_checked = report.events_checked;
    }
    stop.store(true, Ordering::Release);
    let written = writer.join().unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.events_checked, written);
    assert!(report.segments_checked > 2, "{report}");
}

#[test]
fn verify_while_another_thread_appends_is_clean() {
    verify_while_appending(false);
}

#[test]
fn verify_while_another_thread_appends_relaxed_is_clean() {
    verify_while_appending(true);
}

/// Open and `verify` walk frames with one scanner and assemble batches by
/// one rule, so they cannot disagree: on stores damaged at random places
/// in their sealed segments (footers and checkpoint removed, so open reads
/// every frame), every region open skips is a problem `verify` reports in
/// the same file at the same offset, and both count the same events of
/// batches that never completed.
#[test]
fn open_and_verify_agree_on_damage_and_incomplete_batches() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let template = tempfile::tempdir().unwrap();
    build(template.path());
    strip_footers(template.path());
    remove_checkpoint(template.path());
    let mut damaged_total = 0;
    let mut discarded_total = 0;
    for case in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(template.path()).unwrap() {
            let from = entry.unwrap().path();
            std::fs::copy(&from, dir.path().join(from.file_name().unwrap())).unwrap();
        }
        let segments = segment_files(dir.path());
        // Damage a few places in sealed segments (the newest is left alone:
        // a read-only open and `verify` both leave its end to its owner).
        for _ in 0..1 + next() % 3 {
            let path = &segments[(next() % (segments.len() as u64 - 1)) as usize];
            modify(path, |bytes| {
                let used = bytes.iter().rposition(|&b| b != 0).unwrap_or(0) + 1;
                let at = 64 + (next() as usize) % (used - 64);
                let span = 1 + (next() as usize) % 24;
                for b in &mut bytes[at..(at + span).min(used)] {
                    *b = match case % 3 {
                        0 => 0,
                        1 => *b ^ 0x5a,
                        _ => next() as u8,
                    };
                }
            });
        }
        let store = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
        let recovery = store.diagnostics().recovery;
        let report = store.verify().unwrap();
        for d in &recovery.damaged {
            if d.detail.contains("batch member without the start") {
                continue; // counted as an incomplete batch by both
            }
            let file = segment_path(dir.path(), d.segment_id);
            assert!(
                report
                    .problems()
                    .iter()
                    .any(|p| p.file == file && p.offset == d.offset),
                "case {case}: open skipped {d:?}, verify reported\n{report}"
            );
        }
        assert_eq!(
            recovery.discarded_batch_events, report.incomplete_batch_events,
            "case {case}: {recovery:?}\n{report}"
        );
        damaged_total += recovery.damaged.len();
        discarded_total += recovery.discarded_batch_events;
    }
    // The damage did reach frames, and batches.
    assert!(damaged_total >= 40, "{damaged_total}");
    assert!(discarded_total > 0);
}
