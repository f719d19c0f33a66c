//! Kafka source (rdkafka): one reader per topic partition, spread over all
//! workers of all processes by the partitioned source core, which keeps one
//! watermark per partition and combines them by min.
//!
//! Offsets are owned by the job: partitions are `assign`ed (no consumer-group
//! rebalancing) from the configured start position; the checkpoint issue stores
//! the positions. With `group-id` and `commit-offsets = true` the consumed
//! positions are also committed to the group every 5 s, for lag monitoring only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use streamforge_dataflow::checkpoint::PartitionPosition;
use streamforge_dataflow::source::{PartitionReader, ReadStatus, SourceItem, Waker};
use streamforge_dataflow::DeadLetter;

use crate::error::SourceError;
use crate::file::FileFormat;
use crate::mapping::SpanMapping;
use crate::record::RecordDecoder;
use crate::span::Span;
use crate::value::ValueDecoder;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_POLL: Duration = Duration::from_millis(100);
const COMMIT_EVERY: Duration = Duration::from_secs(5);
/// Messages re-fetched before a checkpointed offset on restore (see `open_at`).
const RESTORE_REWIND: i64 = 20_000;

/// Where to start reading each partition.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", untagged)]
pub enum StartPosition {
    /// `"earliest"` (default) or `"latest"`.
    Named(NamedStart),
    /// `{ timestamp-ms = N }`: the first message with timestamp ≥ N.
    Timestamp {
        /// ms since the Unix epoch.
        #[serde(rename = "timestamp-ms")]
        timestamp_ms: i64,
    },
    /// `{ offsets = [o0, o1, …] }`: an explicit offset per partition.
    Offsets {
        /// One offset per partition, in partition order.
        offsets: Vec<i64>,
    },
    /// The default: earliest.
    #[default]
    #[serde(skip)]
    Default,
}

/// Named start positions.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum NamedStart {
    /// The earliest retained offset.
    Earliest,
    /// The end of the partition at start.
    Latest,
}

/// A Kafka source.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Topic to read.
    pub topic: String,
    /// Value format: `jsonl` (a JSON object per message, default) or `csv`.
    pub format: Option<FileFormat>,
    /// Column names of CSV values (messages have no header).
    pub csv_columns: Option<Vec<String>>,
    /// Start position (default earliest).
    #[serde(default)]
    pub start: StartPosition,
    /// A bounded replay: stop each partition once its consumer has reached
    /// the partition's end (librdkafka's partition-EOF event: the fetch
    /// position met the high watermark of a fetch response), instead of
    /// reading forever. Messages produced while the job catches up are read
    /// too, so the end is that of the moment the partition is caught up
    /// (at least the end at start). No wall-clock timeout decides it: the
    /// end offset a broker lists is not used either (Tansu 0.6 lists about
    /// half of a freshly produced partition; its fetch responses are exact).
    #[serde(default)]
    pub bounded: bool,
    /// Consumer group for offset commits (lag monitoring only).
    pub group_id: Option<String>,
    /// Commit consumed offsets to `group-id` every 5 s.
    #[serde(default)]
    pub commit_offsets: bool,
    /// Any librdkafka property (`bootstrap.servers`, `security.protocol`,
    /// `sasl.*`, …). Values may name environment variables as `${NAME}`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Field mapping of values (span jobs; table jobs declare a schema).
    #[serde(default)]
    pub mapping: Option<SpanMapping>,
}

/// Replaces every `${NAME}` in `value` with the environment variable `NAME`
/// (see [`streamforge_dataflow::env::expand_env`]).
///
/// # Errors
/// [`SourceError::MissingEnv`] when a named variable is not set.
pub fn expand_env(value: &str) -> Result<String, SourceError> {
    streamforge_dataflow::env::expand_env(value).map_err(|e| SourceError::MissingEnv(e.0))
}

/// A librdkafka client config from a property map (with `${ENV}` expansion).
///
/// # Errors
/// A missing environment variable.
pub fn client_config(properties: &BTreeMap<String, String>) -> Result<ClientConfig, SourceError> {
    let mut config = ClientConfig::new();
    for (k, v) in properties {
        config.set(k, expand_env(v)?);
    }
    Ok(config)
}

impl KafkaSourceConfig {
    fn err(&self, reason: impl ToString) -> SourceError {
        SourceError::Kafka {
            topic: self.topic.clone(),
            reason: reason.to_string(),
        }
    }

    fn consumer(&self) -> Result<BaseConsumer<SourceContext>, SourceError> {
        let mut config = client_config(&self.properties)?;
        config.set("enable.auto.commit", "false").set(
            "enable.partition.eof",
            if self.bounded { "true" } else { "false" },
        );
        config.set(
            "group.id",
            self.group_id
                .clone()
                .unwrap_or_else(|| "streamforge".into()),
        );
        config
            .create_with_context(SourceContext)
            .map_err(|e| self.err(e))
    }

