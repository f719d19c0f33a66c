//! Job files over a declared schema ("table jobs"): any record shape, SQL
//! expressions, windows with SQL aggregates, sinks with column mappings.
//!
//! ```toml
//! name = "window-tumble"
//! dead-letter = "out/dead.jsonl"
//!
//! [source]
//! kind = "file"                 # JSON lines or CSV by extension (.gz too)
//! paths = ["events.jsonl"]
//! max-future = "1h"             # optional guard (off by default)
//!
//! [schema]
//! event-time = "ts"
//! columns = [
//!   { name = "ts", type = "timestamp" },           # ms (unit = "s"/"us"/"ns")
//!   { name = "service", type = "string" },
//!   { name = "duration_ms", type = "int", min = 0 },
//!   { name = "city", type = "string", default = "unknown" },
//! ]
//!
//! [watermark]
//! out-of-orderness = "2s"
//!
//! [[steps]]                     # in order: filter, compute, dedup
//! kind = "filter"
//! expr = "service <> 'health'"
//!
//! [window]
//! kind = "tumbling"             # tumbling | sliding (hop: + slide) | session (gap)
//! size = "60s"
//! key = ["service"]
//! select = ["count(*) AS cnt", "avg(duration_ms) AS avg_duration_ms"]
//!
//! [[sinks]]
//! kind = "csv"                  # csv | jsonl
//! path = "out/tumble.csv"
//! columns = ["service", "window_start_ms", "cnt"]   # optional, SQL select items
//! ```
//!
//! Sources and sinks are connectors picked by `kind` from the registry in
//! [`crate::connectors`] (sources: file, kafka; sinks: jsonl, csv,
//! clickhouse), one file per connector.
//!
//! A window's output row is its key columns, `window_start_ms`,
//! `window_end_ms` (ms, end exclusive), then the select's aggregates; its
//! event time is `window_end_ms - 1`. Without a window, the rows themselves
//! (after the steps) go to the sinks. All paths are relative to the job
//! file's directory. Every value that does not fit its column, every row
//! whose expression fails, is dead-lettered with the reason (see
//! [`streamforge_sources::row`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use streamforge_dataflow::launch::ClusterArgs;
use streamforge_operators::{AggregateFunction, Sliding, Tumbling};
use streamforge_sources::row::{Column, ColumnType, Row, RowDecoder, Schema, Value};

use crate::api::{self, JobOptions, StreamEnv, WatermarkStrategy};
use crate::connectors::jsonl::json_line;
use crate::connectors::{DecoderFactory, SinkConnector, SourceConnector};
use crate::error::Error;
use crate::job::{CheckpointConfig, FlowControlConfig, JobSummary, RestoreFrom, WatermarkConfig};
use crate::sql::aggregate::{compile_select, AggPlan, RowAggregate};
use crate::sql::expr::{compile, compile_ast, parse_select_item, Expr, Scope};
use crate::sql::row_key::{KeyColumns, RowKey};

/// A job file over a declared schema.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TableJob {
    /// Job name.
    pub name: String,
    /// Where rows come from: `kind` picks the connector
    /// ([`crate::connectors::SOURCES`]), the other keys are its settings.
    pub source: toml::Value,
    /// The input's columns.
    pub schema: SchemaConfig,
    /// Watermark strategy (default: 5 s out of orderness).
    #[serde(default)]
    pub watermark: WatermarkConfig,
    /// Filters, computed columns and dedup, in order.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// The window; without one, rows go to the sinks as they are.
    pub window: Option<TableWindow>,
    /// Where output rows go: `kind` picks each connector
    /// ([`crate::connectors::SINKS`]).
    #[serde(default)]
    pub sinks: Vec<toml::Value>,
    /// JSONL file for rows too late for all their windows.
    pub late_output: Option<PathBuf>,
    /// JSONL file for dead letters.
    pub dead_letter: Option<PathBuf>,
    /// Checkpoints.
    pub checkpoint: Option<CheckpointConfig>,
    /// Read at most this many records per second per worker.
    pub rate_limit: Option<u64>,
    /// Backpressure of the sources (`[flow-control]`).
    #[serde(default)]
    pub flow_control: FlowControlConfig,
    /// Write only the windows overlapping `[from, to)` (ms; set by
    /// `streamforge replay`).
    pub replay_range: Option<(u64, u64)>,
    /// Hourly thresholds, broadcast rules and alerts, as in the span-mapping
    /// job, over the rows of the **first sink**: its `columns` must give the
    /// columns of `flink_operator_agg_result` (see
    /// `examples/jobs/operator-metrics.toml`).
    pub alerting: Option<crate::operator_metrics::alerting::AlertingConfig>,
}

