#![allow(dead_code)]
//! Helpers shared by the crash and disk-full tests (`crash_random.rs`,
//! `disk_full.rs`): a seeded RNG, the payload convention that lets a
//! checker recognise batches, the acknowledgement line a writer reports,
//! and the consistency check every store must pass however it was
//! interrupted.

use batpak::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// SplitMix64: small, seedable, good enough to pick crash points.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next_u64() % den < num
    }

    /// A non-zero 128-bit value (idempotency keys).
    pub fn key(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64 | u128::from(self.next_u64())).max(1)
    }
}

/// A seed from `var`, else from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|_| panic!("{var}={s} is not a u64")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

/// Prints `what` (the seed and how to rerun) if the test panics while it lives.
pub struct OnFailure(pub String);

impl Drop for OnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("FAILED WITH {}", self.0);
        }
    }
}

/// FNV-1a of the payload's JSON text (serde_json orders keys the same way
/// on both sides).
pub fn digest(v: &Value) -> u64 {
    let text = serde_json::to_string(v).expect("payload serialises");
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The payload convention: `b` names the batch (empty for a single append),
/// `n` is the batch's size and `k` the item's place in it, so a checker can
/// tell a partial batch from the store's contents alone.
pub fn payload(batch: &str, n: usize, k: usize, pad: usize, extra: u64) -> Value {
    json!({ "b": batch, "n": n, "k": k, "x": extra, "pad": "p".repeat(pad) })
}

/// An acknowledged event: what a writer learned from its receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acked {
    pub event_id: u128,
    pub sequence: u64,
    pub entity: String,
    pub digest: u64,
    pub segment_id: u64,
    pub offset: u64,
    /// The idempotency key was the event id (so a retry must return this receipt).
    pub keyed: bool,
}

impl Acked {
    pub fn new(r: &AppendReceipt, entity: &str, payload: &Value, keyed: bool) -> Self {
        Self {
            event_id: r.event_id,
            sequence: r.sequence,
            entity: entity.to_owned(),
            digest: digest(payload),
            segment_id: r.disk_pos.segment_id,
            offset: r.disk_pos.offset,
            keyed,
        }
    }

    /// One line, `ACK id seq entity digest segment offset keyed`.
    pub fn line(&self) -> String {
        format!(
            "ACK {} {} {} {} {} {} {}",
            self.event_id,
            self.sequence,
            self.entity,
            self.digest,
            self.segment_id,
            self.offset,
            u8::from(self.keyed)
        )
    }

    /// Parse a line written by [`Acked::line`], ignoring text before `ACK `
    /// (libtest may print on the same line first).
    pub fn parse(line: &str) -> Option<Self> {
        let at = line.find("ACK ")?;
        let mut p = line[at + 4..].split_whitespace();
        let mut next = || p.next();
        Some(Self {
            event_id: next()?.parse().ok()?,
            sequence: next()?.parse().ok()?,
            entity: next()?.to_owned(),
            digest: next()?.parse().ok()?,
            segment_id: next()?.parse().ok()?,
            offset: next()?.parse().ok()?,
            keyed: next()? == "1",
        })
    }
}

/// What [`check_store`] saw.
#[derive(Clone, Debug, Default)]
pub struct Checked {
    pub events: usize,
    pub batches: usize,
    pub entities: usize,
    pub acked: usize,
    /// Highest global sequence present.
    pub max_sequence: Option<u64>,
    /// The `x` field of every payload present.
    pub payload_x: HashSet<u64>,
}