    fn decoder(&self) -> Result<ValueDecoder, SourceError> {
        let mapping = self
            .mapping
            .as_ref()
            .ok_or_else(|| self.err("a span source needs a [source.mapping]"))?;
        match self.format.unwrap_or(FileFormat::Jsonl) {
            FileFormat::Jsonl => ValueDecoder::json(mapping),
            FileFormat::Csv => {
                let cols = self
                    .csv_columns
                    .as_ref()
                    .ok_or_else(|| self.err("format csv needs csv-columns"))?;
                ValueDecoder::csv(mapping, cols)
            }
        }
        .map_err(|e| self.err(e))
    }

    /// Number of partitions of the topic (checked before the job starts).
    ///
    /// # Errors
    /// The broker cannot be reached, the topic does not exist, or the config is
    /// invalid.
    pub fn partitions(&self) -> Result<usize, SourceError> {
        self.decoder()?;
        self.partition_count()
    }

    /// Number of partitions of the topic, without checking the span mapping
    /// (for sources that decode with their own [`RecordDecoder`]).
    ///
    /// # Errors
    /// The broker cannot be reached, the topic does not exist, or the start
    /// offsets do not fit the partitions.
    pub fn partition_count(&self) -> Result<usize, SourceError> {
        let consumer = self.consumer()?;
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), METADATA_TIMEOUT)
            .map_err(|e| self.err(e))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or_else(|| self.err("no such topic"))?;
        if let Some(e) = topic.error() {
            return Err(self.err(format!("{e:?}")));
        }
        let n = topic.partitions().len();
        if n == 0 {
            return Err(self.err("the topic has no partitions"));
        }
        if let StartPosition::Offsets { offsets } = &self.start {
            if offsets.len() != n {
                return Err(self.err(format!(
                    "{} start offsets for {n} partitions",
                    offsets.len()
                )));
            }
        }
        Ok(n)
    }

    /// Opens partition `p` as a reader of spans.
    ///
    /// # Errors
    /// The consumer cannot be created or assigned.
    pub fn open(&self, p: usize) -> Result<Box<dyn PartitionReader<Span>>, SourceError> {
        self.open_at(p, None)
    }

    /// Opens partition `p` continuing at a checkpointed position (its next
    /// offset), ignoring the configured start position.
    ///
    /// # Errors
    /// The consumer cannot be created or assigned.
    pub fn open_at(
        &self,
        p: usize,
        position: Option<&PartitionPosition>,
    ) -> Result<Box<dyn PartitionReader<Span>>, SourceError> {
        self.open_with(p, position, self.decoder()?)
    }

    /// Opens partition `p` (continuing at `position` when restoring) as a
    /// reader of records that `decoder` makes from message values; the
    /// configured `format`, `csv-columns` and `mapping` are not used.
    ///
    /// # Errors
    /// The consumer cannot be created or assigned.
    pub fn open_with<D: 'static, Dec: RecordDecoder<D>>(
        &self,
        p: usize,
        position: Option<&PartitionPosition>,
        mut decoder: Dec,
    ) -> Result<Box<dyn PartitionReader<D>>, SourceError> {
        if let Some(pos) = position {
            decoder.resume(pos.max_seen);
        }
        let consumer = self.consumer()?;
        let partition = p as i32;
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, partition, METADATA_TIMEOUT)
            .map_err(|e| self.err(e))?;
        let start = match (position, &self.start) {
            (Some(pos), _) => pos.offset as i64,
            (None, StartPosition::Default | StartPosition::Named(NamedStart::Earliest)) => low,
            (None, StartPosition::Named(NamedStart::Latest)) => high,
            (None, StartPosition::Offsets { offsets }) => offsets[p].max(low),
            (None, StartPosition::Timestamp { timestamp_ms }) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&self.topic, partition, Offset::Offset(*timestamp_ms))
                    .map_err(|e| self.err(e))?;
                let found = consumer
                    .offsets_for_times(tpl, METADATA_TIMEOUT)
                    .map_err(|e| self.err(e))?;
                let offset = found.elements().first().map(|e| e.offset());
                drop(found);
                match offset {
                    Some(Offset::Offset(o)) => o,
                    _ => high,
                }
            }
        };
        // A restore fetches from a little earlier and skips what it had read:
        // Tansu 0.6 cannot fetch from inside a record batch (it answers from
        // the next batch), so fetching exactly at a checkpointed offset loses
        // the rest of that batch. Harmless on Kafka.
        let fetch_from = if position.is_some() {
            (start - RESTORE_REWIND).max(low)
        } else {
            start
        };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Offset(fetch_from))
            .map_err(|e| self.err(e))?;
        consumer.assign(&tpl).map_err(|e| self.err(e))?;
        drop(tpl);
        Ok(Box::new(KafkaPartition {
            consumer: Some(consumer),
            topic: self.topic.clone(),
            partition,
            name: format!("{}/{partition}", self.topic),
            decoder,
            next_offset: start,
            skip_below: start,
            bounded: self.bounded,
            at_end: false,
            commit: self.commit_offsets && self.group_id.is_some(),
            last_commit: Instant::now(),
            bytes: 0,
            paused: false,
        }))
    }
}