/// The declared input schema.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SchemaConfig {
    /// The event-time column (timestamp, or int ms).
    pub event_time: String,
    /// Columns in order.
    pub columns: Vec<Column>,
}

/// A processing step.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Keeps rows whose SQL condition is TRUE.
    Filter {
        /// The condition.
        expr: String,
    },
    /// Adds (or replaces) a column computed by a SQL expression.
    Compute {
        /// The column.
        name: String,
        /// The expression.
        expr: String,
    },
    /// Keeps the first row per key by event time (ties: the smallest
    /// encoding) and drops repeats until the watermark passes its event
    /// time + `ttl`.
    Dedup {
        /// Key columns.
        key: Vec<String>,
        /// How long a key is remembered, in event time.
        #[serde(with = "humantime_serde")]
        ttl: Duration,
    },
}

/// Window kinds of table jobs.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TableWindowKind {
    /// Fixed windows of `size`.
    Tumbling,
    /// Windows of `size` every `slide` (HOP).
    #[serde(alias = "hop")]
    Sliding,
    /// Sessions per key closed by a `gap` of inactivity; overlapping or
    /// touching sessions merge.
    Session,
}

/// A keyed window with SQL aggregates.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TableWindow {
    /// The kind.
    pub kind: TableWindowKind,
    /// Window size (tumbling, sliding).
    #[serde(default, with = "humantime_serde")]
    pub size: Option<Duration>,
    /// Slide of sliding windows.
    #[serde(default, with = "humantime_serde")]
    pub slide: Option<Duration>,
    /// Gap of session windows.
    #[serde(default, with = "humantime_serde")]
    pub gap: Option<Duration>,
    /// Allowed lateness (default 0).
    #[serde(default, with = "humantime_serde")]
    pub allowed_lateness: Option<Duration>,
    /// Key columns (empty: one global key).
    #[serde(default)]
    pub key: Vec<String>,
    /// Aggregates: SQL select items (`count(*) AS cnt`).
    pub select: Vec<String>,
}

impl TableJob {
    /// Whether a parsed job file is a table job (it declares `[schema]`).
    pub fn is_table_job(value: &toml::Value) -> bool {
        value.get("schema").is_some()
    }

    /// Compiles the job without running it: columns, SQL, window,
    /// connectors and their settings (paths, relative to `base`, are
    /// resolved when the job runs).
    ///
    /// # Errors
    /// The first problem, with its place (`steps.0: …`).
    pub fn validate(&self, _base: &Path) -> Result<(), String> {
        compile_job(self).map(|_| ())
    }

    /// Parses a table job from TOML.
    ///
    /// # Errors
    /// The TOML error as text.
    pub fn from_value(value: toml::Value) -> Result<TableJob, String> {
        TableJob::deserialize(value).map_err(|e| e.to_string())
    }
}

/// One operation of a fused run of row steps.
#[derive(Clone, Debug)]
enum RowOp {
    Filter(Expr, String),
    Compute(usize, Expr, String),
    /// The window's aggregate arguments that are not plain columns.
    Inputs(AggPlan),
}

/// Runs `ops` — each with the column names of its input row, for the raw
/// text of a dead letter — as one operator (none when `ops` is empty).
fn apply_ops<'s>(
    stream: crate::api::DataStream<'s, Row>,
    ops: Vec<(RowOp, Arc<Vec<String>>)>,
) -> crate::api::DataStream<'s, Row> {
    if ops.is_empty() {
        return stream;
    }
    let name = ops_name(&ops);
    let f = row_ops(ops);
    stream.try_filter_map_raw(name, f)
}

/// The operator name of `ops`.
fn ops_name(ops: &[(RowOp, Arc<Vec<String>>)]) -> &'static str {
    match ops.first().map(|o| &o.0) {
        Some(RowOp::Filter(..)) => "filter",
        Some(RowOp::Compute(..)) => "compute",
        Some(RowOp::Inputs(_)) => "window-inputs",
        None => "key",
    }
}

/// `ops` as one function of a row: the row (changed), `None` (filtered
/// out) or a dead letter (reason, the row as JSON).
fn row_ops(
    ops: Vec<(RowOp, Arc<Vec<String>>)>,
) -> impl Fn(Row) -> Result<Option<Row>, (String, String)> + 'static {
    move |mut row: Row| {
        for (op, names) in &ops {
            let failed = match op {
                RowOp::Filter(e, step) => match e.holds(&row) {
                    Ok(true) => continue,
                    Ok(false) => return Ok(None),
                    Err(reason) => format!("{step}: {reason}"),
                },
                RowOp::Compute(at, e, step) => match e.eval(&row) {
                    Ok(v) => {
                        if *at == row.len() {
                            row.push(v);
                        } else {
                            row[*at] = v;
                        }
                        continue;
                    }
                    Err(reason) => format!("{step}: {reason}"),
                },
                RowOp::Inputs(p) => match p.project(&mut row) {
                    Ok(()) => continue,
                    Err(reason) => reason,
                },
            };
            return Err((failed, json_line(names, &row)));
        }
        Ok(Some(row))
    }
}

