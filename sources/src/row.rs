//! Dynamic rows over a declared schema: the record model of job files.
//!
//! A [`Schema`] is a list of typed [`Column`]s (string, int, float, decimal,
//! bool, timestamp; nullable; with defaults and bounds). A [`Row`] holds one
//! [`Value`] per column, in schema order. [`RowDecoder`] reads rows from JSON
//! objects (file lines, Kafka message values) and CSV rows, and **validates**
//! every value against its column, never coercing:
//!
//! * a string where a number is expected (`"duration_ms": "NaN"`), a number
//!   where a string is expected, a fraction for an int column, are rejected;
//! * numbers out of range are rejected (`99999999999999999999` as an int or a
//!   millisecond timestamp, `1e400` as a float), as are timestamps before
//!   1970 or after 9999 and values outside a column's `min`/`max`;
//! * decimals are exact: parsed from the number's text (`19.99` stays
//!   `19.99`), so sums are identical in any order;
//! * a missing field takes the column's default, else null when the column
//!   is nullable, else the row is rejected; an explicit `null` in a column
//!   that is not nullable is rejected.
//!
//! Optionally (`max-future`), an event time more than a bound ahead of the
//! partition's largest event time so far is rejected, so one bad record
//! cannot close every window. The rejection reason names the column.
//!
//! Rejected rows become dead letters (with the raw bytes) in the connector.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use streamforge_dataflow::EventTime;

use crate::record::{CsvDecoder, RecordDecoder};

mod de;
mod shape;

pub use de::from_row;
pub use rust_decimal::Decimal;

/// The largest timestamp accepted: 9999-12-31T23:59:59.999Z, in ms.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Column types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float (finite values only).
    Float,
    /// Exact decimal (up to 28 significant digits), `rust_decimal`.
    Decimal,
    /// `true` / `false`.
    Bool,
    /// Milliseconds since the Unix epoch (read in the column's `unit`).
    Timestamp,
}

impl ColumnType {
    /// The SQL-ish name (`string`, `int`, …).
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Int => "int",
            ColumnType::Float => "float",
            ColumnType::Decimal => "decimal",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp",
        }
    }

    /// Numeric types (int, float, decimal).
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Int | ColumnType::Float | ColumnType::Decimal
        )
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One value of a row.
///
/// Equality, order and hashing are total and identical in every process
/// (floats by `total_cmp` and their bits, decimals numerically: `1.0 == 1.00`),
/// so values can be keys, distinct sets and min/max. Values of different
/// types order by type (null first).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// An exact decimal.
    Decimal(#[serde(with = "decimal_bytes")] Decimal),
    /// A string.
    Str(Arc<str>),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
}

mod decimal_bytes {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&d.serialize())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        let bytes: Vec<u8> = Deserialize::deserialize(d)?;
        let raw: [u8; 16] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a decimal is 16 bytes"))?;
        Ok(Decimal::deserialize(raw))
    }
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Decimal(_) => 4,
            Value::Str(_) => 5,
            Value::Timestamp(_) => 6,
        }
    }

    /// `true` for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type of a non-null value.
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => ColumnType::Bool,
            Value::Int(_) => ColumnType::Int,
            Value::Float(_) => ColumnType::Float,
            Value::Decimal(_) => ColumnType::Decimal,
            Value::Str(_) => ColumnType::String,
            Value::Timestamp(_) => ColumnType::Timestamp,
        })
    }

    /// A string value.
    pub fn str(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }

    /// Appends the value as JSON (decimals as exact JSON numbers, null as
    /// `null`, timestamps as integer ms).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) | Value::Timestamp(i) => write!(out, "{i}").expect("vec"),
            Value::Float(f) => serde_json::to_writer(&mut *out, f).expect("vec"),
            Value::Decimal(d) => write!(out, "{d}").expect("vec"),
            Value::Str(s) => serde_json::to_writer(&mut *out, &**s).expect("vec"),
        }
    }

    /// The value as CSV field text (null: empty).
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) | Value::Timestamp(i) => i.to_string(),
            Value::Float(f) => serde_json::to_string(f).expect("finite float"),
            Value::Decimal(d) => d.to_string(),
            Value::Str(s) => s.to_string(),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            // Interned strings (the decoder's) compare by pointer first.
            (Value::Str(a), Value::Str(b)) => Arc::ptr_eq(a, b) || a == b,
            (Value::Int(a), Value::Int(b)) | (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
            _ => self.cmp(other) == Ordering::Equal,
        }
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) | (Value::Timestamp(a), Value::Timestamp(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Decimal(a), Value::Decimal(b)) => a.cmp(b),
            (Value::Str(a), Value::Str(b)) if Arc::ptr_eq(a, b) => Ordering::Equal,
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Value {
    /// The bytes the value's `Hash` writes, handed to `put` in pieces: the
    /// type's rank byte, then the value native-endian (an `i64`, a float's
    /// bits, a bool's byte, a decimal's normalized mantissa `i128` and
    /// scale `u32`, a string's bytes and `0xff`). What `Hasher::write_u8`,
    /// `write_i64`, … write, so a caller that gathers these bytes itself
    /// (a row key's one-buffer hash) gets the value `stable_hash` gives.
    ///
    /// # Examples
    /// ```
    /// use streamforge_dataflow::hash::{stable_hash, stable_hash_bytes};
    /// use streamforge_sources::row::Value;
    /// let mut bytes = Vec::new();
    /// Value::str("cart").hash_bytes(|b| bytes.extend_from_slice(b));
    /// assert_eq!(bytes, b"\x05cart\xff");
    /// assert_eq!(stable_hash(&Value::str("cart")), stable_hash_bytes(&bytes));
    /// ```
    #[inline]
    pub fn hash_bytes(&self, mut put: impl FnMut(&[u8])) {
        put(&[self.rank()]);
        match self {
            Value::Null => {}
            Value::Bool(b) => put(&[*b as u8]),
            Value::Int(i) | Value::Timestamp(i) => put(&i.to_ne_bytes()),
            Value::Float(f) => put(&f.to_bits().to_ne_bytes()),
            Value::Decimal(d) => {
                let n = d.normalize();
                put(&n.mantissa().to_ne_bytes());
                put(&n.scale().to_ne_bytes());
            }
            Value::Str(s) => {
                put(s.as_bytes());
                put(&[0xff]);
            }
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.hash_bytes(|b| h.write(b));
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Str(s) => write!(f, "{s:?}"),
            v => f.write_str(&v.to_text()),
        }
    }
}

/// A row: one value per schema column, in schema order.
pub type Row = Vec<Value>;

/// Units of a timestamp column's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Seconds.
    S,
    /// Milliseconds (default).
    #[default]
    Ms,
    /// Microseconds (floored to ms).
    Us,
    /// Nanoseconds (floored to ms).
    Ns,
}

/// A literal in a job file (`default`, `min`, `max`), converted to the
/// column's type when the schema is built.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (also the text of decimals: `"0.00"`).
    Str(String),
}

