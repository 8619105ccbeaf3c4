// A `Receipt` is proof that a payload passed the gates: only
// `GateSet::evaluate` may create one, and it cannot be duplicated.
use batpak::guard::{GateSet, Receipt};
use batpak::pipeline::Proposal;

fn main() {
    // The constructor is crate-private.
    let _forged: Receipt<u32> = Receipt::new(42, vec!["fake_gate"]);

    // So are the fields (one of them has a type from a private module).
    let _literal = Receipt {
        payload: 42u32,
        gates_passed: Vec::new(),
    };

    // A genuine receipt cannot be cloned to commit twice.
    let gates: GateSet<()> = GateSet::new();
    let real = gates.evaluate(&(), Proposal::new(1u32)).unwrap();
    let _copy: Receipt<u32> = real.clone();
}
