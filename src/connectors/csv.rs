//! `kind = "csv"`: CSV with a header row (with checkpoints, a directory of
//! committed part files, each with the header).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use streamforge_sources::row::{Row, Value};

use super::{FileSinkSettings, SinkConnector, SinkKind};
use crate::api::DataStream;
use crate::error::Error;

/// The registration.
pub const SINK: SinkKind = SinkKind {
    kind: "csv",
    parse: |v| Ok(Arc::new(super::settings::<CsvSink>(v)?)),
};

/// A CSV sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct CsvSink(pub FileSinkSettings);

impl SinkConnector for CsvSink {
    fn columns(&self) -> Option<&[String]> {
        self.0.columns.as_deref()
    }

    fn build<'s>(
        &self,
        rows: DataStream<'s, Row>,
        names: &[String],
        base: &Path,
        name: &str,
    ) -> Result<(), Error> {
        let header: Vec<Value> = names.iter().map(|n| Value::str(n)).collect();
        rows.map(|row: Row| csv_line(&row)).sink_lines(
            name,
            base.join(&self.0.path),
            Some(csv_line(&header)),
        );
        Ok(())
    }
}

/// A row as a CSV line (RFC 4180 quoting, null: empty).
///
/// # Examples
/// ```
/// use streamforge::connectors::csv::csv_line;
/// use streamforge::sources::row::Value;
/// assert_eq!(csv_line(&[Value::str("a,b"), Value::Int(1), Value::Null]), "\"a,b\",1,");
/// ```
pub fn csv_line(row: &[Value]) -> String {
    let mut w = ::csv::WriterBuilder::new()
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.write_record(row.iter().map(Value::to_text))
        .expect("in-memory CSV");
    let mut bytes = w.into_inner().expect("in-memory CSV");
    bytes.pop();
    String::from_utf8(bytes).expect("CSV of UTF-8 text")
}
