//! Idempotency keys chosen by a hostile client (issue 10, item 4). The
//! behaviour of CAS and idempotency keys on both backends is in the
//! conformance suite (`crates/batpak-conformance`); this is the file
//! store's in-memory id table.

mod common;

use batpak::prelude::*;
use common::*;

/// Keys a client could pick to flood a fixed id hash (the one the id table
/// used before it was seeded per process: every key below hashed alike
/// under it). They must behave like any other keys: each writes once, a
/// retry returns its receipt, and they survive a reopen (the seed changes
/// nothing on disk). That lookups of such keys stay one comparison each is
/// measured in the index's unit test
/// (`keys_colliding_under_a_fixed_mixer_stay_one_comparison_away`).
#[test]
fn keys_chosen_to_collide_work_like_any_others() {
    let keys: Vec<u128> = (1..=2000u64)
        .map(|hi| (u128::from(hi) << 64) | u128::from(0x5eed_f100d ^ hi.rotate_left(29)))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let relaxed = |c: StoreConfig| c.with_sync_every_n_events(1000);
    let store = open_with(dir.path(), relaxed);
    let append = |store: &Store, i: usize| {
        store.append_with_options(
            &coord(&format!("flood:{}", i % 7), "s"),
            KIND_A,
            &i,
            AppendOptions::new().with_idempotency(keys[i]),
        )
    };
    let receipts: Vec<AppendReceipt> = (0..keys.len())
        .map(|i| append(&store, i).unwrap())
        .collect();
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r.event_id, keys[i]);
    }
    for i in (0..keys.len()).step_by(7) {
        assert_eq!(append(&store, i).unwrap(), receipts[i], "retry {i}");
    }
    assert_eq!(store.stats().event_count, keys.len());
    store.close().unwrap();

    let store = open_with(dir.path(), relaxed);
    for i in (0..keys.len()).step_by(3) {
        assert_eq!(
            append(&store, i).unwrap(),
            receipts[i],
            "retry {i} after reopen"
        );
        assert_eq!(
            store.get(keys[i]).unwrap().event.payload,
            serde_json::json!(i)
        );
    }
    assert_eq!(store.stats().event_count, keys.len());
}
