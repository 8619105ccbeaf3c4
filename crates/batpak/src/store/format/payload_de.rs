//! Decoding a stored payload straight into a Rust type, without building a
//! `serde_json::Value` first (the typed read path, ADR 0026).
//!
//! The contract is "what `serde_json::from_value(decode_value(bytes))`
//! gives". This deserializer walks the MessagePack subset of `payload` and
//! hands the visitor the same calls `serde_json::Value`'s deserializer
//! would (non-negative integers as `u64`, negative as `i64`, floats as
//! `f64`, strings, sequences, maps with string keys, `Option` and enums as
//! `Value` represents them). Anything it is not certain to reproduce (any
//! error, from the bytes or from the visitor) makes it give up, and the
//! caller takes the `Value` path, which then decides: a payload decodes
//! here only if it would decode there, to the same value.
//!
//! Like `payload`, it never panics on hostile bytes, recurses at most
//! `MAX_DEPTH` levels and allocates nothing the input does not justify
//! (it allocates nothing itself; the visitor builds `T`).

use super::payload::{as_text, MAX_DEPTH};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use std::fmt;

/// "Take the `Value` path": not itself the payload's error.
#[derive(Debug)]
pub(crate) struct Fallback;

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("payload needs the serde_json::Value path")
    }
}

impl std::error::Error for Fallback {}

impl de::Error for Fallback {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Fallback
    }
}

/// Decode `bytes` into `T` directly; `Err(Fallback)` when the `Value` path
/// must decide.
pub(crate) fn decode_direct<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Fallback> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let value = T::deserialize(Dec {
        r: &mut r,
        depth: 0,
    })?;
    if r.pos != bytes.len() {
        return Err(Fallback);
    }
    Ok(value)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Fallback> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Fallback)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], Fallback> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, Fallback> {
        Ok(self.arr::<1>()?[0])
    }

    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn len16(&mut self) -> Result<usize, Fallback> {
        Ok(usize::from(u16::from_be_bytes(self.arr()?)))
    }

    fn len32(&mut self) -> Result<usize, Fallback> {
        usize::try_from(u32::from_be_bytes(self.arr()?)).map_err(|_| Fallback)
    }

    fn str(&mut self, len: usize) -> Result<&'a str, Fallback> {
        as_text(self.take(len)?).ok_or(Fallback)
    }

    /// The string at the reader (a map key or an enum's name).
    fn string(&mut self) -> Result<&'a str, Fallback> {
        let tag = self.u8()?;
        let len = match tag {
            0xa0..=0xbf => usize::from(tag & 0x1f),
            0xd9 => usize::from(self.u8()?),
            0xda => self.len16()?,
            0xdb => self.len32()?,
            _ => return Err(Fallback),
        };
        self.str(len)
    }
}

struct Dec<'r, 'a> {
    r: &'r mut Reader<'a>,
    depth: usize,
}

fn finite(f: f64) -> Result<f64, Fallback> {
    if f.is_finite() {
        Ok(f)
    } else {
        Err(Fallback)
    }
}

fn signed<'de, V: Visitor<'de>>(v: i64, visitor: V) -> Result<V::Value, Fallback> {
    // `Value` keeps a non-negative integer as a `u64`, whatever its tag.
    match u64::try_from(v) {
        Ok(u) => visitor.visit_u64(u),
        Err(_) => visitor.visit_i64(v),
    }
}

