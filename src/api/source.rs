//! Sources of the DataStream API: files (JSONL, CSV), Kafka, in-memory
//! partitions and generators, for records of any `T: Deserialize`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use streamforge_dataflow::checkpoint::PartitionPosition;
use streamforge_dataflow::source::{
    checkpointed_source, partitioned_source, PartitionReader, ReadStatus, SourceItem,
    SourceSettings, Waker,
};
use streamforge_dataflow::EventTime;
use streamforge_sources::file::{open_csv_at, open_jsonl_at};
use streamforge_sources::record::{CsvDecoder, CsvSerdeDecoder, JsonDecoder, RecordDecoder};
use streamforge_sources::{FileFormat, KafkaSourceConfig, SourceError};

use super::env::StreamEnv;
use super::stream::{DataStream, StreamData, Timestamped};
use crate::error::Error;

/// How a source's watermarks are made (Flink's `WatermarkStrategy`): bounded
/// out-of-orderness per partition, and an idle timeout after which a
/// partition without data stops holding the watermark back.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use streamforge::api::WatermarkStrategy;
/// let w = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(2))
///     .with_idleness(Duration::from_secs(10));
/// assert_eq!(w.out_of_orderness_ms, 2_000);
/// assert_eq!(w.idle_timeout, Some(Duration::from_secs(10)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatermarkStrategy {
    /// Bounded out-of-orderness of every partition, ms: the watermark is the
    /// partition's max seen event time minus this.
    pub out_of_orderness_ms: u64,
    /// A partition without data for this long is idle.
    pub idle_timeout: Option<Duration>,
}

impl WatermarkStrategy {
    /// Watermark = max seen event time − `bound` (per partition).
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use streamforge::api::WatermarkStrategy;
    /// let w = WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(2));
    /// assert_eq!(w, WatermarkStrategy::for_bounded_out_of_orderness_ms(2_000));
    /// assert_eq!((w.out_of_orderness_ms, w.idle_timeout), (2_000, None));
    /// ```
    pub fn for_bounded_out_of_orderness(bound: Duration) -> Self {
        Self::for_bounded_out_of_orderness_ms(bound.as_millis() as u64)
    }

    /// [`WatermarkStrategy::for_bounded_out_of_orderness`] in ms.
    /// # Examples
    /// ```
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::{Count, Tumbling};
    /// // 4 000 arrives after 12 000: late with no bound (watermark 12 000 passed the
    /// // end of [0, 5 000)), on time with an 8 s bound (watermark 4 000).
    /// let late = |bound_ms| execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_partitions("in", vec![vec![1_000u64, 9_000, 12_000, 4_000]],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(bound_ms), |t| *t)
    ///         .key_by(|_| ())
    ///         .window(Tumbling::new(5_000))
    ///         .aggregate("count", Count)
    ///         .results
    ///         .sink_fn("drop", |_, _| {});
    ///     Ok(())
    /// }).unwrap().late;
    /// assert_eq!((late(0), late(8_000)), (1, 0));
    /// ```
    pub fn for_bounded_out_of_orderness_ms(bound_ms: u64) -> Self {
        WatermarkStrategy {
            out_of_orderness_ms: bound_ms,
            idle_timeout: None,
        }
    }

    /// Event times never go back (bound 0).
    /// # Examples
    /// ```
    /// use streamforge::api::WatermarkStrategy;
    /// assert_eq!(WatermarkStrategy::for_monotonous_timestamps().out_of_orderness_ms, 0);
    /// ```
    pub fn for_monotonous_timestamps() -> Self {
        Self::for_bounded_out_of_orderness_ms(0)
    }

    /// Partitions without data for `timeout` stop holding the watermark back.
    /// # Examples
    /// ```
    /// use std::time::Duration;
    /// use streamforge::api::WatermarkStrategy;
    /// let w = WatermarkStrategy::for_monotonous_timestamps().with_idleness(Duration::from_secs(10));
    /// assert_eq!(w.idle_timeout, Some(Duration::from_secs(10)));
    /// assert_eq!(w.out_of_orderness_ms, 0);
    /// ```
    pub fn with_idleness(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }
}

