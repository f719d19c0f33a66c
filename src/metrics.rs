//! Prometheus metrics and a status page, served by the job (`[metrics]`).
//!
//! `GET /metrics`: the text exposition format (the `prometheus` crate), every
//! series labelled `streamforge_job`; counters are this process's totals
//! (what the job's summary line reports at the end). `GET /`: a status page
//! that refreshes itself every 2 s — job graph, per-stage totals and rates,
//! watermark and its lag, last checkpoint, recent alerts. `GET /status.json`:
//! the same as JSON. Bound to 127.0.0.1 by default.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use serde::Deserialize;

use streamforge_dataflow::checkpoint::CheckpointContext;

use crate::error::Error;
use crate::job::JobCounters;

/// `[metrics]` of a job file.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to listen (default `127.0.0.1:9249`).
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Keep serving this long after the job ended, so a scraper sees the
    /// final values (default `"0s"`).
    #[serde(default, with = "humantime_serde")]
    pub linger: Option<Duration>,
}

fn default_address() -> SocketAddr {
    "127.0.0.1:9249".parse().expect("address")
}

/// Recent alerts kept for the status page.
pub const RECENT_ALERTS: usize = 20;

/// What the status page shows besides counters.
#[derive(Default)]
pub struct StatusInfo {
    /// Job name.
    pub job: String,
    /// Operators and their edges, `(from, to)`.
    pub edges: Vec<(String, String)>,
}

/// A counter and how to read its value from the job's counters.
type CounterSource = (IntCounter, Box<dyn Fn(&JobCounters) -> u64 + Send>);