impl<'de> de::Deserializer<'de> for Dec<'_, '_> {
    type Error = Fallback;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Fallback> {
        if self.depth > MAX_DEPTH {
            return Err(Fallback);
        }
        let r = self.r;
        let tag = r.u8()?;
        match tag {
            0x00..=0x7f => visitor.visit_u64(u64::from(tag)),
            0xe0..=0xff => visitor.visit_i64(i64::from(tag as i8)),
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xcc => visitor.visit_u64(u64::from(r.u8()?)),
            0xcd => visitor.visit_u64(u64::from(u16::from_be_bytes(r.arr()?))),
            0xce => visitor.visit_u64(u64::from(u32::from_be_bytes(r.arr()?))),
            0xcf => visitor.visit_u64(u64::from_be_bytes(r.arr()?)),
            0xd0 => signed(i64::from(i8::from_be_bytes(r.arr()?)), visitor),
            0xd1 => signed(i64::from(i16::from_be_bytes(r.arr()?)), visitor),
            0xd2 => signed(i64::from(i32::from_be_bytes(r.arr()?)), visitor),
            0xd3 => signed(i64::from_be_bytes(r.arr()?), visitor),
            0xca => visitor.visit_f64(finite(f64::from(f32::from_be_bytes(r.arr()?)))?),
            0xcb => visitor.visit_f64(finite(f64::from_be_bytes(r.arr()?))?),
            0xa0..=0xbf => visitor.visit_str(r.str(usize::from(tag & 0x1f))?),
            0xd9 => {
                let n = usize::from(r.u8()?);
                visitor.visit_str(r.str(n)?)
            }
            0xda => {
                let n = r.len16()?;
                visitor.visit_str(r.str(n)?)
            }
            0xdb => {
                let n = r.len32()?;
                visitor.visit_str(r.str(n)?)
            }
            0x90..=0x9f => seq(r, usize::from(tag & 0x0f), self.depth, visitor),
            0xdc => {
                let n = r.len16()?;
                seq(r, n, self.depth, visitor)
            }
            0xdd => {
                let n = r.len32()?;
                seq(r, n, self.depth, visitor)
            }
            0x80..=0x8f => map(r, usize::from(tag & 0x0f), self.depth, visitor),
            0xde => {
                let n = r.len16()?;
                map(r, n, self.depth, visitor)
            }
            0xdf => {
                let n = r.len32()?;
                map(r, n, self.depth, visitor)
            }
            _ => Err(Fallback),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Fallback> {
        if self.r.peek() == Some(0xc0) {
            self.r.pos += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Fallback> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Fallback> {
        // `Value` represents a unit variant as its name, any other as a
        // map of exactly one entry: name -> content.
        match self.r.peek() {
            Some(0xa0..=0xbf | 0xd9 | 0xda | 0xdb) => {
                let name = self.r.string()?;
                visitor.visit_enum(name.into_deserializer())
            }
            Some(0x81) => {
                self.r.pos += 1;
                let name = self.r.string()?;
                visitor.visit_enum(Variant {
                    name,
                    content: Dec {
                        r: self.r,
                        depth: self.depth + 1,
                    },
                })
            }
            _ => Err(Fallback),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct
        identifier ignored_any
    }
}

fn seq<'de, V: Visitor<'de>>(
    r: &mut Reader<'_>,
    n: usize,
    depth: usize,
    visitor: V,
) -> Result<V::Value, Fallback> {
    let mut access = Seq {
        r,
        left: n,
        depth: depth + 1,
    };
    let value = visitor.visit_seq(&mut access)?;
    // `Value` refuses a sequence with elements the visitor left unread.
    if access.left != 0 {
        return Err(Fallback);
    }
    Ok(value)
}

fn map<'de, V: Visitor<'de>>(
    r: &mut Reader<'_>,
    n: usize,
    depth: usize,
    visitor: V,
) -> Result<V::Value, Fallback> {
    let mut access = Map {
        r,
        left: n,
        depth: depth + 1,
    };
    let value = visitor.visit_map(&mut access)?;
    if access.left != 0 {
        return Err(Fallback);
    }
    Ok(value)
}

struct Seq<'r, 'a> {
    r: &'r mut Reader<'a>,
    left: usize,
    depth: usize,
}

impl<'de> de::SeqAccess<'de> for Seq<'_, '_> {
    type Error = Fallback;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Fallback> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(Dec {
            r: self.r,
            depth: self.depth,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        // Every element takes at least one byte: never hint past the input.
        Some(self.left.min(self.r.buf.len() - self.r.pos))
    }
}

struct Map<'r, 'a> {
    r: &'r mut Reader<'a>,
    left: usize,
    depth: usize,
}

impl<'de> de::MapAccess<'de> for Map<'_, '_> {
    type Error = Fallback;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Fallback> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        // Keys are strings; a key type that wants something else (an
        // integer key parsed from its string) takes the `Value` path.
        let key = self.r.string()?;
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Fallback> {
        seed.deserialize(Dec {
            r: self.r,
            depth: self.depth,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min((self.r.buf.len() - self.r.pos) / 2))
    }
}

/// A map key: a string, and only a string. Where `Value`'s key
/// deserializer would parse the string (numbers, bools) or wrap it, give up.
struct Key<'a>(&'a str);

macro_rules! key_falls_back {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Fallback> {
            Err(Fallback)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Key<'_> {
    type Error = Fallback;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Fallback> {
        visitor.visit_str(self.0)
    }

    key_falls_back! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes
        deserialize_byte_buf deserialize_option deserialize_unit deserialize_seq deserialize_map
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Fallback> {
        Err(Fallback)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value, Fallback> {
        Err(Fallback)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Fallback> {
        Err(Fallback)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Fallback> {
        Err(Fallback)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Fallback> {
        Err(Fallback)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Fallback> {
        Err(Fallback)
    }

    serde::forward_to_deserialize_any! { str string identifier ignored_any }
}

struct Variant<'r, 'a> {
    name: &'a str,
    content: Dec<'r, 'a>,
}

impl<'de, 'r, 'a> de::EnumAccess<'de> for Variant<'r, 'a> {
    type Error = Fallback;
    type Variant = Dec<'r, 'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Dec<'r, 'a>), Fallback> {
        let v = seed.deserialize(Key(self.name))?;
        Ok((v, self.content))
    }
}

impl<'de> de::VariantAccess<'de> for Dec<'_, '_> {
    type Error = Fallback;

    fn unit_variant(self) -> Result<(), Fallback> {
        // `Value` accepts `{"Name": null}` for a unit variant.
        if self.r.u8()? == 0xc0 {
            Ok(())
        } else {
            Err(Fallback)
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Fallback> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Fallback> {
        de::Deserializer::deserialize_any(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Fallback> {
        de::Deserializer::deserialize_any(self, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::payload::{encode_value, tests::arb_value};
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;
    use serde_json::{json, Value};
    use std::collections::{BTreeMap, HashMap};

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(v, &mut out).unwrap();
        out
    }

    /// The direct path agrees with the `Value` path whenever it answers.
    fn agrees<T: DeserializeOwned + PartialEq + fmt::Debug>(v: &Value) {
        let bytes = enc(v);
        let via_value = serde_json::from_value::<T>(v.clone()).ok();
        if let Ok(direct) = decode_direct::<T>(&bytes) {
            assert_eq!(Some(direct), via_value, "for {v}");
        }
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Shape {
        Unit,
        New(u32),
        Tuple(i8, String),
        Struct { a: Option<f64>, b: Vec<bool> },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Order {
        id: u64,
        qty: i32,
        price: f64,
        note: Option<String>,
        tags: Vec<String>,
        shape: Shape,
        #[serde(default)]
        extra: BTreeMap<String, i64>,
    }

    #[test]
    fn typical_payloads_decode_directly_and_equal_the_value_path() {
        let v = json!({
            "id": 7, "qty": -3, "price": 2, "note": null, "tags": ["a", "bb"],
            "shape": {"Struct": {"a": 1.5, "b": [true]}}, "extra": {"x": -1}
        });
        let direct: Order = decode_direct(&enc(&v)).expect("direct path");
        assert_eq!(direct, serde_json::from_value::<Order>(v).unwrap());
        for shape in [
            json!("Unit"),
            json!({"Unit": null}),
            json!({"New": 5}),
            json!({"Tuple": [-1, "x"]}),
        ] {
            let direct: Shape = decode_direct(&enc(&shape)).expect("direct path");
            assert_eq!(direct, serde_json::from_value::<Shape>(shape).unwrap());
        }
    }

    #[test]
    fn what_the_value_path_must_decide_falls_back() {
        // Integer map keys, unread sequence elements, a wrong type, trailing bytes.
        assert!(decode_direct::<HashMap<u32, u8>>(&enc(&json!({"1": 2}))).is_err());
        assert!(decode_direct::<(u8,)>(&enc(&json!([1, 2]))).is_err());
        assert!(decode_direct::<u8>(&enc(&json!("x"))).is_err());
        let mut bytes = enc(&json!(1));
        bytes.push(0xc0);
        assert!(decode_direct::<u8>(&bytes).is_err());
        assert!(decode_direct::<f64>(&[0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_values_agree(v in arb_value()) {
            agrees::<Value>(&v);
            agrees::<Vec<Value>>(&v);
            agrees::<BTreeMap<String, Value>>(&v);
            agrees::<Option<i64>>(&v);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_direct::<Value>(&bytes);
            let _ = decode_direct::<Order>(&bytes);
        }
    }
}
