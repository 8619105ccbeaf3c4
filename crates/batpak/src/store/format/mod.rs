//! The on-disk format, defined here and nowhere else (also in `docs/format.md`).
//!
//! Every multi-byte integer is little-endian unless noted. Ids are 16 bytes
//! little-endian `u128`.
//!
//! ## Segment file `NNNNNNNNNNNNNNNNNNNN.seg` (20-digit decimal segment id)
//!
//! ```text
//! offset size  field
//!  0      8    magic "BATPAKSG"
//!  8      2    format version (FORMAT_VERSION = 1)
//! 10      2    header length (64)
//! 12      4    flags (0)
//! 16      8    segment id (equals the file name's number)
//! 24      8    created, microseconds since the Unix epoch (i64)
//! 32     28    reserved, zero
//! 60      4    CRC-32 (IEEE) of bytes 0..60
//! 64      ...  frames, back to back; then zero fill up to the file length
//! ```
//!
//! The writer preallocates segments in chunks, so a file may end in zeros
//! after its last frame. Recovery treats an all-zero remainder as a clean end.
//!
//! ## Frame
//!
//! ```text
//!  0  4  marker 0xA1F77CBA (bytes BA 7C F7 A1): lets a scan resynchronise after damage
//!  4  4  body length N (at most MAX_BODY_LEN)
//!  8  4  CRC-32 (IEEE) over bytes 4..8 (the length) followed by the N body bytes
//! 12  N  body; its first byte is the record type
//! ```
//!
//! ## Event record (record type 1), the body of an event frame
//!
//! ```text
//!   0  1  record type = 1
//!   1  1  event flags (FLAG_*)
//!   2  2  event kind
//!   4  2  entity length E (1..=1024)
//!   6  2  scope length S (1..=1024)
//!   8  4  entity clock
//!  12  4  payload length P
//!  16  8  global sequence
//!  24  8  timestamp, µs since the Unix epoch (i64)
//!  32  2  HLC counter (events of the entity in the same millisecond)
//!  34  1  link flags: bit 0 = has causation id; bit 1 = redacted (the
//!           payload was removed by compaction: P keeps its original length
//!           but no payload bytes follow); other bits zero
//!  35  1  reserved, zero
//!  36  4  batch size (0 = not part of a batch)
//!  40  4  index of this event within its batch
//!  44  4  reserved, zero
//!  48 16  event id
//!  64 16  correlation id
//!  80 16  causation id (zero when absent)
//!  96 32  previous event hash of the same entity (zero for its first event)
//! 128 32  event hash (see `chain`)
//! 160 32  content hash: blake3 of the payload bytes
//! 192  E  entity, UTF-8
//!      S  scope, UTF-8
//!      P  payload: the event's `serde_json::Value` as MessagePack (see `payload`);
//!         absent (zero bytes) in a redacted record
//! ```
//!
//! Every decoder here validates lengths against the bytes it was given before
//! slicing or allocating, and reports damage as [`FormatError`]; none panics.

pub(crate) mod chain;
pub(crate) mod checkpoint;
pub(crate) mod footer;
pub(crate) mod frame;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod intent;
pub(crate) mod payload;
pub(crate) mod payload_de;
pub(crate) mod payload_ser;
mod payload_shapes;
pub(crate) mod record;
pub(crate) mod removed;
pub(crate) mod scan;
pub(crate) mod segment;

/// Record type of an event frame (first byte of its body).
pub(crate) const RECORD_EVENT: u8 = 1;
/// Record type of a segment footer frame.
pub(crate) const RECORD_FOOTER: u8 = 2;

/// Version written into every segment header. Bump it for any change to the
/// bytes described above, and teach the decoders the old version or refuse it.
pub(crate) const FORMAT_VERSION: u16 = 1;

/// Damage found while decoding bytes read from disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FormatError {
    #[error("{what}: need {need} bytes, have {have}")]
    Short {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("bad {0} magic")]
    BadMagic(&'static str),
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    #[error("{0} checksum mismatch")]
    Checksum(&'static str),
    #[error("invalid {field}: {detail}")]
    Invalid { field: &'static str, detail: String },
}

impl FormatError {
    pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        FormatError::Invalid {
            field,
            detail: detail.into(),
        }
    }
}

/// Little-endian field readers over a slice whose length was checked up front.
pub(crate) mod le {
    #[inline]
    pub(crate) fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }
    #[inline]
    pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(a)
    }
    #[inline]
    pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    }
    #[inline]
    pub(crate) fn u128_at(b: &[u8], at: usize) -> u128 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        u128::from_le_bytes(a)
    }
    #[inline]
    pub(crate) fn arr32_at(b: &[u8], at: usize) -> [u8; 32] {
        let mut a = [0u8; 32];
        a.copy_from_slice(&b[at..at + 32]);
        a
    }
}
