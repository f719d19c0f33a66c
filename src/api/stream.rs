//! `DataStream`: stateless transformations, union, side outputs, sinks.

use std::fmt::Display;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::core::Concatenate;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::vec::{Filter, Map};
use timely::dataflow::operators::Inspect;
use timely::dataflow::Stream;

use streamforge_dataflow::flow_control::FlowControl;
use streamforge_dataflow::{DeadLetter, EventTime, Time};
use streamforge_sinks::batched::{BatchLimits, SinkBatched};
use streamforge_sinks::write_ahead::{CommitTarget, SinkWriteAhead};
use streamforge_sinks::{SinkJsonl, SinkJsonlExactlyOnce, SinkLines, SinkLinesExactlyOnce};

use super::env::Env;
use super::keyed::KeyedStream;

/// What a stream can carry: records that can be sent between workers and
/// processes (serde) and cloned.
pub trait StreamData: timely::ExchangeData + Clone {}
impl<T: timely::ExchangeData + Clone> StreamData for T {}

/// A record with its event time in ms (Flink's `StreamRecord`).
pub type Timestamped<T> = (EventTime, T);

/// A stream of records of type `T`, each with its event time.
///
/// Made by a source of a [`StreamEnv`](super::StreamEnv); cheap to clone (a
/// clone is a second consumer of the same stream).
pub struct DataStream<'s, T> {
    pub(crate) stream: Stream<'s, Time, Vec<Timestamped<T>>>,
    pub(crate) env: Env<'s>,
    /// A stateful operator is upstream: flow control probes only the first
    /// stateful operator of a path (those further down trail it by their
    /// windows and timers).
    pub(crate) after_state: bool,
}

impl<T: Clone + 'static> Clone for DataStream<'_, T> {
    fn clone(&self) -> Self {
        DataStream {
            stream: self.stream.clone(),
            env: self.env.clone(),
            after_state: self.after_state,
        }
    }
}

impl<'s, T: StreamData> DataStream<'s, T> {
    pub(crate) fn new(stream: Stream<'s, Time, Vec<Timestamped<T>>>, env: Env<'s>) -> Self {
        DataStream {
            stream,
            env,
            after_state: false,
        }
    }

    /// The output of a stateful operator.
    pub(crate) fn after_state(stream: Stream<'s, Time, Vec<Timestamped<T>>>, env: Env<'s>) -> Self {
        DataStream {
            stream,
            env,
            after_state: true,
        }
    }

