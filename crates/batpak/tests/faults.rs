//! Fault injection (feature `dangerous-test-hooks`): a batch fails or the
//! process crashes between any two steps, and after reopening the batch is
//! all there or not at all, its neighbours survive, and sequences stay unique.

mod common;

use batpak::prelude::*;
use batpak::store::{CountdownInjector, FaultAction, InjectionPoint, OpenPath};
use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

const BATCH: usize = 9;

/// Every point a batch (with its rotations, the footer of the segment it
/// fills, its sync and the checkpoint of the close after it) passes.
fn points() -> Vec<InjectionPoint> {
    use InjectionPoint::*;
    vec![
        BatchValidated,
        ItemWritten(0),
        ItemWritten(4),
        ItemWritten(BATCH - 1),
        FramesWritten,
        Indexed,
        BeforeFlush,
        BeforeSync,
        Sync,
        BeforeRotate,
        SegmentCreated,
        FooterWritten,
        CheckpointWritten,
        CheckpointRenamed,
    ]
}

fn config(dir: &Path, relaxed: bool) -> StoreConfig {
    let c = StoreConfig::new(dir).with_segment_max_bytes(1500);
    if relaxed {
        c.with_sync_every_n_events(50)
    } else {
        c
    }
}

fn batch_items(tag: &str) -> Vec<BatchAppendItem> {
    (0..BATCH)
        .map(|i| {
            BatchAppendItem::new(
                coord(&format!("batch:{}", i % 3), "s"),
                KIND_B,
                &json!({ "tag": tag, "i": i, "pad": "b".repeat(60) }),
                AppendOptions::new(),
                CausationRef::None,
            )
            .unwrap()
        })
        .collect()
}

/// Neighbours written before the batch, in a session of their own.
fn write_neighbours(dir: &Path, relaxed: bool) -> Vec<AppendReceipt> {
    let store = Store::open(config(dir, relaxed)).unwrap();
    let rs = (0..3)
        .map(|i| {
            store
                .append(&coord("before", "s"), KIND_A, &json!({ "n": i }))
                .unwrap()
        })
        .collect();
    store.close().unwrap();
    rs
}

/// After a failure or crash: neighbours present, the batch all or nothing,
/// sequences unique and increasing, and the store takes new appends.
fn check_after(
    dir: &Path,
    relaxed: bool,
    neighbours: &[AppendReceipt],
    batch_acked: bool,
) -> usize {
    let store = Store::open(config(dir, relaxed)).unwrap();
    for r in neighbours {
        store
            .get(r.event_id)
            .expect("a neighbour before the batch was lost");
    }
    let batch_events: Vec<IndexEntry> =
        store.query(&Region::all().with_fact(KindFilter::Exact(KIND_B)));
    assert!(
        batch_events.is_empty() || batch_events.len() == BATCH,
        "batch partly present: {} of {BATCH}",
        batch_events.len()
    );
    if batch_acked {
        assert_eq!(batch_events.len(), BATCH, "an acknowledged batch was lost");
    }
    let all = store.query(&Region::all());
    assert!(
        all.windows(2)
            .all(|w| w[0].global_sequence < w[1].global_sequence),
        "sequences unique and ordered"
    );
    let after = store
        .append(&coord("after", "s"), KIND_A, &"after")
        .unwrap();
    assert!(after.sequence > all.last().map_or(0, |e| e.global_sequence));
    store.close().unwrap();
    let store = Store::open(config(dir, relaxed)).unwrap();
    assert_eq!(store.query(&Region::all()).len(), all.len() + 1);
    store.get(after.event_id).unwrap();
    batch_events.len()
}

/// Whether the append call itself passes `point` (the others are passed by
/// background threads or by `close`).
fn on_the_batch_path(point: InjectionPoint, relaxed: bool) -> bool {
    use InjectionPoint::*;
    match point {
        BeforeFlush | BeforeSync | Sync => !relaxed,
        FooterWritten | CheckpointWritten | CheckpointRenamed => false,
        _ => true,
    }
}

