//! Hostile-input tests for every decoder of bytes read from disk.
//!
//! Each decoder gets property tests over arbitrary bytes (0..4096 bytes,
//! mostly seeded noise with a random share of zeros) and over mutations of
//! valid encodings built with the crate's own encoders: flipped bytes, integer
//! fields (especially length and count fields) set to hostile values such as
//! `u32::MAX` / `u64::MAX` or nudged by a few units, truncation, extension and
//! splices, with the checksum optionally recomputed so the damage reaches the
//! body parser. Every call must return `Ok` or a typed error (no panic); a
//! `Short` error must say it needed more than it had, and error text stays
//! short. A decoded value must re-encode to bytes that decode to the same value
//! (encoding is a fixpoint after one decode).
//!
//! Allocation: a counting global allocator (pass-through unless a
//! [`counting::measure`] is active on the calling thread) records, per decoder
//! call, the largest single request, the total requested and the peak of live
//! bytes. Each decoder has a [`Bound`] of the form `k * n + c` for an input of
//! `n` bytes; the reasoning is next to each bound.
//!
//! Cases per run, by default (about 5 s in a debug build on one thread,
//! 3 s on two). `PROPTEST_CASES=N` runs N cases of every property instead,
//! e.g. `PROPTEST_CASES=100000 cargo test --release -p batpak --lib fuzz`.
//!
//! | decoder                              | properties: cases                      | total |
//! |--------------------------------------|----------------------------------------|-------|
//! | frame: probe, decode_frame,          | arbitrary 1024, mutated segment 512    |  1536 |
//! |   next_valid_frame                   |                                        |       |
//! | record: decode_event                 | arbitrary 1024, mutated record 512     |  1536 |
//! | segment: SegmentHeader::decode       | arbitrary 1024, mutated 512            |  1536 |
//! | footer: locate, decode               | arbitrary 1024, mutated 512,           |  2048 |
//! |                                      |   in a mutated segment 512             |       |
//! | checkpoint: decode (+ IndexLoader)   | arbitrary 1024, forged body 512,       |  2048 |
//! |                                      |   mutated 512                          |       |
//! | removed: decode                      | arbitrary 1024, mutated 512            |  1536 |
//! | intent: Intent::decode               | arbitrary 1024, mutated 512            |  1536 |
//! | payload: decode_value, validate      | arbitrary 1024, mutated value 512,     |  2048 |
//! |                                      |   token soup 256, nested claims 256    |       |
//! | NativeCache: get, delete_prefix      | arbitrary file 64, mutated file 64     |   128 |
//! | total                                | 22 properties                          | 13952 |
//!
//! Every segment scan also runs `decode_event` and `payload::validate` on the
//! frames it finds. Deterministic tests add hostile counts (2^32 entries in a
//! 100-byte file) for every format, nested payload claims, the densest valid
//! inputs (the worst legitimate memory per byte) and a self-test of the
//! counting allocator.

use super::checkpoint::{self, CoveredSegment};
use super::footer::{self, Footer, FooterEntry};
use super::frame::{
    decode_frame, frame_crc, next_valid_frame, probe, seal_frame, Probe, FRAME_HEADER_LEN,
};
use super::intent::Intent;
use super::payload::{decode_value, encode_value, validate, PayloadError};
use super::record::decode_event;
use super::removed::{self, RemovedEntry, RemovedRecord};
use super::segment::{SegmentHeader, SEGMENT_HEADER_LEN};
use super::FormatError;
use crate::event::EventKind;
use crate::store::index::{Index, NewRecord};
use crate::store::projection::{CacheMeta, NativeCache, ProjectionCache};
use counting::{measure, Usage};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The counting allocator. It must stay a transparent pass-through when no
/// measurement is active, since it serves the whole lib test binary.
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    /// What one measured call asked of the allocator (on its own thread).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) struct Usage {
        /// Largest single request (`alloc` size or `realloc` new size).
        pub(super) largest: usize,
        /// Sum of all requests (a growing `realloc` counts its new size).
        pub(super) total: usize,
        /// Highest value of (bytes allocated - bytes freed) during the call.
        pub(super) peak_live: usize,
    }

    #[derive(Clone, Copy)]
    struct State {
        active: bool,
        usage: Usage,
        live: isize,
    }

    const IDLE: State = State {
        active: false,
        usage: Usage {
            largest: 0,
            total: 0,
            peak_live: 0,
        },
        live: 0,
    };

    thread_local! {
        // Const-initialised plain data without a destructor: accessing it
        // never allocates and never registers a TLS destructor, so using it
        // inside the allocator cannot recurse.
        static STATE: Cell<State> = const { Cell::new(IDLE) };
    }

    #[inline]
    fn note(request: usize, grow: usize, shrink: usize) {
        // `try_with`: during thread teardown the slot may be gone; then
        // nothing is counted (no measurement can be active then anyway).
        let _ = STATE.try_with(|s| {
            let mut st = s.get();
            if !st.active {
                return;
            }
            st.usage.largest = st.usage.largest.max(request);
            st.usage.total = st.usage.total.saturating_add(request);
            st.live = st
                .live
                .saturating_add(grow as isize)
                .saturating_sub(shrink as isize);
            st.usage.peak_live = st.usage.peak_live.max(st.live.max(0) as usize);
            s.set(st);
        });
    }

    pub(super) struct Counting;

    // SAFETY: every method forwards its arguments unchanged to `System`, so
    // `System`'s guarantees are ours; the bookkeeping only reads and writes a
    // thread-local `Cell` of integers, which neither allocates nor unwinds.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size(), layout.size(), 0);
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract,
            // which is the one `System.alloc` needs.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size(), layout.size(), 0);
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            note(0, 0, layout.size());
            // SAFETY: the caller guarantees `ptr` came from this allocator
            // (that is, from `System`) with this `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller guarantees `ptr`/`layout` describe a live
            // block of this allocator (of `System`) and a valid `new_size`.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if p.is_null() {
                note(new_size, 0, 0);
            } else {
                note(new_size, new_size, layout.size());
            }
            p
        }
    }

    #[global_allocator]
    static ALLOC: Counting = Counting;

    /// Run `f`, counting what it allocates on this thread.
    pub(super) fn measure<R>(f: impl FnOnce() -> R) -> (R, Usage) {
        struct Stop;
        impl Drop for Stop {
            fn drop(&mut self) {
                STATE.with(|s| s.set(IDLE));
            }
        }
        STATE.with(|s| {
            s.set(State {
                active: true,
                ..IDLE
            })
        });
        let stop = Stop;
        let r = f();
        let usage = STATE.with(|s| s.get().usage);
        drop(stop);
        (r, usage)
    }
}

// ---------------------------------------------------------------------------
// Configuration, inputs and mutations
// ---------------------------------------------------------------------------

/// Largest arbitrary input.
const MAX_LEN: usize = 4096;

/// Default cases of the properties over arbitrary bytes (most rejected early).
const CHEAP: u32 = 1024;
/// ... over mutations of valid encodings (which reach deep into the decoders).
const MUTATE: u32 = 512;
/// ... over payload token soups, the slowest to generate.
const HEAVY: u32 = 256;
/// ... over cache files (each case writes files).
const FILES: u32 = 64;

/// `default` cases, or `PROPTEST_CASES` when set; no regression files are
/// written into the source tree.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Seeded noise (xorshift64*); roughly `zeros`/256 of the bytes are zero.
fn noise(len: usize, seed: u64, zeros: u8) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_F491_4F6C_DD1D);
            if ((r >> 8) as u8) < zeros {
                0
            } else {
                (r >> 56) as u8
            }
        })
        .collect()
}

