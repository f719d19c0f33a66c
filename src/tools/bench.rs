//! `streamforge bench`: named, reproducible workloads over a sweep of worker
//! counts, each run as a child `streamforge run` (so peak RSS is per run):
//! throughput (events/s, MB/s of input), latency percentiles (HdrHistogram),
//! peak RSS; medians of repeats; JSON, Markdown and SVG plots.
//!
//! Workloads (generated spans with a fixed seed, so runs are comparable):
//! * `main-memory` — the main job on the in-memory span generator (60 s windows);
//! * `main-jsonl` — the same spans read from a generated JSONL file;
//! * `sliding` — 60 s windows sliding every 10 s;
//! * `alerting` — the main job with in-job thresholds, rules and alerts (26 h of
//!   event time, so the second day gets rules);
//! * `checkpointed` — `main-memory` with 200 ms checkpoints (its ratio to
//!   `main-memory` is the checkpoint overhead);
//! * `latency` — a throttled run whose event time is the wall clock: the
//!   latency of a row is `emitted − window end` (wall ms; includes the 1 s
//!   out-of-orderness bound), and of an alert likewise;
//! * `kafka` — generated spans produced into a topic, then read by the main
//!   job (only with `--brokers` or `STREAMFORGE_KAFKA`).
//!
//! `--baseline CMD` runs CMD (`{input}` is the JSONL input file, also in
//! `$INPUT`) and the `main-jsonl` job on the same file in alternation, and
//! reports the wall-time ratio per pair.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::Error;

use crate::job::latency::{now_ms, LATENCY_OUT};

/// What `streamforge bench` is asked to do.
#[derive(Clone, Debug)]
pub struct BenchArgs {
    /// Small sizes, one repeat, no warm-up: under 2 minutes here.
    pub quick: bool,
    /// Output directory.
    pub out: PathBuf,
    /// Workloads (empty: all that apply).
    pub workloads: Vec<String>,
    /// Worker counts to sweep (per process).
    pub workers: Vec<usize>,
    /// Process counts to sweep (> 1: a local cluster via `streamforge cluster`;
    /// not for the latency workload).
    pub processes: Vec<usize>,
    /// Repeats per point (the median is reported).
    pub repeats: usize,
    /// Spans per throughput run (default by mode).
    pub events: Option<u64>,
    /// A command to compare with on the same input file.
    pub baseline: Option<String>,
    /// Kafka brokers for the `kafka` workload.
    pub brokers: Option<String>,
    /// Flow control on (the default) or off in every workload.
    pub flow_control: bool,
}

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// Workload name.
    pub workload: String,
    /// Worker threads per process.
    pub workers: usize,
    /// Processes.
    pub processes: usize,
    /// Repeat index.
    pub repeat: usize,
    /// Spans read.
    pub events: u64,
    /// Rows emitted.
    pub rows: u64,
    /// Dataflow seconds (the job's own `elapsed`).
    pub seconds: f64,
    /// Spans per second.
    pub events_per_second: f64,
    /// Input MB per second (file size, or the JSONL size of the same spans).
    pub mb_per_second: f64,
    /// Peak resident memory of the run, MB.
    pub peak_rss_mb: f64,
    /// Latency report (latency workload).
    pub latency: Option<serde_json::Value>,
}

struct Workload {
    name: &'static str,
    /// Spans of one run.
    #[allow(dead_code)]
    events: u64,
    toml: String,
    /// Bytes of input per span (MB/s).
    bytes_per_event: f64,
    latency: bool,
    /// Throttle of the whole job, spans/s (split over the workers).
    rate_total: Option<u64>,
}

fn generator(events: u64, hours: f64, extra: &str) -> String {
    let rate = events as f64 / (hours * 3600.0);
    format!(
        "[source]\nkind = \"generator\"\nevents = {events}\npartitions = 2\nservices = 20\n\
         operators-per-service = 20\nevents-per-second = {rate}\nseed = 42\n{extra}"
    )
}

const WINDOW: &str =
    "[watermark]\nout-of-orderness = \"5s\"\n[window]\nkind = \"tumbling\"\nsize = \"60s\"\n";

