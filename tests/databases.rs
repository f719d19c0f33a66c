//! ClickHouse and PostgreSQL sinks against real servers (started by
//! scripts/test.sh with scripts/clickhouse.sh and scripts/postgres.sh): the
//! main job on the Nezha TrainTicket spans writes into both, the rows read back
//! equal the JSONL sink's rows exactly, a 30 s outage of both servers mid-run
//! loses and duplicates nothing, and schema mismatches are clear errors.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{assert_rows_eq, read_rows, shared_data, sort_rows, NEZHA_MAPPING};
use streamforge::dataflow::launch::ClusterArgs;
use streamforge::job::{self, JobConfig, JobSummary};
use streamforge::operator_metrics::schema;
use streamforge::operator_metrics::OperatorAggRow;
use streamforge::sinks::clickhouse::{ClickHouse, ClickHouseSinkConfig};
use streamforge::sinks::postgres;

/// The outage test stops the servers: the other tests wait for it.
static SERVERS: Mutex<()> = Mutex::new(());

fn clickhouse_url() -> String {
    std::env::var("STREAMFORGE_CLICKHOUSE").unwrap_or_else(|_| {
        panic!(
            "no ClickHouse server: run scripts/test.sh (it installs and starts one), or run \
             `scripts/clickhouse.sh start` and export the STREAMFORGE_CLICKHOUSE=… it prints"
        )
    })
}

fn postgres_url() -> String {
    std::env::var("STREAMFORGE_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "no PostgreSQL server: run scripts/test.sh (it installs and starts one), or run \
             `scripts/postgres.sh start` and export the STREAMFORGE_POSTGRES=… it prints"
        )
    })
}

fn clickhouse(db: &str) -> ClickHouse {
    let config: ClickHouseSinkConfig = toml::from_str(&format!(
        "url = {:?}\ndatabase = {db:?}\ntable = \"flink_operator_agg_result\"",
        clickhouse_url()
    ))
    .unwrap();
    ClickHouse::new(&config, Default::default()).unwrap()
}

/// A fresh ClickHouse database and PostgreSQL schema with the seed tables.
fn fresh_tables(name: &str) -> String {
    let ch = clickhouse(name);
    ch.query(&format!("CREATE DATABASE IF NOT EXISTS {name}"))
        .unwrap();
    for s in schema::clickhouse_ddl(name) {
        ch.query(&s).unwrap();
    }
    let ddl = schema::postgres_ddl().join(";\n");
    postgres::execute(
        &postgres_url(),
        &format!("CREATE SCHEMA {name}; SET search_path TO {name}; {ddl}"),
    )
    .unwrap();
    name.to_string()
}

/// The main job on a TrainTicket day with JSONL, ClickHouse (optional) and
/// PostgreSQL sinks.
fn job_toml(name: &str, extra: &str, with_clickhouse: bool) -> String {
    let spans = shared_data().join("nezha/trainticket/spans_2023-01-29.csv.gz");
    let ch = if with_clickhouse {
        format!(
            r#"[[sinks]]
kind = "clickhouse"
url = "{}"
database = "{name}"
table = "flink_operator_agg_result"
batch-rows = 5000
"#,
            clickhouse_url()
        )
    } else {
        String::new()
    };
    format!(
        r#"name = "{name}"
{extra}
[source]
kind = "file"
paths = ["{spans}"]
{NEZHA_MAPPING}
[watermark]
out-of-orderness = "2m"
[window]
kind = "tumbling"
size = "22s"
[[sinks]]
kind = "jsonl"
path = "rows"
{ch}[[sinks]]
kind = "postgres"
url = "{pg}"
table = "{name}.flink_operator_agg_result"
key-columns = ["window_start_ms", "windowSize", "service", "operator_name", "operator_class"]
batch-rows = 5000
"#,
        spans = spans.display(),
        pg = postgres_url(),
    )
}

fn run(dir: &Path, toml: &str, workers: usize) -> JobSummary {
    let config = JobConfig::parse(toml).unwrap();
    job::run(
        &config,
        dir,
        &ClusterArgs {
            workers,
            ..Default::default()
        },
    )
    .unwrap()
}

fn jsonl_rows(path: &Path) -> Vec<OperatorAggRow> {
    if path.is_dir() {
        let mut rows: Vec<OperatorAggRow> = streamforge::sinks::read_committed(path)
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        sort_rows(&mut rows);
        rows
    } else {
        read_rows(path)
    }
}

