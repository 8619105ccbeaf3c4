use crate::coordinate::DagPosition;
use crate::event::EventKind;
use serde::{Deserialize, Serialize};

/// Flag: the consumer should acknowledge this event. Carried, not acted on.
pub const FLAG_REQUIRES_ACK: u8 = 0x01;
/// Flag: the event is part of a transaction. Carried, not acted on.
pub const FLAG_TRANSACTIONAL: u8 = 0x02;
/// Flag: the event is a replay of an earlier one. Carried, not acted on.
pub const FLAG_REPLAY: u8 = 0x08;
/// Flag: the event was committed past the policy gates with a bypass
/// (`Store::append_bypassed`); its audit record is a child event of kind
/// `EventKind::EFFECT_BYPASS`.
pub const FLAG_BYPASS: u8 = 0x10;

/// Metadata of an event. The store fills every field at append time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct EventHeader {
    /// UUIDv7 (or the idempotency key when one was given).
    #[serde(with = "crate::wire::u128_bytes")]
    pub event_id: u128,
    /// Root of the causal tree this event belongs to.
    #[serde(with = "crate::wire::u128_bytes")]
    pub correlation_id: u128,
    /// The event that directly caused this one.
    #[serde(with = "crate::wire::option_u128_bytes")]
    pub causation_id: Option<u128>,
    /// Microseconds since the Unix epoch, from the store's clock.
    pub timestamp_us: i64,
    /// Entity clock (`position.sequence`) and hybrid logical time.
    pub position: DagPosition,
    /// Size of the stored payload in bytes.
    pub payload_size: u32,
    /// What happened.
    pub event_kind: EventKind,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// blake3 of the stored payload bytes.
    #[serde(default)]
    pub content_hash: [u8; 32],
}

impl EventHeader {
    /// Flag: the consumer should acknowledge this event.
    pub const FLAG_REQUIRES_ACK: u8 = FLAG_REQUIRES_ACK;
    /// Flag: the event is part of a transaction.
    pub const FLAG_TRANSACTIONAL: u8 = FLAG_TRANSACTIONAL;
    /// Flag: the event is a replay.
    pub const FLAG_REPLAY: u8 = FLAG_REPLAY;
    /// Flag: the event bypassed the policy gates.
    pub const FLAG_BYPASS: u8 = FLAG_BYPASS;

    /// A header with no flags and an all-zero content hash.
    #[must_use]
    pub fn new(
        event_id: u128,
        correlation_id: u128,
        causation_id: Option<u128>,
        timestamp_us: i64,
        position: DagPosition,
        payload_size: u32,
        event_kind: EventKind,
    ) -> Self {
        Self {
            event_id,
            correlation_id,
            causation_id,
            timestamp_us,
            position,
            payload_size,
            event_kind,
            flags: 0,
            content_hash: [0; 32],
        }
    }

    /// Replace the flags.
    #[must_use]
    pub fn with_flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    /// `FLAG_REQUIRES_ACK` is set.
    #[must_use]
    pub fn requires_ack(&self) -> bool {
        self.flags & FLAG_REQUIRES_ACK != 0
    }

    /// `FLAG_TRANSACTIONAL` is set.
    #[must_use]
    pub fn is_transactional(&self) -> bool {
        self.flags & FLAG_TRANSACTIONAL != 0
    }

    /// `FLAG_REPLAY` is set.
    #[must_use]
    pub fn is_replay(&self) -> bool {
        self.flags & FLAG_REPLAY != 0
    }

    /// `FLAG_BYPASS` is set.
    #[must_use]
    pub fn is_bypass(&self) -> bool {
        self.flags & FLAG_BYPASS != 0
    }

    /// Microseconds between the event and `now_us`; 0 if the event is in the future.
    #[must_use]
    pub fn age_us(&self, now_us: i64) -> u64 {
        u64::try_from(now_us.saturating_sub(self.timestamp_us)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_age() {
        let h = EventHeader::new(1, 1, None, 100, DagPosition::root(), 0, EventKind::DATA)
            .with_flags(FLAG_REQUIRES_ACK | FLAG_REPLAY);
        assert!(h.requires_ack() && h.is_replay() && !h.is_transactional());
        assert_eq!(h.age_us(150), 50);
        assert_eq!(h.age_us(50), 0);
        assert_eq!(h.age_us(i64::MIN), 0);
    }

    #[test]
    fn serde_round_trip() {
        let h = EventHeader::new(
            u128::MAX,
            7,
            Some(9),
            -5,
            DagPosition::child(3),
            12,
            EventKind::DATA,
        );
        let back: EventHeader = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
