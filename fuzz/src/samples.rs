//! Valid encodings for the mutation targets, taken from the files of a real
//! store (built once per process in a temporary directory) rather than
//! built from the crate's private types: event frames of every shape
//! (causation, batch, redacted, maximal coordinates), a sealed segment with
//! its footer, a checkpoint and a removed-event record. Also the offsets of
//! their integer fields (lengths and counts, mostly), walked from the layouts
//! in `docs/format.md`, for mutations that hit exactly those.

use crate::input::{read_int, Field};
use batpak::prelude::*;
use batpak::store::fuzzing as f;
use batpak::store::{CompactionConfig, CompactionStrategy};
use serde_json::json;
use std::sync::OnceLock;

/// Integer fields of an event record body.
pub const EVENT_FIELDS: &[Field] = &[
    (0, 1),
    (4, 2),
    (6, 2),
    (12, 4),
    (34, 1),
    (35, 1),
    (36, 4),
    (40, 4),
    (44, 4),
];

/// Integer fields of a segment header.
pub const SEGMENT_FIELDS: &[Field] = &[(8, 2), (10, 2), (12, 4), (16, 8), (24, 8), (60, 4)];

pub struct Samples {
    /// Event record bodies of different shapes.
    pub event_bodies: Vec<Vec<u8>>,
    /// A segment header, those records as frames, then zero fill.
    pub segment: Vec<u8>,
    pub segment_fields: Vec<Field>,
    pub frame_starts: Vec<usize>,
    /// A sealed segment file (trailing zero fill trimmed to 64 bytes).
    pub sealed: Vec<u8>,
    /// Where its footer frame starts.
    pub footer_at: usize,
    /// Integer fields of the footer frame and trailer, from its start.
    pub footer_fields: Vec<Field>,
    pub checkpoint: Vec<u8>,
    pub checkpoint_fields: Vec<Field>,
    pub removed: Vec<u8>,
    pub removed_fields: Vec<Field>,
}

/// The samples, built on first use.
pub fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(build)
}

fn coord(entity: &str, scope: &str) -> Coordinate {
    Coordinate::new(entity, scope).expect("sample coordinate")
}

/// A store whose files hold every shape of record: run, compact twice
/// (tombstones, then removals), close (checkpoint).
fn write_store(dir: &std::path::Path) {
    let kind = EventKind::custom(1, 1);
    // A fixed clock and explicit ids: the same bytes in every process, so
    // that a failing mutation of a sample replays anywhere.
    let clock: batpak::store::ClockFn = std::sync::Arc::new(|| 1_700_000_000_000_000);
    let cfg = StoreConfig::new(dir)
        .with_segment_max_bytes(4096)
        .with_clock(Some(clock));
    let store = Store::open(cfg).expect("open");
    let mut next_id = 0x5000u128;
    let mut id = || {
        next_id += 1;
        AppendOptions::new().with_idempotency(next_id)
    };
    let first = store
        .append_with_options(
            &coord("order:1", "t"),
            kind,
            &json!({"sku": "tea", "n": [1, 2.5, -3, null, true], "s": "x".repeat(40)}),
            id(),
        )
        .expect("append");
    store
        .append_with_options(
            &coord("order:2", "tenant:é"),
            EventKind::custom(2, 7),
            &json!({"q": {"deep": [{}, []]}}),
            id().with_causation(first.event_id),
        )
        .expect("append with causation");
    let items = (0..3u64)
        .map(|n| {
            BatchAppendItem::new(
                coord("batch:1", "t"),
                kind,
                &json!({ "n": n }),
                id(),
                CausationRef::None,
            )
            .expect("batch item")
        })
        .collect();
    store.append_batch(items).expect("batch");
    store
        .append_with_options(
            &coord(&"e".repeat(1024), &"s".repeat(1024)),
            kind,
            &json!(null),
            id(),
        )
        .expect("append long coordinate");
    for n in 0..40u64 {
        store
            .append_with_options(
                &coord(&format!("fill:{}", n % 4), "t"),
                kind,
                &json!({"n": n, "pad": "p".repeat(150)}),
                id(),
            )
            .expect("append");
    }
    let fill = |e: &StoredEvent<serde_json::Value>, which: &str| {
        e.coordinate.entity() == which && e.event.payload["n"].as_u64().is_some_and(|n| n % 8 < 4)
    };
    store
        .compact(&CompactionConfig {
            strategy: CompactionStrategy::Tombstone(Box::new(move |e| !fill(e, "fill:0"))),
            min_segments: 2,
        })
        .expect("tombstone compaction");
    // More sealed segments, so that the second compaction has work too.
    for n in 40..80u64 {
        store
            .append_with_options(
                &coord(&format!("fill:{}", n % 4), "t"),
                kind,
                &json!({"n": n, "pad": "p".repeat(150)}),
                id(),
            )
            .expect("append");
    }
    store
        .compact(&CompactionConfig {
            strategy: CompactionStrategy::Retention(Box::new(move |e| !fill(e, "fill:1"))),
            min_segments: 2,
        })
        .expect("retention compaction");
    store.close().expect("close");
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; f::FRAME_HEADER_LEN];
    v.extend_from_slice(body);
    f::seal_frame(&mut v);
    v
}

