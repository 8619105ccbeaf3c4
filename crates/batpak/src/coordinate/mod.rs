//! Where an event lives: [`Coordinate`] (entity and scope), the [`Region`]
//! predicate shared by queries, cursors and subscriptions, and [`DagPosition`].
//!
//! This module owns validation of coordinate strings. It knows nothing about
//! storage: the store interns coordinates itself and only calls [`Coordinate::new`]
//! (or the unchecked internal constructor for strings it has already validated).

mod dag;
pub(crate) mod interned;
mod region;

pub use dag::DagPosition;
pub use region::{KindFilter, Region};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// Longest entity or scope accepted, in bytes.
pub const MAX_COORDINATE_COMPONENT_LEN: usize = 1024;

/// Why a coordinate string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinateError {
    /// The entity is the empty string.
    #[error("entity cannot be empty")]
    EmptyEntity,
    /// The scope is the empty string.
    #[error("scope cannot be empty")]
    EmptyScope,
    /// The entity is longer than [`MAX_COORDINATE_COMPONENT_LEN`] bytes.
    #[error("entity length {len} exceeds maximum {max}")]
    EntityTooLong {
        /// Length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The scope is longer than [`MAX_COORDINATE_COMPONENT_LEN`] bytes.
    #[error("scope length {len} exceeds maximum {max}")]
    ScopeTooLong {
        /// Length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The entity contains NUL or another control character.
    #[error("entity contains a control character at byte {at}")]
    EntityControlChar {
        /// Byte offset of the offending character.
        at: usize,
    },
    /// The scope contains NUL or another control character.
    #[error("scope contains a control character at byte {at}")]
    ScopeControlChar {
        /// Byte offset of the offending character.
        at: usize,
    },
}

/// The address of an event stream: `entity` is the stream key (`"order:42"`),
/// `scope` the isolation boundary (`"tenant:acme"`).
///
/// ```
/// use batpak::prelude::*;
/// let c = Coordinate::new("order:42", "tenant:acme")?;
/// assert_eq!(c.to_string(), "order:42@tenant:acme");
/// assert!(Coordinate::new("", "s").is_err());
/// # Ok::<(), CoordinateError>(())
/// ```
#[derive(Clone)]
pub struct Coordinate {
    names: Names,
}

/// Where a coordinate's strings live.
#[derive(Clone)]
enum Names {
    /// Interned by a store's index for the life of the process (see
    /// `interned`): what every coordinate a store hands out holds, so
    /// copying one touches no reference count.
    Interned(&'static interned::Names),
    /// Built by [`Coordinate::new`] (or deserialized): owned, shared by clones.
    Owned(Arc<(Box<str>, Box<str>)>),
}

fn first_control_char(s: &str) -> Option<usize> {
    s.char_indices()
        .find(|(_, c)| c.is_control())
        .map(|(i, _)| i)
}

impl Coordinate {
    /// Validate and build a coordinate. Checks, in order: empty entity, empty
    /// scope, entity length, scope length, control characters.
    ///
    /// # Errors
    /// A [`CoordinateError`] naming the first rule broken.
    pub fn new(entity: impl AsRef<str>, scope: impl AsRef<str>) -> Result<Self, CoordinateError> {
        let (entity, scope) = (entity.as_ref(), scope.as_ref());
        validate(entity, scope)?;
        Ok(Self {
            names: Names::Owned(Arc::new((Box::from(entity), Box::from(scope)))),
        })
    }

    /// A coordinate of names interned by an index (which validated them).
    pub(crate) fn from_interned(names: &'static interned::Names) -> Self {
        Self {
            names: Names::Interned(names),
        }
    }

    /// The entity (stream key).
    #[must_use]
    pub fn entity(&self) -> &str {
        match &self.names {
            Names::Interned(n) => n.entity,
            Names::Owned(n) => &n.0,
        }
    }

    /// The scope (isolation boundary).
    #[must_use]
    pub fn scope(&self) -> &str {
        match &self.names {
            Names::Interned(n) => n.scope,
            Names::Owned(n) => &n.1,
        }
    }
}

impl PartialEq for Coordinate {
    fn eq(&self, other: &Self) -> bool {
        if let (Names::Interned(a), Names::Interned(b)) = (&self.names, &other.names) {
            if std::ptr::eq(*a, *b) {
                return true;
            }
        }
        self.entity() == other.entity() && self.scope() == other.scope()
    }
}

impl Eq for Coordinate {}

impl std::hash::Hash for Coordinate {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.entity().hash(state);
        self.scope().hash(state);
    }
}

impl fmt::Debug for Coordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coordinate")
            .field("entity", &self.entity())
            .field("scope", &self.scope())
            .finish()
    }
}

