//! Kafka sink (rdkafka): keyed JSON records from every worker, with an
//! idempotent producer, delivery errors surfaced and retried, a flush whenever an
//! epoch completes (the checkpoint hook) and at the end, and an optional
//! transactional mode with one `transactional.id` per worker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;
use timely::ExchangeData;

use streamforge_dataflow::time::FrontierView;
use streamforge_dataflow::Time;

use crate::error::SinkError;

/// Attempts per record before the sink gives up and stops the job.
pub const MAX_ATTEMPTS: u32 = 5;
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// A Kafka sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Topic to write.
    pub topic: String,
    /// Fields of the JSON record joined by `|` to form the message key (e.g.
    /// `["service", "operator_name"]`); empty: no key.
    #[serde(default)]
    pub key_fields: Vec<String>,
    /// Create the topic with this many partitions when the job starts, if it
    /// does not exist (without it a missing topic is an error before the start).
    pub create_partitions: Option<i32>,
    /// Transactional mode: each worker uses `transactional.id =
    /// <prefix>-<worker index>` and commits a transaction per completed epoch.
    pub transactional_id: Option<String>,
    /// Any librdkafka property; values may name environment variables `${NAME}`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Counters of a Kafka sink.
#[derive(Debug, Default)]
pub struct KafkaSinkCounters {
    /// Records acknowledged by the broker.
    pub delivered_total: AtomicU64,
    /// Delivery failures (each retried up to [`MAX_ATTEMPTS`]).
    pub delivery_errors_total: AtomicU64,
    /// Transactions committed by the exactly-once sink.
    pub transactions_total: AtomicU64,
}

pub(crate) type Failed = Arc<Mutex<Vec<(Vec<u8>, Vec<u8>, u32, KafkaError)>>>;