/// A compiled step.
#[derive(Clone, Debug)]
enum Plan {
    Filter(Expr, String),
    Compute(usize, Expr, String, String),
    Dedup(Vec<usize>, u64),
}

/// A column projection for a sink: names and expressions over the output.
#[derive(Clone, Debug)]
struct Projection {
    names: Vec<String>,
    exprs: Option<Vec<Expr>>,
}

impl Projection {
    fn new(columns: &Option<Vec<String>>, scope: &Scope) -> Result<Projection, String> {
        let Some(items) = columns else {
            return Ok(Projection {
                names: scope.names.clone(),
                exprs: None,
            });
        };
        let mut names = Vec::new();
        let mut exprs = Vec::new();
        for item in items {
            let (expr, name) = parse_select_item(item).map_err(|e| format!("`{item}`: {e}"))?;
            let (e, _) = compile_ast(&expr, scope).map_err(|m| format!("`{expr}`: {m}"))?;
            names.push(name);
            exprs.push(e);
        }
        Ok(Projection {
            names,
            exprs: Some(exprs),
        })
    }
}

impl Compiled {
    /// A decoder factory for the source's partitions.
    fn decoder(&self) -> DecoderFactory {
        let (schema, et) = (self.schema.clone(), self.event_time.clone());
        let max_future = self.source.max_future_ms();
        let width = self.input_names.len();
        let added = self
            .steps
            .iter()
            .filter(|s| matches!(s, Plan::Compute(at, ..) if *at >= width))
            .count();
        let spare = added + self.window.as_ref().map_or(0, |(_, p)| p.inputs.len());
        Arc::new(move || {
            RowDecoder::new(schema.clone(), &et, max_future)
                .expect("checked when compiled")
                .with_spare_columns(spare)
        })
    }
}

/// A window's key: columns of the row, and constants (bound names, see
/// [`Scope::bind`]) that only its output rows carry.
#[derive(Clone, Debug, Default)]
struct WindowKey {
    /// Row columns, in key order.
    columns: Vec<usize>,
    /// `(position in the key, value)`, by position.
    constants: Vec<(usize, Value)>,
}

impl WindowKey {
    /// The key's values in declared order, from those of its row columns.
    fn values(&self, mut row: Vec<Value>) -> Vec<Value> {
        for (at, v) in &self.constants {
            row.insert(*at, v.clone());
        }
        row
    }
}

/// One column of a key.
enum KeyColumn {
    Row(usize),
    Const(Value),
}

/// The key columns `names` (name as declared, type, place) in `scope`.
fn key_columns(
    names: &[String],
    scope: &Scope,
    what: &str,
) -> Result<Vec<(String, ColumnType, KeyColumn)>, String> {
    names
        .iter()
        .map(|n| match scope.resolve(n) {
            Some((name, Expr::Column(i), t)) => Ok((name.to_string(), t, KeyColumn::Row(i))),
            Some((name, Expr::Literal(v), t)) => Ok((name.to_string(), t, KeyColumn::Const(v))),
            Some(_) | None => Err(format!("{what}: unknown column `{n}`")),
        })
        .collect()
}

/// Everything a worker needs to build the job, compiled once.
#[derive(Clone, Debug)]
struct Compiled {
    schema: Arc<Schema>,
    event_time: String,
    input_names: Vec<String>,
    steps: Vec<Plan>,
    window: Option<(WindowKey, AggPlan)>,
    source: Arc<dyn SourceConnector>,
    sinks: Vec<(Arc<dyn SinkConnector>, Projection)>,
    output_names: Vec<String>,
}

