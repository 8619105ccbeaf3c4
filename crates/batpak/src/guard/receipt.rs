use std::fmt;

/// Private so that no code outside `guard` can name, and therefore build, the
/// seal that every [`Receipt`] carries.
mod seal {
    /// Proof of construction inside the crate.
    #[derive(Debug)]
    pub struct Token;
}

/// Proof that a payload passed every gate of a [`GateSet`](super::GateSet).
///
/// Only [`GateSet::evaluate`](super::GateSet::evaluate) (and so
/// [`Pipeline::evaluate`](crate::pipeline::Pipeline::evaluate)) can make one: the
/// constructor is crate-private and a field has a type from a private module, so
/// code outside batpak cannot forge a receipt (a compile-fail test checks this).
/// A receipt is not `Clone`, `Copy` or `Serialize`: it is spent once, by
/// [`Receipt::into_parts`] or [`Pipeline::commit`](crate::pipeline::Pipeline::commit).
#[must_use = "a receipt proves the gates passed; commit it or drop it deliberately"]
pub struct Receipt<T> {
    payload: T,
    gates_passed: Vec<&'static str>,
    _seal: seal::Token,
}

impl<T> Receipt<T> {
    /// Only the guard may vouch for a payload.
    pub(crate) fn new(payload: T, gates_passed: Vec<&'static str>) -> Self {
        Receipt {
            payload,
            gates_passed,
            _seal: seal::Token,
        }
    }

    /// The payload that passed.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// Names of the gates it passed, in evaluation order.
    pub fn gates_passed(&self) -> &[&'static str] {
        &self.gates_passed
    }

    /// Consumes the receipt, giving the payload and the gate names.
    pub fn into_parts(self) -> (T, Vec<&'static str>) {
        (self.payload, self.gates_passed)
    }
}

impl<T: fmt::Debug> fmt::Debug for Receipt<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt")
            .field("payload", &self.payload)
            .field("gates_passed", &self.gates_passed)
            .finish()
    }
}
