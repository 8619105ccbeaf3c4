//! Checks of typed events, payload versions, upcasting and the lazy event
//! iterators: the same on every backend (ADRs 0026–0028).

use crate::{Harness, Settings};
use batpak::prelude::*;
use batpak::store::codec::{self, ChainInput};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Version 1 of an item event, as old code wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 6, type_id = 1, version = 1, name = "ItemAdded")]
pub struct ItemAddedV1 {
    /// The item.
    pub name: String,
    /// How many.
    pub qty: u32,
}

/// Version 2: `name` became `title`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 6, type_id = 1, version = 2, name = "ItemAdded")]
pub struct ItemAddedV2 {
    /// The item.
    pub title: String,
    /// How many.
    pub qty: u32,
}

/// Version 3, today's shape: `qty` became `quantity`, `unit` was added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 6, type_id = 1, version = 3, name = "ItemAdded")]
pub struct ItemAdded {
    /// The item.
    pub title: String,
    /// How many.
    pub quantity: u32,
    /// Of what unit.
    pub unit: String,
}

/// Another kind of the same entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(kind = EventKind::custom(6, 2))]
pub struct CheckedOut {
    /// Total in cents.
    pub total: u64,
}

/// A second type claiming `ItemAdded`'s kind.
#[derive(Debug, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 6, type_id = 1, version = 3)]
pub struct Impostor {
    /// Anything.
    pub x: u8,
}

/// `v1 -> v2`: rename `name` to `title`.
pub fn item_v1_to_v2(mut v: Value) -> Result<Value, String> {
    let obj = v.as_object_mut().ok_or("not an object")?;
    let name = obj.remove("name").ok_or("no name")?;
    obj.insert("title".into(), name);
    Ok(v)
}

/// `v2 -> v3`: rename `qty` to `quantity`, add `unit`.
pub fn item_v2_to_v3(mut v: Value) -> Result<Value, String> {
    let obj = v.as_object_mut().ok_or("not an object")?;
    let qty = obj.remove("qty").ok_or("no qty")?;
    obj.insert("quantity".into(), qty);
    obj.insert("unit".into(), json!("piece"));
    Ok(v)
}

/// Register today's types and the upcasters on `store`.
pub fn register_v3<S: EventStore>(store: &S) {
    store.register::<ItemAdded>().expect("register ItemAdded");
    store.register::<CheckedOut>().expect("register CheckedOut");
    store
        .register_upcaster::<ItemAdded>(1, item_v1_to_v2)
        .expect("v1 -> v2");
    store
        .register_upcaster::<ItemAdded>(2, item_v2_to_v3)
        .expect("v2 -> v3");
}

fn coord(entity: &str) -> Coordinate {
    Coordinate::new(entity, "shop").expect("valid coordinate")
}

fn typed_err(e: StoreError) -> TypedError {
    match e {
        StoreError::Typed(t) => t,
        other => panic!("expected a typed error, got {other:?}"),
    }
}

/// A typed append records kind and version; `get_as` decodes it; the
/// version is hashed exactly as the codec says; an unversioned append is
/// version 1 and hashes as before versions existed.
pub fn typed_events_round_trip_with_their_versions<H: Harness>(h: &H) {
    let store = h.open(&Settings::default());
    register_v3(&store);
    let cart = coord("cart:1");
    let item = ItemAdded {
        title: "tea".into(),
        quantity: 2,
        unit: "box".into(),
    };
    let r = store.append_typed(&cart, &item).expect("append_typed");
    let back = store.get_as::<ItemAdded>(r.event_id).expect("get_as");
    assert_eq!(back.event.payload, item);
    assert_eq!(back.event.header.event_kind, ItemAdded::KIND);
    let v = store.get_versioned(r.event_id).expect("get_versioned");
    assert_eq!(v.payload_version, 3, "{}", H::NAME);
    // Untyped reads see the stored shape.
    assert_eq!(v.event.event.payload["title"], "tea");
    let chain = v.event.event.hash_chain.expect("chain");
    let input = ChainInput::of(&v.event);
    assert_eq!(
        chain.event_hash,
        codec::event_hash_versioned(&chain.prev_hash, &input, 3)
    );
    if chain.event_hash != [0; 32] {
        assert_ne!(
            chain.event_hash,
            codec::event_hash(&chain.prev_hash, &input),
            "the version is hashed"
        );
    }
    let plain = store
        .append(&cart, CheckedOut::KIND, &json!({"total": 5}))
        .expect("append");
    let v = store.get_versioned(plain.event_id).expect("get_versioned");
    assert_eq!(v.payload_version, 1);
    let chain = v.event.event.hash_chain.expect("chain");
    assert_eq!(
        chain.event_hash,
        codec::event_hash(&chain.prev_hash, &ChainInput::of(&v.event))
    );
    assert_eq!(
        store
            .get_as::<CheckedOut>(plain.event_id)
            .expect("get_as")
            .event
            .payload,
        CheckedOut { total: 5 }
    );
    // Versions survive a reopen.
    EventStore::close(store).expect("close");
    let store = h.open(&Settings::default());
    register_v3(&store);
    assert_eq!(
        store
            .get_versioned(r.event_id)
            .expect("reopened")
            .payload_version,
        3
    );
    assert_eq!(
        store
            .get_as::<ItemAdded>(r.event_id)
            .expect("get_as")
            .event
            .payload,
        item
    );
}

