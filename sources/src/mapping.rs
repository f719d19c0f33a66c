//! Field mappings: how a CSV row or JSON object becomes a [`Span`].
//!
//! A mapping names, for each span field, where it comes from:
//!
//! ```toml
//! [source.mapping]
//! event-time     = { field = "StartTimeUnixNano", unit = "ns" }
//! service        = { field = "PodName", transform = "k8s-pod" }
//! operator-name  = { field = "OperationName" }
//! operator-class = { value = "span" }
//! duration       = { field = "Duration", unit = "us" }
//! is-error       = { value = false }
//! ```
//!
//! Units: event time `s | ms | us | ns | rfc3339` (plus an optional
//! `offset-field` in `offset-unit`, e.g. a minute column added to an hour);
//! durations `us | ms | s | min`, stored as integer microseconds.

use serde::Deserialize;

use crate::decode::Val;
use crate::span::{KeyInterner, Span};

/// Mapping from input fields to span fields.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SpanMapping {
    /// Event time.
    pub event_time: TimeField,
    /// Service name.
    pub service: TextField,
    /// Operator name.
    pub operator_name: TextField,
    /// Operator class (default: the constant `"span"`).
    #[serde(default = "default_class")]
    pub operator_class: TextField,
    /// Duration.
    pub duration: DurationField,
    /// Error flag (default: never an error).
    #[serde(default)]
    pub is_error: ErrorField,
}

fn default_class() -> TextField {
    TextField {
        value: Some("span".into()),
        ..TextField::default()
    }
}

/// Units of an event-time field.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TimeUnit {
    /// Seconds since the Unix epoch.
    S,
    /// Milliseconds since the Unix epoch.
    #[default]
    Ms,
    /// Microseconds since the Unix epoch.
    Us,
    /// Nanoseconds since the Unix epoch.
    Ns,
    /// An RFC 3339 timestamp such as `2013-01-01T10:00:00Z`.
    Rfc3339,
}

/// Units of a duration field.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DurationUnit {
    /// Microseconds.
    Us,
    /// Milliseconds.
    #[default]
    Ms,
    /// Seconds.
    S,
    /// Minutes.
    Min,
}

impl DurationUnit {
    fn micros(self) -> f64 {
        match self {
            DurationUnit::Us => 1.0,
            DurationUnit::Ms => 1e3,
            DurationUnit::S => 1e6,
            DurationUnit::Min => 60e6,
        }
    }
}

/// Where the event time comes from.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TimeField {
    /// Input field name.
    pub field: String,
    /// Its unit.
    #[serde(default)]
    pub unit: TimeUnit,
    /// Optional field added to the time (e.g. minutes past the hour).
    pub offset_field: Option<String>,
    /// Unit of `offset-field`.
    #[serde(default)]
    pub offset_unit: DurationUnit,
}

/// Text transforms.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TextTransform {
    /// Use the text as it is.
    #[default]
    None,
    /// Kubernetes pod name → workload name: drops a trailing `-<replicaset
    /// hash>-<pod id>` (or just `-<pod id>`), so `ts-auth-service-7f8d7d756d-k7b9j`
    /// becomes `ts-auth-service`.
    K8sPod,
}

/// A text field: one input field, several joined, or a constant.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TextField {
    /// One input field.
    pub field: Option<String>,
    /// Several input fields joined by `separator`.
    pub fields: Option<Vec<String>>,
    /// Separator for `fields` (default `-`).
    pub separator: Option<String>,
    /// A constant.
    pub value: Option<String>,
    /// Transform applied to the text.
    #[serde(default)]
    pub transform: TextTransform,
}

/// Where the duration comes from.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DurationField {
    /// Input field name.
    pub field: String,
    /// Its unit.
    #[serde(default)]
    pub unit: DurationUnit,
    /// Value (in `unit`) used when the field is missing, null or `NA`; without
    /// it such records are dead letters.
    pub default: Option<f64>,
}

/// Where the error flag comes from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ErrorField {
    /// Input field name.
    pub field: Option<String>,
    /// Field values that mean "error" (e.g. `["NA"]`); without it the field is
    /// read as a boolean (`true/false`, `1/0`).
    pub equals: Option<Vec<String>>,
    /// A constant.
    pub value: Option<bool>,
}

enum Text {
    Const(String),
    Slot(usize, TextTransform),
    Join(Vec<usize>, String),
}

enum ErrorSpec {
    Const(bool),
    Bool(usize),
    Equals(usize, Vec<String>),
}

