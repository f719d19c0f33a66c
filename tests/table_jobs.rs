//! Job files over a declared schema against naive models.
//!
//! * The two window queries of `examples/jobs` (TUMBLE per (service,
//!   operator); HOP with an exact distinct count per service), run by the
//!   binary with `--set` overrides over generated events with late records
//!   and bad lines, at 1, 2 and 4 workers and as a 2-process cluster.
//! * A job with a filter, computed columns, a dedup and a sliding window
//!   with first/last values and an approximate distinct count, at 1, 2, 4
//!   workers.
//! * Every bad value of the schema is dead-lettered with its column.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use streamforge::sources::GeneratorConfig;

const BIN: &str = env!("CARGO_BIN_EXE_streamforge");
const MAX_TS: u64 = 253_402_300_799_999;

/// One input line as the model reads it (`None`: must be dead-lettered).
#[derive(Clone, Debug)]
struct Ev {
    ts: u64,
    service: String,
    operator: String,
    duration_ms: i64,
    is_error: bool,
    user_id: String,
}

/// The model's reading of a line with serde_json::Value (independent of the
/// job's decoder): every field present with exactly its type.
fn read_model(line: &str) -> Option<Ev> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Ev {
        ts: v["ts"].as_u64().filter(|t| *t <= MAX_TS)?,
        service: v["service"].as_str()?.to_string(),
        operator: v["operator"].as_str()?.to_string(),
        duration_ms: v["duration_ms"].as_i64()?,
        is_error: v["is_error"].as_bool()?,
        user_id: v["user_id"].as_str()?.to_string(),
    })
}