/// Old payloads come back in today's shape in `get_as`, the typed
/// iterators, typed cursors and projections; stored bytes are unchanged.
pub fn upcasters_apply_on_every_read_path<H: Harness>(h: &H) {
    let store = h.open(&Settings::default());
    let cart = coord("cart:7");
    // Written by "old code": v1 and v2 types, nothing registered.
    let r1 = store
        .append_typed(
            &cart,
            &ItemAddedV1 {
                name: "tea".into(),
                qty: 1,
            },
        )
        .expect("v1");
    let r2 = store
        .append_typed(
            &cart,
            &ItemAddedV2 {
                title: "cup".into(),
                qty: 2,
            },
        )
        .expect("v2");
    store
        .append_typed(&cart, &CheckedOut { total: 9 })
        .expect("checkout");
    let stored_v1 = store.get(r1.event_id).expect("get").event.payload;
    assert_eq!(stored_v1, json!({"name": "tea", "qty": 1}));
    // Without its upcasters a v1 event cannot be read as v3: a typed error.
    assert!(matches!(
        typed_err(store.get_as::<ItemAdded>(r1.event_id).unwrap_err()),
        TypedError::NoUpcaster { from: 1, .. }
    ));
    register_v3(&store);
    let want = [
        ItemAdded {
            title: "tea".into(),
            quantity: 1,
            unit: "piece".into(),
        },
        ItemAdded {
            title: "cup".into(),
            quantity: 2,
            unit: "piece".into(),
        },
    ];
    assert_eq!(
        store
            .get_as::<ItemAdded>(r1.event_id)
            .expect("v1")
            .event
            .payload,
        want[0]
    );
    assert_eq!(
        store
            .get_as::<ItemAdded>(r2.event_id)
            .expect("v2")
            .event
            .payload,
        want[1]
    );
    let via_stream: Vec<ItemAdded> = store
        .stream_events_as::<ItemAdded>("cart:7")
        .map(|r| r.expect("stream item").event.payload)
        .collect();
    assert_eq!(via_stream, want);
    let via_region: Vec<ItemAdded> = store
        .events_as::<ItemAdded>(&Region::entity("cart:"))
        .map(|r| r.expect("region item").event.payload)
        .collect();
    assert_eq!(via_region, want);
    // A cursor yields what is deliverable now (on PostgreSQL: below the
    // stable bound, which a concurrent transaction elsewhere may hold back),
    // so wait for each event.
    let mut cursor = store.cursor_as::<ItemAdded>(&Region::entity("cart:7"), None);
    let via_cursor: Vec<ItemAdded> = (0..2)
        .map(|_| {
            cursor
                .wait_next(std::time::Duration::from_secs(30))
                .expect("cursor read")
                .expect("an event within 30 s")
                .event
                .payload
        })
        .collect();
    assert_eq!(via_cursor, want);
    assert!(cursor.next().is_none(), "nothing more");
    let cart_state: Cart = store
        .project("cart:7", &Freshness::Consistent)
        .expect("project")
        .expect("some");
    assert_eq!(
        cart_state,
        Cart {
            items: vec![("tea".into(), 1), ("cup".into(), 2)],
            total: Some(9)
        }
    );
    // Stored bytes never change.
    assert_eq!(
        store.get(r1.event_id).expect("get").event.payload,
        stored_v1
    );
    assert_eq!(
        store.get_versioned(r1.event_id).expect("v").payload_version,
        1
    );
}

