//! The span-mapping job file: the main job typed end to end — a source of
//! [`Span`]s (`[source.mapping]`), one tumbling or sliding window of the
//! operator metrics, `flink_operator_agg_result` rows to JSONL, Kafka,
//! ClickHouse, PostgreSQL or stdout, and `[alerting]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Inspect;
use timely::dataflow::Scope;

use streamforge_dataflow::checkpoint::{
    CheckpointContext, CheckpointGraph, PartitionPosition, Restore,
};
use streamforge_dataflow::flow_control::FlowControl;
use streamforge_dataflow::launch::ClusterArgs;
use streamforge_dataflow::source::{
    checkpointed_source, partitioned_source, PartitionReader, SourceSettings,
};
use streamforge_dataflow::{DataflowError, Time};
use streamforge_operators::{Sliding, Tumbling, WindowAggregate, WindowAssigner, WindowSpec};
use streamforge_sinks::batched::{BatchLimits, SinkBatched};
use streamforge_sinks::clickhouse::{ClickHouse, ClickHouseSinkConfig};
use streamforge_sinks::postgres::{Postgres, PostgresSinkConfig, PreparedPostgres};
use streamforge_sinks::write_ahead::SinkWriteAhead;
use streamforge_sinks::{
    KafkaSinkConfig, SinkJsonl, SinkJsonlExactlyOnce, SinkKafka, SinkKafkaExactlyOnce,
    SinkStdoutTable,
};
use streamforge_sources::file::{open_file_partition, open_file_partition_at};
use streamforge_sources::generator::generator_partition_at;
use streamforge_sources::{
    file_partitions, FileSourceConfig, GeneratorConfig, KafkaSourceConfig, Span,
};

use super::config::{CheckpointConfig, FlowControlConfig, RestoreFrom, WatermarkConfig};
use super::runner::{fail_stop_build, join_workers, log_restored, open_checkpoints};
use super::summary::{JobCounters, JobSummary};
use crate::error::Error;
use crate::operator_metrics::alerting::{AlertSinkConfig, AlertingConfig, RulesConfig};
use crate::operator_metrics::{metrics_aggregate, to_row};

/// A job file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct JobConfig {
    /// Job name (logs, metrics).
    pub name: String,
    /// Where spans come from.
    pub source: SourceConfig,
    /// Watermark strategy.
    #[serde(default)]
    pub watermark: WatermarkConfig,
    /// The window.
    pub window: WindowConfig,
    /// Where aggregate rows go.
    #[serde(default)]
    pub sinks: Vec<SinkConfig>,
    /// Optional JSONL file for records that were too late for all their windows.
    pub late_output: Option<PathBuf>,
    /// Optional JSONL file for dead letters (malformed input).
    pub dead_letter: Option<PathBuf>,
    /// Checkpoints (exactly-once file sinks, restore after a crash).
    pub checkpoint: Option<CheckpointConfig>,
    /// Read at most this many records per second per worker (replay throttle).
    pub rate_limit: Option<u64>,
    /// Backpressure of the source (`[flow-control]`).
    #[serde(default)]
    pub flow_control: FlowControlConfig,
    /// Hourly thresholds, broadcast rules and alerts (`[alerting]`).
    pub alerting: Option<AlertingConfig>,
    /// Prometheus `/metrics` and the status page (`[metrics]`).
    pub metrics: Option<crate::metrics::MetricsConfig>,
}

/// Sources.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum SourceConfig {
    /// CSV / JSONL files (plain or .gz), one partition per file.
    File(FileSourceConfig),
    /// The synthetic span generator.
    Generator(GeneratorConfig),
    /// A Kafka topic, one partition per source partition.
    Kafka(KafkaSourceConfig),
}

/// Window kinds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum WindowKind {
    /// Fixed, non-overlapping windows.
    Tumbling,
    /// Overlapping windows of `size` every `slide`.
    Sliding,
}

/// The window of the job.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WindowConfig {
    /// Tumbling or sliding.
    pub kind: WindowKind,
    /// Window size (e.g. `"60s"`, `"22s"`).
    #[serde(with = "humantime_serde")]
    pub size: Duration,
    /// Slide of sliding windows.
    #[serde(default, with = "humantime_serde")]
    pub slide: Option<Duration>,
    /// Allowed lateness (default 0).
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Option<Duration>,
}

