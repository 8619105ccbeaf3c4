use crate::coordinate::Coordinate;
use crate::event::EventKind;
use crate::store::index::DiskPos;
use crate::store::StoreError;
use serde::Serialize;

/// Options for `Store::append_with_options`: optimistic concurrency,
/// idempotency, causal links and flags.
///
/// ```
/// use batpak::prelude::*;
/// let opts = AppendOptions::new().with_cas(3).with_idempotency(42).with_flags(0x01);
/// assert_eq!(opts.expected_sequence, Some(3));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendOptions {
    /// Succeed only if the entity's newest event has this clock.
    pub expected_sequence: Option<u32>,
    /// Succeed only if the entity has no event yet.
    pub expect_empty: bool,
    /// Becomes the event id; a retry with the same key returns the first receipt.
    pub idempotency_key: Option<u128>,
    /// Correlation id (default: the event's own id).
    pub correlation_id: Option<u128>,
    /// Causation id (default: none).
    pub causation_id: Option<u128>,
    /// `FLAG_*` bits carried in the header.
    pub flags: u8,
}

impl AppendOptions {
    /// No conditions, no key, no links.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
    /// Require the entity's newest clock to be `seq` (an empty entity fails).
    #[must_use]
    pub fn with_cas(mut self, seq: u32) -> Self {
        self.expected_sequence = Some(seq);
        self.expect_empty = false;
        self
    }
    /// Require the entity to have no events.
    #[must_use]
    pub fn with_cas_empty(mut self) -> Self {
        self.expect_empty = true;
        self.expected_sequence = None;
        self
    }
    /// Use `key` as the event id and make retries idempotent.
    #[must_use]
    pub fn with_idempotency(mut self, key: u128) -> Self {
        self.idempotency_key = Some(key);
        self
    }
    /// Set header flags.
    #[must_use]
    pub fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }
    /// Set the correlation id.
    #[must_use]
    pub fn with_correlation(mut self, id: u128) -> Self {
        self.correlation_id = Some(id);
        self
    }
    /// Set the causation id.
    #[must_use]
    pub fn with_causation(mut self, id: u128) -> Self {
        self.causation_id = Some(id);
        self
    }
}

/// Proof of an append: the event id, its global sequence and where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendReceipt {
    /// Event id.
    pub event_id: u128,
    /// Global sequence.
    pub sequence: u64,
    /// Location of the frame. All zero for a retried key whose event was
    /// removed by compaction (the id and sequence are still the original ones).
    pub disk_pos: DiskPos,
}

/// Where a batch item's causation points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CausationRef {
    /// Use `options.causation_id` (or, in a reaction batch, the batch's causation).
    #[default]
    None,
    /// This event id.
    Absolute(u128),
    /// The event of an earlier item of the same batch.
    PriorItem(usize),
}

/// One event of an atomic batch.
#[derive(Clone, Debug)]
pub struct BatchAppendItem {
    /// Coordinate.
    pub coord: Coordinate,
    /// Kind.
    pub kind: EventKind,
    /// The payload, encoded exactly as a single append encodes it
    /// (build items with [`BatchAppendItem::new`]).
    pub payload_bytes: Vec<u8>,
    /// CAS, idempotency, correlation, causation and flags of this item.
    pub options: AppendOptions,
    /// Causation reference.
    pub causation: CausationRef,
}

impl BatchAppendItem {
    /// Encode `payload` like a single append would.
    ///
    /// # Errors
    /// [`StoreError::Serialization`] when `serde_json::to_value(payload)` fails.
    pub fn new(
        coord: Coordinate,
        kind: EventKind,
        payload: &impl Serialize,
        options: AppendOptions,
        causation: CausationRef,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            coord,
            kind,
            payload_bytes: super::encode_payload(payload)?,
            options,
            causation,
        })
    }
}
