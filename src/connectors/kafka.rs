//! `kind = "kafka"`: a topic of JSON values, one partition per topic
//! partition, offsets in checkpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use streamforge_sources::kafka::StartPosition;
use streamforge_sources::row::Row;

use super::{DecoderFactory, SourceConnector, SourceKind};
use crate::api::{DataStream, StreamEnv, WatermarkStrategy};
use crate::error::Error;

/// The registration.
pub const SOURCE: SourceKind = SourceKind {
    kind: "kafka",
    parse: |v| Ok(Arc::new(super::settings::<KafkaSource>(v)?)),
};

/// Settings of a Kafka source.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaSource {
    /// Topic.
    pub topic: String,
    /// Start position (default earliest).
    #[serde(default)]
    pub start: StartPosition,
    /// Stop at the end offsets seen at start (a bounded replay).
    #[serde(default)]
    pub bounded: bool,
    /// Consumer group for offset commits (lag monitoring only).
    pub group_id: Option<String>,
    /// Commit consumed offsets to `group-id` every 5 s.
    #[serde(default)]
    pub commit_offsets: bool,
    /// librdkafka properties (`bootstrap.servers`, …; `${ENV}` allowed).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// As for files.
    #[serde(default, with = "humantime_serde")]
    pub max_future: Option<Duration>,
}

impl SourceConnector for KafkaSource {
    fn max_future_ms(&self) -> Option<u64> {
        self.max_future.map(|d| d.as_millis() as u64)
    }

    fn open<'s>(
        &self,
        env: &mut StreamEnv<'s>,
        _base: &Path,
        watermarks: WatermarkStrategy,
        decoder: DecoderFactory,
    ) -> Result<DataStream<'s, Row>, Error> {
        let config = streamforge_sources::KafkaSourceConfig {
            topic: self.topic.clone(),
            format: None,
            csv_columns: None,
            start: self.start.clone(),
            bounded: self.bounded,
            group_id: self.group_id.clone(),
            commit_offsets: self.commit_offsets,
            properties: self.properties.clone(),
            mapping: None,
        };
        env.from_kafka_with("source", &config, watermarks, move || decoder())
    }

    /// From the earliest offsets to the end offsets seen at start.
    fn bound_for_replay(&self, table: &mut toml::Table) {
        table.insert("bounded".into(), true.into());
        table.insert("start".into(), "earliest".into());
    }
}