struct Series {
    registry: Registry,
    op_in: IntCounterVec,
    op_out: IntCounterVec,
    op_state: prometheus::IntGaugeVec,
    throttled: prometheus::CounterVec,
    paused: prometheus::IntGaugeVec,
    counters: Vec<CounterSource>,
    alerts: IntCounterVec,
    watermark: IntGauge,
    watermark_lag: IntGauge,
    checkpoints: IntCounter,
    checkpoint_id: IntGauge,
    checkpoint_bytes: IntGauge,
    checkpoint_duration: prometheus::Gauge,
    checkpoint_age: prometheus::Gauge,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn set_counter(c: &IntCounter, v: u64) {
    let have = c.get();
    if v > have {
        c.inc_by(v - have);
    }
}

impl Series {
    fn new(job: &str) -> prometheus::Result<Series> {
        let registry = Registry::new_custom(
            None,
            Some([("streamforge_job".to_string(), job.to_string())].into()),
        )?;
        let mut counters: Vec<CounterSource> = Vec::new();
        let mut counter = |name: &str,
                           help: &str,
                           f: Box<dyn Fn(&JobCounters) -> u64 + Send>|
         -> prometheus::Result<()> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            counters.push((c, f));
            Ok(())
        };
        let r = Ordering::Relaxed;
        counter(
            "streamforge_source_records_total",
            "Records read by the sources (all partitions of this process).",
            Box::new(move |c| c.source.records_total.load(r)),
        )?;
        counter(
            "streamforge_dead_letters_total",
            "Malformed records sent to the dead-letter output.",
            Box::new(move |c| c.dead_letters_total.load(r)),
        )?;
        counter(
            "streamforge_late_records_total",
            "Records too late for all their windows (side output).",
            Box::new(move |c| c.late_total.load(r)),
        )?;
        counter(
            "streamforge_window_rows_total",
            "Aggregate rows emitted by the window operator.",
            Box::new(move |c| c.rows_total.load(r)),
        )?;
        counter(
            "streamforge_kafka_sink_delivered_total",
            "Records acknowledged by Kafka sinks.",
            Box::new(move |c| c.kafka_sink.delivered_total.load(r)),
        )?;
        counter(
            "streamforge_kafka_sink_errors_total",
            "Kafka delivery failures (retried).",
            Box::new(move |c| c.kafka_sink.delivery_errors_total.load(r)),
        )?;
        counter(
            "streamforge_clickhouse_sink_rows_total",
            "Rows written to ClickHouse.",
            Box::new(move |c| c.clickhouse_sink.rows_total.load(r)),
        )?;
        counter(
            "streamforge_postgres_sink_rows_total",
            "Rows written to PostgreSQL.",
            Box::new(move |c| c.postgres_sink.rows_total.load(r)),
        )?;
        counter(
            "streamforge_database_sink_retries_total",
            "Database writes retried (ClickHouse and PostgreSQL).",
            Box::new(move |c| {
                c.clickhouse_sink.retries_total.load(r) + c.postgres_sink.retries_total.load(r)
            }),
        )?;
        counter(
            "streamforge_database_sink_batch_microseconds_total",
            "Time spent writing database batches, µs (divide by batches for the mean latency).",
            Box::new(move |c| {
                c.clickhouse_sink.batch_micros_total.load(r)
                    + c.postgres_sink.batch_micros_total.load(r)
            }),
        )?;
        counter(
            "streamforge_database_sink_batches_total",
            "Database batches written.",
            Box::new(move |c| {
                c.clickhouse_sink.batches_total.load(r) + c.postgres_sink.batches_total.load(r)
            }),
        )?;
        counter(
            "streamforge_webhook_retries_total",
            "Webhook requests retried.",
            Box::new(move |c| c.webhook.retries_total.load(r)),
        )?;
        counter(
            "streamforge_windows_evaluated_total",
            "Closed windows evaluated against alarm rules.",
            Box::new(move |c| c.alerts.evaluated_total.load(r)),
        )?;
        counter(
            "streamforge_alerts_suppressed_total",
            "Alerts dropped entirely by convergence.",
            Box::new(move |c| c.alerts.suppressed_total.load(r)),
        )?;
        counter(
            "streamforge_rules_published_total",
            "Rule updates published by the hourly publisher.",
            Box::new(move |c| c.rules_published_total.load(r)),
        )?;
        let op_in = IntCounterVec::new(
            Opts::new(
                "streamforge_operator_records_in_total",
                "Records received, by operator and worker.",
            ),
            &["operator", "worker"],
        )?;
        registry.register(Box::new(op_in.clone()))?;
        let op_out = IntCounterVec::new(
            Opts::new(
                "streamforge_operator_records_out_total",
                "Records emitted, by operator and worker.",
            ),
            &["operator", "worker"],
        )?;
        registry.register(Box::new(op_out.clone()))?;
        let op_state = prometheus::IntGaugeVec::new(
            Opts::new(
                "streamforge_operator_state_entries",
                "Keyed-state entries (open window × key accumulators; convergence keys), by operator and worker.",
            ),
            &["operator", "worker"],
        )?;
        registry.register(Box::new(op_state.clone()))?;
        let throttled = prometheus::CounterVec::new(
            Opts::new(
                "streamforge_source_throttled_seconds_total",
                "Time a source had a partition paused by flow control, by source and worker.",
            ),
            &["operator", "worker"],
        )?;
        registry.register(Box::new(throttled.clone()))?;
        let paused = prometheus::IntGaugeVec::new(
            Opts::new(
                "streamforge_source_paused_partitions",
                "Partitions paused by flow control now, by source and worker.",
            ),
            &["operator", "worker"],
        )?;
        registry.register(Box::new(paused.clone()))?;
        let alerts = IntCounterVec::new(
            Opts::new("streamforge_alerts_total", "Alerts emitted, by level."),
            &["level"],
        )?;
        registry.register(Box::new(alerts.clone()))?;
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let watermark = gauge(
            "streamforge_source_watermark_ms",
            "Highest source watermark of this process, ms since the Unix epoch.",
        )?;
        let watermark_lag = gauge(
            "streamforge_source_watermark_lag_ms",
            "Wall clock minus the source watermark, ms (large when replaying old data).",
        )?;
        let checkpoints = IntCounter::new(
            "streamforge_checkpoints_completed_total",
            "Checkpoints completed by this run (process 0).",
        )?;
        registry.register(Box::new(checkpoints.clone()))?;
        let checkpoint_id = gauge(
            "streamforge_checkpoint_last_id",
            "Id of the last checkpoint.",
        )?;
        let checkpoint_bytes = gauge(
            "streamforge_checkpoint_last_bytes",
            "Size of the last checkpoint, bytes.",
        )?;
        let fgauge = |name: &str, help: &str| -> prometheus::Result<prometheus::Gauge> {
            let g = prometheus::Gauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let checkpoint_duration = fgauge(
            "streamforge_checkpoint_last_duration_seconds",
            "Duration of the last checkpoint: epoch boundary to manifest on disk.",
        )?;
        let checkpoint_age = fgauge(
            "streamforge_checkpoint_age_seconds",
            "Time since the last checkpoint completed.",
        )?;
        Ok(Series {
            registry,
            op_in,
            op_out,
            op_state,
            throttled,
            paused,
            counters,
            alerts,
            watermark,
            watermark_lag,
            checkpoints,
            checkpoint_id,
            checkpoint_bytes,
            checkpoint_duration,
            checkpoint_age,
        })
    }

