use serde::{Deserialize, Serialize};
use std::fmt;

/// What happened, as a 16-bit code: the top 4 bits are the category, the low
/// 12 bits the type within it.
///
/// Category 0 is reserved for the store (`SYSTEM_*`, `TOMBSTONE`); category 0xD
/// holds effects (`EFFECT_*`). Applications use [`EventKind::custom`] with any
/// other category.
///
/// ```
/// use batpak::prelude::*;
/// const ORDER_PLACED: EventKind = EventKind::custom(2, 1);
/// assert_eq!(ORDER_PLACED.category(), 2);
/// assert_eq!(ORDER_PLACED.type_id(), 1);
/// assert!(EventKind::try_custom(0, 1).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventKind(u16);

/// Why [`EventKind::try_custom`] refused a category or type id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventKindError {
    /// Category 0 (system) and 0xD (effects) are not for custom kinds; above 15 does not fit.
    #[error("category {0:#x} is reserved or out of range (use 1..=15 except 0xD)")]
    Category(u8),
    /// Type ids have 12 bits.
    #[error("type id {0:#x} does not fit in 12 bits")]
    TypeId(u16),
}

impl EventKind {
    /// Plain application data (category 1, type 0).
    pub const DATA: EventKind = EventKind(0x1000);
    /// System: store initialised.
    pub const SYSTEM_INIT: EventKind = EventKind(0x0001);
    /// System: shutdown.
    pub const SYSTEM_SHUTDOWN: EventKind = EventKind(0x0002);
    /// System: heartbeat.
    pub const SYSTEM_HEARTBEAT: EventKind = EventKind(0x0003);
    /// System: configuration change.
    pub const SYSTEM_CONFIG_CHANGE: EventKind = EventKind(0x0004);
    /// System: checkpoint.
    pub const SYSTEM_CHECKPOINT: EventKind = EventKind(0x0005);
    /// System: batch begin marker.
    pub const SYSTEM_BATCH_BEGIN: EventKind = EventKind(0x0006);
    /// System: batch commit marker.
    pub const SYSTEM_BATCH_COMMIT: EventKind = EventKind(0x0007);
    /// Effect: an error occurred.
    pub const EFFECT_ERROR: EventKind = EventKind(0xD001);
    /// Effect: retry requested.
    pub const EFFECT_RETRY: EventKind = EventKind(0xD002);
    /// Effect: acknowledgement.
    pub const EFFECT_ACK: EventKind = EventKind(0xD004);
    /// Effect: back-pressure signal.
    pub const EFFECT_BACKPRESSURE: EventKind = EventKind(0xD005);
    /// Effect: cancellation.
    pub const EFFECT_CANCEL: EventKind = EventKind(0xD006);
    /// Effect: conflict.
    pub const EFFECT_CONFLICT: EventKind = EventKind(0xD007);
    /// Effect: the audit record of an event committed with a gate bypass
    /// (written by `Store::append_bypassed`).
    pub const EFFECT_BYPASS: EventKind = EventKind(0xD008);
    /// A redacted event (payload removed by tombstone compaction).
    pub const TOMBSTONE: EventKind = EventKind(0x0FFE);

    /// An application kind. Panics (at compile time in a `const`) when the
    /// category is 0, 0xD or above 15, or the type id needs more than 12 bits;
    /// see [`EventKind::try_custom`] for the fallible form.
    #[must_use]
    pub const fn custom(category: u8, type_id: u16) -> Self {
        match Self::try_custom(category, type_id) {
            Ok(k) => k,
            Err(EventKindError::Category(_)) => {
                panic!("EventKind::custom: category must be 1..=15 and not 0xD")
            }
            Err(EventKindError::TypeId(_)) => panic!("EventKind::custom: type_id must be <= 0xFFF"),
        }
    }

    /// An application kind, or why the parts are not allowed.
    ///
    /// # Errors
    /// [`EventKindError`] for a reserved or oversized category, or a type id above 0xFFF.
    pub const fn try_custom(category: u8, type_id: u16) -> Result<Self, EventKindError> {
        if category == 0 || category == 0xD || category > 0xF {
            return Err(EventKindError::Category(category));
        }
        if type_id > 0x0FFF {
            return Err(EventKindError::TypeId(type_id));
        }
        Ok(EventKind(((category as u16) << 12) | type_id))
    }

    /// The kind with this raw 16-bit code (any value; the store refuses
    /// reserved kinds at append time).
    #[must_use]
    pub const fn from_raw(raw: u16) -> Self {
        EventKind(raw)
    }

    /// The raw 16-bit code.
    #[must_use]
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// Top four bits.
    #[must_use]
    pub const fn category(self) -> u8 {
        (self.0 >> 12) as u8
    }

    /// Low twelve bits.
    #[must_use]
    pub const fn type_id(self) -> u16 {
        self.0 & 0x0FFF
    }

    /// Category 0: reserved for the store.
    #[must_use]
    pub const fn is_system(self) -> bool {
        self.category() == 0
    }

    /// Category 0xD: effects.
    #[must_use]
    pub const fn is_effect(self) -> bool {
        self.category() == 0xD
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_kinds() {
        let k = EventKind::custom(0xF, 0xFFF);
        assert_eq!(k.raw(), 0xFFFF);
        assert_eq!((k.category(), k.type_id()), (0xF, 0xFFF));
        assert_eq!(
            EventKind::try_custom(0, 1),
            Err(EventKindError::Category(0))
        );
        assert_eq!(
            EventKind::try_custom(0xD, 1),
            Err(EventKindError::Category(0xD))
        );
        assert_eq!(
            EventKind::try_custom(16, 1),
            Err(EventKindError::Category(16))
        );
        assert_eq!(
            EventKind::try_custom(1, 0x1000),
            Err(EventKindError::TypeId(0x1000))
        );
        assert_eq!(EventKind::DATA.to_string(), "0x1000");
        assert!(EventKind::TOMBSTONE.is_system() && EventKind::SYSTEM_INIT.is_system());
        assert!(EventKind::EFFECT_ACK.is_effect() && !EventKind::DATA.is_system());
    }

    #[test]
    #[should_panic(expected = "category")]
    fn custom_panics_on_reserved_category() {
        let _ = EventKind::custom(0, 1);
    }

    #[test]
    #[should_panic(expected = "type_id")]
    fn custom_panics_instead_of_truncating() {
        let _ = EventKind::custom(1, 0x1FFF);
    }
}
