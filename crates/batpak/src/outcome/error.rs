use super::CompensationAction;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Broad class of an [`OutcomeError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Something looked up does not exist.
    NotFound,
    /// A concurrent change won (for example a failed compare-and-swap).
    Conflict,
    /// The input is malformed or breaks a rule.
    Validation,
    /// A policy (a gate) refused the operation.
    PolicyRejection,
    /// The storage layer failed.
    StorageError,
    /// A deadline passed.
    Timeout,
    /// Encoding or decoding failed.
    Serialization,
    /// A bug or an impossible state.
    Internal,
    /// An application-defined kind; in none of the three groups below.
    Custom(u16),
}

impl ErrorKind {
    /// Worth retrying unchanged: `StorageError` or `Timeout`.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(self, ErrorKind::StorageError | ErrorKind::Timeout)
    }

    /// About the request itself: `NotFound`, `Conflict`, `Validation` or `PolicyRejection`.
    #[must_use]
    pub const fn is_domain(&self) -> bool {
        matches!(
            self,
            ErrorKind::NotFound
                | ErrorKind::Conflict
                | ErrorKind::Validation
                | ErrorKind::PolicyRejection
        )
    }

    /// About the machinery: `StorageError`, `Timeout`, `Serialization` or `Internal`.
    #[must_use]
    pub const fn is_operational(&self) -> bool {
        matches!(
            self,
            ErrorKind::StorageError
                | ErrorKind::Timeout
                | ErrorKind::Serialization
                | ErrorKind::Internal
        )
    }
}

/// The error inside [`Outcome::Err`](super::Outcome::Err): plain data for
/// application code; the store never produces one.
///
/// ```
/// use batpak::outcome::{ErrorKind, OutcomeError};
/// let e = OutcomeError::new(ErrorKind::Timeout, "payment provider did not answer");
/// assert!(e.retryable);
/// assert_eq!(e.to_string(), "[Timeout] payment provider did not answer");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeError {
    /// The class of error.
    pub kind: ErrorKind,
    /// A human-readable explanation.
    pub message: String,
    /// What should be undone or signalled because of it, if anything.
    pub compensation: Option<CompensationAction>,
    /// Whether the caller may retry.
    pub retryable: bool,
}

impl OutcomeError {
    /// An error of `kind` with no compensation; `retryable` follows
    /// [`ErrorKind::is_retryable`].
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        OutcomeError {
            kind,
            message: message.into(),
            compensation: None,
            retryable: kind.is_retryable(),
        }
    }

    /// Attaches a compensation action.
    #[must_use]
    pub fn with_compensation(mut self, action: CompensationAction) -> Self {
        self.compensation = Some(action);
        self
    }

    /// Overrides whether the error is retryable.
    #[must_use]
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The `Internal`, non-retryable error the library builds itself
    /// (`into_result` on a non-terminal outcome, `join_any` of nothing).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        OutcomeError::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for OutcomeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:?}] {}", self.kind, self.message)
    }
}

impl std::error::Error for OutcomeError {}
