//! Exactly-once Kafka sink: a write-ahead log in the checkpoint, one Kafka
//! transaction per completed checkpoint, and a commit marker in the same
//! transaction.
//!
//! Every worker keeps the records it receives. When checkpoint `c` is cut at
//! its input, the worker's records of epochs `≤ c` that are not yet committed
//! go into its checkpoint part `<name>-w<i>` (**pre-commit**: the write-ahead
//! log). When the committer announces `c` complete, the worker opens a
//! transaction (`transactional.id = <prefix>-<i>`), sends those records,
//! stores the **commit marker** — the offset `c` of the consumer group
//! `<prefix>-<i>` on partition 0 of the topic, via `send_offsets_to_transaction`
//! — and commits (**commit**). Records and marker become visible atomically to
//! `read_committed` consumers.
//!
//! On a restore from checkpoint `R`, every worker takes over the old writers
//! `j ≡ i (mod workers)` whose parts are in `R`: `init_transactions` with
//! `<prefix>-<j>` fences any zombie and aborts its open transaction; the marker
//! says which checkpoint that writer committed last; records of the part
//! tagged above the marker are sent again and committed with marker `R`
//! (**idempotent re-commit**: the crash came between the manifest and the
//! commit). Records after `R` are produced again by the replay.
//!
//! Why not Flink's way: Flink resumes the prepared transaction after a crash
//! by setting the producer id and epoch through reflection; librdkafka has no
//! API for it, so the records are kept in the checkpoint instead (Flink's
//! `GenericWriteAheadSink` pattern). The cost: records become visible only
//! after their checkpoint completes (as with any exactly-once sink), and the
//! commit blocks the worker while a checkpoint's records are delivered.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::CapabilitySet;
use timely::dataflow::Stream;
use timely::progress::Antichain;
use timely::ExchangeData;

use streamforge_dataflow::checkpoint::{CheckpointGraph, CheckpointMsg, Completion, FINAL};
use streamforge_dataflow::time::{Epoch, FrontierView};
use streamforge_dataflow::Time;

use crate::error::SinkError;
use crate::kafka::{record_key, Failed, KafkaSinkConfig, KafkaSinkCounters, SinkContext};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A record as sent: key (empty: none) and JSON payload.
pub type Record = (Vec<u8>, Vec<u8>);

/// The write-ahead log of one writer: records by the checkpoint that
/// pre-committed them ([`FINAL`] for the final checkpoint), oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteAheadLog {
    /// `(checkpoint id, records)`.
    pub checkpoints: Vec<(u64, Vec<Record>)>,
}

