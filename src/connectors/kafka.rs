//! `kind = "kafka"`: a topic of JSON values, one partition per topic
//! partition, offsets in checkpoints; and the topic checks every Kafka
//! sink runs before a job starts ([`ensure_topic`], [`check_topic`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use serde::Deserialize;
use streamforge_sources::kafka::client_config;
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

/// A Kafka failure on `topic` as the job's error.
pub(crate) fn kafka_error(topic: &str, e: impl ToString) -> Error {
    Error::Source(streamforge_sources::SourceError::Kafka {
        topic: topic.to_string(),
        reason: e.to_string(),
    })
}

/// Creates `topic` with `partitions` partitions unless it exists.
///
/// # Errors
/// The broker refused or could not be reached.
pub fn ensure_topic(
    properties: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = client_config(properties)?
        .create()
        .map_err(|e| kafka_error(topic, e))?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_executor::block_on(admin.create_topics([&new], &opts))
        .map_err(|e| kafka_error(topic, e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(kafka_error(topic, code)),
        }
    }
    Ok(())
}

/// Checks that `topic` exists.
///
/// # Errors
/// The broker cannot be reached or has no such topic (the message says how to
/// create it).
pub fn check_topic(properties: &BTreeMap<String, String>, topic: &str) -> Result<(), Error> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = client_config(properties)?
        .create()
        .map_err(|e| kafka_error(topic, e))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| kafka_error(topic, e))?;
    let ok = metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
    if ok {
        Ok(())
    } else {
        Err(kafka_error(
            topic,
            "no such topic: create it, or set create-partitions = N on the sink",
        ))
    }
}
