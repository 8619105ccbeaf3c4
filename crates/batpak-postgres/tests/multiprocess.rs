//! Many writers in many processes on one schema (issue 11, item 4).
//!
//! The test re-runs its own binary as 4 writer processes (`writer_child`,
//! selected by `BATPAK_MP_ROLE=writer`). They append singles, batches,
//! conditional appends that often lose (CAS against what each writer last
//! saw, while three others move the same entities), keyed appends retried
//! across restarts, and keys all four race for. Two of them append through
//! explicit transactions and sometimes pause before COMMIT; the parent
//! kills (SIGKILL) writers mid-transaction and at random moments and starts
//! them again. Each writer logs every receipt, fsynced, before going on.
//!
//! Meanwhile a reader in the parent follows the store with `read_stable`.
//! At the end the parent checks: every acknowledged event is there once, at
//! its receipt's position; every entity's clocks are 0..n; every chain links
//! and every hash recomputes (`verify` and an independent recomputation);
//! every batch is whole; racing keys wrote one event; CAS conflicts
//! happened; and the reader saw every event exactly once, in position order,
//! although it read while transactions committed out of order.

mod support;

use batpak::prelude::*;
use batpak::store::codec;
use batpak_postgres::{testing, PgConfig, PgStore};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROLE: &str = "BATPAK_MP_ROLE";
const ENTITIES: u64 = 6;
const KIND: EventKind = EventKind::custom(1, 1);
const SHARED_KIND: EventKind = EventKind::custom(1, 2);

use support::Rng;

fn entity(i: u64) -> Coordinate {
    Coordinate::new(format!("acct:{i}"), "bank").unwrap()
}

