//! `kind = "clickhouse"`: a ClickHouse table over HTTP (`JSONEachRow`, so
//! decimals arrive exactly). With checkpoints rows are logged per checkpoint
//! and re-inserted after a restore (write-ahead): use a `ReplacingMergeTree`
//! keyed by the window and key, and read with `FINAL`, for exactly-once
//! results.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use streamforge_sinks::batched::BatchLimits;
use streamforge_sinks::clickhouse::{ClickHouse, ClickHouseSinkConfig};
use streamforge_sources::row::Row;

use super::jsonl::json_line;
use super::{SinkConnector, SinkKind};
use crate::api::DataStream;
use crate::error::Error;

/// The registration.
pub const SINK: SinkKind = SinkKind {
    kind: "clickhouse",
    parse: |v| Ok(Arc::new(super::settings::<ClickHouseRowSink>(v)?)),
};

/// Settings of a ClickHouse sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClickHouseRowSink {
    /// Table (any name).
    pub table: String,
    /// HTTP address (default `http://127.0.0.1:8123`; `${ENV}` allowed).
    pub url: Option<String>,
    /// Database (default `default`).
    pub database: Option<String>,
    /// User (`${ENV}` allowed).
    pub user: Option<String>,
    /// Password (`${ENV}` allowed).
    pub password: Option<String>,
    /// Output columns as SQL select items, named as the table's columns
    /// (default: all).
    pub columns: Option<Vec<String>>,
}

impl ClickHouseRowSink {
    /// The sink client's config.
    fn config(&self) -> ClickHouseSinkConfig {
        let mut t = toml::Table::new();
        t.insert("table".into(), self.table.clone().into());
        for (k, v) in [
            ("url", &self.url),
            ("database", &self.database),
            ("user", &self.user),
            ("password", &self.password),
        ] {
            if let Some(v) = v {
                t.insert(k.into(), v.clone().into());
            }
        }
        ClickHouseSinkConfig::deserialize(toml::Value::Table(t)).expect("every field is valid")
    }
}

impl SinkConnector for ClickHouseRowSink {
    fn columns(&self) -> Option<&[String]> {
        self.columns.as_deref()
    }

    /// The table exists and has every output column.
    fn check(&self, names: &[String]) -> Result<(), Error> {
        let config = self.config();
        let client = ClickHouse::new(&config, Default::default())?;
        let have: Vec<String> = client
            .select_json(&format!(
                "DESCRIBE TABLE `{}`.`{}` FORMAT JSONEachRow",
                config.database, config.table
            ))?
            .into_iter()
            .filter_map(|v| Some(v.get("name")?.as_str()?.to_string()))
            .collect();
        let missing: Vec<&String> = names.iter().filter(|c| !have.contains(c)).collect();
        if !missing.is_empty() {
            return Err(Error::Invalid(format!(
                "clickhouse sink {}.{}: the table has no column(s) {missing:?} (it has {have:?})",
                config.database, config.table
            )));
        }
        Ok(())
    }

    fn build<'s>(
        &self,
        rows: DataStream<'s, Row>,
        names: &[String],
        _base: &Path,
        name: &str,
    ) -> Result<(), Error> {
        let config = self.config();
        let client = ClickHouse::new(&config, Default::default())?;
        let limits = BatchLimits {
            rows: config.batch_rows,
            bytes: config.batch_bytes,
            interval: config.batch_interval,
        };
        let names = names.to_vec();
        rows.map(move |row: Row| json_line(&names, &row))
            .sink_commit(
                name,
                client,
                |l: &String| l.as_bytes().to_vec(),
                Vec::len,
                limits,
            );
        Ok(())
    }
}