/// Sinks for aggregate rows.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SinkConfig {
    /// One JSON object per line.
    Jsonl {
        /// Output file.
        path: PathBuf,
    },
    /// A Kafka topic (keyed JSON records).
    Kafka(KafkaSinkConfig),
    /// A ClickHouse table over HTTP.
    #[serde(rename = "clickhouse")]
    ClickHouse(ClickHouseSinkConfig),
    /// A PostgreSQL table (upserts).
    Postgres(PostgresSinkConfig),
    /// A table on stdout.
    Stdout {
        /// Rows to print at most (default 20).
        #[serde(default = "default_rows")]
        max_rows: usize,
    },
}

fn default_rows() -> usize {
    20
}

impl JobConfig {
    /// Parses a job from a TOML value ([`load_value`]).
    ///
    /// # Errors
    /// The TOML error as text.
    pub fn from_value(value: toml::Value) -> Result<JobConfig, String> {
        JobConfig::deserialize(value).map_err(|e| e.to_string())
    }

    /// Reads and parses a job file.
    ///
    /// # Errors
    /// [`Error::JobFile`] when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<JobConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::JobFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text).map_err(|reason| Error::JobFile {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parses a job from TOML text.
    ///
    /// # Errors
    /// The TOML error as text.
    pub fn parse(text: &str) -> Result<JobConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Input {
    Files(Vec<PathBuf>, FileSourceConfig),
    Generator(GeneratorConfig),
    Kafka(usize, KafkaSourceConfig),
}

struct Plan {
    job: JobConfig,
    input: Input,
    base: PathBuf,
    checkpoints: Option<Arc<CheckpointContext>>,
    /// Checked PostgreSQL sinks by table.
    postgres: BTreeMap<String, PreparedPostgres>,
    /// Checked ClickHouse sinks by `database.table`.
    clickhouse: BTreeMap<String, ClickHouse>,
    /// The checked `[alerting]` section.
    alerting: Option<crate::operator_metrics::alerting::Alerting>,
}

impl Plan {
    fn prepare(job: &JobConfig, base: &Path) -> Result<Plan, Error> {
        let input = match &job.source {
            SourceConfig::File(f) => {
                let files = file_partitions(f, base)?;
                for path in &files {
                    open_file_partition(path, f.format, &f.mapping)?;
                }
                Input::Files(files, f.clone())
            }
            SourceConfig::Generator(g) => Input::Generator(g.clone()),
            SourceConfig::Kafka(k) => Input::Kafka(k.partitions()?, k.clone()),
        };
        for sink in &job.sinks {
            if let SinkConfig::Kafka(k) = sink {
                match k.create_partitions {
                    Some(n) => crate::connectors::kafka::ensure_topic(&k.properties, &k.topic, n)?,
                    None => crate::connectors::kafka::check_topic(&k.properties, &k.topic)?,
                }
            }
        }
        let w = &job.window;
        if w.size.is_zero() {
            return Err(Error::Invalid("window size must be > 0".into()));
        }
        if w.kind == WindowKind::Sliding {
            let slide = w
                .slide
                .ok_or_else(|| Error::Invalid("sliding windows need `slide`".into()))?;
            if slide.is_zero() || slide > w.size {
                return Err(Error::Invalid("need 0 < slide ≤ size".into()));
            }
        }
        let plan = Plan {
            job: job.clone(),
            input,
            base: base.to_path_buf(),
            checkpoints: None,
            postgres: BTreeMap::new(),
            clickhouse: BTreeMap::new(),
            alerting: job
                .alerting
                .as_ref()
                .map(|a| crate::operator_metrics::alerting::Alerting::prepare(a, base))
                .transpose()?,
        };
        Ok(plan)
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn partitions(&self) -> usize {
        match &self.input {
            Input::Files(files, _) => files.len(),
            Input::Generator(g) => g.partitions.max(1),
            Input::Kafka(n, _) => *n,
        }
    }

    /// Opens partition `i` (at `position` when restoring).
    fn opener(
        &self,
    ) -> impl FnMut(usize, Option<&PartitionPosition>) -> Box<dyn PartitionReader<Span>> + 'static
    {
        let input = self.input.clone();
        move |i, position| match &input {
            Input::Files(files, cfg) => {
                open_file_partition_at(&files[i], cfg.format, &cfg.mapping, position)
                    .unwrap_or_else(|e| panic!("{e}"))
            }
            Input::Kafka(_, k) => k.open_at(i, position).unwrap_or_else(|e| panic!("{e}")),
            Input::Generator(g) => generator_partition_at(g, i, position),
        }
    }

    fn build<'s>(&self, scope: Scope<'s, Time>, counters: &Arc<JobCounters>) -> Result<(), Error> {
        let ooo = self.job.watermark.out_of_orderness.as_millis() as u64;
        let mut settings = SourceSettings::new(format!("{}-source", self.job.name), ooo);
        settings.idle_timeout = self.job.watermark.idle_timeout;
        settings.rate_limit = self.job.rate_limit;
        settings.flow = FlowControl::enabled(self.job.flow_control.settings());
        if let Some(ctx) = &self.checkpoints {
            return self.build_checkpointed(scope, counters, settings, ctx.clone());
        }
        let mut open = self.opener();
        let flow = settings.flow.clone();
        let (spans, dead) = partitioned_source(
            scope,
            settings,
            self.partitions(),
            move |i| open(i, None),
            Some(counters.source.clone()),
        );
        // The window's input is the probed one.
        let spans = FlowControl::attach_to(flow.as_ref(), spans);
        let (rows, late) = self.window(spans, None);
        let (rows, late, dead) = self.count(counters, rows, late, dead);
        for sink in &self.job.sinks {
            self.other_sink(sink, &rows, counters)?;
        }
        self.alerting(scope, &rows, counters, None)?;
        if let Some(p) = &self.job.late_output {
            late.sink_jsonl("late-jsonl", self.resolve(p), None)?;
        }
        if let Some(p) = &self.job.dead_letter {
            dead.sink_jsonl("dead-letter-jsonl", self.resolve(p), None)?;
        }
        Ok(())
    }