/// Rows of both databases, sorted; also checks that ClickHouse holds no
/// duplicate key after merging and PostgreSQL none at all (primary key).
fn database_rows(name: &str) -> (Vec<OperatorAggRow>, Vec<OperatorAggRow>) {
    let table = format!("{name}.flink_operator_agg_result");
    let mut ch = schema::read_agg_rows_clickhouse(&clickhouse(name), &table, 100_000).unwrap();
    sort_rows(&mut ch);
    let mut pg = schema::read_agg_rows_postgres(&postgres_url(), &table, 100_000).unwrap();
    sort_rows(&mut pg);
    (ch, pg)
}

#[test]
fn trainticket_rows_in_clickhouse_and_postgres_equal_the_jsonl_rows() {
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let name = fresh_tables(&common::unique("rows"));
    let s = run(dir.path(), &job_toml(&name, "", true), 2);
    assert!(s.rows > 40_000, "{s:?}");
    assert_eq!(s.clickhouse_rows, s.rows);
    assert_eq!(s.postgres_rows, s.rows);
    let want = jsonl_rows(&dir.path().join("rows"));
    assert_eq!(want.len() as u64, s.rows);
    let (ch, pg) = database_rows(&name);
    assert_rows_eq(&ch, &want, "clickhouse vs jsonl");
    assert_rows_eq(&pg, &want, "postgres vs jsonl");
}