    fn update(&self, c: &JobCounters, ckpt: Option<&CheckpointContext>) {
        for (op, worker, m) in streamforge_dataflow::metrics::snapshot() {
            let w = worker.to_string();
            set_counter(
                &self.op_in.with_label_values(&[&op, &w]),
                m.records_in.load(Ordering::Relaxed),
            );
            set_counter(
                &self.op_out.with_label_values(&[&op, &w]),
                m.records_out.load(Ordering::Relaxed),
            );
            self.op_state
                .with_label_values(&[&op, &w])
                .set(m.state_entries.load(Ordering::Relaxed));
            if m.is_source.load(Ordering::Relaxed) {
                let c = self.throttled.with_label_values(&[&op, &w]);
                let s = m.throttled_ns.load(Ordering::Relaxed) as f64 / 1e9;
                c.inc_by((s - c.get()).max(0.0));
                self.paused
                    .with_label_values(&[&op, &w])
                    .set(m.paused_partitions.load(Ordering::Relaxed));
            }
        }
        for (counter, read) in &self.counters {
            set_counter(counter, read(c));
        }
        for (i, level) in ["LOW", "MID", "HIGH"].iter().enumerate() {
            set_counter(
                &self.alerts.with_label_values(&[level]),
                c.alerts.alerts_total[i].load(Ordering::Relaxed),
            );
        }
        let w = c.source.watermark_ms.load(Ordering::Relaxed);
        if w > 0 {
            self.watermark.set(w as i64);
            self.watermark_lag.set(now_ms() as i64 - w as i64);
        }
        if let Some(ctx) = ckpt {
            let s = &ctx.stats;
            set_counter(&self.checkpoints, s.completed_total.load(Ordering::Relaxed));
            self.checkpoint_id
                .set(s.last_id.load(Ordering::Relaxed) as i64);
            self.checkpoint_bytes
                .set(s.last_bytes.load(Ordering::Relaxed) as i64);
            self.checkpoint_duration
                .set(s.last_duration_us.load(Ordering::Relaxed) as f64 / 1e6);
            let at = s.last_unix_ms.load(Ordering::Relaxed);
            if at > 0 {
                self.checkpoint_age
                    .set(now_ms().saturating_sub(at) as f64 / 1e3);
            }
        }
    }

    fn text(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("metrics encode");
        String::from_utf8(buf).expect("utf-8 metrics")
    }
}

/// Records in and out per (operator, worker) over the last
/// [`RATE_WINDOW`], from counter samples (Flink's per-operator
/// `numRecordsInPerSecond`, not a mean since the start).
#[derive(Default)]
struct RecentRates {
    samples: std::collections::VecDeque<(Instant, OperatorCounts)>,
}

/// Records in and out per (operator, worker).
type OperatorCounts = std::collections::BTreeMap<(String, usize), (u64, u64)>;

/// Records in and out per second per (operator, worker).
type OperatorRates = std::collections::BTreeMap<(String, usize), (f64, f64)>;

/// The span of the recent rates.
const RATE_WINDOW: Duration = Duration::from_secs(10);

impl RecentRates {
    /// Adds a sample taken at `at`; keeps the newest sample at least
    /// [`RATE_WINDOW`] old and everything after it.
    fn push(&mut self, at: Instant, counts: OperatorCounts) {
        self.samples.push_back((at, counts));
        while self.samples.len() > 2 && self.samples[1].0 + RATE_WINDOW <= at {
            self.samples.pop_front();
        }
    }

