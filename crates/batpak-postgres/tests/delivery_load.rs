//! Guaranteed cursors under load, across processes (issue 12, item 2).
//!
//! The test binary runs itself again as 8 writer processes and 3 cursor
//! processes. Writers append singles, batches of random sizes (1..=8 events
//! over several entities, scopes and kinds), conditional appends that often
//! lose to the others, keyed appends retried across restarts, and hold
//! transactions open that they then roll back (a raw insert into `events`,
//! so the aborted transaction takes a position and holds the stable bound
//! while it lives). Half of them pause before COMMIT now and then, and the
//! parent kills writers there and at random moments, and starts them again.
//!
//! The cursors follow `Region::all()`, one scope and one kind. Each logs
//! every event it delivers, and resumes after the last one logged when the
//! parent kills it (at random moments) and starts it again. At the end each
//! cursor runs until it has passed everything, and the parent checks: each
//! cursor's log is exactly the events of its region, in position order,
//! each once (no duplicate across resumes, nothing skipped), and holds every
//! acknowledged event of its region.

mod support;

use batpak::prelude::*;
use batpak_postgres::{testing, PgConfig, PgStore};
use postgres::{Client, NoTls};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{complete_lines, kill, spawn_child, truncate_partial_line, LineLog, Rng};

const ROLE: &str = "BATPAK_DL_ROLE";
const WRITERS: u64 = 8;
const ENTITIES: u64 = 12;
const KINDS: [EventKind; 3] = [
    EventKind::custom(1, 1),
    EventKind::custom(1, 2),
    EventKind::custom(2, 1),
];
/// The three cursors: everything, one scope, one kind.
fn cursor_region(i: u64) -> Region {
    match i {
        0 => Region::all(),
        1 => Region::scope("s1"),
        _ => Region::all().with_fact(KindFilter::Exact(KINDS[1])),
    }
}

fn entity(i: u64) -> Coordinate {
    Coordinate::new(format!("acct:{i}"), format!("s{}", i % 3)).unwrap()
}

fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
}

fn child_config() -> PgConfig {
    PgConfig::new(var("BATPAK_DL_URL"))
        .with_schema(var("BATPAK_DL_SCHEMA"))
        .with_pool_size(2)
}