/// The validation rules of [`Coordinate::new`], usable on borrowed strings
/// (the store re-validates coordinates it reads back from disk).
pub(crate) fn validate(entity: &str, scope: &str) -> Result<(), CoordinateError> {
    let max = MAX_COORDINATE_COMPONENT_LEN;
    if entity.is_empty() {
        return Err(CoordinateError::EmptyEntity);
    }
    if scope.is_empty() {
        return Err(CoordinateError::EmptyScope);
    }
    if entity.len() > max {
        return Err(CoordinateError::EntityTooLong {
            len: entity.len(),
            max,
        });
    }
    if scope.len() > max {
        return Err(CoordinateError::ScopeTooLong {
            len: scope.len(),
            max,
        });
    }
    if let Some(at) = first_control_char(entity) {
        return Err(CoordinateError::EntityControlChar { at });
    }
    if let Some(at) = first_control_char(scope) {
        return Err(CoordinateError::ScopeControlChar { at });
    }
    Ok(())
}

impl fmt::Display for Coordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.entity(), self.scope())
    }
}

#[derive(Serialize, Deserialize)]
struct CoordinateRepr<'a> {
    #[serde(borrow)]
    entity: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    scope: std::borrow::Cow<'a, str>,
}

impl Serialize for Coordinate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        CoordinateRepr {
            entity: std::borrow::Cow::Borrowed(self.entity()),
            scope: std::borrow::Cow::Borrowed(self.scope()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Coordinate {
    /// Deserializing validates exactly like [`Coordinate::new`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = CoordinateRepr::deserialize(d)?;
        Coordinate::new(repr.entity, repr.scope).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_order_and_limits() {
        assert_eq!(Coordinate::new("", ""), Err(CoordinateError::EmptyEntity));
        assert_eq!(Coordinate::new("e", ""), Err(CoordinateError::EmptyScope));
        let long = "x".repeat(1025);
        assert_eq!(
            Coordinate::new(&long, &long),
            Err(CoordinateError::EntityTooLong {
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(
            Coordinate::new("e", &long),
            Err(CoordinateError::ScopeTooLong {
                len: 1025,
                max: 1024
            })
        );
        assert!(Coordinate::new("x".repeat(1024), "s").is_ok());
        assert_eq!(
            Coordinate::new("a\0b", "s"),
            Err(CoordinateError::EntityControlChar { at: 1 })
        );
        assert_eq!(
            Coordinate::new("a", "s\n"),
            Err(CoordinateError::ScopeControlChar { at: 1 })
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let c = Coordinate::new("order:1", "tenant").unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, r#"{"entity":"order:1","scope":"tenant"}"#);
        assert_eq!(serde_json::from_str::<Coordinate>(&json).unwrap(), c);
        assert!(serde_json::from_str::<Coordinate>(r#"{"entity":"","scope":"t"}"#).is_err());
    }

    /// A coordinate a store hands out (interned) and one built with `new`
    /// are the same value: equal, with equal hashes, and printed alike.
    #[test]
    fn interned_and_owned_coordinates_are_the_same_value() {
        use std::hash::{BuildHasher, RandomState};
        let owned = Coordinate::new("order:7", "tenant:a").unwrap();
        let pair = interned::intern_pair(interned::intern("order:7"), interned::intern("tenant:a"));
        let shared = Coordinate::from_interned(pair);
        assert_eq!(owned, shared);
        assert_eq!(shared, owned.clone());
        let h = RandomState::new();
        assert_eq!(h.hash_one(&owned), h.hash_one(&shared));
        assert_eq!(format!("{owned:?}"), format!("{shared:?}"));
        assert_eq!(shared.to_string(), "order:7@tenant:a");
        assert_eq!(
            serde_json::to_string(&shared).unwrap(),
            serde_json::to_string(&owned).unwrap()
        );
        let other = Coordinate::from_interned(interned::intern_pair(
            interned::intern("order:7"),
            interned::intern("tenant:b"),
        ));
        assert_ne!(shared, other);
        assert_ne!(owned, other);
        // A clone of a store's coordinate copies a pointer: no count to touch.
        assert!(std::mem::size_of::<Coordinate>() <= 16);
    }

    #[test]
    fn display_is_entity_at_scope() {
        assert_eq!(Coordinate::new("a", "b").unwrap().to_string(), "a@b");
    }
}
