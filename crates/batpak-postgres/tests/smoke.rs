use batpak::prelude::*;
use batpak_postgres::{testing, PgStore};

#[test]
fn smoke() {
    let Some(cfg) = testing::fresh_config() else {
        return;
    };
    let store = PgStore::open(cfg).unwrap();
    let c = Coordinate::new("order:1", "t").unwrap();
    let r0 = store
        .append(&c, EventKind::custom(1, 1), &serde_json::json!({"a": 1}))
        .unwrap();
    let r1 = store.append(&c, EventKind::custom(1, 1), &"two").unwrap();
    println!("{r0:?} {r1:?}");
    let s = store.stream("order:1").unwrap();
    println!("{s:#?}");
    let ev = store.get(r1.event_id).unwrap();
    println!("{ev:?}");
    println!("{:?}", store.stats().unwrap());
    println!("{}", store.verify().unwrap());
    println!("{:?}", store.read_stable(&Region::all(), None, 10).unwrap());
}
