use serde::{Deserialize, Serialize};

/// What a [`Outcome::Pending`](super::Outcome::Pending) is waiting for.
///
/// Plain data: nothing in the library interprets it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WaitCondition {
    /// A wall-clock time, in milliseconds since the Unix epoch.
    Timeout {
        /// When to resume.
        resume_at_ms: u64,
    },
    /// Another event.
    Event {
        /// The event's id.
        #[serde(with = "crate::wire::u128_bytes")]
        event_id: u128,
    },
    /// Every one of these.
    All(Vec<WaitCondition>),
    /// At least one of these.
    Any(Vec<WaitCondition>),
    /// An application-defined condition.
    Custom {
        /// Application tag.
        tag: u16,
        /// Opaque data.
        data: Vec<u8>,
    },
}

/// What to do to make up for a failure.
///
/// Plain data: nothing in the library carries it out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CompensationAction {
    /// Undo these events (by appending compensating events).
    Rollback {
        /// Events to undo.
        #[serde(with = "crate::wire::vec_u128_bytes")]
        event_ids: Vec<u128>,
    },
    /// Tell someone.
    Notify {
        /// Whom to notify.
        #[serde(with = "crate::wire::u128_bytes")]
        target_id: u128,
        /// What to say.
        message: String,
    },
    /// Release held resources.
    Release {
        /// Resources to release.
        #[serde(with = "crate::wire::vec_u128_bytes")]
        resource_ids: Vec<u128>,
    },
    /// An application-defined action.
    Custom {
        /// Application name for the action.
        action_type: String,
        /// Opaque data.
        data: Vec<u8>,
    },
}