fn compile_job(job: &TableJob) -> Result<Compiled, String> {
    let schema = Arc::new(Schema::new(job.schema.columns.clone())?);
    RowDecoder::new(schema.clone(), &job.schema.event_time, None)?;
    let mut scope = Scope::new(schema.columns().iter().map(|c| (c.name.clone(), c.ty)));
    let input_names = scope.names.clone();
    let mut steps = Vec::new();
    // With a window (whose output is all the sinks see), a computed column
    // that only renames a column or holds a constant is bound in the scope
    // instead of stored in every row — unless a later step changes the
    // column it renames.
    let changed_later = |i: usize, column: &str| {
        job.steps[i + 1..]
            .iter()
            .any(|s| matches!(s, Step::Compute { name, .. } if name.eq_ignore_ascii_case(column)))
    };
    for (i, step) in job.steps.iter().enumerate() {
        let what = format!("steps.{i}");
        steps.push(match step {
            Step::Filter { expr } => {
                let (e, t) = compile(expr, &scope).map_err(|e| format!("{what}: {e}"))?;
                if !t.is_none_or(|t| t == ColumnType::Bool) {
                    return Err(format!("{what}: a filter needs a bool condition: `{expr}`"));
                }
                Plan::Filter(e, format!("{what} (filter)"))
            }
            Step::Compute { name, expr } => {
                let (e, t) = compile(expr, &scope).map_err(|e| format!("{what}: {e}"))?;
                let t = t.unwrap_or(ColumnType::String);
                scope.unbind(name);
                if job.window.is_some() && scope.index_of(name).is_none() {
                    let pure = match &e {
                        Expr::Literal(_) => true,
                        Expr::Column(j) => !changed_later(i, &scope.names[*j]),
                        _ => false,
                    };
                    if pure {
                        scope.bind(name, t, e);
                        continue;
                    }
                }
                let at = match scope.index_of(name) {
                    Some(j) => {
                        scope.types[j] = t;
                        j
                    }
                    None => {
                        scope.push(name, t);
                        scope.names.len() - 1
                    }
                };
                Plan::Compute(at, e, format!("{what} (compute {name})"), name.clone())
            }
            Step::Dedup { key, ttl } => {
                // A constant adds nothing to a dedup key.
                let key = key_columns(key, &scope, &what)?
                    .into_iter()
                    .filter_map(|(_, _, c)| match c {
                        KeyColumn::Row(i) => Some(i),
                        KeyColumn::Const(_) => None,
                    })
                    .collect();
                Plan::Dedup(key, ttl.as_millis() as u64)
            }
        });
    }
    let event_time = scope
        .index_of(&job.schema.event_time)
        .expect("checked by RowDecoder::new");
    let (window, out_scope) = match &job.window {
        Some(w) => {
            let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
            let size = ms(w.size).unwrap_or(0);
            match (w.kind, ms(w.slide)) {
                (TableWindowKind::Session, _) if w.size.is_some() || w.slide.is_some() => {
                    return Err("window: a session window has a `gap`, not a size or slide".into())
                }
                (TableWindowKind::Session, _) if ms(w.gap).unwrap_or(0) == 0 => {
                    return Err("window: a session window needs a `gap` > 0".into())
                }
                (TableWindowKind::Session, _) => {}
                _ if w.gap.is_some() => {
                    return Err("window: only session windows have a `gap`".into())
                }
                _ if size == 0 => return Err("window: `size` must be > 0".into()),
                (TableWindowKind::Sliding, None) => {
                    return Err("window: a sliding window needs `slide`".into())
                }
                (TableWindowKind::Sliding, Some(s)) if s == 0 || s > size => {
                    return Err("window: need 0 < slide ≤ size".into())
                }
                _ => {}
            }
            let columns = key_columns(&w.key, &scope, "window.key")?;
            let plan = compile_select(&w.select, &scope, event_time)
                .map_err(|e| format!("window.select: {e}"))?;
            let mut out = Scope::new(columns.iter().map(|(n, t, _)| (n.clone(), *t)));
            let mut key = WindowKey::default();
            for (at, (_, _, c)) in columns.into_iter().enumerate() {
                match c {
                    KeyColumn::Row(i) => key.columns.push(i),
                    KeyColumn::Const(v) => key.constants.push((at, v)),
                }
            }
            out.push("window_start_ms", ColumnType::Timestamp);
            out.push("window_end_ms", ColumnType::Timestamp);
            for (n, t) in plan.outputs() {
                if out.index_of(&n).is_some() {
                    return Err(format!("window.select: `{n}` is also a key column"));
                }
                out.push(&n, t);
            }
            (Some((key, plan)), out)
        }
        None => (None, scope.clone()),
    };
    let mut sinks = Vec::new();
    for (i, s) in job.sinks.iter().enumerate() {
        let sink = crate::connectors::sink(s).map_err(|e| format!("sinks.{i}: {e}"))?;
        let columns = sink.columns().map(<[String]>::to_vec);
        let p = Projection::new(&columns, &out_scope).map_err(|e| format!("sinks.{i}: {e}"))?;
        sinks.push((sink, p));
    }
    if job.alerting.is_some() {
        let names = sinks
            .first()
            .map(|(_, p)| p.names.clone())
            .unwrap_or_default();
        let missing: Vec<&str> = crate::operator_metrics::AGG_COLUMNS
            .iter()
            .copied()
            .filter(|c| !names.iter().any(|n| n == c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "alerting: the first sink's columns must give those of \
                 flink_operator_agg_result; missing: {}",
                missing.join(", ")
            ));
        }
    }
    Ok(Compiled {
        schema,
        source: crate::connectors::source(&job.source)?,
        event_time: job.schema.event_time.clone(),
        input_names,
        steps,
        window,
        sinks,
        output_names: out_scope.names.clone(),
    })
}

