//! The orders pipeline (seed 003), as the job file `examples/jobs/orders.toml`
//! and as the API program `examples/orders.rs`, against an independent model
//! of generated orders (duplicates, malformed, incomplete and late events):
//! at 1 and 2 workers and as a 2-process cluster; then from a real Kafka topic
//! into a real ClickHouse table, killed with SIGKILL 10 times under
//! checkpoints, ending equal to the failure-free run.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rust_decimal::Decimal;

const BIN: &str = env!("CARGO_BIN_EXE_streamforge");
const MAX_TS: u64 = 253_402_300_799_999;

/// (window start, window end, order_cnt, gmv_total, user_cnt)
type Row = (u64, u64, u64, Decimal, u64);

struct Order {
    ts: u64,
    id: String,
    user: String,
    cents: i64,
}

/// The model's reading of a line: the three required fields and a
/// non-negative amount with 2 decimals; optional fields, if present, strings.
fn read_order(line: &str) -> Option<Order> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let amount = v.get("amount")?;
    let f = amount.as_f64().filter(|_| amount.is_number())?;
    let cents = (f * 100.0).round();
    if cents < 0.0 || (f * 100.0 - cents).abs() > 1e-6 {
        return None;
    }
    for optional in ["status", "category", "city"] {
        if v.get(optional).is_some_and(|x| !x.is_string()) {
            return None;
        }
    }
    Some(Order {
        ts: v["event_time"].as_u64().filter(|t| *t <= MAX_TS)?,
        id: v["order_id"].as_str()?.to_string(),
        user: v["user_id"].as_str()?.to_string(),
        cents: cents as i64,
    })
}

/// Rows and the anomaly count of the pipeline over partition files: valid
/// orders; per order id the first by event time (a repeat is the same event
/// or a later one); sliding 60 s / 30 s windows that are still open at the
/// kept order's partition watermark (max seen − 2 s) when it was read.
fn model(files: &[PathBuf]) -> (Vec<Row>, usize) {
    model_with(files, true)
}

/// [`model`]; without `lateness` no record is late (a replay: the data as if
/// it had arrived on time).
fn model_with(files: &[PathBuf], lateness: bool) -> (Vec<Row>, usize) {
    let mut dead = 0;
    let mut first: BTreeMap<String, u64> = BTreeMap::new();
    let mut delivered: Vec<(Order, u64)> = Vec::new();
    for f in files {
        let mut max_seen: Option<u64> = None;
        for line in std::fs::read_to_string(f).unwrap().lines() {
            let Some(o) = read_order(line) else {
                dead += 1;
                continue;
            };
            let wm = max_seen.map_or(0, |m| m.saturating_sub(2_000));
            max_seen = Some(max_seen.map_or(o.ts, |m| m.max(o.ts)));
            let t = first.entry(o.id.clone()).or_insert(o.ts);
            *t = (*t).min(o.ts);
            delivered.push((o, wm));
        }
    }
    let mut seen = std::collections::HashSet::new();
    let mut windows: BTreeMap<u64, (u64, i64, std::collections::BTreeSet<String>)> =
        BTreeMap::new();
    for (o, wm) in delivered {
        if first[&o.id] != o.ts || !seen.insert(o.id.clone()) {
            continue;
        }
        let last = o.ts / 30_000 * 30_000;
        for s in [last - 30_000, last] {
            if !lateness || s + 60_000 > wm {
                let w = windows.entry(s).or_default();
                w.0 += 1;
                w.1 += o.cents;
                w.2.insert(o.user.clone());
            }
        }
    }
    let rows = windows
        .into_iter()
        .map(|(s, (n, cents, users))| {
            (s, s + 60_000, n, Decimal::new(cents, 2), users.len() as u64)
        })
        .collect();
    (rows, dead)
}

