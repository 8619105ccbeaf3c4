//! `Outcome<T>`: a result type for workflows that may also be retried, wait, be
//! cancelled or fan out into a batch.
//!
//! This module owns [`Outcome`], its combinators, [`zip`], [`join_all`],
//! [`join_any`] and the plain-data types they carry ([`OutcomeError`],
//! [`ErrorKind`], [`WaitCondition`], [`CompensationAction`]). It is pure data and
//! functions: it never touches the store, never schedules a retry or a wait, and
//! never carries out a compensation; interpreting them is the application's job.
//!
//! Every combinator consumes `self`. `map`, `and_then`, `map_err`, `or_else`,
//! `inspect` and `inspect_err` recurse into [`Outcome::Batch`] (hence their
//! `Clone` bounds on the closure); `and_then` obeys the monad laws (checked by
//! property tests).
//!
//! ```
//! use batpak::outcome::{join_all, ErrorKind, Outcome, OutcomeError};
//!
//! let parsed: Outcome<u32> = Outcome::ok("42").and_then(|s| match s.parse() {
//!     Ok(n) => Outcome::ok(n),
//!     Err(_) => Outcome::err(OutcomeError::new(ErrorKind::Validation, "not a number")),
//! });
//! assert_eq!(parsed, Outcome::ok(42));
//! assert_eq!(join_all(vec![Outcome::ok(1), Outcome::ok(2)]), Outcome::ok(vec![1, 2]));
//! let json = serde_json::to_string(&Outcome::<u8>::cancelled("user")).unwrap();
//! assert_eq!(json, r#"{"type":"Cancelled","data":{"reason":"user"}}"#);
//! ```

mod combine;
mod error;
mod wait;

#[cfg(test)]
mod tests;

pub use combine::{join_all, join_any, zip};
pub use error::{ErrorKind, OutcomeError};
pub use wait::{CompensationAction, WaitCondition};

use serde::{Deserialize, Serialize};

/// The result of one step of a workflow.
///
/// Serialized adjacently tagged: `{"type": "<Variant>", "data": ...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
#[non_exhaustive]
pub enum Outcome<T> {
    /// Success.
    Ok(T),
    /// Failure.
    Err(OutcomeError),
    /// Try again later.
    Retry {
        /// How long to wait before the next attempt, in milliseconds.
        after_ms: u64,
        /// The attempt that produced this outcome (1-based by convention).
        attempt: u32,
        /// The attempt budget.
        max_attempts: u32,
        /// Why a retry is needed.
        reason: String,
    },
    /// Waiting for a condition.
    Pending {
        /// What it waits for.
        condition: WaitCondition,
        /// A token to resume with.
        #[serde(with = "crate::wire::u128_bytes")]
        resume_token: u128,
    },
    /// Stopped on purpose.
    Cancelled {
        /// Why.
        reason: String,
    },
    /// Several outcomes at once.
    Batch(Vec<Outcome<T>>),
}

/// An outcome taken apart: its value, its batch, or a variant without a `T`
/// already converted to `Outcome<U>`. Lets each combinator treat the `T`-free
/// variants once instead of repeating four arms.
enum Shape<T, U> {
    Value(T),
    Batch(Vec<Outcome<T>>),
    Other(Outcome<U>),
}

impl<T> Outcome<T> {
    /// `Ok(value)`.
    pub fn ok(value: T) -> Self {
        Outcome::Ok(value)
    }

    /// `Err(error)`.
    pub fn err(error: OutcomeError) -> Self {
        Outcome::Err(error)
    }

    /// `Cancelled { reason }`.
    pub fn cancelled(reason: impl Into<String>) -> Self {
        Outcome::Cancelled {
            reason: reason.into(),
        }
    }

    /// `Retry { .. }`.
    pub fn retry(
        after_ms: u64,
        attempt: u32,
        max_attempts: u32,
        reason: impl Into<String>,
    ) -> Self {
        Outcome::Retry {
            after_ms,
            attempt,
            max_attempts,
            reason: reason.into(),
        }
    }

    /// `Pending { condition, resume_token }`.
    pub fn pending(condition: WaitCondition, resume_token: u128) -> Self {
        Outcome::Pending {
            condition,
            resume_token,
        }
    }

    /// `Batch(outcomes)`.
    pub fn batch(outcomes: Vec<Outcome<T>>) -> Self {
        Outcome::Batch(outcomes)
    }

    /// True for `Ok`.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// True for `Err`.
    #[must_use]
    pub fn is_err(&self) -> bool {
        matches!(self, Outcome::Err(_))
    }

    /// True for `Retry`.
    #[must_use]
    pub fn is_retry(&self) -> bool {
        matches!(self, Outcome::Retry { .. })
    }

    /// True for `Pending`.
    #[must_use]
    pub fn is_pending(&self) -> bool {
        matches!(self, Outcome::Pending { .. })
    }