    /// The input of a stateful operator, probed for flow control when it
    /// is the first on its path.
    fn state_input<E: Clone + 'static>(
        &self,
        stream: Stream<'s, Time, Vec<E>>,
    ) -> Stream<'s, Time, Vec<E>> {
        let env = self.env.borrow();
        let flow = env.flow.as_ref().filter(|_| !self.after_state);
        FlowControl::attach_to(flow, stream)
    }

    fn with<U>(&self, stream: Stream<'s, Time, Vec<Timestamped<U>>>) -> DataStream<'s, U> {
        DataStream {
            stream,
            env: self.env.clone(),
            after_state: self.after_state,
        }
    }

    /// The underlying timely stream of `(event time, record)`, for operators
    /// the API does not wrap.
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use timely::dataflow::operators::Inspect;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let s = seen.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     let s = s.clone();
    ///     env.from_partitions("in", vec![vec![5u64, 7]], WatermarkStrategy::default(), |t| *t * 1_000)
    ///         .into_timely()
    ///         .inspect(move |(t, x)| s.lock().unwrap().push((*t, *x)));
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*seen.lock().unwrap(), vec![(5_000, 5), (7_000, 7)]);
    /// ```
    pub fn into_timely(self) -> Stream<'s, Time, Vec<Timestamped<T>>> {
        self.stream
    }

    /// Applies `f` to every record; the event time is kept.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     let nums = env.from_partitions("nums", vec![vec![1u64, 2, 3]],
    ///         WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |n: &u64| *n);
    ///     nums.map(|n| n * 10).sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![10, 20, 30]);
    /// ```
    pub fn map<U: StreamData>(self, f: impl Fn(T) -> U + 'static) -> DataStream<'s, U> {
        let s = self.stream.clone().map(move |(t, r)| (t, f(r)));
        self.with(s)
    }

    /// Keeps the records for which `f` holds.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     let nums = env.from_partitions("nums", vec![vec![1u64, 2, 3]],
    ///         WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |n: &u64| *n);
    ///     nums.filter(|n| n % 2 == 1).sink_vec("odd", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![1, 3]);
    /// ```
    pub fn filter(self, f: impl Fn(&T) -> bool + 'static) -> DataStream<'s, T> {
        let s = self.stream.clone().filter(move |(_, r)| f(r));
        self.with(s)
    }

    /// Replaces every record by the records `f` returns, at its event time.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     let nums = env.from_partitions("nums", vec![vec![1u64, 2, 3]],
    ///         WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |n: &u64| *n);
    ///     nums.flat_map(|n| std::iter::repeat(n).take(n as usize)).sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![1, 2, 2, 3, 3, 3]);
    /// ```
    pub fn flat_map<U: StreamData, I: IntoIterator<Item = U>>(
        self,
        f: impl Fn(T) -> I + 'static,
    ) -> DataStream<'s, U>
    where
        I::IntoIter: 'static,
    {
        let s = self
            .stream
            .clone()
            .flat_map(move |(t, r)| f(r).into_iter().map(move |u| (t, u)));
        self.with(s)
    }

    /// Sets a new event time on every record (e.g. after a `map` that
    /// changed which field is the time). The watermark is not changed: a
    /// record moved behind it is late for windows that have fired.
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     let g = g.clone();
    ///     env.from_partitions("in", vec![vec![(1u64, 100u64), (2, 200)]], WatermarkStrategy::default(), |r| r.0)
    ///         .assign_timestamps(|r| r.1)
    ///         .sink_fn("times", move |t, r| g.lock().unwrap().push((t, r.0)));
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![(100, 1), (200, 2)]);
    /// ```
    pub fn assign_timestamps(self, f: impl Fn(&T) -> EventTime + 'static) -> DataStream<'s, T> {
        let s = self.stream.clone().map(move |(_, r)| (f(&r), r));
        self.with(s)
    }

    /// Applies a fallible `f`: `Ok` records go on, each `Err` becomes a dead
    /// letter of the job with `source` = `name`, `position` = the record's
    /// event time, the error as the reason and the input record as JSON as
    /// the raw value.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// let summary = execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_partitions("in", vec![["1", "x", "3"].map(String::from).to_vec()],
    ///             WatermarkStrategy::default(), |_| 0)
    ///         .try_map("parse", |s: String| s.parse::<u32>())
    ///         .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec![1, 3]);
    /// assert_eq!(summary.dead_letters, 1);
    /// ```
    pub fn try_map<U: StreamData, E: Display>(
        self,
        name: &str,
        f: impl Fn(T) -> Result<U, E> + 'static,
    ) -> DataStream<'s, U>
    where
        T: Serialize,
    {
        let name = self.env.borrow_mut().claim(name);
        // The record is encoded for the dead letter only when `f` fails.
        let (ok, dead) = split_results(self.stream.clone(), &name, move |t, r: T| {
            let kept = r.clone();
            f(r).map(|u| Some((t, u))).map_err(|e| {
                (
                    e.to_string(),
                    serde_json::to_string(&kept).unwrap_or_default(),
                )
            })
        });
        self.env.borrow_mut().dead.push(dead);
        self.with(ok)
    }

    /// As [`DataStream::try_map`], with `f` giving the dead letter's reason
    /// and raw text itself (no encoding of records that pass).
    pub(crate) fn try_map_raw<U: StreamData>(
        self,
        name: &str,
        f: impl Fn(T) -> Result<U, (String, String)> + 'static,
    ) -> DataStream<'s, U> {
        let name = self.env.borrow_mut().claim(name);
        let (ok, dead) = split_results(self.stream.clone(), &name, move |t, r| {
            f(r).map(|u| Some((t, u)))
        });
        self.env.borrow_mut().dead.push(dead);
        self.with(ok)
    }

    /// As [`DataStream::try_map_raw`], with `Ok(None)` dropping the record
    /// (a filter and a map in one operator).
    pub(crate) fn try_filter_map_raw<U: StreamData>(
        self,
        name: &str,
        f: impl Fn(T) -> Result<Option<U>, (String, String)> + 'static,
    ) -> DataStream<'s, U> {
        let name = self.env.borrow_mut().claim(name);
        let (ok, dead) = split_results(self.stream.clone(), &name, move |t, r| {
            f(r).map(|u| u.map(|u| (t, u)))
        });
        self.env.borrow_mut().dead.push(dead);
        self.with(ok)
    }

    /// Calls `f` on every record passing by, with its event time (metrics,
    /// debugging); the stream is unchanged.
    ///
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let sum = Arc::new(AtomicU64::new(0));
    /// let s = sum.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     let s = s.clone();
    ///     env.from_partitions("in", vec![vec![1u64, 2, 3]], WatermarkStrategy::default(), |_| 0)
    ///         .inspect(move |_, x| { s.fetch_add(*x, Ordering::Relaxed); })
    ///         .sink_fn("drop", |_, _| {});
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(sum.load(Ordering::Relaxed), 6);
    /// ```
    pub fn inspect(self, f: impl Fn(EventTime, &T) + 'static) -> DataStream<'s, T> {
        let s = self.stream.clone().inspect(move |(t, r)| f(*t, r));
        self.with(s)
    }

    /// Splits the stream: records for which `side` returns `Some(label)` go
    /// to the side output of that label (Flink's `OutputTag`), the others on.
    /// Returns the main stream and one stream per label of `labels`, in
    /// order; a label not in `labels` is dropped.
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let (main, big) = (Arc::new(Mutex::new(vec![])), Arc::new(Mutex::new(vec![])));
    /// let (m, b) = (main.clone(), big.clone());
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     let s = env.from_partitions("in", vec![vec![1, 50, 2, 70]],
    ///         WatermarkStrategy::default(), |_| 0);
    ///     let (rest, sides) = s.side_outputs(&["big"], |x: &i32| (*x > 10).then_some("big"));
    ///     rest.sink_vec("main", m.clone());
    ///     sides[0].clone().sink_vec("big", b.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*main.lock().unwrap(), vec![1, 2]);
    /// assert_eq!(*big.lock().unwrap(), vec![50, 70]);
    /// ```
    pub fn side_outputs(
        self,
        labels: &[&str],
        side: impl Fn(&T) -> Option<&'static str> + 'static,
    ) -> (DataStream<'s, T>, Vec<DataStream<'s, T>>) {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let side = std::rc::Rc::new(side);
        let s = side.clone();
        let main = self.stream.clone().filter(move |(_, r)| s(r).is_none());
        let outs = labels
            .into_iter()
            .map(|label| {
                let s = side.clone();
                let out = self
                    .stream
                    .clone()
                    .filter(move |(_, r)| s(r) == Some(label.as_str()));
                self.with(out)
            })
            .collect();
        (self.with(main), outs)
    }

    /// Merges streams of the same type (Flink's `union`).
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     let nums = env.from_partitions("nums", vec![vec![1u64, 2, 3]],
    ///         WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |n: &u64| *n);
    ///     let tens = nums.clone().map(|n| n * 10);
    ///     nums.union([tens]).sink_vec("all", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut all = got.lock().unwrap().clone();
    /// all.sort();
    /// assert_eq!(all, vec![1, 2, 3, 10, 20, 30]);
    /// ```
    pub fn union(self, others: impl IntoIterator<Item = DataStream<'s, T>>) -> DataStream<'s, T> {
        let scope = self.env.borrow().scope;
        let mut after_state = self.after_state;
        let others: Vec<_> = others
            .into_iter()
            .map(|s| {
                after_state |= s.after_state;
                s.stream
            })
            .collect();
        let all = std::iter::once(self.stream.clone()).chain(others);
        let mut out = self.with(scope.concatenate(all));
        out.after_state = after_state;
        out
    }

    /// Partitions the stream by `key` for keyed windows, dedup and process
    /// functions. Records of one key are routed to one worker by the key's
    /// stable hash (its key group), identically in every process.
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::operators::{Count, Tumbling};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// // At 2 workers: all records of a key meet in one window, wherever read.
    /// execute(&JobOptions::new("doc").workers(2), move |env| {
    ///     let part = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    ///     env.from_partitions("in", vec![part(&["a", "b", "a"]), part(&["a", "b"])],
    ///             WatermarkStrategy::default(), |_| 0)
    ///         .key_by(|s: &String| s.clone())
    ///         .window(Tumbling::new(1_000))
    ///         .aggregate("count", Count)
    ///         .results
    ///         .map(|r| (r.key, r.value))
    ///         .sink_vec("counts", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// let mut counts = got.lock().unwrap().clone();
    /// counts.sort();
    /// assert_eq!(counts, vec![("a".to_string(), 3), ("b".to_string(), 2)]);
    /// ```
    pub fn key_by<K, F>(self, key: F) -> KeyedStream<'s, K, T>
    where
        K: StreamData + Hash + Eq + Clone + Serialize + DeserializeOwned,
        F: Fn(&T) -> K + 'static,
    {
        let s = self.stream.clone().map(move |(t, r)| (key(&r), t, r));
        KeyedStream {
            stream: self.state_input(s),
            env: self.env,
        }
    }

    /// [`try_filter_map_raw`](Self::try_filter_map_raw) and a key as one
    /// operator: `f` keeps, drops or dead-letters each record and gives the
    /// kept ones as keyed elements `(key, event time, record)` (a row that
    /// is its own key: no copied key per record).
    pub(crate) fn try_key_by_element_raw<K, U>(
        self,
        name: &str,
        f: impl Fn(EventTime, T) -> Result<Option<(K, EventTime, U)>, (String, String)> + 'static,
    ) -> KeyedStream<'s, K, U>
    where
        K: StreamData + Hash + Eq + Clone + Serialize + DeserializeOwned,
        U: StreamData,
    {
        let name = self.env.borrow_mut().claim(name);
        let (ok, dead) = split_results(self.stream.clone(), &name, f);
        self.env.borrow_mut().dead.push(dead);
        KeyedStream {
            stream: self.state_input(ok),
            env: self.env,
        }
    }

    /// Adds the number of records passing by to `counter` (per batch).
    pub(crate) fn count_into(
        self,
        counter: Arc<std::sync::atomic::AtomicU64>,
    ) -> DataStream<'s, T> {
        let s = self.stream.clone().inspect_batch(move |_, b| {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        });
        self.with(s)
    }

    fn count_written(&self) -> Stream<'s, Time, Vec<Timestamped<T>>> {
        let counters = self.env.borrow().counters.clone();
        self.stream.clone().inspect_batch(move |_, b| {
            counters
                .written
                .fetch_add(b.len() as u64, Ordering::Relaxed);
        })
    }

    /// Writes every record as a JSON line to `path` (from worker 0; lines of
    /// one timestamp sorted). With checkpoints `path` is a directory of
    /// parts committed per checkpoint (exactly-once).
    ///
    /// # Examples
    /// ```
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let out = std::env::temp_dir().join(format!("sf-api-jsonl-{}.jsonl", std::process::id()));
    /// let o = out.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_partitions("pairs", vec![vec![(1u64, "a".to_string())]],
    ///             WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |p: &(u64, String)| p.0)
    ///         .sink_jsonl("out", o.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(std::fs::read_to_string(&out).unwrap(), "[1,\"a\"]\n");
    /// # std::fs::remove_file(&out).unwrap();
    /// ```
    pub fn sink_jsonl(self, name: &str, path: impl Into<PathBuf>)
    where
        T: Serialize,
    {
        let name = self.env.borrow_mut().claim(name);
        let rows = self.count_written().map(|(_, r)| r);
        let path = path.into();
        let mut env = self.env.borrow_mut();
        let result = match env.checkpoints.as_mut() {
            Some(graph) => rows.sink_jsonl_exactly_once(&name, path, None, graph),
            None => rows.sink_jsonl(&name, path, None),
        };
        if let Err(e) = result {
            env.fail(e);
        }
    }

    /// Commits every record, encoded by `encode`, into `target` (a
    /// database table, …: any [`CommitTarget`]). With checkpoints the
    /// records of each checkpoint are logged with it and committed when it
    /// completes, and re-committed after a restore (write-ahead; exactly-once
    /// for targets that commit idempotently or record markers). Without,
    /// records are committed in batches of `limits` (`size` measures a
    /// record for `limits.bytes`).
    ///
    /// # Examples
    /// A target that keeps what it is given, with and without checkpoints:
    /// every record is committed once, with checkpoints under a checkpoint id.
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// use streamforge::job::CheckpointConfig;
    /// use streamforge::sinks::batched::BatchLimits;
    /// use streamforge::sinks::write_ahead::CommitTarget;
    /// use streamforge::sinks::SinkError;
    /// #[derive(Clone, Default)]
    /// struct Keep(Arc<Mutex<Vec<(Option<u64>, String)>>>);
    /// impl CommitTarget for Keep {
    ///     type Record = String;
    ///     fn recover(&mut self, _writer: usize) -> Result<Option<u64>, SinkError> { Ok(None) }
    ///     fn commit(&mut self, _w: usize, checkpoint: Option<u64>, records: &[String]) -> Result<(), SinkError> {
    ///         self.0.lock().unwrap().extend(records.iter().map(|r| (checkpoint, r.clone())));
    ///         Ok(())
    ///     }
    /// }
    /// let run = |options: JobOptions| {
    ///     let keep = Keep::default();
    ///     let k = keep.clone();
    ///     execute(&options, move |env| {
    ///         env.from_partitions("in", vec![(0..100u64).collect()], WatermarkStrategy::default(), |t| *t)
    ///             .sink_commit("keep", k.clone(), |t| format!("row {t}"), |r| r.len(),
    ///                          BatchLimits { rows: 10, bytes: 1 << 20, interval: Duration::from_millis(50) });
    ///         Ok(())
    ///     }).unwrap();
    ///     let mut got = keep.0.lock().unwrap().clone();
    ///     got.sort_by_key(|(_, r)| r[4..].parse::<u64>().unwrap());
    ///     got
    /// };
    /// let plain = run(JobOptions::new("doc"));
    /// assert_eq!(plain.len(), 100);
    /// assert!(plain.iter().enumerate().all(|(i, (c, r))| c.is_none() && *r == format!("row {i}")));
    /// let dir = tempfile::tempdir().unwrap();
    /// let config = CheckpointConfig { dir: dir.path().to_path_buf(), interval: Duration::from_millis(20), retain: 2 };
    /// let logged = run(JobOptions::new("doc").checkpoint(config));
    /// assert_eq!(logged.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
    ///            plain.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>());
    /// assert!(logged.iter().all(|(c, _)| c.is_some()), "committed with its checkpoint");
    /// ```
    pub fn sink_commit<C: CommitTarget>(
        self,
        name: &str,
        target: C,
        encode: impl Fn(&T) -> C::Record + 'static,
        size: impl Fn(&C::Record) -> usize + 'static,
        limits: BatchLimits,
    ) {
        let name = self.env.borrow_mut().claim(name);
        let rows = self.count_written().map(|(_, r)| r);
        let mut env = self.env.borrow_mut();
        match env.checkpoints.as_mut() {
            Some(graph) => {
                if let Err(e) = rows.sink_write_ahead(&name, target, encode, graph) {
                    env.fail(e);
                }
            }
            None => rows.sink_batched(&name, target, encode, size, limits),
        }
    }

    /// Hands the records (without their event times), the scope and the
    /// job's checkpoint graph to `f`, which builds timely operators on them
    /// (the alerting of the main job); an error fails the job.
    pub(crate) fn build_timely(
        self,
        f: impl FnOnce(
            timely::dataflow::Scope<'s, Time>,
            Stream<'s, Time, Vec<T>>,
            Option<&mut streamforge_dataflow::checkpoint::CheckpointGraph<'s>>,
        ) -> Result<(), crate::error::Error>,
    ) {
        let records = self.stream.clone().map(|(_, r)| r);
        let scope = records.scope();
        let mut env = self.env.borrow_mut();
        let graph = env.checkpoints.as_mut();
        if let Err(e) = f(scope, records, graph) {
            env.fail(e);
        }
    }

    /// Appends every record to `out` (tests and examples; in this process,
    /// at-least-once after a restore).
    ///
    /// # Examples
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let got = Arc::new(Mutex::new(Vec::new()));
    /// let g = got.clone();
    /// let summary = execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_partitions("in", vec![vec!["a".to_string(), "b".to_string()]],
    ///             WatermarkStrategy::default(), |_| 0)
    ///         .sink_vec("out", g.clone());
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(*got.lock().unwrap(), vec!["a".to_string(), "b".to_string()]);
    /// assert_eq!(summary.written, 2);
    /// ```
    pub fn sink_vec(self, name: &str, out: Arc<Mutex<Vec<T>>>) {
        let name = self.env.borrow_mut().claim(name);
        let counters = self.env.borrow().counters.clone();
        self.stream
            .clone()
            .sink(Pipeline, &name, move |(input, _)| {
                input.for_each(|_, data| {
                    counters
                        .written
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    out.lock()
                        .expect("sink_vec")
                        .extend(data.drain(..).map(|(_, r)| r));
                });
            });
    }

    /// Calls `f` on every record, on the worker that holds it (a sink for
    /// side effects; at-least-once after a restore).
    /// # Examples
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let total = Arc::new(AtomicU64::new(0));
    /// let t = total.clone();
    /// let summary = execute(&JobOptions::new("doc"), move |env| {
    ///     let t = t.clone();
    ///     env.from_partitions("in", vec![vec![1u64, 2, 3]], WatermarkStrategy::default(), |x| *x)
    ///         .sink_fn("sum", move |time, x| { t.fetch_add(time * 100 + x, Ordering::Relaxed); });
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(total.load(Ordering::Relaxed), 606);
    /// assert_eq!(summary.written, 3);
    /// ```
    pub fn sink_fn(self, name: &str, f: impl FnMut(EventTime, T) + 'static) {
        let name = self.env.borrow_mut().claim(name);
        let counters = self.env.borrow().counters.clone();
        let mut f = f;
        self.stream
            .clone()
            .sink(Pipeline, &name, move |(input, _)| {
                input.for_each(|_, data| {
                    counters
                        .written
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    for (t, r) in data.drain(..) {
                        f(t, r);
                    }
                });
            });
    }
}

impl DataStream<'_, String> {
    /// Writes every line (encoded by the caller, e.g. a CSV row) to `path`
    /// after `header`, as [`DataStream::sink_jsonl`] writes JSON lines: one
    /// file from worker 0, or with checkpoints a directory of part files
    /// committed per checkpoint (exactly-once), each starting with `header`.
    ///
    /// # Examples
    /// ```
    /// use streamforge::api::{execute, JobOptions, WatermarkStrategy};
    /// let out = std::env::temp_dir().join(format!("sf-api-lines-{}.csv", std::process::id()));
    /// let o = out.clone();
    /// execute(&JobOptions::new("doc"), move |env| {
    ///     env.from_partitions("nums", vec![vec![1u64, 2]], WatermarkStrategy::for_bounded_out_of_orderness_ms(0), |n: &u64| *n)
    ///         .map(|n| format!("{n},{}", n * 10))
    ///         .sink_lines("csv", o.clone(), Some("n,tens".into()));
    ///     Ok(())
    /// }).unwrap();
    /// assert_eq!(std::fs::read_to_string(&out).unwrap(), "n,tens\n1,10\n2,20\n");
    /// # std::fs::remove_file(&out).unwrap();
    /// ```
    pub fn sink_lines(self, name: &str, path: impl Into<PathBuf>, header: Option<String>) {
        let name = self.env.borrow_mut().claim(name);
        let rows = self.count_written().map(|(_, r)| r);
        let path = path.into();
        let mut env = self.env.borrow_mut();
        let result = match env.checkpoints.as_mut() {
            Some(graph) => rows.sink_lines_exactly_once(&name, path, header, None, graph),
            None => rows.sink_lines(&name, path, header, None),
        };
        if let Err(e) = result {
            env.fail(e);
        }
    }
}