/// A generator source: partition `p` yields `f(p, i)` for `i` in
/// `0..per_partition` (deterministic, so a restore re-creates the same
/// records from the checkpointed index).
#[derive(Clone)]
pub struct GeneratorSource<F> {
    /// Number of partitions.
    pub partitions: usize,
    /// Records per partition.
    pub per_partition: u64,
    /// The record at (partition, index).
    pub f: F,
}

/// The [`PartitionReader`] methods a wrapping reader passes to its `inner`
/// one unchanged.
macro_rules! delegate_to_inner {
    () => {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn set_waker(&mut self, waker: Waker) {
            self.inner.set_waker(waker)
        }
        fn bytes_read(&self) -> Option<u64> {
            self.inner.bytes_read()
        }
        fn set_paused(&mut self, paused: bool) {
            self.inner.set_paused(paused)
        }
    };
}

/// Adds the event time to each record a reader yields, so that streams carry
/// it (Flink's record timestamp).
struct Stamped<T> {
    inner: Box<dyn PartitionReader<T>>,
    buf: Vec<SourceItem<T>>,
}

impl<T> PartitionReader<Timestamped<T>> for Stamped<T> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<Timestamped<T>>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        let status = self.inner.read_batch(max_items, &mut self.buf)?;
        out.extend(self.buf.drain(..).map(|item| match item {
            SourceItem::Record {
                event_time_ms,
                record,
            } => SourceItem::Record {
                event_time_ms,
                record: (event_time_ms, record),
            },
            SourceItem::DeadLetter(d) => SourceItem::DeadLetter(d),
        }));
        Ok(status)
    }
    delegate_to_inner!();
    fn position(&self) -> PartitionPosition {
        self.inner.position()
    }
}

struct Generated<F> {
    name: String,
    partition: usize,
    next: u64,
    end: u64,
    f: F,
}

impl<T, F: Fn(usize, u64) -> T> PartitionReader<T> for Generated<F>
where
    F: 'static,
{
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<T>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        // The event time is taken by the caller's extractor; see `source`.
        let stop = self.end.min(self.next + max_items as u64);
        for i in self.next..stop {
            out.push(SourceItem::Record {
                event_time_ms: 0,
                record: (self.f)(self.partition, i),
            });
        }
        self.next = stop;
        Ok(if self.next >= self.end {
            ReadStatus::Finished
        } else {
            ReadStatus::More
        })
    }
    fn describe(&self) -> String {
        format!("{}/{}", self.name, self.partition)
    }
    fn position(&self) -> PartitionPosition {
        PartitionPosition {
            offset: self.next,
            line: self.next,
            ..PartitionPosition::default()
        }
    }
}

/// Sets each record's event time from an extractor (in-memory and generated
/// records have no decoder to do it).
struct WithTime<T, F> {
    inner: Box<dyn PartitionReader<T>>,
    event_time: F,
}

impl<T, F: Fn(&T) -> EventTime + 'static> PartitionReader<T> for WithTime<T, F> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<T>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        let from = out.len();
        let status = self.inner.read_batch(max_items, out)?;
        for item in &mut out[from..] {
            if let SourceItem::Record {
                event_time_ms,
                record,
            } = item
            {
                *event_time_ms = (self.event_time)(record);
            }
        }
        Ok(status)
    }
    delegate_to_inner!();
    fn position(&self) -> PartitionPosition {
        self.inner.position()
    }
}

/// Expands paths and glob patterns (relative to the working directory) into
/// files, each pattern's matches in name order.
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let patterns: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Ok(streamforge_sources::file::expand_paths(
        &patterns,
        Path::new("."),
    )?)
}

