//! End to end against a real Kafka-protocol broker (Tansu, started by
//! scripts/test.sh; its address is in STREAMFORGE_KAFKA): the TrainTicket day
//! replayed into a 3-partition topic gives exactly the rows of the file run, at
//! 2 workers (JSON values) and as a 2-process cluster (CSV values); malformed
//! messages are dead-lettered with their coordinates; an idle partition does not
//! stall windows and a burst after idleness is processed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    assert_rows_eq, read_rows, run_cluster, shared_data, GENERATED_MAPPING, NEZHA_MAPPING,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use streamforge::dataflow::launch::ClusterArgs;
use streamforge::job::{self, JobConfig};

const BIN: &str = env!("CARGO_BIN_EXE_streamforge");

fn broker() -> String {
    std::env::var("STREAMFORGE_KAFKA").unwrap_or_else(|_| {
        panic!(
            "no Kafka broker: run scripts/test.sh (it installs and starts Tansu), or run \
             `scripts/kafka.sh start` and export the STREAMFORGE_KAFKA=host:port it prints"
        )
    })
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn producer() -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker())
        .create()
        .unwrap()
}

const TT_WINDOW: &str = r#"
[watermark]
out-of-orderness = "2m"
[window]
kind = "tumbling"
size = "60s"
"#;

fn produce_cli(topic: &str, input: &Path, format: &str) {
    let status = Command::new(BIN)
        .args([
            "produce",
            "--topic",
            topic,
            "--brokers",
            &broker(),
            "--partitions",
            "3",
            "--key-field",
            "PodName",
        ])
        .args(["--format", format, "--quiet", "--input"])
        .arg(input)
        .status()
        .unwrap();
    assert!(status.success());
}

fn count_messages(topic: &str, partitions: i32, want: usize) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker())
        .set("group.id", unique("count"))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let (mut n, mut last) = (0, Instant::now());
    while last.elapsed() < Duration::from_secs(3) && n < want + 1 {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            n += 1;
            last = Instant::now();
        }
    }
    n
}