#[test]
fn injected_failures_leave_no_trace_of_the_batch() {
    for relaxed in [false, true] {
        for point in points() {
            let dir = tempfile::tempdir().unwrap();
            let neighbours = write_neighbours(dir.path(), relaxed);
            let injector = Arc::new(CountdownInjector::new(point, 1, FaultAction::Fail));
            let mut cfg = config(dir.path(), relaxed);
            cfg.fault_injector = Some(injector.clone());
            let store = Store::open(cfg).unwrap();
            let result = store.append_batch(batch_items("failing"));
            let _ = store.close();
            // Every point is passed by the batch, the rotation it causes,
            // the footer it fills or the close after it.
            assert!(injector.fired(), "{point:?} never reached");
            let present = check_after(dir.path(), relaxed, &neighbours, result.is_ok());
            if on_the_batch_path(point, relaxed) {
                assert!(
                    result.is_err(),
                    "{point:?} ({relaxed}): a failed step must not report success"
                );
            }
            // Failures before the batch was indexed take it back entirely.
            let before_index = matches!(
                point,
                InjectionPoint::BatchValidated
                    | InjectionPoint::ItemWritten(_)
                    | InjectionPoint::FramesWritten
                    | InjectionPoint::BeforeRotate
                    | InjectionPoint::SegmentCreated
            );
            if before_index {
                assert_eq!(present, 0, "{point:?} ({relaxed}): failed batch reappeared");
            }
        }
    }
}

#[test]
fn a_failed_sync_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
        InjectionPoint::Sync,
        2,
        FaultAction::Fail,
    )));
    let store = Store::open(cfg).unwrap();
    let ok = store.append(&coord("e", "s"), KIND_A, &1).unwrap();
    let failed = store.append(&coord("e", "s"), KIND_A, &2);
    assert!(matches!(failed, Err(StoreError::Poisoned(_))), "{failed:?}");
    assert!(matches!(
        store.append(&coord("e", "s"), KIND_A, &3),
        Err(StoreError::Poisoned(_))
    ));
    assert!(matches!(store.sync(), Err(StoreError::Poisoned(_))));
    assert!(store.diagnostics().poisoned.is_some());
    // The second event never became visible: nothing a reader saw can vanish.
    assert_eq!(store.query(&Region::all()).len(), 1);
    assert!(matches!(store.close(), Err(StoreError::Poisoned(_))));
    let store = open(dir.path());
    store.get(ok.event_id).unwrap();
    store.append(&coord("e", "s"), KIND_A, &4).unwrap();
}

// ---- crashes in a child process ------------------------------------------

const CHILD_DIR: &str = "BATPAK_FAULT_CHILD_DIR";
const CHILD_POINT: &str = "BATPAK_FAULT_CHILD_POINT";
const CHILD_RELAXED: &str = "BATPAK_FAULT_CHILD_RELAXED";

fn point_by_index(i: usize) -> InjectionPoint {
    points()[i]
}

/// The child: appends a batch with a crash armed at one point, then keeps
/// going (close writes the checkpoint) until the crash fires.
#[test]
#[ignore = "helper: run as a child process by crash_at_every_point"]
fn fault_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let point = point_by_index(std::env::var(CHILD_POINT).unwrap().parse().unwrap());
    let relaxed = std::env::var_os(CHILD_RELAXED).is_some();
    let mut cfg = config(Path::new(&dir), relaxed);
    cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
        point,
        1,
        FaultAction::Crash,
    )));
    let store = Store::open(cfg).unwrap();
    let result = store.append_batch(batch_items("crashing"));
    let mut out = std::io::stdout().lock();
    if result.is_ok() {
        writeln!(out, "BATCH_OK").unwrap();
        out.flush().unwrap();
    }
    store.close().unwrap();
    writeln!(out, "CLOSED").unwrap();
}

