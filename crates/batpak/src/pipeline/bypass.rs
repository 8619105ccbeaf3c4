//! The documented escape hatch around the gates.
//!
//! A bypass needs a `&'static dyn BypassReason`, so every reason is a named,
//! reviewable value in the source code rather than an ad-hoc string.
//! `Store::append_bypassed` writes the event together with an audit record
//! of the bypass (see `Store::bypasses`).

use std::fmt;

/// Why a write may skip the gates (for example a data migration or an operator
/// override). Implement it on a unit struct and pass a `&'static` reference.
///
/// ```
/// use batpak::pipeline::{BypassReason, Pipeline, Proposal};
/// struct Migration;
/// impl BypassReason for Migration {
///     fn name(&self) -> &'static str { "migration_v2" }
///     fn justification(&self) -> &'static str { "replaying pre-validated legacy data" }
/// }
/// let receipt = Pipeline::<()>::bypass(Proposal::new(42), &Migration);
/// assert_eq!(receipt.reason(), "migration_v2");
/// assert_eq!(receipt.into_payload(), 42);
/// ```
pub trait BypassReason: Send + Sync {
    /// A stable identifier for the reason.
    fn name(&self) -> &'static str;
    /// Why skipping the gates is acceptable here.
    fn justification(&self) -> &'static str;
}

/// Proof that a payload skipped the gates, and why.
///
/// Made only by [`Pipeline::bypass`](super::Pipeline::bypass); consumed by
/// [`Pipeline::commit_bypass`](super::Pipeline::commit_bypass) or
/// [`BypassReceipt::into_payload`].
#[must_use = "a bypass receipt should be committed or dropped deliberately"]
pub struct BypassReceipt<T> {
    pub(crate) payload: T,
    pub(crate) reason: &'static str,
    pub(crate) justification: &'static str,
}

impl<T> BypassReceipt<T> {
    /// The payload.
    pub fn payload(&self) -> &T {
        &self.payload
    }

    /// The [`BypassReason::name`] given.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The [`BypassReason::justification`] given.
    pub fn justification(&self) -> &'static str {
        self.justification
    }

    /// Consumes the receipt, giving the payload.
    pub fn into_payload(self) -> T {
        self.payload
    }
}

impl<T: fmt::Debug> fmt::Debug for BypassReceipt<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BypassReceipt")
            .field("payload", &self.payload)
            .field("reason", &self.reason)
            .field("justification", &self.justification)
            .finish()
    }
}
