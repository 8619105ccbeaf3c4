//! A store written by code from before payload versions existed, read by
//! today's types through upcasters (ADR 0027).
//!
//! `tests/fixtures/v1_store` was produced by `generate_v1_fixture` below,
//! copied into a standalone binary built against the sources of commit
//! 873b9ec (`git archive 873b9ec`, before payload versions existed): the
//! function uses only the API that code had, so it runs unchanged there.
//! Today's types (`ItemAdded` at version 3) read the version-1 payloads
//! through the upcasters `v1 -> v2 -> v3`; the files are never modified
//! (the tests read a copy and compare the bytes after).

use batpak::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Today's shape of the item event (version 1 was `{"name", "qty"}`,
/// version 2 `{"title", "qty"}`).
#[derive(Debug, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 6, type_id = 1, version = 3)]
struct ItemAdded {
    title: String,
    quantity: u32,
    unit: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 6, type_id = 2)]
struct CheckedOut {
    total: u64,
}

fn register_v3(store: &Store) {
    store.register::<CheckedOut>().unwrap();
    store
        .register_upcaster::<ItemAdded>(1, |mut v| {
            let o = v.as_object_mut().ok_or("not an object")?;
            let name = o.remove("name").ok_or("no name")?;
            o.insert("title".into(), name);
            Ok(v)
        })
        .unwrap();
    store
        .register_upcaster::<ItemAdded>(2, |mut v| {
            let o = v.as_object_mut().ok_or("not an object")?;
            let qty = o.remove("qty").ok_or("no qty")?;
            o.insert("quantity".into(), qty);
            o.insert("unit".into(), json!("piece"));
            Ok(v)
        })
        .unwrap();
}

/// A projection over today's shapes only.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cart {
    items: Vec<(String, u32)>,
    total: Option<u64>,
}

impl EventSourced<Value> for Cart {
    fn from_events(events: &[Event<Value>]) -> Option<Self> {
        let mut cart = Cart::default();
        events.iter().for_each(|e| cart.apply_event(e));
        (!events.is_empty()).then_some(cart)
    }
    fn apply_event(&mut self, event: &Event<Value>) {
        if let Some(i) = event.payload_as::<ItemAdded>() {
            self.items.push((i.title, i.quantity));
        } else if let Some(c) = event.payload_as::<CheckedOut>() {
            self.total = Some(c.total);
        }
    }
    fn relevant_event_kinds() -> &'static [EventKind] {
        &[ItemAdded::KIND, CheckedOut::KIND]
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1_store")
}