/// Two partition files `events-<p>.jsonl` of generated events, out of order
/// by up to `disorder_ms` (the jobs' watermark allows 2 s), `late_ratio` of
/// them 70 s late, with bad lines mixed in; returns each partition's lines
/// as the model reads them.
fn write_inputs(dir: &Path, disorder_ms: u64, late_ratio: f64) -> Vec<Vec<Option<Ev>>> {
    let mut parts = Vec::new();
    for p in 0..2u64 {
        let mut g = GeneratorConfig::with_events(5_000);
        g.seed = 7 + p;
        g.events_per_second = 25.0;
        g.out_of_orderness_ms = disorder_ms;
        g.late_ratio = late_ratio;
        g.late_delay_ms = 70_000;
        g.users = 300;
        g.services = 4;
        g.operators_per_service = 3;
        let mut buf = Vec::new();
        g.write_jsonl(&mut buf).unwrap();
        let mut text = String::new();
        let mut model = Vec::new();
        for (i, line) in String::from_utf8(buf).unwrap().lines().enumerate() {
            let ts = line.split(['"', ':', ',']).nth(3).unwrap().to_string();
            assert!(ts.len() == 13, "{line}");
            let line = match i % 401 {
                7 => line.replacen("\"duration_ms\":", "\"duration_ms\":\"NaN\",\"x\":", 1),
                99 => line.replacen(&ts, "99999999999999999999", 1),
                200 => line.replacen(",\"user_id\"", ",\"uid\"", 1),
                300 => line[..line.len() / 2].to_string(),
                350 => line.replacen("\"is_error\":false", "\"is_error\":0", 1),
                _ => line.to_string(),
            };
            model.push(read_model(&line));
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(dir.join(format!("events-{p}.jsonl")), text).unwrap();
        parts.push(model);
    }
    parts
}

/// `(event, partition watermark at delivery)` (max seen − bound), per
/// partition in order; dead lines do not move the watermark.
fn deliveries(parts: &[Vec<Option<Ev>>], bound_ms: u64) -> Vec<(Ev, u64)> {
    let mut out = Vec::new();
    for p in parts {
        let mut max_seen: Option<u64> = None;
        for e in p.iter().flatten() {
            out.push((
                e.clone(),
                max_seen.map_or(0, |m| m.saturating_sub(bound_ms)),
            ));
            max_seen = Some(max_seen.map_or(e.ts, |m| m.max(e.ts)));
        }
    }
    out
}

/// Lines the model rejects.
fn dead_lines(parts: &[Vec<Option<Ev>>]) -> usize {
    parts.iter().flatten().filter(|e| e.is_none()).count()
}

struct Model {
    /// CSV lines without the header, sorted.
    rows: Vec<String>,
    late: usize,
    dead: usize,
}

fn avg_text(sum: i64, n: u64) -> String {
    serde_json::to_string(&(sum as f64 / n as f64)).unwrap()
}

/// TUMBLE 60 s per (service, operator): cnt, err_cnt, sum/avg/max duration.
fn tumble_model(parts: &[Vec<Option<Ev>>]) -> Model {
    let mut acc: BTreeMap<(String, String, u64), (u64, u64, i64, i64)> = BTreeMap::new();
    let mut late = 0;
    for (e, wm) in deliveries(parts, 2_000) {
        let s = e.ts / 60_000 * 60_000;
        if s + 60_000 <= wm {
            late += 1;
            continue;
        }
        let a = acc
            .entry((e.service.clone(), e.operator.clone(), s))
            .or_insert((0, 0, 0, i64::MIN));
        a.0 += 1;
        a.1 += e.is_error as u64;
        a.2 += e.duration_ms;
        a.3 = a.3.max(e.duration_ms);
    }
    let mut rows: Vec<String> = acc
        .into_iter()
        .map(|((svc, op, s), (n, err, sum, max))| {
            format!(
                "{svc},{op},{s},{},{n},{err},{sum},{},{max}",
                s + 60_000,
                avg_text(sum, n)
            )
        })
        .collect();
    rows.sort();
    Model {
        rows,
        late,
        dead: dead_lines(parts),
    }
}

/// HOP 60 s / 30 s per service: cnt, exact distinct users.
fn hop_model(parts: &[Vec<Option<Ev>>]) -> Model {
    let mut acc: BTreeMap<(String, u64), (u64, BTreeSet<String>)> = BTreeMap::new();
    let mut late = 0;
    for (e, wm) in deliveries(parts, 2_000) {
        let mut live = 0;
        let last = e.ts / 30_000 * 30_000;
        for s in [last.saturating_sub(30_000), last] {
            if s + 60_000 > e.ts && s <= e.ts && s + 60_000 > wm {
                let a = acc.entry((e.service.clone(), s)).or_default();
                a.0 += 1;
                a.1.insert(e.user_id.clone());
                live += 1;
            }
        }
        if live == 0 {
            late += 1;
        }
    }
    let mut rows: Vec<String> = acc
        .into_iter()
        .map(|((svc, s), (n, users))| format!("{svc},{s},{},{n},{}", s + 60_000, users.len()))
        .collect();
    rows.sort();
    Model {
        rows,
        late,
        dead: dead_lines(parts),
    }
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/jobs")
        .join(name)
}

/// The `--set` overrides pointing an example job at `dir`.
fn overrides(dir: &Path, tag: &str) -> Vec<String> {
    let d = dir.display();
    vec![
        "--set".into(),
        format!("source.paths=['{d}/events-*.jsonl']"),
        "--set".into(),
        format!("sinks.0.path='{d}/{tag}.csv'"),
        "--set".into(),
        format!("dead-letter='{d}/{tag}-dead.jsonl'"),
    ]
}

/// `events N  rows N  late N  dead-lettered N` of a run's stdout.
fn summary(stdout: &str) -> BTreeMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.contains("events "))
        .expect("summary line");
    let words: Vec<&str> = line
        .split(": ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    words
        .windows(2)
        .filter_map(|kv| Some((kv[0].to_string(), kv[1].parse().ok()?)))
        .collect()
}

/// Reads a CSV output: the header and the sorted data lines.
fn read_csv(path: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().expect("header").to_string();
    let mut rows: Vec<String> = lines.map(String::from).collect();
    rows.sort();
    (header, rows)
}

