//! The propose → evaluate → commit flow around a [`GateSet`].
//!
//! This module owns [`Proposal`], [`Pipeline`], [`Committed`] and the bypass
//! types. The commit step is a caller-supplied closure (usually one that calls
//! `Store::append`), so this module never touches the store itself, never
//! persists denials or bypass records, and does not retry.
//!
//! The guarantee is by construction: [`Pipeline::commit`] accepts only a
//! [`Receipt`], and only the gates can make one. Code that appends to the store
//! directly is not affected.
//!
//! ```
//! use batpak::guard::{Denial, FnGate, GateSet};
//! use batpak::pipeline::{Committed, Pipeline, Proposal};
//!
//! let gates = GateSet::new().with_gate(FnGate::new("open", |open: &bool| {
//!     if *open { Ok(()) } else { Err(Denial::new("open", "store is closed")) }
//! }));
//! let pipeline = Pipeline::new(gates);
//!
//! let receipt = pipeline.evaluate(&true, Proposal::new("hello")).unwrap();
//! let committed = pipeline
//!     .commit(receipt, |payload| {
//!         // With a store, use `Store::append_committed` (or
//!         // `append_bypassed` for an audited bypass) instead.
//!         Ok::<_, std::io::Error>(Committed { payload, event_id: 1, sequence: 0, hash: [0; 32] })
//!     })
//!     .unwrap();
//! assert_eq!(committed.payload, "hello");
//! assert!(pipeline.evaluate(&false, Proposal::new("hello")).is_err());
//! ```

pub mod bypass;

pub use bypass::{BypassReason, BypassReceipt};

use crate::guard::{Denial, GateSet, Receipt};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A payload that has not been evaluated yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal<T>(pub(crate) T);

impl<T> Proposal<T> {
    /// Wraps a payload.
    pub fn new(payload: T) -> Self {
        Proposal(payload)
    }

    /// The payload.
    pub fn payload(&self) -> &T {
        &self.0
    }

    /// Transforms the payload before evaluation.
    pub fn map<U, F: FnOnce(T) -> U>(self, f: F) -> Proposal<U> {
        Proposal(f(self.0))
    }

    /// Unwraps the payload (a proposal proves nothing, so this is always allowed).
    pub fn into_payload(self) -> T {
        self.0
    }
}

/// The result of a successful commit: the payload plus where it landed.
///
/// Fields are public so that a commit closure can build it from the store's
/// `AppendReceipt`; holding one therefore proves nothing by itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed<T> {
    /// The committed payload.
    pub payload: T,
    /// Id of the event written.
    #[serde(with = "crate::wire::u128_bytes")]
    pub event_id: u128,
    /// Global sequence of the event written.
    pub sequence: u64,
    /// A hash the commit closure chose to report (all zeros when it has none).
    pub hash: [u8; 32],
}

/// A [`GateSet`] plus the commit step that only accepts its receipts.
pub struct Pipeline<Ctx> {
    gates: GateSet<Ctx>,
}

impl<Ctx> Pipeline<Ctx> {
    /// A pipeline guarded by `gates`.
    #[must_use]
    pub fn new(gates: GateSet<Ctx>) -> Self {
        Pipeline { gates }
    }

    /// The gates.
    #[must_use]
    pub fn gates(&self) -> &GateSet<Ctx> {
        &self.gates
    }

    /// Runs the gates fail-fast; see [`GateSet::evaluate`].
    ///
    /// # Errors
    /// The first [`Denial`].
    pub fn evaluate<T>(&self, ctx: &Ctx, proposal: Proposal<T>) -> Result<Receipt<T>, Denial> {
        self.gates.evaluate(ctx, proposal)
    }

    /// Runs every gate and returns all denials; see [`GateSet::evaluate_all`].
    pub fn evaluate_all(&self, ctx: &Ctx) -> Vec<Denial> {
        self.gates.evaluate_all(ctx)
    }

    /// Spends a receipt: hands its payload to `commit_fn` and returns what it returns.
    ///
    /// The gate names are dropped; read them with [`Receipt::gates_passed`]
    /// before committing if they should be recorded.
    ///
    /// # Errors
    /// Whatever `commit_fn` returns.
    pub fn commit<T, E>(
        &self,
        receipt: Receipt<T>,
        commit_fn: impl FnOnce(T) -> Result<Committed<T>, E>,
    ) -> Result<Committed<T>, E> {
        let (payload, _gates) = receipt.into_parts();
        commit_fn(payload)
    }