/// One declared column.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Column {
    /// Column name (used by expressions, keys and sinks).
    pub name: String,
    /// The type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
    /// The input field (JSON key or CSV header) when it differs from `name`.
    pub field: Option<String>,
    /// Whether the column may be null (default: no).
    #[serde(default)]
    pub nullable: bool,
    /// The value of a missing field (field completion).
    pub default: Option<Literal>,
    /// Smallest accepted value (numeric and timestamp columns).
    pub min: Option<Literal>,
    /// Largest accepted value.
    pub max: Option<Literal>,
    /// Input unit of a timestamp column (default ms).
    #[serde(default)]
    pub unit: TimeUnit,
}

impl Column {
    /// A non-nullable column of `ty` read from the field `name`.
    pub fn new(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.to_string(),
            ty,
            field: None,
            nullable: false,
            default: None,
            min: None,
            max: None,
            unit: TimeUnit::Ms,
        }
    }

    /// The input field name.
    pub fn field(&self) -> &str {
        self.field.as_deref().unwrap_or(&self.name)
    }
}

struct Bound {
    default: Option<Value>,
    min: Option<Value>,
    max: Option<Value>,
    /// `[min, max]` of an int or timestamp column as integers (the fast
    /// path's check; unbounded ends at `i64::MIN`/`i64::MAX`).
    ints: (i64, i64),
}

/// A validated list of columns.
pub struct Schema {
    columns: Vec<Column>,
    bounds: Vec<Bound>,
    by_field: HashMap<String, usize>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.columns.iter().map(|c| (&c.name, c.ty)))
            .finish()
    }
}

impl Schema {
    /// Checks the columns (unique names and fields, defaults and bounds of
    /// the column's type).
    ///
    /// # Errors
    /// The first problem, naming the column.
    pub fn new(columns: Vec<Column>) -> Result<Schema, String> {
        let mut by_field = HashMap::new();
        let mut names = std::collections::HashSet::new();
        let mut bounds = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            if !names.insert(c.name.clone()) {
                return Err(format!("column `{}` is declared twice", c.name));
            }
            if by_field.insert(c.field().to_string(), i).is_some() {
                return Err(format!("field `{}` is read by two columns", c.field()));
            }
            let lit = |l: &Option<Literal>, what: &str| -> Result<Option<Value>, String> {
                l.as_ref()
                    .map(|l| {
                        literal_value(l, c.ty)
                            .map_err(|e| format!("column `{}`: {what}: {e}", c.name))
                    })
                    .transpose()
            };
            let (min, max) = (lit(&c.min, "min")?, lit(&c.max, "max")?);
            let int = |v: &Option<Value>, none: i64| match v {
                Some(Value::Int(i) | Value::Timestamp(i)) => *i,
                _ => none,
            };
            let b = Bound {
                default: lit(&c.default, "default")?,
                ints: (int(&min, i64::MIN), int(&max, i64::MAX)),
                min,
                max,
            };
            if (b.min.is_some() || b.max.is_some())
                && !(c.ty.is_numeric() || c.ty == ColumnType::Timestamp)
            {
                return Err(format!(
                    "column `{}`: min/max need a numeric or timestamp column, not {}",
                    c.name, c.ty
                ));
            }
            bounds.push(b);
        }
        Ok(Schema {
            columns,
            bounds,
            by_field,
        })
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The index of the column named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The column that reads JSON field `field`: a scan of the field names
    /// for small schemas (cheaper than hashing the key), the map otherwise.
    fn column_of_field(&self, field: &str) -> Option<usize> {
        if self.columns.len() <= 16 {
            self.columns.iter().position(|c| c.field() == field)
        } else {
            self.by_field.get(field).copied()
        }
    }

    /// A missing field: the default, null, or an error.
    fn missing(&self, i: usize) -> Result<Value, String> {
        let c = &self.columns[i];
        match (&self.bounds[i].default, c.nullable) {
            (Some(v), _) => Ok(v.clone()),
            (None, true) => Ok(Value::Null),
            (None, false) => Err(format!(
                "column `{}`: missing field `{}`",
                c.name,
                c.field()
            )),
        }
    }

    fn null(&self, i: usize) -> Result<Value, String> {
        let c = &self.columns[i];
        if c.nullable {
            Ok(Value::Null)
        } else {
            Err(format!(
                "column `{}`: null in a column that is not nullable",
                c.name
            ))
        }
    }

    fn check_bounds(&self, i: usize, v: Value) -> Result<Value, String> {
        let b = &self.bounds[i];
        if let Some(min) = &b.min {
            if v < *min {
                return Err(format!(
                    "column `{}`: {v} is below min {min}",
                    self.columns[i].name
                ));
            }
        }
        if let Some(max) = &b.max {
            if v > *max {
                return Err(format!(
                    "column `{}`: {v} is above max {max}",
                    self.columns[i].name
                ));
            }
        }
        Ok(v)
    }

    /// Parses the JSON text of field `i` (a raw JSON value).
    fn parse_json(&self, i: usize, raw: &str, strings: &mut StrCache) -> Result<Value, String> {
        let c = &self.columns[i];
        if raw == "null" {
            return self.null(i);
        }
        let first = raw.as_bytes()[0];
        let got = || match first {
            b'"' => format!("string {}", shorten(raw)),
            b't' | b'f' => format!("bool {raw}"),
            b'{' => "an object".to_string(),
            b'[' => "an array".to_string(),
            _ => format!("number {}", shorten(raw)),
        };
        let wrong = || format!("column `{}`: expected {}, got {}", c.name, c.ty, got());
        let is_number = first == b'-' || first.is_ascii_digit();
        let v = match c.ty {
            ColumnType::String => {
                if first != b'"' {
                    return Err(wrong());
                }
                let body = &raw[1..raw.len() - 1];
                if body.contains('\\') {
                    let s: String = serde_json::from_str(raw).map_err(|e| e.to_string())?;
                    Value::Str(Arc::from(s))
                } else {
                    strings.intern(body)
                }
            }
            ColumnType::Bool => match raw {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(wrong()),
            },
            ColumnType::Int | ColumnType::Timestamp | ColumnType::Float | ColumnType::Decimal
                if !is_number =>
            {
                return Err(wrong())
            }
            _ => self.parse_number(i, raw)?,
        };
        self.check_bounds(i, v)
    }

    /// Parses number text (JSON number or CSV field) for numeric and
    /// timestamp columns.
    fn parse_number(&self, i: usize, text: &str) -> Result<Value, String> {
        let c = &self.columns[i];
        let integral = !text.contains(['.', 'e', 'E']);
        let range = || {
            format!(
                "column `{}`: {} is out of range for {}",
                c.name,
                shorten(text),
                c.ty
            )
        };
        let not = |what: &str| {
            format!(
                "column `{}`: expected {}, got {}",
                c.name,
                what,
                shorten(text)
            )
        };
        match c.ty {
            ColumnType::Int => {
                if !integral {
                    return Err(not("int"));
                }
                match text.parse::<i64>() {
                    Ok(v) => Ok(Value::Int(v)),
                    Err(_) if is_integer_text(text) => Err(range()),
                    Err(_) => Err(not("int")),
                }
            }
            ColumnType::Timestamp => {
                if !integral {
                    return Err(not("an integer timestamp"));
                }
                let v: i64 = match text.parse::<i64>() {
                    Ok(v) => v,
                    Err(_) if is_integer_text(text) => return Err(range()),
                    Err(_) => return Err(not("an integer timestamp")),
                };
                timestamp_ms(c.unit, v)
                    .map(Value::Timestamp)
                    .ok_or_else(range)
            }
            ColumnType::Float => match text.parse::<f64>() {
                Ok(f) if f.is_finite() && looks_numeric(text) => Ok(Value::Float(f)),
                Ok(_) if looks_numeric(text) => Err(range()),
                _ => Err(not("float")),
            },
            ColumnType::Decimal => {
                if !looks_numeric(text) {
                    return Err(not("decimal"));
                }
                let d = if integral || !text.contains(['e', 'E']) {
                    Decimal::from_str_exact(text)
                } else {
                    Decimal::from_scientific(text)
                };
                d.map(Value::Decimal).map_err(|_| range())
            }
            _ => unreachable!("parse_number on {}", c.ty),
        }
    }

