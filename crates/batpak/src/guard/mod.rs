//! Policy gates: pure checks that a proposed write must pass before it is committed.
//!
//! This module owns [`Gate`], [`GateSet`], [`Denial`] and the sealed [`Receipt`]
//! that proves a payload passed every gate. It decides nothing about storage: it
//! never touches the store, never writes a denial to the log and keeps no audit
//! trail; [`crate::pipeline`] turns a receipt into a committed write.
//!
//! ```
//! use batpak::guard::{Denial, Gate, GateSet};
//! use batpak::pipeline::Proposal;
//!
//! struct Account { balance: i64 }
//!
//! struct NotOverdrawn;
//! impl Gate<Account> for NotOverdrawn {
//!     fn name(&self) -> &'static str { "not_overdrawn" }
//!     fn evaluate(&self, ctx: &Account) -> Result<(), Denial> {
//!         if ctx.balance >= 0 { Ok(()) } else {
//!             Err(Denial::new("not_overdrawn", "account is overdrawn").with_code("OVERDRAWN"))
//!         }
//!     }
//! }
//!
//! let mut gates = GateSet::new();
//! gates.push(NotOverdrawn);
//! let receipt = gates.evaluate(&Account { balance: 10 }, Proposal::new("withdraw 5")).unwrap();
//! assert_eq!(receipt.gates_passed(), ["not_overdrawn"]);
//! let denial = gates.evaluate(&Account { balance: -1 }, Proposal::new("withdraw 5")).unwrap_err();
//! assert_eq!(denial.code, "OVERDRAWN");
//! ```

mod denial;
mod receipt;

pub use denial::Denial;
pub use receipt::Receipt;

use crate::pipeline::Proposal;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// A named check over a context `Ctx`.
///
/// Gates are meant to be pure predicates: no side effects, the same answer for
/// the same context. Nothing enforces that, but [`GateSet::evaluate_all`] may run
/// a gate that [`GateSet::evaluate`] would have skipped, so side effects would
/// run a varying number of times.
pub trait Gate<Ctx>: Send + Sync {
    /// A stable identifier, reported in receipts and denials.
    fn name(&self) -> &'static str;

    /// `Ok(())` to let the proposal through, or the reason it may not pass.
    ///
    /// # Errors
    /// A [`Denial`] when the context breaks this gate's rule.
    fn evaluate(&self, ctx: &Ctx) -> Result<(), Denial>;

    /// A human-readable description of the rule (empty by default).
    fn description(&self) -> &'static str {
        ""
    }
}

impl<Ctx, G: Gate<Ctx> + ?Sized> Gate<Ctx> for Box<G> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn evaluate(&self, ctx: &Ctx) -> Result<(), Denial> {
        (**self).evaluate(ctx)
    }
    fn description(&self) -> &'static str {
        (**self).description()
    }
}

impl<Ctx, G: Gate<Ctx> + ?Sized> Gate<Ctx> for Arc<G> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn evaluate(&self, ctx: &Ctx) -> Result<(), Denial> {
        (**self).evaluate(ctx)
    }
    fn description(&self) -> &'static str {
        (**self).description()
    }
}

/// A gate made from a name and a closure; see [`FnGate::new`].
pub struct FnGate<F> {
    name: &'static str,
    description: &'static str,
    check: F,
}

impl<F> FnGate<F> {
    /// A gate called `name` that runs `check`.
    ///
    /// ```
    /// use batpak::guard::{Denial, FnGate, GateSet};
    /// use batpak::pipeline::Proposal;
    /// let mut gates = GateSet::<u32>::new();
    /// gates.push(FnGate::new("positive", |n: &u32| {
    ///     if *n > 0 { Ok(()) } else { Err(Denial::new("positive", "must be positive")) }
    /// }));
    /// assert!(gates.evaluate(&1, Proposal::new(())).is_ok());
    /// assert!(gates.evaluate(&0, Proposal::new(())).is_err());
    /// ```
    pub fn new(name: &'static str, check: F) -> Self {
        FnGate {
            name,
            description: "",
            check,
        }
    }

    /// Sets the text returned by [`Gate::description`].
    #[must_use]
    pub fn with_description(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }
}

impl<Ctx, F> Gate<Ctx> for FnGate<F>
where
    F: Fn(&Ctx) -> Result<(), Denial> + Send + Sync,
{
    fn name(&self) -> &'static str {
        self.name
    }
    fn evaluate(&self, ctx: &Ctx) -> Result<(), Denial> {
        (self.check)(ctx)
    }
    fn description(&self) -> &'static str {
        self.description
    }
}

