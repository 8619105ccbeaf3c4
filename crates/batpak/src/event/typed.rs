//! Typed events and schema evolution: [`TypedEvent`] binds a Rust type to
//! its [`EventKind`] and payload version, [`Schema`] holds a store's
//! registered types and upcasters, [`TypedError`] says why a typed read or
//! a registration was refused.
//!
//! This module owns the rules (which kind belongs to which type, how an old
//! payload becomes today's shape); it never reads or writes a store. The
//! stores apply it on their read paths (ADRs 0026 and 0027).

use crate::event::{Event, EventKind, StoredEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// `#[derive(TypedEvent)]` (feature `derive`, on by default): see the
/// `batpak-macros` crate for its `#[batpak(...)]` keys.
#[cfg(feature = "derive")]
pub use batpak_macros::TypedEvent;

/// A Rust type that is the payload of one [`EventKind`], at one payload
/// version. Derive it with `#[derive(TypedEvent)]` from the
/// `batpak-macros` crate (re-exported by `batpak` with its default `derive`
/// feature), or implement it by hand:
///
/// ```
/// use batpak::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Deposited { cents: u64 }
///
/// impl TypedEvent for Deposited {
///     const KIND: EventKind = EventKind::custom(3, 1);
///     const VERSION: u16 = 1;
///     const NAME: &'static str = "Deposited";
/// }
///
/// # let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(StoreConfig::new(dir.path()))?;
/// let acct = Coordinate::new("acct:1", "bank")?;
/// let r = store.append_typed(&acct, &Deposited { cents: 250 })?;
/// assert_eq!(store.get_as::<Deposited>(r.event_id)?.event.payload.cents, 250);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait TypedEvent: Serialize + DeserializeOwned + 'static {
    /// The kind every event of this type is appended with.
    const KIND: EventKind;
    /// The payload version this type reads and writes (1 for the first
    /// shape). Older stored versions are upcast to it on read (see
    /// [`Schema::upcaster`]); newer ones are refused with
    /// [`TypedError::VersionTooNew`].
    const VERSION: u16 = 1;
    /// The type's name, for errors (two types claiming one kind).
    const NAME: &'static str;
}

/// One upcaster: the payload of version `n` in, the payload of version
/// `n + 1` out (or why it cannot be converted).
pub type Upcaster = fn(Value) -> Result<Value, String>;

/// Why a typed read, a typed append or a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// Two types claim one kind.
    #[error("kind {kind:?} is claimed by both {first} and {second}")]
    KindClaimedTwice {
        /// The kind.
        kind: EventKind,
        /// The type registered first.
        first: &'static str,
        /// The type refused.
        second: &'static str,
    },
    /// The stored event is of another kind than the type reads.
    #[error("event {event_id:032x} is of kind {found:?}, not {expected:?} ({type_name})")]
    KindMismatch {
        /// The event.
        event_id: u128,
        /// `T::KIND`.
        expected: EventKind,
        /// The stored (visible) kind.
        found: EventKind,
        /// `T::NAME`.
        type_name: &'static str,
    },
    /// The payload (after upcasting) does not decode as the type.
    #[error("event {event_id:032x} (payload version {version}) does not decode as {type_name}: {detail}")]
    ShapeMismatch {
        /// The event.
        event_id: u128,
        /// The version decoded (the type's, after upcasting).
        version: u16,
        /// `T::NAME`.
        type_name: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// The event was written by newer code: its payload version is above
    /// the one this code knows.
    #[error(
        "event {event_id:032x} has payload version {stored}, newer than {known} ({type_name})"
    )]
    VersionTooNew {
        /// The event.
        event_id: u128,
        /// Its stored version.
        stored: u16,
        /// The newest version this code reads.
        known: u16,
        /// The type (or the registered type of the kind).
        type_name: &'static str,
    },
    /// No upcaster from this version is registered.
    #[error("no upcaster for {type_name} from payload version {from} (event {event_id:032x})")]
    NoUpcaster {
        /// The event.
        event_id: u128,
        /// The version that has no way forward.
        from: u16,
        /// The type.
        type_name: &'static str,
    },
    /// An upcaster refused the payload.
    #[error("upcasting {type_name} from version {from} failed (event {event_id:032x}): {detail}")]
    UpcastFailed {
        /// The event.
        event_id: u128,
        /// The version the upcaster was given.
        from: u16,
        /// The type.
        type_name: &'static str,
        /// The upcaster's message.
        detail: String,
    },
    /// A registration that makes no sense (an upcaster from version 0, or
    /// from a version not below the type's).
    #[error("invalid registration for {type_name}: {detail}")]
    InvalidRegistration {
        /// The type.
        type_name: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The backend cannot store payload versions (or hold a schema).
    #[error("this backend does not support {0}")]
    Unsupported(&'static str),
}

/// A stored event with the version its payload was written at (1 for every
/// event appended without one, including all events written before
/// versions existed).
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedEvent {
    /// The event as stored (the payload in its stored shape).
    pub event: StoredEvent<Value>,
    /// Its payload version.
    pub payload_version: u16,
}

/// An event of an unversioned payload: version 1.
impl From<StoredEvent<Value>> for VersionedEvent {
    fn from(event: StoredEvent<Value>) -> Self {
        Self {
            event,
            payload_version: 1,
        }
    }
}

#[derive(Clone, Debug)]
struct Registered {
    name: &'static str,
    version: u16,
    /// `upcasters[v - 1]` turns version `v` into `v + 1`.
    upcasters: Vec<Option<Upcaster>>,
}

/// The typed events and upcasters a store knows: at most one type per
/// kind (a second claim is refused with both names), and per type the
/// upcasters `v1 -> v2 -> ... -> VERSION`. Cheap to clone.
///
/// ```
/// use batpak::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct A;
/// impl TypedEvent for A { const KIND: EventKind = EventKind::custom(4, 1); const NAME: &'static str = "A"; }
/// #[derive(Serialize, Deserialize)]
/// struct B;
/// impl TypedEvent for B { const KIND: EventKind = EventKind::custom(4, 1); const NAME: &'static str = "B"; }
///
/// let mut schema = Schema::new();
/// schema.register::<A>()?;
/// let err = schema.register::<B>().unwrap_err();
/// assert!(err.to_string().contains("A") && err.to_string().contains("B"));
/// # Ok::<(), TypedError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Schema {
    types: HashMap<EventKind, Registered>,
}

