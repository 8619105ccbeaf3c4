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
    /// This call's durability; `None` (the default): the store's
    /// (`sync.every_n_events`). See [`Durability`].
    pub durability: Option<Durability>,
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
    /// Override the store's durability for this call (see [`Durability`]).
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }
}

/// When one append call's receipt comes, beside the store-wide default
/// (`sync.every_n_events`: 1 is durable, more is relaxed), as other
/// embedded databases offer per transaction (ADR 0030).
///
/// - `Durable`: the receipt comes after the event is on stable storage,
///   even in a relaxed store. It shares its fsync with every other append
///   waiting at the time (group commit), and the fsync covers every event
///   written before it.
/// - `Relaxed`: the receipt comes once the event has been handed to the
///   operating system (it survives a crash of the process, not a power
///   loss), even in a durable store. In a durable store it stays invisible
///   to readers (including the caller's own `get`) until a sync covers it,
///   which the store starts at once in the background: a reader never sees
///   an event a power loss can take (SPEC §5). [`crate::store::Store::sync`]
///   waits for it.
///
/// A batch is one commit: it is durable if any item asks for `Durable`,
/// else relaxed if any asks for `Relaxed`, else the store's default
/// ([`Durability::strongest`]).
///
/// ```
/// use batpak::prelude::*;
/// # let dir = tempfile::tempdir().unwrap();
/// // A relaxed store: most receipts come before the fsync...
/// let store = Store::open(StoreConfig::new(dir.path()).with_sync_every_n_events(100))?;
/// let coord = Coordinate::new("account:1", "bank")?;
/// store.append(&coord, EventKind::custom(1, 1), &"viewed")?;
/// // ...but this one only once it is on stable storage.
/// let opts = AppendOptions::new().with_durability(Durability::Durable);
/// store.append_with_options(&coord, EventKind::custom(1, 2), &"paid", opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Durability {
    /// Receipt after the fsync.
    Durable,
    /// Receipt after the write to the operating system.
    Relaxed,
}

impl Durability {
    /// The durability of one commit made of several requests: `Durable` if
    /// any asks for it, else `Relaxed` if any asks for it, else `None` (the
    /// store's default).
    pub fn strongest(requests: impl IntoIterator<Item = Option<Durability>>) -> Option<Durability> {
        let mut strongest = None;
        for request in requests.into_iter().flatten() {
            match request {
                Durability::Durable => return Some(Durability::Durable),
                Durability::Relaxed => strongest = Some(Durability::Relaxed),
            }
        }
        strongest
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
