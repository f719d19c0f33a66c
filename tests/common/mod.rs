//! Shared helpers for the end-to-end tests: a sequential model of the main job,
//! paths to the real data, free ports.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use streamforge::operator_metrics::{format_utc, OperatorAggRow};

/// `../shared/data` next to the repository (or `$STREAMFORGE_SHARED_DATA`).
/// Panics with instructions when it is missing: the tests need the real data.
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("STREAMFORGE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        dir.join("SOURCES.md").is_file(),
        "real data not found at {} — clone the repository next to `shared/` or set STREAMFORGE_SHARED_DATA",
        dir.display()
    );
    dir
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A name no other test or run uses (`sf_<name>_<pid>_<nanos>`), for
/// databases, schemas and topics.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("sf_{name}_{}_{nanos}", std::process::id())
}

/// Writes a hostfile for `n` local processes.
pub fn hostfile(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("hostfile");
    let text: String = (0..n)
        .map(|_| format!("127.0.0.1:{}\n", free_port()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// One parsed input item of the model.
pub enum Item {
    /// (event time ms, service, operator, class, duration µs, error)
    Span(u64, String, String, String, i64, bool),
    /// A malformed input.
    Dead,
}

/// What the main job must produce for the given partitions (each in read order).
pub struct Expected {
    /// Rows in `sort_rows` order; `p95_duration` is the exact 95th
    /// percentile (the value at rank ⌈0.95·(n − 1)⌉ of the sorted durations).
    pub rows: Vec<OperatorAggRow>,
    /// Per row, the exact values at the ranks ⌊0.95·(n − 1)⌋ and
    /// ⌈0.95·(n − 1)⌉, between which the 95th percentile lies.
    pub p95: Vec<(f64, f64)>,
    pub late: u64,
    pub dead: u64,
}

/// The relative error of the main job's p95 (DDSketch, documented 1 %).
pub const P95_RELATIVE_ERROR: f64 = 0.01;

/// Asserts `got` (sorted) equals the model's rows: every column exactly,
/// except `p95_duration`, which must lie within the sketch's documented
/// relative error of the exact 95th percentile — checked against exact
/// quantiles, not against another sketch.
pub fn assert_rows_match_model(got: &[OperatorAggRow], want: &Expected, what: &str) {
    assert_eq!(got.len(), want.rows.len(), "{what}: row count");
    for (i, ((g, w), (lo, hi))) in got.iter().zip(&want.rows).zip(&want.p95).enumerate() {
        let (a, b) = (
            lo * (1.0 - P95_RELATIVE_ERROR),
            hi * (1.0 + P95_RELATIVE_ERROR),
        );
        assert!(
            g.p95_duration >= a - 1e-9 && g.p95_duration <= b + 1e-9,
            "{what}: row {i}: p95 {} outside [{a}, {b}] (exact {lo}..{hi}): {g:?}",
            g.p95_duration
        );
        let mut g = g.clone();
        g.p95_duration = w.p95_duration;
        assert_eq!(&g, w, "{what}: first difference at row {i}");
    }
}

/// The sequential model of the main job with tumbling windows of `size_ms`, no
/// allowed lateness, and `bound_ms` out-of-orderness per partition.
pub fn model(partitions: &[Vec<Item>], size_ms: u64, bound_ms: u64) -> Expected {
    #[derive(Default)]
    struct Acc {
        n: u64,
        err: u64,
        sum: i64,
        max: i64,
        durations_ms: Vec<f64>,
    }
    let mut acc: BTreeMap<(u64, String, String, String), Acc> = BTreeMap::new();
    let (mut late, mut dead) = (0, 0);
    for part in partitions {
        let mut max_seen: Option<u64> = None;
        for item in part {
            let Item::Span(e, s, o, c, d, is_err) = item else {
                dead += 1;
                continue;
            };
            let wm = max_seen.map_or(0, |m| m.saturating_sub(bound_ms));
            let start = e / size_ms * size_ms;
            if start + size_ms <= wm {
                late += 1;
            } else {
                let a = acc
                    .entry((start, s.clone(), o.clone(), c.clone()))
                    .or_default();
                a.max = if a.n == 0 { *d } else { a.max.max(*d) };
                a.n += 1;
                a.err += u64::from(*is_err);
                a.sum += d;
                a.durations_ms.push(*d as f64 / 1e3);
            }
            max_seen = Some(max_seen.map_or(*e, |m| m.max(*e)));
        }
    }
    let mut p95 = Vec::new();
    let rows = acc
        .into_iter()
        .map(|((start, s, o, c), mut a)| {
            a.durations_ms.sort_by(f64::total_cmp);
            let rank = 0.95 * (a.durations_ms.len() - 1) as f64;
            let (lo, hi) = (
                a.durations_ms[rank.floor() as usize],
                a.durations_ms[rank.ceil() as usize],
            );
            p95.push((lo, hi));
            (start, s, o, c, a, hi)
        })
        .map(|(start, s, o, c, a, exact)| OperatorAggRow {
            window_start: format_utc(start),
            window_start_ms: start,
            window_size: size_ms / 1000,
            service: s,
            operator_name: o,
            operator_class: c,
            avg_duration: a.sum as f64 / a.n as f64 / 1e3,
            max_duration: a.max as f64 / 1e3,
            p95_duration: exact,
            error_rate: a.err as f64 / a.n as f64,
            total_count: a.n,
            error_count: a.err,
            success_count: a.n - a.err,
        })
        .collect();
    Expected {
        rows,
        p95,
        late,
        dead,
    }
}

/// Reads a JSONL file of rows, sorted by (window, service, operator).
pub fn read_rows(path: &Path) -> Vec<OperatorAggRow> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows: Vec<OperatorAggRow> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    sort_rows(&mut rows);
    rows
}

/// Sorts rows by (window, service, operator, class).
pub fn sort_rows(rows: &mut [OperatorAggRow]) {
    rows.sort_by(|a, b| {
        (
            a.window_start_ms,
            &a.service,
            &a.operator_name,
            &a.operator_class,
        )
            .cmp(&(
                b.window_start_ms,
                &b.service,
                &b.operator_name,
                &b.operator_class,
            ))
    });
}

/// Asserts two sorted row lists are equal, reporting the first difference only.
pub fn assert_rows_eq(got: &[OperatorAggRow], want: &[OperatorAggRow], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{what}: first difference at row {i}");
    }
    assert_eq!(got.len(), want.len(), "{what}: row count");
}

/// `[source.mapping]` of generated JSON spans (`streamforge generate`).
pub const GENERATED_MAPPING: &str = r#"[source.mapping]
event-time = { field = "ts", unit = "ms" }
service = { field = "service" }
operator-name = { field = "operator" }
duration = { field = "duration_ms", unit = "ms" }
is-error = { field = "is_error" }
"#;

/// `[source.mapping]` of the Nezha span CSVs (no error column).
pub const NEZHA_MAPPING: &str = r#"[source.mapping]
event-time = { field = "StartTimeUnixNano", unit = "ns" }
service = { field = "PodName", transform = "k8s-pod" }
operator-name = { field = "OperationName" }
duration = { field = "Duration", unit = "us" }
"#;

/// Writes `job` (TOML) to `dir/<name>.toml` and runs it as a cluster of
/// `processes` local processes with `workers` each (`streamforge cluster`),
/// asserting that it succeeds.
pub fn run_cluster(dir: &Path, name: &str, job: &str, processes: usize, workers: usize) {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, job).unwrap();
    let hosts = hostfile(dir, processes);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_streamforge"))
        .arg("cluster")
        .arg(&path)
        .arg("-h")
        .arg(&hosts)
        .args(["-w", &workers.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "cluster run of {name} failed: {status}");
}

/// What [`kill_loop`] did.
#[derive(Debug)]
pub struct KillReport {
    /// Processes killed with SIGKILL while running.
    pub kills: usize,
    /// Runs started (kills + the final one).
    pub runs: usize,
    /// The final run's stdout and stderr.
    pub last_output: String,
    /// The checkpoint each restored run named in its machine-readable
    /// `{"event":"restored",…}` line, in order (each one the newest complete
    /// checkpoint when that run started).
    pub restored: Vec<u64>,
}

/// The checkpoint id of a run's machine-readable restore line on stderr,
/// `{"event":"restored","job":…,"checkpoint":ID}` (None: a fresh start).
pub fn restored_id(stderr: &str) -> Option<u64> {
    let ids: Vec<u64> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter(|v| v["event"] == "restored")
        .map(|v| v["checkpoint"].as_u64().expect("a checkpoint id"))
        .collect();
    assert!(ids.len() <= 1, "one restore line per run: {stderr}");
    ids.first().copied()
}

/// Runs `streamforge run JOB` and kills it with SIGKILL `kills` times, each
/// run after the first restoring the latest checkpoint with a random worker
/// count from `workers`; then runs it to completion. Each kill comes a seeded
/// random delay in `delay_ms` after the run completed its first checkpoint in
/// `checkpoints` (so every run makes progress, however slow its start). Panics
/// when a run ends before it could be killed (the input is too short for the
/// test) or the final run fails.
pub fn kill_loop(
    job: &Path,
    checkpoints: &Path,
    kills: usize,
    seed: u64,
    delay_ms: std::ops::Range<u64>,
    workers: &[usize],
) -> KillReport {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let store =
        streamforge::dataflow::checkpoint_store::CheckpointStore::open(checkpoints, usize::MAX)
            .unwrap();
    let mut runs = 0;
    let mut restored = Vec::new();
    // A restored run must name the checkpoint it resumed from, and that
    // must be the newest complete one: a run that ignored `--restore`
    // (a fresh start) fails here.
    let mut check_restore = |k: usize, before: Option<u64>, stderr: &str| {
        if k == 0 {
            assert_eq!(restored_id(stderr), None, "the first run starts fresh");
            return;
        }
        let want = before.expect("a complete checkpoint before every restore");
        assert_eq!(
            restored_id(stderr),
            Some(want),
            "run {} must restore checkpoint {want}: {stderr}",
            k + 1
        );
        if let Some(&last) = restored.last() {
            assert!(want > last, "restores go forward: {last} then {want}");
        }
        restored.push(want);
    };
    let logs = tempfile::tempdir().unwrap();
    for k in 0..=kills {
        runs += 1;
        let w = workers[rng.gen_range(0..workers.len())];
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_streamforge"));
        cmd.arg("run").arg(job).args(["-w", &w.to_string()]);
        if k > 0 {
            cmd.args(["--restore", "latest"]);
        }
        let before = if k == 0 {
            None
        } else {
            store.newest_complete_id()
        };
        if k == kills {
            let out = cmd.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            let text = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
            assert!(out.status.success(), "final run failed: {text}");
            check_restore(k, before, &stderr);
            return KillReport {
                kills,
                runs,
                last_output: text,
                restored,
            };
        }
        let log = logs.path().join(format!("run-{k}.stderr"));
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while store.newest_complete_id() == before {
            assert!(
                child.try_wait().unwrap().is_none(),
                "run {runs} ended before its first checkpoint"
            );
            assert!(start.elapsed() < std::time::Duration::from_secs(60));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(
            rng.gen_range(delay_ms.clone()),
        ));
        assert!(
            child.try_wait().unwrap().is_none(),
            "run {runs} ended before kill {k}: make the input longer"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        check_restore(k, before, &std::fs::read_to_string(&log).unwrap());
    }
    unreachable!()
}

/// Sorted committed lines of an exactly-once JSONL sink directory (or a file).
pub fn committed_lines(path: &Path) -> Vec<String> {
    let mut lines = streamforge::sinks::read_committed(path).unwrap();
    lines.sort();
    lines
}

/// Sorted lines of a plain JSONL file.
pub fn file_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// The main job over nycflights13 (carrier = service, origin-dest = operator,
/// departure delay = duration, cancelled = error, scheduled hour = event time)
/// with 1 h windows, writing JSONL rows to `out`.
pub fn flights_job(out: &Path) -> String {
    let flights = shared_data().join("nycflights13/flights.csv.gz");
    format!(
        r#"
name = "flights"
[source]
kind = "file"
paths = ["{}"]
[source.mapping]
event-time = {{ field = "time_hour", unit = "rfc3339", offset-field = "minute", offset-unit = "min" }}
service = {{ field = "carrier" }}
operator-name = {{ fields = ["origin", "dest"], separator = "-" }}
operator-class = {{ value = "flight" }}
duration = {{ field = "dep_delay", unit = "min", default = 0 }}
is-error = {{ field = "dep_time", equals = ["NA"] }}
# The file is ordered by month *as text* (1, 10, 11, 12, 2, …), then by actual
# departure: replayed in file order it is up to 8,011 h out of order, so the
# bound covers the whole year (all windows stay open until the end: a batch).
[watermark]
out-of-orderness = "400days"
[window]
kind = "tumbling"
size = "1h"
[[sinks]]
kind = "jsonl"
path = "{}"
"#,
        flights.display(),
        out.display()
    )
}

/// The main job over both TrainTicket days (2023-01-29 and -30, Nezha) with
/// 60 s windows: `top` goes before `[source]` (name, rate-limit, …), `rest`
/// after `[window]` (sinks, `[alerting]`, `[metrics]`, …).
pub fn trainticket_two_days(top: &str, rest: &str) -> String {
    let day = |d: &str| {
        shared_data()
            .join(format!("nezha/trainticket/spans_{d}.csv.gz"))
            .display()
            .to_string()
    };
    format!(
        "{top}\n[source]\nkind = \"file\"\npaths = [{:?}, {:?}]\n{NEZHA_MAPPING}\
         operator-class = {{ value = \"span\" }}\n[watermark]\nout-of-orderness = \"2m\"\n\
         idle-timeout = \"10s\"\n[window]\nkind = \"tumbling\"\nsize = \"60s\"\n{rest}",
        day("2023-01-29"),
        day("2023-01-30")
    )
}
