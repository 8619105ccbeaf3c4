//! Compaction: Merge, Retention and Tombstone keep survivors readable with
//! their ids, sequences and chains; removed events' keys keep working; it
//! runs while appends continue; and a crash or failure at any step leaves the
//! old state or the new one.

mod common;

use batpak::prelude::*;
use batpak::store::segment::CompactionResult;
use batpak::store::{CountdownInjector, FaultAction, InjectionPoint, OpenPath};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const SEGMENT: u64 = 4096;

/// What the tests compare: id, entity, kind, payload and clock by global sequence.
type State = BTreeMap<u64, (u128, String, EventKind, Value, u32)>;

fn small(dir: &Path) -> StoreConfig {
    StoreConfig::new(dir).with_segment_max_bytes(SEGMENT)
}

/// The stores the crash-protocol tests compact: three segments per output.
fn packed(dir: &Path) -> StoreConfig {
    small(dir).with_compaction_target_bytes(3 * SEGMENT)
}

/// Everything observable about the events, by global sequence.
fn snapshot(store: &Store) -> State {
    store
        .query(&Region::all())
        .into_iter()
        .map(|e| {
            let ev = store.get(e.event_id).expect("every listed event reads");
            (
                e.global_sequence,
                (
                    e.event_id,
                    e.coord.entity().to_owned(),
                    e.kind,
                    ev.event.payload,
                    e.clock,
                ),
            )
        })
        .collect()
}

/// Every entity's stream links: each event's prev_hash is its predecessor's
/// hash, unless the predecessor was removed (`gaps` allowed).
fn check_chains(store: &Store, gaps_allowed: bool) {
    let entities: std::collections::BTreeSet<String> = store
        .query(&Region::all())
        .into_iter()
        .map(|e| e.coord.entity().to_owned())
        .collect();
    for entity in entities {
        let stream = store.stream(&entity);
        for pair in stream.windows(2) {
            let linked = pair[1].hash_chain.prev_hash == pair[0].hash_chain.event_hash;
            let adjacent = pair[1].clock == pair[0].clock + 1;
            assert!(
                linked || (gaps_allowed && !adjacent),
                "{entity}: clock {} does not link to clock {}",
                pair[1].clock,
                pair[0].clock
            );
        }
    }
}

/// 300 events over 5 entities (with batches), many small segments.
fn fill(store: &Store) -> Vec<AppendReceipt> {
    let mut receipts = Vec::new();
    for i in 0..200u32 {
        let c = coord(&format!("acct:{}", i % 5), "bank");
        let kind = if i % 2 == 0 { KIND_A } else { KIND_B };
        receipts.push(
            store
                .append_with_options(
                    &c,
                    kind,
                    &json!({"i": i, "pad": "x".repeat(40)}),
                    AppendOptions::new().with_idempotency(10_000 + u128::from(i)),
                )
                .unwrap(),
        );
    }
    for b in 0..20u32 {
        let items = (0..5u32)
            .map(|k| {
                let i = 200 + b * 5 + k;
                BatchAppendItem::new(
                    coord(&format!("acct:{}", i % 5), "bank"),
                    if i % 2 == 0 { KIND_A } else { KIND_B },
                    &json!({"i": i, "pad": "y".repeat(40)}),
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .unwrap()
            })
            .collect();
        receipts.extend(store.append_batch(items).unwrap());
    }
    receipts
}

fn i_of(v: &Value) -> u64 {
    v["i"].as_u64().expect("payload has i")
}

#[test]
fn merge_keeps_every_event_ids_sequences_and_chains() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    fill(&store);
    let before = snapshot(&store);
    let segments_before = segment_files(dir.path()).len();
    let mut cursor = store.cursor_guaranteed(&Region::all());
    let first_half = cursor.poll_batch(150);
    assert_eq!(first_half.len(), 150);

    // Reopened with larger segments, the small sealed ones merge.
    drop(cursor);
    store.close().unwrap();
    let store = Store::open(small(dir.path()).with_segment_max_bytes(4 * SEGMENT)).unwrap();
    let mut cursor = store.cursor_from(&Region::all(), Some(first_half[149].global_sequence));
    let result = store.compact(&CompactionConfig::default()).unwrap();
    assert!(result.segments_removed >= segments_before / 2, "{result:?}");
    assert!(result.bytes_reclaimed > 0, "{result:?}");
    assert_eq!(result.events_removed, 0);
    assert_eq!(
        segment_files(dir.path()).len(),
        segments_before - result.segments_removed
    );
    assert_eq!(snapshot(&store), before, "every event reads the same");
    check_chains(&store, false);
    // A cursor opened before continues exactly where it was.
    let rest: Vec<u64> = std::iter::from_fn(|| cursor.poll())
        .map(|e| e.global_sequence)
        .collect();
    assert_eq!(rest, before.keys().copied().skip(150).collect::<Vec<_>>());
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    store.close().unwrap();

    let store = Store::open(small(dir.path()).with_segment_max_bytes(4 * SEGMENT)).unwrap();
    assert_eq!(snapshot(&store), before, "the same after reopening");
    // Appends continue with fresh sequences and linked chains.
    let r = store
        .append(&coord("acct:1", "bank"), KIND_A, &json!({"i": 999}))
        .unwrap();
    assert_eq!(r.sequence, *before.keys().last().unwrap() + 1);
    check_chains(&store, false);
}

/// Everything a reader can observe, except where the frames lie: every
/// entry (ids, links, clock, hash chain, sequence), every event as `get`
/// returns it, every entity's stream and the ancestry of its newest event.
#[derive(Debug, PartialEq)]
struct View {
    entries: Vec<IndexEntry>,
    events: Vec<StoredEvent<Value>>,
    streams: BTreeMap<String, Vec<IndexEntry>>,
    ancestry: BTreeMap<String, Vec<(u128, Option<HashChain>)>>,
}