    /// The job with checkpoints: checkpointed source and window, exactly-once
    /// file sinks, the committer.
    fn build_checkpointed<'s>(
        &self,
        scope: Scope<'s, Time>,
        counters: &Arc<JobCounters>,
        settings: SourceSettings,
        ctx: Arc<CheckpointContext>,
    ) -> Result<(), Error> {
        let mut graph = CheckpointGraph::new(scope, ctx);
        let flow = settings.flow.clone();
        let (spans, dead) = checkpointed_source(
            scope,
            settings,
            self.partitions(),
            self.opener(),
            Some(counters.source.clone()),
            &mut graph,
        );
        let spans = FlowControl::attach_to(flow.as_ref(), spans);
        let (rows, late) = self.window(spans, Some(&mut graph));
        let (rows, late, dead) = self.count(counters, rows, late, dead);
        self.alerting(scope, &rows, counters, Some(&mut graph))?;
        for sink in &self.job.sinks {
            match sink {
                SinkConfig::Jsonl { path } => rows.clone().sink_jsonl_exactly_once(
                    "rows-jsonl",
                    self.resolve(path),
                    None,
                    &mut graph,
                )?,
                SinkConfig::Kafka(k) if k.transactional_id.is_some() => {
                    let base = streamforge_sources::kafka::client_config(&k.properties)?;
                    rows.clone().sink_kafka_exactly_once(
                        "rows-kafka",
                        k,
                        base,
                        counters.kafka_sink.clone(),
                        &mut graph,
                    )?
                }
                SinkConfig::ClickHouse(c) => {
                    let target = self.clickhouse(c, counters)?;
                    rows.clone().sink_write_ahead(
                        "rows-clickhouse",
                        target,
                        encode_row,
                        &mut graph,
                    )?
                }
                SinkConfig::Postgres(p) => {
                    let target = self.postgres(p, counters)?;
                    rows.clone().sink_write_ahead(
                        "rows-postgres",
                        target,
                        encode_row,
                        &mut graph,
                    )?
                }
                other => self.other_sink(other, &rows, counters)?,
            }
        }
        if let Some(p) = &self.job.late_output {
            late.sink_jsonl_exactly_once("late-jsonl", self.resolve(p), None, &mut graph)?;
        }
        if let Some(p) = &self.job.dead_letter {
            dead.sink_jsonl_exactly_once("dead-letter-jsonl", self.resolve(p), None, &mut graph)?;
        }
        graph.finish();
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn count<'s>(
        &self,
        counters: &Arc<JobCounters>,
        rows: timely::dataflow::Stream<'s, Time, Vec<crate::operator_metrics::OperatorAggRow>>,
        late: timely::dataflow::Stream<'s, Time, Vec<Span>>,
        dead: timely::dataflow::Stream<'s, Time, Vec<streamforge_dataflow::DeadLetter>>,
    ) -> (
        timely::dataflow::Stream<'s, Time, Vec<crate::operator_metrics::OperatorAggRow>>,
        timely::dataflow::Stream<'s, Time, Vec<Span>>,
        timely::dataflow::Stream<'s, Time, Vec<streamforge_dataflow::DeadLetter>>,
    ) {
        let c = counters.clone();
        let size_ms = self.job.window.size.as_millis() as u64;
        let rows = rows.inspect_batch(move |_, b| {
            c.rows_total.fetch_add(b.len() as u64, Ordering::Relaxed);
            if let Some(l) = &c.latency {
                l.record_rows(b.iter().map(|r| r.window_start_ms + size_ms));
            }
        });
        let c = counters.clone();
        let late = late.inspect_batch(move |_, b| {
            c.late_total.fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        let c = counters.clone();
        let dead = dead.inspect_batch(move |_, b| {
            c.dead_letters_total
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        (rows, late, dead)
    }

    /// Checks the database sinks once, before the workers start (a failure
    /// inside one worker's dataflow construction would leave the others
    /// waiting for it).
    fn prepare_databases(&mut self) -> Result<(), Error> {
        let fresh = self
            .checkpoints
            .as_ref()
            .is_none_or(|c| c.restore.is_none());
        for sink in &self.job.sinks {
            match sink {
                SinkConfig::Postgres(p) => {
                    let id = format!("{}/{}", self.job.name, p.table);
                    let prepared = Postgres::prepare(p, &agg_columns(), &id, fresh)?;
                    self.postgres.insert(p.table.clone(), prepared);
                }
                SinkConfig::ClickHouse(c) => {
                    let prepared = ClickHouse::new(c, Arc::default())?.prepare(&agg_columns())?;
                    self.clickhouse
                        .insert(format!("{}.{}", c.database, c.table), prepared);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks the file outputs before the workers start (a failure inside one
    /// worker's dataflow construction would leave the others waiting): plain
    /// files must not be directories, exactly-once directories not files.
    fn prepare_files(&self) -> Result<(), Error> {
        let mut paths: Vec<PathBuf> = self
            .job
            .sinks
            .iter()
            .filter_map(|s| match s {
                SinkConfig::Jsonl { path } => Some(self.resolve(path)),
                _ => None,
            })
            .collect();
        paths.extend(self.job.late_output.iter().map(|p| self.resolve(p)));
        if let Some(a) = &self.alerting {
            paths.extend(a.output_files());
        }
        paths.extend(self.job.dead_letter.iter().map(|p| self.resolve(p)));
        for path in paths {
            match &self.checkpoints {
                // The sink reconciles its directory on worker 0 itself (after
                // the cluster connected); here only what would fail there.
                Some(_) if path.is_file() => {
                    return Err(Error::Invalid(format!(
                        "{} is a file (the output of a run without checkpoints?): \
                         a job with [checkpoint] writes a directory of committed parts",
                        path.display()
                    )))
                }
                Some(_) => {}
                None if path.is_dir() => {
                    return Err(Error::Invalid(format!(
                        "{} is a directory (the output of a run with checkpoints?): \
                         a job without [checkpoint] writes one JSONL file",
                        path.display()
                    )))
                }
                None => {}
            }
        }
        Ok(())
    }

    /// This worker's ClickHouse target.
    fn clickhouse(
        &self,
        c: &ClickHouseSinkConfig,
        counters: &Arc<JobCounters>,
    ) -> Result<ClickHouse, Error> {
        let key = format!("{}.{}", c.database, c.table);
        let prepared = self
            .clickhouse
            .get(&key)
            .ok_or_else(|| Error::Invalid(format!("clickhouse sink {key} was not prepared")))?;
        Ok(prepared
            .clone()
            .with_counters(counters.clickhouse_sink.clone()))
    }

    /// This worker's PostgreSQL target (connects on first use).
    fn postgres(
        &self,
        p: &PostgresSinkConfig,
        counters: &Arc<JobCounters>,
    ) -> Result<Postgres, Error> {
        let prepared = self
            .postgres
            .get(&p.table)
            .ok_or_else(|| Error::Invalid(format!("postgres sink {} was not prepared", p.table)))?;
        Ok(Postgres::new(prepared, counters.postgres_sink.clone()))
    }

    /// The job's operators and edges (the status page's job graph).
    fn graph(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        let mut edge = |a: &str, b: String| e.push((a.to_string(), b));
        let source = match &self.job.source {
            SourceConfig::File(_) => "file source",
            SourceConfig::Generator(_) => "generator source",
            SourceConfig::Kafka(_) => "kafka source",
        };
        let window = format!(
            "{:?} window {}",
            self.job.window.kind,
            humantime::format_duration(self.job.window.size)
        )
        .to_lowercase();
        edge(source, window.clone());
        if self.job.dead_letter.is_some() {
            edge(source, "dead-letter jsonl".into());
        }
        if self.job.late_output.is_some() {
            edge(&window, "late jsonl".into());
        }
        for s in &self.job.sinks {
            let name = match s {
                SinkConfig::Jsonl { .. } => "jsonl sink",
                SinkConfig::Kafka(_) => "kafka sink",
                SinkConfig::ClickHouse(_) => "clickhouse sink",
                SinkConfig::Postgres(_) => "postgres sink",
                SinkConfig::Stdout { .. } => "stdout sink",
            };
            edge(&window, name.into());
        }
        if let Some(a) = &self.job.alerting {
            match &a.rules {
                RulesConfig::Generated(_) => {
                    edge(&window, "threshold-history".into());
                    edge("threshold-history", "thresholds (reduce)".into());
                    edge("thresholds (reduce)", "rule-publisher".into());
                    edge("rule-publisher", "alert-join (broadcast)".into());
                    if a.publish.jsonl.is_some() {
                        edge("rule-publisher", "rules jsonl".into());
                    }
                    if a.publish.kafka.is_some() {
                        edge("rule-publisher", "rules kafka".into());
                    }
                }
                RulesConfig::File { .. } => edge("rule file", "alert-join (broadcast)".into()),
                RulesConfig::Kafka(_) => edge("rule topic", "alert-join (broadcast)".into()),
            }
            edge(&window, "alert-join (broadcast)".into());
            for s in &a.sinks {
                let name = match s {
                    AlertSinkConfig::Jsonl { .. } => "alerts jsonl",
                    AlertSinkConfig::Kafka(_) => "alerts kafka",
                    AlertSinkConfig::Webhook(_) => "alerts webhook",
                };
                edge("alert-join (broadcast)", name.into());
            }
        }
        e
    }

    /// The alerting part of the job (`[alerting]`), if any.
    fn alerting<'s>(
        &self,
        scope: Scope<'s, Time>,
        rows: &timely::dataflow::Stream<'s, Time, Vec<crate::operator_metrics::OperatorAggRow>>,
        counters: &Arc<JobCounters>,
        graph: Option<&mut CheckpointGraph<'s>>,
    ) -> Result<(), Error> {
        let Some(a) = &self.alerting else {
            return Ok(());
        };
        let on = crate::operator_metrics::alerting::wiring::Wiring {
            counters,
            window_size_ms: self.job.window.size.as_millis() as u64,
            status_page: self.job.metrics.is_some(),
            first_epoch: self.checkpoints.as_ref().map_or(0, |c| c.first_epoch()),
        };
        a.build(scope, rows, &on, graph)
    }

    /// Sinks other than JSONL files (the same with or without checkpoints).
    fn other_sink<'s>(
        &self,
        sink: &SinkConfig,
        rows: &timely::dataflow::Stream<'s, Time, Vec<crate::operator_metrics::OperatorAggRow>>,
        counters: &Arc<JobCounters>,
    ) -> Result<(), Error> {
        match sink {
            SinkConfig::Kafka(k) => {
                let base = streamforge_sources::kafka::client_config(&k.properties)?;
                rows.clone()
                    .sink_kafka("rows-kafka", k, base, counters.kafka_sink.clone())?
            }
            SinkConfig::Jsonl { path } => {
                rows.clone()
                    .sink_jsonl("rows-jsonl", self.resolve(path), None)?
            }
            SinkConfig::ClickHouse(c) => {
                let target = self.clickhouse(c, counters)?;
                let limits = BatchLimits {
                    rows: c.batch_rows,
                    bytes: c.batch_bytes,
                    interval: c.batch_interval,
                };
                rows.clone()
                    .sink_batched("rows-clickhouse", target, encode_row, Vec::len, limits)
            }
            SinkConfig::Postgres(p) => {
                let target = self.postgres(p, counters)?;
                let limits = BatchLimits {
                    rows: p.batch_rows,
                    bytes: usize::MAX,
                    interval: p.batch_interval,
                };
                rows.clone()
                    .sink_batched("rows-postgres", target, encode_row, Vec::len, limits)
            }
            SinkConfig::Stdout { max_rows } => rows.clone().sink_stdout_table(
                "rows-stdout",
                [
                    ("window_start", 19),
                    ("service", 24),
                    ("operator_name", 40),
                    ("total_count", 11),
                    ("error_rate", 10),
                    ("avg_duration", 12),
                    ("p95_duration", 12),
                    ("max_duration", 12),
                ]
                .map(|(c, w)| (c.to_string(), w))
                .to_vec(),
                *max_rows,
            ),
        }
        Ok(())
    }

    /// The job's window aggregate (checkpointed when `graph` is given):
    /// `(rows, late spans)`.
    #[allow(clippy::type_complexity)]
    fn window<'s>(
        &self,
        spans: timely::dataflow::Stream<'s, Time, Vec<Span>>,
        graph: Option<&mut CheckpointGraph<'s>>,
    ) -> (
        timely::dataflow::Stream<'s, Time, Vec<crate::operator_metrics::OperatorAggRow>>,
        timely::dataflow::Stream<'s, Time, Vec<Span>>,
    ) {
        let w = &self.job.window;
        let lateness = w.allowed_lateness.unwrap_or_default().as_millis() as u64;
        let size = w.size.as_millis() as u64;
        match w.kind {
            WindowKind::Tumbling => self.aggregate(spans, Tumbling::new(size), lateness, graph),
            WindowKind::Sliding => {
                let slide = w.slide.unwrap_or(w.size).as_millis() as u64;
                self.aggregate(spans, Sliding::new(size, slide), lateness, graph)
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn aggregate<'s, W: WindowAssigner>(
        &self,
        spans: timely::dataflow::Stream<'s, Time, Vec<Span>>,
        assigner: W,
        lateness: u64,
        graph: Option<&mut CheckpointGraph<'s>>,
    ) -> (
        timely::dataflow::Stream<'s, Time, Vec<crate::operator_metrics::OperatorAggRow>>,
        timely::dataflow::Stream<'s, Time, Vec<Span>>,
    ) {
        fn key(s: &Span) -> &streamforge_sources::SpanKey {
            &s.key
        }
        fn event_time(s: &Span) -> u64 {
            s.event_time_ms
        }
        let name = format!("{}-window", self.job.name);
        let spec = WindowSpec::new(assigner).allowed_lateness_ms(lateness);
        let (results, late) = match graph {
            None => spans.window_aggregate(&name, spec, key, event_time, metrics_aggregate()),
            Some(g) => spans.window_aggregate_checkpointed(
                &name,
                spec,
                key,
                event_time,
                metrics_aggregate(),
                g,
            ),
        };
        (results.map(to_row), late)
    }
}

/// Runs a job to completion with the given worker/cluster options; relative
/// paths in the job resolve against `base`.
///
/// # Errors
/// Invalid job settings, unopenable inputs or outputs, bad cluster options, or a
/// worker that failed.
pub fn run(job: &JobConfig, base: &Path, cluster: &ClusterArgs) -> Result<JobSummary, Error> {
    run_from(job, base, cluster, &RestoreFrom::Fresh)
}

/// [`run`] starting from a checkpoint or savepoint (`from`), for jobs with a
/// `[checkpoint]` section.
///
/// # Errors
/// As [`run`]; also a checkpoint that cannot be found or read, or `from` given
/// for a job without checkpoints.
pub fn run_from(
    job: &JobConfig,
    base: &Path,
    cluster: &ClusterArgs,
    from: &RestoreFrom,
) -> Result<JobSummary, Error> {
    let mut plan = Plan::prepare(job, base)?;
    if let Some(cfg) = &job.checkpoint {
        let dir = plan.resolve(&cfg.dir);
        plan.checkpoints = Some(Arc::new(open_checkpoints(&job.name, &dir, cfg, from)?));
    } else if *from != RestoreFrom::Fresh {
        return Err(Error::Invalid(
            "--restore needs a [checkpoint] section in the job file".into(),
        ));
    }
    plan.prepare_databases()?;
    plan.prepare_files()?;
    let restored_from = plan
        .checkpoints
        .as_ref()
        .and_then(|c| c.restore.as_ref().map(Restore::id));
    if let Some(id) = restored_from {
        log_restored(&job.name, id);
    }
    let config = cluster.timely_config()?;
    streamforge_dataflow::reader_thread::plan(cluster.workers);
    if let Input::Files(files, _) = &plan.input {
        streamforge_dataflow::reader_thread::plan_for_source(files.len(), cluster.total_workers());
    }
    streamforge_dataflow::metrics::clear();
    let latency_out = std::env::var_os(crate::job::latency::LATENCY_OUT).map(PathBuf::from);
    let counters = Arc::new(JobCounters {
        latency: latency_out
            .as_ref()
            .map(|_| Arc::new(crate::job::latency::LatencyRecorder::default())),
        ..Default::default()
    });
    let _metrics = match &job.metrics {
        Some(m) => {
            // A local cluster: process p listens on port + p.
            let mut m = m.clone();
            if m.address.port() != 0 {
                m.address
                    .set_port(m.address.port() + cluster.process as u16);
            }
            let info = Arc::new(crate::metrics::StatusInfo {
                job: job.name.clone(),
                edges: plan.graph(),
            });
            Some(crate::metrics::MetricsServer::start(
                &m,
                counters.clone(),
                plan.checkpoints.clone(),
                info,
            )?)
        }
        None => None,
    };
    let plan = Arc::new(plan);
    let start = Instant::now();
    let c = counters.clone();
    let guards = timely::execute(config, move |worker| {
        let plan = plan.clone();
        let counters = c.clone();
        let peers = worker.peers();
        worker.dataflow::<Time, _, _>(|scope| {
            fail_stop_build(plan.build(scope, &counters), scope.index(), peers)
        })
    })
    .map_err(DataflowError::Execution)?;
    join_workers(guards)?;
    if let (Some(path), Some(l)) = (&latency_out, &counters.latency) {
        std::fs::write(path, l.report().to_string())?;
    }
    Ok(JobSummary {
        events: counters.source.records_total.load(Ordering::Relaxed),
        rows: counters.rows_total.load(Ordering::Relaxed),
        late: counters.late_total.load(Ordering::Relaxed),
        dead_letters: counters.dead_letters_total.load(Ordering::Relaxed),
        kafka_delivered: counters.kafka_sink.delivered_total.load(Ordering::Relaxed),
        clickhouse_rows: counters.clickhouse_sink.rows_total.load(Ordering::Relaxed),
        postgres_rows: counters.postgres_sink.rows_total.load(Ordering::Relaxed),
        database_retries: counters
            .clickhouse_sink
            .retries_total
            .load(Ordering::Relaxed)
            + counters.postgres_sink.retries_total.load(Ordering::Relaxed),
        kafka_transactions: counters
            .kafka_sink
            .transactions_total
            .load(Ordering::Relaxed),
        alerts: std::array::from_fn(|i| counters.alerts.alerts_total[i].load(Ordering::Relaxed)),
        rules_published: counters.rules_published_total.load(Ordering::Relaxed),
        webhook_retries: counters.webhook.retries_total.load(Ordering::Relaxed),
        kafka_delivery_errors: counters
            .kafka_sink
            .delivery_errors_total
            .load(Ordering::Relaxed),
        elapsed_seconds: start.elapsed().as_secs_f64(),
        restored_from,
    })
}

/// The checkpoint directory of a job file (resolved against `base`).
///
/// # Errors
/// The job has no `[checkpoint]` section.
pub fn checkpoint_dir(job: &JobConfig, base: &Path) -> Result<PathBuf, Error> {
    let cfg = job
        .checkpoint
        .as_ref()
        .ok_or_else(|| Error::Invalid("the job has no [checkpoint] section".into()))?;
    Ok(if cfg.dir.is_absolute() {
        cfg.dir.clone()
    } else {
        base.join(&cfg.dir)
    })
}

/// The columns of an aggregate row (its JSON field names).
fn agg_columns() -> Vec<String> {
    crate::operator_metrics::AGG_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// An aggregate row as the JSON object the database sinks write.
fn encode_row(row: &crate::operator_metrics::OperatorAggRow) -> Vec<u8> {
    serde_json::to_vec(row).expect("serializable row")
}
