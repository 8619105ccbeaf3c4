//! Encoding a payload without building a `serde_json::Value` first.
//!
//! The payload contract is "`serde_json::to_value(&p)`, stored as
//! MessagePack" (see `payload`). Building that tree only to walk it once
//! costs an allocation per node, which dominates the encoding of a typical
//! small payload. This serializer writes the MessagePack of exactly the tree
//! `to_value` would build — the same number conversions, map-key rules and
//! key order — straight into the output. Anything it is not certain to
//! reproduce (an error, a map key that is not a string or an integer,
//! `serde_json`'s private number and raw-value types, duplicate keys under
//! `preserve_order`, excessive nesting) makes it give up, and the caller
//! takes the `to_value` path, which then decides.

use super::payload::{container_header, write_int, write_str, write_uint, MAX_DEPTH};
use serde::ser::{self, Serialize};
use std::fmt;
use std::sync::OnceLock;

/// "Take the slow path": not an error of the payload itself.
#[derive(Debug)]
pub(crate) struct Fallback;

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("payload needs the serde_json::Value path")
    }
}

impl std::error::Error for Fallback {}

impl ser::Error for Fallback {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Fallback
    }
}

/// Whether `serde_json::Map` sorts its keys (it does unless some crate in
/// the build enables serde_json's `preserve_order`).
fn maps_sort_keys() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut m = serde_json::Map::new();
        m.insert("b".into(), serde_json::Value::Null);
        m.insert("a".into(), serde_json::Value::Null);
        m.keys().next().is_some_and(|k| k == "a")
    })
}

/// Append the encoding of `value` to `out`; on `Err`, `out` is unchanged.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Fallback> {
    let start = out.len();
    let mut entries = Vec::new();
    let result = value.serialize(Enc {
        out,
        entries: &mut entries,
        depth: 0,
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Where one map entry lies in the output: the entry starts at `start`, its
/// key's UTF-8 bytes are `key_start..key_end`, its value ends at `end`.
#[derive(Clone, Copy)]
struct Entry {
    start: usize,
    key_start: usize,
    key_end: usize,
    end: usize,
}

struct Enc<'a> {
    out: &'a mut Vec<u8>,
    /// Entries of the maps being written, innermost last (shared, so that a
    /// map costs no allocation of its own).
    entries: &'a mut Vec<Entry>,
    depth: usize,
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    } else {
        // `Number::from_f64` refuses non-finite values; `to_value` gives null.
        out.push(0xc0);
    }
}

/// Space reserved for a container header, fixed up when the count is known.
const HEADER_ROOM: usize = 5;

/// Write the header of a container of `n` items whose content starts at
/// `at + HEADER_ROOM`, shifting the content left when the header is shorter.
fn finish_header(
    out: &mut Vec<u8>,
    at: usize,
    n: usize,
    fix: u8,
    tag16: u8,
    tag32: u8,
) -> Result<(), Fallback> {
    u32::try_from(n).map_err(|_| Fallback)?;
    let (h, len) = container_header(n, fix, tag16, tag32);
    out[at..at + len].copy_from_slice(&h[..len]);
    if len < HEADER_ROOM {
        out.copy_within(at + HEADER_ROOM.., at + len);
        out.truncate(out.len() - (HEADER_ROOM - len));
    }
    Ok(())
}