/// The writer process. Does nothing in an ordinary test run.
#[test]
fn writer_child() {
    if std::env::var(ROLE).as_deref() != Ok("writer") {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let slot: u64 = var("BATPAK_MP_SLOT").parse().unwrap();
    let generation: u64 = var("BATPAK_MP_GEN").parse().unwrap();
    let dir = PathBuf::from(var("BATPAK_MP_DIR"));
    let pausing = var("BATPAK_MP_PAUSING") == "1";
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("w{slot}.log")))
        .unwrap();
    let mut note = |line: String| {
        writeln!(log, "{line}").unwrap();
        log.sync_data().unwrap();
    };
    let marker = dir.join(format!("w{slot}.paused"));
    let mut cfg = PgConfig::new(var("BATPAK_MP_URL"))
        .with_schema(var("BATPAK_MP_SCHEMA"))
        .with_pool_size(2);
    if pausing {
        let marker = marker.clone();
        let rng = std::sync::Mutex::new(Rng(0x9e37_79b9 ^ (slot << 32) ^ generation));
        cfg = cfg.with_before_commit(Some(Arc::new(move || {
            let pause = {
                let mut r = rng.lock().unwrap();
                (r.below(8) == 0).then(|| 20 + r.below(200))
            };
            if let Some(ms) = pause {
                // Rows written, transaction open: the parent may kill us now.
                std::fs::write(&marker, b"paused").unwrap();
                std::thread::sleep(Duration::from_millis(ms));
                let _ = std::fs::remove_file(&marker);
            }
        })));
    }
    let store = PgStore::open(cfg).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (slot << 40) ^ (generation << 8) ^ 1);

    // Keyed appends a previous generation sent but never saw acknowledged:
    // retrying them must either write them now or return their receipt.
    let previous = std::fs::read_to_string(dir.join(format!("w{slot}.log"))).unwrap_or_default();
    let acked: HashSet<&str> = previous
        .lines()
        .filter_map(|l| l.strip_prefix("ack key "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for line in previous.lines() {
        if let Some(rest) = line.strip_prefix("intent key ") {
            let mut parts = rest.split(' ');
            let (key, e) = (parts.next().unwrap(), parts.next().unwrap());
            if !acked.contains(key) {
                let k = u128::from_str_radix(key, 16).unwrap();
                let e: u64 = e.parse().unwrap();
                let r = store
                    .append_with_options(
                        &entity(e),
                        KIND,
                        &json!({ "key": key }),
                        AppendOptions::new().with_idempotency(k),
                    )
                    .unwrap();
                note(format!(
                    "ack key {key:} {} {} retried",
                    r.event_id, r.sequence
                ));
            }
        }
    }

    let mut known: HashMap<u64, Option<u32>> = HashMap::new();
    let stop = dir.join("stop");
    let mut n: u64 = 0;
    while !stop.exists() {
        n += 1;
        let e = rng.below(ENTITIES);
        match rng.below(10) {
            // Conditional single append against what this writer last saw.
            0..=3 => {
                let opts = match known.get(&e).copied().flatten() {
                    Some(c) => AppendOptions::new().with_cas(c),
                    None => AppendOptions::new().with_cas_empty(),
                };
                match store.append_with_options(
                    &entity(e),
                    KIND,
                    &json!({ "w": slot, "n": n }),
                    opts,
                ) {
                    Ok(r) => {
                        let clock = store
                            .get(r.event_id)
                            .unwrap()
                            .event
                            .header
                            .position
                            .sequence;
                        known.insert(e, Some(clock));
                        note(format!("ack single {} {} {e}", r.event_id, r.sequence));
                    }
                    Err(StoreError::SequenceMismatch { actual, .. }) => {
                        known.insert(e, Some(actual));
                        note("conflict".into());
                    }
                    Err(StoreError::StreamNotEmpty { actual, .. }) => {
                        known.insert(e, Some(actual));
                        note("conflict".into());
                    }
                    Err(StoreError::StreamIsEmpty { .. }) => {
                        known.insert(e, None);
                        note("conflict".into());
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            4 | 5 => {
                let r = store
                    .append(&entity(e), KIND, &json!({ "w": slot, "n": n }))
                    .unwrap();
                note(format!("ack single {} {} {e}", r.event_id, r.sequence));
            }
            // A batch over several entities, all or nothing.
            6 | 7 => {
                let size = 2 + rng.below(4);
                let tag = format!("{slot}-{generation}-{n}");
                let items: Vec<BatchAppendItem> = (0..size)
                    .map(|i| {
                        BatchAppendItem::new(
                            entity(rng.below(ENTITIES)),
                            KIND,
                            &json!({ "batch": tag, "size": size, "i": i }),
                            AppendOptions::new(),
                            if i > 0 {
                                CausationRef::PriorItem(0)
                            } else {
                                CausationRef::None
                            },
                        )
                        .unwrap()
                    })
                    .collect();
                let rs = store.append_batch(items).unwrap();
                let list: Vec<String> = rs
                    .iter()
                    .map(|r| format!("{}/{}", r.event_id, r.sequence))
                    .collect();
                note(format!("ack batch {tag} {}", list.join(",")));
            }
            // A keyed append of this writer, logged before it is sent.
            8 => {
                let key = (u128::from(slot) << 96) | (u128::from(generation) << 64) | u128::from(n);
                let key_hex = format!("{key:x}");
                note(format!("intent key {key_hex} {e}"));
                let r = store
                    .append_with_options(
                        &entity(e),
                        KIND,
                        &json!({ "key": key_hex }),
                        AppendOptions::new().with_idempotency(key),
                    )
                    .unwrap();
                note(format!("ack key {key_hex} {} {}", r.event_id, r.sequence));
            }
            // A key every writer races for.
            _ => {
                let k = 0xfeed_0000_u128 + u128::from(rng.below(20));
                let r = store
                    .append_with_options(
                        &entity(k as u64 % ENTITIES),
                        SHARED_KIND,
                        &json!({ "shared": k as u64 }),
                        AppendOptions::new().with_idempotency(k),
                    )
                    .unwrap();
                note(format!("ack shared {k:x} {} {}", r.event_id, r.sequence));
            }
        }
    }
}

struct Writer {
    slot: u64,
    generation: u64,
    pausing: bool,
    child: Child,
}

fn spawn_writer(dir: &Path, cfg: &PgConfig, slot: u64, generation: u64) -> Writer {
    let pausing = slot.is_multiple_of(2);
    let child = support::spawn_child(
        "writer_child",
        ROLE,
        "writer",
        &[
            ("BATPAK_MP_SLOT", slot.to_string()),
            ("BATPAK_MP_GEN", generation.to_string()),
            ("BATPAK_MP_DIR", dir.display().to_string()),
            ("BATPAK_MP_URL", cfg.url.clone()),
            ("BATPAK_MP_SCHEMA", cfg.schema.clone()),
            (
                "BATPAK_MP_PAUSING",
                if pausing { "1" } else { "0" }.to_owned(),
            ),
        ],
        &dir.join(format!("w{slot}-{generation}.stderr")),
    );
    Writer {
        slot,
        generation,
        pausing,
        child,
    }
}

/// An acknowledged event: (id, position, entity or batch tag).
#[derive(Debug)]
struct Ack {
    id: u128,
    position: u64,
}

fn parse_logs(dir: &Path, writers: u64) -> (Vec<Ack>, BTreeMap<String, Vec<Ack>>, u64, Vec<Ack>) {
    let mut singles = Vec::new();
    let mut batches = BTreeMap::new();
    let mut shared = Vec::new();
    let mut conflicts = 0;
    for slot in 0..writers {
        let text = std::fs::read_to_string(dir.join(format!("w{slot}.log"))).unwrap_or_default();
        for line in text.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            let ack = |id: &str, pos: &str| Ack {
                id: id.parse().unwrap(),
                position: pos.parse().unwrap(),
            };
            match parts.as_slice() {
                ["ack", "single", id, pos, _] => singles.push(ack(id, pos)),
                ["ack", "key", _, id, pos, ..] => singles.push(ack(id, pos)),
                ["ack", "shared", _, id, pos] => shared.push(ack(id, pos)),
                ["ack", "batch", tag, list] => {
                    let acks = list
                        .split(',')
                        .map(|p| {
                            let (id, pos) = p.split_once('/').unwrap();
                            ack(id, pos)
                        })
                        .collect();
                    batches.insert((*tag).to_owned(), acks);
                }
                ["conflict"] => conflicts += 1,
                ["intent", ..] => {}
                // A line cut by SIGKILL mid-write was never acknowledged.
                _ => {}
            }
        }
    }
    (singles, batches, conflicts, shared)
}

fn run(duration: Duration) {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = Arc::new(PgStore::open(cfg.clone()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let writers = 4;

    // The reader: follows the store from the start, never passing an event
    // that could still commit below what it has seen.
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (store, reading) = (store.clone(), reading.clone());
        std::thread::spawn(move || {
            let mut seen: Vec<(u64, u128)> = Vec::new();
            let mut after = None;
            let mut last_pass = false;
            loop {
                let page = store.read_stable(&Region::all(), after, 500).unwrap();
                for e in &page.entries {
                    seen.push((e.global_sequence, e.event_id));
                }
                if let Some(last) = page.entries.last() {
                    after = Some(last.global_sequence);
                }
                if page.entries.len() == 500 {
                    continue;
                }
                if last_pass {
                    return seen;
                }
                if !reading.load(Ordering::Acquire) {
                    // Writers are gone: one more pass reads the rest.
                    last_pass = true;
                    continue;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };

    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut live: Vec<Writer> = (0..writers)
        .map(|slot| spawn_writer(dir.path(), &cfg, slot, 0))
        .collect();
    let mut kills_mid_transaction = 0;
    let mut kills_anywhere = 0;
    let started = Instant::now();
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(150 + rng.below(300)));
        let w = rng.below(writers) as usize;
        let paused = dir.path().join(format!("w{}.paused", live[w].slot));
        if live[w].pausing {
            // Wait a little for it to pause before COMMIT, then kill it there.
            let until = Instant::now() + Duration::from_millis(800);
            while !paused.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            if !paused.exists() {
                continue;
            }
            kills_mid_transaction += 1;
        } else {
            kills_anywhere += 1;
        }
        live[w].child.kill().unwrap();
        live[w].child.wait().unwrap();
        let _ = std::fs::remove_file(&paused);
        let (slot, generation) = (live[w].slot, live[w].generation + 1);
        live[w] = spawn_writer(dir.path(), &cfg, slot, generation);
    }
    std::fs::write(dir.path().join("stop"), b"").unwrap();
    for w in &mut live {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = w.child.try_wait().unwrap() {
                let err = std::fs::read_to_string(
                    dir.path()
                        .join(format!("w{}-{}.stderr", w.slot, w.generation)),
                )
                .unwrap_or_default();
                assert!(status.success(), "writer {} failed: {err}", w.slot);
                break;
            }
            assert!(Instant::now() < deadline, "writer {} did not stop", w.slot);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The server ends the transactions of killed writers when it notices
    // their connections are gone; until then they hold the stable bound.
    let newest = store
        .query(&Region::all())
        .unwrap()
        .last()
        .map_or(0, |e| e.global_sequence);
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.stable_position().unwrap() <= newest {
        assert!(Instant::now() < deadline, "a transaction stayed open");
        std::thread::sleep(Duration::from_millis(10));
    }
    reading.store(false, Ordering::Release);
    let seen = reader.join().unwrap();

    let (singles, batches, conflicts, shared) = parse_logs(dir.path(), writers);
    let all = store.query(&Region::all()).unwrap();
    let by_id: HashMap<u128, &IndexEntry> = all.iter().map(|e| (e.event_id, e)).collect();
    assert_eq!(by_id.len(), all.len(), "an event id appears twice");
    eprintln!(
        "{} events; acknowledged: {} singles, {} batches, {} shared-key appends; \
         {conflicts} CAS conflicts; kills: {kills_mid_transaction} before COMMIT, \
         {kills_anywhere} anywhere",
        all.len(),
        singles.len(),
        batches.len(),
        shared.len()
    );

    // Every acknowledged event, once, where its receipt said.
    for ack in singles
        .iter()
        .chain(batches.values().flatten())
        .chain(&shared)
    {
        let e = by_id
            .get(&ack.id)
            .unwrap_or_else(|| panic!("acknowledged event {:032x} is missing", ack.id));
        assert_eq!(
            e.global_sequence, ack.position,
            "receipt position of {:032x}",
            ack.id
        );
    }
    // A batch's receipts are consecutive positions of one transaction.
    for (tag, acks) in &batches {
        assert!(
            acks.windows(2).all(|w| w[1].position == w[0].position + 1),
            "batch {tag}"
        );
    }
    // Racing writers of one key all got its one event.
    let mut shared_ids: HashMap<u128, u64> = HashMap::new();
    for ack in &shared {
        let pos = *shared_ids.entry(ack.id).or_insert(ack.position);
        assert_eq!(pos, ack.position);
    }
    let shared_events = all.iter().filter(|e| e.kind == SHARED_KIND).count();
    assert!(shared_events <= 20);
    assert_eq!(
        shared_events,
        all.iter()
            .filter(|e| e.kind == SHARED_KIND)
            .map(|e| e.event_id)
            .collect::<HashSet<_>>()
            .len()
    );

    // Batches whole, acknowledged or not.
    let mut batch_items: HashMap<String, (u64, Vec<u64>)> = HashMap::new();
    for e in &all {
        let ev = store.get(e.event_id).unwrap();
        if let Some(tag) = ev.event.payload["batch"].as_str() {
            let size = ev.event.payload["size"].as_u64().unwrap();
            let entry = batch_items
                .entry(tag.to_owned())
                .or_insert((size, Vec::new()));
            entry.1.push(ev.event.payload["i"].as_u64().unwrap());
        }
    }
    for (tag, (size, mut items)) in batch_items {
        items.sort_unstable();
        assert_eq!(
            items,
            (0..size).collect::<Vec<_>>(),
            "batch {tag} is partial"
        );
    }

    // Every entity: clocks 0..n, chains link, hashes recompute, positions
    // follow clocks.
    for i in 0..ENTITIES {
        let name = format!("acct:{i}");
        let stream = store.stream(&name).unwrap();
        let mut prev = [0u8; 32];
        let mut last_pos = None;
        for (clock, e) in stream.iter().enumerate() {
            assert_eq!(e.clock, clock as u32, "{name}: clock gap");
            let ev = store.get(e.event_id).unwrap();
            let chain = ev.event.hash_chain.unwrap();
            assert_eq!(chain.prev_hash, prev, "{name} clock {clock}: broken link");
            assert_eq!(
                codec::event_hash(&prev, &codec::ChainInput::of(&ev)),
                chain.event_hash,
                "{name} clock {clock}: hash"
            );
            assert!(
                last_pos < Some(e.global_sequence),
                "{name}: positions follow clocks"
            );
            last_pos = Some(e.global_sequence);
            prev = chain.event_hash;
        }
    }
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report}");

    // The reader saw every event once, in position order.
    let positions: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "reader order");
    let expected: Vec<(u64, u128)> = all
        .iter()
        .map(|e| (e.global_sequence, e.event_id))
        .collect();
    assert_eq!(
        seen.len(),
        expected.len(),
        "the reader missed or repeated events"
    );
    assert_eq!(seen, expected);

    assert!(conflicts > 0, "no CAS conflict happened");
    assert!(!singles.is_empty() && !batches.is_empty() && !shared.is_empty());
    assert!(
        kills_mid_transaction > 0,
        "no writer was killed before COMMIT"
    );
}

#[test]
fn four_processes_append_with_conflicts_and_kills() {
    run(Duration::from_secs(4));
}

#[test]
#[ignore = "long: a minute of writers and kills"]
fn four_processes_append_with_conflicts_and_kills_long() {
    run(Duration::from_secs(60));
}