/// Runs a table job.
///
/// # Errors
/// The job does not compile (unknown column, type error, bad SQL), a source
/// or sink cannot be opened, a checkpoint cannot be restored, a worker failed.
pub fn run(
    job: &TableJob,
    base: &Path,
    cluster: &ClusterArgs,
    restore: &RestoreFrom,
) -> Result<JobSummary, Error> {
    let compiled = compile_job(job).map_err(|reason| Error::JobFile {
        path: job.name.clone(),
        reason,
    })?;
    for (sink, projection) in &compiled.sinks {
        sink.check(&projection.names)?;
    }
    let mut options = JobOptions::new(job.name.clone()).cluster(cluster.clone());
    if let Some(c) = &job.checkpoint {
        let mut c = c.clone();
        c.dir = base.join(&c.dir);
        options = options.checkpoint(c);
    }
    options = options.restore(restore.clone());
    if let Some(d) = &job.dead_letter {
        options = options.dead_letter(base.join(d));
    }
    options.rate_limit = job.rate_limit;
    options.flow = job.flow_control.settings();
    let alerting = job
        .alerting
        .as_ref()
        .map(|a| crate::operator_metrics::alerting::Alerting::prepare(a, base))
        .transpose()?;
    let counters = Arc::new(crate::job::JobCounters::default());
    let rows = Arc::new(AtomicU64::new(0));
    let job = Arc::new(job.clone());
    let base = base.to_path_buf();
    let (r, c) = (rows.clone(), counters.clone());
    let summary = api::execute(&options, move |env| {
        build(
            env,
            &job,
            &compiled,
            &base,
            r.clone(),
            alerting.as_ref(),
            &c,
        )
    })?;
    Ok(JobSummary {
        events: summary.events,
        rows: rows.load(Ordering::Relaxed),
        late: summary.late,
        dead_letters: summary.dead_letters,
        kafka_delivered: 0,
        kafka_transactions: 0,
        clickhouse_rows: 0,
        postgres_rows: 0,
        database_retries: 0,
        kafka_delivery_errors: 0,
        alerts: std::array::from_fn(|i| counters.alerts.alerts_total[i].load(Ordering::Relaxed)),
        rules_published: counters.rules_published_total.load(Ordering::Relaxed),
        webhook_retries: counters.webhook.retries_total.load(Ordering::Relaxed),
        elapsed_seconds: summary.elapsed_seconds,
        restored_from: summary.restored_from,
    })
}

