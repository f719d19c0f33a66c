//! Job files and running a job.
//!
//! A job file is TOML (`examples/jobs/*.toml`). Relative paths in it are
//! resolved against the job file's directory. Precedence: command-line flags
//! (`-w -n -p -h`) > job file > built-in defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Inspect;
use timely::dataflow::Scope;

use streamforge_dataflow::checkpoint::{
    CheckpointContext, CheckpointGraph, CheckpointSettings, PartitionPosition, Restore,
};
use streamforge_dataflow::checkpoint_store::CheckpointStore;
use streamforge_dataflow::launch::ClusterArgs;
use streamforge_dataflow::source::{
    checkpointed_source, partitioned_source, PartitionReader, SourceCounters, SourceSettings,
};
use streamforge_dataflow::{DataflowError, Time};
use streamforge_operators::{Sliding, Tumbling, WindowAggregate, WindowAssigner, WindowSpec};
use streamforge_sinks::batched::{BatchLimits, SinkBatched};
use streamforge_sinks::clickhouse::{ClickHouse, ClickHouseSinkConfig, DbSinkCounters};
use streamforge_sinks::kafka::KafkaSinkCounters;
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

use crate::alerting::join::AlertCounters;
use crate::alerting::{AlertSinkConfig, AlertingConfig, RulesConfig};
use crate::error::Error;
use crate::main_job::{metrics_aggregate, to_row};

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
    /// Hourly thresholds, broadcast rules and alerts (`[alerting]`).
    pub alerting: Option<AlertingConfig>,
    /// Prometheus `/metrics` and the status page (`[metrics]`).
    pub metrics: Option<crate::metrics::MetricsConfig>,
}

/// Checkpoint settings of a job file (`[checkpoint]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The checkpoint directory (shared by all processes of a cluster).
    pub dir: PathBuf,
    /// Time between checkpoints (default `"1s"`).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Complete checkpoints kept (default 3).
    #[serde(default = "default_retain")]
    pub retain: usize,
}

fn default_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_retain() -> usize {
    3
}

/// Where a run starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RestoreFrom {
    /// A fresh run (the checkpoint history is cleared).
    #[default]
    Fresh,
    /// The newest complete checkpoint; a fresh run when there is none.
    Latest,
    /// A checkpoint or savepoint directory (`…/chk-<id>`).
    Path(PathBuf),
}

impl std::str::FromStr for RestoreFrom {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s == "latest" {
            RestoreFrom::Latest
        } else {
            RestoreFrom::Path(s.into())
        })
    }
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

/// Watermark strategy: bounded out-of-orderness per partition.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct WatermarkConfig {
    /// Maximum expected disorder (e.g. `"5s"`; default 5 s).
    #[serde(with = "humantime_serde")]
    pub out_of_orderness: Duration,
    /// A partition without data for this long stops holding the watermark back
    /// (e.g. `"10s"`; default: never).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
}