impl<'s> StreamEnv<'s> {
    /// `config` with librdkafka's prefetch queue (`queued.max.messages.kbytes`,
    /// one consumer per partition) sized from flow control's in-flight budget
    /// when the job does not set it: half the budget over this worker's
    /// partitions, at least 1 MiB each. Prefetched messages are in flight
    /// too, and a paused partition's consumer stops fetching at that size.
    fn with_prefetch_budget(
        &self,
        config: &KafkaSourceConfig,
        partitions: usize,
    ) -> KafkaSourceConfig {
        let mut config = config.clone();
        let inner = self.inner.borrow();
        let budget = inner.flow.as_ref().and_then(|f| f.settings.in_flight_bytes);
        if let Some(bytes) = budget {
            let here = partitions.div_ceil(inner.scope.peers().max(1)).max(1) as u64;
            config
                .properties
                .entry("queued.max.messages.kbytes".into())
                .or_insert_with(|| prefetch_kbytes(bytes, here).to_string());
        }
        config
    }

    /// A source over `partitions` readers, `open(partition, position)` (the
    /// position to continue at when restoring from a checkpoint). The
    /// building block of the other sources: any [`PartitionReader`] is a
    /// connector.
    ///
    /// Partition `i` is read by worker `i % workers`. Undecodable records
    /// go to the job's dead letters.
    ///
    /// # Examples
    /// Two partitions from `vec_partition` readers (any boxed
    /// `PartitionReader` works), read by two workers:
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::dataflow::source::vec_partition;
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// let summary = execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     env.source("nums", 2, WatermarkStrategy::default(), |i, _position| {
    ///         // (event time, record): partition i holds 10·i, 10·i + 1, 10·i + 2.
    ///         let items: Vec<(u64, u64)> = (0..3u64).map(|j| (j, 10 * i as u64 + j)).collect();
    ///         vec_partition(format!("nums/{i}"), items)
    ///     })
    ///     .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut got = got.lock().unwrap().clone();
    /// got.sort();
    /// assert_eq!(got, vec![0, 1, 2, 10, 11, 12]);
    /// assert_eq!(summary.events, 6);
    /// ```
    pub fn source<T, O>(
        &mut self,
        name: &str,
        partitions: usize,
        watermarks: WatermarkStrategy,
        mut open: O,
    ) -> DataStream<'s, T>
    where
        T: StreamData,
        O: FnMut(usize, Option<&PartitionPosition>) -> Box<dyn PartitionReader<T>> + 'static,
    {
        let mut inner = self.inner.borrow_mut();
        let name = inner.claim(name);
        let mut settings = SourceSettings::new(name, watermarks.out_of_orderness_ms);
        settings.idle_timeout = watermarks.idle_timeout;
        settings.rate_limit = inner.options.rate_limit;
        settings.flow = inner.flow.clone();
        let counters = Some(inner.counters.source.clone());
        let scope = inner.scope;
        let open = move |i: usize, position: Option<&PartitionPosition>| {
            Box::new(Stamped {
                inner: open(i, position),
                buf: Vec::new(),
            }) as Box<dyn PartitionReader<Timestamped<T>>>
        };
        let (stream, dead) = match inner.checkpoints.as_mut() {
            Some(graph) => checkpointed_source(scope, settings, partitions, open, counters, graph),
            None => {
                let mut open = open;
                partitioned_source(
                    scope,
                    settings,
                    partitions,
                    move |i| open(i, None),
                    counters,
                )
            }
        };
        inner.dead.push(dead);
        drop(inner);
        DataStream::new(stream, self.inner.clone())
    }