fn build(
    env: &mut StreamEnv<'_>,
    job: &TableJob,
    c: &Compiled,
    base: &Path,
    rows: Arc<AtomicU64>,
    alerting: Option<&crate::operator_metrics::alerting::Alerting>,
    counters: &Arc<crate::job::JobCounters>,
) -> Result<(), Error> {
    let mut watermarks =
        WatermarkStrategy::for_bounded_out_of_orderness(job.watermark.out_of_orderness);
    if let Some(idle) = job.watermark.idle_timeout {
        watermarks = watermarks.with_idleness(idle);
    }
    let mut stream = c.source.open(env, base, watermarks, c.decoder())?;
    // Consecutive filters and computed columns (and the window's computed
    // arguments) run as one operator: one pass over each batch.
    let mut names = c.input_names.clone();
    let mut run: Vec<(RowOp, Arc<Vec<String>>)> = Vec::new();
    for step in &c.steps {
        let n = Arc::new(names.clone());
        match step.clone() {
            Plan::Filter(e, step) => run.push((RowOp::Filter(e, step), n)),
            Plan::Compute(at, e, step, column) => {
                if at == names.len() {
                    names.push(column);
                }
                run.push((RowOp::Compute(at, e, step), n));
            }
            Plan::Dedup(key, ttl) => {
                stream = apply_ops(stream, std::mem::take(&mut run))
                    .key_by(move |row: &Row| {
                        key.iter().map(|&k| row[k].clone()).collect::<Vec<Value>>()
                    })
                    .dedup("dedup", ttl);
            }
        }
    }
    let output = match &c.window {
        None => apply_ops(stream, run),
        Some((key, plan)) => {
            let w = job.window.as_ref().expect("compiled window");
            let lateness = w.allowed_lateness.map_or(0, |d| d.as_millis() as u64);
            let key_values = key.clone();
            let key = key.columns.clone();
            if !plan.inputs.is_empty() {
                run.push((RowOp::Inputs(plan.clone()), Arc::new(names.clone())));
            }
            // The row is its own key (no copied key per record); the steps
            // and the key run as one operator.
            let cols = KeyColumns::new(&key);
            let name = ops_name(&run);
            let ops = row_ops(run);
            let keyed = stream.try_key_by_element_raw(name, move |t, row: Row| {
                Ok(ops(row)?.map(|row| (RowKey::new(cols.clone(), row), t, ())))
            });
            let agg = OnRowKey(RowAggregate::new(plan));
            let size = w.size.map_or(0, |d| d.as_millis() as u64);
            let (results, late) = match w.kind {
                TableWindowKind::Session => keyed
                    .session_window(w.gap.expect("checked").as_millis() as u64)
                    .allowed_lateness_ms(lateness)
                    .aggregate_elements("window", agg),
                TableWindowKind::Tumbling => keyed
                    .window(Tumbling::new(size))
                    .allowed_lateness_ms(lateness)
                    .aggregate_elements("window", agg),
                TableWindowKind::Sliding => {
                    let slide = w.slide.expect("checked").as_millis() as u64;
                    keyed
                        .window(Sliding::new(size, slide))
                        .allowed_lateness_ms(lateness)
                        .aggregate_elements("window", agg)
                }
            };
            let out = crate::api::keyed::window_output_with(
                env.inner.clone(),
                results,
                late,
                |(k, t, ()): (RowKey, u64, ())| (t, k.row),
            );
            if let Some(path) = &job.late_output {
                let names = c.input_names.clone();
                let n = names.len();
                out.late
                    .map(move |row| json_line(&names, &row[..n.min(row.len())]))
                    .sink_lines("late-output", base.join(path), None);
            }
            let range = job.replay_range;
            out.results
                .filter(move |r| {
                    range.is_none_or(|(from, to)| r.window.end_ms > from && r.window.start_ms < to)
                })
                .map(move |r| {
                    let mut row = key_values.values(r.key.key());
                    row.push(Value::Timestamp(r.window.start_ms as i64));
                    row.push(Value::Timestamp(r.window.end_ms as i64));
                    row.extend(r.value);
                    row
                })
        }
    };
    let counted = output.count_into(rows);
    for (i, (sink, projection)) in c.sinks.iter().enumerate() {
        let projected = match projection.exprs.clone() {
            None => counted.clone(),
            Some(exprs) => {
                let n = Arc::new(c.output_names.clone());
                counted
                    .clone()
                    .try_map_raw(&format!("sink-{i}-columns"), move |row: Row| {
                        let out: Result<Row, String> = exprs.iter().map(|e| e.eval(&row)).collect();
                        out.map_err(|e| (e, json_line(&n, &row)))
                    })
            }
        };
        if let (0, Some(a)) = (i, alerting) {
            let names = projection.names.clone();
            let window_size_ms = job
                .window
                .as_ref()
                .and_then(|w| w.size)
                .map_or(0, |d| d.as_millis() as u64);
            let counters = counters.clone();
            projected
                .clone()
                .try_map_raw("alerting-rows", move |row: Row| {
                    streamforge_sources::row::from_row::<crate::operator_metrics::OperatorAggRow>(
                        &names, &row,
                    )
                    .map_err(|e| {
                        (
                            format!("alerting: not a flink_operator_agg_result row: {e}"),
                            json_line(&names, &row),
                        )
                    })
                })
                .build_timely(|scope, rows, graph| {
                    let on = crate::operator_metrics::alerting::wiring::Wiring {
                        counters: &counters,
                        window_size_ms,
                        status_page: false,
                        first_epoch: graph.as_ref().map_or(0, |g| g.context().first_epoch()),
                    };
                    a.build(scope, &rows, &on, graph)
                });
        }
        sink.build(projected, &projection.names, base, &format!("sink-{i}"))?;
    }
    Ok(())
}

/// A row aggregate over keyed elements `(row as key, event time, ())`.
#[derive(Clone)]
struct OnRowKey(RowAggregate);

impl AggregateFunction<(RowKey, u64, ())> for OnRowKey {
    type Acc = <RowAggregate as AggregateFunction<Row>>::Acc;
    type Out = Row;
    fn create_accumulator(&self) -> Self::Acc {
        self.0.create_accumulator()
    }
    #[inline]
    fn add(&self, acc: &mut Self::Acc, input: &(RowKey, u64, ())) {
        self.0.add(acc, &input.0.row)
    }
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        self.0.merge(acc, other)
    }
    fn get_result(&self, acc: &Self::Acc) -> Row {
        self.0.get_result(acc)
    }
}

