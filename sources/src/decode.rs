//! Decoding of JSON lines and CSV rows into slot values, without allocating for
//! fields that are not mapped or need no unescaping.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// One decoded input value.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Val<'a> {
    /// The field was not present.
    #[default]
    Missing,
    /// JSON null.
    Null,
    /// A string (CSV fields are always strings).
    Str(Cow<'a, str>),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl Val<'_> {
    /// Missing, null, empty or `NA`.
    pub fn is_absent(&self) -> bool {
        match self {
            Val::Missing | Val::Null => true,
            Val::Str(s) => s.is_empty() || s.as_ref() == "NA",
            _ => false,
        }
    }
    /// The value as a float (strings are parsed).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Val::U64(x) => Some(*x as f64),
            Val::I64(x) => Some(*x as f64),
            Val::F64(x) => Some(*x),
            Val::Str(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
    /// The value as a boolean (`true/false`, `1/0`, numbers ≠ 0).
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Val::Bool(b) => Some(*b),
            Val::U64(x) => Some(*x != 0),
            Val::I64(x) => Some(*x != 0),
            Val::Str(s) => match s.trim() {
                "true" | "True" | "TRUE" | "1" => Some(true),
                "false" | "False" | "FALSE" | "0" | "" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
    /// The value as text (`None` when missing or null).
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Val::Missing | Val::Null => None,
            Val::Str(s) => Some(Cow::Borrowed(s.as_ref())),
            Val::U64(x) => Some(Cow::Owned(x.to_string())),
            Val::I64(x) => Some(Cow::Owned(x.to_string())),
            Val::F64(x) => Some(Cow::Owned(x.to_string())),
            Val::Bool(x) => Some(Cow::Owned(x.to_string())),
        }
    }
}

/// Decodes one JSON object line, filling `vals[i]` with the value of field
/// `slots[i]`; other fields are skipped.
///
/// # Errors
/// The JSON error as text, for the dead-letter reason.
///
/// # Examples
/// ```
/// use streamforge_sources::decode::{decode_json, Val};
/// let slots = vec!["ts".to_string(), "svc".to_string()];
/// let mut vals = vec![Val::Missing, Val::Missing];
/// decode_json(br#"{"svc":"cart","x":[1,2],"ts":17}"#, &slots, &mut vals).unwrap();
/// assert_eq!(vals[0], Val::U64(17));
/// assert_eq!(vals[1].text().as_deref(), Some("cart"));
/// assert!(decode_json(b"{not json", &slots, &mut vals).is_err());
/// ```
pub fn decode_json<'a>(
    line: &'a [u8],
    slots: &[String],
    vals: &mut [Val<'a>],
) -> Result<(), String> {
    // Validating UTF-8 once per line is cheaper than per string inside the parser.
    let line = std::str::from_utf8(line).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let mut de = serde_json::Deserializer::from_str(line);
    serde::Deserializer::deserialize_map(&mut de, ObjectVisitor { slots, vals })
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

struct ObjectVisitor<'s, 'v, 'a> {
    slots: &'s [String],
    vals: &'v mut [Val<'a>],
}

impl<'de> Visitor<'de> for ObjectVisitor<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(slot) = map.next_key_seed(KeySeed(self.slots))? {
            match slot {
                Some(i) => self.vals[i] = map.next_value_seed(ValSeed)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct KeySeed<'s>(&'s [String]);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|s| s == v))
    }
}

struct ValSeed;

impl<'de> DeserializeSeed<'de> for ValSeed {
    type Value = Val<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Val<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValSeed {
    type Value = Val<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number, boolean or null")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Val<'de>, E> {
        Ok(Val::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Val<'de>, E> {
        Ok(Val::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Val<'de>, E> {
        Ok(if v >= 0 {
            Val::U64(v as u64)
        } else {
            Val::I64(v)
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Val<'de>, E> {
        Ok(Val::F64(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Val<'de>, E> {
        Ok(Val::Bool(v))
    }
    fn visit_unit<E>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }
    fn visit_none<E>(self) -> Result<Val<'de>, E> {
        Ok(Val::Null)
    }
}