    /// Samples the operator counters now (at most every 250 ms).
    fn sample(&mut self) {
        let now = Instant::now();
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now.duration_since(*t) < Duration::from_millis(250))
        {
            return;
        }
        let counts = streamforge_dataflow::metrics::snapshot()
            .into_iter()
            .map(|(op, w, m)| {
                let r = Ordering::Relaxed;
                ((op, w), (m.records_in.load(r), m.records_out.load(r)))
            })
            .collect();
        self.push(now, counts);
    }

    /// Per (operator, worker): records in and out per second between the
    /// oldest kept sample and the newest (empty before two samples).
    fn rates(&self) -> OperatorRates {
        let (Some((t0, first)), Some((t1, last))) = (self.samples.front(), self.samples.back())
        else {
            return Default::default();
        };
        let dt = t1.duration_since(*t0).as_secs_f64();
        if dt <= 0.0 {
            return Default::default();
        }
        last.iter()
            .map(|(k, (i, o))| {
                let (i0, o0) = first.get(k).copied().unwrap_or((0, 0));
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                (k.clone(), (rate(*i, i0), rate(*o, o0)))
            })
            .collect()
    }
}

/// The running metrics server; stops when dropped (after the linger time).
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    linger: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The bound address (port 0 in the config picks a free one).
    pub address: SocketAddr,
}