fn check_run(job: &str, dir: &Path, tag: &str, workers: usize, want: &Model, header: &str) {
    let out = Command::new(BIN)
        .arg("run")
        .arg(example(job))
        .args(overrides(dir, tag))
        .args(["-w", &workers.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{job}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&stdout);
    assert_eq!(s["rows"] as usize, want.rows.len(), "{tag}: {stdout}");
    assert_eq!(s["late"] as usize, want.late, "{tag}: {stdout}");
    assert_eq!(s["dead-lettered"] as usize, want.dead, "{tag}: {stdout}");
    let (h, rows) = read_csv(&dir.join(format!("{tag}.csv")));
    assert_eq!(h, header, "{tag}");
    assert_eq!(rows, want.rows, "{tag}");
}

#[test]
fn window_job_files_match_the_model_at_1_2_4_workers_and_as_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let parts = write_inputs(dir.path(), 3_000, 0.01);
    let tumble = tumble_model(&parts);
    let hop = hop_model(&parts);
    assert!(
        tumble.late > 0 && hop.late > 0,
        "the input must have late events"
    );
    assert!(tumble.dead >= 20, "the input must have bad lines");
    assert!(tumble.rows.len() > 50 && hop.rows.len() > 10);
    let tumble_header = "service,operator,window_start_ms,window_end_ms,cnt,err_cnt,\
                         sum_duration_ms,avg_duration_ms,max_duration_ms";
    let hop_header = "service,window_start_ms,window_end_ms,cnt,distinct_users";
    for w in [1, 2, 4] {
        check_run(
            "window-tumble.toml",
            dir.path(),
            &format!("tumble-w{w}"),
            w,
            &tumble,
            tumble_header,
        );
        check_run(
            "window-hop.toml",
            dir.path(),
            &format!("hop-w{w}"),
            w,
            &hop,
            hop_header,
        );
    }
    // Every bad line is in the dead letters with the column that rejected it.
    let dead = std::fs::read_to_string(dir.path().join("tumble-w2-dead.jsonl")).unwrap();
    let reasons: Vec<String> = dead
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(reasons.len(), tumble.dead);
    for want in [
        "column `duration_ms`: expected int, got string \"NaN\"",
        "column `ts`: 99999999999999999999 is out of range for timestamp",
        "column `user_id`: missing field `user_id`",
        "malformed JSON",
        "column `is_error`: expected bool, got number 0",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "no dead letter says {want:?}: {reasons:?}"
        );
    }
    // As a 2-process cluster (2 workers each): the same rows in one file.
    let hosts = common::hostfile(dir.path(), 2);
    for (job, tag, want) in [
        ("window-tumble.toml", "tumble-cluster", &tumble),
        ("window-hop.toml", "hop-cluster", &hop),
    ] {
        let status = Command::new(BIN)
            .arg("cluster")
            .arg(example(job))
            .arg("-h")
            .arg(&hosts)
            .args(["-w", "2"])
            .args(overrides(dir.path(), tag))
            .status()
            .unwrap();
        assert!(status.success(), "{tag}");
        let (_, rows) = read_csv(&dir.path().join(format!("{tag}.csv")));
        assert_eq!(rows, want.rows, "{tag}");
    }
}

/// Runs the table job `text` in this process at `workers` workers.
fn run_text(text: &str, dir: &Path, workers: usize) -> streamforge::job::JobSummary {
    let job = streamforge::job::table::TableJob::from_value(toml::from_str(text).unwrap()).unwrap();
    let args = streamforge::dataflow::launch::ClusterArgs {
        workers,
        ..Default::default()
    };
    streamforge::job::table::run(&job, dir, &args, &Default::default()).unwrap()
}

/// The file source and schema of the events `write_inputs` writes in `dir`.
fn events_source(dir: &Path) -> String {
    format!(
        r#"[source]
kind = "file"
paths = ["{}/events-*.jsonl"]
[schema]
event-time = "ts"
columns = [
  {{ name = "ts", type = "timestamp" }},
  {{ name = "service", type = "string" }},
  {{ name = "operator", type = "string" }},
  {{ name = "duration_ms", type = "int" }},
  {{ name = "is_error", type = "bool" }},
  {{ name = "user_id", type = "string" }},
]
"#,
        dir.display()
    )
}