impl<'a> Enc<'a> {
    fn nested(&mut self) -> Result<Enc<'_>, Fallback> {
        if self.depth >= MAX_DEPTH {
            return Err(Fallback);
        }
        Ok(Enc {
            out: self.out,
            entries: self.entries,
            depth: self.depth + 1,
        })
    }

    fn begin_seq(self) -> Result<Seq<'a>, Fallback> {
        if self.depth >= MAX_DEPTH {
            return Err(Fallback);
        }
        let at = self.out.len();
        self.out.extend_from_slice(&[0; HEADER_ROOM]);
        Ok(Seq {
            enc: self,
            at,
            n: 0,
        })
    }

    fn begin_map(self) -> Result<Map<'a>, Fallback> {
        if self.depth >= MAX_DEPTH {
            return Err(Fallback);
        }
        let at = self.out.len();
        self.out.extend_from_slice(&[0; HEADER_ROOM]);
        let first = self.entries.len();
        Ok(Map {
            enc: self,
            at,
            first,
            pending_key: None,
        })
    }

    /// `{variant: …}`: a one-entry map whose value follows.
    fn begin_variant(&mut self, variant: &str) -> Result<(), Fallback> {
        if self.depth >= MAX_DEPTH {
            return Err(Fallback);
        }
        self.out.push(0x81);
        write_str(self.out, variant);
        Ok(())
    }
}

