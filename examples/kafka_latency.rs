//! Produce → result latency of the main job through a real broker.
//!
//! Produces generated spans stamped with the current time into a 3-partition
//! topic at a fixed rate, runs the main job (1 s tumbling windows, no
//! out-of-orderness) as a child process with a Kafka sink, and measures for every
//! result row `arrival time − window end`: the time from the moment the last
//! span of a window could have been produced to its row being readable.
//!
//! `cargo run --release --example kafka_latency -- 127.0.0.1:19092 100000 20 2`
//! (brokers, spans per second, seconds, workers, consumer fetch.wait.max.ms)

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let brokers = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:19092".into());
    let rate: u64 = args.get(2).map_or(100_000, |a| a.parse().unwrap());
    let seconds: u64 = args.get(3).map_or(20, |a| a.parse().unwrap());
    let workers = args.get(4).cloned().unwrap_or_else(|| "2".into());
    let fetch_wait = args.get(5).cloned().unwrap_or_else(|| "10".into());
    let stamp = now_ms();
    let (input, output) = (format!("lat-in-{stamp}"), format!("lat-out-{stamp}"));
    let props = [("bootstrap.servers".to_string(), brokers.clone())].into();
    streamforge::connectors::kafka::ensure_topic(&props, &input, 3).unwrap();
    streamforge::connectors::kafka::ensure_topic(&props, &output, 1).unwrap();
    let dir = std::env::temp_dir().join(format!("sf-latency-{stamp}"));
    std::fs::create_dir_all(&dir).unwrap();
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"name = "latency"
[source]
kind = "kafka"
topic = "{input}"
[source.properties]
"bootstrap.servers" = "{brokers}"
"fetch.wait.max.ms" = "{fetch_wait}"
[source.mapping]
event-time = {{ field = "ts", unit = "ms" }}
service = {{ field = "service" }}
operator-name = {{ field = "operator" }}
duration = {{ field = "duration_ms", unit = "ms" }}
is-error = {{ field = "is_error" }}
[watermark]
out-of-orderness = "0s"
idle-timeout = "1s"
[window]
kind = "tumbling"
size = "1s"
[[sinks]]
kind = "kafka"
topic = "{output}"
key-fields = ["service", "operator_name"]
[sinks.properties]
"bootstrap.servers" = "{brokers}"
"linger.ms" = "0"
"#
        ),
    )
    .unwrap();
    let exe = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("streamforge");
    let mut child = Command::new(exe)
        .args(["run", job.to_str().unwrap(), "-w", &workers])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let out_brokers = brokers.clone();
    let reader = std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &out_brokers)
            .set("group.id", "latency")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&output, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut latencies = vec![];
        let mut last = Instant::now();
        while last.elapsed() < Duration::from_secs(5) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) {
                let row: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                let end = row["window_start_ms"].as_u64().unwrap() + 1000;
                latencies.push(now_ms() as i64 - end as i64);
                last = Instant::now();
            }
        }
        latencies
    });

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let services = [
        "cart", "checkout", "payment", "shipping", "email", "ad", "auth", "order",
    ];
    let start = Instant::now();
    let total = rate * seconds;
    for i in 0..total {
        if i % 1000 == 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            producer.poll(Duration::ZERO);
        }
        let s = services[(i % 8) as usize];
        let line = format!(
            r#"{{"ts":{},"service":"{s}","operator":"GET /{s}/op{}","duration_ms":1.5,"is_error":false}}"#,
            now_ms(),
            i % 5
        );
        let key = format!("{s}{}", i % 5);
        loop {
            match producer.send(BaseRecord::to(&input).key(&key).payload(&line)) {
                Ok(()) => break,
                Err(_) => producer.poll(Duration::from_millis(1)),
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    let mut lat = reader.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    lat.sort();
    let n = lat.len();
    let pct = |p: f64| lat[((n as f64 - 1.0) * p) as usize];
    println!(
        "rate {achieved:.0}/s for {seconds}s, {n} rows: latency ms p50 {} p99 {} max {}",
        pct(0.5),
        pct(0.99),
        lat[n - 1]
    );
}
