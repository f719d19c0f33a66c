//! A row as any `T: Deserialize`: the typed view of a dynamic row, without a
//! trip through JSON text.
//!
//! The values arrive as the row's JSON line would give them (`Int` and
//! `Timestamp` as integers, `Float` as a float, `Decimal` as the float its
//! text reads as, `Null` as a unit / `None`), so a struct reads the same
//! fields from [`from_row`] as from `serde_json::from_str` of the line.

use serde::de::value::{Error, MapDeserializer};
use serde::de::{DeserializeOwned, Deserializer, IntoDeserializer, Visitor};

use super::Value;

/// Reads `T` from the named columns of a row (`names[i]` is the field of
/// `row[i]`).
///
/// # Errors
/// A field of `T` that the row lacks, or a value of the wrong type for its
/// field (as `serde_json` would refuse it).
///
/// # Examples
/// ```
/// use streamforge_sources::row::{from_row, Value};
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Hit { service: String, cnt: u64, avg: f64, note: Option<String> }
/// let names = ["service", "cnt", "avg", "note"].map(String::from);
/// let row = vec![Value::str("cart"), Value::Int(3), Value::Float(1.5), Value::Null];
/// let hit: Hit = from_row(&names, &row).unwrap();
/// assert_eq!(hit, Hit { service: "cart".into(), cnt: 3, avg: 1.5, note: None });
/// // A negative count does not fit a u64, as in JSON.
/// let bad = vec![Value::str("cart"), Value::Int(-1), Value::Float(1.5), Value::Null];
/// assert!(from_row::<Hit>(&names, &bad).is_err());
/// ```
pub fn from_row<T: DeserializeOwned>(names: &[String], row: &[Value]) -> Result<T, Error> {
    let fields = names
        .iter()
        .map(String::as_str)
        .zip(row.iter().map(ValueDe));
    T::deserialize(MapDeserializer::new(fields))
}

/// One value as a deserializer.
struct ValueDe<'a>(&'a Value);

impl<'de> IntoDeserializer<'de, Error> for ValueDe<'_> {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for ValueDe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) | Value::Timestamp(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Decimal(d) => {
                let text = d.to_string();
                visitor.visit_f64(text.parse().map_err(serde::de::Error::custom)?)
            }
            Value::Str(s) => visitor.visit_str(s),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Wide {
        s: String,
        i: i64,
        u: u64,
        f: f64,
        b: bool,
        o: Option<f64>,
    }

    proptest! {
        /// `from_row` reads what `serde_json` reads from the row's JSON line.
        #[test]
        fn from_row_agrees_with_the_json_line(
            s in "\\PC{0,8}", i in any::<i64>(), f in -1e12f64..1e12,
            b in any::<bool>(), o in proptest::option::of(-1e3f64..1e3),
            d in (any::<i64>(), 0u32..6),
        ) {
            let names: Vec<String> = ["s", "i", "u", "f", "b", "o"].map(String::from).into();
            let dec = rust_decimal::Decimal::new(d.0, d.1);
            let row = vec![
                Value::str(&s), Value::Int(i), Value::Timestamp(i), Value::Float(f),
                Value::Bool(b), o.map_or(Value::Null, Value::Float),
            ];
            let mut line = Vec::from(&b"{"[..]);
            for (k, (n, v)) in names.iter().zip(&row).enumerate() {
                if k > 0 { line.push(b','); }
                serde_json::to_writer(&mut line, n).unwrap();
                line.push(b':');
                v.write_json(&mut line);
            }
            line.push(b'}');
            let json = serde_json::from_slice::<Wide>(&line).map_err(|e| e.to_string());
            let direct = from_row::<Wide>(&names, &row).map_err(|e| e.to_string());
            prop_assert_eq!(json.is_ok(), direct.is_ok(), "{:?} vs {:?}", json, direct);
            if let (Ok(a), Ok(b)) = (json, direct) { prop_assert_eq!(a, b); }
            // A decimal reads as the float of its text.
            let one = vec!["f".to_string()];
            #[derive(serde::Deserialize)]
            struct F { f: f64 }
            let mut l = b"{\"f\":".to_vec();
            Value::Decimal(dec).write_json(&mut l);
            l.push(b'}');
            let via_json = serde_json::from_slice::<F>(&l).unwrap().f;
            prop_assert_eq!(from_row::<F>(&one, &[Value::Decimal(dec)]).unwrap().f.to_bits(), via_json.to_bits());
        }
    }
}