/// Arbitrary bytes: short shrinkable vectors, or up to [`MAX_LEN`] bytes of noise.
fn hostile_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        (0..=MAX_LEN, any::<u64>(), any::<u8>()).prop_map(|(n, seed, z)| noise(n, seed, z)),
    ]
}

/// `prefix` (a magic number, say) followed by arbitrary bytes, sometimes
/// cut inside the prefix.
fn hostile_after(prefix: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (hostile_bytes(), 0..=prefix.len() + 8).prop_map(move |(tail, cut)| {
        let mut v = prefix[..cut.min(prefix.len())].to_vec();
        v.extend_from_slice(&tail);
        v
    })
}

/// Values that break length and count arithmetic.
fn special() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1),
        Just(2),
        Just(u64::from(u16::MAX)),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u64::from(u32::MAX)),
        Just(u64::from(u32::MAX) + 1),
        Just(1 << 63),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        0..5000u64,
        any::<u64>(),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    /// XOR a byte (position modulo the length).
    Xor(usize, u8),
    /// Write a little-endian integer of 1, 2, 4 or 8 bytes anywhere.
    Int { at: usize, width: u8, value: u64 },
    /// Overwrite one of the format's known integer fields.
    Field { which: usize, value: u64 },
    /// Add a small delta to one of the format's known integer fields.
    Nudge { which: usize, delta: i16 },
    /// Cut the input (length modulo the length + 1).
    Truncate(usize),
    /// Append bytes.
    Extend(Vec<u8>),
    /// Replace `remove` bytes at `at` by `insert`.
    Splice {
        at: usize,
        remove: usize,
        insert: Vec<u8>,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 1..=255u8).prop_map(|(a, m)| Mutation::Xor(a, m)),
        2 => (any::<usize>(), prop::sample::select(vec![1u8, 2, 4, 8]), special())
            .prop_map(|(at, width, value)| Mutation::Int { at, width, value }),
        4 => (any::<usize>(), special())
            .prop_map(|(which, value)| Mutation::Field { which, value }),
        2 => (any::<usize>(), -3i16..=3)
            .prop_map(|(which, delta)| Mutation::Nudge { which, delta }),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..40).prop_map(Mutation::Extend),
        1 => (any::<usize>(), 0..64usize, prop::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(at, remove, insert)| Mutation::Splice { at, remove, insert }),
    ]
}

/// How to make a file's header agree with a damaged body: 0 not at all,
/// 1 the checksum, 2 the length and the checksum (mostly 2, so that the
/// damage reaches the body parser).
fn reseal_mode() -> impl Strategy<Value = u8> {
    prop_oneof![1 => Just(0u8), 2 => Just(1u8), 6 => Just(2u8)]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..5)
}

/// A known integer field of a format: offset and width in bytes.
type Field = (usize, usize);

fn read_int(buf: &[u8], at: usize, width: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(width)?)?;
    let mut a = [0u8; 8];
    a[..width].copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

