use serde::{Deserialize, Serialize};

/// A link in an entity's hash chain: the previous event's `event_hash` and
/// this event's own hash. The first event of an entity has an all-zero `prev_hash`.
///
/// `event_hash` commits to `prev_hash`, the coordinate and every header field
/// (ids, kind, clock, timestamp, flags, content hash), not only the payload;
/// see `Store::verify` for the check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashChain {
    /// Hash of the previous event of the same entity (zeros for the first).
    pub prev_hash: [u8; 32],
    /// Hash of this event.
    pub event_hash: [u8; 32],
}

/// blake3 of `content_bytes`.
#[cfg(feature = "blake3")]
#[must_use]
pub fn compute_hash(content_bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(content_bytes).as_bytes()
}
