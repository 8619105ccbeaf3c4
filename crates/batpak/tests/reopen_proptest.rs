//! Random append sequences read back identically after reopen.

mod common;

use batpak::prelude::*;
use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
enum Op {
    Append {
        entity: u8,
        scope: u8,
        kind: u8,
        payload: Value,
    },
    Reaction {
        entity: u8,
        target: u8,
    },
    Cas {
        entity: u8,
        expected: Option<u32>,
    },
    Keyed {
        entity: u8,
        key: u8,
    },
}

fn arb_payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,40}".prop_map(Value::from),
        (any::<u32>(), any::<bool>())
            .prop_map(|(n, b)| json!({"n": n, "b": b, "list": [n, n / 2]})),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, 0u8..3, 0u8..3, arb_payload()).prop_map(|(entity, scope, kind, payload)| Op::Append { entity, scope, kind, payload }),
        1 => (0u8..6, any::<u8>()).prop_map(|(entity, target)| Op::Reaction { entity, target }),
        1 => (0u8..6, prop::option::of(0u32..6)).prop_map(|(entity, expected)| Op::Cas { entity, expected }),
        1 => (0u8..6, 0u8..8).prop_map(|(entity, key)| Op::Keyed { entity, key }),
    ]
}

fn kind(k: u8) -> EventKind {
    EventKind::custom(1 + k, u16::from(k))
}

fn run(store: &Store, ops: &[Op]) {
    let mut ids: Vec<u128> = Vec::new();
    for op in ops {
        let r = match op {
            Op::Append {
                entity,
                scope,
                kind: k,
                payload,
            } => store.append(
                &coord(&format!("ent:{entity}"), &format!("sc{scope}")),
                kind(*k),
                payload,
            ),
            Op::Reaction { entity, target } => {
                if ids.is_empty() {
                    continue;
                }
                let cause = ids[*target as usize % ids.len()];
                store.append_reaction(
                    &coord(&format!("ent:{entity}"), "sc0"),
                    kind(0),
                    &"re",
                    cause,
                    cause,
                )
            }
            Op::Cas { entity, expected } => {
                let opts = match expected {
                    Some(n) => AppendOptions::new().with_cas(*n),
                    None => AppendOptions::new().with_cas_empty(),
                };
                store.append_with_options(
                    &coord(&format!("ent:{entity}"), "sc1"),
                    kind(1),
                    &"cas",
                    opts,
                )
            }
            Op::Keyed { entity, key } => store.append_with_options(
                &coord(&format!("ent:{entity}"), "sc2"),
                kind(2),
                &json!({"key": key}),
                AppendOptions::new().with_idempotency(1000 + u128::from(*key)),
            ),
        };
        if let Ok(r) = r {
            ids.push(r.event_id);
        }
    }
}

/// Everything a reader can observe, as comparable values.
fn snapshot(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    let all = store.query(&Region::all());
    for e in &all {
        let ev = store.get(e.event_id).unwrap();
        out.push(format!("{e:?} {}", serde_json::to_string(&ev).unwrap()));
    }
    for entity in 0..6 {
        out.push(format!("{:?}", store.stream(&format!("ent:{entity}"))));
    }
    for scope in 0..3 {
        out.push(format!("{:?}", store.by_scope(&format!("sc{scope}"))));
    }
    for k in 0..3 {
        out.push(format!("{:?}", store.by_fact(kind(k))));
    }
    out.push(format!(
        "{:?}",
        store.query(&Region::entity("ent:").with_clock_range((1, 3)))
    ));
    for e in all.iter().take(10) {
        out.push(format!(
            "{:?} {:?}",
            store.by_correlation(e.event_id),
            store.children(e.event_id)
        ));
        out.push(format!("{}", store.walk_ancestors(e.event_id, 4).len()));
    }
    out.push(format!("{:?}", store.stats()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn reopen_gives_identical_results(ops in prop::collection::vec(arb_op(), 1..60), seg in 600u64..4000) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |d: &std::path::Path| StoreConfig::new(d).with_segment_max_bytes(seg).with_sync_every_n_events(64);
        let store = Store::open(cfg(dir.path())).unwrap();
        run(&store, &ops);
        let before = snapshot(&store);
        store.close().unwrap();
        let store = Store::open(cfg(dir.path())).unwrap();
        let after = snapshot(&store);
        prop_assert_eq!(before, after);
    }
}
