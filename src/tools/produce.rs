//! `streamforge produce`: replay a file (CSV or JSONL, plain or gzip) or the
//! generator into a Kafka topic, at a given rate or as fast as possible.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use streamforge_sources::kafka::client_config;
use streamforge_sources::GeneratorConfig;

use crate::connectors::kafka::{ensure_topic, kafka_error};
use crate::error::Error;

/// What to replay.
#[derive(Clone, Debug)]
pub enum ProduceInput {
    /// A CSV (with header) or JSONL file, optionally gzip.
    File(PathBuf),
    /// The span generator.
    Generator(GeneratorConfig),
}

/// Value format of produced messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueFormat {
    /// One JSON object per message (CSV rows become objects keyed by the header).
    Json,
    /// CSV rows as they are, without the header (CSV input only).
    Csv,
}

/// A replay.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    /// Topic.
    pub topic: String,
    /// librdkafka properties (at least `bootstrap.servers`).
    pub properties: BTreeMap<String, String>,
    /// Input.
    pub input: ProduceInput,
    /// Messages per second; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Field whose value is the message key.
    pub key_field: Option<String>,
    /// Create the topic with this many partitions if it does not exist.
    pub partitions: Option<i32>,
    /// Value format.
    pub format: ValueFormat,
    /// Show a progress bar.
    pub progress: bool,
}

fn open(path: &Path) -> Result<Box<dyn BufRead>, Error> {
    let f = std::fs::File::open(path)?;
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let raw: Box<dyn Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, raw)))
}

/// Replays the input into the topic; returns the number of messages sent.
///
/// # Errors
/// Unreadable input, an unreachable broker, or messages that could not be
/// delivered.
pub fn produce(opts: &ProduceOptions) -> Result<u64, Error> {
    if let Some(p) = opts.partitions {
        ensure_topic(&opts.properties, &opts.topic, p)?;
    }
    let mut config = client_config(&opts.properties)?;
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .map_err(|e| kafka_error(&opts.topic, e))?;
    let bar = if opts.progress {
        let total = match &opts.input {
            ProduceInput::Generator(g) => g.events,
            ProduceInput::File(_) => 0,
        };
        let bar = if total > 0 {
            ProgressBar::new(total)
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed} [{bar:40}] {pos}/{len} msgs {per_sec}",
            )
            .expect("valid template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let mut sent = 0u64;
    let mut emit = |key: Option<&str>, value: &[u8]| -> Result<(), Error> {
        if let Some(rate) = opts.rate {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                producer.poll(Duration::ZERO);
                std::thread::sleep(due - now);
            }
        }
        loop {
            let mut record = BaseRecord::<str, [u8]>::to(&opts.topic).payload(value);
            if let Some(k) = key {
                record = record.key(k);
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(kafka_error(&opts.topic, e)),
            }
        }
        sent += 1;
        if sent % 4096 == 0 {
            producer.poll(Duration::ZERO);
            bar.set_position(sent);
        }
        Ok(())
    };
    match &opts.input {
        ProduceInput::Generator(g) => {
            let mut buf = Vec::new();
            g.write_jsonl(&mut buf)?;
            for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let key = opts.key_field.as_ref().and_then(|k| json_field(line, k));
                emit(key.as_deref(), line)?;
            }
        }
        ProduceInput::File(path) => {
            let is_csv = path
                .to_string_lossy()
                .to_ascii_lowercase()
                .trim_end_matches(".gz")
                .ends_with(".csv");
            let reader = open(path)?;
            if is_csv {
                let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
                let header = csv
                    .headers()
                    .map_err(|e| Error::Invalid(e.to_string()))?
                    .clone();
                let key_idx = opts
                    .key_field
                    .as_ref()
                    .and_then(|k| header.iter().position(|h| h == k));
                let mut record = csv::StringRecord::new();
                while csv
                    .read_record(&mut record)
                    .map_err(|e| Error::Invalid(e.to_string()))?
                {
                    let key = key_idx.and_then(|i| record.get(i));
                    let value = match opts.format {
                        ValueFormat::Csv => {
                            let mut w = csv::WriterBuilder::new()
                                .terminator(csv::Terminator::Any(b' '))
                                .from_writer(vec![]);
                            w.write_record(&record)
                                .map_err(|e| Error::Invalid(e.to_string()))?;
                            let mut v =
                                w.into_inner().map_err(|e| Error::Invalid(e.to_string()))?;
                            v.pop();
                            v
                        }
                        ValueFormat::Json => {
                            let obj: serde_json::Map<String, serde_json::Value> = header
                                .iter()
                                .zip(record.iter())
                                .map(|(h, v)| {
                                    (h.to_string(), serde_json::Value::String(v.to_string()))
                                })
                                .collect();
                            serde_json::to_vec(&obj).expect("serializable")
                        }
                    };
                    emit(key, &value)?;
                }
            } else {
                for line in reader.lines() {
                    let line = line?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    let key = opts
                        .key_field
                        .as_ref()
                        .and_then(|k| json_field(line.as_bytes(), k));
                    emit(key.as_deref(), line.as_bytes())?;
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| kafka_error(&opts.topic, e))?;
    bar.finish_and_clear();
    Ok(sent)
}

/// Counts failed deliveries.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
    last_error: std::sync::Mutex<String>,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *self.last_error.lock().expect("lock") = e.to_string();
        }
    }
}

fn json_field(line: &[u8], field: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(line).ok()?;
    match v.get(field)? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}