impl Default for WatermarkConfig {
    fn default() -> Self {
        WatermarkConfig {
            out_of_orderness: Duration::from_secs(5),
            idle_timeout: None,
        }
    }
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

/// Reads a job file as TOML and applies `--set KEY=VALUE` overrides (as
/// Flink's `-D`): dotted keys, array elements by index (`sinks.0.path`),
/// values in TOML syntax (`'"out.csv"'`, `'["a.jsonl"]'`, `4`, `"2s"`);
/// a key that does not exist is added (array elements must exist).
///
/// # Errors
/// [`Error::JobFile`] when the file cannot be read or parsed, or an
/// override does not parse or names no place in the file.
///
/// # Examples
/// ```
/// let dir = std::env::temp_dir().join(format!("sf-set-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let job = dir.join("job.toml");
/// std::fs::write(&job, "name = \"a\"\n[[sinks]]\npath = \"x.csv\"\n").unwrap();
/// let v = streamforge::job::load_value(&job, &[("sinks.0.path".into(), "\"y.csv\"".into()),
///                                              ("source.paths".into(), "[\"in.jsonl\"]".into())]).unwrap();
/// assert_eq!(v["sinks"][0]["path"].as_str(), Some("y.csv"));
/// assert_eq!(v["source"]["paths"][0].as_str(), Some("in.jsonl"));
/// assert!(streamforge::job::load_value(&job, &[("sinks.3.path".into(), "1".into())]).is_err());
/// let v = streamforge::job::load_value(&job, &[("source.properties.\"bootstrap.servers\"".into(), "\"h:1\"".into())]).unwrap();
/// assert_eq!(v["source"]["properties"]["bootstrap.servers"].as_str(), Some("h:1"));
/// assert!(streamforge::job::load_value(&job, &[("name".into(), "not toml".into())]).is_err());
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn load_value(path: &Path, sets: &[(String, String)]) -> Result<toml::Value, Error> {
    let err = |reason: String| Error::JobFile {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut value: toml::Value = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    for (key, raw) in sets {
        let parsed: toml::Table = toml::from_str(&format!("v = {raw}"))
            .map_err(|e| err(format!("--set {key}={raw}: not a TOML value: {e}")))?;
        let new = parsed.get("v").cloned().expect("parsed v");
        let mut at = &mut value;
        let parts = split_key(key);
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let missing = || err(format!("--set {key}: no `{part}` here"));
            at = match at {
                toml::Value::Array(items) => {
                    let n: usize = part.parse().map_err(|_| missing())?;
                    items.get_mut(n).ok_or_else(missing)?
                }
                toml::Value::Table(t) => {
                    if last {
                        t.entry(part.to_string())
                            .or_insert(toml::Value::Boolean(false))
                    } else {
                        t.entry(part.to_string())
                            .or_insert_with(|| toml::Value::Table(Default::default()))
                    }
                }
                _ => return Err(missing()),
            };
        }
        *at = new;
    }
    Ok(value)
}

/// Splits a dotted key; segments in double quotes may contain dots
/// (`source.properties."bootstrap.servers"`).
fn split_key(key: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in key.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(String::new()),
            c => parts.last_mut().expect("one part").push(c),
        }
    }
    parts
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

/// Counters of one process's run.
#[derive(Debug, Default)]
pub struct JobCounters {
    /// Source counters (records, dead letters).
    pub source: Arc<SourceCounters>,
    /// Aggregate rows emitted by the window operator.
    pub rows_total: AtomicU64,
    /// Records too late for all their windows.
    pub late_total: AtomicU64,
    /// Dead letters.
    pub dead_letters_total: AtomicU64,
    /// Kafka sink deliveries and errors.
    pub kafka_sink: Arc<KafkaSinkCounters>,
    /// ClickHouse sink rows, batches, retries.
    pub clickhouse_sink: Arc<DbSinkCounters>,
    /// PostgreSQL sink rows, batches, retries.
    pub postgres_sink: Arc<DbSinkCounters>,
    /// Alerting: windows evaluated, alerts by level, suppressed, rule updates.
    pub alerts: Arc<AlertCounters>,
    /// Rule updates published by the hourly publisher.
    pub rules_published_total: AtomicU64,
    /// Webhook deliveries and retries.
    pub webhook: Arc<streamforge_sinks::webhook::WebhookCounters>,
    /// Latency histograms (benchmarks: `STREAMFORGE_LATENCY_OUT`).
    pub latency: Option<Arc<crate::bench::LatencyRecorder>>,
    /// The last alerts (JSON, newest last; the status page).
    pub recent_alerts: std::sync::Mutex<std::collections::VecDeque<String>>,
}

