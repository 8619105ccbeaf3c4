//! The per-entity hash chain (SPEC §3.2).
//!
//! `event_hash = blake3("batpak.event.v1" ‖ prev_hash ‖ u16 len ‖ entity ‖ u16 len ‖ scope
//! ‖ event_id ‖ correlation_id ‖ has_causation u8 ‖ causation_id ‖ kind ‖ clock
//! ‖ timestamp_us ‖ flags ‖ payload_len ‖ content_hash)`, integers little-endian.
//! The payload enters only through `content_hash`, so a redacted event (payload
//! removed, content hash kept) still verifies. A versioned payload (stored
//! version ≥ 2) appends `‖ u16 payload_version` (ADR 0027).

use super::record::EventRecord;

const DOMAIN: &[u8] = b"batpak.event.v1";

/// The hash of `rec` chained onto `prev_hash`. All zeros without the `blake3` feature.
/// `rec.prev_hash` and `rec.event_hash` are not read; `prev_hash` is the link to hash onto.
pub(crate) fn event_hash(prev_hash: &[u8; 32], rec: &EventRecord<'_>) -> [u8; 32] {
    #[cfg(feature = "blake3")]
    {
        let mut h = blake3::Hasher::new();
        h.update(DOMAIN);
        h.update(prev_hash);
        h.update(&(rec.entity.len() as u16).to_le_bytes());
        h.update(rec.entity.as_bytes());
        h.update(&(rec.scope.len() as u16).to_le_bytes());
        h.update(rec.scope.as_bytes());
        let mut fixed = [0u8; 16 + 16 + 1 + 16 + 2 + 4 + 8 + 1 + 4 + 32];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            fixed[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&rec.event_id.to_le_bytes());
        put(&rec.correlation_id.to_le_bytes());
        put(&[u8::from(rec.causation_id.is_some())]);
        put(&rec.causation_id.unwrap_or(0).to_le_bytes());
        put(&rec.kind.to_le_bytes());
        put(&rec.clock.to_le_bytes());
        put(&rec.timestamp_us.to_le_bytes());
        put(&[rec.flags]);
        put(&rec.payload_len.to_le_bytes());
        put(&rec.content_hash);
        h.update(&fixed);
        // Versioned payloads (ADR 0027): the version is hashed, so it cannot
        // be changed without breaking the chain; unversioned events (every
        // event written before versions existed) hash exactly as before.
        if rec.payload_version != 0 {
            h.update(&rec.payload_version.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }
    #[cfg(not(feature = "blake3"))]
    {
        let _ = (DOMAIN, prev_hash, rec);
        [0; 32]
    }
}

/// blake3 of the payload bytes. All zeros without the `blake3` feature.
pub(crate) fn content_hash(payload: &[u8]) -> [u8; 32] {
    #[cfg(feature = "blake3")]
    {
        *blake3::hash(payload).as_bytes()
    }
    #[cfg(not(feature = "blake3"))]
    {
        let _ = payload;
        [0; 32]
    }
}

#[cfg(all(test, feature = "blake3"))]
mod tests {
    use super::super::record::tests::sample;
    use super::*;

    #[test]
    fn hash_commits_to_history_and_metadata() {
        let base = sample(b"\xc0");
        let h = event_hash(&[0; 32], &base);
        assert_ne!(h, event_hash(&[1; 32], &base), "prev hash");
        let mut other = base.clone();
        other.clock += 1;
        assert_ne!(h, event_hash(&[0; 32], &other), "clock");
        let mut other = base.clone();
        other.scope = "tenant2";
        assert_ne!(h, event_hash(&[0; 32], &other), "scope");
        let mut other = base.clone();
        other.flags ^= 1;
        assert_ne!(h, event_hash(&[0; 32], &other), "flags");
        let mut other = base.clone();
        other.causation_id = None;
        assert_ne!(h, event_hash(&[0; 32], &other), "causation");
        // Entity/scope boundaries are length-prefixed: ("ab","c") != ("a","bc").
        let mut a = base.clone();
        a.entity = "ab";
        a.scope = "c";
        let mut b = base.clone();
        b.entity = "a";
        b.scope = "bc";
        assert_ne!(event_hash(&[0; 32], &a), event_hash(&[0; 32], &b));
        // The payload bytes count only through the content hash and length,
        // so a redacted copy with the same hash and size still verifies.
        let mut redacted = base.clone();
        redacted.payload = b"";
        redacted.redacted = true;
        assert_eq!(h, event_hash(&[0; 32], &redacted));
        let mut other = base.clone();
        other.content_hash[0] ^= 1;
        assert_ne!(h, event_hash(&[0; 32], &other), "content hash");
        // Version 0 (unversioned) hashes as before versions existed; any
        // other version is covered.
        let mut v2 = base.clone();
        v2.payload_version = 2;
        let mut v3 = base.clone();
        v3.payload_version = 3;
        assert_ne!(h, event_hash(&[0; 32], &v2), "version");
        assert_ne!(event_hash(&[0; 32], &v2), event_hash(&[0; 32], &v3));
    }
}
