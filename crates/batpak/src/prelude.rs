//! The everyday names: `use batpak::prelude::*;`.

pub use crate::coordinate::{Coordinate, CoordinateError, DagPosition, KindFilter, Region};
pub use crate::event::{
    Event, EventHeader, EventKind, EventSourced, HashChain, Reactive, Schema, StoredEvent,
    TypedError, TypedEvent, VersionedEvent,
};
pub use crate::guard::{Denial, Gate, GateSet, Receipt};
pub use crate::id::EventId;
pub use crate::outcome::{ErrorKind, Outcome, OutcomeError};
pub use crate::pipeline::{Committed, Pipeline, Proposal};
pub use crate::store::{
    AppendOptions, AppendReceipt, BatchAppendItem, BatchConfig, BatchStage, CausationRef, Closed,
    CompactionConfig, CompactionStrategy, Cursor, DiskPos, Durability, EventCursor, EventFeed,
    EventStore, Freshness, IndexConfig, IndexEntry, IndexLayout, NoCache, Notification, Open,
    RestartPolicy, Store, StoreConfig, StoreError, Subscription, SubscriptionOps, SyncConfig,
    SyncMode, WriterConfig,
};
