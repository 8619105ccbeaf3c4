//! # batpak
//!
//! An embedded event store with a blocking API: an append-only, crash-safe
//! log of events on local disk, indexed in memory, with causal links
//! (correlation and causation ids), per-entity hash chains, optimistic
//! concurrency, idempotency keys and policy gates.
//!
//! ```
//! use batpak::prelude::*;
//! # let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(StoreConfig::new(dir.path()))?;
//! let order = Coordinate::new("order:42", "tenant:acme")?;
//! let placed = store.append(&order, EventKind::custom(1, 1), &serde_json::json!({"sku": "tea"}))?;
//! store.append_reaction(&order, EventKind::custom(1, 2), &"paid", placed.event_id, placed.event_id)?;
//! assert_eq!(store.stream("order:42").len(), 2);
//! assert_eq!(store.by_correlation(placed.event_id).len(), 2);
//! store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Maintenance runs while the store is in use: `verify` checks every frame
//! and hash chain, `snapshot` writes a consistent copy, and `compact`
//! merges sealed segments, optionally removing or redacting events.
//!
//! ```
//! use batpak::prelude::*;
//! # let dir = tempfile::tempdir().unwrap();
//! # let copy = tempfile::tempdir().unwrap();
//! let store = Store::open(StoreConfig::new(dir.path()).with_segment_max_bytes(4096))?;
//! let acct = Coordinate::new("acct:7", "bank")?;
//! for i in 0..100u64 {
//!     store.append(&acct, EventKind::custom(1, 1), &serde_json::json!({"i": i, "pad": "x".repeat(60)}))?;
//! }
//! assert!(store.verify()?.is_clean());
//! store.snapshot(&copy.path().join("backup"))?;
//!
//! // Keep only events with an even `i`; the others' ids stay reserved.
//! let keep_even = CompactionStrategy::Retention(Box::new(|e: &StoredEvent<serde_json::Value>| {
//!     e.event.payload["i"].as_u64().is_some_and(|i| i % 2 == 0)
//! }));
//! let result = store.compact(&CompactionConfig {
//!     strategy: keep_even,
//!     min_segments: 1,
//! })?;
//! assert!(result.events_removed > 0);
//! assert!(store.verify()?.is_clean());
//! store.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Modules: [`coordinate`] (where events live), [`event`] (what they are),
//! [`store`] (the store), [`guard`] and [`pipeline`] (policy gates before a
//! write), [`outcome`] (results of multi-step work), [`typestate`] (state
//! machines checked by the compiler), [`id`] and [`wire`] (ids and their
//! serde forms).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// `#[derive(TypedEvent)]` names `::batpak`, also inside this crate's tests.
extern crate self as batpak;

pub mod coordinate;
pub mod event;
pub mod guard;
pub mod id;
pub mod outcome;
pub mod pipeline;
pub mod prelude;
pub mod store;
pub mod typestate;
pub mod wire;
