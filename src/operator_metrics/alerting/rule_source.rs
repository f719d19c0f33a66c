//! Rule sources for the broadcast rule stream: a JSONL file (event time: each
//! rule at its version) and `alarm_rule_topic` (processing time).
//!
//! Both run on worker 0; the job broadcasts their output to every worker.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use streamforge_sources::kafka::SourceContext;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

use streamforge_dataflow::Time;

use super::{RuleTopicConfig, RuleUpdate};
use crate::error::Error;
use crate::operator_metrics::thresholds::AlarmRule;

/// Reads rules from a JSONL file: `hourly_alarm_rules` rows (as `streamforge
/// thresholds --out` writes them, or as a rule publisher's JSONL output of
/// [`RuleUpdate`]s); a path that is a directory of committed parts is read
/// whole.
///
/// # Errors
/// Unreadable file, or a line that is neither.
pub fn read_rule_file(path: &Path) -> Result<Vec<RuleUpdate>, Error> {
    let lines = streamforge_sinks::read_committed(path)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<AlarmRule>(l)
                .map(RuleUpdate::of)
                .or_else(|_| serde_json::from_str::<RuleUpdate>(l))
                .map_err(|e| {
                    Error::Invalid(format!(
                        "{} line {}: not a rule: {e}",
                        path.display(),
                        i + 1
                    ))
                })
        })
        .collect()
}

/// The updates as a stream: worker 0 emits each at `(first_epoch, version)`.
pub fn rule_stream<'s>(
    scope: Scope<'s, Time>,
    updates: &[RuleUpdate],
    first_epoch: u64,
) -> Stream<'s, Time, Vec<RuleUpdate>> {
    let leader = scope.index() == 0;
    let updates = if leader { updates.to_vec() } else { Vec::new() };
    source::<_, CapacityContainerBuilder<Vec<RuleUpdate>>, _, _>(
        scope,
        "rule-file",
        move |cap, _| {
            let mut cap = Some(cap);
            let mut updates = updates;
            move |output| {
                if let Some(c) = cap.take() {
                    // One session (one message) per version, not per rule.
                    updates.sort_by_key(|u| u.version);
                    let mut rest = updates.drain(..).peekable();
                    while let Some(first) = rest.next() {
                        let version = first.version;
                        let t = Time {
                            epoch: first_epoch,
                            event_ms: version,
                        };
                        let cap = c.delayed(&t);
                        let mut session = output.session(&cap);
                        session.give(first);
                        while let Some(u) = rest.next_if(|u| u.version == version) {
                            session.give(u);
                        }
                    }
                }
            }
        },
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A consumer of the rule topic at its earliest offsets.
///
/// # Errors
/// The consumer cannot be created, or the topic is missing.
pub fn open_rule_topic(
    cfg: &RuleTopicConfig,
) -> Result<(BaseConsumer<SourceContext>, Vec<i64>), Error> {
    let err = |e: &dyn std::fmt::Display| Error::Invalid(format!("rule topic {}: {e}", cfg.topic));
    let mut config = streamforge_sources::kafka::client_config(&cfg.properties)?;
    config
        .set("enable.auto.commit", "false")
        .set(
            "enable.partition.eof",
            if cfg.bounded { "true" } else { "false" },
        )
        .set("group.id", "streamforge-rules");
    let consumer: BaseConsumer<SourceContext> = config
        .create_with_context(SourceContext)
        .map_err(|e| err(&e))?;
    let md = consumer
        .fetch_metadata(Some(&cfg.topic), Duration::from_secs(10))
        .map_err(|e| err(&e))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(err(
            &"no such topic (create it, or publish rules to it first)",
        ));
    }
    let mut ends = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(&cfg.topic, *p, Duration::from_secs(10))
            .map_err(|e| err(&e))?;
        ends.push(high);
        tpl.add_partition_offset(&cfg.topic, *p, Offset::Beginning)
            .map_err(|e| err(&e))?;
    }
    consumer.assign(&tpl).map_err(|e| err(&e))?;
    Ok((consumer, ends))
}

/// The rule topic as a stream (worker 0 reads it): updates leave at
/// `(0, max(version, last time))`; while the topic has nothing new the
/// stream's event time follows the wall clock (processing time). It ends when
/// `bounded` and every partition is read to its end (librdkafka's partition
/// EOF), or when `done()` says
/// the job's input ended.
///
/// # Errors
/// As [`open_rule_topic`].
pub fn kafka_rule_stream<'s>(
    scope: Scope<'s, Time>,
    cfg: &RuleTopicConfig,
    done: impl Fn() -> bool + 'static,
) -> Result<Stream<'s, Time, Vec<RuleUpdate>>, Error> {
    let reader = if scope.index() == 0 {
        Some(open_rule_topic(cfg)?)
    } else {
        None
    };
    let bounded = cfg.bounded;
    let topic = cfg.topic.clone();
    Ok(
        source::<_, CapacityContainerBuilder<Vec<RuleUpdate>>, _, _>(
            scope,
            "rule-topic",
            move |cap, info| {
                let activator = scope.activator_for(info.address);
                let mut cap = reader.as_ref().map(|_| cap);
                let mut reader = reader;
                let mut read: Vec<i64> = reader
                    .as_ref()
                    .map_or(Vec::new(), |(_, e)| vec![0; e.len()]);
                // Partitions whose end the consumer reported (bounded), with
                // no message since: the listed end offsets are not used for
                // that (Tansu 0.6 lists too low an end).
                let mut at_end: Vec<bool> = vec![false; read.len()];
                move |output| {
                    let (Some(c), Some((consumer, ends))) = (cap.as_mut(), reader.as_mut()) else {
                        return;
                    };
                    let mut caught_up = false;
                    for _ in 0..1000 {
                        match consumer.poll(Duration::from_millis(if bounded { 50 } else { 0 })) {
                            None => {
                                caught_up = true;
                                break;
                            }
                            Some(Err(KafkaError::PartitionEOF(p))) => {
                                if let Some(e) = at_end.get_mut(p as usize) {
                                    *e = true;
                                }
                            }
                            Some(Err(e)) => tracing::warn!(%e, topic, "rule topic read error"),
                            Some(Ok(m)) => {
                                let p = m.partition() as usize;
                                if p < read.len() {
                                    read[p] = m.offset() + 1;
                                    at_end[p] = false;
                                }
                                let ts = m.timestamp().to_millis().map(|t| t.max(0) as u64);
                                match RuleUpdate::from_kafka(
                                    m.key().unwrap_or_default(),
                                    m.payload().unwrap_or_default(),
                                    ts,
                                ) {
                                    Ok(u) => {
                                        let t = Time {
                                            epoch: c.time().epoch,
                                            event_ms: c.time().event_ms.max(u.version),
                                        };
                                        output.session(&c.delayed(&t)).give(u);
                                    }
                                    Err(e) => tracing::warn!(e, topic, "bad rule record skipped"),
                                }
                            }
                        }
                    }
                    let all_read = read.iter().zip(ends.iter()).all(|(r, e)| r >= e);
                    if (bounded && at_end.iter().all(|e| *e)) || done() {
                        cap = None;
                        return;
                    }
                    if caught_up && all_read {
                        let now = now_ms();
                        if now > c.time().event_ms {
                            c.downgrade(&Time {
                                epoch: c.time().epoch,
                                event_ms: now,
                            });
                        }
                    }
                    activator.activate_after(Duration::from_millis(if caught_up {
                        100
                    } else {
                        0
                    }));
                }
            },
        ),
    )
}