#[test]
fn crash_at_every_point() {
    let exe = std::env::current_exe().unwrap();
    let mut crashed = 0;
    for relaxed in [false, true] {
        for i in 0..points().len() {
            let dir = tempfile::tempdir().unwrap();
            let neighbours = write_neighbours(dir.path(), relaxed);
            let mut cmd = Command::new(&exe);
            cmd.args([
                "--exact",
                "fault_child_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_POINT, i.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
            if relaxed {
                cmd.env(CHILD_RELAXED, "1");
            }
            let mut child = cmd.spawn().unwrap();
            let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
                .lines()
                .map_while(Result::ok)
                .collect();
            let status = child.wait().unwrap();
            let acked = lines.iter().any(|l| l == "BATCH_OK");
            // Every child dies at its point (abort), before closing.
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(libc::SIGABRT),
                "{:?} (relaxed {relaxed}): {status:?}",
                points()[i]
            );
            assert!(!lines.iter().any(|l| l == "CLOSED"), "{:?}", points()[i]);
            crashed += 1;
            check_after(dir.path(), relaxed, &neighbours, acked);
        }
    }
    assert_eq!(crashed, 2 * points().len());
}

/// The original design reused sequence numbers after a crash that followed
/// a checkpointed open. Here: open through the checkpoint, append, get
/// killed, reopen: every acknowledged event is there and no sequence repeats.
#[test]
fn crash_after_a_checkpointed_open_keeps_sequences_unique() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    {
        let store = open(dir.path());
        for i in 0..20 {
            store.append(&coord("e", "s"), KIND_A, &i).unwrap();
        }
        store.close().unwrap();
    }
    let mut acked = Vec::new();
    for round in 0..3 {
        // The child opens through the checkpoint (written by the last close)
        // and is killed mid-append.
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "seq_child_process",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let reader = BufReader::new(child.stdout.take().unwrap());
        let mut opened_by = String::new();
        for line in reader.lines() {
            let line = line.unwrap();
            // libtest may print its own text before ours on the first line.
            if let Some(at) = line.find("OPEN ") {
                opened_by = line[at + 5..].to_owned();
            } else if let Some(rest) = line.find("ACK ").map(|at| &line[at + 4..]) {
                let (id, seq) = rest.split_once(' ').unwrap();
                acked.push((id.parse::<u128>().unwrap(), seq.parse::<u64>().unwrap()));
                if acked.len() >= 30 * (round + 1) {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            opened_by,
            format!("{:?}", OpenPath::Checkpoint),
            "round {round}"
        );
        let store = open(dir.path());
        let all = store.query(&Region::all());
        let seqs: HashSet<u64> = all.iter().map(|e| e.global_sequence).collect();
        assert_eq!(seqs.len(), all.len(), "a sequence number repeats");
        for (id, seq) in &acked {
            let e = all
                .iter()
                .find(|e| e.event_id == *id)
                .expect("acknowledged event lost");
            assert_eq!(e.global_sequence, *seq);
        }
        // Close writes a fresh checkpoint for the next round.
        store.close().unwrap();
    }
}

#[test]
#[ignore = "helper: run as a child process by crash_after_a_checkpointed_open_keeps_sequences_unique"]
fn seq_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let store = Store::open(StoreConfig::new(&dir)).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "OPEN {:?}", store.diagnostics().recovery.open_path).unwrap();
    for i in 0u64.. {
        let r = store.append(&coord("e", "s"), KIND_A, &i).unwrap();
        writeln!(out, "ACK {} {}", r.event_id, r.sequence).unwrap();
        out.flush().unwrap();
    }
}

/// A torn write through the I/O seam (issue 14, item 2): in each mode the
/// k-th write to a segment file (durable mode's group `pwrite`, relaxed
/// mode's copy into the map) reaches the file only in part and the disk
/// halts. Every later operation fails without touching the files; the
/// reopened store cuts the torn frame off and keeps every event whose
/// append returned `Ok` (relaxed mode: after `sync()` returned `Ok`).
#[test]
fn a_torn_segment_write_halts_the_disk_and_reopen_cuts_only_the_torn_tail() {
    use batpak::store::IoOp;
    for (relaxed, op) in [(false, IoOp::Write), (true, IoOp::WriteMapped)] {
        for nth in [3u64, 7, 12] {
            let dir = tempfile::tempdir().unwrap();
            let injector = Arc::new(CountdownInjector::new(
                InjectionPoint::Io(op),
                nth,
                FaultAction::Tear,
            ));
            let mut cfg = StoreConfig::new(dir.path()).with_segment_max_bytes(64 * 1024);
            if relaxed {
                cfg = cfg.with_sync_every_n_events(1_000_000);
            }
            cfg.fault_injector = Some(injector.clone());
            let store = Store::open(cfg).unwrap();
            let mut kept = Vec::new();
            let mut failed = false;
            for i in 0..40u32 {
                let r = store.append(
                    &coord("torn", "s"),
                    KIND_A,
                    &json!({ "i": i, "pad": "t".repeat(200) }),
                );
                match r {
                    Ok(r) if relaxed => {
                        if store.sync().is_ok() {
                            kept.push(r.event_id);
                        } else {
                            failed = true;
                            break;
                        }
                    }
                    Ok(r) => kept.push(r.event_id),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            assert!(
                injector.fired(),
                "relaxed {relaxed}, nth {nth}: the tear fired"
            );
            assert!(
                failed,
                "relaxed {relaxed}, nth {nth}: the torn write was reported"
            );
            // The disk is gone: nothing more reaches the files.
            assert!(store
                .append(&coord("torn", "s"), KIND_A, &json!({ "late": true }))
                .is_err());
            drop(store);

            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            let ids: Vec<u128> = store.stream("torn").iter().map(|e| e.event_id).collect();
            for id in &kept {
                assert!(
                    ids.contains(id),
                    "relaxed {relaxed}, nth {nth}: kept event lost"
                );
            }
            // Only the torn append (and, relaxed, the unsynced ones) is gone.
            assert!(ids.len() <= kept.len() + 1, "relaxed {relaxed}, nth {nth}");
            assert!(
                store.verify().unwrap().is_clean(),
                "relaxed {relaxed}, nth {nth}"
            );
            store.close().unwrap();
        }
    }
}