impl WriteAheadLog {
    /// The records to send again after a restore from checkpoint `restored`
    /// (`was_final`: it was a final checkpoint, whose records are tagged
    /// [`FINAL`]), given the writer's last committed checkpoint `marker`.
    ///
    /// # Examples
    /// ```
    /// use streamforge_sinks::kafka_exactly_once::WriteAheadLog;
    /// use streamforge_dataflow::checkpoint::FINAL;
    /// let r = |s: &str| (Vec::new(), s.as_bytes().to_vec());
    /// let wal = WriteAheadLog { checkpoints: vec![(4, vec![r("a")]), (5, vec![r("b")])] };
    /// // Checkpoint 4 was committed, 5 was not: only its records go again.
    /// assert_eq!(wal.to_resend(5, false, Some(4)), vec![r("b")]);
    /// assert_eq!(wal.to_resend(5, false, None).len(), 2);
    /// assert!(wal.to_resend(5, false, Some(5)).is_empty());
    /// // A final checkpoint's records count as the restored id.
    /// let fin = WriteAheadLog { checkpoints: vec![(FINAL, vec![r("c")])] };
    /// assert_eq!(fin.to_resend(9, true, Some(8)), vec![r("c")]);
    /// assert!(fin.to_resend(9, true, Some(9)).is_empty());
    /// ```
    pub fn to_resend(&self, restored: u64, was_final: bool, marker: Option<u64>) -> Vec<Record> {
        self.checkpoints
            .iter()
            .filter_map(|(id, records)| {
                let id = if *id == FINAL && was_final {
                    restored
                } else {
                    *id
                };
                (id <= restored && marker.is_none_or(|m| id > m)).then_some(records)
            })
            .flatten()
            .cloned()
            .collect()
    }
}

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
        let offset = committed
            .find_partition(&self.topic, 0)
            .map(|p| p.offset());
        // The list must be gone before the consumer is dropped (STACK-NOTES).
        drop(committed);
        Ok(match offset {
            Some(Offset::Offset(n)) if n >= 0 => Some(n as u64),
            _ => None,
        })
    }

    fn send(&self, key: &[u8], payload: &[u8]) {
        loop {
            let record = BaseRecord::with_opaque_to(&self.topic, Box::new(0)).payload(payload);
            let record = if key.is_empty() {
                record
            } else {
                record.key(key)
            };
            match self.producer.send(record) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("kafka sink {}: {e}", self.topic),
            }
        }
    }

    /// Sends `records` and the marker `checkpoint` in one transaction.
    ///
    /// # Panics
    /// On any failure (fail-stop: the restore sends the records again).
    fn commit<'a>(&self, checkpoint: u64, records: impl Iterator<Item = &'a Record>) {
        let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
            panic!(
                "kafka sink {}: {what} of checkpoint {checkpoint}: {e}",
                self.topic
            )
        };
        self.producer
            .begin_transaction()
            .unwrap_or_else(|e| fail("begin_transaction", &e));
        for (key, payload) in records {
            self.send(key, payload);
            self.producer.poll(Duration::ZERO);
        }
        self.producer
            .flush(TIMEOUT)
            .unwrap_or_else(|e| fail("flush", &e));
        if let Some((_, _, _, e)) = self.failed.lock().expect("sink lock").first() {
            fail("delivery", e);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(checkpoint as i64))
            .unwrap_or_else(|e| fail("marker", &e));
        self.producer
            .send_offsets_to_transaction(&tpl, &self.group, TIMEOUT)
            .unwrap_or_else(|e| fail("send_offsets_to_transaction", &e));
        self.producer
            .commit_transaction(TIMEOUT)
            .unwrap_or_else(|e| fail("commit_transaction", &e));
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
        let topic = config.topic.clone();
        let prefix = config.transactional_id.clone().ok_or_else(|| {
            kafka_err(
                &topic,
                "an exactly-once Kafka sink needs `transactional-id` (the job has checkpoints)",
            )
        })?;
        let ctx = checkpoints.context().clone();
        let scope = self.scope();
        let (index, peers) = (scope.index(), scope.peers());
        let part_prefix = format!("{name}-w");
        let writer = TxnWriter::open(
            &base,
            &topic,
            &format!("{prefix}-{index}"),
            counters.clone(),
        )?;
        if let Some(r) = &ctx.restore {
            let was_final =
                r.checkpoint.manifest.meta.get("final").map(String::as_str) == Some("true");
            for part in r.parts_with_prefix(&part_prefix) {
                let Some(j) = part[part_prefix.len()..].parse::<usize>().ok() else {
                    continue;
                };
                if j % peers != index {
                    continue;
                }
                let bytes = r.part(part).map_err(|e| kafka_err(&topic, e))?;
                let wal: WriteAheadLog = bincode::deserialize(&bytes)
                    .map_err(|e| kafka_err(&topic, format!("part {part}: {e}")))?;
                let old;
                let w = if j == index {
                    &writer
                } else {
                    old = TxnWriter::open(&base, &topic, &format!("{prefix}-{j}"), counters.clone())?;
                    &old
                };
                let marker = w.marker()?;
                let resend = wal.to_resend(r.id(), was_final, marker);
                if !resend.is_empty() {
                    tracing::info!(
                        part,
                        records = resend.len(),
                        checkpoint = r.id(),
                        ?marker,
                        "kafka sink: re-committing records of a checkpoint whose commit did not happen"
                    );
                    w.commit(r.id(), resend.iter());
                }
            }
        }

        let key_fields = config.key_fields.clone();
        let mut builder = OperatorBuilder::new(name.to_string(), scope);
        let (ack_out, acks) = builder.new_output::<Vec<CheckpointMsg>>();
        let mut data = builder.new_input(self, Pipeline);
        let mut completions = builder.new_input_connection(
            checkpoints.completions(),
            Pipeline,
            std::iter::empty::<(usize, Antichain<_>)>(),
        );
        let mut ack_out = OutputBuilder::from(ack_out);
        let part = format!("{part_prefix}{index}");
        let first_epoch = ctx.first_epoch();

        builder.build(move |mut caps| {
            let mut ack_caps = CapabilitySet::from_elem(caps.pop().expect("ack output"));
            let mut by_epoch: BTreeMap<Epoch, Vec<Record>> = BTreeMap::new();
            let mut wal = WriteAheadLog::default();
            let mut last_oldest: Option<Epoch> = Some(0);
            move |frontiers| {
                data.for_each_time(|cap, batches| {
                    let records = by_epoch.entry(cap.time().epoch).or_default();
                    for d in batches.flat_map(|d| d.drain(..)) {
                        let value = serde_json::to_value(&d).expect("serializable row");
                        let key = record_key(&value, &key_fields).into_bytes();
                        records.push((key, serde_json::to_vec(&value).expect("json")));
                    }
                });
                let oldest = FrontierView::of(&frontiers[0]).oldest_epoch;
                if oldest != last_oldest {
                    last_oldest = oldest;
                    let id = match oldest {
                        None => Some(FINAL),
                        Some(b) => b.checked_sub(1).filter(|c| *c >= first_epoch),
                    };
                    if let Some(id) = id {
                        // Pre-commit: the records of epochs ≤ id join the log.
                        let later = match oldest {
                            Some(b) => by_epoch.split_off(&b),
                            None => BTreeMap::new(),
                        };
                        let records: Vec<Record> =
                            std::mem::replace(&mut by_epoch, later).into_values().flatten().collect();
                        if !records.is_empty() {
                            wal.checkpoints.push((id, records));
                        }
                        let bytes = (!wal.checkpoints.is_empty())
                            .then(|| bincode::serialize(&wal).expect("serializable log"));
                        let msg = ctx.write_part(id, part.clone(), bytes.as_deref());
                        let cap = ack_caps.first().expect("ack capability");
                        ack_out.activate().session(&cap).give(msg);
                    }
                }
                completions.for_each(|_, batches| {
                    for Completion { id, was_final } in batches.drain(..) {
                        let done = |p: u64| if p == FINAL { was_final } else { p <= id };
                        let n = wal.checkpoints.iter().take_while(|(p, _)| done(*p)).count();
                        if n > 0 {
                            let committed: Vec<_> = wal.checkpoints.drain(..n).collect();
                            writer.commit(id, committed.iter().flat_map(|(_, r)| r));
                            counters.transactions_total.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
                writer.producer.poll(Duration::ZERO);
                ack_caps.downgrade(frontiers[0].frontier().iter());
            }
        });
        checkpoints.add_writer(acks);
        Ok(())
    }
}