/// A mapping resolved against slot numbers: the decoders fill one value per slot.
pub struct CompiledMapping {
    slots: Vec<String>,
    time: (usize, TimeUnit, Option<(usize, DurationUnit)>),
    service: Text,
    operator_name: Text,
    operator_class: Text,
    duration: (usize, f64, Option<f64>),
    error: ErrorSpec,
    interner: KeyInterner,
    buf: [String; 3],
}

/// Most slots a mapping can use.
pub const MAX_SLOTS: usize = 12;

impl SpanMapping {
    /// Resolves field names to slots.
    ///
    /// # Errors
    /// A text field with none or several of `field`/`fields`/`value`, an error field
    /// with both `field` and `value`, or more than [`MAX_SLOTS`] input fields.
    pub fn compile(&self) -> Result<CompiledMapping, String> {
        let mut slots: Vec<String> = Vec::new();
        let mut slot = |name: &str| -> usize {
            match slots.iter().position(|s| s == name) {
                Some(i) => i,
                None => {
                    slots.push(name.to_string());
                    slots.len() - 1
                }
            }
        };
        let time = (
            slot(&self.event_time.field),
            self.event_time.unit,
            self.event_time
                .offset_field
                .as_deref()
                .map(|f| (slot(f), self.event_time.offset_unit)),
        );
        let mut text = |t: &TextField, what: &str| -> Result<Text, String> {
            match (&t.field, &t.fields, &t.value) {
                (Some(f), None, None) => Ok(Text::Slot(slot(f), t.transform)),
                (None, Some(fs), None) if !fs.is_empty() => Ok(Text::Join(
                    fs.iter().map(|f| slot(f)).collect(),
                    t.separator.clone().unwrap_or_else(|| "-".into()),
                )),
                (None, None, Some(v)) => Ok(Text::Const(v.clone())),
                _ => Err(format!("{what}: give exactly one of field, fields, value")),
            }
        };
        let service = text(&self.service, "service")?;
        let operator_name = text(&self.operator_name, "operator-name")?;
        let operator_class = text(&self.operator_class, "operator-class")?;
        let duration = (
            slot(&self.duration.field),
            self.duration.unit.micros(),
            self.duration.default,
        );
        let error = match (
            &self.is_error.field,
            &self.is_error.equals,
            self.is_error.value,
        ) {
            (None, None, v) => ErrorSpec::Const(v.unwrap_or(false)),
            (Some(f), None, None) => ErrorSpec::Bool(slot(f)),
            (Some(f), Some(eq), None) => ErrorSpec::Equals(slot(f), eq.clone()),
            _ => return Err("is-error: give either field (with optional equals) or value".into()),
        };
        if slots.len() > MAX_SLOTS {
            return Err(format!("{} input fields; at most {MAX_SLOTS}", slots.len()));
        }
        Ok(CompiledMapping {
            slots,
            time,
            service,
            operator_name,
            operator_class,
            duration,
            error,
            interner: KeyInterner::default(),
            buf: Default::default(),
        })
    }
}

/// Drops a Kubernetes `-<hash>-<id>` / `-<id>` pod suffix.
///
/// # Examples
/// ```
/// use streamforge_sources::mapping::strip_pod_suffix;
/// assert_eq!(strip_pod_suffix("ts-auth-service-7f8d7d756d-k7b9j"), "ts-auth-service");
/// assert_eq!(strip_pod_suffix("frontend-579b9bff58-t2dbm"), "frontend");
/// assert_eq!(strip_pod_suffix("redis-cart-0"), "redis-cart-0");
/// assert_eq!(strip_pod_suffix("cartservice"), "cartservice");
/// ```
pub fn strip_pod_suffix(pod: &str) -> &str {
    let alnum = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let Some((rest, id)) = pod.rsplit_once('-') else {
        return pod;
    };
    if id.len() != 5 || !alnum(id) {
        return pod;
    }
    match rest.rsplit_once('-') {
        Some((base, hash)) if (6..=10).contains(&hash.len()) && alnum(hash) && !base.is_empty() => {
            base
        }
        _ => rest,
    }
}

impl CompiledMapping {
    /// Input field names, one per slot.
    pub fn slots(&self) -> &[String] {
        &self.slots
    }