/// A pipeline with every kind of step, as a job file.
fn pipeline_job(dir: &Path, out: &str) -> String {
    let source = events_source(dir);
    format!(
        r#"
name = "pipeline"
{source}

[watermark]
out-of-orderness = "2s"

[[steps]]
kind = "filter"
expr = "NOT is_error AND service <> 'cart'"

[[steps]]
kind = "compute"
name = "duration_s"
expr = "CAST(duration_ms AS DECIMAL) / 1000"

[[steps]]
kind = "dedup"
key = ["user_id", "operator"]
ttl = "1h"

[window]
kind = "sliding"
size = "20s"
slide = "10s"
key = ["service"]
select = [
  "count(*) AS n",
  "count_if(duration_ms > 20) AS slow",
  "sum(duration_s) AS total_s",
  "first_value(user_id) AS first_user",
  "last_value(user_id) AS last_user",
  "approx_count_distinct(user_id) AS users_approx",
  "count(DISTINCT user_id) AS users",
]

[[sinks]]
kind = "jsonl"
path = "{out}"
columns = ["service", "window_start_ms AS start", "n", "slow", "total_s", "first_user", "last_user", "users_approx", "users"]
"#
    )
}

type PipeRow = (
    String,
    u64,
    u64,
    u64,
    rust_decimal::Decimal,
    String,
    String,
    u64,
);

/// The pipeline's model: filter, dedup (first by event time per key; the
/// TTL outlasts the input), then sliding windows.
fn pipeline_model(parts: &[Vec<Option<Ev>>]) -> (Vec<PipeRow>, BTreeMap<(String, u64), u64>) {
    let kept_first: BTreeMap<(String, String), (u64, usize)> = {
        let mut m: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
        for e in parts.iter().flatten().flatten() {
            if !e.is_error && e.service != "cart" {
                m.entry((e.user_id.clone(), e.operator.clone()))
                    .or_default()
                    .push(e.ts);
            }
        }
        m.into_iter()
            .map(|(k, mut ts)| {
                ts.sort();
                let ties = ts.iter().filter(|t| **t == ts[0]).count();
                (k, (ts[0], ties))
            })
            .collect()
    };
    assert!(
        kept_first.values().all(|(_, ties)| *ties == 1),
        "a dedup tie: pick another seed"
    );
    // Kept events in delivery order (a kept record leaves the dedup when the
    // watermark passes it, so it is late for a window only if its own
    // partition watermark was past the window, as for any record).
    let mut acc: BTreeMap<
        (String, u64),
        (
            u64,
            u64,
            i64,
            (u64, String),
            (u64, String),
            BTreeSet<String>,
        ),
    > = BTreeMap::new();
    for (e, wm) in deliveries(parts, 2_000) {
        let key = (e.user_id.clone(), e.operator.clone());
        if e.is_error || e.service == "cart" || kept_first[&key].0 != e.ts {
            continue;
        }
        let last = e.ts / 10_000 * 10_000;
        for s in [last.saturating_sub(10_000), last] {
            if s <= e.ts && s + 20_000 > e.ts && s + 20_000 > wm {
                let a = acc.entry((e.service.clone(), s)).or_insert((
                    0,
                    0,
                    0,
                    (u64::MAX, String::new()),
                    (0, String::new()),
                    BTreeSet::new(),
                ));
                a.0 += 1;
                a.1 += (e.duration_ms > 20) as u64;
                a.2 += e.duration_ms;
                if (e.ts, &e.user_id) < (a.3 .0, &a.3 .1) {
                    a.3 = (e.ts, e.user_id.clone());
                }
                if (e.ts, &e.user_id) > (a.4 .0, &a.4 .1) {
                    a.4 = (e.ts, e.user_id.clone());
                }
                a.5.insert(e.user_id.clone());
            }
        }
    }
    let mut approx = BTreeMap::new();
    let rows = acc
        .into_iter()
        .map(|((svc, s), (n, slow, sum, first, last, users))| {
            approx.insert((svc.clone(), s), users.len() as u64);
            let total = rust_decimal::Decimal::new(sum, 3);
            (svc, s, n, slow, total, first.1, last.1, users.len() as u64)
        })
        .collect();
    (rows, approx)
}

