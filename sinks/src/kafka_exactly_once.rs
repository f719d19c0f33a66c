//! Exactly-once Kafka sink: a [`CommitTarget`] for the write-ahead-log sink
//! (`crate::write_ahead`) with one Kafka transaction per completed checkpoint
//! and a commit marker in the same transaction.
//!
//! Writer `i` uses `transactional.id = <prefix>-<i>`. A commit opens a
//! transaction, sends the checkpoint's records, stores the **commit marker** —
//! offset `checkpoint + 1` of the consumer group `<prefix>-<i>` on partition 0
//! of the topic, via `send_offsets_to_transaction` — and commits: records and
//! marker become visible atomically to `read_committed` consumers. Taking over
//! a writer after a crash (`init_transactions` with its id) fences any zombie
//! and aborts its open transaction; its marker says what it committed last.
//! A fresh run commits an empty transaction with offset 0 (no marker), so
//! markers of an earlier run cannot hide this run's records.
//!
//! Why not Flink's way: Flink resumes the prepared transaction after a crash
//! by setting the producer id and epoch through reflection; librdkafka has no
//! API for it, so the records are kept in the checkpoint instead.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::checkpoint::CheckpointGraph;
use streamforge_dataflow::Time;

use crate::error::SinkError;
use crate::kafka::{
    record_key, send_record, Failed, KafkaSinkConfig, KafkaSinkCounters, SinkContext,
};
use crate::write_ahead::{CommitTarget, SinkWriteAhead};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A record as sent: key (empty: none) and JSON payload.
pub type Record = (Vec<u8>, Vec<u8>);

fn kafka_err(topic: &str, e: impl ToString) -> SinkError {
    SinkError::Kafka {
        topic: topic.to_string(),
        reason: e.to_string(),
    }
}

/// One transactional producer with the consumer whose group holds its marker.
struct TxnWriter {
    producer: BaseProducer<SinkContext>,
    failed: Failed,
    marker: BaseConsumer,
    group: ConsumerGroupMetadata,
    topic: String,
}

impl TxnWriter {
    /// Creates the producer for `transactional.id = id` and fences its
    /// earlier incarnations (aborting their open transaction).
    fn open(
        base: &ClientConfig,
        topic: &str,
        id: &str,
        counters: Arc<KafkaSinkCounters>,
    ) -> Result<Self, SinkError> {
        let mut config = base.clone();
        config
            .set("enable.idempotence", "true")
            .set("transactional.id", id);
        let failed: Failed = Arc::default();
        let producer: BaseProducer<SinkContext> = config
            .create_with_context(SinkContext {
                failed: failed.clone(),
                counters,
            })
            .map_err(|e| kafka_err(topic, e))?;
        producer
            .init_transactions(TIMEOUT)
            .map_err(|e| kafka_err(topic, format!("init_transactions({id}): {e}")))?;
        let mut consumer = base.clone();
        consumer
            .set("group.id", id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let marker: BaseConsumer = consumer.create().map_err(|e| kafka_err(topic, e))?;
        let group = marker
            .group_metadata()
            .ok_or_else(|| kafka_err(topic, "no consumer group metadata"))?;
        Ok(TxnWriter {
            producer,
            failed,
            marker,
            group,
            topic: topic.to_string(),
        })
    }

    /// The last checkpoint this writer committed.
    fn marker(&self) -> Result<Option<u64>, SinkError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        let committed = self
            .marker
            .committed_offsets(tpl, TIMEOUT)
            .map_err(|e| kafka_err(&self.topic, format!("reading the commit marker: {e}")))?;
        let offset = committed.find_partition(&self.topic, 0).map(|p| p.offset());
        // The list must be gone before the consumer is dropped (STACK-NOTES).
        drop(committed);
        Ok(match offset {
            Some(Offset::Offset(n)) if n >= 1 => Some(n as u64 - 1),
            _ => None,
        })
    }

    /// Sends `records` and the marker in one transaction.
    fn commit(&self, checkpoint: Option<u64>, records: &[Record]) -> Result<(), SinkError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            kafka_err(
                &self.topic,
                format!("{what} of checkpoint {checkpoint:?}: {e}"),
            )
        };
        self.producer
            .begin_transaction()
            .map_err(|e| fail("begin_transaction", &e))?;
        for (key, payload) in records {
            send_record(&self.producer, &self.topic, key, payload, 0)
                .map_err(|e| fail("send", &e))?;
            self.producer.poll(Duration::ZERO);
        }
        self.producer
            .flush(TIMEOUT)
            .map_err(|e| fail("flush", &e))?;
        if let Some((_, _, _, e)) = self.failed.lock().expect("sink lock").first() {
            return Err(fail("delivery", e));
        }
        let marker = checkpoint.map_or(0, |c| c as i64 + 1);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(marker))
            .map_err(|e| fail("marker", &e))?;
        self.producer
            .send_offsets_to_transaction(&tpl, &self.group, TIMEOUT)
            .map_err(|e| fail("send_offsets_to_transaction", &e))?;
        self.producer
            .commit_transaction(TIMEOUT)
            .map_err(|e| fail("commit_transaction", &e))
    }
}

