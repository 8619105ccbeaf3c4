use crate::coordinate::Coordinate;
use crate::event::{Event, EventKind};

/// A value rebuilt by folding an entity's events (see `Store::project`).
pub trait EventSourced<P>: Sized {
    /// Build the value from the entity's relevant events, oldest first;
    /// `None` when there is nothing to build from.
    fn from_events(events: &[Event<P>]) -> Option<Self>;
    /// Fold one more event into the value.
    fn apply_event(&mut self, event: &Event<P>);
    /// The kinds this projection reads; an empty slice means every kind.
    fn relevant_event_kinds() -> &'static [EventKind];
    /// Bump when the serialized form changes, so cached values are ignored.
    fn schema_version() -> u64 {
        0
    }
    /// Whether `apply_event` on a cached value gives the same result as a full
    /// rebuild, so the store may replay only new events.
    fn supports_incremental_apply() -> bool {
        false
    }
}

/// Turns an event into follow-up events (see `Store::react_loop`), each
/// appended as a reaction caused by the trigger.
pub trait Reactive<P> {
    /// The events to append in response to `event`.
    fn react(&self, event: &Event<P>) -> Vec<(Coordinate, EventKind, P)>;
}
