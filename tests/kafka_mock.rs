//! Kafka source and sink against librdkafka's mock cluster (in-process): the
//! aggregates of a 3-partition topic equal those of the file run of the same
//! data, malformed messages are dead-lettered with topic/partition/offset, and
//! the transactional sink's calls go through (the mock's transactions are not
//! real; the real-broker tests are in kafka_e2e.rs).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{assert_rows_eq, read_rows, GENERATED_MAPPING};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use streamforge::dataflow::launch::ClusterArgs;
use streamforge::job::{self, JobConfig};
use streamforge::sources::GeneratorConfig;
use streamforge::tools::produce::{produce, ProduceInput, ProduceOptions, ValueFormat};

const WINDOW: &str = r#"
[watermark]
out-of-orderness = "3s"
[window]
kind = "tumbling"
size = "60s"
"#;

fn props(brokers: &str) -> BTreeMap<String, String> {
    [("bootstrap.servers".to_string(), brokers.to_string())].into()
}

#[test]
fn kafka_topic_gives_the_same_rows_as_the_file_and_dead_letters_have_coordinates() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("spans", 3, 1).unwrap();
    cluster
        .create_topic("flink_operator_agg_result", 2, 1)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut g = GeneratorConfig::with_events(30_000);
    g.events_per_second = 100.0;
    let file = dir.path().join("spans.jsonl");
    g.write_jsonl(&mut std::fs::File::create(&file).unwrap())
        .unwrap();
    let sent = produce(&ProduceOptions {
        topic: "spans".into(),
        properties: props(&brokers),
        input: ProduceInput::File(file.clone()),
        rate: None,
        key_field: Some("service".into()),
        partitions: None,
        format: ValueFormat::Json,
        progress: false,
    })
    .unwrap();
    assert_eq!(sent, 30_000);
    // Two malformed messages into partition 1.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for bad in ["{not json", r#"{"ts": 1, "service": "x"}"#] {
        producer
            .send(BaseRecord::<(), str>::to("spans").partition(1).payload(bad))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let file_job = format!(
        "name = \"file\"\n[source]\nkind = \"file\"\npaths = [\"{}\"]\n{GENERATED_MAPPING}{WINDOW}[[sinks]]\nkind = \"jsonl\"\npath = \"file.jsonl\"\n",
        file.display()
    );
    let config = JobConfig::parse(&file_job).unwrap();
    let s = job::run(&config, dir.path(), &ClusterArgs::default()).unwrap();
    assert_eq!(s.late, 0, "the reference run has no late records");

    let kafka_job = format!(
        r#"name = "kafka"
dead-letter = "dead.jsonl"
[source]
kind = "kafka"
topic = "spans"
bounded = true
[source.properties]
"bootstrap.servers" = "{brokers}"
{GENERATED_MAPPING}{WINDOW}
[[sinks]]
kind = "jsonl"
path = "kafka.jsonl"
[[sinks]]
kind = "kafka"
topic = "flink_operator_agg_result"
key-fields = ["service", "operator_name"]
[sinks.properties]
"bootstrap.servers" = "{brokers}"
"#
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
    assert_eq!(s.events, 30_000);
    assert_eq!(s.dead_letters, 2);
    assert_eq!(s.kafka_delivered, s.rows);
    let expected = read_rows(&dir.path().join("file.jsonl"));
    assert_rows_eq(
        &read_rows(&dir.path().join("kafka.jsonl")),
        &expected,
        "kafka vs file",
    );

    let dead = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    let dead: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(dead.iter().all(|d| d["source"] == "spans/1"), "{dead:?}");
    let mut offsets: Vec<u64> = dead
        .iter()
        .map(|d| d["position"].as_u64().unwrap())
        .collect();
    offsets.sort();
    assert_eq!(
        offsets[1],
        offsets[0] + 1,
        "consecutive offsets at the end of partition 1"
    );
    assert!(dead.iter().any(|d| d["raw"] == "{not json"));

    // The sink topic holds one keyed message per row.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "check")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["flink_operator_agg_result"]).unwrap();
    let mut got = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got < expected.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let row: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let key = format!(
                "{}|{}",
                row["service"].as_str().unwrap(),
                row["operator_name"].as_str().unwrap()
            );
            assert_eq!(m.key().unwrap(), key.as_bytes());
            got += 1;
        }
    }
    assert_eq!(got, expected.len());
}

