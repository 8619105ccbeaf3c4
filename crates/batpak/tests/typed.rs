//! The file store's typed and streaming reads beyond the shared
//! conformance checks: iteration across index steps, damaged frames as
//! `Err` items, compaction keeping payload versions, `Cursor` and
//! `Subscription` as iterators.

use batpak::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::{Seek, SeekFrom, Write};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(kind = EventKind::custom(9, 1), version = 2)]
struct Reading {
    sensor: u32,
    value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 9, type_id = 2, name = "Calibrated")]
struct Calibration {
    offset: i64,
}

fn coord(entity: &str) -> Coordinate {
    Coordinate::new(entity, "plant").unwrap()
}

#[test]
fn iterators_cover_selections_larger_than_one_step_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    // More than two steps of the index (1024 slots each).
    for i in 0..2500u32 {
        let c = coord(&format!("sensor:{}", i % 2));
        if i % 5 == 0 {
            store
                .append_typed(
                    &c,
                    &Calibration {
                        offset: i64::from(i),
                    },
                )
                .unwrap();
        } else {
            store
                .append_typed(
                    &c,
                    &Reading {
                        sensor: i,
                        value: f64::from(i) / 2.0,
                    },
                )
                .unwrap();
        }
    }
    let all: Vec<u128> = store
        .events(&Region::all())
        .map(|r| r.unwrap().event.header.event_id)
        .collect();
    let listed: Vec<u128> = store
        .query(&Region::all())
        .iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(all.len(), 2500);
    assert_eq!(all, listed);
    let readings: Vec<Reading> = store
        .events_as::<Reading>(&Region::entity("sensor:"))
        .map(|r| r.unwrap().event.payload)
        .collect();
    assert_eq!(readings.len(), 2000);
    assert!(readings.windows(2).all(|w| w[0].sensor < w[1].sensor));
    let stream: Vec<u32> = store
        .stream_events("sensor:1")
        .map(|r| r.unwrap().event.header.position.sequence)
        .collect();
    assert_eq!(stream, (0..1250).collect::<Vec<u32>>());
    let calibrations: Vec<i64> = store
        .stream_events_as::<Calibration>("sensor:0")
        .map(|r| r.unwrap().event.payload.offset)
        .collect();
    assert_eq!(calibrations, (0..2500).step_by(10).collect::<Vec<i64>>());
    // Typed and versioned reads agree with get.
    let v = store
        .stream_events_versioned("sensor:1")
        .nth(3)
        .unwrap()
        .unwrap();
    assert_eq!(v.payload_version, 2);
    assert_eq!(
        store
            .get_as::<Reading>(v.event.event.header.event_id)
            .unwrap()
            .event
            .payload,
        Reading {
            sensor: 7,
            value: 3.5
        }
    );
}

/// Overwrite one payload byte of `entry`'s frame in its segment file (the
/// store maps the file shared, so readers see it at once).
fn damage(dir: &std::path::Path, entry: &IndexEntry) {
    let pos = entry.disk_pos;
    let path = dir.join(format!("{:020}.seg", pos.segment_id));
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(pos.offset + u64::from(pos.length) - 2))
        .unwrap();
    f.write_all(&[0xff]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_damaged_frame_is_an_err_item_and_the_iteration_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let c = coord("sensor:9");
    for i in 0..5u32 {
        store
            .append_typed(
                &c,
                &Reading {
                    sensor: i,
                    value: 1.0,
                },
            )
            .unwrap();
    }
    store.sync().unwrap();
    let entries = store.stream("sensor:9");
    damage(dir.path(), &entries[2]);
    let items: Vec<_> = store.stream_events_as::<Reading>("sensor:9").collect();
    assert_eq!(items.len(), 5, "no silent stop");
    for (i, item) in items.iter().enumerate() {
        if i == 2 {
            assert!(
                matches!(item, Err(StoreError::CrcMismatch { .. })),
                "item {i}: {item:?}"
            );
        } else {
            assert_eq!(item.as_ref().unwrap().event.payload.sensor, i as u32);
        }
    }
    let untyped: Vec<_> = store.events(&Region::entity("sensor:9")).collect();
    assert_eq!(untyped.iter().filter(|r| r.is_err()).count(), 1);
    assert!(untyped[2].is_err());
    assert!(matches!(
        store.get_as::<Reading>(entries[2].event_id),
        Err(StoreError::CrcMismatch { .. })
    ));
}

#[test]
fn compaction_keeps_payload_versions_and_chains() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path()).with_segment_max_bytes(4096)).unwrap();
    let c = coord("sensor:3");
    let mut ids = Vec::new();
    for i in 0..80u32 {
        ids.push(
            store
                .append_typed(
                    &c,
                    &Reading {
                        sensor: i,
                        value: 0.5,
                    },
                )
                .unwrap()
                .event_id,
        );
        store
            .append(&c, Calibration::KIND, &json!({"offset": i}))
            .unwrap();
    }
    let keep_readings =
        CompactionStrategy::Retention(Box::new(|e: &StoredEvent<serde_json::Value>| {
            e.event.header.event_kind == Reading::KIND
        }));
    let result = store
        .compact(&CompactionConfig {
            strategy: keep_readings,
            min_segments: 1,
        })
        .unwrap();
    assert!(result.events_removed > 0);
    assert!(store.verify().unwrap().is_clean());
    for id in &ids {
        assert_eq!(store.get_versioned(*id).unwrap().payload_version, 2);
    }
    store.close().unwrap();
    let store = Store::open(StoreConfig::new(dir.path()).with_segment_max_bytes(4096)).unwrap();
    assert!(store.verify().unwrap().is_clean());
    let versions: Vec<u16> = store
        .stream_events_versioned("sensor:3")
        .filter_map(|r| {
            let v = r.unwrap();
            (v.event.event.header.event_kind == Reading::KIND).then_some(v.payload_version)
        })
        .collect();
    assert_eq!(versions, vec![2; 80]);
}

#[test]
fn cursors_iterate_what_is_available_and_subscriptions_until_close() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let c = coord("sensor:5");
    let subscription = store.subscribe_lossy(&Region::entity("sensor:5"));
    let listener = std::thread::spawn(move || subscription.map(|n| n.event_id).collect::<Vec<_>>());
    let mut cursor = store.cursor_guaranteed(&Region::entity("sensor:5"));
    let mut ids = Vec::new();
    for i in 0..3u32 {
        ids.push(
            store
                .append_typed(
                    &c,
                    &Reading {
                        sensor: i,
                        value: 0.0,
                    },
                )
                .unwrap()
                .event_id,
        );
    }
    let first: Vec<u128> = cursor.by_ref().map(|e| e.event_id).collect();
    assert_eq!(first, ids);
    ids.push(
        store
            .append_typed(
                &c,
                &Reading {
                    sensor: 3,
                    value: 0.0,
                },
            )
            .unwrap()
            .event_id,
    );
    let second: Vec<u128> = cursor.by_ref().map(|e| e.event_id).collect();
    assert_eq!(second, ids[3..]);
    store.close().unwrap();
    // The blocking iterator ended with the store.
    assert_eq!(listener.join().unwrap(), ids);
}