fn workloads(args: &BenchArgs, dir: &Path, bin: &Path) -> Result<Vec<Workload>, Error> {
    let n = args
        .events
        .unwrap_or(if args.quick { 1_000_000 } else { 10_000_000 });
    let spans = dir.join("input/spans.jsonl");
    if !spans.exists() {
        std::fs::create_dir_all(spans.parent().expect("dir"))?;
        let status = Command::new(bin)
            .args([
                "generate",
                "--events",
                &n.to_string(),
                "--rate",
                "2000",
                "--out",
            ])
            .arg(&spans)
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(Error::Invalid("generating the bench input failed".into()));
        }
    }
    let bytes_per_event = std::fs::metadata(&spans)?.len() as f64 / n as f64;
    let mapping = "[source.mapping]\nevent-time = { field = \"ts\", unit = \"ms\" }\n\
                   service = { field = \"service\" }\noperator-name = { field = \"operator\" }\n\
                   duration = { field = \"duration_ms\", unit = \"ms\" }\nis-error = { field = \"is_error\" }\n";
    let mut w = vec![
        Workload {
            name: "main-memory",
            events: n,
            toml: format!("name = \"bench-main-memory\"\n{}{WINDOW}", generator(n, n as f64 / 2000.0 / 3600.0, "")),
            bytes_per_event,
            latency: false,
            rate_total: None,
        },
        Workload {
            name: "main-jsonl",
            events: n,
            toml: format!(
                "name = \"bench-main-jsonl\"\n[source]\nkind = \"file\"\npaths = [{:?}]\n{mapping}{WINDOW}",
                spans
            ),
            bytes_per_event,
            latency: false,
            rate_total: None,
        },
        Workload {
            name: "sliding",
            events: n,
            toml: format!(
                "name = \"bench-sliding\"\n{}[watermark]\nout-of-orderness = \"5s\"\n[window]\n\
                 kind = \"sliding\"\nsize = \"60s\"\nslide = \"10s\"\n",
                generator(n, n as f64 / 2000.0 / 3600.0, "")
            ),
            bytes_per_event,
            latency: false,
            rate_total: None,
        },
        Workload {
            name: "alerting",
            events: n / 2,
            toml: format!(
                "name = \"bench-alerting\"\n{}{WINDOW}[alerting]\n[alerting.rules]\nkind = \"generated\"\n",
                generator(n / 2, 26.0, "")
            ),
            bytes_per_event,
            latency: false,
            rate_total: None,
        },
        Workload {
            name: "checkpointed",
            events: n,
            toml: format!(
                "name = \"bench-checkpointed\"\n[checkpoint]\ndir = {:?}\ninterval = \"200ms\"\n{}{WINDOW}",
                dir.join("checkpoints"),
                generator(n, n as f64 / 2000.0 / 3600.0, "")
            ),
            bytes_per_event,
            latency: false,
            rate_total: None,
        },
    ];
    // Latency: event time = wall clock, throttled to `rate` spans/s.
    let rate: u64 = if args.quick { 20_000 } else { 50_000 };
    let secs: u64 = if args.quick { 6 } else { 20 };
    w.push(Workload {
        name: "latency",
        events: rate * secs,
        toml: format!(
            "name = \"bench-latency\"\nrate-limit = RATE_PER_WORKER\n{}[watermark]\nout-of-orderness = \"1s\"\n\
             [window]\nkind = \"tumbling\"\nsize = \"1s\"\n[alerting]\nconvergence = \"0s\"\n\
             [alerting.rules]\nkind = \"file\"\npath = {:?}\n",
            generator(
                rate * secs,
                secs as f64 / 3600.0,
                "start-ms = START\ndiurnal = false\n"
            ),
            dir.join("input/latency-rules.jsonl"),
        ),
        bytes_per_event,
        latency: true,
        rate_total: Some(rate),
    });
    let wants_kafka = args.workloads.is_empty() || args.workloads.iter().any(|w| w == "kafka");
    let brokers = args
        .brokers
        .clone()
        .or_else(|| std::env::var("STREAMFORGE_KAFKA").ok())
        .filter(|_| wants_kafka);
    if let Some(brokers) = brokers {
        let topic = format!("bench-{}", now_ms());
        let status = Command::new(bin)
            .args([
                "produce",
                "--topic",
                &topic,
                "--brokers",
                &brokers,
                "--partitions",
                "2",
            ])
            .args(["--generate", &n.to_string(), "--quiet"])
            .status()?;
        if status.success() {
            w.push(Workload {
                name: "kafka",
                events: n,
                toml: format!(
                    "name = \"bench-kafka\"\n[source]\nkind = \"kafka\"\ntopic = {topic:?}\nformat = \"jsonl\"\nstart = \"earliest\"\n\
                     bounded = true\n{mapping}[source.properties]\n\"bootstrap.servers\" = {brokers:?}\n{WINDOW}"
                ),
                bytes_per_event,
                latency: false,
                rate_total: None,
            });
        } else {
            eprintln!("bench: producing to {brokers} failed; skipping the kafka workload");
        }
    }
    if !args.workloads.is_empty() {
        w.retain(|x| args.workloads.iter().any(|n| n == x.name));
    }
    Ok(w)
}

