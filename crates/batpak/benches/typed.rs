//! Typed reads against untyped ones on the same events: `get_as::<T>`
//! (straight from MessagePack into `T`) and `get` (into a
//! `serde_json::Value`), and the typed entity iterator against
//! `stream` + `get`. The target (issue 13): typed reads cost at most 1.2x
//! the untyped `get`.

use batpak::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::{Deserialize, Serialize};

/// A typical order event: a few scalars, a string, a small list.
#[derive(Serialize, Deserialize, TypedEvent)]
#[batpak(category = 2, type_id = 1)]
struct OrderPlaced {
    order_id: u64,
    customer: String,
    amount_cents: i64,
    currency: String,
    express: bool,
    lines: Vec<Line>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    sku: String,
    qty: u32,
    price_cents: i64,
}

const EVENTS: u64 = 2000;

fn typed_vs_untyped(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    let coord = Coordinate::new("order:7", "shop").unwrap();
    let ids: Vec<u128> = (0..EVENTS)
        .map(|i| {
            let e = OrderPlaced {
                order_id: i,
                customer: format!("customer-{}", i % 97),
                amount_cents: 1999 + i as i64,
                currency: "EUR".into(),
                express: i % 3 == 0,
                lines: (0..3)
                    .map(|l| Line {
                        sku: format!("sku-{l}-{}", i % 11),
                        qty: l + 1,
                        price_cents: 499,
                    })
                    .collect(),
            };
            store.append_typed(&coord, &e).unwrap().event_id
        })
        .collect();
    store.sync().unwrap();
    let mut g = c.benchmark_group("typed");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("get_untyped_2000", |b| {
        b.iter(|| {
            for id in &ids {
                std::hint::black_box(store.get(*id).unwrap());
            }
        })
    });
    g.bench_function("get_as_typed_2000", |b| {
        b.iter(|| {
            for id in &ids {
                std::hint::black_box(store.get_as::<OrderPlaced>(*id).unwrap());
            }
        })
    });
    g.bench_function("stream_then_get_untyped_2000", |b| {
        b.iter(|| {
            for e in store.stream("order:7") {
                std::hint::black_box(store.get(e.event_id).unwrap());
            }
        })
    });
    g.bench_function("stream_events_as_typed_2000", |b| {
        b.iter(|| {
            for e in store.stream_events_as::<OrderPlaced>("order:7") {
                std::hint::black_box(e.unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, typed_vs_untyped);
criterion_main!(benches);