#[test]
fn trainticket_through_the_broker_equals_the_file_run() {
    let spans = shared_data().join("nezha/trainticket/spans_2023-01-29.csv.gz");
    let dir = tempfile::tempdir().unwrap();
    // Reference: the file source.
    let file_job = format!(
        "name = \"file\"\n[source]\nkind = \"file\"\npaths = [\"{}\"]\n{NEZHA_MAPPING}{TT_WINDOW}[[sinks]]\nkind = \"jsonl\"\npath = \"file.jsonl\"\n",
        spans.display()
    );
    let s = job::run(
        &JobConfig::parse(&file_job).unwrap(),
        dir.path(),
        &ClusterArgs::default(),
    )
    .unwrap();
    assert_eq!((s.events, s.late), (328_848, 0));
    let expected = read_rows(&dir.path().join("file.jsonl"));

    // JSON values, 2 workers, Kafka sink, one malformed message.
    let spans_topic = unique("spans");
    let agg_topic = unique("flink_operator_agg_result");
    produce_cli(&spans_topic, &spans, "json");
    let p = producer();
    p.send(
        BaseRecord::<(), str>::to(&spans_topic)
            .partition(0)
            .payload("{\"PodName\": 3"),
    )
    .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    let kafka_job = format!(
        r#"name = "kafka"
dead-letter = "dead.jsonl"
[source]
kind = "kafka"
topic = "{spans_topic}"
bounded = true
[source.properties]
"bootstrap.servers" = "{broker}"
{NEZHA_MAPPING}{TT_WINDOW}
[[sinks]]
kind = "jsonl"
path = "kafka.jsonl"
[[sinks]]
kind = "kafka"
topic = "{agg_topic}"
key-fields = ["service", "operator_name"]
create-partitions = 3
[sinks.properties]
"bootstrap.servers" = "{broker}"
"#,
        broker = broker()
    );
    let config = JobConfig::parse(&kafka_job).unwrap();
    let s = job::run(
        &config,
        dir.path(),
        &ClusterArgs {
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        (s.events, s.dead_letters),
        (328_848, 1),
        "dead letters (first 3): {}",
        std::fs::read_to_string(dir.path().join("dead.jsonl"))
            .unwrap_or_default()
            .lines()
            .take(3)
            .map(|l| l.chars().take(400).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_rows_eq(
        &read_rows(&dir.path().join("kafka.jsonl")),
        &expected,
        "kafka (json, -w 2) vs file",
    );
    let dead: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.path().join("dead.jsonl"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(dead["source"], format!("{spans_topic}/0"));
    assert_eq!(dead["raw"], "{\"PodName\": 3");
    assert_eq!(s.kafka_delivered, expected.len() as u64);
    assert_eq!(
        count_messages(&agg_topic, 3, expected.len()),
        expected.len()
    );

    // CSV values, a 2-process cluster.
    let csv_topic = unique("spans-csv");
    produce_cli(&csv_topic, &spans, "csv");
    let csv_job = format!(
        r#"name = "kafka-csv"
[source]
kind = "kafka"
topic = "{csv_topic}"
bounded = true
format = "csv"
csv-columns = ["TraceID", "SpanID", "ParentID", "PodName", "OperationName", "StartTimeUnixNano", "EndTimeUnixNano", "Duration"]
[source.properties]
"bootstrap.servers" = "{broker}"
{NEZHA_MAPPING}{TT_WINDOW}
[[sinks]]
kind = "jsonl"
path = "{out}"
"#,
        broker = broker(),
        out = dir.path().join("cluster.jsonl").display()
    );
    run_cluster(dir.path(), "csv", &csv_job, 2, 1);
    assert_rows_eq(
        &read_rows(&dir.path().join("cluster.jsonl")),
        &expected,
        "kafka (csv, 2 processes) vs file",
    );
}

fn span_line(ts: u64, service: &str) -> String {
    format!(
        r#"{{"ts":{ts},"service":"{service}","operator":"op","duration_ms":1.5,"is_error":false}}"#
    )
}

fn rows_with(path: &Path, service: &str) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| l.contains(service)).count())
        .unwrap_or(0)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_idle_partition_does_not_stall_windows_and_a_burst_after_idleness_is_processed() {
    let topic = unique("idle");
    streamforge::connectors::kafka::ensure_topic(
        &[("bootstrap.servers".to_string(), broker())].into(),
        &topic,
        3,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rows = dir.path().join("rows.jsonl");
    let job = format!(
        r#"name = "idle"
[source]
kind = "kafka"
topic = "{topic}"
[source.properties]
"bootstrap.servers" = "{broker}"
{GENERATED_MAPPING}[watermark]
out-of-orderness = "1s"
idle-timeout = "1s"
[window]
kind = "tumbling"
size = "5s"
[[sinks]]
kind = "jsonl"
path = "{rows}"
"#,
        broker = broker(),
        rows = rows.display()
    );
    let job_path = dir.path().join("idle.toml");
    std::fs::write(&job_path, job).unwrap();
    let child = Command::new(BIN)
        .args(["run", job_path.to_str().unwrap(), "-w", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let p = producer();
    let t0 = 1_700_000_000_000u64;
    // 60 s of event time on partitions 0 and 1 only; partition 2 stays empty.
    for i in 0..6_000u64 {
        let line = span_line(t0 + i * 10, "steady");
        p.send(
            BaseRecord::<(), str>::to(&topic)
                .partition((i % 2) as i32)
                .payload(&line),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    wait_for(
        "windows to close while partition 2 is idle",
        Duration::from_secs(60),
        || rows_with(&rows, "steady") >= 10,
    );
    // After a pause, a burst on the idle partition, later in event time.
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..5_000u64 {
        let line = span_line(t0 + 120_000 + i * 10, "burst");
        p.send(
            BaseRecord::<(), str>::to(&topic)
                .partition(2)
                .payload(&line),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    wait_for(
        "windows of the burst to close",
        Duration::from_secs(60),
        || rows_with(&rows, "burst") >= 8,
    );
    drop(child);
    let burst: Vec<serde_json::Value> = std::fs::read_to_string(&rows)
        .unwrap()
        .lines()
        .filter(|l| l.contains("burst"))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Each closed burst window holds its 500 spans (10 ms apart, 5 s windows).
    assert!(burst.iter().all(|r| r["total_count"] == 500), "{burst:?}");
}

/// Kills the job when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn explicit_start_offsets_on_the_real_broker() {
    let topic = unique("ts-start");
    streamforge::connectors::kafka::ensure_topic(
        &[("bootstrap.servers".to_string(), broker())].into(),
        &topic,
        1,
    )
    .unwrap();
    let p = producer();
    for i in 0..100u64 {
        let line = span_line(1_000 * i, "s");
        p.send(
            BaseRecord::<(), str>::to(&topic)
                .payload(&line)
                .timestamp(1_700_000_000_000 + 1_000 * i as i64),
        )
        .unwrap();
        // One batch per message: Tansu 0.6 cannot fetch from inside a batch.
        p.flush(Duration::from_secs(10)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let run = |start: &str| {
        let job = format!(
            r#"name = "start"
[source]
kind = "kafka"
topic = "{topic}"
bounded = true
start = {start}
[source.properties]
"bootstrap.servers" = "{broker}"
{GENERATED_MAPPING}[window]
kind = "tumbling"
size = "60s"
"#,
            broker = broker()
        );
        job::run(
            &JobConfig::parse(&job).unwrap(),
            dir.path(),
            &ClusterArgs::default(),
        )
        .unwrap()
        .events
    };
    // Start by timestamp is not checked here: Tansu 0.6 answers OffsetsForTimes
    // with the earliest offset (and the mock cluster with the end offset).
    assert_eq!(run("{ offsets = [95] }"), 5);
    assert_eq!(run("\"earliest\""), 100);
}

/// Exactly-once from a Kafka source: the job over a 3-partition topic is killed
/// with SIGKILL 20 times at random moments and restored from its checkpoints
/// (offsets per partition); the committed rows equal a failure-free run's.
#[test]
fn kafka_source_kill_9_twenty_times_then_output_equals_the_failure_free_run() {
    const EVENTS: u64 = 400_000;
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("kill-spans");
    let status = Command::new(BIN)
        .args(["produce", "--topic", &topic, "--brokers", &broker()])
        .args(["--partitions", "3", "--key-field", "operator", "--quiet"])
        .args(["--generate", &EVENTS.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(count_messages(&topic, 3, EVENTS as usize), EVENTS as usize);
    let job = |out: &str, extra: &str| {
        format!(
            r#"name = "kafka-kill"
{extra}
[source]
kind = "kafka"
topic = "{topic}"
bounded = true
[source.properties]
"bootstrap.servers" = "{broker}"
{GENERATED_MAPPING}
[watermark]
out-of-orderness = "5s"
[window]
kind = "tumbling"
size = "10s"
[[sinks]]
kind = "jsonl"
path = "{out}"
"#,
            broker = broker()
        )
    };
    let reference = JobConfig::parse(&job("ref.jsonl", "")).unwrap();
    let s = job::run(&reference, dir.path(), &ClusterArgs::default()).unwrap();
    assert_eq!(s.events, EVENTS);
    let path = dir.path().join("job.toml");
    let text =
        job("out", "rate-limit = 10000") + "[checkpoint]\ndir = \"ckpt\"\ninterval = \"100ms\"\n";
    std::fs::write(&path, text).unwrap();
    let report = common::kill_loop(&path, &dir.path().join("ckpt"), 20, 0xcafe, 0..300, &[1, 2]);
    assert_eq!(report.restored.len(), 20, "every restart restored");
    assert!(
        report.last_output.contains("restored from checkpoint"),
        "{}",
        report.last_output
    );
    let want = common::file_lines(&dir.path().join("ref.jsonl"));
    let got = common::committed_lines(&dir.path().join("out"));
    assert!(want.len() > 1000);
    assert_eq!(got.len(), want.len(), "row count");
    assert!(got == want, "rows differ from the failure-free run");
}

/// The job publishes its hourly rules to a rule topic (key
/// `service|operator_name`); a second job reads that topic as its broadcast
/// rule stream and raises exactly the alerts of the first.
#[test]
fn rules_published_to_a_topic_drive_the_alerts_of_another_job() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("alarm_rule_topic");
    let day = |d: &str| {
        shared_data()
            .join(format!("nezha/trainticket/spans_{d}.csv.gz"))
            .display()
            .to_string()
    };
    let base = |name: &str, alerting: &str| {
        format!(
            "name = {name:?}\n[source]\nkind = \"file\"\npaths = [{:?}, {:?}]\n{NEZHA_MAPPING}\
             operator-class = {{ value = \"span\" }}\n[watermark]\nout-of-orderness = \"2m\"\n\
             idle-timeout = \"10s\"\n[window]\nkind = \"tumbling\"\nsize = \"60s\"\n\
             [alerting]\n{alerting}",
            day("2023-01-29"),
            day("2023-01-30")
        )
    };
    let publisher = base(
        "publisher",
        &format!(
            "[alerting.rules]\nkind = \"generated\"\n\
             [alerting.publish.kafka]\ntopic = {topic:?}\ncreate-partitions = 1\n\
             properties = {{ \"bootstrap.servers\" = {:?} }}\n\
             [[alerting.sinks]]\nkind = \"jsonl\"\npath = {:?}\n",
            broker(),
            dir.path().join("alerts-generated.jsonl")
        ),
    );
    let s = job::run(
        &JobConfig::parse(&publisher).unwrap(),
        dir.path(),
        &ClusterArgs::default(),
    )
    .unwrap();
    assert!(s.rules_published > 1000, "{s:?}");
    assert_eq!(
        count_messages(&topic, 1, s.rules_published as usize),
        s.rules_published as usize
    );
    let reader = base(
        "reader",
        &format!(
            "[alerting.rules]\nkind = \"kafka\"\ntopic = {topic:?}\nbounded = true\n\
             properties = {{ \"bootstrap.servers\" = {:?} }}\n\
             [[alerting.sinks]]\nkind = \"jsonl\"\npath = {:?}\n",
            broker(),
            dir.path().join("alerts-topic.jsonl")
        ),
    );
    let r = job::run(
        &JobConfig::parse(&reader).unwrap(),
        dir.path(),
        &ClusterArgs {
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let a = common::file_lines(&dir.path().join("alerts-generated.jsonl"));
    let b = common::file_lines(&dir.path().join("alerts-topic.jsonl"));
    assert!(a.len() > 500, "{}", a.len());
    assert_eq!(a, b);
    assert_eq!(r.alerts, s.alerts);
}
