//! An event-sourced counter: events record increments and resets, a
//! projection folds them into the current value, cached between calls and
//! brought up to date incrementally.
//!
//! Run: `cargo run --example counter`

use batpak::prelude::*;
use serde::{Deserialize, Serialize};

const INCREMENTED: EventKind = EventKind::custom(5, 1);
const RESET: EventKind = EventKind::custom(5, 2);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counter {
    value: i64,
    changes: u64,
}

impl EventSourced<serde_json::Value> for Counter {
    fn from_events(events: &[Event<serde_json::Value>]) -> Option<Self> {
        let mut c = Counter {
            value: 0,
            changes: 0,
        };
        for e in events {
            c.apply_event(e);
        }
        (!events.is_empty()).then_some(c)
    }

    fn apply_event(&mut self, event: &Event<serde_json::Value>) {
        self.changes += 1;
        if event.event_kind() == RESET {
            self.value = 0;
        } else {
            self.value += event.payload["by"].as_i64().unwrap_or(0);
        }
    }

    fn relevant_event_kinds() -> &'static [EventKind] {
        &[INCREMENTED, RESET]
    }

    fn supports_incremental_apply() -> bool {
        true
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::new(dir.path()).with_incremental_projection(true))?;
    let clicks = Coordinate::new("counter:clicks", "app:demo")?;

    for by in [1, 2, 3] {
        store.append(&clicks, INCREMENTED, &serde_json::json!({ "by": by }))?;
    }
    let c: Counter = store
        .project("counter:clicks", &Freshness::Consistent)?
        .ok_or("no events")?;
    println!("after three increments: {c:?}");
    assert_eq!(c.value, 6);

    // Only the new events are applied to the cached value.
    store.append(&clicks, RESET, &serde_json::json!({}))?;
    store.append(&clicks, INCREMENTED, &serde_json::json!({ "by": 10 }))?;
    let c: Counter = store
        .project("counter:clicks", &Freshness::Consistent)?
        .ok_or("no events")?;
    println!("after a reset and +10:   {c:?}");
    assert_eq!(
        c,
        Counter {
            value: 10,
            changes: 5
        }
    );

    // Optimistic concurrency: this writer last saw clock 3, but the newest
    // event has clock 4, so the append is refused.
    let stale = store.append_with_options(
        &clicks,
        INCREMENTED,
        &serde_json::json!({ "by": 1 }),
        AppendOptions::new().with_cas(3),
    );
    println!(
        "append expecting clock 3: {}",
        stale
            .map(|_| "ok".to_string())
            .unwrap_or_else(|e| e.to_string())
    );

    for e in store.stream("counter:clicks") {
        println!(
            "  clock {} kind {} {}",
            e.clock,
            e.kind,
            store.get(e.event_id)?.event.payload
        );
    }
    store.close()?;
    Ok(())
}