impl MetricsServer {
    /// Starts serving `/metrics`, `/` and `/status.json`.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub fn start(
        cfg: &MetricsConfig,
        counters: Arc<JobCounters>,
        checkpoints: Option<Arc<CheckpointContext>>,
        info: Arc<StatusInfo>,
    ) -> Result<MetricsServer, Error> {
        let server = tiny_http::Server::http(cfg.address)
            .map_err(|e| Error::Invalid(format!("metrics address {}: {e}", cfg.address)))?;
        let address = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::Invalid("metrics: not an IP address".into()))?;
        let series =
            Series::new(&info.job).map_err(|e| Error::Invalid(format!("metrics registry: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                let mut recent = RecentRates::default();
                while !s.load(Ordering::Relaxed) {
                    recent.sample();
                    let Ok(Some(req)) = server.recv_timeout(Duration::from_millis(100)) else {
                        continue;
                    };
                    let rates = recent.rates();
                    series.update(&counters, checkpoints.as_deref());
                    let (body, kind) = match req.url() {
                        "/metrics" => (series.text(), "text/plain; version=0.0.4"),
                        "/status.json" => (
                            status_json(&counters, checkpoints.as_deref(), &info, started, &rates)
                                .to_string(),
                            "application/json",
                        ),
                        "/" | "/index.html" => (
                            status_html(&counters, checkpoints.as_deref(), &info, started, &rates),
                            "text/html; charset=utf-8",
                        ),
                        _ => {
                            let _ = req.respond(tiny_http::Response::empty(404));
                            continue;
                        }
                    };
                    let header =
                        tiny_http::Header::from_bytes("Content-Type", kind).expect("header");
                    let _ = req.respond(tiny_http::Response::from_string(body).with_header(header));
                }
            })
            .map_err(|e| Error::Invalid(format!("metrics thread: {e}")))?;
        tracing::info!(%address, "metrics and status page");
        Ok(MetricsServer {
            stop,
            linger: cfg.linger.unwrap_or_default(),
            thread: Some(thread),
            address,
        })
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        std::thread::sleep(self.linger);
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status_json(
    c: &JobCounters,
    ckpt: Option<&CheckpointContext>,
    info: &StatusInfo,
    started: Instant,
    rates: &OperatorRates,
) -> serde_json::Value {
    let r = Ordering::Relaxed;
    let up = started.elapsed().as_secs_f64();
    let stage = |name: &str, n: u64| serde_json::json!({"stage": name, "total": n, "per_second": n as f64 / up.max(1e-9)});
    let w = c.source.watermark_ms.load(r);
    // Flow control per source and worker (whether it holds partitions back
    // now, and for how long it has in total).
    let sources: Vec<serde_json::Value> = streamforge_dataflow::metrics::snapshot()
        .into_iter()
        .filter(|(_, _, m)| m.is_source.load(r))
        .map(|(op, worker, m)| {
            serde_json::json!({
                "source": op,
                "worker": worker,
                "records_out": m.records_out.load(r),
                "paused_partitions": m.paused_partitions.load(r),
                "throttled_seconds": m.throttled_ns.load(r) as f64 / 1e9,
            })
        })
        .collect();
    let operators: Vec<serde_json::Value> = rates
        .iter()
        .map(|((op, worker), (i, o))| {
            serde_json::json!({
                "operator": op,
                "worker": worker,
                "records_in_per_second": i,
                "records_out_per_second": o,
            })
        })
        .collect();
    serde_json::json!({
        "job": info.job,
        "operators": operators,
        "rate_window_seconds": RATE_WINDOW.as_secs(),
        "uptime_seconds": up,
        "graph": info.edges.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>(),
        "stages": [
            stage("source", c.source.records_total.load(r)),
            stage("window", c.rows_total.load(r)),
            stage("late", c.late_total.load(r)),
            stage("dead-letter", c.dead_letters_total.load(r)),
            stage("alerts", c.alerts.alerts_total.iter().map(|a| a.load(r)).sum()),
            stage("rules-published", c.rules_published_total.load(r)),
        ],
        "sources": sources,
        "watermark_ms": w,
        "watermark": crate::operator_metrics::format_utc(w),
        "watermark_lag_ms": now_ms().saturating_sub(w),
        "checkpoint": ckpt.map(|x| serde_json::json!({
            "completed": x.stats.completed_total.load(r),
            "last_id": x.stats.last_id.load(r),
            "last_bytes": x.stats.last_bytes.load(r),
            "last_duration_ms": x.stats.last_duration_us.load(r) as f64 / 1e3,
            "age_seconds": now_ms().saturating_sub(x.stats.last_unix_ms.load(r)) as f64 / 1e3,
        })),
        "alerts_by_level": {
            "LOW": c.alerts.alerts_total[0].load(r),
            "MID": c.alerts.alerts_total[1].load(r),
            "HIGH": c.alerts.alerts_total[2].load(r),
        },
        "recent_alerts": c.recent_alerts.lock().expect("alerts lock").iter()
            .filter_map(|a| serde_json::from_str::<serde_json::Value>(a).ok()).collect::<Vec<_>>(),
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn status_html(
    c: &JobCounters,
    ckpt: Option<&CheckpointContext>,
    info: &StatusInfo,
    started: Instant,
    rates: &OperatorRates,
) -> String {
    let s = status_json(c, ckpt, info, started, rates);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>streamforge · {job}</title><style>body{{font:14px sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}}\
         th{{background:#eef}}td:first-child,th:first-child{{text-align:left}}.graph span{{display:inline-block;border:1px solid #669;\
         border-radius:4px;padding:.3em .6em;margin:.2em;background:#f4f4ff}}</style></head><body>\
         <h1 id=\"job\">{job}</h1><p>up {up:.1} s · refreshes every 2 s · <a href=\"/metrics\">/metrics</a> · <a href=\"/status.json\">/status.json</a></p>",
        job = esc(&info.job),
        up = s["uptime_seconds"].as_f64().unwrap_or(0.0),
    );
    h.push_str("<h2>Job graph</h2><div class=\"graph\" id=\"graph\">");
    for (a, b) in &info.edges {
        let _ = write!(
            h,
            "<div><span>{}</span> → <span>{}</span></div>",
            esc(a),
            esc(b)
        );
    }
    h.push_str("</div><h2>Stages</h2><table id=\"stages\"><tr><th>stage</th><th>total</th><th>per second (mean since start)</th></tr>");
    for st in s["stages"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
            st["stage"].as_str().unwrap_or(""),
            st["total"],
            st["per_second"].as_f64().unwrap_or(0.0)
        );
    }
    let _ = write!(
        h,
        "</table><h2>Watermark</h2><table id=\"watermark\"><tr><th>watermark (UTC)</th><th>lag</th></tr>\
         <tr><td>{}</td><td>{:.1} s</td></tr></table>",
        s["watermark"].as_str().unwrap_or(""),
        s["watermark_lag_ms"].as_u64().unwrap_or(0) as f64 / 1e3
    );
    h.push_str(
        "<h2>Operators</h2><table id=\"operators\"><tr><th>operator</th><th>worker</th>\
         <th>records in/s (last 10 s)</th><th>records out/s (last 10 s)</th></tr>",
    );
    for op in s["operators"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td></tr>",
            esc(op["operator"].as_str().unwrap_or("")),
            op["worker"],
            op["records_in_per_second"].as_f64().unwrap_or(0.0),
            op["records_out_per_second"].as_f64().unwrap_or(0.0)
        );
    }
    h.push_str("</table>");
    h.push_str(
        "<h2>Flow control</h2><table id=\"flow-control\"><tr><th>source</th><th>worker</th>\
         <th>records</th><th>paused partitions</th><th>throttled s</th></tr>",
    );
    for src in s["sources"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
            esc(src["source"].as_str().unwrap_or("")),
            src["worker"],
            src["records_out"],
            src["paused_partitions"],
            src["throttled_seconds"].as_f64().unwrap_or(0.0)
        );
    }
    h.push_str("</table><h2>Checkpoints</h2>");
    match s["checkpoint"].as_object() {
        Some(k) => {
            let _ = write!(
                h,
                "<table id=\"checkpoints\"><tr><th>completed</th><th>last id</th><th>bytes</th><th>duration ms</th><th>age s</th></tr>\
                 <tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr></table>",
                k["completed"], k["last_id"], k["last_bytes"],
                k["last_duration_ms"].as_f64().unwrap_or(0.0),
                k["age_seconds"].as_f64().unwrap_or(0.0)
            );
        }
        None => h.push_str("<p>no [checkpoint] section</p>"),
    }
    let by = &s["alerts_by_level"];
    let _ = write!(
        h,
        "<h2>Alerts</h2><table id=\"alert-levels\"><tr><th>LOW</th><th>MID</th><th>HIGH</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td></tr></table><table id=\"recent-alerts\">\
         <tr><th>window start</th><th>level</th><th>service</th><th>operator</th><th>rule version</th></tr>",
        by["LOW"], by["MID"], by["HIGH"]
    );
    for a in s["recent_alerts"].as_array().into_iter().flatten().rev() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(a["window_start"].as_str().unwrap_or("")),
            esc(a["level"].as_str().unwrap_or("")),
            esc(a["service"].as_str().unwrap_or("")),
            esc(a["operator_name"].as_str().unwrap_or("")),
            a["rule_version"]
        );
    }
    h.push_str("</table></body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_rates_cover_the_last_ten_seconds() {
        let t0 = Instant::now();
        let counts = |n: u64| -> OperatorCounts { [(("w".to_string(), 0), (n, 2 * n))].into() };
        let mut r = RecentRates::default();
        assert!(r.rates().is_empty());
        // 1 000 records/s for 20 s, then 100/s for 10 s.
        for s in 0..=30u64 {
            let n = if s <= 20 {
                1_000 * s
            } else {
                20_000 + 100 * (s - 20)
            };
            r.push(t0 + Duration::from_secs(s), counts(n));
        }
        let (i, o) = r.rates()[&("w".to_string(), 0)];
        assert!(
            (i - 100.0).abs() < 1e-9,
            "the last 10 s, not the mean (~700/s): {i}"
        );
        assert!((o - 200.0).abs() < 1e-9);
        assert!(r.samples.len() <= 12);
    }
}
