//! A payment workflow behind policy gates: proposals that pass every gate
//! are committed with a receipt, a denied one writes nothing, and an
//! emergency bypass is committed on the record, where an audit lists it.
//!
//! Run: `cargo run --example gated_workflow`

use batpak::guard::FnGate;
use batpak::pipeline::BypassReason;
use batpak::prelude::*;
use serde::{Deserialize, Serialize};

const PAYMENT: EventKind = EventKind::custom(4, 1);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    to: String,
    cents: u64,
}

/// What the gates decide on.
struct Context {
    balance_cents: u64,
    frozen: bool,
}

struct Regulator;

impl BypassReason for Regulator {
    fn name(&self) -> &'static str {
        "regulator-order"
    }
    fn justification(&self) -> &'static str {
        "court-ordered refund, ticket LEGAL-7"
    }
}

fn gates(payment: &Payment) -> GateSet<Context> {
    let cents = payment.cents;
    GateSet::new()
        .with_gate(FnGate::new("not-frozen", |c: &Context| {
            if c.frozen {
                Err(Denial::new("not-frozen", "account is frozen").with_code("FROZEN"))
            } else {
                Ok(())
            }
        }))
        .with_gate(FnGate::new("funds", move |c: &Context| {
            if c.balance_cents >= cents {
                Ok(())
            } else {
                Err(Denial::new("funds", "insufficient funds")
                    .with_code("NSF")
                    .with_context("balance", c.balance_cents.to_string())
                    .with_context("requested", cents.to_string()))
            }
        }))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::new(dir.path()))?;
    let account = Coordinate::new("account:alice", "bank:demo")?;

    // 1. Passes every gate: committed with its real sequence and hash.
    let ok = Payment {
        to: "bob".into(),
        cents: 2_500,
    };
    let pipeline = Pipeline::new(gates(&ok));
    let ctx = Context {
        balance_cents: 10_000,
        frozen: false,
    };
    let receipt = pipeline.evaluate(&ctx, Proposal::new(ok))?;
    println!("gates passed: {:?}", receipt.gates_passed());
    let committed = store.append_committed(&account, PAYMENT, receipt)?;
    println!(
        "committed {:?} as event {:032x}, sequence {}",
        committed.payload, committed.event_id, committed.sequence
    );

    // 2. Denied: no receipt, nothing written. evaluate_all lists every reason.
    let big = Payment {
        to: "mallory".into(),
        cents: 50_000,
    };
    let pipeline = Pipeline::new(gates(&big));
    let frozen = Context {
        balance_cents: 10_000,
        frozen: true,
    };
    match pipeline.evaluate(&frozen, Proposal::new(big)) {
        Ok(_) => unreachable!("a frozen account must be denied"),
        Err(denial) => println!("denied: {denial}"),
    }
    for d in pipeline.evaluate_all(&frozen) {
        println!("  every denial: [{}] {} {:?}", d.code, d.message, d.context);
    }

    // 3. Bypass with a recorded reason: committed, flagged and audited.
    let refund = Payment {
        to: "carol".into(),
        cents: 99_000,
    };
    let bypass = Pipeline::<Context>::bypass(Proposal::new(refund), &Regulator);
    let forced = store.append_bypassed(&account, PAYMENT, bypass)?;
    println!("bypass committed as event {:032x}", forced.event_id);

    println!("audit of bypasses:");
    for b in store.bypasses()? {
        println!(
            "  event {} on {} ({}): {}",
            b.event, b.entity, b.reason, b.justification
        );
    }
    assert_eq!(
        store.stream("account:alice").len(),
        2,
        "the denied payment was never written"
    );
    assert_eq!(store.bypasses()?.len(), 1);
    store.close()?;
    Ok(())
}