fn build() -> Samples {
    let dir = tempfile::tempdir().expect("temp dir");
    write_store(dir.path());
    let mut files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    let read = |name: &str| {
        std::fs::read(dir.path().join(name)).unwrap_or_else(|e| panic!("sample {name}: {e}"))
    };

    // Every event record body, and the first sealed segment.
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut sealed = None;
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
    {
        let file = std::fs::read(path).expect("read segment");
        let mut pos = f::SEGMENT_HEADER_LEN;
        while let f::Probe::Frame { body, len } = f::probe(&file, pos) {
            if body.first() == Some(&1) {
                bodies.push(body.to_vec());
            }
            pos += len;
        }
        if sealed.is_none() {
            if let Some(at) = f::locate_footer(&file) {
                sealed = Some((file, at as usize));
            }
        }
    }
    let (mut sealed, footer_at) = sealed.expect("a sealed segment");
    let content_end = sealed.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    sealed.truncate(content_end + 64);

    // Records of each shape: plain, with causation, redacted, the largest.
    fn decoded(b: &[u8]) -> f::EventRecord<'_> {
        f::decode_event(b).expect("sample record")
    }
    let mut picks: Vec<&Vec<u8>> = vec![&bodies[0]];
    picks.extend(bodies.iter().find(|b| decoded(b).has_causation()));
    picks.extend(bodies.iter().find(|b| decoded(b).redacted()));
    picks.extend(bodies.iter().max_by_key(|b| b.len()));
    let mut event_bodies: Vec<Vec<u8>> = Vec::new();
    for b in picks {
        if !event_bodies.contains(b) {
            event_bodies.push(b.clone());
        }
    }
    assert!(event_bodies.len() >= 4, "every record shape present");

    let mut segment = f::SegmentHeader::new(9, 1).encode();
    let (mut segment_fields, mut frame_starts) = (vec![], vec![]);
    for body in &event_bodies {
        let at = segment.len();
        frame_starts.push(at);
        segment_fields.push((at + 4, 4));
        segment_fields.extend(
            EVENT_FIELDS
                .iter()
                .map(|&(o, w)| (at + f::FRAME_HEADER_LEN + o, w)),
        );
        segment.extend_from_slice(&frame_of(body));
    }
    segment.resize(segment.len() + 300, 0);

    let footer_fields = footer_fields(&sealed[footer_at..]);
    let checkpoint = read("checkpoint.bpk");
    let checkpoint_fields = checkpoint_fields(&checkpoint);
    let removed = read("removed.bpk");
    let removed_fields = removed_fields(&removed);
    assert!(
        removed_fields.len() > 4,
        "the sample record lists removed events"
    );
    Samples {
        event_bodies,
        segment,
        segment_fields,
        frame_starts,
        sealed,
        footer_at,
        footer_fields,
        checkpoint,
        checkpoint_fields,
        removed,
        removed_fields,
    }
}

