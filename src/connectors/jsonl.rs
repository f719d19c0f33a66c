//! `kind = "jsonl"`: one JSON object per line (with checkpoints, a
//! directory of committed part files).

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use streamforge_sources::row::{Row, Value};

use super::{FileSinkSettings, SinkConnector, SinkKind};
use crate::api::DataStream;
use crate::error::Error;

/// The registration.
pub const SINK: SinkKind = SinkKind {
    kind: "jsonl",
    parse: |v| Ok(Arc::new(super::settings::<JsonlSink>(v)?)),
};

/// A JSON-lines sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub struct JsonlSink(pub FileSinkSettings);

impl SinkConnector for JsonlSink {
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
        let names = names.to_vec();
        rows.map(move |row: Row| json_line(&names, &row))
            .sink_lines(name, base.join(&self.0.path), None);
        Ok(())
    }
}

/// A row as a JSON object line, the columns named `names`.
///
/// # Examples
/// ```
/// use streamforge::connectors::jsonl::json_line;
/// use streamforge::sources::row::Value;
/// let names = ["s".to_string(), "n".to_string()];
/// assert_eq!(json_line(&names, &[Value::str("a\"b"), Value::Null]), r#"{"s":"a\"b","n":null}"#);
/// ```
pub fn json_line(names: &[String], row: &[Value]) -> String {
    let mut out = Vec::with_capacity(16 * row.len());
    out.push(b'{');
    for (i, (n, v)) in names.iter().zip(row).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, n).expect("vec");
        out.push(b':');
        v.write_json(&mut out);
    }
    out.push(b'}');
    String::from_utf8(out).expect("JSON is UTF-8")
}
