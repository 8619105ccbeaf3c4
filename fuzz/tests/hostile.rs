//! Deterministic hostile inputs that random search would rarely build:
//! counts of 2^32 - 1 in 100-byte files for every format, nested payload
//! claims, the densest valid inputs (the worst legitimate memory per byte),
//! and a self-test of the counting allocator the bounds rely on.

use batpak::prelude::*;
use batpak::store::fuzzing as f;
use batpak_fuzz::alloc::{measure, Usage};
use batpak_fuzz::decoders::*;
use batpak_fuzz::input::write_int;
use batpak_fuzz::samples::samples;
use serde_json::json;

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
    let s = samples();
    assert_eq!(
        scan(&s.segment, f::SEGMENT_HEADER_LEN),
        s.frame_starts.len()
    );
    for &at in &s.frame_starts {
        check_frame(&s.segment, at);
    }
    for body in &s.event_bodies {
        f::decode_event(body).expect("sample record");
        check_event(body);
    }
    let footer = f::decode_footer(&s.sealed[s.footer_at..]).expect("sample footer");
    assert!(footer.entries() > 0);
    assert_eq!(f::locate_footer(&s.sealed), Some(s.footer_at as u64));
    assert!(s.checkpoint_fields.len() > 40);
    f::decode_checkpoint(&s.checkpoint).expect("sample checkpoint");
    f::decode_removed(&s.removed).expect("sample removed-event record");
    assert!(s.removed_fields.len() > 4, "the sample removed events");
}

#[test]
fn huge_counts_in_small_inputs_allocate_nothing_large() {
    let s = samples();
    // Frames claiming u32::MAX body bytes, event or footer.
    let mut fr = vec![0u8; 100];
    fr[..4].copy_from_slice(&f::FRAME_MARKER.to_le_bytes());
    for (len, kind) in [(u32::MAX, 1u8), (u32::MAX, 2), (0x7fff_ffff, 2)] {
        fr[4..8].copy_from_slice(&len.to_le_bytes());
        fr[f::FRAME_HEADER_LEN] = kind;
        reseal_frame_at(&mut fr, 0);
        check_frame(&fr, 0);
        check_resync(&fr, 0);
    }
    // An event record claiming a 4 GiB payload.
    let mut body = s.event_bodies[0].clone();
    body[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    check_event(&body);

    // A footer of 2^32 - 1 coordinates, entries and tails in a 100-byte frame.
    for field in [4, 8, 12] {
        let mut fb = vec![0u8; f::FRAME_HEADER_LEN + 100];
        fb[f::FRAME_HEADER_LEN] = f::RECORD_FOOTER_TYPE;
        fb[f::FRAME_HEADER_LEN + 1] = 1;
        fb[f::FRAME_HEADER_LEN + field..f::FRAME_HEADER_LEN + field + 4]
            .copy_from_slice(&u32::MAX.to_le_bytes());
        f::seal_frame(&mut fb);
        check_footer(&fb);
    }

    // A checkpoint whose every count in turn says 2^32 - 1.
    for &(at, w) in s.checkpoint_fields.iter().filter(|f| f.1 == 4) {
        for value in [u64::from(u32::MAX), 0x8000_0000, 0x0100_0000] {
            let mut b = s.checkpoint.clone();
            write_int(&mut b, at, w, value);
            reseal_checkpoint(&mut b, 2);
            check_checkpoint(&b);
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
        check_checkpoint(&b);
    }

    // A removed-event record of 2^64 - 1 entries, and of a 2^64 - 1 byte body.
    let mut r = s.removed[..40].to_vec();
    r.resize(100, 0);
    for (at, value) in [(16, u64::MAX), (16, 1 << 32), (24, u64::MAX)] {
        let mut b = r.clone();
        write_int(&mut b, 16, 8, 0);
        let body_len = (b.len() - 44) as u64;
        write_int(&mut b, 24, 8, body_len);
        write_int(&mut b, at, 8, value);
        reseal_removed(&mut b, 1);
        check_removed(&b);
    }

    // A compaction intent of 2^32 - 1 outputs or deletions.
    for at in [12, 16] {
        let mut b = f::Intent::new(false, vec![], vec![]).encode();
        b.resize(100, 0);
        write_int(&mut b, at, 4, u64::from(u32::MAX));
        reseal_intent(&mut b, 1);
        check_intent(&b);
    }

    // Payloads: 2^32 - 1 elements, pairs, string bytes.
    for tag in [0xdbu8, 0xdd, 0xdf] {
        let mut b = vec![tag, 0xff, 0xff, 0xff, 0xff];
        b.resize(100, 0);
        check_payload(&b);
    }

    // A cache file claiming 4 GiB keys and values.
    for at in [24, 28] {
        check_cache_file(b"key", b"value", |good| {
            let mut b = good.to_vec();
            write_int(&mut b, at, 4, u64::from(u32::MAX));
            reseal_cache(&mut b, 1);
            b
        });
    }
}

/// Two-character names, all different.
fn names(n: u32) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{}{}",
                char::from(b'!' + (i / 90) as u8),
                char::from(b'!' + (i % 90) as u8)
            )
        })
        .collect()
}