/// Everything that must hold for a store however it was interrupted:
/// - every acknowledged event is present with its id, sequence, entity and payload;
/// - global sequences are unique and strictly increasing in query order;
/// - every batch is all there or not at all, its sequences contiguous;
/// - each entity's clocks are 0..n without gaps and its hash chain links;
/// - every indexed event reads back, and agrees with its index entry;
/// - diagnostics agree, and recovery found no damage and no chain break.
///
/// Panics with a description on the first violation.
pub fn check_store(store: &Store, acked: &[Acked]) -> Checked {
    let all = store.query(&Region::all());
    for w in all.windows(2) {
        assert!(
            w[0].global_sequence < w[1].global_sequence,
            "global sequences not strictly increasing: {} then {}",
            w[0].global_sequence,
            w[1].global_sequence
        );
    }
    let by_id: HashMap<u128, usize> = all
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id, i))
        .collect();
    assert_eq!(by_id.len(), all.len(), "an event id appears twice");

    // Read every event back; remember its payload's digest and batch marks.
    let mut digests = HashMap::with_capacity(all.len());
    let mut batches: BTreeMap<String, Vec<(u64, u64, u64)>> = BTreeMap::new();
    let mut payload_x = HashSet::new();
    for e in &all {
        let ev = store
            .get(e.event_id)
            .unwrap_or_else(|err| panic!("indexed event {:032x} unreadable: {err}", e.event_id));
        assert_eq!(ev.event.header.event_id, e.event_id);
        assert_eq!(ev.coordinate, e.coord, "coordinate of {:032x}", e.event_id);
        if let Some(chain) = &ev.event.hash_chain {
            assert_eq!(chain, &e.hash_chain, "hash chain of {:032x}", e.event_id);
        }
        let p = &ev.event.payload;
        digests.insert(e.event_id, digest(p));
        if let Some(x) = p["x"].as_u64() {
            payload_x.insert(x);
        }
        if let Some(tag) = p["b"].as_str().filter(|t| !t.is_empty()) {
            let n = p["n"].as_u64().expect("batch size in payload");
            let k = p["k"].as_u64().expect("batch index in payload");
            batches
                .entry(tag.to_owned())
                .or_default()
                .push((k, n, e.global_sequence));
        }
    }

    for (tag, items) in &mut batches {
        items.sort_unstable();
        let n = items[0].1;
        assert_eq!(
            items.len() as u64,
            n,
            "batch {tag} is partly present: {} of {n} items ({items:?})",
            items.len()
        );
        for (i, (k, n2, seq)) in items.iter().enumerate() {
            assert_eq!((*k, *n2), (i as u64, n), "batch {tag}: items {items:?}");
            assert_eq!(
                *seq,
                items[0].2 + i as u64,
                "batch {tag}: sequences not contiguous ({items:?})"
            );
        }
    }

    for a in acked {
        let Some(&i) = by_id.get(&a.event_id) else {
            panic!("acknowledged event lost: {a:?}");
        };
        let e = &all[i];
        assert_eq!(e.global_sequence, a.sequence, "sequence of acked {a:?}");
        assert_eq!(e.coord.entity(), a.entity, "entity of acked {a:?}");
        assert_eq!(digests[&a.event_id], a.digest, "payload of acked {a:?}");
    }

    let mut entities: BTreeMap<&str, Vec<&IndexEntry>> = BTreeMap::new();
    for e in &all {
        entities.entry(e.coord.entity()).or_default().push(e);
    }
    for (entity, events) in &mut entities {
        events.sort_by_key(|e| e.clock);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.clock, i as u32, "{entity}: clocks have a gap or repeat");
        }
        assert_eq!(
            events[0].hash_chain.prev_hash, [0; 32],
            "{entity}: first event links to something"
        );
        for w in events.windows(2) {
            assert!(
                w[1].hash_chain.prev_hash == w[0].hash_chain.event_hash,
                "{entity}: chain broken between clocks {} and {}:\n  {:?}\n  {:?}\n  recovery: {:?}",
                w[0].clock,
                w[1].clock,
                w[0],
                w[1],
                store.diagnostics().recovery
            );
        }
        let mut stream: Vec<u128> = store.stream(entity).iter().map(|e| e.event_id).collect();
        let mut mine: Vec<u128> = events.iter().map(|e| e.event_id).collect();
        stream.sort_unstable();
        mine.sort_unstable();
        assert_eq!(stream, mine, "{entity}: stream() disagrees with query()");
    }

    let d = store.diagnostics();
    assert_eq!(d.event_count, all.len(), "diagnostics event count");
    assert_eq!(d.pending_events, 0, "events pending after open");
    if let Some(last) = all.last() {
        assert!(
            d.global_sequence > last.global_sequence,
            "next sequence {} not after the newest {}",
            d.global_sequence,
            last.global_sequence
        );
        assert_eq!(d.visible_sequence, last.global_sequence + 1);
    }
    assert!(
        d.recovery.damaged.is_empty(),
        "recovery reported damage: {:?}",
        d.recovery
    );
    assert_eq!(
        d.recovery.chain_breaks, 0,
        "recovery counted chain breaks: {:?}",
        d.recovery
    );
    assert!(
        d.poisoned.is_none(),
        "poisoned after open: {:?}",
        d.poisoned
    );
    assert_eq!(d.entity_count, entities.len());

    Checked {
        events: all.len(),
        batches: batches.len(),
        entities: entities.len(),
        acked: acked.len(),
        max_sequence: all.last().map(|e| e.global_sequence),
        payload_x,
    }
}

/// `Store::verify` must find nothing; `context` says where in the test.
pub fn assert_verify_clean(store: &Store, context: &str) {
    let report = store
        .verify()
        .unwrap_or_else(|e| panic!("{context}: verify failed: {e}"));
    assert!(report.is_clean(), "{context}: verify: {report}");
}