fn without_position(mut e: IndexEntry) -> IndexEntry {
    e.disk_pos = DiskPos::default();
    e
}

fn view(store: &Store) -> View {
    let entries: Vec<IndexEntry> = store
        .query(&Region::all())
        .into_iter()
        .map(without_position)
        .collect();
    let events = entries
        .iter()
        .map(|e| store.get(e.event_id).expect("every listed event reads"))
        .collect();
    let entities: std::collections::BTreeSet<String> = entries
        .iter()
        .map(|e| e.coord.entity().to_owned())
        .collect();
    let mut streams = BTreeMap::new();
    let mut ancestry = BTreeMap::new();
    for entity in entities {
        let stream: Vec<IndexEntry> = store
            .stream(&entity)
            .into_iter()
            .map(without_position)
            .collect();
        let newest = stream.last().expect("an entity has events").event_id;
        let walk = store
            .walk_ancestors(newest, usize::MAX)
            .into_iter()
            .map(|e| (e.event.header.event_id, e.event.hash_chain))
            .collect::<Vec<_>>();
        assert_eq!(
            walk.len(),
            stream.len(),
            "{entity}: the walk reaches clock 0"
        );
        ancestry.insert(entity.clone(), walk);
        streams.insert(entity, stream);
    }
    View {
        entries,
        events,
        streams,
        ancestry,
    }
}

/// (inode, modification time, length) of every file in `dir`, by name:
/// whether a compaction rewrote anything.
fn file_identities(dir: &Path) -> BTreeMap<String, (u64, i64, i64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.ino(), m.mtime(), m.mtime_nsec(), m.len()),
            )
        })
        .collect()
}

/// Events of about 200 bytes over 7 entities with causal links, until the
/// store has `sealed` sealed segments; one event of `big_at` is 70 KiB, in
/// a segment of its own that no merge target of 64 KiB can take.
fn fill_segments(store: &Store, dir: &Path, sealed: usize, big_at: usize) -> u64 {
    let mut i = 0u64;
    let mut previous: Option<u128> = None;
    let mut big_done = false;
    while segment_files(dir).len() < sealed + 1 {
        let pad = if !big_done && segment_files(dir).len() == big_at {
            big_done = true;
            "B".repeat(70 * 1024)
        } else {
            "m".repeat(60)
        };
        let mut options = AppendOptions::new();
        if let Some(p) = previous.filter(|_| i.is_multiple_of(3)) {
            options.causation_id = Some(p);
            options.correlation_id = Some(p);
        }
        let r = store
            .append_with_options(
                &coord(&format!("merge:{}", i % 7), "s"),
                if i.is_multiple_of(2) { KIND_A } else { KIND_B },
                &json!({"i": i, "pad": pad}),
                options,
            )
            .unwrap();
        previous = Some(r.event_id);
        i += 1;
    }
    i
}

#[test]
fn merge_packs_small_segments_into_far_fewer_and_then_has_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path()).with_sync_every_n_events(64)).unwrap();
    // 100 sealed segments of 4 KiB and, between them, one of 70 KiB.
    fill_segments(&store, dir.path(), 101, 51);
    let before = view(&store);
    let files_before = file_identities(dir.path());
    let segments_before = segment_files(dir.path());
    assert_eq!(segments_before.len(), 102, "101 sealed and the active one");
    let big = segments_before
        .iter()
        .find(|p| std::fs::metadata(p).unwrap().len() > 64 * 1024)
        .expect("the big event has a segment of its own")
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // The default target: 16 x 4 KiB of frames per segment.
    let result = store.compact(&CompactionConfig::default()).unwrap();
    let segments_after = segment_files(dir.path()).len();
    // Each side of the big segment holds 50 segments of at most 4,032 bytes
    // of frames; a group is closed only when the next segment would take it
    // past 65,536 bytes, so every group but the last holds more than
    // 61,504: at most 4 groups a side.
    assert!(segments_after <= 4 + 1 + 4 + 1, "{segments_after} files");
    assert_eq!(
        result.segments_removed,
        segments_before.len() - segments_after
    );
    assert!(result.bytes_reclaimed > 0, "{result:?}");
    assert_eq!((result.events_removed, result.events_tombstoned), (0, 0));
    let files_after = file_identities(dir.path());
    assert_eq!(
        files_after.get(&big),
        files_before.get(&big),
        "a segment too big to merge with a neighbour is left alone"
    );
    assert_eq!(view(&store), before, "every event reads the same");
    check_chains(&store, false);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");

    // Nothing left to merge: no file is touched.
    let again = store.compact(&CompactionConfig::default()).unwrap();
    assert_eq!(again, CompactionResult::default());
    assert_eq!(file_identities(dir.path()), files_after);

    // The same after reopening, from the checkpoint and from the footers.
    store.close().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    assert_eq!(store.diagnostics().recovery.open_path, OpenPath::Checkpoint);
    assert_eq!(view(&store), before);
    store.close().unwrap();
    remove_checkpoint(dir.path());
    let store = Store::open(small(dir.path())).unwrap();
    let recovery = store.diagnostics().recovery;
    assert_eq!(recovery.open_path, OpenPath::Footers);
    assert_eq!(recovery.footers_rejected, 0);
    assert!(recovery.damaged.is_empty(), "{:?}", recovery.damaged);
    assert_eq!(view(&store), before);
    assert!(store.verify().unwrap().is_clean());
    let files = file_identities(dir.path());
    assert_eq!(
        store.compact(&CompactionConfig::default()).unwrap(),
        CompactionResult::default(),
        "still nothing to merge after reopening"
    );
    assert_eq!(file_identities(dir.path()), files);
    // Appends continue the sequence and the chains.
    let r = store
        .append(&coord("merge:3", "s"), KIND_A, &json!({"i": -1}))
        .unwrap();
    assert_eq!(
        r.sequence,
        before.entries.last().unwrap().global_sequence + 1
    );
    check_chains(&store, false);
}

