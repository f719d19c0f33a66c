//! The alerting part of a job (`[alerting]`), wired onto any stream of
//! `flink_operator_agg_result` rows: the threshold history and rules (or
//! rules from a file or topic), the broadcast alert join, alert sinks and
//! rule outputs. The span-mapping job and job files over a schema use it
//! alike.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::operators::Inspect;
use timely::dataflow::{Scope, Stream};

use streamforge_dataflow::checkpoint::CheckpointGraph;
use streamforge_dataflow::Time;
use streamforge_sinks::batched::{BatchLimits, SinkBatched};
use streamforge_sinks::write_ahead::SinkWriteAhead;
use streamforge_sinks::{SinkJsonl, SinkJsonlExactlyOnce, SinkKafka, SinkKafkaExactlyOnce};

use super::{AlertSinkConfig, AlertingConfig, RuleUpdate, RulesConfig};
use crate::error::Error;
use crate::job::JobCounters;
use crate::operator_metrics::OperatorAggRow;

/// A checked `[alerting]` section with its rule file read.
#[derive(Clone, Debug)]
pub struct Alerting {
    cfg: AlertingConfig,
    base: PathBuf,
    /// Rules read from a rule file (worker 0 sends them).
    rule_file: Arc<Vec<RuleUpdate>>,
}

/// What the alerting needs from the job around it.
pub struct Wiring<'a> {
    /// The job's counters (alerts, rule updates, sinks).
    pub counters: &'a Arc<JobCounters>,
    /// The window size of the rows, ms (latency of alerts).
    pub window_size_ms: u64,
    /// Whether the status page shows the last alerts.
    pub status_page: bool,
    /// The first epoch of this run (after a restore: the restored one + 1).
    pub first_epoch: u64,
}

impl Alerting {
    /// Checks `cfg` (publishing needs generated rules; rule and alert topics
    /// exist or are created) and reads a rule file; paths are relative to
    /// `base`.
    ///
    /// # Errors
    /// An invalid section, a missing topic, an unreadable rule file.
    pub fn prepare(cfg: &AlertingConfig, base: &Path) -> Result<Alerting, Error> {
        let generated = matches!(cfg.rules, RulesConfig::Generated(_));
        if !generated && (cfg.publish.jsonl.is_some() || cfg.publish.kafka.is_some()) {
            return Err(Error::Invalid(
                "[alerting.publish] needs rules of kind \"generated\"".into(),
            ));
        }
        if let RulesConfig::Kafka(k) = &cfg.rules {
            super::rule_source::open_rule_topic(k)?;
        }
        let topics = cfg
            .sinks
            .iter()
            .filter_map(|s| match s {
                AlertSinkConfig::Kafka(k) => Some(k),
                _ => None,
            })
            .chain(cfg.publish.kafka.iter());
        for k in topics {
            match k.create_partitions {
                Some(n) => crate::connectors::kafka::ensure_topic(&k.properties, &k.topic, n)?,
                None => crate::connectors::kafka::check_topic(&k.properties, &k.topic)?,
            }
        }
        let mut a = Alerting {
            cfg: cfg.clone(),
            base: base.to_path_buf(),
            rule_file: Arc::default(),
        };
        if let RulesConfig::File { path } = &cfg.rules {
            a.rule_file = Arc::new(super::rule_source::read_rule_file(&a.resolve(path))?);
        }
        Ok(a)
    }