    /// Parses the CSV text of field `i` (empty: null).
    fn parse_text(&self, i: usize, text: &str, strings: &mut StrCache) -> Result<Value, String> {
        let c = &self.columns[i];
        if text.is_empty() && c.ty != ColumnType::String {
            return self.missing(i);
        }
        let (lo, hi) = self.bounds[i].ints;
        let v = match c.ty {
            // No bounds on strings (checked by `Schema::new`).
            ColumnType::String => return Ok(strings.intern(text)),
            // The common case first: an integer in range (anything else
            // goes the long way, for the exact reason).
            ColumnType::Int => match text.parse::<i64>() {
                Ok(v) if (lo..=hi).contains(&v) => return Ok(Value::Int(v)),
                _ => self.parse_number(i, text)?,
            },
            ColumnType::Timestamp => match text
                .parse::<i64>()
                .ok()
                .and_then(|v| timestamp_ms(c.unit, v))
            {
                Some(v) if (lo..=hi).contains(&v) => return Ok(Value::Timestamp(v)),
                _ => self.parse_number(i, text)?,
            },
            ColumnType::Bool => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => {
                    return Err(format!(
                        "column `{}`: expected bool, got {}",
                        c.name,
                        shorten(text)
                    ))
                }
            },
            _ => self.parse_number(i, text)?,
        };
        self.check_bounds(i, v)
    }
}

/// Integer `v` as a value of int or timestamp column `i`, if within the
/// column's bounds (`None`: another type, or out of bounds).
#[inline]
fn int_value(schema: &Schema, i: usize, v: i64) -> Option<Value> {
    let (lo, hi) = schema.bounds[i].ints;
    match schema.columns[i].ty {
        ColumnType::Int => Some(v).filter(|v| (lo..=hi).contains(v)).map(Value::Int),
        ColumnType::Timestamp => timestamp_ms(schema.columns[i].unit, v)
            .filter(|v| (lo..=hi).contains(v))
            .map(Value::Timestamp),
        _ => None,
    }
}

/// `v` in `unit` as milliseconds, if within 1970..=9999.
fn timestamp_ms(unit: TimeUnit, v: i64) -> Option<i64> {
    let ms = match unit {
        TimeUnit::S => v.checked_mul(1000),
        TimeUnit::Ms => Some(v),
        TimeUnit::Us => Some(v.div_euclid(1000)),
        TimeUnit::Ns => Some(v.div_euclid(1_000_000)),
    };
    ms.filter(|ms| (0..=MAX_TIMESTAMP_MS).contains(ms))
}

/// `-?[0-9]+`
fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Number text (rejects `NaN`, `inf`, `+1`, which Rust's parsers accept).
fn looks_numeric(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    body.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
}

fn shorten(s: &str) -> String {
    if s.len() <= 40 {
        s.to_string()
    } else {
        let mut end = 40;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// Converts a job-file literal to a value of `ty` (exactly: no rounding, no
/// parsing of numbers from strings except decimals and timestamps).
///
/// # Errors
/// The literal does not fit the type.
pub fn literal_value(l: &Literal, ty: ColumnType) -> Result<Value, String> {
    let bad = || format!("{l:?} is not a {ty}");
    Ok(match (ty, l) {
        (ColumnType::String, Literal::Str(s)) => Value::str(s),
        (ColumnType::Bool, Literal::Bool(b)) => Value::Bool(*b),
        (ColumnType::Int, Literal::Int(i)) => Value::Int(*i),
        (ColumnType::Timestamp, Literal::Int(i)) if (0..=MAX_TIMESTAMP_MS).contains(i) => {
            Value::Timestamp(*i)
        }
        (ColumnType::Float, Literal::Int(i)) => Value::Float(*i as f64),
        (ColumnType::Float, Literal::Float(f)) if f.is_finite() => Value::Float(*f),
        (ColumnType::Decimal, Literal::Int(i)) => Value::Decimal(Decimal::from(*i)),
        (ColumnType::Decimal, Literal::Str(s)) => {
            Value::Decimal(Decimal::from_str_exact(s).map_err(|_| bad())?)
        }
        _ => return Err(bad()),
    })
}

/// Decodes rows of a [`Schema`] from JSON objects and CSV rows, with the
/// event time from a timestamp (or int, in ms) column.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use streamforge_sources::record::RecordDecoder;
/// use streamforge_sources::row::{Column, ColumnType, RowDecoder, Schema, Value};
/// let mut amount = Column::new("amount", ColumnType::Decimal);
/// amount.min = Some(streamforge_sources::row::Literal::Int(0));
/// let schema = Arc::new(Schema::new(vec![
///     Column::new("event_time", ColumnType::Timestamp),
///     Column::new("user_id", ColumnType::String),
///     amount,
/// ]).unwrap());
/// let mut d = RowDecoder::new(schema, "event_time", Some(3_600_000)).unwrap();
/// let (t, row) = d.decode(br#"{"event_time": 1000, "user_id": "u1", "amount": 19.99}"#).unwrap();
/// assert_eq!(t, 1000);
/// assert_eq!(row[2].to_text(), "19.99");
/// assert_eq!(row[1], Value::str("u1"));
/// let err = |line: &[u8], d: &mut RowDecoder| d.decode(line).unwrap_err();
/// assert!(err(br#"{"event_time": 1000, "user_id": "u1", "amount": "NaN"}"#, &mut d)
///     .contains("column `amount`: expected decimal, got string"));
/// assert!(err(br#"{"event_time": 99999999999999999999, "user_id": "u", "amount": 1}"#, &mut d)
///     .contains("out of range"));
/// assert!(err(br#"{"event_time": 1000, "user_id": "u1", "amount": -1}"#, &mut d)
///     .contains("below min"));
/// assert!(err(br#"{"event_time": 1000, "amount": 1}"#, &mut d).contains("missing field `user_id`"));
/// // max-future: more than 1 h after the largest event time so far.
/// assert!(err(br#"{"event_time": 3601001, "user_id": "u", "amount": 1}"#, &mut d)
///     .contains("max-future"));
/// ```
pub struct RowDecoder {
    schema: Arc<Schema>,
    event_time: usize,
    max_future_ms: Option<u64>,
    max_seen: Option<EventTime>,
    /// CSV header position of each column (None: not in the header).
    csv_fields: Vec<Option<usize>>,
    /// Interned values of each column (used by string columns).
    strings: Vec<StrCache>,
    /// Room reserved in each row for the columns later steps add.
    spare: usize,
    /// The column of each JSON key position in the last record.
    key_order: [u16; FAST_KEYS],
    /// The layout of the last record the parser accepted
    /// ([`shape::Shape`]), tried first.
    shape: Option<shape::Shape>,
    /// Records in a row whose layout could not be learned; at
    /// [`UNSHAPED`], the decoder stops trying.
    unshaped: u32,
}

/// Records in a row without a learnable layout after which a decoder
/// stops learning (a source of nested or escaped records).
const UNSHAPED: u32 = 64;

/// Interns the values of one string column, so that repeated values (a
/// service, an operator, a city) share one allocation. It holds at most
/// [`StrCache::MAX`] values and stops interning a column whose values
/// rarely repeat (under one hit in four lookups once full).
#[derive(Clone, Debug, Default)]
struct StrCache {
    set: hashbrown::HashSet<Interned>,
    lookups: u64,
    hits: u64,
    off: bool,
}

/// An interned string, hashed and compared as its bytes, so that a lookup
/// by bytes ([`ByBytes`]) needs no UTF-8 check on a hit.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interned(Arc<str>);

impl std::hash::Hash for Interned {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write(self.0.as_bytes());
    }
}

/// A lookup key of [`StrCache`]: text not yet checked to be UTF-8.
struct ByBytes<'a>(&'a [u8]);

impl std::hash::Hash for ByBytes<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write(self.0);
    }
}

