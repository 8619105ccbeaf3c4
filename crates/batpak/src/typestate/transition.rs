//! [`Transition`]: a typed (kind, payload) pair for one state change.

use crate::event::EventKind;
use std::fmt;
use std::marker::PhantomData;

/// The event that records a move from state `From` to state `To`, carrying
/// payload `P`.
///
/// `From` and `To` are only markers: there are no trait bounds on them, and the
/// store does not track which state an entity is in. The type system guards a
/// transition only where application code builds it, typically in a method on
/// `Thing<From>` that returns `(Thing<To>, Transition<From, To, P>)`; see
/// [the module docs](crate::typestate).
pub struct Transition<From, To, P> {
    kind: EventKind,
    payload: P,
    // fn() -> X: a marker that neither owns an X (no drop-check or auto-trait
    // effects) nor constrains variance beyond what the states need.
    _from: PhantomData<fn() -> From>,
    _to: PhantomData<fn() -> To>,
}

impl<From, To, P> Transition<From, To, P> {
    /// A transition recorded as an event of `kind` with `payload`.
    pub fn new(kind: EventKind, payload: P) -> Self {
        Transition {
            kind,
            payload,
            _from: PhantomData,
            _to: PhantomData,
        }
    }

    /// The event kind.
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The payload.
    pub fn payload(&self) -> &P {
        &self.payload
    }

    /// Consumes the transition, giving the payload.
    pub fn into_payload(self) -> P {
        self.payload
    }
}

impl<From, To, P: Clone> Clone for Transition<From, To, P> {
    fn clone(&self) -> Self {
        Transition::new(self.kind, self.payload.clone())
    }
}

impl<From, To, P: PartialEq> PartialEq for Transition<From, To, P> {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.payload == other.payload
    }
}

impl<From, To, P: Eq> Eq for Transition<From, To, P> {}

impl<From, To, P: fmt::Debug> fmt::Debug for Transition<From, To, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transition")
            .field("from", &std::any::type_name::<From>())
            .field("to", &std::any::type_name::<To>())
            .field("kind", &self.kind)
            .field("payload", &self.payload)
            .finish()
    }
}
