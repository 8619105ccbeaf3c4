//! What an event is: [`EventKind`], [`EventHeader`], the payload wrapper
//! [`Event`], [`StoredEvent`] (an event with its coordinate), the [`HashChain`]
//! link, and the [`EventSourced`] / [`Reactive`] traits.
//!
//! Plain data only: how events are encoded on disk belongs to `store::format`.

/// The per-entity hash chain link and the content hash.
pub mod hash;
/// The event header and its flag constants.
pub mod header;
mod kind;
/// Folding events into state and reacting to them.
pub mod sourcing;
pub mod typed;

#[cfg(feature = "blake3")]
pub use hash::compute_hash;
pub use hash::HashChain;
pub use header::{EventHeader, FLAG_BYPASS, FLAG_REPLAY, FLAG_REQUIRES_ACK, FLAG_TRANSACTIONAL};
pub use kind::{EventKind, EventKindError};
pub use sourcing::{EventSourced, Reactive};
pub use typed::{Schema, TypedError, TypedEvent, Upcaster, VersionedEvent};

use crate::coordinate::{Coordinate, DagPosition};
use serde::{Deserialize, Serialize};

/// An event: header, payload and (for stored events) its hash-chain link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event<P> {
    /// Metadata.
    pub header: EventHeader,
    /// The application's data.
    pub payload: P,
    /// The chain link; `Some` for every event read from a store.
    pub hash_chain: Option<HashChain>,
}

impl<P> Event<P> {
    /// An event without a chain link.
    pub fn new(header: EventHeader, payload: P) -> Self {
        Self {
            header,
            payload,
            hash_chain: None,
        }
    }

    /// Attach a chain link.
    #[must_use]
    pub fn with_hash_chain(mut self, chain: HashChain) -> Self {
        self.hash_chain = Some(chain);
        self
    }

    /// The event id.
    pub fn event_id(&self) -> u128 {
        self.header.event_id
    }

    /// The kind.
    pub fn event_kind(&self) -> EventKind {
        self.header.event_kind
    }

    /// The position (entity clock in `sequence`).
    pub fn position(&self) -> &DagPosition {
        &self.header.position
    }

    /// True without a chain link or when `prev_hash` is all zeros (first of its entity).
    pub fn is_genesis(&self) -> bool {
        self.hash_chain
            .as_ref()
            .is_none_or(|c| c.prev_hash == [0; 32])
    }

    /// Transform the payload, keeping header and chain.
    pub fn map_payload<U, F: FnOnce(P) -> U>(self, f: F) -> Event<U> {
        Event {
            header: self.header,
            payload: f(self.payload),
            hash_chain: self.hash_chain,
        }
    }
}

/// An event together with the coordinate it was appended at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent<P> {
    /// Where the event lives.
    pub coordinate: Coordinate,
    /// The event.
    pub event: Event<P>,
}