impl hashbrown::Equivalent<Interned> for ByBytes<'_> {
    fn equivalent(&self, key: &Interned) -> bool {
        self.0 == key.0.as_bytes()
    }
}

impl StrCache {
    const MAX: usize = 1 << 12;

    fn intern(&mut self, s: &str) -> Value {
        Value::Str(self.intern_arc(s))
    }

    /// The shared `Arc` of `s` (returned in registers, so that the caller
    /// builds the value in place).
    #[inline]
    fn intern_arc(&mut self, s: &str) -> Arc<str> {
        self.intern_bytes(s.as_bytes()).expect("a str is UTF-8")
    }

    /// The shared `Arc` of text `b`, `None` when it is not UTF-8: a value
    /// seen before is found by its bytes, without a UTF-8 check (it equals
    /// one that passed it).
    #[inline]
    fn intern_bytes(&mut self, b: &[u8]) -> Option<Arc<str>> {
        if self.off {
            return std::str::from_utf8(b).ok().map(Arc::from);
        }
        self.lookups += 1;
        if let Some(a) = self.set.get(&ByBytes(b)) {
            self.hits += 1;
            return Some(a.0.clone());
        }
        let a: Arc<str> = Arc::from(std::str::from_utf8(b).ok()?);
        if self.set.len() < Self::MAX {
            self.set.insert(Interned(a.clone()));
        } else if self.hits * 4 < self.lookups {
            self.off = true;
            self.set = Default::default();
        }
        Some(a)
    }
}

impl RowDecoder {
    /// A decoder of `schema` rows whose event time is column `event_time`
    /// (timestamp or int, not nullable); `max_future_ms` rejects event
    /// times further ahead of the partition's largest event time so far.
    ///
    /// # Errors
    /// The event-time column is missing or of another type.
    pub fn new(
        schema: Arc<Schema>,
        event_time: &str,
        max_future_ms: Option<u64>,
    ) -> Result<RowDecoder, String> {
        let i = schema
            .index_of(event_time)
            .ok_or_else(|| format!("event-time column `{event_time}` is not in the schema"))?;
        let c = &schema.columns[i];
        if !matches!(c.ty, ColumnType::Timestamp | ColumnType::Int) || c.nullable {
            return Err(format!(
                "event-time column `{event_time}` must be a timestamp or int that is not nullable"
            ));
        }
        let n = schema.columns.len();
        Ok(RowDecoder {
            schema,
            event_time: i,
            max_future_ms,
            max_seen: None,
            csv_fields: vec![None; n],
            strings: vec![StrCache::default(); n],
            spare: 0,
            key_order: [u16::MAX; FAST_KEYS],
            shape: None,
            unshaped: 0,
        })
    }

    /// Reserves room for `n` more columns in every row (the columns that
    /// later steps append), so they are added without a reallocation.
    pub fn with_spare_columns(mut self, n: usize) -> RowDecoder {
        self.spare = n;
        self
    }

    fn finish(&mut self, row: Row) -> Result<(EventTime, Row), String> {
        let name = &self.schema.columns[self.event_time].name;
        let t = match row[self.event_time] {
            Value::Timestamp(t) | Value::Int(t) if t >= 0 => t as u64,
            ref v => return Err(format!("column `{name}`: {v} is not an event time")),
        };
        if let (Some(bound), Some(max)) = (self.max_future_ms, self.max_seen) {
            if t > max.saturating_add(bound) {
                return Err(format!(
                    "column `{name}`: event time {t} is more than {bound} ms ahead of the \
                     partition's largest event time {max} (max-future)"
                ));
            }
        }
        self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
        Ok((t, row))
    }
}

/// Finds the column of a JSON key: a scan of the field names for small
/// schemas (cheaper than hashing the key), the map otherwise.
struct KeySeed<'a>(&'a Schema);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.column_of_field(v))
    }
}

/// Collects the raw values of the schema's fields of one JSON object into
/// `slots` (one per column).
struct ObjectSeed<'a, 'de> {
    schema: &'a Schema,
    slots: &'a mut [Option<&'de RawValue>],
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key_seed(KeySeed(self.schema))? {
            match k {
                Some(i) => self.slots[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// The fast path of [`RowDecoder`]'s JSON decoding: one pass of a SIMD
/// JSON parser (sonic-rs, through serde) that converts each field with a
/// visitor of its column's type, straight into the row. Any value it does not accept as is (a wrong type, out of range,
/// out of bounds, a null, malformed JSON) aborts it, and the record is
/// decoded again by the slow path, which gives the exact reason; so both
/// paths accept the same records with the same values.
struct FastObject<'a> {
    schema: &'a Schema,
    strings: &'a mut [StrCache],
    row: &'a mut [Value],
    /// Bit `i`: column `i` was read.
    seen: &'a mut u64,
    /// The column of the key at each position in the last object (u16::MAX:
    /// not a column), checked first: records of one source keep an order.
    order: &'a mut [u16; FAST_KEYS],
}

/// Key positions remembered by [`FastObject`].
const FAST_KEYS: usize = 32;

/// "Decode this record on the slow path" (never shown).
const SLOW: &str = "slow path";

impl<'de> DeserializeSeed<'de> for FastObject<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FastObject<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut pos = 0;
        loop {
            let hint = self.order.get(pos).copied().unwrap_or(u16::MAX);
            let Some(k) = map.next_key_seed(FastKey {
                schema: self.schema,
                hint,
            })?
            else {
                return Ok(());
            };
            if let Some(o) = self.order.get_mut(pos) {
                *o = k.map_or(u16::MAX, |i| i as u16);
            }
            pos += 1;
            match k {
                Some(i) => {
                    let ok = map.next_value_seed(FastValue {
                        schema: self.schema,
                        i,
                        strings: &mut self.strings[i],
                        slot: &mut self.row[i],
                    })?;
                    if !ok {
                        return Err(serde::de::Error::custom(SLOW));
                    }
                    *self.seen |= 1 << i;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
}

/// The column of a JSON key, checking the predicted column first.
struct FastKey<'a> {
    schema: &'a Schema,
    hint: u16,
}

impl<'de> DeserializeSeed<'de> for FastKey<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FastKey<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        if let Some(c) = self.schema.columns.get(self.hint as usize) {
            if c.field() == v {
                return Ok(Some(self.hint as usize));
            }
        }
        KeySeed(self.schema).visit_str(v)
    }
}

/// One field's value as a value of column `i`, written into `slot`
/// (`false`: not accepted as is, the slow path). The value is written in
/// place rather than returned: moving an `Option<Value>` out through the
/// parser's `Result` layers cost more than the conversion.
struct FastValue<'a> {
    schema: &'a Schema,
    i: usize,
    strings: &'a mut StrCache,
    slot: &'a mut Value,
}