/// Append small events until the owner has rotated `rotations` times.
fn append_until_rotated(store: &Store, dir: &Path, rotations: usize, from: u64) -> u64 {
    let target = segment_files(dir).len() + rotations;
    let mut i = from;
    while segment_files(dir).len() < target {
        store
            .append(
                &coord(&format!("follow:{}", i % 3), "s"),
                KIND_A,
                &json!({"i": i, "pad": "f".repeat(80)}),
            )
            .unwrap();
        i += 1;
    }
    i
}

#[test]
fn a_read_only_handle_follows_its_owner_across_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let owner = Store::open(small(dir.path()).with_compaction_target_bytes(1 << 20)).unwrap();
    let mut i = append_until_rotated(&owner, dir.path(), 3, 0);
    let reader = Store::open_read_only(small(dir.path())).unwrap();
    let everything = CompactionConfig {
        min_segments: 1,
        ..Default::default()
    };
    // Each round: the handle reads part of the segment the owner is
    // writing; the owner fills it and rotates (`rotations` times), merges
    // every sealed segment into one, and appends a little more.
    // With one rotation the segment the handle was reading is the last
    // input and gives the output its id; with more it is deleted, and the
    // output (named after a later segment) holds its frames.
    for (round, rotations) in [1, 3, 1, 2].into_iter().enumerate() {
        for _ in 0..3 {
            owner
                .append(&coord("follow:0", "s"), KIND_B, &json!({"i": i}))
                .unwrap();
            i += 1;
        }
        reader.refresh().unwrap();
        i = append_until_rotated(&owner, dir.path(), rotations, i);
        let result = owner.compact(&everything).unwrap();
        assert!(result.segments_removed > 0, "round {round}: {result:?}");
        for _ in 0..3 {
            owner
                .append(&coord("follow:1", "s"), KIND_B, &json!({"i": i}))
                .unwrap();
            i += 1;
        }
        reader.refresh().unwrap();
        assert_eq!(
            snapshot(&reader),
            snapshot(&owner),
            "round {round}: the handle sees exactly what the owner has"
        );
        check_chains(&reader, false);
    }
    // A cursor of the handle delivered every event once, in order.
    let mut cursor = reader.cursor_guaranteed(&Region::all());
    let seqs: Vec<u64> = std::iter::from_fn(|| cursor.poll())
        .map(|e| e.global_sequence)
        .collect();
    assert_eq!(seqs, snapshot(&owner).into_keys().collect::<Vec<_>>());
    // Its snapshot opens as the same store.
    let out = tempfile::tempdir().unwrap();
    reader.snapshot(&out.path().join("copy")).unwrap();
    let copy = Store::open_read_only(small(&out.path().join("copy"))).unwrap();
    assert_eq!(snapshot(&copy), snapshot(&owner));
    assert!(copy.diagnostics().recovery.damaged.is_empty());
    let report = reader.verify().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn retention_removes_rejected_events_and_keeps_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    let receipts = fill(&store);
    let before = snapshot(&store);
    // Remove every event whose i is divisible by 3, including batch members.
    let config = CompactionConfig {
        strategy: CompactionStrategy::Retention(Box::new(|e: &StoredEvent<Value>| {
            !i_of(&e.event.payload).is_multiple_of(3)
        })),
        min_segments: 1,
    };
    let result = store.compact(&config).unwrap();
    assert!(result.events_removed > 0);
    let after = snapshot(&store);
    let sealed_removed: Vec<u64> = before
        .iter()
        .filter(|(seq, _)| !after.contains_key(seq))
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(sealed_removed.len() as u64, result.events_removed);
    for (seq, ev) in &before {
        match after.get(seq) {
            Some(kept) => assert_eq!(kept, ev, "survivors are unchanged"),
            None => {
                assert_eq!(i_of(&ev.3) % 3, 0, "only rejected events go");
                assert!(matches!(store.get(ev.0), Err(StoreError::NotFound(_))));
            }
        }
    }
    // Survivors' global sequences and ids did not change, and no removed
    // event shows up in any query.
    assert!(store
        .by_fact(KIND_A)
        .iter()
        .all(|e| after.contains_key(&e.global_sequence)));
    assert_eq!(store.stats().event_count, after.len());
    check_chains(&store, true);

    // The key of a removed event still answers with its original receipt.
    let gone = receipts
        .iter()
        .enumerate()
        .find(|(i, r)| *i < 200 && !after.contains_key(&r.sequence))
        .map(|(i, r)| (i as u32, *r))
        .expect("a keyed event was removed");
    let (i, original) = gone;
    let retry = store
        .append_with_options(
            &coord(&format!("acct:{}", i % 5), "bank"),
            if i % 2 == 0 { KIND_A } else { KIND_B },
            &json!({"i": i}),
            AppendOptions::new().with_idempotency(10_000 + u128::from(i)),
        )
        .unwrap();
    assert_eq!(
        (retry.event_id, retry.sequence),
        (original.event_id, original.sequence)
    );
    assert_eq!(
        store.stats().event_count,
        after.len(),
        "the retry wrote nothing"
    );
    // The key stays the original kind's: another kind conflicts.
    assert!(matches!(
        store.append_with_options(
            &coord(&format!("acct:{}", i % 5), "bank"),
            if i % 2 == 0 { KIND_B } else { KIND_A },
            &json!({"i": i}),
            AppendOptions::new().with_idempotency(10_000 + u128::from(i)),
        ),
        Err(StoreError::IdempotencyConflict { .. })
    ));
    // A guaranteed cursor delivers exactly the survivors, in order.
    let mut cursor = store.cursor_guaranteed(&Region::all());
    let delivered: Vec<u64> = std::iter::from_fn(|| cursor.poll())
        .map(|e| e.global_sequence)
        .collect();
    assert_eq!(delivered, after.keys().copied().collect::<Vec<_>>());
    store.close().unwrap();

    // Reopened without the checkpoint, the scan meets survivors whose
    // predecessors were removed: gaps, not chain breaks.
    remove_checkpoint(dir.path());
    let store = Store::open(small(dir.path())).unwrap();
    assert_eq!(snapshot(&store), after);
    assert_eq!(store.diagnostics().recovery.chain_breaks, 0);
    let retry = store
        .append_with_options(
            &coord(&format!("acct:{}", i % 5), "bank"),
            if i % 2 == 0 { KIND_A } else { KIND_B },
            &json!({"i": i}),
            AppendOptions::new().with_idempotency(10_000 + u128::from(i)),
        )
        .unwrap();
    assert_eq!(retry.sequence, original.sequence, "after reopening too");
    assert!(matches!(
        store.append_with_options(
            &coord(&format!("acct:{}", i % 5), "bank"),
            if i % 2 == 0 { KIND_B } else { KIND_A },
            &json!({"i": i}),
            AppendOptions::new().with_idempotency(10_000 + u128::from(i)),
        ),
        Err(StoreError::IdempotencyConflict { .. })
    ));
    let next = store
        .append(&coord("acct:0", "bank"), KIND_A, &json!({"i": 1}))
        .unwrap();
    assert_eq!(
        next.sequence,
        *before.keys().last().unwrap() + 1,
        "no sequence reused"
    );
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn removing_an_entitys_newest_events_keeps_its_clock_and_chain_going() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    let c = coord("doomed", "s");
    for i in 0..5u64 {
        store
            .append(&c, KIND_A, &json!({"i": i, "pad": "p".repeat(900)}))
            .unwrap();
    }
    // Something else fills segments so that all of `doomed` is sealed.
    for i in 0..20u64 {
        store
            .append(
                &coord("other", "s"),
                KIND_A,
                &json!({"i": i, "pad": "q".repeat(900)}),
            )
            .unwrap();
    }
    let last_hash = store.stream("doomed").last().unwrap().hash_chain.event_hash;
    let config = CompactionConfig {
        strategy: CompactionStrategy::Retention(Box::new(|e: &StoredEvent<Value>| {
            e.coordinate.entity() != "doomed"
        })),
        min_segments: 1,
    };
    assert_eq!(store.compact(&config).unwrap().events_removed, 5);
    assert!(store.stream("doomed").is_empty());
    let check = |store: &Store, clock: u32, prev: [u8; 32]| {
        let r = store
            .append_with_options(
                &c,
                KIND_A,
                &json!({"i": clock}),
                AppendOptions::new().with_cas(clock - 1),
            )
            .unwrap();
        let ev = store.get(r.event_id).unwrap();
        assert_eq!(ev.event.header.position.sequence, clock, "clock continues");
        assert_eq!(
            ev.event.hash_chain.unwrap().prev_hash,
            prev,
            "chain continues"
        );
        ev.event.hash_chain.unwrap().event_hash
    };
    let next_hash = check(&store, 5, last_hash);
    store.close().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    check(&store, 6, next_hash);
    // And after the appended events are removed too.
    for i in 0..20u64 {
        store
            .append(
                &coord("other", "s"),
                KIND_A,
                &json!({"i": i, "pad": "q".repeat(900)}),
            )
            .unwrap();
    }
    let newest = store.stream("doomed").last().unwrap().hash_chain.event_hash;
    assert_eq!(store.compact(&config).unwrap().events_removed, 2);
    store.close().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    check(&store, 7, newest);
}