impl<F> fmt::Debug for FnGate<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnGate")
            .field("name", &self.name)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// An ordered set of gates over one context type.
pub struct GateSet<Ctx> {
    gates: Vec<Box<dyn Gate<Ctx>>>,
}

impl<Ctx> GateSet<Ctx> {
    /// An empty set (which lets everything through).
    #[must_use]
    pub fn new() -> Self {
        GateSet { gates: Vec::new() }
    }

    /// Appends a gate; gates run in the order they were pushed.
    pub fn push(&mut self, gate: impl Gate<Ctx> + 'static) {
        self.gates.push(Box::new(gate));
    }

    /// Builder form of [`GateSet::push`].
    #[must_use]
    pub fn with_gate(mut self, gate: impl Gate<Ctx> + 'static) -> Self {
        self.push(gate);
        self
    }

    /// Runs the gates in push order and stops at the first denial.
    ///
    /// On success the receipt lists every gate's name in order. A gate that
    /// panics is not caught here (the panic propagates to the caller); use
    /// [`GateSet::evaluate_all`] to survive defective gates.
    ///
    /// # Errors
    /// The first gate's [`Denial`].
    pub fn evaluate<T>(&self, ctx: &Ctx, proposal: Proposal<T>) -> Result<Receipt<T>, Denial> {
        let mut passed = Vec::with_capacity(self.gates.len());
        for gate in &self.gates {
            gate.evaluate(ctx)?;
            passed.push(gate.name());
        }
        Ok(Receipt::new(proposal.into_payload(), passed))
    }

    /// Runs every gate and returns all denials, in push order.
    ///
    /// A gate that panics becomes a denial with code [`Denial::GATE_DEFECT`] and the
    /// panic message (when the payload is a `&str` or `String`, else
    /// `"unknown panic"`), so one broken gate cannot hide the verdicts of the
    /// others. The panic hook still runs (and prints, by default), and nothing is
    /// caught when the program is built with `panic = "abort"`.
    pub fn evaluate_all(&self, ctx: &Ctx) -> Vec<Denial> {
        let mut denials = Vec::new();
        for gate in &self.gates {
            // AssertUnwindSafe: a gate only reads `ctx`, and a gate that panicked is
            // reported as defective rather than trusted again within this call.
            match catch_unwind(AssertUnwindSafe(|| gate.evaluate(ctx))) {
                Ok(Ok(())) => {}
                Ok(Err(denial)) => denials.push(denial),
                Err(panic) => {
                    let message = if let Some(s) = panic.downcast_ref::<&str>() {
                        (*s).to_owned()
                    } else if let Some(s) = panic.downcast_ref::<String>() {
                        s.clone()
                    } else {
                        "unknown panic".to_owned()
                    };
                    // A gate whose `evaluate` panicked may panic in `name` too.
                    let name =
                        catch_unwind(AssertUnwindSafe(|| gate.name())).unwrap_or("<unnamed gate>");
                    denials.push(Denial::new(name, message).with_code(Denial::GATE_DEFECT));
                }
            }
        }
        denials
    }

    /// Number of gates.
    #[must_use]
    pub fn len(&self) -> usize {
        self.gates.len()
    }

    /// True when the set has no gate.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.gates.is_empty()
    }

    /// Gate names in push order.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.gates.iter().map(|g| g.name()).collect()
    }
}

impl<Ctx> Default for GateSet<Ctx> {
    fn default() -> Self {
        GateSet::new()
    }
}

