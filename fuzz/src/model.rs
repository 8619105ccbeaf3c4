//! Target `model`: a random sequence of store operations on a real
//! directory, checked against a plain in-memory model after every step.
//!
//! Operations (public API only): append, append with a compare-and-set
//! condition (`with_cas`, `with_cas_empty`), idempotent append and its
//! retry (same request, or the same key at another coordinate), batch
//! append, explicit sync, compaction (merge, or retention of chosen
//! events), snapshot to a new directory and open it, crash and reopen
//! (`simulate_crash`), power loss and reopen (`simulate_power_loss`), and
//! one injected I/O failure (a write, an fsync, a rotation, a segment
//! creation) followed by a reopen.
//!
//! The model holds, per acknowledged event: id, coordinate, kind, payload,
//! global sequence, clock, and whether it is durable. In durable mode (sync
//! every event) everything acknowledged is durable. In relaxed mode only
//! what a `sync`, a snapshot or a crash-reopen made durable is: a power
//! loss may drop the rest, but only a suffix in write order (never a hole,
//! never half a batch), and the model then drops what the store lost.
//!
//! Checked after every step: the store serves exactly the model's events
//! (no more, no fewer), each with the same coordinate, kind, payload,
//! sequence and clock; each entity's stream is the model's list in order;
//! CAS outcomes and their error variants match the model's prediction;
//! an idempotent retry returns the original receipt, even after the
//! original was compacted away; new sequences exceed every surviving one.

use arbitrary::Unstructured;
use batpak::prelude::*;
use batpak::store::{
    CompactionConfig, CompactionStrategy, CountdownInjector, FaultAction, InjectionPoint,
};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const ENTITIES: u8 = 4;
const KINDS: [EventKind; 2] = [EventKind::custom(1, 1), EventKind::custom(2, 7)];

#[derive(Clone, Debug)]
struct Ev {
    entity: String,
    kind: EventKind,
    n: u64,
    pad: usize,
    sequence: u64,
    clock: u32,
    durable: bool,
    /// Redacted by a compaction: served as a tombstone with a null payload.
    tombstoned: bool,
}

impl Ev {
    fn payload(&self) -> serde_json::Value {
        if self.tombstoned {
            return serde_json::Value::Null;
        }
        json!({ "n": self.n, "pad": "p".repeat(self.pad) })
    }

    fn kind(&self) -> EventKind {
        if self.tombstoned {
            EventKind::TOMBSTONE
        } else {
            self.kind
        }
    }
}

/// The original request and receipt behind an idempotency key.
#[derive(Clone, Debug)]
struct Keyed {
    entity: String,
    kind: EventKind,
    n: u64,
    pad: usize,
    event_id: u128,
    sequence: u64,
}

#[derive(Default)]
struct Model {
    /// Live events by id.
    events: BTreeMap<u128, Ev>,
    /// Ids in write order (live or removed by retention).
    order: Vec<u128>,
    /// Batches, as lists of ids.
    batches: Vec<Vec<u128>>,
    /// Newest clock per entity (of events the store still has or had).
    newest: HashMap<String, u32>,
    keys: HashMap<u128, Keyed>,
    /// Ids removed by retention (never served again).
    removed: BTreeSet<u128>,
    /// Per entity, the newest clock among its removed events: the store
    /// keeps removed clocks reserved, so after a power cut takes the newer
    /// events the next append continues after it.
    removed_clock: HashMap<String, u32>,
    next_n: u64,
}

impl Model {
    fn newest(&self, entity: &str) -> Option<u32> {
        self.newest.get(entity).copied()
    }

    fn max_sequence(&self) -> Option<u64> {
        self.events.values().map(|e| e.sequence).max()
    }

    fn record(&mut self, id: u128, ev: Ev) {
        if let Some(max) = self.max_sequence() {
            assert!(
                ev.sequence > max,
                "sequence {} not above {max}",
                ev.sequence
            );
        }
        self.newest.insert(ev.entity.clone(), ev.clock);
        self.order.push(id);
        self.events.insert(id, ev);
    }

    /// Forget `lost` (events a power loss dropped), keeping `newest` and the
    /// keys in step.
    fn forget(&mut self, lost: &BTreeSet<u128>) {
        for id in lost {
            self.events.remove(id);
        }
        self.order.retain(|id| !lost.contains(id));
        self.keys.retain(|_, k| !lost.contains(&k.event_id));
        self.newest = self.removed_clock.clone();
        for id in &self.order {
            if let Some(e) = self.events.get(id) {
                let c = self.newest.entry(e.entity.clone()).or_insert(e.clock);
                *c = (*c).max(e.clock);
            }
        }
    }