#[test]
fn transactional_sink_runs_its_transaction_calls() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("rows", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = format!(
        r#"name = "txn"
[source]
kind = "generator"
events = 5000
[window]
kind = "tumbling"
size = "60s"
[[sinks]]
kind = "kafka"
topic = "rows"
transactional-id = "sf-test"
[sinks.properties]
"bootstrap.servers" = "{brokers}"
"#
    );
    let config = JobConfig::parse(&job).unwrap();
    let s = job::run(
        &config,
        dir.path(),
        &ClusterArgs {
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.rows > 0);
    assert_eq!(s.kafka_delivered, s.rows, "every row acknowledged");
}

/// With checkpoints, the transactional sink commits one transaction per
/// completed checkpoint that has records (the write-ahead-log sink), and the
/// topic holds exactly the JSONL sink's rows (the mock's transactions are not
/// real, so only a failure-free run is checked here).
#[test]
fn checkpointed_transactional_sink_commits_per_checkpoint() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("rows-eo", 2, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let job = format!(
        r#"name = "txn-eo"
rate-limit = 150000
[checkpoint]
dir = "ckpt"
interval = "100ms"
[source]
kind = "generator"
events = 200000
partitions = 2
[window]
kind = "tumbling"
size = "10s"
[[sinks]]
kind = "jsonl"
path = "rows"
[[sinks]]
kind = "kafka"
topic = "rows-eo"
key-fields = ["service", "operator_name"]
transactional-id = "sf-eo"
[sinks.properties]
"bootstrap.servers" = "{brokers}"
"#
    );
    let config = JobConfig::parse(&job).unwrap();
    let s = job::run(
        &config,
        dir.path(),
        &ClusterArgs {
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(s.rows > 0);
    assert_eq!(s.kafka_delivered, s.rows, "every row sent once");
    assert!(
        s.kafka_transactions > 2,
        "one transaction per checkpoint with rows: {}",
        s.kafka_transactions
    );
    let expected = streamforge::sinks::read_committed(&dir.path().join("rows")).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "check-eo")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&["rows-eo"]).unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while got.len() < expected.len() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    // Nothing more arrives.
    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
        panic!("an extra record: {:?}", m.payload_view::<str>());
    }
    // Compared as JSON values (the Kafka sink writes keys in sorted order).
    let canon = |lines: &[String]| {
        let mut v: Vec<String> = lines
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap()
                    .to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(got.len(), expected.len());
    assert!(
        canon(&got) == canon(&expected),
        "kafka rows differ from the committed JSONL rows"
    );
}

/// Reads `topic` (1 partition) from `start` (TOML value) and returns the number
/// of events read.
pub fn read_from(brokers: &str, topic: &str, start: &str, extra: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let job = format!(
        r#"name = "start"
[source]
kind = "kafka"
topic = "{topic}"
bounded = true
start = {start}
{extra}
[source.properties]
"bootstrap.servers" = "{brokers}"
{GENERATED_MAPPING}{WINDOW}"#
    );
    let config = JobConfig::parse(&job).unwrap();
    job::run(&config, dir.path(), &ClusterArgs::default())
        .unwrap()
        .events
}

#[test]
fn start_positions_and_group_commits() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("pos", 1, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for i in 0..100u64 {
        let line = format!(
            r#"{{"ts":{},"service":"s","operator":"o","duration_ms":1,"is_error":false}}"#,
            1_000 * i
        );
        producer
            .send(
                BaseRecord::<(), str>::to("pos")
                    .payload(&line)
                    .timestamp(1_000 * i as i64),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    assert_eq!(read_from(&brokers, "pos", "\"earliest\"", ""), 100);
    assert_eq!(read_from(&brokers, "pos", "\"latest\"", ""), 0);
    assert_eq!(read_from(&brokers, "pos", "{ offsets = [60] }", ""), 40);
    // (Start by timestamp is tested against the real broker: the mock cluster
    // answers offsets-for-times with the end offset.)
    // Group commit (lag monitoring): the consumed position is committed.
    let events = read_from(
        &brokers,
        "pos",
        "\"earliest\"",
        "group-id = \"lag\"\ncommit-offsets = true",
    );
    assert_eq!(events, 100);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "lag")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("pos", 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let offset = committed.elements()[0].offset();
    drop(committed);
    assert_eq!(offset, rdkafka::Offset::Offset(100));
}

fn sink_job(brokers: &str, topic: &str) -> JobConfig {
    JobConfig::parse(&format!(
        r#"name = "sink-errors"
[source]
kind = "generator"
events = 3000
[window]
kind = "tumbling"
size = "60s"
[[sinks]]
kind = "kafka"
topic = "{topic}"
[sinks.properties]
"bootstrap.servers" = "{brokers}"
"#
    ))
    .unwrap()
}

#[test]
fn sink_delivery_errors_are_retried_and_persistent_ones_stop_the_job() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("flaky", 1, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // One rejected produce request: its records fail, are re-sent, and land.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD],
    );
    let s = job::run(
        &sink_job(&brokers, "flaky"),
        dir.path(),
        &ClusterArgs::default(),
    )
    .unwrap();
    assert!(s.kafka_delivery_errors > 0, "the error was seen: {s:?}");
    assert_eq!(
        s.kafka_delivered, s.rows,
        "every row delivered after the retry"
    );
    // Every produce request rejected: the job fails instead of dropping rows.
    cluster.create_topic("broken", 1, 1).unwrap();
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 200],
    );
    let err = job::run(
        &sink_job(&brokers, "broken"),
        dir.path(),
        &ClusterArgs::default(),
    );
    assert!(
        err.is_err(),
        "a persistent delivery failure must stop the job"
    );
}