fn write_int(buf: &mut [u8], at: usize, width: usize, value: u64) {
    if let Some(b) = at.checked_add(width).and_then(|end| buf.get_mut(at..end)) {
        b.copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

fn apply(buf: &mut Vec<u8>, m: &Mutation, fields: &[Field]) {
    let len = buf.len();
    match m {
        Mutation::Xor(at, mask) => {
            if len > 0 {
                buf[at % len] ^= mask;
            }
        }
        Mutation::Int { at, width, value } => {
            let w = usize::from(*width);
            if len >= w {
                write_int(buf, at % (len - w + 1), w, *value);
            }
        }
        Mutation::Field { which, value } => {
            if let Some(&(at, w)) = fields.get(which % fields.len().max(1)) {
                write_int(buf, at, w, *value);
            }
        }
        Mutation::Nudge { which, delta } => {
            if let Some(&(at, w)) = fields.get(which % fields.len().max(1)) {
                if let Some(v) = read_int(buf, at, w) {
                    write_int(buf, at, w, v.wrapping_add(*delta as i64 as u64));
                }
            }
        }
        Mutation::Truncate(n) => buf.truncate(n % (len + 1)),
        Mutation::Extend(more) => buf.extend_from_slice(more),
        Mutation::Splice { at, remove, insert } => {
            let at = at % (len + 1);
            let end = (at + remove).min(len);
            buf.splice(at..end, insert.iter().copied());
        }
    }
}

fn mutate(base: &[u8], muts: &[Mutation], fields: &[Field]) -> Vec<u8> {
    let mut v = base.to_vec();
    for m in muts {
        apply(&mut v, m, fields);
    }
    v
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// Allocation allowed for an input of `n` bytes: `per_byte * n + constant`,
/// for the largest single request, the peak of live bytes and the total.
#[derive(Clone, Copy, Debug)]
struct Bound {
    largest: (usize, usize),
    peak: (usize, usize),
    total: (usize, usize),
}

impl Bound {
    /// Decoders that allocate nothing but the text of an error (a few dozen
    /// bytes; a resynchronising scan may build and drop one per candidate).
    const ERRORS_ONLY: Bound = Bound {
        largest: (0, 256),
        peak: (0, 1024),
        total: (8, 1024),
    };
}

fn within(u: Usage, n: usize, b: Bound, what: &str) -> Result<(), TestCaseError> {
    let limit = |(k, c): (usize, usize)| k.saturating_mul(n).saturating_add(c);
    if u.largest > limit(b.largest) || u.peak_live > limit(b.peak) || u.total > limit(b.total) {
        return Err(TestCaseError::fail(format!(
            "{what}: {u:?} for {n} input bytes exceeds {b:?}"
        )));
    }
    Ok(())
}

/// A clear error: `Short` needs more than it has, and the text is short
/// (it never echoes the input).
fn clear(e: &FormatError) -> Result<(), TestCaseError> {
    if let FormatError::Short { need, have, .. } = e {
        prop_assert!(
            need > have,
            "Short error with need {need} <= have {have}: {e}"
        );
    }
    let text = e.to_string();
    prop_assert!(
        !text.is_empty() && text.len() < 200,
        "unclear error text {text:?}"
    );
    Ok(())
}

fn clear_payload(e: &PayloadError, len: usize) -> Result<(), TestCaseError> {
    let at = match *e {
        PayloadError::Truncated(at)
        | PayloadError::UnsupportedTag { at, .. }
        | PayloadError::InvalidUtf8(at)
        | PayloadError::NonStringKey(at)
        | PayloadError::NonFiniteFloat(at) => at,
        PayloadError::TrailingBytes(n) => {
            prop_assert!(n > 0 && n < len.max(1), "{e}");
            0
        }
        PayloadError::TooDeep => 0,
    };
    prop_assert!(at <= len, "error position {at} beyond {len} bytes: {e}");
    prop_assert!(e.to_string().len() < 200);
    Ok(())
}

// ---------------------------------------------------------------------------
// Frames and event records
// ---------------------------------------------------------------------------

fn payload_bytes(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_value(v, &mut out).unwrap();
    out
}

/// Event frames of different shapes: with causation, redacted, maximal
/// coordinates in a batch.
fn sample_event_frames() -> Vec<Vec<u8>> {
    let payload = payload_bytes(&serde_json::json!({
        "sku": "tea", "n": [1, 2.5, -3, null, true], "s": "x".repeat(40)
    }));
    let a = super::record::tests::sample(&payload);
    let mut b = a.clone();
    b.redacted = true;
    b.payload = b"";
    let (entity, scope) = ("e".repeat(1024), "s".repeat(1024));
    let mut c = super::record::tests::sample(b"\xc0");
    c.entity = &entity;
    c.scope = &scope;
    c.causation_id = None;
    c.batch_size = 3;
    c.batch_index = 2;
    vec![a.to_frame(), b.to_frame(), c.to_frame()]
}

/// Integer fields of an event record body.
const EVENT_FIELDS: &[Field] = &[
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

/// A segment (header, event frames, zero fill), its integer fields and
/// where its frames start.
fn sample_segment() -> (Vec<u8>, Vec<Field>, Vec<usize>) {
    let mut seg = SegmentHeader {
        segment_id: 9,
        created_us: 1,
    }
    .encode()
    .to_vec();
    let (mut fields, mut starts) = (vec![], vec![]);
    for f in sample_event_frames() {
        let at = seg.len();
        starts.push(at);
        fields.push((at + 4, 4));
        fields.extend(
            EVENT_FIELDS
                .iter()
                .map(|&(o, w)| (at + FRAME_HEADER_LEN + o, w)),
        );
        seg.extend_from_slice(&f);
    }
    seg.resize(seg.len() + 300, 0);
    (seg, fields, starts)
}

/// Recompute the CRC of the frame at `at` over the length it claims, when
/// that many bytes are present.
fn reseal_frame_at(buf: &mut [u8], at: usize) {
    let Some(len) = read_int(buf, at + 4, 4) else {
        return;
    };
    let start = at + FRAME_HEADER_LEN;
    let Some(body) = start
        .checked_add(len as usize)
        .and_then(|end| buf.get(start..end))
    else {
        return;
    };
    let crc = frame_crc(len as u32, body);
    write_int(buf, at + 8, 4, u64::from(crc));
}

/// Check one frame decode, including its agreement with `probe`.
fn check_frame(buf: &[u8], pos: usize) -> Result<(), TestCaseError> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    let (decoded, u) = measure(|| decode_frame(rest));
    within(u, rest.len(), Bound::ERRORS_ONLY, "decode_frame")?;
    let (probed, u) = measure(|| probe(buf, pos));
    within(u, rest.len(), Bound::ERRORS_ONLY, "probe")?;
    match &decoded {
        Ok((body, len)) => {
            prop_assert_eq!(*len, FRAME_HEADER_LEN + body.len());
            prop_assert!(*len <= rest.len() && !body.is_empty());
            // Re-sealing the body reproduces the frame exactly.
            let mut again = vec![0u8; *len];
            again[FRAME_HEADER_LEN..].copy_from_slice(body);
            seal_frame(&mut again);
            prop_assert_eq!(&again[..], &rest[..*len]);
        }
        Err(e) => clear(e)?,
    }
    let all_zero = rest.iter().all(|&b| b == 0);
    match probed {
        Probe::End => prop_assert!(all_zero),
        Probe::Frame { body, len } => {
            prop_assert!(!all_zero);
            prop_assert_eq!(decoded, Ok((body, len)));
        }
        Probe::Damaged(e) => {
            prop_assert!(!all_zero);
            prop_assert_eq!(decoded, Err(e));
        }
    }
    Ok(())
}

/// `next_valid_frame` returns the first valid frame at or after `from`.
fn check_resync(buf: &[u8], from: usize) -> Result<(), TestCaseError> {
    let (found, u) = measure(|| next_valid_frame(buf, from));
    within(u, buf.len(), Bound::ERRORS_ONLY, "next_valid_frame")?;
    let marker = super::frame::FRAME_MARKER.to_le_bytes();
    let end = found.unwrap_or(buf.len());
    if let Some(p) = found {
        prop_assert!(p >= from && p < buf.len());
        prop_assert!(decode_frame(&buf[p..]).is_ok());
    }
    // No valid frame was skipped.
    for cand in from..end.min(buf.len().saturating_sub(3)) {
        if buf[cand..cand + 4] == marker {
            prop_assert!(
                decode_frame(&buf[cand..]).is_err(),
                "skipped the valid frame at {}",
                cand
            );
        }
    }
    Ok(())
}

/// The recovery loop: probe, and resynchronise after damage. It must end,
/// moving forward at every step.
fn scan(buf: &[u8], start: usize) -> Result<usize, TestCaseError> {
    let mut pos = start;
    let mut frames = 0;
    let (r, u) = measure(|| -> Result<(), TestCaseError> {
        for _ in 0..=buf.len() + 1 {
            match probe(buf, pos) {
                Probe::Frame { body, len } => {
                    frames += 1;
                    if let Ok(rec) = decode_event(body) {
                        // The read path decodes the payload of what it finds.
                        if !rec.redacted {
                            let _ = validate(rec.payload);
                        }
                    }
                    pos += len;
                }
                Probe::End => return Ok(()),
                Probe::Damaged(_) => match next_valid_frame(buf, pos + 1) {
                    Some(p) => {
                        prop_assert!(p > pos);
                        pos = p;
                    }
                    None => return Ok(()),
                },
            }
        }
        Err(TestCaseError::fail("scan did not end"))
    });
    r?;
    // The payload validator allocates nothing either.
    within(u, buf.len(), Bound::ERRORS_ONLY, "segment scan")?;
    Ok(frames)
}

/// Check an event record decode; a decoded record re-encodes to a frame that
/// decodes to the same record.
fn check_event(body: &[u8]) -> Result<(), TestCaseError> {
    let (r, u) = measure(|| decode_event(body));
    within(u, body.len(), Bound::ERRORS_ONLY, "decode_event")?;
    match r {
        Ok(rec) => {
            prop_assert_eq!(rec.frame_len(), FRAME_HEADER_LEN + body.len());
            prop_assert!(rec.redacted || rec.payload.len() == rec.payload_len as usize);
            let frame = rec.to_frame();
            let (b2, _) = decode_frame(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back = decode_event(b2).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&back, &rec);
            // Only the causation id (ignored without its flag) may differ.
            let mut canon = body.to_vec();
            if rec.causation_id.is_none() {
                canon[super::record::off::CAUSATION_ID..super::record::off::CAUSATION_ID + 16]
                    .fill(0);
            }
            prop_assert_eq!(&canon[..], b2);
        }
        Err(e) => clear(&e)?,
    }
    Ok(())
}

fn event_record_bodies() -> Vec<Vec<u8>> {
    sample_event_frames()
        .into_iter()
        .map(|f| f[FRAME_HEADER_LEN..].to_vec())
        .collect()
}

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn frame_decoders_on_arbitrary_bytes(
        bytes in hostile_bytes(),
        pos in 0usize..64,
        from in any::<usize>(),
    ) {
        check_frame(&bytes, pos % (bytes.len() + 2))?;
        check_resync(&bytes, from % (bytes.len() + 2))?;
        scan(&bytes, 0)?;
    }

    #[test]
    fn event_decoder_on_arbitrary_bytes(bytes in hostile_after(&[1])) {
        check_event(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(MUTATE))]

    #[test]
    fn frame_decoders_on_mutated_segments(
        muts in mutations(),
        reseal in any::<bool>(),
        from in 0usize..3000,
    ) {
        let (seg, fields, starts) = sample_segment();
        let mut buf = mutate(&seg, &muts, &fields);
        if reseal {
            // Make the damage reach the record decoder: re-seal every frame.
            for &at in &starts {
                reseal_frame_at(&mut buf, at);
            }
        }
        let from = from % (buf.len() + 2);
        for &at in &starts {
            check_frame(&buf, at)?;
        }
        check_frame(&buf, from)?;
        check_resync(&buf, from)?;
        scan(&buf, SEGMENT_HEADER_LEN)?;
    }

    #[test]
    fn event_decoder_on_mutated_records(which in 0usize..3, muts in mutations()) {
        let bodies = event_record_bodies();
        check_event(&mutate(&bodies[which], &muts, EVENT_FIELDS))?;
    }
}

// ---------------------------------------------------------------------------
// Segment header
// ---------------------------------------------------------------------------

const SEGMENT_FIELDS: &[Field] = &[(8, 2), (10, 2), (12, 4), (16, 8), (24, 8), (60, 4)];

fn check_segment_header(b: &[u8]) -> Result<(), TestCaseError> {
    let (r, u) = measure(|| SegmentHeader::decode(b));
    within(u, b.len(), Bound::ERRORS_ONLY, "SegmentHeader::decode")?;
    match r {
        Ok(h) => {
            prop_assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        }
        Err(e) => clear(&e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn segment_header_on_arbitrary_bytes(bytes in hostile_after(b"BATPAKSG\x01\x00\x40\x00")) {
        check_segment_header(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(MUTATE))]

    #[test]
    fn segment_header_on_mutations(
        id in any::<u64>(),
        created in any::<i64>(),
        muts in mutations(),
        reseal in any::<bool>(),
    ) {
        let h = SegmentHeader { segment_id: id, created_us: created }.encode();
        let mut b = mutate(&h, &muts, SEGMENT_FIELDS);
        if reseal && b.len() >= SEGMENT_HEADER_LEN {
            let crc = crc32fast::hash(&b[..60]);
            write_int(&mut b, 60, 4, u64::from(crc));
        }
        check_segment_header(&b)?;
    }
}

// ---------------------------------------------------------------------------
// Footers
// ---------------------------------------------------------------------------

fn sample_footer() -> (Footer, Vec<u32>) {
    let coords = vec![
        ("order:1".to_string(), "t".to_string()),
        ("order:2".to_string(), "tenant:é".to_string()),
        ("x".repeat(1024), "y".repeat(1024)),
    ];
    let entries = (0..5u32)
        .map(|i| FooterEntry {
            offset: 64 + i * 300,
            length: 300,
            global_seq: 10 + u64::from(i),
            timestamp_us: 1_700_000_000_000_000,
            event_id: u128::from(i) << 64 | 7,
            correlation_id: 5,
            causation_id: (i == 1).then_some(9),
            event_hash: if i >= 2 { [i as u8; 32] } else { [0; 32] },
            clock: i,
            coord: i % 3,
            kind: 0x1001,
            hlc_counter: 1,
            flags: 8,
            batch_size: 2,
            batch_index: i % 2,
        })
        .collect();
    let f = Footer {
        segment_id: 3,
        frames_end: 1564,
        coords,
        entries,
    };
    (f, vec![2, 3, 4])
}

/// Integer fields of an encoded footer (frame + trailer).
fn footer_fields(f: &Footer, ntails: usize) -> Vec<Field> {
    let b = FRAME_HEADER_LEN;
    let mut v = vec![
        (4, 4),
        (b + 1, 1),
        (b + 4, 4),
        (b + 8, 4),
        (b + 12, 4),
        (b + 24, 8),
    ];
    let mut at = b + 32;
    for (e, s) in &f.coords {
        v.extend([(at, 2), (at + 2, 2)]);
        at += 4 + e.len() + s.len();
    }
    for _ in &f.entries {
        v.extend([
            (at, 4),
            (at + 4, 4),
            (at + 76, 4),
            (at + 85, 1),
            (at + 88, 4),
        ]);
        at += footer::ENTRY_LEN;
    }
    for _ in 0..ntails {
        v.push((at, 4));
        at += 36;
    }
    v.push((at, 8)); // trailer: footer offset
    v
}

fn footer_bound() -> Bound {
    // The coordinate table is a Vec of (String, String), 48 bytes an entry,
    // reserved for a count checked to be at most body/6 (an entry takes at
    // least 6 bytes): 8n. The entries are 144-byte structs, at most body/96
    // of them: 1.5n. The strings themselves copy at most n bytes. The densest
    // valid footer (one-character coordinates) measures 6.8n largest, 7.2n
    // peak and total.
    Bound {
        largest: (8, 1024),
        peak: (12, 4096),
        total: (12, 4096),
    }
}

fn check_footer(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (r, u) = measure(|| footer::decode(bytes));
    within(u, bytes.len(), footer_bound(), "footer::decode")?;
    match r {
        Ok(f) => {
            let tails: Vec<u32> = (0..f.entries.len() as u32)
                .filter(|&i| f.entries[i as usize].event_hash != [0; 32])
                .collect();
            let again = f.encode(&tails);
            let back = footer::decode(&again).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, f);
        }
        Err(e) => clear(&e)?,
    }
    Ok(())
}

/// What recovery does with a sealed segment: find the trailer, decode there.
fn check_locate_then_decode(file: &[u8]) -> Result<(), TestCaseError> {
    let (at, u) = measure(|| footer::locate(file));
    prop_assert_eq!(u.total, 0, "locate allocated");
    if let Some(at) = at.and_then(|a| usize::try_from(a).ok()) {
        if let Some(rest) = file.get(at..) {
            check_footer(rest)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn footer_on_arbitrary_bytes(bytes in hostile_bytes(), forge in any::<bool>()) {
        check_locate_then_decode(&bytes)?;
        check_footer(&bytes)?;
        // A frame with a good checksum around a garbage footer body.
        let mut f = vec![0u8; FRAME_HEADER_LEN];
        f.push(super::RECORD_FOOTER);
        if forge {
            f.push(1); // footer version
        }
        f.extend_from_slice(&bytes);
        seal_frame(&mut f);
        check_footer(&f)?;
    }
}

proptest! {
    #![proptest_config(config(MUTATE))]

    #[test]
    fn footer_on_mutations(muts in mutations(), reseal in any::<bool>()) {
        let (f, tails) = sample_footer();
        let enc = f.encode(&tails);
        let fields = footer_fields(&f, tails.len());
        let mut b = mutate(&enc, &muts, &fields);
        if reseal {
            reseal_frame_at(&mut b, 0);
        }
        check_footer(&b)?;
    }

    #[test]
    fn footer_in_a_segment_on_mutations(
        muts in mutations(),
        reseal in any::<bool>(),
        fill in 0usize..5000,
    ) {
        let (seg, _, _) = sample_segment();
        let (f, tails) = sample_footer();
        let footer_at = seg.len() - 300;
        let mut f = f;
        f.frames_end = footer_at as u64;
        let fields: Vec<Field> = footer_fields(&f, tails.len())
            .into_iter()
            .map(|(o, w)| (o + footer_at, w))
            .collect();
        let mut file = seg[..footer_at].to_vec();
        file.extend_from_slice(&f.encode(&tails));
        file.resize(file.len() + fill, 0);
        let mut b = mutate(&file, &muts, &fields);
        if reseal {
            reseal_frame_at(&mut b, footer_at);
        }
        check_locate_then_decode(&b)?;
    }
}

// ---------------------------------------------------------------------------
// Checkpoints (and the index image loader they feed)
// ---------------------------------------------------------------------------

fn sample_checkpoint() -> Vec<u8> {
    let mut idx = Index::new();
    for i in 0..12u32 {
        idx.insert(&NewRecord {
            event_id: 500 + u128::from(i),
            correlation_id: if i % 4 == 0 { 500 + u128::from(i) } else { 500 },
            causation_id: match i % 5 {
                1 => Some(777_777), // an external id
                3 => Some(500 + u128::from(i) - 1),
                _ => None,
            },
            entity: ["a", "b:é", "c"][i as usize % 3],
            scope: ["s", "tenant"][i as usize % 2],
            kind: EventKind::custom(1, (i % 3) as u16),
            timestamp_us: 7_000_000 + i64::from(i),
            hlc_counter: 0,
            clock: i / 3,
            event_hash: [i as u8; 32],
            global_seq: u64::from(i) + if i > 6 { 40 } else { 0 },
            segment_id: 1 + u64::from(i / 6),
            offset: 64 + 200 * u64::from(i % 6),
            length: 200,
        })
        .unwrap();
    }
    let segments = [
        CoveredSegment {
            segment_id: 1,
            frames_end: 1264,
            last_offset: 1064,
            last_length: 200,
            last_event_id: 505,
        },
        CoveredSegment {
            segment_id: 2,
            frames_end: 1264,
            last_offset: 1064,
            last_length: 200,
            last_event_id: 511,
        },
    ];
    checkpoint::encode(52, &segments, &idx)
}

/// Integer fields of an encoded checkpoint, found by walking its layout:
/// every count, string length and reference.
fn checkpoint_fields(b: &[u8]) -> Vec<Field> {
    let u32_at = |at: usize| read_int(b, at, 4).unwrap() as usize;
    let u16_at = |at: usize| read_int(b, at, 2).unwrap() as usize;
    let mut v = vec![(8, 2), (16, 8)];
    let mut at = 24 + 8;
    v.push((at, 4));
    let n = u32_at(at);
    at += 4;
    for _ in 0..n {
        v.extend([(at + 24, 4), (at + 28, 4)]);
        at += 48;
    }
    v.push((at, 4));
    let n = u32_at(at);
    at += 4;
    for _ in 0..n {
        v.extend([(at, 2)]);
        at += 2 + u16_at(at);
        v.push((at, 1));
        at += 1 + 4 + 32 + 8 + 2;
    }
    v.push((at, 4));
    let n = u32_at(at);
    at += 4;
    for _ in 0..n {
        v.push((at, 2));
        at += 2 + u16_at(at);
    }
    v.push((at, 4));
    let n = u32_at(at);
    at += 4;
    for _ in 0..n {
        v.extend([(at, 4), (at + 4, 4)]);
        at += 8;
    }
    v.push((at, 4));
    let n = u32_at(at);
    at += 4 + 16 * n;
    v.push((at, 4));
    let n = u32_at(at);
    at += 4;
    for _ in 0..n {
        v.extend([(at, 4), (at + 4, 8)]);
        at += 12;
    }
    v.push((at, 4));
    let n = u32_at(at);
    at += 4;
    for _ in 0..n {
        v.extend([(at, 4), (at + 4, 4), (at + 8, 4)]);
        at += 12;
    }
    v.push((at, 4));
    let n = u32_at(at);
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

/// Make the checkpoint header agree with the (damaged) body: `mode` 1 fixes
/// the checksum, 2 the length and the checksum.
fn reseal_checkpoint(b: &mut [u8], mode: u8) {
    if b.len() < 24 || mode == 0 {
        return;
    }
    if mode == 2 {
        let len = (b.len() - 24) as u64;
        write_int(b, 16, 8, len);
    }
    let crc = crc32fast::hash(&b[16..]);
    write_int(b, 12, 4, u64::from(crc));
}

fn checkpoint_bound() -> Bound {
    // The decoder reserves each table for a count checked against the bytes
    // left: scopes are 24-byte `String`s of at least 2 bytes each (12n),
    // entities 80-byte images of at least 49 bytes, coordinates, ids, runs and
    // links at most 16 bytes per 8..16 input bytes, records 44 bytes per 48.
    // Rebuilding the index copies the names into `Arc<str>`s, per-name lists
    // and hash maps: about 175 bytes per 4-byte scope. The densest accepted
    // checkpoint (two-character scopes only) measures 12.7n largest, 41n
    // peak, 58n total; a real one (records dominate) 0.9n, 5.2n and 8n.
    Bound {
        largest: (16, 16 * 1024),
        peak: (64, 64 * 1024),
        total: (128, 64 * 1024),
    }
}

fn check_checkpoint(b: &[u8]) -> Result<(), TestCaseError> {
    let (r, u) = measure(|| checkpoint::decode(b));
    within(u, b.len(), checkpoint_bound(), "checkpoint::decode")?;
    match r {
        Ok(cp) => {
            let e1 = checkpoint::encode(cp.next_seq, &cp.segments, &cp.index);
            let cp2 = checkpoint::decode(&e1).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&cp2.segments, &cp.segments);
            let e2 = checkpoint::encode(cp2.next_seq, &cp2.segments, &cp2.index);
            prop_assert!(e1 == e2, "checkpoint re-encoding is not a fixpoint");
        }
        Err(e) => clear(&e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn checkpoint_on_arbitrary_bytes(bytes in hostile_after(b"BATPAKCP\x01\x00"), mode in 0u8..3) {
        let mut b = bytes;
        reseal_checkpoint(&mut b, mode);
        check_checkpoint(&b)?;
    }
}

proptest! {
    #![proptest_config(config(MUTATE))]

    /// Garbage bodies in a valid header, shaped like a body: a few counts
    /// (some huge) followed by noise.
    #[test]
    fn checkpoint_with_forged_bodies(
        counts in prop::collection::vec(prop_oneof![3 => 0..4u64, 1 => special()], 0..9),
        tail in hostile_bytes(),
    ) {
        let mut b = b"BATPAKCP\x01\x00".to_vec();
        b.resize(24, 0);
        b.extend_from_slice(&7u64.to_le_bytes());
        for c in counts {
            b.extend_from_slice(&(c as u32).to_le_bytes());
        }
        b.extend_from_slice(&tail);
        reseal_checkpoint(&mut b, 2);
        check_checkpoint(&b)?;
    }

    #[test]
    fn checkpoint_on_mutations(muts in mutations(), mode in reseal_mode()) {
        let base = sample_checkpoint();
        let fields = checkpoint_fields(&base);
        let mut b = mutate(&base, &muts, &fields);
        reseal_checkpoint(&mut b, mode);
        check_checkpoint(&b)?;
    }
}

// ---------------------------------------------------------------------------
// Removed-event records
// ---------------------------------------------------------------------------

fn sample_removed() -> RemovedRecord {
    let entry = |event_id, entity: &str, scope: String| RemovedEntry {
        event_id,
        global_seq: 10 + event_id as u64,
        kind: 0x1001,
        clock: 3,
        timestamp_us: -5,
        event_hash: [7; 32],
        entity: entity.into(),
        scope,
    };
    RemovedRecord {
        epoch: 4,
        entries: vec![
            entry(1, "order:1", "t".into()),
            entry(2, "é", "s".repeat(1024)),
            entry(3, "x", "y".into()),
        ],
    }
}

fn removed_fields(r: &RemovedRecord) -> Vec<Field> {
    let mut v = vec![(8, 2), (16, 8), (24, 8), (32, 8)];
    let mut at = 40;
    for e in &r.entries {
        v.extend([(at + 26, 2), (at + 28, 2)]);
        at += 74 + e.entity.len() + e.scope.len();
    }
    v
}

/// `mode` 1 recomputes the trailing CRC, 2 also the body length.
fn reseal_removed(b: &mut [u8], mode: u8) {
    if b.len() < 44 || mode == 0 {
        return;
    }
    let end = b.len() - 4;
    if mode == 2 {
        write_int(b, 24, 8, (end - 40) as u64);
    }
    let crc = crc32fast::hash(&b[..end]);
    write_int(b, end, 4, u64::from(crc));
}

fn removed_bound() -> Bound {
    // Entries are 128-byte structs, reserved for a count checked to be at
    // most body/76 (the smallest entry): 1.7n; their strings copy at most n.
    Bound {
        largest: (2, 1024),
        peak: (4, 4096),
        total: (4, 4096),
    }
}

fn check_removed(b: &[u8]) -> Result<(), TestCaseError> {
    let (r, u) = measure(|| removed::decode(b));
    within(u, b.len(), removed_bound(), "removed::decode")?;
    match r {
        Ok(rec) => {
            let again = removed::encode(&rec);
            prop_assert_eq!(removed::decode(&again), Ok(rec));
            // Only the reserved header bytes (and so the CRC) may differ.
            prop_assert!(
                again[16..again.len() - 4] == b[16..b.len() - 4],
                "removed-event record re-encodes differently"
            );
        }
        Err(e) => clear(&e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn removed_on_arbitrary_bytes(bytes in hostile_after(b"BATPAKRM\x01\x00"), mode in 0u8..3) {
        let mut b = bytes;
        reseal_removed(&mut b, mode);
        check_removed(&b)?;
    }
}

proptest! {
    #![proptest_config(config(MUTATE))]

    #[test]
    fn removed_on_mutations(muts in mutations(), mode in reseal_mode()) {
        let r = sample_removed();
        let mut b = mutate(&removed::encode(&r), &muts, &removed_fields(&r));
        reseal_removed(&mut b, mode);
        check_removed(&b)?;
    }
}

// ---------------------------------------------------------------------------
// Compaction intents
// ---------------------------------------------------------------------------

fn sample_intent() -> Intent {
    Intent {
        removed_record: true,
        outputs: vec![1, 2, 9],
        deleted: vec![3, 4, 5, u64::MAX],
    }
}

fn intent_fields(i: &Intent) -> Vec<Field> {
    let mut v = vec![(8, 2), (10, 2), (12, 4), (16, 4), (20, 4)];
    v.extend((0..i.outputs.len() + i.deleted.len()).map(|k| (24 + 8 * k, 8)));
    v
}

/// `mode` 1 recomputes the trailing CRC, 2 also the deleted count (to
/// match the file's length, when the output count allows it).
fn reseal_intent(b: &mut [u8], mode: u8) {
    if b.len() < 28 || mode == 0 {
        return;
    }
    let end = b.len() - 4;
    if mode == 2 {
        let outputs = read_int(b, 12, 4).unwrap_or(0);
        let ids = ((end - 24) / 8) as u64;
        write_int(b, 16, 4, ids.wrapping_sub(outputs));
    }
    let crc = crc32fast::hash(&b[..end]);
    write_int(b, end, 4, u64::from(crc));
}

fn intent_bound() -> Bound {
    // The ids are collected once (8 bytes an id, 8 bytes of input each)
    // and copied into the two lists: n for one allocation, 2n in all.
    Bound {
        largest: (1, 1024),
        peak: (2, 1024),
        total: (2, 1024),
    }
}

fn check_intent(b: &[u8]) -> Result<(), TestCaseError> {
    let (r, u) = measure(|| Intent::decode(b));
    within(u, b.len(), intent_bound(), "Intent::decode")?;
    match r {
        // Every field is checked, so the encoding is canonical.
        Ok(i) => prop_assert!(i.encode() == b, "intent re-encodes differently"),
        Err(e) => clear(&e)?,
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn intent_on_arbitrary_bytes(bytes in hostile_after(b"BATPAKCI\x01\x00"), mode in 0u8..3) {
        let mut b = bytes;
        reseal_intent(&mut b, mode);
        check_intent(&b)?;
    }
}

proptest! {
    #![proptest_config(config(MUTATE))]

    #[test]
    fn intent_on_mutations(muts in mutations(), mode in reseal_mode()) {
        let i = sample_intent();
        let mut b = mutate(&i.encode(), &muts, &intent_fields(&i));
        reseal_intent(&mut b, mode);
        check_intent(&b)?;
    }
}

// ---------------------------------------------------------------------------
// Payloads (MessagePack)
// ---------------------------------------------------------------------------

fn payload_bound() -> Bound {
    // Arrays reserve `Vec<Value>` room (32 bytes an element) from a budget of
    // one element per input byte, shared by the whole payload: 32n in all.
    // An array whose claim outran the budget grows by doubling, to at most
    // twice the elements actually decoded (each took a byte): 64n for one
    // allocation. A decoded tree legitimately costs more than its bytes: a
    // one-entry map (2..3 bytes) is a 632-byte B-tree leaf, so the peak is
    // bounded by about 320n (maps nested to MAX_DEPTH, whose 2-byte levels
    // cost 632 bytes each) plus the reservations. Measured: an array of
    // one-entry maps 221n peak, maps nested to the limit 315n.
    Bound {
        largest: (64, 1024),
        peak: (384, 128 * 1024),
        total: (768, 256 * 1024),
    }
}

fn check_payload(b: &[u8]) -> Result<(), TestCaseError> {
    let (r, u) = measure(|| decode_value(b));
    within(u, b.len(), payload_bound(), "decode_value")?;
    let (v, u) = measure(|| validate(b));
    within(u, b.len(), Bound::ERRORS_ONLY, "payload::validate")?;
    prop_assert_eq!(v.is_ok(), r.is_ok(), "validate and decode_value disagree");
    match r {
        Ok(value) => {
            let mut again = Vec::new();
            encode_value(&value, &mut again).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decode_value(&again), Ok(value));
        }
        Err(e) => {
            clear_payload(&e, b.len())?;
            prop_assert_eq!(v, Err(e));
        }
    }
    Ok(())
}

/// One MessagePack token: any tag byte, a length-prefixed header with a
/// hostile length, or a small complete value.
fn msgpack_token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => any::<u8>().prop_map(|b| vec![b]),
        3 => (prop::sample::select(vec![0xd9u8, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf]), special())
            .prop_map(|(tag, n)| {
                let mut v = vec![tag];
                match tag {
                    0xd9 => v.push(n as u8),
                    0xda | 0xdc | 0xde => v.extend_from_slice(&(n as u16).to_be_bytes()),
                    _ => v.extend_from_slice(&(n as u32).to_be_bytes()),
                }
                v
            }),
        2 => (0x80u8..0xa0).prop_map(|b| vec![b]),
        1 => "[a-z]{0,5}".prop_map(|s| payload_bytes(&serde_json::Value::String(s))),
    ]
}

use super::payload::tests::arb_value;

proptest! {
    #![proptest_config(config(CHEAP))]

    #[test]
    fn payload_on_arbitrary_bytes(bytes in hostile_bytes()) {
        check_payload(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(MUTATE))]

    #[test]
    fn payload_on_mutations(v in arb_value(), muts in mutations()) {
        let b = payload_bytes(&v);
        check_payload(&b)?;
        check_payload(&mutate(&b, &muts, &[]))?;
    }
}

proptest! {
    #![proptest_config(config(HEAVY))]

    /// Token soup, usually inside an array that claims every token (or a
    /// hostile count) so that the tokens are all read.
    #[test]
    fn payload_on_hostile_token_streams(
        tokens in prop::collection::vec(msgpack_token(), 0..48),
        wrap in prop_oneof![Just(None), Just(Some(None)), special().prop_map(|n| Some(Some(n)))],
        pad in prop_oneof![Just(0usize), 0usize..2048],
    ) {
        let mut b = Vec::new();
        if let Some(count) = wrap {
            b.push(0xdd);
            b.extend_from_slice(&(count.unwrap_or(tokens.len() as u64) as u32).to_be_bytes());
        }
        b.extend(tokens.concat());
        b.resize(b.len() + pad, 0);
        check_payload(&b)?;
    }

    /// Containers nested up to past the depth limit, each claiming about as
    /// many elements as there are bytes left: every claim is plausible on
    /// its own, together they claim the input many times over.
    #[test]
    fn payload_on_nested_claims(
        levels in prop::collection::vec(
            (prop::sample::select(vec![0xdcu8, 0xdd, 0xde, 0xdf, 0x9f, 0x8f]), 0u8..=255),
            1..140,
        ),
        fill in prop::sample::select(vec![0x00u8, 0xc0, 0x91, 0xa0]),
        len in 64usize..=MAX_LEN,
    ) {
        check_payload(&nested_claims(&levels, fill, len))?;
    }
}

// ---------------------------------------------------------------------------
// NativeCache files
// ---------------------------------------------------------------------------

const CACHE_FIELDS: &[Field] = &[(4, 4), (8, 8), (16, 8), (24, 4), (28, 4)];

/// `mode` 1 recomputes the trailing CRC, 2 also the value length.
fn reseal_cache(b: &mut [u8], mode: u8) {
    if b.len() < 36 || mode == 0 {
        return;
    }
    let end = b.len() - 4;
    if mode == 2 {
        let klen = read_int(b, 24, 4).unwrap_or(0) as usize;
        if let Some(vlen) = (end - 32).checked_sub(klen) {
            write_int(b, 28, 4, vlen as u64);
        }
    }
    let crc = crc32fast::hash(&b[..end]);
    write_int(b, end, 4, u64::from(crc));
}

fn cache_bound() -> Bound {
    // `get` reads the whole file (n bytes) and copies the value out of it
    // (at most n); the rest is the file name.
    Bound {
        largest: (1, 4096),
        peak: (2, 8192),
        total: (2, 16 * 1024),
    }
}

/// Put an entry, replace its file by `bytes(file)`, read it back.
fn check_cache_file(
    key: &[u8],
    value: &[u8],
    damage: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cache = NativeCache::open(dir.path()).unwrap();
    let meta = CacheMeta {
        watermark: 7,
        cached_at_us: 99,
    };
    cache.put(key, value, meta.clone()).unwrap();
    let file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "bpc"))
        .unwrap();
    let good = std::fs::read(&file).unwrap();
    let bad = damage(&good);
    std::fs::write(&file, &bad).unwrap();
    let (r, u) = measure(|| cache.get(key));
    within(u, bad.len(), cache_bound(), "NativeCache::get")?;
    match r {
        Ok(Some((v, m))) => {
            // Accepted only if it is exactly what a put of that would write.
            cache.put(key, &v, m).unwrap();
            prop_assert_eq!(std::fs::read(&file).unwrap(), bad.clone());
        }
        Ok(None) => {}
        Err(e) => prop_assert!(false, "a damaged entry is a miss, not {e}"),
    }
    // More garbage beside it: a copy under another entry's name, a
    // directory and a file that only look like entries.
    let name = |i: u32| dir.path().join(format!("{i:032x}.bpc"));
    std::fs::write(name(1), &bad).unwrap();
    std::fs::create_dir(name(2)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), &bad).unwrap();
    let (r, u) = measure(|| cache.delete_prefix(&bad[..bad.len().min(3)]));
    // The files are read one at a time: n bytes and a key at a time.
    within(u, bad.len(), cache_bound(), "NativeCache::delete_prefix")?;
    prop_assert!(r.is_ok_and(|n| n <= 2));
    Ok(())
}

proptest! {
    #![proptest_config(config(FILES))]

    #[test]
    fn native_cache_on_arbitrary_files(
        bytes in hostile_after(b"BPKC\x01\x00\x00\x00"),
        mode in 0u8..3,
    ) {
        check_cache_file(b"key", b"value", |_| {
            let mut b = bytes.clone();
            reseal_cache(&mut b, mode);
            b
        })?;
    }

    #[test]
    fn native_cache_on_mutated_files(
        key in prop::collection::vec(any::<u8>(), 0..40),
        value in prop::collection::vec(any::<u8>(), 0..200),
        muts in mutations(),
        mode in 0u8..3,
    ) {
        check_cache_file(&key, &value, |good| {
            let mut b = mutate(good, &muts, CACHE_FIELDS);
            reseal_cache(&mut b, mode);
            b
        })?;
    }
}

// ---------------------------------------------------------------------------
// Deterministic hostile counts, and the allocator itself
// ---------------------------------------------------------------------------

/// Run a property check once, outside proptest.
fn once(r: Result<(), TestCaseError>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}

#[test]
fn counting_allocator_counts_only_while_measuring() {
    let (v, u) = measure(|| Vec::<u8>::with_capacity(1000));
    assert_eq!(u.largest, 1000);
    assert_eq!(u.total, 1000);
    assert_eq!(u.peak_live, 1000);
    drop(v);
    let (_, u) = measure(|| {
        let mut v = Vec::<u64>::with_capacity(4);
        v.extend(0..100u64); // realloc growth
        drop(v);
        let b = vec![0u8; 5000];
        b.len()
    });
    assert_eq!(u.largest, 5000);
    assert!(u.total >= 5000 + 800, "{u:?}");
    assert!(u.peak_live >= 5000 && u.peak_live < 5000 + 2048, "{u:?}");
    // Nothing is counted outside a measurement, and nothing is left over.
    drop(Vec::<u8>::with_capacity(1 << 20));
    let (_, u) = measure(|| ());
    assert_eq!(
        u,
        Usage {
            largest: 0,
            total: 0,
            peak_live: 0
        }
    );
}

#[test]
fn valid_samples_decode() {
    let (seg, _, starts) = sample_segment();
    assert_eq!(scan(&seg, SEGMENT_HEADER_LEN).unwrap(), 3);
    for at in starts {
        once(check_frame(&seg, at));
    }
    for body in event_record_bodies() {
        decode_event(&body).unwrap();
    }
    let (f, tails) = sample_footer();
    assert_eq!(footer::decode(&f.encode(&tails)).unwrap(), f);
    let cp = sample_checkpoint();
    assert!(checkpoint_fields(&cp).len() > 40);
    checkpoint::decode(&cp).unwrap();
    assert_eq!(
        removed::decode(&removed::encode(&sample_removed())),
        Ok(sample_removed())
    );
    assert_eq!(
        Intent::decode(&sample_intent().encode()),
        Ok(sample_intent())
    );
}

#[test]
fn huge_counts_in_small_inputs_allocate_nothing_large() {
    // Frames claiming u32::MAX body bytes, event or footer.
    let mut f = vec![0u8; 100];
    f[..4].copy_from_slice(&super::frame::FRAME_MARKER.to_le_bytes());
    for (len, kind) in [(u32::MAX, 1u8), (u32::MAX, 2), (0x7fff_ffff, 2)] {
        f[4..8].copy_from_slice(&len.to_le_bytes());
        f[FRAME_HEADER_LEN] = kind;
        reseal_frame_at(&mut f, 0);
        once(check_frame(&f, 0));
        once(check_resync(&f, 0));
    }
    // An event record claiming a 4 GiB payload.
    let mut body = event_record_bodies().remove(0);
    body[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    once(check_event(&body));

    // A footer of 2^32 - 1 coordinates, entries and tails in a 100-byte frame.
    for field in [4, 8, 12] {
        let mut fb = vec![0u8; FRAME_HEADER_LEN + 100];
        fb[FRAME_HEADER_LEN] = super::RECORD_FOOTER;
        fb[FRAME_HEADER_LEN + 1] = 1;
        fb[FRAME_HEADER_LEN + field..FRAME_HEADER_LEN + field + 4]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        seal_frame(&mut fb);
        once(check_footer(&fb));
    }

    // A checkpoint whose every count in turn says 2^32 - 1.
    let base = sample_checkpoint();
    let fields = checkpoint_fields(&base);
    for &(at, w) in fields.iter().filter(|f| f.1 == 4) {
        for value in [u64::from(u32::MAX), 0x8000_0000, 0x0100_0000] {
            let mut b = base.clone();
            write_int(&mut b, at, w, value);
            reseal_checkpoint(&mut b, 2);
            once(check_checkpoint(&b));
        }
    }
    // ... and in a 100-byte checkpoint: each of the eight counts huge.
    for i in 0..8 {
        let mut b = b"BATPAKCP\x01\x00".to_vec();
        b.resize(24 + 8, 0);
        for j in 0..8 {
            let c: u32 = if j == i { u32::MAX } else { 0 };
            b.extend_from_slice(&c.to_le_bytes());
        }
        b.resize(100, 0);
        reseal_checkpoint(&mut b, 2);
        once(check_checkpoint(&b));
    }

    // A removed-event record of 2^64 - 1 entries, and of a 2^64 - 1 byte body.
    let mut r = removed::encode(&RemovedRecord::default());
    r.resize(100, 0);
    for (at, value) in [(16, u64::MAX), (16, 1 << 32), (24, u64::MAX)] {
        let mut b = r.clone();
        let body_len = (b.len() - 44) as u64;
        write_int(&mut b, 24, 8, body_len);
        write_int(&mut b, at, 8, value);
        reseal_removed(&mut b, 1);
        once(check_removed(&b));
    }

    // A compaction intent of 2^32 - 1 outputs or deletions.
    for at in [12, 16] {
        let mut b = Intent::default().encode();
        b.resize(100, 0);
        write_int(&mut b, at, 4, u64::from(u32::MAX));
        reseal_intent(&mut b, 1);
        once(check_intent(&b));
    }

    // Payloads: 2^32 - 1 elements, pairs, string bytes.
    for tag in [0xdbu8, 0xdd, 0xdf] {
        let mut b = vec![tag, 0xff, 0xff, 0xff, 0xff];
        b.resize(100, 0);
        once(check_payload(&b));
    }

    // A cache file claiming 4 GiB keys and values.
    for at in [24, 28] {
        once(check_cache_file(b"key", b"value", |good| {
            let mut b = good.to_vec();
            write_int(&mut b, at, 4, u64::from(u32::MAX));
            reseal_cache(&mut b, 1);
            b
        }));
    }
}

/// Valid inputs built to cost the most memory per byte: the bounds above
/// must hold for them too, not only for garbage.
#[test]
fn dense_valid_inputs_stay_within_bounds() {
    // A checkpoint of 2000 events, each of a new two-character entity and
    // scope: every table entry is as small as it can be.
    let mut idx = Index::new();
    let names: Vec<String> = (0..2000u32)
        .map(|i| {
            format!(
                "{}{}",
                char::from(b'!' + (i / 90) as u8),
                char::from(b'!' + (i % 90) as u8)
            )
        })
        .collect();
    for (i, name) in names.iter().enumerate() {
        idx.insert(&NewRecord {
            event_id: i as u128 + 1,
            correlation_id: i as u128 + 1,
            causation_id: None,
            entity: name,
            scope: name,
            kind: EventKind::custom(1, 1),
            timestamp_us: 0,
            hlc_counter: 0,
            clock: 0,
            event_hash: [0; 32],
            global_seq: i as u64,
            segment_id: 1,
            offset: 64,
            length: 1,
        })
        .unwrap();
    }
    let cp = checkpoint::encode(2000, &[], &idx);
    once(check_checkpoint(&cp));
    // A checkpoint of 2000 two-character scopes and nothing else (accepted:
    // nothing requires a scope to have events), 4 bytes a scope.
    let mut b = b"BATPAKCP\x01\x00".to_vec();
    b.resize(24 + 8 + 8, 0);
    b.extend_from_slice(&2000u32.to_le_bytes());
    for name in &names {
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
    }
    b.resize(b.len() + 5 * 4, 0);
    reseal_checkpoint(&mut b, 2);
    assert!(checkpoint::decode(&b).is_ok());
    once(check_checkpoint(&b));

    // A footer of 600 one-character coordinates and no entries.
    let f = Footer {
        segment_id: 1,
        frames_end: 64,
        coords: (0..600u32)
            .map(|i| {
                let c = char::from_u32(0x21 + i % 90).unwrap().to_string();
                (format!("{c}{}", i / 90), c)
            })
            .collect(),
        entries: vec![],
    };
    once(check_footer(&f.encode(&[])));

    // Payloads: an array of one-entry maps (3 bytes each) and maps nested
    // to the depth limit (2 bytes a level).
    let mut b = vec![0xdd];
    b.extend_from_slice(&1300u32.to_be_bytes());
    for _ in 0..1300 {
        b.extend_from_slice(&[0x81, 0xa0, 0xc0]);
    }
    once(check_payload(&b));
    let mut b = [0x81, 0xa0].repeat(super::payload::MAX_DEPTH);
    b.push(0xc0);
    once(check_payload(&b));
}

/// A `len`-byte payload of nested containers: each level is a container tag
/// claiming `share`/255 of the bytes left (maps: half as many pairs, then an
/// empty-string key before the next level), then `fill` to the end.
fn nested_claims(levels: &[(u8, u8)], fill: u8, len: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(len);
    for &(tag, share) in levels {
        if b.len() + 8 > len {
            break;
        }
        let map = matches!(tag, 0xde | 0xdf | 0x80..=0x8f);
        let width = match tag {
            0xdc | 0xde => 2,
            0xdd | 0xdf => 4,
            _ => 0,
        };
        let left = len - b.len() - 1 - width;
        let claim = left * usize::from(share) / 255 / if map { 2 } else { 1 };
        b.push(tag);
        b.extend_from_slice(&(claim as u64).to_be_bytes()[8 - width..]);
        if map {
            b.push(0xa0);
        }
    }
    b.resize(len, fill);
    b
}

/// The worst case of [`nested_claims`], deterministically: before the fix
/// in `payload::Reader::array_items` this reserved 15 MB for 4 KiB.
#[test]
fn nested_payload_claims_do_not_multiply() {
    for tag in [0xddu8, 0xdc, 0xdf, 0xde] {
        let levels = vec![(tag, 255); 140];
        for fill in [0xc0, 0x00, 0x91] {
            once(check_payload(&nested_claims(&levels, fill, MAX_LEN)));
        }
    }
}