#[test]
fn pipeline_with_filter_compute_dedup_and_sliding_window_matches_the_model() {
    // Nothing behind the watermark here (a record behind it competes in the
    // dedup only with the records still held, see operators::dedup; the
    // window tests cover lateness).
    let dir = tempfile::tempdir().unwrap();
    let parts = write_inputs(dir.path(), 2_000, 0.0);
    assert!(deliveries(&parts, 2_000).iter().all(|(e, wm)| e.ts >= *wm));
    let (want, exact_users) = pipeline_model(&parts);
    assert!(want.len() > 20);
    for workers in [1, 2, 4] {
        let out = dir.path().join(format!("pipe-{workers}.jsonl"));
        let text = pipeline_job(dir.path(), &out.display().to_string());
        let s = run_text(&text, dir.path(), workers);
        assert_eq!(s.rows as usize, want.len());
        let mut got: Vec<PipeRow> = Vec::new();
        for line in std::fs::read_to_string(&out).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let users_approx = v["users_approx"].as_u64().unwrap();
            let key = (
                v["service"].as_str().unwrap().to_string(),
                v["start"].as_u64().unwrap(),
            );
            let exact = exact_users[&key] as f64;
            assert!(
                (users_approx as f64 - exact).abs() <= (exact * 0.05).max(1.0),
                "approx {users_approx} vs exact {exact}: {line}"
            );
            // Decimals are written as exact JSON numbers: read their text.
            let total = line
                .split("\"total_s\":")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            got.push((
                key.0,
                key.1,
                v["n"].as_u64().unwrap(),
                v["slow"].as_u64().unwrap(),
                rust_decimal::Decimal::from_str_exact(total).unwrap(),
                v["first_user"].as_str().unwrap().to_string(),
                v["last_user"].as_str().unwrap().to_string(),
                v["users"].as_u64().unwrap(),
            ));
        }
        got.sort();
        assert_eq!(got, want, "at {workers} workers");
    }
}

#[test]
fn bad_job_files_are_rejected_with_the_place_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("events-0.jsonl"), "").unwrap();
    let base = pipeline_job(dir.path(), "out.jsonl");
    for (from, to, reason) in [
        (
            "NOT is_error AND",
            "NOT nope AND",
            "steps.0: `NOT nope AND service <> 'cart'`: unknown column `nope`",
        ),
        (
            "\"count(*) AS n\"",
            "\"count(*) + 1 AS n\"",
            "window.select: `count(*) + 1 AS n`",
        ),
        (
            "\"count(*) AS n\"",
            "\"sum(service) AS n\"",
            "sum() needs a number",
        ),
        (
            "key = [\"service\"]",
            "key = [\"svc\"]",
            "window.key: unknown column `svc`",
        ),
        (
            "slide = \"10s\"",
            "slide = \"30s\"",
            "need 0 < slide ≤ size",
        ),
        (
            "\"window_start_ms AS start\"",
            "\"start_ms AS start\"",
            "sinks.0: `start_ms`: unknown column",
        ),
        (
            "type = \"int\"",
            "type = \"integer\"",
            "unknown variant `integer`",
        ),
    ] {
        let text = base.replacen(from, to, 1);
        assert_ne!(text, base, "{from}");
        let job = toml::from_str::<toml::Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(streamforge::job::table::TableJob::from_value);
        let err = match job {
            Err(e) => e,
            Ok(job) => streamforge::job::table::run(
                &job,
                dir.path(),
                &Default::default(),
                &Default::default(),
            )
            .unwrap_err()
            .to_string(),
        };
        assert!(err.contains(reason), "{to}: {err}");
    }
}