/// The client context of source consumers: librdkafka's default logs every
/// client error at ERROR, and a bounded consumer's partition-EOF events
/// (its normal end, see [`KafkaSourceConfig::bounded`]) also reach that
/// callback as global errors (seen in a 2-process cluster, from consumers
/// closed after their end): those are logged at DEBUG.
pub struct SourceContext;

impl ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            tracing::debug!(%reason, "kafka partition end");
        } else {
            tracing::error!(%error, %reason, "kafka client error");
        }
    }
}

impl ConsumerContext for SourceContext {}

struct KafkaPartition<Dec> {
    consumer: Option<BaseConsumer<SourceContext>>,
    topic: String,
    partition: i32,
    name: String,
    decoder: Dec,
    next_offset: i64,
    /// Messages below this offset were read before the restore.
    skip_below: i64,
    /// Finish at the partition's end (see [`KafkaSourceConfig::bounded`]).
    bounded: bool,
    /// The consumer reported the partition's end, and no message came since.
    at_end: bool,
    commit: bool,
    last_commit: Instant,
    /// Payload bytes read (flow control's in-flight budget).
    bytes: u64,
    /// Paused in librdkafka by flow control.
    paused: bool,
}

impl<Dec> KafkaPartition<Dec> {
    fn commit(&mut self) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(
                &self.topic,
                self.partition,
                Offset::Offset(self.next_offset),
            )
            .is_ok()
        {
            if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(partition = %self.name, error = %e, "offset commit failed");
            }
        }
        self.last_commit = Instant::now();
    }
}

impl<D, Dec: RecordDecoder<D>> PartitionReader<D> for KafkaPartition<Dec> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<D>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        let Some(consumer) = &self.consumer else {
            return Ok(ReadStatus::Finished);
        };
        let mut read = 0;
        while read < max_items {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    self.at_end = true;
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(partition = %self.name, error = %e, "kafka consumer error");
                    return Ok(ReadStatus::Idle(IDLE_POLL));
                }
                Some(Ok(m)) => {
                    let offset = m.offset();
                    if offset < self.skip_below {
                        continue;
                    }
                    read += 1;
                    self.at_end = false;
                    self.next_offset = offset + 1;
                    let payload = m.payload().unwrap_or_default();
                    self.bytes += payload.len() as u64;
                    out.push(match self.decoder.decode(payload) {
                        Ok((event_time_ms, record)) => SourceItem::Record {
                            event_time_ms,
                            record,
                        },
                        Err(reason) => SourceItem::DeadLetter(DeadLetter {
                            source: self.name.clone(),
                            position: offset as u64,
                            reason,
                            raw: String::from_utf8_lossy(payload).into_owned(),
                        }),
                    });
                }
            }
        }
        if self.commit && self.last_commit.elapsed() >= COMMIT_EVERY {
            self.commit();
        }
        if read > 0 {
            return Ok(ReadStatus::More);
        }
        if self.bounded && self.at_end {
            if self.commit {
                self.commit();
            }
            return Ok(ReadStatus::Finished);
        }
        Ok(ReadStatus::Idle(IDLE_POLL))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn position(&self) -> PartitionPosition {
        PartitionPosition {
            offset: self.next_offset.max(0) as u64,
            ..PartitionPosition::default()
        }
    }

    fn bytes_read(&self) -> Option<u64> {
        Some(self.bytes)
    }

    /// Pauses or resumes fetching in librdkafka (the consumer keeps its
    /// position), so a held-back partition does not fill the prefetch queue.
    fn set_paused(&mut self, paused: bool) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        if paused == self.paused {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        let result = if paused {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        match result {
            Ok(()) => self.paused = paused,
            Err(e) => {
                tracing::warn!(partition = %self.name, error = %e, paused, "kafka pause/resume failed")
            }
        }
    }

    fn set_waker(&mut self, waker: Waker) {
        if let Some(consumer) = self.consumer.as_mut() {
            consumer.set_nonempty_callback(move || waker());
        }
    }
}