/// What [`replay_value`] changes in a job to re-run the time range
/// `[from_ms, to_ms)`.
#[derive(Clone, Debug)]
pub struct Replay {
    /// Start of the range (ms, inclusive).
    pub from_ms: u64,
    /// End of the range (ms, exclusive).
    pub to_ms: u64,
    /// Files to read instead of the job's source (e.g. the repaired
    /// anomaly log: the `raw` values, corrected).
    pub inputs: Option<Vec<String>>,
    /// The version written to every `… AS version` sink column (default:
    /// now in ms), so the replayed rows replace the earlier ones in a
    /// `ReplacingMergeTree(version)`.
    pub version: u64,
}

/// Turns a table job into its bounded replay over `[from, to)` (the seed's
/// 回溯), as TOML:
///
/// * the source is bounded (a Kafka source reads to the end offsets seen at
///   start; `inputs` replace it with files);
/// * only records with event times in `[from − size − dedup ttl, to + size)`
///   are read: every window that overlaps the range is complete, and the
///   dedup sees the earlier repeats of an order;
/// * the watermark allows the whole range as disorder, so no record is late:
///   the rows are those of data that arrived on time;
/// * only windows overlapping `[from, to)` are written, with `version`
///   in place of any `… AS version` column;
/// * no checkpoints; dead letters go to `<dead-letter>-replay-<version>`.
///
/// # Errors
/// The job has no window or is not a table job.
///
/// # Examples
/// ```
/// use streamforge::job::table::{replay_value, Replay, TableJob};
/// let job: toml::Value = toml::from_str(r#"
/// name = "j"
/// [source]
/// kind = "file"
/// paths = ["in.jsonl"]
/// [schema]
/// event-time = "ts"
/// columns = [{ name = "ts", type = "timestamp" }]
/// [window]
/// kind = "tumbling"
/// size = "1m"
/// select = ["count(*) AS n"]
/// [[sinks]]
/// kind = "jsonl"
/// path = "out.jsonl"
/// columns = ["window_start_ms", "n", "0 AS version"]
/// "#).unwrap();
/// let r = Replay { from_ms: 600_000, to_ms: 900_000, inputs: None, version: 7 };
/// let v = replay_value(job, &r).unwrap();
/// assert_eq!(v["steps"][0]["expr"].as_str(),
///            Some("ts >= 540000 AND ts < 960000"));
/// assert_eq!(v["sinks"][0]["columns"][2].as_str(), Some("7 AS version"));
/// assert!(TableJob::from_value(v).is_ok());
/// ```
pub fn replay_value(mut value: toml::Value, r: &Replay) -> Result<toml::Value, String> {
    let job = TableJob::from_value(value.clone())?;
    let w = job
        .window
        .as_ref()
        .ok_or("replay needs a job with a window")?;
    let reach = w.size.or(w.gap).map_or(0, |d| d.as_millis() as u64)
        + w.allowed_lateness.map_or(0, |d| d.as_millis() as u64);
    let ttl: u64 = job
        .steps
        .iter()
        .map(|s| match s {
            Step::Dedup { ttl, .. } => ttl.as_millis() as u64,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    let (lo, hi) = (r.from_ms.saturating_sub(reach + ttl), r.to_ms + reach);
    let t = value.as_table_mut().ok_or("a job is a table")?;
    let et = &job.schema.event_time;
    let mut filter = toml::Table::new();
    filter.insert("kind".into(), "filter".into());
    filter.insert(
        "expr".into(),
        format!("{et} >= {lo} AND {et} < {hi}").into(),
    );
    let mut steps = vec![toml::Value::Table(filter)];
    if let Some(toml::Value::Array(old)) = t.remove("steps") {
        steps.extend(old);
    }
    t.insert("steps".into(), toml::Value::Array(steps));
    match &r.inputs {
        Some(paths) => {
            let mut s = toml::Table::new();
            s.insert("kind".into(), "file".into());
            s.insert(
                "paths".into(),
                toml::Value::Array(paths.iter().map(|p| p.clone().into()).collect()),
            );
            t.insert("source".into(), toml::Value::Table(s));
        }
        None => {
            let source = crate::connectors::source(&job.source)?;
            if let Some(toml::Value::Table(s)) = t.get_mut("source") {
                source.bound_for_replay(s);
            }
        }
    }
    let disorder = format!("{}ms", hi - lo);
    let mut wm = toml::Table::new();
    wm.insert("out-of-orderness".into(), disorder.into());
    t.insert("watermark".into(), toml::Value::Table(wm));
    t.remove("checkpoint");
    t.remove("late-output");
    if let Some(toml::Value::String(d)) = t.get("dead-letter").cloned() {
        t.insert(
            "dead-letter".into(),
            format!("{d}-replay-{}", r.version).into(),
        );
    }
    if let Some(toml::Value::Array(sinks)) = t.get_mut("sinks") {
        for sink in sinks.iter_mut() {
            let Some(s) = sink.as_table_mut() else {
                continue;
            };
            let Some(toml::Value::Array(cols)) = s.get_mut("columns") else {
                continue;
            };
            for c in cols.iter_mut() {
                if let Some(text) = c.as_str() {
                    if let Ok((_, name)) = parse_select_item(text) {
                        if name == "version" {
                            *c = format!("{} AS version", r.version).into();
                        }
                    }
                }
            }
        }
    }
    // Only windows overlapping [from, to): a filter on the output rows.
    t.insert(
        "replay-range".into(),
        toml::Value::Array(vec![(r.from_ms as i64).into(), (r.to_ms as i64).into()]),
    );
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(steps: &str, key: &str) -> TableJob {
        let text = format!(
            r#"name = "t"
[source]
kind = "file"
paths = ["in.jsonl"]
[schema]
event-time = "ts"
columns = [{{ name = "ts", type = "timestamp" }}, {{ name = "service", type = "string" }},
           {{ name = "operator", type = "string" }}]
{steps}
[window]
kind = "tumbling"
size = "60s"
key = {key}
select = ["count(*) AS n"]
[[sinks]]
kind = "jsonl"
path = "out.jsonl"
"#
        );
        TableJob::from_value(toml::from_str(&text).unwrap()).unwrap()
    }

    fn computes(c: &Compiled) -> Vec<String> {
        c.steps
            .iter()
            .filter_map(|s| match s {
                Plan::Compute(_, _, _, name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn renames_and_constants_are_bound_unless_their_column_changes_later() {
        let steps = r#"
[[steps]]
kind = "compute"
name = "svc"
expr = "service"
[[steps]]
kind = "compute"
name = "kind"
expr = "'span'"
[[steps]]
kind = "compute"
name = "op_before"
expr = "operator"
[[steps]]
kind = "compute"
name = "operator"
expr = "upper(operator)"
[[steps]]
kind = "compute"
name = "op"
expr = "op_before"
"#;
        let c = compile_job(&job(steps, r#"["svc", "kind", "op", "operator"]"#)).unwrap();
        // `op_before` renames a column that a later step changes, and
        // `operator` is a column of the input: both are stored.
        assert_eq!(computes(&c), ["op_before", "operator"]);
        let (key, _) = c.window.as_ref().unwrap();
        // svc = service (1), op = op_before (3), operator (2); `kind` is a constant.
        assert_eq!(key.columns, [1, 3, 2]);
        assert_eq!(key.constants, [(1, Value::str("span"))]);
        assert_eq!(
            key.values(vec![Value::str("a"), Value::str("b"), Value::str("C")]),
            [
                Value::str("a"),
                Value::str("span"),
                Value::str("b"),
                Value::str("C")
            ]
        );
        assert_eq!(
            &c.output_names[..4],
            ["svc", "kind", "op", "operator"].map(String::from)
        );
    }

    #[test]
    fn a_bound_name_computed_again_in_another_case_is_stored() {
        let steps = r#"
[[steps]]
kind = "compute"
name = "svc"
expr = "service"
[[steps]]
kind = "compute"
name = "SVC"
expr = "upper(service)"
"#;
        let c = compile_job(&job(steps, r#"["svc"]"#)).unwrap();
        assert_eq!(computes(&c), ["SVC"]);
        // The key is the stored column (3), not the first rename of `service`.
        assert_eq!(c.window.as_ref().unwrap().0.columns, [3]);
    }

    #[test]
    fn without_a_window_every_computed_column_is_stored() {
        let text = r#"name = "t"
[source]
kind = "file"
paths = ["in.jsonl"]
[schema]
event-time = "ts"
columns = [{ name = "ts", type = "timestamp" }, { name = "service", type = "string" }]
[[steps]]
kind = "compute"
name = "svc"
expr = "service"
[[sinks]]
kind = "jsonl"
path = "out.jsonl"
"#;
        let c = compile_job(&TableJob::from_value(toml::from_str(text).unwrap()).unwrap()).unwrap();
        assert_eq!(computes(&c), ["svc"]);
        assert_eq!(c.output_names, ["ts", "service", "svc"].map(String::from));
    }
}
