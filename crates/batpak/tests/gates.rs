//! The store end of the policy pipeline: committed receipts and audited bypasses.

mod common;

use batpak::guard::FnGate;
use batpak::pipeline::BypassReason;
use batpak::prelude::*;
use common::*;
use serde_json::json;

struct Incident;

impl BypassReason for Incident {
    fn name(&self) -> &'static str {
        "incident"
    }
    fn justification(&self) -> &'static str {
        "on-call fix for INC-42"
    }
}

fn pipeline() -> Pipeline<u64> {
    let gates = GateSet::new().with_gate(FnGate::new("limit", |amount: &u64| {
        if *amount <= 100 {
            Ok(())
        } else {
            Err(Denial::new("limit", "amount over 100")
                .with_code("LIMIT")
                .with_context("amount", amount.to_string()))
        }
    }));
    Pipeline::new(gates)
}

#[test]
fn a_receipt_commits_with_the_real_sequence_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .append(&coord("acct", "s"), KIND_A, &"opened")
        .unwrap();
    let p = pipeline();
    let receipt = p
        .evaluate(&50, Proposal::new(json!({ "pay": 50 })))
        .unwrap();
    assert_eq!(receipt.gates_passed(), ["limit"]);
    let committed = store
        .append_committed(&coord("acct", "s"), KIND_A, receipt)
        .unwrap();
    let entry = store.stream("acct").pop().unwrap();
    assert_eq!(
        (committed.event_id, committed.sequence),
        (entry.event_id, entry.global_sequence)
    );
    assert_eq!(committed.hash, entry.hash_chain.event_hash);
    assert_ne!(committed.hash, [0; 32]);
    assert_eq!(
        store.get(committed.event_id).unwrap().event.payload,
        committed.payload
    );

    let denied = p
        .evaluate(&500, Proposal::new(json!({ "pay": 500 })))
        .unwrap_err();
    assert_eq!((denied.gate, denied.code.as_str()), ("limit", "LIMIT"));
    assert_eq!(store.stream("acct").len(), 2, "a denial writes nothing");
}

#[test]
fn bypasses_are_flagged_and_audited_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let receipt = Pipeline::<u64>::bypass(Proposal::new(json!({ "pay": 500 })), &Incident);
    let committed = store
        .append_bypassed(&coord("acct", "s"), KIND_A, receipt)
        .unwrap();
    let header = store.get(committed.event_id).unwrap().event.header;
    assert!(header.is_bypass());
    assert_eq!(
        committed.sequence + 2,
        store.stats().global_sequence,
        "the event, then its audit record"
    );
    let audit = store.bypasses().unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].reason, "incident");
    assert_eq!(audit[0].justification, "on-call fix for INC-42");
    assert_eq!(audit[0].event, format!("{:032x}", committed.event_id));
    assert_eq!(audit[0].entity, "acct");
    let children = store.children(committed.event_id);
    assert_eq!(children.len(), 1);
    assert_eq!(children[0].kind, EventKind::EFFECT_BYPASS);
    // Ordinary commits are not on the audit.
    let receipt = pipeline()
        .evaluate(&1, Proposal::new(json!({ "pay": 1 })))
        .unwrap();
    let plain = store
        .append_committed(&coord("acct", "s"), KIND_A, receipt)
        .unwrap();
    assert!(!store.get(plain.event_id).unwrap().event.header.is_bypass());
    drop(store);
    assert_eq!(
        open(dir.path()).bypasses().unwrap().len(),
        1,
        "the audit survives a restart"
    );
}
