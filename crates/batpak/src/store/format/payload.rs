//! Payload codec: a `serde_json::Value` as MessagePack.
//!
//! The payload contract (SPEC §3.11) says readers get exactly
//! `serde_json::to_value(&p)`, so the store converts every payload to a
//! `Value` first and stores that tree. MessagePack keeps integers and `f64`
//! bits exact (JSON text would round floats through decimal). The codec is
//! hand-written so that decoding bytes from disk never panics, never recurses
//! without bound and never allocates more than the input can justify.

use super::payload_shapes as shapes;
use serde_json::{Number, Value};

/// Deepest nesting accepted when encoding or decoding a payload (the same
/// limit `serde_json` applies when parsing). Deeper payloads are refused at
/// append time, so decoding never needs more stack than this allows.
pub(crate) const MAX_DEPTH: usize = 128;

/// Why payload bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PayloadError {
    #[error("payload truncated at byte {0}")]
    Truncated(usize),
    #[error("unsupported MessagePack tag {tag:#04x} at byte {at}")]
    UnsupportedTag { tag: u8, at: usize },
    #[error("invalid UTF-8 in string at byte {0}")]
    InvalidUtf8(usize),
    #[error("non-string map key at byte {0}")]
    NonStringKey(usize),
    #[error("non-finite float at byte {0}")]
    NonFiniteFloat(usize),
    #[error("payload nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{0} trailing bytes after payload")]
    TrailingBytes(usize),
}

/// Append the MessagePack encoding of `value` to `out`.
pub(crate) fn encode_value(value: &Value, out: &mut Vec<u8>) -> Result<(), PayloadError> {
    encode_at(value, out, 0)
}

fn encode_at(value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), PayloadError> {
    if depth > MAX_DEPTH {
        return Err(PayloadError::TooDeep);
    }
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => encode_number(n, out),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            let (h, n) = container_header(items.len(), 0x90, 0xdc, 0xdd);
            out.extend_from_slice(&h[..n]);
            for item in items {
                encode_at(item, out, depth + 1)?;
            }
        }
        Value::Object(map) => {
            let (h, n) = container_header(map.len(), 0x80, 0xde, 0xdf);
            out.extend_from_slice(&h[..n]);
            for (k, v) in map {
                write_str(out, k);
                encode_at(v, out, depth + 1)?;
            }
        }
    }
    Ok(())
}

fn encode_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        write_uint(out, u);
    } else if let Some(i) = n.as_i64() {
        write_int(out, i);
    } else {
        // serde_json numbers are u64, i64 or finite f64.
        out.push(0xcb);
        out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
    }
}

// The MessagePack writers, shared with the direct serializer (`payload_ser`):
// one definition of every header form.

/// An unsigned integer in its smallest form.
pub(super) fn write_uint(out: &mut Vec<u8>, u: u64) {
    match u {
        0..=0x7f => out.push(u as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, u as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    }
}

/// A signed integer in its smallest form (non-negatives as unsigned).
pub(super) fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        return write_uint(out, i as u64);
    }
    if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, i as i8 as u8]);
    } else if i >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

/// A string: fixstr, str8, str16 or str32 header, then its bytes.
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len();
    if len <= 31 {
        out.push(0xa0 | len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0xd9, len as u8]);
    } else {
        let (h, n) = sized_header(len, 0xda, 0xdb);
        out.extend_from_slice(&h[..n]);
    }
    out.extend_from_slice(s.as_bytes());
}

/// The header of an array (`fix` 0x90) or map (`fix` 0x80) of `n` items:
/// the bytes and how many of them are used. `n` fits in 32 bits (payloads
/// are capped far below 4 GiB by `single_append_max_bytes`).
pub(super) fn container_header(n: usize, fix: u8, tag16: u8, tag32: u8) -> ([u8; 5], usize) {
    if n <= 15 {
        ([fix | n as u8, 0, 0, 0, 0], 1)
    } else {
        sized_header(n, tag16, tag32)
    }
}