    /// JSON-lines files (plain or `.gz`; paths or glob patterns), one
    /// partition per file, decoded into `T` with serde; `event_time` gives a
    /// record's event time in ms. Lines that do not decode (malformed JSON,
    /// a value of the wrong type or out of range, invalid UTF-8) become dead
    /// letters with the file, line number, reason and raw line.
    ///
    /// # Errors
    /// A pattern matches no file, or a file cannot be opened (checked when
    /// the job is built).
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// struct Click { ts: u64, user: String }
    /// let dir = std::env::temp_dir().join(format!("sf-jsonl-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("c.jsonl"),
    ///     "{\"ts\": 5, \"user\": \"a\"}\n{\"ts\": \"x\", \"user\": \"b\"}\n").unwrap();
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let (g, d) = (got.clone(), dir.clone());
    /// let summary = execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_jsonl("clicks", &[d.join("*.jsonl")],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |c: &Click| c.ts)?
    ///         .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![Click { ts: 5, user: "a".into() }]);
    /// assert_eq!(summary.dead_letters, 1, "a string where ts is a number");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn from_jsonl<T, F>(
        &mut self,
        name: &str,
        paths: &[PathBuf],
        watermarks: WatermarkStrategy,
        event_time: F,
    ) -> Result<DataStream<'s, T>, Error>
    where
        T: StreamData + DeserializeOwned,
        F: Fn(&T) -> EventTime + Clone + Send + 'static,
    {
        self.file_source(name, paths, watermarks, move |path, position| {
            let f = event_time.clone();
            open_jsonl_at(path, JsonDecoder::new(move |t: &T| Ok(f(t))), position)
        })
    }

    /// CSV files with a header row (plain or `.gz`), one partition per file,
    /// decoded into `T` with serde by column name; otherwise as
    /// [`StreamEnv::from_jsonl`].
    ///
    /// # Errors
    /// As [`StreamEnv::from_jsonl`].
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// struct Flight { ts: u64, carrier: String, delay: i32 }
    /// let dir = std::env::temp_dir().join(format!("sf-csv-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("f.csv"), "carrier,delay,ts\nUA,5,100\nAA,NaN,200\n").unwrap();
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let (g, d) = (got.clone(), dir.clone());
    /// let summary = execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_csv("flights", &[d.join("f.csv")],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |f: &Flight| f.ts)?
    ///         .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![Flight { ts: 100, carrier: "UA".into(), delay: 5 }]);
    /// assert_eq!(summary.dead_letters, 1, "NaN is not an i32");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn from_csv<T, F>(
        &mut self,
        name: &str,
        paths: &[PathBuf],
        watermarks: WatermarkStrategy,
        event_time: F,
    ) -> Result<DataStream<'s, T>, Error>
    where
        T: StreamData + DeserializeOwned,
        F: Fn(&T) -> EventTime + Clone + Send + 'static,
    {
        self.file_source(name, paths, watermarks, move |path, position| {
            let f = event_time.clone();
            open_csv_at(path, CsvSerdeDecoder::new(move |t: &T| Ok(f(t))), position)
        })
    }

    /// One partition per file of `paths`, opened by `open` (each file is
    /// opened once when the job is built, so a bad file fails the build).
    fn file_source<T, O>(
        &mut self,
        name: &str,
        paths: &[PathBuf],
        watermarks: WatermarkStrategy,
        open: O,
    ) -> Result<DataStream<'s, T>, Error>
    where
        T: StreamData,
        O: Fn(
                &Path,
                Option<&PartitionPosition>,
            ) -> Result<Box<dyn PartitionReader<T>>, SourceError>
            + 'static,
    {
        let files = expand(paths)?;
        for f in &files {
            open(f, None)?;
        }
        let n = files.len();
        streamforge_dataflow::reader_thread::plan_for_source(n, self.workers());
        Ok(self.source(name, n, watermarks, move |i, position| {
            open(&files[i], position).unwrap_or_else(|e| panic!("{e}"))
        }))
    }

    /// A file source whose format follows the first file's extension
    /// (`.jsonl`/`.json`/`.ndjson` or `.csv`, optionally `.gz`).
    ///
    /// # Errors
    /// As [`StreamEnv::from_jsonl`], or an unknown extension.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    /// struct Order { ts: u64, amount: i64 }
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("o.csv"), "ts,amount\n5,7\n6,-2\n7,x\n").unwrap();
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let (g, d) = (got.clone(), dir.path().to_path_buf());
    /// let summary = execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_files("orders", &[d.join("o.csv")], WatermarkStrategy::default(), |o: &Order| o.ts)?
    ///         .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![Order { ts: 5, amount: 7 }, Order { ts: 6, amount: -2 }]);
    /// assert_eq!(summary.dead_letters, 1, "`x` is not an amount");
    /// // An extension that is neither JSON lines nor CSV is an error when the job is built.
    /// std::fs::write(dir.path().join("o.txt"), "").unwrap();
    /// let d = dir.path().to_path_buf();
    /// let err = execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_files("orders", &[d.join("o.txt")], WatermarkStrategy::default(), |o: &Order| o.ts)?
    ///         .sink_fn("drop", |_, _| {});
    ///     Ok(())
    /// }).unwrap_err();
    /// assert!(err.to_string().contains("o.txt"), "{err}");
    /// ```
    pub fn from_files<T, F>(
        &mut self,
        name: &str,
        paths: &[PathBuf],
        watermarks: WatermarkStrategy,
        event_time: F,
    ) -> Result<DataStream<'s, T>, Error>
    where
        T: StreamData + DeserializeOwned,
        F: Fn(&T) -> EventTime + Clone + Send + 'static,
    {
        let first = expand(paths)?.into_iter().next().unwrap_or_default();
        match FileFormat::from_path(&first) {
            Some(FileFormat::Csv) => self.from_csv(name, paths, watermarks, event_time),
            Some(FileFormat::Jsonl) => self.from_jsonl(name, paths, watermarks, event_time),
            None => Err(SourceError::UnknownFormat(first.display().to_string()).into()),
        }
    }

    /// Files (JSON lines or CSV by each file's extension, plain or `.gz`),
    /// one partition per file, each read through a decoder from `decoder()`
    /// (e.g. a [`RowDecoder`](streamforge_sources::row::RowDecoder) over a
    /// declared schema). Rejected records become dead letters.
    ///
    /// # Errors
    /// A pattern matches no file, a file has an unknown extension or cannot
    /// be opened, or a CSV header does not fit the decoder.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge_sources::row::{Column, ColumnType, RowDecoder, Schema, Value};
    /// let dir = std::env::temp_dir().join(format!("sf-rows-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir).unwrap();
    /// std::fs::write(dir.join("a.jsonl"), "{\"ts\": 5, \"n\": 2}\n{\"ts\": 6, \"n\": \"x\"}\n").unwrap();
    /// let schema = Arc::new(Schema::new(vec![Column::new("ts", ColumnType::Timestamp),
    ///                                        Column::new("n", ColumnType::Int)]).unwrap());
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let (g, d) = (got.clone(), dir.clone());
    /// let summary = execute(&JobOptions::new("doc"), move |env| {
    ///     let s = schema.clone();
    ///     env.from_files_with("rows", &[d.join("*.jsonl")], WatermarkStrategy::for_bounded_out_of_orderness_ms(0),
    ///                         move || RowDecoder::new(s.clone(), "ts", None).unwrap())?
    ///         .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![vec![Value::Timestamp(5), Value::Int(2)]]);
    /// assert_eq!(summary.dead_letters, 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn from_files_with<T, D, F>(
        &mut self,
        name: &str,
        paths: &[PathBuf],
        watermarks: WatermarkStrategy,
        decoder: F,
    ) -> Result<DataStream<'s, T>, Error>
    where
        T: StreamData,
        D: RecordDecoder<T> + CsvDecoder<T> + Send,
        F: Fn() -> D + 'static,
    {
        for f in expand(paths)? {
            if FileFormat::from_path(&f).is_none() {
                return Err(SourceError::UnknownFormat(f.display().to_string()).into());
            }
        }
        self.file_source(
            name,
            paths,
            watermarks,
            move |path, position| match FileFormat::from_path(path) {
                Some(FileFormat::Csv) => open_csv_at(path, decoder(), position),
                _ => open_jsonl_at(path, decoder(), position),
            },
        )
    }

    /// A Kafka topic, one partition per topic partition, JSON message values
    /// decoded into `T` with serde (the config's `format`, `csv-columns` and
    /// `mapping` are not used). Undecodable messages become dead letters
    /// with `topic/partition`, offset, reason and raw value.
    ///
    /// # Errors
    /// The broker cannot be reached or the topic does not exist.
    ///
    /// # Examples
    /// Needs a broker (`scripts/kafka.sh start`); tests/kafka_e2e.rs runs
    /// this against a real one.
    /// ```no_run
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::sources::kafka::KafkaSourceConfig;
    /// #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    /// struct Order { ts: u64, order_id: String }
    /// let config: KafkaSourceConfig = toml::from_str(r#"
    ///     topic = "orders_stream"
    ///     properties = { "bootstrap.servers" = "127.0.0.1:9092" }
    /// "#).unwrap();
    /// execute(&JobOptions::new("orders"), move |env| {
    ///     env.from_kafka("orders", &config, WatermarkStrategy::for_bounded_out_of_orderness_ms(5_000),
    ///                    |o: &Order| o.ts)?
    ///         .sink_jsonl("out", "out/orders.jsonl");
    ///     Ok(())
    /// }).unwrap();
    /// ```
    pub fn from_kafka<T, F>(
        &mut self,
        name: &str,
        config: &KafkaSourceConfig,
        watermarks: WatermarkStrategy,
        event_time: F,
    ) -> Result<DataStream<'s, T>, Error>
    where
        T: StreamData + DeserializeOwned,
        F: Fn(&T) -> EventTime + Clone + 'static,
    {
        let n = config.partition_count()?;
        let config = self.with_prefetch_budget(config, n);
        Ok(self.source(name, n, watermarks, move |i, position| {
            let f = event_time.clone();
            config
                .open_with(i, position, JsonDecoder::new(move |t: &T| Ok(f(t))))
                .unwrap_or_else(|e| panic!("{e}"))
        }))
    }

    /// A Kafka topic read through decoders from `decoder()` (one per
    /// partition), e.g. a [`RowDecoder`](streamforge_sources::row::RowDecoder)
    /// over a declared schema; otherwise as [`StreamEnv::from_kafka`].
    ///
    /// # Errors
    /// The broker cannot be reached or the topic does not exist.
    pub fn from_kafka_with<T, D, F>(
        &mut self,
        name: &str,
        config: &KafkaSourceConfig,
        watermarks: WatermarkStrategy,
        decoder: F,
    ) -> Result<DataStream<'s, T>, Error>
    where
        T: StreamData,
        D: RecordDecoder<T>,
        F: Fn() -> D + 'static,
    {
        let n = config.partition_count()?;
        let config = self.with_prefetch_budget(config, n);
        Ok(self.source(name, n, watermarks, move |i, position| {
            config
                .open_with(i, position, decoder())
                .unwrap_or_else(|e| panic!("{e}"))
        }))
    }

    /// In-memory partitions (tests, examples): partition `i` yields
    /// `partitions[i]` in order; `event_time` gives each record's time.
    /// With checkpoints, a partition's position is its record offset.
    ///
    /// # Examples
    /// The watermark follows each partition's event times (here with no
    /// out-of-orderness): 3 arrives after 8 in its partition and is behind
    /// the watermark, so the 10 ms window that has fired does not count it.
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::{Count, Tumbling};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// let summary = execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_partitions("in", vec![vec![1u64, 8, 12, 3, 25]],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |t: &u64| *t)
    ///         .key_by(|_| ())
    ///         .window(Tumbling::new(10))
    ///         .aggregate("count", Count)
    ///         .results
    ///         .map(|r| (r.window.start_ms, r.value))
    ///         .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut rows = got.lock().unwrap().clone();
    /// rows.sort();
    /// assert_eq!(rows, vec![(0, 2), (10, 1), (20, 1)]);
    /// assert_eq!(summary.late, 1);
    /// ```
    pub fn from_partitions<T, F>(
        &mut self,
        name: &str,
        partitions: Vec<Vec<T>>,
        watermarks: WatermarkStrategy,
        event_time: F,
    ) -> DataStream<'s, T>
    where
        T: StreamData + Clone,
        F: Fn(&T) -> EventTime + Clone + 'static,
    {
        let n = partitions.len();
        let partitions = Arc::new(partitions);
        let label = name.to_string();
        self.source(name, n, watermarks, move |i, position| {
            let skip = position.map_or(0, |p| p.offset) as usize;
            let items: Vec<(EventTime, T)> = partitions[i][skip.min(partitions[i].len())..]
                .iter()
                .map(|r| (event_time(r), r.clone()))
                .collect();
            Box::new(Offset {
                inner: streamforge_dataflow::source::vec_partition(format!("{label}/{i}"), items),
                base: skip as u64,
            })
        })
    }

    /// A generated source (see [`GeneratorSource`]); `event_time` gives each
    /// record's time.
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use streamforge::api::{execute, GeneratorSource, JobOptions, WatermarkStrategy};
    /// let sum = Arc::new(AtomicU64::new(0));
    /// let s = sum.clone();
    /// let summary = execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     let s = s.clone();
    ///     // 2 partitions of 100 records: (partition, index) → a value at 10 ms steps.
    ///     let g = GeneratorSource { partitions: 2, per_partition: 100, f: |p: usize, i: u64| (p as u64, i * 10) };
    ///     env.from_generator("gen", g, WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |r: &(u64, u64)| r.1)
    ///         .sink_fn("sum", move |_, r| { s.fetch_add(r.1, Ordering::Relaxed); });
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(summary.events, 200);
    /// assert_eq!(sum.load(Ordering::Relaxed), 2 * (0..100).map(|i| i * 10).sum::<u64>());
    /// ```
    pub fn from_generator<T, G, F>(
        &mut self,
        name: &str,
        generator: GeneratorSource<G>,
        watermarks: WatermarkStrategy,
        event_time: F,
    ) -> DataStream<'s, T>
    where
        T: StreamData,
        G: Fn(usize, u64) -> T + Clone + 'static,
        F: Fn(&T) -> EventTime + Clone + 'static,
    {
        let label = name.to_string();
        self.source(
            name,
            generator.partitions,
            watermarks,
            move |i, position| {
                Box::new(WithTime {
                    inner: Box::new(Generated {
                        name: label.clone(),
                        partition: i,
                        next: position.map_or(0, |p| p.offset),
                        end: generator.per_partition,
                        f: generator.f.clone(),
                    }),
                    event_time: event_time.clone(),
                })
            },
        )
    }
}