/// Run by hand (`cargo test --test fixture_v1 -- --ignored`) with the old
/// code to write the fixture again.
#[test]
#[ignore = "writes the committed fixture; run by hand against the old code"]
fn generate_v1_fixture() {
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(StoreConfig::new(&dir).with_segment_max_bytes(4096)).unwrap();
    let cart = Coordinate::new("cart:1", "shop").unwrap();
    // ItemAdded, version 1: {"name", "qty"}; CheckedOut: {"total"}.
    let kind_item = EventKind::custom(6, 1);
    let kind_checkout = EventKind::custom(6, 2);
    store
        .append(&cart, kind_item, &json!({"name": "tea", "qty": 2}))
        .unwrap();
    store
        .append(&cart, kind_item, &json!({"name": "cup", "qty": 1}))
        .unwrap();
    store
        .append(&cart, kind_checkout, &json!({"total": 750}))
        .unwrap();
    let other = Coordinate::new("cart:2", "shop").unwrap();
    store
        .append(&other, kind_item, &json!({"name": "pot", "qty": 3}))
        .unwrap();
    store.close().unwrap();
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn snapshot_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn the_v1_fixture_reads_as_todays_types_through_upcasters() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), copy.path());
    let before = snapshot_bytes(copy.path());
    assert!(!before.is_empty(), "the fixture has segments");
    let store = Store::open_read_only(StoreConfig::new(copy.path())).unwrap();
    // Every stored event is version 1 (unversioned), in its old shape.
    let stored: Vec<_> = store
        .stream_events_versioned("cart:1")
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(stored.len(), 3);
    assert!(stored.iter().all(|v| v.payload_version == 1));
    assert_eq!(
        stored[0].event.event.payload,
        json!({"name": "tea", "qty": 2})
    );
    // Today's types, through the upcasters.
    register_v3(&store);
    let items: Vec<ItemAdded> = store
        .stream_events_as::<ItemAdded>("cart:1")
        .map(|r| r.unwrap().event.payload)
        .collect();
    assert_eq!(
        items,
        [
            ItemAdded {
                title: "tea".into(),
                quantity: 2,
                unit: "piece".into()
            },
            ItemAdded {
                title: "cup".into(),
                quantity: 1,
                unit: "piece".into()
            },
        ]
    );
    let first = stored[0].event.event.header.event_id;
    assert_eq!(
        store.get_as::<ItemAdded>(first).unwrap().event.payload,
        items[0]
    );
    let all: Vec<ItemAdded> = store
        .events_as::<ItemAdded>(&Region::all())
        .map(|r| r.unwrap().event.payload)
        .collect();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].title, "pot");
    let cursor: Vec<ItemAdded> = store
        .cursor_as::<ItemAdded>(&Region::entity("cart:2"), None)
        .map(|r| r.unwrap().event.payload)
        .collect();
    assert_eq!(
        cursor,
        [ItemAdded {
            title: "pot".into(),
            quantity: 3,
            unit: "piece".into()
        }]
    );
    let cart: Cart = store
        .project("cart:1", &Freshness::Consistent)
        .unwrap()
        .unwrap();
    assert_eq!(cart.items, [("tea".to_owned(), 2), ("cup".to_owned(), 1)]);
    assert_eq!(cart.total, Some(750));
    let checkout = store
        .stream_events_as::<CheckedOut>("cart:1")
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(checkout.event.payload, CheckedOut { total: 750 });
    drop(store);
    assert_eq!(
        snapshot_bytes(copy.path()),
        before,
        "reading changed no byte"
    );
}

#[test]
fn the_v1_fixture_chains_verify_and_new_versioned_events_extend_them() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), copy.path());
    let store = Store::open(StoreConfig::new(copy.path()).with_segment_max_bytes(4096)).unwrap();
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    register_v3(&store);
    let cart = Coordinate::new("cart:1", "shop").unwrap();
    let r = store
        .append_typed(
            &cart,
            &ItemAdded {
                title: "lid".into(),
                quantity: 1,
                unit: "piece".into(),
            },
        )
        .unwrap();
    assert_eq!(store.get_versioned(r.event_id).unwrap().payload_version, 3);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    store.close().unwrap();
    // Reopened (from the checkpoint or by scanning), the new event is still v3.
    let store = Store::open(StoreConfig::new(copy.path()).with_segment_max_bytes(4096)).unwrap();
    register_v3(&store);
    let items: Vec<_> = store
        .stream_events_as::<ItemAdded>("cart:1")
        .map(|r| r.unwrap().event.payload.title)
        .collect();
    assert_eq!(items, ["tea", "cup", "lid"]);
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn an_event_newer_than_the_registered_type_is_a_typed_error() {
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), copy.path());
    let store = Store::open(StoreConfig::new(copy.path()).with_segment_max_bytes(4096)).unwrap();
    register_v3(&store);
    let cart = Coordinate::new("cart:1", "shop").unwrap();
    // What version-4 code would write.
    let newer = store
        .append_versioned(
            &cart,
            ItemAdded::KIND,
            &json!({"title": "jar", "quantity": 1, "unit": "piece", "size": "L"}),
            4,
            AppendOptions::new(),
        )
        .unwrap();
    match store.get_as::<ItemAdded>(newer.event_id) {
        Err(StoreError::Typed(TypedError::VersionTooNew {
            stored: 4,
            known: 3,
            type_name,
            ..
        })) => {
            assert_eq!(type_name, "ItemAdded")
        }
        other => panic!("expected VersionTooNew, got {other:?}"),
    }
    // The untyped read still sees it as stored, with its version.
    let v = store.get_versioned(newer.event_id).unwrap();
    assert_eq!(
        (v.payload_version, &v.event.event.payload["size"]),
        (4, &json!("L"))
    );
    assert!(store.verify().unwrap().is_clean());
}