fn u32_at(b: &[u8], at: usize) -> usize {
    read_int(b, at, 4).expect("layout walk inside the sample") as usize
}

fn u16_at(b: &[u8], at: usize) -> usize {
    read_int(b, at, 2).expect("layout walk inside the sample") as usize
}

/// Integer fields of a footer frame followed by its trailer.
pub fn footer_fields(b: &[u8]) -> Vec<Field> {
    let h = f::FRAME_HEADER_LEN;
    let mut v = vec![
        (4, 4),
        (h + 1, 1),
        (h + 4, 4),
        (h + 8, 4),
        (h + 12, 4),
        (h + 24, 8),
    ];
    let (coords, entries, tails) = (u32_at(b, h + 4), u32_at(b, h + 8), u32_at(b, h + 12));
    let mut at = h + 32;
    for _ in 0..coords {
        v.extend([(at, 2), (at + 2, 2)]);
        at += 4 + u16_at(b, at) + u16_at(b, at + 2);
    }
    for _ in 0..entries {
        v.extend([
            (at, 4),
            (at + 4, 4),
            (at + 76, 4),
            (at + 85, 1),
            (at + 88, 4),
        ]);
        at += 96;
    }
    for _ in 0..tails {
        v.push((at, 4));
        at += 36;
    }
    v.push((at, 8)); // trailer: footer offset
    v
}

/// Integer fields of a checkpoint, found by walking its layout: every
/// count, string length and reference.
pub fn checkpoint_fields(b: &[u8]) -> Vec<Field> {
    let mut v = vec![(8, 2), (16, 8)];
    let mut at = 24 + 8;
    v.push((at, 4));
    let n = u32_at(b, at);
    at += 4;
    for _ in 0..n {
        v.extend([(at + 24, 4), (at + 28, 4)]);
        at += 48;
    }
    v.push((at, 4));
    let n = u32_at(b, at);
    at += 4;
    for _ in 0..n {
        v.push((at, 2));
        at += 2 + u16_at(b, at);
        v.push((at, 1));
        at += 1 + 4 + 32 + 8 + 2;
    }
    v.push((at, 4));
    let n = u32_at(b, at);
    at += 4;
    for _ in 0..n {
        v.push((at, 2));
        at += 2 + u16_at(b, at);
    }
    v.push((at, 4));
    let n = u32_at(b, at);
    at += 4;
    for _ in 0..n {
        v.extend([(at, 4), (at + 4, 4)]);
        at += 8;
    }
    v.push((at, 4));
    let n = u32_at(b, at);
    at += 4 + 16 * n;
    v.push((at, 4));
    let n = u32_at(b, at);
    at += 4;
    for _ in 0..n {
        v.extend([(at, 4), (at + 4, 8)]);
        at += 12;
    }
    v.push((at, 4));
    let n = u32_at(b, at);
    at += 4;
    for _ in 0..n {
        v.extend([(at, 4), (at + 4, 4), (at + 8, 4)]);
        at += 12;
    }
    v.push((at, 4));
    let n = u32_at(b, at);
    at += 4;
    for _ in 0..n {
        v.extend([
            (at, 8),
            (at + 24, 2),
            (at + 26, 1),
            (at + 27, 1),
            (at + 40, 4),
            (at + 44, 4),
        ]);
        at += 48;
    }
    assert_eq!(at, b.len(), "checkpoint layout walk");
    v
}

/// Integer fields of a removed-event record: header counts, then each
/// entry's string lengths.
pub fn removed_fields(b: &[u8]) -> Vec<Field> {
    let mut v = vec![(8, 2), (16, 8), (24, 8), (32, 8)];
    let entries = read_int(b, 16, 8).unwrap_or(0);
    let mut at = 40;
    for _ in 0..entries {
        v.extend([(at + 26, 2), (at + 28, 2)]);
        at += 74 + u16_at(b, at + 26) + u16_at(b, at + 28);
    }
    v
}