#[test]
fn tombstone_redacts_but_keeps_the_chain_and_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    let receipts = fill(&store);
    let before = snapshot(&store);
    let kind_a_before = store.by_fact(KIND_A).len();
    let config = CompactionConfig {
        strategy: CompactionStrategy::Tombstone(Box::new(|e: &StoredEvent<Value>| {
            !(e.event.header.event_kind == KIND_A && i_of(&e.event.payload).is_multiple_of(4))
        })),
        min_segments: 1,
    };
    let result = store.compact(&config).unwrap();
    assert_eq!(result.events_removed, 0);
    assert!(result.events_tombstoned > 0);
    let after = snapshot(&store);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "nothing removed"
    );
    let mut redacted = 0;
    for (seq, (id, entity, kind, payload, clock)) in &after {
        let old = &before[seq];
        assert_eq!((id, entity, clock), (&old.0, &old.1, &old.4));
        if *kind == EventKind::TOMBSTONE {
            redacted += 1;
            assert_eq!(*payload, Value::Null);
            assert_eq!(old.2, KIND_A);
            let ev = store.get(*id).unwrap();
            assert_eq!(ev.event.header.event_kind, EventKind::TOMBSTONE);
        } else {
            assert_eq!((kind, payload), (&old.2, &old.3));
        }
    }
    assert_eq!(redacted, result.events_tombstoned);
    // A guaranteed cursor delivers redacted events with kind TOMBSTONE.
    let mut cursor = store.cursor_guaranteed(&Region::all());
    let kinds: Vec<(u64, EventKind)> = std::iter::from_fn(|| cursor.poll())
        .map(|e| (e.global_sequence, e.kind))
        .collect();
    assert_eq!(
        kinds,
        after.iter().map(|(seq, v)| (*seq, v.2)).collect::<Vec<_>>()
    );
    assert_eq!(
        store.by_fact(KIND_A).len() as u64,
        kind_a_before as u64 - redacted
    );
    assert_eq!(store.by_fact(EventKind::TOMBSTONE).len() as u64, redacted);
    check_chains(&store, false);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");

    // A redacted event's key still answers with its receipt.
    let (i, r) = receipts
        .iter()
        .enumerate()
        .take(200)
        .find(|(_, r)| after[&r.sequence].2 == EventKind::TOMBSTONE)
        .unwrap();
    let retry = store
        .append_with_options(
            &coord(&format!("acct:{}", i % 5), "bank"),
            KIND_A,
            &json!({"i": i}),
            AppendOptions::new().with_idempotency(10_000 + i as u128),
        )
        .unwrap();
    assert_eq!(retry.sequence, r.sequence);
    // The key still belongs to the original kind: another kind conflicts.
    assert!(matches!(
        store.append_with_options(
            &coord(&format!("acct:{}", i % 5), "bank"),
            KIND_B,
            &json!({"i": i}),
            AppendOptions::new().with_idempotency(10_000 + i as u128),
        ),
        Err(StoreError::IdempotencyConflict { .. })
    ));
    store.close().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    assert_eq!(snapshot(&store), after);
    check_chains(&store, false);
    // Compacting again (Merge) keeps the redactions.
    store
        .compact(&CompactionConfig {
            min_segments: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(snapshot(&store), after);
}

#[test]
fn compaction_runs_while_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    // Each time a compaction has written a new segment it lets the writer
    // append 5 events and waits for them: appends provably overlap it.
    let appends = Arc::new(AppendsDuringCompaction::default());
    let mut cfg = small(dir.path())
        .with_sync_every_n_events(16)
        .with_sync_mode(SyncMode::SyncData);
    cfg.fault_injector = Some(appends.clone());
    let store = Arc::new(Store::open(cfg).unwrap());
    fill(&store);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop, appends) = (store.clone(), stop.clone(), appends.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0u64.. {
                if !appends.take_permit(&stop) {
                    break;
                }
                let r = store
                    .append(
                        &coord(&format!("live:{}", i % 3), "s"),
                        KIND_B,
                        &json!({"i": 1000 + i, "pad": "z".repeat(30)}),
                    )
                    .unwrap();
                acked.push(r.event_id);
                appends.appended.fetch_add(1, Ordering::AcqRel);
            }
            acked
        })
    };
    let mut removed = 0;
    for round in 0..6u64 {
        let config = CompactionConfig {
            strategy: CompactionStrategy::Retention(Box::new(move |e: &StoredEvent<Value>| {
                // Only the initial events may go; live ones are kept.
                i_of(&e.event.payload) >= 1000 || i_of(&e.event.payload) % 7 != round
            })),
            min_segments: 1,
        };
        removed += store.compact(&config).unwrap().events_removed;
    }
    stop.store(true, Ordering::Release);
    let acked = writer.join().unwrap();
    assert!(removed > 0, "the compactions removed events");
    assert!(
        acked.len() >= 30,
        "appended during compactions: {}",
        acked.len()
    );
    for id in &acked {
        store.get(*id).expect("every acknowledged append survives");
    }
    check_chains(&store, true);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");
    let live = snapshot(&store);
    let store = Arc::into_inner(store).unwrap();
    store.close().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    assert_eq!(snapshot(&store), live);
}