/// Rows of JSON lines (`window_start_ms`, `window_end_ms`, `order_cnt`,
/// `gmv_total` read from its exact text, `user_cnt`).
fn rows_of(lines: &[String]) -> Vec<Row> {
    let mut rows: Vec<Row> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let gmv = l
                .split("\"gmv_total\":")
                .nth(1)
                .unwrap()
                .split([',', '}'])
                .next()
                .unwrap();
            (
                v["window_start_ms"].as_u64().unwrap(),
                v["window_end_ms"].as_u64().unwrap(),
                v["order_cnt"].as_u64().unwrap(),
                Decimal::from_str_exact(gmv).unwrap(),
                v["user_cnt"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn job_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs/orders.toml")
}

/// Overrides: files instead of Kafka, a JSONL sink instead of ClickHouse.
fn file_overrides(dir: &Path, tag: &str) -> Vec<String> {
    let d = dir.display();
    [
        format!("source={{kind = \"file\", paths = [\"{d}/orders-*.jsonl\"]}}"),
        format!("sinks=[{{kind = \"jsonl\", path = \"{d}/{tag}\"}}]"),
        format!("checkpoint.dir='{d}/{tag}-ckpt'"),
        format!("dead-letter='{d}/{tag}-anomalies'"),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_string(), s])
    .collect()
}

fn example_binary() -> PathBuf {
    let exe = Path::new(BIN).parent().unwrap().join("examples/orders");
    assert!(
        exe.is_file(),
        "{} is missing: build the examples first (cargo build --release --all-targets)",
        exe.display()
    );
    exe
}

#[test]
fn job_file_and_api_program_equal_the_model_at_1_2_workers_and_as_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("orders.jsonl");
    let status = Command::new(BIN)
        .args([
            "generate",
            "orders",
            "--events",
            "12000",
            "--rate",
            "10",
            "--partitions",
            "2",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let files: Vec<PathBuf> = (0..2)
        .map(|p| dir.path().join(format!("orders-{p}.jsonl")))
        .collect();
    let (want, dead) = model(&files);
    assert!(
        want.len() > 20 && dead > 20,
        "{} rows, {dead} anomalies",
        want.len()
    );
    for w in [1, 2] {
        let tag = format!("file-w{w}");
        let run = Command::new(BIN)
            .arg("run")
            .arg(job_file())
            .args(file_overrides(dir.path(), &tag))
            .args(["-w", &w.to_string()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            stdout.contains(&format!("dead-lettered {dead} ")),
            "{stdout}"
        );
        let got = rows_of(&common::committed_lines(&dir.path().join(&tag)));
        assert_eq!(got, want, "job file at {w} workers");
        let anomalies = common::committed_lines(&dir.path().join(format!("{tag}-anomalies")));
        assert_eq!(anomalies.len(), dead);

        let api_out = dir.path().join(format!("api-w{w}.jsonl"));
        let api = Command::new(example_binary())
            .arg("--input")
            .arg(dir.path().join("orders-*.jsonl"))
            .arg("--out")
            .arg(&api_out)
            .args(["-w", &w.to_string()])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&api.stdout);
        assert!(
            api.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&api.stderr)
        );
        assert!(
            stdout.contains(&format!("dead-lettered {dead} ")),
            "{stdout}"
        );
        assert_eq!(
            rows_of(&common::file_lines(&api_out)),
            want,
            "API program at {w} workers"
        );
    }
    let hosts = common::hostfile(dir.path(), 2);
    let status = Command::new(BIN)
        .arg("cluster")
        .arg(job_file())
        .arg("-h")
        .arg(&hosts)
        .args(file_overrides(dir.path(), "cluster"))
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        rows_of(&common::committed_lines(&dir.path().join("cluster"))),
        want,
        "cluster"
    );
}

fn env_or_panic(var: &str, script: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "no server: run scripts/test.sh (it installs and starts one), or run \
             `scripts/{script} start` and export the {var}=… it prints"
        )
    })
}

fn clickhouse(url: &str, db: &str) -> streamforge::sinks::clickhouse::ClickHouse {
    let config: streamforge::sinks::clickhouse::ClickHouseSinkConfig = toml::from_str(&format!(
        "url = {url:?}\ndatabase = {db:?}\ntable = \"orders_window_metrics\""
    ))
    .unwrap();
    streamforge::sinks::clickhouse::ClickHouse::new(&config, Default::default()).unwrap()
}

/// The table's rows after merging (`FINAL`), as the sink wrote them.
fn table_rows(url: &str, db: &str) -> Vec<String> {
    let ch = clickhouse(url, db);
    let text = ch
        .query(&format!(
            "SELECT window_start_ms, event_window_start, event_window_end, order_cnt, gmv_total, user_cnt \
             FROM `{db}`.orders_window_metrics FINAL ORDER BY window_start_ms FORMAT TSV"
        ))
        .unwrap();
    text.lines().map(String::from).collect()
}