impl Schema {
    /// An empty schema.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `T` for `T::KIND`. Registering the same type again is a
    /// no-op.
    ///
    /// # Errors
    /// `KindClaimedTwice` when another type (or another version of it)
    /// holds the kind.
    pub fn register<T: TypedEvent>(&mut self) -> Result<&mut Self, TypedError> {
        self.entry::<T>()?;
        Ok(self)
    }

    /// Register `T` (if it is not yet) and the upcaster from payload
    /// version `from` to `from + 1`; `from` must be in `1..T::VERSION`.
    ///
    /// # Errors
    /// As [`Schema::register`]; `InvalidRegistration` for a `from` out of range.
    pub fn upcaster<T: TypedEvent>(
        &mut self,
        from: u16,
        upcaster: Upcaster,
    ) -> Result<&mut Self, TypedError> {
        if from == 0 || from >= T::VERSION {
            return Err(TypedError::InvalidRegistration {
                type_name: T::NAME,
                detail: format!(
                    "an upcaster from version {from}; {} is at version {}",
                    T::NAME,
                    T::VERSION
                ),
            });
        }
        let entry = self.entry::<T>()?;
        entry.upcasters[usize::from(from - 1)] = Some(upcaster);
        Ok(self)
    }

    fn entry<T: TypedEvent>(&mut self) -> Result<&mut Registered, TypedError> {
        let r = self.types.entry(T::KIND).or_insert_with(|| Registered {
            name: T::NAME,
            version: T::VERSION,
            upcasters: vec![None; usize::from(T::VERSION.saturating_sub(1))],
        });
        if r.name != T::NAME || r.version != T::VERSION {
            return Err(TypedError::KindClaimedTwice {
                kind: T::KIND,
                first: r.name,
                second: T::NAME,
            });
        }
        Ok(r)
    }

    /// The type name and version registered for `kind`.
    #[must_use]
    pub fn registered(&self, kind: EventKind) -> Option<(&'static str, u16)> {
        self.types.get(&kind).map(|r| (r.name, r.version))
    }

    /// Refuse `T` when another type holds its kind (reading with a type the
    /// schema does not know is allowed: nothing then needs upcasting).
    pub(crate) fn check<T: TypedEvent>(&self) -> Result<(), TypedError> {
        match self.types.get(&T::KIND) {
            Some(r) if r.name != T::NAME || r.version != T::VERSION => {
                Err(TypedError::KindClaimedTwice {
                    kind: T::KIND,
                    first: r.name,
                    second: T::NAME,
                })
            }
            _ => Ok(()),
        }
    }

    /// Bring `payload` (of `kind`, stored at `version`) to the version the
    /// schema registers for `kind`, running its upcasters in order. A kind
    /// nobody registered is returned as it is. Returns the payload and its
    /// version.
    ///
    /// # Errors
    /// `VersionTooNew`, `NoUpcaster`, `UpcastFailed`.
    pub fn upcast(
        &self,
        event_id: u128,
        kind: EventKind,
        version: u16,
        payload: Value,
    ) -> Result<(Value, u16), TypedError> {
        let Some(r) = self.types.get(&kind) else {
            return Ok((payload, version));
        };
        upcast_with(r, event_id, version, payload).map(|p| (p, r.version))
    }