/// Lets a writer append only while a compaction is in progress: at each
/// segment a compaction writes, 5 appends are permitted and awaited.
#[derive(Default)]
struct AppendsDuringCompaction {
    permits: std::sync::atomic::AtomicU64,
    appended: std::sync::atomic::AtomicU64,
}

impl AppendsDuringCompaction {
    /// Wait for a permit; `false` once `stop` is set.
    fn take_permit(&self, stop: &std::sync::atomic::AtomicBool) -> bool {
        loop {
            if stop.load(Ordering::Acquire) {
                return false;
            }
            let n = self.permits.load(Ordering::Acquire);
            if n > 0
                && self
                    .permits
                    .compare_exchange(n, n - 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                return true;
            }
            std::thread::yield_now();
        }
    }
}

impl batpak::store::FaultInjector for AppendsDuringCompaction {
    fn on(&self, point: InjectionPoint) -> FaultAction {
        if point == InjectionPoint::CompactionSegmentWritten {
            let target = self.appended.load(Ordering::Acquire) + 5;
            self.permits.fetch_add(5, Ordering::AcqRel);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while self.appended.load(Ordering::Acquire) < target {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no append during compaction"
                );
                std::thread::yield_now();
            }
        }
        FaultAction::Continue
    }
}

#[test]
fn min_segments_and_read_only_are_respected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    // Exactly one sealed segment (and the active one).
    let mut i = 0u64;
    while segment_files(dir.path()).len() < 2 {
        store
            .append(
                &coord("a", "s"),
                KIND_A,
                &json!({"i": i, "pad": "m".repeat(200)}),
            )
            .unwrap();
        i += 1;
    }
    let drop_all = || CompactionConfig {
        strategy: CompactionStrategy::Retention(Box::new(|_: &StoredEvent<Value>| false)),
        min_segments: 2,
    };
    let files = file_names(dir.path());
    let r = store.compact(&drop_all()).unwrap();
    assert_eq!(
        r,
        Default::default(),
        "one sealed segment is below min_segments 2"
    );
    assert_eq!(file_names(dir.path()), files);
    assert_eq!(store.stats().event_count as u64, i);
    let r = store
        .compact(&CompactionConfig {
            min_segments: 1,
            ..drop_all()
        })
        .unwrap();
    assert!(r.events_removed > 0, "{r:?}");
    store.close().unwrap();
    let ro = Store::open_read_only(StoreConfig::new(dir.path())).unwrap();
    assert!(matches!(
        ro.compact(&CompactionConfig::default()),
        Err(StoreError::ReadOnly)
    ));
}