/// What a run did, for this process.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSummary {
    /// Records read by this process's sources.
    pub events: u64,
    /// Aggregate rows emitted by this process's workers.
    pub rows: u64,
    /// Late records.
    pub late: u64,
    /// Dead-lettered records.
    pub dead_letters: u64,
    /// Records acknowledged by Kafka sinks.
    pub kafka_delivered: u64,
    /// Kafka transactions committed by the exactly-once Kafka sink.
    pub kafka_transactions: u64,
    /// Rows written to ClickHouse (re-commits after a restore included).
    pub clickhouse_rows: u64,
    /// Rows written to PostgreSQL.
    pub postgres_rows: u64,
    /// Database writes retried (server down or overloaded).
    pub database_retries: u64,
    /// Kafka delivery failures (retried).
    pub kafka_delivery_errors: u64,
    /// Alerts emitted by level: LOW, MID, HIGH.
    pub alerts: [u64; 3],
    /// Rule updates published by the in-job hourly publisher.
    pub rules_published: u64,
    /// Webhook requests retried.
    pub webhook_retries: u64,
    /// Wall-clock time of the dataflow, seconds.
    pub elapsed_seconds: f64,
    /// The checkpoint this run resumed from.
    pub restored_from: Option<u64>,
}

impl JobSummary {
    /// Events per second of wall-clock time.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed_seconds.max(1e-9)
    }
}