/// An export read with `events_versioned` imports with every payload
/// version (`import_versioned_events`): the target holds the same events,
/// versions and hashes, and upcasts them on read as the source did. The
/// version-1 import of a later-version event fails its hash check and
/// writes nothing (never a misread).
pub fn versioned_events_import_with_their_versions<H: Harness>(h: &H) {
    // The harness made `h`, so it runs here and must make a second place.
    let other = H::new().expect("a second place for a store");
    let source = h.open(&Settings::default());
    let cart = coord("cart:9");
    let old = ItemAddedV1 {
        name: "tea".into(),
        qty: 1,
    };
    source.append_typed(&cart, &old).expect("v1");
    let middle = ItemAddedV2 {
        title: "cup".into(),
        qty: 2,
    };
    source.append_typed(&cart, &middle).expect("v2");
    register_v3(&source);
    let today = ItemAdded {
        title: "pot".into(),
        quantity: 3,
        unit: "box".into(),
    };
    source.append_typed(&cart, &today).expect("v3");
    source
        .append_typed(&cart, &CheckedOut { total: 12 })
        .expect("checkout");
    let export = |s: &H::Store| -> Vec<VersionedEvent> {
        s.events_versioned(&Region::all())
            .collect::<Result<_, _>>()
            .expect("export")
    };
    let exported = export(&source);
    let versions: Vec<u16> = exported.iter().map(|v| v.payload_version).collect();
    assert_eq!(versions, [1, 2, 3, 1], "{}", H::NAME);

    let target = other.open(&Settings::default());
    // Version 1 assumed: the v2 event's hash does not match; nothing written.
    let wrong = target.import_events(exported.iter().map(|v| v.event.clone()).collect());
    assert!(
        matches!(&wrong, Err(StoreError::BatchFailed { item_index: 1, source, .. })
            if matches!(**source, StoreError::ChainMismatch { clock: 1, .. })),
        "{wrong:?}"
    );
    assert_eq!(target.stats().expect("stats").event_count, 0);

    let receipts = target
        .import_versioned_events(exported.clone())
        .expect("import with versions");
    assert_eq!(receipts.len(), 4);
    assert_eq!(export(&target), exported, "events, versions and hashes");
    // Importing again writes nothing.
    target
        .import_versioned_events(exported.clone())
        .expect("again");
    assert_eq!(target.stats().expect("stats").event_count, 4);
    register_v3(&target);
    let read: Vec<ItemAdded> = target
        .stream_events_as::<ItemAdded>("cart:9")
        .map(|r| r.expect("typed read").event.payload)
        .collect();
    let upcast = |title: &str, quantity| ItemAdded {
        title: title.into(),
        quantity,
        unit: "piece".into(),
    };
    assert_eq!(read, [upcast("tea", 1), upcast("cup", 2), today]);
    // Appends continue the imported chain.
    let next = target
        .append_typed(&cart, &CheckedOut { total: 13 })
        .expect("append after import");
    let next = target.get(next.event_id).expect("get");
    assert_eq!(next.event.header.position.sequence, 4);
    assert_eq!(
        next.event.hash_chain.expect("chain").prev_hash,
        exported[3]
            .event
            .event
            .hash_chain
            .expect("chain")
            .event_hash
    );
}

/// A projection over today's shapes (it never sees a v1 or v2 payload).
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    /// (title, quantity) of each item.
    pub items: Vec<(String, u32)>,
    /// The checkout total.
    pub total: Option<u64>,
}

impl EventSourced<Value> for Cart {
    fn from_events(events: &[Event<Value>]) -> Option<Self> {
        let mut cart = Cart::default();
        for e in events {
            cart.apply_event(e);
        }
        (!events.is_empty()).then_some(cart)
    }

    fn apply_event(&mut self, event: &Event<Value>) {
        if let Some(item) = event.payload_as::<ItemAdded>() {
            self.items.push((item.title, item.quantity));
        } else if let Some(c) = event.payload_as::<CheckedOut>() {
            self.total = Some(c.total);
        }
    }