    /// True for `Cancelled`.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Outcome::Cancelled { .. })
    }

    /// True for `Batch`.
    #[must_use]
    pub fn is_batch(&self) -> bool {
        matches!(self, Outcome::Batch(_))
    }

    /// True for the final states: `Ok`, `Err` and `Cancelled`.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Outcome::Ok(_) | Outcome::Err(_) | Outcome::Cancelled { .. }
        )
    }

    fn shape<U>(self) -> Shape<T, U> {
        match self {
            Outcome::Ok(v) => Shape::Value(v),
            Outcome::Batch(items) => Shape::Batch(items),
            Outcome::Err(e) => Shape::Other(Outcome::Err(e)),
            Outcome::Retry {
                after_ms,
                attempt,
                max_attempts,
                reason,
            } => Shape::Other(Outcome::Retry {
                after_ms,
                attempt,
                max_attempts,
                reason,
            }),
            Outcome::Pending {
                condition,
                resume_token,
            } => Shape::Other(Outcome::Pending {
                condition,
                resume_token,
            }),
            Outcome::Cancelled { reason } => Shape::Other(Outcome::Cancelled { reason }),
        }
    }

    /// Transforms the `Ok` value (also inside batches); other variants pass through.
    pub fn map<U, F: FnOnce(T) -> U + Clone>(self, f: F) -> Outcome<U> {
        match self.shape() {
            Shape::Value(v) => Outcome::Ok(f(v)),
            Shape::Batch(items) => {
                Outcome::Batch(items.into_iter().map(|o| o.map(f.clone())).collect())
            }
            Shape::Other(o) => o,
        }
    }

    /// Monadic bind: feeds the `Ok` value (also inside batches) to `f`.
    pub fn and_then<U, F: FnOnce(T) -> Outcome<U> + Clone>(self, f: F) -> Outcome<U> {
        match self.shape() {
            Shape::Value(v) => f(v),
            Shape::Batch(items) => {
                Outcome::Batch(items.into_iter().map(|o| o.and_then(f.clone())).collect())
            }
            Shape::Other(o) => o,
        }
    }

    /// Transforms the error (also inside batches).
    #[must_use]
    pub fn map_err<F: FnOnce(OutcomeError) -> OutcomeError + Clone>(self, f: F) -> Self {
        match self {
            Outcome::Err(e) => Outcome::Err(f(e)),
            Outcome::Batch(items) => {
                Outcome::Batch(items.into_iter().map(|o| o.map_err(f.clone())).collect())
            }
            other => other,
        }
    }

    /// Recovers from `Err` (also inside batches); `Retry`, `Pending` and
    /// `Cancelled` are left alone.
    #[must_use]
    pub fn or_else<F: FnOnce(OutcomeError) -> Outcome<T> + Clone>(self, f: F) -> Self {
        match self {
            Outcome::Err(e) => f(e),
            Outcome::Batch(items) => {
                Outcome::Batch(items.into_iter().map(|o| o.or_else(f.clone())).collect())
            }
            other => other,
        }
    }

    /// Calls `f` on the `Ok` value (also inside batches) and returns `self`.
    #[must_use]
    pub fn inspect<F: FnOnce(&T) + Clone>(self, f: F) -> Self {
        match self {
            Outcome::Ok(v) => {
                f(&v);
                Outcome::Ok(v)
            }
            Outcome::Batch(items) => {
                Outcome::Batch(items.into_iter().map(|o| o.inspect(f.clone())).collect())
            }
            other => other,
        }
    }

    /// Calls `f` on the error (also inside batches) and returns `self`.
    #[must_use]
    pub fn inspect_err<F: FnOnce(&OutcomeError) + Clone>(self, f: F) -> Self {
        match self {
            Outcome::Err(e) => {
                f(&e);
                Outcome::Err(e)
            }
            Outcome::Batch(items) => Outcome::Batch(
                items
                    .into_iter()
                    .map(|o| o.inspect_err(f.clone()))
                    .collect(),
            ),
            other => other,
        }
    }

    /// Applies `f` to an `Ok` value for which `pred` holds.
    ///
    /// Unlike the other combinators this is shallow: in a `Batch` it looks at
    /// the direct `Ok` children only and leaves nested batches alone.
    #[must_use]
    pub fn and_then_if<F, G>(self, pred: F, f: G) -> Self
    where
        F: Fn(&T) -> bool,
        G: FnOnce(T) -> Outcome<T> + Clone,
    {
        match self {
            Outcome::Ok(v) if pred(&v) => f(v),
            Outcome::Batch(items) => Outcome::Batch(
                items
                    .into_iter()
                    .map(|o| match o {
                        Outcome::Ok(v) if pred(&v) => f.clone()(v),
                        other => other,
                    })
                    .collect(),
            ),
            other => other,
        }
    }

    /// `Ok` → `Ok`, `Err` → `Err`, `Cancelled` → an `Internal` error
    /// `"cancelled: {reason}"`, anything else → an `Internal` error
    /// `"outcome is not terminal"`.
    ///
    /// # Errors
    /// Every variant but `Ok`, as described.
    pub fn into_result(self) -> Result<T, OutcomeError> {
        match self {
            Outcome::Ok(v) => Ok(v),
            Outcome::Err(e) => Err(e),
            Outcome::Cancelled { reason } => {
                Err(OutcomeError::internal(format!("cancelled: {reason}")))
            }
            _ => Err(OutcomeError::internal("outcome is not terminal")),
        }
    }

    /// The `Ok` value, else `default`.
    pub fn unwrap_or(self, default: T) -> T {
        match self {
            Outcome::Ok(v) => v,
            _ => default,
        }
    }

    /// The `Ok` value, else `f()`.
    pub fn unwrap_or_else<F: FnOnce() -> T>(self, f: F) -> T {
        match self {
            Outcome::Ok(v) => v,
            _ => f(),
        }
    }
}

impl<T> Outcome<Outcome<T>> {
    /// Removes one level of nesting; the same as `and_then(|inner| inner)`.
    pub fn flatten(self) -> Outcome<T> {
        self.and_then(|inner| inner)
    }
}

impl<T> From<Result<T, OutcomeError>> for Outcome<T> {
    fn from(r: Result<T, OutcomeError>) -> Self {
        match r {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err(e),
        }
    }
}