#[test]
fn kafka_to_clickhouse_killed_10_times_equals_the_failure_free_run() {
    let broker = env_or_panic("STREAMFORGE_KAFKA", "kafka.sh");
    let url = env_or_panic("STREAMFORGE_CLICKHOUSE", "clickhouse.sh");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("orders.jsonl");
    let status = Command::new(BIN)
        .args([
            "generate", "orders", "--events", "60000", "--rate", "20", "--out",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let topic = common::unique("orders_stream");
    let status = Command::new(BIN)
        .args([
            "produce",
            "--topic",
            &topic,
            "--brokers",
            &broker,
            "--partitions",
            "2",
        ])
        .args(["--key-field", "order_id", "--quiet", "--input"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let dbs = [common::unique("orders_ref"), common::unique("orders_kill")];
    for db in &dbs {
        let ch = clickhouse(&url, db);
        ch.query(&format!("CREATE DATABASE {db}")).unwrap();
        for ddl in streamforge::operator_metrics::schema::clickhouse_ddl(db) {
            ch.query(&ddl).unwrap();
        }
    }
    let overrides = |db: &str, tag: &str, extra: &[String]| -> Vec<String> {
        let d = dir.path().display();
        let mut sets = vec![
            format!("source.topic='{topic}'"),
            format!("source.properties.\"bootstrap.servers\"='{broker}'"),
            format!("sinks.0.url='{url}'"),
            format!("sinks.0.database='{db}'"),
            format!("checkpoint.dir='{d}/{tag}-ckpt'"),
            "checkpoint.interval='100ms'".to_string(),
            format!("dead-letter='{d}/{tag}-anomalies'"),
        ];
        sets.extend(extra.iter().cloned());
        sets.into_iter()
            .flat_map(|s| ["--set".to_string(), s])
            .collect()
    };
    let reference = Command::new(BIN)
        .arg("run")
        .arg(job_file())
        .args(overrides(&dbs[0], "ref", &[]))
        .args(["-w", "2"])
        .output()
        .unwrap();
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let want = table_rows(&url, &dbs[0]);
    assert!(want.len() > 100, "{} rows", want.len());
    // The killed runs: the same job, throttled, as a job file with the overrides baked in.
    let mut value = streamforge::job::load_value(&job_file(), &[]).unwrap();
    let sets: Vec<(String, String)> = overrides(&dbs[1], "kill", &["rate-limit=5000".into()])
        .chunks(2)
        .map(|kv| {
            let (k, v) = kv[1].split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    let tmp = dir.path().join("base.toml");
    std::fs::write(&tmp, toml::to_string(&value).unwrap()).unwrap();
    value = streamforge::job::load_value(&tmp, &sets).unwrap();
    let job = dir.path().join("orders-kill.toml");
    std::fs::write(&job, toml::to_string(&value).unwrap()).unwrap();
    let report = common::kill_loop(
        &job,
        &dir.path().join("kill-ckpt"),
        10,
        0x0d,
        0..300,
        &[1, 2],
    );
    assert_eq!(report.restored.len(), 10, "every restart restored");
    assert!(
        report.last_output.contains("restored from checkpoint"),
        "{}",
        report.last_output
    );
    let got = table_rows(&url, &dbs[1]);
    assert_eq!(got.len(), want.len(), "rows");
    assert!(got == want, "the table differs from the failure-free run");
    let anomalies =
        |tag: &str| common::committed_lines(&dir.path().join(format!("{tag}-anomalies")));
    assert_eq!(anomalies("kill"), anomalies("ref"), "anomaly logs");

    // Replay 10 minutes from the middle of the input: the windows that
    // overlap it become those of the data arriving on time (the late orders
    // the live run dropped count now); the others stay as they were.
    let before = table_numbers(&url, &dbs[1]);
    let (all_on_time, _) = model_with(std::slice::from_ref(&input), false);
    let t1 = before[before.len() / 3].0;
    let t2 = t1 + 600_000;
    let replay = Command::new(BIN)
        .arg("replay")
        .arg(job_file())
        .args([
            "--from",
            &t1.to_string(),
            "--to",
            &t2.to_string(),
            "--input",
        ])
        .arg(&input)
        .args(overrides(&dbs[1], "replay", &[]))
        .args(["-w", "2"])
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let after = table_numbers(&url, &dbs[1]);
    let overlaps = |s: u64| s + 60_000 > t1 && s < t2;
    let mut want_after: Vec<(u64, u64, Decimal, u64)> =
        before.iter().filter(|r| !overlaps(r.0)).cloned().collect();
    want_after.extend(
        all_on_time
            .iter()
            .filter(|r| overlaps(r.0))
            .map(|r| (r.0, r.2, r.3, r.4)),
    );
    want_after.sort();
    assert_ne!(
        before, want_after,
        "the replayed range must have had late orders"
    );
    assert_eq!(after, want_after, "after the replay");
}

/// (window_start_ms, order_cnt, gmv_total, user_cnt) of the merged table.
fn table_numbers(url: &str, db: &str) -> Vec<(u64, u64, Decimal, u64)> {
    let text = clickhouse(url, db)
        .query(&format!(
            "SELECT window_start_ms, order_cnt, gmv_total, user_cnt \
             FROM `{db}`.orders_window_metrics FINAL ORDER BY window_start_ms FORMAT TSV"
        ))
        .unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                Decimal::from_str_exact(f[2]).unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}