impl FastValue<'_> {
    fn ty(&self) -> ColumnType {
        self.schema.columns[self.i].ty
    }

    /// Writes `v` into the slot; `true`.
    #[inline]
    fn put(self, v: Value) -> bool {
        *self.slot = v;
        true
    }

    /// An int or timestamp within the column's bounds.
    #[inline]
    fn int(self, v: i64) -> bool {
        int_value(self.schema, self.i, v).is_some_and(|v| self.put(v))
    }
}

impl<'de> DeserializeSeed<'de> for FastValue<'_> {
    type Value = bool;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        if matches!(self.ty(), ColumnType::Decimal | ColumnType::Float) {
            // From the number's text, as on the slow path: decimals exact,
            // floats correctly rounded by `str::parse`.
            let raw = sonic_rs::LazyValue::<'de>::deserialize(d)?;
            let v = self
                .schema
                .parse_json(self.i, raw.as_raw_str(), self.strings);
            return Ok(v.is_ok_and(|v| self.put(v)));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FastValue<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {}", self.ty())
    }
    fn visit_bool<E>(self, v: bool) -> Result<bool, E> {
        Ok(self.ty() == ColumnType::Bool && self.put(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<bool, E> {
        Ok(self.int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<bool, E> {
        Ok(i64::try_from(v).is_ok_and(|v| self.int(v)))
    }
    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        // A fraction or an integer beyond 64 bits for an int or timestamp
        // (floats and decimals are read from their text).
        Ok(false)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<bool, E> {
        Ok(self.ty() == ColumnType::String && {
            let a = self.strings.intern_arc(v);
            self.put(Value::Str(a))
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<bool, E> {
        // Text with escapes (unescaped by the parser into a scratch
        // buffer): not interned, as on the slow path.
        Ok(self.ty() == ColumnType::String && self.put(Value::str(v)))
    }
    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(self.schema.columns[self.i].nullable && self.put(Value::Null))
    }
}

impl RowDecoder {
    /// [`FastObject`]: the row, or `None` for the slow path.
    fn decode_fast(&mut self, text: &str) -> Option<Row> {
        let schema = &*self.schema;
        let n = schema.columns.len();
        if n > 64 {
            return None;
        }
        let mut row = Vec::with_capacity(n + self.spare);
        row.extend((0..n).map(|_| Value::Null));
        let mut seen = 0u64;
        let mut de = sonic_rs::Deserializer::from_str(text);
        FastObject {
            schema,
            strings: &mut self.strings,
            row: &mut row,
            seen: &mut seen,
            order: &mut self.key_order,
        }
        .deserialize(&mut de)
        .ok()?;
        de.end().ok()?;
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        if seen != all {
            for (i, v) in row.iter_mut().enumerate() {
                if seen & (1 << i) == 0 {
                    *v = schema.missing(i).ok()?;
                }
            }
        }
        Some(row)
    }

    /// Every field as raw JSON text, then each converted by its column: the
    /// reference path, with the exact reason of any rejection.
    fn decode_slow(&mut self, text: &str) -> Result<Row, String> {
        let schema = &*self.schema;
        let n = schema.columns.len();
        let mut on_stack: [Option<&RawValue>; 16] = [None; 16];
        let mut on_heap = Vec::new();
        let raw: &mut [Option<&RawValue>] = if n <= 16 {
            &mut on_stack[..n]
        } else {
            on_heap.resize(n, None);
            &mut on_heap
        };
        let mut de = serde_json::Deserializer::from_str(text);
        ObjectSeed {
            schema,
            slots: &mut *raw,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("malformed JSON: {e}"))?;
        let mut row = Vec::with_capacity(n + self.spare);
        for (i, r) in raw.iter().enumerate() {
            row.push(match r {
                Some(r) => schema.parse_json(i, r.get(), &mut self.strings[i])?,
                None => schema.missing(i)?,
            });
        }
        Ok(row)
    }
}

impl RowDecoder {
    /// The row of `bytes` by the learned layout ([`shape::Shape`]), or
    /// `None` (no layout, another layout, or a value to look at closer).
    #[inline]
    fn decode_shape(&mut self, bytes: &[u8]) -> Option<Row> {
        let shape = self.shape.as_ref()?;
        let schema = &*self.schema;
        let n = schema.columns.len();
        let mut row = Vec::with_capacity(n + self.spare);
        row.extend((0..n).map(|_| Value::Null));
        shape.decode(bytes, schema, &mut self.strings, &mut row)?;
        let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        if shape.seen != all {
            for (i, v) in row.iter_mut().enumerate() {
                if shape.seen & (1 << i) == 0 {
                    *v = schema.missing(i).ok()?;
                }
            }
        }
        Some(row)
    }

    /// Learns the layout of `text`, a record the parser accepted.
    fn learn_shape(&mut self, text: &str) {
        if self.unshaped >= UNSHAPED || self.schema.columns.len() > 64 {
            return;
        }
        match shape::Shape::learn(text.as_bytes(), &self.schema) {
            Some(s) => {
                self.shape = Some(s);
                self.unshaped = 0;
            }
            None => self.unshaped += 1,
        }
    }
}

impl RecordDecoder<Row> for RowDecoder {
    fn decode(&mut self, bytes: &[u8]) -> Result<(EventTime, Row), String> {
        if let Some(row) = self.decode_shape(bytes) {
            return self.finish(row);
        }
        // UTF-8 is checked once per record, not per string by the parser.
        let text = std::str::from_utf8(bytes)
            .map_err(|e| format!("malformed JSON: invalid UTF-8: {e}"))?;
        let row = match self.decode_fast(text) {
            Some(row) => row,
            None => self.decode_slow(text)?,
        };
        self.learn_shape(text);
        self.finish(row)
    }

    fn resume(&mut self, max_seen: Option<EventTime>) {
        self.max_seen = max_seen;
    }
}

impl CsvDecoder<Row> for RowDecoder {
    fn bind(&mut self, headers: &csv::ByteRecord) -> Result<(), String> {
        for (i, c) in self.schema.columns.iter().enumerate() {
            self.csv_fields[i] = headers.iter().position(|h| h == c.field().as_bytes());
            if self.csv_fields[i].is_none() && self.schema.missing(i).is_err() {
                return Err(format!(
                    "column `{}`: the header has no field `{}`",
                    c.name,
                    c.field()
                ));
            }
        }
        Ok(())
    }

    fn decode_record(&mut self, record: &csv::ByteRecord) -> Result<(EventTime, Row), String> {
        let schema = &*self.schema;
        let mut row = Vec::with_capacity(self.csv_fields.len() + self.spare);
        for (i, f) in self.csv_fields.iter().enumerate() {
            row.push(match f.and_then(|f| record.get(f)) {
                Some(bytes) => {
                    let text = std::str::from_utf8(bytes).map_err(|_| {
                        format!("column `{}`: invalid UTF-8", schema.columns[i].name)
                    })?;
                    schema.parse_text(i, text, &mut self.strings[i])?
                }
                None => schema.missing(i)?,
            });
        }
        self.finish(row)
    }

    fn resume(&mut self, max_seen: Option<EventTime>) {
        self.max_seen = max_seen;
    }
}

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "string" | "varchar" | "text" => ColumnType::String,
            "int" | "bigint" | "integer" => ColumnType::Int,
            "float" | "double" => ColumnType::Float,
            "decimal" => ColumnType::Decimal,
            "bool" | "boolean" => ColumnType::Bool,
            "timestamp" => ColumnType::Timestamp,
            _ => return Err(format!("unknown column type `{s}`")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schema() -> Arc<Schema> {
        let mut d = Column::new("duration_ms", ColumnType::Int);
        d.min = Some(Literal::Int(0));
        let mut city = Column::new("city", ColumnType::String);
        city.default = Some(Literal::Str("unknown".into()));
        let mut note = Column::new("note", ColumnType::String);
        note.nullable = true;
        Arc::new(
            Schema::new(vec![
                Column::new("ts", ColumnType::Timestamp),
                d,
                Column::new("price", ColumnType::Decimal),
                Column::new("ratio", ColumnType::Float),
                Column::new("ok", ColumnType::Bool),
                city,
                note,
            ])
            .unwrap(),
        )
    }

    fn decode(line: &str) -> Result<Row, String> {
        RowDecoder::new(schema(), "ts", None)
            .unwrap()
            .decode(line.as_bytes())
            .map(|(_, r)| r)
    }

    /// A JSON line with the good fields, `field` replaced by raw JSON text.
    fn line_with(field: &str, raw: &str) -> String {
        let good = [
            ("ts", "5"),
            ("duration_ms", "3"),
            ("price", "1.10"),
            ("ratio", "0.5"),
            ("ok", "true"),
        ];
        let mut parts: Vec<String> = good
            .iter()
            .filter(|(k, _)| *k != field)
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        if !raw.is_empty() {
            parts.push(format!("\"{field}\": {raw}"));
        }
        format!("{{{}}}", parts.join(", "))
    }

    #[test]
    fn every_bad_value_names_its_column_and_reason() {
        let row = decode(&line_with("none", "")).unwrap();
        assert_eq!(row[2].to_text(), "1.10", "decimals keep their text");
        assert_eq!(
            row[5],
            Value::str("unknown"),
            "default fills a missing field"
        );
        assert_eq!(row[6], Value::Null, "nullable missing field is null");
        let cases = [
            (
                "duration_ms",
                "\"NaN\"",
                "column `duration_ms`: expected int, got string",
            ),
            ("duration_ms", "1.5", "column `duration_ms`: expected int"),
            (
                "duration_ms",
                "-1",
                "column `duration_ms`: -1 is below min 0",
            ),
            (
                "duration_ms",
                "99999999999999999999",
                "column `duration_ms`: 99999999999999999999 is out of range",
            ),
            ("duration_ms", "null", "column `duration_ms`: null"),
            ("duration_ms", "", "column `duration_ms`: missing field"),
            (
                "price",
                "\"1.10\"",
                "column `price`: expected decimal, got string",
            ),
            ("price", "1e40", "column `price`: 1e40 is out of range"),
            ("ratio", "1e400", "column `ratio`: 1e400 is out of range"),
            ("ok", "1", "column `ok`: expected bool, got number"),
            ("city", "7", "column `city`: expected string, got number"),
            (
                "ts",
                "99999999999999999999",
                "column `ts`: 99999999999999999999 is out of range",
            ),
            ("ts", "-5", "column `ts`: -5 is out of range"),
            (
                "ts",
                "253402300800000",
                "column `ts`: 253402300800000 is out of range",
            ),
            ("ts", "\"5\"", "column `ts`: expected timestamp, got string"),
            ("ts", "5.0", "column `ts`: expected an integer timestamp"),
        ];
        for (field, raw, reason) in cases {
            let line = line_with(field, raw);
            let e = decode(&line).unwrap_err();
            assert!(e.contains(reason), "{line}: {e}");
        }
        assert!(decode(r#"{"ts": 5"#)
            .unwrap_err()
            .contains("malformed JSON"));
        assert!(decode("[1, 2]").unwrap_err().contains("malformed JSON"));
    }

    #[test]
    fn csv_rows_are_validated_like_json() {
        let mut d = RowDecoder::new(schema(), "ts", None).unwrap();
        let header = csv::ByteRecord::from(vec!["ok", "ts", "duration_ms", "price", "ratio"]);
        CsvDecoder::bind(&mut d, &header).unwrap();
        let rec = |f: &[&str]| csv::ByteRecord::from(f.to_vec());
        let (t, row) = d
            .decode_record(&rec(&["false", "7", "2", "3.250", "1"]))
            .unwrap();
        assert_eq!(
            (t, row[2].to_text(), row[3].clone()),
            (7, "3.250".into(), Value::Float(1.0))
        );
        for bad in [
            ["maybe", "7", "2", "3", "1"],
            ["true", "7", "NaN", "3", "1"],
            ["true", "7", "2", "3", "inf"],
            ["true", "x", "2", "3", "1"],
            ["true", "7", "", "3", "1"],
        ] {
            assert!(d.decode_record(&rec(&bad)).is_err(), "{bad:?}");
        }
        let mut d = RowDecoder::new(schema(), "ts", None).unwrap();
        let no_price = csv::ByteRecord::from(vec!["ts", "duration_ms", "ratio", "ok"]);
        assert!(CsvDecoder::bind(&mut d, &no_price)
            .unwrap_err()
            .contains("`price`"));
    }

    #[test]
    fn max_future_continues_from_the_restored_max_seen() {
        let mut d = RowDecoder::new(schema(), "ts", Some(1000)).unwrap();
        let line = |ts: u64| {
            format!(r#"{{"ts": {ts}, "duration_ms": 1, "price": 1, "ratio": 1, "ok": true}}"#)
        };
        assert!(
            d.decode(line(50_000).as_bytes()).is_ok(),
            "the first record sets the base"
        );
        RecordDecoder::resume(&mut d, Some(1_000));
        assert!(d
            .decode(line(2_001).as_bytes())
            .unwrap_err()
            .contains("max-future"));
        assert!(d.decode(line(2_000).as_bytes()).is_ok());
        assert!(
            d.decode(line(10).as_bytes()).is_ok(),
            "late records are not its business"
        );
    }

    #[test]
    fn values_order_hash_and_serialize_stably() {
        let a = Value::Decimal(Decimal::from_str_exact("1.0").unwrap());
        let b = Value::Decimal(Decimal::from_str_exact("1.00").unwrap());
        assert_eq!(a, b);
        let h = |v: &Value| {
            let mut s = std::collections::hash_map::DefaultHasher::new();
            v.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&a), h(&b));
        assert!(Value::Null < Value::Bool(false));
        assert!(Value::Float(-0.0) < Value::Float(0.0));
        for v in [
            a,
            Value::str("x"),
            Value::Float(2.5),
            Value::Timestamp(7),
            Value::Null,
        ] {
            let bytes = bincode::serialize(&v).unwrap();
            let back: Value = bincode::deserialize(&bytes).unwrap();
            assert_eq!(back, v);
            assert_eq!(back.to_text(), v.to_text());
        }
    }

    /// Table jobs route keys (`Vec<Value>`) by this hash: pinned, so a
    /// change of `Value`'s `Hash` fails here before it moves keys away from
    /// their checkpointed key groups.
    #[test]
    fn row_key_hashes_are_pinned() {
        let key = vec![
            Value::str("cart"),
            Value::Int(-7),
            Value::Decimal(Decimal::from_str_exact("1.50").unwrap()),
            Value::Timestamp(1_674_950_400_000),
            Value::Bool(true),
            Value::Null,
        ];
        let got = streamforge_dataflow::stable_hash(&key);
        let same = vec![
            Value::str("cart"),
            Value::Int(-7),
            Value::Decimal(Decimal::from_str_exact("1.5").unwrap()),
            Value::Timestamp(1_674_950_400_000),
            Value::Bool(true),
            Value::Null,
        ];
        assert_eq!(
            streamforge_dataflow::stable_hash(&same),
            got,
            "1.50 and 1.5 are one key"
        );
        assert_eq!(got, PINNED_KEY_HASH, "{got}");
    }

    /// JSON values for the decoder properties: numbers at the edges of the
    /// grammar and of i64, strings with escapes, nested values, null.
    const VALUE: &str = "-?[0-9]{1,20}|-?[0-9]{1,3}\\.[0-9]{1,4}|-?[0-9]e[0-9]{1,3}|-?0|true|false|null|\"[a-z\\\\\"]{0,4}\"|\\[1\\]|\\{\\}|9223372036854775807|-9223372036854775808|9223372036854775808|0[0-9]|1\\.|\\.5|\"\\\\u00e5\"";

    const PINNED_KEY_HASH: u64 = 11_890_800_166_736_721_102;

    /// The plain layout of generated spans, compact or with Python's
    /// separators, is learned from the first record and takes the shape
    /// path from then on, with the row the reference path gives.
    #[test]
    fn a_steady_layout_takes_the_shape_path() {
        let mut d = RowDecoder::new(schema(), "ts", None).unwrap();
        for sep in [(",", ":"), (", ", ": ")] {
            let line = |ts: u64, city: &str| {
                format!(
                    "{{\"ts\"{c}{ts}{s}\"duration_ms\"{c}3{s}\"price\"{c}1.10{s}\"ratio\"{c}-0.5{s}\"ok\"{c}false{s}\"city\"{c}\"{city}\"{s}\"user_id\"{c}\"u1\"}}",
                    s = sep.0,
                    c = sep.1
                )
            };
            d.decode(line(1, "oslo").as_bytes()).unwrap();
            let next = line(1_674_950_400_000, "bergen");
            let row = d.decode_shape(next.as_bytes()).expect("the shape path");
            assert_eq!(row, d.decode_slow(&next).unwrap());
            assert_eq!(row[6], Value::Null, "note: missing, nullable");
            // Another layout, an escape, a bad value: the parser's answer.
            assert!(d.decode_shape(br#"{"ts":1}"#).is_none());
            let escaped = line(2, "a\\u00e5");
            assert!(d.decode_shape(escaped.as_bytes()).is_none());
            assert_eq!(
                d.decode(escaped.as_bytes()).unwrap().1[5],
                Value::str("a\u{e5}")
            );
            let negative = next.replacen(
                &format!("\"duration_ms\"{}3", sep.1),
                &format!("\"duration_ms\"{}-3", sep.1),
                1,
            );
            assert!(d.decode_shape(negative.as_bytes()).is_none());
            assert!(d
                .decode(negative.as_bytes())
                .unwrap_err()
                .contains("below min"));
            let mut bad = next.clone().into_bytes();
            let at = next.find("bergen").unwrap();
            bad[at] = 0xff;
            assert!(d.decode_shape(&bad).is_none());
            assert!(d.decode(&bad).unwrap_err().contains("UTF-8"));
        }
    }

    proptest! {
        /// A layout learned from one record decodes another exactly as the
        /// reference path does, or declines: the same keys with random
        /// values (numbers at the edges of the grammar and of i64, escapes,
        /// nested values, nulls, repeated keys), random JSON whitespace.
        #[test]
        fn the_shape_path_agrees_with_the_slow_path(
            keys in Just((0usize..8).collect::<Vec<_>>()).prop_shuffle(),
            optional in proptest::collection::vec(any::<bool>(), 3),
            dropped in proptest::option::weighted(0.1, 0usize..5),
            repeat in 0usize..40,
            first in proptest::collection::vec((proptest::bool::weighted(0.97), 0usize..4, VALUE), 9),
            second in proptest::collection::vec((proptest::bool::weighted(0.85), 0usize..6, VALUE), 9),
            ws in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("\n\t "), Just("\r")], 4),
            cut in 0usize..8,
        ) {
            let names = ["ts", "duration_ms", "price", "ratio", "ok", "city", "note", "extra"];
            // Per column, four values it takes, then two at its edges.
            let fitting: [&[&str]; 8] = [
                &["1674950400000", "0", "5", "253402300799999", "-0", "253402300800000"],
                &["0", "3", "9223372036854775807", "-0", "-3", "1e2"],
                &["1.10", "-0", "5", "1e2", "0.0000000000000000000000000000001", "79228162514264337593543950336"],
                &["0.5", "-0.0", "1e308", "3", "1e400", "0.1"],
                &["true", "false", "true", "false", "null", "0"],
                &["\"oslo\"", "\"\\u00e5\"", "\"a\\\"b\"", "\"\"", "null", "\"bergen\""],
                &["null", "\"x\"", "\"\"", "\"y\"", "1", "null"],
                &["[1]", "{}", "\"q\"", "1", "null", "{\"a\": [true]}"],
            ];
            // The keys in random order: the required ones (one maybe
            // dropped), some optional ones, one key maybe twice.
            let mut keys: Vec<usize> = keys.into_iter()
                .filter(|&k| if k < 5 { Some(k) != dropped } else { optional[k - 5] })
                .collect();
            let repeated = repeat < keys.len();
            if repeated {
                keys.push(keys[repeat]);
            }
            let pick = |values: &[(bool, usize, String)]| -> Vec<String> {
                keys.iter().zip(values).map(|(&k, (fit, j, v))| {
                    if *fit { fitting[k][*j].to_string() } else { v.clone() }
                }).collect()
            };
            // The learned values, other values each column takes, mixed ones.
            let third: Vec<(bool, usize, String)> = first.iter()
                .map(|(fit, j, v)| (*fit, (j + 1) % 4, v.clone())).collect();
            let (first, second, third) = (pick(&first), pick(&second), pick(&third));
            let record = |values: &[String], ws: &[&str]| {
                let body: Vec<String> = keys.iter().zip(values)
                    .map(|(k, v)| format!("\"{}\"{}:{}{v}", names[*k], ws[0], ws[1])).collect();
                format!("{}{{{}{}}}{}", ws[2], ws[3], body.join(&format!("{},{}", ws[1], ws[0])), ws[2])
            };
            let learned = record(&first, &ws);
            let mut d = RowDecoder::new(schema(), "ts", None).unwrap();
            let accepted = d.decode(learned.as_bytes()).is_ok();
            prop_assert_eq!(accepted, d.decode_slow(&learned).is_ok());
            // A plain accepted record takes the shape path on its layout.
            let fits = |values: &[String]| values.iter().all(|v| {
                let nested_or_escaped = v.contains(['\\', '[', '{']);
                let exponent = v.contains(['e', 'E']) && v.starts_with(|c: char| c == '-' || c.is_ascii_digit());
                !nested_or_escaped && !exponent
            });
            if accepted && fits(&first) && !repeated {
                prop_assert!(d.decode_shape(learned.as_bytes()).is_some(), "{}", learned);
                let other = record(&third, &ws);
                if fits(&third) && d.decode_slow(&other).is_ok() {
                    prop_assert!(d.decode_shape(other.as_bytes()).is_some(), "{} then {}", learned, other);
                }
            }
            // The same layout with other values, and another layout (the
            // whitespace shifted, or keys dropped).
            let mut other_ws = ws.clone();
            other_ws.rotate_left(1);
            let probes = [record(&second, &ws), record(&third, &ws), record(&second, &other_ws),
                          record(&second[..cut.min(second.len())], &ws)];
            for probe in &probes {
                let slow = d.decode_slow(probe);
                if let Some(row) = d.decode_shape(probe.as_bytes()) {
                    let slow = slow.map_err(|e| TestCaseError::fail(format!("{learned} then {probe}: shape accepts, slow says {e}")))?;
                    prop_assert_eq!(row.len(), slow.len());
                    for (f, s) in row.iter().zip(&slow) {
                        prop_assert!(f == s && f.column_type() == s.column_type()
                            && f.to_text() == s.to_text(), "{} then {}: {:?} vs {:?}", learned, probe, f, s);
                    }
                }
                let got = d.decode(probe.as_bytes()).map(|(_, r)| r);
                let want = RowDecoder::new(schema(), "ts", None).unwrap().decode_slow(probe);
                prop_assert_eq!(got.is_ok(), want.is_ok(), "{}", probe);
                if let (Ok(g), Ok(w)) = (got, want) {
                    prop_assert_eq!(g, w);
                }
            }
        }

        /// Random bytes, truncated records, huge numbers, non-UTF-8: the
        /// decoder never panics, and what it accepts is a full valid row.
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120),
                                cut in 0usize..80,
                                big in "[0-9]{15,40}") {
            let mut d = RowDecoder::new(schema(), "ts", Some(10)).unwrap();
            let _ = d.decode(&bytes);
            let good = format!(r#"{{"ts": {big}, "duration_ms": {big}, "price": {big}.5, "ratio": {big}, "ok": true}}"#);
            let cut = cut.min(good.len());
            let _ = d.decode(&good.as_bytes()[..cut]);
            if let Ok((t, row)) = d.decode(good.as_bytes()) {
                prop_assert_eq!(row.len(), 7);
                prop_assert!(t <= MAX_TIMESTAMP_MS as u64);
            }
            let mut bad = good.clone().into_bytes();
            bad.insert(bad.len() / 2, 0xff);
            let _ = d.decode(&bad);
            let text: Vec<&[u8]> = bytes.split(|b| *b == b',').collect();
            let _ = CsvDecoder::bind(&mut d, &csv::ByteRecord::from(vec!["ts", "duration_ms", "price", "ratio", "ok"]));
            let _ = d.decode_record(&csv::ByteRecord::from(text));
        }

        /// The fast path accepts a record only with the values the slow
        /// (reference) path gives it, and takes every plain good record.
        #[test]
        fn the_fast_path_agrees_with_the_slow_path(
            fields in proptest::collection::vec(
                (0usize..8, prop_oneof![
                    "-?[0-9]{1,20}", "-?[0-9]{1,5}\\.[0-9]{1,5}", "-?[0-9]e[0-9]{1,3}",
                    Just("true".to_string()), Just("null".to_string()), Just("-0".to_string()),
                    "\"[a-z\\\\\"]{0,6}\"", Just("[1]".to_string()), Just("{}".to_string()),
                ]),
                0..4),
            keep in 0usize..6,
        ) {
            // A good record (its first `keep` fields), then the random ones
            // (a repeated key: the last one counts).
            let names = ["ts", "duration_ms", "price", "ratio", "ok", "city", "note", "extra"];
            let good = ["5", "3", "1.10", "0.5", "true"];
            let body: Vec<String> = good.iter().enumerate().take(keep)
                .map(|(k, v)| (k, v.to_string()))
                .chain(fields.iter().cloned())
                .map(|(k, v)| format!("\"{}\": {v}", names[k])).collect();
            let line = format!("{{{}}}", body.join(", "));
            let mut keys: Vec<usize> = (0..keep).chain(fields.iter().map(|(k, _)| *k)).collect();
            keys.sort();
            let repeated = keys.windows(2).any(|w| w[0] == w[1]);
            let mut d = RowDecoder::new(schema(), "ts", None).unwrap();
            let slow = d.decode_slow(&line);
            if let Some(fast) = d.decode_fast(&line) {
                let slow = slow.map_err(|e| TestCaseError::fail(format!("{line}: fast accepts, slow says {e}")))?;
                prop_assert_eq!(fast.len(), slow.len());
                for (f, s) in fast.iter().zip(&slow) {
                    prop_assert!(f == s && f.column_type() == s.column_type()
                        && f.to_text() == s.to_text(), "{}: {:?} vs {:?}", line, f, s);
                }
            }
            let good = r#"{"ts": 5, "duration_ms": 3, "price": 1.10, "ratio": 0.5, "ok": true, "note": "a\"b", "x": [1, {"y": 2}]}"#;
            prop_assert!(d.decode_fast(good).is_some());
            prop_assert!(d.decode_fast(&line).is_some() || d.decode_slow(&line).is_err()
                || line.contains("-0") || repeated,
                "a good record takes the fast path: {}", line);
        }
    }
}