/// Sessions per user (gap 5 s): with allowed lateness above the input's
/// disorder no session can fire before all its records arrived, so the
/// sessions are the connected components of `[e, e + gap)` per user. (The
/// rules for records that meet fired sessions are tested against a model of
/// delivery times in operators/tests/session_oracle.rs.)
fn session_model(parts: &[Vec<Option<Ev>>], gap: u64) -> Vec<(String, u64, u64, u64, i64)> {
    let mut by_user: BTreeMap<String, Vec<(u64, i64)>> = BTreeMap::new();
    for e in parts.iter().flatten().flatten() {
        by_user
            .entry(e.user_id.clone())
            .or_default()
            .push((e.ts, e.duration_ms));
    }
    let mut rows = Vec::new();
    for (user, mut es) in by_user {
        es.sort();
        let mut cur: Option<(u64, u64, u64, i64)> = None;
        for (ts, d) in es {
            cur = match cur {
                Some((s, end, n, sum)) if ts <= end => Some((s, end.max(ts + gap), n + 1, sum + d)),
                Some((s, end, n, sum)) => {
                    rows.push((user.clone(), s, end, n, sum));
                    Some((ts, ts + gap, 1, d))
                }
                None => Some((ts, ts + gap, 1, d)),
            };
        }
        if let Some((s, end, n, sum)) = cur {
            rows.push((user.clone(), s, end, n, sum));
        }
    }
    rows.sort();
    rows
}

#[test]
fn session_windows_in_a_job_file_match_the_model_at_1_2_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let parts = write_inputs(dir.path(), 3_000, 0.0);
    let want = session_model(&parts, 5_000);
    assert!(
        want.iter().any(|r| r.3 > 2) && want.len() > 100,
        "sessions must form and break"
    );
    for workers in [1, 2, 4] {
        let out = dir.path().join(format!("sessions-{workers}.jsonl"));
        let text = pipeline_job(dir.path(), &out.display().to_string());
        let start = text.find("[[steps]]").unwrap();
        let text = format!(
            "{}[window]\nkind = \"session\"\ngap = \"5s\"\nallowed-lateness = \"3s\"\nkey = [\"user_id\"]\n\
             select = [\"count(*) AS n\", \"sum(duration_ms) AS total\"]\n\n\
             [[sinks]]\nkind = \"jsonl\"\npath = \"{}\"\n",
            &text[..start],
            out.display()
        );
        let s = run_text(&text, dir.path(), workers);
        assert_eq!(s.late, 0);
        let mut got: Vec<(String, u64, u64, u64, i64)> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["user_id"].as_str().unwrap().to_string(),
                    v["window_start_ms"].as_u64().unwrap(),
                    v["window_end_ms"].as_u64().unwrap(),
                    v["n"].as_u64().unwrap(),
                    v["total"].as_i64().unwrap(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "at {workers} workers");
    }
}

/// Runs `streamforge run JOB ARGS…`, asserting success; returns the summary.
fn run_job(job: &Path, args: &[String]) -> BTreeMap<String, u64> {
    let out = Command::new(BIN)
        .arg("run")
        .arg(job)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {stdout}{}",
        job.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    summary(&stdout)
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// The main job written as a job file over a declared schema gives the span
/// mapping's rows byte for byte: on the bundled TrainTicket sample (CSV,
/// ns timestamps, pod names), and on generated spans with disorder and late
/// records at 1 and 2 workers (two partition files).
#[test]
fn the_main_job_as_a_job_file_writes_the_typed_jobs_rows_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let set = |k: &str, v: String| vec!["--set".to_string(), format!("{k}={v}")];
    let outputs = |tag: &str| {
        [
            set("sinks.0.path", format!("'{d}/{tag}.jsonl'")),
            set("late-output", format!("'{d}/{tag}-late.jsonl'")),
            set("dead-letter", format!("'{d}/{tag}-dead.jsonl'")),
        ]
        .concat()
    };
    let typed = run_job(&example("demo.toml"), &outputs("demo-typed"));
    let schema = run_job(&example("operator-metrics.toml"), &outputs("demo-schema"));
    assert_eq!(typed["rows"], 7_563, "{typed:?}");
    for k in ["events", "rows", "late", "dead-lettered"] {
        assert_eq!(schema[k], typed[k], "{k}: {schema:?} vs {typed:?}");
    }
    assert_eq!(
        sorted_lines(&dir.path().join("demo-schema.jsonl")),
        sorted_lines(&dir.path().join("demo-typed.jsonl"))
    );

    for p in 0..2u64 {
        let mut g = GeneratorConfig::with_events(20_000);
        g.seed = 11 + p;
        g.events_per_second = 50.0;
        g.out_of_orderness_ms = 8_000;
        g.late_ratio = 0.01;
        g.late_delay_ms = 90_000;
        g.services = 5;
        let mut buf = Vec::new();
        g.write_jsonl(&mut buf).unwrap();
        std::fs::write(dir.path().join(format!("spans-{p}.jsonl")), buf).unwrap();
    }
    for w in ["1", "2"] {
        let args = |tag: &str| {
            let mut a = set("source.paths", format!("['{d}/spans-*.jsonl']"));
            a.extend(outputs(tag));
            a.extend(["-w".to_string(), w.to_string()]);
            a
        };
        let typed = run_job(
            &example("generated-spans.toml"),
            &args(&format!("gen-typed-{w}")),
        );
        let schema = run_job(
            &example("generated-spans-schema.toml"),
            &args(&format!("gen-schema-{w}")),
        );
        assert!(
            typed["late"] > 100,
            "the input must have late spans: {typed:?}"
        );
        for k in ["events", "rows", "late", "dead-lettered"] {
            assert_eq!(schema[k], typed[k], "w{w} {k}: {schema:?} vs {typed:?}");
        }
        let rows = sorted_lines(&dir.path().join(format!("gen-schema-{w}.jsonl")));
        assert_eq!(rows.len() as u64, typed["rows"]);
        assert_eq!(
            rows,
            sorted_lines(&dir.path().join(format!("gen-typed-{w}.jsonl"))),
            "w{w}"
        );
    }
}