/// A writer process. Does nothing in an ordinary test run.
#[test]
fn load_writer_child() {
    if std::env::var(ROLE).as_deref() != Ok("writer") {
        return;
    }
    let slot: u64 = var("BATPAK_DL_SLOT").parse().unwrap();
    let generation: u64 = var("BATPAK_DL_GEN").parse().unwrap();
    let dir = PathBuf::from(var("BATPAK_DL_DIR"));
    let log_path = dir.join(format!("w{slot}.log"));
    truncate_partial_line(&log_path);
    let previous = complete_lines(&log_path);
    let mut log = LineLog::open(&log_path);
    let marker = dir.join(format!("w{slot}.paused"));
    let mut cfg = child_config();
    if slot.is_multiple_of(2) {
        let marker = marker.clone();
        let rng = std::sync::Mutex::new(Rng(0x9e37_79b9 ^ (slot << 32) ^ generation));
        cfg = cfg.with_before_commit(Some(Arc::new(move || {
            let pause = {
                let mut r = rng.lock().unwrap();
                (r.below(10) == 0).then(|| 10 + r.below(100))
            };
            if let Some(ms) = pause {
                // Rows written, transaction open: the parent may kill us now.
                std::fs::write(&marker, b"paused").unwrap();
                std::thread::sleep(Duration::from_millis(ms));
                let _ = std::fs::remove_file(&marker);
            }
        })));
    }
    let store = PgStore::open(cfg.clone()).unwrap();
    let mut raw = Client::connect(&cfg.url, NoTls).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (slot << 40) ^ (generation << 8) ^ 1);

    // Keyed appends a previous generation sent but never saw acknowledged.
    let acked: HashSet<&str> = previous
        .iter()
        .filter_map(|l| l.strip_prefix("ack key "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for line in &previous {
        if let Some(rest) = line.strip_prefix("intent key ") {
            let mut parts = rest.split(' ');
            let (key, e) = (parts.next().unwrap(), parts.next().unwrap());
            if !acked.contains(key) {
                let k = u128::from_str_radix(key, 16).unwrap();
                let e: u64 = e.parse().unwrap();
                let r = store
                    .append_with_options(
                        &entity(e),
                        KINDS[0],
                        &json!({ "key": key }),
                        AppendOptions::new().with_idempotency(k),
                    )
                    .unwrap();
                log.line(format!("ack key {key} {} {}", r.event_id, r.sequence));
            }
        }
    }

    let mut known: HashMap<u64, Option<u32>> = HashMap::new();
    let stop = dir.join("stop");
    let mut n: u64 = 0;
    while !stop.exists() {
        n += 1;
        let e = rng.below(ENTITIES);
        let kind = KINDS[rng.below(3) as usize];
        match rng.below(20) {
            // Conditional single append against what this writer last saw.
            0..=5 => {
                let opts = match known.get(&e).copied().flatten() {
                    Some(c) => AppendOptions::new().with_cas(c),
                    None => AppendOptions::new().with_cas_empty(),
                };
                match store.append_with_options(
                    &entity(e),
                    kind,
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
                        log.line(format!("ack single {} {}", r.event_id, r.sequence));
                    }
                    Err(
                        StoreError::SequenceMismatch { actual, .. }
                        | StoreError::StreamNotEmpty { actual, .. },
                    ) => {
                        known.insert(e, Some(actual));
                        log.line("conflict".into());
                    }
                    Err(StoreError::StreamIsEmpty { .. }) => {
                        known.insert(e, None);
                        log.line("conflict".into());
                    }
                    Err(other) => panic!("unexpected {other}"),
                }
            }
            6..=9 => {
                let r = store
                    .append(&entity(e), kind, &json!({ "w": slot, "n": n }))
                    .unwrap();
                log.line(format!("ack single {} {}", r.event_id, r.sequence));
            }
            // A batch of a random size over random entities and kinds.
            10..=14 => {
                let size = 1 + rng.below(8);
                let items: Vec<BatchAppendItem> = (0..size)
                    .map(|i| {
                        BatchAppendItem::new(
                            entity(rng.below(ENTITIES)),
                            KINDS[rng.below(3) as usize],
                            &json!({ "w": slot, "n": n, "i": i }),
                            AppendOptions::new(),
                            CausationRef::None,
                        )
                        .unwrap()
                    })
                    .collect();
                let rs = store.append_batch(items).unwrap();
                let lines: Vec<String> = rs
                    .iter()
                    .map(|r| format!("ack single {} {}", r.event_id, r.sequence))
                    .collect();
                log.lines(&lines);
            }
            // A keyed append, logged before it is sent.
            15 | 16 => {
                let key = (u128::from(slot) << 96) | (u128::from(generation) << 64) | u128::from(n);
                let key_hex = format!("{key:x}");
                log.line(format!("intent key {key_hex} {e}"));
                let r = store
                    .append_with_options(
                        &entity(e),
                        KINDS[0],
                        &json!({ "key": key_hex }),
                        AppendOptions::new().with_idempotency(key),
                    )
                    .unwrap();
                log.line(format!("ack key {key_hex} {} {}", r.event_id, r.sequence));
            }
            // A transaction that writes an event row and rolls back: it
            // takes a position and holds the bound while it is open.
            _ => {
                let mut tx = raw.transaction().unwrap();
                tx.execute(
                    &format!(
                        "INSERT INTO {}.events (position, event_id, entity, scope, clock, kind,
                             flags, timestamp_us, hlc_counter, correlation_id, causation_id,
                             prev_hash, event_hash, content_hash, payload)
                         VALUES (pg_current_xact_id()::text::bigint << 20, $1, $2, 's1',
                                 1000000000 + $3::bigint, 4097, 0, 0, 0, $1, NULL,
                                 '\\x00', '\\x00', '\\x00', '\\x80')",
                        cfg.schema
                    ),
                    &[
                        &uuid::Uuid::from_u128(rng.next() as u128 | (1 << 100)),
                        &format!("acct:{e}"),
                        &(((slot << 40) | (generation << 24) | n) as i64),
                    ],
                )
                .unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(30)));
                tx.rollback().unwrap();
                log.line("aborted".into());
            }
        }
    }
}

