//! Entry points to the on-disk decoders for the fuzz crate (`fuzz/` in the
//! workspace), compiled only with the `fuzzing` feature and hidden from the
//! documentation: not part of batpak's API, no stability promise.
//!
//! Owns nothing: every function forwards to the decoder or encoder of this
//! format module that it names, and wrappers only hide the crate-private
//! types. It must not add behaviour, or the fuzz targets would test the
//! wrapper instead of the decoder. The properties themselves (no panic,
//! bounded allocation, clear errors, re-encoding) live in the fuzz crate.

use super::{checkpoint, footer, frame, intent, payload, record, removed, segment};
use super::{FormatError, RECORD_FOOTER};

/// A decoder's error, reduced to what a fuzz property checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// `(need, have)` of a "too short" error.
    pub short: Option<(usize, usize)>,
    /// Byte position a payload error names, if any.
    pub at: Option<usize>,
    /// Trailing bytes a payload error counts, if any.
    pub trailing: Option<usize>,
    /// The error's text.
    pub message: String,
}

impl From<FormatError> for DecodeError {
    fn from(e: FormatError) -> Self {
        let short = match e {
            FormatError::Short { need, have, .. } => Some((need, have)),
            _ => None,
        };
        DecodeError {
            short,
            at: None,
            trailing: None,
            message: e.to_string(),
        }
    }
}

impl From<payload::PayloadError> for DecodeError {
    fn from(e: payload::PayloadError) -> Self {
        use payload::PayloadError as P;
        let (at, trailing) = match e {
            P::Truncated(at)
            | P::UnsupportedTag { at, .. }
            | P::InvalidUtf8(at)
            | P::NonStringKey(at)
            | P::NonFiniteFloat(at) => (Some(at), None),
            P::TrailingBytes(n) => (None, Some(n)),
            P::TooDeep => (None, None),
        };
        DecodeError {
            short: None,
            at,
            trailing,
            message: e.to_string(),
        }
    }
}

/// Frame header length, marker, and the record type of a footer frame.
pub const FRAME_HEADER_LEN: usize = frame::FRAME_HEADER_LEN;
/// The 4-byte marker that starts every frame.
pub const FRAME_MARKER: u32 = frame::FRAME_MARKER;
/// First body byte of a footer frame.
pub const RECORD_FOOTER_TYPE: u8 = RECORD_FOOTER;
/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: usize = segment::SEGMENT_HEADER_LEN;
/// Offset of the causation id in an event record body.
pub const CAUSATION_ID_OFFSET: usize = record::off::CAUSATION_ID;
/// Deepest payload nesting accepted.
pub const PAYLOAD_MAX_DEPTH: usize = payload::MAX_DEPTH;

/// `frame::decode_frame`: the body and the frame's total length.
pub fn decode_frame(buf: &[u8]) -> Result<(&[u8], usize), DecodeError> {
    frame::decode_frame(buf).map_err(DecodeError::from)
}

/// What `frame::probe` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe<'a> {
    /// A whole frame with a good checksum.
    Frame {
        /// Its body.
        body: &'a [u8],
        /// The frame's total length.
        len: usize,
    },
    /// Only zeros to the end.
    End,
    /// Not a valid frame.
    Damaged(DecodeError),
}

/// `frame::probe`.
pub fn probe(buf: &[u8], pos: usize) -> Probe<'_> {
    match frame::probe(buf, pos) {
        frame::Probe::Frame { body, len } => Probe::Frame { body, len },
        frame::Probe::End => Probe::End,
        frame::Probe::Damaged(e) => Probe::Damaged(e.into()),
    }
}

/// `frame::next_valid_frame`.
pub fn next_valid_frame(buf: &[u8], from: usize) -> Option<usize> {
    frame::next_valid_frame(buf, from)
}

/// `frame::seal_frame`: fill in marker, length and checksum.
pub fn seal_frame(frame_bytes: &mut [u8]) {
    frame::seal_frame(frame_bytes)
}

/// `frame::frame_crc`.
pub fn frame_crc(body_len: u32, body: &[u8]) -> u32 {
    frame::frame_crc(body_len, body)
}

/// A decoded event record (`record::decode_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord<'a>(record::EventRecord<'a>);