/// Valid inputs built to cost the most memory per byte: the bounds must
/// hold for them too, not only for garbage.
#[test]
fn dense_valid_inputs_stay_within_bounds() {
    // A checkpoint of 2000 events, each of a new two-character entity and
    // scope: every table entry is as small as it can be.
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open(StoreConfig::new(dir.path()).with_sync_every_n_events(1_000_000)).unwrap();
    for name in names(2000) {
        let c = Coordinate::new(&name, &name).unwrap();
        store
            .append(&c, EventKind::custom(1, 1), &json!(null))
            .unwrap();
    }
    store.close().unwrap();
    let cp = std::fs::read(dir.path().join("checkpoint.bpk")).unwrap();
    f::decode_checkpoint(&cp).unwrap();
    check_checkpoint(&cp);

    // A checkpoint of 2000 two-character scopes and nothing else (accepted:
    // nothing requires a scope to have events), 4 bytes a scope.
    let mut b = b"BATPAKCP\x01\x00".to_vec();
    b.resize(24 + 8 + 8, 0);
    b.extend_from_slice(&2000u32.to_le_bytes());
    for name in names(2000) {
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(name.as_bytes());
    }
    b.resize(b.len() + 5 * 4, 0);
    reseal_checkpoint(&mut b, 2);
    assert!(f::decode_checkpoint(&b).is_ok());
    check_checkpoint(&b);

    // A footer of 600 one- and two-character coordinates and no entries,
    // laid out as docs/format.md says.
    let mut body = vec![f::RECORD_FOOTER_TYPE, 1, 0, 0];
    body.extend_from_slice(&600u32.to_le_bytes());
    body.extend_from_slice(&[0; 8]); // no entries, no tails
    body.extend_from_slice(&1u64.to_le_bytes()); // segment id
    body.extend_from_slice(&64u64.to_le_bytes()); // frames end
    for i in 0..600u32 {
        let c = char::from_u32(0x21 + i % 90).unwrap().to_string();
        let e = format!("{c}{}", i / 90);
        body.extend_from_slice(&(e.len() as u16).to_le_bytes());
        body.extend_from_slice(&(c.len() as u16).to_le_bytes());
        body.extend_from_slice(e.as_bytes());
        body.extend_from_slice(c.as_bytes());
    }
    let mut footer = vec![0u8; f::FRAME_HEADER_LEN];
    footer.extend_from_slice(&body);
    f::seal_frame(&mut footer);
    footer.extend_from_slice(&64u64.to_le_bytes());
    footer.extend_from_slice(b"BPKFOOT1");
    assert_eq!(f::decode_footer(&footer).map(|f| f.entries()), Ok(0));
    check_footer(&footer);

    // Payloads: an array of one-entry maps (3 bytes each) and maps nested
    // to the depth limit (2 bytes a level).
    let mut b = vec![0xdd];
    b.extend_from_slice(&1300u32.to_be_bytes());
    for _ in 0..1300 {
        b.extend_from_slice(&[0x81, 0xa0, 0xc0]);
    }
    check_payload(&b);
    let mut b = [0x81, 0xa0].repeat(f::PAYLOAD_MAX_DEPTH);
    b.push(0xc0);
    check_payload(&b);
}

/// The worst case of `nested_claims`, deterministically: before the fix
/// in `payload::Reader::array_items` this reserved 15 MB for 4 KiB.
#[test]
fn nested_payload_claims_do_not_multiply() {
    for tag in [0xddu8, 0xdc, 0xdf, 0xde] {
        let levels = vec![(tag, 255); 140];
        for fill in [0xc0, 0x00, 0x91] {
            check_payload(&nested_claims(&levels, fill, 4096));
        }
    }
}