/// Peak RSS (VmHWM) of a running child, MB.
fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn number_after(line: &str, label: &str) -> Option<f64> {
    let at = line.find(&format!("{label} "))?;
    line[at + label.len() + 1..]
        .split_whitespace()
        .next()?
        .trim_end_matches('s')
        .parse()
        .ok()
}

fn run_once(
    bin: &Path,
    job: &Path,
    workers: usize,
    latency_out: Option<&Path>,
) -> Result<(String, f64), Error> {
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg(job).args(["-w", &workers.to_string()]);
    if let Some(p) = latency_out {
        cmd.env(LATENCY_OUT, p);
    }
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id();
    let mut peak = 0.0f64;
    while child.try_wait()?.is_none() {
        peak = peak.max(peak_rss_mb(pid).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "bench run of {} failed: {}{}",
            job.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok((text, peak))
}

/// Child pids of `pid` (all its threads' children).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Runs `job` as a local cluster of `processes` × `workers`; the summed
/// summary (events, rows; the longest elapsed) and the summed peak RSS.
fn run_cluster_once(
    bin: &Path,
    dir: &Path,
    job: &Path,
    processes: usize,
    workers: usize,
) -> Result<(String, f64), Error> {
    let hosts = dir.join(format!("jobs/hosts-{processes}"));
    let lines: Vec<String> = (0..processes)
        .map(|_| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            Ok(format!("127.0.0.1:{port}"))
        })
        .collect::<Result<_, std::io::Error>>()?;
    std::fs::write(&hosts, lines.join("\n") + "\n")?;
    let mut child = Command::new(bin)
        .arg("cluster")
        .arg(job)
        .arg("-h")
        .arg(&hosts)
        .args(["-w", &workers.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut peaks: BTreeMap<u32, f64> = BTreeMap::new();
    while child.try_wait()?.is_none() {
        for c in children(pid) {
            let p = peak_rss_mb(c).unwrap_or(0.0);
            let e = peaks.entry(c).or_default();
            *e = e.max(p);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(Error::Invalid(format!(
            "bench cluster run of {} failed: {}{}",
            job.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let (mut events, mut rows, mut elapsed) = (0.0, 0.0, 0.0f64);
    for line in text.lines().filter(|l| l.contains("events ")) {
        events += number_after(line, "events").unwrap_or(0.0);
        rows += number_after(line, "rows").unwrap_or(0.0);
        elapsed = elapsed.max(number_after(line, "elapsed").unwrap_or(0.0));
    }
    let line = format!("cluster: events {events}  rows {rows}  elapsed {elapsed}s");
    Ok((line, peaks.values().sum()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Runs the benchmark and writes `results.json`, `results.md`,
/// `throughput.svg` and `latency.svg` into `args.out`.
///
/// # Errors
/// A run failed, or the output cannot be written.
pub fn run(args: &BenchArgs) -> Result<Vec<Run>, Error> {
    // Job files resolve paths against their own directory: use absolute ones.
    let args = &BenchArgs {
        out: std::path::absolute(&args.out)?,
        ..args.clone()
    };
    let bin = std::env::current_exe()?;
    std::fs::create_dir_all(args.out.join("jobs"))?;
    let started = Instant::now();
    let loads = workloads(args, &args.out, &bin)?;
    // Rules for the latency workload: every key alerts when its mean is above 0.
    write_latency_rules(&args.out.join("input/latency-rules.jsonl"))?;
    let repeats = args.repeats.max(1);
    let warmup = usize::from(!args.quick);
    let processes: Vec<usize> = if args.processes.is_empty() {
        vec![1]
    } else {
        args.processes.clone()
    };
    let points: Vec<(&Workload, usize, usize)> = loads
        .iter()
        .flat_map(|l| {
            processes
                .iter()
                .filter(move |p| **p == 1 || !l.latency)
                .flat_map(move |p| args.workers.iter().map(move |w| (l, *p, *w)))
        })
        .collect();
    let total = (points.len() * (repeats + warmup)) as u64;
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .expect("template"),
    );
    let mut runs = Vec::new();
    for &(load, procs, workers) in &points {
        {
            for repeat in 0..repeats + warmup {
                bar.set_message(format!("{} -n {procs} -w {workers}", load.name));
                let per_worker = load.rate_total.map_or(0, |r| r / workers.max(1) as u64 + 1);
                let mut toml = load
                    .toml
                    .replace("RATE_PER_WORKER", &per_worker.to_string())
                    .replace("START", &now_ms().to_string());
                if !args.flow_control {
                    toml.push_str("\n[flow-control]\nenabled = false\n");
                }
                let job = args.out.join(format!("jobs/{}.toml", load.name));
                std::fs::write(&job, &toml)?;
                let lat = load.latency.then(|| {
                    args.out
                        .join(format!("jobs/{}-w{workers}-latency.json", load.name))
                });
                let (text, peak) = if procs == 1 {
                    run_once(&bin, &job, workers, lat.as_deref())?
                } else {
                    run_cluster_once(&bin, &args.out, &job, procs, workers)?
                };
                bar.inc(1);
                if repeat < warmup {
                    continue;
                }
                let line = text
                    .lines()
                    .find(|l| l.contains("events "))
                    .unwrap_or_default();
                let events = number_after(line, "events").unwrap_or(0.0);
                let seconds = number_after(line, "elapsed").unwrap_or(0.0);
                let latency = match &lat {
                    Some(p) => Some(
                        serde_json::from_str(&std::fs::read_to_string(p)?)
                            .map_err(|e| Error::Invalid(format!("latency report: {e}")))?,
                    ),
                    None => None,
                };
                runs.push(Run {
                    workload: load.name.into(),
                    workers,
                    processes: procs,
                    repeat: repeat - warmup,
                    events: events as u64,
                    rows: number_after(line, "rows").unwrap_or(0.0) as u64,
                    seconds,
                    events_per_second: events / seconds.max(1e-9),
                    mb_per_second: events * load.bytes_per_event / 1e6 / seconds.max(1e-9),
                    peak_rss_mb: peak,
                    latency,
                });
            }
        }
    }
    bar.finish_and_clear();
    let baseline = match &args.baseline {
        Some(cmd) => Some(run_baseline(args, &bin, cmd, repeats)?),
        None => None,
    };
    write_outputs(args, &runs, baseline.as_ref(), started.elapsed())?;
    Ok(runs)
}

fn write_latency_rules(path: &Path) -> Result<(), Error> {
    let mut text = String::new();
    let g = streamforge_sources::GeneratorConfig {
        services: 20,
        operators_per_service: 20,
        ..streamforge_sources::GeneratorConfig::with_events(0)
    };
    for i in 0..g.keys() {
        let (s, op) = g.key_names(i);
        {
            for hour in 0..24u8 {
                let mut rule = serde_json::json!({
                    "hour_of_day": hour, "service": s, "operator_name": op, "operator_class": "span",
                    "avg_duration_low": 0.0, "avg_duration_mid": 1e18, "avg_duration_high": 1e18,
                    "max_duration_low": 1e18, "max_duration_mid": 1e18, "max_duration_high": 1e18,
                    "success_rate_low": 0.0, "success_rate_mid": 0.0, "success_rate_high": 0.0,
                    "traffic_volume_low": 1e18, "traffic_volume_mid": 1e18, "traffic_volume_high": 1e18,
                    "alarm_template": "{level} {metric}", "analysis_days": 7, "sample_count": 1,
                    "generated_time": "", "last_updated": "", "version": 0});
                rule["hour_of_day"] = hour.into();
                text.push_str(&rule.to_string());
                text.push('\n');
            }
        }
    }
    std::fs::write(path, text)?;
    Ok(())
}

fn run_baseline(
    args: &BenchArgs,
    bin: &Path,
    cmd: &str,
    repeats: usize,
) -> Result<serde_json::Value, Error> {
    let input = args.out.join("input/spans.jsonl");
    let job = args.out.join("jobs/main-jsonl.toml");
    let loads = workloads(
        &BenchArgs {
            workloads: vec!["main-jsonl".into()],
            brokers: None,
            ..args.clone()
        },
        &args.out,
        bin,
    )?;
    std::fs::write(&job, &loads[0].toml)?;
    let shell = cmd.replace("{input}", &input.display().to_string());
    let mut pairs = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        run_once(bin, &job, 1, None)?;
        let ours = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let status = Command::new("sh")
            .args(["-c", &shell])
            .env("INPUT", &input)
            .stdout(Stdio::null())
            .status()?;
        let theirs = t.elapsed().as_secs_f64();
        if !status.success() {
            return Err(Error::Invalid(format!("baseline command failed: {shell}")));
        }
        pairs.push(serde_json::json!({"streamforge_s": ours, "baseline_s": theirs, "ratio": theirs / ours}));
    }
    let ratios: Vec<f64> = pairs.iter().filter_map(|p| p["ratio"].as_f64()).collect();
    Ok(
        serde_json::json!({"command": cmd, "input": input, "pairs": pairs, "median_ratio": median(ratios)}),
    )
}

fn write_outputs(
    args: &BenchArgs,
    runs: &[Run],
    baseline: Option<&serde_json::Value>,
    took: Duration,
) -> Result<(), Error> {
    // Medians per (workload, workers).
    let mut points: BTreeMap<(String, usize, usize), Vec<&Run>> = BTreeMap::new();
    for r in runs {
        points
            .entry((r.workload.clone(), r.processes, r.workers))
            .or_default()
            .push(r);
    }
    let summary: Vec<serde_json::Value> = points
        .iter()
        .map(|((w, p, n), rs)| {
            let lat = rs.iter().find_map(|r| r.latency.as_ref());
            serde_json::json!({
                "workload": w, "processes": p, "workers": n, "repeats": rs.len(),
                "events_per_second": median(rs.iter().map(|r| r.events_per_second).collect()),
                "mb_per_second": median(rs.iter().map(|r| r.mb_per_second).collect()),
                "peak_rss_mb": median(rs.iter().map(|r| r.peak_rss_mb).collect()),
                "rows": rs[0].rows,
                "row_latency_p50_ms": lat.map(|l| l["rows"]["p50_ms"].clone()),
                "row_latency_p99_ms": lat.map(|l| l["rows"]["p99_ms"].clone()),
                "alert_latency_p99_ms": lat.map(|l| l["alerts"]["p99_ms"].clone()),
            })
        })
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let json = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "quick": args.quick,
        "cores": cores,
        "seconds": took.as_secs_f64(),
        "summary": summary,
        "runs": runs,
        "baseline": baseline,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&json).expect("json"),
    )?;
    let mut md = format!(
        "Command: `{}` ({} cores, {:.0} s)\n\n| workload | processes | workers | events/s | MB/s | peak RSS MB | row latency p50 / p99 ms | alert latency p99 ms |\n|---|---:|---:|---:|---:|---:|---|---:|\n",
        json["command"].as_str().unwrap_or(""),
        cores,
        took.as_secs_f64()
    );
    let base = |w: &str| {
        summary
            .iter()
            .find(|s| s["workload"] == w && s["workers"] == 1 && s["processes"] == 1)
            .and_then(|s| s["events_per_second"].as_f64())
    };
    for s in &summary {
        let lat = match (&s["row_latency_p50_ms"], &s["row_latency_p99_ms"]) {
            (serde_json::Value::Number(a), serde_json::Value::Number(b)) => format!("{a} / {b}"),
            _ => "–".into(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.1} | {:.0} | {} | {} |\n",
            s["workload"].as_str().unwrap_or(""),
            s["processes"],
            s["workers"],
            s["events_per_second"].as_f64().unwrap_or(0.0),
            s["mb_per_second"].as_f64().unwrap_or(0.0),
            s["peak_rss_mb"].as_f64().unwrap_or(0.0),
            lat,
            match &s["alert_latency_p99_ms"] {
                serde_json::Value::Number(n) => n.to_string(),
                _ => "–".into(),
            }
        ));
    }
    if let (Some(c), Some(m)) = (base("checkpointed"), base("main-memory")) {
        md.push_str(&format!(
            "\nCheckpoint overhead (200 ms checkpoints, 1 worker): {:.1} % of main-memory throughput.\n",
            (1.0 - c / m) * 100.0
        ));
    }
    if let Some(b) = baseline {
        md.push_str(&format!(
            "\nBaseline `{}` vs main-jsonl (-w 1), wall time ratio per pair: {} (median {:.2}).\n",
            b["command"].as_str().unwrap_or(""),
            b["pairs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{:.2}", p["ratio"].as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(", "),
            b["median_ratio"].as_f64().unwrap_or(0.0)
        ));
    }
    std::fs::write(args.out.join("results.md"), md)?;
    plot_throughput(&args.out.join("throughput.svg"), &summary)?;
    plot_latency(&args.out.join("latency.svg"), runs)?;
    Ok(())
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("plot: {e}"))
}

fn plot_throughput(path: &Path, summary: &[serde_json::Value]) -> Result<(), Error> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let max_w = summary
        .iter()
        .filter_map(|s| s["workers"].as_u64())
        .max()
        .unwrap_or(1);
    let max_y = summary
        .iter()
        .filter_map(|s| s["events_per_second"].as_f64())
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("throughput vs workers", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..(max_w as f64 + 0.5), 0f64..max_y * 1.1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("workers")
        .y_desc("events/s")
        .draw()
        .map_err(plot_err)?;
    // One series per (workload, processes).
    let mut series: Vec<(String, u64)> = summary
        .iter()
        .filter_map(|s| {
            Some((
                s["workload"].as_str()?.to_string(),
                s["processes"].as_u64()?,
            ))
        })
        .collect();
    series.dedup();
    for (i, (workload, procs)) in series.iter().enumerate() {
        let name = if *procs == 1 {
            workload.clone()
        } else {
            format!("{workload} ({procs} processes)")
        };
        let pts: Vec<(f64, f64)> = summary
            .iter()
            .filter(|s| s["workload"] == workload.as_str() && s["processes"] == *procs)
            .filter_map(|s| Some((s["workers"].as_f64()?, s["events_per_second"].as_f64()?)))
            .collect();
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

fn plot_latency(path: &Path, runs: &[Run]) -> Result<(), Error> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let curves: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .filter_map(|r| {
            let l = r.latency.as_ref()?;
            let mut out = Vec::new();
            for kind in ["rows", "alerts"] {
                let pts: Vec<(f64, f64)> = l[kind]["cdf"]
                    .as_array()?
                    .iter()
                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                    .collect();
                if !pts.is_empty() {
                    out.push((format!("{kind} -w {}", r.workers), pts));
                }
            }
            Some(out)
        })
        .flatten()
        .collect();
    let max_x = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "latency CDF (window end → emitted, wall ms)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max_x * 1.05, 0f64..1.0)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("ms")
        .y_desc("fraction")
        .draw()
        .map_err(plot_err)?;
    for (i, (name, pts)) in curves.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}