    /// Decode a payload already read as a `Value` into `T` (the path of
    /// backends without a direct decoder, and of upcast payloads).
    ///
    /// # Errors
    /// `KindClaimedTwice`, `KindMismatch`, `VersionTooNew`, `NoUpcaster`,
    /// `UpcastFailed`, `ShapeMismatch`.
    pub fn decode<T: TypedEvent>(
        &self,
        versioned: VersionedEvent,
    ) -> Result<StoredEvent<T>, TypedError> {
        let VersionedEvent {
            event,
            payload_version,
        } = versioned;
        let id = event.event.header.event_id;
        self.admit::<T>(id, event.event.header.event_kind, payload_version)?;
        let payload = if payload_version < T::VERSION {
            self.upcast_to::<T>(id, payload_version, event.event.payload)?
        } else {
            event.event.payload
        };
        let decoded = serde_json::from_value::<T>(payload).map_err(|e| shape::<T>(id, e))?;
        Ok(StoredEvent {
            coordinate: event.coordinate,
            event: Event {
                header: event.event.header,
                payload: decoded,
                hash_chain: event.event.hash_chain,
            },
        })
    }

    /// The checks before decoding an event of `kind` at `version` as `T`.
    pub(crate) fn admit<T: TypedEvent>(
        &self,
        event_id: u128,
        kind: EventKind,
        version: u16,
    ) -> Result<(), TypedError> {
        self.check::<T>()?;
        if kind != T::KIND {
            return Err(TypedError::KindMismatch {
                event_id,
                expected: T::KIND,
                found: kind,
                type_name: T::NAME,
            });
        }
        if version > T::VERSION {
            return Err(TypedError::VersionTooNew {
                event_id,
                stored: version,
                known: T::VERSION,
                type_name: T::NAME,
            });
        }
        Ok(())
    }

    /// Run `T`'s upcasters from `version` up to `T::VERSION`.
    pub(crate) fn upcast_to<T: TypedEvent>(
        &self,
        event_id: u128,
        version: u16,
        payload: Value,
    ) -> Result<Value, TypedError> {
        let unregistered = Registered {
            name: T::NAME,
            version: T::VERSION,
            upcasters: Vec::new(),
        };
        let r = self.types.get(&T::KIND).unwrap_or(&unregistered);
        upcast_with(r, event_id, version, payload)
    }
}

fn upcast_with(
    r: &Registered,
    event_id: u128,
    version: u16,
    mut payload: Value,
) -> Result<Value, TypedError> {
    if version > r.version {
        return Err(TypedError::VersionTooNew {
            event_id,
            stored: version,
            known: r.version,
            type_name: r.name,
        });
    }
    for from in version.max(1)..r.version {
        let step = r
            .upcasters
            .get(usize::from(from - 1))
            .copied()
            .flatten()
            .ok_or(TypedError::NoUpcaster {
                event_id,
                from,
                type_name: r.name,
            })?;
        payload = step(payload).map_err(|detail| TypedError::UpcastFailed {
            event_id,
            from,
            type_name: r.name,
            detail,
        })?;
    }
    Ok(payload)
}

pub(crate) fn shape<T: TypedEvent>(event_id: u128, e: impl std::fmt::Display) -> TypedError {
    TypedError::ShapeMismatch {
        event_id,
        version: T::VERSION,
        type_name: T::NAME,
        detail: e.to_string(),
    }
}

impl Event<Value> {
    /// The payload decoded as `T` when this event is of `T::KIND` (in a
    /// projection, payloads are already upcast to the registered version);
    /// `None` for another kind or a payload that does not decode.
    #[must_use]
    pub fn payload_as<T: TypedEvent>(&self) -> Option<T> {
        if self.header.event_kind != T::KIND {
            return None;
        }
        T::deserialize(&self.payload).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Serialize, Deserialize)]
    struct V3 {
        name: String,
    }
    impl TypedEvent for V3 {
        const KIND: EventKind = EventKind::custom(5, 1);
        const VERSION: u16 = 3;
        const NAME: &'static str = "V3";
    }

    #[test]
    fn upcasters_run_in_order_and_gaps_are_typed_errors() {
        let mut s = Schema::new();
        s.upcaster::<V3>(1, |v| Ok(json!({ "n": v["n"].clone() })))
            .unwrap();
        assert_eq!(
            s.upcast(9, V3::KIND, 1, json!({"n": "x"})),
            Err(TypedError::NoUpcaster {
                event_id: 9,
                from: 2,
                type_name: "V3"
            })
        );
        s.upcaster::<V3>(2, |v| Ok(json!({ "name": v["n"].clone() })))
            .unwrap();
        let (v, version) = s.upcast(9, V3::KIND, 1, json!({"n": "x"})).unwrap();
        assert_eq!((v, version), (json!({"name": "x"}), 3));
        assert!(matches!(
            s.upcast(9, V3::KIND, 4, json!({})),
            Err(TypedError::VersionTooNew {
                stored: 4,
                known: 3,
                ..
            })
        ));
        assert!(s.upcaster::<V3>(3, Ok).is_err());
        assert!(s.upcaster::<V3>(0, Ok).is_err());
    }
}