#[test]
fn projections_see_compacted_history() {
    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Sum(u64);
    impl EventSourced<Value> for Sum {
        fn from_events(events: &[Event<Value>]) -> Option<Self> {
            let mut s = Sum(0);
            for e in events {
                s.apply_event(e);
            }
            Some(s)
        }
        fn apply_event(&mut self, e: &Event<Value>) {
            self.0 += e.payload["i"].as_u64().unwrap_or(0);
        }
        fn relevant_event_kinds() -> &'static [EventKind] {
            &[KIND_A]
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    for i in 0..40u64 {
        store
            .append(
                &coord("sum", "s"),
                KIND_A,
                &json!({"i": i, "pad": "w".repeat(200)}),
            )
            .unwrap();
    }
    let before: Sum = store
        .project("sum", &Freshness::Consistent)
        .unwrap()
        .unwrap();
    assert_eq!(before.0, (0..40).sum::<u64>());
    let config = CompactionConfig {
        strategy: CompactionStrategy::Tombstone(Box::new(|e: &StoredEvent<Value>| {
            i_of(&e.event.payload).is_multiple_of(2)
        })),
        min_segments: 1,
    };
    let redacted = store.compact(&config).unwrap().events_tombstoned;
    assert!(redacted > 0);
    let after: Sum = store
        .project("sum", &Freshness::Consistent)
        .unwrap()
        .unwrap();
    let still_odd: u64 = store
        .stream("sum")
        .iter()
        .filter(|e| e.kind == KIND_A)
        .map(|e| i_of(&store.get(e.event_id).unwrap().event.payload))
        .sum();
    assert_eq!(after.0, still_odd, "redacted events leave the projection");
    assert!(after.0 < before.0);
}

// ---- failures and crashes at every step ------------------------------------

/// Whether a failure at `point` comes after the commit point (the intent is
/// durable): then the compaction happens, else it does not.
fn after_commit(point: InjectionPoint) -> bool {
    matches!(
        point,
        InjectionPoint::CompactionCommitted | InjectionPoint::CompactionInstalling
    )
}

fn compaction_points() -> Vec<(InjectionPoint, u64)> {
    use InjectionPoint::*;
    vec![
        (CompactionSegmentWritten, 1),
        (CompactionSegmentWritten, 2),
        (CompactionPrepared, 1),
        (CompactionCommitted, 1),
        (CompactionInstalling, 1),
        (CompactionInstalling, 2),
        (CompactionInstalling, 3),
        (CompactionInstalling, 5),
        (CompactionInstalling, 8),
    ]
}

/// The compactions interrupted at every step: each packs several inputs
/// into each of several outputs (a target of 3 segments), so an
/// interruption can fall between outputs, between renames and between
/// deletions.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Removes a third of the events.
    Retention,
    /// Merges runs of small segments around one too big to merge.
    Merge,
}

const PLANS: [Plan; 2] = [Plan::Retention, Plan::Merge];

impl Plan {
    fn config(self) -> CompactionConfig {
        let strategy = match self {
            Plan::Retention => CompactionStrategy::Retention(Box::new(|e: &StoredEvent<Value>| {
                !i_of(&e.event.payload).is_multiple_of(3)
            })),
            Plan::Merge => CompactionStrategy::Merge,
        };
        CompactionConfig {
            strategy,
            min_segments: 1,
        }
    }

    fn fill(self, store: &Store) {
        fill(store);
        if let Plan::Merge = self {
            store
                .append(
                    &coord("big", "s"),
                    KIND_A,
                    &json!({"i": 5000, "pad": "B".repeat(4 * SEGMENT as usize)}),
                )
                .unwrap();
            for i in 0..60u64 {
                store
                    .append(
                        &coord(&format!("acct:{}", i % 5), "bank"),
                        KIND_B,
                        &json!({"i": 6000 + i, "pad": "a".repeat(40)}),
                    )
                    .unwrap();
            }
        }
    }
}

fn segment_names(dir: &Path) -> Vec<String> {
    file_names(dir)
        .into_iter()
        .filter(|n| n.ends_with(".seg"))
        .collect()
}

/// The store before and after the compaction, and its segment files.
struct Expected {
    old: State,
    new: State,
    old_segments: Vec<String>,
    new_segments: Vec<String>,
}

/// The store after a failed or crashed compaction holds exactly the old
/// events in the old files or exactly the new ones in the new files.
/// Returns whether it is the new state.
fn old_or_new(dir: &Path, expected: &Expected) -> bool {
    let store = Store::open(small(dir)).unwrap();
    let now = snapshot(&store);
    let segments = segment_names(dir);
    let is_new = segments == expected.new_segments;
    assert!(
        is_new || segments == expected.old_segments,
        "a mix of old and new files: {segments:?}"
    );
    let state = if is_new { &expected.new } else { &expected.old };
    assert!(
        &now == state,
        "the events do not match the files: {} events, old {}, new {}",
        now.len(),
        expected.old.len(),
        expected.new.len()
    );
    assert!(store.diagnostics().recovery.damaged.is_empty());
    assert!(store.verify().unwrap().is_clean());
    check_chains(&store, true);
    // The store stays usable.
    store
        .append(&coord("after", "s"), KIND_A, &json!({"i": 1}))
        .unwrap();
    store.close().unwrap();
    let names = file_names(dir);
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".tmp") || n.ends_with(".next") || n.ends_with(".intent")),
        "temporary files left: {names:?}"
    );
    is_new
}