/// Flow control on a real librdkafka consumer: partition 0's event time runs
/// 100× faster than partition 1's, each read by its own worker at 10 k
/// records/s. The fast partition is held back for as long as the slow one
/// needs, paused in librdkafka, resumed, and the rows are those of the model
/// (both partitions in order: nothing is late).
#[test]
fn a_skewed_kafka_partition_is_paused_and_resumed_with_the_same_rows() {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    use streamforge::dataflow::flow_control::FlowSettings;
    use streamforge::operators::{Count, Tumbling};

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct Rec {
        ts: u64,
        k: u64,
    }
    const N: u64 = 20_000;
    let ts = |p: u64, i: u64| if p == 0 { i * 100 } else { i };
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("skew", 2, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let mut model = BTreeMap::<(u64, u64), u64>::new();
    for i in 0..N {
        for p in 0..2u64 {
            let r = Rec {
                ts: ts(p, i),
                k: i % 50,
            };
            *model.entry((r.k, r.ts - r.ts % 1_000)).or_default() += 1;
            let value = serde_json::to_string(&r).unwrap();
            while producer
                .send(
                    BaseRecord::<(), _>::to("skew")
                        .partition(p as i32)
                        .payload(&value),
                )
                .is_err()
            {
                producer.poll(Duration::from_millis(10));
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let config: streamforge::sources::KafkaSourceConfig = toml::from_str(&format!(
        "topic = \"skew\"\nbounded = true\n[properties]\n\"bootstrap.servers\" = \"{brokers}\"\n"
    ))
    .unwrap();
    streamforge::dataflow::metrics::clear();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let mut options = JobOptions::new("skew-kafka")
        .workers(2)
        .flow_control(FlowSettings {
            watermark_slack_ms: Some(1_000),
            ..FlowSettings::default()
        });
    options.rate_limit = Some(10_000);
    let summary = execute(&options, move |env| {
        let g = g.clone();
        env.from_kafka(
            "skew-source",
            &config,
            WatermarkStrategy::for_bounded_out_of_orderness_ms(0),
            |r: &Rec| r.ts,
        )?
        .key_by(|r| r.k)
        .window(Tumbling::new(1_000))
        .aggregate("skew-count", Count)
        .results
        .sink_fn("rows", move |_, r| {
            g.lock()
                .unwrap()
                .push(((r.key, r.window.start_ms), r.value));
        });
        Ok(())
    })
    .unwrap();
    assert_eq!(summary.events, 2 * N);
    assert_eq!(summary.late, 0);
    let rows: BTreeMap<(u64, u64), u64> = got.lock().unwrap().iter().cloned().collect();
    assert_eq!(rows, model);
    let source: Vec<_> = streamforge::dataflow::metrics::snapshot()
        .into_iter()
        .filter(|(op, _, _)| op == "skew-source")
        .map(|(_, _, m)| m)
        .collect();
    let sum = |f: &dyn Fn(&streamforge::dataflow::metrics::OperatorMetrics) -> u64| -> u64 {
        source.iter().map(|m| f(m)).sum()
    };
    assert!(
        sum(&|m| m.throttled_ns.load(Ordering::Relaxed)) > 500_000_000,
        "the fast partition waited for the slow one"
    );
    assert!(
        sum(&|m| m.reader_pauses.load(Ordering::Relaxed)) >= 1,
        "paused in librdkafka"
    );
    assert!(
        source
            .iter()
            .all(|m| m.paused_partitions.load(Ordering::Relaxed) == 0),
        "and resumed"
    );
}