impl EventRecord<'_> {
    /// The record re-encoded as a whole frame.
    pub fn to_frame(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.0.frame_len()];
        self.0.write_frame(&mut v);
        v
    }
    /// Length of its frame.
    pub fn frame_len(&self) -> usize {
        self.0.frame_len()
    }
    /// Whether the payload was removed.
    pub fn redacted(&self) -> bool {
        self.0.redacted
    }
    /// The payload bytes (empty when redacted).
    pub fn payload(&self) -> &[u8] {
        self.0.payload
    }
    /// The payload length the record claims.
    pub fn payload_len(&self) -> u32 {
        self.0.payload_len
    }
    /// Whether it has a causation id.
    pub fn has_causation(&self) -> bool {
        self.0.causation_id.is_some()
    }
}

/// `record::decode_event` over an event frame's body.
pub fn decode_event(body: &[u8]) -> Result<EventRecord<'_>, DecodeError> {
    record::decode_event(body)
        .map(EventRecord)
        .map_err(DecodeError::from)
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader(segment::SegmentHeader);

impl SegmentHeader {
    /// A header for `segment_id`, created at `created_us`.
    pub fn new(segment_id: u64, created_us: i64) -> Self {
        SegmentHeader(segment::SegmentHeader {
            segment_id,
            created_us,
        })
    }
    /// `segment::SegmentHeader::encode`.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode().to_vec()
    }
}

/// `segment::SegmentHeader::decode`.
pub fn decode_segment_header(b: &[u8]) -> Result<SegmentHeader, DecodeError> {
    segment::SegmentHeader::decode(b)
        .map(SegmentHeader)
        .map_err(DecodeError::from)
}

/// A decoded segment footer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer(footer::Footer);

impl Footer {
    /// Re-encode, with chain tails at the entries that carry a hash (where
    /// the writer puts them).
    pub fn encode(&self) -> Vec<u8> {
        let tails: Vec<u32> = (0..self.0.entries.len())
            .filter(|&i| self.0.entries[i].event_hash != [0; 32])
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        self.0.encode(&tails)
    }
    /// Where the frames before it end.
    pub fn frames_end(&self) -> u64 {
        self.0.frames_end
    }
    /// Number of entries.
    pub fn entries(&self) -> usize {
        self.0.entries.len()
    }
}

/// `footer::decode`.
pub fn decode_footer(b: &[u8]) -> Result<Footer, DecodeError> {
    footer::decode(b).map(Footer).map_err(DecodeError::from)
}

/// `footer::locate`: the offset of the footer a segment file's trailer names.
pub fn locate_footer(file: &[u8]) -> Option<u64> {
    footer::locate(file)
}

/// A decoded checkpoint (its index included).
pub struct Checkpoint(checkpoint::Checkpoint);

impl Checkpoint {
    /// `checkpoint::encode` of what was decoded.
    pub fn encode(&self) -> Vec<u8> {
        checkpoint::encode(self.0.next_seq, &self.0.segments, &self.0.index)
    }
    /// The covered segments, as comparable text.
    pub fn segments_debug(&self) -> String {
        format!("{:?}", self.0.segments)
    }
}

/// `checkpoint::decode` (which also rebuilds the index image).
pub fn decode_checkpoint(b: &[u8]) -> Result<Checkpoint, DecodeError> {
    checkpoint::decode(b)
        .map(Checkpoint)
        .map_err(DecodeError::from)
}

/// A decoded removed-event record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedRecord(removed::RemovedRecord);

impl RemovedRecord {
    /// `removed::encode`.
    pub fn encode(&self) -> Vec<u8> {
        removed::encode(&self.0)
    }
}

/// `removed::decode`.
pub fn decode_removed(b: &[u8]) -> Result<RemovedRecord, DecodeError> {
    removed::decode(b)
        .map(RemovedRecord)
        .map_err(DecodeError::from)
}

/// A decoded compaction intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent(intent::Intent);

impl Intent {
    /// An intent with these fields.
    pub fn new(removed_record: bool, outputs: Vec<u64>, deleted: Vec<u64>) -> Self {
        Intent(intent::Intent {
            removed_record,
            outputs,
            deleted,
        })
    }
    /// `intent::Intent::encode`.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }
}

/// `intent::Intent::decode`.
pub fn decode_intent(b: &[u8]) -> Result<Intent, DecodeError> {
    intent::Intent::decode(b)
        .map(Intent)
        .map_err(DecodeError::from)
}

/// `payload::decode_value`.
pub fn decode_payload(b: &[u8]) -> Result<serde_json::Value, DecodeError> {
    payload::decode_value(b).map_err(DecodeError::from)
}

/// `payload::validate`.
pub fn validate_payload(b: &[u8]) -> Result<(), DecodeError> {
    payload::validate(b).map_err(DecodeError::from)
}

/// `payload::encode_value`.
pub fn encode_payload(v: &serde_json::Value) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    payload::encode_value(v, &mut out)?;
    Ok(out)
}