/// The states and files before and after `plan`, the after computed on a copy.
fn expected(dir: &Path, plan: Plan) -> Expected {
    let store = Store::open(small(dir)).unwrap();
    plan.fill(&store);
    let old = snapshot(&store);
    store.close().unwrap();
    let copy = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
    }
    let store = Store::open(packed(copy.path())).unwrap();
    let result = store.compact(&plan.config()).unwrap();
    let new = snapshot(&store);
    let expected = Expected {
        old,
        new,
        old_segments: segment_names(dir),
        new_segments: segment_names(copy.path()),
    };
    // Several outputs, each packing several inputs.
    assert!(
        expected.new_segments.len() >= 4
            && expected.new_segments.len() * 2 <= expected.old_segments.len(),
        "{plan:?}: {} segments became {} ({result:?})",
        expected.old_segments.len(),
        expected.new_segments.len()
    );
    expected
}

#[test]
fn a_failure_at_any_step_leaves_old_or_new_state() {
    for plan in PLANS {
        for (point, nth) in compaction_points() {
            let dir = tempfile::tempdir().unwrap();
            let expected = expected(dir.path(), plan);
            let mut cfg = packed(dir.path());
            cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
                point,
                nth,
                FaultAction::Fail,
            )));
            let store = Store::open(cfg).unwrap();
            let result = store.compact(&plan.config());
            assert!(result.is_err(), "{plan:?}: {point:?} #{nth} should fail");
            // The running store still serves one consistent view.
            let live = snapshot(&store);
            assert!(
                live == expected.old || live == expected.new,
                "{plan:?} {point:?}: live view is a mix ({} events)",
                live.len()
            );
            drop(store);
            assert_eq!(
                old_or_new(dir.path(), &expected),
                after_commit(point),
                "{plan:?} {point:?} #{nth}: the new state exactly when the failure came after the commit"
            );
        }
    }
}

const CHILD_DIR: &str = "BATPAK_COMPACT_CHILD_DIR";
const CHILD_POINT: &str = "BATPAK_COMPACT_CHILD_POINT";
const CHILD_PLAN: &str = "BATPAK_COMPACT_CHILD_PLAN";

#[test]
#[ignore = "helper: run as a child process by a_crash_at_any_step_leaves_old_or_new_state"]
fn compaction_crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let i: usize = std::env::var(CHILD_POINT).unwrap().parse().unwrap();
    let plan: usize = std::env::var(CHILD_PLAN).unwrap().parse().unwrap();
    let (point, nth) = compaction_points()[i];
    let mut cfg = packed(Path::new(&dir));
    cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
        point,
        nth,
        FaultAction::Crash,
    )));
    let store = Store::open(cfg).unwrap();
    println!("OPEN");
    let _ = store.compact(&PLANS[plan].config());
    println!("SURVIVED");
}

#[test]
fn a_crash_at_any_step_leaves_old_or_new_state() {
    let exe = std::env::current_exe().unwrap();
    for (p, plan) in PLANS.into_iter().enumerate() {
        for (i, (point, nth)) in compaction_points().into_iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let expected = expected(dir.path(), plan);
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "compaction_crash_child",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_DIR, dir.path())
                .env(CHILD_POINT, i.to_string())
                .env(CHILD_PLAN, p.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
                .lines()
                .map_while(Result::ok)
                .collect();
            let status = child.wait().unwrap();
            // The harness prints "test <name> ... " before the child's first line.
            assert!(lines.iter().any(|l| l.ends_with("OPEN")), "{lines:?}");
            assert!(
                !status.success(),
                "{plan:?} point {i} did not crash: {lines:?}"
            );
            assert_eq!(
                old_or_new(dir.path(), &expected),
                after_commit(point),
                "{plan:?} {point:?} #{nth}: the new state exactly when the crash came after the commit"
            );
        }
    }
}

#[test]
fn read_only_open_sees_a_pending_compaction_as_finished() {
    for plan in PLANS {
        let dir = tempfile::tempdir().unwrap();
        let expected = expected(dir.path(), plan);
        let mut cfg = packed(dir.path());
        // Some outputs renamed into place, no input deleted yet.
        cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
            InjectionPoint::CompactionInstalling,
            4,
            FaultAction::Fail,
        )));
        let store = Store::open(cfg).unwrap();
        assert!(store.compact(&plan.config()).is_err());
        let names_before = file_names(dir.path());
        assert!(names_before.iter().any(|n| n == "compact.intent"));
        assert!(names_before.iter().any(|n| n.ends_with(".tmp")));
        let ro = Store::open_read_only(small(dir.path())).unwrap();
        assert!(
            snapshot(&ro) == expected.new,
            "{plan:?}: the read-only view is the finished compaction"
        );
        assert!(ro.diagnostics().recovery.damaged.is_empty());
        let report = ro.verify().unwrap();
        assert!(report.is_clean(), "{plan:?}: {report}");
        assert_eq!(
            file_names(dir.path()),
            names_before,
            "read-only changes nothing"
        );
    }
}