pub(crate) struct SinkContext {
    pub(crate) failed: Failed,
    pub(crate) counters: Arc<KafkaSinkCounters>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Box<u32>;
    fn delivery(&self, result: &DeliveryResult<'_>, attempt: Box<u32>) {
        match result {
            Ok(_) => {
                self.counters
                    .delivered_total
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err((e, m)) => {
                self.counters
                    .delivery_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                let key = m.key().unwrap_or_default().to_vec();
                let payload = m.payload().unwrap_or_default().to_vec();
                self.failed
                    .lock()
                    .expect("sink lock")
                    .push((key, payload, *attempt, e.clone()));
            }
        }
    }
}

/// A producer with its retry queue.
struct Writer {
    producer: BaseProducer<SinkContext>,
    failed: Failed,
    topic: String,
}

/// Sends one record (`key` empty: none) with its attempt number, waiting while
/// the producer's local queue is full.
pub(crate) fn send_record(
    producer: &BaseProducer<SinkContext>,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    attempt: u32,
) -> Result<(), KafkaError> {
    loop {
        let record = BaseRecord::with_opaque_to(topic, Box::new(attempt)).payload(payload);
        let record = if key.is_empty() {
            record
        } else {
            record.key(key)
        };
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

impl Writer {
    /// Sends one record, waiting while the local queue is full.
    fn send(&self, key: &[u8], payload: &[u8], attempt: u32) {
        send_record(&self.producer, &self.topic, key, payload, attempt)
            .unwrap_or_else(|e| panic!("kafka sink {}: {e}", self.topic));
    }

    /// Re-sends what failed since the last call; returns whether there was any.
    fn resend_failed(&self) -> bool {
        let retry: Vec<_> = std::mem::take(&mut *self.failed.lock().expect("sink lock"));
        let any = !retry.is_empty();
        for (key, payload, attempt, error) in retry {
            if attempt + 1 >= MAX_ATTEMPTS {
                panic!(
                    "kafka sink {}: a record failed {MAX_ATTEMPTS} times, last error: {error}",
                    self.topic
                );
            }
            tracing::warn!(%error, attempt, topic = %self.topic, "kafka delivery failed; retrying");
            self.send(&key, &payload, attempt + 1);
        }
        any
    }

    /// Waits until every record is acknowledged, re-sending failures.
    fn flush(&self) {
        loop {
            self.producer
                .flush(FLUSH_TIMEOUT)
                .unwrap_or_else(|e| panic!("kafka sink {} flush: {e}", self.topic));
            if !self.resend_failed() {
                return;
            }
        }
    }
}

/// The key of a JSON record: the named fields' values joined by `|`.
///
/// # Examples
/// ```
/// use streamforge_sinks::kafka::record_key;
/// let v = serde_json::json!({"service": "cart", "operator_name": "Get", "n": 3});
/// assert_eq!(record_key(&v, &["service".into(), "operator_name".into()]), "cart|Get");
/// assert_eq!(record_key(&v, &["n".into()]), "3");
/// ```
pub fn record_key(value: &serde_json::Value, fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| match value.get(f) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => String::new(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// Extension trait: `stream.sink_kafka(..)`.
pub trait SinkKafka<'scope, D> {
    /// Writes every record as JSON to `config.topic`, keyed by
    /// `config.key_fields`, from every worker. `base` is the client config
    /// (`bootstrap.servers` etc.; the job builds it from `properties`).
    ///
    /// # Errors
    /// The producer cannot be created, or (transactional) initialised.
    ///
    /// # Panics
    /// When a record still fails after [`MAX_ATTEMPTS`] or a flush or
    /// transaction commit fails: the job stops (fail-stop) instead of losing rows.
    fn sink_kafka(
        self,
        name: &str,
        config: &KafkaSinkConfig,
        base: ClientConfig,
        counters: Arc<KafkaSinkCounters>,
    ) -> Result<(), SinkError>;
}

fn kafka_err(topic: &str, e: impl ToString) -> SinkError {
    SinkError::Kafka {
        topic: topic.to_string(),
        reason: e.to_string(),
    }
}

impl<'scope, D: ExchangeData + Serialize> SinkKafka<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn sink_kafka(
        self,
        name: &str,
        config: &KafkaSinkConfig,
        mut base: ClientConfig,
        counters: Arc<KafkaSinkCounters>,
    ) -> Result<(), SinkError> {
        let topic = config.topic.clone();
        base.set("enable.idempotence", "true");
        let transactional = config.transactional_id.is_some();
        if let Some(prefix) = &config.transactional_id {
            base.set(
                "transactional.id",
                format!("{prefix}-{}", self.scope().index()),
            );
        }
        let failed: Failed = Arc::default();
        let producer: BaseProducer<SinkContext> = base
            .create_with_context(SinkContext {
                failed: failed.clone(),
                counters,
            })
            .map_err(|e| kafka_err(&topic, e))?;
        if transactional {
            producer
                .init_transactions(FLUSH_TIMEOUT)
                .map_err(|e| kafka_err(&topic, e))?;
            producer
                .begin_transaction()
                .map_err(|e| kafka_err(&topic, e))?;
        }
        let key_fields = config.key_fields.clone();
        let mut last_epoch: Option<u64> = Some(0);
        let writer = Writer {
            producer,
            failed,
            topic,
        };
        self.sink(Pipeline, name, move |(input, frontier)| {
            input.for_each_time(|_, data| {
                for d in data.flat_map(|d| d.drain(..)) {
                    let value = serde_json::to_value(&d).expect("serializable row");
                    let key = record_key(&value, &key_fields);
                    let payload = serde_json::to_vec(&value).expect("serializable row");
                    writer.send(key.as_bytes(), &payload, 0);
                }
            });
            writer.producer.poll(Duration::ZERO);
            writer.resend_failed();
            // An epoch completed (or the input ended): flush, and commit the
            // transaction of the epochs before it.
            let epoch = FrontierView::of(frontier).oldest_epoch;
            if epoch != last_epoch {
                last_epoch = epoch;
                writer.flush();
                if transactional {
                    writer
                        .producer
                        .commit_transaction(FLUSH_TIMEOUT)
                        .unwrap_or_else(|e| panic!("kafka sink: commit_transaction failed: {e}"));
                    if epoch.is_some() {
                        writer
                            .producer
                            .begin_transaction()
                            .unwrap_or_else(|e| panic!("kafka sink: begin_transaction: {e}"));
                    }
                }
            }
        });
        Ok(())
    }
}

/// A Kafka topic as a [`CommitTarget`](crate::write_ahead::CommitTarget) of
/// `(key, value)` records without transactions: each commit sends its
/// records and waits until all are acknowledged (at-least-once; a re-commit
/// after a restore sends them again). For compacted topics, whose consumers
/// keep the latest value per key, a repeat is harmless.
pub struct KafkaPlain {
    writer: Writer,
}

impl KafkaPlain {
    /// An idempotent producer for `config.topic`.
    ///
    /// # Errors
    /// The producer cannot be created.
    pub fn new(
        config: &KafkaSinkConfig,
        mut base: ClientConfig,
        counters: Arc<KafkaSinkCounters>,
    ) -> Result<Self, SinkError> {
        base.set("enable.idempotence", "true");
        let failed: Failed = Arc::default();
        let producer: BaseProducer<SinkContext> = base
            .create_with_context(SinkContext {
                failed: failed.clone(),
                counters,
            })
            .map_err(|e| kafka_err(&config.topic, e))?;
        Ok(KafkaPlain {
            writer: Writer {
                producer,
                failed,
                topic: config.topic.clone(),
            },
        })
    }
}

impl crate::write_ahead::CommitTarget for KafkaPlain {
    type Record = (Vec<u8>, Vec<u8>);

    fn recover(&mut self, _writer: usize) -> Result<Option<u64>, SinkError> {
        Ok(None)
    }

    fn commit(
        &mut self,
        _writer: usize,
        _checkpoint: Option<u64>,
        records: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<(), SinkError> {
        for (key, value) in records {
            self.writer.send(key, value, 0);
        }
        self.writer.flush();
        Ok(())
    }
}
