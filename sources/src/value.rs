//! Decoding one message value (a JSON object or a CSV row without header) into a
//! span with a field mapping — shared by the Kafka source and file replay.

use crate::decode::{decode_json, Val};
use crate::mapping::{CompiledMapping, SpanMapping, MAX_SLOTS};
use crate::span::Span;

/// Decodes values with a compiled mapping.
pub struct ValueDecoder {
    mapping: CompiledMapping,
    /// For CSV: the column index of each slot.
    csv_columns: Option<Vec<usize>>,
}

impl ValueDecoder {
    /// A decoder of JSON objects.
    ///
    /// # Errors
    /// An invalid mapping.
    pub fn json(mapping: &SpanMapping) -> Result<Self, String> {
        Ok(ValueDecoder {
            mapping: mapping.compile()?,
            csv_columns: None,
        })
    }

    /// A JSON decoder from an already compiled mapping.
    pub fn from_compiled(mapping: CompiledMapping) -> Self {
        ValueDecoder {
            mapping,
            csv_columns: None,
        }
    }

    /// A decoder of CSV rows whose columns are named by `columns` (messages carry
    /// no header).
    ///
    /// # Errors
    /// An invalid mapping or a mapped field that is not among `columns`.
    pub fn csv(mapping: &SpanMapping, columns: &[String]) -> Result<Self, String> {
        let mapping = mapping.compile()?;
        let idx = mapping
            .slots()
            .iter()
            .map(|s| {
                columns
                    .iter()
                    .position(|c| c == s)
                    .ok_or_else(|| format!("no column {s:?} in csv-columns"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ValueDecoder {
            mapping,
            csv_columns: Some(idx),
        })
    }

    /// Decodes one value.
    ///
    /// # Errors
    /// The dead-letter reason.
    ///
    /// # Examples
    /// ```
    /// use streamforge_sources::value::ValueDecoder;
    /// use streamforge_sources::SpanMapping;
    /// let mapping: SpanMapping = toml::from_str(r#"
    ///     event-time = { field = "ts" }
    ///     service = { field = "s" }
    ///     operator-name = { field = "o" }
    ///     duration = { field = "d", unit = "ms" }
    /// "#).unwrap();
    /// let mut json = ValueDecoder::json(&mapping).unwrap();
    /// let (t, span) = json.decode(br#"{"ts": 5, "s": "cart", "o": "Get", "d": 1.5}"#).unwrap();
    /// assert_eq!((t, span.duration_us, span.key.service()), (5, 1500, "cart"));
    /// let cols: Vec<String> = ["ts", "s", "o", "d"].map(String::from).to_vec();
    /// let mut csv = ValueDecoder::csv(&mapping, &cols).unwrap();
    /// assert_eq!(csv.decode(b"7,cart,\"Get, all\",2").unwrap().1.key.operator_name(), "Get, all");
    /// assert!(csv.decode(b"7,cart").is_err());
    /// ```
    pub fn decode(&mut self, bytes: &[u8]) -> Result<(u64, Span), String> {
        let mut vals: [Val<'_>; MAX_SLOTS] = Default::default();
        match &self.csv_columns {
            None => {
                decode_json(bytes, self.mapping.slots(), &mut vals)?;
                self.mapping.build(&vals)
            }
            Some(cols) => {
                let line = std::str::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {e}"))?;
                let line = line.trim_end_matches(['\r', '\n']);
                if line.contains('"') {
                    let mut reader = csv::ReaderBuilder::new()
                        .has_headers(false)
                        .from_reader(line.as_bytes());
                    let mut record = csv::StringRecord::new();
                    if !reader.read_record(&mut record).map_err(|e| e.to_string())? {
                        return Err("empty value".into());
                    }
                    for (slot, &c) in cols.iter().enumerate() {
                        if let Some(v) = record.get(c) {
                            vals[slot] = Val::Str(v.to_string().into());
                        }
                    }
                    self.mapping.build(&vals)
                } else {
                    let fields: Vec<&str> = line.split(',').collect();
                    for (slot, &c) in cols.iter().enumerate() {
                        if let Some(v) = fields.get(c) {
                            vals[slot] = Val::Str((*v).into());
                        }
                    }
                    self.mapping.build(&vals)
                }
            }
        }
    }
}

impl crate::record::RecordDecoder<Span> for ValueDecoder {
    #[inline]
    fn decode(&mut self, bytes: &[u8]) -> Result<(u64, Span), String> {
        ValueDecoder::decode(self, bytes)
    }
}