impl<Ctx> fmt::Debug for GateSet<Ctx> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateSet")
            .field("gates", &self.names())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct MinBalance(i64, &'static str);
    impl Gate<i64> for MinBalance {
        fn name(&self) -> &'static str {
            self.1
        }
        fn evaluate(&self, ctx: &i64) -> Result<(), Denial> {
            if *ctx >= self.0 {
                Ok(())
            } else {
                Err(Denial::new(self.1, format!("{ctx} < {}", self.0)).with_code("LOW"))
            }
        }
        fn description(&self) -> &'static str {
            "balance floor"
        }
    }

    struct Counting(&'static AtomicUsize);
    impl Gate<i64> for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn evaluate(&self, _: &i64) -> Result<(), Denial> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    struct Panics(Box<dyn Fn() + Send + Sync>);
    impl Gate<i64> for Panics {
        fn name(&self) -> &'static str {
            "panics"
        }
        fn evaluate(&self, _: &i64) -> Result<(), Denial> {
            (self.0)();
            Ok(())
        }
    }

    #[test]
    fn empty_set_passes() {
        let gates = GateSet::<i64>::default();
        assert!(gates.is_empty());
        let r = gates.evaluate(&0, Proposal::new(7)).unwrap();
        assert_eq!(*r.payload(), 7);
        assert!(r.gates_passed().is_empty());
        assert!(gates.evaluate_all(&0).is_empty());
    }

    #[test]
    fn receipt_lists_gates_in_order() {
        let gates = GateSet::new()
            .with_gate(MinBalance(0, "a"))
            .with_gate(MinBalance(-5, "b"));
        assert_eq!(gates.len(), 2);
        assert_eq!(gates.names(), ["a", "b"]);
        let (payload, passed) = gates.evaluate(&1, Proposal::new("x")).unwrap().into_parts();
        assert_eq!(payload, "x");
        assert_eq!(passed, ["a", "b"]);
    }

    #[test]
    fn evaluate_is_fail_fast() {
        static HITS: AtomicUsize = AtomicUsize::new(0);
        let mut gates = GateSet::new();
        gates.push(MinBalance(10, "first"));
        gates.push(MinBalance(20, "second"));
        gates.push(Counting(&HITS));
        let d = gates.evaluate(&5, Proposal::new(())).unwrap_err();
        assert_eq!(d.gate, "first");
        assert_eq!(d.code, "LOW");
        assert_eq!(
            HITS.load(Ordering::SeqCst),
            0,
            "gates after a denial must not run"
        );
    }

    #[test]
    fn evaluate_all_runs_everything_and_catches_panics() {
        static HITS: AtomicUsize = AtomicUsize::new(0);
        let mut gates = GateSet::new();
        gates.push(MinBalance(10, "first"));
        gates.push(Panics(Box::new(|| panic!("static message"))));
        gates.push(Panics(Box::new(|| panic!("formatted {}", 42))));
        gates.push(Panics(Box::new(|| std::panic::panic_any(7u8))));
        gates.push(Counting(&HITS));
        gates.push(MinBalance(20, "second"));
        let denials = gates.evaluate_all(&5);
        assert_eq!(HITS.load(Ordering::SeqCst), 1);
        let summary: Vec<_> = denials
            .iter()
            .map(|d| (d.gate, d.code.as_str(), d.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("first", "LOW", "5 < 10"),
                ("panics", "GATE_DEFECT", "static message"),
                ("panics", "GATE_DEFECT", "formatted 42"),
                ("panics", "GATE_DEFECT", "unknown panic"),
                ("second", "LOW", "5 < 20"),
            ]
        );
    }

    #[test]
    #[should_panic(expected = "boom")]
    fn evaluate_does_not_catch_panics() {
        let gates = GateSet::new().with_gate(Panics(Box::new(|| panic!("boom"))));
        let _ = gates.evaluate(&0, Proposal::new(()));
    }

    #[test]
    fn boxed_arc_and_fn_gates() {
        let shared: Arc<dyn Gate<i64>> = Arc::new(MinBalance(0, "arc"));
        let boxed: Box<dyn Gate<i64>> = Box::new(MinBalance(1, "boxed"));
        let gates = GateSet::new()
            .with_gate(shared.clone())
            .with_gate(boxed)
            .with_gate(
                FnGate::new("even", |n: &i64| {
                    if n % 2 == 0 {
                        Ok(())
                    } else {
                        Err(Denial::new("even", "odd"))
                    }
                })
                .with_description("only even"),
            );
        assert_eq!(shared.description(), "balance floor");
        assert_eq!(gates.names(), ["arc", "boxed", "even"]);
        assert!(gates.evaluate(&2, Proposal::new(())).is_ok());
        assert_eq!(
            gates.evaluate(&3, Proposal::new(())).unwrap_err().gate,
            "even"
        );
        assert_eq!(
            format!("{gates:?}"),
            r#"GateSet { gates: ["arc", "boxed", "even"] }"#
        );
    }

    #[test]
    fn denial_builders_display_and_serialize() {
        let d = Denial::new("g", "no")
            .with_code("C")
            .with_context("k", "v")
            .with_context("k", "w");
        assert_eq!(d.to_string(), "[g] no");
        assert_eq!(
            d.context,
            [("k".into(), "v".into()), ("k".into(), "w".into())]
        );
        let err: &dyn std::error::Error = &d;
        assert!(err.source().is_none());
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"gate": "g", "code": "C", "message": "no", "context": [["k", "v"], ["k", "w"]]})
        );
        assert_eq!(Denial::new("g", "m").code, "");
    }

    #[test]
    fn gate_set_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<GateSet<i64>>();
        assert_send_sync::<Receipt<String>>();
        assert_send_sync::<Denial>();
    }
}