/// The Kafka [`CommitTarget`] of one worker: its own transactional writer and
/// those it took over after a restore.
pub struct KafkaTransactions {
    base: ClientConfig,
    topic: String,
    prefix: String,
    counters: Arc<KafkaSinkCounters>,
    writers: BTreeMap<usize, TxnWriter>,
}

impl KafkaTransactions {
    /// The target of worker `index`. On a fresh run (`fresh`) its marker is
    /// reset by an empty transaction.
    ///
    /// # Errors
    /// The producer cannot be created or initialised.
    pub fn new(
        config: &KafkaSinkConfig,
        base: ClientConfig,
        counters: Arc<KafkaSinkCounters>,
        index: usize,
        fresh: bool,
    ) -> Result<Self, SinkError> {
        let topic = config.topic.clone();
        let prefix = config.transactional_id.clone().ok_or_else(|| {
            kafka_err(
                &topic,
                "an exactly-once Kafka sink needs `transactional-id` (the job has checkpoints)",
            )
        })?;
        let mut target = KafkaTransactions {
            base,
            topic,
            prefix,
            counters,
            writers: BTreeMap::new(),
        };
        target.writer(index)?;
        if fresh {
            target.writers[&index].commit(None, &[])?;
        }
        Ok(target)
    }

    fn writer(&mut self, j: usize) -> Result<&TxnWriter, SinkError> {
        if !self.writers.contains_key(&j) {
            let w = TxnWriter::open(
                &self.base,
                &self.topic,
                &format!("{}-{j}", self.prefix),
                self.counters.clone(),
            )?;
            self.writers.insert(j, w);
        }
        Ok(&self.writers[&j])
    }
}

impl CommitTarget for KafkaTransactions {
    type Record = Record;

    fn recover(&mut self, writer: usize) -> Result<Option<u64>, SinkError> {
        self.writer(writer)?.marker()
    }

    fn commit(
        &mut self,
        writer: usize,
        checkpoint: Option<u64>,
        records: &[Record],
    ) -> Result<(), SinkError> {
        self.writer(writer)?.commit(checkpoint, records)?;
        self.counters
            .transactions_total
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Extension trait: `stream.sink_kafka_exactly_once(..)`.
pub trait SinkKafkaExactlyOnce<'scope, D> {
    /// Writes every record as JSON to `config.topic`, keyed by
    /// `config.key_fields`, committed per checkpoint in Kafka transactions (see
    /// the module docs). `config.transactional_id` is the prefix of the
    /// transactional ids and marker groups; `base` is the client config.
    /// Consumers must read with `isolation.level=read_committed`.
    ///
    /// # Errors
    /// No `transactional-id` in the config; a producer cannot be created or
    /// initialised; the restore cannot read a marker or a part, or re-commit
    /// (all checked before the dataflow runs).
    ///
    /// # Panics
    /// When a transaction fails while running (fail-stop: the job restarts
    /// from the last checkpoint and the write-ahead log makes up for it).
    fn sink_kafka_exactly_once(
        self,
        name: &str,
        config: &KafkaSinkConfig,
        base: ClientConfig,
        counters: Arc<KafkaSinkCounters>,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Result<(), SinkError>;
}

impl<'scope, D: ExchangeData + Serialize> SinkKafkaExactlyOnce<'scope, D>
    for Stream<'scope, Time, Vec<D>>
{
    fn sink_kafka_exactly_once(
        self,
        name: &str,
        config: &KafkaSinkConfig,
        base: ClientConfig,
        counters: Arc<KafkaSinkCounters>,
        checkpoints: &mut CheckpointGraph<'scope>,
    ) -> Result<(), SinkError> {
        let fresh = checkpoints.context().restore.is_none();
        let target = KafkaTransactions::new(config, base, counters, self.scope().index(), fresh)?;
        let key_fields = config.key_fields.clone();
        let encode = move |d: &D| -> Record {
            let value = serde_json::to_value(d).expect("serializable row");
            let key = record_key(&value, &key_fields).into_bytes();
            (key, serde_json::to_vec(&value).expect("json"))
        };
        self.sink_write_ahead(name, target, encode, checkpoints)
    }
}
