//! Identifiers: [`generate_v7_id`] for event ids, and typed id wrappers made
//! with [`define_entity_id!`](crate::define_entity_id) (such as [`EventId`]).
//!
//! The public API speaks raw `u128`; these wrappers are a convenience for
//! application code and never appear in the store's signatures.

use std::fmt::{Debug, Display};
use std::hash::Hash;
use std::str::FromStr;

/// A fresh UUIDv7 as a `u128`: 48 bits of Unix milliseconds, then random bits,
/// so ids sort by creation time.
#[must_use]
pub fn generate_v7_id() -> u128 {
    uuid::Uuid::now_v7().as_u128()
}

/// `id` with its lowest 32 bits replaced by `slot`: how a store marks an
/// event id it generated with the event's place in its index, so a lookup
/// by id can read that place first (ADR 0037).
///
/// The bits replaced are random padding in a UUIDv7 from
/// [`generate_v7_id`]: the version, the variant, the millisecond time and
/// the 42-bit counter that orders and separates ids made in one process all
/// lie above them, so the result is still a UUIDv7, in the same order
/// among ids of one process as before.
#[must_use]
pub(crate) const fn with_slot_hint(id: u128, slot: u32) -> u128 {
    (id & !(u32::MAX as u128)) | slot as u128
}

/// The place in the index an id names, if the store generated it (see
/// [`with_slot_hint`]); for any other id, a number that the caller must
/// check and will almost never find confirmed.
#[must_use]
pub(crate) const fn slot_hint(id: u128) -> u32 {
    id as u32
}

/// A typed wrapper around a `u128` id, displayed as `"{ENTITY_NAME}:{32 hex digits}"`.
pub trait EntityIdType:
    Copy + Clone + Eq + Hash + Debug + Display + FromStr + Send + Sync + 'static
{
    /// The display prefix, such as `"event"`.
    const ENTITY_NAME: &'static str;
    /// Wrap a raw id.
    fn new(id: u128) -> Self;
    /// The raw id.
    fn as_u128(&self) -> u128;
    /// A fresh UUIDv7.
    fn now_v7() -> Self {
        Self::new(generate_v7_id())
    }
    /// The all-zero id.
    fn nil() -> Self {
        Self::new(0)
    }
}

/// Define a typed id: `define_entity_id!(OrderId, "order")` makes a `u128`
/// newtype implementing [`EntityIdType`], `Display` (`order:0000…`) and
/// `FromStr` (accepting `order:<hex>` or bare hex).
///
/// ```
/// use batpak::id::EntityIdType;
/// batpak::define_entity_id!(OrderId, "order");
/// let id = OrderId::new(0xab);
/// assert_eq!(id.to_string(), "order:000000000000000000000000000000ab");
/// assert_eq!("order:ab".parse::<OrderId>().unwrap(), id);
/// assert_eq!("ab".parse::<OrderId>().unwrap(), id);
/// assert!("user:ab".parse::<OrderId>().is_err());
/// ```
#[macro_export]
macro_rules! define_entity_id {
    ($name:ident, $entity:literal) => {
        /// A typed id (see `batpak::id::EntityIdType`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u128);

        impl $crate::id::EntityIdType for $name {
            const ENTITY_NAME: &'static str = $entity;
            fn new(id: u128) -> Self {
                Self(id)
            }
            fn as_u128(&self) -> u128 {
                self.0
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}:{:032x}", $entity, self.0)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let hex = match s.split_once(':') {
                    Some((prefix, hex)) if prefix == $entity => hex,
                    Some((prefix, _)) => {
                        return Err(format!("expected prefix {:?}, found {:?}", $entity, prefix))
                    }
                    None => s,
                };
                u128::from_str_radix(hex, 16)
                    .map(Self)
                    .map_err(|e| format!("invalid {} id {:?}: {}", $entity, s, e))
            }
        }
    };
}

define_entity_id!(EventId, "event");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_ids_are_time_ordered_and_versioned() {
        let a = generate_v7_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = generate_v7_id();
        assert!(b > a);
        assert_eq!((a >> 76) & 0xF, 7, "version nibble");
    }

    #[test]
    fn event_id_round_trip() {
        let id = EventId::now_v7();
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        assert_eq!(EventId::nil().as_u128(), 0);
        assert_eq!(<EventId as EntityIdType>::ENTITY_NAME, "event");
    }
}