/// A reader whose positions count from `base` (an in-memory partition
/// reopened after a restore).
struct Offset<T> {
    inner: Box<dyn PartitionReader<T>>,
    base: u64,
}

impl<T> PartitionReader<T> for Offset<T> {
    fn read_batch(
        &mut self,
        max_items: usize,
        out: &mut Vec<SourceItem<T>>,
    ) -> Result<ReadStatus, Box<dyn std::error::Error + Send + Sync>> {
        self.inner.read_batch(max_items, out)
    }
    delegate_to_inner!();
    fn position(&self) -> PartitionPosition {
        let p = self.inner.position();
        PartitionPosition {
            offset: self.base + p.offset,
            line: self.base + p.line,
            ..p
        }
    }
}

/// librdkafka's `queued.max.messages.kbytes` for each of `partitions`
/// consumers sharing half of an in-flight budget of `budget_bytes`; at least
/// 1 MiB (librdkafka's default is 64 MiB).
///
/// ```text
/// 64 MiB budget, 2 partitions → 16 384 kB each; 1 MiB, 8 → 1 024 (the floor)
/// ```
fn prefetch_kbytes(budget_bytes: u64, partitions: u64) -> u64 {
    (budget_bytes / 2 / 1024 / partitions.max(1)).max(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_prefetch_queue_shares_half_the_budget() {
        assert_eq!(super::prefetch_kbytes(64 << 20, 2), 16_384);
        assert_eq!(super::prefetch_kbytes(1 << 20, 8), 1_024);
        assert_eq!(super::prefetch_kbytes(64 << 20, 0), 32_768);
    }
}