    /// The files the alerting writes (alerts and published rules, JSONL).
    pub fn output_files(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self
            .cfg
            .publish
            .jsonl
            .iter()
            .map(|p| self.resolve(p))
            .collect();
        paths.extend(self.cfg.sinks.iter().filter_map(|s| match s {
            AlertSinkConfig::Jsonl { path } => Some(self.resolve(path)),
            _ => None,
        }));
        paths
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Builds the alerting part of a job (`[alerting]`) over its rows:
    /// rules, the alert join, alert sinks and rule outputs; exactly-once
    /// outputs with `graph`.
    pub fn build<'s>(
        &self,
        scope: Scope<'s, Time>,
        rows: &Stream<'s, Time, Vec<OperatorAggRow>>,
        on: &Wiring<'_>,
        mut graph: Option<&mut CheckpointGraph<'s>>,
    ) -> Result<(), Error> {
        let counters = on.counters;
        use super::{AlertJoin, PublishHourly, ThresholdHistory};
        use differential_dataflow::AsCollection;
        use streamforge_dataflow::time::TimeSummary;
        use timely::dataflow::operators::feedback::{ConnectLoop, Feedback};
        use timely::dataflow::operators::vec::Broadcast;

        let cfg = &self.cfg;
        let first_epoch = on.first_epoch;
        let rules = match &cfg.rules {
            RulesConfig::Generated(settings) => {
                let (handle, feedback) = scope.feedback::<Vec<RuleUpdate>>(TimeSummary {
                    epoch: 0,
                    event_ms: 1,
                });
                let (history, names) = rows.clone().threshold_history(
                    "threshold-history",
                    settings.analysis_days,
                    feedback,
                    graph.as_deref_mut(),
                );
                let min = settings.min_samples.max(1);
                let s = settings.clone();
                let thresholds = history
                    .as_collection()
                    .reduce_named(
                        "thresholds",
                        move |group: &super::history::HistoryKey,
                              input: &[(&crate::operator_metrics::thresholds::Sample, isize)],
                              output: &mut Vec<([u64; 14], isize)>| {
                            let samples: Vec<crate::operator_metrics::thresholds::Sample> = input
                                .iter()
                                .flat_map(|(s, d)| std::iter::repeat_n(**s, (*d).max(0) as usize))
                                .collect();
                            if samples.len() >= min {
                                let f = s.hour_factor(group.0);
                                let t = crate::operator_metrics::thresholds::GroupThresholds::of(
                                    &samples, f,
                                );
                                output.push((t.encode(), 1));
                            }
                        },
                    )
                    .inner;
                let c = counters.clone();
                let published = thresholds
                    .publish_hourly(
                        "rule-publisher",
                        settings.clone(),
                        names,
                        graph.as_deref_mut(),
                    )
                    .inspect_batch(move |_, b| {
                        c.rules_published_total
                            .fetch_add(b.len() as u64, Ordering::Relaxed);
                    });
                published.clone().connect_loop(handle);
                self.rule_outputs(&published, counters, graph.as_deref_mut())?;
                published.broadcast()
            }
            RulesConfig::File { .. } => {
                super::rule_source::rule_stream(scope, &self.rule_file, first_epoch).broadcast()
            }
            RulesConfig::Kafka(k) => {
                let c = counters.alerts.clone();
                let done = move || c.rows_done.load(Ordering::Relaxed);
                super::rule_source::kafka_rule_stream(scope, k, done)?.broadcast()
            }
        };
        let alerts = rows.clone().alert_join(
            "alert-join",
            rules,
            cfg.convergence.as_millis() as u64,
            counters.alerts.clone(),
            graph.as_deref_mut(),
        );
        let alerts = match counters.latency.clone() {
            Some(l) => {
                let size_ms = on.window_size_ms;
                alerts.inspect_batch(move |_, b| {
                    l.record_alerts(b.iter().map(|a| a.window_start_ms + size_ms))
                })
            }
            None => alerts,
        };
        let alerts = if on.status_page {
            let c = counters.clone();
            alerts.inspect_batch(move |_, batch| {
                let mut recent = c.recent_alerts.lock().expect("alerts lock");
                for a in batch.iter().rev().take(crate::metrics::RECENT_ALERTS).rev() {
                    recent.push_back(serde_json::to_string(a).expect("alert serializes"));
                }
                while recent.len() > crate::metrics::RECENT_ALERTS {
                    recent.pop_front();
                }
            })
        } else {
            alerts
        };
        for sink in &cfg.sinks {
            match (sink, graph.as_deref_mut()) {
                (AlertSinkConfig::Jsonl { path }, Some(g)) => alerts
                    .clone()
                    .sink_jsonl_exactly_once("alerts-jsonl", self.resolve(path), None, g)?,
                (AlertSinkConfig::Jsonl { path }, None) => {
                    alerts
                        .clone()
                        .sink_jsonl("alerts-jsonl", self.resolve(path), None)?
                }
                (AlertSinkConfig::Kafka(k), Some(g)) if k.transactional_id.is_some() => {
                    let base = streamforge_sources::kafka::client_config(&k.properties)?;
                    alerts.clone().sink_kafka_exactly_once(
                        "alerts-kafka",
                        k,
                        base,
                        counters.kafka_sink.clone(),
                        g,
                    )?
                }
                (AlertSinkConfig::Kafka(k), _) => {
                    let base = streamforge_sources::kafka::client_config(&k.properties)?;
                    alerts.clone().sink_kafka(
                        "alerts-kafka",
                        k,
                        base,
                        counters.kafka_sink.clone(),
                    )?
                }
                (AlertSinkConfig::Webhook(w), g) => {
                    let target =
                        streamforge_sinks::webhook::Webhook::new(w, counters.webhook.clone())?;
                    let encode = |a: &crate::operator_metrics::alerts::Alert| {
                        serde_json::to_string(a).expect("alert serializes")
                    };
                    match g {
                        Some(g) => {
                            alerts
                                .clone()
                                .sink_write_ahead("alerts-webhook", target, encode, g)?
                        }
                        None => {
                            let limits = BatchLimits {
                                rows: w.batch_rows,
                                bytes: usize::MAX,
                                interval: w.batch_interval,
                            };
                            alerts.clone().sink_batched(
                                "alerts-webhook",
                                target,
                                encode,
                                String::len,
                                limits,
                            )
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Where the hourly publisher's rule updates go besides the rule stream.
    fn rule_outputs<'s>(
        &self,
        published: &timely::dataflow::Stream<'s, Time, Vec<RuleUpdate>>,
        counters: &Arc<JobCounters>,
        graph: Option<&mut CheckpointGraph<'s>>,
    ) -> Result<(), Error> {
        let cfg = &self.cfg;
        let encode = |u: &RuleUpdate| u.kafka_record();
        match graph {
            Some(g) => {
                if let Some(p) = &cfg.publish.jsonl {
                    published.clone().sink_jsonl_exactly_once(
                        "rules-jsonl",
                        self.resolve(p),
                        None,
                        g,
                    )?;
                }
                if let Some(k) = &cfg.publish.kafka {
                    let base = streamforge_sources::kafka::client_config(&k.properties)?;
                    let fresh = g.context().restore.is_none();
                    let index = published.scope().index();
                    if k.transactional_id.is_some() {
                        let target = streamforge_sinks::kafka_exactly_once::KafkaTransactions::new(
                            k,
                            base,
                            counters.kafka_sink.clone(),
                            index,
                            fresh,
                        )?;
                        published
                            .clone()
                            .sink_write_ahead("rules-kafka", target, encode, g)?;
                    } else {
                        let target = streamforge_sinks::kafka::KafkaPlain::new(
                            k,
                            base,
                            counters.kafka_sink.clone(),
                        )?;
                        published
                            .clone()
                            .sink_write_ahead("rules-kafka", target, encode, g)?;
                    }
                }
            }
            None => {
                if let Some(p) = &cfg.publish.jsonl {
                    published
                        .clone()
                        .sink_jsonl("rules-jsonl", self.resolve(p), None)?;
                }
                if let Some(k) = &cfg.publish.kafka {
                    let base = streamforge_sources::kafka::client_config(&k.properties)?;
                    let target = streamforge_sinks::kafka::KafkaPlain::new(
                        k,
                        base,
                        counters.kafka_sink.clone(),
                    )?;
                    let limits = BatchLimits {
                        rows: 10_000,
                        bytes: usize::MAX,
                        interval: Duration::from_millis(200),
                    };
                    published.clone().sink_batched(
                        "rules-kafka",
                        target,
                        encode,
                        |r: &(Vec<u8>, Vec<u8>)| r.0.len() + r.1.len(),
                        limits,
                    );
                }
            }
        }
        Ok(())
    }
}