/// The main job with alerting, as a job file over a schema, raises the same
/// rules and alerts from the same rows as the span-mapping job, on both real
/// TrainTicket days at 2 workers, and again under checkpoints (exactly-once
/// sinks) at 1 worker.
#[test]
fn the_main_job_file_with_alerting_publishes_the_same_rules_and_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let days: Vec<String> = ["2023-01-29", "2023-01-30"]
        .iter()
        .map(|day| {
            common::shared_data()
                .join(format!("nezha/trainticket/spans_{day}.csv.gz"))
                .display()
                .to_string()
        })
        .collect();
    let args = |tag: &str, extra: &[&str]| {
        let mut a = vec![
            "--set".to_string(),
            format!("source.paths={days:?}"),
            "--set".into(),
            format!("sinks.0.path='{d}/{tag}-rows'"),
            "--set".into(),
            format!("alerting.publish.jsonl='{d}/{tag}-rules'"),
            "--set".into(),
            format!("alerting.sinks.0.path='{d}/{tag}-alerts'"),
            "--set".into(),
            format!("late-output='{d}/{tag}-late.jsonl'"),
            "--set".into(),
            format!("dead-letter='{d}/{tag}-dead.jsonl'"),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let typed = run_job(
        &example("trainticket-alerts.toml"),
        &args("typed", &["-w", "2"]),
    );
    let schema = run_job(
        &example("operator-metrics-alerts.toml"),
        &args("schema", &["-w", "2"]),
    );
    let ckpt = format!("checkpoint={{ dir = '{d}/ckpt', interval = '200ms' }}");
    let checkpointed = run_job(
        &example("operator-metrics-alerts.toml"),
        &args("ckpt", &["--set", &ckpt]),
    );
    // `… rules published N  alerts LOW a MID b HIGH c`: the counts line up
    // in pairs after the word `rules`.
    assert!(
        typed["published"] > 1_000 && typed["LOW"] > 100,
        "{typed:?}"
    );
    for s in [&schema, &checkpointed] {
        for k in [
            "events",
            "rows",
            "late",
            "dead-lettered",
            "published",
            "LOW",
            "MID",
            "HIGH",
        ] {
            assert_eq!(s.get(k), typed.get(k), "{k}: {s:?} vs {typed:?}");
        }
    }
    for part in ["rows", "rules", "alerts"] {
        let want = common::committed_lines(&dir.path().join(format!("typed-{part}")));
        assert!(want.len() > 100, "{part}: {}", want.len());
        for tag in ["schema", "ckpt"] {
            let got = common::committed_lines(&dir.path().join(format!("{tag}-{part}")));
            assert_eq!(got, want, "{tag} {part}");
        }
    }
}

/// Computed columns that rename a column or hold a constant are bound, not
/// stored (see `Scope::bind`): as window keys and aggregate arguments they
/// give the rows a stored column would, a constant at its place in the key,
/// and a rename of a column that a later step changes keeps the old value.
#[test]
fn renamed_and_constant_key_columns_give_the_models_rows() {
    let dir = tempfile::tempdir().unwrap();
    let parts = write_inputs(dir.path(), 2_000, 0.02);
    let model = tumble_model(&parts);
    // (kind, svc, op, start, n, zs, total, longest) from the model's rows.
    let mut want: Vec<String> = model
        .rows
        .iter()
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            assert_eq!(f.len(), 9, "{r}");
            let (svc, op, start, n, sum, max) = (f[0], f[1], f[2], f[4], f[6], f[8]);
            format!("k|{svc}|{op}|{start}|{n}|{n}|{sum}|{max}")
        })
        .collect();
    want.sort();
    assert!(want.len() > 50 && model.late > 0);
    let d = dir.path().display();
    let source = events_source(dir.path());
    for workers in [1, 2] {
        let text = format!(
            r#"name = "bound"
late-output = "{d}/late-{workers}.jsonl"
{source}[watermark]
out-of-orderness = "2s"
[[steps]]
kind = "compute"
name = "svc"
expr = "service"
[[steps]]
kind = "compute"
name = "kind"
expr = "'k'"
[[steps]]
kind = "compute"
name = "op_before"
expr = "operator"
[[steps]]
kind = "compute"
name = "operator"
expr = "'z'"
[[steps]]
kind = "compute"
name = "op"
expr = "op_before"
[[steps]]
kind = "compute"
name = "dur"
expr = "duration_ms"
[window]
kind = "tumbling"
size = "60s"
key = ["kind", "svc", "op"]
select = ["count(*) AS n", "count_if(operator = 'z') AS zs", "sum(dur) AS total", "max(dur) AS longest"]
[[sinks]]
kind = "jsonl"
path = "{d}/bound-{workers}.jsonl"
"#
        );
        let s = run_text(&text, dir.path(), workers);
        assert_eq!(s.late as usize, model.late, "at {workers} workers");
        // The window reads few of the columns, but the late output gets
        // every input column of its rows (`operator` as the steps left it).
        let late =
            std::fs::read_to_string(dir.path().join(format!("late-{workers}.jsonl"))).unwrap();
        assert_eq!(late.lines().count(), model.late);
        for l in late.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 6, "{l}");
            assert!(
                v["ts"].is_u64() && v["duration_ms"].is_i64() && v["is_error"].is_boolean(),
                "{l}"
            );
            assert!(v["service"].is_string() && v["user_id"].is_string(), "{l}");
            assert_eq!(v["operator"], "z", "{l}");
        }
        let mut got: Vec<String> =
            std::fs::read_to_string(dir.path().join(format!("bound-{workers}.jsonl")))
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    // The columns in order: key as declared, window, aggregates.
                    let at: Vec<usize> = [
                        "kind",
                        "svc",
                        "op",
                        "window_start_ms",
                        "window_end_ms",
                        "n",
                        "zs",
                        "total",
                        "longest",
                    ]
                    .iter()
                    .map(|k| {
                        l.find(&format!("\"{k}\":"))
                            .unwrap_or_else(|| panic!("{k}: {l}"))
                    })
                    .collect();
                    assert!(at.windows(2).all(|w| w[0] < w[1]), "{l}");
                    format!(
                        "{}|{}|{}|{}|{}|{}|{}|{}",
                        v["kind"].as_str().unwrap(),
                        v["svc"].as_str().unwrap(),
                        v["op"].as_str().unwrap(),
                        v["window_start_ms"],
                        v["n"],
                        v["zs"],
                        v["total"],
                        v["longest"]
                    )
                })
                .collect();
        got.sort();
        assert_eq!(got, want, "at {workers} workers");
    }
}