/// A cursor that already buffered entries (it reads windows of up to 1,024
/// slots) delivers what a compaction since left: a removed event not at
/// all, a redacted one with kind TOMBSTONE, and a kind-filtered cursor no
/// longer delivers a redacted event of its kind; merged events carry their
/// new positions. Before the fix, the buffered entries were handed out as
/// they were before the compaction.
#[test]
fn cursors_that_buffered_entries_see_a_compaction_that_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    fill(&store);
    let mut all = store.cursor_guaranteed(&Region::all());
    let mut of_a = store.cursor_guaranteed(&Region::all().with_fact(KindFilter::Exact(KIND_A)));
    let mut merged = store.cursor_guaranteed(&Region::entity("acct:1"));
    let first_all = all.poll().unwrap().global_sequence;
    let first_a = of_a.poll().unwrap().global_sequence;
    assert!(merged.poll().is_some());

    // Merge first: positions change, nothing else.
    store
        .compact(&CompactionConfig {
            strategy: CompactionStrategy::Merge,
            min_segments: 1,
        })
        .unwrap();
    let rest = merged.poll_batch(10_000);
    assert!(!rest.is_empty());
    for e in &rest {
        let now = store
            .stream("acct:1")
            .into_iter()
            .find(|n| n.event_id == e.event_id)
            .unwrap();
        assert_eq!(
            e.disk_pos.offset, now.disk_pos.offset,
            "position after the merge"
        );
        assert_eq!(e.disk_pos.segment_id, now.disk_pos.segment_id);
    }

    // Payload i % 3 == 0 of kind A is redacted, i % 3 == 1 of kind B removed.
    let tombstone = CompactionConfig {
        strategy: CompactionStrategy::Tombstone(Box::new(|e: &StoredEvent<Value>| {
            !(e.event.header.event_kind == KIND_A && i_of(&e.event.payload).is_multiple_of(3))
        })),
        min_segments: 1,
    };
    let retention = CompactionConfig {
        strategy: CompactionStrategy::Retention(Box::new(|e: &StoredEvent<Value>| {
            e.event.header.event_kind == EventKind::TOMBSTONE
                || !(e.event.header.event_kind == KIND_B && i_of(&e.event.payload) % 3 == 1)
        })),
        min_segments: 1,
    };
    store.compact(&tombstone).unwrap();
    store.compact(&retention).unwrap();
    let now: Vec<(u128, EventKind)> = store
        .query(&Region::all())
        .into_iter()
        .filter(|e| e.global_sequence > first_all)
        .map(|e| (e.event_id, e.kind))
        .collect();
    let delivered: Vec<(u128, EventKind)> = all
        .poll_batch(10_000)
        .into_iter()
        .map(|e| (e.event_id, e.kind))
        .collect();
    assert_eq!(delivered, now, "the rest, as the index is now");
    assert!(delivered.iter().any(|(_, k)| *k == EventKind::TOMBSTONE));
    let kind_a_now: Vec<u128> = store
        .by_fact(KIND_A)
        .iter()
        .filter(|e| e.global_sequence > first_a)
        .map(|e| e.event_id)
        .collect();
    let kind_a_delivered: Vec<u128> = of_a.poll_batch(10_000).iter().map(|e| e.event_id).collect();
    assert_eq!(kind_a_delivered, kind_a_now);
}

/// The lazy iterators locate a step of up to 1,024 frames at a time: a
/// compaction in the middle of an iteration is seen from the next event
/// on (a redacted payload is not handed out, a removed event is skipped),
/// for region and entity iterators alike.
#[test]
fn lazy_iterators_see_a_compaction_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(small(dir.path())).unwrap();
    fill(&store);
    let mut by_region = store.events(&Region::all());
    let mut by_entity = store.stream_events("acct:2");
    let first_region = by_region.next().unwrap().unwrap().event.header.event_id;
    let first_entity = by_entity.next().unwrap().unwrap().event.header.event_id;
    let redact_or_remove = CompactionConfig {
        strategy: CompactionStrategy::Tombstone(Box::new(|e: &StoredEvent<Value>| {
            !i_of(&e.event.payload).is_multiple_of(3)
        })),
        min_segments: 1,
    };
    store.compact(&redact_or_remove).unwrap();
    let drop_b = CompactionConfig {
        strategy: CompactionStrategy::Retention(Box::new(|e: &StoredEvent<Value>| {
            e.event.header.event_kind != KIND_B
        })),
        min_segments: 1,
    };
    store.compact(&drop_b).unwrap();
    let ids_kinds = |events: Vec<StoredEvent<Value>>| -> Vec<(u128, EventKind, bool)> {
        events
            .into_iter()
            .map(|e| {
                let h = e.event.header;
                (h.event_id, h.event_kind, e.event.payload.is_null())
            })
            .collect()
    };
    let rest_region = ids_kinds(by_region.map(Result::unwrap).collect());
    let rest_entity = ids_kinds(by_entity.map(Result::unwrap).collect());
    let now = |events: Vec<StoredEvent<Value>>, after: u128| {
        let at = events
            .iter()
            .position(|e| e.event.header.event_id == after)
            .map_or(0, |p| p + 1);
        ids_kinds(events[at..].to_vec())
    };
    let region_now: Vec<StoredEvent<Value>> =
        store.events(&Region::all()).map(Result::unwrap).collect();
    let entity_now: Vec<StoredEvent<Value>> =
        store.stream_events("acct:2").map(Result::unwrap).collect();
    assert_eq!(rest_region, now(region_now, first_region));
    assert_eq!(rest_entity, now(entity_now, first_entity));
    // Of the 300 events, the first was read before; the sealed segments'
    // events of kind B were removed.
    assert!(rest_region.len() < 299, "removed events are skipped");
    assert!(rest_region
        .iter()
        .any(|(_, k, null)| *k == EventKind::TOMBSTONE && *null));
}