impl<'a> ser::Serializer for Enc<'a> {
    type Ok = ();
    type Error = Fallback;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Map<'a>;
    type SerializeStruct = Map<'a>;
    type SerializeStructVariant = Map<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Fallback> {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Fallback> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Fallback> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Fallback> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Fallback> {
        write_int(self.out, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), Fallback> {
        // Within u64 or i64 it is a plain number; beyond, `to_value` decides.
        if let Ok(u) = u64::try_from(v) {
            return self.serialize_u64(u);
        }
        self.serialize_i64(i64::try_from(v).map_err(|_| Fallback)?)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Fallback> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Fallback> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Fallback> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), Fallback> {
        write_uint(self.out, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), Fallback> {
        self.serialize_u64(u64::try_from(v).map_err(|_| Fallback)?)
    }
    fn serialize_f32(self, v: f32) -> Result<(), Fallback> {
        write_f64(self.out, f64::from(v));
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), Fallback> {
        write_f64(self.out, v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), Fallback> {
        let mut buf = [0u8; 4];
        write_str(self.out, v.encode_utf8(&mut buf));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), Fallback> {
        write_str(self.out, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Fallback> {
        // `to_value` turns bytes into an array of numbers.
        let mut seq = self.begin_seq()?;
        for b in v {
            write_uint(seq.enc.out, u64::from(*b));
        }
        seq.n = v.len();
        ser::SerializeSeq::end(seq)
    }
    fn serialize_none(self) -> Result<(), Fallback> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Fallback> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Fallback> {
        self.out.push(0xc0);
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Fallback> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Fallback> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Fallback> {
        if name.starts_with("$serde_json::private::") {
            return Err(Fallback);
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Fallback> {
        self.begin_variant(variant)?;
        value.serialize(self.nested()?)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Seq<'a>, Fallback> {
        self.begin_seq()
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Fallback> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<Seq<'a>, Fallback> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Seq<'a>, Fallback> {
        self.begin_variant(variant)?;
        // The wrapper's one-entry header was written up front: nothing
        // more to close for it.
        Enc {
            out: self.out,
            entries: self.entries,
            depth: self.depth + 1,
        }
        .begin_seq()
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Map<'a>, Fallback> {
        self.begin_map()
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Map<'a>, Fallback> {
        if name.starts_with("$serde_json::private::") {
            return Err(Fallback);
        }
        self.begin_map()
    }
    fn serialize_struct_variant(
        mut self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Map<'a>, Fallback> {
        self.begin_variant(variant)?;
        Enc {
            out: self.out,
            entries: self.entries,
            depth: self.depth + 1,
        }
        .begin_map()
    }
}

/// An array being written.
pub(crate) struct Seq<'a> {
    enc: Enc<'a>,
    at: usize,
    n: usize,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Fallback> {
        self.n += 1;
        value.serialize(self.enc.nested()?)
    }

    fn close(self) -> Result<(), Fallback> {
        finish_header(self.enc.out, self.at, self.n, 0x90, 0xdc, 0xdd)
    }
}

/// serde's four sequence traits differ only in the name of their element
/// method; all write an element and close the array header.
macro_rules! seq_traits {
    ($($tr:ident :: $method:ident),*) => {$(
        impl ser::$tr for Seq<'_> {
            type Ok = ();
            type Error = Fallback;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Fallback> {
                self.element(value)
            }
            fn end(self) -> Result<(), Fallback> {
                self.close()
            }
        }
    )*};
}

seq_traits!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// A map being written: entries are written in call order, then put in key
/// order (and deduplicated, last value winning) the way `serde_json::Map`
/// would hold them.
pub(crate) struct Map<'a> {
    enc: Enc<'a>,
    at: usize,
    /// This map's entries are `enc.entries[first..]`.
    first: usize,
    /// Start of the entry and of its key's bytes, and the key's end.
    pending_key: Option<(usize, usize, usize)>,
}

impl Map<'_> {
    fn key(&mut self, key: &str) {
        let start = self.enc.out.len();
        write_str(self.enc.out, key);
        let key_end = self.enc.out.len();
        self.pending_key = Some((start, key_end - key.len(), key_end));
    }

    fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Fallback> {
        let (start, key_start, key_end) = self.pending_key.take().ok_or(Fallback)?;
        value.serialize(self.enc.nested()?)?;
        let end = self.enc.out.len();
        self.enc.entries.push(Entry {
            start,
            key_start,
            key_end,
            end,
        });
        Ok(())
    }

    fn close(self) -> Result<(), Fallback> {
        if self.pending_key.is_some() {
            return Err(Fallback);
        }
        let Enc { out, entries, .. } = self.enc;
        let mine = &entries[self.first..];
        let key = |e: &Entry| &out[e.key_start..e.key_end];
        let content = self.at + HEADER_ROOM;
        let in_order = mine.windows(2).all(|w| key(&w[0]) < key(&w[1]));
        let n = if in_order {
            mine.len()
        } else if !maps_sort_keys() {
            // Insertion order is kept; only duplicates would need work.
            let mut keys: Vec<&[u8]> = mine.iter().map(key).collect();
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                return Err(Fallback);
            }
            mine.len()
        } else {
            // Stable sort by key (byte order is string order), then keep the
            // last entry of each key.
            let mut order: Vec<&Entry> = mine.iter().collect();
            order.sort_by(|a, b| key(a).cmp(key(b)));
            let mut kept: Vec<&Entry> = Vec::with_capacity(order.len());
            for e in order {
                match kept.last_mut() {
                    Some(last) if key(last) == key(e) => *last = e,
                    _ => kept.push(e),
                }
            }
            let mut sorted = Vec::with_capacity(out.len() - content);
            for e in &kept {
                sorted.extend_from_slice(&out[e.start..e.end]);
            }
            let n = kept.len();
            out.truncate(content);
            out.extend_from_slice(&sorted);
            n
        };
        entries.truncate(self.first);
        finish_header(out, self.at, n, 0x80, 0xde, 0xdf)
    }
}

impl ser::SerializeMap for Map<'_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Fallback> {
        let start = self.enc.out.len();
        key.serialize(KeyEnc { out: self.enc.out })?;
        let key_end = self.enc.out.len();
        // KeyEnc wrote a msgpack string; find where its bytes begin.
        let header = match self.enc.out.get(start) {
            Some(0xa0..=0xbf) => 1,
            Some(0xd9) => 2,
            Some(0xda) => 3,
            Some(0xdb) => 5,
            _ => return Err(Fallback),
        };
        self.pending_key = Some((start, start + header, key_end));
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Fallback> {
        self.value(value)
    }
    fn end(self) -> Result<(), Fallback> {
        self.close()
    }
}

impl ser::SerializeStruct for Map<'_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Fallback> {
        self.key(key);
        self.value(value)
    }
    fn end(self) -> Result<(), Fallback> {
        self.close()
    }
}

impl ser::SerializeStructVariant for Map<'_> {
    type Ok = ();
    type Error = Fallback;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Fallback> {
        self.key(key);
        self.value(value)
    }
    fn end(self) -> Result<(), Fallback> {
        self.close()
    }
}

/// Map keys as `serde_json` makes them: strings, and integers written in
/// decimal, encoded as MessagePack strings. Every other kind of key takes
/// the slow path.
struct KeyEnc<'a> {
    out: &'a mut Vec<u8>,
}