impl std::fmt::Display for JobSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "events {}  rows {}  late {}  dead-lettered {}  elapsed {:.3}s  events/s {:.0}",
            self.events,
            self.rows,
            self.late,
            self.dead_letters,
            self.elapsed_seconds,
            self.events_per_second()
        )?;
        if self.alerts.iter().sum::<u64>() > 0 || self.rules_published > 0 {
            write!(
                f,
                "  rules published {}  alerts LOW {} MID {} HIGH {}",
                self.rules_published, self.alerts[0], self.alerts[1], self.alerts[2]
            )?;
        }
        Ok(())
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
    alerting: Option<crate::alerting::Alerting>,
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
                    Some(n) => crate::produce::ensure_topic(&k.properties, &k.topic, n)?,
                    None => crate::produce::check_topic(&k.properties, &k.topic)?,
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
                .map(|a| crate::alerting::Alerting::prepare(a, base))
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
        if let Some(ctx) = &self.checkpoints {
            return self.build_checkpointed(scope, counters, settings, ctx.clone());
        }
        let mut open = self.opener();
        let (spans, dead) = partitioned_source(
            scope,
            settings,
            self.partitions(),
            move |i| open(i, None),
            Some(counters.source.clone()),
        );
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
        let (spans, dead) = checkpointed_source(
            scope,
            settings,
            self.partitions(),
            self.opener(),
            Some(counters.source.clone()),
            &mut graph,
        );
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
        rows: timely::dataflow::Stream<'s, Time, Vec<crate::main_job::OperatorAggRow>>,
        late: timely::dataflow::Stream<'s, Time, Vec<Span>>,
        dead: timely::dataflow::Stream<'s, Time, Vec<streamforge_dataflow::DeadLetter>>,
    ) -> (
        timely::dataflow::Stream<'s, Time, Vec<crate::main_job::OperatorAggRow>>,
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
        rows: &timely::dataflow::Stream<'s, Time, Vec<crate::main_job::OperatorAggRow>>,
        counters: &Arc<JobCounters>,
        graph: Option<&mut CheckpointGraph<'s>>,
    ) -> Result<(), Error> {
        let Some(a) = &self.alerting else {
            return Ok(());
        };
        let on = crate::alerting::wiring::Wiring {
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
        rows: &timely::dataflow::Stream<'s, Time, Vec<crate::main_job::OperatorAggRow>>,
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
        timely::dataflow::Stream<'s, Time, Vec<crate::main_job::OperatorAggRow>>,
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
        timely::dataflow::Stream<'s, Time, Vec<crate::main_job::OperatorAggRow>>,
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

/// A worker's dataflow build result. The other workers would wait forever
/// for the operators a failed build did not create: with peers, the process
/// stops (fail-stop) after printing the error.
pub(crate) fn fail_stop_build(
    result: Result<(), Error>,
    worker: usize,
    peers: usize,
) -> Result<(), String> {
    result.map_err(|e| {
        if peers > 1 {
            eprintln!("error: building the dataflow on worker {worker}: {e}");
            std::process::exit(1);
        }
        e.to_string()
    })
}

/// Waits for the workers of a run; the first error of any of them.
pub(crate) fn join_workers(
    guards: timely::communication::WorkerGuards<Result<(), String>>,
) -> Result<(), Error> {
    for r in guards.join() {
        r.map_err(DataflowError::Execution)?
            .map_err(Error::Invalid)?;
    }
    Ok(())
}

/// Logs the one machine-readable line of a restored run, on stderr:
/// `{"event":"restored","job":NAME,"checkpoint":ID}`.
pub(crate) fn log_restored(job: &str, id: u64) {
    eprintln!(
        "{}",
        serde_json::json!({"event": "restored", "job": job, "checkpoint": id})
    );
}

/// Finds the checkpoint to resume from and opens the checkpoint context of
/// job `job`.
pub(crate) fn open_checkpoints(
    job: &str,
    dir: &Path,
    cfg: &CheckpointConfig,
    from: &RestoreFrom,
) -> Result<CheckpointContext, Error> {
    let settings = CheckpointSettings {
        dir: dir.to_path_buf(),
        interval: cfg.interval,
        retain: cfg.retain,
    };
    let ckpt = |e: streamforge_dataflow::checkpoint_store::CheckpointError| {
        Error::Checkpoint(e.to_string())
    };
    let restore = match from {
        RestoreFrom::Fresh => None,
        RestoreFrom::Latest => {
            let store = CheckpointStore::open(dir, cfg.retain).map_err(ckpt)?;
            let (found, skipped) = store.latest().map_err(ckpt)?;
            for s in &skipped {
                eprintln!("streamforge: {s}; falling back to an older checkpoint");
            }
            match found {
                Some(c) => Some(Restore::new(store, c).map_err(ckpt)?),
                None => {
                    eprintln!(
                        "streamforge: no complete checkpoint in {}; starting from the beginning",
                        dir.display()
                    );
                    None
                }
            }
        }
        RestoreFrom::Path(p) => {
            let (store, c) = CheckpointStore::load_path(p).map_err(ckpt)?;
            Some(Restore::new(store, c).map_err(ckpt)?)
        }
    };
    if let Some(r) = &restore {
        let saved = r.checkpoint.manifest.meta.get("job");
        if saved.is_some_and(|j| j != job) {
            return Err(Error::Checkpoint(format!(
                "checkpoint {} belongs to job {:?}, not {:?}",
                r.id(),
                saved.unwrap_or(&String::new()),
                job
            )));
        }
    }
    CheckpointContext::new(&settings, job, restore).map_err(ckpt)
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
    streamforge_dataflow::metrics::clear();
    let latency_out = std::env::var_os(crate::bench::LATENCY_OUT).map(PathBuf::from);
    let counters = Arc::new(JobCounters {
        latency: latency_out
            .as_ref()
            .map(|_| Arc::new(crate::bench::LatencyRecorder::default())),
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

/// Asks the job running on checkpoint directory `dir` to stop with a
/// savepoint, waits for it, and returns its directory.
///
/// # Errors
/// No savepoint appeared within `timeout` (is the job running?), or I/O errors.
pub fn savepoint(dir: &Path, timeout: Duration) -> Result<PathBuf, Error> {
    let ckpt = |e: streamforge_dataflow::checkpoint_store::CheckpointError| {
        Error::Checkpoint(e.to_string())
    };
    let store = CheckpointStore::open(dir, usize::MAX).map_err(ckpt)?;
    let before = store.latest().map_err(ckpt)?.0.map(|c| c.manifest.id);
    CheckpointContext::request_stop(dir)?;
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let (Some(c), _) = store.latest().map_err(ckpt)? {
            let newer = before.is_none_or(|b| c.manifest.id > b);
            if newer && c.manifest.meta.get("savepoint").map(String::as_str) == Some("true") {
                return Ok(c.dir);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::Checkpoint(format!(
        "no savepoint in {} after {timeout:?}: is the job running?",
        dir.display()
    )))
}

/// The columns of an aggregate row (its JSON field names).
fn agg_columns() -> Vec<String> {
    crate::main_job::AGG_COLUMNS
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// An aggregate row as the JSON object the database sinks write.
fn encode_row(row: &crate::main_job::OperatorAggRow) -> Vec<u8> {
    serde_json::to_vec(row).expect("serializable row")
}