/// A cursor process: resumes after the last event it logged, logs each
/// event it delivers. With `BATPAK_DL_DRAIN` set it stops once the stable
/// bound has passed that position and it has read everything below.
#[test]
fn load_cursor_child() {
    if std::env::var(ROLE).as_deref() != Ok("cursor") {
        return;
    }
    let which: u64 = var("BATPAK_DL_CURSOR").parse().unwrap();
    let dir = PathBuf::from(var("BATPAK_DL_DIR"));
    let drain: Option<u64> = std::env::var("BATPAK_DL_DRAIN")
        .ok()
        .map(|v| v.parse().unwrap());
    let path = dir.join(format!("c{which}.log"));
    truncate_partial_line(&path);
    let saved = complete_lines(&path)
        .last()
        .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap());
    let mut log = LineLog::open(&path);
    let store = PgStore::open(child_config()).unwrap();
    let mut cursor = store.cursor_from(&cursor_region(which), saved);
    loop {
        let first = match cursor.wait_next(Duration::from_millis(100)) {
            Ok(e) => e,
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("{e}"),
        };
        let Some(first) = first else {
            if let Some(until) = drain {
                if cursor.stable_below() > until && cursor.poll().unwrap().is_none() {
                    return;
                }
            }
            continue;
        };
        let mut batch = vec![first];
        batch.extend(cursor.poll_batch(255).unwrap());
        let lines: Vec<String> = batch
            .iter()
            .map(|e| format!("{} {}", e.global_sequence, e.event_id))
            .collect();
        log.lines(&lines);
    }
}

struct Proc {
    slot: u64,
    generation: u64,
    child: Child,
}

fn spawn(
    dir: &Path,
    cfg: &PgConfig,
    role: &str,
    slot: u64,
    generation: u64,
    extra: &[(&str, String)],
) -> Proc {
    let mut envs = vec![
        ("BATPAK_DL_DIR", dir.display().to_string()),
        ("BATPAK_DL_URL", cfg.url.clone()),
        ("BATPAK_DL_SCHEMA", cfg.schema.clone()),
        ("BATPAK_DL_SLOT", slot.to_string()),
        ("BATPAK_DL_CURSOR", slot.to_string()),
        ("BATPAK_DL_GEN", generation.to_string()),
    ];
    envs.extend(extra.iter().cloned());
    let test = if role == "writer" {
        "load_writer_child"
    } else {
        "load_cursor_child"
    };
    let child = spawn_child(
        test,
        ROLE,
        role,
        &envs,
        &dir.join(format!("{role}{slot}-{generation}.stderr")),
    );
    Proc {
        slot,
        generation,
        child,
    }
}