fn script(name: &str, arg: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(root.join("scripts").join(name))
        .arg(arg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With checkpoints, both servers stopped for 30 s mid-run: the job waits
/// (retrying with backoff), resumes, and the tables and the committed JSONL
/// rows end equal to a failure-free run's, each row once.
#[test]
fn a_30_second_outage_of_both_databases_loses_and_duplicates_nothing() {
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let name = fresh_tables(&common::unique("outage"));
    // ~16 s of input at 10k spans/s per worker.
    let toml = job_toml(
        &name,
        "rate-limit = 10000\n[checkpoint]\ndir = \"ckpt\"\ninterval = \"500ms\"",
        true,
    );
    let path = dir.path().to_path_buf();
    let started = Instant::now();
    let job = std::thread::spawn(move || run(&path, &toml, 2));
    std::thread::sleep(Duration::from_secs(4));
    let table = format!("{name}.flink_operator_agg_result");
    let before: i64 = postgres::select_json(
        &postgres_url(),
        &format!("SELECT to_json(count(*))::text FROM {table}"),
    )
    .unwrap()[0]
        .as_i64()
        .unwrap();
    assert!(before > 0, "rows were committed before the outage");
    script("clickhouse.sh", "stop");
    script("postgres.sh", "stop");
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    // ~16 s of input: a job that did not wait for its sinks would be done.
    let waited = !job.is_finished();
    let elapsed = started.elapsed();
    script("clickhouse.sh", "start");
    script("postgres.sh", "start");
    let s = job.join().unwrap();
    assert!(s.database_retries > 0, "the sinks saw the outage: {s:?}");
    assert!(
        waited,
        "the job was still waiting for the databases {elapsed:?} after it started, {:?} into the outage",
        down.elapsed()
    );
    let want = failure_free_rows(&name);
    assert_eq!(want.len() as u64, s.rows);
    assert_rows_eq(
        &jsonl_rows(&dir.path().join("rows")),
        &want,
        "committed jsonl vs failure-free after the outage",
    );
    let (ch, pg) = database_rows(&name);
    assert_rows_eq(&ch, &want, "clickhouse vs failure-free after the outage");
    assert_rows_eq(&pg, &want, "postgres vs failure-free after the outage");
    // PostgreSQL: each checkpoint committed once (the marker table agrees).
    assert_eq!(
        s.postgres_rows, s.rows,
        "no re-commit in a run without restore"
    );
}

#[test]
fn schema_mismatches_are_clear_errors_before_the_job_starts() {
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let name = common::unique("schema");
    let ch = clickhouse(&name);
    ch.query(&format!("CREATE DATABASE {name}")).unwrap();
    ch.query(&format!(
        "CREATE TABLE {name}.flink_operator_agg_result (window_start DateTime, service String) \
         ENGINE = MergeTree ORDER BY window_start"
    ))
    .unwrap();
    postgres::execute(
        &postgres_url(),
        &format!(
            "CREATE SCHEMA {name}; CREATE TABLE {name}.flink_operator_agg_result \
             (window_start timestamp, service text)"
        ),
    )
    .unwrap();
    let toml = job_toml(&name, "", true);
    let err = job::run(
        &JobConfig::parse(&toml).unwrap(),
        dir.path(),
        &ClusterArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("schema mismatch"), "{err}");
    assert!(
        err.contains("windowSize") && err.contains("clickhouse"),
        "{err}"
    );
    // Without the ClickHouse sink, PostgreSQL's check speaks.
    let err = job::run(
        &JobConfig::parse(&job_toml(&name, "", false)).unwrap(),
        dir.path(),
        &ClusterArgs::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("schema mismatch") && err.contains("postgres"),
        "{err}"
    );
    assert!(err.contains("windowSize"), "{err}");
}

/// The rows of a failure-free run of the job of `job_toml` (no checkpoints,
/// no kills, its JSONL sink only), at 2 workers.
fn failure_free_rows(name: &str) -> Vec<OperatorAggRow> {
    let dir = tempfile::tempdir().unwrap();
    let toml = job_toml(name, "", false);
    let end = toml
        .find("[[sinks]]\nkind = \"postgres\"")
        .expect("the postgres sink");
    run(dir.path(), &toml[..end], 2);
    jsonl_rows(&dir.path().join("rows"))
}

/// With checkpoints, `kill -9` ten times at random moments (restarts with 1
/// or 2 workers, so writers are taken over across rescaling): the tables and
/// the committed JSONL rows end equal to a failure-free run's rows — the
/// write-ahead log re-commits what a crash interrupted, PostgreSQL's marker
/// skips what was already committed.
#[test]
fn kill_9_ten_times_then_the_tables_equal_the_committed_rows() {
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let name = fresh_tables(&common::unique("kill"));
    let toml = job_toml(
        &name,
        "rate-limit = 10000\n[checkpoint]\ndir = \"ckpt\"\ninterval = \"100ms\"",
        true,
    );
    let job = dir.path().join("job.toml");
    std::fs::write(&job, toml).unwrap();
    let report = common::kill_loop(&job, &dir.path().join("ckpt"), 10, 0xdb, 0..400, &[1, 2]);
    assert!(
        report.last_output.contains("restored from checkpoint"),
        "{}",
        report.last_output
    );
    assert_eq!(report.restored.len(), 10, "every restarted run restored");
    let want = failure_free_rows(&name);
    assert!(want.len() > 40_000, "{}", want.len());
    assert_rows_eq(
        &jsonl_rows(&dir.path().join("rows")),
        &want,
        "committed jsonl vs failure-free after 10 kills",
    );
    let (ch, pg) = database_rows(&name);
    assert_rows_eq(&ch, &want, "clickhouse vs failure-free after 10 kills");
    assert_rows_eq(&pg, &want, "postgres vs failure-free after 10 kills");
    // Every writer's marker is at a real checkpoint of this run.
    let markers = postgres::select_json(
        &postgres_url(),
        &format!(
            "SELECT to_json(checkpoint)::text FROM streamforge_sink_commits WHERE sink = '{name}/{name}.flink_operator_agg_result'"
        ),
    )
    .unwrap();
    assert!(!markers.is_empty());
}

/// A crash exactly between a checkpoint's manifest and the sinks' commit (the
/// test hook aborts before worker 0's third commit): the restore re-commits
/// that checkpoint's logged rows, and the tables end equal to the JSONL rows.
#[test]
fn a_crash_between_manifest_and_commit_is_recommitted_on_restore() {
    let _servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let name = fresh_tables(&common::unique("recommit"));
    let toml = job_toml(
        &name,
        "rate-limit = 20000\n[checkpoint]\ndir = \"ckpt\"\ninterval = \"200ms\"",
        true,
    );
    let job = dir.path().join("job.toml");
    std::fs::write(&job, toml).unwrap();
    let exe = env!("CARGO_BIN_EXE_streamforge");
    let crashed = Command::new(exe)
        .arg("run")
        .arg(&job)
        .args(["-w", "2"])
        .env(streamforge::sinks::write_ahead::CRASH_BEFORE_COMMIT, "3")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&crashed.stderr);
    assert!(!crashed.status.success(), "the hook aborted the run");
    assert!(stderr.contains("aborting before committing"), "{stderr}");
    let resumed = Command::new(exe)
        .arg("run")
        .arg(&job)
        .args(["-w", "1", "--restore", "latest"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("re-committing"),
        "the restore re-committed: {stderr}"
    );
    assert!(
        common::restored_id(&stderr).is_some(),
        "the second run restored: {stderr}"
    );
    let want = failure_free_rows(&name);
    assert_rows_eq(
        &jsonl_rows(&dir.path().join("rows")),
        &want,
        "committed jsonl vs failure-free after the re-commit",
    );
    let (ch, pg) = database_rows(&name);
    assert_rows_eq(&ch, &want, "clickhouse vs failure-free after the re-commit");
    assert_rows_eq(&pg, &want, "postgres vs failure-free after the re-commit");
}