impl KeyEnc<'_> {
    fn text(self, s: &str) -> Result<(), Fallback> {
        write_str(self.out, s);
        Ok(())
    }

    fn number(self, n: impl fmt::Display) -> Result<(), Fallback> {
        use std::io::Write;
        let mut buf = [0u8; 40];
        let mut cur = std::io::Cursor::new(&mut buf[..]);
        write!(cur, "{n}").map_err(|_| Fallback)?;
        let len = cur.position() as usize;
        let s = std::str::from_utf8(&buf[..len]).map_err(|_| Fallback)?;
        write_str(self.out, s);
        Ok(())
    }
}

macro_rules! fallback {
    ($($name:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $arg),*) -> Result<(), Fallback> { Err(Fallback) })*
    };
}

impl ser::Serializer for KeyEnc<'_> {
    type Ok = ();
    type Error = Fallback;
    type SerializeSeq = ser::Impossible<(), Fallback>;
    type SerializeTuple = ser::Impossible<(), Fallback>;
    type SerializeTupleStruct = ser::Impossible<(), Fallback>;
    type SerializeTupleVariant = ser::Impossible<(), Fallback>;
    type SerializeMap = ser::Impossible<(), Fallback>;
    type SerializeStruct = ser::Impossible<(), Fallback>;
    type SerializeStructVariant = ser::Impossible<(), Fallback>;

    fn serialize_str(self, v: &str) -> Result<(), Fallback> {
        self.text(v)
    }
    fn serialize_char(self, v: char) -> Result<(), Fallback> {
        let mut buf = [0u8; 4];
        self.text(v.encode_utf8(&mut buf))
    }
    fn serialize_i8(self, v: i8) -> Result<(), Fallback> {
        self.number(v)
    }
    fn serialize_i16(self, v: i16) -> Result<(), Fallback> {
        self.number(v)
    }
    fn serialize_i32(self, v: i32) -> Result<(), Fallback> {
        self.number(v)
    }
    fn serialize_i64(self, v: i64) -> Result<(), Fallback> {
        self.number(v)
    }
    fn serialize_u8(self, v: u8) -> Result<(), Fallback> {
        self.number(v)
    }
    fn serialize_u16(self, v: u16) -> Result<(), Fallback> {
        self.number(v)
    }
    fn serialize_u32(self, v: u32) -> Result<(), Fallback> {
        self.number(v)
    }
    fn serialize_u64(self, v: u64) -> Result<(), Fallback> {
        self.number(v)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Fallback> {
        self.text(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), Fallback> {
        if name.starts_with("$serde_json::private::") {
            return Err(Fallback);
        }
        value.serialize(self)
    }
    fallback!(
        serialize_bool(bool),
        serialize_i128(i128),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Fallback> {
        Err(Fallback)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Fallback> {
        Err(Fallback)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Fallback> {
        Err(Fallback)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Fallback> {
        Err(Fallback)
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Fallback> {
        Err(Fallback)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Fallback> {
        Err(Fallback)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Fallback> {
        Err(Fallback)
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Fallback> {
        Err(Fallback)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Fallback> {
        Err(Fallback)
    }
}

#[cfg(test)]
mod tests {
    use super::super::payload::{decode_value, encode_value};
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;
    use serde_json::json;
    use std::collections::{BTreeMap, HashMap};

    /// The contract: what the fast path stores decodes to `to_value`.
    fn same_as_to_value<T: Serialize>(v: &T) {
        let mut fast = Vec::new();
        let fast_ok = encode(v, &mut fast).is_ok();
        match serde_json::to_value(v) {
            Ok(expected) => {
                if fast_ok {
                    assert_eq!(decode_value(&fast).unwrap(), expected);
                    let mut slow = Vec::new();
                    encode_value(&expected, &mut slow).unwrap();
                    assert_eq!(fast, slow, "same bytes as the Value path");
                }
            }
            Err(_) => assert!(!fast_ok, "fast path accepted what to_value refuses"),
        }
    }

    #[derive(Serialize)]
    enum E {
        Unit,
        New(u8),
        Tuple(i32, String),
        Struct { z: bool, a: Option<f32> },
    }

    #[derive(Serialize)]
    struct Rich {
        zeta: u64,
        alpha: Vec<E>,
        map: HashMap<u32, i16>,
        nested: BTreeMap<String, Vec<Option<f64>>>,
        #[serde(with = "serde_bytes_shim")]
        bytes: Vec<u8>,
        unit: (),
        tuple: (char, i128, u128),
        flat: f32,
    }

    mod serde_bytes_shim {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[test]
    fn typical_payloads_match() {
        same_as_to_value(
            &json!({"customer": "c1", "order": 7, "items": [{"sku": "t", "qty": 2}], "note": null}),
        );
        same_as_to_value(&Rich {
            zeta: u64::MAX,
            alpha: vec![
                E::Unit,
                E::New(3),
                E::Tuple(-5, "x".into()),
                E::Struct {
                    z: true,
                    a: Some(0.1),
                },
            ],
            map: (0..20).map(|i| (i * 7919 % 101, -(i as i16))).collect(),
            nested: BTreeMap::from([("k".into(), vec![Some(1.5), None, Some(f64::NAN)])]),
            bytes: vec![0, 255, 128],
            unit: (),
            tuple: ('é', -3, 12),
            flat: f32::INFINITY,
        });
        same_as_to_value(&"x".repeat(70_000));
        same_as_to_value(&(0..40).collect::<Vec<u32>>());
    }

    #[test]
    fn slow_path_cases_fall_back() {
        let mut out = vec![1, 2, 3];
        assert!(encode(&u128::MAX, &mut out).is_err());
        assert_eq!(out, vec![1, 2, 3], "output untouched on fallback");
        assert!(encode(&BTreeMap::from([(true, 1)]), &mut out).is_err());
        assert!(encode(&BTreeMap::from([((1, 2), 1)]), &mut out).is_err());
        same_as_to_value(&u128::MAX);
        same_as_to_value(&BTreeMap::from([((1, 2), 1)]));
        same_as_to_value(&i128::MIN);
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        struct Dups;
        impl Serialize for Dups {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(None)?;
                m.serialize_entry("b", &1)?;
                m.serialize_entry("a", &2)?;
                m.serialize_entry("b", &3)?;
                m.end()
            }
        }
        same_as_to_value(&Dups);
    }

    #[test]
    fn deep_nesting_falls_back() {
        let mut v = json!(1);
        for _ in 0..(MAX_DEPTH + 3) {
            v = json!([v]);
        }
        assert!(encode(&v, &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn random_structures_match(
            ints in prop::collection::vec(any::<i64>(), 0..20),
            floats in prop::collection::vec(any::<f64>(), 0..5),
            keys in prop::collection::btree_map(any::<u16>(), "[a-z]{0,8}", 0..20),
            strs in prop::collection::hash_map("[a-zA-Z0-9 ]{0,12}", any::<Option<i32>>(), 0..20),
            flag in any::<bool>(),
        ) {
            #[derive(Serialize)]
            struct P { ints: Vec<i64>, floats: Vec<f64>, keys: BTreeMap<u16, String>, strs: HashMap<String, Option<i32>>, flag: bool }
            same_as_to_value(&P { ints, floats, keys, strs, flag });
        }
    }
}
