//! Records of any shape: the decoder traits every connector reads through,
//! and serde decoders for any `T: Deserialize` with an event-time extractor
//! (Flink's `DeserializationSchema` + `TimestampAssigner`).
//!
//! A connector hands a decoder the raw bytes of one record (a JSON line, a
//! Kafka message value, a CSV row) and gets the record and its event time in
//! ms, or the reason it was rejected — which the connector turns into a
//! [`DeadLetter`](streamforge_dataflow::DeadLetter) with the raw bytes. Values
//! are validated by their types, never coerced: a string where `T` has a
//! number, a negative number for an unsigned field, a number out of range
//! (`99999999999999999999` for a `u64`), are all rejected with serde's
//! reason.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use streamforge_dataflow::EventTime;

/// Decodes one raw value (a JSON object line, a Kafka message value) into a
/// record and its event time in ms.
pub trait RecordDecoder<D>: 'static {
    /// Decodes `bytes`.
    ///
    /// # Errors
    /// The reason the value was rejected (becomes the dead letter's reason).
    fn decode(&mut self, bytes: &[u8]) -> Result<(EventTime, D), String>;

    /// Called once when the partition is opened at a checkpointed position,
    /// with the partition's largest event time so far (decoders that guard
    /// against far-future event times continue from it). Default: nothing.
    fn resume(&mut self, _max_seen: Option<EventTime>) {}
}

/// Decodes CSV rows of a file with a header row.
pub trait CsvDecoder<D>: 'static {
    /// Binds the decoder to the file's header row, once, before any row.
    ///
    /// # Errors
    /// The header lacks a column the decoder needs.
    fn bind(&mut self, headers: &csv::ByteRecord) -> Result<(), String>;
    /// Decodes one row.
    ///
    /// # Errors
    /// The reason the row was rejected.
    fn decode_record(&mut self, record: &csv::ByteRecord) -> Result<(EventTime, D), String>;

    /// As [`RecordDecoder::resume`].
    fn resume(&mut self, _max_seen: Option<EventTime>) {}
}

/// An event-time extractor: the record's event time in ms since the Unix
/// epoch, or why it has none (the record is then dead-lettered).
pub trait EventTimeFn<T>: Fn(&T) -> Result<EventTime, String> + Clone + 'static {}
impl<T, F: Fn(&T) -> Result<EventTime, String> + Clone + 'static> EventTimeFn<T> for F {}

/// Decodes JSON objects into `T` with serde, the event time from `event_time`.
///
/// # Examples
/// ```
/// use streamforge_sources::record::{JsonDecoder, RecordDecoder};
/// #[derive(Debug, serde::Deserialize)]
/// struct Order { event_time: u64, amount: u32 }
/// let mut d = JsonDecoder::new(|o: &Order| Ok(o.event_time));
/// let (t, o) = d.decode(br#"{"event_time": 5, "amount": 7, "extra": [1]}"#).unwrap();
/// assert_eq!((t, o.amount), (5, 7));
/// // Validated, never coerced:
/// assert!(d.decode(br#"{"event_time": 5, "amount": "7"}"#).unwrap_err().contains("invalid type"));
/// assert!(d.decode(br#"{"event_time": 5, "amount": -1}"#).is_err());
/// assert!(d.decode(br#"{"event_time": 99999999999999999999, "amount": 1}"#).is_err());
/// assert!(d.decode(b"{\"event_time\": 5, \"amount\": 1, \xff}").is_err());
/// ```
pub struct JsonDecoder<T, F> {
    event_time: F,
    _record: PhantomData<fn() -> T>,
}

impl<T, F> JsonDecoder<T, F> {
    /// A decoder taking event times from `event_time`.
    pub fn new(event_time: F) -> Self {
        JsonDecoder {
            event_time,
            _record: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + 'static, F: EventTimeFn<T>> RecordDecoder<T> for JsonDecoder<T, F> {
    fn decode(&mut self, bytes: &[u8]) -> Result<(EventTime, T), String> {
        let record: T = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(((self.event_time)(&record)?, record))
    }
}

/// Decodes CSV rows into `T` with serde by header names (csv's serde
/// support), the event time from `event_time`.
///
/// # Examples
/// ```
/// use streamforge_sources::record::{CsvDecoder, CsvSerdeDecoder};
/// #[derive(serde::Deserialize)]
/// struct Flight { ts: u64, carrier: String }
/// let mut d = CsvSerdeDecoder::new(|f: &Flight| Ok(f.ts));
/// d.bind(&csv::ByteRecord::from(vec!["carrier", "ts"])).unwrap();
/// let (t, f) = d.decode_record(&csv::ByteRecord::from(vec!["UA", "42"])).unwrap();
/// assert_eq!((t, f.carrier.as_str()), (42, "UA"));
/// assert!(d.decode_record(&csv::ByteRecord::from(vec!["UA", "NaN"])).is_err());
/// ```
pub struct CsvSerdeDecoder<T, F> {
    headers: Option<csv::ByteRecord>,
    event_time: F,
    _record: PhantomData<fn() -> T>,
}

impl<T, F> CsvSerdeDecoder<T, F> {
    /// A decoder taking event times from `event_time`.
    pub fn new(event_time: F) -> Self {
        CsvSerdeDecoder {
            headers: None,
            event_time,
            _record: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + 'static, F: EventTimeFn<T>> CsvDecoder<T> for CsvSerdeDecoder<T, F> {
    fn bind(&mut self, headers: &csv::ByteRecord) -> Result<(), String> {
        self.headers = Some(headers.clone());
        Ok(())
    }

    fn decode_record(&mut self, record: &csv::ByteRecord) -> Result<(EventTime, T), String> {
        let record: T = record
            .deserialize(self.headers.as_ref())
            .map_err(|e| e.to_string())?;
        Ok(((self.event_time)(&record)?, record))
    }
}