    fn relevant_event_kinds() -> &'static [EventKind] {
        &[ItemAdded::KIND, CheckedOut::KIND]
    }
}

/// Two types claiming one kind are refused with both names; a kind or a
/// shape that does not fit, and a version newer than the code, are typed
/// errors.
pub fn typed_reads_refuse_what_does_not_fit<H: Harness>(h: &H) {
    let store = h.open(&Settings::default());
    register_v3(&store);
    let err = typed_err(store.register::<Impostor>().unwrap_err());
    assert_eq!(
        err,
        TypedError::KindClaimedTwice {
            kind: ItemAdded::KIND,
            first: "ItemAdded",
            second: "Impostor"
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ItemAdded") && msg.contains("Impostor"),
        "{msg}"
    );
    let cart = coord("cart:9");
    let out = store
        .append_typed(&cart, &CheckedOut { total: 1 })
        .expect("append");
    assert!(matches!(
        typed_err(store.get_as::<ItemAdded>(out.event_id).unwrap_err()),
        TypedError::KindMismatch { found, .. } if found == CheckedOut::KIND
    ));
    let bad = store
        .append_versioned(
            &cart,
            ItemAdded::KIND,
            &json!({"title": 5}),
            3,
            AppendOptions::new(),
        )
        .expect("append");
    assert!(matches!(
        typed_err(store.get_as::<ItemAdded>(bad.event_id).unwrap_err()),
        TypedError::ShapeMismatch {
            type_name: "ItemAdded",
            ..
        }
    ));
    // Written by newer code: version 4.
    let newer = store
        .append_versioned(
            &cart,
            ItemAdded::KIND,
            &json!({"title": "t", "quantity": 1, "unit": "u", "colour": "red"}),
            4,
            AppendOptions::new(),
        )
        .expect("append");
    assert!(matches!(
        typed_err(store.get_as::<ItemAdded>(newer.event_id).unwrap_err()),
        TypedError::VersionTooNew {
            stored: 4,
            known: 3,
            ..
        }
    ));
    let items: Vec<_> = store.stream_events_as::<ItemAdded>("cart:9").collect();
    assert_eq!(items.len(), 2);
    assert!(items[1]
        .as_ref()
        .is_err_and(|e| matches!(e, StoreError::Typed(TypedError::VersionTooNew { .. }))));
    // A projection refuses it too, rather than fold a shape it cannot know.
    assert!(store
        .project::<Cart>("cart:9", &Freshness::Consistent)
        .is_err());
    // Appending with a type whose kind the schema gives to another is refused.
    assert!(store.append_typed(&cart, &Impostor { x: 1 }).is_err());
}

/// `events` and `stream_events` yield every event of the selection once,
/// in order, as `query` and `stream` list them.
pub fn event_iterators_match_the_listings<H: Harness>(h: &H) {
    let store = h.open(&Settings::default());
    for i in 0..60u64 {
        let entity = format!("it:{}", i % 3);
        let kind = if i % 2 == 0 {
            ItemAddedV1::KIND
        } else {
            CheckedOut::KIND
        };
        store
            .append(&coord(&entity), kind, &json!({"i": i}))
            .expect("append");
    }
    let region = Region::entity("it:");
    let listed: Vec<u128> = store
        .query(&region)
        .expect("query")
        .iter()
        .map(|e| e.event_id)
        .collect();
    let iterated: Vec<u128> = store
        .events(&region)
        .map(|r| r.expect("item").event.header.event_id)
        .collect();
    assert_eq!(iterated, listed);
    let streamed: Vec<u128> = store
        .stream_events("it:1")
        .map(|r| r.expect("item").event.header.event_id)
        .collect();
    let listed: Vec<u128> = store
        .stream("it:1")
        .expect("stream")
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(streamed, listed);
    assert_eq!(streamed.len(), 20);
    let checkouts = store
        .stream_events_as::<CheckedOut>("it:1")
        .map(|r| r.map(|_| ()))
        .collect::<Vec<_>>();
    assert_eq!(checkouts.len(), 10);
    // `{"i": n}` is not a CheckedOut: every item is a typed shape error.
    assert!(checkouts
        .iter()
        .all(|r| matches!(r, Err(StoreError::Typed(TypedError::ShapeMismatch { .. })))));
}