/// A 16- or 32-bit length header.
fn sized_header(n: usize, tag16: u8, tag32: u8) -> ([u8; 5], usize) {
    let mut h = [0u8; 5];
    if n <= 0xffff {
        h[0] = tag16;
        h[1..3].copy_from_slice(&(n as u16).to_be_bytes());
        (h, 3)
    } else {
        h[0] = tag32;
        h[1..5].copy_from_slice(&(n as u32).to_be_bytes());
        (h, 5)
    }
}

/// Decode a complete payload; trailing bytes are an error.
pub(crate) fn decode_value(bytes: &[u8]) -> Result<Value, PayloadError> {
    let mut v = Value::Null;
    decode_value_into(bytes, &mut v)?;
    Ok(v)
}

/// [`decode_value`], written into `out` (whatever it held is dropped; on
/// an error it is `Null`). The read path decodes a payload straight into
/// the event that carries it: a `Value` returned and then moved is stored
/// field by field and copied by wider loads, which wait for those stores
/// (seen in `perf annotate`).
pub(crate) fn decode_value_into(bytes: &[u8], out: &mut Value) -> Result<(), PayloadError> {
    // The decoder writes over `Null`s without dropping them (`put`).
    if !out.is_null() {
        *out = Value::Null;
    }
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        reserve_budget: bytes.len(),
        fault: None,
    };
    let outcome = match r.value_into(out, 0) {
        Err(Faulted) => Err(r.take_fault()),
        Ok(()) if r.pos != bytes.len() => Err(PayloadError::TrailingBytes(bytes.len() - r.pos)),
        Ok(()) => Ok(()),
    };
    if outcome.is_err() {
        *out = Value::Null;
    }
    outcome
}

/// Check that `bytes` decode to a payload, without building it (batch items
/// arrive as bytes; the store must never accept what it cannot read back).
pub(crate) fn validate(bytes: &[u8]) -> Result<(), PayloadError> {
    let mut r = Reader {
        buf: bytes,
        pos: 0,
        reserve_budget: 0,
        fault: None,
    };
    r.skip(0).map_err(|Faulted| r.take_fault())?;
    if r.pos != bytes.len() {
        return Err(PayloadError::TrailingBytes(bytes.len() - r.pos));
    }
    Ok(())
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Array elements the decoder may still reserve room for before decoding
    /// them. Every element takes at least one byte and belongs to one array,
    /// so a well-formed payload never reserves more than its length in total;
    /// nested arrays that each claim all the bytes left cannot multiply it.
    reserve_budget: usize,
    fault: Option<PayloadError>,
}

/// A decode stopped; why is in `Reader::fault`. The reader's methods return
/// this zero-sized marker rather than the `PayloadError` itself, so that
/// their results stay as small as what they carry (a flag for the values
/// written in place, a `&str` for a key) and come back in registers.
struct Faulted;

impl<'a> Reader<'a> {
    /// Record why decoding stops; every caller returns at once, so the
    /// first fault is the one reported.
    #[cold]
    fn fault(&mut self, e: PayloadError) -> Faulted {
        self.fault = Some(e);
        Faulted
    }

