//! From zero to an event-sourced aggregate (docs/guide.md walks through
//! this file): typed events, an aggregate folded from them, compare-and-swap
//! on save, a projection, a reactor, and an old event shape upcast on read.
//!
//! Everything below `main` is generic over the backend (`EventFeed`), so the
//! same code runs on PostgreSQL by opening a `batpak_postgres::PgStore`
//! instead of a `Store`.
//!
//! Run: `cargo run -p batpak --example aggregate`

use batpak::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

// 1. Typed events: each type is bound to its kind and payload version.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 3, type_id = 1)]
struct AccountOpened {
    owner: String,
}

/// Version 2: version 1 stored `{"amount": <whole euros>}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 3, type_id = 2, version = 2)]
struct Deposited {
    cents: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 3, type_id = 3)]
struct Withdrawn {
    cents: u64,
}

/// Written by the reactor for large withdrawals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, TypedEvent)]
#[batpak(category = 3, type_id = 4)]
struct Flagged {
    reason: String,
}

/// `Deposited` v1 -> v2: whole euros became cents.
fn deposited_v1_to_v2(v: Value) -> Result<Value, String> {
    let euros = v["amount"].as_u64().ok_or("amount is not a number")?;
    Ok(json!({ "cents": euros * 100 }))
}

/// Register the types and upcasters once, at start: a second type claiming
/// a kind is refused here, naming both.
fn register<S: EventStore>(store: &S) -> Result<(), StoreError> {
    store.register::<AccountOpened>()?;
    store.register::<Deposited>()?;
    store.register::<Withdrawn>()?;
    store.register::<Flagged>()?;
    store.register_upcaster::<Deposited>(1, deposited_v1_to_v2)
}

// 2. The aggregate: state folded from its events (today's shapes only:
//    older payloads were upcast before they reach it).

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    owner: String,
    balance_cents: u64,
    /// The clock of the newest event folded in: what a save compares against.
    version: Option<u32>,
}

impl EventSourced<Value> for Account {
    fn from_events(events: &[Event<Value>]) -> Option<Self> {
        let mut account = Account::default();
        for e in events {
            account.apply_event(e);
        }
        account.version.map(|_| account)
    }

    fn apply_event(&mut self, event: &Event<Value>) {
        if let Some(e) = event.payload_as::<AccountOpened>() {
            self.owner = e.owner;
        } else if let Some(e) = event.payload_as::<Deposited>() {
            self.balance_cents += e.cents;
        } else if let Some(e) = event.payload_as::<Withdrawn>() {
            self.balance_cents = self.balance_cents.saturating_sub(e.cents);
        }
        self.version = Some(event.position().sequence);
    }

    fn relevant_event_kinds() -> &'static [EventKind] {
        // Every kind of the account's stream, so `version` is its newest clock.
        &[]
    }
}

/// Why a command was refused.
#[derive(Debug)]
enum Refused {
    NoAccount,
    Insufficient { balance_cents: u64 },
    Store(StoreError),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NoAccount => f.write_str("no such account"),
            Refused::Insufficient { balance_cents } => {
                write!(f, "insufficient funds: balance {balance_cents} cents")
            }
            Refused::Store(e) => write!(f, "store: {e}"),
        }
    }
}

impl std::error::Error for Refused {}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        Refused::Store(e)
    }
}

// 3. Commands: load, decide, save with compare-and-swap. A concurrent
//    writer makes the save fail with `SequenceMismatch`; load and retry.

fn withdraw<S: EventStore>(store: &S, id: &str, cents: u64) -> Result<AppendReceipt, Refused> {
    loop {
        let account: Account = store
            .project(id, &Freshness::Consistent)?
            .ok_or(Refused::NoAccount)?;
        if account.balance_cents < cents {
            return Err(Refused::Insufficient {
                balance_cents: account.balance_cents,
            });
        }
        let coord = Coordinate::new(id, "bank").map_err(StoreError::from)?;
        let cas = AppendOptions::new().with_cas(account.version.unwrap_or(0));
        match store.append_typed_with_options(&coord, &Withdrawn { cents }, cas) {
            Err(StoreError::SequenceMismatch { .. }) => continue,
            other => return Ok(other?),
        }
    }
}

// 4. A reactor: large withdrawals get flagged, as reactions caused by them
//    (written once even if the reactor restarts).

struct LargeWithdrawals;

impl Reactive<Value> for LargeWithdrawals {
    fn react(&self, event: &Event<Value>) -> Vec<(Coordinate, EventKind, Value)> {
        match event.payload_as::<Withdrawn>() {
            Some(w) if w.cents >= 50_000 => {
                let coord = Coordinate::new("audit:withdrawals", "bank").expect("valid coordinate");
                let flag = Flagged {
                    reason: format!("withdrawal of {} cents", w.cents),
                };
                vec![(coord, Flagged::KIND, json!(flag))]
            }
            _ => Vec::new(),
        }
    }
}

/// The whole story, on any backend.
fn run<S: EventFeed>(store: Arc<S>) -> Result<(), Box<dyn std::error::Error>> {
    register(&*store)?;
    let reactor = store.react_loop(
        &Region::all().with_fact(KindFilter::Exact(Withdrawn::KIND)),
        LargeWithdrawals,
    )?;

    let acct = Coordinate::new("account:1", "bank")?;
    // Opening is a CAS on an empty stream: a second open is refused.
    store.append_typed_with_options(
        &acct,
        &AccountOpened {
            owner: "Ada".into(),
        },
        AppendOptions::new().with_cas_empty(),
    )?;
    // An event in the old shape, as last year's code wrote it (version 1).
    store.append_versioned(
        &acct,
        Deposited::KIND,
        &json!({"amount": 900}),
        1,
        AppendOptions::new(),
    )?;
    store.append_typed(&acct, &Deposited { cents: 2_500 })?;

    // Typed reads: the v1 deposit comes back in today's shape.
    let deposits: Vec<u64> = store
        .stream_events_as::<Deposited>("account:1")
        .map(|r| r.map(|e| e.event.payload.cents))
        .collect::<Result<_, _>>()?;
    assert_eq!(deposits, [90_000, 2_500]);

    withdraw(&*store, "account:1", 60_000)?;
    match withdraw(&*store, "account:1", 1_000_000) {
        Err(Refused::Insufficient { balance_cents }) => assert_eq!(balance_cents, 32_500),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The projection: the same fold, cached where the backend has a cache.
    let account: Account = store
        .project("account:1", &Freshness::Consistent)?
        .ok_or("no account")?;
    assert_eq!(
        (account.owner.as_str(), account.balance_cents),
        ("Ada", 32_500)
    );

    // The reactor's flag arrives through a typed cursor.
    let mut flags = store.cursor_as::<Flagged>(&Region::entity("audit:"), None);
    let flag = flags
        .wait_next(Duration::from_secs(10))?
        .ok_or("no flag within 10 s")?;
    println!(
        "balance {} cents; flagged: {}",
        account.balance_cents, flag.event.payload.reason
    );
    drop(reactor);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(Store::open(StoreConfig::new(dir.path()))?);
    run(store.clone())?;
    // The last handle's drop syncs and stops the store; the reactor thread
    // holds only a weak reference and ends with it.
    drop(store);
    Ok(())
}