/// Splits `stream` by `f` into records and dead letters (named `name`).
#[allow(clippy::type_complexity)]
fn split_results<'s, T: 'static, O: 'static>(
    stream: Stream<'s, Time, Vec<Timestamped<T>>>,
    name: &str,
    f: impl Fn(EventTime, T) -> Result<Option<O>, (String, String)> + 'static,
) -> (Stream<'s, Time, Vec<O>>, Stream<'s, Time, Vec<DeadLetter>>) {
    let scope = stream.scope();
    let mut builder = OperatorBuilder::new(name.to_string(), scope);
    let mut input = builder.new_input(stream, Pipeline);
    let (ok_out, ok) = builder.new_output::<Vec<O>>();
    let (dead_out, dead) = builder.new_output::<Vec<DeadLetter>>();
    let mut ok_out = OutputBuilder::from(ok_out);
    let mut dead_out = OutputBuilder::from(dead_out);
    let source = name.to_string();
    builder.build(move |_caps| {
        let mut oks = Vec::new();
        let mut deads = Vec::new();
        move |_frontiers| {
            let mut ok_handle = ok_out.activate();
            let mut dead_handle = dead_out.activate();
            input.for_each_time(|cap, data| {
                for batch in data {
                    // Sized once per batch (a sent buffer comes back empty).
                    oks.reserve(batch.len());
                    for (t, r) in batch.drain(..) {
                        match f(t, r) {
                            Ok(Some(u)) => oks.push(u),
                            Ok(None) => {}
                            Err((reason, raw)) => deads.push(DeadLetter {
                                source: source.clone(),
                                position: t,
                                reason,
                                raw,
                            }),
                        }
                    }
                }
                if !oks.is_empty() {
                    ok_handle.session(&cap.retain(0)).give_container(&mut oks);
                }
                if !deads.is_empty() {
                    dead_handle
                        .session(&cap.retain(1))
                        .give_container(&mut deads);
                }
            });
        }
    });
    (ok, dead)
}