    fn make_durable(&mut self) {
        for e in self.events.values_mut() {
            e.durable = true;
        }
    }
}

fn entity(i: u8) -> String {
    format!("m:{}", i % ENTITIES)
}

fn coord(entity: &str) -> Coordinate {
    Coordinate::new(entity, "scope").expect("model coordinate")
}

struct Run {
    dir: tempfile::TempDir,
    relaxed: bool,
    store: Option<Store>,
    model: Model,
    snapshots: usize,
}

impl Run {
    fn config(&self, dir: &Path) -> StoreConfig {
        let cfg = StoreConfig::new(dir).with_segment_max_bytes(2048);
        if self.relaxed {
            cfg.with_sync_every_n_events(1_000_000)
        } else {
            cfg
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store open")
    }

    fn reopen(&mut self) {
        self.store = None;
        let cfg = self.config(self.dir.path());
        self.store = Some(Store::open(cfg).expect("reopen"));
    }

    fn ack(&self) -> bool {
        !self.relaxed
    }

    fn next_payload(&mut self, u: &mut Unstructured<'_>) -> (u64, usize) {
        self.model.next_n += 1;
        (self.model.next_n, u.int_in_range(0..=300usize).unwrap_or(0))
    }

    fn expect_appended(
        &mut self,
        r: AppendReceipt,
        entity: &str,
        kind: EventKind,
        n: u64,
        pad: usize,
    ) {
        let clock = self.model.newest(entity).map_or(0, |c| c + 1);
        let durable = self.ack();
        self.model.record(
            r.event_id,
            Ev {
                entity: entity.to_owned(),
                kind,
                n,
                pad,
                sequence: r.sequence,
                clock,
                durable,
                tombstoned: false,
            },
        );
    }

    fn append(&mut self, u: &mut Unstructured<'_>) {
        let e = entity(u.arbitrary().unwrap_or(0));
        let kind = KINDS[usize::from(u.arbitrary::<bool>().unwrap_or(false))];
        let (n, pad) = self.next_payload(u);
        let payload = json!({ "n": n, "pad": "p".repeat(pad) });
        let r = self
            .store()
            .append(&coord(&e), kind, &payload)
            .expect("append");
        self.expect_appended(r, &e, kind, n, pad);
    }

    fn append_cas(&mut self, u: &mut Unstructured<'_>) {
        let e = entity(u.arbitrary().unwrap_or(0));
        let newest = self.model.newest(&e);
        let empty = u.ratio(1, 3).unwrap_or(false);
        let expected = match u.int_in_range(0..=3u8).unwrap_or(0) {
            0 | 1 => newest.unwrap_or(0),
            2 => newest.map_or(1, |c| c.wrapping_add(1)),
            _ => newest.map_or(0, |c| c.saturating_sub(1)),
        };
        let opts = if empty {
            AppendOptions::new().with_cas_empty()
        } else {
            AppendOptions::new().with_cas(expected)
        };
        let (n, pad) = self.next_payload(u);
        let payload = json!({ "n": n, "pad": "p".repeat(pad) });
        let r = self
            .store()
            .append_with_options(&coord(&e), KINDS[0], &payload, opts);
        match (empty, newest, r) {
            (true, None, Ok(r)) => self.expect_appended(r, &e, KINDS[0], n, pad),
            (true, Some(actual), Err(StoreError::StreamNotEmpty { actual: a, .. })) => {
                assert_eq!(a, actual, "StreamNotEmpty reports the newest clock");
            }
            (false, Some(actual), Ok(r)) if actual == expected => {
                self.expect_appended(r, &e, KINDS[0], n, pad)
            }
            (false, None, Err(StoreError::StreamIsEmpty { expected: x, .. })) => {
                assert_eq!(x, expected);
            }
            (
                false,
                Some(actual),
                Err(StoreError::SequenceMismatch {
                    expected: x,
                    actual: a,
                    ..
                }),
            ) if actual != expected => {
                assert_eq!((x, a), (expected, actual));
            }
            (empty, newest, r) => panic!(
                "CAS (empty {empty}, expected {expected}) on {e} with newest {newest:?}: {r:?}"
            ),
        }
    }

    fn append_idempotent(&mut self, u: &mut Unstructured<'_>) {
        let key = 0x1000 + u128::from(u.int_in_range(0..=5u8).unwrap_or(0));
        let elsewhere = u.ratio(1, 4).unwrap_or(false);
        match self.model.keys.get(&key).cloned() {
            Some(k) if !elsewhere => {
                // A retry of the same request: the original receipt.
                let payload = json!({ "n": k.n, "pad": "p".repeat(k.pad) });
                let r = self
                    .store()
                    .append_with_options(
                        &coord(&k.entity),
                        k.kind,
                        &payload,
                        AppendOptions::new().with_idempotency(key),
                    )
                    .expect("idempotent retry");
                assert_eq!(
                    (r.event_id, r.sequence),
                    (k.event_id, k.sequence),
                    "a retry returns the original receipt"
                );
            }
            Some(k) => {
                // The same key for an event at another coordinate.
                let other = if k.entity == entity(0) {
                    entity(1)
                } else {
                    entity(0)
                };
                let r = self.store().append_with_options(
                    &coord(&other),
                    k.kind,
                    &json!({ "n": k.n }),
                    AppendOptions::new().with_idempotency(key),
                );
                assert!(
                    matches!(r, Err(StoreError::IdempotencyConflict { key: x }) if x == key),
                    "a key reused elsewhere conflicts: {r:?}"
                );
            }
            None => {
                let e = entity(u.arbitrary().unwrap_or(0));
                let (n, pad) = self.next_payload(u);
                let payload = json!({ "n": n, "pad": "p".repeat(pad) });
                let r = self
                    .store()
                    .append_with_options(
                        &coord(&e),
                        KINDS[1],
                        &payload,
                        AppendOptions::new().with_idempotency(key),
                    )
                    .expect("idempotent append");
                assert_eq!(r.event_id, key, "the key is the event id");
                self.model.keys.insert(
                    key,
                    Keyed {
                        entity: e.clone(),
                        kind: KINDS[1],
                        n,
                        pad,
                        event_id: r.event_id,
                        sequence: r.sequence,
                    },
                );
                self.expect_appended(r, &e, KINDS[1], n, pad);
            }
        }
    }

    fn batch(&mut self, u: &mut Unstructured<'_>) {
        let len = u.int_in_range(1..=4usize).unwrap_or(1);
        let mut planned = Vec::new();
        let mut items = Vec::new();
        for _ in 0..len {
            let e = entity(u.arbitrary().unwrap_or(0));
            let (n, pad) = self.next_payload(u);
            let payload = json!({ "n": n, "pad": "p".repeat(pad) });
            items.push(
                BatchAppendItem::new(
                    coord(&e),
                    KINDS[0],
                    &payload,
                    AppendOptions::new(),
                    CausationRef::None,
                )
                .expect("batch item"),
            );
            planned.push((e, n, pad));
        }
        let receipts = self.store().append_batch(items).expect("batch");
        assert_eq!(receipts.len(), planned.len());
        let ids = receipts.iter().map(|r| r.event_id).collect();
        for (r, (e, n, pad)) in receipts.into_iter().zip(planned) {
            self.expect_appended(r, &e, KINDS[0], n, pad);
        }
        self.model.batches.push(ids);
    }

    fn sync(&mut self) {
        self.store().sync().expect("sync");
        self.model.make_durable();
    }

    fn compact(&mut self, u: &mut Unstructured<'_>) {
        let retention = u.arbitrary().unwrap_or(false);
        let divisor = u.int_in_range(2..=4u64).unwrap_or(3);
        let result = if retention {
            // Remove some events, never an entity's newest (what a CAS sees
            // after that is not this model's business).
            let newest: BTreeSet<u128> = {
                let mut last: HashMap<&str, u128> = HashMap::new();
                for id in &self.model.order {
                    if let Some(e) = self.model.events.get(id) {
                        last.insert(&e.entity, *id);
                    }
                }
                last.into_values().collect()
            };
            let rejected: Arc<Mutex<BTreeSet<u128>>> = Arc::default();
            let seen = rejected.clone();
            let predicate = move |e: &StoredEvent<serde_json::Value>| {
                let id = e.event.header.event_id;
                let n = e.event.payload["n"].as_u64().unwrap_or(1);
                let keep = newest.contains(&id) || !n.is_multiple_of(divisor);
                if !keep {
                    seen.lock().expect("lock").insert(id);
                }
                keep
            };
            let r = self.store().compact(&CompactionConfig {
                strategy: CompactionStrategy::Retention(Box::new(predicate)),
                min_segments: 2,
            });
            let rejected = rejected.lock().expect("lock").clone();
            if std::env::var_os("BATPAK_FUZZ_TRACE").is_some() {
                eprintln!("model: retention rejected {rejected:?}: {r:?}");
            }
            for id in &rejected {
                // A member of a batch that runs past the compacted segments
                // is redacted instead (the batch keeps its marks).
                if r.is_ok() && self.store().get(*id).is_ok() {
                    let in_batch = self.model.batches.iter().any(|b| b.contains(id));
                    assert!(
                        in_batch,
                        "a rejected single event {id:032x} is still served"
                    );
                    let ev = self.model.events.get_mut(id).expect("a known event");
                    ev.tombstoned = true;
                    continue;
                }
                let ev = self.model.events.remove(id).expect("removed a known event");
                let c = self
                    .model
                    .removed_clock
                    .entry(ev.entity)
                    .or_insert(ev.clock);
                *c = (*c).max(ev.clock);
                self.model.removed.insert(*id);
            }
            r
        } else {
            self.store().compact(&CompactionConfig::default())
        };
        result.expect("compact");
    }

    fn snapshot(&mut self) {
        self.snapshots += 1;
        let dest: PathBuf = self
            .dir
            .path()
            .with_extension(format!("snap{}", self.snapshots));
        let _cleanup = RemoveOnDrop(dest.clone());
        self.store().snapshot(&dest).expect("snapshot");
        // A snapshot makes everything durable first.
        self.model.make_durable();
        let snap = Store::open(self.config(&dest)).expect("open snapshot");
        check(&snap, &self.model);
    }

    /// Reopen with one injected I/O failure (a write, an fsync's `EIO`, a
    /// rotation, a segment creation), append until an append fails, reopen
    /// without it. Acknowledged events all survive; the failed append is
    /// either absent or there whole, as the newest of its entity.
    fn io_failure(&mut self, u: &mut Unstructured<'_>) {
        let points = [
            InjectionPoint::ItemWritten(0),
            InjectionPoint::FramesWritten,
            InjectionPoint::Indexed,
            InjectionPoint::BeforeSync,
            InjectionPoint::Sync,
            InjectionPoint::BeforeRotate,
            InjectionPoint::SegmentCreated,
        ];
        let point = points[u.choose_index(points.len()).unwrap_or(0)];
        let nth = u.int_in_range(1..=3u64).unwrap_or(1);
        self.store = None;
        let mut cfg = self.config(self.dir.path());
        cfg.fault_injector = Some(Arc::new(CountdownInjector::new(
            point,
            nth,
            FaultAction::Fail,
        )));
        let Ok(store) = Store::open(cfg) else {
            // The fault hit the open itself; nothing was appended.
            self.reopen();
            return;
        };
        self.store = Some(store);
        let mut failed = None;
        for _ in 0..4 {
            let e = entity(u.arbitrary().unwrap_or(0));
            let (n, pad) = self.next_payload(u);
            let payload = json!({ "n": n, "pad": "p".repeat(pad) });
            match self.store().append(&coord(&e), KINDS[0], &payload) {
                Ok(r) => self.expect_appended(r, &e, KINDS[0], n, pad),
                Err(_) => {
                    failed = Some((e, n, pad));
                    break;
                }
            }
        }
        self.reopen();
        let known: BTreeSet<u128> = self.model.events.keys().copied().collect();
        let extra: Vec<IndexEntry> = self
            .store()
            .query(&Region::all())
            .into_iter()
            .filter(|x| !known.contains(&x.event_id))
            .collect();
        assert!(
            extra.len() <= 1,
            "{point:?}: {} unknown events",
            extra.len()
        );
        if let Some(x) = extra.first() {
            let (e, n, pad) = failed.expect("an unknown event without a failed append");
            let got = self.store().get(x.event_id).expect("get");
            assert_eq!(x.coord.entity(), e, "{point:?}: the failed append's entity");
            assert_eq!(
                got.event.payload,
                json!({ "n": n, "pad": "p".repeat(pad) }),
                "{point:?}: the failed append's payload"
            );
            let r = AppendReceipt {
                event_id: x.event_id,
                sequence: x.global_sequence,
                disk_pos: x.disk_pos,
            };
            self.expect_appended(r, &e, KINDS[0], n, pad);
        }
        self.settle_after_loss("I/O failure");
    }

    fn crash(&mut self) {
        self.store().simulate_crash().expect("simulate crash");
        self.reopen();
        self.settle_after_loss("crash");
        // The reopen makes what it serves durable.
        self.model.make_durable();
    }

    fn power_loss(&mut self) {
        self.store()
            .simulate_power_loss()
            .expect("simulate power loss");
        self.reopen();
        self.settle_after_loss("power loss");
    }

    /// After a crash or power cut: every durable event is there; of the
    /// others, what survived is a prefix in write order with whole
    /// batches; the model forgets the rest.
    fn settle_after_loss(&mut self, what: &str) {
        let served: BTreeSet<u128> = self
            .store()
            .query(&Region::all())
            .iter()
            .map(|e| e.event_id)
            .collect();
        let mut lost = BTreeSet::new();
        for id in &self.model.order {
            let Some(e) = self.model.events.get(id) else {
                continue;
            };
            if served.contains(id) {
                assert!(lost.is_empty(), "{what}: a hole before {id:032x}");
            } else {
                assert!(
                    !e.durable,
                    "{what}: durable event {id:032x} of {} lost",
                    e.entity
                );
                lost.insert(*id);
            }
        }
        if std::env::var_os("BATPAK_FUZZ_TRACE").is_some() {
            for id in &lost {
                let e = &self.model.events[id];
                let clocks: Vec<u32> = self
                    .store()
                    .stream(&e.entity)
                    .iter()
                    .map(|x| x.clock)
                    .collect();
                eprintln!(
                    "model: {what} lost {id:032x} ({}, clock {}, sequence {}); the store's clocks of it now {clocks:?}",
                    e.entity, e.clock, e.sequence
                );
            }
        }
        for b in &self.model.batches {
            let gone = b.iter().filter(|id| lost.contains(id)).count();
            assert!(gone == 0 || gone == b.len(), "{what}: half a batch lost");
        }
        self.model.forget(&lost);
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The store serves exactly the model's events, as the model has them.
fn check(store: &Store, m: &Model) {
    let all = store.query(&Region::all());
    let served: BTreeMap<u128, &IndexEntry> = all.iter().map(|e| (e.event_id, e)).collect();
    let expected: BTreeSet<u128> = m.events.keys().copied().collect();
    let have: BTreeSet<u128> = served.keys().copied().collect();
    assert_eq!(have, expected, "served ids differ from the model's");
    for (id, ev) in &m.events {
        let entry = served[id];
        assert_eq!(entry.coord.entity(), ev.entity);
        assert_eq!(entry.coord.scope(), "scope");
        assert_eq!(entry.kind, ev.kind(), "kind of {id:032x}");
        assert_eq!(entry.global_sequence, ev.sequence, "sequence of {id:032x}");
        assert_eq!(entry.clock, ev.clock, "clock of {id:032x}");
        let got = store.get(*id).expect("get a served event");
        assert_eq!(got.coordinate.entity(), ev.entity);
        assert_eq!(got.event.header.event_kind, ev.kind());
        assert_eq!(got.event.payload, ev.payload(), "payload of {id:032x}");
    }
    for id in &m.removed {
        assert!(store.get(*id).is_err(), "a removed event is served");
    }
    for i in 0..ENTITIES {
        let e = entity(i);
        let stream: Vec<u128> = store.stream(&e).iter().map(|x| x.event_id).collect();
        let want: Vec<u128> = m
            .order
            .iter()
            .filter(|id| m.events.get(id).is_some_and(|x| x.entity == e))
            .copied()
            .collect();
        assert_eq!(stream, want, "stream of {e}");
    }
}

/// The target: the first byte picks the mode (relaxed for a quarter of the
/// inputs), the rest a sequence of up to 24 operations.
pub fn model(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let relaxed = u.ratio(1, 4).unwrap_or(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut run = Run {
        dir,
        relaxed,
        store: None,
        model: Model::default(),
        snapshots: 0,
    };
    run.reopen();
    // `BATPAK_FUZZ_TRACE=1`: print each operation (to read a replay).
    let trace = std::env::var_os("BATPAK_FUZZ_TRACE").is_some();
    let steps = u.int_in_range(1..=24usize).unwrap_or(1);
    for _ in 0..steps {
        if u.is_empty() {
            break;
        }
        let op = u.int_in_range(0..=19u8).unwrap_or(0);
        if trace {
            eprintln!(
                "model: op {op} ({} events, relaxed {relaxed})",
                run.model.events.len()
            );
        }
        match op {
            0..=4 => run.append(&mut u),
            5..=7 => run.append_cas(&mut u),
            8..=10 => run.append_idempotent(&mut u),
            11 | 12 => run.batch(&mut u),
            13 => run.sync(),
            14 | 15 => run.compact(&mut u),
            16 => run.snapshot(),
            17 => run.crash(),
            18 => run.power_loss(),
            _ => run.io_failure(&mut u),
        }
        check(run.store(), &run.model);
    }
}