fn run(duration: Duration) {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = PgStore::open(cfg.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut writers: Vec<Proc> = (0..WRITERS)
        .map(|s| spawn(d, &cfg, "writer", s, 0, &[]))
        .collect();
    let mut cursors: Vec<Proc> = (0..3)
        .map(|s| spawn(d, &cfg, "cursor", s, 0, &[]))
        .collect();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut writer_kills_paused, mut writer_kills, mut cursor_kills) = (0, 0, 0);
    let started = Instant::now();
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(100 + rng.below(300)));
        if rng.below(2) == 0 {
            let c = rng.below(3) as usize;
            kill(&mut cursors[c].child);
            cursor_kills += 1;
            let (slot, g) = (cursors[c].slot, cursors[c].generation + 1);
            cursors[c] = spawn(d, &cfg, "cursor", slot, g, &[]);
            continue;
        }
        let w = rng.below(WRITERS) as usize;
        let paused = d.join(format!("w{}.paused", writers[w].slot));
        if writers[w].slot.is_multiple_of(2) {
            // Wait a little for it to pause before COMMIT, then kill it there.
            let until = Instant::now() + Duration::from_millis(500);
            while !paused.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            if paused.exists() {
                writer_kills_paused += 1;
            } else {
                writer_kills += 1;
            }
        } else {
            writer_kills += 1;
        }
        kill(&mut writers[w].child);
        let _ = std::fs::remove_file(&paused);
        let (slot, g) = (writers[w].slot, writers[w].generation + 1);
        writers[w] = spawn(d, &cfg, "writer", slot, g, &[]);
    }
    std::fs::write(d.join("stop"), b"").unwrap();
    for w in &mut writers {
        let stderr = d.join(format!("writer{}-{}.stderr", w.slot, w.generation));
        support::wait_success(&mut w.child, Duration::from_secs(60), "a writer", &stderr);
    }
    // Every writer is gone: the newest position is final. Each cursor runs
    // until the stable bound has passed it.
    let all = store.query(&Region::all()).unwrap();
    let newest = all.last().map_or(0, |e| e.global_sequence);
    for c in &mut cursors {
        kill(&mut c.child);
        let (slot, g) = (c.slot, c.generation + 1);
        *c = spawn(
            d,
            &cfg,
            "cursor",
            slot,
            g,
            &[("BATPAK_DL_DRAIN", newest.to_string())],
        );
    }
    for c in &mut cursors {
        let stderr = d.join(format!("cursor{}-{}.stderr", c.slot, c.generation));
        support::wait_success(
            &mut c.child,
            Duration::from_secs(120),
            "a draining cursor",
            &stderr,
        );
    }

    // What the writers were told.
    let mut acked: Vec<(u128, u64)> = Vec::new();
    let (mut conflicts, mut aborted) = (0, 0);
    for slot in 0..WRITERS {
        for line in complete_lines(&d.join(format!("w{slot}.log"))) {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["ack", "single", id, pos] | ["ack", "key", _, id, pos, ..] => {
                    acked.push((id.parse().unwrap(), pos.parse().unwrap()))
                }
                ["conflict"] => conflicts += 1,
                ["aborted"] => aborted += 1,
                _ => {}
            }
        }
    }
    let by_id: HashMap<u128, &IndexEntry> = all.iter().map(|e| (e.event_id, e)).collect();
    assert_eq!(by_id.len(), all.len(), "an event id appears twice");
    for (id, pos) in &acked {
        let e = by_id
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged event {id:032x} is missing"));
        assert_eq!(e.global_sequence, *pos, "receipt position of {id:032x}");
    }
    let acked_ids: HashSet<u128> = acked.iter().map(|a| a.0).collect();
    let mut delivered_total = 0;
    let mut per_cursor = BTreeMap::new();
    for which in 0..3u64 {
        let region = cursor_region(which);
        let delivered: Vec<(u64, u128)> = complete_lines(&d.join(format!("c{which}.log")))
            .iter()
            .map(|l| {
                let (p, id) = l.split_once(' ').unwrap();
                (p.parse().unwrap(), id.parse().unwrap())
            })
            .collect();
        let want: Vec<(u64, u128)> = store
            .query(&region)
            .unwrap()
            .iter()
            .map(|e| (e.global_sequence, e.event_id))
            .collect();
        let ids: HashSet<u128> = delivered.iter().map(|d| d.1).collect();
        assert_eq!(
            ids.len(),
            delivered.len(),
            "cursor {which}: an event delivered twice"
        );
        assert!(
            delivered.windows(2).all(|w| w[0].0 < w[1].0),
            "cursor {which}: out of order"
        );
        assert_eq!(
            delivered.len(),
            want.len(),
            "cursor {which} ({region:?}): missed or extra events"
        );
        assert_eq!(delivered, want, "cursor {which} ({region:?})");
        let acked_here = all
            .iter()
            .filter(|e| acked_ids.contains(&e.event_id))
            .filter(|e| region.matches_event(e.coord.entity(), e.coord.scope(), e.kind))
            .count();
        assert!(
            acked_here > 0,
            "cursor {which} had acknowledged events to deliver"
        );
        delivered_total += delivered.len();
        per_cursor.insert(which, (delivered.len(), acked_here));
    }
    assert!(conflicts > 0, "no CAS conflict happened");
    assert!(aborted > 0, "no transaction was rolled back");
    assert!(cursor_kills > 0 && writer_kills + writer_kills_paused > 0);
    eprintln!(
        "{:.0} s: {} events ({} acknowledged), {conflicts} CAS conflicts, {aborted} rolled-back \
         transactions; kills: {writer_kills_paused} writers before COMMIT, {writer_kills} writers \
         elsewhere, {cursor_kills} cursors; delivered (of which acknowledged): all {:?}, \
         scope s1 {:?}, kind {:?}; {delivered_total} deliveries checked",
        duration.as_secs_f64(),
        all.len(),
        acked.len(),
        per_cursor[&0],
        per_cursor[&1],
        per_cursor[&2],
    );
}

#[test]
fn eight_writers_three_cursors_with_kills_and_resumes() {
    run(Duration::from_secs(8));
}

#[test]
#[ignore = "long: several minutes of writers, cursors and kills"]
fn eight_writers_three_cursors_with_kills_and_resumes_long() {
    run(Duration::from_secs(300));
}