    /// Builds a span from slot values.
    ///
    /// # Errors
    /// A reason for the dead-letter output: a missing field or an unparsable value.
    pub fn build(&mut self, vals: &[Val<'_>]) -> Result<(u64, Span), String> {
        let (ts_slot, unit, offset) = self.time;
        let mut event_time_ms =
            time_ms(&vals[ts_slot], unit).map_err(|e| format!("{}: {e}", self.slots[ts_slot]))?;
        if let Some((slot, ounit)) = offset {
            let off = vals[slot]
                .as_f64()
                .ok_or_else(|| format!("{}: not a number", self.slots[slot]))?;
            event_time_ms = (event_time_ms as f64 + off * ounit.micros() / 1e3).max(0.0) as u64;
        }
        let (dslot, scale, default) = self.duration;
        let duration_us = match vals[dslot].as_f64() {
            Some(v) => (v * scale).round() as i64,
            None if vals[dslot].is_absent() => match default {
                Some(d) => (d * scale).round() as i64,
                None => return Err(format!("{}: missing", self.slots[dslot])),
            },
            None => {
                return Err(format!(
                    "{}: not a number: {:?}",
                    self.slots[dslot], vals[dslot]
                ))
            }
        };
        let is_error = match &self.error {
            ErrorSpec::Const(b) => *b,
            ErrorSpec::Bool(s) => vals[*s]
                .as_bool()
                .ok_or_else(|| format!("{}: not a boolean", self.slots[*s]))?,
            ErrorSpec::Equals(s, eq) => {
                let v = vals[*s].text();
                eq.iter().any(|e| v.as_deref() == Some(e.as_str()))
            }
        };
        let [b0, b1, b2] = &mut self.buf;
        let service = fill(&self.service, vals, b0, &self.slots)?;
        let operator_name = fill(&self.operator_name, vals, b1, &self.slots)?;
        let operator_class = fill(&self.operator_class, vals, b2, &self.slots)?;
        let key = self.interner.intern(service, operator_name, operator_class);
        Ok((
            event_time_ms,
            Span {
                event_time_ms,
                key,
                duration_us,
                is_error,
            },
        ))
    }
}

fn fill<'b>(
    t: &'b Text,
    vals: &'b [Val<'_>],
    buf: &'b mut String,
    slots: &[String],
) -> Result<&'b str, String> {
    buf.clear();
    match t {
        Text::Const(c) => Ok(c.as_str()),
        Text::Slot(s, transform) => {
            match &vals[*s] {
                Val::Str(v) => buf.push_str(v),
                v => buf.push_str(&v.text().ok_or_else(|| format!("{}: missing", slots[*s]))?),
            }
            if *transform == TextTransform::K8sPod {
                let keep = strip_pod_suffix(buf).len();
                buf.truncate(keep);
            }
            Ok(buf.as_str())
        }
        Text::Join(ss, sep) => {
            for (i, s) in ss.iter().enumerate() {
                if i > 0 {
                    buf.push_str(sep);
                }
                buf.push_str(
                    &vals[*s]
                        .text()
                        .ok_or_else(|| format!("{}: missing", slots[*s]))?,
                );
            }
            Ok(buf.as_str())
        }
    }
}

fn time_ms(v: &Val<'_>, unit: TimeUnit) -> Result<u64, String> {
    if unit == TimeUnit::Rfc3339 {
        let s = v.text().ok_or("missing")?;
        let t =
            chrono::DateTime::parse_from_rfc3339(&s).map_err(|e| format!("not RFC 3339: {e}"))?;
        return u64::try_from(t.timestamp_millis()).map_err(|_| "before 1970".to_string());
    }
    let div = |x: u64| match unit {
        TimeUnit::S => x.saturating_mul(1000),
        TimeUnit::Ms => x,
        TimeUnit::Us => x / 1_000,
        TimeUnit::Ns => x / 1_000_000,
        TimeUnit::Rfc3339 => unreachable!(),
    };
    match v {
        Val::U64(x) => Ok(div(*x)),
        Val::Str(s) => s.trim().parse::<u64>().map(div).or_else(|_| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("not a time: {s:?}"))
                .and_then(|f| float_time(f, unit))
        }),
        Val::F64(f) => float_time(*f, unit),
        Val::I64(_) => Err("negative time".into()),
        _ => Err("missing".into()),
    }
}

fn float_time(f: f64, unit: TimeUnit) -> Result<u64, String> {
    if f.is_nan() || f < 0.0 {
        return Err(format!("not a time: {f}"));
    }
    let ms = match unit {
        TimeUnit::S => f * 1e3,
        TimeUnit::Ms => f,
        TimeUnit::Us => f / 1e3,
        _ => f / 1e6,
    };
    Ok(ms as u64)
}