    /// Skips the gates for a named, static reason.
    pub fn bypass<T>(proposal: Proposal<T>, reason: &'static dyn BypassReason) -> BypassReceipt<T> {
        BypassReceipt {
            payload: proposal.into_payload(),
            reason: reason.name(),
            justification: reason.justification(),
        }
    }

    /// Spends a bypass receipt like [`Pipeline::commit`] spends a receipt.
    ///
    /// # Errors
    /// Whatever `commit_fn` returns.
    pub fn commit_bypass<T, E>(
        receipt: BypassReceipt<T>,
        commit_fn: impl FnOnce(T) -> Result<Committed<T>, E>,
    ) -> Result<Committed<T>, E> {
        commit_fn(receipt.into_payload())
    }
}

impl<Ctx> From<GateSet<Ctx>> for Pipeline<Ctx> {
    fn from(gates: GateSet<Ctx>) -> Self {
        Pipeline::new(gates)
    }
}

impl<Ctx> fmt::Debug for Pipeline<Ctx> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("gates", &self.gates)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::FnGate;

    fn limit_gate(max: u32) -> FnGate<impl Fn(&u32) -> Result<(), Denial> + Send + Sync> {
        FnGate::new("limit", move |n: &u32| {
            if *n <= max {
                Ok(())
            } else {
                Err(Denial::new("limit", "too many").with_code("LIMIT"))
            }
        })
    }

    fn fake_commit<T>(payload: T) -> Result<Committed<T>, String> {
        Ok(Committed {
            payload,
            event_id: 0xABCD,
            sequence: 9,
            hash: [1; 32],
        })
    }

    #[test]
    fn proposal_map_and_accessors() {
        let p = Proposal::new(2).map(|n| n * 10);
        assert_eq!(*p.payload(), 20);
        assert_eq!(p.clone().into_payload(), 20);
        assert_eq!(p, Proposal::new(20));
    }

    #[test]
    fn evaluate_then_commit() {
        let pipeline = Pipeline::new(GateSet::new().with_gate(limit_gate(3)));
        assert_eq!(pipeline.gates().names(), ["limit"]);
        let receipt = pipeline.evaluate(&3, Proposal::new("ok")).unwrap();
        assert_eq!(receipt.gates_passed(), ["limit"]);
        let c = pipeline.commit(receipt, fake_commit).unwrap();
        assert_eq!((c.payload, c.event_id, c.sequence), ("ok", 0xABCD, 9));
        let d = pipeline.evaluate(&4, Proposal::new("no")).unwrap_err();
        assert_eq!(d.code, "LIMIT");
        assert_eq!(pipeline.evaluate_all(&4).len(), 1);
    }

    #[test]
    fn commit_passes_errors_through() {
        let pipeline = Pipeline::from(GateSet::<()>::new());
        let receipt = pipeline.evaluate(&(), Proposal::new(1)).unwrap();
        let r: Result<Committed<i32>, &str> = pipeline.commit(receipt, |_| Err("disk full"));
        assert_eq!(r.unwrap_err(), "disk full");
    }

    struct Migration;
    impl BypassReason for Migration {
        fn name(&self) -> &'static str {
            "migration"
        }
        fn justification(&self) -> &'static str {
            "legacy data was validated upstream"
        }
    }

    #[test]
    fn bypass_carries_reason() {
        let receipt = Pipeline::<u32>::bypass(Proposal::new(vec![1, 2]), &Migration);
        assert_eq!(receipt.payload(), &vec![1, 2]);
        assert_eq!(receipt.reason(), "migration");
        assert_eq!(
            receipt.justification(),
            "legacy data was validated upstream"
        );
        assert!(format!("{receipt:?}").contains("migration"));
        let c = Pipeline::<u32>::commit_bypass(receipt, fake_commit).unwrap();
        assert_eq!(c.payload, vec![1, 2]);
    }

    #[test]
    fn committed_serde_round_trip() {
        let c = Committed {
            payload: "p".to_string(),
            event_id: u128::MAX - 1,
            sequence: 7,
            hash: [3; 32],
        };
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["event_id"].as_array().unwrap().len(), 16);
        let back: Committed<String> = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
    }
}
