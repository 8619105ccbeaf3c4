//! serde helpers that write `u128` ids as 16 big-endian bytes (a binary blob
//! in MessagePack, an array of 16 numbers in JSON), for `#[serde(with = ...)]`.
//!
//! Big-endian so that byte order matches numeric (and UUIDv7 time) order.
//! These shape only serde output; the store's own disk format is `store::format`.

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

struct U128Visitor;

impl<'de> Visitor<'de> for U128Visitor {
    type Value = u128;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("16 bytes for u128")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<u128, E> {
        let arr: [u8; 16] = v
            .try_into()
            .map_err(|_| E::invalid_length(v.len(), &self))?;
        Ok(u128::from_be_bytes(arr))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u128, A::Error> {
        let mut arr = [0u8; 16];
        for (i, slot) in arr.iter_mut().enumerate() {
            *slot = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(17, &self));
        }
        Ok(u128::from_be_bytes(arr))
    }
}

/// `u128` as 16 big-endian bytes.
pub mod u128_bytes {
    use super::*;

    /// Serialize as bytes.
    ///
    /// # Errors
    /// Whatever the serializer reports.
    pub fn serialize<S: Serializer>(val: &u128, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_bytes(&val.to_be_bytes())
    }

    /// Deserialize from exactly 16 bytes (a byte string or a sequence of 16 numbers).
    ///
    /// # Errors
    /// Any other length or shape.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<u128, D::Error> {
        de.deserialize_bytes(U128Visitor)
    }
}

/// `Option<u128>`: `None` as nil, `Some` as 16 big-endian bytes.
pub mod option_u128_bytes {
    use super::*;

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<u128>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null or 16 bytes for u128")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
            super::u128_bytes::deserialize(de).map(Some)
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            U128Visitor.visit_bytes(v).map(Some)
        }
    }

    /// Serialize `None` as nil and `Some` as bytes.
    ///
    /// # Errors
    /// Whatever the serializer reports.
    pub fn serialize<S: Serializer>(val: &Option<u128>, ser: S) -> Result<S::Ok, S::Error> {
        match val {
            Some(v) => ser.serialize_some(&Bytes16(*v)),
            None => ser.serialize_none(),
        }
    }

    /// Deserialize nil or 16 bytes.
    ///
    /// # Errors
    /// Any other shape.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u128>, D::Error> {
        de.deserialize_option(OptVisitor)
    }
}

/// `Vec<u128>` as a sequence of 16-byte big-endian arrays.
pub mod vec_u128_bytes {
    use super::*;
    use serde::ser::SerializeSeq;
    use serde::Deserialize;

    /// Serialize each id as a `[u8; 16]` array.
    ///
    /// # Errors
    /// Whatever the serializer reports.
    pub fn serialize<S: Serializer>(val: &[u128], ser: S) -> Result<S::Ok, S::Error> {
        let mut seq = ser.serialize_seq(Some(val.len()))?;
        for v in val {
            seq.serialize_element(&v.to_be_bytes())?;
        }
        seq.end()
    }

    /// Deserialize a sequence of `[u8; 16]` arrays.
    ///
    /// # Errors
    /// Any element that is not 16 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<u128>, D::Error> {
        let raw: Vec<[u8; 16]> = Vec::deserialize(de)?;
        Ok(raw.into_iter().map(u128::from_be_bytes).collect())
    }
}

/// Adapter so `serialize_some` can emit bytes.
struct Bytes16(u128);

impl serde::Serialize for Bytes16 {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_bytes(&self.0.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Ids {
        #[serde(with = "super::u128_bytes")]
        a: u128,
        #[serde(with = "super::option_u128_bytes")]
        b: Option<u128>,
        #[serde(with = "super::option_u128_bytes")]
        c: Option<u128>,
        #[serde(with = "super::vec_u128_bytes")]
        d: Vec<u128>,
    }

    fn sample() -> Ids {
        Ids {
            a: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            b: Some(u128::MAX),
            c: None,
            d: vec![1, 2, u128::MAX],
        }
    }

    #[test]
    fn json_round_trip_and_shape() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(json["a"][0], 1);
        assert_eq!(json["a"][15], 16);
        assert_eq!(json["a"].as_array().unwrap().len(), 16);
        assert!(json["c"].is_null());
        let back: Ids = serde_json::from_value(json).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn big_endian_order() {
        #[derive(Serialize)]
        struct One(#[serde(with = "super::u128_bytes")] u128);
        let json = serde_json::to_string(&One(1)).unwrap();
        assert_eq!(json, "[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1]");
    }

    #[test]
    fn wrong_lengths_are_rejected() {
        let bad = serde_json::json!({"a": [1, 2, 3], "b": null, "c": null, "d": []});
        assert!(serde_json::from_value::<Ids>(bad).is_err());
        let long: Vec<u8> = vec![0; 17];
        let bad = serde_json::json!({"a": long, "b": null, "c": null, "d": []});
        assert!(serde_json::from_value::<Ids>(bad).is_err());
    }
}
