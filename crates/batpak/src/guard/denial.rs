use serde::Serialize;
use std::fmt;

/// Why a [`Gate`](super::Gate) refused a proposal.
///
/// A denial is a value handed back to the caller; the library never writes one
/// to the log (keeping an audit trail of refusals is the application's call).
///
/// ```
/// use batpak::guard::Denial;
/// let d = Denial::new("credit_limit", "order exceeds limit")
///     .with_code("OVER_LIMIT")
///     .with_context("limit", "100")
///     .with_context("requested", "250");
/// assert_eq!(d.to_string(), "[credit_limit] order exceeds limit");
/// assert_eq!(d.context.len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// The refusing gate's [`name`](super::Gate::name).
    pub gate: &'static str,
    /// A machine-readable code; empty unless set with [`Denial::with_code`].
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// Ordered key/value details (kept as a list so that order and repeats survive).
    pub context: Vec<(String, String)>,
}

impl Denial {
    /// The code [`GateSet::evaluate_all`](super::GateSet::evaluate_all) gives a
    /// gate that panicked.
    pub const GATE_DEFECT: &'static str = "GATE_DEFECT";

    /// A denial from `gate` with an empty code and no context.
    pub fn new(gate: &'static str, message: impl Into<String>) -> Self {
        Denial {
            gate,
            code: String::new(),
            message: message.into(),
            context: Vec::new(),
        }
    }

    /// Sets the machine-readable code.
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = code.into();
        self
    }

    /// Appends one key/value pair to the context.
    #[must_use]
    pub fn with_context(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.context.push((key.into(), value.into()));
        self
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.gate, self.message)
    }
}

impl std::error::Error for Denial {}
