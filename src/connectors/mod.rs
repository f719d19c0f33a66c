//! Connectors of job files over a schema, selected by `kind` through a
//! registry. Each connector is one file: its settings (a serde struct that
//! rejects unknown keys) and its [`SourceConnector`] or [`SinkConnector`]
//! implementation; a new connector is that file plus one line in
//! [`SOURCES`] or [`SINKS`], and no job needs an edit to the wiring.
//!
//! Connectors sit on the DataStream API (`crate::api`): sources open a
//! `DataStream<Row>` with the job's decoder and watermark strategy; sinks
//! take the projected rows with their column names. Checkpoints and
//! exactly-once come from the API (`sink_lines`, `sink_commit`).

pub mod clickhouse;
pub mod csv;
pub mod file;
pub mod jsonl;
pub mod kafka;

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use streamforge_sources::row::{Row, RowDecoder};

use crate::api::{DataStream, StreamEnv, WatermarkStrategy};
use crate::error::Error;

/// Makes the decoder of one partition (the job's schema, event time and
/// `max-future` guard).
pub type DecoderFactory = Arc<dyn Fn() -> RowDecoder>;

/// A source of rows.
pub trait SourceConnector: Debug + Send + Sync {
    /// The `max-future` guard of the source, ms (None: off).
    fn max_future_ms(&self) -> Option<u64>;

    /// Opens the source on this worker (paths relative to `base`).
    ///
    /// # Errors
    /// Unreadable inputs, an unreachable broker, bad settings.
    fn open<'s>(
        &self,
        env: &mut StreamEnv<'s>,
        base: &Path,
        watermarks: WatermarkStrategy,
        decoder: DecoderFactory,
    ) -> Result<DataStream<'s, Row>, Error>;

    /// Rewrites the source's settings `table` for a bounded replay of the
    /// original input (`streamforge replay` without `--input`); the default
    /// leaves them as they are (files are bounded).
    fn bound_for_replay(&self, table: &mut toml::Table) {
        let _ = table;
    }
}

/// A sink of rows.
pub trait SinkConnector: Debug + Send + Sync {
    /// The output columns as SQL select items (None: all columns).
    fn columns(&self) -> Option<&[String]>;

    /// Checks the destination before the job starts (e.g. that a table has
    /// the columns `names`); the default checks nothing.
    ///
    /// # Errors
    /// A destination that does not fit.
    fn check(&self, names: &[String]) -> Result<(), Error> {
        let _ = names;
        Ok(())
    }

    /// Writes `rows` (columns `names`); `name` is the operator name, paths
    /// are relative to `base`.
    ///
    /// # Errors
    /// A destination that cannot be set up.
    fn build<'s>(
        &self,
        rows: DataStream<'s, Row>,
        names: &[String],
        base: &Path,
        name: &str,
    ) -> Result<(), Error>;
}

/// A registered source kind.
pub struct SourceKind {
    /// The `kind` of `[source]`.
    pub kind: &'static str,
    /// Reads the settings (without `kind`).
    pub parse: fn(toml::Value) -> Result<Arc<dyn SourceConnector>, String>,
}

/// A registered sink kind.
pub struct SinkKind {
    /// The `kind` of `[[sinks]]`.
    pub kind: &'static str,
    /// Reads the settings (without `kind`).
    pub parse: fn(toml::Value) -> Result<Arc<dyn SinkConnector>, String>,
}

/// The source kinds.
pub const SOURCES: &[SourceKind] = &[file::SOURCE, kafka::SOURCE];

/// The sink kinds.
pub const SINKS: &[SinkKind] = &[jsonl::SINK, csv::SINK, clickhouse::SINK];

/// Splits `kind` off a connector's settings.
fn kind_of(value: &toml::Value, what: &str) -> Result<(String, toml::Value), String> {
    let mut table = value
        .as_table()
        .cloned()
        .ok_or_else(|| format!("{what}: expected a table"))?;
    match table.remove("kind") {
        Some(toml::Value::String(k)) => Ok((k, toml::Value::Table(table))),
        Some(_) => Err(format!("{what}: `kind` is a string")),
        None => Err(format!("{what}: missing field `kind`")),
    }
}

/// The source of `[source]`, by its `kind`.
///
/// # Errors
/// An unknown kind (the known ones listed) or bad settings.
///
/// # Examples
/// ```
/// let v: toml::Value = toml::from_str("kind = \"file\"\npaths = [\"in.jsonl\"]").unwrap();
/// assert!(streamforge::connectors::source(&v).is_ok());
/// let v: toml::Value = toml::from_str("kind = \"ftp\"").unwrap();
/// let err = streamforge::connectors::source(&v).unwrap_err();
/// assert!(err.contains("unknown source kind `ftp`") && err.contains("kafka"), "{err}");
/// ```
pub fn source(value: &toml::Value) -> Result<Arc<dyn SourceConnector>, String> {
    let (kind, settings) = kind_of(value, "source")?;
    let found = SOURCES.iter().find(|s| s.kind == kind).ok_or_else(|| {
        let known: Vec<&str> = SOURCES.iter().map(|s| s.kind).collect();
        format!("unknown source kind `{kind}` (known: {})", known.join(", "))
    })?;
    (found.parse)(settings).map_err(|e| format!("source ({kind}): {e}"))
}

/// The sink of one `[[sinks]]` entry, by its `kind`.
///
/// # Errors
/// An unknown kind (the known ones listed) or bad settings.
///
/// # Examples
/// ```
/// let v: toml::Value = toml::from_str("kind = \"csv\"\npath = \"out.csv\"").unwrap();
/// assert_eq!(streamforge::connectors::sink(&v).unwrap().columns(), None);
/// let v: toml::Value = toml::from_str("kind = \"csv\"\npath = \"o.csv\"\nmode = 1").unwrap();
/// assert!(streamforge::connectors::sink(&v).unwrap_err().contains("unknown field `mode`"));
/// ```
pub fn sink(value: &toml::Value) -> Result<Arc<dyn SinkConnector>, String> {
    let (kind, settings) = kind_of(value, "sink")?;
    let found = SINKS.iter().find(|s| s.kind == kind).ok_or_else(|| {
        let known: Vec<&str> = SINKS.iter().map(|s| s.kind).collect();
        format!("unknown sink kind `{kind}` (known: {})", known.join(", "))
    })?;
    (found.parse)(settings).map_err(|e| format!("sink ({kind}): {e}"))
}

/// Settings of a sink writing lines to a file (jsonl, csv).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileSinkSettings {
    /// Output file (a directory of committed part files with checkpoints).
    pub path: std::path::PathBuf,
    /// Output columns as SQL select items (default: all).
    pub columns: Option<Vec<String>>,
}

/// Reads a connector's settings struct.
fn settings<T: serde::de::DeserializeOwned>(value: toml::Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| e.message().to_string())
}