    /// The recorded fault (every `Faulted` is made by `fault`, so there is one).
    fn take_fault(&mut self) -> PayloadError {
        self.fault
            .take()
            .unwrap_or(PayloadError::Truncated(self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Faulted> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.fault(PayloadError::Truncated(self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Faulted> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Faulted> {
        Ok(self.array::<1>()?[0])
    }

    fn len16(&mut self) -> Result<usize, Faulted> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn len32(&mut self) -> Result<usize, Faulted> {
        usize::try_from(u32::from_be_bytes(self.array()?))
            .map_err(|_| self.fault(PayloadError::Truncated(self.pos)))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A map key, which must be a string: refused by its tag, as `skip`
    /// does, before anything is decoded or allocated.
    fn key(&mut self) -> Result<&'a str, Faulted> {
        let at = self.pos;
        let len = match self.buf.get(at) {
            Some(&tag @ 0xa0..=0xbf) => {
                self.pos += 1;
                usize::from(tag & 0x1f)
            }
            Some(0xd9) => {
                self.pos += 1;
                usize::from(self.u8()?)
            }
            Some(0xda) => {
                self.pos += 1;
                self.len16()?
            }
            Some(0xdb) => {
                self.pos += 1;
                self.len32()?
            }
            _ => return Err(self.fault(PayloadError::NonStringKey(at))),
        };
        self.text(len)
    }

    fn string(&mut self, len: usize) -> Result<String, Faulted> {
        self.text(len).map(str::to_owned)
    }

    fn text(&mut self, len: usize) -> Result<&'a str, Faulted> {
        let at = self.pos;
        let bytes = self.take(len)?;
        as_text(bytes).ok_or_else(|| self.fault(PayloadError::InvalidUtf8(at)))
    }

    /// Decode one value into `out`, which holds `Value::Null`. Values are
    /// written where they end up rather than returned: a returned `Value`
    /// is stored field by field and then copied by wider loads, which wait
    /// for those stores (seen in `perf annotate` at every level).
    fn value_into(&mut self, out: &mut Value, depth: usize) -> Result<(), Faulted> {
        if depth > MAX_DEPTH {
            return Err(self.fault(PayloadError::TooDeep));
        }
        let at = self.pos;
        let tag = self.u8()?;
        let value = match tag {
            0x00..=0x7f => Value::from(tag),
            0xe0..=0xff => Value::from(tag as i8),
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xcc => Value::from(self.u8()?),
            0xcd => Value::from(u16::from_be_bytes(self.array()?)),
            0xce => Value::from(u32::from_be_bytes(self.array()?)),
            0xcf => Value::from(u64::from_be_bytes(self.array()?)),
            0xd0 => Value::from(i8::from_be_bytes(self.array()?)),
            0xd1 => Value::from(i16::from_be_bytes(self.array()?)),
            0xd2 => Value::from(i32::from_be_bytes(self.array()?)),
            0xd3 => Value::from(i64::from_be_bytes(self.array()?)),
            0xca => float(f64::from(f32::from_be_bytes(self.array()?)), at)
                .map_err(|e| self.fault(e))?,
            0xcb => float(f64::from_be_bytes(self.array()?), at).map_err(|e| self.fault(e))?,
            0xa0..=0xbf => Value::String(self.string(usize::from(tag & 0x1f))?),
            0xd9 => {
                let n = usize::from(self.u8()?);
                Value::String(self.string(n)?)
            }
            0xda => {
                let n = self.len16()?;
                Value::String(self.string(n)?)
            }
            0xdb => {
                let n = self.len32()?;
                Value::String(self.string(n)?)
            }
            0x90..=0x9f => return self.array_into(out, usize::from(tag & 0x0f), depth),
            0xdc => {
                let n = self.len16()?;
                return self.array_into(out, n, depth);
            }
            0xdd => {
                let n = self.len32()?;
                return self.array_into(out, n, depth);
            }
            0x80..=0x8f => return self.map_into(out, usize::from(tag & 0x0f), depth),
            0xde => {
                let n = self.len16()?;
                return self.map_into(out, n, depth);
            }
            0xdf => {
                let n = self.len32()?;
                return self.map_into(out, n, depth);
            }
            _ => return Err(self.fault(PayloadError::UnsupportedTag { tag, at })),
        };
        put(out, value);
        Ok(())
    }

    /// Like `value`, but only checks and advances.
    fn skip(&mut self, depth: usize) -> Result<(), Faulted> {
        if depth > MAX_DEPTH {
            return Err(self.fault(PayloadError::TooDeep));
        }
        let at = self.pos;
        let tag = self.u8()?;
        let (strlen, items, pairs) = match tag {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => return Ok(()),
            0xcc | 0xd0 => return self.take(1).map(drop),
            0xcd | 0xd1 => return self.take(2).map(drop),
            0xce | 0xd2 => return self.take(4).map(drop),
            0xcf | 0xd3 => return self.take(8).map(drop),
            0xca => {
                return float(f64::from(f32::from_be_bytes(self.array()?)), at)
                    .map(drop)
                    .map_err(|e| self.fault(e))
            }
            0xcb => {
                return float(f64::from_be_bytes(self.array()?), at)
                    .map(drop)
                    .map_err(|e| self.fault(e))
            }
            0xa0..=0xbf => (Some(usize::from(tag & 0x1f)), 0, 0),
            0xd9 => (Some(usize::from(self.u8()?)), 0, 0),
            0xda => (Some(self.len16()?), 0, 0),
            0xdb => (Some(self.len32()?), 0, 0),
            0x90..=0x9f => (None, usize::from(tag & 0x0f), 0),
            0xdc => (None, self.len16()?, 0),
            0xdd => (None, self.len32()?, 0),
            0x80..=0x8f => (None, 0, usize::from(tag & 0x0f)),
            0xde => (None, 0, self.len16()?),
            0xdf => (None, 0, self.len32()?),
            _ => return Err(self.fault(PayloadError::UnsupportedTag { tag, at })),
        };
        if let Some(n) = strlen {
            return self.text(n).map(drop);
        }
        if items.max(pairs.saturating_mul(2)) > self.remaining() {
            return Err(self.fault(PayloadError::Truncated(self.pos)));
        }
        for _ in 0..items {
            self.skip(depth + 1)?;
        }
        for _ in 0..pairs {
            let at = self.pos;
            match self.buf.get(at) {
                Some(0xa0..=0xbf | 0xd9 | 0xda | 0xdb) => self.skip(depth + 1)?,
                _ => return Err(self.fault(PayloadError::NonStringKey(at))),
            }
            self.skip(depth + 1)?;
        }
        Ok(())
    }

    fn array_into(&mut self, out: &mut Value, n: usize, depth: usize) -> Result<(), Faulted> {
        // Every element takes at least one byte, so the input bounds the allocation.
        if n > self.remaining() {
            return Err(self.fault(PayloadError::Truncated(self.pos)));
        }
        let reserve = n.min(self.reserve_budget);
        self.reserve_budget -= reserve;
        let mut items = Vec::with_capacity(reserve);
        for i in 0..n {
            items.push(Value::Null);
            self.value_into(&mut items[i], depth + 1)?;
        }
        put(out, Value::Array(items));
        Ok(())
    }

    fn map_into(&mut self, out: &mut Value, n: usize, depth: usize) -> Result<(), Faulted> {
        if n.saturating_mul(2) > self.remaining() {
            return Err(self.fault(PayloadError::Truncated(self.pos)));
        }
        if n <= shapes::MAX_KEYS {
            // Keys stay borrowed and values wait here until the map is
            // built whole, from a template of its shape when there is one.
            let mut keys = [""; shapes::MAX_KEYS];
            let mut values: [Value; shapes::MAX_KEYS] = Default::default();
            for i in 0..n {
                keys[i] = self.key()?;
                self.value_into(&mut values[i], depth + 1)?;
            }
            put(out, Value::Object(shapes::build(&keys[..n], &mut values)));
            // `build` took every value, leaving `Null`s with nothing to
            // free; dropping them anyway costs an out-of-line call each.
            debug_assert!(values.iter().all(Value::is_null));
            std::mem::forget(values);
            return Ok(());
        }
        let reserve = n.min(self.reserve_budget);
        self.reserve_budget -= reserve;
        let mut keys = Vec::with_capacity(reserve);
        let mut values = Vec::with_capacity(reserve);
        for i in 0..n {
            keys.push(self.key()?);
            values.push(Value::Null);
            self.value_into(&mut values[i], depth + 1)?;
        }
        put(out, Value::Object(shapes::from_entries(&keys, &mut values)));
        Ok(())
    }
}

/// `bytes` as a string, when they are UTF-8 (for both payload decoders).
#[inline]
pub(super) fn as_text(bytes: &[u8]) -> Option<&str> {
    // Keys and most values are short ASCII, where checking for ASCII
    // costs less than UTF-8 validation (about a tenth of a payload's
    // decode in `examples`-style measurements).
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8 (each byte is
        // a one-byte code point); `is_ascii` has just checked them all.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    std::str::from_utf8(bytes).ok()
}

/// Put `value` into `slot`, which holds `Null`: nothing to drop, so no
/// call to `Value`'s out-of-line drop (an assignment makes one per value).
#[inline(always)]
pub(super) fn put(slot: &mut Value, value: Value) {
    debug_assert!(slot.is_null());
    std::mem::forget(std::mem::replace(slot, value));
}

fn float(f: f64, at: usize) -> Result<Value, PayloadError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or(PayloadError::NonFiniteFloat(at))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Raw MessagePack maps with keys out of order and repeated decode the
    /// way `serde_json` builds them (sorted, the last value of a key wins):
    /// small and large maps, each decoded three times so that the shape
    /// template is made and then used. A map that claims more entries than
    /// it holds is refused either way.
    #[test]
    fn maps_with_unsorted_and_repeated_keys_keep_the_last_value() {
        fn fixmap(entries: &[(&str, u8)]) -> Vec<u8> {
            let mut b = vec![0x80 | entries.len() as u8];
            for (k, v) in entries {
                b.push(0xa0 | k.len() as u8);
                b.extend_from_slice(k.as_bytes());
                b.push(*v);
            }
            b
        }
        let large: Vec<(&str, u8)> = ["m", "l", "k", "j", "i", "h", "g", "f", "e", "d", "c", "b"]
            .iter()
            .zip(0..)
            .map(|(k, v)| (*k, v))
            .chain([("a", 12), ("m", 13), ("n", 14)])
            .collect();
        assert!(large.len() > shapes::MAX_KEYS);
        let cases: [&[(&str, u8)]; 6] = [
            &[("b", 1), ("a", 2), ("b", 3)],
            &[("z", 1), ("y", 2), ("x", 3), ("z", 4), ("w", 5), ("y", 6)],
            &[("k", 1), ("k", 2), ("k", 3), ("k", 4), ("k", 5)],
            &[("e", 5), ("d", 4), ("c", 3), ("b", 2), ("a", 1)],
            &[("only", 1)],
            &large,
        ];
        for entries in cases {
            let mut expected = serde_json::Map::new();
            for (k, v) in entries {
                expected.insert((*k).to_string(), json!(v));
            }
            let bytes = fixmap(entries);
            for round in 0..3 {
                let decoded = decode_value(&bytes);
                assert_eq!(decoded, Ok(Value::Object(expected.clone())), "{entries:?}");
                let order: Vec<String> = match decoded {
                    Ok(Value::Object(m)) => m.keys().cloned().collect(),
                    _ => Vec::new(),
                };
                let expected_order: Vec<&String> = expected.keys().collect();
                assert_eq!(
                    order.iter().collect::<Vec<_>>(),
                    expected_order,
                    "{entries:?} round {round}"
                );
            }
            let mut short = bytes.clone();
            short[0] += 1;
            assert!(
                decode_value(&short).is_err(),
                "{entries:?} plus a missing entry"
            );
        }
    }

    /// The ASCII shortcut in `Reader::string` and the UTF-8 path agree:
    /// ASCII and multi-byte strings (keys and values) decode to themselves,
    /// and a string with invalid UTF-8 (ASCII up to its last byte, or none)
    /// is still refused where it starts.
    #[test]
    fn strings_decode_through_both_paths_and_bad_utf8_is_refused() {
        for s in [
            "",
            "a",
            "plain ascii key",
            "caf\u{e9}",
            "\u{1f980} crab",
            "mixed \u{3b1}\u{3b2} text",
        ] {
            let v = json!({ s: s });
            assert_eq!(round_trip(&v), v, "{s:?}");
        }
        // fixstr of 4 bytes: "ab" then a lone continuation byte and 'c'.
        let bad = [0xa4, b'a', b'b', 0x80, b'c'];
        assert_eq!(decode_value(&bad), Err(PayloadError::InvalidUtf8(1)));
        // A map key with an invalid byte: map of one entry, key fixstr of 1.
        let bad_key = [0x81, 0xa1, 0xff, 0xc0];
        assert_eq!(decode_value(&bad_key), Err(PayloadError::InvalidUtf8(2)));
    }

    fn round_trip(v: &Value) -> Value {
        let mut buf = Vec::new();
        encode_value(v, &mut buf).unwrap();
        decode_value(&buf).unwrap()
    }

    #[test]
    fn edge_values_round_trip_exactly() {
        let v = json!({
            "u": [0, 127, 128, 255, 256, 65535, 65536, 4294967295u64, 4294967296u64, u64::MAX],
            "i": [-1, -32, -33, -128, -129, -32768, -32769, -2147483648i64, -2147483649i64, i64::MIN],
            "f": [0.1, -0.0, 1.0, 1e308, f64::MIN_POSITIVE, 0.30000000000000004],
            "s": ["", "a", "x".repeat(31), "x".repeat(32), "x".repeat(255), "x".repeat(256), "x".repeat(70000), "ünï😀"],
            "n": null, "b": [true, false],
            "nested": {"a": {"b": {"c": []}}},
            "big": (0..20).collect::<Vec<_>>(),
        });
        let back = round_trip(&v);
        assert_eq!(back, v);
        // Float bits are preserved, not just approximately equal.
        assert_eq!(back["f"][0].as_f64().unwrap().to_bits(), 0.1f64.to_bits());
        assert!(back["f"][2].is_f64(), "1.0 stays a float");
    }

    /// The payload bytes are part of the on-disk format: this pins them for
    /// every header size of every type (the value-tree encoder and the
    /// direct serializer share their writers, so comparing the two cannot
    /// catch a change made to both).
    #[test]
    fn golden_payload_bytes() {
        let v = json!({
            "u": [0, 127, 128, 255, 256, 65535, 65536, 4294967295u64, 4294967296u64, u64::MAX],
            "i": [-1, -32, -33, -128, -129, -32768, -32769, -2147483648i64, -2147483649i64, i64::MIN],
            "f": [0.1, -0.0, 1.0, 1e308],
            "s": ["", "x".repeat(31), "x".repeat(32), "x".repeat(255), "x".repeat(256), "x".repeat(70000)],
            "a15": (0..15).collect::<Vec<_>>(),
            "a16": (0..16).collect::<Vec<_>>(),
            "m16": (0..16).map(|i| (format!("k{i:02}"), json!(i))).collect::<serde_json::Map<_, _>>(),
            "n": null, "b": [true, false],
        });
        let mut bytes = Vec::new();
        encode_value(&v, &mut bytes).unwrap();
        let mut direct = Vec::new();
        super::super::payload_ser::encode(&v, &mut direct).unwrap();
        assert_eq!(direct, bytes, "both encoders write the same bytes");
        let head: String = bytes[..48].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            (bytes.len(), crc32fast::hash(&bytes), head.as_str()),
            GOLDEN_PAYLOAD
        );
    }

    const GOLDEN_PAYLOAD: (usize, u32, &str) = (
        70855,
        3218025367,
        "89a36131359f000102030405060708090a0b0c0d0ea3613136dc0010000102030405060708090a0b0c0d0e0fa16292c3",
    );

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        // array32 claiming 4 billion elements in a 5-byte input
        assert!(matches!(
            decode_value(&[0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(PayloadError::Truncated(_))
        ));
        assert!(matches!(
            decode_value(&[0xdb, 0xff, 0xff, 0xff, 0xff]),
            Err(PayloadError::Truncated(_))
        ));
        assert!(matches!(
            decode_value(&[0xc1]),
            Err(PayloadError::UnsupportedTag { .. })
        ));
        assert!(matches!(
            decode_value(&[0xa2, 0xff, 0xfe]),
            Err(PayloadError::InvalidUtf8(_))
        ));
        assert!(matches!(
            decode_value(&[0x81, 0x01, 0x01]),
            Err(PayloadError::NonStringKey(_))
        ));
        assert!(matches!(
            decode_value(&[0xc0, 0xc0]),
            Err(PayloadError::TrailingBytes(1))
        ));
        assert!(matches!(decode_value(&[]), Err(PayloadError::Truncated(0))));
        let nan = [0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            decode_value(&nan),
            Err(PayloadError::NonFiniteFloat(0))
        ));
        let deep = vec![0x91u8; 5000];
        assert!(matches!(
            decode_value(&deep),
            Err(PayloadError::TooDeep | PayloadError::Truncated(_))
        ));
    }

    #[test]
    fn too_deep_to_encode() {
        let mut v = json!(null);
        for _ in 0..(MAX_DEPTH + 2) {
            v = json!([v]);
        }
        assert_eq!(
            encode_value(&v, &mut Vec::new()),
            Err(PayloadError::TooDeep)
        );
    }

    /// The deepest payload the store accepts, maps of a few keys at every
    /// level (each level gathers its values on the stack), decodes on a
    /// thread with a 1 MiB stack, half of Rust's default, in debug builds
    /// and with `preserve_order` too; 129 levels are refused.
    #[test]
    fn the_deepest_payload_decodes_on_a_small_stack() {
        let mut v = json!(1);
        for level in 0..MAX_DEPTH {
            v = json!({"a": level, "b": "x", "c": v});
        }
        let mut bytes = Vec::new();
        encode_value(&v, &mut bytes).unwrap();
        // One more level: a map whose one value is the whole payload.
        let mut too_deep = vec![0x81, 0xa1, b'd'];
        too_deep.extend_from_slice(&bytes);
        let back = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || (decode_value(&bytes), decode_value(&too_deep)))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(back.0, Ok(v));
        assert_eq!(back.1, Err(PayloadError::TooDeep));
    }

    /// Decoding into a place that already holds a value replaces it; a
    /// failed decode leaves `Null` there, not a half-built value.
    #[test]
    fn decoding_into_a_place_replaces_what_it_held() {
        let mut bytes = Vec::new();
        encode_value(&json!({"a": [1, 2], "b": "x"}), &mut bytes).unwrap();
        let mut place = json!({"old": ["payload", 1]});
        assert_eq!(decode_value_into(&bytes, &mut place), Ok(()));
        assert_eq!(place, json!({"a": [1, 2], "b": "x"}));
        let cut = &bytes[..bytes.len() - 1];
        assert!(decode_value_into(cut, &mut place).is_err());
        assert_eq!(place, Value::Null);
    }

    /// Arbitrary JSON values (shared with the hostile-input tests).
    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(".{0,10}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_round_trips(v in arb_value()) {
            prop_assert_eq!(round_trip(&v), v);
        }

        /// Decoding the same bytes again (when its maps' shapes have
        /// templates) builds the same value as the first time.
        #[test]
        fn repeated_decodes_agree(v in arb_value()) {
            let mut buf = Vec::new();
            encode_value(&v, &mut buf).unwrap();
            for _ in 0..3 {
                let back = decode_value(&buf).unwrap();
                // `IndexMap` equality ignores order; the text does not.
                prop_assert_eq!(back.to_string(), v.to_string());
                prop_assert_eq!(back, v.clone());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            // The validator accepts exactly what the decoder accepts.
            prop_assert_eq!(validate(&bytes).is_ok(), decode_value(&bytes).is_ok());
        }

        #[test]
        fn encoded_values_validate(v in arb_value()) {
            let mut buf = Vec::new();
            encode_value(&v, &mut buf).unwrap();
            prop_assert!(validate(&buf).is_ok());
            if buf.len() > 1 {
                prop_assert_eq!(validate(&buf[..buf.len() - 1]).is_ok(), decode_value(&buf[..buf.len() - 1]).is_ok());
            }
        }
    }
}
